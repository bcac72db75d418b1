"""Entities and their marks: each partner's tickets, calls and orders, as records of marks.

Samples that depend on several events of one entity (a duration, a distinct count, a follow-up,
a deadline) are derived from *marks* kept on the entity: the earliest start, the earliest stop,
and so on. The record layout (:data:`streams.engine.model.Record`) is hidden here: an int64
array with :data:`~streams.engine.model.UNSET` on topics whose marks are all plain times, a list
with None elsewhere; a record's slot :attr:`Slot.unset` says which.

A record with no event for an hour is kept *frozen*, as bytes
(:data:`~streams.engine.model.Frozen`): most of a partner's entities are closed and waiting only
for a late event or for retention to end. A filled partner's ticket cost 538 B live and costs
234 B frozen (its id and dict entry included), and bytes unpickle (a snapshot restore) in one
step instead of one per mark. The next event to touch it thaws it.
"""

from __future__ import annotations

import array
import bisect
import struct
import sys
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Final

import msgspec

from streams.config.catalog import Kpi, Partners
from streams.engine.clock import MAX_PAUSE_EVENTS, elapsed
from streams.engine.cold import ColdRecords
from streams.engine.model import (
    AT_RISK_SHARE,
    UNSET,
    URGENT,
    Frozen,
    OpenItem,
    PartnerState,
    Record,
    in_state,
    urgency,
)
from streams.engine.plan import Slot
from streams.ingest.contract import Parsed

KEEP: Final[Any] = object()
"""What :func:`next_mark` returns when an event leaves the mark as it is."""

COLD_AFTER_MS: Final = 3_600_000
"""A record without an event for this long is frozen at the partner's next hourly sweep."""

_LAST: Final = struct.Struct(">Q")
_SHIFT: Final = 2**63
"""Added to a last event time before it is written big-endian unsigned: the prefixes of two
frozen records then compare as bytes as their times compare as numbers."""
_ENCODER: Final = msgspec.msgpack.Encoder()
_DECODER: Final = msgspec.msgpack.Decoder(list[Any])
_BIG_ENDIAN: Final = sys.byteorder == "big"


def last_event(rec: Record | Frozen) -> int:
    """A record's last event time, live or frozen."""
    return _LAST.unpack_from(rec)[0] - _SHIFT if type(rec) is bytes else rec[0]


def frozen_before(ms: int) -> bytes:
    """What a frozen record compares below (as bytes) exactly when its last event is before
    ``ms``: the 8 bytes of ``ms``'s prefix (a longer bytes object equal to them up to their
    length compares above them)."""
    return _LAST.pack(ms + _SHIFT)


def freeze_list(rec: list[Any]) -> Frozen:
    """A list record as bytes (its tuples come back as tuples: see :func:`thaw_list`)."""
    return _LAST.pack(rec[0] + _SHIFT) + _ENCODER.encode(rec[1:])


def thaw_list(raw: Frozen) -> list[Any]:
    """The list record :func:`freeze_list` froze, equal to it mark for mark.

    msgpack has one array type, so every array is a tuple again: a mark is never a list (sets
    of times, ``(time, extra)`` pairs and a field's values are tuples, compared as tuples)."""
    rec = _DECODER.decode(memoryview(raw)[_LAST.size:])
    for i, mark in enumerate(rec):
        if type(mark) is list:
            rec[i] = _tuples(mark)
    return [_LAST.unpack_from(raw)[0] - _SHIFT, *rec]


def _tuples(items: list[Any]) -> tuple[Any, ...]:
    return tuple(_tuples(x) if type(x) is list else x for x in items)


def freeze_packed(rec: array.array) -> Frozen:
    """A packed (int64 array) record as bytes: its marks little-endian whatever the machine
    (a snapshot may be restored elsewhere)."""
    marks = rec[1:]
    if _BIG_ENDIAN:
        marks.byteswap()
    return _LAST.pack(rec[0] + _SHIFT) + marks.tobytes()


def thaw_packed(raw: Frozen) -> array.array:
    """The packed record :func:`freeze_packed` froze."""
    marks = array.array("q")
    marks.frombytes(memoryview(raw)[_LAST.size:])
    if _BIG_ENDIAN:
        marks.byteswap()
    rec = array.array("q", (_LAST.unpack_from(raw)[0] - _SHIFT,))
    rec.extend(marks)
    return rec


def next_mark(slot: Slot, old: Any, parsed: Parsed) -> Any:
    """The mark of ``slot`` once ``parsed`` is counted, from the mark ``old``; :data:`KEEP`
    when the event leaves it unchanged."""
    ts = parsed.ts_ms
    if slot.extra == "value":
        # every matching event's (time, value of the slot's field, event id): a mean of a field
        # kept on the entity it links to (so a per-channel mean can wait for that entity's channel)
        value = getattr(parsed.event, slot.field, None)
        if not isinstance(value, int | float) or isinstance(value, bool):
            return KEEP
        item = (ts, float(value), parsed.event.event_id)
        if old is not None and item in old:
            return KEEP
        return (item,) if old is None else tuple(sorted((*old, item)))
    if slot.extra == "pause":
        kind = type(parsed.event).__struct_config__.tag
        held = (ts, 1 if kind in slot.pauses else 0)
        if old is not None and (held in old or len(old) >= MAX_PAUSE_EVENTS):
            return KEEP
        return (held,) if old is None else tuple(sorted((*old, held)))
    if slot.reducer == "set":
        if old is not None and ts in old:
            return KEEP
        return (ts,) if old is None else tuple(sorted((*old, ts)))
    if slot.extra:
        # ties: the earliest mark keeps the first event accepted, the latest takes the last one
        if old is not None and (ts >= old[0] if slot.reducer == "min" else ts < old[0]):
            return KEEP
        new = (ts, parsed.event.due_date if slot.extra == "due"
               else parsed.offset_s if slot.extra == "done" else getattr(parsed.event, "channel", None))
        return KEEP if new == old else new
    if old != slot.unset and (ts >= old if slot.reducer == "min" else ts <= old):
        return KEEP
    return ts


class EntityStore:
    """The entity records of every partner (``PartnerState.entities``) and the entities still
    waiting for their stop (``PartnerState.pending``, the open items)."""

    def __init__(self, marks: dict[str, int], packed: dict[str, bool],
                 open_slots: dict[int, tuple[int, int, str]], kpis: tuple[Kpi, ...],
                 partners: Partners, open_pauses: dict[int, int] | None = None) -> None:
        self.kpis = kpis
        self.partners = partners
        self._blank: dict[str, Record] = {
            topic: (array.array("q", [UNSET]) if packed[topic] else [None]) * (n + 1)
            for topic, n in marks.items()}
        """Entity topic -> a record with every mark unset (copied for each new entity)."""
        self._freeze: dict[str, Callable[[Any], Frozen]] = {
            topic: freeze_packed if packed[topic] else freeze_list for topic in marks}
        self._thaw: dict[str, Callable[[Frozen], Record]] = {
            topic: thaw_packed if packed[topic] else thaw_list for topic in marks}
        self._open_kpis = [(k, kpi) for k, kpi in enumerate(kpis) if kpi.open_items]
        self.open_slots: dict[int, tuple[int, int, Any]] = {
            k: (start, stop, UNSET if packed.get(topic) else None)
            for k, (start, stop, topic) in open_slots.items()}
        """open_items KPIs: kpi index -> (start slot, stop slot, the record's unset mark)."""
        self._open_topics = {k: topic for k, (_, _, topic) in open_slots.items()}
        self._open_pauses = open_pauses or {}
        """open_items KPIs: kpi index -> its pause mark's index (0 or absent: none)."""
        self._clocked = {k for k, kpi in self._open_kpis
                         if kpi.clock == "business" or self._open_pauses.get(k)}
        """open_items KPIs whose ages are not plain ``now - opened``: on the business clock,
        or less pauses (:func:`streams.engine.clock.elapsed`)."""

    def record(self, st: PartnerState, topic: str, entity_id: str, ts: int) -> Record:
        """The record of an entity an event at ``ts`` touches (new, when it has none), its
        last event time brought up to ``ts``."""
        entities = st.entities.get(topic)
        if entities is None:
            entities = st.entities[topic] = {}
        rec = entities.get(entity_id)
        if rec is None:
            cold = st.cold.get(topic)
            frozen = cold.pop(entity_id) if cold else None
            if frozen is None:  # a new entity
                rec = entities[entity_id] = self._blank[topic][:]
                rec[0] = ts
                return rec
            rec = entities[entity_id] = self._thaw[topic](frozen)
        elif isinstance(rec, bytes):  # frozen in place (a snapshot before format 5)
            rec = entities[entity_id] = self._thaw[topic](rec)
        if ts > rec[0]:
            rec[0] = ts
        return rec

    def track_open(self, st: PartnerState, k: int, entity_id: str, rec: Record) -> None:
        """Keep KPI ``k``'s list of waiting entities up to date with ``rec``: a start without a
        stop (a duration), or without a follow after it (a follow-up's set of times)."""
        start, stop, unset = self.open_slots[k]
        waiting = st.pending.get(k)
        if waiting is None:
            waiting = st.pending[k] = {}
        began, ended = rec[start], rec[stop]
        # follow-up times (a tuple): only one after the start closes it
        if began == unset or (any(t > began for t in ended) if isinstance(ended, tuple)
                              else ended != unset):
            if waiting.pop(entity_id, None) is not None:
                _moved(st, k)
        elif waiting.get(entity_id) != began:
            waiting[entity_id] = began
            _moved(st, k)

    @staticmethod
    def _starts(st: PartnerState, k: int, waiting: dict[str, int]) -> list[int]:
        """KPI ``k``'s waiting entities' start times, sorted, kept until the list changes.

        Why: every scrape counts each partner's waiting entities past each stage; a partner
        with a thousand waiting took 144 us a scrape walking them, and a fleet's scrape is the
        sum. Sorted, each count is a bisection."""
        starts = st.waiting_starts.get(k)
        if starts is None:
            starts = st.waiting_starts[k] = sorted(waiting.values())
        return starts

    def open_items(self, st: PartnerState | None, partner: str, now_ms: int,
                   stages: tuple[float, ...]) -> dict[tuple[str, float], int]:
        """(kpi id, stage) -> entities still waiting whose age passed ``stage`` x the target
        (a follow-up's horizon)."""
        out: dict[tuple[str, float], int] = {}
        for k, kpi in self._open_kpis:
            waiting = st.pending.get(k) if st is not None else None
            if not waiting:  # most partners at most scrapes: no target to look up
                for stage in stages:
                    out[(kpi.id, stage)] = 0
                continue
            assert st is not None  # waiting came from it
            target_ms = (kpi.horizon_ms if kpi.kind == "follow_up" and kpi.horizon_ms is not None
                         else self.partners.target(partner, kpi) * 1000)
            if k in self._clocked:
                ages = [self._age(st, partner, k, kpi, e, opened, now_ms)[0]
                        for e, opened in waiting.items()]
                for stage in stages:
                    out[(kpi.id, stage)] = sum(1 for age in ages if age >= stage * target_ms)
                continue
            starts = self._starts(st, k, waiting)
            for stage in stages:
                out[(kpi.id, stage)] = bisect.bisect_right(starts, now_ms - stage * target_ms)
        return out

    def _age(self, st: PartnerState, partner: str, k: int, kpi: Kpi, entity_id: str,
             opened: int, now_ms: int) -> tuple[int, int]:
        """``(age, paused)`` in ms of a waiting entity on its KPI's clock."""
        if k not in self._clocked:
            return now_ms - opened, 0
        pause_i = self._open_pauses.get(k, 0)
        pauses = None
        if pause_i:
            topic = self._open_topics[k]
            kept = st.entities.get(topic, {}).get(entity_id)
            if kept is None and topic in st.cold:
                kept = st.cold[topic].get(entity_id)
            # read only: a frozen record stays frozen
            rec = self._thaw[topic](kept) if isinstance(kept, bytes) else kept
            pauses = rec[pause_i] if rec is not None else None
        calendar = self.partners.calendar(partner) if kpi.clock == "business" else None
        return elapsed(opened, now_ms, pauses, calendar)

    def _target_ms(self, partner: str, kpi: Kpi) -> int:
        """What an open item of ``kpi`` ages against: a follow-up's horizon, else the target."""
        if kpi.kind == "follow_up" and kpi.horizon_ms is not None:
            return kpi.horizon_ms
        return round(self.partners.target(partner, kpi) * 1000)

    def open_list(self, st: PartnerState | None, partner: str, now_ms: int,
                  kpis: frozenset[str] | None = None) -> list[OpenItem]:
        """Every entity still waiting, of every open_items KPI (of ``kpis`` only, when given),
        with its age and state (unsorted: the caller sorts and cuts, often across partners)."""
        out: list[OpenItem] = []
        if st is None:
            return out
        for k, kpi, waiting, target in self._waiting(st, partner, kpis):
            out += self._items(st, partner, k, kpi, waiting.items(), target, now_ms)
        return out

    def select(self, st: PartnerState | None, partner: str, now_ms: int, n: int,
               kpis: frozenset[str] | None = None, state: str | None = None,
               ) -> tuple[list[OpenItem], int]:
        """The ``n`` waiting items with the least time left whose state is ``state`` (one of
        :data:`OPEN_STATES`, :data:`URGENT` for at risk or breached, None for any), as
        :meth:`open_list` makes them, in :func:`urgency` order; and how many have that state.

        Why not :meth:`open_list` then a filter, a sort and a cut: a wall tile names three of
        a partner's tickets, ``/metrics`` its most urgent few and ``/api/open`` a page, and
        making every waiting item (1,261 for a filled partner, about 2 ms) cost the wall 2.5 s
        a poll at 1,000 partners. On the calendar clock an item's time left falls with its
        start, so each state is a run of each KPI's sorted starts (breached the oldest, then at
        risk, then ok): its count is a difference of bisections and its most urgent are the
        run's oldest. Only a KPI on the business clock or with pauses makes all its items."""
        out: list[OpenItem] = []
        count = 0
        if st is None:
            return out, count
        for k, kpi, waiting, target in self._waiting(st, partner, kpis):
            if k in self._clocked:
                mine = [item for item in self._items(st, partner, k, kpi, waiting.items(),
                                                     target, now_ms) if in_state(item, state)]
                count += len(mine)
                out += mine
                continue
            starts = self._starts(st, k, waiting)
            # breached from the whole target, at risk from AT_RISK_SHARE of it:
            # now - opened >= share x target
            breached = bisect.bisect_right(starts, now_ms - target)
            urgent = bisect.bisect_right(starts, now_ms - AT_RISK_SHARE * target)
            lo, hi = {None: (0, len(starts)), URGENT: (0, urgent), "breached": (0, breached),
                      "at_risk": (breached, urgent), "ok": (urgent, len(starts))}[state]
            count += hi - lo
            if hi > lo and n > 0:
                # the run's first n starts: ties at the last come too, and the run's first
                # start is strictly after the one before it (runs end at bisect_right)
                first, cut = starts[lo], starts[min(lo + n, hi) - 1]
                started = (_oldest(st, k, waiting, cut) if lo == 0 else
                           [(e, opened) for e, opened in waiting.items()
                            if first <= opened <= cut])
                out += self._items(st, partner, k, kpi, started, target, now_ms)
        out.sort(key=urgency)
        return out[:max(n, 0)], count

    def _waiting(self, st: PartnerState, partner: str, kpis: frozenset[str] | None,
                 ) -> Iterator[tuple[int, Kpi, dict[str, int], int]]:
        """Each open_items KPI (of ``kpis`` only, when given) with entities waiting: its index,
        the KPI, its waiting entities (id -> start) and the target they age against."""
        for k, kpi in self._open_kpis:
            if kpis is not None and kpi.id not in kpis:
                continue
            waiting = st.pending.get(k)
            if waiting:
                yield k, kpi, waiting, self._target_ms(partner, kpi)

    def _items(self, st: PartnerState, partner: str, k: int, kpi: Kpi,
               waiting: Iterable[tuple[str, int]], target: int, now_ms: int) -> list[OpenItem]:
        """KPI ``k``'s waiting entities as ledger rows: age on its clock, state against
        ``target``."""
        severity = _severity(kpi)
        out: list[OpenItem] = []
        for entity_id, opened in waiting:
            age, paused = self._age(st, partner, k, kpi, entity_id, opened, now_ms)
            state = ("breached" if age >= target else
                     "at_risk" if age >= AT_RISK_SHARE * target else "ok")
            out.append(OpenItem(partner, kpi.id, entity_id, severity, opened, age, target,
                                state, paused, kpi.clock))
        return out

    def oldest(self, st: PartnerState | None, partner: str, now_ms: int) -> dict[str, int]:
        """open_items KPI id -> age of its oldest waiting entity (KPIs with one waiting only):
        on a business clock or with pauses, the one aged most on that clock."""
        if st is None:
            return {}
        out: dict[str, int] = {}
        for k, kpi in self._open_kpis:
            waiting = st.pending.get(k)
            if not waiting:
                continue
            if k in self._clocked:
                out[kpi.id] = max(self._age(st, partner, k, kpi, e, opened, now_ms)[0]
                                  for e, opened in waiting.items())
            else:
                out[kpi.id] = now_ms - self._starts(st, k, waiting)[0]
        return out

    def evict(self, st: PartnerState, oldest: int, cold: int) -> None:
        """Forget the entities without an event since ``oldest``; freeze the live records
        without one since ``cold`` into the partner's packed frozen records."""
        # A record frozen in place (a snapshot before format 5) has its time as its first 8
        # bytes, compared as bytes without decoding it.
        frozen_old = frozen_before(oldest)
        for topic, entities in st.entities.items():
            gone: list[str] = []
            idle: list[str] = []
            for entity_id, rec in entities.items():
                if type(rec) is bytes:
                    (gone if rec < frozen_old else idle).append(entity_id)
                elif rec[0] < oldest:
                    gone.append(entity_id)
                elif rec[0] < cold:
                    idle.append(entity_id)
            for entity_id in gone:
                del entities[entity_id]
            store = st.cold.get(topic)
            if store is None:
                store = st.cold[topic] = ColdRecords()
            if idle:
                freeze = self._freeze[topic]
                frozen = []
                for entity_id in idle:
                    rec = entities.pop(entity_id)
                    raw = rec if isinstance(rec, bytes) else freeze(rec)
                    frozen.append((entity_id, raw, last_event(raw)))
                store.put_many(frozen)
            self._forget(st, [*gone, *store.evict_before(oldest)])

    @staticmethod
    def _forget(st: PartnerState, gone: list[str]) -> None:
        """Entities forgotten: off their KPIs' waiting lists."""
        for entity_id in gone:
            for k, waiting in st.pending.items():
                if waiting.pop(entity_id, None) is not None:
                    _moved(st, k)


def _moved(st: PartnerState, k: int) -> None:
    """KPI ``k``'s waiting entities changed: drop what is kept of them in start order."""
    st.waiting_starts.pop(k, None)
    st.waiting_oldest.pop(k, None)


OLDEST_KEPT: Final = 64
"""The most (id, start) pairs :func:`_oldest` keeps per KPI: a wall tile's and /metrics' few,
not a page of /api/open (whose long lists would be kept memory per partner)."""


def _oldest(st: PartnerState, k: int, waiting: dict[str, int], cut: int) -> list[tuple[str, int]]:
    """KPI ``k``'s waiting entities (id, start) that started at or before ``cut``, kept while
    they and the cut stay put (up to :data:`OLDEST_KEPT` of them).

    Why kept: a wall tile and /metrics' urgent tickets ask for a partner's few oldest at every
    poll and scrape, and finding them walks every waiting entity (1,261 of a filled partner:
    126 us, most of a wall poll at 1,000 partners)."""
    kept = st.waiting_oldest.get(k)
    if kept is not None and kept[0] >= cut:  # the wall asks for 3, /metrics for 20: one list
        return kept[1] if kept[0] == cut else [(e, start) for e, start in kept[1] if start <= cut]
    oldest = [(e, opened) for e, opened in waiting.items() if opened <= cut]
    if len(oldest) <= OLDEST_KEPT:
        st.waiting_oldest[k] = (cut, oldest)
    return oldest


def _severity(kpi: Kpi) -> str | None:
    """The severity a KPI selects its starts by (``where: {severity: x}``), else None."""
    start = kpi.start
    if start is None:
        return None
    for cond in start.where:
        if cond.field == "severity" and cond.op == "eq":
            return str(cond.value)
    return None
