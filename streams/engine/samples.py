"""Counting samples: what an accepted event adds to the windows and months of its KPIs.

A counted or valued event gives one sample at once. An event that moves a mark on an entity
(a ticket's first contact, an order's install) changes the samples its KPIs derive from that
entity: they are recomputed from the marks before and after, whatever differs is retracted and
added, so arrival order never changes the numbers. Each sample goes into the partner's window
buckets (:mod:`streams.engine.windows`) and its calendar month (:mod:`streams.engine.months`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from streams.config.catalog import Kpi, Partners
from streams.engine.bins import TargetBins
from streams.engine.entities import KEEP, EntityStore, next_mark
from streams.engine.model import LimitedSampler, PartnerState, Sample, Sampler, Warn
from streams.engine.months import MonthStore
from streams.engine.plan import Slot
from streams.engine.windows import WindowStore
from streams.ingest.contract import Parsed


class SampleCounter:
    """Adds and retracts KPI samples of one engine's partners (the per-event write path)."""

    def __init__(self, kpis: Sequence[Kpi], scale: Sequence[int], windows: WindowStore,
                 months: MonthStore, entities: EntityStore,
                 samplers: Sequence[Sampler | LimitedSampler],
                 bins: TargetBins, partners: Partners) -> None:
        self._ratio = [k.kind == "ratio" for k in kpis]
        self._kpis = tuple(kpis)
        self._lower = [k.lower_is_better for k in kpis]
        self._evidenced = [k.channel is None for k in kpis]
        """KPIs whose misses keep evidence: the catalog's (a per-channel KPI's misses are its
        base KPI's too)."""
        self._warned = [k.count_at != "decision" and k.channel is None for k in kpis]
        """KPIs whose new samples feed the early warning: not those counted when decided (a
        start's sample is born as the 0 it becomes only if its horizon passes unfollowed), nor
        the per-channel ones (never judged)."""
        self._scale = scale
        self._windows = windows
        self._months = months
        self._entities = entities
        self._samplers = samplers
        self._open_slots = entities.open_slots
        self._bins = bins
        self._binned = bins.watched
        self._partners = partners
        by_id = {kpi.id: kpi for kpi in kpis}
        self._sla_parts = {k: tuple(by_id[part.kpi] for part in kpi.sla)
                           for k, kpi in enumerate(kpis) if kpi.kind == "sla_experience"}
        """sla_experience KPIs: kpi index -> the duration KPIs of its SLA (their targets vary by
        partner, so their samplers also read ``PartnerState.sampler_args``)."""
        self._business = [k for k, kpi in enumerate(kpis)
                          if kpi.kind == "duration" and kpi.clock == "business"]
        """Durations on the business clock (per-channel ones too): their samplers read the
        partner's calendar."""
        self.replaying = False
        """Set while a restore replays the journal: months then rebuild without snapshots."""

    def add(self, st: PartnerState, k: int, ts: int, n: int, s: Any, hist_key: int | None,
            sign: int, entity: str | None = None) -> None:
        """Add (sign 1) or retract (sign -1) one sample of KPI ``k`` at time ``ts``: into its
        window buckets and its calendar month (and the bins around its target, if watched). A
        miss of the partner's target keeps ``entity`` as evidence in the month."""
        if k in self._binned:
            self._bins.add(st, k, ts, s, sign)
        if entity is not None and self._evidenced[k] and self._is_miss(st, k, n, s):
            self._months.evidence(st, k, ts, entity, sign, self.replaying)
        if sign < 0:
            n, s = -n, -s
        s2 = s * s * sign
        self._windows.add(st, k, ts, n, s, s2, hist_key, sign)
        self._months.add(st, k, ts, n, s, s2, hist_key, sign, self.replaying)

    def _is_miss(self, st: PartnerState, k: int, n: int, s: Any) -> bool:
        """Whether a sample misses the partner's target: for a counted ratio, a numerator
        event of a lower-is-better ratio (an escalation); otherwise a sample on the wrong side
        of the target (a duration over it, a late install's 0, a detractor's score)."""
        if self._ratio[k]:
            return n == 0 and self._lower[k] and s > 0
        if n != 1 or not st.miss_limits:
            return False
        limit = st.miss_limits[k]
        return bool(s > limit) if self._lower[k] else bool(s < limit)

    def fill(self, st: PartnerState, partner: str) -> None:
        """Give a new partner state what its samplers read of it: the limits of its SLA parts
        (the partner's targets, in ms, and each part's calendar), the calendar of each duration
        on the business clock; and each KPI's target in sample units (the evidence of misses)."""
        calendar = self._partners.calendar(partner)
        args: dict[int, Any] = {
            k: tuple((round(self._partners.target(partner, part) * 1000),
                      calendar if part.clock == "business" else None) for part in parts)
            for k, parts in self._sla_parts.items()}
        for k in self._business:
            args[k] = calendar
        st.sampler_args = args
        st.miss_limits = [self._partners.target(partner, kpi) * self._scale[k]
                          for k, kpi in enumerate(self._kpis)]

    def on_mark(self, st: PartnerState, slot: Slot, parsed: Parsed, warn: list[Warn]) -> None:
        """Move the mark ``slot`` of the event's entity; re-derive the samples reading it."""
        entity_id = getattr(parsed.event, slot.entity_field, None)
        if not isinstance(entity_id, str):
            return  # e.g. a ticket opened without an order_id is no follow-up
        rec = self._entities.record(st, slot.entity_topic, entity_id, parsed.ts_ms)
        i = slot.index
        new = next_mark(slot, rec[i], parsed)
        if new is KEEP:
            return
        samplers: Any = self._samplers
        limits = st.sampler_args  # the few samplers that read the partner's targets, calendar
        deps = slot.deps
        if slot.gated:  # per-channel KPIs read this mark: only the entity's channel asks
            channels = set()
            for mark in (rec[i], new) if slot.extra == "channel" else (rec[slot.gates_at],):
                if mark is not None:
                    channels.add(mark[1])
            deps = [dep for dep, gate in zip(slot.deps, slot.gates, strict=True)
                    if gate is None or gate[1] in channels]
        before = [samplers[k](rec) if k not in limits else samplers[k](rec, limits[k])
                  for k, _ in deps]
        rec[i] = new
        for (k, pos), was in zip(deps, before, strict=True):
            now = samplers[k](rec) if k not in limits else samplers[k](rec, limits[k])
            if now != was:
                self._resample(st, k, pos, was, now, warn, entity_id)
            if k in self._open_slots:
                self._entities.track_open(st, k, entity_id, rec)

    def _resample(self, st: PartnerState, k: int, pos: int, was: tuple[Sample, ...],
                  now: tuple[Sample, ...], warn: list[Warn], entity: str | None = None) -> None:
        """Retract the samples the entity no longer gives, add the new ones (as multisets: a
        mean of a field kept on an entity may give one sample twice, two answers alike)."""
        if len(was) <= 1 and len(now) <= 1:  # nearly always: one sample or none
            gone = was if was != now else ()
            added = now if was != now else ()
        else:
            left = list(now)
            taken: list[Sample] = []
            for sample in was:
                if sample in left:
                    left.remove(sample)
                else:
                    taken.append(sample)
            gone, added = tuple(taken), tuple(left)
        for sample in gone:
            _, ts, n, s, key = sample
            self.add(st, k, ts, n, s, key, -1, entity)
        for sample in added:
            role, ts, n, s, key = sample
            self.add(st, k, ts, n, s, key, 1, entity)
            if self._warned[k] and not any(old[0] == role for old in was):  # new, not a correction
                if self._ratio[k]:
                    warn.append((pos, k, None if role else 1.0))
                else:
                    warn.append((pos, k, s / self._scale[k]))
