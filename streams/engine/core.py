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

The parts
---------
This module is the facade: events in (:meth:`Engine.apply`), values out
(:meth:`Engine.evaluate`), the journal drained and restored. It delegates to
:mod:`~streams.engine.kinds` and :mod:`~streams.engine.plan` (the catalog compiled into
routes and samplers), and to the storage parts, each behind a small interface:
:mod:`~streams.engine.entities` (marks, open items), :mod:`~streams.engine.dedup` (ids seen),
:mod:`~streams.engine.windows` (buckets, totals), :mod:`~streams.engine.months` (report
months); :mod:`~streams.engine.journal` encodes the records; :mod:`~streams.engine.model`
holds the records they share.
"""

from __future__ import annotations

import gc
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import NamedTuple

import numpy as np

from streams.config.catalog import Catalog, Kpi, Partners
from streams.engine import snapshot
from streams.engine.bins import TargetBins
from streams.engine.entities import COLD_AFTER_MS, EntityStore
from streams.engine.journal import (
    CLOSED_PREFIX,
    SEP,
    STATE_PREFIX,
    Write,
    decode_events,
    encode_record,
    id_hash,
    read_journal,
    record_key,
    state_key,
)
from streams.engine.kinds import compile_kpis
from streams.engine.model import (
    NO_VALUES,
    OPEN_ITEM_STAGES,
    URGENT,
    ClosedMonth,
    KpiValue,
    OpenItem,
    Outcome,
    PartnerState,
    Record,
    Result,
    Warn,
    attainment,
)
from streams.engine.months import MonthCalendar, MonthStore
from streams.engine.plan import COUNT, MARK
from streams.engine.samples import SampleCounter
from streams.engine.warning import EarlyWarning
from streams.engine.windows import FloatArray, WindowStore
from streams.ingest.contract import ENTITY_FIELD, ContractError, Parsed, decode

HOUR_MS = 3_600_000
SNAPSHOTS_PER_STEP = 4
"""Snapshots :meth:`Engine.restore_steps` loads between two steps (about 40 ms when filled)."""


class Snapshot(NamedTuple):
    """What :meth:`Engine.snapshot` made of a partner."""

    writes: list[Write]
    """The journal writes, in order: the snapshot record (when kept) last."""
    size: int
    """Bytes of the snapshot record (kept or not)."""
    kept: bool
    """Whether the snapshot record is among the writes (False: over the size limit)."""


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
        """The catalog's KPIs (judged, exported by id)."""
        counted = catalog.counted
        """... and after them the per-channel KPIs: what the stores below count, by index."""
        self._kpi_index = {k.id: i for i, k in enumerate(counted)}
        self.state: dict[str, PartnerState] = {}
        self.event_clock_ms: int | None = None
        """Largest event time accepted for the partners held here (the 'now' of the event clock).

        With several workers each has its own: the largest event time of the partitions it owns,
        recomputed when partitions move, so values never depend on which worker held what before."""
        self.counts: dict[tuple[str, Outcome], int] = {}
        self.last_event_ms: dict[str, int] = {}
        self._journal: list[Write] | None = [] if journal else None
        largest = max(catalog.windows.values(), key=lambda w: w.length_ms)
        self._late_res, self._late_buckets = largest.resolution_ms, largest.buckets
        # ids are kept by the hour of their event time, whatever the windows' resolutions
        self._seen_res = HOUR_MS
        self._retention_ms = max(largest.length_ms, catalog.entity_retention_ms)
        self._scale = [1000 if k.kind == "duration" and k.statistic != "share_within" else 1
                       for k in counted]
        """Internal unit per base unit of each KPI's sums (durations are summed in ms)."""
        self._windows = WindowStore(catalog, counted, self._scale)
        plan, packed, samplers = compile_kpis(counted)
        self._routes = plan.routes
        self._entities = EntityStore(plan.per_topic, packed, plan.open_slots, counted, partners,
                                     plan.open_pauses)
        self.months = MonthCalendar(catalog.report_timezone)
        self._months = MonthStore(counted, self.months, catalog.report_months, self._scale,
                                  catalog.month_close_ms)
        self._bins = TargetBins(counted, partners, self._scale, largest.length_ms)
        self._samples = SampleCounter(counted, self._scale, self._windows, self._months,
                                      self._entities, samplers, self._bins, partners)
        self._warning = EarlyWarning(self.kpis, partners)
        self._replaying = False
        self._catalog_digest = snapshot.catalog_digest(catalog)
        self._digests: dict[str, str] = {}
        """Partner -> the digest its snapshots carry (:meth:`_digest`)."""
        self.restore_stats: dict[str, int] = {}
        """What the last restore took from snapshots: ``snapshots`` loaded, ``refused`` (taken
        under another configuration or unreadable: those partners replayed every event),
        ``events_covered`` (the retained events the loaded snapshots stand for: their dedup
        ids), ``records_skipped`` (event records read that a snapshot covers) and ``events``
        replayed."""
        self.refusals: list[tuple[str, str]] = []
        """(partner, reason) of the last restore's refused snapshots (the first 20)."""

    def _new_state(self, partner: str) -> PartnerState:
        st = self._windows.fill(PartnerState())
        self._bins.fill(st, partner)
        self._samples.fill(st, partner)
        return st

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
            st = self.state[partner] = self._new_state(partner)
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
            self._journal.append((record_key(partner, h), encode_record(parsed, st.seq)))
        now = st.last_ms if self._replaying or self.clock == "event" else wall_ms
        if not self._replaying:
            # months due to close are frozen before this event counts (it may be a late one)
            self._months.close_due(partner, st, max(now, ts), self._journal)
        if self.event_clock_ms is None or ts > self.event_clock_ms:
            self.event_clock_ms = ts
        if ts > st.last_ms:
            st.last_ms = ts
        if ts > st.topic_last_ms.get(parsed.topic, -1):
            st.topic_last_ms[parsed.topic] = ts
        # early-warning updates of this event, applied in catalog order at the end
        warn: list[Warn] = []
        samples = self._samples
        field = ENTITY_FIELD.get(parsed.topic)
        entity = getattr(ev, field, None) if field is not None else getattr(ev, "ticket_id", None)
        for step in self._routes.get((parsed.topic, type(ev).__struct_config__.tag), ()):
            if step.where and not step.matches(ev):
                continue
            if step.kind == MARK:
                samples.on_mark(st, step.slot, parsed, warn)
            elif step.kind == COUNT:
                k, n = step.kpi, step.n
                samples.add(st, k, ts, n, step.s, None, 1, entity)
                warn.append((step.position, k, None if n else 1.0))
            else:
                value = getattr(ev, step.field, None)
                if isinstance(value, int | float) and not isinstance(value, bool):
                    k = step.kpi
                    samples.add(st, k, ts, 1, float(value), None, 1, entity or ev.event_id)
                    warn.append((step.position, k, float(value)))
        if warn:
            self._warning.feed(partner, st, warn)
        if st.closed_touched and not self._replaying:
            self._months.restate(partner, st, max(now, ts), self._journal)
        st.version += 1
        # Eviction runs on the clock lateness is judged by: on the event clock the partner's
        # own newest event (a partner far behind the others on this worker keeps its ids and
        # entities for as long as its late events are still accepted), on the wall clock the
        # wall. A replay goes by the partner's own newest event on either clock: it stands in
        # for the clock the partner saw live.
        now = st.last_ms if self._replaying or self.clock == "event" else wall_ms
        if now // HOUR_MS != st.evicted_at:  # hourly, per partner
            self._maybe_evict(partner, st, now)
        last = self.last_event_ms.get(parsed.topic)
        if last is None or ts > last:
            self.last_event_ms[parsed.topic] = ts

    def _count(self, topic: str, result: Result) -> Result:
        key = (topic, result.outcome)
        self.counts[key] = self.counts.get(key, 0) + 1
        return result

    def cusum_alarm(self, partner: str, kpi_id: str) -> bool:
        """Whether the partner's CUSUM for the KPI is past its threshold."""
        st = self.state.get(partner)
        return st is not None and self._warning.alarm(st, self._kpi_index[kpi_id])

    # --- eviction ---------------------------------------------------------------
    def _maybe_evict(self, partner: str, st: PartnerState, now: int) -> None:
        hour = now // HOUR_MS
        if hour == st.evicted_at:
            return
        st.evicted_at = hour
        self._windows.evict(st, now)
        self._bins.evict(st, now)
        self._entities.evict(st, now - self.catalog.entity_retention_ms, now - COLD_AFTER_MS)
        if self._replaying:
            return  # a restore only rebuilds; snapshots and deletions are written by live traffic
        self._months.snapshot(partner, st, now, self._journal)
        # an event is kept (for dedup and for rebuilding entities) as long as the entity might be
        gone = st.seen.expire((now - self._retention_ms) // self._seen_res)
        if gone and self._journal is not None:
            self._journal.extend((record_key(partner, h), None) for h in gone)

    # --- reading ----------------------------------------------------------------
    def evaluation_key(self, partner: str, now_ms: int) -> tuple[int, int, int] | None:
        """What :meth:`evaluate` depends on at ``now_ms``: equal keys, equal values (and
        CUSUM alarms, which only events move). None for a partner without state."""
        st = self.state.get(partner)
        if st is None:
            return None
        return (st.uid, st.version, now_ms // self._windows.min_resolution)

    def evaluate(self, partner: str, now_ms: int) -> dict[tuple[str, str], KpiValue]:
        """Every (kpi id, window) with at least one sample, at time ``now_ms``.

        O(KPIs x windows) per call: each window keeps running totals of its closed buckets
        (slid forward bucket by bucket as time passes), plus the current bucket read here."""
        st = self.state.get(partner)
        if st is None:
            return {}
        cache_key = (st.version, now_ms // self._windows.min_resolution)
        if st.cache_key == cache_key and st.cache is not None:
            return st.cache
        out: dict[tuple[str, str], KpiValue] = {}
        for values in self._windows.refresh(st, now_ms):
            out.update(values)
        st.cache_key, st.cache = cache_key, out
        return out

    def window_values(self, partner: str, now_ms: int, windows: Iterable[str] | None = None,
                      ) -> dict[str, Mapping[tuple[str, str], KpiValue]]:
        """:meth:`evaluate` by window name (``windows`` only, when given; a window no KPI is
        counted in is left out). Each window's mapping stays the very same object until one of
        its values changes (a new one is built, never mutated), so a renderer can keep what it
        wrote from it and compare by identity."""
        at, specs = self._windows.index, self._windows.specs
        # a catalog window no KPI is counted in has no ring here, and no values
        wanted = (range(len(at)) if windows is None else [at[w] for w in windows if w in at])
        st = self.state.get(partner)
        if st is None:
            return {specs[w].name: NO_VALUES for w in wanted}
        return {specs[w].name: values
                for w, values in zip(wanted, self._windows.refresh(st, now_ms, wanted), strict=True)}

    def integrity_inputs(self, partner: str, kpi_id: str, window: str, now_ms: int
                         ) -> tuple[FloatArray, list[int]]:
        """What the integrity lens reads of a KPI in a window at ``now_ms``: its closed buckets'
        ``(n, sum)``, oldest first, as an ``(m, 2)`` array, and (KPIs watched for bunching) the bin
        counts around the partner's target over the window's days. Empty for a partner without
        state."""
        st, w = self.state.get(partner), self._windows.index.get(window)
        if st is None or w is None:
            return np.zeros((0, 2)), []
        k = self._kpi_index[kpi_id]
        span = self._windows.specs[w].resolution_ms * self._windows.specs[w].buckets
        bins = self._bins.counts(st, k, now_ms, span) if k in self._bins.watched else []
        return self._windows.closed_buckets(st, k, w, now_ms), bins

    def evaluate_month(self, partner: str, month: str) -> dict[str, KpiValue]:
        """Each KPI's value over one calendar month (``'2026-10'``) of the report time zone."""
        st = self.state.get(partner)
        return self._months.evaluate(st, month) if st is not None else {}

    def evaluate_period(self, partner: str, months: list[str]) -> dict[str, KpiValue]:
        """Each KPI's value over several calendar months together (a quarter, a year): from the
        months' aggregates merged, not an average of the monthly values."""
        st = self.state.get(partner)
        return self._months.evaluate_many(st, months) if st is not None else {}

    def closed_month(self, partner: str, month: str) -> ClosedMonth | None:
        """The month's frozen values and restatements, None while it is open."""
        st = self.state.get(partner)
        return st.closed.get(MonthCalendar.parse(month)) if st is not None else None

    def evidence(self, partner: str, month: str) -> dict[str, list[str]]:
        """kpi id -> ids of the entities behind the month's misses (at most EVIDENCE_CAP)."""
        st = self.state.get(partner)
        return self._months.evidence_of(st, month) if st is not None else {}

    def restatements(self, partner: str) -> int | None:
        """Restatements of the partner's closed months kept; None while no month has closed."""
        st = self.state.get(partner)
        if st is None or not st.closed:
            return None
        return sum(len(c.restatements) for c in st.closed.values())

    def months_held(self, partner: str) -> list[str]:
        """Calendar months with state for the partner, oldest first."""
        st = self.state.get(partner)
        return self._months.held(st) if st is not None else []

    def open_items(self, partner: str, now_ms: int,
                   stages: tuple[float, ...] = OPEN_ITEM_STAGES) -> dict[tuple[str, float], int]:
        """(kpi id, stage) -> entities still waiting whose age passed ``stage`` x the target.

        Cumulative, like histogram buckets: an item past 100% also counts at 50% and 75%.
        """
        return self._entities.open_items(self.state.get(partner), partner, now_ms, stages)

    def open_list(self, partner: str, now_ms: int,
                  kpis: frozenset[str] | None = None) -> list[OpenItem]:
        """The partner's entities still waiting (the ledger's rows; of ``kpis`` only, when
        given), unsorted."""
        return self._entities.open_list(self.state.get(partner), partner, now_ms, kpis)

    def most_urgent_open(self, partner: str, now_ms: int, n: int,
                         kpis: frozenset[str] | None = None) -> tuple[list[OpenItem], int]:
        """The partner's ``n`` open items at risk or breached with the least time left (of
        ``kpis`` only, when given), most urgent first, and how many are at risk or breached:
        what ``open_list`` then a sort and a cut gives, without making every item."""
        return self.open_selection(partner, now_ms, n, kpis, URGENT)

    def open_selection(self, partner: str, now_ms: int, n: int,
                       kpis: frozenset[str] | None = None, state: str | None = None,
                       ) -> tuple[list[OpenItem], int]:
        """The partner's ``n`` open items with the least time left whose state is ``state``
        (one of ``OPEN_STATES``, ``URGENT`` for at risk or breached, None for any; of ``kpis``
        only, when given), most urgent first, and how many have that state: ``open_list``
        filtered, sorted and cut, without making every item."""
        return self._entities.select(self.state.get(partner), partner, now_ms, n, kpis, state)

    def oldest_open(self, partner: str, now_ms: int) -> dict[str, int]:
        """open_items KPI id -> age in ms of the partner's oldest waiting entity."""
        return self._entities.oldest(self.state.get(partner), partner, now_ms)

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
    # The durable state is a journal of accepted events, one record per event (see
    # :mod:`streams.engine.journal`), plus a snapshot record per calendar month.
    def drain(self) -> list[Write]:
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

        Month records are loaded first, then each partner's snapshot (when it was taken under
        this configuration), then the events the snapshots do not cover replay in the order
        they were accepted (their sequence number), so the rebuilt state is the one the live
        engine had. The caller may stop between steps (the state is then partial and must be
        dropped).
        """
        snapshots, records_read = read_journal(records)
        states: list[tuple[str, bytes]] = []
        for partner, name, raw in snapshots:
            if name == STATE_PREFIX:
                states.append((partner, raw))
                continue
            prefix, _, month = name.rpartition(":")
            if prefix + ":" == CLOSED_PREFIX:
                self._months.load_closed(self._held(partner), MonthCalendar.parse(month), raw)
            else:
                self._months.load(self._held(partner), MonthCalendar.parse(month), raw)
        covered: dict[str, int] = {}
        self.restore_stats = {"snapshots": 0, "refused": 0, "events_covered": 0}
        self.refusals = []
        # a filled partner's snapshot takes about 10 ms to load: a few at a time, so that a
        # caller running in an event loop keeps it turning (heartbeats, /ready) between them
        for start in range(0, len(states), SNAPSHOTS_PER_STEP):
            covered |= self._load_snapshots(states[start:start + SNAPSHOTS_PER_STEP])
            yield 0
        events = decode_events(records_read, covered)
        self.restore_stats |= {"events": len(events),
                               "records_skipped": len(records_read) - len(events)}
        del records_read
        applied = 0
        for start in range(0, len(events), chunk):
            applied += self._replay(events[start:start + chunk])
            yield applied
        for st in self.state.values():
            st.evicted_at = -1  # the next live event prunes and writes what a replay may not
            st.seq = max([st.seq, *st.month_seq.values()])
        yield applied

    def _load_snapshots(self, states: list[tuple[str, bytes]]) -> dict[str, int]:
        """Load the partners' snapshots that fit this configuration; partner -> the last
        sequence number each covers (its events up to there are not replayed). Counts into
        ``restore_stats`` and ``refusals``."""
        covered: dict[str, int] = {}
        for partner, raw in states:
            st = self._held(partner)
            try:
                digest, seq = snapshot.peek(raw)
                if digest != self._digest(partner):
                    raise snapshot.SnapshotError("taken under another catalog or partner file")
                snapshot.load(st, raw)
            except snapshot.SnapshotError as exc:
                self.restore_stats["refused"] += 1
                if len(self.refusals) < 20:
                    self.refusals.append((partner, str(exc)))
                continue
            st.snap_seq = covered[partner] = seq
            self.restore_stats["snapshots"] += 1
            # each retained event keeps its id until its record is deleted: as many as records
            self.restore_stats["events_covered"] += len(st.seen)
            if self.event_clock_ms is None or st.last_ms > self.event_clock_ms:
                self.event_clock_ms = st.last_ms
            for topic, ts in st.topic_last_ms.items():
                if ts > self.last_event_ms.get(topic, -1):
                    self.last_event_ms[topic] = ts
        return covered

    def _digest(self, partner: str) -> str:
        """The digest the partner's snapshots carry under this configuration: of what a fresh
        state of it derives from the catalog and the partner file (fixed for the process)."""
        digest = self._digests.get(partner)
        if digest is None:
            st = self.state.get(partner) or self._new_state(partner)
            digest = self._digests[partner] = snapshot.partner_digest(self._catalog_digest, st)
        return digest

    def snapshot_covers(self, key: bytes, raw: bytes) -> int | None:
        """The last sequence number a snapshot record (journal key and record) covers, if a
        restore here would load it (its format, this configuration's digest for the
        partner); None if it would not."""
        partner = key[:key.find(SEP.encode())].decode()
        try:
            theirs, seq = snapshot.peek(raw)
        except snapshot.SnapshotError:
            return None
        return seq if theirs == self._digest(partner) else None

    def snapshot(self, partner: str, wall_ms: int, max_bytes: int | None = None) -> Snapshot:
        """The journal writes that snapshot the partner now: whatever was not drained yet,
        the month records changed since their last snapshot, then the partner's snapshot
        record (in that order: the snapshot is written after everything it covers). A snapshot
        record over ``max_bytes`` is left out (the partner then restores from its events), and
        so is every record for a partner without state."""
        st = self.state.get(partner)
        if st is None:
            return Snapshot([], 0, False)
        writes = self.drain()
        now = st.last_ms if self.clock == "event" else wall_ms
        self._months.snapshot(partner, st, now, writes)
        record = snapshot.encode(st, self._digest(partner))
        if max_bytes is not None and len(record) > max_bytes:
            return Snapshot(writes, len(record), False)
        writes.append((state_key(partner), record))
        st.snap_seq = st.seq
        return Snapshot(writes, len(record), True)

    def unsnapshotted(self, partner: str) -> int:
        """Events the partner accepted since its last snapshot (-1 for no state)."""
        st = self.state.get(partner)
        return -1 if st is None else st.seq - max(st.snap_seq, 0)

    def _held(self, partner: str) -> PartnerState:
        st = self.state.get(partner)
        if st is None:
            st = self.state[partner] = self._new_state(partner)
        return st

    def _replay(self, events: list[tuple[int, Parsed]]) -> int:
        """Apply journalled events (in sequence order); returns how many were applied."""
        applied = 0
        journal, self._journal = self._journal, None  # replaying writes nothing back
        self._replaying = self._samples.replaying = True
        try:
            for seq, p in events:
                st = self._held(p.event.partner_id)
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
            self._replaying = self._samples.replaying = False
        return applied


def settle_gc(collect: bool = True) -> None:
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

    ``collect=False`` skips the full collection before the freeze: after a restore run with
    the GC off every object sits in the youngest generation, so any collection traverses the
    whole rebuilt state (0.59 s per 200 filled partners here) and found nothing to free (a
    restore of 200 filled partners' snapshots, and one of 200,000 events, left no cyclic
    garbage).
    """
    if collect:
        gc.collect()
    gc.freeze()
    gc.set_threshold(10_000, 50, 100)


# Names other layers import from here (the engine's public face), wherever they live now.
__all__ = [
    "OPEN_ITEM_STAGES",
    "SEP",
    "Engine",
    "KpiValue",
    "MonthCalendar",
    "Outcome",
    "PartnerState",
    "Record",
    "Result",
    "Snapshot",
    "attainment",
    "id_hash",
    "settle_gc",
]
