"""Hand-worked checks of the independent KPI reference (tests/reference.py).

Every expected value below is derived by hand from semantics.md; the arithmetic is written
out as literal expressions or comments so that it can be re-checked without running code.
"""

from __future__ import annotations

import itertools
from typing import Any

import pytest

try:
    from tests import reference as ref
except ImportError:  # tests/ is not a package: pytest put tests/ itself on sys.path
    import reference as ref

# 2024-03-10T00:00:00Z = 19792 days * 86400 s after the epoch; hour- and minute-aligned.
T0 = 19_792 * 86_400 * 1000
S = 1000  # one second in ms
M = 60 * S  # one minute in ms
H = 60 * M  # one hour in ms
D = 24 * H  # one day in ms

_ids = itertools.count()


def ev(topic: str, type_: str, ts: str | int, partner: str = "p1", **fields: Any) -> tuple:
    """Build a (topic, event) pair with a fresh event_id unless one is given."""
    event = {"event_id": f"e{next(_ids)}", "type": type_, "partner_id": partner, "ts": ts}
    event.update(fields)
    return (topic, event)


def tk(type_: str, ts: str | int, ticket: str, **fields: Any) -> tuple:
    return ev("tickets", type_, ts, ticket_id=ticket, **fields)


def call(type_: str, ts: str | int, call_id: str, **fields: Any) -> tuple:
    return ev("calls", type_, ts, call_id=call_id, **fields)


def order(type_: str, ts: str | int, order_id: str, **fields: Any) -> tuple:
    return ev("orders", type_, ts, order_id=order_id, **fields)


def survey(ts: str | int, kind: str, score: float, **fields: Any) -> tuple:
    return ev("surveys", "response", ts, kind=kind, score=score, **fields)


def get(res: dict, kpi: str, window: str, partner: str = "p1") -> tuple[float, int] | None:
    r = res.get((partner, kpi, window))
    return None if r is None else (r.value, r.samples)


# ------------------------------------------------------------------------------------------
# time parsing and constants
# ------------------------------------------------------------------------------------------


def test_to_ms() -> None:
    assert ref.to_ms("2024-03-10T00:00:00Z") == T0
    assert ref.to_ms("2024-03-10T02:00:00+02:00") == T0
    assert ref.to_ms("2024-03-09T22:30:00-01:30") == T0
    assert ref.to_ms("1970-01-01T00:00:00.0019Z") == 1  # sub-ms truncated, not rounded
    assert ref.to_ms("1970-01-01T00:00:00.5Z") == 500
    assert ref.to_ms(T0 + 7) == T0 + 7


def test_windows_and_catalog() -> None:
    assert ref.WINDOWS == {
        "1h": (3600 * S, 60 * S),
        "24h": (86400 * S, 3600 * S),
        "7d": (604800 * S, 3600 * S),
        "30d": (2592000 * S, 3600 * S),
    }
    assert len(ref.DEFAULT_KPIS) == 24


def test_attainment() -> None:
    assert ref.attainment("service_level", 0.4, 0.8) == pytest.approx(0.4 / 0.8)  # 0.5
    assert ref.attainment("mttr", 1200.0, 7200.0) == pytest.approx(7200 / 1200)  # 6
    assert ref.attainment("mttr", 0.0, 7200.0) == 10.0  # value 0 -> cap
    assert ref.attainment("mttr", 1.0, 7200.0) == 10.0  # 7200 capped at 10
    assert ref.attainment("csat", 50.0, 4.2) == 10.0  # capped


# ------------------------------------------------------------------------------------------
# duration KPIs
# ------------------------------------------------------------------------------------------


def test_mean_duration_contacted_arrives_before_opened() -> None:
    events = [
        tk("contacted", T0 + 600 * S, "A"),  # arrives first, but is the stop
        tk("opened", T0, "A", severity="down_hard"),
        tk("opened", T0 + 1000 * S, "B", severity="down_hard"),
        tk("contacted", T0 + 2800 * S, "B"),
    ]
    res = ref.compute(events)
    # A: 600 - 0 = 600 s; B: 2800 - 1000 = 1800 s; mean = (600 + 1800) / 2 = 1200
    assert get(res, "ots_down_hard", "1h") == (1200.0, 2)
    assert get(res, "ots_down_hard", "30d") == (1200.0, 2)
    assert get(res, "ots_service_affecting", "1h") is None  # filter on severity
    assert get(res, "mttr", "1h") is None  # no resolved events


def test_only_earliest_stop_counts_and_stop_before_start() -> None:
    events = [
        # X: contacted at +300 s arrives first; the earliest stop (+100 s) wins -> 100 s
        tk("opened", T0, "X", severity="down_hard"),
        tk("contacted", T0 + 300 * S, "X"),
        tk("contacted", T0 + 100 * S, "X"),
        # Y: earliest stop (+500 s) is before start (+1000 s) -> no sample, even though a
        # later stop (+2000 s) is after the start
        tk("opened", T0 + 1000 * S, "Y", severity="down_hard"),
        tk("contacted", T0 + 500 * S, "Y"),
        tk("contacted", T0 + 2000 * S, "Y"),
    ]
    res = ref.compute(events)
    assert get(res, "ots_down_hard", "1h") == (100.0, 1)


def test_duration_start_filter_uses_earliest_matching_start() -> None:
    events = [
        tk("opened", T0, "Z", severity="minor"),
        tk("opened", T0 + 60 * S, "Z", severity="service_affecting"),
        tk("contacted", T0 + 100 * S, "Z"),
        tk("resolved", T0 + 400 * S, "Z"),
    ]
    res = ref.compute(events)
    assert get(res, "ots_service_affecting", "1h") == (100.0 - 60.0, 1)  # 40 s
    assert get(res, "mttr", "1h") == (400.0, 1)  # unfiltered start = +0 s


def test_p90_nearest_rank_ten_values() -> None:
    durations = [70, 10, 100, 40, 90, 20, 60, 30, 80, 50]  # seconds, shuffled
    events = []
    for i, d in enumerate(durations):
        events.append(tk("opened", T0, f"t{i}", severity="down_hard"))
        events.append(tk("contacted", T0 + d * S, f"t{i}"))
    res = ref.compute(events)
    # sorted: 10..100; index ceil(0.9 * 10) - 1 = 9 - 1 = 8 -> 90
    assert get(res, "ots_down_hard_p90", "1h") == (90.0, 10)
    assert get(res, "ots_down_hard", "1h") == (550 / 10, 10)  # mean = 55
    # one more (value 5): n = 11, index ceil(9.9) - 1 = 9 -> sorted [5,10,...,100][9] = 90
    events += [tk("opened", T0, "t10", severity="down_hard"), tk("contacted", T0 + 5 * S, "t10")]
    assert get(ref.compute(events), "ots_down_hard_p90", "1h") == (90.0, 11)
    assert ref.p90_nearest_rank([float(v) for v in range(1, 21)]) == 18.0  # ceil(18)-1 = 17


def test_service_level_asa_abandon_rate() -> None:
    events = [
        call("queued", T0, "c1"),
        call("answered", T0 + 60 * S, "c1"),  # exactly 60 s -> within -> 1
        call("queued", T0, "c2"),
        call("answered", T0 + 60 * S + 1, "c2"),  # 60.001 s -> 0
        call("queued", T0, "c3"),
        call("abandoned", T0 + 10 * S, "c3"),  # abandoned (miss) -> 0
        call("queued", T0, "c4"),
        call("answered", T0 + 30 * S, "c4"),  # 30 s -> 1
        call("queued", T0, "c5"),
        call("answered", T0 + 20 * S, "c5"),  # arrives first ...
        call("abandoned", T0 + 5 * S, "c5"),  # ... but earliest stop is abandoned -> 0
        call("queued", T0, "c6"),  # no stop -> no sample
    ]
    res = ref.compute(events)
    assert get(res, "service_level", "1h") == (2 / 5, 5)
    # asa: stop = earliest answered: c1 60, c2 60.001, c4 30, c5 20
    assert get(res, "asa", "1h") == (pytest.approx((60 + 60.001 + 30 + 20) / 4), 4)
    # abandon_rate: distinct abandoned {c3, c5} / distinct queued {c1..c6}
    assert get(res, "abandon_rate", "1h") == (2 / 6, 6)


# ------------------------------------------------------------------------------------------
# window edges
# ------------------------------------------------------------------------------------------


def test_window_edge_one_hour_minute_buckets() -> None:
    # now = T0 + 60 min + 30 s -> minute bucket b = m0 + 60 (m0 = bucket of T0)
    # IN iff b - 60 < bucket(t) <= b, i.e. m0 < bucket(t): bucket m0 OUT, m0 + 1 IN
    events = [
        call("queued", T0 - 5 * S, "k1"),
        call("answered", T0, "k1"),  # 5 s, sample in bucket m0 = b - 60 -> OUT of 1h
        call("queued", T0 + 60 * S - 20 * S, "k2"),
        call("answered", T0 + 60 * S, "k2"),  # 20 s, bucket m0 + 1 = b - 59 -> IN
        survey(T0 + 60 * M + 30 * S, "csat", 3),  # sets the event clock
    ]
    res = ref.compute(events)
    assert get(res, "asa", "1h") == (20.0, 1)
    assert get(res, "asa", "24h") == ((5 + 20) / 2, 2)  # 12.5
    # one ms earlier than bucket m0 + 1 is still in bucket m0: OUT
    assert ref.in_window(T0 + 60 * S - 1, T0 + 60 * M + 30 * S, "1h") is False
    assert ref.in_window(T0 + 60 * S, T0 + 60 * M + 30 * S, "1h") is True


def test_window_edge_24h_hour_buckets_with_explicit_now() -> None:
    events = [call("queued", T0 - 7 * S, "k"), call("answered", T0, "k")]  # hour bucket h0
    # now = T0 + 24 h -> bucket h0 + 24; h0 = b - 24 -> OUT; 7d still IN
    res = ref.compute(events, now_ms=T0 + 24 * H)
    assert get(res, "asa", "24h") is None
    assert get(res, "asa", "7d") == (7.0, 1)
    # now = T0 + 24 h - 1 ms -> bucket h0 + 23; h0 = b - 23 -> IN
    res = ref.compute(events, now_ms=T0 + 24 * H - 1)
    assert get(res, "asa", "24h") == (7.0, 1)
    # 30d: now bucket h0 + 720 -> OUT; h0 + 719 -> IN
    assert get(ref.compute(events, now_ms=T0 + 30 * D), "asa", "30d") is None
    assert get(ref.compute(events, now_ms=T0 + 30 * D - 1), "asa", "30d") == (7.0, 1)
    # samples after now (bucket > b) are not in the window
    assert get(ref.compute(events, now_ms=T0 - 1), "asa", "1h") is None


# ------------------------------------------------------------------------------------------
# duplicates and late events
# ------------------------------------------------------------------------------------------


def test_duplicate_event_id_ignored() -> None:
    first = survey(T0, "csat", 5)
    dup = ("surveys", {**first[1], "score": 1, "ts": T0 + 10 * S})  # same event_id
    other_partner = ("surveys", {**first[1], "partner_id": "p2", "score": 2})
    events = [first, dup, other_partner]
    assert len(ref.accepted_events(events)) == 2
    res = ref.compute(events)
    assert get(res, "csat", "1h") == (5.0, 1)  # dup (score 1) ignored
    assert get(res, "csat", "1h", partner="p2") == (2.0, 1)  # same id, other partner: counted


def test_late_event_dropped_and_changes_no_state() -> None:
    events = [
        tk("opened", T0, "L", severity="down_hard"),  # accepted (now = T0)
        survey(T0 + 40 * D, "csat", 5),  # now = T0 + 40 d, hour bucket h = h0 + 960
        # hour bucket h0 <= h - 720 -> late: must not become the earliest stop of L
        tk("contacted", T0 + 100 * S, "L"),
        # hour bucket h0 + 240 = h - 720 -> late
        survey(T0 + 10 * D, "csat", 1),
        # hour bucket h0 + 241 = h - 719 -> accepted, and IN the 30d window
        survey(T0 + 10 * D + H, "csat", 3),
        # accepted (h0 + 241): becomes L's earliest stop
        tk("contacted", T0 + 10 * D + H, "L"),
    ]
    acc = ref.accepted_events(events)
    assert [e["event_id"] for _, e in acc] == [events[i][1]["event_id"] for i in (0, 1, 4, 5)]
    res = ref.compute(events)
    assert get(res, "csat", "30d") == ((5 + 3) / 2, 2)
    # L: (10 d + 1 h) / 1 s = 867600 s, sample time T0 + 10 d + 1 h -> in 30d window.
    # Had the late contacted (+100 s) counted, the sample would be 100 s at T0 (out of 30d).
    assert get(res, "ots_down_hard", "30d") == (10 * 86400 + 3600, 1)


# ------------------------------------------------------------------------------------------
# ratios
# ------------------------------------------------------------------------------------------


def test_distinct_ratio_counts_once_at_earliest_matching_event() -> None:
    events = [
        tk("opened", T0, "A"),
        tk("opened", T0 + 30 * M, "A"),  # same ticket: counted once (at T0)
        tk("opened", T0 + 5 * M, "B"),
        tk("escalated", T0 + 3 * H, "A"),  # arrives first; sets now = T0 + 3 h
        tk("escalated", T0 + 10 * M, "A"),  # earliest escalation of A -> counts here
        tk("opened", T0 + 2 * H + 30 * M, "C"),
    ]
    res = ref.compute(events)
    # 1h (minute buckets > m0 + 120): num: A at +10 min OUT -> 0; den: C (+150 min) -> 1
    assert get(res, "escalation_rate", "1h") == (0 / 1, 1)
    # 24h: num {A} = 1; den {A, B, C} = 3
    assert get(res, "escalation_rate", "24h") == (1 / 3, 3)


def test_good_escalation_filters() -> None:
    events = [
        tk("escalated", T0, "G", documented=True),  # kb absent -> good: G's escalation (earliest)
        tk("escalated", T0 + S, "G", documented=True, kb_article=None),  # a later hop: not counted
        tk("escalated", T0 + 2 * S, "G", documented=True, kb_article="KB-1"),  # later: not counted
        tk("escalated", T0 + 3 * S, "H", documented=True, kb_article=""),  # string -> no
        tk("escalated", T0 + 4 * S, "H", documented=False),  # later hop
        tk("escalated", T0 + 5 * S, "K"),  # documented missing -> no
        tk("escalated", T0 + 6 * S, "L", documented=False),  # a tie at L's earliest instant:
        tk("escalated", T0 + 6 * S, "L", documented=True),  # one good hop there -> good
    ]
    res = ref.compute(events)
    # per escalated ticket, by its earliest escalation: G good, H no, K no, L good
    assert get(res, "good_escalation_ratio", "1h") == (2 / 4, 4)
    assert get(res, "escalation_review_agreement", "1h") is None  # nothing reviewed
    # escalation_rate has no opened events -> denominator 0 -> absent
    assert get(res, "escalation_rate", "1h") is None


def test_escalation_reviews_overrule_the_partners_flags() -> None:
    good = {"documented": True}
    events = [
        tk("escalated", T0, "A", **good),  # claims good, reviewed bad
        tk("escalation_reviewed", T0 + 20 * M, "A", verdict="bad", reasons=["kb_solvable"]),
        tk("escalated", T0 + S, "B", documented=False),  # claims bad, reviewed good
        tk("escalation_reviewed", T0 + 30 * M, "B", verdict="good"),
        tk("escalated", T0 + 2 * S, "C", **good),  # reviewed bad, then re-reviewed good
        tk("escalation_reviewed", T0 + 40 * M, "C", verdict="good"),  # arrives first, is later
        tk("escalation_reviewed", T0 + 10 * M, "C", verdict="bad"),
        tk("escalated", T0 + 3 * S, "D", **good),  # two verdicts at one instant: bad wins
        tk("escalation_reviewed", T0 + 50 * M, "D", verdict="good"),
        tk("escalation_reviewed", T0 + 50 * M, "D", verdict="bad"),
        tk("escalated", T0 + 4 * S, "E", **good),  # unreviewed: its own flags count
        tk("escalation_reviewed", T0 + 5 * M, "F", verdict="bad"),  # no escalation: no sample
    ]
    res = ref.compute(events, now_ms=T0 + 55 * M)
    # verdicts: A bad, B good, C good, D bad; E by its claim, good -> 3 of 5
    assert get(res, "good_escalation_ratio", "1h") == (3 / 5, 5)
    # agreement (claim vs verdict): A no, B no, C yes, D no -> 1 of 4
    assert get(res, "escalation_review_agreement", "1h") == (1 / 4, 4)
    # agreement counts at the latest review: the 1h window ending at +85 min (minutes 26..85)
    # has left A's review (+20) and C's first one (+10): B no, C yes, D no
    late = ref.compute(events, now_ms=T0 + 85 * M)
    assert get(late, "escalation_review_agreement", "1h") == (1 / 3, 3)
    # while the escalations themselves (T0..T0+4s) have all left it
    assert get(late, "good_escalation_ratio", "1h") is None


def test_detractors_followed_up_within_24_hours() -> None:
    def csat(ts: int, ticket: str | None, score: float) -> tuple:
        fields = {"ticket_id": ticket} if ticket else {}
        return ev("surveys", "response", ts, kind="csat", score=score, **fields)

    day = 24 * H
    events = [
        csat(T0, "A", 2), tk("follow_up", T0 + day, "A"),  # poor, followed at exactly 24 h: hit
        csat(T0, "B", 3.5), tk("follow_up", T0 + day + 1, "B"),  # followed 1 ms too late: miss
        tk("follow_up", T0 + H, "C"), csat(T0 + 2 * H, "C", 1),  # followed only before: miss
        csat(T0, "D", 4),  # good: no sample
        csat(T0, None, 1),  # no ticket: no sample
        csat(T0 + 3 * H, "E", 3), csat(T0 + H, "E", 2),  # earliest poor response (+1 h) counts:
        tk("follow_up", T0 + 23 * H, "E"),  # hit
        ev("surveys", "response", T0, kind="xla", score=1, ticket_id="F"),  # xla: not csat
    ]
    res = ref.compute(events, now_ms=T0 + 2 * day)
    # A hit, B miss, C miss, E hit (each counted when decided: all decided by now)
    assert get(res, "detractor_follow_up", "7d") == (2 / 4, 4)
    # half a day in, nothing is decided yet: no value, rather than four misses
    assert get(ref.compute(events, now_ms=T0 + 12 * H), "detractor_follow_up", "7d") is None
    # at 23 h, E's follow-up (+23 h) has come: one decided, a hit
    assert get(ref.compute(events, now_ms=T0 + 23 * H), "detractor_follow_up", "7d") == (1.0, 1)


def test_survey_answers_are_held_against_the_tickets_sla() -> None:
    """bluefiber is premier: its down_hard open-to-status target is 1h30 (partners.yaml), MTTR 4 h
    (the default); an unlisted partner is authorized: 2h30 for down_hard."""
    def csat(ts: int, ticket: str, score: float, partner: str = "bluefiber") -> tuple:
        return ev("surveys", "response", ts, partner, kind="csat", score=score, ticket_id=ticket)

    def opened(ts: int, ticket: str, partner: str = "bluefiber") -> tuple:
        return ev("tickets", "opened", ts, partner, ticket_id=ticket, severity="down_hard")

    def t(type_: str, ts: int, ticket: str, partner: str = "bluefiber") -> tuple:
        return ev("tickets", type_, ts, partner, ticket_id=ticket)

    events = [
        # A: contacted at 1h20 (met), resolved at 3 h (met), answered 2: a watermelon
        opened(T0, "A"), t("contacted", T0 + 80 * M, "A"), t("resolved", T0 + 3 * H, "A"),
        csat(T0 + 4 * H, "A", 2),
        # B: contacted at 1h40 (missed for premier), answered 5: rescued
        opened(T0, "B"), t("contacted", T0 + 100 * M, "B"), t("resolved", T0 + 3 * H, "B"),
        csat(T0 + 4 * H, "B", 5),
        # C: the same 1h40 for an authorized partner (2h30): met, and a good answer
        opened(T0, "C", "acme"), t("contacted", T0 + 100 * M, "C", "acme"),
        t("resolved", T0 + 3 * H, "C", "acme"), csat(T0 + 4 * H, "C", 4, "acme"),
        # D: answered before it was resolved: no sample until the SLA is known
        opened(T0, "D"), t("contacted", T0 + 10 * M, "D"), csat(T0 + 20 * M, "D", 1),
        # E: two answers at one instant, one poor: poor; SLA met (question: MTTR only, 3 h)
        ev("tickets", "opened", T0, "bluefiber", ticket_id="E", severity="question"),
        t("resolved", T0 + 3 * H, "E"), csat(T0 + 5 * H, "E", 5), csat(T0 + 5 * H, "E", 3),
    ]
    res = ref.compute(events, now_ms=T0 + 6 * H)
    assert get(res, "watermelon_share", "24h", "bluefiber") == (2 / 2, 2)  # A and E, both poor
    assert get(res, "rescued_share", "24h", "bluefiber") == (1 / 1, 1)  # B
    assert get(res, "watermelon_share", "24h", "acme") == (0.0, 1)  # C: met, good
    assert get(res, "rescued_share", "24h", "acme") is None
    # D resolved later (at 2 h, SLA met): its earlier answer now counts, a watermelon
    later = ref.compute([*events, t("resolved", T0 + 2 * H, "D")], now_ms=T0 + 6 * H)
    assert get(later, "watermelon_share", "24h", "bluefiber") == (3 / 3, 3)


def test_resolved_ratios() -> None:
    events = [
        tk("resolved", T0, "R1", first_contact=True, truck_roll=False),
        tk("resolved", T0 + S, "R1", first_contact=False),  # R1 counted once in den
        tk("resolved", T0, "R2", first_contact=False, truck_roll=True),
        tk("resolved", T0 + S, "R2", first_contact=True),  # R2 matches FCR later (distinct)
        tk("resolved", T0, "R3"),
        tk("reopened", T0 + 2 * S, "R3"),
        tk("reopened", T0 + 3 * S, "R3"),
    ]
    res = ref.compute(events)
    assert get(res, "first_contact_resolution", "1h") == (2 / 3, 3)  # {R1, R2} / {R1,R2,R3}
    assert get(res, "truck_roll_rate", "1h") == (1 / 3, 3)  # {R2}
    assert get(res, "reopen_rate", "1h") == (1 / 3, 3)  # {R3}
    assert get(res, "mttr", "1h") is None  # no opened events


def test_csat_and_xla_are_separate() -> None:
    events = [
        survey(T0, "csat", 5),
        survey(T0 + S, "xla", 9, ticket_id="T"),
        survey(T0 + 2 * S, "csat", 4),
        survey(T0 + 3 * S, "xla", 10),
    ]
    res = ref.compute(events)
    assert get(res, "csat", "1h") == ((5 + 4) / 2, 2)  # 4.5
    assert get(res, "xla", "1h") == ((9 + 10) / 2, 2)  # 9.5


# ------------------------------------------------------------------------------------------
# follow_up and deadline
# ------------------------------------------------------------------------------------------


def test_fai_rate() -> None:
    events = [
        # o1: follow-up at +5 d arrives before the install -> 1
        tk("opened", T0 + 5 * D, "f1", order_id="o1"),
        order("installed", T0, "o1"),
        # o2: only follow-up at install + 30 d + 1 ms -> outside horizon -> 0
        order("installed", T0, "o2"),
        # o3: follow-up exactly at install + 30 d -> inside (<=) -> 1
        order("installed", T0, "o3"),
        # o4: follow-up at exactly the install ts (not >) and one for another order -> 0
        order("installed", T0 + H, "o4"),
        tk("opened", T0 + H, "f4", order_id="o4"),
        tk("opened", T0 + 2 * H, "f4x", order_id="other"),
        tk("opened", T0 + 2 * H, "f4y"),
        # o5: install at +2 h arrives first, earliest install is +1 h; follow-up at +1.5 h -> 1
        order("installed", T0 + 2 * H, "o5"),
        order("installed", T0 + H, "o5"),
        tk("opened", T0 + H + 30 * M, "f5", order_id="o5"),
        tk("opened", T0 + 30 * D, "f3", order_id="o3"),
        tk("opened", T0 + 30 * D + 1, "f2", order_id="o2"),
    ]
    assert len(ref.accepted_events(events)) == len(events)  # nothing late
    res = ref.compute(events, now_ms=T0 + 29 * D)
    # samples (at install time): o1 1, o2 0, o3 1, o4 0, o5 1 -> 3 / 5
    assert get(res, "fai_rate", "30d") == (3 / 5, 5)


def test_on_time_install() -> None:
    events = [
        # o1: install 2024-03-11T01:30+02:00 = 2024-03-10T23:30Z; local date 03-11 > 03-10 -> 0
        order("scheduled", T0 - D, "o1", due_date="2024-03-10"),
        order("installed", "2024-03-11T01:30:00+02:00", "o1"),
        # o2: install 2024-03-10T23:30-02:00 = 2024-03-11T01:30Z; local date 03-10 <= 03-10 -> 1
        order("scheduled", T0 - D, "o2", due_date="2024-03-10"),
        order("installed", "2024-03-10T23:30:00-02:00", "o2"),
        # o3: the schedule with the LARGEST ts wins (not the last to arrive): due 03-20 -> 1
        order("scheduled", T0 + 2 * H, "o3", due_date="2024-03-20"),
        order("scheduled", T0 + H, "o3", due_date="2024-03-01"),
        order("installed", "2024-03-15T10:00:00Z", "o3"),
        # o4: date-time due, install exactly at the due instant -> 1
        order("scheduled", T0, "o4", due_date="2024-03-15T14:00:00+02:00"),
        order("installed", T0 + 5 * D + 12 * H, "o4"),  # 2024-03-15T12:00Z
        # o5: date-time due, install 1 ms after -> 0
        order("scheduled", T0, "o5", due_date="2024-03-15T12:00:00Z"),
        order("installed", T0 + 5 * D + 12 * H + 1, "o5"),
        # o6: installed, never scheduled -> no sample
        order("installed", T0 + H, "o6"),
        # o7: epoch-ms install -> local = UTC: 2024-03-10T23:59:59.999Z <= 03-10 -> 1
        order("scheduled", T0, "o7", due_date="2024-03-10"),
        order("installed", T0 + D - 1, "o7"),
        # o8: scheduled only, never installed -> no sample
        order("scheduled", T0, "o8", due_date="2024-03-10"),
    ]
    res = ref.compute(events)
    # o1 0, o2 1, o3 1, o4 1, o5 0, o7 1 -> 4 / 6
    assert get(res, "on_time_install", "30d") == (4 / 6, 6)
    # 24h window at now = 2024-03-15T12:00:00.001Z (hour bucket of 12:00): only o3 (10:00),
    # o4 and o5 (12:00) are in the last 24 hour buckets -> (1 + 1 + 0) / 3
    assert get(res, "on_time_install", "24h") == (2 / 3, 3)
