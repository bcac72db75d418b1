"""Offset commits that never pass an event whose writes have not landed.

Why: Faust commits an input partition's offset once the agent has acknowledged its events and
the producer's buffer is flushed, but it never looks at whether a send succeeded -- a failed
changelog write is logged and the offset past it committed, so after a restart that event is
neither in the journal nor read again: silently lost. Measured on faust-streaming 0.15.3 with
every changelog batch failing: the commit still reached the end of the input.

So every produce made for an input event (its journal records, a forward to the repartition
topic, a dead letter) is tracked by the event's partition and offset, and a commit is cut at
the first event whose send is still in flight (allowed later) or failed (held for good: until
the partition is revoked, when the next owner re-reads from the committed offset). The commit
path reads the futures' state itself; callbacks would run after Faust has already committed.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Iterable, Mapping
from typing import Any

from faust.types import TP

log = logging.getLogger("partnerpulse")


class CommitGuard:
    """Caps each input partition's committed offset below its first event not safely written."""

    def __init__(self) -> None:
        self._pending: dict[TP, deque[tuple[int, asyncio.Future[Any]]]] = {}
        self._caps: dict[TP, int] = {}
        """Partition -> the offset its commit may never pass (a failed write, or a failed event)."""
        self._committed: dict[TP, int] = {}
        self.send_failures = 0
        """Produces for input events that failed (each also holds its partition's commit)."""

    @property
    def held(self) -> int:
        """Partitions whose commit is held for good (until they are revoked)."""
        return len(self._caps)

    def track(self, tp: TP, offset: int, future: Any) -> None:
        """Remember a produce made for the event at ``offset`` of ``tp``.

        ``future`` is what Faust's ``send_soon`` returns (a FutureMessage, an asyncio future).
        """
        queue = self._pending.get(tp)
        if queue is None:
            queue = self._pending[tp] = deque()
        queue.append((offset, future))

    def hold(self, tp: TP, offset: int, why: object) -> None:
        """Never commit ``tp`` past ``offset`` (that event is read again by the next owner)."""
        if offset < self._caps.get(tp, offset + 1):
            log.error("commit of %s[%d] held at offset %d until the partition is reassigned: %s",
                      tp.topic, tp.partition, offset, why)
            self._caps[tp] = offset

    def _limit(self, tp: TP) -> int | None:
        """The highest offset ``tp`` may be committed at now (None: no limit)."""
        queue = self._pending.get(tp)
        while queue:
            offset, future = queue[0]
            if not future.done():
                return min(offset, self._caps.get(tp, offset))
            queue.popleft()
            error = asyncio.CancelledError() if future.cancelled() else future.exception()
            if error is not None:
                self.send_failures += 1
                self.hold(tp, offset, f"a write for the event at this offset failed: {error!r}")
        return self._caps.get(tp)

    def allowed(self, offsets: Mapping[TP, int]) -> dict[TP, int]:
        """The part of a commit that may go out: each offset cut at its partition's limit, and
        only those that move forward."""
        out: dict[TP, int] = {}
        for tp, offset in offsets.items():
            limit = self._limit(tp)
            if limit is not None:
                offset = min(offset, limit)
            if offset > self._committed.get(tp, -1):
                out[tp] = self._committed[tp] = offset
        return out

    def forget(self, tps: Iterable[TP]) -> None:
        """Partitions revoked: their next owner starts from what was committed."""
        for tp in tps:
            self._pending.pop(tp, None)
            self._caps.pop(tp, None)
            self._committed.pop(tp, None)
