"""Step 1: a Quart-Trio app with one page and a websocket that echoes."""

from quart import Response, websocket
from quart_trio import QuartTrio

app = QuartTrio(__name__)  # serves static/ next to this file under /static/


@app.get("/")
async def index() -> Response:
    return await app.send_static_file("echo.html")


@app.websocket("/ws")
async def ws() -> None:
    await websocket.accept()  # completes the handshake: the connection is open
    while True:
        message = await websocket.receive()  # waits for the client's next message
        await websocket.send(message)  # and sends it straight back
