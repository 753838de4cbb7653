"""Step 5: the real ticker's shape: a pure protocol, a session over two callables, thin wiring."""

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio
from quart import Response, websocket
from quart_trio import QuartTrio

MIN_INTERVAL, MAX_INTERVAL = 0.01, 86400  # seconds

# The protocol: plain functions of text, no Trio, no Quart (ticker's protocol.py).


@dataclass
class Start:
    interval: float
    count: int | None


class Stop:
    pass


class ProtocolError(Exception):
    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code


def parse(frame: str | bytes) -> Start | Stop:
    """One frame from the client: a command, or a ProtocolError that says what is wrong."""
    try:
        message = json.loads(frame)
    except ValueError:
        raise ProtocolError("invalid_json", "A message must be JSON.") from None
    kind = message.get("type") if isinstance(message, dict) else None
    if kind == "stop":
        return Stop()
    if kind != "start":
        raise ProtocolError("unknown_type", 'The type must be "start" or "stop".')
    interval, count = message.get("interval"), message.get("count")
    if not isinstance(interval, int | float) or not MIN_INTERVAL <= interval <= MAX_INTERVAL:
        raise ProtocolError(
            "invalid_interval",
            f"The interval must be between {MIN_INTERVAL} and {MAX_INTERVAL} seconds; "
            f"got {json.dumps(interval)}.",
        )
    if count is not None and (not isinstance(count, int) or count < 1):
        raise ProtocolError("invalid_count", "The count must be a whole number >= 1.")
    return Start(float(interval), count)


def next_seq(start: float, interval: float, sent: int, now: float) -> int:
    """The slot after ``sent`` that is not overdue at ``now``: the skip rule (schedule.py)."""
    seq = sent + 1
    while start + seq * interval < now:
        seq += 1
    return seq


# The session: one connection's nursery, over two callables (session.py).

Send = Callable[[str], Awaitable[None]]
Receive = Callable[[], Awaitable[str | bytes]]


@dataclass
class Run:
    """One accepted start: its id, its own cancel scope, and when its sender has exited."""

    id: int
    cancel_scope: trio.CancelScope = field(default_factory=trio.CancelScope)
    finished: trio.Event = field(default_factory=trio.Event)


class Session:
    def __init__(self, send: Send) -> None:
        self.send = send
        self.last_id = 0
        self.running: Run | None = None

    async def send_json(self, **message: object) -> None:
        await self.send(json.dumps(message))

    async def run(self, receive: Receive) -> None:
        """The receiver: answers every frame; each accepted start gets a sender task."""
        await self.send_json(type="hello", min_interval=MIN_INTERVAL, max_interval=MAX_INTERVAL)
        async with trio.open_nursery() as nursery:
            while True:
                try:
                    command = parse(await receive())
                except ProtocolError as error:
                    await self.send_json(type="error", code=error.code, message=str(error))
                    continue  # an invalid frame changes nothing else
                stopped = await self.cancel_running()
                if isinstance(command, Stop):
                    await self.send_json(type="stopped", id=stopped)
                    continue
                self.last_id += 1
                run = Run(self.last_id)
                await self.send_json(
                    type="started", id=run.id, interval=command.interval, count=command.count
                )
                self.running = run
                nursery.start_soon(self.tick, run, command)

    async def cancel_running(self) -> int | None:
        """Stop the running schedule and wait until its sender has exited; its id."""
        run, self.running = self.running, None
        if run is None:
            return None
        run.cancel_scope.cancel()
        await run.finished.wait()  # so no tick of the old id can follow what we send next
        return run.id

    async def tick(self, run: Run, command: Start) -> None:
        """The sender: ticks on absolute deadlines, skipping the slots a slow send missed."""
        try:
            with run.cancel_scope:
                start, seq, sent = trio.current_time(), 1, 0
                while command.count is None or seq <= command.count:
                    await trio.sleep_until(start + seq * command.interval)
                    await self.send_json(type="tick", id=run.id, seq=seq)
                    sent += 1
                    seq = next_seq(start, command.interval, seq, trio.current_time())
                if command.count is not None:
                    skipped = command.count - sent
                    await self.send_json(type="done", id=run.id, sent=sent, skipped=skipped)
                    if self.running is run:
                        self.running = None  # done: a stop now has nothing to stop
        finally:
            run.finished.set()


# The wiring: the only part that knows Quart (app.py).

app = QuartTrio(__name__)


@app.get("/")
async def index() -> Response:
    return await app.send_static_file("client.html")


@app.websocket("/ws")
async def ws() -> None:
    await websocket.accept()
    await Session(websocket.send).run(websocket.receive)
