"""Writing the in-memory journal's checkpoints to the worker's data directory.

Why: a restart on the same disk then reads each changelog partition from its checkpoint's
offset on, not from the beginning (streams/runtime/checkpoint_file.py; the store's bulk load
reads them, streams/runtime/journal_table.py). With snapshots, what the store holds is about
the partners' state, so the restart costs about the state, not the events seen.

A checkpoint must hold exactly the changelog's records up to its offset (less the event
records a snapshot covers, which a restore does not need). The store also holds writes the
broker has not acknowledged yet, which may never land: a file holding one would restore an
event the changelog does not have, and the commit would never send it again. So a checkpoint
is taken only when no write of its partition is on its way: the ingest agent is held off (the
journal lock) while the producer delivers what it has, and then the records and the offset of
the newest acknowledged record are taken in one synchronous step. The file is then written in
a thread, the agent running again.

Checkpoints are taken after each recovery (a new assignment: what was read is on disk before
the next crash) and then every ``checkpoint_interval_s`` for partitions that changed. After a
recovery, a partition the bulk load took from its checkpoint is written again only if the
changelog had moved :data:`AFTER_RECOVERY_GAP` records past it: rewriting a filled worker's
half a gigabyte just read back would compete with its catch-up for nothing.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Mapping

from faust.types import TP

from streams.config.settings import Settings
from streams.engine.journal import SEP
from streams.runtime import checkpoint_file
from streams.runtime.journal_table import BulkLoadedMemoryStore, JournalTable
from streams.runtime.ownership import Ownership

log = logging.getLogger("partnerpulse")

QUIET_S = 1.0
"""Longest the agent is held off waiting for the producer to deliver the journal writes on
their way; past it the checkpoint is tried again after :data:`RETRY_S`."""

AFTER_RECOVERY_GAP = 10_000
"""Changelog records past a partition's loaded checkpoint that make the pass after a recovery
write it again (fewer wait for ``checkpoint_interval_s``)."""

RETRY_S = 30.0
"""Wait before trying again a pass that could not be taken (each try may hold the agent)."""


class Checkpoints:
    """Takes the owned changelog partitions' checkpoints when they fall due."""

    def __init__(self, settings: Settings, journal: JournalTable, ownership: Ownership,
                 lock: asyncio.Lock, member: Callable[[], bool] = lambda: True) -> None:
        self.journal = journal
        self.ownership = ownership
        self.lock = lock
        """Held by the ingest agent around each batch: taken here, no journal write starts."""
        self.member = member
        """Whether the worker's group membership is proven now (the fence): a zombie's
        store may miss what the partition's new owner wrote."""
        self.interval_s = settings.checkpoint_interval_s
        self.tick_s = min(5.0, settings.checkpoint_interval_s / 2)
        self._generation = -1
        """The assignment generation last checkpointed: a new one is checkpointed at once."""
        self._last_at = 0.0
        """Monotonic time of the last checkpoint pass."""
        self._retry_at = 0.0
        """Monotonic time before which a pass that could not be taken is not tried again."""
        self._offsets: dict[int, int] = {}
        """Partition -> the offset its last checkpoint file stands at."""
        self.written = 0
        self.bytes = 0
        """Checkpoint files written since start, and their bytes."""
        self.busy = 0
        """Passes given up because writes were still on their way after :data:`QUIET_S`."""
        self.last_write_s = 0.0
        """Wall seconds the last pass took, file writing included."""
        self.passes = 0
        """Passes completed (each writes the files of the partitions that changed)."""

    def status(self) -> dict[str, object]:
        """What /ready reports under ``checkpoints``."""
        store = self.journal.data
        loads = store.checkpoint_loads if isinstance(store, BulkLoadedMemoryStore) else {}
        refusals = store.checkpoint_refusals if isinstance(store, BulkLoadedMemoryStore) else []
        return {"written": self.written, "bytes": self.bytes, "busy": self.busy,
                "partitions": sorted(self._offsets), "passes": self.passes,
                "last_write_s": round(self.last_write_s, 3), **loads,
                "refusals": [f"{p}: {why}" for p, why in refusals]}

    async def tick(self) -> None:
        """Take the checkpoints that are due."""
        own = self.ownership
        if not own.ready:
            return
        now = time.monotonic()
        if now < self._retry_at or (own.generation == self._generation
                                    and now - self._last_at < self.interval_s):
            return
        generation = own.generation
        recovered = generation != self._generation
        if await self.take(AFTER_RECOVERY_GAP if recovered else 1):
            self._generation = generation
            self._last_at = now
        else:  # not now (busy, unproven membership): not at every tick either
            self._retry_at = now + RETRY_S

    async def take(self, gap: int = 1) -> bool:
        """Checkpoint every owned partition whose changelog moved at least ``gap`` records
        past its last checkpoint (any, never checkpointed); whether the pass was complete
        (False: not now, try again)."""
        store = self.journal.data
        own = self.ownership
        if not isinstance(store, BulkLoadedMemoryStore) or store.checkpoint_dir is None:
            return True
        if not own.ready or not self.member():
            return False
        started = time.perf_counter()
        generation = own.generation
        topic = self.journal.changelog_topic.get_topic_name()
        async with self.lock:
            deadline = time.monotonic() + QUIET_S
            parts = own.owned - store.failed  # (a failed write is never acknowledged)
            while any(store.in_flight(p) for p in parts):
                if time.monotonic() > deadline:
                    self.busy += 1
                    return False
                await asyncio.sleep(0.01)
            if own.generation != generation or not own.ready or not self.member():
                return False
            # from here to the end of the block nothing awaits: records and offsets agree
            todo: dict[int, tuple[int, bytes]] = {}
            for p in own.owned - store.failed:
                last = store.last_record.get(TP(topic, p))
                on_disk = self._offsets.get(p, store.checkpoint_offsets.get(p))
                if last is not None and (on_disk is None or last[0] - on_disk >= gap):
                    todo[p] = last
            records = by_partition(store.data.items(), set(todo), own.partition_of)
        for p, (offset, key) in sorted(todo.items()):
            path = checkpoint_file.path_for(store.checkpoint_dir, topic, p)
            ckpt = checkpoint_file.Checkpoint(topic, p, offset, key, records.get(p, []))
            try:
                size = await asyncio.to_thread(checkpoint_file.write, path, ckpt)
            except OSError:
                log.exception("could not write the journal checkpoint of partition %d: a "
                              "restart reads it from an older one, or whole", p)
                continue
            self._offsets[p] = offset
            self.written += 1
            self.bytes += size
        self.last_write_s = time.perf_counter() - started
        self.passes += 1
        return True


def by_partition(items: Iterable[tuple[bytes, bytes]], wanted: set[int],
                 partition_of: Callable[[str], int]) -> Mapping[int, list[tuple[bytes, bytes]]]:
    """The records of the ``wanted`` partitions, by partition: one decision per partner (the
    key's prefix), not per record."""
    out: dict[int, list[tuple[bytes, bytes]]] = {p: [] for p in wanted}
    where: dict[bytes, list[tuple[bytes, bytes]] | None] = {}
    sep = SEP.encode()
    for key, value in items:
        prefix = key[:key.find(sep)]
        if prefix not in where:
            where[prefix] = out.get(partition_of(prefix.decode()))
        bucket = where[prefix]
        if bucket is not None:
            bucket.append((key, value))
    return out
