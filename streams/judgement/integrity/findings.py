"""The integrity lens's shared parts: the finding, the parameters, sub-periods from buckets."""

from __future__ import annotations

import bisect
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

import numpy as np
import numpy.typing as npt

from streams.config.integrity import BUNCHING_EACH_SIDE

SCORE_CAP: Final = 50.0
"""Cap of ``score = -log10(p_value)``: a gauge of 300 says nothing 50 does not, and p = 0 is finite."""

BUNCHING_K: Final = BUNCHING_EACH_SIDE
"""Bins on each side of the target (``config/integrity.py``): 4 flank bins per side are left for the
smooth fit (3 parameters, 5 residual df), and 5 bins of 10% reach 50% away from the target, where
a duration density is still one smooth hump."""

_GH_NODES, _GH_WEIGHTS = np.polynomial.hermite_e.hermegauss(24)
_GH_WEIGHTS = _GH_WEIGHTS / math.sqrt(2.0 * math.pi)  # expectations under the standard normal


@dataclass(frozen=True, slots=True)
class Finding:
    """One signal's verdict on one partner x KPI, with the evidence behind it."""

    signal: str
    """One of :data:`streams.config.integrity.SIGNALS`."""
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



