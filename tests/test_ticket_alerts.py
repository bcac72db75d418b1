"""Per-ticket pre-breach alerts (issue 19, part 1): which tickets of a ``ticket_alerts`` KPI
fire, how they move from at risk to breached and resolve, the cap per partner; and end to end,
a worker with the shipped configuration (down-hard open-to-status has ticket alerts) on the
event clock pushing them to a real Alertmanager, compared with the reference ledger's urgent
tickets."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from prometheus_client.parser import text_string_to_metric_families

from streams.config.catalog import ConfigError, load_config
from streams.engine.core import Engine
from streams.engine.model import OpenItem
from streams.ingest.topics import all_topics
from streams.judgement.tickets import TICKET_AT_RISK, TICKET_BREACHED, TicketAlerts
from streams.judgement.watch import Watch
from streams.outputs.exporter import KpiCollector
from streams.outputs.series import URGENT_TICKET_LEFT
from streams.runtime.kafka_admin import ensure_topics
from streams.tools.broker import EmbeddedBroker
from tests import reference
from tests.harness import REPO, Worker, as_messages, poll, produce
from tests.streams_gen import HOUR, _ms, random_events
from tests.test_alertmanager_client import Alertmanager

MIN = 60_000


def _item(partner: str, entity: str, age_s: int, target_s: int = 7200,
          kpi: str = "ots_down_hard") -> OpenItem:
    age, target = age_s * 1000, target_s * 1000
    state = "breached" if age >= target else "at_risk" if age * 4 >= target * 3 else "ok"
    return OpenItem(partner, kpi, entity, "down_hard", 0, age, target, state)


def test_at_risk_then_breached_then_resolved() -> None:
    alerts = TicketAlerts(["ots_down_hard"], max_per_partner=10)
    # 5,000 s of 7,200 is 69%: nothing; 5,400 s is 75%: at risk
    assert alerts.update("acme", [_item("acme", "T1", 5000)], 1) == []
    fired = alerts.update("acme", [_item("acme", "T1", 5400)], 2)
    assert [(c.entity_id, c.item and c.item.state) for c in fired] == [("T1", "at_risk")]
    assert alerts.update("acme", [_item("acme", "T1", 6000)], 3) == []  # still at risk: no news
    moved = alerts.update("acme", [_item("acme", "T1", 7200)], 4)
    assert [(c.entity_id, c.item and c.item.state) for c in moved] == [("T1", "breached")]
    gone = alerts.update("acme", [], 5)  # contacted: off the ledger
    assert [(c.entity_id, c.item, c.at_ms) for c in gone] == [("T1", None, 5)]
    assert alerts.firing() == 0


def test_only_the_chosen_kpis_and_the_cap_keeps_the_most_urgent() -> None:
    alerts = TicketAlerts(["ots_down_hard"], max_per_partner=3)
    ages = {f"T{n}": 5400 + 300 * n for n in range(6)}  # T5 has the least time left
    items = [_item("acme", t, a) for t, a in ages.items()]
    items.append(_item("acme", "R1", 99_999, kpi="mttr"))  # no ticket_alerts on mttr
    fired = alerts.update("acme", items, 1)
    assert {c.entity_id for c in fired} == {"T5", "T4", "T3"}
    assert alerts.held_back["acme"] == 3
    # T5 is contacted: T2 takes its place
    changes = alerts.update("acme", [i for i in items if i.entity_id != "T5"], 2)
    assert {(c.entity_id, c.item is None) for c in changes} == {("T2", False), ("T5", True)}
    assert alerts.held_back["acme"] == 2
    # the partner moves to another worker: its alerts resolve here
    assert {c.entity_id for c in alerts.keep([], 3)} == {"T4", "T3", "T2"}
    assert alerts.firing() == 0 and "acme" not in alerts.held_back


@pytest.mark.parametrize("cap", [1, 3, 20])
def test_the_worker_s_selection_changes_the_same_alerts_as_the_whole_ledger(cap: int) -> None:
    """The worker's tick hands the alerts the engine's few most urgent and their count
    (update_urgent); the changes and the held-back counts equal those from every waiting
    item of the partner (update), at each of several instants."""
    from tests.test_ledger import PARTNERS, T0, WALL, _stream

    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="event")
    for topic, event in _stream(7, T0):
        engine.ingest(topic, orjson.dumps(event), WALL)
    kpis = [k.id for k in catalog.kpis if k.ticket_alerts]
    whole, chosen = TicketAlerts(kpis, cap), TicketAlerts(kpis, cap)
    fired = 0
    for now in range(T0 - 6 * HOUR, T0 + 12 * HOUR, HOUR // 2):
        for partner in PARTNERS:
            want = whole.update(partner, engine.open_list(partner, now), now)
            kept, urgent = engine.most_urgent_open(partner, now, cap, whole.kpis)
            assert chosen.update_urgent(partner, kept, urgent, now) == want
            assert chosen.held_back == whole.held_back
            # and held back: the urgent tickets past the cap, counted here from the ledger
            urgent_all = [i for i in engine.open_list(partner, now, whole.kpis)
                          if i.state in ("at_risk", "breached")]
            assert chosen.held_back[partner] == max(0, len(urgent_all) - cap)
            fired += len(want)
    assert fired > 0 and any(whole.held_back.values())  # alerts moved, and caps bit


def test_the_urgent_tickets_series_lists_each_partner_s_most_urgent() -> None:
    """``partnerpulse_urgent_ticket_left_seconds`` (the on-call dashboard's ticket list): per
    partner, its at-risk and breached down-hard tickets from the reference ledger, least time
    left first, at most the cap; labelled with the ticket and its state."""
    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="event")
    t0 = 1_788_000_000_000
    end = t0 + 2 * 86_400_000
    events = [(t, e) for t, e in random_events(13, PARTNERS, t0, 2 * 86_400_000 - 3 * HOUR)
              + random_events(13, PARTNERS, end - 3 * HOUR, 3 * HOUR, prefix="b-")
              if _ms(e["ts"]) < end]
    for topic, event in events:
        engine.ingest(topic, orjson.dumps(event), t0 + 100 * 86_400_000)
    cap = 12  # more than the breached tickets of a partner: its at-risk ones are listed too
    collector = KpiCollector(engine, owned=lambda p: True, wall_ms=lambda: 0,
                             watch=Watch(engine), ticket_alerts_max=cap)
    got: dict[tuple[str, str], tuple[str, float]] = {}
    order: dict[str, list[str]] = {}
    for family in text_string_to_metric_families(collector.exposition().decode()):
        if family.name == URGENT_TICKET_LEFT:
            for sample in family.samples:
                labels = sample.labels
                assert labels["kpi"] == "ots_down_hard"
                got[(labels["partner"], labels["ticket"])] = (labels["state"], sample.value)
                order.setdefault(labels["partner"], []).append(labels["ticket"])
    now = engine.now(0)
    want = _expected(events, now, cap)
    rows = reference.open_tickets(events, now)
    assert len(want) >= cap and {"at_risk", "breached"} <= set(want.values())
    assert {k: v[0] for k, v in got.items()} == want
    for (partner, ticket), (_, left) in got.items():
        row = rows[(partner, "ots_down_hard", ticket)]
        assert left == (row.target_ms - row.age_ms) / 1000
    for partner, tickets in order.items():  # written most urgent first
        assert [got[(partner, t)][1] for t in tickets] == sorted(got[(partner, t)][1]
                                                                 for t in tickets)


def test_ticket_alerts_need_open_items(tmp_path: Path) -> None:
    out = tmp_path / "config"
    out.mkdir()
    kpis = yaml.safe_load((REPO / "config" / "kpis.yaml").read_text())
    asa = next(k for k in kpis["kpis"] if k["id"] == "asa")
    asa["ticket_alerts"] = True
    (out / "kpis.yaml").write_text(yaml.safe_dump(kpis, sort_keys=False))
    (out / "partners.yaml").write_text((REPO / "config" / "partners.yaml").read_text())
    with pytest.raises(ConfigError, match="ticket_alerts alert on open items"):
        load_config(out)


# --- end to end ------------------------------------------------------------------------------
PARTNERS = ["acme", "northwind-telecom"]
CAP = 4


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as running:
        ensure_topics(running.bootstrap, all_topics(4))
        yield running


def _ticket_alerts(am: Alertmanager) -> dict[tuple[str, str], dict[str, Any]]:
    return {(a["labels"]["partner"], a["labels"]["ticket"]): a for a in am.alerts()
            if a["labels"]["alertname"] in (TICKET_AT_RISK, TICKET_BREACHED)}


def _expected(events: list[tuple[str, dict[str, Any]]], at: int,
              cap: int = CAP) -> dict[tuple[str, str], str]:
    """(partner, ticket) -> state of the tickets that should fire at ``at``: the reference
    ledger's at-risk and breached down-hard tickets, each partner's CAP most urgent."""
    rows = reference.open_tickets(events, at)
    out: dict[tuple[str, str], str] = {}
    for partner in PARTNERS:
        urgent = sorted(((row.target_ms - row.age_ms, ticket, row.state)
                         for (p, kpi, ticket), row in rows.items()
                         if p == partner and kpi == "ots_down_hard" and row.state != "ok"))
        out |= {(partner, ticket): state for _, ticket, state in urgent[:cap]}
    return out


@pytest.mark.slow
def test_ticket_alerts_reach_alertmanager_capped_per_partner(
        broker: EmbeddedBroker, alertmanager: Alertmanager, tmp_path: Path) -> None:
    end = (int(time.time() * 1000) // MIN - 30) * MIN
    events = [(t, e) for t, e in random_events(13, PARTNERS, end - 2 * 86_400_000,
                                               2 * 86_400_000 - 3 * HOUR)
              + random_events(13, PARTNERS, end - 3 * HOUR, 3 * HOUR, prefix="b-")
              if _ms(e["ts"]) < end]
    # one last event per partner, in a later minute: the event clock judges (and checks the
    # tickets) at each minute a partner's events cross, before the event that crosses it
    probe_at = end + 3 * MIN
    probes = [("calls", {"event_id": f"probe-{p}", "type": "queued", "partner_id": p,
                         "call_id": f"probe-{p}", "ts": probe_at}) for p in PARTNERS]
    worker = Worker(broker.url, tmp_path, env={"PARTNERPULSE_TICKET_ALERTS_MAX": str(CAP)},
                    extra=["--alertmanager", alertmanager.url]).start()
    try:
        accepted = len(reference.accepted_events(events))
        produce(broker.bootstrap, as_messages(events))
        poll(lambda: sum(v for k, v in worker.counts().items() if k.endswith(":accepted"))
             >= accepted, 120, "the events counted")
        produce(broker.bootstrap, as_messages(probes, unkeyed_every=0))
        want = _expected(events, probe_at - probe_at % MIN)
        assert sum(1 for s in want.values() if s == "breached") >= 2 and len(want) == 2 * CAP
        seen: list[dict[tuple[str, str], dict[str, Any]]] = []

        def settled() -> bool:
            seen.append(_ticket_alerts(alertmanager))
            return set(seen[-1]) == set(want)

        poll(settled, 60, f"the ticket alerts in Alertmanager: want {sorted(want)}")
        got = seen[-1]
        metrics = worker.metrics_text()
    finally:
        worker.stop()
    for key, alert in got.items():
        labels = alert["labels"]
        assert labels["alertname"] == (TICKET_BREACHED if want[key] == "breached"
                                       else TICKET_AT_RISK), key
        assert labels["severity"] == ("critical" if want[key] == "breached" else "warning")
        assert labels["scope"] == "ticket" and labels["kpi"] == "ots_down_hard"
        assert labels["ticket_severity"] == "down_hard"
        assert alert["receivers"] == [{"name": "noc-channel"}]
    assert "partnerpulse_ticket_alerts_firing " + str(float(2 * CAP)) in metrics
