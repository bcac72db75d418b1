"""The KPI engine: validated events in, rolling-window KPI values out.

Plain Python, no Faust: time is always an explicit argument, so the engine is
unit-tested with exact timestamps and benchmarked alone. The Faust layer feeds
it messages and persists the state changes it reports (:meth:`Engine.drain`).

How it counts
-------------
* Every KPI sample has a time and a contribution ``(n, s[, histogram key])``
  added to one bucket per window resolution (1 min buckets for 1h, 1 h buckets
  for the longer windows by default). A window is the last ``length/resolution``
  buckets, the current one included; its value is computed from the sums, kept
  as running totals of its closed buckets (slid as time passes) plus the
  current bucket, so reading a window costs the same whatever its length.
* Samples that depend on several events of one entity (a duration, a distinct
  count, a follow-up, a deadline) are derived from *marks* kept on the entity:
  the earliest start, the earliest stop, and so on; KPIs that read the same
  events share the mark. Whenever a mark changes, the samples of the KPIs
  reading it are recomputed from the marks before and after; whatever differs
  is retracted and added. Out-of-order arrival therefore gives the same numbers
  as in-order arrival.
* An event already seen (same partner and ``event_id``) changes nothing; an
  event older than the largest window is late and dropped.
"""

from __future__ import annotations

import array
import enum
import functools
import gc
import itertools
import math
import types
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

import msgspec
import xxhash

from streams.config.catalog import Catalog, Kpi, Match, Partners
from streams.engine import sketch
from streams.engine.cusum import Cusum
from streams.engine.dedup import SeenIds
from streams.ingest.contract import ENTITY_FIELD, ContractError, Event, Parsed, decode, parse_due

SEP: Final = "\x1f"
"""Separator inside state keys (never valid in ids)."""

_ENCODER: Final = msgspec.msgpack.Encoder()
_STATE_UIDS: Final = itertools.count()


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


OPEN_ITEM_STAGES: Final = (0.5, 0.75, 1.0)
"""Shares of the target at which a waiting item counts in ``open_items`` (cumulative)."""

_NO_VALUES: Final[Mapping[tuple[str, str], KpiValue]] = types.MappingProxyType({})
"""The values of a window without samples (one shared, read-only object)."""

Agg = list[Any]
"""A month aggregate: [n, sum, sum of squares] or [n, sum, sum of squares, {hist_key: count}]
(percentile KPIs), in base units (seconds)."""
Bucket = array.array
"""A window bucket: float64 [n, sum, sum of squares] for each KPI index, packed (24 B per KPI).

The sums are in the KPI's *internal* unit: whole milliseconds for durations, counts for ratios,
the field's value for mean_field KPIs. Integers are exact in a float64 up to 2**53 (285,000
years of milliseconds), so counts and duration sums never drift under retraction or in the
running window totals; sums of squares (used only for the spread) are rounded as floats are.
Percentile KPIs keep their samples' histogram keys beside the bucket (``PartnerState.hists``)."""
Hists = dict[int, dict[int, int]]
"""kpi index -> log-histogram (sketch keys -> count)."""
HistCodes = array.array
"""The percentile samples of one bucket: int64 ``kpi index << 32 | (sketch key - ZERO_KEY)``, one
per sample (a multiset: order means nothing, a retraction removes one equal code).

Why not a histogram per KPI per bucket: a bucket of the long windows holds a handful of samples,
and two dicts (bucket -> KPI -> key -> count) cost 560 B for one sample against 88 B here, for
each of the 720 hourly buckets of every partner. A bucket with thousands of samples costs 8 B
per sample, still less than a dict unless the samples share a dozen keys each."""
_HIST_MASK: Final = (1 << 32) - 1
Record = list[Any] | array.array
"""An entity's marks: [last event time, mark of slot 1, mark of slot 2, ...] (see
``PartnerState.entities``). An int64 array, :data:`UNSET` for a mark not set yet, on entity
topics whose marks are all plain times (see ``Engine._blank``); a list, None for unset, on topics
with a mark that carries more (a due date, a UTC offset, a set of follow-up times)."""
UNSET: Final = -(2**63)
"""A packed record's unset mark (no event time is that small)."""
Sample = tuple[int, int, int, Any, int | None]
"""One counted sample of an entity: (role, time, n, s, histogram key); role 0 is the sample of
a duration/follow-up/deadline KPI or a ratio's numerator, role 1 a ratio's denominator."""


@dataclass(slots=True)
class _Totals:
    """A window's running sums over its *closed* buckets: indices ``hi - span < i < hi``.

    The current bucket ``hi`` (where nearly every new sample lands) is added at read time, so
    an in-order event never touches the totals; a sample added or retracted in an older bucket
    of the range updates them. Reading at a later ``hi`` slides the range bucket by bucket."""

    hi: int
    sums: list[float]
    """[n, sum, sum of squares] per KPI index, like a bucket."""
    hists: Hists = field(default_factory=dict)
    slid: int = 0
    """Buckets slid since the totals were rebuilt: after a whole window's worth they are summed
    afresh, so float rounding (sums of squares, mean_field sums) cannot accumulate."""


@dataclass(slots=True)
class PartnerState:
    """Everything the engine keeps for one partner."""

    seen: SeenIds = field(default_factory=SeenIds)
    """:func:`id_hash` of the accepted event ids, each with the hour of its event time: an id
    is a duplicate whatever the time of a redelivery (see :mod:`streams.engine.dedup`)."""
    entities: dict[str, dict[str, Record]] = field(default_factory=dict)
    """entity topic -> entity id -> [last event time, mark of slot 1, mark of slot 2, ...].

    A mark is an event time (earliest/latest reducers), ``(time, extra)`` for marks that carry
    the due date or the UTC offset, or a sorted tuple of times (follow-ups); unset until an
    event sets it (see :data:`Record`). The samples an entity contributes are a function of its
    marks, recomputed on change."""
    rings: list[dict[int, Bucket]] = field(default_factory=list)
    """per resolution (``Engine._resolutions``): bucket index -> packed sums of every KPI."""
    hists: list[dict[int, HistCodes]] = field(default_factory=list)
    """per resolution: bucket index -> the percentile samples counted in it (:data:`HistCodes`)."""
    windows: list[_Totals | None] = field(default_factory=list)
    """per window (``Engine._windows``): running totals, None until read (or invalidated)."""
    values: list[tuple[int, int, dict[tuple[str, str], KpiValue], list[int]] | None] = field(
        default_factory=list)
    """per window: (version, bucket index, values, ``changes`` then) of its last evaluation."""
    changes: list[int] = field(default_factory=list)
    """per KPI index: samples added or retracted so far. Within one bucket index a KPI's window
    value moves only with these, so an evaluation recomputes just the KPIs that moved."""
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
    """Bumped by every accepted event: with the minute, it keys the cached evaluation."""
    uid: int = field(default_factory=lambda: next(_STATE_UIDS))
    """Unique per state object, so a state rebuilt by a restore never matches an old key."""
    evicted_at: int = -1
    cache_key: tuple[int, int] | None = None
    cache: dict[tuple[str, str], KpiValue] | None = None


@dataclass(slots=True)
class _Slot:
    """One mark kept on entities: the earliest/latest time of the events of one selector.

    KPIs that look at the same events of the same entity share the slot (the three
    open-to-status KPIs share 'first contacted', four KPIs share 'first resolved'), so each
    event updates each mark once, then recomputes the samples of the KPIs reading it."""

    topic: str
    type: str
    where: tuple[tuple[str, Any], ...]
    entity_topic: str
    entity_field: str
    reducer: str  # 'min' (earliest wins) | 'max' (latest wins) | 'set' (every time)
    extra: str  # '' | 'due' (the due date) | 'done' (the UTC offset): kept with the time
    index: int = 0
    """Position in the entity record (0 is the record's last event time)."""
    unset: Any = None
    """The record's unset mark: None, or :data:`UNSET` on a packed topic (set after compiling)."""
    deps: list[tuple[int, int]] = field(default_factory=list)
    """(kpi index, position of the KPI's selector among the (topic, type) selectors)."""


class Engine:
    """Rolling-window KPI state for the partners one worker owns."""

    def __init__(
        self,
        catalog: Catalog,
        partners: Partners,
        clock: str = "wall",
        journal: bool = True,
        max_partners: int | None = None,
    ) -> None:
        if clock not in ("wall", "event"):
            raise ValueError(f"clock must be 'wall' or 'event', not {clock!r}")
        self.max_partners = max_partners
        """Most partners live traffic may create state for (None: no cap); see ``apply``."""
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
        # windows some KPI uses, in catalog order: (name, resolution ms, ring, buckets, kpis)
        used = [name for name in catalog.windows if any(name in k.windows for k in self.kpis)]
        self._resolutions: tuple[int, ...] = tuple(
            sorted({catalog.windows[name].resolution_ms for name in used}))
        ring_of = {res: i for i, res in enumerate(self._resolutions)}
        self._windows: tuple[tuple[str, int, int, int, tuple[int, ...]], ...] = tuple(
            (name, catalog.windows[name].resolution_ms, ring_of[catalog.windows[name].resolution_ms],
             catalog.windows[name].buckets,
             tuple(k for k, kpi in enumerate(self.kpis) if name in kpi.windows))
            for name in used)
        self._window_at = {w[0]: i for i, w in enumerate(self._windows)}
        """Window name -> its index in ``_windows`` (windows no KPI is counted in have none)."""
        # per KPI: (resolution, ring, ((window, buckets), ...)) for each resolution it is counted at
        self._kpi_adds: list[tuple[tuple[int, int, tuple[tuple[int, int], ...]], ...]] = []
        for k, kpi in enumerate(self.kpis):
            self._kpi_adds.append(tuple(
                (res, ring_of[res], tuple((w, span) for w, (_, r, _, span, ks)
                                          in enumerate(self._windows) if r == res and k in ks))
                for res in sorted({catalog.windows[name].resolution_ms for name in kpi.windows})))
        # how many buckets each resolution must keep
        self._keep: dict[int, int] = {}
        for _, res, _, span, _ in self._windows:
            self._keep[res] = max(self._keep.get(res, 0), span)
        self._min_res = min(self._resolutions) if self._resolutions else 1
        self._empty_bucket = array.array("d", [0.0]) * (3 * len(self.kpis))
        self._scale = [1000 if k.kind == "duration" and k.statistic != "share_within" else 1
                       for k in self.kpis]
        """Internal unit per base unit of each KPI's sums (durations are summed in ms)."""
        self._sampler: list[Callable[[Record], tuple[Sample, ...]]] = []
        self._open_slots: dict[int, tuple[int, int, Any]] = {}
        """open_items KPIs: kpi index -> (start slot, stop slot, the record's unset mark)."""
        self._routes = self._compile()
        self.months = MonthCalendar(catalog.report_timezone)
        self._month = (0, 0, 0)
        """(first ms, end ms, index) of the month last counted into: most samples fall in it."""
        self._report_months = catalog.report_months
        self._replaying = False

    def _new_state(self) -> PartnerState:
        return PartnerState(rings=[{} for _ in self._resolutions],
                            hists=[{} for _ in self._resolutions],
                            windows=[None] * len(self._windows), values=[None] * len(self._windows),
                            changes=[0] * len(self.kpis))

    # --- compilation of the catalog into routes ---------------------------------
    def _compile(self) -> dict[tuple[str, str], list[tuple[Any, ...]]]:
        """Per (topic, type): the steps an event takes, in catalog order.

        ``(0, slot)`` update a mark; ``(1, where, kpi, n, s, position)`` count the event;
        ``(2, where, kpi, field, position)`` add a field's value. ``position`` orders the early
        warning updates of one event the way the selectors are listed in the catalog."""
        routes: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        positions: dict[tuple[str, str], int] = {}
        slots: dict[tuple[Any, ...], _Slot] = {}
        per_topic: dict[str, int] = {}

        def position(match: Match) -> int:
            key = (match.topic, match.type)
            positions[key] = positions.get(key, -1) + 1
            return positions[key]

        def own(match: Match) -> str:
            entity = ENTITY_FIELD[match.topic]
            if entity is None:
                raise ValueError(f"{match.topic} events have no entity to track")
            return entity

        def mark(k: int, match: Match, entity_topic: str, entity_field: str, reducer: str = "min",
                 extra: str = "") -> int:
            key = (match.topic, match.type, match.where, entity_topic, entity_field, reducer, extra)
            slot = slots.get(key)
            if slot is None:
                per_topic[entity_topic] = per_topic.get(entity_topic, 0) + 1
                slot = slots[key] = _Slot(match.topic, match.type, match.where, entity_topic,
                                          entity_field, reducer, extra, per_topic[entity_topic])
                routes.setdefault((match.topic, match.type), []).append((0, slot))
            pos = position(match)
            if all(dep != k for dep, _ in slot.deps):  # a KPI reading one slot twice resamples once
                slot.deps.append((k, pos))
            return slot.index

        def count(k: int, match: Match, n: int, s: int) -> None:
            routes.setdefault((match.topic, match.type), []).append(
                (1, match.where, k, n, s, position(match)))

        # Samplers of durations and distinct ratios compare marks with the unset mark of their
        # topic's records, known once every slot is: (kpi index, entity topic, build(unset)).
        pending: list[tuple[int, str, Callable[[Any], Callable[[Record], tuple[Sample, ...]]]]]
        pending = []
        for k, kpi in enumerate(self.kpis):
            if kpi.kind == "duration":
                assert kpi.start and kpi.stop
                start = mark(k, kpi.start, kpi.start.topic, own(kpi.start))
                stop = mark(k, kpi.stop, kpi.stop.topic, own(kpi.stop))
                miss = mark(k, kpi.miss, kpi.miss.topic, own(kpi.miss)) if kpi.miss else 0
                pending.append((k, kpi.start.topic, functools.partial(
                    _duration_sampler, kpi, start, stop, miss)))
                self._sampler.append(_no_samples)
                if kpi.open_items:
                    self._open_slots[k] = (start, stop, None)
            elif kpi.kind == "ratio":
                assert kpi.numerator and kpi.denominator
                num = den = 0
                if kpi.numerator.distinct:
                    num = mark(k, kpi.numerator, kpi.numerator.topic, own(kpi.numerator))
                else:
                    count(k, kpi.numerator, 0, 1)
                if kpi.denominator.distinct:
                    den = mark(k, kpi.denominator, kpi.denominator.topic, own(kpi.denominator))
                else:
                    count(k, kpi.denominator, 1, 0)
                topic = kpi.numerator.topic if num else kpi.denominator.topic
                pending.append((k, topic, functools.partial(_ratio_sampler, num, den)))
                self._sampler.append(_no_samples)
            elif kpi.kind == "mean_field":
                assert kpi.source
                routes.setdefault((kpi.source.topic, kpi.source.type), []).append(
                    (2, kpi.source.where, k, kpi.field or "", position(kpi.source)))
                self._sampler.append(_no_samples)
            elif kpi.kind == "follow_up":
                assert kpi.start and kpi.follow and kpi.link and kpi.horizon_ms is not None
                start = mark(k, kpi.start, kpi.start.topic, own(kpi.start))
                # a follow-up event is attached to the *start's* entity through the link field
                follow = mark(k, kpi.follow, kpi.start.topic, kpi.link, reducer="set")
                self._sampler.append(_follow_up_sampler(start, follow, kpi.horizon_ms))
            elif kpi.kind == "deadline":
                assert kpi.due and kpi.done
                due = mark(k, kpi.due, kpi.due.topic, own(kpi.due), reducer="max", extra="due")
                done = mark(k, kpi.done, kpi.done.topic, own(kpi.done), extra="done")
                self._sampler.append(_deadline_sampler(due, done))
            else:
                self._sampler.append(_no_samples)
        # A topic whose marks are all plain times keeps its records packed: an int64 array is
        # 8 B per mark against a list slot and an int object (8 + 32 B), for every entity of
        # the retention (the largest share of a partner's memory).
        plain = {topic: all(not s.extra and s.reducer != "set"
                            for s in slots.values() if s.entity_topic == topic)
                 for topic in per_topic}
        self._blank: dict[str, Record] = {
            topic: (array.array("q", [UNSET]) if plain[topic] else [None]) * (n + 1)
            for topic, n in per_topic.items()}
        """Entity topic -> a record with every mark unset (copied for each new entity)."""
        for slot in slots.values():
            slot.unset = UNSET if plain[slot.entity_topic] else None
        for k, topic, build in pending:
            unset = UNSET if plain.get(topic) else None
            self._sampler[k] = build(unset)
            if k in self._open_slots:
                start, stop, _ = self._open_slots[k]
                self._open_slots[k] = (start, stop, unset)
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
            if not self.has_room_for(partner):
                return self._count(parsed.topic, Result(
                    Outcome.REJECTED, partner,
                    f"partner cap reached: this worker holds {len(self.state)} partners "
                    f"(settings.max_partners {self.max_partners}); partner {partner!r} not kept"))
            st = self.state[partner] = self._new_state()
        h = id_hash(ev.event_id)
        if h in st.seen:  # by id alone: a re-stamped redelivery is a duplicate too
            return self._count(parsed.topic, Result(Outcome.DUPLICATE, partner, ts_ms=ts))
        st.seen.add(h, ts // self._seen_res)
        self._apply_accepted(parsed, wall_ms, st, h)
        return self._count(parsed.topic, Result(Outcome.ACCEPTED, partner, ts_ms=ts))

    def _apply_accepted(self, parsed: Parsed, wall_ms: int, st: PartnerState, h: int) -> None:
        """Apply an event not seen before (its id hash ``h`` already remembered)."""
        ev, ts = parsed.event, parsed.ts_ms
        partner = ev.partner_id
        st.seq += 1
        if self._journal is not None:
            self._journal.append((_record_key(partner, h), _encode_record(parsed, st.seq)))
        if self.event_clock_ms is None or ts > self.event_clock_ms:
            self.event_clock_ms = ts
        if ts > st.last_ms:
            st.last_ms = ts
        # early-warning updates of this event, applied in catalog order at the end
        warn: list[tuple[int, int, float | None]] = []
        for step in self._routes.get((parsed.topic, type(ev).__struct_config__.tag), ()):
            if step[0] == 0:
                slot: _Slot = step[1]
                if slot.where and not _matches(slot.where, ev):
                    continue
                self._on_mark(partner, st, slot, parsed, warn)
            elif step[0] == 1:
                _, where, k, n, s, pos = step
                if where and not _matches(where, ev):
                    continue
                self._add(st, k, ts, n, s, None, 1)
                warn.append((pos, k, None if n else 1.0))
            else:
                _, where, k, name, pos = step
                if where and not _matches(where, ev):
                    continue
                value = getattr(ev, name, None)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    self._add(st, k, ts, 1, float(value), None, 1)
                    warn.append((pos, k, float(value)))
        if warn:
            if len(warn) > 1:
                warn.sort(key=_first)
            for _, k, x in warn:
                cusum = self._cusum(partner, st, k)
                if x is None or self.kpis[k].kind == "ratio":
                    # a count ratio: each denominator adds -target, each numerator +1 (see below)
                    cusum.update(0.0 if x is None else cusum.target + 1.0)
                else:
                    cusum.update(x)
        st.version += 1
        # Eviction runs on the clock lateness is judged by: on the event clock the partner's
        # own newest event (a partner far behind the others on this worker keeps its ids and
        # entities for as long as its late events are still accepted), on the wall clock the
        # wall. A replay goes by the partner's own newest event on either clock: it stands in
        # for the clock the partner saw live.
        now = st.last_ms if self._replaying or self.clock == "event" else wall_ms
        if now // 3_600_000 != st.evicted_at:  # hourly, per partner
            self._maybe_evict(partner, st, now)
        last = self.last_event_ms.get(parsed.topic)
        if last is None or ts > last:
            self.last_event_ms[parsed.topic] = ts

    def _count(self, topic: str, result: Result) -> Result:
        key = (topic, result.outcome)
        self.counts[key] = self.counts.get(key, 0) + 1
        return result

    # --- entity marks -----------------------------------------------------------
    def _on_mark(self, partner: str, st: PartnerState, slot: _Slot, parsed: Parsed,
                 warn: list[tuple[int, int, float | None]]) -> None:
        entity_id = getattr(parsed.event, slot.entity_field, None)
        if not isinstance(entity_id, str):
            return  # e.g. a ticket opened without an order_id is no follow-up
        ts = parsed.ts_ms
        entities = st.entities.get(slot.entity_topic)
        if entities is None:
            entities = st.entities[slot.entity_topic] = {}
        rec = entities.get(entity_id)
        if rec is None:
            rec = entities[entity_id] = self._blank[slot.entity_topic][:]
            rec[0] = ts
        elif ts > rec[0]:
            rec[0] = ts
        i = slot.index
        old = rec[i]
        if slot.reducer == "set":
            if old is not None and ts in old:
                return
            new: Any = (ts,) if old is None else tuple(sorted((*old, ts)))
        elif slot.extra:
            # ties: the earliest mark keeps the first event accepted, the latest takes the last one
            if old is not None and (ts >= old[0] if slot.reducer == "min" else ts < old[0]):
                return
            new = (ts, parsed.event.due_date if slot.extra == "due" else parsed.offset_s)
            if new == old:
                return
        else:
            if old != slot.unset and (ts >= old if slot.reducer == "min" else ts <= old):
                return
            new = ts
        samplers = self._sampler
        before = [samplers[k](rec) for k, _ in slot.deps]
        rec[i] = new
        for (k, pos), was in zip(slot.deps, before, strict=True):
            now = samplers[k](rec)
            if now != was:
                self._resample(st, k, pos, was, now, warn)
            if k in self._open_slots:
                self._track_open(st, k, entity_id, rec)

    def _track_open(self, st: PartnerState, k: int, entity_id: str, rec: Record) -> None:
        start, stop, unset = self._open_slots[k]
        waiting = st.pending.get(k)
        if waiting is None:
            waiting = st.pending[k] = {}
        if rec[start] != unset and rec[stop] == unset:
            waiting[entity_id] = rec[start]
        else:
            waiting.pop(entity_id, None)

    def _resample(self, st: PartnerState, k: int, pos: int, was: tuple[Sample, ...],
                  now: tuple[Sample, ...], warn: list[tuple[int, int, float | None]]) -> None:
        """Retract the samples the entity no longer gives, add the new ones."""
        for sample in was:
            if sample not in now:
                self._add(st, k, sample[1], sample[2], sample[3], sample[4], -1)
        for sample in now:
            if sample in was:
                continue
            self._add(st, k, sample[1], sample[2], sample[3], sample[4], 1)
            role = sample[0]
            if not any(old[0] == role for old in was):  # a new sample, not a correction
                if self.kpis[k].kind == "ratio":
                    warn.append((pos, k, None if role else 1.0))
                else:
                    warn.append((pos, k, sample[3] / self._scale[k]))

    # --- early warning -----------------------------------------------------------
    def _cusum(self, partner: str, st: PartnerState, k: int) -> Cusum:
        """The CUSUM of KPI ``k``: its samples, or for a count ratio each denominator event
        as 0 and each numerator event as ``target + 1`` (with the CUSUM's
        ``z = d * (x - target)`` the drift per denominator event is exactly ``rate - target``)."""
        cusum = st.cusum.get(k)
        if cusum is None:
            kpi = self.kpis[k]
            cusum = st.cusum[k] = Cusum.for_kind(
                kpi.stat_kind, self.partners.target(partner, kpi), kpi.lower_is_better, kpi.judge)
        return cusum

    def cusum_alarm(self, partner: str, kpi_id: str) -> bool:
        """Whether the partner's CUSUM for the KPI is past its threshold."""
        st = self.state.get(partner)
        cusum = st.cusum.get(self._kpi_index[kpi_id]) if st is not None else None
        return cusum is not None and cusum.alarm

    # --- buckets ----------------------------------------------------------------
    def _add(self, st: PartnerState, k: int, ts: int, n: int, s: Any, hist_key: int | None,
             sign: int) -> None:
        """Add (sign 1) or retract (sign -1) one sample of KPI ``k`` at time ``ts``."""
        if sign < 0:
            n, s = -n, -s
        s2 = s * s * sign
        windows = st.windows
        st.changes[k] += 1
        i = 3 * k
        code = (k << 32) | (hist_key - sketch.ZERO_KEY) if hist_key is not None else 0
        for res, ring_i, wins in self._kpi_adds[k]:
            idx = ts // res
            ring = st.rings[ring_i]
            bucket = ring.get(idx)
            if bucket is None:
                bucket = ring[idx] = self._empty_bucket[:]
            bucket[i] += n
            bucket[i + 1] += s
            bucket[i + 2] += s2
            if hist_key is not None:
                _bump_codes(st.hists[ring_i], idx, code, sign)
            for w, span in wins:
                totals = windows[w]
                if totals is not None and totals.hi - span < idx < totals.hi:
                    sums = totals.sums
                    sums[i] += n
                    sums[i + 1] += s
                    sums[i + 2] += s2
                    if hist_key is not None:
                        _bump_hist(totals.hists.setdefault(k, {}), hist_key, sign)
        # The calendar month of the sample. A replayed event whose effect is already in the
        # month's snapshot (it came before the snapshot) leaves the month alone.
        lo, hi, month = self._month
        if not lo <= ts < hi:
            month = self.months.index(ts)
            self._month = (self.months.start_ms(month), self.months.start_ms(month + 1), month)
        if not self._replaying or st.seq > st.month_seq.get(month, -1):  # live: always after
            per_kpi = st.months.get(month)
            if per_kpi is None:
                per_kpi = st.months[month] = {}
            scale = self._scale[k]
            if scale != 1:
                s, s2 = s / scale, s2 / (scale * scale)
            agg = per_kpi.get(k)
            if agg is None:
                agg = per_kpi[k] = [0, 0.0, 0.0] if hist_key is None else [0, 0.0, 0.0, {}]
            agg[0] += n
            agg[1] += s
            agg[2] += s2
            if hist_key is not None:
                _bump_hist(agg[3], hist_key, sign)
            st.months_dirty.add(month)

    # --- eviction ---------------------------------------------------------------
    def _maybe_evict(self, partner: str, st: PartnerState, now: int) -> None:
        hour = now // 3_600_000
        if hour == st.evicted_at:
            return
        st.evicted_at = hour
        for ring_i, (res, ring) in enumerate(zip(self._resolutions, st.rings, strict=True)):
            floor = now // res - self._keep.get(res, 0)
            old = [i for i in ring if i <= floor]
            hists = st.hists[ring_i]
            for idx in old:
                del ring[idx]
                hists.pop(idx, None)
            if old:  # running totals still counting a dropped bucket are rebuilt when read
                newest = max(old)
                for w, (_, _, ring_w, span, _) in enumerate(self._windows):
                    totals = st.windows[w]
                    if ring_w == ring_i and totals is not None and totals.hi - span < newest:
                        st.windows[w] = None
                        st.values[w] = None
        oldest = now - self.catalog.entity_retention_ms
        for entities in st.entities.values():
            for entity_id in [e for e, rec in entities.items() if rec[0] < oldest]:
                del entities[entity_id]
                for waiting in st.pending.values():
                    waiting.pop(entity_id, None)
        if self._replaying:
            return  # a restore only rebuilds; snapshots and deletions are written by live traffic
        self._snapshot_months(partner, st, now)
        # an event is kept (for dedup and for rebuilding entities) as long as the entity might be
        gone = st.seen.expire((now - self._retention_ms) // self._seen_res)
        if gone and self._journal is not None:
            self._journal.extend((_record_key(partner, h), None) for h in gone)

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
            st = self.state[partner] = self._new_state()
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
    def evaluation_key(self, partner: str, now_ms: int) -> tuple[int, int, int] | None:
        """What :meth:`evaluate` depends on at ``now_ms``: equal keys, equal values (and
        CUSUM alarms, which only events move). None for a partner without state."""
        st = self.state.get(partner)
        if st is None:
            return None
        return (st.uid, st.version, now_ms // self._min_res)

    def evaluate(self, partner: str, now_ms: int) -> dict[tuple[str, str], KpiValue]:
        """Every (kpi id, window) with at least one sample, at time ``now_ms``.

        O(KPIs x windows) per call: each window keeps running totals of its closed buckets
        (slid forward bucket by bucket as time passes), plus the current bucket read here."""
        st = self.state.get(partner)
        if st is None:
            return {}
        cache_key = (st.version, now_ms // self._min_res)
        if st.cache_key == cache_key and st.cache is not None:
            return st.cache
        out: dict[tuple[str, str], KpiValue] = {}
        for values in self._refresh(st, now_ms):
            out.update(values)
        st.cache_key, st.cache = cache_key, out
        return out

    def window_values(self, partner: str, now_ms: int, windows: Iterable[str] | None = None,
                      ) -> dict[str, Mapping[tuple[str, str], KpiValue]]:
        """:meth:`evaluate` by window name (``windows`` only, when given; a window no KPI is
        counted in is left out). Each window's mapping stays the very same object until one of
        its values changes (a new one is built, never mutated), so a renderer can keep what it
        wrote from it and compare by identity."""
        at = self._window_at
        # a catalog window no KPI is counted in has no ring here, and no values
        wanted = (range(len(at)) if windows is None else [at[w] for w in windows if w in at])
        st = self.state.get(partner)
        if st is None:
            return {self._windows[w][0]: _NO_VALUES for w in wanted}
        return {self._windows[w][0]: values
                for w, values in zip(wanted, self._refresh(st, now_ms, wanted), strict=True)}

    def _refresh(self, st: PartnerState, now_ms: int,
                 wanted: Iterable[int] | None = None) -> list[Mapping[tuple[str, str], KpiValue]]:
        """The values at ``now_ms`` of each window (index in ``_windows``; every window by
        default), recomputing only what moved since they were last read."""
        out: list[Mapping[tuple[str, str], KpiValue]] = []
        changes = st.changes
        for w in range(len(self._windows)) if wanted is None else wanted:
            name, res, ring_i, span, in_window = self._windows[w]
            ring = st.rings[ring_i]
            if not ring:
                out.append(_NO_VALUES)
                continue
            hi = now_ms // res
            cached = st.values[w]
            if cached is not None and cached[1] == hi:
                if cached[0] == st.version:
                    out.append(cached[2])  # a new minute leaves the hour-resolution windows be
                    continue
                # Same bucket index, new events: only the KPIs they moved are recomputed; the
                # others keep their KpiValue objects, which a judge compares by identity first.
                then = cached[3]
                moved = [k for k in in_window if changes[k] != then[k]]
                values = cached[2] if not moved else self._window_values(
                    st, w, name, ring_i, hi, span, moved, dict(cached[2]))
            else:
                values = self._window_values(st, w, name, ring_i, hi, span, in_window, {})
            st.values[w] = (st.version, hi, values, changes[:])
            out.append(values)
        return out

    def _window_values(self, st: PartnerState, w: int, name: str, ring_i: int, hi: int,
                       span: int, ks: Iterable[int],
                       values: dict[tuple[str, str], KpiValue]) -> dict[tuple[str, str], KpiValue]:
        """``values`` with the entries of KPIs ``ks`` in window ``w`` (re)computed at bucket
        index ``hi``: set where the KPI has samples, removed where it has none."""
        kpis = self.kpis
        ring = st.rings[ring_i]
        totals = self._totals(st, w, ring_i, hi, span)
        sums, current = totals.sums, ring.get(hi)
        for k in ks:
            kpi = kpis[k]
            i = 3 * k
            n = sums[i] + current[i] if current is not None else sums[i]
            if n <= 0:
                values.pop((kpi.id, name), None)
                continue
            scale = self._scale[k]
            if current is None:
                total, squares = sums[i + 1] / scale, sums[i + 2] / (scale * scale)
            else:
                total = (sums[i + 1] + current[i + 1]) / scale
                squares = (sums[i + 2] + current[i + 2]) / (scale * scale)
            if kpi.quantile is None:
                values[(kpi.id, name)] = KpiValue(total / n, int(n), total, squares)
                continue
            hist = sketch.merge((totals.hists.get(k, {}),
                                 _hist_of(st.hists[ring_i].get(hi), k)))
            q = sketch.quantile_of(hist, kpi.quantile)
            if q is not None:
                values[(kpi.id, name)] = KpiValue(q, int(n), total, squares, hist)
            else:
                values.pop((kpi.id, name), None)
        return values

    def _totals(self, st: PartnerState, w: int, ring_i: int, hi: int, span: int) -> _Totals:
        """Window ``w``'s totals over buckets ``hi - span < i < hi``, slid or rebuilt."""
        ring, hists = st.rings[ring_i], st.hists[ring_i]
        totals = st.windows[w]
        if totals is not None and totals.hi == hi:
            return totals
        if totals is not None and totals.hi < hi < totals.hi + span and totals.slid < span:
            totals.slid += hi - totals.hi
            for i in range(totals.hi - span + 1, hi - span + 1):  # leaving the window
                bucket = ring.get(i)
                if bucket is not None:
                    _merge(totals, bucket, hists.get(i), -1)
            for i in range(totals.hi, hi):  # closed since the last read
                bucket = ring.get(i)
                if bucket is not None:
                    _merge(totals, bucket, hists.get(i), 1)
            totals.hi = hi
            return totals
        totals = st.windows[w] = _Totals(hi, [0.0] * len(self._empty_bucket))
        for i, bucket in ring.items():
            if hi - span < i < hi:
                _merge(totals, bucket, hists.get(i), 1)
        return totals

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
                   stages: tuple[float, ...] = OPEN_ITEM_STAGES) -> dict[tuple[str, float], int]:
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

    def has_room_for(self, partner: str) -> bool:
        """Whether live traffic of ``partner`` may be kept: held already, or within the cap."""
        return (partner in self.state or self.max_partners is None
                or len(self.state) < self.max_partners)

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
    # partner and the event_id's hash (:func:`id_hash`; deleted once the event ages past
    # retention). One record per
    # event makes each event's effect atomic in the changelog, so a crash between two
    # writes can never leave half an event counted; and it is the dedup set as well.
    def drain(self) -> list[tuple[bytes, bytes | None]]:
        """Journal writes since the last drain: (key, record) or (key, None) to delete."""
        out, self._journal = self._journal or [], [] if self._journal is not None else None
        return out

    def restore(self, records: Iterable[tuple[bytes, bytes]]) -> int:
        """Rebuild state from journal (key, record) pairs in any order; returns events applied."""
        applied = 0
        for step in self.restore_steps(records):
            applied = step
        return applied

    def restore_steps(self, records: Iterable[tuple[bytes, bytes]],
                      chunk: int = 5_000) -> Iterator[int]:
        """:meth:`restore` in steps: yields the events applied so far after every ``chunk``.

        Events replay in the order they were accepted (their sequence number), so the rebuilt
        state is the one the live engine had; month snapshots are loaded first. The caller may
        stop between steps (the state is then partial and must be dropped).
        """
        events: list[tuple[int, Parsed]] = []
        for key, raw in records:
            partner, _, rest = key.decode().partition(SEP)
            if rest.startswith(_MONTH_PREFIX):
                self._load_month(partner, MonthCalendar.parse(rest[len(_MONTH_PREFIX):]), raw)
            else:
                events.append(_decode_record(raw))
        events.sort(key=lambda e: (e[1].event.partner_id, e[0]))
        applied = 0
        for start in range(0, len(events), chunk):
            journal, self._journal = self._journal, None  # replaying writes nothing back
            self._replaying = True
            try:
                for seq, p in events[start:start + chunk]:
                    partner = p.event.partner_id
                    st = self.state.get(partner)
                    if st is None:
                        st = self.state[partner] = self._new_state()
                    h = id_hash(p.event.event_id)
                    if h in st.seen:
                        continue
                    st.seq = seq - 1  # _apply_accepted numbers it seq again
                    st.seen.add(h, p.ts_ms // self._seen_res)
                    # replay is exempt from the late rule: the record was accepted when it arrived
                    self._apply_accepted(p, p.ts_ms, st, h)
                    applied += 1
            finally:
                self._journal = journal
                self._replaying = False
            yield applied
        for st in self.state.values():
            st.evicted_at = -1  # the next live event prunes and writes what a replay may not
            st.seq = max([st.seq, *st.month_seq.values()])
        yield applied


_RECORD_DECODER: Final = msgspec.msgpack.Decoder(tuple[str, int, int, Event, int])
_MONTH_DECODER: Final = msgspec.msgpack.Decoder(tuple[int, dict[str, list[Any]]])


_MONTH_PREFIX: Final = "#month:"
"""Journal keys of month snapshots: '#' never starts an event id, so they cannot collide."""


def _month_key(partner: str, month: int) -> bytes:
    return f"{partner}{SEP}{_MONTH_PREFIX}{MonthCalendar.name(month)}".encode()


def _bump_hist(hist: dict[int, int], key: int, sign: int) -> None:
    count = hist.get(key, 0) + sign
    if count:
        hist[key] = count
    else:
        hist.pop(key, None)


def _bump_codes(hists: dict[int, HistCodes], idx: int, code: int, sign: int) -> None:
    """Add (sign 1) or retract (-1) one percentile sample's code in bucket ``idx``."""
    codes = hists.get(idx)
    if sign > 0:
        if codes is None:
            hists[idx] = array.array("q", (code,))
        else:
            codes.append(code)
        return
    # Only a retraction into a bucket already evicted (older than every window) finds no
    # sample: its sums go negative in a fresh bucket no window reads, evicted again next hour;
    # the histogram has nothing to take away.
    if codes is None:
        return
    try:
        codes.remove(code)
    except ValueError:
        return
    if not codes:
        del hists[idx]


def _hist_of(codes: HistCodes | None, k: int) -> dict[int, int]:
    """KPI ``k``'s histogram (sketch key -> count) of one bucket's samples."""
    hist: dict[int, int] = {}
    if codes:
        zero, mask = sketch.ZERO_KEY, _HIST_MASK
        for code in codes:
            if code >> 32 == k:
                key = (code & mask) + zero
                hist[key] = hist.get(key, 0) + 1
    return hist


def _merge(totals: _Totals, bucket: Bucket, codes: HistCodes | None, sign: int) -> None:
    """Add (1) or subtract (-1) a bucket's sums and percentile samples to window totals."""
    if sign > 0:
        totals.sums = [t + b for t, b in zip(totals.sums, bucket, strict=True)]
    else:
        totals.sums = [t - b for t, b in zip(totals.sums, bucket, strict=True)]
    if codes:
        zero, mask, hists = sketch.ZERO_KEY, _HIST_MASK, totals.hists
        for code in codes:
            hist = hists.get(code >> 32)
            if hist is None:
                hist = hists[code >> 32] = {}
            _bump_hist(hist, (code & mask) + zero, sign)


def settle_gc() -> None:
    """Take the engine's state out of the cyclic garbage collector's sight (call after recovery).

    The engine holds millions of small long-lived containers (entity records, window buckets,
    dedup sets) that contain no reference cycles: reference counting frees them. Every
    collection of the oldest generation still traverses all of them; in bench/engine that is
    about a fifth of ingest time. ``gc.freeze()`` moves every object alive now (the recovered
    state) into the permanent generation, which collections skip; a gen-0 threshold of 10,000
    (default 700) lets the per-event temporaries die by reference counting before a young
    collection looks at them. Objects created later are collected as usual; a frozen object
    that later ends up in a reference cycle is never reclaimed, a small cost per recovery
    (rebalances are rare) against a rescan of the whole state at every full collection.
    """
    gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


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


def id_hash(event_id: str) -> int:
    """The 64-bit hash (XXH3) an event id is deduplicated and journalled by.

    Why a hash, not the id: 90 days of ids are the engine's largest per-event state after the
    entity marks, and a hash is 8 B against an id's 50-80 B as a str. Two different ids of one
    partner's retained events share a hash with probability about n**2 / 2**65: 5e-12 for the
    14,000 events of 30 days of busy traffic. XXH3's output is fixed by its specification, so
    journal keys stay the same across versions and machines (unlike ``hash()``, salted per
    process)."""
    return xxhash.xxh3_64_intdigest(event_id.encode())


def _record_key(partner: str, h: int) -> bytes:
    """The journal key of an event: partner and the id's hash (16 hex digits)."""
    return f"{partner}{SEP}{h:016x}".encode()


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


_parse_due: Final = functools.lru_cache(maxsize=4096)(parse_due)
"""Due dates repeat (one per order, re-read on every change of the order's marks)."""


def _deadline_met(done_ms: int, offset_s: int, due_date: str) -> bool:
    day, instant = _parse_due(due_date)
    if instant is not None:
        return done_ms <= instant
    assert day is not None
    local = datetime.fromtimestamp(done_ms / 1000, UTC) + timedelta(seconds=offset_s)
    return local.date() <= day


# --- samples of an entity, per KPI kind (compiled once per KPI) ------------------------------
def _no_samples(rec: Record) -> tuple[Sample, ...]:
    return ()


def _duration_sampler(kpi: Kpi, start_i: int, stop_i: int, miss_i: int,
                      unset: Any) -> Callable[[Record], tuple[Sample, ...]]:
    """Start to the earliest stop (or miss), counted at the end; in whole milliseconds."""
    within = kpi.threshold_ms if kpi.statistic == "share_within" else None
    percentile = kpi.quantile is not None
    key_of = sketch.key_of

    def samples(rec: Record) -> tuple[Sample, ...]:
        start = rec[start_i]
        if start == unset:
            return ()
        end, missed = rec[stop_i], False
        if miss_i:
            miss = rec[miss_i]
            if miss != unset and (end == unset or miss < end):
                end, missed = miss, True
        if end == unset or end < start:
            return ()
        if within is not None:
            return ((0, end, 1, 0 if missed or end - start > within else 1, None),)
        if missed:
            return ()
        ms = end - start
        return ((0, end, 1, ms, key_of(ms / 1000.0) if percentile else None),)

    return samples


def _ratio_sampler(num_i: int, den_i: int,
                   unset: Any) -> Callable[[Record], tuple[Sample, ...]]:
    """A distinct numerator (role 0) and/or denominator (role 1), each at its earliest event."""

    def samples(rec: Record) -> tuple[Sample, ...]:
        num = rec[num_i] if num_i else unset
        den = rec[den_i] if den_i else unset
        if num == unset:
            return () if den == unset else ((1, den, 1, 0, None),)
        if den == unset:
            return ((0, num, 0, 1, None),)
        return ((0, num, 0, 1, None), (1, den, 1, 0, None))

    return samples


def _follow_up_sampler(start_i: int, follow_i: int,
                       horizon_ms: int) -> Callable[[Record], tuple[Sample, ...]]:
    """1 when a follow-up came within the horizon after the start, counted at the start."""

    def samples(rec: Record) -> tuple[Sample, ...]:
        start = rec[start_i]
        if start is None:
            return ()
        follows = rec[follow_i] or ()
        hit = any(start < f <= start + horizon_ms for f in follows)
        return ((0, start, 1, 1 if hit else 0, None),)

    return samples


def _deadline_sampler(due_i: int, done_i: int) -> Callable[[Record], tuple[Sample, ...]]:
    """1 when done by the latest due date, counted when done."""

    def samples(rec: Record) -> tuple[Sample, ...]:
        due, done = rec[due_i], rec[done_i]
        if due is None or done is None:
            return ()
        return ((0, done[0], 1, 1 if _deadline_met(done[0], done[1], due[1]) else 0, None),)

    return samples


def _matches(where: tuple[tuple[str, Any], ...], event: Any) -> bool:
    """Match.matches: every filter holds; ``None`` matches an absent or null field."""
    for name, want in where:
        got = getattr(event, name, None)
        if got != want or (want is not None and type(got) is not type(want)):
            return False
    return True


def _first(item: tuple[int, int, float | None]) -> int:
    return item[0]


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


__all__ = ["Engine", "KpiValue", "MonthCalendar", "Outcome", "Result", "attainment", "date",
           "settle_gc"]
