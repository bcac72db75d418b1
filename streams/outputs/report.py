"""The monthly partner report card: each KPI's calendar month against its goal, and what it earns.

The numbers come from the pipeline's own state (the engine's calendar-month aggregates, served by
each worker at ``/api/report``), never from a second computation. This module turns them into a
card per partner (value, target, attainment, change from the previous month, tier, reward band,
the integrity flags the workers' lens raised in the month) and renders it as a terminal table, CSV,
JSON or one self-contained printable HTML file (:mod:`streams.outputs.report_render`).
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Generator, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt
import orjson

from streams.config.catalog import Band, Catalog, Kpi, Partners, ReportPolicy
from streams.engine.core import Engine, MonthCalendar, attainment
from streams.engine.model import Restatement, attainments
from streams.judgement.forecast import Draws, KpiModel, MonthToDate, forecast, slack
from streams.judgement.league import MIN_PARTNERS, Funnel, Observed, funnel, shrink
from streams.outputs.steps import finish

MonthValue = (tuple[float, int] | tuple[float, int, float] | tuple[float, int, float, float]
              | tuple[float, int, float, float, dict[int, int]])
"""(value in base units, samples[, total: the sum of the sample values[, squares: the sum of
their squares[, the log-histogram of a percentile KPI]]]): the sums let the card shrink a month
toward the fleet's (:mod:`league`) and forecast the current month's end (:mod:`forecast`)."""
MonthValues = dict[str, dict[str, MonthValue]]
"""partner -> kpi id -> its value for one calendar month."""
Flag = tuple[str, str]
"""(kpi id, integrity signal)."""
MonthFlags = dict[str, tuple[Flag, ...]]
"""partner -> the integrity flags raised at some time in one calendar month, sorted."""
RaisedIn = Callable[[str, str], Sequence[Flag]]
"""(partner, month) -> flags raised in that month: ``IntegrityLens.raised_in``."""


class ReportError(RuntimeError):
    """The report cannot be made (a worker unreachable, partitions not covered, a bad month)."""


# --- the card ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KpiLine:
    """One KPI of one partner for the month."""

    kpi: str
    title: str
    unit: str
    better: str
    value: float | None
    samples: int
    target: float
    attainment: float | None
    """Value as a share of the goal (1.0 on target, above 1 better), capped at the policy's
    ``attainment_cap`` as the score caps it; None without data."""
    counted: bool
    """Whether it enters the score: it is measured (:attr:`not_measured`) and has a weight."""
    weight: float
    previous: float | None
    previous_attainment: float | None
    """Last month's attainment, against last month's target and capped by last month's policy."""
    capped: bool = False
    """The attainment reached the cap (a lower-is-better KPI at 0 would otherwise read 1000%)."""
    not_measured: str = ""
    """Why the month's value is not scored ('' when it is): no samples, fewer than the KPI's
    min_samples, or a ratio that reads as perfect where the target makes that implausible."""
    target_source: str = "catalog"
    """Where the month's target comes from: 'partner since 2026-07', 'tier premier', 'catalog'."""
    shrunk: float | None = None
    """The month's value shrunk toward the fleet's for its volume (empirical Bayes, :mod:`league`);
    the raw value for a percentile KPI or a fleet too small to shrink toward; None without data."""
    shrunk_attainment: float | None = None
    """``shrunk`` against the target, capped as ``attainment``."""
    evidence: tuple[str, ...] = ()
    """Ids of the entities behind the month's misses (tickets over the target, late installs,
    escalated tickets, detractors' tickets), first come, at most 20: for disputes."""

    @property
    def change(self) -> float | None:
        """Value minus last month's, in base units."""
        if self.value is None or self.previous is None:
            return None
        return self.value - self.previous


@dataclass(frozen=True, slots=True)
class ChannelLine:
    """One ``by: [channel]`` KPI of one partner for the month, among the contacts of one channel
    (shown beside the KPI line, not scored: no target is set per channel)."""

    kpi: str
    title: str
    unit: str
    channel: str
    value: float
    samples: int


@dataclass(frozen=True, slots=True)
class Closing:
    """A partner's closed month as its worker froze it: when, the digest of the frozen values,
    and the restatements late events made since (the card shows the frozen values)."""

    closed_at_ms: int
    digest: str
    restatements: tuple[Restatement, ...] = ()

    @property
    def status(self) -> str:
        """'closed', or 'restated' once a late event changed a value."""
        return "restated" if self.restatements else "closed"


@dataclass(frozen=True, slots=True)
class Projection:
    """Where the current month is heading: the band at month end with its probability, from the
    month-to-date aggregates, their spread and the share of the month left
    (:func:`streams.judgement.forecast.forecast`), and the slack on the weakest KPI."""

    elapsed: float
    """Share of the month gone when the card was made."""
    probabilities: dict[str, float]
    """Band id -> probability at month end ('' for no band), most probable first."""
    likely: str
    slack_kpi: str | None = None
    """The counted KPI furthest below (or least above) its goal."""
    slack_misses: int | None = None
    """How many more misses of ``slack_kpi`` (samples at its miss value: README) drop the band
    earned so far; None when none up to 10,000 would."""


@dataclass(frozen=True, slots=True)
class PartnerCard:
    """A partner's month: its KPI lines, score and band, and last month's for comparison."""

    partner: str
    name: str
    tier: str
    lines: tuple[KpiLine, ...]
    score: float | None
    """Weighted mean of the counted KPIs' capped attainment; None when no KPI counts."""
    band: Band | None
    floored_by: tuple[str, ...]
    """Counted KPIs below the floor (they cap the band)."""
    previous_score: float | None
    previous_band: Band | None
    """Last month's band (as ``band``: withheld when a flag was raised in that month)."""
    integrity: tuple[Flag, ...] = ()
    """(kpi, signal) of the integrity flags raised at some time in the month, sorted."""
    previous_integrity: tuple[Flag, ...] = ()
    """The same for the previous month."""
    withheld_band: Band | None = None
    """The band the score earned that the month's flags withheld (``integrity_withholds``); None
    when nothing was withheld. ``band`` is then the best band not withheld."""
    band_withheld_by: tuple[str, ...] = ()
    """``kpi: signal`` of the flags that withheld ``withheld_band`` (empty when none was)."""
    channels: tuple[ChannelLine, ...] = ()
    """The month's per-channel values of the KPIs kept by channel, in catalog order (channels
    without samples left out)."""
    tier_since: str | None = None
    """The month the partner's tier in force in the month took effect (None: undated)."""
    policy_since: str | None = None
    """The month the report policy (bands, weights, cap, floor) used took effect (None: undated)."""
    fair_score: float | None = None
    """The score from the shrunk values (same KPIs and weights as ``score``): what the league
    table ranks on, so a small partner tops or bottoms it only when its evidence says so."""
    rank: int | None = None
    """Place in the league table by ``fair_score`` (1 = best); None without a score."""
    raw_rank: int | None = None
    """Place by the raw ``score``, for comparison."""
    projection: Projection | None = None
    """For the month in progress: the band it is heading for (None for a past month)."""
    closing: Closing | None = None
    """The month's close (None while it is open): the values above are the frozen ones."""

    @property
    def status(self) -> str:
        """'open', 'closed' or 'restated'."""
        return self.closing.status if self.closing is not None else "open"


@dataclass(frozen=True, slots=True)
class KpiFunnel:
    """One KPI's funnel plot for the month: every partner's value against its volume, with the
    fleet's control limits (:func:`streams.judgement.league.funnel`)."""

    kpi: str
    title: str
    unit: str
    funnel: Funnel


@dataclass(frozen=True, slots=True)
class Report:
    """The report card of every partner for one calendar month."""

    month: str
    previous_month: str
    timezone: str
    generated_at: str
    cards: tuple[PartnerCard, ...]
    funnels: tuple[KpiFunnel, ...] = ()
    """Per KPI (means and ratios with at least three partners measured), in catalog order."""


def previous_month(month: str) -> str:
    """'2026-09' for '2026-10'."""
    return MonthCalendar.name(MonthCalendar.parse(month) - 1)


IMPLAUSIBLE: Final = 0.001
"""A ratio reading as perfect is 'not measured' when the target rate gives it less than this
chance: 0 escalations in 60 tickets at a 15% target (0.85^60 = 6e-5) says more about a source
that does not report escalations than about the partner."""


def not_measured(kpi: Kpi, got: tuple[float, int, float] | None, target: float) -> str:
    """Why a month's value (value, samples, total) is not scored; '' when it is."""
    if got is None or got[1] <= 0:
        return "no samples in the month"
    value, n, total = got
    if n < kpi.min_samples:
        return f"{n} samples, fewer than the {kpi.min_samples} it needs"
    if kpi.stat_kind != "ratio" or not 0 < target < 1:
        return ""
    if kpi.lower_is_better and total <= 0:
        chance = (1 - target) ** n
    elif not kpi.lower_is_better and total >= n:
        chance = target ** n
    else:
        return ""
    if chance >= IMPLAUSIBLE:
        return ""
    if kpi.numerator is not None and total <= 0:
        where = ", ".join(f"{c.field} {c.op} {c.value}" for c in kpi.numerator.where)
        what = f"no '{kpi.numerator.type}' events" + (f" with {where}" if where else "")
    else:
        what = f"every sample at {value:g}"
    return (f"{what} in {n} samples: at the {target:g} target that happens with a chance of "
            f"{chance:.0e}; the source may not report them")


class _Terms(NamedTuple):
    """A partner's scoring terms in one month: the policy, and each KPI with a weight, its
    weight and target, in catalog order."""

    policy: ReportPolicy
    kpis: tuple[tuple[Kpi, float, float], ...]


def _terms(catalog: Catalog, partners: Partners, partner: str, month: int) -> _Terms:
    """The terms :func:`_score` scores a month by. Made once per card or forecast: a forecast
    scores 300 drawn months by the same terms, and looking them up per draw was most of its
    cost (18 ms a partner, and /metrics redoes up to ten forecasts a scrape)."""
    policy = partners.policy(month)
    weighted = []
    for kpi in catalog.kpis:
        weight = policy.weight(kpi.id, month)
        if weight > 0:
            weighted.append((kpi, weight, partners.target(partner, kpi, month)))
    return _Terms(policy, tuple(weighted))


def _measured(kpi: Kpi, values: npt.NDArray[np.float64], samples: npt.NDArray[np.int64],
              target: float) -> npt.NDArray[np.bool_]:
    """Whether each drawn month (value, samples) is scored: :func:`not_measured` is '' for it
    (its total taken as value x samples, as :func:`_triple` does for a drawn month)."""
    scored = (samples > 0) & (samples >= kpi.min_samples)
    if kpi.stat_kind != "ratio" or not 0 < target < 1:
        return scored
    total = values * samples
    with np.errstate(over="ignore", under="ignore"):
        if kpi.lower_is_better:
            chance = np.where(total <= 0, (1 - target) ** samples, 1.0)
        else:
            chance = np.where(total >= samples, target ** samples, 1.0)
    return scored & (chance >= IMPLAUSIBLE)


def _draw_bands(terms: _Terms, drawn: Draws, draws: int, flagged: bool) -> list[str | None]:
    """The band id each drawn month earns: :func:`_score` over arrays (the same additions in
    the same order, so the same scores), then the policy's band and withholding per draw."""
    policy = terms.policy
    total = np.zeros(draws)
    weights = np.zeros(draws)
    floored = np.zeros(draws, dtype=bool)
    for kpi, weight, target in terms.kpis:
        got = drawn.get(kpi.id)
        if got is None:
            continue
        values, samples = got
        scored = _measured(kpi, values, samples, target)
        att = attainments(kpi, values, target)
        capped = np.where(att < policy.attainment_cap, att, policy.attainment_cap)
        total += np.where(scored, weight * capped, 0.0)
        weights += np.where(scored, weight, 0.0)
        if policy.floor is not None:
            floored |= scored & (att < policy.floor)
    with np.errstate(divide="ignore", invalid="ignore"):
        scores = total / weights
    bands: list[str | None] = []
    for score, weighed, low in zip(scores.tolist(), weights.tolist(), floored.tolist(),
                                   strict=True):
        band = (policy.withhold(policy.band_for(score, low), flagged) if weighed != 0
                else None)
        bands.append(band.id if band is not None else None)
    return bands


def _score(terms: _Terms, values: Mapping[str, MonthValue]) -> tuple[float | None, Band | None,
                                                                    tuple[str, ...]]:
    """The month's score, band and floored KPIs, by the terms in force in that month."""
    policy = terms.policy
    total = weights = 0.0
    floored: list[str] = []
    for kpi, weight, target in terms.kpis:
        got = values.get(kpi.id)
        if got is None or not_measured(kpi, _triple(got), target):
            continue
        att = attainment(kpi, got[0], target)
        total += weight * min(att, policy.attainment_cap)
        weights += weight
        if policy.floor is not None and att < policy.floor:
            floored.append(kpi.id)
    if weights == 0:
        return None, None, ()
    score = total / weights
    return score, policy.band_for(score, bool(floored)), tuple(floored)


def _triple(got: MonthValue | None) -> tuple[float, int, float] | None:
    """(value, samples, total) of a month value; total estimated as value x samples when the
    worker served no total (an older worker)."""
    if got is None:
        return None
    total = got[2] if len(got) > 2 else got[0] * got[1]
    return got[0], got[1], total


def _line(kpi: Kpi, partners: Partners, partner: str, now: MonthValue | None,
          before: MonthValue | None, month: int, shrunk: float | None = None,
          evidence: tuple[str, ...] = ()) -> KpiLine:
    source = partners.target_source(partner, kpi, month)
    target = source.value
    policy, policy_before = partners.policy(month), partners.policy(month - 1)
    weight = policy.weight(kpi.id, month)
    value = now[0] if now is not None else None
    prev = before[0] if before is not None else None
    why = not_measured(kpi, _triple(now), target)
    raw = attainment(kpi, value, target) if value is not None else None
    prev_target = partners.target(partner, kpi, month - 1)
    return KpiLine(
        kpi=kpi.id, title=kpi.title, unit=kpi.unit, better=kpi.better, value=value,
        samples=now[1] if now is not None else 0, target=target,
        attainment=None if raw is None else min(raw, policy.attainment_cap),
        counted=not why and weight > 0, weight=weight, previous=prev,
        previous_attainment=(min(attainment(kpi, prev, prev_target), policy_before.attainment_cap)
                             if prev is not None else None),
        capped=raw is not None and raw >= policy.attainment_cap, not_measured=why,
        target_source=source.describe(),
        shrunk=shrunk if shrunk is not None else value,
        shrunk_attainment=None if value is None else min(
            attainment(kpi, shrunk if shrunk is not None else value, target),
            policy.attainment_cap),
        evidence=evidence,
    )


def _channel_lines(catalog: Catalog, values: Mapping[str, MonthValue],
                   ) -> tuple[ChannelLine, ...]:
    out = []
    for kpi in catalog.channel_kpis:
        got = values.get(kpi.id)
        if got is not None and kpi.base is not None and kpi.channel is not None:
            out.append(ChannelLine(kpi.base, kpi.title, kpi.unit, kpi.channel, got[0], got[1]))
    return tuple(out)


def flag_text(flag: Flag) -> str:
    """'escalation_rate: threshold_hugging'."""
    return f"{flag[0]}: {flag[1]}"


def build_report(catalog: Catalog, partners: Partners, month: str, current: MonthValues,
                 previous: MonthValues, generated_ms: int,
                 integrity: Mapping[str, Iterable[Flag]] | None = None,
                 previous_integrity: Mapping[str, Iterable[Flag]] | None = None,
                 closed: Mapping[str, Closing] | None = None,
                 evidence: Mapping[str, Mapping[str, tuple[str, ...]]] | None = None) -> Report:
    """Cards for every listed partner and every partner with data or flags in either month.

    ``integrity`` (``previous_integrity``): partner -> integrity flags raised in the month (the
    one before). A band in the policy's ``integrity_withholds`` is not given to a partner flagged
    in that month: it gets the best band it qualifies for that is not withheld.
    """
    flags_now, flags_before = integrity or {}, previous_integrity or {}
    ids = sorted({*partners.partner_tier, *current, *previous, *flags_now, *flags_before})
    m = MonthCalendar.parse(month)
    policy, policy_before = partners.policy(m), partners.policy(m - 1)
    shrunk, funnels = _league(catalog, partners, current, m)
    calendar = MonthCalendar(catalog.report_timezone)
    start = calendar.start_ms(m)
    elapsed = (generated_ms - start) / (calendar.start_ms(m + 1) - start)
    cards = []
    for partner in ids:
        now, before = current.get(partner, {}), previous.get(partner, {})
        raised = tuple(sorted(set(flags_now.get(partner, ()))))
        raised_before = tuple(sorted(set(flags_before.get(partner, ()))))
        score, earned, floored = _score(_terms(catalog, partners, partner, m), now)
        prev_score, prev_earned, _ = _score(_terms(catalog, partners, partner, m - 1), before)
        band = policy.withhold(earned, bool(raised))
        withheld = earned if band != earned else None
        found = (evidence or {}).get(partner, {})
        lines = tuple(_line(k, partners, partner, now.get(k.id), before.get(k.id), m,
                            shrunk.get((partner, k.id)), found.get(k.id, ()))
                      for k in catalog.kpis)
        cards.append(PartnerCard(
            partner, partners.names.get(partner, partner), partners.tier(partner, m), lines,
            score, band, floored, prev_score,
            policy_before.withhold(prev_earned, bool(raised_before)),
            integrity=raised, previous_integrity=raised_before, withheld_band=withheld,
            band_withheld_by=tuple(map(flag_text, raised)) if withheld is not None else (),
            channels=_channel_lines(catalog, now), tier_since=partners.tier_since(partner, m),
            policy_since=partners.policy_since(m),
            projection=(project(catalog, partners, partner, now, m, elapsed, bool(raised),
                                lines) if 0 < elapsed < 1 and now else None),
            closing=(closed or {}).get(partner)))
    generated = datetime.fromtimestamp(generated_ms / 1000, UTC).isoformat(timespec="seconds")
    return Report(month, previous_month(month), catalog.report_timezone, generated,
                  _ranked(cards, policy), funnels)


FORECAST_DRAWS: Final = 1000
"""Monte Carlo draws per partner: a band probability to about +-1.6 points (one standard error
at 50%), at about 50 ms a partner here."""


def _models(catalog: Catalog, partners: Partners, partner: str, month: int) -> dict[str, KpiModel]:
    """How each KPI's rest of the month is drawn, and what one miss is (for the slack): a bad
    outcome for a ratio; for a mean or percentile, a sample at twice the target (lower is
    better) or half of it (higher is better)."""
    out = {}
    for kpi in catalog.kpis:
        target = partners.target(partner, kpi, month)
        if kpi.stat_kind == "ratio":
            miss = 1.0 if kpi.lower_is_better else 0.0
        else:
            miss = target * 2 if kpi.lower_is_better else target / 2
        out[kpi.id] = KpiModel(kpi.stat_kind, kpi.quantile, miss)
    return out


def project(catalog: Catalog, partners: Partners, partner: str,
            values: Mapping[str, MonthValue], month: int, elapsed: float, flagged: bool,
            lines: Sequence[KpiLine] = (), draws: int = FORECAST_DRAWS) -> Projection:
    """The month-end band forecast of a month in progress, and the slack on its weakest KPI
    (of ``lines``: none without them)."""
    policy = partners.policy(month)
    models = _models(catalog, partners, partner, month)
    mtd = {}
    for kpi_id, got in values.items():
        model = models.get(kpi_id)
        if model is None or len(got) < 4:
            continue  # a per-channel KPI, or an older worker without the sums
        hist = got[4] if len(got) > 4 else None
        if model.kind == "quantile" and hist is None:
            continue
        mtd[kpi_id] = MonthToDate(got[1], got[2], got[3], hist)

    terms = _terms(catalog, partners, partner, month)

    def band_of(drawn: Mapping[str, tuple[float, int]]) -> str | None:
        band = policy.withhold(_score(terms, drawn)[1], flagged)
        return band.id if band is not None else None

    def bands_of(drawn: Draws, draws: int) -> list[str | None]:
        return _draw_bands(terms, drawn, draws, flagged)

    order = [b.id for b in policy.bands]
    ahead = forecast(mtd, models, elapsed, band_of, draws=draws, order=order, bands_of=bands_of)
    counted = [x for x in lines if x.counted and x.attainment is not None and x.kpi in mtd]
    weakest = min(counted, key=lambda x: x.attainment or 0.0, default=None)
    room = (slack(mtd, models, band_of, weakest.kpi, order) if weakest is not None else None)
    return Projection(elapsed, ahead.probabilities, ahead.likely,
                      weakest.kpi if weakest is not None else None,
                      room.misses if room is not None else None)


def _league(catalog: Catalog, partners: Partners, current: MonthValues, month: int,
            ) -> tuple[dict[tuple[str, str], float], tuple[KpiFunnel, ...]]:
    """(partner, kpi) -> the month's value shrunk toward the fleet's, and the funnel plots.

    Only measured values take part (a month not measured is not evidence about the fleet); a
    served value without its sums (an older worker) is left raw."""
    out: dict[tuple[str, str], float] = {}
    funnels = []
    for kpi in catalog.kpis:
        if kpi.stat_kind == "quantile":
            continue
        observed = []
        for partner, values in current.items():
            got = values.get(kpi.id)
            if got is None or len(got) < 4:
                continue
            if not_measured(kpi, _triple(got), partners.target(partner, kpi, month)):
                continue
            total, squares = got[2], got[3]
            if kpi.stat_kind == "ratio" and total > got[1]:
                # a distinct ratio counts each side at its own event: a month can hold more 1s
                # than samples (reopened in it, resolved the month before). Shrinkage and funnel
                # are binomial: the month ranks as all 1s (the card keeps its own value)
                total = squares = float(got[1])
            observed.append(Observed(partner, got[1], total, squares))
        if len(observed) < MIN_PARTNERS:
            continue
        _, rows = shrink(kpi.stat_kind, observed)
        out.update({(partner, kpi.id): row.shrunk for partner, row in rows.items()})
        funnels.append(KpiFunnel(kpi.id, kpi.title, kpi.unit, funnel(kpi.stat_kind, observed)))
    return out, tuple(funnels)


def _ranked(cards: list[PartnerCard], policy: ReportPolicy) -> tuple[PartnerCard, ...]:
    """The cards with their fair score and their places by it and by the raw score."""
    fair = {c.partner: _fair_score(c, policy) for c in cards}
    raw = {c.partner: c.score for c in cards}

    def places(scores: dict[str, float | None]) -> dict[str, int]:
        ranked = sorted((p for p, v in scores.items() if v is not None),
                        key=lambda p: -(scores[p] or 0.0))
        return {p: i + 1 for i, p in enumerate(ranked)}

    by_fair, by_raw = places(fair), places(raw)
    return tuple(replace(c, fair_score=fair[c.partner], rank=by_fair.get(c.partner),
                         raw_rank=by_raw.get(c.partner)) for c in cards)


def _fair_score(card: PartnerCard, policy: ReportPolicy) -> float | None:
    """The weighted mean of the counted KPIs' capped shrunk attainments (raw where not shrunk)."""
    total = weights = 0.0
    for line in card.lines:
        if not line.counted or line.shrunk_attainment is None:
            continue
        total += line.weight * line.shrunk_attainment
        weights += line.weight
    return total / weights if weights else None


# --- where the numbers come from -----------------------------------------------------------
def month_values(engine: Engine, partner: str, month: str) -> dict[str, MonthValue]:
    """The partner's live month as the card reads it: value, samples, sums, histogram."""
    return {k: (v.value, v.samples, v.total, v.squares, dict(v.hist)) if v.hist is not None
            else (v.value, v.samples, v.total, v.squares)
            for k, v in engine.evaluate_month(partner, month).items()}


def month_state(engine: Engine, partner_ids: Iterable[str], month: str,
                integrity: RaisedIn | None = None) -> dict[str, Any]:
    """What a worker serves at /api/report: its partners' values for the month and the one before,
    and (``integrity``: the watch's ``lens.raised_in``) the integrity flags raised in each
    (:func:`month_state_steps` in one go)."""
    return finish(month_state_steps(engine, partner_ids, month, integrity))


def month_state_steps(engine: Engine, partner_ids: Iterable[str], month: str,
                      integrity: RaisedIn | None = None) -> Generator[None, None, dict[str, Any]]:
    """:func:`month_state` one partner per step (0.4 ms a filled partner), for the worker's
    view to let its event loop run between slices."""
    before = previous_month(month)
    out: dict[str, Any] = {}
    flags: dict[str, dict[str, list[list[str]]]] = {}
    closed: dict[str, dict[str, Any]] = {}
    evidence: dict[str, dict[str, Any]] = {}
    for partner in partner_ids:
        months: dict[str, Any] = {}
        raised = {}
        behind = engine.evidence(partner, month)
        if behind:
            evidence[partner] = {month: behind}
        for name in (month, before):
            frozen = engine.closed_month(partner, name)
            values = engine.evaluate_month(partner, name) if frozen is None else {}
            if frozen is not None:  # served as frozen: what was paid on
                months[name] = dict(frozen.values)
                closed.setdefault(partner, {})[name] = {
                    "closed_at_ms": frozen.closed_at_ms, "digest": frozen.digest,
                    "restatements": [asdict(r) for r in frozen.restatements]}
            elif values:
                months[name] = {k: [v.value, v.samples, v.total, v.squares]
                                + ([{str(b): c for b, c in v.hist.items()}]
                                   if v.hist is not None else [])
                                for k, v in values.items()}
            found = integrity(partner, name) if integrity is not None else ()
            if found:
                raised[name] = [[kpi, signal] for kpi, signal in found]
        if months:
            out[partner] = months
        if raised:
            flags[partner] = raised
        yield
    return {"month": month, "previous_month": before, "timezone": engine.catalog.report_timezone,
            "partners": out, "integrity": flags, "closed": closed, "evidence": evidence}


class Fetched(NamedTuple):
    """What the workers serve for a month: values and integrity flags, this month and the last,
    and which partners' month is closed (with its digest and restatements)."""

    current: MonthValues
    previous: MonthValues
    integrity: MonthFlags
    previous_integrity: MonthFlags
    closed: dict[str, Closing] = {}  # noqa: RUF012 - a NamedTuple default, never mutated
    evidence: dict[str, dict[str, tuple[str, ...]]] = {}  # noqa: RUF012 - as above
    """partner -> kpi -> entity ids behind the month's misses."""


def ask_workers(workers: list[str], path: str, partitions: int,
                get: Callable[[str], bytes]) -> list[tuple[str, dict[str, Any]]]:
    """(worker, its JSON answer) for ``path`` (``/api/...?query``) from every worker; fail on a
    refusal, a worker still recovering or with another partition count, and unless together
    they own every partition (an answer missing one would miss its partners)."""
    out: list[tuple[str, dict[str, Any]]] = []
    covered: set[int] = set()
    for base in workers:
        url = f"{base.rstrip('/')}{path}"
        try:
            body = orjson.loads(get(url))
        except (OSError, ValueError) as exc:
            raise ReportError(f"cannot read {url}: {exc}") from None
        if "error" in body:  # refused (a token missing or another partner's), a bad query
            raise ReportError(f"{base}: {body['error']}")
        if not body.get("ready"):
            raise ReportError(f"{base} is not ready (still recovering its state); try again")
        if body.get("partitions") != partitions:
            raise ReportError(f"{base} has {body.get('partitions')} partitions, expected "
                              f"{partitions}")
        covered.update(body.get("owned_partitions", []))
        out.append((base, body))
    missing = sorted(set(range(partitions)) - covered)
    if missing:
        raise ReportError(f"partitions {missing} are owned by none of the workers asked: pass "
                          f"every worker with --worker (a partial answer would miss partners)")
    return out


def fetch(workers: list[str], month: str, partitions: int,
          opener: Callable[[str], bytes] | None = None) -> Fetched:
    """Ask every worker for its partners' month; fail unless together they own every partition."""
    get = opener or http_get
    current: MonthValues = {}
    previous: MonthValues = {}
    flags_now: MonthFlags = {}
    flags_before: MonthFlags = {}
    closings: dict[str, Closing] = {}
    evidence: dict[str, dict[str, tuple[str, ...]]] = {}
    before = previous_month(month)
    for base, body in ask_workers(workers, f"/api/report?month={month}", partitions, get):
        if "integrity" not in body:  # a band withheld on flags must not be paid for want of them
            raise ReportError(f"{base} does not serve integrity flags (an older version?): "
                              "upgrade every worker")
        for partner, months in body["partners"].items():
            for name, into in ((month, current), (before, previous)):
                if name in months:
                    into[partner] = {k: month_value(v) for k, v in months[name].items()}
        for partner, months in body["integrity"].items():
            for name, flags in ((month, flags_now), (before, flags_before)):
                if months.get(name):
                    flags[partner] = tuple(sorted((str(k), str(s)) for k, s in months[name]))
        for partner, months in body.get("evidence", {}).items():
            if months.get(month):
                evidence[partner] = {str(k): tuple(map(str, ids))
                                     for k, ids in months[month].items()}
        for partner, months in body.get("closed", {}).items():
            got = months.get(month)
            if got is not None:
                closings[partner] = Closing(
                    int(got["closed_at_ms"]), str(got["digest"]),
                    tuple(Restatement(**r) for r in got["restatements"]))
    return Fetched(current, previous, flags_now, flags_before, closings, evidence)


def month_value(raw: list[Any]) -> MonthValue:
    """A served [value, samples, total, squares[, histogram]] ([value, samples] from an older
    worker)."""
    if len(raw) > 4:
        hist = {int(key): int(count) for key, count in raw[4].items()}
        return float(raw[0]), int(raw[1]), float(raw[2]), float(raw[3]), hist
    if len(raw) > 3:
        return float(raw[0]), int(raw[1]), float(raw[2]), float(raw[3])
    if len(raw) > 2:
        return float(raw[0]), int(raw[1]), float(raw[2])
    return float(raw[0]), int(raw[1])


def http_get(url: str, token: str | None = None) -> bytes:
    """The body of a GET (an error status's too: its JSON says why), with ``token`` as the
    bearer token when given."""
    request = urllib.request.Request(url)
    if token:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:  # 503 while recovering still carries the JSON body
        body = exc.read()
        return body
