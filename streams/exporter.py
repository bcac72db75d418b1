"""Prometheus export of the engine's state (the metric names are a contract).

A custom collector renders the current values at scrape time from the engine,
on a dedicated registry, so a partner whose partitions moved to another worker
disappears from this worker's ``/metrics`` at the next scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .contract import TOPICS
from .engine import Engine, Outcome, attainment


class KpiCollector(Collector):
    """Collects partnerpulse_* series from an engine for the partners this worker owns."""

    def __init__(
        self,
        engine: Engine,
        owned: Callable[[str], bool],
        wall_ms: Callable[[], int],
    ) -> None:
        self.engine = engine
        self.owned = owned
        self.wall_ms = wall_ms

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
        for partner in engine.partner_ids():
            if not self.owned(partner):
                continue
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


def make_registry(collector: Collector) -> CollectorRegistry:
    """A dedicated registry (never the global one) holding the collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
