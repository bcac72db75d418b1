"""Judgement of whole partners through the engine, with explicit event times."""

from __future__ import annotations

import random

import orjson

from streams.catalog import load_config
from streams.engine import Engine
from streams.watch import Alert, Watch

T0 = 1_788_000_000_000
MIN = 60_000


def _calls(partner: str, minute: int, waits: list[float], t0: int = T0) -> list[tuple[str, dict]]:
    out = []
    for i, wait in enumerate(waits):
        queued = t0 + minute * MIN + i * (MIN // max(1, len(waits)))
        cid = f"{partner}-{minute}-{i}"
        out.append(("calls", {"event_id": f"q{cid}", "type": "queued", "partner_id": partner,
                              "call_id": cid, "ts": queued}))
        out.append(("calls", {"event_id": f"a{cid}", "type": "answered", "partner_id": partner,
                              "call_id": cid, "ts": queued + int(wait * 1000)}))
    return out


def _scenario() -> tuple[list[tuple[str, dict]], dict[int, float]]:
    """'drifter' answers in ~40 s, creeps to ~150 s, holds, recovers to ~30 s; 'tiny' has 3 calls."""
    rng = random.Random(3)
    events: list[tuple[str, dict]] = []
    mean_by_minute: dict[int, float] = {}
    for minute in range(220):
        if minute < 30:
            mean = 40.0
        elif minute < 90:
            mean = 40.0 + (minute - 30) * (110.0 / 60)
        elif minute < 120:
            mean = 150.0
        else:
            mean = 30.0
        mean_by_minute[minute] = mean
        waits = [max(1.0, rng.gauss(mean, mean * 0.3)) for _ in range(30)]
        events += _calls("drifter", minute, waits)
    events += _calls("tiny", 5, [200.0, 250.0, 300.0])
    events.sort(key=lambda te: te[1]["ts"])
    return events, mean_by_minute


def _run(events: list[tuple[str, dict]]) -> list[Alert]:
    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="event")
    watch = Watch(engine)
    alerts: list[Alert] = []
    for topic, event in events:
        boundary = watch.due_for_event_clock(event["partner_id"], event["ts"])
        if boundary is not None:
            alerts += watch.judge_partner(event["partner_id"], boundary)
        engine.ingest(topic, orjson.dumps(event), T0 + 365 * 24 * 60 * MIN)
    return alerts


def test_drift_goes_at_risk_then_breach_then_recovers_without_flapping() -> None:
    events, means = _scenario()
    alerts = _run(events)
    asa_1h = [a for a in alerts if a.partner == "drifter" and a.kpi == "asa" and a.window == "1h"]
    states = [a.new for a in asa_1h]
    assert states[0] == "ok"
    assert "at_risk" in states and "breach" in states
    assert states.index("at_risk") < states.index("breach")
    assert states[-1] == "ok"
    # one excursion: ok -> at_risk -> breach -> (at_risk) -> ok, never back and forth
    assert states.count("breach") == 1 and len(states) <= 5
    # the breach comes after the true mean crossed the business-tier... here the default tier
    # (authorized, asa target 90 s): the 1h mean passes 90 s only well after the creep starts
    breach = next(a for a in asa_1h if a.new == "breach")
    crossed = min(m for m, mean in means.items() if mean > 90)
    assert breach.since_ms >= T0 + crossed * MIN
    assert breach.target == 90
    at_risk = next(a for a in asa_1h if a.new == "at_risk")
    assert at_risk.since_ms < breach.since_ms
    # the 24h window lags: at_risk reaches it before (or without) a breach there
    asa_24h = [a.new for a in alerts if a.partner == "drifter" and a.kpi == "asa" and a.window == "24h"]
    assert "at_risk" in asa_24h


def test_few_samples_are_never_judged() -> None:
    events, _ = _scenario()
    alerts = _run(events)
    assert not [a for a in alerts if a.partner == "tiny"]


def test_replaying_the_scenario_gives_the_same_alerts() -> None:
    events, _ = _scenario()
    assert [a.to_json() for a in _run(events)] == [a.to_json() for a in _run(events)]


def test_stale_feed_holds_partner_judgements() -> None:
    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="event")
    watch = Watch(engine, stale_after_ms=5 * MIN)
    for topic, event in _calls("p", 0, [500.0] * 40):
        engine.ingest(topic, orjson.dumps(event), T0 + 365 * 24 * 60 * MIN)
    watch.note_arrival("calls", 1_000)
    stale = watch.stale_topics(1_000 + 6 * MIN)
    assert stale == {"calls"}
    assert not watch.judge_partner("p", T0 + 20 * MIN, stale)
    assert watch.judge_partner("p", T0 + 20 * MIN, set())  # judged once the feed is back
