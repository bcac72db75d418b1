"""Deterministic partner traffic: tickets, calls, install orders and surveys as contract events.

Pure Python (no Kafka, no Faust). ``Simulator.events_between(t0, t1)`` returns every event
with ``t0 <= ts < t1`` (ts: integer epoch ms), sorted by ts, as ``(topic, event)``. Each
entity's lifecycle is a pure function of (seed, start_ms, partner, stream, arrival index),
and follow-up events are kept in an internal schedule, so consecutive calls over adjacent
ranges hand out every event exactly once, however the time axis is cut, and two
simulators built with the same arguments produce the same events.

Shape of the traffic (per partner, at the default rate, 12 partners)
--------------------------------------------------------------------
* Three arrival streams with regular, jittered spacing: ~53 tickets/min (23 down_hard,
  23 service_affecting, 7 question), 28 calls/min, 28 install orders/min; plus
  failure-after-install tickets (an ``order_id`` on the opened event, minutes after the
  install) and post-contact csat/xla survey answers linked by ``ticket_id``.
  Overall ~85 events/s; ``rate`` scales all volumes linearly (per partner:
  rate / len(partners)).
* Delays and yes/no decisions come from low-discrepancy (Kronecker) sequences instead of
  independent draws, so counts per minute and shares over a few hundred entities stay
  close to their means: every partner produces >= ~22 samples of every KPI of the default
  catalog in every simulated minute.
* Durations are plausible against the targets: open->first contact ~0.2-1.2x 7200 s,
  open->resolved ~0.25-1x 14400 s, call waits ~24-95 s. Compressed: install lead times
  (minutes, not days), follow-up tickets (3-25 min after an install), escalation hops
  (every 20-30 min), closing and reopening (minutes).
* Tickets are generated backwards from their first contact, so OTS samples arrive at a
  steady rate and a drift in OTS shows in contact time (when the engine sees it).

Warm start
----------
A ticket takes hours from opened to resolved, so a monitor switched on at ``start_ms``
would see no OTS/MTTR samples for hours. By default (``warm_start=True``) the partners
already have work in flight at ``start_ms``: every entity still active then exists, and
the part of its history that later KPI samples depend on is replayed at its true, earlier
event times (a ticket's opened event, its earliest escalation/resolution before start when
another follows; an order's scheduled events; a call's queued event). These ~90k events
(default rate, 12 partners, up to ~13 h before start) lie in
``[history_start_ms, start_ms)``: ask for them once, e.g. start the cursor at
``sim.history_start_ms`` instead of ``start_ms``. ``warm_start=False``: only entities
whose first event is at or after ``start_ms``.

Profiles
--------
``strong``/``weak`` are better/worse than the default targets, ``steady`` comfortably
within them; ``gaming`` escalates ~14.6 % of its tickets (just under 15 %) and most of
those escalations are undocumented or carry a kb_article; ``drifting`` starts well within
its ASA and OTS targets and rises linearly past them over ``drift_minutes`` of event time:
ASA 40 s -> 120 s by queue time, down_hard OTS 3000 s -> 9000 s by first-contact time.
"""

from __future__ import annotations

import gc
import hashlib
import heapq
import math
import time
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta, timezone
from statistics import NormalDist
from typing import Any, Final

__all__ = ["DEFAULT_PARTNERS", "PROFILES", "SimPartner", "Simulator"]

PROFILES: Final = ("steady", "drifting", "gaming", "strong", "weak")


@dataclass(frozen=True)
class SimPartner:
    """A simulated partner; ``profile`` is one of :data:`PROFILES`."""

    partner_id: str
    tier: str
    profile: str


DEFAULT_PARTNERS: tuple[SimPartner, ...] = (
    SimPartner("northwind-telecom", "premier", "strong"),
    SimPartner("bluefiber", "premier", "steady"),
    SimPartner("atlas-connect", "premier", "steady"),
    SimPartner("cedar-networks", "business", "strong"),
    SimPartner("harbor-voice", "business", "weak"),
    SimPartner("summit-broadband", "business", "drifting"),
    SimPartner("pioneer-link", "select", "strong"),
    SimPartner("riverbend-comms", "select", "steady"),
    SimPartner("lumen-partners", "select", "weak"),
    SimPartner("keystone-wireless", "authorized", "steady"),
    SimPartner("orchid-it", "authorized", "steady"),
    SimPartner("vertex-outsourcing", "authorized", "gaming"),
)
"""The 12 partners of config/partners.yaml: one drifting, one gaming."""

_S: Final = 1000  # ms per second
_MIN: Final = 60_000
_BASE_RATE: Final = 50.0
_BASE_PARTNERS: Final = 12

# Arrivals per partner per minute at rate=50 with 12 partners, scaled linearly with
# rate / len(partners). With lifecycles and follow-ups this is ~85 events/s at rate=50.
_PER_MIN: Final[dict[str, float]] = {"tickets": 53.0, "calls": 28.0, "orders": 28.0}
_STREAM_CODE: Final = {"tickets": "t", "calls": "c", "orders": "o"}
# Severity mix of new tickets (23 + 23 + 7 a minute per partner at the base rate).
_SEVERITIES: Final = (
    ("down_hard", 23 / 53), ("service_affecting", 23 / 53), ("question", 7 / 53),
)
# Mean open->contacted relative to down_hard.
_SEV_MULT: Final[dict[str, float]] = {"down_hard": 1.0, "service_affecting": 1.15, "question": 1.3}
_CHANNELS: Final = (  # channel, share in 1/50
    ("phone", 17), ("chat", 10), ("email", 7), ("portal", 5), ("chatbot", 5),
    ("self_service", 3), ("proactive", 3),
)
_CHANNEL_TABLE: Final = tuple(name for name, n in _CHANNELS for _ in range(n))
_QUEUES: Final = ("repair", "billing", "provisioning", "general")
_DUE_OFFSETS_MIN: Final = (0, 0, 60, 120, -300, -240, 330, 540, -180, 600)

# Delay shapes: lognormal multipliers (mean 1) with a sigma and a cap; the caps bound how
# far a lifecycle reaches, which bounds the warm-start backlog and the look-ahead.
_SIG_OTS, _CAP_OTS = 0.55, 2.0
_SIG_WORK, _CAP_WORK = 0.6, 2.2
_SIG_FCR, _CAP_FCR = 0.5, 3.0
_SIG_WAIT, _CAP_WAIT = 0.5, 3.0
_SIG_PATIENCE, _CAP_PATIENCE = 0.6, 3.0
_SIG_LEAD, _CAP_LEAD = 0.5, 3.0
_FCR_WORK_S: Final = 900.0  # a first-contact resolution is resolved during that contact
_LEAD_S: Final = 480.0  # scheduled -> installed (compressed from days to minutes)
_FAI_DELAY_MAX_MS: Final = 25 * _MIN  # install -> follow-up ticket (compressed)
# Escalations: 3..5 hops, the first 14..16 min after first contact, then every 20..30 min;
# an escalated ticket is resolved at least 20 min after its last hop.
_ESC_SPAN_MAX_MS: Final = (16 + 4 * 30 + 20) * _MIN
# Survey answers (csat, xla) arrive 3..45 min after the first contact.
_SURVEY_MAX_MS: Final = 45 * _MIN
# After the (first) resolution: close <= 30 min, reopen <= 60 min after closing,
# re-resolve <= 90 min later, close <= 30 min after that.
_TAIL_REOPEN_MS: Final = (30 + 60 + 90 + 30) * _MIN
_TAIL_PLAIN_MS: Final = 30 * _MIN
_P_SURVEY: Final = 0.5  # chance of a csat answer, and of an xla answer, per ticket


@dataclass(frozen=True)
class _Params:
    asa: float  # mean wait of calls (s), before drift
    asa_end: float  # ... after drift_minutes (equal to asa unless drifting)
    abandon: float
    abandon_end: float
    ots: float  # mean open->contacted of down_hard tickets (s), before drift
    ots_end: float
    work: float  # mean contacted->resolved when not resolved on first contact (s)
    esc: float  # share of tickets escalated (each escalated 3..5 times)
    good: float  # share of escalations that are documented without a KB article
    kb_bad: float  # share of the bad escalations that carry a kb_article
    fcr: float  # share of resolved tickets resolved on first contact
    truck: float
    reopen: float
    fai: float  # share of installs followed by a ticket
    on_time: float
    csat: tuple[float, float, float, float, float]  # P(score = 1..5)
    xla: float  # mean xla score (0..10)


_STEADY: Final = _Params(
    asa=36, asa_end=36, abandon=0.035, abandon_end=0.035, ots=2600, ots_end=2600, work=8000,
    esc=0.14, good=0.88, kb_bad=0.34, fcr=0.74, truck=0.16, reopen=0.035, fai=0.04,
    on_time=0.93, csat=(0.01, 0.02, 0.06, 0.27, 0.64), xla=8.6,
)
_PROFILE_PARAMS: Final[dict[str, _Params]] = {
    "steady": _STEADY,
    "strong": _Params(
        asa=24, asa_end=24, abandon=0.02, abandon_end=0.02, ots=1500, ots_end=1500, work=6000,
        esc=0.14, good=0.95, kb_bad=0.34, fcr=0.8, truck=0.12, reopen=0.02, fai=0.025,
        on_time=0.97, csat=(0.01, 0.02, 0.05, 0.2, 0.72), xla=8.8,
    ),
    "weak": _Params(
        asa=95, asa_end=95, abandon=0.09, abandon_end=0.09, ots=8000, ots_end=8000, work=11000,
        esc=0.21, good=0.68, kb_bad=0.34, fcr=0.58, truck=0.28, reopen=0.09, fai=0.1,
        on_time=0.8, csat=(0.08, 0.1, 0.15, 0.32, 0.35), xla=7.1,
    ),
    "gaming": replace(_STEADY, esc=0.146, good=0.25, kb_bad=0.5),
    "drifting": replace(
        _STEADY, asa=40, asa_end=120, abandon=0.03, abandon_end=0.08, ots=3000, ots_end=9000
    ),
}

# --- low-discrepancy and hashing helpers ----------------------------------------------
#
# Delays and yes/no decisions of arrival k use the Kronecker sequence {k * alpha + offset}
# (one alpha per dimension: quadratic irrationals with small partial quotients, from
# different fields so dimensions stay independent). Compared with independent draws,
# counts per minute and shares over a few hundred entities are close to their means.

_ALPHA: Final = tuple(
    x % 1.0
    for x in (
        (math.sqrt(5) - 1) / 2, math.sqrt(2), math.sqrt(3), (math.sqrt(17) - 3) / 2,
        math.sqrt(7), (math.sqrt(21) - 3) / 2, (math.sqrt(13) - 3) / 2, math.sqrt(6),
        math.sqrt(14), (math.sqrt(33) - 5) / 2, (math.sqrt(37) - 5) / 2, math.sqrt(11),
        math.sqrt(23), math.sqrt(19), math.sqrt(15), math.sqrt(61),
    )
)
_NDIM: Final = len(_ALPHA)
# Ticket dimensions.
(_T_C, _T_W, _T_ESC, _T_HOPS, _T_FCR, _T_ESC_T, _T_CSAT, _T_XLA, _T_CSAT_T, _T_XLA_T,
 _T_TRUCK, _T_REOPEN, _T_CSAT_V, _T_XLA_V, _T_ESC_GAP, _T_SEV) = range(16)
# Call dimensions.
_C_WAIT, _C_AB, _C_PAT = range(3)
# Order dimensions.
_O_LEAD, _O_CANCEL, _O_ONTIME, _O_FAI, _O_RESCHED = range(5)

_NZ: Final = 4096
_Z: Final[tuple[float, ...]] = tuple(NormalDist().inv_cdf((i + 0.5) / _NZ) for i in range(_NZ))
_M64: Final = (1 << 64) - 1
_U16: Final = 1.0 / 65536.0
_U64: Final = 1.0 / 2**64


def _ln_table(sigma: float, cap: float) -> tuple[float, ...]:
    """Lognormal multipliers with mean 1, capped, by quantile bucket."""
    return tuple(min(cap, math.exp(sigma * z - 0.5 * sigma * sigma)) for z in _Z)


_LN_OTS: Final = _ln_table(_SIG_OTS, _CAP_OTS)
_LN_WORK: Final = _ln_table(_SIG_WORK, _CAP_WORK)
_LN_FCR: Final = _ln_table(_SIG_FCR, _CAP_FCR)
_LN_WAIT: Final = _ln_table(_SIG_WAIT, _CAP_WAIT)
_LN_PATIENCE: Final = _ln_table(_SIG_PATIENCE, _CAP_PATIENCE)
_LN_LEAD: Final = _ln_table(_SIG_LEAD, _CAP_LEAD)


def _mix(x: int) -> int:
    """splitmix64 finaliser: a well-mixed 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & _M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & _M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & _M64
    return x ^ (x >> 31)


def _severity(u: float) -> str:
    for name, share in _SEVERITIES:
        if u < share:
            return name
        u -= share
    return _SEVERITIES[-1][0]


def _digest64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def _u16(h: int, slot: int) -> float:
    """The ``slot``-th (0..3) 16-bit field of the hash ``h`` as a uniform in [0, 1)."""
    return ((h >> (16 * slot)) & 0xFFFF) * _U16


def _rfc3339(ms: int, offset_min: int) -> str:
    """An instant as RFC 3339 (whole seconds), written in the given UTC offset."""
    tz = timezone(timedelta(minutes=offset_min))
    text = datetime.fromtimestamp(ms // _S, tz).isoformat()
    return text.replace("+00:00", "Z") if offset_min == 0 else text


def _utc_date(ms: int, days: int = 0) -> str:
    return (datetime.fromtimestamp(ms // _S, UTC).date() + timedelta(days=days)).isoformat()


_Raw = tuple[int, int, str, str, str, str, "dict[str, Any] | None"]
"""One event of a lifecycle before materialisation:
(ts, index in its lifecycle, topic, type, key field, entity id, extra fields)."""


_NEEDS_HISTORY: Final = {
    # topic -> event types after start that need the entity's earlier events
    "tickets": frozenset({"contacted", "escalated", "resolved"}),
    "orders": frozenset({"installed"}),
    "calls": frozenset({"answered", "abandoned"}),
}


def _replayed(raw: list[_Raw], start: int) -> list[_Raw]:
    """The events of a lifecycle that began before ``start`` that exist in the run.

    Events at or after start all exist. Of the history before start only what changes
    how those later events count is kept, and only when they need it: a ticket's opened
    event (durations start there) and the earliest earlier occurrence of a type that
    occurs again after start (escalated, resolved: "earliest" and "distinct" semantics);
    an order's scheduled events; a call's queued event. So a ticket that was resolved
    before start and is only closed (or surveyed) afterwards brings no history along.
    ``raw`` is in creation order, which is chronological per type.
    """
    later = {r[3] for r in raw if r[0] >= start}
    history = {topic for topic, types in _NEEDS_HISTORY.items() if later & types}
    out: list[_Raw] = []
    for r in raw:
        if r[0] >= start:
            out.append(r)
        elif r[2] in history:
            if r[2] != "tickets" or r[3] == "opened":
                out.append(r)
            elif r[3] in later and r[3] in ("escalated", "resolved"):
                later.discard(r[3])  # only the earliest one before start
                out.append(r)
    return out


_Entry = tuple[int, int, int, int, int, "list[_Raw] | None"]
"""A heap entry: (ts, tie, position in the lifecycle or -1 if not generated yet, stream,
arrival, the generated lifecycle while it is needed in the current call)."""


class _Stream:
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
        self.code = _STREAM_CODE[kind]
        self.id_prefix = f"{partner.partner_id}-{tag}-{self.code}"
        self.prm = prm = _PROFILE_PARAMS[partner.profile]
        self.spacing = _MIN / per_min
        self.hbase = _digest64(f"{seed}/{partner.partner_id}/{self.code}")
        self.off = tuple(_mix(self.hbase + 101 * (d + 1)) * _U64 for d in range(_NDIM))
        self.fai_off = tuple(_mix(self.hbase + 7919 * (d + 1)) * _U64 for d in range(_NDIM))
        ots_max = max(prm.ots, prm.ots_end)
        # contacted -> last event of a ticket
        ticket_after = max(
            max(prm.work * _CAP_WORK * _S, _ESC_SPAN_MAX_MS, _FCR_WORK_S * _CAP_FCR * _S)
            + _TAIL_REOPEN_MS,
            _SURVEY_MAX_MS,
        )
        if kind == "tickets":
            self.before_ms = int(ots_max * max(_SEV_MULT.values()) * _CAP_OTS * _S) + 1
            self.after_ms = int(ticket_after) + 1
        elif kind == "calls":
            self.before_ms = 0
            self.after_ms = int(max(prm.asa, prm.asa_end) * 1.2 * _CAP_PATIENCE * _S) + 1
        else:
            self.before_ms = 0
            self.after_ms = int(_LEAD_S * _CAP_LEAD * _S + _FAI_DELAY_MAX_MS
                                + ots_max * _SEV_MULT["service_affecting"] * _CAP_OTS * _S
                                + ticket_after) + 1
        # The earliest arrival whose lifecycle can reach start_ms (ids count from there).
        self.k0 = -math.ceil(self.after_ms / self.spacing) - 2
        self.k_next = self.k0 if warm_start else -1

    def u(self, k: int, dim: int) -> float:
        return (k * _ALPHA[dim] + self.off[dim]) % 1.0

    def backlog(self, start: int, k: int, limit: int) -> tuple[list[int], int]:
        """Arrivals from ``k`` on, before start and with an anchor below ``limit``, whose
        lifecycle may reach ``start`` (a cheap upper bound); and the next arrival index."""
        sp = self.spacing
        prm = self.prm
        keep: list[int] = []
        if self.kind == "tickets":  # anchored at the first contact
            off = self.off
            aw, ow = _ALPHA[_T_W], off[_T_W]
            ar, o_r = _ALPHA[_T_REOPEN], off[_T_REOPEN]
            ae, oe = _ALPHA[_T_ESC], off[_T_ESC]
            af, of = _ALPHA[_T_FCR], off[_T_FCR]
            work_ms, fcr_ms, reopen = prm.work * _S, _FCR_WORK_S * _S, prm.reopen
            esc, p_fcr = prm.esc, prm.fcr / (1.0 - prm.esc)
            lw, lf = _LN_WORK, _LN_FCR
            while k < 0 and start + (k - 0.5) * sp < limit:
                i = int(((k * aw + ow) % 1.0) * _NZ)
                if (k * ae + oe) % 1.0 < esc:
                    w = max(work_ms * lw[i], _ESC_SPAN_MAX_MS)
                elif (k * af + of) % 1.0 < p_fcr:
                    w = fcr_ms * lf[i]
                else:
                    w = work_ms * lw[i]
                w += _TAIL_REOPEN_MS if (k * ar + o_r) % 1.0 < reopen else _TAIL_PLAIN_MS
                if (k + 0.45) * sp + max(w, _SURVEY_MAX_MS) >= 0:
                    keep.append(k)
                k += 1
            return keep, k
        short = (_LEAD_S * _CAP_LEAD * _S) if self.kind == "orders" else self.after_ms
        while k < 0 and start + (k - 0.5) * sp < limit:
            reach = short
            if self.kind == "orders" and self.u(k, _O_FAI) < prm.fai:
                reach = self.after_ms
            if (k + 0.45) * sp + reach >= 0:
                keep.append(k)
            k += 1
        return keep, k


class Simulator:
    """Deterministic event generator; see the module docstring.

    ``rate`` scales the volume linearly (per-partner volume is proportional to
    rate / len(partners)); at the default 50 with 12 partners the steady state is ~85
    events/s (the mix needed for >= 20 samples of every KPI per partner per minute), plus
    the warm-start backlog before ``start_ms``. ``start_ms`` defaults to the wall clock.
    """

    def __init__(
        self,
        partners: tuple[SimPartner, ...] = DEFAULT_PARTNERS,
        seed: int = 7,
        rate: float = 50.0,
        start_ms: int | None = None,
        drift_minutes: float = 10.0,
        *,
        warm_start: bool = True,
    ) -> None:
        partners = tuple(partners)
        if not partners:
            raise ValueError("at least one partner is required")
        if len({p.partner_id for p in partners}) != len(partners):
            raise ValueError("partner ids must be unique")
        for p in partners:
            if p.profile not in _PROFILE_PARAMS:
                raise ValueError(f"unknown profile {p.profile!r} of {p.partner_id}")
        if not (math.isfinite(rate) and rate > 0):
            raise ValueError("rate must be a positive number")
        self.partners = partners
        self.seed = seed
        self.rate = float(rate)
        self.start_ms = int(time.time() * 1000) if start_ms is None else int(start_ms)
        self.drift_minutes = float(drift_minutes)
        self.warm_start = warm_start
        self.tag = hashlib.blake2b(f"{seed}/{self.start_ms}".encode(), digest_size=3).hexdigest()
        """Short run tag inside every id: runs with other seeds or starts never collide."""
        self._drift_ms = self.drift_minutes * _MIN
        scale = (self.rate / _BASE_RATE) * (_BASE_PARTNERS / len(partners))
        self._streams: list[_Stream] = []
        for partner in partners:
            for kind, per_min in _PER_MIN.items():
                self._streams.append(_Stream(seed, self.tag, len(self._streams), partner, kind,
                                             per_min * scale, warm_start))
        self._heap: list[_Entry] = []
        reach = max(s.before_ms + s.after_ms + 3 * s.spacing for s in self._streams)
        self.history_start_ms = self.start_ms - int(reach) if warm_start else self.start_ms
        """No event is earlier than this: the start of the warm-start backlog."""

    # --- public ------------------------------------------------------------------------

    def events_between(self, t0_ms: int, t1_ms: int) -> list[tuple[str, dict[str, Any]]]:
        """Every event with ``t0_ms <= ts < t1_ms``, sorted by ts, as (topic, event).

        Stateful: each event is handed out at most once. Ask for adjacent, increasing
        ranges; events before ``t0_ms`` that were never handed out are dropped.
        """
        t0, t1 = int(t0_ms), int(t1_ms)
        if t1 <= t0:
            return []
        # Generation allocates many small acyclic objects; the cyclic GC would only rescan
        # them over and over (it doubles the cost of the warm-start backlog).
        gc_enabled = gc.isenabled()
        gc.disable()
        try:
            self._advance(t1)
            return self._emit(t0, t1)
        finally:
            if gc_enabled:
                gc.enable()

    def drift_fraction(self, ts_ms: int) -> float:
        """How far the drifting partner has drifted at ``ts_ms`` (0 up to start, then 0..1)."""
        if ts_ms <= self.start_ms:
            return 0.0
        if self._drift_ms <= 0:
            return 1.0
        return min(1.0, (ts_ms - self.start_ms) / self._drift_ms)

    # --- scheduling ----------------------------------------------------------------------

    def _anchor(self, st: _Stream, k: int) -> tuple[int, int]:
        h = _mix(st.hbase ^ (k & _M64))
        return self.start_ms + int((k + 0.9 * (_u16(h, 0) - 0.5)) * st.spacing), h

    def _contact_delay_ms(self, st: _Stream, severity: str, ts: int, u_c: float) -> int:
        prm = st.prm
        ots = prm.ots
        if prm.ots_end != ots:
            ots += (prm.ots_end - ots) * self.drift_fraction(ts)
        return max(1, int(ots * _SEV_MULT[severity] * _LN_OTS[int(u_c * _NZ)] * _S))

    def _advance(self, t1: int) -> None:
        """Schedule every arrival whose lifecycle can have an event before ``t1``."""
        start = self.start_ms
        heap = self._heap
        for st in self._streams:
            limit = t1 + st.before_ms
            spacing = st.spacing
            k = st.k_next
            ks: list[int] = []
            if k < 0:  # before start: only what may still be active at start (the backlog)
                ks, k = st.backlog(start, k, limit)
            while start + (k - 0.5) * spacing < limit:
                ks.append(k)
                k += 1
            st.k_next = k
            si, k0, hbase, n_streams = st.idx, st.k0, st.hbase, len(self._streams)
            push = heapq.heappush
            if st.kind != "tickets":
                for kk in ks:
                    h = _mix(hbase ^ (kk & _M64))
                    anchor = start + int((kk + 0.9 * ((h & 0xFFFF) * _U16 - 0.5)) * spacing)
                    push(heap, (anchor, ((kk - k0) * n_streams + si) * 512, -1, si, kk, None))
                continue
            # The opened event precedes the first contact (the anchor) by the OTS delay.
            a_sev, o_sev = _ALPHA[_T_SEV], st.off[_T_SEV]
            a_c, o_c = _ALPHA[_T_C], st.off[_T_C]
            for kk in ks:
                h = _mix(hbase ^ (kk & _M64))
                anchor = start + int((kk + 0.9 * ((h & 0xFFFF) * _U16 - 0.5)) * spacing)
                severity = _severity((kk * a_sev + o_sev) % 1.0)
                anchor -= self._contact_delay_ms(st, severity, anchor, (kk * a_c + o_c) % 1.0)
                push(heap, (anchor, ((kk - k0) * n_streams + si) * 512, -1, si, kk, None))

    def _emit(self, t0: int, t1: int) -> list[tuple[str, dict[str, Any]]]:
        heap = self._heap
        streams = self._streams
        out: list[tuple[str, dict[str, Any]]] = []
        replace, pop = heapq.heapreplace, heapq.heappop
        while heap and heap[0][0] < t1:
            ts, tie, pos, si, k, raw = heap[0]
            st = streams[si]
            if raw is None:  # (re)generate: lifecycles are pure functions of (stream, k)
                raw = self._lifecycle(st, k)
                if pos < 0:
                    if not raw:
                        pop(heap)
                        continue
                    pos = 0
                    first = raw[0][0]
                    if first != ts:  # its early events were cut: wait for the first kept one
                        replace(heap, (first, tie + raw[0][1], 0, si, k,
                                       raw if first < t1 else None))
                        continue
            _, i, topic, typ, key, eid, extras = raw[pos]
            if ts >= t0:
                event: dict[str, Any] = {
                    "event_id": f"{st.id_prefix}{k - st.k0}.{i}", "type": typ,
                    "partner_id": st.partner.partner_id, "ts": ts, key: eid,
                }
                if extras:
                    event.update(extras)
                out.append((topic, event))
            pos += 1
            if pos < len(raw):
                nxt = raw[pos]
                replace(heap, (nxt[0], tie - i + nxt[1], pos, si, k, raw if nxt[0] < t1 else None))
            else:
                pop(heap)
        return out

    # --- lifecycles ----------------------------------------------------------------------

    def _lifecycle(self, st: _Stream, k: int) -> list[_Raw]:
        """The events of arrival ``k`` of ``st`` that exist in this run, sorted."""
        anchor, h = self._anchor(st, k)
        raw: list[_Raw] = []
        n = k - st.k0
        pid = st.partner.partner_id
        if st.kind == "tickets":
            tid = f"TT-{self.tag}-{pid}-{st.code}{n}"
            severity = _severity(st.u(k, _T_SEV))
            self._ticket(raw, st, st.off, k, h, severity, anchor, True, tid, None)
        elif st.kind == "calls":
            self._call(raw, st, k, h, anchor, f"CL-{self.tag}-{pid}-{n}")
        else:
            self._order(raw, st, k, h, anchor, n)
        start = self.start_ms
        if raw[0][0] < start:  # the first event of a lifecycle is also its earliest
            if not self.warm_start:
                return []
            raw = _replayed(raw, start)
        raw.sort()
        return raw

    def _ticket(self, raw: list[_Raw], st: _Stream, off: tuple[float, ...], k: int, h: int,
                severity: str, anchor: int, contact_anchored: bool, tid: str,
                order_id: str | None) -> None:
        prm = st.prm

        def u(dim: int) -> float:
            return (k * _ALPHA[dim] + off[dim]) % 1.0

        if contact_anchored:
            contact = anchor
            opened = contact - self._contact_delay_ms(st, severity, contact, u(_T_C))
        else:
            opened = anchor
            contact = opened + self._contact_delay_ms(st, severity, opened, u(_T_C))
        escalated = u(_T_ESC) < prm.esc
        fcr = not escalated and u(_T_FCR) < prm.fcr / (1.0 - prm.esc)
        i_w = int(u(_T_W) * _NZ)
        work = _FCR_WORK_S * _LN_FCR[i_w] if fcr else prm.work * _LN_WORK[i_w]
        work_ms = max(60 * _S, int(work * _S))
        h2 = _mix(h ^ 0x5BD1E995)

        channel = _CHANNEL_TABLE[int(_u16(h, 1) * len(_CHANNEL_TABLE))]
        opened_x: dict[str, Any] = {"severity": severity, "channel": channel}
        if order_id is not None:
            opened_x["order_id"] = order_id
        tk = "tickets"
        raw.append((opened, len(raw), tk, "opened", "ticket_id", tid, opened_x))
        raw.append((contact, len(raw), tk, "contacted", "ticket_id", tid, None))
        if escalated:  # 3..5 hops after the first contact, all before the resolution
            hops = 3 + int(u(_T_HOPS) * 3)
            t = contact + int((14 + 2 * u(_T_ESC_T)) * _MIN)
            gap = int((20 + 10 * u(_T_ESC_GAP)) * _MIN)
            for i in range(hops):
                hh = _mix(h2 + i)
                x: dict[str, Any]
                if _u16(hh, 1) < prm.good:
                    x = {"documented": True} if _u16(hh, 2) < 0.7 else {
                        "documented": True, "kb_article": None}
                elif _u16(hh, 2) < prm.kb_bad:
                    x = {"documented": True, "kb_article": f"KB-{10000 + (hh >> 48) % 90000}"}
                else:
                    x = {"documented": False} if _u16(hh, 3) < 0.5 else {}
                x["to_tier"] = min(i + 2, 4)
                raw.append((t, len(raw), tk, "escalated", "ticket_id", tid, x))
                if i + 1 < hops:
                    t += gap
            work_ms = max(work_ms, t + 20 * _MIN - contact)
        resolved = contact + work_ms
        raw.append((resolved, len(raw), tk, "resolved", "ticket_id", tid,
                    {"first_contact": fcr, "truck_roll": u(_T_TRUCK) < prm.truck}))
        closed = resolved + int((2 + 28 * _u16(h, 2)) * _MIN)
        raw.append((closed, len(raw), tk, "closed", "ticket_id", tid, None))
        if u(_T_REOPEN) < prm.reopen:
            reopened = closed + int((10 + 50 * _u16(h, 3)) * _MIN)
            again = reopened + int((20 + 70 * _u16(h2, 0)) * _MIN)
            raw.append((reopened, len(raw), tk, "reopened", "ticket_id", tid, None))
            raw.append((again, len(raw), tk, "resolved", "ticket_id", tid,
                        {"first_contact": False, "truck_roll": _u16(h2, 1) < prm.truck}))
            ts = again + int((2 + 28 * _u16(h2, 2)) * _MIN)
            raw.append((ts, len(raw), tk, "closed", "ticket_id", tid, None))
        # Post-contact surveys.
        if u(_T_CSAT) < _P_SURVEY:
            v = u(_T_CSAT_V)
            score = 5
            for i, p in enumerate(prm.csat):
                if v < p:
                    score = i + 1
                    break
                v -= p
            ts = contact + int((3 + 42 * u(_T_CSAT_T)) * _MIN)
            raw.append((ts, len(raw), "surveys", "response", "ticket_id", tid,
                        {"score": score, "kind": "csat"}))
        if u(_T_XLA) < _P_SURVEY:
            score = max(0, min(10, round(prm.xla + 1.5 * _Z[int(u(_T_XLA_V) * _NZ)])))
            ts = contact + int((3 + 42 * u(_T_XLA_T)) * _MIN)
            raw.append((ts, len(raw), "surveys", "response", "ticket_id", tid,
                        {"score": score, "kind": "xla"}))

    def _call(self, raw: list[_Raw], st: _Stream, k: int, h: int, queued: int, cid: str) -> None:
        prm = st.prm
        f = self.drift_fraction(queued) if prm.asa_end != prm.asa else 0.0
        mean = prm.asa + (prm.asa_end - prm.asa) * f
        p_abandon = prm.abandon + (prm.abandon_end - prm.abandon) * f
        raw.append((queued, len(raw), "calls", "queued", "call_id", cid,
                    {"queue": _QUEUES[int(_u16(h, 1) * len(_QUEUES))]}))
        if st.u(k, _C_AB) < p_abandon:
            wait = mean * 1.2 * _LN_PATIENCE[int(st.u(k, _C_PAT) * _NZ)]
            typ = "abandoned"
        else:
            wait = mean * _LN_WAIT[int(st.u(k, _C_WAIT) * _NZ)]
            typ = "answered"
        ts = queued + max(_S, int(wait * _S))
        raw.append((ts, len(raw), "calls", typ, "call_id", cid, None))

    def _order(self, raw: list[_Raw], st: _Stream, k: int, h: int, scheduled: int,
               n: int) -> None:
        prm = st.prm
        pid = st.partner.partner_id
        oid = f"OR-{self.tag}-{pid}-{n}"
        lead_ms = max(60 * _S, int(_LEAD_S * _LN_LEAD[int(st.u(k, _O_LEAD) * _NZ)] * _S))
        done = scheduled + lead_ms
        on_time = st.u(k, _O_ONTIME) < prm.on_time
        if _u16(h, 1) < 0.5:  # a calendar date: met iff the install's (UTC) date <= it
            due = _utc_date(done, int(2 * _u16(h, 2))) if on_time else _utc_date(done, -1)
        else:  # an instant, written with some UTC offset
            if on_time:
                due_ms = done + int((2 + 178 * _u16(h, 2)) * _MIN)
            else:
                due_ms = done - max(60 * _S, int(lead_ms * (0.1 + 0.5 * _u16(h, 2))))
            due = _rfc3339(due_ms, _DUE_OFFSETS_MIN[int(_u16(h, 3) * len(_DUE_OFFSETS_MIN))])
        od = "orders"
        if st.u(k, _O_RESCHED) < 0.1:  # booked, then rescheduled: the later due date counts
            raw.append((scheduled, len(raw), od, "scheduled", "order_id", oid,
                        {"due_date": _utc_date(scheduled, -2)}))
            raw.append((scheduled + lead_ms // 3, len(raw), od, "scheduled", "order_id", oid,
                        {"due_date": due}))
        else:
            raw.append((scheduled, len(raw), od, "scheduled", "order_id", oid, {"due_date": due}))
        if st.u(k, _O_CANCEL) < 0.04:
            ts = scheduled + int(lead_ms * 0.8)
            raw.append((ts, len(raw), od, "cancelled", "order_id", oid, None))
            return
        raw.append((done, len(raw), od, "installed", "order_id", oid, None))
        if st.u(k, _O_FAI) < prm.fai:  # failure after install: a ticket minutes later
            h3 = _mix(h ^ 0x27D4EB2F)
            severity = "down_hard" if _u16(h3, 0) < 0.3 else "service_affecting"
            opened = done + int(3 * _MIN + (_FAI_DELAY_MAX_MS - 3 * _MIN) * _u16(h3, 1))
            self._ticket(raw, st, st.fai_off, k, h3, severity, opened, False,
                         f"TT-{self.tag}-{pid}-f{n}", oid)
