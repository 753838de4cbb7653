"""Side-by-side benchmark of ticker against its stack's floor and two peers (``nox -s bench``)."""
