"""Threshold hugging: a ratio steered just inside its target (see the package docstring)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import special

from streams.judgement.integrity.findings import (
    DEFAULT_PARAMS,
    Buckets,
    Finding,
    IntegrityParams,
    _as_buckets,
    _check_better,
    _merge,
    score_of,
)

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
        return Finding("threshold_hugging", False, 0.0, 1.0, samples, m, math.nan,
                       f"rate {rate:.1%} over {samples} tickets in {m} sub-periods: too extreme to "
                       "judge its scatter")
    pq = miss * (1.0 - miss)
    d = float(((x - n * miss) ** 2 / (n * pq)).sum())
    mean, var = dispersion_null_moments(n, total_x)
    p_scatter = dispersion_lower_p(d, mean, var)
    feedback = feedback_test(n_b, x_b, limit)
    p = fisher_pair(p_scatter, feedback.p_value)
    index = d / mean
    flagged = near and p < params.alpha
    detail = _hugging_detail(rate, target, miss, limit, better, samples, index, m, p_scatter,
                             feedback, p, flagged)
    return Finding("threshold_hugging", flagged, score_of(p), p, samples, m, index, detail)


def _hugging_detail(rate: float, target: float, miss: float, limit: float, better: str,
                    samples: int, index: float, m: int, p_scatter: float, feedback: Feedback,
                    p: float, flagged: bool) -> str:
    """The finding's sentence: where the rate sits, both tests' figures, the verdict."""
    side, reached = ("under", "rose to") if better == "lower" else ("over", "fell to")
    if miss > limit:
        where = f"misses the {target:.1%} target"
    else:
        where = f"{side} the {target:.1%} target by {abs(rate - target) * 100:.1f} points"
    counted = "events" if better == "lower" else "misses"
    verdict = "steered to the target" if flagged else "consistent with chance"
    return (
        f"rate {rate:.1%} ({where}) over {samples} tickets: scatter {index:.2f}x the binomial over "
        f"{m} sub-periods (p={p_scatter:.2g}); {feedback.observed} {counted} in the {feedback.tickets} "
        f"tickets after the running rate {reached} the target, {feedback.expected:.1f} expected "
        f"(p={feedback.p_value:.2g}); combined p={p:.2g}: {verdict}"
    )
