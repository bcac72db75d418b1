"""Month close and restatements: a month closes 5 days after its end (settings.month_close); its
card is frozen with a digest and served as frozen; an event for it that comes later is counted
(rolling windows, live month) and recorded as a restatement beside the frozen card, never as a
silent edit; all of it survives a restart. Expected values come from the events (the test's
reference), the digest from the served values."""

from __future__ import annotations

import hashlib
import math
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.config.catalog import load_config
from streams.engine.core import Engine
from streams.ingest.topics import all_topics
from streams.outputs.exporter import KpiCollector
from streams.outputs.report import build_report, fetch, month_state
from streams.runtime.kafka_admin import ensure_topics
from streams.tools.broker import EmbeddedBroker
from tests import reference
from tests.harness import REPO, Worker, as_messages, poll, produce

WALL = 1_900_000_000_000


def _ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)  # type: ignore[misc]


def _october() -> list[tuple[str, dict[str, Any]]]:
    """acme's October: 40 tickets opened, 6 escalated; then events on 2026-11-03 (October still
    open) and 2026-11-07 (past October's grace: it closes before this one counts)."""
    out: list[tuple[str, dict[str, Any]]] = []
    for i in range(40):
        opened = _ms(2026, 10, 2 + i % 25, 9, 0)
        out.append(("tickets", {"event_id": f"o{i}", "type": "opened", "partner_id": "acme",
                                "ticket_id": f"t{i}", "ts": opened, "severity": "question"}))
        if i < 6:
            out.append(("tickets", {"event_id": f"e{i}", "type": "escalated",
                                    "partner_id": "acme", "ticket_id": f"t{i}",
                                    "ts": opened + 3_600_000}))
    for i, day in enumerate((3, 7)):
        out.append(("tickets", {"event_id": f"n{i}", "type": "opened", "partner_id": "acme",
                                "ticket_id": f"n{i}", "ts": _ms(2026, 11, day, 9, 0),
                                "severity": "question"}))
    return out


LATE = ("tickets", {"event_id": "late-1", "type": "escalated", "partner_id": "acme",
                    "ticket_id": "t30", "ts": _ms(2026, 10, 30, 17, 0)})
"""An escalation of an October ticket, sent after October closed."""


SECOND = ("tickets", {**LATE[1], "event_id": "late-2", "ticket_id": "t31"})


def _moved(before: dict[tuple[str, str, str], reference.KpiResult],
           after: dict[tuple[str, str, str], reference.KpiResult],
           ) -> list[tuple[str, float | None, float | None, int, int]]:
    """(kpi, old value, new value, old samples, new samples) of acme's October KPIs that
    differ, by KPI id."""
    out = []
    for kpi in sorted({k for p, k, m in [*before, *after] if p == "acme" and m == "2026-10"}):
        old, new = before.get(("acme", kpi, "2026-10")), after.get(("acme", kpi, "2026-10"))
        pair = ((old.value if old else None, new.value if new else None,
                 old.samples if old else 0, new.samples if new else 0))
        if (pair[0], pair[2]) != (pair[1], pair[3]):
            out.append((kpi, *pair))
    return out


def _sha(values: dict[str, list[float]]) -> str:
    return hashlib.sha256(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)).hexdigest()


def test_a_late_event_restates_a_closed_month_and_leaves_its_card_frozen() -> None:
    catalog, partners = load_config()
    assert catalog.month_close_ms == 5 * 86_400_000  # the default grace
    engine = Engine(catalog, partners, clock="event")
    events = _october()
    journal: dict[bytes, bytes] = {}

    def feed(batch: list[tuple[str, dict[str, Any]]]) -> None:
        for topic, event in batch:
            engine.ingest(topic, orjson.dumps(event), WALL)
            for key, value in engine.drain():
                if value is None:
                    journal.pop(key, None)
                else:
                    journal[key] = value

    feed(events[:-1])
    assert engine.closed_month("acme", "2026-10") is None  # Nov 3: within the grace
    feed(events[-1:])  # Nov 7
    closed = engine.closed_month("acme", "2026-10")
    assert closed is not None
    before = reference.compute_months(events)
    frozen = {kpi: (v[0], int(v[1])) for kpi, v in closed.values.items()}
    want = {k: (r.value, r.samples) for (p, k, m), r in before.items()
            if p == "acme" and m == "2026-10"}
    assert frozen == pytest.approx(want)
    assert frozen["escalation_rate"] == (6 / 40, 40)
    assert closed.digest == _sha(closed.values) and not closed.restatements
    frozen_values = {k: list(v) for k, v in closed.values.items()}

    feed([LATE])
    after = reference.compute_months([*events, LATE])
    late_rate = after[("acme", "escalation_rate", "2026-10")]
    assert (late_rate.value, late_rate.samples) == (7 / 40, 40)
    closed = engine.closed_month("acme", "2026-10")
    assert closed is not None and closed.values == frozen_values  # the card stays as paid
    # every KPI of the month the late event moved, from the reference before and after it
    # (the escalation rate, and the share of good escalations, whose escalations went 6 -> 7)
    moved = _moved(before, after)
    assert ("escalation_rate", 6 / 40, 7 / 40, 40, 40) in moved and len(moved) == 2
    assert [(r.kpi, r.old_value, r.new_value, r.old_samples, r.new_samples)
            for r in closed.restatements] == pytest.approx(moved)
    # counted everywhere else: the live month and the rolling windows
    assert engine.evaluate_month("acme", "2026-10")["escalation_rate"].value == 7 / 40
    # served as frozen, with its digest and the restatement
    state = month_state(engine, ["acme"], "2026-10")
    assert state["partners"]["acme"]["2026-10"]["escalation_rate"][0] == 6 / 40
    body = orjson.dumps({**state, "ready": True, "partitions": 1, "owned_partitions": [0]})
    got = fetch(["http://w"], "2026-10", 1, lambda _: body)
    card = build_report(catalog, partners, "2026-10", got.current, got.previous, WALL,
                        got.integrity, got.previous_integrity, got.closed)
    acme = {c.partner: c for c in card.cards}["acme"]
    assert acme.status == "restated" and acme.closing is not None
    assert acme.closing.digest == _sha(frozen_values)
    line = {x.kpi: x for x in acme.lines}["escalation_rate"]
    assert line.value == 6 / 40
    # a second late event for the same KPI: a second restatement from the last stated value
    feed([SECOND])
    closed = engine.closed_month("acme", "2026-10")
    assert closed is not None
    second = reference.compute_months([*events, LATE, SECOND])
    assert [(r.kpi, r.old_value, r.new_value, r.old_samples, r.new_samples)
            for r in closed.restatements] == pytest.approx(moved + _moved(after, second))
    text = KpiCollector(engine, lambda _: True, lambda: WALL).exposition().decode()
    assert 'partnerpulse_report_restatements_total{partner="acme"} 4.0' in text
    # across a restart: the frozen card, its digest and both restatements come back
    again = Engine(catalog, partners, clock="event")
    again.restore(journal.items())
    back = again.closed_month("acme", "2026-10")
    assert back is not None and back.values == frozen_values and back.digest == closed.digest
    assert back.restatements == closed.restatements
    assert again.evaluate_month("acme", "2026-10")["escalation_rate"].value == 8 / 40


def test_a_month_is_closed_by_the_first_event_after_its_grace_even_a_late_one() -> None:
    """On the wall clock (the default) a late event can be the first to find a month due: the
    month is frozen before it counts, so it is a restatement, not part of the frozen card."""
    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="wall")
    events = _october()[:-2]  # October only, arriving on October 31st
    for topic, event in events:
        engine.ingest(topic, orjson.dumps(event), _ms(2026, 10, 31, 12, 0))
    assert engine.closed_month("acme", "2026-10") is None
    engine.ingest(LATE[0], orjson.dumps(LATE[1]), _ms(2026, 11, 8, 12, 0))  # after the grace
    closed = engine.closed_month("acme", "2026-10")
    assert closed is not None
    assert closed.values["escalation_rate"][:2] == [6 / 40, 40]
    moved = _moved(reference.compute_months(events), reference.compute_months([*events, LATE]))
    assert [(r.kpi, r.old_value, r.new_value, r.old_samples, r.new_samples)
            for r in closed.restatements] == pytest.approx(moved)


@pytest.mark.slow
def test_close_and_restatement_through_the_broker_and_a_worker(tmp_path: Path) -> None:
    """The same story on the real broker, a worker on the event clock, `partnerpulse report`:
    October is restated after a late event, its card frozen, and so after a restart."""
    events = _october()
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        ensure_topics(broker.bootstrap, all_topics(4))
        worker = Worker(broker.url, tmp_path, clock="event").start()
        try:
            # keyed by partner, all of them: in order on one partition, so the November 7th
            # event that closes October comes after every October event
            n = produce(broker.bootstrap, as_messages(events, unkeyed_every=0))
            poll(lambda: worker.processed() >= n, 120, f"{n} events processed")
            closed = _card(worker)
            n += produce(broker.bootstrap, as_messages([LATE], unkeyed_every=0))
            poll(lambda: worker.processed() >= n, 120, "the late event processed")
            restated = _card(worker)
            worker.stop()
            worker.start()  # returns once ready: its partitions' state recovered
            after_restart = _card(worker)
        finally:
            worker.stop()
    assert closed["status"] == "closed", closed["closing"]["restatements"]
    esc = {x["kpi"]: x for x in closed["lines"]}["escalation_rate"]
    assert (esc["value"], esc["samples"]) == (6 / 40, 40)
    for card in (restated, after_restart):
        assert card["status"] == "restated"
        assert card["closing"]["digest"] == closed["closing"]["digest"]
        assert {x["kpi"]: x["value"] for x in card["lines"]} == {
            x["kpi"]: x["value"] for x in closed["lines"]}  # frozen
        got = [(r["kpi"], r["old_value"], r["new_value"], r["old_samples"], r["new_samples"])
               for r in card["closing"]["restatements"]]
        assert got == pytest.approx(_moved(reference.compute_months(events),
                                           reference.compute_months([*events, LATE])))
    assert math.isclose(reference.compute_months([*events, LATE])[
        ("acme", "escalation_rate", "2026-10")].value, 7 / 40)


def _card(worker: Worker) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "streams", "report", "--month", "2026-10", "--format", "json",
         "--worker", f"http://127.0.0.1:{worker.port}", "--partitions", "4",
         "--partner", "acme"], capture_output=True, text=True, timeout=60, cwd=REPO,
        check=False)
    assert done.returncode == 0, done.stderr
    return dict(orjson.loads(done.stdout)["partners"][0])


# --- evidence for disputes ------------------------------------------------------------------------
def _evidence_events() -> list[tuple[str, dict[str, Any]]]:
    """acme in October: down-hard tickets first contacted after 1 to 5 hours, escalations, and
    installs against their due dates; t2's first contact comes in two events, the later-dated
    one first (a miss that the earlier one takes back)."""
    out: list[tuple[str, dict[str, Any]]] = []
    hours = {"t0": 1, "t1": 3, "t2": 4, "t3": 1.5, "t4": 5, "t5": 2}
    for i, (tid, h) in enumerate(hours.items()):
        opened = _ms(2026, 10, 5 + i, 9, 0)
        out.append(("tickets", {"event_id": f"{tid}-o", "type": "opened", "partner_id": "acme",
                                "ticket_id": tid, "ts": opened, "severity": "down_hard"}))
        out.append(("tickets", {"event_id": f"{tid}-c", "type": "contacted",
                                "partner_id": "acme", "ticket_id": tid,
                                "ts": opened + int(h * 3_600_000)}))
    out.append(("tickets", {"event_id": "t2-c0", "type": "contacted", "partner_id": "acme",
                            "ticket_id": "t2", "ts": _ms(2026, 10, 7, 10, 0)}))  # 1 h after
    for tid in ("t3", "t5"):
        out.append(("tickets", {"event_id": f"{tid}-e", "type": "escalated",
                                "partner_id": "acme", "ticket_id": tid,
                                "ts": _ms(2026, 10, 20, 9, 0)}))
    for oid, due, day in (("o1", "2026-10-10", 12), ("o2", "2026-10-10", 9),
                          ("o3", "2026-10-15", 16)):
        out.append(("orders", {"event_id": f"{oid}-s", "type": "scheduled", "partner_id": "acme",
                               "order_id": oid, "ts": _ms(2026, 10, 1, 9, 0), "due_date": due}))
        out.append(("orders", {"event_id": f"{oid}-i", "type": "installed", "partner_id": "acme",
                               "order_id": oid, "ts": _ms(2026, 10, day, 12, 0)}))
    return out


def test_the_card_names_the_entities_behind_each_kpis_misses() -> None:
    """Expected ids from the events, by the test: tickets whose first contact came after the
    partner's target (its tier's), escalated tickets, installs after their due date."""
    catalog, partners = load_config()
    events = _evidence_events()
    targets = reference.expected_targets(["acme"])
    first_contact: dict[str, int] = {}
    opened: dict[str, int] = {}
    for topic, e in events:
        if topic == "tickets" and e["type"] == "opened":
            opened[e["ticket_id"]] = e["ts"]
        if topic == "tickets" and e["type"] == "contacted":
            first_contact[e["ticket_id"]] = min(e["ts"], first_contact.get(e["ticket_id"], e["ts"]))
    took = {t: (first_contact[t] - opened[t]) / 1000 for t in opened}
    want = {
        "ots_down_hard": {t for t, s in took.items() if s > targets[("acme", "ots_down_hard")]},
        "ots_down_hard_p90": {t for t, s in took.items()
                              if s > targets[("acme", "ots_down_hard_p90")]},
        "escalation_rate": {"t3", "t5"},
        "on_time_install": {"o1", "o3"},
    }
    assert want["ots_down_hard"] and "t2" not in want["ots_down_hard"]
    for order in (events, list(reversed(events))):  # arrival order changes nothing
        engine = Engine(catalog, partners, clock="event")
        journal: dict[bytes, bytes] = {}
        for topic, event in order:
            engine.ingest(topic, orjson.dumps(event), WALL)
            journal.update((k, v) for k, v in engine.drain() if v is not None)
        got = {k: set(v) for k, v in engine.evidence("acme", "2026-10").items()}
        assert {k: got.get(k, set()) for k in want} == want
        assert set(got) <= {k.id for k in catalog.kpis}  # no per-channel copies
        again = Engine(catalog, partners, clock="event")
        again.restore(journal.items())
        assert {k: set(v) for k, v in again.evidence("acme", "2026-10").items()} == got
    state = month_state(engine, ["acme"], "2026-10")
    body = orjson.dumps({**state, "ready": True, "partitions": 1, "owned_partitions": [0]})
    fetched = fetch(["http://w"], "2026-10", 1, lambda _: body)
    card = build_report(catalog, partners, "2026-10", fetched.current, fetched.previous, WALL,
                        evidence=fetched.evidence)
    lines = {x.kpi: x for x in {c.partner: c for c in card.cards}["acme"].lines}
    assert set(lines["escalation_rate"].evidence) == {"t3", "t5"}
    assert set(lines["on_time_install"].evidence) == {"o1", "o3"}


# --- the month-end forecast on /metrics ------------------------------------------------------
def test_metrics_carry_each_partners_month_end_band_chances_refreshed_within_a_budget() -> None:
    """Three partners with October to date (the event clock on 2026-10-20): every band of the
    policy gets a probability, they sum to 1 and equal the forecast made directly; at most
    ``budget`` partners are forecast per scrape, so the third appears on the second scrape."""
    from streams.outputs.report import month_values, project

    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="event")
    for who in ("acme", "beta", "gamma"):
        for topic, event in _october():
            if event["ts"] < _ms(2026, 10, 20, 12, 0):
                engine.ingest(topic, orjson.dumps({**event, "partner_id": who}), WALL)
    now = engine.now(WALL)
    collector = KpiCollector(engine, lambda _: True, lambda: WALL)
    collector.forecasts.budget = 2
    first = _bands(collector.exposition().decode())
    assert set(first) == {"acme", "beta"}
    both = _bands(collector.exposition().decode())
    assert set(both) == {"acme", "beta", "gamma"}
    start, end = _ms(2026, 10, 1, 0, 0), _ms(2026, 11, 1, 0, 0)
    direct = project(catalog, partners, "gamma", month_values(engine, "gamma", "2026-10"),
                     2026 * 12 + 9, (now - start) / (end - start), False, draws=300)
    assert set(both["gamma"]) == {b.id for b in partners.report.bands}
    assert sum(both["gamma"].values()) == pytest.approx(1.0)
    assert both["gamma"] == {b.id: direct.probabilities.get(b.id, 0.0)
                             for b in partners.report.bands}


def _bands(text: str) -> dict[str, dict[str, float]]:
    out: dict[str, dict[str, float]] = {}
    for line in text.splitlines():
        if line.startswith("partnerpulse_report_projected_band{"):
            labels, value = line.rsplit(" ", 1)
            fields = dict(part.split("=", 1) for part in labels[labels.index("{") + 1:-1].split(","))
            out.setdefault(fields["partner"].strip('"'), {})[fields["band"].strip('"')] = float(value)
    return out
