"""The lifecycles of tickets, calls and install orders: each a pure function of its arrival."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from streams.tools.simulator.arrivals import Raw, Stream, replayed
from streams.tools.simulator.profiles import (
    BOOKING_MAX_MS,
    CALL_CHANNEL_TABLE,
    CHANNEL_TABLE,
    DUE_OFFSETS_MIN,
    FAI_DELAY_MAX_MS,
    FCR_WORK_S,
    LEAD_S,
    MIN,
    P_REVIEW,
    QUEUES,
    REVIEW_NOISE,
    REVIEW_REASONS,
    SEV_MULT,
    S,
)
from streams.tools.simulator.sequences import (
    ALPHA,
    C_AB,
    C_PAT,
    C_WAIT,
    LN_FCR,
    LN_LEAD,
    LN_OTS,
    LN_PATIENCE,
    LN_WAIT,
    LN_WORK,
    M64,
    NZ,
    O_CANCEL,
    O_FAI,
    O_LEAD,
    O_ONTIME,
    O_RESCHED,
    T_C,
    T_CSAT,
    T_CSAT_T,
    T_CSAT_V,
    T_ESC,
    T_ESC_GAP,
    T_ESC_T,
    T_FCR,
    T_HOPS,
    T_REOPEN,
    T_SEV,
    T_TRUCK,
    T_W,
    T_XLA,
    T_XLA_T,
    T_XLA_V,
    Z,
    mix,
    rfc3339,
    severity_of,
    u16,
    utc_date,
)


class Lifecycles:
    """The events of each arrival of a run: what a run's start, drift and tag make of them."""

    def __init__(self, start_ms: int, drift_ms: float, tag: str, warm_start: bool) -> None:
        self.start_ms = start_ms
        self._drift_ms = drift_ms
        self.tag = tag
        self.warm_start = warm_start

    def drift_fraction(self, ts_ms: int) -> float:
        """How far the drifting partner has drifted at ``ts_ms`` (0 up to start, then 0..1)."""
        if ts_ms <= self.start_ms:
            return 0.0
        if self._drift_ms <= 0:
            return 1.0
        return min(1.0, (ts_ms - self.start_ms) / self._drift_ms)

    def _anchor(self, st: Stream, k: int) -> tuple[int, int]:
        h = mix(st.hbase ^ (k & M64))
        return self.start_ms + int((k + 0.9 * (u16(h, 0) - 0.5)) * st.spacing), h

    def contact_delay_ms(self, st: Stream, severity: str, ts: int, u_c: float) -> int:
        prm = st.prm
        ots = prm.ots
        if prm.ots_end != ots:
            ots += (prm.ots_end - ots) * self.drift_fraction(ts)
        return max(1, int(ots * SEV_MULT[severity] * LN_OTS[int(u_c * NZ)] * S))

    def lifecycle(self, st: Stream, k: int) -> list[Raw]:
        """The events of arrival ``k`` of ``st`` that exist in this run, sorted."""
        anchor, h = self._anchor(st, k)
        raw: list[Raw] = []
        n = k - st.k0
        pid = st.partner.partner_id
        if st.kind == "tickets":
            tid = f"TT-{self.tag}-{pid}-{st.code}{n}"
            severity = severity_of(st.u(k, T_SEV))
            self._ticket(raw, st, st.off, k, h, severity, anchor, True, tid, None)
        elif st.kind == "calls":
            self._call(raw, st, k, h, anchor, f"CL-{self.tag}-{pid}-{n}")
        else:
            self._order(raw, st, k, h, anchor, n)
        start = self.start_ms
        if raw[0][0] < start:  # the first event of a lifecycle is also its earliest
            if not self.warm_start:
                return []
            raw = replayed(raw, start)
        raw.sort()
        return raw

    def _ticket(self, raw: list[Raw], st: Stream, off: tuple[float, ...], k: int, h: int,
                severity: str, anchor: int, contact_anchored: bool, tid: str,
                order_id: str | None) -> None:
        prm = st.prm

        def u(dim: int) -> float:
            return (k * ALPHA[dim] + off[dim]) % 1.0

        if contact_anchored:
            contact = anchor
            opened = contact - self.contact_delay_ms(st, severity, contact, u(T_C))
        else:
            opened = anchor
            contact = opened + self.contact_delay_ms(st, severity, opened, u(T_C))
        escalated = u(T_ESC) < prm.esc
        fcr = not escalated and u(T_FCR) < prm.fcr / (1.0 - prm.esc)
        i_w = int(u(T_W) * NZ)
        work = FCR_WORK_S * LN_FCR[i_w] if fcr else prm.work * LN_WORK[i_w]
        work_ms = max(60 * S, int(work * S))
        h2 = mix(h ^ 0x5BD1E995)

        channel = CHANNEL_TABLE[int(u16(h, 1) * len(CHANNEL_TABLE))]
        opened_x: dict[str, Any] = {"severity": severity, "channel": channel}
        if order_id is not None:
            opened_x["order_id"] = order_id
        tk = "tickets"
        raw.append((opened, len(raw), tk, "opened", "ticket_id", tid, opened_x))
        raw.append((contact, len(raw), tk, "contacted", "ticket_id", tid, None))
        if escalated:  # 3..5 hops after the first contact, all before the resolution
            last_hop = _escalations(raw, prm, u, h2, contact, tid)
            work_ms = max(work_ms, last_hop + 20 * MIN - contact)
        resolved = contact + work_ms
        raw.append((resolved, len(raw), tk, "resolved", "ticket_id", tid,
                    {"first_contact": fcr, "truck_roll": u(T_TRUCK) < prm.truck}))
        closed = resolved + int((2 + 28 * u16(h, 2)) * MIN)
        raw.append((closed, len(raw), tk, "closed", "ticket_id", tid, None))
        if u(T_REOPEN) < prm.reopen:
            reopened = closed + int((10 + 50 * u16(h, 3)) * MIN)
            again = reopened + int((20 + 70 * u16(h2, 0)) * MIN)
            raw.append((reopened, len(raw), tk, "reopened", "ticket_id", tid, None))
            raw.append((again, len(raw), tk, "resolved", "ticket_id", tid,
                        {"first_contact": False, "truck_roll": u16(h2, 1) < prm.truck}))
            ts = again + int((2 + 28 * u16(h2, 2)) * MIN)
            raw.append((ts, len(raw), tk, "closed", "ticket_id", tid, None))
        _surveys(raw, prm, u, h, resolved, tid)

    def _call(self, raw: list[Raw], st: Stream, k: int, h: int, queued: int, cid: str) -> None:
        prm = st.prm
        f = self.drift_fraction(queued) if prm.asa_end != prm.asa else 0.0
        mean = prm.asa + (prm.asa_end - prm.asa) * f
        p_abandon = prm.abandon + (prm.abandon_end - prm.abandon) * f
        raw.append((queued, len(raw), "calls", "queued", "call_id", cid,
                    {"queue": QUEUES[int(u16(h, 1) * len(QUEUES))],
                     "channel": CALL_CHANNEL_TABLE[int(u16(h, 2) * len(CALL_CHANNEL_TABLE))]}))
        if st.u(k, C_AB) < p_abandon:
            wait = mean * 1.2 * LN_PATIENCE[int(st.u(k, C_PAT) * NZ)]
            typ = "abandoned"
        else:
            wait = mean * LN_WAIT[int(st.u(k, C_WAIT) * NZ)]
            typ = "answered"
        ts = queued + max(S, int(wait * S))
        raw.append((ts, len(raw), "calls", typ, "call_id", cid, None))

    def _order(self, raw: list[Raw], st: Stream, k: int, h: int, placed: int,
               n: int) -> None:
        prm = st.prm
        pid = st.partner.partner_id
        oid = f"OR-{self.tag}-{pid}-{n}"
        # the customer's order at the arrival; the install booked minutes to hours later (its
        # own hash: the rest of the order's draws stay as they were)
        booking = u16(mix(h ^ 0x5BD1E995), 0)
        scheduled = placed + int(MIN + (BOOKING_MAX_MS - MIN) * booking)
        raw.append((placed, len(raw), "orders", "ordered", "order_id", oid, None))
        lead_ms = max(60 * S, int(LEAD_S * LN_LEAD[int(st.u(k, O_LEAD) * NZ)] * S))
        done = scheduled + lead_ms
        on_time = st.u(k, O_ONTIME) < prm.on_time
        if u16(h, 1) < 0.5:  # a calendar date: met iff the install's (UTC) date <= it
            due = utc_date(done, int(2 * u16(h, 2))) if on_time else utc_date(done, -1)
        else:  # an instant, written with some UTC offset
            if on_time:
                due_ms = done + int((2 + 178 * u16(h, 2)) * MIN)
            else:
                due_ms = done - max(60 * S, int(lead_ms * (0.1 + 0.5 * u16(h, 2))))
            due = rfc3339(due_ms, DUE_OFFSETS_MIN[int(u16(h, 3) * len(DUE_OFFSETS_MIN))])
        od = "orders"
        if st.u(k, O_RESCHED) < 0.1:  # booked, then rescheduled: the later due date counts
            raw.append((scheduled, len(raw), od, "scheduled", "order_id", oid,
                        {"due_date": utc_date(scheduled, -2)}))
            raw.append((scheduled + lead_ms // 3, len(raw), od, "scheduled", "order_id", oid,
                        {"due_date": due}))
        else:
            raw.append((scheduled, len(raw), od, "scheduled", "order_id", oid, {"due_date": due}))
        if st.u(k, O_CANCEL) < 0.04:
            ts = scheduled + int(lead_ms * 0.8)
            raw.append((ts, len(raw), od, "cancelled", "order_id", oid, None))
            return
        raw.append((done, len(raw), od, "installed", "order_id", oid, None))
        if st.u(k, O_FAI) < prm.fai:  # failure after install: a ticket minutes later
            h3 = mix(h ^ 0x27D4EB2F)
            severity = "down_hard" if u16(h3, 0) < 0.3 else "service_affecting"
            opened = done + int(3 * MIN + (FAI_DELAY_MAX_MS - 3 * MIN) * u16(h3, 1))
            self._ticket(raw, st, st.fai_off, k, h3, severity, opened, False,
                         f"TT-{self.tag}-{pid}-f{n}", oid)


def _escalations(raw: list[Raw], prm: Any, u: Callable[[int], float], h2: int, contact: int,
                 tid: str) -> int:
    """Append a ticket's escalation hops (their quality flags drawn per hop) and, usually, the
    vendor's review of the partner's escalation (the first hop); returns the time of the last hop.

    The first hop is truly good with probability ``prm.good``; the partner flags a bad one as good
    anyway with probability ``prm.overclaim``. The review (``P_REVIEW`` of escalations, 20..40 min
    after the first hop, so before the resolution) finds the truth, or the opposite at
    ``REVIEW_NOISE``."""
    tk = "tickets"
    hops = 3 + int(u(T_HOPS) * 3)
    t = contact + int((14 + 2 * u(T_ESC_T)) * MIN)
    first = t
    gap = int((20 + 10 * u(T_ESC_GAP)) * MIN)
    truth = True
    for i in range(hops):
        hh = mix(h2 + i)
        x: dict[str, Any]
        good = u16(hh, 1) < prm.good
        if i == 0:
            truth = good
            good = good or u16(hh, 0) < prm.overclaim
        if good:
            x = {"documented": True} if u16(hh, 2) < 0.7 else {
                "documented": True, "kb_article": None}
        elif u16(hh, 2) < prm.kb_bad:
            x = {"documented": True, "kb_article": f"KB-{10000 + (hh >> 48) % 90000}"}
        else:
            x = {"documented": False} if u16(hh, 3) < 0.5 else {}
        x["to_tier"] = min(i + 2, 4)
        raw.append((t, len(raw), tk, "escalated", "ticket_id", tid, x))
        if i + 1 < hops:
            t += gap
    hr = mix(h2 ^ 0x2545F491)
    if u16(hr, 0) < P_REVIEW:
        verdict = truth != (u16(hr, 1) < REVIEW_NOISE)
        review: dict[str, Any] = {"verdict": "good" if verdict else "bad"}
        if not verdict:
            review["reasons"] = [REVIEW_REASONS[int(u16(hr, 2) * len(REVIEW_REASONS))]]
        ts = first + int((20 + 20 * u16(hr, 3)) * MIN)
        raw.append((ts, len(raw), tk, "escalation_reviewed", "ticket_id", tid, review))
    return t


def _surveys(raw: list[Raw], prm: Any, u: Callable[[int], float], h: int, resolved: int,
             tid: str) -> None:
    """Append a ticket's survey answers after its resolution (CSAT 1..5, XLA 0..10), each drawn:
    asked of ``prm.survey`` of customers, times ``prm.survey_poor`` of those whose answer would
    be poor (a partner surveying selectively). A poor CSAT answer (below 4) is followed up with
    the customer by the partner (``prm.follow``, 5..60 min after the answer: compressed from
    hours)."""
    v = u(T_CSAT_V)
    score = 5
    for i, p in enumerate(prm.csat):
        if v < p:
            score = i + 1
            break
        v -= p
    if u(T_CSAT) < prm.survey * (prm.survey_poor if score < 4 else 1.0):
        ts = resolved + int((3 + 42 * u(T_CSAT_T)) * MIN)
        raw.append((ts, len(raw), "surveys", "response", "ticket_id", tid,
                    {"score": score, "kind": "csat"}))
        hf = mix(h ^ 0x1B873593)
        if score < 4 and u16(hf, 0) < prm.follow:
            raw.append((ts + int((5 + 55 * u16(hf, 1)) * MIN), len(raw), "tickets", "follow_up",
                        "ticket_id", tid, None))
    xla = max(0, min(10, round(prm.xla + 1.5 * Z[int(u(T_XLA_V) * NZ)])))
    if u(T_XLA) < prm.survey * (prm.survey_poor if xla < 8 else 1.0):
        ts = resolved + int((3 + 42 * u(T_XLA_T)) * MIN)
        raw.append((ts, len(raw), "surveys", "response", "ticket_id", tid,
                    {"score": xla, "kind": "xla"}))
