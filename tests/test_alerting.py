"""Alerts end to end: a worker on the embedded broker judges a replayed scenario and pushes to a
real Alertmanager, whose own API is the witness."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from kafka import KafkaConsumer

from streams.ingest.topics import ALERTS, all_topics
from streams.runtime.kafka_admin import ensure_topics
from streams.tools.broker import EmbeddedBroker
from tests.harness import REPO, Worker, as_messages, poll, produce
from tests.test_alertmanager_client import Alertmanager
from tests.test_watch import _calls

pytestmark = pytest.mark.slow
MIN = 60_000


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as running:
        ensure_topics(running.bootstrap, all_topics(4))
        yield running


def _asa_only_config(tmp_path: Path) -> Path:
    """The shipped catalog cut down to ASA in the 1h window: the expected alerts stay crisp."""
    target = tmp_path / "config"
    shutil.copytree(REPO / "config", target)
    catalog = yaml.safe_load((target / "kpis.yaml").read_text())
    catalog["kpis"] = [dict(k, windows=["1h"]) for k in catalog["kpis"] if k["id"] == "asa"]
    (target / "kpis.yaml").write_text(yaml.safe_dump(catalog, sort_keys=False))
    partners = yaml.safe_load((target / "partners.yaml").read_text())
    for spec in [*partners["tiers"].values(), *partners["partners"]]:
        spec["targets"] = {k: v for k, v in spec.get("targets", {}).items() if k == "asa"}
    report = partners["report"]  # the report card's weights name KPIs too
    report["weights"] = {k: v for k, v in report["weights"].items() if k == "asa"}
    (target / "partners.yaml").write_text(yaml.safe_dump(partners, sort_keys=False))
    return target


def _scenario(t0: int) -> tuple[list[tuple[str, dict[str, Any]]], list[tuple[str, dict[str, Any]]]]:
    """'drifter' creeps from 40 s to 150 s ASA and holds (phase 1), then recovers to 30 s (phase 2).

    'steady' answers in 40 s throughout; 'tiny' has three terrible calls: too few to judge.
    Every wait is the mean itself, so the expected values need no statistics to work out.
    """
    phase1: list[tuple[str, dict[str, Any]]] = []
    phase2: list[tuple[str, dict[str, Any]]] = []
    for minute in range(200):
        mean = 40.0 if minute < 20 else min(150.0, 40.0 + (minute - 20) * 2.0)
        if minute >= 120:
            mean = 30.0
        batch = (_calls("drifter", minute, [mean] * 30, t0)
                 + _calls("steady", minute, [40.0] * 30, t0))
        (phase1 if minute < 120 else phase2).extend(batch)
    phase1 += _calls("tiny", 10, [400.0, 500.0, 600.0], t0)
    for events in (phase1, phase2):
        events.sort(key=lambda te: te[1]["ts"])
    return phase1, phase2


def _partner_alerts(am: Alertmanager) -> list[dict[str, Any]]:
    return [a for a in am.alerts() if a["labels"].get("alertname", "").startswith("PartnerKpi")]


def test_drift_fires_and_resolves_in_alertmanager(broker: EmbeddedBroker, alertmanager: Alertmanager,
                                                   tmp_path: Path) -> None:
    t0 = (int(time.time() * 1000) // MIN - 210) * MIN
    phase1, phase2 = _scenario(t0)
    worker = Worker(broker.url, tmp_path, extra=["--config", str(_asa_only_config(tmp_path)),
                                                 "--alertmanager", alertmanager.url]).start()
    try:
        produce(broker.bootstrap, as_messages(phase1, unkeyed_every=0))
        poll(lambda: worker.processed() >= len(phase1), 60, "phase 1 processed")
        firing = poll(lambda: _partner_alerts(alertmanager), 30, "the breach in Alertmanager")
        assert len(firing) == 1, firing
        labels = firing[0]["labels"]
        assert labels == {"alertname": "PartnerKpiBreach", "service": "partnerpulse",
                          "scope": "partner", "partner": "drifter", "tier": "authorized",
                          "kpi": "asa", "window": "1h", "severity": "critical"}
        notes = firing[0]["annotations"]
        assert notes["target"] == "90"  # authorized tier, from partners.yaml
        assert float(notes["value"]) > 90 and "drifter" in notes["dashboard"]
        produce(broker.bootstrap, as_messages(phase2, unkeyed_every=0))
        poll(lambda: worker.processed() >= len(phase1) + len(phase2), 60, "phase 2 processed")
        poll(lambda: not _partner_alerts(alertmanager), 30, "the breach resolved in Alertmanager")
        history = _alert_messages(broker.bootstrap)
    finally:
        worker.stop()
    drifter = [(m["old"], m["new"]) for m in history if m["partner"] == "drifter"]
    # one excursion, no flapping: ok, at_risk before breach, back to ok once
    assert drifter[0] == ("insufficient_data", "ok")
    states = [new for _, new in drifter]
    assert states.count("breach") == 1 and states.count("ok") == 2
    assert states.index("at_risk") < states.index("breach")
    assert states[-1] == "ok"
    assert {m["partner"] for m in history} == {"drifter", "steady"}  # never 'tiny'
    assert [(m["old"], m["new"]) for m in history if m["partner"] == "steady"] == [
        ("insufficient_data", "ok")]
    # the breach waited for the 1h mean to pass 90 s: judged at the start of minute B, the window
    # holds minutes B-59..B-1 with waits 40 + 2 (m - 20) s, mean 40 + 2 (B - 50), > 90 only for B > 75
    breach = next(m for m in history if m["new"] == "breach")
    assert breach["since_ms"] >= t0 + 75 * MIN
    assert breach["dedup_key"] and breach["tier"] == "authorized"


def _alert_messages(bootstrap: str) -> list[dict[str, Any]]:
    consumer = KafkaConsumer(ALERTS, bootstrap_servers=bootstrap, auto_offset_reset="earliest",
                             enable_auto_commit=False, group_id=None, consumer_timeout_ms=3000)
    messages = [orjson.loads(record.value) for record in consumer]
    consumer.close()
    # the KPI state changes (integrity flags and ticket alerts share the topic, marked "kind")
    states = [m for m in messages if m.get("kind") not in ("integrity", "ticket")]
    return sorted(states, key=lambda m: (m["since_ms"], m["partner"]))
