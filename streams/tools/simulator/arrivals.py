"""Arrival streams (one per partner and kind) and which history of a lifecycle a warm start keeps."""

from __future__ import annotations

import math
from typing import Any, Final

from streams.tools.simulator.profiles import (
    BOOKING_MAX_MS,
    CAP_FCR,
    CAP_LEAD,
    CAP_OTS,
    CAP_PATIENCE,
    CAP_WORK,
    ESC_SPAN_MAX_MS,
    FAI_DELAY_MAX_MS,
    FCR_WORK_S,
    FOLLOW_UP_MAX_MS,
    LEAD_S,
    MIN,
    PROFILE_PARAMS,
    SEV_MULT,
    STREAM_CODE,
    SURVEY_MAX_MS,
    TAIL_PLAIN_MS,
    TAIL_REOPEN_MS,
    S,
    SimPartner,
)
from streams.tools.simulator.sequences import (
    ALPHA,
    LN_FCR,
    LN_WORK,
    NDIM,
    NZ,
    O_FAI,
    T_ESC,
    T_FCR,
    T_REOPEN,
    T_W,
    U64,
    digest64,
    mix,
)

Raw = tuple[int, int, str, str, str, str, "dict[str, Any] | None"]
"""One event of a lifecycle before materialisation:
(ts, index in its lifecycle, topic, type, key field, entity id, extra fields)."""


AFTER_RESOLVED_MS: Final = SURVEY_MAX_MS + FOLLOW_UP_MAX_MS
"""How long after its (first) resolution a ticket's survey answers and their follow-up may come."""

_NEEDS_HISTORY: Final = {
    # topic -> event types after start that need the entity's earlier events
    "tickets": frozenset({"contacted", "escalated", "escalation_reviewed", "resolved"}),
    "orders": frozenset({"installed"}),
    "calls": frozenset({"answered", "abandoned"}),
}


def replayed(raw: list[Raw], start: int) -> list[Raw]:
    """The events of a lifecycle that began before ``start`` that exist in the run.

    Events at or after start all exist. Of the history before start only what changes
    how those later events count is kept, and only when they need it: a ticket's opened
    event (durations start there) and the earliest earlier occurrence of a type that
    occurs again after start (contacted, escalated, resolved: "earliest" and "distinct"
    semantics; an escalation is also kept for its review after start, and a ticket's first
    contact and resolution for a survey answer after start, which is held against its SLA);
    an order's scheduled events; a call's queued event; the survey answers a follow-up after
    start was about. So a ticket that was resolved before start and is only closed afterwards
    brings no history along.
    ``raw`` is in creation order, which is chronological per type.
    """
    later = {r[3] for r in raw if r[0] >= start}
    if "escalation_reviewed" in later:  # a review is read against the escalation it judges
        later.add("escalated")
    if "response" in later:  # an answer is read against the ticket's SLA (watermelon)
        later |= {"contacted", "resolved"}
    history = {topic for topic, types in _NEEDS_HISTORY.items() if later & types}
    out: list[Raw] = []
    for r in raw:
        # a follow-up after start is read against the answer it follows
        if r[0] >= start or (r[2] == "surveys" and "follow_up" in later):
            out.append(r)
        elif r[2] in history:
            if r[2] != "tickets" or r[3] == "opened":
                out.append(r)
            elif r[3] in later and r[3] in ("contacted", "escalated", "resolved"):
                later.discard(r[3])  # only the earliest one before start
                out.append(r)
    return out


Entry = tuple[int, int, int, int, int, "list[Raw] | None"]
"""A heap entry: (ts, tie, position in the lifecycle or -1 if not generated yet, stream,
arrival, the generated lifecycle while it is needed in the current call)."""


class Stream:
    """One arrival stream of one partner: regular arrivals, one lifecycle per arrival.

    Ticket streams are anchored at the first contact (the opened event is placed before
    it), so OTS samples arrive at a steady rate and the drifting partner's OTS rises in
    contact time; calls are anchored at queueing, orders at scheduling.
    """

    __slots__ = (
        "after_ms", "before_ms", "code", "fai_off", "hbase", "id_prefix", "idx", "k0", "k_next",
        "kind", "off", "partner", "prm", "spacing",
    )

    def __init__(self, seed: int, tag: str, idx: int, partner: SimPartner, kind: str,
                 per_min: float, warm_start: bool) -> None:
        self.idx = idx
        self.partner = partner
        self.kind = kind  # "tickets", "calls" or "orders"
        self.code = STREAM_CODE[kind]
        self.id_prefix = f"{partner.partner_id}-{tag}-{self.code}"
        self.prm = prm = PROFILE_PARAMS[partner.profile]
        self.spacing = MIN / per_min
        self.hbase = digest64(f"{seed}/{partner.partner_id}/{self.code}")
        self.off = tuple(mix(self.hbase + 101 * (d + 1)) * U64 for d in range(NDIM))
        self.fai_off = tuple(mix(self.hbase + 7919 * (d + 1)) * U64 for d in range(NDIM))
        ots_max = max(prm.ots, prm.ots_end)
        # contacted -> last event of a ticket
        ticket_after = (max(prm.work * CAP_WORK * S, ESC_SPAN_MAX_MS, FCR_WORK_S * CAP_FCR * S)
                        + max(TAIL_REOPEN_MS, AFTER_RESOLVED_MS))
        if kind == "tickets":
            self.before_ms = int(ots_max * max(SEV_MULT.values()) * CAP_OTS * S) + 1
            self.after_ms = int(ticket_after) + 1
        elif kind == "calls":
            self.before_ms = 0
            self.after_ms = int(max(prm.asa, prm.asa_end) * 1.2 * CAP_PATIENCE * S) + 1
        else:
            self.before_ms = 0
            self.after_ms = int(BOOKING_MAX_MS + LEAD_S * CAP_LEAD * S + FAI_DELAY_MAX_MS
                                + ots_max * SEV_MULT["service_affecting"] * CAP_OTS * S
                                + ticket_after) + 1
        # The earliest arrival whose lifecycle can reach start_ms (ids count from there).
        self.k0 = -math.ceil(self.after_ms / self.spacing) - 2
        self.k_next = self.k0 if warm_start else -1

    def u(self, k: int, dim: int) -> float:
        return (k * ALPHA[dim] + self.off[dim]) % 1.0

    def backlog(self, start: int, k: int, limit: int) -> tuple[list[int], int]:
        """Arrivals from ``k`` on, before start and with an anchor below ``limit``, whose
        lifecycle may reach ``start`` (a cheap upper bound); and the next arrival index."""
        sp = self.spacing
        prm = self.prm
        keep: list[int] = []
        if self.kind == "tickets":  # anchored at the first contact
            off = self.off
            aw, ow = ALPHA[T_W], off[T_W]
            ar, o_r = ALPHA[T_REOPEN], off[T_REOPEN]
            ae, oe = ALPHA[T_ESC], off[T_ESC]
            af, of = ALPHA[T_FCR], off[T_FCR]
            work_ms, fcr_ms, reopen = prm.work * S, FCR_WORK_S * S, prm.reopen
            esc, p_fcr = prm.esc, prm.fcr / (1.0 - prm.esc)
            lw, lf = LN_WORK, LN_FCR
            while k < 0 and start + (k - 0.5) * sp < limit:
                i = int(((k * aw + ow) % 1.0) * NZ)
                if (k * ae + oe) % 1.0 < esc:
                    w = max(work_ms * lw[i], ESC_SPAN_MAX_MS)
                elif (k * af + of) % 1.0 < p_fcr:
                    w = fcr_ms * lf[i]
                else:
                    w = work_ms * lw[i]
                w += max(TAIL_REOPEN_MS if (k * ar + o_r) % 1.0 < reopen else TAIL_PLAIN_MS,
                         AFTER_RESOLVED_MS)
                if (k + 0.45) * sp + w >= 0:
                    keep.append(k)
                k += 1
            return keep, k
        short = (BOOKING_MAX_MS + LEAD_S * CAP_LEAD * S) if self.kind == "orders" else self.after_ms
        while k < 0 and start + (k - 0.5) * sp < limit:
            reach = short
            if self.kind == "orders" and self.u(k, O_FAI) < prm.fai:
                reach = self.after_ms
            if (k + 0.45) * sp + reach >= 0:
                keep.append(k)
            k += 1
        return keep, k
