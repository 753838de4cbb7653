"""The per-connection Trio logic over memory channels, on a virtual clock.

``autojump_clock`` makes hours of schedule run in milliseconds and lets the
tests assert the exact (virtual) time each message was sent.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio.testing

from ticker.protocol import Limits
from ticker.server_tally import LATENESS_BUCKETS, Tally
from ticker.session import Close, run_session
from ticker.timer import Timer

Message = dict[str, object]
DEFAULT_LIMITS = Limits()
#: The wall clock the sessions see: Unix time EPOCH at virtual time 0, so
#: anchors, ``started`` and tick times are exact (2025-11-26 06:40:00 UTC).
EPOCH = 1_764_139_200.0


def virtual_unix_time() -> float:
    return EPOCH + trio.current_time()


@dataclass
class Client:
    """The far end of a session: frames in, (send time, message) pairs out."""

    to_server: trio.MemorySendChannel[str | bytes | None]
    from_server: trio.MemoryReceiveChannel[tuple[float, Message]]
    result: list[Close | None] = field(default_factory=list)

    async def send(self, message: object) -> None:
        frame = message if isinstance(message, str | bytes) else json.dumps(message)
        await self.to_server.send(frame)

    async def receive(self) -> Message:
        return (await self.receive_timed())[1]

    async def receive_timed(self) -> tuple[float, Message]:
        with trio.fail_after(100_000):  # virtual seconds: a missing message fails, not hangs
            return await self.from_server.receive()

    async def expect_silence(self, seconds: float) -> None:
        with trio.move_on_after(seconds):
            message = await self.from_server.receive()
            pytest.fail(f"expected no message, got {message}")


SendDelay = Callable[[Message], float]

#: How senders wait for deadlines in this test: see ``waiting``.
WAITING = {"timer": False}


@pytest.fixture(autouse=True, params=["trio.sleep_until", "the worker's Timer"])
def waiting(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every session test runs twice: senders on Trio's own sleep, and on the app's Timer."""
    monkeypatch.setitem(WAITING, "timer", request.param == "the worker's Timer")


@asynccontextmanager
async def open_session(
    limits: Limits = DEFAULT_LIMITS,
    send_delay: SendDelay | None = None,
    *,
    shielded: bool = False,
    tally: Tally | None = None,
    unix_time: Callable[[], float] = virtual_unix_time,
) -> AsyncIterator[Client]:
    """Run a session in a nursery; closing the client's channel ends it."""
    to_server, from_client = trio.open_memory_channel[str | bytes | None](0)
    to_client, from_server = trio.open_memory_channel[tuple[float, Message]](math.inf)

    write_lock = trio.StrictFIFOLock()  # like Hypercorn's: overlapping sends stay in order

    async def send(text: str) -> None:
        message = json.loads(text)
        async with write_lock:
            if send_delay is not None:
                with trio.CancelScope(shield=shielded):
                    await trio.sleep(send_delay(message))
            to_client.send_nowait((trio.current_time(), message))

    async def receive() -> str | bytes | None:
        try:
            return await from_client.receive()
        except trio.EndOfChannel:
            raise
        except trio.ClosedResourceError:  # pragma: no cover - not used by these tests
            raise trio.EndOfChannel from None

    client = Client(to_server, from_server)

    timer = Timer() if WAITING["timer"] else None

    async def serve() -> None:
        client.result.append(await run_session(send, receive, limits, tally, timer, unix_time))

    async with trio.open_nursery() as timers:
        if timer is not None:
            await timers.start(timer.serve)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(serve)
            hello = await client.receive()
            assert hello["type"] == "hello"
            yield client
            await to_server.aclose()
        timers.cancel_scope.cancel()


async def test_hello_announces_version_and_limits() -> None:
    to_server, from_client = trio.open_memory_channel[str | bytes | None](0)
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(run_session, send, from_client.receive, Limits(0.5, 60, 7, 100))
        await to_server.aclose()
    assert json.loads(sent[0]) == {
        "type": "hello",
        "version": __import__("ticker").__version__,
        "min_interval": 0.5,
        "max_interval": 60,
        "max_count": 7,
    }


async def test_counted_schedule_ticks_on_absolute_deadlines_then_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session() as client:
        await client.send({"type": "start", "interval": 1.5, "count": 3})
        t0, started = await client.receive_timed()
        # Unanchored, the grid's anchor is the moment the start was accepted.
        assert started == {
            "type": "started",
            "id": 1,
            "interval": 1.5,
            "count": 3,
            "anchor": EPOCH + t0,
            "first": 1,
        }
        for seq in (1, 2, 3):
            sent_at, tick = await client.receive_timed()
            assert tick == {"type": "tick", "id": 1, "seq": seq, "time": EPOCH + t0 + seq * 1.5}
            assert sent_at == t0 + seq * 1.5
        sent_at, done = await client.receive_timed()
        assert done == {"type": "done", "id": 1, "sent": 3, "skipped": 0}
        assert sent_at == t0 + 4.5
        await client.expect_silence(100)


async def test_unbounded_schedule_never_drifts_over_ten_hours(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session() as client:
        await client.send({"interval": 10})
        t0, _ = await client.receive_timed()
        for seq in range(1, 3601):
            sent_at, tick = await client.receive_timed()
            assert tick["seq"] == seq
            assert sent_at == t0 + seq * 10  # exactly: deadlines are absolute
        assert trio.current_time() - t0 == 36_000


async def test_tick_time_is_unix_time() -> None:
    async with open_session(unix_time=__import__("time").time) as client:
        await client.send({"interval": 0.01, "count": 1})
        await client.receive()
        before = __import__("time").time()
        tick = await client.receive()
        assert isinstance(tick["time"], float)
        assert abs(tick["time"] - before) < 60


async def test_new_start_replaces_the_running_schedule_with_the_next_id(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session() as client:
        await client.send({"interval": 1})
        assert (await client.receive())["id"] == 1
        assert (await client.receive())["seq"] == 1
        assert (await client.receive())["seq"] == 2
        await trio.sleep(0.5)
        await client.send({"interval": 2, "count": 2})
        t1, started = await client.receive_timed()
        assert started == {
            "type": "started",
            "id": 2,
            "interval": 2,
            "count": 2,
            "anchor": EPOCH + t1,
            "first": 1,
        }
        assert [await client.receive_timed() for _ in range(3)] == [
            (t1 + 2, {"type": "tick", "id": 2, "seq": 1, "time": EPOCH + t1 + 2}),
            (t1 + 4, {"type": "tick", "id": 2, "seq": 2, "time": EPOCH + t1 + 4}),
            (t1 + 4, {"type": "done", "id": 2, "sent": 2, "skipped": 0}),
        ]


async def test_no_message_of_an_older_id_follows_started_even_mid_send(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Like hypercorn's, this transport finishes a write even when cancelled, and
    # every tick takes 0.3 s to write: each new start lands while one is in flight.
    def slow_ticks(message: Message) -> float:
        return 0.3 if message["type"] == "tick" else 0.0

    async with open_session(send_delay=slow_ticks, shielded=True) as client:
        await client.send({"interval": 0.5})
        assert (await client.receive())["type"] == "started"
        in_flight = 0
        for k in range(2, 40):
            await trio.sleep(0.65)  # tick 1 of schedule k-1 is being written
            await client.send({"interval": 0.5})
            while (message := await client.receive())["type"] != "started":
                assert message["id"] == k - 1
                in_flight += 1
            assert message["id"] == k
        assert in_flight == 38  # the scenario happened every time
        # Drain: every later message belongs to the newest schedule.
        with trio.move_on_after(5):
            while True:
                assert (await client.receive())["id"] == 39


async def test_stop_answers_with_the_id_and_no_tick_follows(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session() as client:
        await client.send({"interval": 1})
        await client.receive()
        await client.receive()
        await trio.sleep(0.5)
        await client.send({"type": "stop"})
        assert await client.receive() == {"type": "stopped", "id": 1}
        await client.expect_silence(3600)


async def test_stop_with_nothing_running_answers_null(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session() as client:
        await client.send({"type": "stop"})
        assert await client.receive() == {"type": "stopped", "id": None}


async def test_stop_after_done_answers_null(autojump_clock: trio.testing.MockClock) -> None:
    async with open_session() as client:
        await client.send({"interval": 1, "count": 1})
        for _ in range(3):
            await client.receive()  # started, tick, done
        await client.send({"type": "stop"})
        assert await client.receive() == {"type": "stopped", "id": None}


async def test_ids_count_every_accepted_start(autojump_clock: trio.testing.MockClock) -> None:
    async with open_session() as client:
        ids = []
        for frame in ('{"interval":1}', '{"type":"stop"}', '{"interval":0}', "2", "3"):
            await client.send(frame)
            message = await client.receive()
            if message["type"] == "started":
                ids.append(message["id"])
        assert ids == [1, 2, 3]


async def test_invalid_frames_do_not_disturb_the_running_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session() as client:
        await client.send({"interval": 1, "count": 4})
        t0, _ = await client.receive_timed()
        await client.receive()
        await client.send("not json")
        await client.send(b"\x00")
        await client.send({"interval": 0.0001})
        await client.send({"type": "pause"})
        messages = [await client.receive_timed() for _ in range(8)]
        codes = [m["code"] for _, m in messages if m["type"] == "error"]
        assert codes == ["invalid_json", "binary_not_supported", "invalid_interval", "unknown_type"]
        ticks = [(at, m["seq"]) for at, m in messages if m["type"] == "tick"]
        assert ticks == [(t0 + 2, 2), (t0 + 3, 3), (t0 + 4, 4)]
        assert messages[-1][1] == {"type": "done", "id": 1, "sent": 4, "skipped": 0}


async def test_slow_send_skips_overdue_slots_instead_of_bursting(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Sending tick 2 takes 2.5 intervals: slots 3 and 4 are overdue when it ends.
    def slow_second_tick(message: Message) -> float:
        return 2.5 if message.get("seq") == 2 else 0.0

    async with open_session(send_delay=slow_second_tick) as client:
        await client.send({"interval": 1, "count": 6})
        t0, _ = await client.receive_timed()
        messages = [await client.receive_timed() for _ in range(5)]
        assert [(at - t0, m.get("seq")) for at, m in messages[:4]] == [
            (1, 1),
            (4.5, 2),
            (5, 5),
            (6, 6),
        ]
        assert messages[4][1] == {"type": "done", "id": 1, "sent": 4, "skipped": 2}


async def test_skipping_past_the_last_slot_ends_with_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def slow(message: Message) -> float:
        return 10.0 if message["type"] == "tick" else 0.0

    async with open_session(send_delay=slow) as client:
        await client.send({"interval": 1, "count": 5})
        t0, _ = await client.receive_timed()
        assert (await client.receive())["seq"] == 1
        sent_at, done = await client.receive_timed()
        assert done == {"type": "done", "id": 1, "sent": 1, "skipped": 4}
        assert sent_at == t0 + 11


async def test_frame_over_the_limit_closes_with_1009(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session(Limits(max_message_size=100)) as client:
        await client.send({"interval": 1})
        await client.receive()
        await client.send({"interval": 1, "pad": "x" * 100})
        await client.expect_silence(10)  # the running schedule was cancelled too
    (close,) = client.result
    assert close is not None
    assert close.code == 1009
    assert "exceeds the limit of 100 bytes" in close.reason


async def test_client_leaving_ends_the_session_with_nothing_running(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session() as client:
        await client.send({"interval": 0.01})
        await client.receive()
        await client.receive()
    # open_session's nursery exited, so no task of the session is left.
    assert client.result == [None]


async def test_cancellation_from_the_transport_propagates_cleanly(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # Quart-Trio reports a disconnect by cancelling the handler.
    to_server, from_client = trio.open_memory_channel[str | bytes | None](1)
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(text)

    await to_server.send('{"interval":0.5}')
    with trio.move_on_after(10.25) as scope:
        await run_session(send, from_client.receive, Limits())
    assert scope.cancelled_caught
    assert len(sent) == 2 + 20  # hello, started, 20 ticks


async def test_tally_counts_sent_and_skipped_ticks_and_their_lateness(
    autojump_clock: trio.testing.MockClock,
) -> None:
    # The slow-send case above: tick 2 takes 2.5 s to send, so slots 3 and 4 are
    # skipped; every tick started out on time (lateness is the server's).
    def slow_second_tick(message: Message) -> float:
        return 2.5 if message.get("seq") == 2 else 0.0

    tally = Tally()
    async with open_session(send_delay=slow_second_tick, tally=tally) as client:
        await client.send({"interval": 1, "count": 6})
        for _ in range(6):  # started, 4 ticks, done
            await client.receive()
    assert (tally.schedules_started, tally.ticks_sent, tally.ticks_skipped) == (1, 4, 2)
    assert tally.lateness_sum == 0
    assert tally.lateness_counts[0] == 4  # on time (virtual clock: exactly 0)


async def test_tally_lateness_is_how_late_the_server_started_a_tick(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tally = Tally()
    async with open_session(tally=tally) as client:
        await client.send({"interval": 1, "count": 2})
        await client.receive()  # started
        # The clock leaps 0.4 s at 0.9 s, as if the event loop had been blocked
        # across tick 1's deadline (due at 1.0, it starts out at 1.3).
        await trio.sleep(0.9)
        autojump_clock.jump(0.4)
        for _ in range(3):  # ticks 1 and 2, done
            await client.receive()
    assert tally.ticks_sent == 2
    assert tally.lateness_sum == pytest.approx(0.3)
    assert tally.lateness_counts[LATENESS_BUCKETS.index(0.5)] == 1  # 0.3 s: in (0.25, 0.5]
    assert tally.lateness_counts[0] == 1


async def test_tally_skips_stop_at_the_last_slot_like_done(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def slow(message: Message) -> float:
        return 10.0 if message["type"] == "tick" else 0.0

    tally = Tally()
    async with open_session(send_delay=slow, tally=tally) as client:
        await client.send({"interval": 1, "count": 5})
        await client.receive()  # started
        await client.receive()  # tick 1, sent 10 s late: the next slot would be 11
        assert await client.receive() == {"type": "done", "id": 1, "sent": 1, "skipped": 4}
    assert (tally.ticks_sent, tally.ticks_skipped) == (1, 4)


async def test_tally_counts_starts_and_protocol_errors_by_code(
    autojump_clock: trio.testing.MockClock,
) -> None:
    tally = Tally()
    async with open_session(tally=tally) as client:
        for frame in ('{"interval": 1}', '{"interval": 2}', "nope", '{"interval": -1}', b"x"):
            await client.send(frame)
            await client.receive()
    assert tally.schedules_started == 2
    assert {code: n for code, n in tally.protocol_errors.items() if n} == {
        "invalid_json": 1,
        "invalid_interval": 1,
        "binary_not_supported": 1,
    }


# Anchored schedules (docs/protocol.md, "Anchored schedules"). Virtual times
# derived from a far-away anchor are exact to a float's rounding of
# EPOCH-sized numbers, hence the 1 µs tolerance there.


async def test_anchor_zero_ticks_on_whole_seconds_of_the_wall_clock(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session() as client:
        await trio.sleep(0.3)
        await client.send({"interval": 1, "anchor": 0, "count": 3})
        started = await client.receive()
        first = int(EPOCH) + 1
        assert started == {
            "type": "started",
            "id": 1,
            "interval": 1,
            "count": 3,
            "anchor": 0,
            "first": first,
        }
        for n in range(3):
            sent_at, tick = await client.receive_timed()
            assert tick["seq"] == first + n
            assert sent_at == pytest.approx(1.0 + n, abs=1e-6)
            assert tick["time"] == pytest.approx(first + n, abs=1e-6)  # on the second
        assert await client.receive() == {"type": "done", "id": 1, "sent": 3, "skipped": 0}


async def test_a_counted_schedule_resumes_to_the_same_final_slot(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session() as client:
        await client.send({"interval": 1, "count": 6})
        original = await client.receive()
        assert [(await client.receive())["seq"] for _ in range(2)] == [1, 2]
    # The connection dropped at 2; 1.5 s later the client resumes on another
    # session (another server, as far as the grid is concerned).
    await trio.sleep(1.5)
    async with open_session() as client:
        resume = {"interval": 1, "anchor": original["anchor"], "last": 6}
        await client.send(resume)
        t, started = await client.receive_timed()
        assert t == 3.5
        assert started == {**original, "count": 3, "first": 4}
        ticks = [await client.receive_timed() for _ in range(3)]
        assert [(at, tick["seq"], tick["time"]) for at, tick in ticks] == [
            (4.0, 4, EPOCH + 4),
            (5.0, 5, EPOCH + 5),
            (6.0, 6, EPOCH + 6),
        ]
        assert await client.receive_timed() == (
            6.0,
            {"type": "done", "id": 1, "sent": 3, "skipped": 0},
        )


async def test_a_refused_anchor_or_last_changes_nothing(
    autojump_clock: trio.testing.MockClock,
) -> None:
    async with open_session() as client:
        await client.send({"interval": 2})
        t0, _ = await client.receive_timed()
        await trio.sleep(0.5)
        await client.send({"interval": 1, "anchor": (EPOCH + 1) * 1000})  # milliseconds
        assert (await client.receive())["code"] == "invalid_anchor"
        await client.send({"interval": 1, "anchor": EPOCH - 100, "last": 50})  # over
        error = await client.receive()
        assert error["code"] == "schedule_over"
        assert str(error["message"]).endswith("The schedule is over.")
        # The running schedule kept its id and its deadlines.
        assert await client.receive_timed() == (
            t0 + 2,
            {"type": "tick", "id": 1, "seq": 1, "time": EPOCH + t0 + 2},
        )
        await client.send({"type": "stop"})
        assert await client.receive() == {"type": "stopped", "id": 1}


async def test_a_wall_clock_step_moves_tick_times_not_the_schedule(
    autojump_clock: trio.testing.MockClock,
) -> None:
    step = {"seconds": 0.0}

    def stepping_clock() -> float:
        return EPOCH + trio.current_time() + step["seconds"]

    async with open_session(unix_time=stepping_clock) as client:
        await client.send({"interval": 1, "anchor": EPOCH, "count": 3})
        await client.receive()
        assert await client.receive_timed() == (
            1.0,
            {"type": "tick", "id": 1, "seq": 1, "time": EPOCH + 1},
        )
        step["seconds"] = -30.0  # NTP steps the clock back
        assert [await client.receive_timed() for _ in range(2)] == [
            (2.0, {"type": "tick", "id": 1, "seq": 2, "time": EPOCH + 2 - 30}),
            (3.0, {"type": "tick", "id": 1, "seq": 3, "time": EPOCH + 3 - 30}),
        ]


async def test_an_anchored_slow_receiver_counts_skips_within_its_own_slots(
    autojump_clock: trio.testing.MockClock,
) -> None:
    def slow_second_tick(message: Message) -> float:
        return 2.5 if message.get("seq") == 11 else 0.0

    async with open_session(send_delay=slow_second_tick) as client:
        await trio.sleep(9.5)
        await client.send({"interval": 1, "anchor": EPOCH, "count": 5})
        started = await client.receive()
        assert (started["first"], started["count"]) == (10, 5)
        seqs = []
        while (message := await client.receive())["type"] == "tick":
            seqs.append(message["seq"])
        # Tick 11's send ended at 13.5: slots 12 and 13 were overdue.
        assert seqs == [10, 11, 14]
        assert message == {"type": "done", "id": 1, "sent": 3, "skipped": 2}
