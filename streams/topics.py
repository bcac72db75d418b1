"""Topic names and the partner -> partition mapping shared by producers and workers."""

from __future__ import annotations

from typing import Final

from aiokafka.partitioner import murmur2

from .contract import TOPICS

DEAD_LETTER: Final = "partnerpulse-dead-letter"
"""Messages that broke the contract: original bytes, reason in the ``pp-reason`` header."""

REPARTITION: Final = "partnerpulse-by-partner"
"""Events that arrived on a partition other than their partner's, re-keyed by partner."""

ALERTS: Final = "partnerpulse-alerts"
"""KPI state changes (issue 3)."""

SOURCE_HEADER: Final = "pp-topic"
REASON_HEADER: Final = "pp-reason"


def partition_for(partner_id: str, partitions: int) -> int:
    """Kafka's default partitioner (murmur2) on the partner id, as Java and Python clients use it."""
    return (murmur2(partner_id.encode()) & 0x7FFFFFFF) % partitions


def all_topics(partitions: int) -> dict[str, int]:
    """Every topic the pipeline needs, with its partition count."""
    topics = {name: partitions for name in (*TOPICS, REPARTITION)}
    topics[DEAD_LETTER] = 1
    topics[ALERTS] = 1
    return topics
