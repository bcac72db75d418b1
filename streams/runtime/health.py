"""The worker's own health figures for /metrics: lag, fetch age, writes held, alert delivery.

Why a part of its own: these are read from Faust's and aiokafka's internals (the consumer's
high watermarks, aiokafka's per-partition fetch stamps), which no public API gives; this module
is the one place that reaches in, so a Faust or aiokafka upgrade breaks here and nowhere else.
It is the exporter's :class:`~streams.outputs.exporter.PipelineHealth`.
"""

from __future__ import annotations

import time
from typing import Any

from faust.types import TP

from streams.ingest.contract import TOPICS
from streams.ingest.topics import REPARTITION
from streams.outputs.series import CONSUMER_FETCH_AGE, EVENT_LOOP_LAG
from streams.runtime.alerting import Alerting
from streams.runtime.faust_app import App
from streams.runtime.ownership import Ownership
from streams.runtime.pacing import LoopLag


def wall_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


class Health:
    """Lag, the broker's last fetch answer, and the delivery figures of writes and alerts."""

    def __init__(self, app: App, ownership: Ownership, alerting: Alerting,
                 loop_lag: LoopLag | None = None) -> None:
        self.app = app
        self.ownership = ownership
        self.alerting = alerting
        self.loop_lag = loop_lag
        self.positions: dict[tuple[str, int], int] = {}
        """(topic, partition) -> offset of the last event the agent took (written per event)."""
        self.last_judged_ms: int | None = None
        """Wall time of the last completed judging tick (a stuck judge shows here)."""
        self._last_fetch_ms: int | None = None

    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the high watermark, per input partition this worker processes."""
        out: dict[tuple[str, int], int] = {}
        consumer = self.app.consumer
        for (topic, partition), offset in list(self.positions.items()):
            if partition not in self.ownership.owned:
                continue
            try:
                highwater = consumer.highwater(TP(topic, partition))
            except Exception:
                continue
            if highwater is not None:
                out[(topic, partition)] = max(0, highwater - offset - 1)
        return out

    def last_fetch_ms(self) -> int | None:
        """Wall time of the broker's newest fetch answer for an owned input partition.

        Why: a frozen or unreachable broker shows nowhere else. Lag is computed from the last
        answer and freezes with it, and quiet partners look like a dead feed. aiokafka stamps
        each partition on every fetch answer, records or not, so the age grows only while no
        answer comes.
        """
        try:
            consumer = self._aiokafka_consumer()
            stamps = [consumer.last_poll_timestamp(tp) for tp in list(consumer.assignment())
                      if tp.topic in (*TOPICS, REPARTITION)]
        except Exception:  # not started yet, or the assignment changed under us
            stamps = []
        # remembered: a lost broker also costs the assignment (the group must be rejoined), and
        # the figure must keep growing then instead of disappearing
        newest = max((s for s in stamps if s is not None), default=None)
        if newest is not None and (self._last_fetch_ms is None or newest > self._last_fetch_ms):
            self._last_fetch_ms = newest
        return self._last_fetch_ms

    def _aiokafka_consumer(self) -> Any:
        """The aiokafka consumer under Faust's (in Faust's consumer thread object)."""
        return self.app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]

    def delivery(self) -> dict[str, tuple[str, str, float]]:
        """Alert delivery figures, and when partners were last judged."""
        out: dict[str, tuple[str, str, float]] = {}
        if self.last_judged_ms is not None:
            out["partnerpulse_last_judged_timestamp_seconds"] = (
                "gauge", "Wall time of the last judging tick (wall clock mode).",
                self.last_judged_ms / 1000)
        fetched_ms = self.last_fetch_ms()
        if fetched_ms is not None:
            out[CONSUMER_FETCH_AGE] = (
                "gauge", "Seconds since the broker last answered a fetch for this worker's input "
                "partitions: grows while the broker is unreachable or the consumer is stalled.",
                max(0.0, (wall_ms() - fetched_ms) / 1000))
        if self.loop_lag is not None:
            out[EVENT_LOOP_LAG] = (
                "gauge", "The longest this worker's event loop was late to run a task that was "
                f"due, over the last {self.loop_lag.span_s:g} s: events, views and alert "
                "deliveries wait that long (long unpaced work, or a garbage collection).",
                self.loop_lag.longest())
        guard, fence = self.app.commit_guard, self.app.fence
        out |= {
            "partnerpulse_write_failures": (
                "counter", "Writes made for input events (journal changelog, repartition, dead "
                "letter) that the broker did not take; each holds its partition's commit.",
                guard.send_failures),
            "partnerpulse_commit_held_partitions": (
                "gauge", "Input partitions whose offset commit is held at a failed write or a "
                "failed event until they are reassigned (a restart reads from there).",
                guard.held),
            "partnerpulse_fence_held_batches": (
                "counter", "Batches held because no heartbeat had proven group membership "
                "within half the session timeout.", fence.held_batches),
            "partnerpulse_fence_dropped_events": (
                "counter", "Events dropped unapplied because this worker had left the group "
                "(their new owner reads them).", fence.dropped_events),
        }
        return out | self.alerting.figures()
