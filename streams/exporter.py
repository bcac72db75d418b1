"""Prometheus export of the engine's state (the metric names are a contract).

A custom collector renders the current values at scrape time from the engine,
on a dedicated registry, so a partner whose partitions moved to another worker
disappears from this worker's ``/metrics`` at the next scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Protocol

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .contract import TOPICS
from .engine import Engine, Outcome, attainment
from .judge import State
from .watch import Watch


class KpiCollector(Collector):
    """Collects partnerpulse_* series from an engine for the partners this worker owns."""

    def __init__(
        self,
        engine: Engine,
        owned: Callable[[str], bool],
        wall_ms: Callable[[], int],
        watch: Watch | None = None,
        health: PipelineHealth | None = None,
    ) -> None:
        self.engine = engine
        self.owned = owned
        self.wall_ms = wall_ms
        self.watch = watch
        self.health = health

    def collect(self) -> Iterator[Metric]:
        """Render every series from the engine's state at this moment."""
        engine = self.engine
        now = engine.now(self.wall_ms())
        value = GaugeMetricFamily(
            "partnerpulse_kpi_value",
            "KPI value over the rolling window, in base units (seconds, ratio 0-1, score).",
            labels=["partner", "kpi", "window"],
        )
        samples = GaugeMetricFamily(
            "partnerpulse_kpi_samples",
            "Samples behind the KPI value in the window (denominator for ratios).",
            labels=["partner", "kpi", "window"],
        )
        attained = GaugeMetricFamily(
            "partnerpulse_kpi_attainment_ratio",
            "KPI as a share of its target: 1 on target, above 1 better, either direction.",
            labels=["partner", "kpi", "window"],
        )
        target = GaugeMetricFamily(
            "partnerpulse_kpi_target",
            "The partner's target for the KPI (partner, tier or catalog default).",
            labels=["partner", "kpi"],
        )
        info = GaugeMetricFamily(
            "partnerpulse_partner_info", "Partners exported by this worker, with their tier.",
            labels=["partner", "tier"],
        )
        kpis = {k.id: k for k in engine.kpis}
        owned = [p for p in engine.partner_ids() if self.owned(p)]
        for partner in owned:
            tier = engine.partners.tier(partner)
            info.add_metric([partner, tier], 1.0)
            targets = {k.id: engine.partners.target(partner, k) for k in engine.kpis}
            for kpi_id, goal in targets.items():
                target.add_metric([partner, kpi_id], goal)
            for (kpi_id, window), kv in sorted(engine.evaluate(partner, now).items()):
                labels = [partner, kpi_id, window]
                value.add_metric(labels, kv.value)
                samples.add_metric(labels, float(kv.samples))
                attained.add_metric(labels, attainment(kpis[kpi_id], kv.value, targets[kpi_id]))
        yield from (value, samples, attained, target, info)
        if self.watch is not None:
            yield from self._judgement(owned, now)
        events = CounterMetricFamily(
            "partnerpulse_events",
            "Input messages by topic and outcome (accepted, duplicate, late, rejected).",
            labels=["topic", "outcome"],
        )
        for topic in TOPICS:
            for outcome in Outcome:
                events.add_metric([topic, outcome.value], engine.counts.get((topic, outcome), 0))
        yield events
        last = GaugeMetricFamily(
            "partnerpulse_last_event_timestamp_seconds",
            "Event time of the newest accepted event per topic.",
            labels=["topic"],
        )
        for topic, ts in sorted(engine.last_event_ms.items()):
            last.add_metric([topic], ts / 1000.0)
        yield last


    def _judgement(self, owned: list[str], now: int) -> Iterator[Metric]:
        assert self.watch is not None
        state = GaugeMetricFamily(
            "partnerpulse_kpi_state",
            "Judgement of the KPI in the window: 1 for the current state, 0 for the others.",
            labels=["partner", "kpi", "window", "state"],
        )
        since = GaugeMetricFamily(
            "partnerpulse_kpi_state_since_timestamp_seconds",
            "When the KPI entered its current state.",
            labels=["partner", "kpi", "window"],
        )
        items = GaugeMetricFamily(
            "partnerpulse_open_items",
            "Tickets still without first contact whose age passed 50/75/100% of the target "
            "(cumulative).",
            labels=["partner", "kpi", "stage"],
        )
        for partner in owned:
            for kpi in self.engine.kpis:
                for window in kpi.windows:
                    judgement = self.watch.state(partner, kpi.id, window)
                    if judgement is None:
                        continue
                    for st in State:
                        state.add_metric([partner, kpi.id, window, st.value],
                                         1.0 if judgement.state is st else 0.0)
                    if judgement.since_ms is not None:
                        since.add_metric([partner, kpi.id, window], judgement.since_ms / 1000.0)
            for (kpi_id, stage), count in self.engine.open_items(partner, now).items():
                items.add_metric([partner, kpi_id, f"{stage * 100:.0f}"], float(count))
        stale = GaugeMetricFamily(
            "partnerpulse_feed_stale",
            "1 while the topic's feed is stale (its partner alerts are held).",
            labels=["topic"],
        )
        wall = self.wall_ms()
        stale_now = self.watch.stale_topics(wall)
        for topic in sorted(self.watch.last_arrival_ms):
            stale.add_metric([topic], 1.0 if topic in stale_now else 0.0)
        yield from (state, since, items, stale)
        if self.health is not None:
            lag = GaugeMetricFamily(
                "partnerpulse_consumer_lag_messages",
                "Messages on the partition not yet processed by this worker.",
                labels=["topic", "partition"],
            )
            for (topic, partition), behind in sorted(self.health.lag().items()):
                lag.add_metric([topic, str(partition)], float(behind))
            yield lag
            for name, (kind, help_text, number) in sorted(self.health.delivery().items()):
                family = (CounterMetricFamily(name, help_text) if kind == "counter"
                          else GaugeMetricFamily(name, help_text))
                family.add_metric([], number)
                yield family


class PipelineHealth(Protocol):
    """What the Faust layer knows about the pipeline beyond the engine."""

    def lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> messages behind the partition's high watermark."""

    def delivery(self) -> dict[str, tuple[str, str, float]]:
        """Metric name -> (counter|gauge, help, value) for alert delivery."""


def make_registry(collector: Collector) -> CollectorRegistry:
    """A dedicated registry (never the global one) holding the collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
