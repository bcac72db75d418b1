"""The event ids one partner has accepted: deduplication by ``event_id`` alone.

An id is known whatever the event time of a later delivery: a producer that re-serialises on
retry (a re-stamped ``ts``) or a source that reuses ids sends the same id with another time,
and it must be a duplicate, live and after any restart alike. Each id keeps the hour of the
event time it was first accepted at, which decides when it is forgotten (with its journal
record) -- on the partner's own clock, the one lateness is judged by.

Layout, for memory: ids are 64-bit hashes (:func:`streams.engine.core.id_hash`). Most of them sit
in one array sorted by hash, with their hours in a parallel array (12 B an id, binary search
to find one); the newest few sit in a dict until there are enough of them to merge. A merge
sorts an already sorted run plus a short one, which Python's sort does in about linear time.
"""

from __future__ import annotations

import array
from bisect import bisect_left
from typing import Final

MERGE_AT: Final = 256
"""Ids held unsorted before a merge, at least (more for a partner holding many ids)."""
EXPIRE_LAG_HOURS: Final = 24
"""Ids are dropped in one sweep once the oldest is this many hours past its horizon: the
sweep rewrites the arrays, so it runs about daily per partner, not hourly."""


class SeenIds:
    """The accepted event ids of one partner, with the hour (index) of their event time."""

    __slots__ = ("_hashes", "_hours", "_oldest", "_recent")

    def __init__(self) -> None:
        self._recent: dict[int, int] = {}
        self._hashes = array.array("Q")
        self._hours = array.array("q")
        self._oldest: int | None = None
        """Smallest hour held, or None when empty."""

    def __contains__(self, h: int) -> bool:
        if h in self._recent:
            return True
        hashes = self._hashes
        i = bisect_left(hashes, h)
        return i < len(hashes) and hashes[i] == h

    def __len__(self) -> int:
        return len(self._recent) + len(self._hashes)

    def add(self, h: int, hour: int) -> None:
        """Remember an id (not already held) accepted at ``hour``."""
        self._recent[h] = hour
        if self._oldest is None or hour < self._oldest:
            self._oldest = hour
        if len(self._recent) >= max(MERGE_AT, len(self._hashes) >> 4):
            self._rebuild(None)

    def expire(self, floor: int) -> list[int]:
        """Forget the ids of hours ``<= floor``; returns their hashes (to delete their records).

        Nothing happens until the oldest id is :data:`EXPIRE_LAG_HOURS` past the floor, so an
        id is kept at least until its hour passes the floor, and at most a day longer.
        """
        if self._oldest is None or self._oldest > floor - EXPIRE_LAG_HOURS:
            return []
        return self._rebuild(floor)

    def _rebuild(self, floor: int | None) -> list[int]:
        pairs = list(zip(self._hashes, self._hours, strict=True))
        if self._recent:
            pairs += self._recent.items()
            pairs.sort()  # one sorted run and one short one: about linear
            self._recent = {}
        gone: list[int] = []
        if floor is not None:
            gone = [h for h, hour in pairs if hour <= floor]
            if gone:
                pairs = [p for p in pairs if p[1] > floor]
        self._hashes = array.array("Q", [h for h, _ in pairs])
        self._hours = array.array("q", [hour for _, hour in pairs])
        self._oldest = min(self._hours) if pairs else None
        return gone

    def packed(self) -> int:
        """How many ids sit in the sorted arrays (the rest wait in the dict to be merged)."""
        return len(self._hashes)

    def nbytes(self) -> int:
        """Bytes held by the arrays and the dict of recent ids (for the memory benchmark)."""
        import sys

        return (sys.getsizeof(self._recent) + sum(sys.getsizeof(h) for h in self._recent)
                + self._hashes.itemsize * len(self._hashes) + self._hours.itemsize * len(self._hours))
