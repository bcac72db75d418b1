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

import time
from typing import Any

import faust
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.stores.memory import Store as MemoryStore
from faust.types import TP
from yarl import URL

from .broker import parse_broker_url


class BulkLoadedMemoryStore(MemoryStore):
    """A memory store that loads newly assigned changelog partitions in bulk."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self._offsets: dict[TP, int] = {}
        self.loaded_records = 0
        self.load_started_at = self.load_done_at = 0.0
        """Wall times (epoch s) of the last bulk load."""

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
        todo = sorted(tp for tp in assigned if tp.topic == topic)
        if todo:
            await self._load(todo)

    async def _load(self, tps: list[TP]) -> None:
        self.load_started_at = time.time()
        self.loaded_records = 0
        brokers = ";".join(str(url) for url in self.app.conf.broker)
        consumer = AIOKafkaConsumer(bootstrap_servers=parse_broker_url(brokers),
                                    enable_auto_commit=False, group_id=None,
                                    fetch_max_wait_ms=100, max_partition_fetch_bytes=8 << 20)
        await consumer.start()
        data = self.data
        last: dict[TP, int] = {}
        try:
            parts = {TopicPartition(tp.topic, tp.partition): tp for tp in tps}
            consumer.assign(list(parts))
            for part, tp in parts.items():
                if tp in self._offsets:
                    consumer.seek(part, self._offsets[tp] + 1)
                else:
                    await consumer.seek_to_beginning(part)
            # until two fetches come back empty: the embedded broker's end offsets understate
            empty = 0
            while empty < 2:
                batch = await consumer.getmany(timeout_ms=200, max_records=50_000)
                empty = 0 if batch else empty + 1
                for part, records in batch.items():
                    for record in records:
                        if record.value is None:
                            data.pop(record.key, None)
                        else:
                            data[record.key] = record.value
                    self.loaded_records += len(records)
                    if records:
                        last[parts[part]] = records[-1].offset
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


class JournalTable(faust.Table):
    """A Faust table whose memory store is :class:`BulkLoadedMemoryStore`."""

    def _new_store_by_url(self, url: str | URL) -> Any:
        if URL(str(url)).scheme != "memory":
            return super()._new_store_by_url(url)
        return BulkLoadedMemoryStore(
            url, self.app, self, table_name=self.name, key_type=self.key_type,
            key_serializer=self.key_serializer, value_serializer=self.value_serializer,
            value_type=self.value_type, loop=self.loop, options=self.options,
        )


class JournalWriter:
    """The journal's changelog records of one batch of events, sent as produce batches.

    Why: a Faust table write sends its changelog record through Faust's per-message producer
    path (a FutureMessage, a queue, one awaited send each, and the conductor stalling the
    stream whenever more than 100 wait): a third of the worker's time in a profile. The agent
    writes the store itself and hands the records here; :meth:`flush` submits one aiokafka
    batch per partition (more when one fills) to the producer Faust uses, and waits until the
    broker has them. The agent acks its events only after that, so a committed offset never
    gets ahead of the journal (at least once), and a record the broker refused fails the agent
    instead of going missing.
    """

    def __init__(self, table: faust.Table) -> None:
        self.table = table
        self._open: dict[int, Any] = {}
        self._full: list[tuple[int, Any]] = []
        self.records = 0
        """Journal records the broker has taken so far."""
        self.batches = 0
        """Produce batches the broker has taken so far."""

    def _producer(self) -> Any:
        # the AIOKafkaProducer inside Faust's aiokafka driver (the one its commits flush)
        return self.table.app.producer._ensure_producer()  # type: ignore[attr-defined]

    def add(self, partition: int, key: bytes, value: bytes | None) -> None:
        """Queue one record (``None``: a tombstone) for the changelog partition."""
        builder = self._open.get(partition)
        if builder is None:
            builder = self._open[partition] = self._producer().create_batch()
        if builder.append(key=key, value=value, timestamp=None) is None:  # full
            self._full.append((partition, builder))
            # an empty batch takes any one record, however large
            builder = self._open[partition] = self._producer().create_batch()
            builder.append(key=key, value=value, timestamp=None)

    async def flush(self) -> None:
        """Send every queued record, in order per partition; return once the broker has them.

        Raises what the producer raised (after its own retries) for a batch that failed.
        """
        if not self._open and not self._full:
            return
        batches, self._full = [*self._full, *self._open.items()], []
        self._open = {}
        topic = self.table.changelog_topic.get_topic_name()
        producer = self._producer()
        sent = []
        for partition, builder in batches:
            builder.close()
            sent.append((partition, builder.record_count(),
                         await producer.send_batch(builder, topic, partition=partition)))
        store = self.table.data
        for partition, count, future in sent:
            metadata = await future
            # What Faust's table does per record: a RocksDB store keeps the changelog offset it
            # holds, so a restart reads only what is past it (a no-op for the memory store).
            store.set_persisted_offset(TP(topic, partition), metadata.offset + count - 1)
            self.records += count
            self.batches += 1
