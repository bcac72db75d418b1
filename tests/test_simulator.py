"""The traffic simulator (streams/tools/simulator.py) and the malformed-message corpus.

The contract check and the KPI sample counting here are deliberately simple and written
from /tmp/pp/semantics.md, independent of the engine.
"""

from __future__ import annotations

import gc
import itertools
import json
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from datetime import date, datetime
from typing import Any

import pytest

from streams.tools.simulator import DEFAULT_PARTNERS, PROFILES, SimPartner, Simulator
from tests.malformed import CATEGORIES, malformed_messages

START = 1_800_000_000_000  # 2027-01-15T08:00:00Z
MIN = 60_000
Events = list[tuple[str, dict[str, Any]]]

# --- a minimal, independent contract check ---------------------------------------------

TYPES = {
    "tickets": {"opened", "contacted", "escalated", "escalation_reviewed", "resolved", "closed",
                "reopened", "follow_up"},
    "calls": {"queued", "answered", "abandoned"},
    "orders": {"ordered", "scheduled", "installed", "cancelled"},
    "surveys": {"response"},
}
ENTITY = {"tickets": "ticket_id", "calls": "call_id", "orders": "order_id"}
CHANNELS = {"phone", "email", "chat", "chatbot", "portal", "self_service", "proactive"}
SCORES = {"csat": (1, 5), "xla": (0, 10)}


def _nonempty_str(value: object) -> bool:
    return isinstance(value, str) and value != ""


def _instant(text: str) -> datetime | None:
    """An RFC 3339 date-time with an offset, else None."""
    if len(text) < 20 or text[10] not in "Tt":
        return None
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo is not None else None


def _is_date(text: str) -> bool:
    try:
        return len(text) == 10 and date.fromisoformat(text).isoformat() == text
    except ValueError:
        return False


def violation(topic: str, event: object, now_ms: int | None = None) -> str | None:
    """Why ``event`` breaks the contract of ``topic`` (None if it does not)."""
    if not isinstance(event, dict):
        return "not a JSON object"
    for field in ("event_id", "partner_id"):
        if not _nonempty_str(event.get(field)):
            return f"{field} missing or not a non-empty string"
    etype = event.get("type")
    if etype not in TYPES[topic]:
        return f"type {etype!r} unknown on {topic}"
    ts = event.get("ts")
    if isinstance(ts, bool) or not isinstance(ts, int | str):
        return "ts is neither an integer nor a string"
    if isinstance(ts, str):
        instant = _instant(ts)
        if instant is None:
            return "ts is not RFC 3339 with an offset"
        ts_ms = int(instant.timestamp() * 1000)
    else:
        ts_ms = ts
    if now_ms is not None and ts_ms > now_ms + 5 * MIN:
        return "ts more than 5 minutes in the future"
    if topic in ENTITY and not _nonempty_str(event.get(ENTITY[topic])):
        return f"{ENTITY[topic]} missing or not a non-empty string"
    if topic == "tickets" and etype == "opened":
        if not _nonempty_str(event.get("severity")):
            return "severity missing"
        if "channel" in event and event["channel"] not in CHANNELS:
            return "unknown channel"
        if "order_id" in event and not _nonempty_str(event["order_id"]):
            return "order_id not a string"
    if topic == "tickets" and etype == "escalated":
        if "documented" in event and not isinstance(event["documented"], bool):
            return "documented not a boolean"
        kb = event.get("kb_article")
        if kb is not None and not _nonempty_str(kb):
            return "kb_article not a string or null"
    if topic == "tickets" and etype == "escalation_reviewed":
        if event.get("verdict") not in ("good", "bad"):
            return "verdict is neither good nor bad"
        reasons = event.get("reasons", [])
        if not isinstance(reasons, list) or not all(
                isinstance(r, str) and re.fullmatch(r"[a-z][a-z0-9_]{0,63}", r) for r in reasons):
            return "reasons not a list of short snake_case codes"
    if topic == "tickets" and etype == "resolved":
        for flag in ("first_contact", "truck_roll"):
            if flag in event and not isinstance(event[flag], bool):
                return f"{flag} not a boolean"
    if topic == "orders" and etype == "scheduled":
        due = event.get("due_date")
        if not isinstance(due, str) or not (_is_date(due) or _instant(due) is not None):
            return "due_date is not YYYY-MM-DD nor an RFC 3339 date-time with offset"
    if topic == "surveys":
        kind, score = event.get("kind"), event.get("score")
        if kind not in SCORES:
            return "unknown survey kind"
        if not isinstance(score, int | float) or isinstance(score, bool):
            return "score missing or not a number"
        if not SCORES[kind][0] <= score <= SCORES[kind][1]:
            return "score out of range"
        if "ticket_id" in event and not _nonempty_str(event["ticket_id"]):
            return "ticket_id not a string"
    return None


def raw_violation(topic: str, raw: bytes, now_ms: int) -> str | None:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return "not UTF-8"
    try:
        event = json.loads(text)
    except ValueError:
        return "not JSON"
    return violation(topic, event, now_ms)


# --- simple KPI sample counting (semantics.md, default catalog) ------------------------

KPIS = (
    "ots_down_hard", "ots_service_affecting", "ots_down_hard_p90", "asa", "service_level",
    "abandon_rate", "mttr", "fai_rate", "on_time_install", "escalation_rate",
    "good_escalation_ratio", "csat", "xla", "reopen_rate", "first_contact_resolution",
    "truck_roll_rate", "escalation_review_agreement", "detractor_follow_up", "proactive_share",
)
PER_TICKET_ESCALATION = {"good_escalation_ratio": 1, "escalation_review_agreement": 1,
                         "detractor_follow_up": 0}
"""One sample per escalated (or reviewed) ticket: ~7 and ~6 a minute per partner on average,
2 in the sparsest first minute; their 1 h windows hold hundreds. One per ticket with a poor CSAT
answer: ~2 a minute, none in some minutes (an hour holds 60 or more, see the follow-up test)."""


def _earliest(events: Iterable[tuple[str, dict[str, Any]]]) -> dict[tuple[str, str, str], int]:
    """(topic, entity id, type) -> earliest ts."""
    first: dict[tuple[str, str, str], int] = {}
    for topic, e in events:
        if topic in ENTITY:
            key = (topic, e[ENTITY[topic]], e["type"])
            if key not in first or e["ts"] < first[key]:
                first[key] = e["ts"]
    return first


def sample_counts(events: Events, t0: int, t1: int) -> dict[str, dict[str, int]]:
    """Per partner: the number of samples of each KPI whose sample time is in [t0, t1)."""
    by_partner: dict[str, Events] = defaultdict(list)
    for topic, e in events:
        by_partner[e["partner_id"]].append((topic, e))
    out: dict[str, dict[str, int]] = {}
    for partner, evs in by_partner.items():
        first = _earliest(evs)
        severity: dict[str, str] = {}  # of the earliest opened event (events are sorted)
        for t, e in evs:
            if t == "tickets" and e["type"] == "opened":
                severity.setdefault(e["ticket_id"], e["severity"])
        scheduled = {e["order_id"] for t, e in evs if t == "orders" and e["type"] == "scheduled"}
        counts: Counter[str] = Counter()

        def within(ts: int | None) -> bool:
            return ts is not None and t0 <= ts < t1

        for (topic, eid, etype), ts in first.items():
            if not within(ts):
                continue
            if topic == "tickets":
                opened = first.get((topic, eid, "opened"))
                if etype == "contacted" and opened is not None and ts >= opened:
                    if severity[eid] == "down_hard":
                        counts["ots_down_hard"] += 1
                        counts["ots_down_hard_p90"] += 1
                    elif severity[eid] == "service_affecting":
                        counts["ots_service_affecting"] += 1
                elif etype == "resolved":
                    for kpi in ("reopen_rate", "first_contact_resolution", "truck_roll_rate"):
                        counts[kpi] += 1
                    if opened is not None and ts >= opened:
                        counts["mttr"] += 1
                elif etype == "opened":
                    counts["escalation_rate"] += 1
                    counts["proactive_share"] += 1
                elif etype == "escalated":  # the partner's escalation: its first hop
                    counts["good_escalation_ratio"] += 1
            elif topic == "calls":
                queued = first.get((topic, eid, "queued"))
                if etype == "queued":
                    counts["abandon_rate"] += 1
                elif queued is not None and ts >= queued:
                    if etype == "answered":
                        counts["asa"] += 1
                    other = first.get((topic, eid, "abandoned" if etype == "answered"
                                       else "answered"))
                    if other is None or other > ts:
                        counts["service_level"] += 1
            elif topic == "orders" and etype == "installed":
                counts["fai_rate"] += 1
                if eid in scheduled:
                    counts["on_time_install"] += 1
        latest_review: dict[str, int] = {}
        for topic, e in evs:
            if topic == "tickets" and e["type"] == "escalation_reviewed":
                latest_review[e["ticket_id"]] = max(e["ts"], latest_review.get(e["ticket_id"], 0))
            if within(e["ts"]) and topic == "surveys":
                counts[e["kind"]] += 1
        poor: dict[str, int] = {}
        for topic, e in evs:
            if (topic == "surveys" and e["kind"] == "csat" and e["score"] < 4
                    and "ticket_id" in e):
                poor[e["ticket_id"]] = min(e["ts"], poor.get(e["ticket_id"], e["ts"]))
        counts["detractor_follow_up"] = sum(1 for ts in poor.values() if within(ts))
        counts["escalation_review_agreement"] = sum(
            1 for tid, ts in latest_review.items()
            if within(ts) and ("tickets", tid, "escalated") in first)
        out[partner] = {kpi: counts[kpi] for kpi in KPIS}
    return out


# --- fixtures and helpers ---------------------------------------------------------------


def only(*partner_ids: str) -> tuple[SimPartner, ...]:
    return tuple(p for p in DEFAULT_PARTNERS if p.partner_id in partner_ids)


def single_partner_sim(partner_id: str, seed: int = 7, warm_start: bool = True) -> Simulator:
    """A simulator of one default partner with the per-partner volume of the default run."""
    return Simulator(partners=only(partner_id), rate=50.0 / len(DEFAULT_PARTNERS), seed=seed,
                     start_ms=START, warm_start=warm_start)


@pytest.fixture(scope="module")
def default_run() -> Iterator[tuple[Simulator, Events]]:
    """The default simulator: its warm-start backlog plus the first simulated minute."""
    sim = Simulator(start_ms=START)
    events = sim.events_between(sim.history_start_ms, START + MIN)
    gc.freeze()  # ~10^5 long-lived dicts: keep the cyclic GC from rescanning them
    yield sim, events
    gc.unfreeze()


# --- tests ----------------------------------------------------------------------------


def test_default_partners() -> None:
    ids = [p.partner_id for p in DEFAULT_PARTNERS]
    assert len(ids) == 12 == len(set(ids))
    assert {p.tier for p in DEFAULT_PARTNERS} == {"premier", "business", "select", "authorized"}
    profiles = Counter(p.profile for p in DEFAULT_PARTNERS)
    assert profiles["drifting"] == 1 and profiles["gaming"] == 1
    assert set(profiles) <= set(PROFILES)


def test_same_seed_same_events() -> None:
    def run(seed: int, warm_start: bool = True) -> Events:
        sim = single_partner_sim("northwind-telecom", seed=seed, warm_start=warm_start)
        return sim.events_between(sim.history_start_ms, START + 20_000)

    first, again = run(7), run(7)
    assert first and first == again
    assert run(8, warm_start=False) != run(7, warm_start=False)


@pytest.mark.parametrize("partner", ["pioneer-link", "vertex-outsourcing"])
def test_adjacent_ranges_hand_out_every_event_exactly_once(partner: str) -> None:
    """However the time axis is cut, the same events: also for the gaming partner, whose
    throttle decides on what it handed out before."""
    def sim() -> Simulator:
        return single_partner_sim(partner)

    whole = sim()
    expected = whole.events_between(whole.history_start_ms, START + 3 * MIN)
    chunked = sim()
    cuts = [chunked.history_start_ms, START - 3_600_000, START - 1, START, START + 1,
            START + 7_000, START + 7_000, START + 61_234, START + 2 * MIN, START + 3 * MIN]
    got: Events = []
    for a, b in itertools.pairwise(cuts):
        part = chunked.events_between(a, b)
        assert all(a <= e["ts"] < b for _, e in part)
        got += part
    assert got == expected
    assert chunked.events_between(START + 3 * MIN, START + 3 * MIN) == []
    ids = [e["event_id"] for _, e in got]
    assert len(ids) == len(set(ids))
    assert [e["ts"] for _, e in got] == sorted(e["ts"] for _, e in got)


def test_cold_start_has_nothing_before_start() -> None:
    sim = single_partner_sim("bluefiber", warm_start=False)
    assert sim.history_start_ms == START
    events = sim.events_between(START - 86_400_000, START + 40 * MIN)
    assert events and min(e["ts"] for _, e in events) >= START
    assert {"calls", "orders", "tickets", "surveys"} == {t for t, _ in events}
    # Without a backlog every entity is complete: survey answers follow a first contact.
    first = _earliest(events)
    surveys = [e for t, e in events if t == "surveys"]
    assert surveys and all(e["ts"] > first[("tickets", e["ticket_id"], "contacted")]
                           for e in surveys)


def test_every_event_follows_the_contract(default_run: tuple[Simulator, Events]) -> None:
    sim, events = default_run
    assert len(events) > 10_000
    partners = {p.partner_id for p in DEFAULT_PARTNERS}
    ids = [e["event_id"] for _, e in events]
    assert len(ids) == len(set(ids))
    stamps = [e["ts"] for _, e in events]
    assert stamps == sorted(stamps) and stamps[0] >= sim.history_start_ms
    assert all(type(ts) is int for ts in stamps)
    assert {e["partner_id"] for _, e in events} == partners
    # Every event of the first minute, and every 3rd of the (uniform) warm-start backlog.
    for n, (topic, event) in enumerate(events):
        if event["ts"] >= START or n % 3 == 0:
            assert violation(topic, event) is None, (topic, event, violation(topic, event))
    json.dumps([e for _, e in events[::50]])  # plain JSON types only
    kinds = Counter((t, e["type"]) for t, e in events)
    for topic, types in TYPES.items():
        for etype in types:
            assert kinds[(topic, etype)] > 0, (topic, etype)
    due = [e["due_date"] for t, e in events if t == "orders" and e["type"] == "scheduled"]
    assert any(_is_date(d) for d in due) and any(_instant(d) for d in due)
    assert any(e.get("order_id") for t, e in events if t == "tickets" and e["type"] == "opened")


def test_events_pass_the_engine_contract(default_run: tuple[Simulator, Events]) -> None:
    from streams.ingest import contract

    _, events = default_run
    for topic, event in events[::25]:
        contract.decode(topic, json.dumps(event).encode(), START + MIN)


def test_every_partner_has_20_samples_of_every_kpi_in_the_first_minute(
        default_run: tuple[Simulator, Events]) -> None:
    _, events = default_run
    counts = sample_counts(events, START, START + MIN)
    assert set(counts) == {p.partner_id for p in DEFAULT_PARTNERS}
    short = {(p, k): n for p, per in counts.items() for k, n in per.items()
             if n < PER_TICKET_ESCALATION.get(k, 20)}
    assert not short, short


def test_durations_are_plausible_against_targets(
        default_run: tuple[Simulator, Events]) -> None:
    _, events = default_run
    first = _earliest(events)
    ots = [(first[("tickets", tid, "contacted")] - ts) / 1000
           for (topic, tid, etype), ts in first.items()
           if etype == "opened" and ("tickets", tid, "contacted") in first
           and START <= first[("tickets", tid, "contacted")] < START + MIN]
    mean_ots = sum(ots) / len(ots)
    assert 0.2 * 7200 < mean_ots < 1.5 * 7200


@pytest.fixture(scope="module")
def drifting_run() -> Events:
    """The drifting partner alone (default per-partner volume), 15 simulated minutes."""
    sim = single_partner_sim("summit-broadband")
    return sim.events_between(sim.history_start_ms, START + 15 * MIN)


def test_drifting_partner_asa_crosses_its_target(drifting_run: Events) -> None:
    first = _earliest(drifting_run)
    waits: list[tuple[int, float]] = []
    for (topic, cid, etype), ts in first.items():
        if topic == "calls" and etype == "answered":
            waits.append((ts, (ts - first[("calls", cid, "queued")]) / 1000))

    def mean_asa(t0: int, t1: int) -> float:
        window = [w for ts, w in waits if t0 <= ts < t1]
        assert len(window) >= 20
        return sum(window) / len(window)

    assert mean_asa(START, START + 2 * MIN) < 60
    assert mean_asa(START + 5 * MIN, START + 15 * MIN) > 60


def test_drifting_partner_ots_rises_past_target_within_the_drift(drifting_run: Events) -> None:
    first = _earliest(drifting_run)
    severity = {e["ticket_id"]: e["severity"] for t, e in drifting_run if e["type"] == "opened"}

    def mean_ots(t0: int, t1: int) -> float:
        values = [(ts - first[("tickets", tid, "opened")]) / 1000
                  for (topic, tid, etype), ts in first.items()
                  if etype == "contacted" and t0 <= ts < t1 and severity[tid] == "down_hard"]
        assert len(values) >= 20
        return sum(values) / len(values)

    assert mean_ots(START, START + 2 * MIN) < 7200 * 0.75
    assert mean_ots(START + 10 * MIN, START + 12 * MIN) > 7200


def test_lifecycles_are_ordered_and_linked(drifting_run: Events) -> None:
    first = _earliest(drifting_run)
    order = ("opened", "contacted", "escalated", "resolved", "closed")
    tickets = {eid for (topic, eid, _) in first if topic == "tickets"}
    for tid in tickets:
        stamps = [first[("tickets", tid, t)] for t in order if ("tickets", tid, t) in first]
        assert stamps == sorted(stamps), tid
    for (topic, cid, etype), ts in first.items():
        if topic == "calls" and etype != "queued":
            assert ts > first[("calls", cid, "queued")]
    installed = {eid: ts for (topic, eid, etype), ts in first.items()
                 if topic == "orders" and etype == "installed"}
    follow_ups = [e for t, e in drifting_run if t == "tickets" and e["type"] == "opened"
                  and e.get("order_id") in installed]
    assert follow_ups
    assert all(e["ts"] > installed[e["order_id"]] for e in follow_ups)
    types = Counter(e["type"] for _, e in drifting_run if e["ts"] >= START)
    assert types["reopened"] > 0 and types["cancelled"] > 0 and types["abandoned"] > 0


def test_gaming_partner_escalates_just_under_15_percent_badly() -> None:
    sim = single_partner_sim("vertex-outsourcing")
    end = START + 30 * MIN
    events = sim.events_between(sim.history_start_ms, end)
    first = _earliest(events)
    opened = sum(1 for (t, _, e), ts in first.items() if e == "opened" and START <= ts < end)
    escalated = sum(1 for (t, _, e), ts in first.items() if e == "escalated" and START <= ts < end)
    share = escalated / opened
    assert 0.13 <= share <= 0.15, share
    hops = [e for t, e in events if e["type"] == "escalated" and START <= e["ts"] < end]
    good = [e for e in hops if e.get("documented") is True and e.get("kb_article") is None]
    assert len(good) / len(hops) < 0.5


def test_rate_scales_the_volume() -> None:
    def count(rate: float) -> int:
        sim = Simulator(partners=only("bluefiber"), rate=rate, start_ms=START, warm_start=False)
        return len(sim.events_between(START, START + 5 * MIN))

    low, high = count(50 / 12), count(50 / 6)
    assert 1.8 < high / low < 2.2


def test_rejects_bad_arguments() -> None:
    with pytest.raises(ValueError):
        Simulator(partners=())
    with pytest.raises(ValueError):
        Simulator(rate=0)
    with pytest.raises(ValueError):
        Simulator(partners=(SimPartner("x", "premier", "chaotic"),))


# --- malformed messages -------------------------------------------------------------------


def test_malformed_messages_cover_many_categories_round_robin() -> None:
    assert len(CATEGORIES) >= 15
    messages = malformed_messages(3 * len(CATEGORIES), seed=3, now_ms=START)
    names = list(CATEGORIES)
    assert [c for _, _, c in messages] == [names[i % len(names)] for i in range(len(messages))]
    assert all(t in TYPES and isinstance(raw, bytes) and raw for t, raw, _ in messages)
    assert malformed_messages(3 * len(CATEGORIES), seed=3, now_ms=START) == messages
    assert malformed_messages(3 * len(CATEGORIES), seed=4, now_ms=START) != messages


def test_every_malformed_message_breaks_the_contract() -> None:
    now_ms = int(time.time() * 1000)
    for topic, raw, category in malformed_messages(2000, seed=5):
        assert raw_violation(topic, raw, now_ms) is not None, (category, topic, raw)


def test_malformed_messages_are_rejected_by_the_engine_contract() -> None:
    from streams.ingest import contract

    now_ms = int(time.time() * 1000)
    wrong: dict[str, str] = {}
    for topic, raw, category in malformed_messages(len(CATEGORIES) * 20, seed=9):
        try:
            contract.decode(topic, raw, now_ms)
        except contract.ContractError:
            continue
        except Exception as exc:  # the dead-letter path only catches ContractError
            wrong.setdefault(category, f"raised {type(exc).__name__}: {raw[:80]!r}")
        else:
            wrong.setdefault(category, f"accepted: {raw[:80]!r}")
    assert not wrong, wrong


def test_a_valid_event_passes_the_checks() -> None:
    event = {"event_id": "e1", "type": "opened", "partner_id": "acme", "ts": START,
             "ticket_id": "t1", "severity": "down_hard", "channel": "chat"}
    assert violation("tickets", event) is None
    assert raw_violation("tickets", json.dumps(event).encode(), START) is None


def test_poor_answers_are_followed_up_as_each_profile_does() -> None:
    """Tickets with a poor CSAT answer (below 4) get a follow-up on most tickets of a steady
    partner (93%) and far fewer of a weak one (65%): detractor_follow_up has something to show."""
    shares = {}
    for partner in ("bluefiber", "harbor-voice"):
        sim = single_partner_sim(partner)
        # answers of the first 40 minutes, and an hour more for their follow-ups to come
        events = sim.events_between(sim.history_start_ms, START + 100 * MIN)
        poor = {e["ticket_id"]: e["ts"] for t, e in events
                if t == "surveys" and e["kind"] == "csat" and e["score"] < 4
                and START <= e["ts"] < START + 40 * MIN and "ticket_id" in e}
        followed = {e["ticket_id"] for t, e in events if e["type"] == "follow_up"
                    and e["ticket_id"] in poor and poor[e["ticket_id"]] < e["ts"]}
        assert len(poor) >= 60, (partner, len(poor))
        shares[partner] = len(followed) / len(poor)
    assert shares["bluefiber"] > 0.85 and shares["harbor-voice"] < 0.75, shares
