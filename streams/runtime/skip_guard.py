"""Reads again the input events Faust skips across a rebalance.

Why: faust-streaming 0.15's fetch loop remembers the last offset it handed on per partition
(its "read offset") and drops any later message at or below it. When a rebalance stops the
flow, the loop still runs through the rest of the batch it fetched -- handing nothing on, but
moving the read offset to the batch's end -- and the revocation has already cleared that
partition's entry, so the stale value outlives the rebalance. When the partition comes back
(to this worker, or to a resumed zombie whose fetcher ran ahead), the events between the
committed offset and that stale value are dropped before the agent sees them, and the next
commit passes them: lost. Measured in the zombie fault test: 22 to 130 events of one partition,
in four runs out of six.

So after each recovery the worker notes, per owned input partition, the offset the group
committed (or the log start, if none). The first event of that partition that reaches the agent
is checked against it: if it is further on, the events in between are read with a plain
consumer and applied first, in order. Already journalled ones are duplicates (idempotent by
event_id); offsets with no record (transaction markers, deleted segments) cost one fetch.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.types import TP

from streams.config.kafka_auth import client_kwargs
from streams.config.settings import Settings
from streams.runtime.kafka_admin import parse_broker_url

log = logging.getLogger("partnerpulse")


@dataclass
class RefetchedMessage:
    """What the agent reads of a Faust message, for a record read by :class:`SkipGuard`."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    headers: Any
    tp: TP
    acked: bool = False


@dataclass
class RefetchedEvent:
    """A record the fetch loop skipped, shaped like the Faust event the agent expected."""

    message: RefetchedMessage
    value: bytes | None


class SkipGuard:
    """The committed offset each input partition must resume from, and the reads that fill a
    gap before it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.expected: dict[TP, int] = {}
        """Input partition -> the first offset its next event must have (until one arrives)."""
        self.gaps = 0
        """Gaps found (each read with a consumer of its own)."""
        self.refetched = 0
        """Records read to fill them."""

    def _consumer(self, group: str | None) -> AIOKafkaConsumer:
        return AIOKafkaConsumer(
            bootstrap_servers=parse_broker_url(self.settings.broker), group_id=group,
            enable_auto_commit=False, fetch_max_wait_ms=200, **client_kwargs(self.settings))

    async def arm(self, tps: Iterable[TP]) -> None:
        """Note where each of ``tps`` resumes: its committed offset, or the log start."""
        parts = [TopicPartition(tp.topic, tp.partition) for tp in tps]
        self.expected = {}
        if not parts:
            return
        # the group's own id, only to read its commits: a consumer that never subscribes
        # never joins the group
        consumer = self._consumer(self.settings.app_id)
        await consumer.start()
        try:
            starts = await consumer.beginning_offsets(parts)
            for part in parts:
                committed = await consumer.committed(part)
                self.expected[TP(part.topic, part.partition)] = (
                    committed if committed is not None else starts[part])
        finally:
            await consumer.stop()

    def forget(self) -> None:
        """A revocation: the next recovery notes the offsets again."""
        self.expected = {}

    def gap_before(self, tp: TP, offset: int) -> int | None:
        """The offset a gap before ``offset`` starts at, if ``offset`` is its partition's first
        event since the recovery and lies past where the partition resumes."""
        start = self.expected.pop(tp, None)
        if start is not None and offset > start:
            return start
        return None

    async def read(self, tp: TP, start: int, end: int) -> list[RefetchedEvent]:
        """The records of ``tp`` in [start, end), in offset order."""
        self.gaps += 1
        part = TopicPartition(tp.topic, tp.partition)
        consumer = self._consumer(None)
        out: list[RefetchedEvent] = []
        await consumer.start()
        try:
            consumer.assign([part])
            consumer.seek(part, start)
            empty = 0
            done = False
            while not done and empty < 2:
                batch = await consumer.getmany(part, timeout_ms=300)
                records = batch.get(part, [])
                empty = 0 if records else empty + 1
                for record in records:
                    if record.offset >= end:
                        done = True
                        break
                    out.append(RefetchedEvent(
                        RefetchedMessage(tp.topic, tp.partition, record.offset, record.key,
                                         record.headers, tp),
                        record.value))
        finally:
            await consumer.stop()
        self.refetched += len(out)
        log.warning("%s[%d]: the fetch loop skipped offsets %d-%d after a rebalance; read %d "
                    "records again", tp.topic, tp.partition, start, end - 1, len(out))
        return out
