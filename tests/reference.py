"""Independent, brute-force reference implementation of the partnerpulse v1 KPI semantics.

This module deliberately shares no code with the ``streams`` package: it re-derives every
KPI value from the full list of accepted events, following the specification
(``semantics.md``) literally. It is slow on purpose (lists, sorts, filters) so that it is easy
to check by eye; integration tests compare the streaming engine against it.

Tie-breaking rules that the spec leaves open (the engine must match them):

* "earliest" event of an entity: smallest ts_ms; on equal ts_ms the event accepted FIRST
  (arrival order) wins.
* "scheduled event with the LARGEST ts_ms": on equal ts_ms the event accepted LAST wins.
* ``now`` (event clock) is global, i.e. over all partners' accepted events; the late rule
  compares an event with the newest accepted event of its own partner.
* Duplicates are keyed by (partner_id, event_id) across all topics.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

import yaml

CONFIG = Path(__file__).resolve().parent.parent / "config"
Event = dict[str, Any]
TopicEvent = tuple[str, Event]

SECOND_MS = 1_000
MINUTE_MS = 60 * SECOND_MS
HOUR_MS = 60 * MINUTE_MS
DAY_MS = 24 * HOUR_MS

#: window name -> (length_ms, resolution_ms)
WINDOWS: dict[str, tuple[int, int]] = {
    "1h": (3_600 * SECOND_MS, 60 * SECOND_MS),
    "24h": (86_400 * SECOND_MS, 3_600 * SECOND_MS),
    "7d": (604_800 * SECOND_MS, 3_600 * SECOND_MS),
    "30d": (2_592_000 * SECOND_MS, 3_600 * SECOND_MS),
}

#: An event is late if its hour bucket <= hour_bucket(now_at_arrival) - LATE_HOUR_BUCKETS.
LATE_HOUR_BUCKETS = 720

#: follow_up horizon for fai_rate (30 days).
FAI_HORIZON_MS = 30 * DAY_MS

#: kpi id -> direction / default target / min samples (from the default catalog).
DEFAULT_KPIS: dict[str, dict[str, Any]] = {
    "ots_down_hard": {"direction": "lower", "target": 7200.0, "min_samples": 5},
    "ots_service_affecting": {"direction": "lower", "target": 7200.0, "min_samples": 5},
    "ots_down_hard_p90": {"direction": "lower", "target": 14400.0, "min_samples": 10},
    "asa": {"direction": "lower", "target": 60.0, "min_samples": 20},
    "service_level": {"direction": "higher", "target": 0.80, "min_samples": 20},
    "abandon_rate": {"direction": "lower", "target": 0.05, "min_samples": 20},
    "mttr": {"direction": "lower", "target": 14400.0, "min_samples": 5},
    "fai_rate": {"direction": "lower", "target": 0.05, "min_samples": 10},
    "on_time_install": {"direction": "higher", "target": 0.90, "min_samples": 10},
    "order_to_install": {"direction": "lower", "target": 604800.0, "min_samples": 10},
    "scheduled_to_install": {"direction": "lower", "target": 259200.0, "min_samples": 10},
    "escalation_rate": {"direction": "lower", "target": 0.15, "min_samples": 20},
    "good_escalation_ratio": {"direction": "higher", "target": 0.85, "min_samples": 10},
    "escalation_review_agreement": {"direction": "higher", "target": 0.90, "min_samples": 10},
    "detractor_follow_up": {"direction": "higher", "target": 0.90, "min_samples": 5},
    "watermelon_share": {"direction": "lower", "target": 0.15, "min_samples": 10},
    "rescued_share": {"direction": "higher", "target": 0.50, "min_samples": 10},
    "proactive_share": {"direction": "higher", "target": 0.03, "min_samples": 20},
    "survey_coverage": {"direction": "higher", "target": 0.40, "min_samples": 20},
    "csat": {"direction": "higher", "target": 4.2, "min_samples": 10},
    "xla": {"direction": "higher", "target": 8.0, "min_samples": 10},
    "reopen_rate": {"direction": "lower", "target": 0.05, "min_samples": 20},
    "first_contact_resolution": {"direction": "higher", "target": 0.70, "min_samples": 20},
    "truck_roll_rate": {"direction": "lower", "target": 0.20, "min_samples": 20},
}

ATTAINMENT_CAP = 10.0


# --------------------------------------------------------------------------------------------
# Time parsing
# --------------------------------------------------------------------------------------------

_RFC3339 = re.compile(
    r"^(\d{4})-(\d{2})-(\d{2})[Tt ](\d{2}):(\d{2}):(\d{2})(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$"
)
_DATE_ONLY = re.compile(r"^(\d{4})-(\d{2})-(\d{2})$")
_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()


def _offset_ms(offset: str) -> int:
    """Return the UTC offset of an RFC 3339 offset string ("Z", "+02:00", ...) in ms."""
    if offset in ("Z", "z"):
        return 0
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = int(offset[1:3]), int(offset[4:6])
    return sign * (hours * HOUR_MS + minutes * MINUTE_MS)


def _parse_rfc3339(ts: str) -> tuple[int, int]:
    """Parse an RFC 3339 date-time with offset; return (epoch ms, offset ms).

    Fractional seconds beyond the millisecond are truncated (digits are cut, never rounded).
    """
    m = _RFC3339.match(ts)
    if m is None:
        raise ValueError(f"not an RFC 3339 date-time with offset: {ts!r}")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    frac = m.group(7)
    millis = int((frac[1:] + "000")[:3]) if frac else 0
    days = date(year, month, day).toordinal() - _EPOCH_ORDINAL
    local_ms = days * DAY_MS + hour * HOUR_MS + minute * MINUTE_MS + second * SECOND_MS + millis
    offset = _offset_ms(m.group(8))
    return local_ms - offset, offset


def to_ms(ts: str | int) -> int:
    """Convert an event ``ts`` (RFC 3339 string with offset, or int epoch ms) to epoch ms."""
    if isinstance(ts, int) and not isinstance(ts, bool):
        return ts
    if isinstance(ts, str):
        return _parse_rfc3339(ts)[0]
    raise TypeError(f"unsupported ts: {ts!r}")


def local_date(ts: str | int) -> date:
    """Calendar date of ``ts`` in the UTC offset written in it (UTC for epoch ms)."""
    if isinstance(ts, str):
        ms, offset = _parse_rfc3339(ts)
    else:
        ms, offset = to_ms(ts), 0
    return date.fromordinal(_EPOCH_ORDINAL + (ms + offset) // DAY_MS)


# --------------------------------------------------------------------------------------------
# Windows
# --------------------------------------------------------------------------------------------


def in_window(t_ms: int, now_ms: int, window: str) -> bool:
    """True iff bucket(now) - L/R < bucket(t) <= bucket(now) for the given window."""
    length, res = WINDOWS[window]
    now_bucket = now_ms // res
    return now_bucket - length // res < t_ms // res <= now_bucket


# --------------------------------------------------------------------------------------------
# Acceptance: duplicates and late events
# --------------------------------------------------------------------------------------------


def accepted_events(events: list[TopicEvent]) -> list[TopicEvent]:
    """Return the events that are accepted, in arrival order.

    An event is ignored if an event with the same (partner_id, event_id) was already
    accepted, or if it is late: hour_bucket(ts) <= hour_bucket(now_at_arrival) - 720, where
    now_at_arrival is the largest ts of the SAME PARTNER's events accepted before it (no event
    is late while nothing of its partner has been accepted yet). Ignored events do not advance
    ``now``.
    """
    accepted: list[TopicEvent] = []
    seen: set[tuple[str, str]] = set()
    newest: dict[str, int] = {}  # partner -> largest ts of its events accepted so far
    for topic, ev in events:
        key = (ev["partner_id"], ev["event_id"])
        if key in seen:
            continue
        ts = to_ms(ev["ts"])
        own = newest.get(ev["partner_id"])
        if own is not None and ts // HOUR_MS <= own // HOUR_MS - LATE_HOUR_BUCKETS:
            continue
        accepted.append((topic, ev))
        seen.add(key)
        newest[ev["partner_id"]] = ts if own is None else max(own, ts)
    return accepted


# --------------------------------------------------------------------------------------------
# Helpers over the accepted events
# --------------------------------------------------------------------------------------------


def _is_true(ev: Event, field: str) -> bool:
    """Field filter ``field == true``: present and JSON true."""
    return field in ev and ev[field] is True


def _earliest(evs: list[Event]) -> Event | None:
    """Event with the smallest ts; ties -> first in list (arrival) order."""
    best: Event | None = None
    for ev in evs:
        if best is None or to_ms(ev["ts"]) < to_ms(best["ts"]):
            best = ev
    return best


def _latest(evs: list[Event]) -> Event | None:
    """Event with the largest ts; ties -> last in list (arrival) order."""
    best: Event | None = None
    for ev in evs:
        if best is None or to_ms(ev["ts"]) >= to_ms(best["ts"]):
            best = ev
    return best


def _select(accepted: list[TopicEvent], topic: str, types: tuple[str, ...]) -> list[Event]:
    """All accepted events of ``topic`` whose type is in ``types`` (arrival order)."""
    return [ev for tp, ev in accepted if tp == topic and ev["type"] in types]


def _group(evs: list[Event], id_field: str) -> dict[tuple[str, str], list[Event]]:
    """Group events by (partner_id, entity id), keeping arrival order inside each group."""
    groups: dict[tuple[str, str], list[Event]] = {}
    for ev in evs:
        groups.setdefault((ev["partner_id"], ev[id_field]), []).append(ev)
    return groups


def _always(ev: Event) -> bool:
    return True


# --------------------------------------------------------------------------------------------
# Sample extraction per KPI kind. A "sample" is (time_ms, value).
# --------------------------------------------------------------------------------------------

Sample = tuple[int, float]
PartnerSamples = dict[str, list[Sample]]


# --------------------------------------------------------------------------------------------
# Business hours and pauses (catalogs with ``clock: business`` / ``pause_on``)
# --------------------------------------------------------------------------------------------

QUARTER_MS = 15 * MINUTE_MS


@dataclass(frozen=True)
class RefCalendar:
    """Working hours as a test writes them down: per weekday (Monday 0) the working minutes
    after local midnight as ``(from, to)`` pairs, on quarter hours, and the holidays by date.

    Its working time is counted a quarter of an hour at a time: every UTC quarter hour lies
    wholly inside or outside working time (zone offsets and the test's spans are whole quarter
    hours, clocks change on whole hours), so asking the local time at each quarter's start is
    exact; the partial quarters at both ends count by the same rule."""

    zone: str
    spans: dict[int, list[tuple[int, int]]]
    holidays: frozenset[date]

    def working(self, at_ms: int) -> bool:
        local = datetime.fromtimestamp(at_ms / 1000, ZoneInfo(self.zone))
        minute = local.hour * 60 + local.minute
        return local.date() not in self.holidays and any(
            a <= minute < b for a, b in self.spans.get(local.weekday(), []))

    def working_ms(self, start_ms: int, end_ms: int) -> int:
        total = 0
        t = start_ms
        while t < end_ms:
            block_end = min(end_ms, (t // QUARTER_MS + 1) * QUARTER_MS)
            if self.working(t):
                total += block_end - t
            t = block_end
        return total


@dataclass(frozen=True)
class Clocks:
    """Which ticket KPIs count business time (each partner's calendar) and which pause while a
    ticket is ``pending`` until a later ``resumed``. Empty: the default catalog (calendar time,
    no pauses)."""

    business: frozenset[str] = frozenset()
    paused: frozenset[str] = frozenset()
    calendars: dict[str, RefCalendar] | None = None
    """partner -> its calendar (every partner of a test with business KPIs has one)."""


CLOCKS = Clocks()
"""The clocks the reference computes with: set by the tests of a business-hours catalog (and
put back) through :func:`using_clocks`."""


class using_clocks:  # a lower-case name: read as ``with using_clocks(...):``
    def __init__(self, clocks: Clocks) -> None:
        self.clocks = clocks

    def __enter__(self) -> Clocks:
        global CLOCKS
        self.saved, CLOCKS = CLOCKS, self.clocks
        return self.clocks

    def __exit__(self, *exc: object) -> None:
        global CLOCKS
        CLOCKS = self.saved


def _waits(accepted: list[TopicEvent]) -> dict[tuple[str, str], list[tuple[int, str]]]:
    """(partner, ticket) -> its pending and resumed events as (time, type)."""
    out: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for ev in _select(accepted, "tickets", ("pending", "resumed")):
        out.setdefault((ev["partner_id"], ev["ticket_id"]), []).append((to_ms(ev["ts"]), ev["type"]))
    return out


def _is_paused(waits: list[tuple[int, str]], at_ms: int) -> bool:
    """Whether the clock stands at ``at_ms``: some pending at or before it with no resumed
    after that pending and at or before ``at_ms``."""
    return any(kind == "pending" and p <= at_ms
               and not any(k == "resumed" and p < r <= at_ms for r, k in waits)
               for p, kind in waits)


def ticket_clock_ms(kpi_id: str, partner: str, waits: list[tuple[int, str]], start_ms: int,
                    end_ms: int) -> tuple[int, int]:
    """(counted, paused) ms of a ticket KPI's duration from ``start_ms`` to ``end_ms``, on its
    clock: the pieces between consecutive wait events are each paused or not throughout."""
    calendar = (CLOCKS.calendars or {}).get(partner) if kpi_id in CLOCKS.business else None

    def clock(a: int, b: int) -> int:
        return calendar.working_ms(a, b) if calendar is not None else b - a

    if end_ms <= start_ms:
        return 0, 0
    if kpi_id not in CLOCKS.paused or not waits:
        return clock(start_ms, end_ms), 0
    cuts = sorted({start_ms, end_ms, *(t for t, _ in waits if start_ms < t < end_ms)})
    counted = paused = 0
    for a, b in itertools.pairwise(cuts):
        if _is_paused(waits, a):
            paused += clock(a, b)
        else:
            counted += clock(a, b)
    return counted, paused


def _duration_samples(
    accepted: list[TopicEvent],
    topic: str,
    id_field: str,
    start_type: str,
    start_filter: Any,
    stop_types: tuple[str, ...],
    success_type: str | None = None,
    within_s: float | None = None,
    kpi_id: str | None = None,
) -> PartnerSamples:
    """Duration samples per partner.

    Per entity: start = earliest start event passing ``start_filter``, stop = earliest event
    of any of ``stop_types``. A sample exists iff both exist and stop_ts >= start_ts; its time
    is stop_ts. Value = seconds, or (share_within) 1/0 = success type and duration <= T.
    """
    out: PartnerSamples = {}
    evs = _select(accepted, topic, (start_type, *stop_types))
    waits = _waits(accepted) if kpi_id is not None else {}
    for (partner, entity), group in _group(evs, id_field).items():
        start = _earliest([e for e in group if e["type"] == start_type and start_filter(e)])
        stop = _earliest([e for e in group if e["type"] in stop_types])
        if start is None or stop is None:
            continue
        start_ts, stop_ts = to_ms(start["ts"]), to_ms(stop["ts"])
        if stop_ts < start_ts:
            continue
        seconds = (stop_ts - start_ts) / 1000
        if kpi_id is not None:  # a ticket KPI: on its clock, less its pauses
            seconds = ticket_clock_ms(kpi_id, partner, waits.get((partner, entity), []),
                                      start_ts, stop_ts)[0] / 1000
        if within_s is None:
            value = seconds
        else:
            value = 1.0 if stop["type"] == success_type and seconds <= within_s else 0.0
        out.setdefault(partner, []).append((stop_ts, value))
    return out


def _counter_times(
    accepted: list[TopicEvent],
    topic: str,
    type_: str,
    filt: Any,
    distinct_field: str | None,
) -> dict[str, list[int]]:
    """Times at which a ratio counter counts, per partner.

    Without distinct, every matching accepted event counts at its own ts. With distinct,
    each entity counts once, at the ts of its earliest matching event.
    """
    out: dict[str, list[int]] = {}
    matching = [e for e in _select(accepted, topic, (type_,)) if filt(e)]
    if distinct_field is None:
        for ev in matching:
            out.setdefault(ev["partner_id"], []).append(to_ms(ev["ts"]))
    else:
        for (partner, _entity), group in _group(matching, distinct_field).items():
            first = _earliest(group)
            assert first is not None
            out.setdefault(partner, []).append(to_ms(first["ts"]))
    return out


def _mean_field_samples(accepted: list[TopicEvent], kind: str) -> PartnerSamples:
    """surveys.response[kind=...] score, each at its own ts."""
    out: PartnerSamples = {}
    for ev in _select(accepted, "surveys", ("response",)):
        if ev.get("kind") == kind:
            out.setdefault(ev["partner_id"], []).append((to_ms(ev["ts"]), float(ev["score"])))
    return out


def _follow_up_samples(accepted: list[TopicEvent]) -> PartnerSamples:
    """fai_rate: per order, sample at earliest install; 1 iff a tickets.opened with that
    order_id has install_ts < ts <= install_ts + 30 days."""
    out: PartnerSamples = {}
    opened = [e for e in _select(accepted, "tickets", ("opened",)) if "order_id" in e]
    installs = _select(accepted, "orders", ("installed",))
    for (partner, order_id), group in _group(installs, "order_id").items():
        first = _earliest(group)
        assert first is not None
        install_ts = to_ms(first["ts"])
        hit = any(
            e["partner_id"] == partner
            and e["order_id"] == order_id
            and install_ts < to_ms(e["ts"]) <= install_ts + FAI_HORIZON_MS
            for e in opened
        )
        out.setdefault(partner, []).append((install_ts, 1.0 if hit else 0.0))
    return out


def _deadline_samples(accepted: list[TopicEvent]) -> PartnerSamples:
    """on_time_install: per order with >= 1 scheduled event, sample at earliest install."""
    out: PartnerSamples = {}
    evs = _select(accepted, "orders", ("scheduled", "installed"))
    for (partner, _order_id), group in _group(evs, "order_id").items():
        install = _earliest([e for e in group if e["type"] == "installed"])
        schedule = _latest([e for e in group if e["type"] == "scheduled"])
        if install is None or schedule is None:
            continue
        due = schedule["due_date"]
        m = _DATE_ONLY.match(due)
        if m is not None:
            due_day = date(int(m.group(1)), int(m.group(2)), int(m.group(3)))
            met = local_date(install["ts"]) <= due_day
        else:
            met = to_ms(install["ts"]) <= to_ms(due)
        out.setdefault(partner, []).append((to_ms(install["ts"]), 1.0 if met else 0.0))
    return out


# --------------------------------------------------------------------------------------------
# The default catalog
# --------------------------------------------------------------------------------------------


def _severity(sev: str) -> Any:
    return lambda ev: ev.get("severity") == sev


def _good_escalation(ev: Event) -> bool:
    return _is_true(ev, "documented") and ev.get("kb_article") is None


@functools.lru_cache(maxsize=1024)
def partner_target(partner: str, kpi_id: str) -> float:
    """The partner's target of a default KPI, read from config/partners.yaml: the partner's own
    override, else its tier's (``default_tier`` for a partner not listed), else the default."""
    doc = yaml.safe_load((CONFIG / "partners.yaml").read_text())
    listed = {p["id"]: p for p in doc["partners"]}
    entry = listed.get(partner, {})
    tier = entry.get("tier", doc["default_tier"])
    for targets in (entry.get("targets", {}), doc["tiers"].get(tier, {}).get("targets", {})):
        if kpi_id in targets:
            return float(targets[kpi_id])
    return float(DEFAULT_KPIS[kpi_id]["target"])


SLA_KPIS = ("ots_down_hard", "ots_service_affecting", "mttr")


def _sla_experience_samples(accepted: list[TopicEvent]) -> tuple[PartnerSamples, PartnerSamples]:
    """(watermelon_share, rescued_share) samples, per ticket with a csat answer (``ticket_id``).

    Experience: the earliest csat answer; good iff its score >= 4 (at a tie of instants, any poor
    answer makes it poor). SLA, from the same durations as the KPIs (earliest start passing the
    severity filter, earliest stop): each of ots_down_hard / ots_service_affecting / mttr whose
    start exists on the ticket must have its stop (else no sample yet); stops before starts do
    not count; at least one duration must exist; met iff every duration <= the partner's target.
    watermelon: SLA met, 1 iff poor; rescued: SLA missed, 1 iff good; at the earliest answer.
    """
    answers: dict[tuple[str, str], list[tuple[int, bool]]] = {}
    for ev in _select(accepted, "surveys", ("response",)):
        score = ev.get("score")
        if (ev.get("kind") == "csat" and isinstance(ev.get("ticket_id"), str)
                and isinstance(score, int | float) and not isinstance(score, bool)):
            answers.setdefault((ev["partner_id"], ev["ticket_id"]), []).append(
                (to_ms(ev["ts"]), score >= 4))
    starts = {"ots_down_hard": ("opened", _severity("down_hard"), ("contacted",)),
              "ots_service_affecting": ("opened", _severity("service_affecting"), ("contacted",)),
              "mttr": ("opened", _always, ("resolved",))}
    tickets = _group(_select(accepted, "tickets", ("opened", "contacted", "resolved")), "ticket_id")
    waits = _waits(accepted)
    melon: PartnerSamples = {}
    rescued: PartnerSamples = {}
    for (partner, tid), given in answers.items():
        at = min(t for t, _ in given)
        happy = all(good for t, good in given if t == at)
        group = tickets.get((partner, tid), [])
        durations: list[tuple[str, float]] = []
        known = True
        for kpi_id in SLA_KPIS:
            start_type, filt, stops = starts[kpi_id]
            start = _earliest([e for e in group if e["type"] == start_type and filt(e)])
            if start is None:
                continue
            stop = _earliest([e for e in group if e["type"] in stops])
            if stop is None:
                known = False
                break
            if to_ms(stop["ts"]) < to_ms(start["ts"]):
                continue
            durations.append((kpi_id, ticket_clock_ms(
                kpi_id, partner, waits.get((partner, tid), []), to_ms(start["ts"]),
                to_ms(stop["ts"]))[0] / 1000))
        if not known or not durations:
            continue
        met = all(seconds <= partner_target(partner, kpi_id) for kpi_id, seconds in durations)
        if met:
            melon.setdefault(partner, []).append((at, 0.0 if happy else 1.0))
        else:
            rescued.setdefault(partner, []).append((at, 1.0 if happy else 0.0))
    return melon, rescued


DETRACTOR_HORIZON_MS = DAY_MS


def _detractor_samples(accepted: list[TopicEvent]) -> PartnerSamples:
    """detractor_follow_up: per ticket with a csat response scored below 4, from its earliest
    such response (start): counted when decided (:func:`_decided`), 1 iff a tickets.follow_up of
    that ticket has start < ts <= start + 24 h."""
    starts: dict[tuple[str, str], int] = {}
    for ev in _select(accepted, "surveys", ("response",)):
        score = ev.get("score")
        if (ev.get("kind") == "csat" and isinstance(ev.get("ticket_id"), str)
                and isinstance(score, int | float) and not isinstance(score, bool) and score < 4):
            key = (ev["partner_id"], ev["ticket_id"])
            starts[key] = min(to_ms(ev["ts"]), starts.get(key, to_ms(ev["ts"])))
    follows: dict[tuple[str, str], list[int]] = {}
    for ev in _select(accepted, "tickets", ("follow_up",)):
        follows.setdefault((ev["partner_id"], ev["ticket_id"]), []).append(to_ms(ev["ts"]))
    out: PartnerSamples = {}
    for (partner, tid), start in starts.items():
        out.setdefault(partner, []).append(
            _decided(start, follows.get((partner, tid), []), DETRACTOR_HORIZON_MS))
    return out


def _decided(start: int, follows: list[int], horizon_ms: int) -> Sample:
    """``count_at: decision``: (first follow in (start, start + horizon], 1), else (start +
    horizon, 0); windows hold a sample only once its time has come."""
    hits = [t for t in follows if start < t <= start + horizon_ms]
    return (min(hits), 1.0) if hits else (start + horizon_ms, 0.0)


SURVEY_HORIZON_MS = 7 * DAY_MS


def _survey_coverage_samples(accepted: list[TopicEvent]) -> PartnerSamples:
    """survey_coverage: per resolved ticket, from its earliest resolution (start): counted when
    decided (:func:`_decided`), 1 iff a csat response with that ticket_id (same partner) has
    start < ts <= start + 7 days."""
    answers: dict[tuple[str, str], list[int]] = {}
    for ev in _select(accepted, "surveys", ("response",)):
        if ev.get("kind") == "csat" and isinstance(ev.get("ticket_id"), str):
            answers.setdefault((ev["partner_id"], ev["ticket_id"]), []).append(to_ms(ev["ts"]))
    out: PartnerSamples = {}
    for (partner, tid), group in _group(_select(accepted, "tickets", ("resolved",)),
                                        "ticket_id").items():
        first = _earliest(group)
        assert first is not None
        start = to_ms(first["ts"])
        out.setdefault(partner, []).append(
            _decided(start, answers.get((partner, tid), []), SURVEY_HORIZON_MS))
    return out


def _escalation_reviews(accepted: list[TopicEvent]) -> tuple[PartnerSamples, PartnerSamples]:
    """(good_escalation_ratio, escalation_review_agreement) samples, per escalated ticket.

    The escalation is the ticket's earliest ``escalated`` event; the partner claims it good when
    an escalated event at that ts is documented without a KB article. Its verdict is that of the
    latest ``escalation_reviewed`` event (a bad one wins a tie). good_escalation_ratio: 1 iff the
    verdict (or, unreviewed, the claim) is good, at the escalation's ts. Agreement: reviewed
    tickets only, 1 iff verdict and claim agree, at the latest review's ts.
    """
    good: PartnerSamples = {}
    agree: PartnerSamples = {}
    evs = _select(accepted, "tickets", ("escalated", "escalation_reviewed"))
    for (partner, _tid), group in _group(evs, "ticket_id").items():
        hops = [e for e in group if e["type"] == "escalated"]
        if not hops:
            continue
        first_ts = min(to_ms(e["ts"]) for e in hops)
        claim = any(_good_escalation(e) for e in hops if to_ms(e["ts"]) == first_ts)
        reviews = [e for e in group if e["type"] == "escalation_reviewed"]
        verdict: bool | None = None
        if reviews:
            last_ts = max(to_ms(e["ts"]) for e in reviews)
            verdict = all(e["verdict"] == "good" for e in reviews if to_ms(e["ts"]) == last_ts)
            agree.setdefault(partner, []).append((last_ts, 1.0 if verdict == claim else 0.0))
        outcome = claim if verdict is None else verdict
        good.setdefault(partner, []).append((first_ts, 1.0 if outcome else 0.0))
    return good, agree


def _sample_kpis(accepted: list[TopicEvent]) -> dict[str, tuple[str, PartnerSamples]]:
    """kpi id -> (statistic, samples per partner) for every non-ratio default KPI."""
    ots_dh = _duration_samples(
        accepted, "tickets", "ticket_id", "opened", _severity("down_hard"), ("contacted",),
        kpi_id="ots_down_hard",
    )
    good_escalation, review_agreement = _escalation_reviews(accepted)
    melon, rescued = _sla_experience_samples(accepted)
    return {
        "good_escalation_ratio": ("mean", good_escalation),
        "detractor_follow_up": ("mean", _detractor_samples(accepted)),
        "watermelon_share": ("mean", melon),
        "rescued_share": ("mean", rescued),
        "survey_coverage": ("mean", _survey_coverage_samples(accepted)),
        "escalation_review_agreement": ("mean", review_agreement),
        "ots_down_hard": ("mean", ots_dh),
        "ots_service_affecting": (
            "mean",
            _duration_samples(
                accepted,
                "tickets",
                "ticket_id",
                "opened",
                _severity("service_affecting"),
                ("contacted",),
                kpi_id="ots_service_affecting",
            ),
        ),
        "ots_down_hard_p90": ("p90", ots_dh),
        "asa": (
            "mean",
            _duration_samples(accepted, "calls", "call_id", "queued", _always, ("answered",)),
        ),
        "service_level": (
            "mean",
            _duration_samples(
                accepted,
                "calls",
                "call_id",
                "queued",
                _always,
                ("answered", "abandoned"),
                success_type="answered",
                within_s=60,
            ),
        ),
        "mttr": (
            "mean",
            _duration_samples(accepted, "tickets", "ticket_id", "opened", _always, ("resolved",),
                              kpi_id="mttr"),
        ),
        "order_to_install": (
            "mean",
            _duration_samples(accepted, "orders", "order_id", "ordered", _always, ("installed",)),
        ),
        "scheduled_to_install": (
            "mean",
            _duration_samples(accepted, "orders", "order_id", "scheduled", _always,
                              ("installed",)),
        ),
        "fai_rate": ("mean", _follow_up_samples(accepted)),
        "on_time_install": ("mean", _deadline_samples(accepted)),
        "csat": ("mean", _mean_field_samples(accepted, "csat")),
        "xla": ("mean", _mean_field_samples(accepted, "xla")),
    }


def _ratio_kpis(
    accepted: list[TopicEvent],
) -> dict[str, tuple[dict[str, list[int]], dict[str, list[int]]]]:
    """kpi id -> (numerator times per partner, denominator times per partner)."""

    def c(topic: str, type_: str, filt: Any, distinct: str | None) -> dict[str, list[int]]:
        return _counter_times(accepted, topic, type_, filt, distinct)

    resolved = c("tickets", "resolved", _always, "ticket_id")
    return {
        "abandon_rate": (
            c("calls", "abandoned", _always, "call_id"),
            c("calls", "queued", _always, "call_id"),
        ),
        "escalation_rate": (
            c("tickets", "escalated", _always, "ticket_id"),
            c("tickets", "opened", _always, "ticket_id"),
        ),
        "proactive_share": (
            c("tickets", "opened", lambda e: e.get("channel") == "proactive", "ticket_id"),
            c("tickets", "opened", _always, "ticket_id"),
        ),
        "reopen_rate": (c("tickets", "reopened", _always, "ticket_id"), resolved),
        "first_contact_resolution": (
            c("tickets", "resolved", lambda e: _is_true(e, "first_contact"), "ticket_id"),
            resolved,
        ),
        "truck_roll_rate": (
            c("tickets", "resolved", lambda e: _is_true(e, "truck_roll"), "ticket_id"),
            resolved,
        ),
    }


# --------------------------------------------------------------------------------------------
# Public API
# --------------------------------------------------------------------------------------------


@dataclass
class KpiResult:
    """Exported value of one partner x kpi x window."""

    value: float
    samples: int


def p90_nearest_rank(values: list[float]) -> float:
    """Nearest-rank p90: sorted ascending, element index ceil(0.9 * n) - 1."""
    ordered = sorted(values)
    n = len(ordered)
    index = -((-9 * n) // 10) - 1  # ceil(9n/10) - 1 in exact integer arithmetic
    return ordered[index]


def compute(
    events: list[TopicEvent],
    now_ms: int | None = None,
) -> dict[tuple[str, str, str], KpiResult]:
    """Compute every default KPI for every partner and window.

    ``events`` are (topic, event) pairs in arrival order (assumed valid per the contract).
    ``now_ms`` defaults to the event clock: the largest ts of the accepted events.
    Returns (partner_id, kpi_id, window) -> KpiResult, only for keys with samples > 0.
    """
    accepted = accepted_events(events)
    if now_ms is None:
        if not accepted:
            return {}
        now_ms = max(to_ms(ev["ts"]) for _, ev in accepted)

    results: dict[tuple[str, str, str], KpiResult] = {}
    for kpi_id, (stat, per_partner) in _sample_kpis(accepted).items():
        for partner, samples in per_partner.items():
            for window in DEFAULT_KPIS[kpi_id].get("windows", WINDOWS):
                values = [v for t, v in samples if in_window(t, now_ms, window)]
                if not values:
                    continue
                mean = sum(values) / len(values)
                value = p90_nearest_rank(values) if stat == "p90" else mean
                results[(partner, kpi_id, window)] = KpiResult(value, len(values))

    for kpi_id, (num, den) in _ratio_kpis(accepted).items():
        for partner, den_times in den.items():
            for window in WINDOWS:
                d = sum(1 for t in den_times if in_window(t, now_ms, window))
                if d == 0:
                    continue
                n = sum(1 for t in num.get(partner, []) if in_window(t, now_ms, window))
                results[(partner, kpi_id, window)] = KpiResult(n / d, d)
    return results


def month_of(t_ms: int, zone: str = "UTC") -> str:
    """'YYYY-MM' of the instant in the zone's calendar."""
    local = datetime.fromtimestamp(t_ms / 1000, ZoneInfo(zone))
    return f"{local.year:04d}-{local.month:02d}"


def compute_months(
    events: list[TopicEvent], zone: str = "UTC",
) -> dict[tuple[str, str, str], KpiResult]:
    """Every default KPI per partner and calendar month of ``zone``: (partner, kpi, 'YYYY-MM').

    A sample counts in the month of its time (the same instant that places it in a window).
    """
    return compute_groups(events, lambda month: month, zone)


def compute_groups(
    events: list[TopicEvent], group: Callable[[str], str | None], zone: str = "UTC",
) -> dict[tuple[str, str, str], KpiResult]:
    """Every default KPI per partner over groups of calendar months: (partner, kpi, group), where
    ``group`` names the group of a month ('YYYY-MM'; None leaves its samples out). A quarter's
    value is then its samples together, as a year card's period value must be."""
    accepted = accepted_events(events)
    results: dict[tuple[str, str, str], KpiResult] = {}
    for kpi_id, (stat, per_partner) in _sample_kpis(accepted).items():
        for partner, samples in per_partner.items():
            by_group: dict[str, list[float]] = {}
            for t, v in samples:
                name = group(month_of(t, zone))
                if name is not None:
                    by_group.setdefault(name, []).append(v)
            for name, values in by_group.items():
                value = p90_nearest_rank(values) if stat == "p90" else sum(values) / len(values)
                results[(partner, kpi_id, name)] = KpiResult(value, len(values))
    for kpi_id, (num, den) in _ratio_kpis(accepted).items():
        for partner, den_times in den.items():
            dens: dict[str, int] = {}
            for t in den_times:
                name = group(month_of(t, zone))
                if name is not None:
                    dens[name] = dens.get(name, 0) + 1
            for name, d in dens.items():
                n = sum(1 for t in num.get(partner, []) if group(month_of(t, zone)) == name)
                results[(partner, kpi_id, name)] = KpiResult(n / d, d)
    return results


def attainment(kpi_id: str, value: float, target: float) -> float:
    """value/target (higher better) or target/value (lower better; value 0 -> cap), capped."""
    direction = DEFAULT_KPIS[kpi_id]["direction"]
    if direction == "higher":
        return min(value / target, ATTAINMENT_CAP)
    if value == 0:
        return ATTAINMENT_CAP
    return min(target / value, ATTAINMENT_CAP)


def expected_targets(partners: Iterable[str]) -> dict[tuple[str, str], float]:
    """Targets resolved from the YAML files by the test itself (partner > tier > default)."""
    kpis = yaml.safe_load((CONFIG / "kpis.yaml").read_text())["kpis"]
    spec = yaml.safe_load((CONFIG / "partners.yaml").read_text())
    tiers = {p["id"]: p["tier"] for p in spec["partners"]}
    own = {p["id"]: p.get("targets", {}) for p in spec["partners"]}
    out = {}
    for partner in partners:
        tier = tiers.get(partner, spec["default_tier"])
        tier_targets = spec["tiers"].get(tier, {}).get("targets", {})
        for kpi in kpis:
            out[(partner, kpi["id"])] = float(
                own.get(partner, {}).get(kpi["id"], tier_targets.get(kpi["id"], kpi["target"])))
    return out


# --------------------------------------------------------------------------------------------
# Per-channel values (KPIs declared ``by: [channel]``)
# --------------------------------------------------------------------------------------------

#: KPIs kept per channel in the default catalog, and the windows their per-channel values are in
#: (calendar months: all of them).
CHANNEL_KPIS = ("ots_down_hard", "ots_service_affecting", "ots_down_hard_p90", "mttr",
                "first_contact_resolution", "csat")
CHANNEL_WINDOWS = ("24h", "30d")

ChannelKey = tuple[str, str]
"""(partner, channel)"""


def _ticket_channels(accepted: list[TopicEvent]) -> dict[tuple[str, str], str]:
    """(partner, ticket) -> the channel of its earliest ``opened`` event (ties: the first
    accepted), for tickets whose earliest opened event names one."""
    out: dict[tuple[str, str], str] = {}
    for key, group in _group(_select(accepted, "tickets", ("opened",)), "ticket_id").items():
        first = _earliest(group)
        if first is not None and isinstance(first.get("channel"), str):
            out[key] = first["channel"]
    return out


def _ticket_durations(accepted: list[TopicEvent], start_filter: Any, stop_type: str,
                      kpi_id: str) -> dict[tuple[str, str], Sample]:
    """(partner, ticket) -> (stop time, seconds on the KPI's clock) from its earliest matching
    opened event to its earliest ``stop_type`` event, where stop >= start."""
    out: dict[tuple[str, str], Sample] = {}
    evs = _select(accepted, "tickets", ("opened", stop_type))
    waits = _waits(accepted)
    for key, group in _group(evs, "ticket_id").items():
        start = _earliest([e for e in group if e["type"] == "opened" and start_filter(e)])
        stop = _earliest([e for e in group if e["type"] == stop_type])
        if start is None or stop is None or to_ms(stop["ts"]) < to_ms(start["ts"]):
            continue
        ms = ticket_clock_ms(kpi_id, key[0], waits.get(key, []), to_ms(start["ts"]),
                             to_ms(stop["ts"]))[0]
        out[key] = (to_ms(stop["ts"]), ms / 1000)
    return out


def _channel_split(per_ticket: dict[tuple[str, str], list[Sample]],
                   channels: dict[tuple[str, str], str]) -> dict[ChannelKey, list[Sample]]:
    out: dict[ChannelKey, list[Sample]] = {}
    for (partner, ticket), samples in per_ticket.items():
        channel = channels.get((partner, ticket))
        if channel is not None:
            out.setdefault((partner, channel), []).extend(samples)
    return out


def _channel_samples(accepted: list[TopicEvent]) -> dict[str, tuple[str, dict[ChannelKey, list[Sample]]]]:
    """kpi id -> (statistic, samples per (partner, channel)): each ticket's samples under the
    channel of its ticket; csat answers under the channel of the ticket their ticket_id names."""
    channels = _ticket_channels(accepted)
    dh = _ticket_durations(accepted, _severity("down_hard"), "contacted", "ots_down_hard")
    sa = _ticket_durations(accepted, _severity("service_affecting"), "contacted",
                           "ots_service_affecting")
    repair = _ticket_durations(accepted, _always, "resolved", "mttr")
    # first-contact resolution: per resolved ticket (its earliest resolution), 1 iff it has a
    # resolved event with first_contact true, counted at the earliest such event; the
    # denominator at the earliest resolution (a ratio of distinct tickets)
    fcr: dict[tuple[str, str], list[Sample]] = {}
    for key, group in _group(_select(accepted, "tickets", ("resolved",)), "ticket_id").items():
        first = _earliest(group)
        assert first is not None
        fcr[key] = [(to_ms(first["ts"]), 0.0)]
        hit = _earliest([e for e in group if _is_true(e, "first_contact")])
        if hit is not None:
            fcr[key].append((to_ms(hit["ts"]), 1.0))
    answers: dict[tuple[str, str], list[Sample]] = {}
    for ev in _select(accepted, "surveys", ("response",)):
        if ev.get("kind") == "csat" and isinstance(ev.get("ticket_id"), str):
            answers.setdefault((ev["partner_id"], ev["ticket_id"]), []).append(
                (to_ms(ev["ts"]), float(ev["score"])))
    return {
        "ots_down_hard": ("mean", _channel_split({k: [v] for k, v in dh.items()}, channels)),
        "ots_service_affecting": ("mean", _channel_split({k: [v] for k, v in sa.items()},
                                                         channels)),
        "ots_down_hard_p90": ("p90", _channel_split({k: [v] for k, v in dh.items()}, channels)),
        "mttr": ("mean", _channel_split({k: [v] for k, v in repair.items()}, channels)),
        "first_contact_resolution": ("ratio", _channel_split(fcr, channels)),
        "csat": ("mean", _channel_split(answers, channels)),
    }


def _channel_value(stat: str, samples: list[Sample]) -> KpiResult | None:
    """The value of samples in one window or month; ratio samples are (den 0 | num 1) events."""
    if stat == "ratio":
        den = sum(1 for _, v in samples if v == 0.0)
        num = len(samples) - den
        return KpiResult(num / den, den) if den else None
    values = [v for _, v in samples]
    if not values:
        return None
    value = p90_nearest_rank(values) if stat == "p90" else sum(values) / len(values)
    return KpiResult(value, len(values))


def compute_channels(events: list[TopicEvent], now_ms: int | None = None,
                     ) -> dict[tuple[str, str, str, str], KpiResult]:
    """(partner, kpi id, window, channel) -> value, for the per-channel KPIs in their windows."""
    accepted = accepted_events(events)
    if now_ms is None:
        if not accepted:
            return {}
        now_ms = max(to_ms(ev["ts"]) for _, ev in accepted)
    results: dict[tuple[str, str, str, str], KpiResult] = {}
    for kpi_id, (stat, per_channel) in _channel_samples(accepted).items():
        for (partner, channel), samples in per_channel.items():
            for window in CHANNEL_WINDOWS:
                got = _channel_value(stat, [s for s in samples if in_window(s[0], now_ms, window)])
                if got is not None:
                    results[(partner, kpi_id, window, channel)] = got
    return results


def compute_channel_months(events: list[TopicEvent], zone: str = "UTC",
                           ) -> dict[tuple[str, str, str, str], KpiResult]:
    """(partner, kpi id, 'YYYY-MM', channel) -> value over the calendar month of ``zone``."""
    results: dict[tuple[str, str, str, str], KpiResult] = {}
    for kpi_id, (stat, per_channel) in _channel_samples(accepted_events(events)).items():
        for (partner, channel), samples in per_channel.items():
            for month in {month_of(t, zone) for t, _ in samples}:
                got = _channel_value(stat, [s for s in samples if month_of(s[0], zone) == month])
                if got is not None:
                    results[(partner, kpi_id, month, channel)] = got
    return results


def compute_flat(events: list[TopicEvent], now_ms: int | None = None,
                 ) -> dict[tuple[str, str, str], KpiResult]:
    """:func:`compute` and :func:`compute_channels` as one mapping keyed like the engine's
    ``evaluate``: a per-channel value under (partner, 'kpi@channel', window)."""
    out = dict(compute(events, now_ms))
    for (partner, kpi, window, channel), result in compute_channels(events, now_ms).items():
        out[(partner, f"{kpi}@{channel}", window)] = result
    return out


# --------------------------------------------------------------------------------------------
# The ledger of open tickets (/api/open)
# --------------------------------------------------------------------------------------------

def most_urgent(rows: dict[tuple[str, str, str], OpenRow], partner: str, n: int,
                state: str | None = "urgent") -> tuple[list[tuple[str, str, str]], int]:
    """A partner's rows in ``state`` (``urgent``: at risk or breached, age >= 75% of the
    target; ``breached``: age >= the target; ``at_risk``: between; ``ok``: below 75%; None:
    all): the keys of the ``n`` with the least time left (ties by KPI, then entity id), and
    how many there are."""
    def wanted(row: OpenRow) -> bool:
        risky, over = row.age_ms >= 0.75 * row.target_ms, row.age_ms >= row.target_ms
        return {None: True, "urgent": risky, "breached": over, "at_risk": risky and not over,
                "ok": not risky}[state]

    chosen = [(row.target_ms - row.age_ms, key[1], key[2], key) for key, row in rows.items()
              if key[0] == partner and wanted(row)]
    return [key for *_, key in sorted(chosen)[:n]], len(chosen)


class OpenRow(NamedTuple):
    """A ledger row as the reference derives it."""

    severity: str | None
    opened_ms: int
    age_ms: int
    target_ms: int
    state: str
    paused_ms: int = 0


OPEN_TICKET_KPIS = {"ots_down_hard": "down_hard", "ots_service_affecting": "service_affecting",
                    "mttr": None}
"""The ticket KPIs the ledger lists tickets of, and the severity their start selects (None:
any): the open-to-status ones end at the first contact, mttr at the resolution."""
OPEN_TICKET_STOPS = {"ots_down_hard": "contacted", "ots_service_affecting": "contacted",
                     "mttr": "resolved"}


def open_tickets(events: list[TopicEvent], now_ms: int) -> dict[tuple[str, str, str], OpenRow]:
    """(partner, kpi, ticket) -> the ledger's row for every ticket still waiting for the stop of
    a ticket KPI (first contact; resolution for mttr): its earliest ``opened`` of the KPI's
    severity, and no stop event at all (one stamped before the opening closes it too). State:
    breached once its age reaches the partner's target, at risk from 75% of it."""
    accepted = accepted_events(events)
    out: dict[tuple[str, str, str], OpenRow] = {}
    tickets = _group(_select(accepted, "tickets", ("opened", "contacted", "resolved")),
                     "ticket_id")
    waits = _waits(accepted)
    for (partner, ticket), group in tickets.items():
        for kpi, severity in OPEN_TICKET_KPIS.items():
            if any(e["type"] == OPEN_TICKET_STOPS[kpi] for e in group):
                continue
            start = _earliest([e for e in group if e["type"] == "opened"
                               and (severity is None or e.get("severity") == severity)])
            if start is None:
                continue
            opened = to_ms(start["ts"])
            target_ms = round(partner_target(partner, kpi) * 1000)
            age, paused = ticket_clock_ms(kpi, partner, waits.get((partner, ticket), []), opened,
                                          now_ms)
            state = ("breached" if age >= target_ms
                     else "at_risk" if age * 4 >= target_ms * 3 else "ok")
            out[(partner, kpi, ticket)] = OpenRow(severity, opened, age, target_ms, state, paused)
    return out
