"""Small, honest peers: the same protocol subset as ticker, nothing more, nothing less.

Each answers ``{"type":"start","interval":I}`` with ``started`` and then
``{"type":"tick","id":K,"seq":N,"time":T}`` on absolute deadlines, skips overdue
slots, and answers ``{"type":"stop"}`` with ``stopped``: enough for every
benchmark scenario, with the same messages on the wire as ticker sends.
"""
