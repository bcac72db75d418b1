"""Deadline bunching: durations piled up just inside a target (see the package docstring)."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
from scipy import special

from streams.judgement.integrity.findings import (
    _GH_NODES,
    _GH_WEIGHTS,
    BUNCHING_K,
    DEFAULT_PARAMS,
    Finding,
    IntegrityParams,
    _check_better,
    score_of,
)

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
    p, x_in, n2, expected_in = _middle_test(counts, pos, inside, outside, fit)
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


def _middle_test(counts: npt.NDArray[np.float64], pos: npt.NDArray[np.float64], inside: int,
                 outside: int, fit: tuple[npt.NDArray[np.float64], npt.NDArray[np.float64], float],
                 ) -> tuple[float, int, int, float]:
    """(p-value, just-inside count, middle two bins' count, the fit's just-inside prediction):
    the one-sided binomial test of the just-inside share, its success probability integrated
    over the fit's uncertainty (Gauss-Hermite)."""
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
    return p, x_in, n2, float(math.exp(eta[0]))


def _fmt_duration(seconds: float) -> str:
    """Seconds as ``1h48`` / ``12m`` / ``30s``: the unit people set duration targets in."""
    s = round(seconds)
    if s >= 3600:
        return f"{s // 3600}h{(s % 3600) // 60:02d}"
    if s >= 60:
        return f"{s // 60}m"
    return f"{s}s"
