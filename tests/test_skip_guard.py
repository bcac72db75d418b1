"""The skip guard (streams/runtime/skip_guard.py), against the embedded broker: where a
partition resumes after a rebalance, and the records of a gap read again."""

from __future__ import annotations

import asyncio
import uuid

from faust.types import TP
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from kafka.structs import OffsetAndMetadata

from streams.config.settings import Settings
from streams.runtime.kafka_admin import ensure_topics
from streams.runtime.skip_guard import SkipGuard
from streams.tools.broker import EmbeddedBroker


def _topic_with(broker: EmbeddedBroker, n: int) -> str:
    topic = f"skip-{uuid.uuid4().hex[:8]}"
    ensure_topics(broker.bootstrap, {topic: 1})
    producer = KafkaProducer(bootstrap_servers=broker.bootstrap)
    for i in range(n):
        producer.send(topic, key=f"k{i}".encode(), value=f"v{i}".encode(), partition=0,
                      headers=[("pp-source", b"tickets")])
    producer.flush()
    producer.close()
    return topic


def test_a_partition_resumes_at_the_log_start_then_at_the_groups_commit(
        broker: EmbeddedBroker) -> None:
    topic = _topic_with(broker, 10)
    group = f"pp-skip-{uuid.uuid4().hex[:8]}"
    guard = SkipGuard(Settings(broker=broker.url, app_id=group))
    tp = TP(topic, 0)
    asyncio.run(guard.arm([tp]))
    assert guard.expected == {tp: 0}  # nothing committed: the log start
    assert guard.gap_before(tp, 0) is None  # the first event is where the partition resumes
    assert guard.gap_before(tp, 7) is None  # checked once: only the first event after a recovery

    consumer = KafkaConsumer(bootstrap_servers=broker.bootstrap, group_id=group,
                             enable_auto_commit=False)
    consumer.commit({TopicPartition(topic, 0): OffsetAndMetadata(4, None, -1)})
    consumer.close()
    asyncio.run(guard.arm([tp]))
    assert guard.expected == {tp: 4}
    assert guard.gap_before(tp, 9) == 4
    guard.forget()
    assert guard.gap_before(tp, 9) is None  # a revocation: nothing to check until re-armed


def test_a_gap_is_read_again_in_offset_order(broker: EmbeddedBroker) -> None:
    topic = _topic_with(broker, 10)
    guard = SkipGuard(Settings(broker=broker.url, app_id="pp-skip-read"))
    tp = TP(topic, 0)
    events = asyncio.run(guard.read(tp, 3, 8))
    assert [e.message.offset for e in events] == [3, 4, 5, 6, 7]
    assert [e.value for e in events] == [f"v{i}".encode() for i in range(3, 8)]
    assert [e.message.key for e in events] == [f"k{i}".encode() for i in range(3, 8)]
    assert all(e.message.tp == tp and e.message.topic == topic for e in events)
    assert dict(events[0].message.headers)["pp-source"] == b"tickets"
    assert (guard.gaps, guard.refetched) == (1, 5)
    # a gap with nothing in it (a transaction marker, a deleted segment) reads nothing
    assert asyncio.run(guard.read(tp, 10, 12)) == []
