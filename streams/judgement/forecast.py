"""The month-end band forecast: which report-card band a partner's month is heading for, and how sure.

Mid-month, a partner's band is a moving target: the month-to-date values earn one band now, but the
samples still to come can move every KPI. A partner manager needs "gold, 80%; standard, 18%", not
just "gold so far", and to know how many more misses a KPI can absorb before the band slips
(:func:`slack`).

:func:`forecast` draws the rest of the month by Monte Carlo, per KPI and vectorised over the draws
(:func:`month_end_draws`), from the month-to-date aggregates the engine keeps (samples, sum, sum of
squares, log-histogram: :mod:`streams.engine.months`):

* **Remaining volume**: the month-to-date rate extrapolated, ``n * (1 - elapsed) / elapsed`` on
  average, drawn negative binomial: the Gamma-Poisson posterior predictive of a Poisson count whose
  rate was estimated from ``n`` samples in ``elapsed`` of the month (rate ~ Gamma(n, elapsed), prior
  ``1 / rate``, whose mean is exactly that extrapolation). A plain Poisson would take the rate as
  known, which is overconfident early in the month (5 samples on day 2 say little about the next 28
  days); the two agree as ``n`` grows. A caller that knows the remaining volume (a contracted
  volume, a test) passes it as ``remaining``.
* **Remaining values**, by the KPI's :class:`KpiModel` kind, each the posterior predictive given the
  month to date, so the draws widen by themselves when little is known:

  - ``ratio`` (0/1 samples): the partner's true rate from its Beta posterior under the Jeffreys
    prior Beta(1/2, 1/2) (uninformative, and invariant to which outcome is called 1) or the
    model's own Beta ``prior`` (a fleet prior), then the remaining successes
    Binomial(remaining, rate).
  - ``mean``: the normal model with the Jeffreys prior ``1 / sigma^2``: ``sigma^2`` from its scaled
    inverse chi-square posterior (``n - 1`` degrees of freedom around the sample variance, so a
    small month-to-date sample gives heavy tails rather than a falsely tight spread), the mean
    ``mu ~ Normal(mean, sigma^2 / n)``, the remaining sum ``Normal(m * mu, m * sigma^2)``. The sample
    sd is floored at the model's ``sd_floor``; with fewer than two samples there is no sample
    variance and ``max(sd_floor, |mean|)`` (a coefficient of variation of 1, as durations have)
    stands in, with one degree of freedom.
  - ``quantile``: the remaining samples bootstrapped from the month-to-date histogram's buckets,
    Bayesian-bootstrap style: bucket shares ~ Dirichlet(bucket counts), then Multinomial(remaining,
    shares); the quantile is recomputed (nearest rank, as :func:`streams.engine.sketch.quantile_of`)
    on the merged histogram. The Dirichlet step carries the uncertainty of the distribution itself,
    which a plain bootstrap (the month-to-date shares taken as the truth) leaves out.

* The month-end value of every draw, ``(total + remaining total) / (n + remaining n)`` (or the
  merged quantile), goes through the caller's ``band_of`` (the report card's scoring rule); the
  band probabilities are the shares of the draws.

Edge cases, on purpose: ``elapsed >= 1`` is the month over, the current band with probability 1 and
no draws. A KPI without samples yet has no rate to extrapolate and nothing to draw its values from:
it stays absent in every draw (as it is now), even if ``remaining`` gives it a volume. Early in the
month (small ``elapsed`` or few samples) nothing special happens: the posteriors above are wide, so
the probabilities spread over the bands. ``elapsed <= 0`` is an error: nothing extrapolates from no
time.

KPIs are drawn independently of one another (a partner's KPIs share their ticket volume, but a band
turns on the rates, which the month to date pins down per KPI).

How well it does (tests/test_forecast.py, 1,200 simulated partner-months forecast at mid-month): of
the partner-bands forecast at 70-90%, 76% landed in that band (80% forecast on average), and the
Brier score is 0.33 against 0.47 for "the current band stays". What lean there is, is towards
overconfidence (about a point pooled over the forecasts of 50% or more, two to four at 70-90%), for
two reasons the simulations separate: a partner's own month cannot tell a lucky start from a good
partner (a fleet ``prior`` on a ratio KPI removes that part), and a heavy-tailed mean KPI's sample
variance tends to run low, which the normal model takes at its word.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from streams.engine import sketch

KINDS: Final = ("ratio", "mean", "quantile")
"""What a KPI's samples are, for the forecast: 0/1 outcomes, values averaged, values whose
quantile is taken."""

NO_BAND: Final = ""
"""The key of :attr:`Forecast.probabilities` for draws that earn no band (``band_of`` gives None)."""

JEFFREYS: Final = 0.5
"""The Beta(1/2, 1/2) prior of a ratio KPI's rate (pseudo-counts added to each outcome)."""

BandOf = Callable[[Mapping[str, tuple[float, int]]], str | None]
"""KPI id -> (month value, samples) -> the band id the month earns (None: no band). KPIs without
samples are absent from the mapping, as they are from the report card's month values."""

Draws = dict[str, tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]]
"""KPI id -> (month-end value per draw, month-end samples per draw)."""

BandsOf = Callable[[Draws, int], Sequence[str | None]]
"""The scoring rule of :data:`BandOf` over every draw at once: the draws and their number -> the
band id each earns, in draw order."""


@dataclass(frozen=True, slots=True)
class MonthToDate:
    """One KPI's aggregate over the month so far, as the engine keeps it (``months.value_of``)."""

    samples: int
    total: float
    """Sum of the sample values (the count of 1s for a ratio)."""
    squares: float
    """Sum of the squared sample values (the spread of a mean KPI)."""
    hist: Mapping[int, int] | None = None
    """Log-histogram of the values (:mod:`streams.engine.sketch`), for quantile KPIs."""

    def __post_init__(self) -> None:
        if self.samples < 0:
            raise ValueError(f"samples cannot be negative (got {self.samples})")


@dataclass(frozen=True, slots=True)
class KpiModel:
    """How one KPI's remaining samples are drawn, and what a miss is (for :func:`slack`)."""

    kind: str
    """One of :data:`KINDS`."""
    quantile: float | None = None
    """The quantile in (0, 1) a ``quantile`` KPI reports (0.9 for a p90)."""
    miss_value: float | None = None
    """The value of one missed sample: for a ratio the bad outcome (1.0 when the ratio counts bad
    outcomes, as an escalation rate; 0.0 when it counts good ones), for a mean or quantile KPI a
    value the caller chooses (e.g. twice the target duration). Only :func:`slack` needs it."""
    sd_floor: float = 0.0
    """Least per-sample standard deviation of a ``mean`` KPI: a month to date that happens to be
    nearly constant would otherwise forecast the rest as constant too."""
    prior: tuple[float, float] | None = None
    """A ``ratio`` KPI's Beta prior on the rate, as (1s, 0s) pseudo-counts; None is Jeffreys
    (1/2, 1/2). Why offer one: a partner's own month cannot tell luck from skill, so a month that
    starts unusually well or badly is forecast to stay so; a fleet prior (fitted across partners,
    empirical Bayes) pulls it back toward the fleet as much as the fleet's spread warrants."""

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown kind {self.kind!r}; kinds are {KINDS}")
        if (self.kind == "quantile") != (self.quantile is not None):
            raise ValueError("a quantile is needed by, and only by, a 'quantile' KPI")
        if self.quantile is not None and not 0.0 < self.quantile < 1.0:
            raise ValueError(f"quantile must be in (0, 1) (got {self.quantile})")
        if not self.sd_floor >= 0.0:
            raise ValueError(f"sd_floor cannot be negative (got {self.sd_floor})")
        if self.prior is not None and (self.kind != "ratio" or not min(self.prior) > 0.0):
            raise ValueError("a prior is a ratio KPI's two positive Beta pseudo-counts")


@dataclass(frozen=True, slots=True)
class Forecast:
    """The band a partner's month is heading for."""

    probabilities: dict[str, float]
    """Band id -> probability at month end (:data:`NO_BAND` for no band); they sum to 1. Only
    outcomes some draw reached are listed, most probable first (best band first among ties when an
    ``order`` was given)."""
    likely: str
    """The most probable band (:data:`NO_BAND` when that is no band)."""
    current: str | None
    """The band the month-to-date values earn now."""
    draws: int
    """Monte Carlo draws behind the probabilities (0: the month is over, nothing was drawn)."""


@dataclass(frozen=True, slots=True)
class Slack:
    """How many more misses one KPI can take this month before the band slips."""

    kpi: str
    misses: int | None
    """The fewest further misses (samples at the model's ``miss_value``) that take the band below
    the current one; None when no number up to the cap does (or there is no band to lose)."""
    current: str | None
    """The band the month-to-date values earn now."""


# --- the month to date ---------------------------------------------------------------------------


def _value(model: KpiModel, agg: MonthToDate) -> float | None:
    """The KPI's month-to-date value, as the engine computes it (None without samples)."""
    if agg.samples <= 0:
        return None
    if model.quantile is not None:
        if agg.hist is None:
            raise ValueError("a quantile KPI needs its month-to-date histogram")
        return sketch.quantile_of({k: c for k, c in agg.hist.items() if c}, model.quantile)
    return agg.total / agg.samples


def _values(mtd: Mapping[str, MonthToDate], models: Mapping[str, KpiModel],
            ) -> dict[str, tuple[float, int]]:
    """KPI id -> (month-to-date value, samples), KPIs without samples left out."""
    out: dict[str, tuple[float, int]] = {}
    for kpi, agg in mtd.items():
        model = models.get(kpi)
        if model is None:
            raise ValueError(f"no model for KPI {kpi!r}")
        value = _value(model, agg)
        if value is not None:
            out[kpi] = (value, agg.samples)
    return out


def current_band(mtd: Mapping[str, MonthToDate], models: Mapping[str, KpiModel],
                 band_of: BandOf) -> str | None:
    """The band the month-to-date values earn now."""
    return band_of(_values(mtd, models))


# --- the draws -----------------------------------------------------------------------------------


def _remaining_volume(rng: np.random.Generator, n: int, elapsed: float, draws: int,
                      ) -> npt.NDArray[np.int64]:
    """Samples still to come: negative binomial (Gamma-Poisson), mean ``n (1 - e) / e``."""
    rate = rng.gamma(shape=n, scale=(1.0 - elapsed) / elapsed, size=draws)
    return rng.poisson(rate).astype(np.int64)


def _ratio_draws(rng: np.random.Generator, agg: MonthToDate, rem: npt.NDArray[np.int64],
                 prior: tuple[float, float] | None) -> npt.NDArray[np.float64]:
    n = agg.samples
    ones = agg.total
    if not ones >= -1e-9:  # (NaN fails too)
        raise ValueError(f"a ratio's total (its 1s) cannot be negative (got {ones})")
    ones = max(ones, 0.0)
    # A month may hold more numerator events than denominator ones: a ratio of distinct
    # entities counts each side at its own event, so a ticket reopened this month and resolved
    # last month is a 1 without its sample here. The rate is then drawn as if at most every
    # sample were a 1; the month-end value keeps every 1 counted (above 1, as the card shows).
    seen = min(ones, float(n))
    a, b = prior if prior is not None else (JEFFREYS, JEFFREYS)
    rate = rng.beta(seen + a, n - seen + b, size=rem.shape[0])
    more = rng.binomial(rem, rate)
    return np.asarray((ones + more) / (n + rem), dtype=np.float64)


def _mean_draws(rng: np.random.Generator, agg: MonthToDate, rem: npt.NDArray[np.int64],
                sd_floor: float) -> npt.NDArray[np.float64]:
    n = agg.samples
    mean = agg.total / n
    if n >= 2:
        var = max(0.0, (agg.squares - agg.total * mean) / (n - 1))
        sd = max(math.sqrt(var), sd_floor)
        df = n - 1
    else:
        sd = max(sd_floor, abs(mean))
        df = 1
    draws = rem.shape[0]
    if sd == 0.0:  # a constant KPI (floor 0, zero value): nothing to draw
        return np.full(draws, mean, dtype=np.float64)
    sigma2 = df * sd * sd / rng.chisquare(df, size=draws)
    mu = rng.normal(mean, np.sqrt(sigma2 / n))
    more = rng.normal(rem * mu, np.sqrt(rem * sigma2))
    return np.asarray((agg.total + more) / (n + rem), dtype=np.float64)


def _quantile_draws(rng: np.random.Generator, agg: MonthToDate, rem: npt.NDArray[np.int64],
                    q: float) -> npt.NDArray[np.float64]:
    """Month-end quantile per draw: the remaining samples Dirichlet-multinomial over the buckets.

    Why a descent rather than the whole multinomial: a log-histogram has hundreds of buckets, and
    drawing every bucket of every draw costs tens of milliseconds per KPI, while only the bucket
    holding the nearest-rank sample matters. Each draw walks down a binary split of the buckets:
    the remaining samples of the current range split between its halves Beta-binomially (the
    halves' shares of a Dirichlet are Beta, each half's inside independent of the split), and the
    walk goes to the half holding the rank. That is the Dirichlet-multinomial's law, exactly, in
    ``log2(buckets)`` vectorised steps.
    """
    if agg.hist is None:
        raise ValueError("a quantile KPI needs its month-to-date histogram")
    keys = sorted(k for k, c in agg.hist.items() if c > 0)
    counts = np.array([agg.hist[k] for k in keys], dtype=np.int64)
    n = agg.samples
    if int(counts.sum()) != n:
        raise ValueError(f"the histogram holds {int(counts.sum())} samples, not {n}")
    draws = rem.shape[0]
    values = np.array([sketch.value_of(k) for k in keys], dtype=np.float64)
    below = np.concatenate(([0], np.cumsum(counts)))  # month-to-date samples in buckets [0, j)
    rank = np.maximum(1, np.ceil(q * (n + rem) - 1e-9)).astype(np.int64)
    lo = np.zeros(draws, dtype=np.int64)  # each draw's range of buckets [lo, hi) ...
    hi = np.full(draws, len(keys), dtype=np.int64)
    more = rem.copy()  # ... the remaining samples drawn into it ...
    before = np.zeros(draws, dtype=np.int64)  # ... and all samples (old and new) below it
    while True:
        act = np.flatnonzero(hi - lo > 1)
        if act.size == 0:
            return values[lo]
        a, b = lo[act], hi[act]
        mid = (a + b) // 2
        left, right = below[mid] - below[a], below[b] - below[mid]
        share = rng.beta(left, right)
        more_left = rng.binomial(more[act], share)
        go_left = before[act] + left + more_left >= rank[act]
        hi[act] = np.where(go_left, mid, b)
        lo[act] = np.where(go_left, a, mid)
        before[act] = np.where(go_left, before[act], before[act] + left + more_left)
        more[act] = np.where(go_left, more_left, more[act] - more_left)


def month_end_draws(mtd: Mapping[str, MonthToDate], models: Mapping[str, KpiModel], elapsed: float,
                    *, draws: int = 2000, seed: int = 0,
                    remaining: Mapping[str, int] | None = None) -> Draws:
    """Each KPI's month-end (value, samples) in ``draws`` Monte Carlo draws (see the module).

    For callers that score vectorised; :func:`forecast` runs these through a per-draw ``band_of``.
    ``remaining``: KPI id -> the number of samples still to come, when it is known (the others are
    drawn). KPIs without samples yet are left out.
    """
    if not 0.0 < elapsed < 1.0:
        raise ValueError(f"month_end_draws needs 0 < elapsed < 1 (got {elapsed})")
    if draws < 1:
        raise ValueError(f"draws must be at least 1 (got {draws})")
    rng = np.random.default_rng(seed)
    fixed = remaining or {}
    out: Draws = {}
    for kpi in sorted(mtd):  # sorted: the same draws whatever order the caller's mapping has
        agg = mtd[kpi]
        model = models.get(kpi)
        if model is None:
            raise ValueError(f"no model for KPI {kpi!r}")
        if agg.samples <= 0:
            continue
        if kpi in fixed:
            if fixed[kpi] < 0:
                raise ValueError(f"remaining samples of {kpi!r} cannot be negative")
            rem = np.full(draws, fixed[kpi], dtype=np.int64)
        else:
            rem = _remaining_volume(rng, agg.samples, elapsed, draws)
        if model.kind == "ratio":
            values = _ratio_draws(rng, agg, rem, model.prior)
        elif model.kind == "mean":
            values = _mean_draws(rng, agg, rem, model.sd_floor)
        else:
            assert model.quantile is not None  # checked by KpiModel
            values = _quantile_draws(rng, agg, rem, model.quantile)
        out[kpi] = (values, agg.samples + rem)
    return out


# --- the forecast --------------------------------------------------------------------------------


def _rank(order: Sequence[str] | None) -> Callable[[str], int]:
    """Sort key of a band id: its place in ``order`` (no band and unknown bands last)."""
    if order is None:
        return lambda band: 0
    place = {band: i for i, band in enumerate(order)}
    return lambda band: place.get(band, len(place))


def forecast(mtd: Mapping[str, MonthToDate], models: Mapping[str, KpiModel], elapsed: float,
             band_of: BandOf, *, draws: int = 2000, seed: int = 0,
             remaining: Mapping[str, int] | None = None,
             order: Sequence[str] | None = None, bands_of: BandsOf | None = None) -> Forecast:
    """The partner's band at month end, with probabilities.

    ``mtd``: KPI id -> its month-to-date aggregate; ``models``: KPI id -> how it is drawn (every KPI
    of ``mtd`` needs one); ``elapsed``: the fraction of the month gone (1 or more: the month is
    over; 0 or less is a ValueError); ``band_of``: the scoring rule, called once per draw;
    ``remaining``: known remaining volumes (:func:`month_end_draws`); ``order``: band ids best
    first, only to break ties between equally likely bands in favour of the better one and to list
    them so; ``bands_of``: the same rule as ``band_of`` over all draws at once, used for the draws
    when given (a per-draw rule in Python was most of a forecast's cost). Same ``seed``, same
    forecast.
    """
    now = current_band(mtd, models, band_of)
    if elapsed >= 1.0:
        key = now if now is not None else NO_BAND
        return Forecast({key: 1.0}, key, now, 0)
    sampled = month_end_draws(mtd, models, elapsed, draws=draws, seed=seed, remaining=remaining)
    kpis = list(sampled)
    tally: Counter[str] = Counter()
    if bands_of is not None:
        tally.update(band if band is not None else NO_BAND for band in bands_of(sampled, draws))
    else:
        columns = [list(zip(values.tolist(), samples.tolist(), strict=True))
                   for values, samples in sampled.values()]
        for row in zip(*columns, strict=True):  # one draw's (value, samples) per KPI
            band = band_of(dict(zip(kpis, row, strict=True)))
            tally[band if band is not None else NO_BAND] += 1
    if not kpis:  # nothing has samples: every draw is the month as it is now
        tally[now if now is not None else NO_BAND] = draws
    rank = _rank(order)
    ranked = sorted(tally.items(), key=lambda item: (-item[1], rank(item[0]), item[0]))
    probabilities = {band: count / draws for band, count in ranked}
    return Forecast(probabilities, ranked[0][0], now, draws)


# --- slack ---------------------------------------------------------------------------------------


def _with_misses(model: KpiModel, agg: MonthToDate, k: int, miss: float) -> tuple[float, int]:
    """The KPI's (value, samples) after ``k`` more samples at ``miss``."""
    n = agg.samples + k
    if model.quantile is not None:
        if agg.hist is None and agg.samples > 0:
            raise ValueError("a quantile KPI needs its month-to-date histogram")
        hist = {key: c for key, c in (agg.hist or {}).items() if c}
        key = sketch.key_of(miss)
        hist[key] = hist.get(key, 0) + k
        value = sketch.quantile_of(hist, model.quantile)
        assert value is not None  # k >= 1 samples
        return value, n
    return (agg.total + k * miss) / n, n


def slack(mtd: Mapping[str, MonthToDate], models: Mapping[str, KpiModel], band_of: BandOf,
          kpi: str, order: Sequence[str], *, cap: int = 10_000) -> Slack:
    """The fewest further misses of ``kpi`` that drop the band below the one earned now.

    Deterministic, on the month-to-date values: ``k`` misses are ``k`` samples at the KPI's
    ``miss_value`` added to its aggregate, the other KPIs as they are. "Below" is later in
    ``order`` (band ids, best first), or no band at all. The search gallops (1, 2, 4, ... misses) to
    a count that drops the band, then bisects back to the fewest: exact when, once some number of
    misses drops the band, more misses keep it dropped, which holds for a score that worsens as a
    KPI's value worsens (misses move a mean, a ratio or a quantile only towards the miss; a KPI that
    only starts to count after some misses starts at a worse value than any before it).
    """
    model = models.get(kpi)
    if model is None:
        raise ValueError(f"no model for KPI {kpi!r}")
    if model.miss_value is None:
        raise ValueError(f"KPI {kpi!r} has no miss_value: slack needs to know what a miss is")
    if cap < 1:
        raise ValueError(f"cap must be at least 1 (got {cap})")
    miss = model.miss_value
    base = _values(mtd, models)
    now = band_of(base)
    if now is None:
        return Slack(kpi, None, None)
    place = {band: i for i, band in enumerate(order)}
    if now not in place:
        raise ValueError(f"band {now!r} is not in the order {list(order)}")
    agg = mtd.get(kpi, MonthToDate(0, 0.0, 0.0))

    def dropped(k: int) -> bool:
        band = band_of({**base, kpi: _with_misses(model, agg, k, miss)})
        if band is None:
            return True
        if band not in place:
            raise ValueError(f"band {band!r} is not in the order {list(order)}")
        return place[band] > place[now]

    held, k = 0, 1  # held: the most misses known not to drop the band
    while not dropped(k):
        if k >= cap:
            return Slack(kpi, None, now)
        held, k = k, min(2 * k, cap)
    while k - held > 1:  # dropped at k, not at held
        mid = (held + k) // 2
        if dropped(mid):
            k = mid
        else:
            held = mid
    return Slack(kpi, k, now)
