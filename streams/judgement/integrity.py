"""The integrity lens: statistics that catch a partner bending its numbers to a KPI target.

Partners paid on KPI targets learn where the targets are. An escalation-rate target of 15% gets
14.9%, month after month; a 2-hour open-to-status target gets first contacts logged at 1h50-1h59;
escalations that would push the rate over stop being logged. None of it breaches a target, so
the judgement (:mod:`streams.judgement.judge`) sees nothing. Each of the three signals here looks
at the *shape* of a partner's numbers rather than their level, is silent (``None``) below a
minimum volume, and returns a :class:`Finding` with its evidence: a p-value, the raw statistic and
one human sentence.

**Threshold hugging** (ratio KPIs). A rate that is steered, not measured, is too steady, and it
stops at the target. Two lower-tail p-values, combined by Fisher's method (one looks at the
scatter of the sub-period counts, the other at their order; nearly independent under the null,
the combination was measured at its nominal level):

* *Scatter.* An honest partner's escalations per sub-period scatter binomially around its rate; a
  steered one's scatter less. The statistic is the binomial dispersion index, Pearson's
  chi-square of the 2 x m table (sub-period x escalated or not),
  ``D = sum((x_i - n_i p)^2 / (n_i p (1 - p)))`` with the pooled rate ``p``, in its *lower* tail.
  The textbook null, chi-square on ``m - 1`` df, is asymptotic in every ``n_i p``; at ~25 tickets
  a sub-period (``n_i p`` ~ 4) its lower tail is too heavy (measured: 0.5x-0.9x the nominal
  rate, lost power). The null used is exact in its first two moments instead: conditional on the
  sub-period sizes and the total count (which also frees it of the unknown rate) the counts are
  multivariate hypergeometric, the exact mean and variance of ``D`` follow from factorial
  moments in closed form, and ``D`` is referred to the gamma distribution with those moments
  (measured at its nominal level down to 1e-3, 4 to 30 days).
* *Feedback.* A partner that escalates "only while the running rate is below 14.9%" escalates
  almost nothing right after its running rate reaches the target. :func:`feedback_test` compares
  the events in the buckets that start with the running rate at or over the target with what an
  unsteered sequence with the same totals would put there (an exact-conditional martingale).

The scatter alone is weak against the simulated throttler (a third or less caught within 14
days); the combination catches about three in four (the README's Integrity section). The finding only counts
when the pooled rate is on the passing side of the target and close to it (``band``): nobody
games a target they miss, or one they beat by far.

**Deadline bunching** (duration KPIs). Durations are a smooth density; a deadline makes a cliff
in it when work is logged to beat the clock. In the manner of McCrary's density-discontinuity
test, durations are counted in ``2k`` bins of ``bunching_width * target`` around the target
(:func:`bunching_bins`, which the engine mirrors); a log-quadratic Poisson regression on the bins
*away* from the target (all but the one just inside and the one just outside) gives the smooth
density's prediction of the just-inside bin's share of the two middle bins; the observed share is
tested with a one-sided binomial test. Its success probability carries the fit's uncertainty (a
normal on the predicted log-odds, inflated by the flank fit's Pearson dispersion when that is
over 1, integrated by Gauss-Hermite): at 50 tickets a day the fit is tight and this changes
little, but a lumpy real distribution widens it instead of flagging. The share of the middle two
bins is what gaming moves (mass from just over the deadline to just under it). The smooth
log-quadratic is only an approximation of a real density, and with enough data any approximation
error is significant (measured: 1.5% of honest evaluations below 1e-3 at 150,000 durations): an
effect size, the just-inside count over the fit's prediction, must also exceed ``min_excess``.

**Under-reporting** (ratio KPIs whose numerator can quietly stop being logged). The window is
split in time into the recent ``recent_share`` and the baseline before it. With equal rates and
conditional on the total count of numerator events, the recent count is binomial with the recent
share of the denominator, an exact test free of the rate; a flag also needs the recent rate below
``min_ratio_drop`` of the baseline's, because the lens is after events that vanish, not a partner
getting a little better, and because real partners' day-to-day rates vary more than binomially
(which the exact test ignores and the effect size absorbs).

The defaults of :class:`IntegrityParams` were chosen by the simulation in
tests/test_integrity_stats.py (the README's Integrity section has the measured rates).

Distributions are scipy's (``scipy.special`` functions, which ``scipy.stats`` wraps: a
``scipy.stats`` call spends ~150 us on argument handling, the whole budget of an evaluation).
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt
from scipy import special

SIGNALS: Final = ("threshold_hugging", "deadline_bunching", "under_reporting")
"""The signal names a :class:`Finding` carries (and the gauge label values)."""

SCORE_CAP: Final = 50.0
"""Cap of ``score = -log10(p_value)``: a gauge of 300 says nothing 50 does not, and p = 0 is finite."""

BUNCHING_K: Final = 5
"""Bins on each side of the target for :func:`bunching_bins`: 4 flank bins per side are left for the
smooth fit (3 parameters, 5 residual df), and 5 bins of 10% reach 50% away from the target, where
a duration density is still one smooth hump."""

_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(24)
_GH_WEIGHTS = _GH_WEIGHTS / math.sqrt(2.0 * math.pi)  # expectations under the standard normal


@dataclass(frozen=True, slots=True)
class Finding:
    """One signal's verdict on one partner x KPI, with the evidence behind it."""

    signal: str
    """One of :data:`SIGNALS`."""
    flagged: bool
    score: float
    """``-log10(p_value)`` capped at :data:`SCORE_CAP`: the evidence exported as a gauge."""
    p_value: float
    samples: int
    """Events or samples the test used (tickets, durations in the bins, tickets in the window)."""
    periods: int
    """Sub-periods (hugging), bins (bunching), or 2 (under-reporting)."""
    statistic: float
    """The raw statistic: dispersion index ``D / E0[D]`` (hugging), just-inside excess (bunching),
    recent-over-baseline rate ratio (under-reporting)."""
    detail: str
    """One sentence with the numbers, for alert text and the report card."""


@dataclass(frozen=True, slots=True)
class IntegrityParams:
    """Thresholds of the three signals; the defaults come from tests/test_integrity_stats.py.

    A partner-month is 30 daily evaluations of a rolling 30-day window of 1-hour buckets; the
    goals were at most 1% of honest partner-months flagged and at least 95% of gaming partners
    flagged within 14 days at 50 tickets a day (met for bunching and under-reporting; hugging
    reaches ~73% in 14 days and ~92% in 30, see the README's Integrity section).
    """

    alpha: float = 3e-4
    """Per-evaluation false-flag level of each test. Consecutive days' windows overlap 29/30 but
    the hugging sub-periods are re-cut each day, so a month is worth several looks: at 3e-4 the
    honest hugging cases at the target (14.9% under 15%, 86% over 85%) were flagged in 0.36% of
    3600 partner-months each (5e-4: 0.56-0.64%, 1e-3: 1.1%), while the throttler of the simulation
    is caught within 14 days 73% of the time (5e-4: 78%). The other two signals' gaming p-values
    are far below any of these."""
    min_periods: int = 8
    """Hugging: fewest sub-periods: 8 x 25 tickets is 4 days at 50 a day, the earliest finding.
    Both nulls were measured calibrated on 4-day windows."""
    min_per_period: int = 25
    """Hugging: tickets per sub-period (consecutive buckets are merged until reached). 25 gives
    ~60 sub-periods in a 30-day window at 50 tickets a day, ``n p`` ~ 4 at a 15% rate. The
    scatter's power against the simulated throttler was highest at 25 of the sizes tried (25: 43%,
    40-50: 37%, 75-100: 27% caught within 14 days, alone at alpha 1e-3); the gamma null was measured
    calibrated at 10 and at 25."""
    band: float = 0.1
    """Hugging: the pooled rate must be on the passing side of the target and within
    ``band * target`` of it (13.5-15% for a 15% ceiling; for a higher-is-better KPI on the miss
    rate, 85-86.5% for an 85% floor). A partner far inside the target has no reason to steer, and
    not testing it halves the exposure of an honest partner at 14.9%; 10% still covers a partner
    steering with some safety margin below the target."""
    bunching_width: float = 0.1
    """Bunching: bin width as a share of the target (12 minutes for 2 hours): the just-inside bin
    (1h48-2h) holds the last-minute logging, narrow enough that honest mass there is small."""
    min_bunching_samples: int = 200
    """Bunching: fewest durations in the ``2k`` bins (~20 a bin): the null was measured calibrated
    there (0.07% of honest evaluations below 1e-3 at ~200 binned durations); 200 is 6-7 days at 50
    tickets a day, which is when the bunched partner of the simulation is caught."""
    min_excess: float = 1.5
    """Bunching: the just-inside count must also exceed this multiple of the smooth fit's
    prediction. Honest excesses measured 0.68-1.40 (0.1% and 99.9% quantiles) at 1500 tickets a
    month and 0.37-2.0 at 320, where the p-value does the work; the bunched partner shows 4.4-5.9.
    It is what keeps a partner with 150,000 durations from being flagged for the fit's own
    approximation error."""
    recent_share: float = 0.25
    """Under-reporting: the last quarter of the window (7.5 of 30 days) against the rest."""
    min_ratio_drop: float = 0.5
    """Under-reporting: the recent rate must be below this share of the baseline rate. Halving is
    what vanishing events look like. Honest partners with day-to-day (beta-binomial) variation
    showed recent/baseline ratios down to 0.55 (0.1% quantile) at 50 tickets a day; with 0.6
    (and alpha 5e-4) 1.5% of their partner-months were flagged."""
    min_under_reporting_samples: int = 200
    """Under-reporting: fewest tickets (the denominator) in the recent part and in the baseline:
    4 days at 50 a day, ~24 expected escalations at 12%, enough for a halving to reach ``alpha``."""

    def __post_init__(self) -> None:
        if not 0.0 < self.alpha < 1.0:
            raise ValueError(f"alpha must be in (0, 1), not {self.alpha}")
        if self.min_periods < 2 or self.min_per_period < 1:
            raise ValueError("min_periods must be >= 2 and min_per_period >= 1")
        if self.band <= 0.0 or self.bunching_width <= 0.0 or self.min_excess <= 0.0:
            raise ValueError("band, bunching_width and min_excess must be positive")
        if not 0.0 < self.recent_share < 1.0 or not 0.0 < self.min_ratio_drop <= 1.0:
            raise ValueError("recent_share must be in (0, 1) and min_ratio_drop in (0, 1]")
        if self.min_bunching_samples < 1 or self.min_under_reporting_samples < 1:
            raise ValueError("the minimum sample counts must be >= 1")


DEFAULT_PARAMS: Final = IntegrityParams()

Buckets = Sequence[tuple[float, float]] | npt.NDArray[np.floating] | npt.NDArray[np.integer]
"""``(n, x)`` pairs oldest first: ``n`` the denominator count, ``x`` the numerator count. An
``(m, 2)`` array is accepted as is (the simulation hands over slices of one)."""


# --- helpers ---------------------------------------------------------------------------------------


def score_of(p_value: float) -> float:
    """``-log10(p_value)``, capped at :data:`SCORE_CAP` (and 0 for p >= 1)."""
    if p_value <= 0.0:
        return SCORE_CAP
    return min(SCORE_CAP, max(0.0, -math.log10(p_value)))


def _check_better(better: str) -> None:
    if better not in ("lower", "higher"):
        raise ValueError(f"better must be 'lower' or 'higher', not {better!r}")


def _as_buckets(buckets: Buckets) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    arr = np.asarray(buckets, dtype=np.float64)
    if arr.size == 0:
        return np.zeros(0), np.zeros(0)
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ValueError(f"buckets must be (n, x) pairs, got shape {arr.shape}")
    n, x = arr[:, 0], arr[:, 1]
    # A bucket may hold more numerator than denominator events: a count ratio counts each event
    # when it happens (an escalation an hour after its ticket was opened lands in a later bucket
    # than the opening). Only merged sub-periods are held to x <= n (see threshold_hugging).
    if not ((x >= 0.0).all() and (n >= 0.0).all()):
        raise ValueError("buckets need non-negative counts")
    return n, x


def _merge(
    n: npt.NDArray[np.float64], x: npt.NDArray[np.float64], min_per_period: int
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Greedy oldest-first merge; the trailing remainder joins the last full sub-period."""
    total = float(n.sum())
    if total < min_per_period:
        return np.zeros(0), np.zeros(0)
    cum = np.cumsum(n)
    cum_list = cum.tolist()
    ends: list[int] = []
    end = -1
    # one bisection per sub-period (~60) on a Python list: a numpy searchsorted per sub-period costs
    # 5 us of call overhead each, a Python step per bucket (720) more
    while True:
        start = cum_list[end] if end >= 0 else 0.0
        end = bisect.bisect_left(cum_list, start + min_per_period, lo=end + 1)
        if end >= len(cum_list):
            break
        ends.append(end)
    if not ends:
        return np.zeros(0), np.zeros(0)
    # the remainder (fewer than min_per_period) goes into the last sub-period rather than being
    # dropped: it is the most recent data, and D weighs unequal sub-periods correctly
    ends[-1] = len(cum) - 1
    idx = np.asarray(ends, dtype=np.intp)
    cum_x = np.cumsum(x)
    n_out = np.diff(np.concatenate(([0.0], cum[idx])))
    x_out = np.diff(np.concatenate(([0.0], cum_x[idx])))
    return n_out, x_out


def merge_periods(buckets: Buckets, min_per_period: int) -> list[tuple[float, float]]:
    """Consecutive ``(n, x)`` buckets (oldest first) merged into sub-periods of ``n >= min_per_period``.

    Buckets are summed oldest first until a sub-period holds at least ``min_per_period``
    (empty buckets simply join the sub-period they fall in). The trailing remainder below
    ``min_per_period`` is merged into the last sub-period, not dropped: it is the newest data, and
    the dispersion index allows unequal sub-periods. With less than ``min_per_period`` in all, the
    result is empty.
    """
    if min_per_period < 1:
        raise ValueError(f"min_per_period must be >= 1, not {min_per_period}")
    n, x = _as_buckets(buckets)
    n_out, x_out = _merge(n, x, min_per_period)
    return [(float(a), float(b)) for a, b in zip(n_out, x_out, strict=True)]


# --- threshold hugging -----------------------------------------------------------------------------


def dispersion_null_moments(n: npt.NDArray[np.float64], total_x: float) -> tuple[float, float]:
    """Exact mean and variance of the dispersion index ``D`` given sub-period sizes and the total.

    Conditional on ``n_i`` and ``X = sum x_i`` the counts are multivariate hypergeometric
    (``X`` draws from an urn of ``N = sum n_i`` balls, ``n_i`` of colour ``i``), with factorial
    moments ``E[x_i^(r) x_j^(s)] = n_i^(r) n_j^(s) X^(r+s) / N^(r+s)`` (falling factorials).
    ``D = (S - X^2/N) / (p q)`` with ``S = sum x_i^2 / n_i`` and ``p = X/N`` fixed, so ``E[D]``
    and ``Var[D]`` follow from ``E[S]`` and ``E[S^2]``, expanded into factorial moments. (The mean
    is Haldane's ``(m - 1) N / (N - 1)``.) Needs ``N >= 4`` and every ``n_i >= 1``.
    """
    m = len(n)
    big_n = float(n.sum())
    f1 = total_x / big_n
    f2 = f1 * (total_x - 1.0) / (big_n - 1.0)
    f3 = f2 * (total_x - 2.0) / (big_n - 2.0)
    f4 = f3 * (total_x - 3.0) / (big_n - 3.0)
    a = n - 1.0
    a_sum = float(a.sum())
    a_sq = float((a * a).sum())
    e_s = f2 * a_sum + m * f1
    ff2 = n * a
    ff3 = ff2 * (n - 2.0)
    ff4 = ff3 * (n - 3.0)
    # x^4 = x^(4) + 6 x^(3) + 7 x^(2) + x and x^2 y^2 = (x^(2) + x)(y^(2) + y)
    diag = float(((ff4 * f4 + 6.0 * ff3 * f3 + 7.0 * ff2 * f2 + n * f1) / (n * n)).sum())
    cross = f4 * (a_sum * a_sum - a_sq) + 2.0 * f3 * (m - 1) * a_sum + f2 * m * (m - 1)
    var_s = diag + cross - e_s * e_s
    pq = f1 * (1.0 - f1)
    return (e_s - total_x * f1) / pq, var_s / (pq * pq)


def dispersion_lower_p(d: float, mean: float, var: float) -> float:
    """Lower-tail p-value of ``d`` under the gamma distribution with the given mean and variance."""
    if var <= 0.0 or mean <= 0.0:
        return 1.0
    shape = mean * mean / var
    scale = var / mean
    # gammainc is the regularized lower incomplete gamma: scipy.stats.gamma.cdf without the overhead
    return float(special.gammainc(shape, max(d, 0.0) / scale))


@dataclass(frozen=True, slots=True)
class Feedback:
    """How the rate behaved in the buckets that began with the running rate at or over the limit."""

    p_value: float
    """Lower tail of the exact-conditional martingale z: fewer events there than chance allows."""
    tickets: int
    """Denominator count of those buckets."""
    observed: int
    """Numerator count in them."""
    expected: float
    """What an unsteered sequence with the same totals would put in them."""


def feedback_test(n: npt.NDArray[np.float64], x: npt.NDArray[np.float64], limit: float) -> Feedback:
    """Does the rate drop once the running rate reaches ``limit``? (A steered partner stops.)

    A bucket is *at the limit* when the window's running rate before it is ``>= limit``. Under
    the null, conditional on the totals ``N`` and ``X``, the order of the events is exchangeable:
    bucket ``i`` draws ``n_i`` tickets without replacement from the ``M = N - cn_i`` left, of which
    ``R = X - cx_i`` are events, so ``E[x_i | past] = n_i R / M`` with the hypergeometric variance.
    The at-the-limit classification only looks at the past, so the sum of ``x_i - E[x_i | past]``
    over those buckets is a martingale: normalised by its summed conditional variance it is
    ~N(0, 1) (martingale CLT). Conditioning on ``X`` matters: a running rate ahead of the pooled
    one must come back down by itself (the bridge), and residuals against the pooled rate instead
    of ``R / M`` would mistake that for steering. ``limit`` is the target, not the pooled rate,
    for the same reason: classifying by a level fitted to the same data is not a past-only rule.
    """
    keep = n > 0
    n, x = n[keep], x[keep]
    big_n, total_x = float(n.sum()), float(x.sum())
    if total_x <= 0.0 or total_x >= big_n:  # no events (or nothing but events): nothing can drop
        return Feedback(1.0, 0, 0, 0.0)
    cn = np.cumsum(n) - n  # tickets before each bucket
    cx = np.cumsum(x) - x
    left = big_n - cn
    share = (total_x - cx) / left
    expected = n * share
    var = n * share * (1.0 - share) * (left - n) / np.maximum(left - 1.0, 1.0)
    # counts are integers: the tolerance keeps float noise in the limit (1 - 0.85) from splitting ties
    at_limit = (cn > 0) & (cx >= limit * cn - 1e-9)
    tickets = float(n[at_limit].sum())
    observed = float(x[at_limit].sum())
    exp_at = float(expected[at_limit].sum())
    v = float(var[at_limit].sum())
    p = float(special.ndtr((observed - exp_at) / math.sqrt(v))) if v > 0.0 else 1.0
    return Feedback(p, round(tickets), round(observed), exp_at)


def fisher_pair(p1: float, p2: float) -> float:
    """Fisher's combination of two independent p-values: chi-square on 4 df of ``-2 ln(p1 p2)``,
    whose survival function is ``p1 p2 (1 - ln(p1 p2))`` in closed form."""
    prod = p1 * p2
    if prod <= 0.0:
        return 0.0
    return min(1.0, prod * (1.0 - math.log(prod)))


def threshold_hugging(
    buckets: Buckets, target: float, better: str, params: IntegrityParams = DEFAULT_PARAMS
) -> Finding | None:
    """Is a ratio KPI steered just inside its target? ``None`` below the minimum volume.

    ``better="lower"``: the rate must stay <= ``target`` (escalation rate); ``"higher"``: >=
    (first-contact resolution), judged as its miss rate ``1 - rate`` against ``1 - target`` (a
    resolution rate hugging 85% is a miss rate hugging 15%; the band is then on the miss rate).
    Buckets are merged into sub-periods (:func:`merge_periods`); the finding needs at least
    ``min_periods`` of them. Two lower-tail p-values are combined by Fisher's method:

    * the dispersion index over the sub-periods, under the exact-moment gamma null (steadiness);
    * :func:`feedback_test` over the raw buckets at the target (the rate stops at the target).

    Flagged when the pooled rate is on the passing side of the target, within ``band * target``
    of it, and the combined p-value is below ``alpha``. ``statistic`` is the dispersion index over
    its null mean (1 for binomial scatter, towards 0 for a steered rate).
    """
    _check_better(better)
    n_b, x_b = _as_buckets(buckets)
    if better == "higher":
        x_b, limit = n_b - x_b, 1.0 - target
    else:
        limit = target
    n, x = _merge(n_b, x_b, params.min_per_period)
    # numerator events of a sub-period's edge may belong to denominators of the one before: a
    # merged sub-period is capped at all of its own (binomial support), which only bites when
    # the sub-periods are barely longer than the delay between the two events
    x = np.clip(x, 0.0, n)
    m = len(n)
    if m < params.min_periods:
        return None
    big_n = float(n.sum())
    total_x = float(x.sum())
    miss = total_x / big_n
    rate = miss if better == "lower" else 1.0 - miss
    near = miss <= limit and limit - miss <= params.band * limit
    samples = round(big_n)
    if total_x < 2.0 or big_n - total_x < 2.0:
        # an all-or-nothing rate has no scatter to judge (and no variance to divide by)
        return Finding(
            "threshold_hugging",
            False,
            0.0,
            1.0,
            samples,
            m,
            math.nan,
            f"rate {rate:.1%} over {samples} tickets in {m} sub-periods: too extreme to judge its scatter",
        )
    pq = miss * (1.0 - miss)
    d = float(((x - n * miss) ** 2 / (n * pq)).sum())
    mean, var = dispersion_null_moments(n, total_x)
    p_scatter = dispersion_lower_p(d, mean, var)
    feedback = feedback_test(n_b, x_b, limit)
    p = fisher_pair(p_scatter, feedback.p_value)
    index = d / mean
    flagged = near and p < params.alpha
    side, reached = ("under", "rose to") if better == "lower" else ("over", "fell to")
    if miss > limit:
        where = f"misses the {target:.1%} target"
    else:
        where = f"{side} the {target:.1%} target by {abs(rate - target) * 100:.1f} points"
    counted = "events" if better == "lower" else "misses"
    verdict = "steered to the target" if flagged else "consistent with chance"
    detail = (
        f"rate {rate:.1%} ({where}) over {samples} tickets: scatter {index:.2f}x the binomial over "
        f"{m} sub-periods (p={p_scatter:.2g}); {feedback.observed} {counted} in the {feedback.tickets} "
        f"tickets after the running rate {reached} the target, {feedback.expected:.1f} expected "
        f"(p={feedback.p_value:.2g}); combined p={p:.2g}: {verdict}"
    )
    return Finding("threshold_hugging", flagged, score_of(p), p, samples, m, index, detail)


# --- deadline bunching -----------------------------------------------------------------------------


def bunching_bins(
    values: Sequence[float] | npt.NDArray[np.floating],
    target: float,
    width: float = 0.1,
    k: int = BUNCHING_K,
    better: str = "lower",
) -> list[int]:
    """Counts of ``values`` in ``2k`` bins of ``width * target`` around ``target``.

    Bin ``j`` (0-based) covers relative positions ``r = (v - target) / (width * target)`` in
    ``(j - k, j - k + 1]`` for ``better="lower"``: bins are closed on the right so a duration
    exactly at the target (which meets a "<= target" deadline) counts just inside, in bin
    ``k - 1``. For ``better="higher"`` they are closed on the left (``[j - k, j - k + 1)``), so
    the target itself counts just inside, in bin ``k``. Values outside the ``2k`` bins are not
    counted. Positions are taken relative to the target so the target is exact in floating point.
    """
    _check_better(better)
    if k < 1 or width <= 0.0 or target <= 0.0:
        raise ValueError("bunching_bins needs k >= 1, width > 0 and target > 0")
    r = (np.asarray(values, dtype=np.float64) - target) / (width * target)
    idx = np.ceil(r) + (k - 1) if better == "lower" else np.floor(r) + k
    idx = idx[(idx >= 0) & (idx < 2 * k)]
    return [int(c) for c in np.bincount(idx.astype(np.intp), minlength=2 * k)]


def _poisson_quadratic(
    pos: npt.NDArray[np.float64], counts: npt.NDArray[np.float64]
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float] | None:
    """Poisson regression ``log mu = b0 + b1 pos + b2 pos^2`` by IRLS: (coefficients, covariance,
    Pearson dispersion), or None when it does not converge."""
    design = np.column_stack((np.ones_like(pos), pos, pos * pos))
    beta: npt.NDArray[np.float64]
    try:
        # start from the least-squares fit of log counts (+0.5 keeps empty bins finite)
        start = np.linalg.solve(design.T @ design, design.T @ np.log(counts + 0.5))
        beta = np.asarray(start, dtype=np.float64)
        with np.errstate(over="ignore", invalid="ignore"):
            for _ in range(50):
                mu = np.exp(design @ beta)
                step = np.linalg.solve(design.T @ (design * mu[:, None]), design.T @ (counts - mu))
                beta = np.asarray(beta + step, dtype=np.float64)
                if not np.isfinite(beta).all():
                    return None
                if float(np.abs(step).max()) < 1e-9:
                    break
            else:
                return None
            mu = np.exp(design @ beta)
            cov = np.asarray(np.linalg.inv(design.T @ (design * mu[:, None])), dtype=np.float64)
    except np.linalg.LinAlgError:  # a flank of empty bins: no smooth density to speak of
        return None
    dispersion = float(((counts - mu) ** 2 / mu).sum()) / (len(counts) - 3)
    return beta, cov, dispersion


def deadline_bunching(
    bins: Sequence[float] | npt.NDArray[np.integer] | npt.NDArray[np.floating],
    target: float,
    better: str = "lower",
    params: IntegrityParams = DEFAULT_PARAMS,
) -> Finding | None:
    """Are durations bunched just inside a deadline? ``None`` below ``min_bunching_samples`` (or no bins).

    ``bins`` are the ``2k`` counts of :func:`bunching_bins` (same ``better``). A log-quadratic
    Poisson fit to the ``2k - 2`` flank bins predicts the log-odds ``theta`` of the just-inside bin
    against the just-outside one; the p-value is ``P(Binomial(N2, expit(theta)) >= x_in)``
    (``N2`` = the two middle bins) averaged over ``theta`` ~ normal(fit, fit variance x max(1, the
    flank fit's Pearson dispersion)). Flagged when that p-value is below ``alpha`` and the
    just-inside count exceeds ``min_excess`` times the fit's prediction (``statistic``).
    """
    _check_better(better)
    counts = np.asarray(bins, dtype=np.float64)
    if counts.size == 0:  # nothing binned yet (a partner without state): no volume
        return None
    if counts.ndim != 1 or len(counts) < 8 or len(counts) % 2:
        raise ValueError("bins must be an even number (>= 8) of counts, k on each side of the target")
    k = len(counts) // 2
    samples = round(float(counts.sum()))
    if samples < params.min_bunching_samples:
        return None
    inside, outside = (k - 1, k) if better == "lower" else (k, k - 1)
    pos = np.arange(2 * k, dtype=np.float64) - k + 0.5  # bin centres in bin widths from the target
    flank = np.ones(2 * k, dtype=bool)
    flank[[inside, outside]] = False
    fit = _poisson_quadratic(pos[flank], counts[flank])
    periods = 2 * k
    if fit is None:
        return Finding(
            "deadline_bunching",
            False,
            0.0,
            1.0,
            samples,
            periods,
            math.nan,
            f"{samples} durations around the {_fmt_duration(target)} target: no smooth fit to compare with",
        )
    beta, cov, dispersion = fit
    rows = np.column_stack((np.ones(2), pos[[inside, outside]], pos[[inside, outside]] ** 2))
    eta = rows @ beta
    contrast = rows[0] - rows[1]
    theta = float(eta[0] - eta[1])
    sd = math.sqrt(max(0.0, float(contrast @ cov @ contrast)) * max(1.0, dispersion))
    x_in = round(float(counts[inside]))
    n2 = round(float(counts[inside] + counts[outside]))
    if x_in <= 0:
        p = 1.0
    else:
        probs = special.expit(theta + sd * _GH_NODES)
        # P(X >= x_in) = P(X > x_in - 1); scipy's bdtrc is the binomial survival function
        p = float(np.clip(_GH_WEIGHTS @ special.bdtrc(x_in - 1, n2, probs), 0.0, 1.0))
    expected_in = float(math.exp(eta[0]))
    excess = x_in / expected_in if expected_in > 0.0 else math.inf
    flagged = p < params.alpha and excess > params.min_excess
    lo, hi = sorted(
        (
            target,
            target * (1.0 - params.bunching_width)
            if better == "lower"
            else target * (1.0 + params.bunching_width),
        )
    )
    verdict = "bunched at the deadline" if flagged else "consistent with a smooth spread"
    detail = (
        f"{x_in} of {samples} durations fall in {_fmt_duration(lo)}-{_fmt_duration(hi)} just inside the "
        f"{_fmt_duration(target)} target, {excess:.1f}x the {expected_in:.0f} a smooth spread predicts, "
        f"against {n2 - x_in} just outside (p={p:.2g}): {verdict}"
    )
    return Finding("deadline_bunching", flagged, score_of(p), p, samples, periods, excess, detail)


def _fmt_duration(seconds: float) -> str:
    """Seconds as ``1h48`` / ``12m`` / ``30s``: the unit people set duration targets in."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}"
    if s >= 60:
        return f"{s // 60}m"
    return f"{s}s"


# --- under-reporting -------------------------------------------------------------------------------


def under_reporting(
    buckets: Buckets, better: str = "lower", params: IntegrityParams = DEFAULT_PARAMS
) -> Finding | None:
    """Have the numerator events (escalations) started to vanish? ``None`` below the minimum volume.

    The buckets (oldest first) split in time: the last ``round(recent_share * len)`` buckets are
    recent, the rest baseline. Conditional on the total count of the events that count against
    the partner, the recent count is ``Binomial(total, recent share of the denominator)`` when
    the rate is unchanged; the p-value is its lower tail at the observed recent count. Flagged
    when it is below ``alpha`` and the recent rate is below ``min_ratio_drop`` times the
    baseline's. For ``better="lower"`` (escalation rate) those events are the numerator; for
    ``"higher"`` (a resolution rate) they are the complement ``n - x`` (unlogged failures push a
    higher-is-better rate up). ``None`` unless the recent part holds at least
    ``min_under_reporting_samples`` tickets and the baseline at least as many.
    """
    _check_better(better)
    n, x = _as_buckets(buckets)
    if better == "higher":
        x = n - x
    recent_len = max(1, round(params.recent_share * len(n)))
    if len(n) < 2 or recent_len >= len(n):
        return None
    n_r, x_r = float(n[-recent_len:].sum()), float(x[-recent_len:].sum())
    n_b, x_b = float(n[:-recent_len].sum()), float(x[:-recent_len].sum())
    minimum = params.min_under_reporting_samples
    if n_r < minimum or n_b < minimum:
        return None
    samples = round(n_r + n_b)
    total = round(x_r + x_b)
    share = n_r / (n_r + n_b)
    # bdtr(k, n, p) = P(X <= k): the exact binomial lower tail
    p = float(special.bdtr(round(x_r), total, share)) if total > 0 else 1.0
    rate_r, rate_b = x_r / n_r, x_b / n_b
    ratio = rate_r / rate_b if rate_b > 0.0 else math.nan
    flagged = rate_b > 0.0 and p < params.alpha and ratio < params.min_ratio_drop
    what = "misses" if better == "higher" else "events"
    verdict = "they are vanishing" if flagged else "no sign of vanishing"
    detail = (
        f"{what} in {rate_r:.1%} of the latest {round(n_r)} tickets against {rate_b:.1%} of the "
        f"{round(n_b)} before ({f'{ratio:.2f}x' if rate_b > 0.0 else 'none before'}, p={p:.2g}): {verdict}"
    )
    return Finding("under_reporting", flagged, score_of(p), p, samples, 2, ratio, detail)
