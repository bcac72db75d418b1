"""The year and quarter at a glance: each partner's KPIs month by month, the period's own value,
the bands earned per month, and the programme's rows (partners per band, share on target).

Channel programmes present an annual card (each KPI as % of goal, month by month, and for the
year) and review quarterly. Each month is the monthly card's own (:func:`build_report`: the terms
in force in that month, not-measured rules, integrity withholding), so a year card never
disagrees with the twelve monthly cards it sums up. The period's value of a KPI comes from the
months' aggregates merged on the workers (``Engine.evaluate_period``): a year's escalation rate is
all its escalations over all its tickets, not an average of twelve monthly rates.
"""

from __future__ import annotations

import statistics
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

from streams.config.catalog import Catalog, Partners
from streams.engine.core import Engine, MonthCalendar, attainment
from streams.outputs.report import (
    Flag,
    MonthFlags,
    MonthValues,
    RaisedIn,
    Report,
    ask_workers,
    build_report,
    http_get,
    month_value,
    not_measured,
)
from streams.outputs.steps import finish

TREND_STEP: Final = 0.01
"""Least-squares slope of the monthly attainment (per month) beyond which a KPI is marked as
improving or worsening: one point of goal a month, 12 over a year."""


def period_months(period: str) -> tuple[str, list[str]]:
    """('2026', the 12 months of 2026) for '2026'; ('2026-Q3', July to September) for '2026-Q3'.
    ValueError for anything else."""
    year, sep, quarter = period.partition("-Q")
    if not (len(year) == 4 and year.isdigit()):
        raise ValueError(f"{period!r} is not a year like '2026' or a quarter like '2026-Q3'")
    if not sep:
        first, count = int(year) * 12, 12
    elif quarter in ("1", "2", "3", "4"):
        first, count = int(year) * 12 + (int(quarter) - 1) * 3, 3
    else:
        raise ValueError(f"{period!r} is not a quarter like '2026-Q3'")
    return period, [MonthCalendar.name(first + i) for i in range(count)]


# --- the card ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class MonthCell:
    """One KPI of one partner in one month of the period, as that month's card has it."""

    month: str
    value: float | None
    samples: int
    target: float
    attainment: float | None
    counted: bool


@dataclass(frozen=True, slots=True)
class PeriodLine:
    """One KPI of one partner over the period: month by month, and the period's own value."""

    kpi: str
    title: str
    unit: str
    better: str
    months: tuple[MonthCell, ...]
    value: float | None
    """The period's value from the months' aggregates merged (None without samples)."""
    samples: int
    target: float
    """The target in force in the period's last month."""
    attainment: float | None
    """The period's value against ``target``, capped as the last month's policy caps it."""
    not_measured: str
    """Why the period's value is not scored ('' when it is), by the monthly card's rules."""
    trend: str
    """'up' (improving), 'down' (worsening) or '' (steady, or fewer than 3 measured months)."""


@dataclass(frozen=True, slots=True)
class PeriodCard:
    """A partner's period: its KPI lines and the band each month earned."""

    partner: str
    name: str
    tier: str
    """The tier in force in the period's last month."""
    lines: tuple[PeriodLine, ...]
    bands: tuple[str | None, ...]
    """The band each month's card gave (after integrity withholding), None for no score."""
    scores: tuple[float | None, ...]
    integrity: tuple[tuple[str, tuple[Flag, ...]], ...]
    """(month, flags raised in it) for the months with flags."""


@dataclass(frozen=True, slots=True)
class ProgrammeKpi:
    """One KPI across the programme: the share of measured partners on target, per month and
    over the period, and the median attainment."""

    kpi: str
    title: str
    on_target: tuple[float | None, ...]
    """Per month: partners at or above goal / partners measured (None: nobody measured)."""
    median: tuple[float | None, ...]
    period_on_target: float | None
    period_median: float | None


@dataclass(frozen=True, slots=True)
class PeriodReport:
    """The period card of every partner, and the programme's rows."""

    period: str
    months: tuple[str, ...]
    timezone: str
    generated_at: str
    cards: tuple[PeriodCard, ...]
    band_ids: tuple[str, ...]
    """The bands of the last month's policy, best first (the programme rows' columns)."""
    band_counts: tuple[dict[str, int], ...]
    """Per month: band id -> partners given it ('' for partners with data but no score)."""
    programme: tuple[ProgrammeKpi, ...]
    monthly: tuple[Report, ...]
    """The monthly cards the period is made of."""


def trend(points: Sequence[float | None]) -> str:
    """'up', 'down' or '' from the least-squares slope of the measured points over month index."""
    xy = [(float(i), y) for i, y in enumerate(points) if y is not None]
    if len(xy) < 3:
        return ""
    mean_x = statistics.fmean(x for x, _ in xy)
    mean_y = statistics.fmean(y for _, y in xy)
    sxx = sum((x - mean_x) ** 2 for x, _ in xy)
    slope = sum((x - mean_x) * (y - mean_y) for x, y in xy) / sxx
    if slope >= TREND_STEP:
        return "up"
    if slope <= -TREND_STEP:
        return "down"
    return ""


def build_period(catalog: Catalog, partners: Partners, period: str, months: Sequence[str],
                 values: Mapping[str, MonthValues], totals: MonthValues,
                 flags: Mapping[str, MonthFlags], generated_ms: int) -> PeriodReport:
    """The period card from each month's values (``values[month]``), the period's merged values
    (``totals``) and each month's integrity flags."""
    monthly = tuple(
        build_report(catalog, partners, m, values.get(m, {}),
                     values.get(MonthCalendar.name(MonthCalendar.parse(m) - 1), {}),
                     generated_ms, flags.get(m, {}),
                     flags.get(MonthCalendar.name(MonthCalendar.parse(m) - 1), {}))
        for m in months)
    last = MonthCalendar.parse(months[-1])
    policy = partners.policy(last)
    by_month = [{c.partner: c for c in r.cards} for r in monthly]
    ids = sorted({p for r in by_month for p in r} | set(totals))
    cards = []
    for partner in ids:
        month_cards = [r.get(partner) for r in by_month]
        lines = []
        for kpi in catalog.kpis:
            cells = []
            for m, card in zip(months, month_cards, strict=True):
                line = next((x for x in card.lines if x.kpi == kpi.id), None) if card else None
                cells.append(MonthCell(m, None, 0, partners.target(partner, kpi,
                                                                     MonthCalendar.parse(m)),
                                       None, False) if line is None else
                             MonthCell(m, line.value, line.samples, line.target, line.attainment,
                                       line.counted))
            got = totals.get(partner, {}).get(kpi.id)
            target = partners.target(partner, kpi, last)
            why = not_measured(kpi, (got[0], got[1], got[2] if len(got) > 2 else got[0] * got[1])
                               if got is not None else None, target)
            value = got[0] if got is not None else None
            lines.append(PeriodLine(
                kpi.id, kpi.title, kpi.unit, kpi.better, tuple(cells), value,
                got[1] if got is not None else 0, target,
                None if value is None else min(attainment(kpi, value, target),
                                               policy.attainment_cap),
                why, trend([c.attainment if c.counted else None for c in cells])))
        anyone = next(c for c in month_cards if c is not None) if any(month_cards) else None
        cards.append(PeriodCard(
            partner, anyone.name if anyone else partners.names.get(partner, partner),
            partners.tier(partner, last), tuple(lines),
            tuple(c.band.id if c is not None and c.band is not None else None
                  for c in month_cards),
            tuple(c.score if c is not None else None for c in month_cards),
            tuple((m, c.integrity) for m, c in zip(months, month_cards, strict=True)
                  if c is not None and c.integrity)))
    band_ids = tuple(b.id for b in policy.bands)
    counts = []
    for r in monthly:
        count: dict[str, int] = {}
        for c in r.cards:
            if c.score is not None:
                key = c.band.id if c.band is not None else ""
                count[key] = count.get(key, 0) + 1
        counts.append(count)
    programme = tuple(_programme_kpi(kpi.id, kpi.title, cards) for kpi in catalog.kpis)
    generated = datetime.fromtimestamp(generated_ms / 1000, UTC).isoformat(timespec="seconds")
    return PeriodReport(period, tuple(months), catalog.report_timezone, generated, tuple(cards),
                        band_ids, tuple(counts), programme, monthly)


def _programme_kpi(kpi: str, title: str, cards: Iterable[PeriodCard]) -> ProgrammeKpi:
    lines = [next(x for x in c.lines if x.kpi == kpi) for c in cards]
    n_months = len(lines[0].months) if lines else 0

    def summary(atts: list[float]) -> tuple[float | None, float | None]:
        if not atts:
            return None, None
        return sum(a >= 1 for a in atts) / len(atts), statistics.median(atts)

    on: list[float | None] = []
    med: list[float | None] = []
    for i in range(n_months):
        cells = [x.months[i] for x in lines]
        share, middle = summary([c.attainment for c in cells
                                 if c.counted and c.attainment is not None])
        on.append(share)
        med.append(middle)
    share, middle = summary([x.attainment for x in lines
                             if x.attainment is not None and not x.not_measured])
    return ProgrammeKpi(kpi, title, tuple(on), tuple(med), share, middle)


# --- where the numbers come from -----------------------------------------------------------
def period_state(engine: Engine, partner_ids: Iterable[str], months: list[str],
                 integrity: RaisedIn | None = None) -> dict[str, Any]:
    """What a worker serves at /api/report?period=: its partners' values in each month of the
    period (a closed month's frozen values, as its monthly card) and over the period (the
    months' aggregates merged: restatements included), and the integrity flags raised per
    month (:func:`period_state_steps` in one go)."""
    return finish(period_state_steps(engine, partner_ids, months, integrity))


def period_state_steps(engine: Engine, partner_ids: Iterable[str], months: list[str],
                       integrity: RaisedIn | None = None,
                       ) -> Generator[None, None, dict[str, Any]]:
    """:func:`period_state` one partner per step, for the worker's view to let its event loop
    run between slices."""
    before = MonthCalendar.name(MonthCalendar.parse(months[0]) - 1)
    out: dict[str, Any] = {}
    flags: dict[str, dict[str, list[list[str]]]] = {}
    for partner in partner_ids:
        per_month: dict[str, Any] = {}
        raised: dict[str, list[list[str]]] = {}
        for name in [before, *months]:
            frozen = engine.closed_month(partner, name)
            if frozen is not None:  # a closed month as its monthly card has it: frozen
                per_month[name] = dict(frozen.values)
                got = {}
            else:
                got = engine.evaluate_month(partner, name)
            if got:
                per_month[name] = {k: [v.value, v.samples, v.total, v.squares]
                                   for k, v in got.items()}
            found = integrity(partner, name) if integrity is not None else ()
            if found:
                raised[name] = [[kpi, signal] for kpi, signal in found]
        whole = engine.evaluate_period(partner, months)
        if per_month or whole:
            out[partner] = {"months": per_month,
                            "period": {k: [v.value, v.samples, v.total, v.squares]
                                          for k, v in whole.items()}}
        if raised:
            flags[partner] = raised
        yield
    return {"months": months, "timezone": engine.catalog.report_timezone, "partners": out,
            "integrity": flags}


class PeriodFetched(NamedTuple):
    """What the workers serve for a period."""

    values: dict[str, MonthValues]
    """month (the period's and the one before) -> partner -> kpi -> value."""
    totals: MonthValues
    flags: dict[str, MonthFlags]


def fetch_period(workers: list[str], period: str, partitions: int,
                 opener: Callable[[str], bytes] | None = None) -> PeriodFetched:
    """Ask every worker for its partners' period; fail unless together they own every partition."""
    get = opener or http_get
    values: dict[str, MonthValues] = {}
    totals: MonthValues = {}
    flags: dict[str, MonthFlags] = {}
    for _, body in ask_workers(workers, f"/api/report?period={period}", partitions, get):
        for partner, got in body["partners"].items():
            for name, kpis in got["months"].items():
                values.setdefault(name, {})[partner] = {
                    k: month_value(v) for k, v in kpis.items()}
            totals[partner] = {k: month_value(v) for k, v in got["period"].items()}
        for partner, months in body["integrity"].items():
            for name, raised in months.items():
                flags.setdefault(name, {})[partner] = tuple(
                    sorted((str(k), str(s)) for k, s in raised))
    return PeriodFetched(values, totals, flags)
