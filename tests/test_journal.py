"""The journal writer against the embedded broker: order, batch splitting, tombstones, offsets."""

from __future__ import annotations

import asyncio
import uuid
from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from streams.broker import EmbeddedBroker, ensure_topics
from streams.journal import JournalWriter

PARTITIONS = 3


class _Store:
    """What the writer reports to a table's store: the changelog offset it holds per partition."""

    def __init__(self) -> None:
        self.persisted: dict[tuple[str, int], int] = {}

    def set_persisted_offset(self, tp: Any, offset: int) -> None:
        self.persisted[(tp.topic, tp.partition)] = offset


def _records() -> list[tuple[int, bytes, bytes | None]]:
    """(partition, key, value): 1 KiB values, so the 16 KiB batches fill many times, and a
    tombstone every 7th record."""
    out: list[tuple[int, bytes, bytes | None]] = []
    for i in range(1500):
        value = None if i % 7 == 3 else f"{i:06d}".encode() * 170
        out.append((i * 5 % PARTITIONS, f"key-{i % 40}".encode(), value))
    return out


async def _read(bootstrap: str, topic: str, want: int) -> list[Any]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None,
                                enable_auto_commit=False, fetch_max_wait_ms=100)
    await consumer.start()
    try:
        consumer.assign([TopicPartition(topic, p) for p in range(PARTITIONS)])
        await consumer.seek_to_beginning()
        got: list[Any] = []
        deadline = asyncio.get_running_loop().time() + 60
        while len(got) < want and asyncio.get_running_loop().time() < deadline:
            for records in (await consumer.getmany(timeout_ms=200)).values():
                got.extend(records)
        return got
    finally:
        await consumer.stop()


def test_flush_delivers_every_record_in_order_per_partition(broker: EmbeddedBroker) -> None:
    topic = f"journal-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, {topic: PARTITIONS})
    records = _records()

    async def run() -> tuple[JournalWriter, _Store, list[Any]]:
        producer = AIOKafkaProducer(bootstrap_servers=broker.bootstrap, acks=1)
        await producer.start()
        store = _Store()
        # the three things the writer uses of a Faust table and its app
        table = SimpleNamespace(
            app=SimpleNamespace(producer=SimpleNamespace(_ensure_producer=lambda: producer)),
            changelog_topic=SimpleNamespace(get_topic_name=lambda: topic),
            data=store,
        )
        writer = JournalWriter(table)  # type: ignore[arg-type]
        try:
            for part in (records[:700], records[700:]):  # two agent batches
                for partition, key, value in part:
                    writer.add(partition, key, value)
                await writer.flush()
            await writer.flush()  # nothing queued: sends nothing
        finally:
            await producer.stop()
        return writer, store, await _read(broker.bootstrap, topic, len(records))

    writer, store, got = asyncio.run(run())
    for partition in range(PARTITIONS):
        sent = [(k, v) for p, k, v in records if p == partition]
        on_log = sorted((r for r in got if r.partition == partition), key=lambda r: r.offset)
        assert [(r.key, r.value) for r in on_log] == sent
        # the offset a RocksDB store would keep: that of the partition's last record
        assert store.persisted[(topic, partition)] == on_log[-1].offset
    assert writer.records == len(records)
    # 1,500 records of about 1 KiB cannot have gone in the 6 batches a flush per partition
    # would make without splitting full ones
    assert writer.batches > 2 * PARTITIONS
