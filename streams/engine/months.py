"""Calendar months: which month a sample falls in, and each partner's month aggregates.

Months outlive the journal (13 of them, against 90 days of events), so each month's aggregate
is persisted as a snapshot record, rewritten (at most hourly) while it changes. A snapshot
carries the partner's event sequence number: on restore, events replay in sequence order and
only those after a month's snapshot touch that month.
"""

from __future__ import annotations

import hashlib
import math
from datetime import datetime
from typing import Any
from zoneinfo import ZoneInfo

import orjson

from streams.config.catalog import Kpi
from streams.engine import sketch
from streams.engine.journal import (
    CLOSED_DECODER,
    ENCODER,
    MONTH_DECODER,
    Write,
    closed_key,
    month_key,
)
from streams.engine.model import (
    EVIDENCE_CAP,
    Agg,
    ClosedMonth,
    KpiValue,
    PartnerState,
    Restatement,
)


def digest(values: dict[str, list[float]]) -> str:
    """SHA-256 (hex) of a closed month's frozen values: JSON with sorted keys, each KPI as
    [value, samples, sum, sum of squares], so anyone can recompute it from the served card."""
    return hashlib.sha256(orjson.dumps(values, option=orjson.OPT_SORT_KEYS)).hexdigest()


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


class MonthStore:
    """The month aggregates of every partner (``PartnerState.months``, ``month_seq``,
    ``months_dirty``): counted into, snapshotted to the journal, loaded back, read."""

    def __init__(self, kpis: tuple[Kpi, ...], calendar: MonthCalendar, report_months: int,
                 scale: list[int], close_ms: int | None = None) -> None:
        self.kpis = kpis
        self.close_ms = close_ms
        """A month closes this long after its end (None: months never close)."""
        self._kpi_index = {k.id: i for i, k in enumerate(kpis)}
        self.calendar = calendar
        self._report_months = report_months
        self._scale = scale
        self._month = (0, 0, 0)
        """(first ms, end ms, index) of the month last counted into: most samples fall in it."""

    def add(self, st: PartnerState, k: int, ts: int, n: int, s: Any, s2: Any,
            hist_key: int | None, sign: int, replaying: bool) -> None:
        """Count one sample (already signed: ``n``, ``s``, ``s2`` negated for a retraction)
        into its calendar month. A replayed event whose effect is already in the month's
        snapshot (it came before the snapshot) leaves the month alone."""
        lo, hi, month = self._month
        if not lo <= ts < hi:
            calendar = self.calendar
            month = calendar.index(ts)
            self._month = (calendar.start_ms(month), calendar.start_ms(month + 1), month)
        if not replaying or st.seq > st.month_seq.get(month, -1):  # live: always after
            per_kpi = st.months.get(month)
            if per_kpi is None:
                per_kpi = st.months[month] = {}
                st.close_due_ms = -1  # a month with data now: when is the next close due
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
                sketch.bump_hist(agg[3], hist_key, sign)
            st.months_dirty.add(month)
            if month in st.closed and not replaying:
                st.closed_touched.add(month)

    def snapshot(self, partner: str, st: PartnerState, now: int,
                 journal: list[Write] | None) -> None:
        """Drop the months past the report horizon; snapshot the ones changed since last time."""
        horizon = self.calendar.index(now) - self._report_months
        for month in [m for m in st.evidence if m < horizon]:
            del st.evidence[month]
        for month in [m for m in st.months if m < horizon]:
            del st.months[month]
            st.months_dirty.discard(month)
            if st.month_seq.pop(month, None) is not None and journal is not None:
                journal.append((month_key(partner, MonthCalendar.name(month)), None))
        for month in [m for m in st.closed if m < horizon]:
            del st.closed[month]
            if journal is not None:
                journal.append((closed_key(partner, MonthCalendar.name(month)), None))
        for month in sorted(st.months_dirty):
            st.month_seq[month] = st.seq
            if journal is not None:
                aggs = {self.kpis[k].id: agg for k, agg in st.months.get(month, {}).items()}
                found = {self.kpis[k].id: ids
                         for k, ids in st.evidence.get(month, {}).items() if ids}
                journal.append((month_key(partner, MonthCalendar.name(month)),
                                ENCODER.encode((st.seq, aggs, found))))
        st.months_dirty.clear()

    def _month_of(self, ts: int) -> int:
        lo, hi, month = self._month
        if not lo <= ts < hi:
            calendar = self.calendar
            month = calendar.index(ts)
            self._month = (calendar.start_ms(month), calendar.start_ms(month + 1), month)
        return month

    # --- evidence ----------------------------------------------------------------------
    def evidence(self, st: PartnerState, k: int, ts: int, entity: str, sign: int,
                 replaying: bool) -> None:
        """Keep (sign 1) or drop (sign -1) an entity behind a miss of KPI ``k`` in its month,
        as :meth:`add` counts: a replayed event already in the month's snapshot leaves it."""
        month = self._month_of(ts)
        if replaying and st.seq <= st.month_seq.get(month, -1):
            return
        per_kpi = st.evidence.setdefault(month, {})
        ids = per_kpi.get(k)
        if sign > 0:
            if ids is None:
                ids = per_kpi[k] = []
            if len(ids) < EVIDENCE_CAP and entity not in ids:
                ids.append(entity)
                st.months_dirty.add(month)
        elif ids is not None and entity in ids:
            ids.remove(entity)
            st.months_dirty.add(month)

    def evidence_of(self, st: PartnerState, month: str) -> dict[str, list[str]]:
        """kpi id -> the month's evidence ids."""
        got = st.evidence.get(self.calendar.parse(month), {})
        return {self.kpis[k].id: list(ids) for k, ids in sorted(got.items()) if ids}

    # --- closing -----------------------------------------------------------------------
    def close_due(self, partner: str, st: PartnerState, now: int,
                  journal: list[Write] | None) -> None:
        """Close every month with data whose grace period ended by ``now``: freeze its values
        (the card as paid) and journal them. Called before an event's samples are counted, so a
        late event is never part of the values it restates."""
        if self.close_ms is None or 0 <= now < st.close_due_ms:
            return
        due = -1
        for month in sorted(st.months):
            if month in st.closed:
                continue
            closes = self.calendar.start_ms(month + 1) + self.close_ms
            if closes > now:
                due = closes
                break
            values = self.frozen(st, month)
            closed = st.closed[month] = ClosedMonth(now, values, digest(values))
            if journal is not None:
                journal.append(self._closed_record(partner, month, closed))
        st.close_due_ms = due if due >= 0 else self.calendar.start_ms(
            self.calendar.index(now) + 1) + self.close_ms

    def frozen(self, st: PartnerState, month: int) -> dict[str, list[float]]:
        """kpi id -> [value, samples, sum, sum of squares] of the month as it stands."""
        out: dict[str, list[float]] = {}
        for k, agg in sorted(st.months.get(month, {}).items()):
            value = value_of(self.kpis[k], [agg])
            if value is not None:
                out[self.kpis[k].id] = [value.value, value.samples, value.total, value.squares]
        return out

    def restate(self, partner: str, st: PartnerState, now: int,
                journal: list[Write] | None) -> None:
        """Record what late events changed in closed months since their last statement."""
        for month in sorted(st.closed_touched):
            closed = st.closed[month]
            stated: dict[str, tuple[float | None, int]] = {
                k: (v[0], int(v[1])) for k, v in closed.values.items()}
            for r in closed.restatements:  # the latest statement of each KPI
                stated[r.kpi] = (r.new_value, r.new_samples)
            live = {k: (v[0], int(v[1])) for k, v in self.frozen(st, month).items()}
            changed = False
            for kpi in sorted(set(stated) | set(live)):
                old, new = stated.get(kpi, (None, 0)), live.get(kpi, (None, 0))
                if old != new:
                    closed.restatements.append(Restatement(now, kpi, old[0], new[0], old[1],
                                                           new[1]))
                    changed = True
            if changed and journal is not None:
                journal.append(self._closed_record(partner, month, closed))
        st.closed_touched.clear()

    def _closed_record(self, partner: str, month: int, closed: ClosedMonth) -> Write:
        return (closed_key(partner, MonthCalendar.name(month)), ENCODER.encode((
            closed.closed_at_ms, closed.digest, closed.values,
            [(r.at_ms, r.kpi, r.old_value, r.new_value, r.old_samples, r.new_samples)
             for r in closed.restatements])))

    def load_closed(self, st: PartnerState, month: int, raw: bytes) -> None:
        """Take a closed month's record back."""
        at, sha, values, restatements = CLOSED_DECODER.decode(raw)
        st.closed[month] = ClosedMonth(at, values, sha, [Restatement(*r) for r in restatements])
        st.close_due_ms = -1

    def load(self, st: PartnerState, month: int, raw: bytes) -> None:
        """Take a month's snapshot record back."""
        seq, saved, *rest = MONTH_DECODER.decode(raw)  # (seq, aggregates[, evidence])
        found: dict[str, list[str]] = rest[0] if rest else {}
        st.evidence[month] = {self._kpi_index[k]: list(ids) for k, ids in found.items()
                              if k in self._kpi_index}
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

    def evaluate(self, st: PartnerState, month: str) -> dict[str, KpiValue]:
        """Each KPI's value over one calendar month (``'2026-10'``)."""
        aggs = st.months.get(self.calendar.parse(month), {})
        out: dict[str, KpiValue] = {}
        for k, agg in sorted(aggs.items()):
            value = value_of(self.kpis[k], [agg])
            if value is not None:
                out[self.kpis[k].id] = value
        return out

    def evaluate_many(self, st: PartnerState, months: list[str]) -> dict[str, KpiValue]:
        """Each KPI's value over the months together (their aggregates merged)."""
        per_kpi: dict[int, list[Agg]] = {}
        for name in months:
            for k, agg in st.months.get(self.calendar.parse(name), {}).items():
                per_kpi.setdefault(k, []).append(agg)
        out: dict[str, KpiValue] = {}
        for k, aggs in sorted(per_kpi.items()):
            value = value_of(self.kpis[k], aggs)
            if value is not None:
                out[self.kpis[k].id] = value
        return out

    def held(self, st: PartnerState) -> list[str]:
        """Calendar months with state, oldest first."""
        return [self.calendar.name(m) for m in sorted(st.months)]


def value_of(kpi: Kpi, aggs: list[Agg]) -> KpiValue | None:
    """A KPI's value over month aggregates (None without samples)."""
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
