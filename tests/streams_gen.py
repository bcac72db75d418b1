"""Random contract-valid event streams with the awkward cases the engine must get right.

Out-of-order arrival, duplicates (same event_id delivered again), ties, stops before
starts, follow-up tickets arriving before their install, date-only and date-time due
dates with offsets, events spread over more than the largest window. Written for the
tests only; the expected numbers always come from ``tests.reference``.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

DAY = 86_400_000
HOUR = 3_600_000
MINUTE = 60_000
SEVERITIES = ("down_hard", "service_affecting", "question")


def rfc3339(ms: int, offset_h: int) -> str:
    """ms as an RFC 3339 string written in a fixed UTC offset (millisecond precision)."""
    tz = timezone(timedelta(hours=offset_h))
    dt = datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz)
    return dt.isoformat(timespec="milliseconds")


def _hops_and_reviews(rng: random.Random, emit: Any, partner: str, tid: str, escalated: int,
                      hops: bool = True) -> None:
    """More hops of an escalation (one at the same instant with other flags: a tie) and its
    reviews: none, one, or a re-review, sometimes at the same instant with the other verdict,
    sometimes stamped before the escalation (a skewed clock)."""
    if hops and rng.random() < 0.2:
        emit("tickets", partner, "escalated", escalated + rng.choice((0, 0, HOUR)), ticket_id=tid,
             documented=rng.random() < 0.5)
    reviews = rng.choice((0, 1, 1, 1, 2))
    ts = escalated + rng.choice((-MINUTE, 20 * MINUTE, 3 * HOUR, 2 * DAY))
    for _ in range(reviews):
        verdict = rng.choice(("good", "bad"))
        extra: dict[str, Any] = {"reasons": ["kb_solvable"]} if verdict == "bad" else {}
        emit("tickets", partner, "escalation_reviewed", ts, ticket_id=tid, verdict=verdict, **extra)
        ts += rng.choice((0, HOUR))


def _surveys_and_follow_ups(rng: random.Random, emit: Any, partner: str, tid: str,
                            opened: int) -> None:
    """CSAT responses tied to the ticket (stamped before its opening too, sometimes two, some
    poor) and follow-ups of the customer: before the response, within 24 h of it, exactly at
    24 h, past it, or none."""
    if rng.random() < 0.5:
        return
    answered = opened + rng.choice((-HOUR, 0, 30 * MINUTE, 5 * HOUR))
    for _ in range(rng.choice((1, 1, 2))):
        emit("surveys", partner, "response", answered, ticket_id=tid, kind="csat",
             score=rng.choice((1, 2, 3, 3.5, 4, 5)))
        answered += rng.choice((0, HOUR, 2 * DAY))
    for _ in range(rng.choice((0, 1, 1, 2))):
        emit("tickets", partner, "follow_up",
             answered + rng.choice((-HOUR, 0, 2 * HOUR, DAY, DAY + 1, 3 * DAY)), ticket_id=tid)


def _waits(rng: random.Random, emit: Any, partner: str, tid: str, opened: int) -> None:
    """A ticket waiting on its customer: none, one or several ``pending`` events (one stamped
    before the opening, some at the instant of a ``resumed``), each ``resumed`` later, at once,
    before it (a skewed clock), or never; over nights and weekends."""
    if rng.random() < 0.45:
        return
    for _ in range(rng.choice((1, 1, 2, 3))):
        pending = opened + rng.choice((-HOUR, 0, 20 * MINUTE, 3 * HOUR, 9 * HOUR,
                                       rng.randrange(2 * DAY)))
        fields: dict[str, Any] = {"reason": "customer"} if rng.random() < 0.5 else {}
        emit("tickets", partner, "pending", pending, ticket_id=tid, **fields)
        resume = rng.choice((None, 0, -MINUTE, 30 * MINUTE, 5 * HOUR, DAY + 7 * HOUR))
        if resume is not None:
            emit("tickets", partner, "resumed", pending + resume, ticket_id=tid)


def random_events(
    seed: int, partners: list[str], start_ms: int, span_ms: int, n_tickets: int = 60,
    n_calls: int = 80, n_orders: int = 25, n_surveys: int = 40, prefix: str = "",
    pauses: bool = False,
) -> list[tuple[str, dict[str, Any]]]:
    """A shuffled-ish stream of events over ``span_ms`` starting at ``start_ms``; with
    ``pauses``, tickets also wait on their customers (``pending`` and ``resumed`` events)."""
    rng = random.Random(seed)
    pause_rng = random.Random(f"{seed}/pauses")  # the other events stay the same with pauses
    # its own generator, so the events drawn before reviews and follow-ups existed stay the same
    extra_rng = random.Random(f"{seed}/reviews")
    out: list[tuple[str, dict[str, Any]]] = []
    counter = 0

    def ts_value(ms: int) -> int | str:
        return ms if rng.random() < 0.5 else rfc3339(ms, rng.choice((-5, 0, 2, 9)))

    def emit(topic: str, partner: str, etype: str, ms: int, **fields: Any) -> None:
        nonlocal counter
        counter += 1
        event = {"event_id": f"{prefix}{partner}-{counter}", "type": etype, "partner_id": partner,
                 "ts": ts_value(ms), **fields}
        out.append((topic, event))

    for partner in partners:
        orders: list[tuple[str, int]] = []
        for i in range(n_orders):
            oid = f"{prefix}o{i}"
            sched = start_ms + rng.randrange(span_ms)
            due_ms = sched + rng.randrange(2 * DAY)
            due: str = (rfc3339(due_ms, rng.choice((0, 2)))[:10] if rng.random() < 0.5
                        else rfc3339(due_ms, rng.choice((-3, 0, 1))))
            emit("orders", partner, "scheduled", sched, order_id=oid, due_date=due)
            if extra_rng.random() < 0.8:  # the customer's order, days before the booking
                # (within the span: a stream of one window's length has no late events)
                emit("orders", partner, "ordered",
                     sched - extra_rng.randrange(min(4 * DAY, sched - start_ms + 1)),
                     order_id=oid)
            if rng.random() < 0.2:  # a reschedule
                emit("orders", partner, "scheduled", sched + rng.randrange(HOUR), order_id=oid,
                     due_date=rfc3339(due_ms + DAY, 0)[:10])
            if rng.random() < 0.85:
                inst = sched + rng.randrange(3 * DAY)
                emit("orders", partner, "installed", inst, order_id=oid)
                orders.append((oid, inst))
            else:
                emit("orders", partner, "cancelled", sched + HOUR, order_id=oid)
        for i in range(n_tickets):
            tid = f"{prefix}t{i}"
            opened = start_ms + rng.randrange(span_ms)
            extra: dict[str, Any] = {}
            if orders and rng.random() < 0.3:
                oid, inst = rng.choice(orders)
                extra["order_id"] = oid
                # sometimes before the install, sometimes past the 30-day horizon
                opened = inst + rng.choice((-HOUR, MINUTE, 5 * DAY, 29 * DAY, 31 * DAY))
                opened = min(opened, start_ms + span_ms - 10 * HOUR)  # keep the clock in range
            emit("tickets", partner, "opened", opened, ticket_id=tid,
                 severity=rng.choice(SEVERITIES), channel=rng.choice(("phone", "chat", "proactive")),
                 **extra)
            if rng.random() < 0.1:  # a second "opened" for the same ticket
                emit("tickets", partner, "opened", opened + rng.randrange(-HOUR, HOUR),
                     ticket_id=tid, severity="down_hard")
            for _ in range(rng.choice((0, 1, 1, 2))):
                # a contact can even precede the opening (clock skew): no sample then
                emit("tickets", partner, "contacted", opened + rng.randrange(-MINUTE, 6 * HOUR),
                     ticket_id=tid)
            if rng.random() < 0.25:
                esc: dict[str, Any] = {}
                if rng.random() < 0.7:
                    esc["documented"] = rng.random() < 0.8
                if rng.random() < 0.5:
                    esc["kb_article"] = rng.choice((None, "KB-1"))
                escalated = opened + rng.randrange(2 * HOUR)
                emit("tickets", partner, "escalated", escalated, ticket_id=tid, **esc)
                _hops_and_reviews(extra_rng, emit, partner, tid, escalated)
            elif extra_rng.random() < 0.03:  # a review of an escalation never seen
                _hops_and_reviews(extra_rng, emit, partner, tid, opened, hops=False)
            _surveys_and_follow_ups(extra_rng, emit, partner, tid, opened)
            if pauses:
                _waits(pause_rng, emit, partner, tid, opened)
            if rng.random() < 0.8:
                res: dict[str, Any] = {}
                if rng.random() < 0.8:
                    res["first_contact"] = rng.random() < 0.6
                if rng.random() < 0.8:
                    res["truck_roll"] = rng.random() < 0.2
                resolved = opened + rng.randrange(10 * HOUR)
                emit("tickets", partner, "resolved", resolved, ticket_id=tid, **res)
                if rng.random() < 0.1:
                    emit("tickets", partner, "reopened", resolved + HOUR, ticket_id=tid)
                emit("tickets", partner, "closed", resolved + 2 * HOUR, ticket_id=tid)
        for i in range(n_calls):
            cid = f"{prefix}c{i}"
            queued = start_ms + rng.randrange(span_ms)
            emit("calls", partner, "queued", queued, call_id=cid)
            wait = rng.choice((rng.randrange(120_000), 60_000, 59_999, 60_001))
            if rng.random() < 0.1:
                emit("calls", partner, "abandoned", queued + wait, call_id=cid)
            else:
                emit("calls", partner, "answered", queued + wait, call_id=cid)
        for _ in range(n_surveys):
            kind = rng.choice(("csat", "xla"))
            score: float = rng.randint(1, 5) if kind == "csat" else round(rng.uniform(0, 10), 1)
            emit("surveys", partner, "response", start_ms + rng.randrange(span_ms),
                 score=score, kind=kind)
    # Arrival order: mostly by time, with local shuffles and some duplicates re-sent.
    out.sort(key=lambda te: _ms(te[1]["ts"]) + rng.randrange(-2 * HOUR, 2 * HOUR))
    for _ in range(len(out) // 20):
        out.insert(rng.randrange(len(out)), rng.choice(out))
    return out


def _ms(ts: int | str) -> int:
    if isinstance(ts, int):
        return ts
    return int(datetime.fromisoformat(ts).timestamp() * 1000)
