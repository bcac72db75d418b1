"""The engine rebuilt from the journal after each assignment, and the figures of the last rebuild.

Why: the engine's state is memory only; the journal table (its changelog) is what survives a
restart or a move to another worker. Once Faust has recovered the table, the owned partners
that are not already whole in memory are replayed from it: in chunks that leave the event loop
running, abandoned if the partitions are revoked meanwhile. Its phases' wall times are what
/ready reports under ``recovery`` (and ``restoring`` while it runs).
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from typing import Any

import faust
from faust.types import TP

from streams.config.kafka_auth import client_kwargs
from streams.config.settings import Settings
from streams.engine.core import Engine, settle_gc
from streams.ingest.contract import TOPICS
from streams.ingest.topics import REPARTITION
from streams.runtime.journal_table import BulkLoadedMemoryStore, JournalTable
from streams.runtime.ownership import Ownership
from streams.runtime.skip_guard import SkipGuard

log = logging.getLogger("partnerpulse")

RESTORE_CHUNK = 5_000
"""Journal events replayed between two passes of the event loop during recovery."""


class Recovery:
    """Rebuilds the owned partners' windows from the journal; keeps the last rebuild's figures."""

    def __init__(self, settings: Settings, engine: Engine, journal: JournalTable,
                 ownership: Ownership, skips: SkipGuard) -> None:
        self.settings = settings
        self.skips = skips
        self.engine = engine
        self.journal = journal
        self.ownership = ownership
        self.last: dict[str, float] = {}
        """Wall times (epoch s) of the last recovery's phases, and its record counts."""
        self.restoring: tuple[int, int] | None = None
        """(events replayed, of records) while a restore runs."""
        self.recovered_events = 0

    async def on_assigned(self, app: faust.App, assigned: set[TP], **_: Any) -> None:
        """Faust's on_partitions_assigned signal: the first phase of the next recovery."""
        self.last["assigned_at"] = time.time()

    async def on_recover(self) -> None:
        """Rebuild the owned partners' windows from the journal Faust has just recovered.

        A long replay must not hold the event loop: in chunks of RESTORE_CHUNK events, each
        followed by a pass of the loop, so the consumer keeps polling (a loop blocked past the
        max poll interval is dropped from the group, and the rebalance starts recovery over),
        the producer keeps flushing and /ready keeps answering (not ready, with the progress).
        """
        phases: dict[str, float] = {"recover_started_at": time.time()}
        ownership = self.ownership
        generation = ownership.generation
        owned = ownership.owned_partitions()
        # Keep only states that are whole: owned, and held since before the revocation. A state
        # created in between (an event applied between revocation and recovery) holds just that
        # event; dropped here, it is rebuilt from the journal, which has its record too.
        survivors = ownership.survivors
        self.engine.drop_partners(lambda p: ownership.partition_of(p) in owned and p in survivors)
        had = set(self.engine.partner_ids())
        tail = await self.changelog_tail(owned)
        phases["tail_done_at"] = time.time()
        for key, (partition, value) in tail.items():
            self.journal.put_local(partition, key, value)
        records = self._records_to_restore(owned, had)
        phases["collected_at"] = time.time()
        phases["records"] = len(records)
        applied = await self._replay(records, generation)
        if applied is None:
            return
        del records
        # the rebuilt state is long-lived: out of the cyclic GC's sight (without the full
        # collection first, which costs seconds on a filled worker and frees nothing here)
        settle_gc(collect=False)
        phases["restored_at"] = time.time()
        try:
            await self.skips.arm(TP(topic, p) for topic in (*TOPICS, REPARTITION) for p in owned)
        except Exception:  # the worker runs on, as it would without the check
            log.exception("could not read the committed offsets: events the fetch loop skips "
                          "after this rebalance go unnoticed")
        if self.ownership.generation != generation:
            return  # revoked meanwhile: the next assignment's recovery starts over
        phases["applied"] = applied
        stats = self.engine.restore_stats
        phases["snapshots"] = stats.get("snapshots", 0)
        phases["snapshots_refused"] = stats.get("refused", 0)
        phases["events_covered_by_snapshots"] = stats.get("events_covered", 0)
        for partner, reason in self.engine.refusals:
            log.warning("partner %s: snapshot not used (%s); its events were replayed",
                        partner, reason)
        # journal events restored: replayed, or covered by the snapshot loaded in their place
        self.recovered_events += applied + stats.get("events_covered", 0)
        ownership.recovered(owned)
        self._keep(phases)
        log.info("recovered %d journal events (%d from the changelog tail) in %.2fs "
                 "(restore %.2fs, %d partners from snapshots, %d events they cover); "
                 "partitions %s, %d partners kept", applied, len(tail),
                 phases["restored_at"] - phases["recover_started_at"],
                 phases["restored_at"] - phases["collected_at"], stats.get("snapshots", 0),
                 stats.get("events_covered", 0), sorted(owned), len(had))

    def _records_to_restore(self, owned: set[int], had: set[str]) -> list[tuple[bytes, bytes]]:
        """The owned partners' journal records that are not already in memory: one decision per
        partner (the key's prefix), not per record."""
        partition_of = self.ownership.partition_of
        wanted: dict[bytes, bool] = {}
        records: list[tuple[bytes, bytes]] = []
        for key, value in self.journal.data.items():
            prefix = key[:key.find(b"\x1f")]
            keep = wanted.get(prefix)
            if keep is None:
                partner = prefix.decode()
                keep = wanted[prefix] = (partner not in had
                                         and partition_of(partner) in owned)
            if keep:
                records.append((key, value))
        return records

    async def _replay(self, records: list[tuple[bytes, bytes]], generation: int) -> int | None:
        """Apply the records to the engine; the events applied, or None once revoked meanwhile."""
        applied = 0
        # The replay allocates millions of long-lived objects and no cyclic garbage: the cyclic
        # GC would rescan the growing heap again and again for nothing. Off during the replay;
        # afterwards what was rebuilt moves to the permanent generation (gc.freeze), so later
        # full collections under live traffic do not rescan it either.
        gc.disable()
        try:
            for applied in self.engine.restore_steps(records, RESTORE_CHUNK):
                self.restoring = (applied, len(records))
                await asyncio.sleep(0)
                if self.ownership.generation != generation:
                    # Revoked meanwhile (the revocation dropped the partners restored so far):
                    # stop, not ready; the next assignment's recovery starts over.
                    log.info("restore abandoned after %d events: partitions revoked", applied)
                    return None
        finally:
            gc.enable()
            self.restoring = None
        return applied

    def _keep(self, phases: dict[str, float]) -> None:
        """The figures of the recovery just completed, with the journal store's bulk load."""
        self.last = {"assigned_at": self.last.get("assigned_at", 0.0)} | phases
        store = self.journal.data
        if isinstance(store, BulkLoadedMemoryStore):
            self.last |= {"bulk_load_started_at": store.load_started_at,
                          "bulk_load_done_at": store.load_done_at,
                          "bulk_loaded_records": store.loaded_records}

    async def changelog_tail(self, owned: set[int]) -> dict[bytes, tuple[int, bytes | None]]:
        """Changelog records past the end offset the broker reported to Faust's recovery.

        Why: the embedded tansu broker answers ListOffsets(latest) with the *base* offset of
        the last record batch, so Faust's recovery stops before that batch. Reading on from
        there until a fetch comes back empty recovers it; on Apache Kafka it reads nothing.
        """
        if not owned:
            return {}
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        from streams.runtime.kafka_admin import parse_broker_url

        topic = self.journal.changelog_topic.get_topic_name()
        tps = [TopicPartition(topic, p) for p in sorted(owned)]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=parse_broker_url(self.settings.broker), enable_auto_commit=False,
            group_id=None, fetch_max_wait_ms=200, **client_kwargs(self.settings),
        )
        tail: dict[bytes, tuple[int, bytes | None]] = {}
        await consumer.start()
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, ends[tp])
            empty = 0
            while empty < 2:
                batch = await consumer.getmany(timeout_ms=300)
                records = [r for rs in batch.values() for r in rs]
                empty = 0 if records else empty + 1
                for record in records:
                    if record.key is not None:
                        tail[record.key] = (record.partition, record.value)
        finally:
            await consumer.stop()
        return tail
