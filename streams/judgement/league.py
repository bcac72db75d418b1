"""A fair league table: each partner's month shrunk toward the fleet (empirical Bayes), and funnel limits.

Why: a raw league table ranks noise. A partner with 20 tickets and 6 escalations (30%) tops the
escalation table above a partner with 2,000 tickets at 18%, though the small one's rate could be
anything from 12% to 54%. Paying (or shaming) on the raw rank rewards luck, and the extremes of a
raw table are always the smallest partners. Two remedies, used side by side on the report card:

* :func:`shrink` pulls each partner's value toward the fleet's, by as much as its own data leave
  room for: the posterior mean under a prior fitted to the fleet itself (empirical Bayes). A big
  partner keeps its own value; a small one moves most of the way to the fleet. Ranking by the
  shrunk value orders partners by what they most plausibly are, not by how little they did.
* :func:`funnel` says which partners are *distinguishable* from the fleet at all: control limits
  around the fleet centre that narrow with volume (Spiegelhalter 2005, "Funnel plots for comparing
  institutional performance", Stat Med 24:1185). A partner outside the 99.8% limits is worth a
  conversation whatever its volume; one inside the 95% limits is not, however bad its raw value.

Input is one KPI over one month per partner: its sample count, the sum of its sample values and
the sum of their squares (:class:`Observed`), which is what the engine's buckets add up to. For a
``"ratio"`` KPI each sample is 0/1 (``total`` = successes); for ``"mean"`` it is a real value (a
duration in seconds, a 1..5 score). Partners with no samples are left out of both.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from streams.config.judging import KINDS

MIN_PARTNERS: Final = 3
"""Fewer partners with samples than this: no shrinkage (two values say nothing about a fleet's spread)."""

POOLING_CAP: Final = 1000.0
"""Full pooling for a ratio KPI: when the fleet shows no between-partner spread (the estimate is
<= 0, or would put the prior above this), the Beta prior's ``alpha + beta`` is set to
``POOLING_CAP`` times the largest partner's samples, so no partner's own data carry more than
1/1001 of its shrunk value. (Relative to the volumes, not a fixed number, so that it means the
same for a fleet of 50-ticket partners and one of 50,000-ticket partners.)"""

COVERAGES: Final = (0.95, 0.998)
"""The funnel's two limit pairs, two-sided: Spiegelhalter's 'two and three sigma' in exact form."""

PARTIAL: Final = "partial"
FULL: Final = "full"
NONE: Final = "none"


@dataclass(frozen=True, slots=True)
class Observed:
    """One partner's month of one KPI, as sums (what the engine's buckets add up to)."""

    partner: str
    samples: int
    total: float
    """Sum of the sample values (successes for a ratio KPI)."""
    squares: float
    """Sum of the squared sample values (unused for a ratio KPI: a 0/1 sample is its own square)."""


@dataclass(frozen=True, slots=True)
class Shrunk:
    """One partner's row of the league table."""

    partner: str
    samples: int
    raw: float
    """``total / samples``: the partner's own value."""
    shrunk: float
    """The posterior mean: the raw value pulled toward the fleet, ``raw * weight + centre * (1 - weight)``."""
    weight: float
    """Share of the partner's own data in ``shrunk`` (0..1): ``tau2 / (tau2 + s2 / n)`` for the
    normal model, ``n / (n + alpha + beta)`` for the beta-binomial."""


@dataclass(frozen=True, slots=True)
class Prior:
    """The fleet prior a month's values were shrunk toward, and which rule applied."""

    kind: str
    partners: int
    """Partners with samples (the ones the prior was fitted on)."""
    pooling: str
    """``"partial"`` (the normal case), ``"full"`` (no between-partner spread to speak of: every
    partner shrunk to the centre) or ``"none"`` (too few partners, no within-partner variance, a
    quantile KPI, or a spread beyond what 0/1 samples allow: shrunk = raw)."""
    centre: float
    """The fleet value shrunk toward: the pooled rate (ratio) or the precision-weighted mean (mean)."""
    tau2: float
    """Estimated between-partner variance of the true values, truncated at 0; NaN when not estimated."""
    within: float
    """Per-sample variance within a partner: the pooled sample variance (mean), ``p(1 - p)`` at the
    fleet rate (ratio); NaN when there is none."""
    alpha: float | None = None
    """Beta prior (ratio only); 0 and 0 under ``"none"``, which adds nothing to the partner's counts."""
    beta: float | None = None


@dataclass(frozen=True, slots=True)
class FunnelPoint:
    """One partner on the funnel plot."""

    partner: str
    samples: int
    value: float
    outside_95: bool
    outside_998: bool
    side: str
    """``"above"`` or ``"below"`` the centre when outside the 95% limits, else ``""``."""


@dataclass(frozen=True, slots=True)
class Funnel:
    """The fleet centre, its per-sample spread, and every partner's place against the limits."""

    kind: str
    centre: float
    """Pooled fleet value: ``sum(total) / sum(samples)``."""
    spread: float
    """Per-sample standard deviation: ``sqrt(p (1 - p))`` (ratio), the pooled within-partner sd (mean)."""
    points: tuple[FunnelPoint, ...]

    def limits(self, samples: int, coverage: float) -> tuple[float, float]:
        """(lower, upper) control limits at volume ``samples``, two-sided at ``coverage`` (0.95, 0.998).

        A value strictly outside them is out of control. See :func:`funnel` for how they are made.
        """
        lo, hi = _limits(self.kind, self.centre, self.spread, np.array([samples], dtype=np.float64), coverage)
        return float(lo[0]), float(hi[0])


# --- shrinkage -------------------------------------------------------------------------------------


def shrink(kind: str, observed: Sequence[Observed]) -> tuple[Prior, dict[str, Shrunk]]:
    """The fleet prior and each partner's shrunk value (partners with 0 samples left out).

    ``"ratio"``: beta-binomial empirical Bayes. The Beta(alpha, beta) prior's mean is the pooled
    rate ``p = sum x / sum n``; its variance ``tau2`` is the method-of-moments estimate corrected
    for binomial noise: under the beta-binomial, ``Var(x_i / n_i) = p q / n_i + tau2 (n_i - 1) / n_i``,
    so ``S = sum n_i (x_i / n_i - p)^2`` has expectation ``(k - 1) p q + tau2 (N - sum n_i^2 / N - (k - 1))``
    and ``tau2 = (S - (k - 1) p q) / (N - sum n_i^2 / N - (k - 1))``. (The weights ``n_i`` make it the
    DerSimonian-Laird estimator the mean KPIs use, with the beta-binomial's exact variance.) Then
    ``alpha + beta = p q / tau2 - 1`` and the posterior mean is ``(x + alpha) / (n + alpha + beta)``.
    Moments rather than maximum likelihood: a closed form with no optimiser to fail or stop early on
    a flat likelihood (a fleet with little spread has one: ``alpha + beta`` running off to
    infinity), and it is the estimator a reader can check by hand. ``tau2 <= 0``: full pooling
    (``alpha + beta`` capped, :data:`POOLING_CAP`); a spread beyond what 0/1 samples allow
    (``alpha + beta <= 0``): no shrinkage.

    ``"mean"``: normal-normal. A partner's mean has sampling variance ``v_i = s_i^2 / n_i``, its sample
    variance from the sums (the pooled within-partner variance when ``n_i < 2`` or ``s_i^2 = 0``).
    ``tau2`` is the DerSimonian-Laird estimate ``max(0, (Q - (k - 1)) / (W - sum w_i^2 / W))`` with
    ``w_i = 1 / v_i``; the centre is the precision-weighted mean with weights ``1 / (v_i + tau2)``
    and ``shrunk = w raw + (1 - w) centre``, ``w = tau2 / (tau2 + v_i)``. ``tau2 = 0``: full pooling
    (every weight 0). No within-partner variance at all (every partner a single sample, or every
    sample of every partner identical): no shrinkage.

    ``"quantile"``: no sampling model of sums for a quantile, so no shrinkage: ``shrunk = raw =
    total / samples``, weight 1.

    Fewer than :data:`MIN_PARTNERS` partners with samples: no shrinkage, whatever the kind.
    """
    if kind not in KINDS:
        raise ValueError(f"unknown evidence kind {kind!r} (expected one of {KINDS})")
    rows = _checked(kind, observed)
    n = np.array([o.samples for o in rows], dtype=np.float64)
    total = np.array([o.total for o in rows], dtype=np.float64)
    raw = total / n if rows else np.zeros(0)
    if kind == "ratio":
        prior, weight = _ratio_prior(n, total)
    elif kind == "mean":
        squares = np.array([o.squares for o in rows], dtype=np.float64)
        prior, weight = _mean_prior(n, total, squares)
    else:
        centre = float(total.sum() / n.sum()) if rows else math.nan
        prior, weight = Prior(kind, len(rows), NONE, centre, math.nan, math.nan), np.ones(len(rows))
    if prior.pooling == NONE:
        shrunk = raw
    elif prior.alpha is not None and prior.beta is not None:
        # the posterior mean as Bayes gives it (the weighted form below is the same number)
        shrunk = (total + prior.alpha) / (n + prior.alpha + prior.beta)
    else:
        shrunk = weight * raw + (1.0 - weight) * prior.centre
    out = {
        o.partner: Shrunk(o.partner, o.samples, float(raw[i]), float(shrunk[i]), float(weight[i]))
        for i, o in enumerate(rows)
    }
    return prior, out


def _checked(kind: str, observed: Sequence[Observed]) -> list[Observed]:
    """The partners with samples, after checking the sums can be what they claim."""
    rows: list[Observed] = []
    seen: set[str] = set()
    for o in observed:
        if o.partner in seen:
            raise ValueError(f"partner {o.partner!r} observed twice")
        seen.add(o.partner)
        if o.samples < 0 or not math.isfinite(o.total) or not math.isfinite(o.squares):
            raise ValueError(f"{o.partner}: samples must be >= 0 and the sums finite, got {o}")
        if o.samples == 0:
            continue
        if kind == "ratio" and not 0.0 <= o.total <= o.samples:
            raise ValueError(f"{o.partner}: a ratio KPI's successes must be within 0..samples, got {o}")
        rows.append(o)
    return rows


def _no_pooling(kind: str, partners: int, centre: float, within: float) -> Prior:
    zero = 0.0 if kind == "ratio" else None
    return Prior(kind, partners, NONE, centre, math.nan, within, zero, zero)


def _ratio_prior(n: npt.NDArray[np.float64], x: npt.NDArray[np.float64]
                 ) -> tuple[Prior, npt.NDArray[np.float64]]:
    """The Beta prior by moments (see :func:`shrink`) and each partner's ``n / (n + alpha + beta)``."""
    k = len(n)
    if k == 0:
        return _no_pooling("ratio", 0, math.nan, math.nan), np.ones(0)
    big_n = float(n.sum())
    p = float(x.sum()) / big_n
    pq = p * (1.0 - p)
    if k < MIN_PARTNERS:
        return _no_pooling("ratio", k, p, pq), np.ones(k)
    s = float((n * (x / n - p) ** 2).sum())
    denom = big_n - float((n * n).sum()) / big_n - (k - 1)
    tau2 = max(0.0, (s - (k - 1) * pq) / denom) if denom > 0.0 else 0.0
    cap = POOLING_CAP * float(n.max())
    if tau2 <= 0.0 or pq / tau2 - 1.0 >= cap:
        size, pooling = cap, FULL
    else:
        size, pooling = pq / tau2 - 1.0, PARTIAL
        if size <= 0.0:
            return Prior("ratio", k, NONE, p, tau2, pq, 0.0, 0.0), np.ones(k)
    prior = Prior("ratio", k, pooling, p, tau2, pq, p * size, (1.0 - p) * size)
    return prior, n / (n + size)


def _mean_prior(n: npt.NDArray[np.float64], total: npt.NDArray[np.float64], squares: npt.NDArray[np.float64]
                ) -> tuple[Prior, npt.NDArray[np.float64]]:
    """The normal prior by DerSimonian-Laird (see :func:`shrink`) and each partner's weight."""
    k = len(n)
    if k == 0:
        return _no_pooling("mean", 0, math.nan, math.nan), np.ones(0)
    raw = total / n
    pooled_mean = float(total.sum() / n.sum())
    within = _pooled_within(n, total, squares)
    if k < MIN_PARTNERS or not within > 0.0:
        return _no_pooling("mean", k, pooled_mean, within), np.ones(k)
    s2 = _sample_variances(n, total, squares)
    s2 = np.where((n < 2) | (s2 <= 0.0), within, s2)
    v = s2 / n
    w = 1.0 / v
    big_w = float(w.sum())
    fixed = float((w * raw).sum()) / big_w
    q = float((w * (raw - fixed) ** 2).sum())
    tau2 = max(0.0, (q - (k - 1)) / (big_w - float((w * w).sum()) / big_w))
    if tau2 <= 0.0:
        return Prior("mean", k, FULL, fixed, 0.0, within), np.zeros(k)
    wr = 1.0 / (v + tau2)
    centre = float((wr * raw).sum() / wr.sum())
    return Prior("mean", k, PARTIAL, centre, tau2, within), tau2 / (tau2 + v)


def _sample_variances(n: npt.NDArray[np.float64], total: npt.NDArray[np.float64],
                      squares: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Each partner's sample variance from its sums (0 where ``n < 2``; rounding below 0 clipped)."""
    ss = np.maximum(squares - total * total / n, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(n >= 2, ss / np.maximum(n - 1.0, 1.0), 0.0)


def _pooled_within(n: npt.NDArray[np.float64], total: npt.NDArray[np.float64],
                   squares: npt.NDArray[np.float64]) -> float:
    """Pooled within-partner variance ``sum (squares - total^2 / n) / sum (n - 1)`` over partners
    with ``n >= 2``; NaN when there are none."""
    many = n >= 2
    dof = float((n[many] - 1.0).sum())
    if dof <= 0.0:
        return math.nan
    ss = np.maximum(squares[many] - total[many] ** 2 / n[many], 0.0)
    return float(ss.sum()) / dof


# --- funnel plot -----------------------------------------------------------------------------------


def funnel(kind: str, observed: Sequence[Observed]) -> Funnel:
    """The fleet's funnel: the pooled centre, and each partner (with samples) against the limits.

    The limits at volume ``n`` are those of a partner whose true value is the fleet centre:

    * ``"ratio"``: exact binomial, ``binom.ppf(q, n, p) / n`` at ``q = (1 - coverage) / 2`` and
      ``1 - q``. A value strictly outside them is out, so the false-alarm rate is at most nominal.
      (Spiegelhalter interpolates between counts to draw smooth curves; with that, a count on the
      boundary is flagged more often than nominal at small volumes, so the steps are kept.)
    * ``"mean"``: normal, ``centre -/+ z sd / sqrt(n)`` with ``z = norm.ppf(1 - q)`` and ``sd`` the
      pooled within-partner sd (a partner's own spread, not the scatter between partners, which is
      what the limits are asked about). Skewed durations make the upper tail a little heavier than
      nominal at small volumes.

    The centre is pooled (``sum total / sum samples``) with the partner itself included, as the
    convention has it. No partner with samples: centre and spread NaN, no points. A ``"quantile"``
    KPI has no sampling model of sums: ValueError.
    """
    if kind not in ("ratio", "mean"):
        raise ValueError(f"funnel limits need a ratio or mean KPI, got {kind!r}")
    rows = _checked(kind, observed)
    if not rows:
        return Funnel(kind, math.nan, math.nan, ())
    n = np.array([o.samples for o in rows], dtype=np.float64)
    total = np.array([o.total for o in rows], dtype=np.float64)
    centre = float(total.sum() / n.sum())
    if kind == "ratio":
        spread = math.sqrt(centre * (1.0 - centre))
    else:
        squares = np.array([o.squares for o in rows], dtype=np.float64)
        spread = math.sqrt(_pooled_within(n, total, squares))
    value = total / n
    lo95, hi95 = _limits(kind, centre, spread, n, COVERAGES[0])
    lo998, hi998 = _limits(kind, centre, spread, n, COVERAGES[1])
    out95 = (value < lo95) | (value > hi95)
    out998 = (value < lo998) | (value > hi998)
    points = tuple(
        FunnelPoint(
            o.partner, o.samples, float(value[i]), bool(out95[i]), bool(out998[i]),
            ("above" if value[i] > centre else "below") if out95[i] else "",
        )
        for i, o in enumerate(rows)
    )
    return Funnel(kind, centre, spread, points)


def _limits(kind: str, centre: float, spread: float, n: npt.NDArray[np.float64], coverage: float
            ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """Vectorised (lower, upper) limits at volumes ``n`` (see :func:`funnel`)."""
    if not 0.0 < coverage < 1.0:
        raise ValueError(f"coverage must be within (0, 1), got {coverage}")
    if (n < 1).any():
        raise ValueError("limits need at least one sample")
    # scipy.stats is imported here, not with the module: it is 0.4 s of a worker's start
    # (every restart), and only a report's funnel needs it
    from scipy import stats

    tail = (1.0 - coverage) / 2.0
    if kind == "ratio":
        lo = stats.binom.ppf(tail, n, centre) / n
        hi = stats.binom.ppf(1.0 - tail, n, centre) / n
    elif kind == "mean":
        half = float(stats.norm.ppf(1.0 - tail)) * spread / np.sqrt(n)
        lo, hi = centre - half, centre + half
    else:
        raise ValueError(f"funnel limits need a ratio or mean KPI, got {kind!r}")
    return np.asarray(lo, dtype=np.float64), np.asarray(hi, dtype=np.float64)
