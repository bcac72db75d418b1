"""Long work on the event loop, in slices that let the loop run between them.

Why: the agent (every event), the web views (``/ready``, which health checks call with a 3 s
timeout, and ``/metrics`` itself), the producer's sends, Alertmanager deliveries and the
rebalance callbacks all run on the worker's one event loop. At fleet size, judging every owned
partner or rendering ``/metrics`` is seconds of Python: measured at 10,000 filled partners in
the first minute of an hour, 15.7 s for the judge pass and 8.6 s for the scrape, and about
45 s for the first judgement after a restart. Held in one stretch, every event arriving
meanwhile waits that long (the alert latency goal is 1 s) and so does every view. Cut into
slices of :data:`SLICE_S`, the loop waits at most a slice plus one partner's work, or a
garbage collection. (The consumer's heartbeats do not wait: Faust runs the Kafka consumer on
a thread of its own, with its own loop.)
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Generator
from time import monotonic, perf_counter
from typing import TypeVar

T = TypeVar("T")

SLICE_S = 0.02
"""How long a slice holds the event loop before letting it run, in seconds. A partner's
step is well under it (about 0.5 ms in a new hour, 5 ms for a first judgement), and the
agent's own batches hold the loop for a few tens of milliseconds too."""


class Pacer:
    """Tells a loop when its slice is spent, and lets the event loop run (:meth:`pause`)."""

    def __init__(self, slice_s: float | None = None) -> None:
        self.slice_s = SLICE_S if slice_s is None else slice_s
        """This pacer's slice (:data:`SLICE_S` unless given), in seconds."""
        self.pauses = 0
        """How many times the loop was let run (for tests and status)."""
        self._until = perf_counter() + self.slice_s

    def due(self) -> bool:
        """True once the current slice has held the loop for ``slice_s``."""
        return perf_counter() >= self._until

    async def pause(self) -> None:
        """Let every ready task and I/O callback run once, then start a new slice."""
        await asyncio.sleep(0)
        self.pauses += 1
        self._until = perf_counter() + self.slice_s


async def run_paced(steps: Generator[None, None, T], pacer: Pacer | None = None) -> T:
    """Run a generator of steps to its end, pausing whenever a slice is spent; its return
    value. The steps own the consistency between them (each re-reads what may have moved)."""
    pacer = pacer or Pacer()
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        if pacer.due():
            await pacer.pause()


class LoopLag:
    """How late the event loop runs a task that is due: the worker's own measure of what
    pacing leaves (a slice, a partner's step, a garbage collection, any unpaced stretch).

    A task sleeps ``tick_s`` at a time and notes how much later than asked it woke;
    :meth:`longest` is the largest delay of the last ``span_s`` (a gauge for the rules:
    the latest value alone would miss a stall between two scrapes)."""

    def __init__(self, tick_s: float = 0.25, span_s: float = 60.0,
                 clock: Callable[[], float] = monotonic) -> None:
        self.tick_s = tick_s
        """How often the task asks to run, in seconds."""
        self.span_s = span_s
        """How far back :meth:`longest` looks, in seconds."""
        self._clock = clock
        self._delays: deque[tuple[float, float]] = deque(maxlen=int(span_s / tick_s) + 1)
        """(when it woke, how late), oldest first: bounded, a tick's worth each."""

    def note(self, woke: float, late: float) -> None:
        """One wake-up: at ``woke`` (the clock's time), ``late`` seconds after it was due."""
        self._delays.append((woke, max(0.0, late)))

    def longest(self) -> float:
        """The largest delay of the last ``span_s`` seconds, in seconds (0 when none)."""
        since = self._clock() - self.span_s
        return max((late for woke, late in self._delays if woke >= since), default=0.0)

    async def run(self) -> None:
        """The task (started with the app): wake every ``tick_s``, note how late."""
        loop = asyncio.get_running_loop()
        while True:
            due = loop.time() + self.tick_s
            await asyncio.sleep(self.tick_s)
            self.note(self._clock(), loop.time() - due)
