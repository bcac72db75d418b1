"""The ledger of open items (issue 19, part 1): the engine's open tickets against the independent
reference (tests/reference.py ``open_tickets``), the query and gathering rules, and end to end
on the real broker: ``/api/open``, ``partnerpulse open`` and the oldest-age series at two points
in event time and across a restart."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from streams.config.catalog import load_config
from streams.engine.core import Engine
from streams.engine.entities import OLDEST_KEPT
from streams.engine.model import OpenItem
from streams.ingest.topics import all_topics
from streams.outputs.ledger import (
    MAX_LIMIT,
    LedgerQuery,
    fetch_open,
    render_csv,
    render_table,
    select,
    to_json,
)
from streams.outputs.report import ReportError
from streams.runtime.kafka_admin import ensure_topics
from streams.tools.broker import EmbeddedBroker
from tests import reference
from tests.harness import REPO, Worker, as_messages, kpi_series, poll, produce
from tests.streams_gen import DAY, HOUR, _ms, random_events

PARTNERS = ["acme", "bluefiber", "northwind-telecom"]
T0 = 1_788_000_000_000  # 2026-08-29: no test here depends on the real clock
WALL = T0 + 120 * DAY
Rows = dict[tuple[str, str, str], reference.OpenRow]


def _engine() -> Engine:
    catalog, partners = load_config()
    return Engine(catalog, partners, clock="event")


def _rows(items: list[OpenItem]) -> Rows:
    """The OTS rows of the engine's ledger, in the reference's shape."""
    return {(i.partner, i.kpi, i.entity_id): reference.OpenRow(
        i.severity, i.opened_ms, i.age_ms, i.target_ms, i.state)
        for i in items if i.kpi in reference.OPEN_TICKET_KPIS}


def _stream(seed: int, end: int) -> list[tuple[str, dict[str, Any]]]:
    """Ten days of random traffic ending at ``end``, denser in the last six hours (tickets
    still waiting at every age)."""
    events = random_events(seed, PARTNERS, end - 10 * DAY, 10 * DAY - 6 * HOUR)
    events += random_events(seed, PARTNERS, end - 6 * HOUR, 6 * HOUR, prefix="b-")
    return [(t, e) for t, e in events if _ms(e["ts"]) <= end]


# --- the engine against the reference --------------------------------------------------------
@pytest.mark.parametrize("seed", [3, 11, 29])
def test_open_tickets_equal_the_reference_at_several_instants(seed: int) -> None:
    events = _stream(seed, T0)
    engine = _engine()
    states = set()
    # read once half the events are in, then again with all: what the engine keeps of the
    # waiting tickets between reads must follow the tickets that opened and closed meanwhile
    half = len(events) // 2
    for done, seen in ((0, events[:half]), (half, events)):
        for topic, event in seen[done:]:
            engine.ingest(topic, orjson.dumps(event), WALL)
        for now in (T0, T0 + 90 * 60_000, T0 + 2 * DAY):
            got = _rows([i for p in PARTNERS for i in engine.open_list(p, now)])
            want = reference.open_tickets(seen, now)
            assert got == want
            states |= {row.state for row in want.values()}
            for partner in PARTNERS:  # the oldest-age series' numbers
                oldest = engine.oldest_open(partner, now)
                for kpi in reference.OPEN_TICKET_KPIS:
                    ages = [r.age_ms for (p, k, _), r in want.items() if (p, k) == (partner, kpi)]
                    assert oldest.get(kpi) == (max(ages) if ages else None)
                _check_most_urgent(engine, partner, now, want)
    assert states == {"ok", "at_risk", "breached"}  # every state was compared


def _check_most_urgent(engine: Engine, partner: str, now: int, want: Rows,
                       rows: Callable[[list[OpenItem]], Rows] = _rows) -> None:
    """What a wall tile and /metrics ask for (the few most urgent, and how many are urgent)
    equals the reference's rows sorted and cut, for every cut."""
    kpis = frozenset(reference.OPEN_TICKET_KPIS)
    # growing cuts, then shrinking ones: the wall asks for 3 after /metrics asked for 20
    for n in (0, 1, 2, 3, 20, 10**6, 20, 3, 1):
        got, count = engine.most_urgent_open(partner, now, n, kpis)
        keys, urgent = reference.most_urgent(want, partner, n)
        assert [(i.partner, i.kpi, i.entity_id) for i in got] == keys, (partner, n)
        assert count == urgent, (partner, n)
        assert rows(got) == {key: want[key] for key in keys}
    # and every filter /api/open takes (a state, or none), a page at a time
    for state in (None, "urgent", "breached", "at_risk", "ok"):
        for n in (1, 3, 100, 10**6):
            got, count = engine.open_selection(partner, now, n, kpis, state)
            keys, matched = reference.most_urgent(want, partner, n, state)
            assert [(i.partner, i.kpi, i.entity_id) for i in got] == keys, (partner, state, n)
            assert count == matched, (partner, state, n)
            assert rows(got) == {key: want[key] for key in keys}
    # what is kept between reads stays a few items a KPI, whatever a page asked for
    st = engine.state.get(partner)
    assert st is None or all(len(kept) <= OLDEST_KEPT for _, kept in st.waiting_oldest.values())


def test_open_detractors_age_against_the_horizon() -> None:
    """A poor answer waits for a follow-up after it; its target is the KPI's 24 h horizon."""
    engine = _engine()
    now = T0
    answers = {"t1": 30, "t2": 19, "t3": 2, "t4": 5}  # hours before now
    events: list[tuple[str, dict[str, Any]]] = [
        ("surveys", {"event_id": f"s-{t}", "type": "response", "partner_id": "acme",
                     "kind": "csat", "score": 2, "ticket_id": t, "ts": now - h * HOUR})
        for t, h in answers.items()]
    events.append(("tickets", {"event_id": "f-t4", "type": "follow_up", "partner_id": "acme",
                               "ticket_id": "t4", "ts": now - HOUR}))
    for topic, event in events:
        engine.ingest(topic, orjson.dumps(event), WALL)
    rows = {i.entity_id: i for i in engine.open_list("acme", now)
            if i.kpi == "detractor_follow_up"}
    assert set(rows) == {"t1", "t2", "t3"}
    horizon = 24 * HOUR
    for ticket, item in rows.items():
        age = answers[ticket] * HOUR
        assert (item.age_ms, item.target_ms, item.left_ms) == (age, horizon, horizon - age)
        assert item.severity is None
    assert [rows[t].state for t in ("t1", "t2", "t3")] == ["breached", "at_risk", "ok"]


def test_the_most_urgent_follow_the_clock_and_the_closed_tickets() -> None:
    """What most_urgent_open keeps of a partner's oldest waiting items between reads (a wall
    tile asks for 3, /metrics for 20) never answers for another instant or for items closed
    since."""
    engine = _engine()
    now = T0
    answers = {"t1": 30, "t2": 22, "t3": 19, "t4": 2}  # hours before now; at risk from 18 h
    for t, h in answers.items():
        engine.ingest("surveys", orjson.dumps(
            {"event_id": f"s-{t}", "type": "response", "partner_id": "acme", "kind": "csat",
             "score": 2, "ticket_id": t, "ts": now - h * HOUR}), WALL)
    kpis = frozenset({"detractor_follow_up"})

    def urgent(at: int, n: int) -> tuple[list[str], int]:
        items, count = engine.most_urgent_open("acme", at, n, kpis)
        return [i.entity_id for i in items], count

    assert urgent(now, 20) == (["t1", "t2", "t3"], 3)
    # three hours earlier t3 (16 h) was not yet at risk
    assert urgent(now - 3 * HOUR, 20) == (["t1", "t2"], 2)
    assert urgent(now - 3 * HOUR, 1) == (["t1"], 2)
    # t1 followed up: it leaves, though the third oldest start is t3's as before
    engine.ingest("tickets", orjson.dumps({"event_id": "f-t1", "type": "follow_up",
                                          "partner_id": "acme", "ticket_id": "t1",
                                          "ts": now - HOUR}), WALL)
    assert urgent(now, 20) == (["t2", "t3"], 2)
    assert urgent(now, 1) == (["t2"], 2)


def test_a_long_page_is_not_kept_between_reads() -> None:
    """/api/open may ask a partner for 5,000 rows: they are made for the request, and only a
    wall's or a scrape's few are kept for the next read."""
    engine = _engine()
    now = T0
    hours = {f"t{i:03d}": 19 + i / 10 for i in range(150)}  # every one at risk or breached
    for t, h in hours.items():
        engine.ingest("surveys", orjson.dumps(
            {"event_id": f"s-{t}", "type": "response", "partner_id": "acme", "kind": "csat",
             "score": 2, "ticket_id": t, "ts": now - int(h * HOUR)}), WALL)
    kpis = frozenset({"detractor_follow_up"})
    oldest_first = sorted(hours, key=lambda t: -hours[t])
    items, count = engine.open_selection("acme", now, 5000, kpis, None)
    assert ([i.entity_id for i in items], count) == (oldest_first, 150)
    kept = engine.state["acme"].waiting_oldest
    assert all(len(pairs) <= OLDEST_KEPT for _, pairs in kept.values())
    items, count = engine.open_selection("acme", now, 3, kpis, "urgent")
    assert ([i.entity_id for i in items], count) == (oldest_first[:3], 150)
    assert sum(len(pairs) for _, pairs in kept.values()) == 3  # the wall's few, kept


# --- query, sorting, gathering ---------------------------------------------------------------
def _item(partner: str, entity: str, age_s: int, target_s: int = 7200,
          kpi: str = "ots_down_hard") -> OpenItem:
    state = ("breached" if age_s >= target_s else
             "at_risk" if age_s >= 0.75 * target_s else "ok")
    return OpenItem(partner, kpi, entity, "down_hard", T0 - age_s * 1000, age_s * 1000,
                    target_s * 1000, state)


@pytest.mark.parametrize(("args", "message"), [
    ({"state": "late"}, "state='late'"),
    ({"limit": "0"}, "limit='0'"),
    ({"limit": str(MAX_LIMIT + 1)}, f"1 to {MAX_LIMIT}"),
    ({"limit": "ten"}, "limit='ten'"),
])
def test_a_bad_query_says_what_is_wrong(args: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        LedgerQuery.parse(args)


def test_least_time_left_first_filtered_and_cut() -> None:
    items = [_item("acme", "a", 100), _item("acme", "b", 9000), _item("zeta", "c", 6000),
             _item("zeta", "d", 5500), _item("acme", "e", 8000, 10_000, "mttr")]
    assert [i.entity_id for i in select(items, LedgerQuery())] == ["b", "c", "d", "e", "a"]
    urgent = select(items, LedgerQuery(state="urgent", limit=3))
    assert [i.entity_id for i in urgent] == ["b", "c", "d"]
    # d: 5,500 s of 7,200 s is 76%, at risk
    assert [i.entity_id for i in select(items, LedgerQuery(partner="zeta", state="at_risk"))] \
        == ["c", "d"]
    assert [i.entity_id for i in select(items, LedgerQuery(kpi="mttr"))] == ["e"]
    csv_lines = render_csv(fetch_like(items)).splitlines()
    assert csv_lines[0].startswith("partner,kpi,entity_id,severity,state,")
    assert csv_lines[1].startswith("acme,ots_down_hard,b,down_hard,breached,9000.0,7200.0,-1800.0,")
    table = render_table(fetch_like(items))
    assert "-30m00s" in table and "5 of 5 open items" in table  # b: 9000 s against 7200 s


@pytest.mark.parametrize("seed", range(6))
def test_one_partner_a_step_keeps_only_the_most_urgent_and_counts_every_match(seed: int) -> None:
    """The worker's /api/open walks its partners one per step, keeping only the limit's most
    urgent between steps: rows and count equal sorting every match and cutting (computed here
    with the sort key written out), ties of time left included, and nothing held past the
    limit between steps."""
    import random

    from streams.outputs.ledger import select_steps, selection

    rng = random.Random(seed)
    partners = [f"p{i:02d}" for i in range(rng.randint(1, 12))]
    by_partner = {p: [_item(p, f"e{j}", rng.choice([100, 5500, 6000, 7200, 9000, rng.randint(0, 20_000)]),
                            kind_target, kind)
                      for j in range(rng.randint(0, 60))
                      for kind, kind_target in [rng.choice([("ots_down_hard", 7200), ("mttr", 14_400)])]]
                  for p in partners}
    query = LedgerQuery(state=rng.choice([None, "urgent", "breached", "ok"]),
                        kpi=rng.choice([None, "mttr"]), limit=rng.choice([1, 3, 10, 100, 5000]))
    steps = select_steps(partners, lambda p: selection(by_partner[p], query), query)
    held: list[int] = []
    with pytest.raises(StopIteration) as done:
        while True:
            next(steps)
            held.append(len(steps.gi_frame.f_locals["kept"]))
    rows, matched = done.value.value
    everything = [i for p in partners for i in by_partner[p]
                  if (query.kpi is None or i.kpi == query.kpi)
                  and (query.state is None or i.state == query.state
                       or (query.state == "urgent" and i.state in ("at_risk", "breached")))]
    want = sorted(everything, key=lambda i: (i.left_ms, i.partner, i.kpi, i.entity_id))
    assert matched == len(everything)
    assert rows == want[:query.limit]
    assert len(held) == len(partners) and max(held, default=0) <= query.limit


def fetch_like(items: list[OpenItem]) -> Any:
    from streams.outputs.ledger import Gathered

    return Gathered(select(items, LedgerQuery()), len(items), {})


def test_gathering_merges_every_worker_and_needs_every_partition() -> None:
    served = {
        "http://w1": [_item("acme", "a", 7000), _item("acme", "b", 100)],
        "http://w2": [_item("zeta", "c", 8000), _item("zeta", "d", 50)],
    }
    owned = {"http://w1": [0, 1], "http://w2": [2, 3]}

    def opener(url: str) -> bytes:
        base = url.split("/api/")[0]
        assert "limit=3" in url and "state=" not in url
        return orjson.dumps({"items": [to_json(i) for i in served[base]][:3], "matched": 2,
                             "now_ms": T0, "ready": True, "partitions": 4,
                             "owned_partitions": owned[base]})

    got = fetch_open(list(served), LedgerQuery(limit=3), 4, opener)
    assert [i.entity_id for i in got.items] == ["c", "a", "b"]
    assert got.items[0] == served["http://w2"][0]  # a row survives the JSON round trip
    assert got.matched == 4
    with pytest.raises(ReportError, match=r"partitions \[2, 3\]"):
        fetch_open(["http://w1"], LedgerQuery(limit=3), 4, opener)


# --- end to end ------------------------------------------------------------------------------
@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of the test's own: topics and groups never leak between tests."""
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as running:
        ensure_topics(running.bootstrap, all_topics(4))
        yield running


def _served(worker: Worker, query: str = f"limit={MAX_LIMIT}") -> dict[str, Any]:
    import urllib.request

    with urllib.request.urlopen(f"http://127.0.0.1:{worker.port}/api/open?{query}",
                                timeout=10) as r:
        return dict(orjson.loads(r.read()))


def _caught_up(worker: Worker, events: list[tuple[str, dict[str, Any]]]) -> bool:
    """Every accepted event is in the worker's state (its event counts say so)."""
    want = len(reference.accepted_events(events))
    return sum(v for k, v in worker.counts().items() if k.endswith(":accepted")) >= want


def _assert_ledger(worker: Worker, events: list[tuple[str, dict[str, Any]]]) -> int:
    """/api/open, its filters, ``partnerpulse open`` and the oldest-age series equal the
    reference at the worker's clock; returns the rows compared."""
    body = _served(worker)
    now = body["now_ms"]
    want = reference.open_tickets(events, now)
    items = [OpenItem(r["partner"], r["kpi"], r["entity_id"], r["severity"], r["opened_ms"],
                      round(r["age_seconds"] * 1000), round(r["target_seconds"] * 1000),
                      r["state"]) for r in body["items"]]
    assert _rows(items) == want
    lefts = [r["left_seconds"] for r in body["items"]]
    assert lefts == sorted(lefts)
    # a partner's breached tickets only
    breached = _served(worker, "partner=acme&state=breached&limit=5000")
    assert {r["entity_id"] for r in breached["items"] if r["kpi"] in reference.OPEN_TICKET_KPIS} \
        == {t for (p, _, t), row in want.items() if p == "acme" and row.state == "breached"}
    # the command gathers the same rows
    cli = subprocess.run(
        [sys.executable, "-m", "streams", "open", "--worker", f"http://127.0.0.1:{worker.port}",
         "--limit", str(MAX_LIMIT), "--format", "json"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True)
    gathered = orjson.loads(cli.stdout)["items"]
    assert {(r["partner"], r["kpi"], r["entity_id"]) for r in gathered} \
        == {(r["partner"], r["kpi"], r["entity_id"]) for r in body["items"]}
    oldest = kpi_series(worker.metrics_text()).get("partnerpulse_open_oldest_age_seconds", {})
    for (partner, kpi, _), row in want.items():
        ages = [r.age_ms for (p, k, _), r in want.items() if (p, k) == (partner, kpi)]
        if row.age_ms == max(ages):
            assert oldest[(kpi, partner)] == pytest.approx(row.age_ms / 1000, abs=0.001)
    return len(want)


@pytest.mark.slow
def test_the_ledger_end_to_end_at_two_instants_and_across_a_restart(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    end = int(time.time() * 1000) - 60_000
    events = _stream(41, end - 3 * HOUR)
    worker = Worker(broker.url, tmp_path).start()
    try:
        produce(broker.bootstrap, as_messages(events))
        poll(lambda: _caught_up(worker, events), 120, "the first part counted")
        first = reference.open_tickets(events, _served(worker)["now_ms"])
        assert {r.state for r in first.values()} == {"ok", "at_risk", "breached"}
        assert _assert_ledger(worker, events) == len(first)
        # three hours later: the oldest tickets waiting for a first contact get one, new open
        waiting = sorted((k for k in first if k[1] != "mttr"),
                         key=lambda k: first[k].opened_ms)[:10]
        later = [("tickets", {"event_id": f"contact-{n}", "type": "contacted",
                              "partner_id": partner, "ticket_id": ticket,
                              "ts": end - 2 * HOUR + n * 1000})
                 for n, (partner, _, ticket) in enumerate(waiting)]
        later += random_events(42, PARTNERS, end - 3 * HOUR, 3 * HOUR, prefix="c-")
        later = [(t, e) for t, e in later if _ms(e["ts"]) <= end]
        events += later
        produce(broker.bootstrap, as_messages(later))
        poll(lambda: _caught_up(worker, events), 120, "the second part counted")
        rows = _assert_ledger(worker, events)
        # contacted: off the open-to-status lists (a repair time still waits for resolution)
        assert not {(p, t) for p, _, t in waiting} & {
            (p, t) for p, k, t in reference.open_tickets(events, end) if k != "mttr"}
        worker.stop()
        # restarted: the waiting tickets come back with the state (changelog), not from input
        worker = Worker(broker.url, tmp_path).start()
        assert _assert_ledger(worker, events) == rows
    finally:
        worker.stop()
