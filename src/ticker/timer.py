"""One timer per worker: wakes each due sender directly, without a ``Cancelled`` per tick.

``trio.sleep_until`` is a cancel scope with a deadline: every tick of every
connection opens one, registers its deadline, and when it expires Trio
cancels the scope, recalculates the cancel status, raises ``Cancelled`` into
the sleeper and catches it again. At thousands of ticks a second that is a
third of the worker's time (BENCHMARKS.md). ``Timer`` keeps the waiting
senders in one heap instead and wakes the due ones with
``trio.lowlevel.reschedule``: one cancel scope for the whole worker, whose
deadline is the earliest of all.

A waiting sender is still cancelled at once (its abort callback marks its
entry dead). Dead entries are dropped lazily, and the heap is rebuilt once
they are half of it, so a client that starts and stops in a loop cannot grow
it. One ``Timer`` per app, served in the app's nursery: nothing is shared
between apps or between ``trio.run``\\ s.
"""

from __future__ import annotations

import heapq
import itertools
import math

import trio


class _Entry:
    """One waiting sender: when, in which order, and which task (None once cancelled)."""

    __slots__ = ("deadline", "order", "stopped", "task")

    def __init__(self, deadline: float, order: int, task: trio.lowlevel.Task) -> None:
        self.deadline = deadline
        self.order = order
        self.task: trio.lowlevel.Task | None = task
        self.stopped = False  # woken because the timer ended, not because it is due

    def __lt__(self, other: _Entry) -> bool:
        return (self.deadline, self.order) < (other.deadline, other.order)


class TimerStopped(RuntimeError):
    """The timer's task ended while a sender was waiting on it."""


class Timer:
    """Wakes tasks at their deadlines on ``trio.current_time()``'s clock; see the module."""

    def __init__(self) -> None:
        self._heap: list[_Entry] = []
        self._order = itertools.count()  # equal deadlines are woken in the order asked
        self._dead = 0
        self._wakeup: trio.CancelScope | None = None
        self._serving = False

    @property
    def waiting(self) -> int:
        """Senders waiting now (cancelled ones not counted)."""
        return len(self._heap) - self._dead

    async def sleep_until(self, deadline: float) -> None:
        """Like ``trio.sleep_until``: return at ``deadline``; a cancellation cuts it short.

        Before the timer is served (an app used without its lifespan, as by
        Quart's test client), this is ``trio.sleep_until`` itself: slower, as exact.
        """
        if not self._serving:
            await trio.sleep_until(deadline)
            return
        if deadline <= trio.current_time():
            await trio.lowlevel.checkpoint()
            return
        entry = _Entry(deadline, next(self._order), trio.lowlevel.current_task())
        heapq.heappush(self._heap, entry)
        wakeup = self._wakeup
        if wakeup is not None and deadline < wakeup.deadline:
            wakeup.deadline = deadline

        def abort(_: trio.lowlevel.RaiseCancelT) -> trio.lowlevel.Abort:
            entry.task = None
            self._dead += 1
            if self._dead > len(self._heap) // 2:
                self._drop_dead()
            return trio.lowlevel.Abort.SUCCEEDED

        await trio.lowlevel.wait_task_rescheduled(abort)
        if entry.stopped:
            raise TimerStopped("the timer stopped while this task waited")

    def _drop_dead(self) -> None:
        self._heap = [entry for entry in self._heap if entry.task is not None]
        heapq.heapify(self._heap)
        self._dead = 0
        if self._wakeup is not None:
            self._wakeup.deadline = self._heap[0].deadline if self._heap else math.inf

    async def serve(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the timer until cancelled; ``sleep_until`` works once this has started."""
        self._serving = True
        task_status.started()
        try:
            while True:
                heap = self._heap  # ``_drop_dead`` may have replaced it
                with trio.CancelScope(deadline=heap[0].deadline if heap else math.inf) as wakeup:
                    self._wakeup = wakeup
                    await trio.sleep_forever()
                self._wakeup = None
                heap = self._heap
                now = trio.current_time()
                while heap and heap[0].deadline <= now:
                    entry = heapq.heappop(heap)
                    if entry.task is None:
                        self._dead -= 1
                    else:
                        trio.lowlevel.reschedule(entry.task)
        finally:
            self._serving = False
            self._wakeup = None
            for entry in self._heap:
                if entry.task is not None:
                    entry.stopped = True
                    trio.lowlevel.reschedule(entry.task)
            self._heap.clear()
            self._dead = 0
