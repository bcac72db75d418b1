"""Writing the owned partners' snapshots to the journal as they fall due.

Why: a restart replays, per partner, only the events after its last snapshot
(:mod:`streams.engine.snapshot`). A partner is due once it has events not yet covered and either
``snapshot_interval_s`` has passed since this worker first saw it so, or ``snapshot_events`` of
them piled up (a backfill). Each snapshot is one synchronous stretch (about 8 ms for a filled
partner); the loop runs between two, so the agent, heartbeats and /metrics keep going.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from streams.config.settings import Settings
from streams.engine.core import Engine
from streams.runtime.health import wall_ms
from streams.runtime.journal_table import JournalTable
from streams.runtime.ownership import Ownership

log = logging.getLogger("partnerpulse")


class Snapshots:
    """Decides which owned partners are due for a snapshot and writes theirs."""

    def __init__(self, settings: Settings, engine: Engine, journal: JournalTable,
                 ownership: Ownership, member: Callable[[], bool] = lambda: True) -> None:
        self.engine = engine
        self.member = member
        """Whether the worker's group membership is proven now (the fence): a zombie, paused
        past its session and resumed, must not write a snapshot of a state another worker now
        moves on from."""
        self.journal = journal
        self.ownership = ownership
        self.interval_s = settings.snapshot_interval_s
        self.events = settings.snapshot_events
        self.max_bytes = settings.snapshot_max_bytes
        self.tick_s = min(5.0, settings.snapshot_interval_s / 2)
        """How often the owned partners are looked over."""
        self._since: dict[str, float] = {}
        """Partner -> monotonic time it was first seen with events not covered."""
        self._not_before: dict[str, float] = {}
        """Partner -> monotonic time before which it is not tried again (too large last time)."""
        self.written = 0
        self.bytes = 0
        """Snapshot records written since start, and their bytes."""
        self.too_large = 0
        """Snapshots left out for being over ``snapshot_max_bytes``."""
        self.largest = 0
        """Bytes of the largest snapshot record made (kept or not)."""

    def status(self) -> dict[str, int]:
        """What /ready reports under ``snapshots``."""
        return {"written": self.written, "bytes": self.bytes, "too_large": self.too_large,
                "largest_bytes": self.largest}

    def due(self, partner: str, now: float) -> bool:
        """Whether the partner's snapshot is due at monotonic time ``now``."""
        pending = self.engine.unsnapshotted(partner)
        if pending <= 0:
            self._since.pop(partner, None)
            return False
        if now < self._not_before.get(partner, 0.0):
            return False
        if pending >= self.events:
            return True
        return now - self._since.setdefault(partner, now) >= self.interval_s

    async def tick(self) -> None:
        """Snapshot every owned partner that is due, yielding to the loop after each."""
        ownership = self.ownership
        if not ownership.ready:
            return
        generation = ownership.generation
        held = set(self.engine.partner_ids())
        for memo in (self._since, self._not_before):  # partners gone with a revocation
            for gone in [p for p in memo if p not in held]:
                del memo[gone]
        for partner in sorted(held):
            if ownership.generation != generation or not ownership.ready or not self.member():
                return  # revoked meanwhile, or membership unproven: the owner snapshots them
            if ownership.owns(partner) and self.due(partner, time.monotonic()):
                self.write(partner)
                await asyncio.sleep(0)

    def write(self, partner: str) -> bool:
        """Snapshot one partner now; whether its snapshot record was written."""
        made = self.engine.snapshot(partner, wall_ms(), self.max_bytes)
        partition = self.ownership.partition_of(partner)
        for key, value in made.writes:
            self.journal.write(partition, key, value)
        self.largest = max(self.largest, made.size)
        if not made.kept:
            self.too_large += 1
            self._not_before[partner] = time.monotonic() + self.interval_s
            log.warning("partner %s: snapshot of %d bytes is over snapshot_max_bytes (%d); not "
                        "written, a restart replays its events", partner, made.size,
                        self.max_bytes)
            return False
        self.written += 1
        self.bytes += made.size
        self._since.pop(partner, None)
        self._not_before.pop(partner, None)
        return True
