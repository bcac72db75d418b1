"""The KPI engine: validated events in, rolling-window KPI values out.

Plain Python, no Faust: time is always an explicit argument, so the engine is
unit-tested with exact timestamps and benchmarked alone. The Faust layer feeds
it messages and persists the state changes it reports (:meth:`Engine.drain`).

How it counts
-------------
* Every KPI sample has a time and a contribution ``(n, s[, histogram key])``
  added to one bucket per window resolution (1 min buckets for 1h, 1 h buckets
  for the longer windows by default). A window is the last ``length/resolution``
  buckets, the current one included; its value is computed from the sums.
* Samples that depend on several events of one entity (a duration, a distinct
  count, a follow-up, a deadline) are derived from *marks* kept on the entity:
  the earliest start, the earliest stop, and so on. Whenever a mark changes
  the entity's sample is recomputed and, if it differs from the one already
  counted, the old contribution is retracted and the new one added. Out-of-order
  arrival therefore gives the same numbers as in-order arrival.
* An event already seen (same partner and ``event_id``) changes nothing; an
  event older than the largest window is late and dropped.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec

from . import sketch
from .catalog import Catalog, Kpi, Match, Partners
from .contract import ENTITY_FIELD, ContractError, Event, Parsed, decode, parse_due
from .judge import Cusum

SEP: Final = "\x1f"
"""Separator inside state keys (never valid in ids)."""

_ENCODER: Final = msgspec.msgpack.Encoder()


class Outcome(enum.StrEnum):
    """What became of one input message."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Result:
    """Outcome of one message, with the reason when it was rejected."""

    outcome: Outcome
    partner: str | None = None
    reason: str = ""
    ts_ms: int | None = None


@dataclass(frozen=True, slots=True)
class KpiValue:
    """A KPI's value in one window for one partner, with what a judge needs to weigh it."""

    value: float
    samples: int
    total: float = 0.0
    """Sum of the sample values (the numerator count for ratios)."""
    squares: float = 0.0
    """Sum of the squared sample values (spread of mean KPIs)."""
    hist: dict[int, int] | None = None
    """Merged log-histogram of the window (percentile KPIs)."""


Agg = list[Any]  # [n, sum, sum of squares] or [n, sum, sum of squares, {hist_key: count}]
Contribution = tuple[int, float, int | None]


@dataclass(slots=True)
class PartnerState:
    """Everything the engine keeps for one partner."""

    seen: dict[int, set[str]] = field(default_factory=dict)
    """event ids by hour bucket of their event time (a duplicate has the same time)."""
    entities: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)
    """(topic, entity id) -> {'m': marks, 'o': counted samples, 't': last event time}."""
    rings: dict[int, dict[int, dict[int, Agg]]] = field(default_factory=dict)
    """resolution ms -> bucket index -> kpi index -> aggregate."""
    last_ms: int = -1
    """Largest event time accepted for this partner."""
    cusum: dict[int, Cusum] = field(default_factory=dict)
    """kpi index -> CUSUM of its samples against the partner's target (early warning)."""
    pending: dict[int, dict[str, int]] = field(default_factory=dict)
    """open_items KPIs: kpi index -> entity id -> start time, while the stop is missing."""
    seq: int = 0
    """Accepted events so far (each journal record carries its number: replay order)."""
    months: dict[int, dict[int, Agg]] = field(default_factory=dict)
    """Calendar month (year * 12 + month - 1) -> kpi index -> aggregate, for the report card."""
    month_seq: dict[int, int] = field(default_factory=dict)
    """Month -> ``seq`` of its last persisted snapshot (-1 while it has none)."""
    months_dirty: set[int] = field(default_factory=set)
    """Months changed since their last snapshot."""
    version: int = 0
    evicted_at: int = -1
    cache_key: tuple[int, int] | None = None
    cache: dict[tuple[str, str], KpiValue] | None = None


@dataclass(frozen=True, slots=True)
class _Route:
    """One thing to do when an event of a (topic, type) arrives."""

    kpi: int
    action: str  # 'count_n' | 'count_d' | 'field' | 'mark'
    match: Match
    slot: str = ""
    entity_topic: str = ""
    entity_field: str = ""
    reducer: str = "min"  # which mark wins: earliest ('min') or latest ('max')


class Engine:
    """Rolling-window KPI state for the partners one worker owns."""

    def __init__(
        self,
        catalog: Catalog,
        partners: Partners,
        clock: str = "wall",
        journal: bool = True,
    ) -> None:
        if clock not in ("wall", "event"):
            raise ValueError(f"clock must be 'wall' or 'event', not {clock!r}")
        self.catalog = catalog
        self.partners = partners
        self.clock = clock
        self.kpis: tuple[Kpi, ...] = catalog.kpis
        self._kpi_index = {k.id: i for i, k in enumerate(self.kpis)}
        self.state: dict[str, PartnerState] = {}
        self.event_clock_ms: int | None = None
        """Largest event time accepted for the partners held here (the 'now' of the event clock).

        With several workers each has its own: the largest event time of the partitions it owns,
        recomputed when partitions move, so values never depend on which worker held what before."""
        self.counts: dict[tuple[str, Outcome], int] = {}
        self.last_event_ms: dict[str, int] = {}
        self._journal: list[tuple[bytes, bytes | None]] | None = [] if journal else None
        largest = max(catalog.windows.values(), key=lambda w: w.length_ms)
        self._late_res, self._late_buckets = largest.resolution_ms, largest.buckets
        self._seen_res = largest.resolution_ms
        self._retention_ms = max(largest.length_ms, catalog.entity_retention_ms)
        # per KPI: the resolutions it is counted at, and (window name, res, buckets)
        self._kpi_res: list[tuple[int, ...]] = []
        self._kpi_windows: list[tuple[tuple[str, int, int], ...]] = []
        for kpi in self.kpis:
            wins = tuple(
                (name, catalog.windows[name].resolution_ms, catalog.windows[name].buckets)
                for name in kpi.windows
            )
            self._kpi_windows.append(wins)
            self._kpi_res.append(tuple(sorted({r for _, r, _ in wins})))
        # how many buckets each resolution must keep
        self._keep: dict[int, int] = {}
        for wins in self._kpi_windows:
            for _, res, n in wins:
                self._keep[res] = max(self._keep.get(res, 0), n)
        self._routes = self._compile()
        self.months = MonthCalendar(catalog.report_timezone)
        self._report_months = catalog.report_months
        self._replaying = False

    # --- compilation of the catalog into routes ---------------------------------
    def _compile(self) -> dict[tuple[str, str], list[_Route]]:
        routes: dict[tuple[str, str], list[_Route]] = {}

        def add(match: Match, route: _Route) -> None:
            routes.setdefault((match.topic, match.type), []).append(route)

        def own(match: Match) -> str:
            entity = ENTITY_FIELD[match.topic]
            if entity is None:
                raise ValueError(f"{match.topic} events have no entity to track")
            return entity

        for i, kpi in enumerate(self.kpis):
            if kpi.kind == "duration":
                assert kpi.start and kpi.stop
                add(kpi.start, _Route(i, "mark", kpi.start, "start", kpi.start.topic,
                                      own(kpi.start)))
                add(kpi.stop, _Route(i, "mark", kpi.stop, "stop", kpi.stop.topic, own(kpi.stop)))
                if kpi.miss:
                    add(kpi.miss, _Route(i, "mark", kpi.miss, "miss", kpi.miss.topic,
                                         own(kpi.miss)))
            elif kpi.kind == "ratio":
                assert kpi.numerator and kpi.denominator
                for role, match in (("n", kpi.numerator), ("d", kpi.denominator)):
                    if match.distinct:
                        add(match, _Route(i, "mark", match, role, match.topic, own(match)))
                    else:
                        add(match, _Route(i, "count_" + role, match))
            elif kpi.kind == "mean_field":
                assert kpi.source
                add(kpi.source, _Route(i, "field", kpi.source, slot=kpi.field or ""))
            elif kpi.kind == "follow_up":
                assert kpi.start and kpi.follow and kpi.link
                add(kpi.start, _Route(i, "mark", kpi.start, "start", kpi.start.topic,
                                      own(kpi.start)))
                # a follow-up event is attached to the *start's* entity through the link field
                add(kpi.follow, _Route(i, "mark", kpi.follow, "follow", kpi.start.topic,
                                       kpi.link, reducer="set"))
            elif kpi.kind == "deadline":
                assert kpi.due and kpi.done
                add(kpi.due, _Route(i, "mark", kpi.due, "due", kpi.due.topic, own(kpi.due),
                                    reducer="max"))
                add(kpi.done, _Route(i, "mark", kpi.done, "done", kpi.done.topic, own(kpi.done)))
        return routes

    # --- clock ------------------------------------------------------------------
    def now(self, wall_ms: int) -> int:
        """'Now' for windows: the wall clock, or the largest event time in event mode."""
        if self.clock == "wall" or self.event_clock_ms is None:
            return wall_ms if self.clock == "wall" else 0
        return self.event_clock_ms

    # --- ingest -----------------------------------------------------------------
    def ingest(self, topic: str, raw: bytes, wall_ms: int) -> Result:
        """Validate and apply one raw message. Never raises for bad input."""
        try:
            parsed = decode(topic, raw, wall_ms)
        except ContractError as exc:
            return self.reject(topic, str(exc))
        return self.apply(parsed, wall_ms)

    def reject(self, topic: str, reason: str) -> Result:
        """Count a message that broke the contract."""
        return self._count(topic, Result(Outcome.REJECTED, reason=reason))

    def apply(self, parsed: Parsed, wall_ms: int) -> Result:
        """Apply one validated event."""
        ev, ts = parsed.event, parsed.ts_ms
        partner = ev.partner_id
        if self.partners.closed and not self.partners.known(partner):
            return self._count(parsed.topic, Result(
                Outcome.REJECTED, partner, f"unknown partner {partner!r} (partner list is closed)"))
        st = self.state.get(partner)
        # Late on the event clock is judged against the partner's own newest event: a partner's
        # events come in order from one partition, but partitions are read at different paces,
        # and a fast partition must not make a slow one's events late.
        own_newest = st.last_ms if st is not None and st.last_ms >= 0 else ts
        now = wall_ms if self.clock == "wall" else own_newest
        if ts // self._late_res <= now // self._late_res - self._late_buckets:
            return self._count(parsed.topic, Result(Outcome.LATE, partner, ts_ms=ts))
        if st is None:
            st = self.state[partner] = PartnerState()
        hour = ts // self._seen_res
        ids = st.seen.get(hour)
        if ids is None:
            ids = st.seen[hour] = set()
        elif ev.event_id in ids:
            return self._count(parsed.topic, Result(Outcome.DUPLICATE, partner, ts_ms=ts))
        ids.add(ev.event_id)
        self._apply_accepted(parsed, wall_ms, st)
        return self._count(parsed.topic, Result(Outcome.ACCEPTED, partner, ts_ms=ts))

    def _apply_accepted(self, parsed: Parsed, wall_ms: int, st: PartnerState | None = None) -> None:
        ev, ts = parsed.event, parsed.ts_ms
        partner = ev.partner_id
        if st is None:
            st = self.state.get(partner)
            if st is None:
                st = self.state[partner] = PartnerState()
            st.seen.setdefault(ts // self._seen_res, set()).add(ev.event_id)
        st.seq += 1
        if self._journal is not None:
            self._journal.append(
                (_record_key(partner, ev.event_id), _encode_record(parsed, st.seq)))
        if self.event_clock_ms is None or ts > self.event_clock_ms:
            self.event_clock_ms = ts
        if ts > st.last_ms:
            st.last_ms = ts
        for route in self._routes.get((parsed.topic, type(ev).__struct_config__.tag), ()):
            if route.match.where and not route.match.matches(ev):
                continue
            if route.action == "mark":
                self._on_mark(partner, st, route, parsed)
            elif route.action == "field":
                value = getattr(ev, route.slot, None)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self._add(partner, st, route.kpi, ts, (1, float(value), None), 1)
                    self._cusum(partner, st, route.kpi).update(float(value))
            else:
                contrib = (1, 0.0, None) if route.action == "count_d" else (0, 1.0, None)
                self._add(partner, st, route.kpi, ts, contrib, 1)
                self._count_cusum(partner, st, route.kpi, route.action == "count_n")
        st.version += 1
        self._maybe_evict(partner, st, self.now(wall_ms))
        last = self.last_event_ms.get(parsed.topic)
        if last is None or ts > last:
            self.last_event_ms[parsed.topic] = ts

    def _count(self, topic: str, result: Result) -> Result:
        key = (topic, result.outcome)
        self.counts[key] = self.counts.get(key, 0) + 1
        return result

    # --- entity marks -----------------------------------------------------------
    def _on_mark(self, partner: str, st: PartnerState, route: _Route, parsed: Parsed) -> None:
        entity_id = getattr(parsed.event, route.entity_field, None)
        if not isinstance(entity_id, str):
            return  # e.g. a ticket opened without an order_id is no follow-up
        key = (route.entity_topic, entity_id)
        rec = st.entities.get(key)
        if rec is None:
            rec = st.entities[key] = {"m": {}, "o": {}, "t": parsed.ts_ms}
        rec["t"] = max(rec["t"], parsed.ts_ms)
        marks: dict[str, Any] = rec["m"]
        slot = f"{route.kpi}.{route.slot}"
        ts = parsed.ts_ms
        changed = False
        if route.reducer == "set":
            times: list[int] = marks.setdefault(slot, [])
            if ts not in times:
                times.append(ts)
                times.sort()
                changed = True
        else:
            old = marks.get(slot)
            # ties: the earliest mark keeps the first event accepted, the latest takes the last one
            better = old is None or (ts < old[0] if route.reducer == "min" else ts >= old[0])
            if better:
                mark = [ts, self._mark_extra(route, parsed)]
                changed = mark != old
                marks[slot] = mark
        if changed:
            self._resample(partner, st, route.kpi, rec)
            if self.kpis[route.kpi].open_items:
                self._track_open(st, route.kpi, entity_id, marks)

    @staticmethod
    def _track_open(st: PartnerState, k: int, entity_id: str, marks: dict[str, Any]) -> None:
        start = marks.get(f"{k}.start")
        waiting = st.pending.setdefault(k, {})
        if start is not None and f"{k}.stop" not in marks:
            waiting[entity_id] = start[0]
        else:
            waiting.pop(entity_id, None)

    @staticmethod
    def _mark_extra(route: _Route, parsed: Parsed) -> Any:
        if route.slot == "due":
            return parsed.event.due_date
        if route.slot == "done":
            return parsed.offset_s
        return None

    def _resample(self, partner: str, st: PartnerState, k: int, rec: dict[str, Any]) -> None:
        """Recompute the entity's samples for KPI ``k``; retract/add what changed."""
        kpi = self.kpis[k]
        marks: dict[str, Any] = rec["m"]
        new: dict[str, tuple[int, Contribution]] = {}
        if kpi.kind == "duration":
            start = marks.get(f"{k}.start")
            stop = marks.get(f"{k}.stop")
            miss = marks.get(f"{k}.miss")
            end, missed = stop, False
            if miss is not None and (end is None or miss[0] < end[0]):
                end, missed = miss, True
            if start is not None and end is not None and end[0] >= start[0]:
                seconds = (end[0] - start[0]) / 1000.0
                if kpi.statistic == "share_within":
                    assert kpi.threshold_ms is not None
                    hit = not missed and end[0] - start[0] <= kpi.threshold_ms
                    new["x"] = (end[0], (1, 1.0 if hit else 0.0, None))
                elif not missed:
                    hist = sketch.key_of(seconds) if kpi.quantile is not None else None
                    new["x"] = (end[0], (1, seconds, hist))
        elif kpi.kind == "ratio":
            for role in ("n", "d"):
                mark = marks.get(f"{k}.{role}")
                if mark is not None:
                    new[role] = (mark[0], (1, 0.0, None) if role == "d" else (0, 1.0, None))
        elif kpi.kind == "follow_up":
            start = marks.get(f"{k}.start")
            if start is not None:
                assert kpi.horizon_ms is not None
                s = start[0]
                hit = any(s < f <= s + kpi.horizon_ms for f in marks.get(f"{k}.follow", ()))
                new["x"] = (s, (1, 1.0 if hit else 0.0, None))
        elif kpi.kind == "deadline":
            due, done = marks.get(f"{k}.due"), marks.get(f"{k}.done")
            if due is not None and done is not None:
                met = _deadline_met(done[0], done[1], due[1])
                new["x"] = (done[0], (1, 1.0 if met else 0.0, None))
        counted: dict[str, list[Any]] = rec["o"]
        prefix = f"{k}."
        for name in {*new, *(s[len(prefix):] for s in counted if s.startswith(prefix))}:
            slot = prefix + name
            old = counted.get(slot)
            now = new.get(name)
            if old is not None and now is not None and old[0] == now[0] and tuple(old[1]) == now[1]:
                continue
            if old is not None:
                self._add(partner, st, k, old[0], (old[1][0], old[1][1], old[1][2]), -1)
                del counted[slot]
            if now is not None:
                self._add(partner, st, k, now[0], now[1], 1)
                counted[slot] = [now[0], list(now[1])]
                if old is None:  # a new sample (not a correction) feeds the early warning
                    if kpi.kind == "ratio":
                        self._count_cusum(partner, st, k, name == "n")
                    else:
                        self._cusum(partner, st, k).update(now[1][1])

    # --- early warning -----------------------------------------------------------
    def _cusum(self, partner: str, st: PartnerState, k: int) -> Cusum:
        cusum = st.cusum.get(k)
        if cusum is None:
            kpi = self.kpis[k]
            cusum = st.cusum[k] = Cusum.for_kind(
                kpi.stat_kind, self.partners.target(partner, kpi), kpi.lower_is_better, kpi.judge)
        return cusum

    def _count_cusum(self, partner: str, st: PartnerState, k: int, numerator: bool) -> None:
        """A count ratio as a CUSUM: each denominator event adds -target, each numerator +1.

        With the CUSUM's ``z = d * (x - target)`` that is ``x = 0`` and ``x = target + 1``,
        so the drift per denominator event is exactly ``rate - target``.
        """
        cusum = self._cusum(partner, st, k)
        cusum.update(cusum.target + 1.0 if numerator else 0.0)

    def cusum_alarm(self, partner: str, kpi_id: str) -> bool:
        """Whether the partner's CUSUM for the KPI is past its threshold."""
        st = self.state.get(partner)
        cusum = st.cusum.get(self._kpi_index[kpi_id]) if st is not None else None
        return cusum is not None and cusum.alarm

    # --- buckets ----------------------------------------------------------------
    def _add(self, partner: str, st: PartnerState, k: int, ts: int, contrib: Contribution,
             sign: int) -> None:
        for res in self._kpi_res[k]:
            idx = ts // res
            ring = st.rings.get(res)
            if ring is None:
                ring = st.rings[res] = {}
            bucket = ring.get(idx)
            if bucket is None:
                bucket = ring[idx] = {}
            _bump(bucket, k, contrib, sign)
        # The calendar month of the sample. A replayed event whose effect is already in the
        # month's snapshot (it came before the snapshot) leaves the month alone.
        month = self.months.index(ts)
        if st.seq > st.month_seq.get(month, -1):
            per_kpi = st.months.get(month)
            if per_kpi is None:
                per_kpi = st.months[month] = {}
            _bump(per_kpi, k, contrib, sign)
            st.months_dirty.add(month)

    # --- eviction ---------------------------------------------------------------
    def _maybe_evict(self, partner: str, st: PartnerState, now: int) -> None:
        hour = now // 3_600_000
        if hour == st.evicted_at:
            return
        st.evicted_at = hour
        for res, ring in st.rings.items():
            floor = now // res - self._keep.get(res, 0)
            for idx in [i for i in ring if i <= floor]:
                del ring[idx]
        oldest = now - self.catalog.entity_retention_ms
        for key in [key for key, rec in st.entities.items() if rec["t"] < oldest]:
            del st.entities[key]
            for waiting in st.pending.values():
                waiting.pop(key[1], None)
        if self._replaying:
            return  # a restore only rebuilds; snapshots and deletions are written by live traffic
        self._snapshot_months(partner, st, now)
        # an event is kept (for dedup and for rebuilding entities) as long as the entity might be
        floor = (now - self._retention_ms) // self._seen_res
        for hour_idx in [h for h in st.seen if h <= floor]:
            for event_id in st.seen.pop(hour_idx):
                if self._journal is not None:
                    self._journal.append((_record_key(partner, event_id), None))

    # --- calendar months -----------------------------------------------------------
    # Months outlive the journal (13 of them, against 90 days of events), so each month's
    # aggregate is persisted as a snapshot record, rewritten (at most hourly) while it changes.
    # A snapshot carries the partner's event sequence number: on restore, events replay in
    # sequence order and only those after a month's snapshot touch that month.
    def _snapshot_months(self, partner: str, st: PartnerState, now: int) -> None:
        horizon = self.months.index(now) - self._report_months
        for month in [m for m in st.months if m < horizon]:
            del st.months[month]
            st.months_dirty.discard(month)
            if st.month_seq.pop(month, None) is not None and self._journal is not None:
                self._journal.append((_month_key(partner, month), None))
        for month in sorted(st.months_dirty):
            st.month_seq[month] = st.seq
            if self._journal is not None:
                aggs = {self.kpis[k].id: agg for k, agg in st.months[month].items()}
                self._journal.append((_month_key(partner, month), _ENCODER.encode((st.seq, aggs))))
        st.months_dirty.clear()

    def _load_month(self, partner: str, month: int, raw: bytes) -> None:
        st = self.state.get(partner)
        if st is None:
            st = self.state[partner] = PartnerState()
        seq, saved = _MONTH_DECODER.decode(raw)
        aggs: dict[int, Agg] = {}
        for kpi_id, agg in saved.items():
            k = self._kpi_index.get(kpi_id)
            if k is None:
                continue  # a KPI since removed from the catalog
            if len(agg) > 3:
                agg[3] = {int(key): int(count) for key, count in agg[3].items()}
            aggs[k] = agg
        st.months[month] = aggs
        st.month_seq[month] = seq

    # --- reading ----------------------------------------------------------------
    def evaluate(self, partner: str, now_ms: int) -> dict[tuple[str, str], KpiValue]:
        """Every (kpi id, window) with at least one sample, at time ``now_ms``."""
        st = self.state.get(partner)
        if st is None:
            return {}
        cache_key = (st.version, now_ms // min(self._keep) if self._keep else 0)
        if st.cache_key == cache_key and st.cache is not None:
            return st.cache
        out: dict[tuple[str, str], KpiValue] = {}
        for k, kpi in enumerate(self.kpis):
            for name, res, buckets in self._kpi_windows[k]:
                ring = st.rings.get(res)
                if not ring:
                    continue
                hi = now_ms // res
                lo = hi - buckets
                aggs = [b[k] for i, b in ring.items() if lo < i <= hi and k in b]
                value = _value_of(kpi, aggs)
                if value is not None:
                    out[(kpi.id, name)] = value
        st.cache_key, st.cache = cache_key, out
        return out

    def evaluate_month(self, partner: str, month: str) -> dict[str, KpiValue]:
        """Each KPI's value over one calendar month (``'2026-10'``) of the report time zone."""
        st = self.state.get(partner)
        if st is None:
            return {}
        aggs = st.months.get(self.months.parse(month), {})
        out: dict[str, KpiValue] = {}
        for k, agg in sorted(aggs.items()):
            value = _value_of(self.kpis[k], [agg])
            if value is not None:
                out[self.kpis[k].id] = value
        return out

    def months_held(self, partner: str) -> list[str]:
        """Calendar months with state for the partner, oldest first."""
        st = self.state.get(partner)
        return [self.months.name(m) for m in sorted(st.months)] if st is not None else []

    def open_items(self, partner: str, now_ms: int,
                   stages: tuple[float, ...] = (0.5, 0.75, 1.0)) -> dict[tuple[str, float], int]:
        """(kpi id, stage) -> entities still waiting whose age passed ``stage`` x the target.

        Cumulative, like histogram buckets: an item past 100% also counts at 50% and 75%.
        """
        st = self.state.get(partner)
        out: dict[tuple[str, float], int] = {}
        for k, kpi in enumerate(self.kpis):
            if not kpi.open_items:
                continue
            target_ms = self.partners.target(partner, kpi) * 1000
            waiting = st.pending.get(k, {}) if st is not None else {}
            for stage in stages:
                limit = now_ms - stage * target_ms
                out[(kpi.id, stage)] = sum(1 for start in waiting.values() if start <= limit)
        return out

    def partner_ids(self) -> list[str]:
        """Partners with state on this worker, sorted."""
        return sorted(self.state)

    def drop_partners(self, keep: Callable[[str], bool]) -> list[str]:
        """Forget partners this worker no longer owns (after a rebalance)."""
        gone = [p for p in self.state if not keep(p)]
        for p in gone:
            del self.state[p]
        if gone:
            self.event_clock_ms = max((st.last_ms for st in self.state.values()), default=None)
        return gone

    # --- persistence ------------------------------------------------------------
    # The durable state is a journal of accepted events, one record per event keyed by
    # partner and event_id (deleted once the event ages past retention). One record per
    # event makes each event's effect atomic in the changelog, so a crash between two
    # writes can never leave half an event counted; and it is the dedup set as well.
    def drain(self) -> list[tuple[bytes, bytes | None]]:
        """Journal writes since the last drain: (key, record) or (key, None) to delete."""
        out, self._journal = self._journal or [], [] if self._journal is not None else None
        return out

    def restore(self, records: Iterable[tuple[bytes, bytes]]) -> int:
        """Rebuild state from journal (key, record) pairs in any order; returns events applied.

        Events replay in the order they were accepted (their sequence number), so the rebuilt
        state is the one the live engine had; month snapshots are loaded first.
        """
        events: list[tuple[int, Parsed]] = []
        for key, raw in records:
            partner, _, rest = key.decode().partition(SEP)
            if rest.startswith(_MONTH_PREFIX):
                self._load_month(partner, MonthCalendar.parse(rest[len(_MONTH_PREFIX):]), raw)
            else:
                events.append(_decode_record(raw))
        events.sort(key=lambda e: (e[1].event.partner_id, e[0]))
        journal, self._journal = self._journal, None  # replaying writes nothing back
        self._replaying = True
        applied = 0
        try:
            for seq, p in events:
                partner = p.event.partner_id
                st = self.state.get(partner)
                if st is None:
                    st = self.state[partner] = PartnerState()
                if p.event.event_id in st.seen.get(p.ts_ms // self._seen_res, ()):
                    continue
                st.seq = seq - 1  # _apply_accepted numbers it seq again
                st.seen.setdefault(p.ts_ms // self._seen_res, set()).add(p.event.event_id)
                # replay is exempt from the late rule: the record was accepted when it arrived
                self._apply_accepted(p, p.ts_ms, st)
                applied += 1
        finally:
            self._journal = journal
            self._replaying = False
        for st in self.state.values():
            st.evicted_at = -1  # the next live event prunes and writes what a replay may not
            st.seq = max([st.seq, *st.month_seq.values()])
        return applied


_RECORD_DECODER: Final = msgspec.msgpack.Decoder(tuple[str, int, int, Event, int])
_MONTH_DECODER: Final = msgspec.msgpack.Decoder(tuple[int, dict[str, list[Any]]])


_MONTH_PREFIX: Final = "#month:"
"""Journal keys of month snapshots: '#' never starts an event id, so they cannot collide."""


def _month_key(partner: str, month: int) -> bytes:
    return f"{partner}{SEP}{_MONTH_PREFIX}{MonthCalendar.name(month)}".encode()


def _bump(aggs: dict[int, Agg], k: int, contrib: Contribution, sign: int) -> None:
    """Add (sign 1) or retract (sign -1) one sample's contribution to KPI ``k``'s aggregate."""
    n, s, hist_key = contrib
    agg = aggs.get(k)
    if agg is None:
        agg = aggs[k] = [0, 0.0, 0.0] if hist_key is None else [0, 0.0, 0.0, {}]
    agg[0] += sign * n
    agg[1] += sign * s
    agg[2] += sign * s * s
    if hist_key is not None:
        hist: dict[int, int] = agg[3]
        count = hist.get(hist_key, 0) + sign
        if count:
            hist[hist_key] = count
        else:
            hist.pop(hist_key, None)


class MonthCalendar:
    """Calendar months of one time zone: month index (year * 12 + month - 1) of a timestamp.

    Why a cache: every sample needs its month, and a zone-aware datetime per sample would cost
    more than the rest of the update; months are few, so their bounds are looked up once.
    """

    def __init__(self, zone: str = "UTC") -> None:
        self.zone = ZoneInfo(zone)
        self._bounds: list[tuple[int, int, int]] = []  # (start ms, end ms, index), recent first

    def index(self, ts_ms: int) -> int:
        """The month holding ``ts_ms``."""
        for start, end, month in self._bounds:
            if start <= ts_ms < end:
                return month
        local = datetime.fromtimestamp(ts_ms / 1000, self.zone)
        month = local.year * 12 + local.month - 1
        self._bounds.insert(0, (self.start_ms(month), self.start_ms(month + 1), month))
        del self._bounds[4:]
        return month

    def start_ms(self, month: int) -> int:
        """First millisecond of the month, in this zone."""
        year, m0 = divmod(month, 12)
        return int(datetime(year, m0 + 1, 1, tzinfo=self.zone).timestamp() * 1000)

    @staticmethod
    def name(month: int) -> str:
        """'2026-10' for the month index."""
        year, m0 = divmod(month, 12)
        return f"{year:04d}-{m0 + 1:02d}"

    @staticmethod
    def parse(name: str) -> int:
        """The month index of '2026-10'; ValueError for anything else."""
        year, sep, mon = name.partition("-")
        if not (sep and len(year) == 4 and len(mon) == 2 and year.isdigit() and mon.isdigit()
                and 1 <= int(mon) <= 12):
            raise ValueError(f"{name!r} is not a month like '2026-10'")
        return int(year) * 12 + int(mon) - 1


def _record_key(partner: str, event_id: str) -> bytes:
    return f"{partner}{SEP}{event_id}".encode()


def _encode_record(parsed: Parsed, seq: int) -> bytes:
    return _ENCODER.encode((parsed.topic, parsed.ts_ms, parsed.offset_s, parsed.event, seq))


def _decode_record(raw: bytes) -> tuple[int, Parsed]:
    topic, ts_ms, offset_s, event, seq = _RECORD_DECODER.decode(raw)
    return seq, Parsed(topic, event, ts_ms, offset_s)


def _value_of(kpi: Kpi, aggs: list[Agg]) -> KpiValue | None:
    n = sum(a[0] for a in aggs)
    if n <= 0:
        return None
    total = math.fsum(a[1] for a in aggs)
    squares = math.fsum(a[2] for a in aggs)
    if kpi.quantile is not None:
        hist = sketch.merge(a[3] for a in aggs if len(a) > 3)
        q = sketch.quantile([hist], kpi.quantile)
        return None if q is None else KpiValue(q, n, total, squares, hist)
    return KpiValue(total / n, n, total, squares)


def _deadline_met(done_ms: int, offset_s: int, due_date: str) -> bool:
    day, instant = parse_due(due_date)
    if instant is not None:
        return done_ms <= instant
    assert day is not None
    local = datetime.fromtimestamp(done_ms / 1000, UTC) + timedelta(seconds=offset_s)
    return local.date() <= day


def attainment(kpi: Kpi, value: float, target: float) -> float:
    """1.0 on target, above 1 better than target, for either direction; capped at 10."""
    cap = 10.0
    if kpi.lower_is_better:
        if value <= 0:
            return cap
        return min(cap, target / value)
    if target <= 0:
        return cap
    return min(cap, value / target)


__all__ = ["Engine", "KpiValue", "MonthCalendar", "Outcome", "Result", "attainment", "date"]
