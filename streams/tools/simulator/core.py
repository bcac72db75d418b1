"""The simulator: arrivals scheduled on one heap, lifecycles generated when their first event is due."""

from __future__ import annotations

import gc
import hashlib
import heapq
import math
import time
from typing import Any

from streams.tools.simulator.arrivals import Entry, Stream
from streams.tools.simulator.lifecycles import Lifecycles
from streams.tools.simulator.profiles import (
    BASE_PARTNERS,
    BASE_RATE,
    DEFAULT_PARTNERS,
    MIN,
    PER_MIN,
    PROFILE_PARAMS,
    SimPartner,
)
from streams.tools.simulator.sequences import ALPHA, M64, T_C, T_SEV, U16, mix, severity_of
from streams.tools.simulator.throttle import STEERED_SINCE_MS, EscalationThrottle


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
            if p.profile not in PROFILE_PARAMS:
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
        self._life = Lifecycles(self.start_ms, self.drift_minutes * MIN, self.tag, warm_start)
        scale = (self.rate / BASE_RATE) * (BASE_PARTNERS / len(partners))
        self._streams: list[Stream] = []
        for partner in partners:
            for kind, per_min in PER_MIN.items():
                self._streams.append(Stream(seed, self.tag, len(self._streams), partner, kind,
                                             per_min * scale, warm_start))
        self._heap: list[Entry] = []
        reach = max(s.before_ms + s.after_ms + 3 * s.spacing for s in self._streams)
        self.history_start_ms = self.start_ms - int(reach) if warm_start else self.start_ms
        """No event is earlier than this: the start of the warm-start backlog."""
        self._throttle = EscalationThrottle(
            {p.partner_id for p in partners if p.profile == "gaming"},
            self.start_ms - STEERED_SINCE_MS if warm_start else self.start_ms)

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
            return self._throttle(self._emit(t0, t1))
        finally:
            if gc_enabled:
                gc.enable()

    def drift_fraction(self, ts_ms: int) -> float:
        """How far the drifting partner has drifted at ``ts_ms`` (0 up to start, then 0..1)."""
        return self._life.drift_fraction(ts_ms)

    # --- scheduling ----------------------------------------------------------------------

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
                    h = mix(hbase ^ (kk & M64))
                    anchor = start + int((kk + 0.9 * ((h & 0xFFFF) * U16 - 0.5)) * spacing)
                    push(heap, (anchor, ((kk - k0) * n_streams + si) * 512, -1, si, kk, None))
                continue
            # The opened event precedes the first contact (the anchor) by the OTS delay.
            a_sev, o_sev = ALPHA[T_SEV], st.off[T_SEV]
            a_c, o_c = ALPHA[T_C], st.off[T_C]
            for kk in ks:
                h = mix(hbase ^ (kk & M64))
                anchor = start + int((kk + 0.9 * ((h & 0xFFFF) * U16 - 0.5)) * spacing)
                severity = severity_of((kk * a_sev + o_sev) % 1.0)
                anchor -= self._life.contact_delay_ms(st, severity, anchor, (kk * a_c + o_c) % 1.0)
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
                raw = self._life.lifecycle(st, k)
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
