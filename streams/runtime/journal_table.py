"""The journal table's in-memory store, loaded from its changelog in bulk.

Why: Faust recovers a table by passing every changelog record through its consumer's
per-message delivery (a task pair per message, the conductor, a queue), about 10,000
records/s here; a worker restarted on the memory store with a million journal records spent
over a minute there. This store reads its changelog partitions itself, with one plain
aiokafka consumer (far faster), when they are assigned, and then reports how far it read as
its persisted offset -- what a RocksDB store does with the offsets it keeps on disk -- so
Faust's recovery reads only what is past that (usually nothing). Everything else (tables,
changelog writes, assignment, rebalancing) stays Faust's.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.stores.memory import Store as MemoryStore
from faust.types import TP
from yarl import URL

from streams.config.kafka_auth import app_client_kwargs
from streams.engine.journal import STATE_KEY_END, CoveredEvents
from streams.runtime import checkpoint_file
from streams.runtime.kafka_admin import parse_broker_url

log = logging.getLogger("partnerpulse")


def _never(key: bytes, value: bytes) -> int | None:
    return None


class BulkLoadedMemoryStore(MemoryStore):
    """A memory store that loads newly assigned changelog partitions in bulk."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.covered = CoveredEvents()
        """Forgets the event records a snapshot covers (streams/engine/journal.py says why)."""
        self._offsets: dict[TP, int] = {}
        self.loaded_records = 0
        self.load_started_at = self.load_done_at = 0.0
        """Wall times (epoch s) of the last bulk load."""
        self.assigned: set[TP] = set()
        """The changelog partitions assigned to this worker (active or standby)."""
        self.checkpoint_dir: Path | None = None
        """Where the changelog partitions' checkpoints are (streams/runtime/checkpoint_file.py);
        None: no checkpoint is read or written."""
        self.last_record: dict[TP, tuple[int, bytes]] = {}
        """Per assigned changelog partition: the offset and key of the newest record known to
        be in the changelog and in this store (read by the bulk load, or written and acked)."""
        self.sent: dict[int, int] = {}
        self.acked: dict[int, int] = {}
        """Changelog writes per partition sent, and acknowledged by the broker: equal, nothing
        this store holds is still on its way (a checkpoint may then be taken)."""
        self.failed: set[int] = set()
        """Partitions with a changelog write that failed (:meth:`note_failed`)."""
        self.checkpoint_loads: dict[str, int] = {"loaded": 0, "refused": 0, "records": 0}
        """Checkpoints the bulk loads used, refused, and the records they brought."""
        self.checkpoint_refusals: list[tuple[int, str]] = []
        """(partition, why) of the checkpoints the last bulk load refused."""
        self.checkpoint_offsets: dict[int, int] = {}
        """Partition -> the offset of the checkpoint file on disk that a bulk load used (what
        is on disk already need not be written again)."""

    def note_sent(self, partition: int) -> None:
        """A changelog write to ``partition`` was handed to the producer."""
        self.sent[partition] = self.sent.get(partition, 0) + 1

    def note_acked(self, tp: TP, offset: int, key: bytes) -> None:
        """The broker acknowledged a changelog write: it is at ``offset``."""
        self.acked[tp.partition] = self.acked.get(tp.partition, 0) + 1
        known = self.last_record.get(tp)
        if tp in self.assigned and (known is None or offset > known[0]):
            self.last_record[tp] = (offset, key)

    def note_failed(self, partition: int) -> None:
        """A changelog write to ``partition`` failed: this store holds a record the changelog
        does not, so the partition is never checkpointed again by this process."""
        self.failed.add(partition)

    def in_flight(self, partition: int) -> int:
        """Changelog writes to ``partition`` not acknowledged yet."""
        return self.sent.get(partition, 0) - self.acked.get(partition, 0)

    def persisted_offset(self, tp: TP) -> int | None:
        """The changelog offset up to which this store holds the partition (None: none of it)."""
        return self._offsets.get(tp)

    async def on_rebalance(self, assigned: set[TP], revoked: set[TP], newly_assigned: set[TP],
                           generation_id: int = 0) -> None:
        """Before Faust's recovery starts: bring every assigned changelog partition up to date.

        A partition we kept is read on from where the last load stopped (our own writes since,
        read back); a new one from the beginning; a revoked one is forgotten (another worker
        writes it now), so it is read from the beginning if it comes back.
        """
        topic = self.table.changelog_topic.get_topic_name()
        for tp in revoked:
            self._offsets.pop(tp, None)
            self.last_record.pop(tp, None)
        todo = sorted(tp for tp in assigned if tp.topic == topic)
        self.assigned = set(todo)
        if todo:
            await self._load(todo)

    async def _load(self, tps: list[TP]) -> None:
        self.load_started_at = time.time()
        self.loaded_records = 0
        brokers = ";".join(str(url) for url in self.app.conf.broker)
        # the app's TLS/SASL settings, as Faust's own clients get them: without them the
        # recovery of a secured cluster cannot connect (issue 14)
        consumer = AIOKafkaConsumer(bootstrap_servers=parse_broker_url(brokers),
                                    enable_auto_commit=False, group_id=None,
                                    fetch_max_wait_ms=100, max_partition_fetch_bytes=8 << 20,
                                    **app_client_kwargs(self.app))
        await consumer.start()
        data, put = self.data, self.covered.put
        covers = getattr(self.table, "snapshot_covers", _never)
        last: dict[TP, int] = {}
        try:
            parts = {TopicPartition(tp.topic, tp.partition): tp for tp in tps}
            consumer.assign(list(parts))
            self.checkpoint_refusals = []
            for part, tp in parts.items():
                if tp in self._offsets:
                    consumer.seek(part, self._offsets[tp] + 1)
                elif (held := await self._from_checkpoint(consumer, part, tp, covers)) is not None:
                    last[tp] = held  # the consumer now stands just past the checkpoint
                else:
                    await consumer.seek_to_beginning(part)
            # until two fetches come back empty: the embedded broker's end offsets understate
            empty = 0
            while empty < 2:
                batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
                empty = 0 if batch else empty + 1
                for part, records in batch.items():
                    for record in records:
                        put(data, record.key, record.value, covers)
                    self.loaded_records += len(records)
                    if records:
                        last[parts[part]] = records[-1].offset
                        self.last_record[parts[part]] = (records[-1].offset, records[-1].key)
            ends = await consumer.end_offsets(list(parts))
        finally:
            await consumer.stop()
        for part, tp in parts.items():
            # Never past the end offset the broker reports: Faust's recovery checks the persisted
            # offset against it (the embedded broker's is the last batch's base offset + 1, so
            # Faust then reads that last batch again, which changes nothing).
            held = min(last.get(tp, self._offsets.get(tp, -1)), ends[part] - 1)
            if held >= 0:
                self._offsets[tp] = held
            else:
                self._offsets.pop(tp, None)
        self.load_done_at = time.time()

    async def _from_checkpoint(self, consumer: AIOKafkaConsumer, part: TopicPartition, tp: TP,
                               covers: Callable[[bytes, bytes], int | None]) -> int | None:
        """Load the partition's checkpoint if it can stand for the changelog up to its offset;
        then the consumer is positioned after that offset. Returns the offset, or None (the
        reason kept in :attr:`checkpoint_refusals`): the partition is then read whole.

        Usable when the file is whole, is of this partition, every snapshot record in it fits
        this configuration (a refused snapshot means a replay of every event of its partner,
        and the file holds only those no snapshot covered), and the changelog still has the
        file's last record at its offset (not a topic recreated since, nor one of another
        broker: then the file is stale, whatever its offsets say).
        """
        if self.checkpoint_dir is None:
            return None
        path = checkpoint_file.path_for(self.checkpoint_dir, tp.topic, tp.partition)
        if not path.exists():
            return None
        why = ""
        try:
            ckpt = await asyncio.to_thread(checkpoint_file.read, path)
        except checkpoint_file.CheckpointError as exc:
            why = str(exc)
        else:
            if (ckpt.topic, ckpt.partition) != (tp.topic, tp.partition):
                why = f"it is of {ckpt.topic}[{ckpt.partition}]"
            elif any(covers(key, value) is None for key, value in ckpt.records
                     if key.endswith(STATE_KEY_END)):
                why = "a snapshot in it does not fit this configuration"
            else:
                why = await self._check_offset(consumer, part, ckpt.offset, ckpt.key)
        if why:
            self.checkpoint_loads["refused"] += 1
            self.checkpoint_refusals.append((tp.partition, why))
            log.warning("journal checkpoint of partition %d not used (%s): the partition is "
                        "read from the beginning", tp.partition, why)
            return None
        put, data = self.covered.put, self.data
        for key, value in ckpt.records:
            put(data, key, value, covers)
        self.checkpoint_loads["loaded"] += 1
        self.checkpoint_loads["records"] += len(ckpt.records)
        self.checkpoint_offsets[tp.partition] = ckpt.offset
        self.last_record[tp] = (ckpt.offset, ckpt.key)
        return ckpt.offset

    @staticmethod
    async def _check_offset(consumer: AIOKafkaConsumer, part: TopicPartition, offset: int,
                            key: bytes) -> str:
        """Why the changelog does not have ``key`` at ``offset`` ("" if it does); the consumer
        is left just after it."""
        consumer.seek(part, offset)
        for _ in range(3):  # until the record arrives, or fetches come back empty
            got = await consumer.getmany(part, timeout_ms=300, max_records=1)
            records = got.get(part, [])
            if records:
                record = records[0]
                if record.offset != offset:
                    return f"the changelog has no record at offset {offset} (compacted, or another topic)"
                if record.key != key:
                    return f"the changelog's record at offset {offset} is another one (another topic)"
                return ""
        return f"the changelog ends before offset {offset} (another topic)"


class JournalTable(faust.Table):
    """A Faust table whose memory store is :class:`BulkLoadedMemoryStore`, written by partition.

    Why not ``table[key] = value``: Faust's table and store take the partition from the stream's
    current event, and a batch taken with ``take_events`` has none -- on the RocksDB store every
    such write failed ``assert event is not None``. :meth:`write` is told the partition.
    """

    def _new_store_by_url(self, url: str | URL) -> Any:
        kwargs: dict[str, Any] = {"table_name": self.name, "key_type": self.key_type,
                  "key_serializer": self.key_serializer,
                  "value_serializer": self.value_serializer, "value_type": self.value_type,
                  "loop": self.loop, "options": self.options}
        scheme = URL(str(url)).scheme
        if scheme == "memory":
            return BulkLoadedMemoryStore(url, self.app, self, **kwargs)
        if scheme == "rocksdb":
            from faust.stores.rocksdb import Store as RocksDBStore

            return _partitioned_rocksdb_store(RocksDBStore)(url, self.app, self, **kwargs)
        return super()._new_store_by_url(url)

    snapshot_covers: Callable[[bytes, bytes], int | None] = staticmethod(_never)
    """The last number a snapshot record covers if a restore here would load it (set to the
    engine's ``snapshot_covers``): the memory store then forgets the event records it covers."""

    def put_local(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Write (or, with None, delete) one record in the local store only, on ``partition``."""
        store = self.data
        if isinstance(store, BulkLoadedMemoryStore):
            store.covered.put(store.data, key, value, self.snapshot_covers)
        else:
            store.put_partition(partition, key, value)  # type: ignore[attr-defined]

    def write(self, partition: int, key: bytes, value: bytes | None) -> Any:
        """Write one record to the local store and its changelog; returns the send's future.

        What ``send_changelog`` does, plus the record's timestamp set here, when the write is
        decided: Faust's producer buffer may hand it to Kafka much later (after a pause, a
        backlog), and the changelog then still says when each event was journalled.
        """
        self.put_local(partition, key, value)
        store = self.data
        if isinstance(store, BulkLoadedMemoryStore):
            store.note_sent(partition)
        return self.changelog_topic.send_soon(
            key=key, value=value, partition=partition, timestamp=time.time(),
            key_serializer=self.key_serializer,
            value_serializer="raw" if value is None else self.value_serializer,
            callback=self._on_journal_sent, eager_partitioning=True)

    def _on_journal_sent(self, fut: Any) -> None:
        """Faust's changelog callback, and the memory store told where the record landed (or
        that it never will)."""
        store = self.data
        if isinstance(store, BulkLoadedMemoryStore):
            if fut.cancelled() or fut.exception() is not None:
                store.note_failed(fut.message.partition)
            else:
                meta = fut.result()
                store.note_acked(meta.topic_partition, meta.offset, fut.message.key)
        self._on_changelog_sent(fut)


def _partitioned_rocksdb_store(base: type) -> type:
    """Faust's RocksDB store with a write that is told its partition (see :class:`JournalTable`).

    Built on demand: the RocksDB bindings (``rocksdict``) are the optional ``rocksdb`` extra.
    """

    class PartitionedRocksDBStore(base):
        def put_partition(self, partition: int, key: bytes, value: bytes | None) -> None:
            db = self._db_for_partition(partition)
            if value is None:
                db.delete(key)
                self._key_index.pop(key, None)
            else:
                db.put(key, value)
                self._key_index[key] = partition

    return PartitionedRocksDBStore
