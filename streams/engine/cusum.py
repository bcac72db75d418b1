"""CUSUM early warning on one partner x KPI's samples against its target (engine state)."""

from __future__ import annotations

import math
from typing import Final

from streams.config.judging import JudgeParams

CUSUM_RELEASE: Final = 0.5
"""Once raised, the alarm clears only when the statistic falls to ``CUSUM_RELEASE * h``: a
statistic hovering around ``h`` would otherwise flap the KPI between ok and at_risk."""

CUSUM_CAP_FACTOR: Final = 2.0
"""The statistic is capped at ``CUSUM_CAP_FACTOR * h``: see :class:`Cusum`."""

TINY: Final = 1e-9
"""Keeps a relative CUSUM finite for a zero target."""


class Cusum:
    """One-sided CUSUM on individual samples, anchored on the target (early warning).

    Each sample ``x`` (a 0/1 outcome for ratio KPIs) adds
    ``z = d * (x - target) / scale`` with ``d = +1`` when lower is better, ``-1``
    otherwise; ``scale = max(|target|, tiny)`` for mean and quantile KPIs (relative
    deviation, so one ``h`` serves seconds and scores alike) and 1 for ratios (``h``
    then counts bad outcomes in excess of what the target allows).
    ``S = min(max(0, S + z - k), CUSUM_CAP_FACTOR * h)``; the alarm is ``S > h``.

    The cap does not change when the first alarm fires (it only acts above ``h``); it
    bounds how long an alarm outlives the problem: without it a day in breach would
    pile up thousands and keep the KPI at risk for days after recovery.

    How the defaults were chosen (seeded simulations; lognormal samples with cv 0.5):

    * mean/quantile ``k = 0, h = 10``: an ASA creeping linearly from 50 s to 70 s over
      2000 samples against a 60 s target alarmed in 1000 of 1000 seeds before the mean
      of the last 1000 samples (the 24 h window proxy) crossed 60 s: median 372, least
      8 samples before it; median 117 samples after the mean itself passed 60 s. A
      partner steady at 50 s alarmed in 0 of 1000 runs of 5000 samples, and 3 times in
      5 million samples (average run length ~1.1 M); one at 55 s every ~19 000; one at
      66 s (10% past) after ~94 samples on average.
      The first draft ``k = 0.05, h = 5`` alarmed within 5000 samples in 273 of 1000
      steady-at-50 s runs (average run length ~16 000): lognormal tails make sums of
      relative excesses jumpy, so ``h`` must grow, and ``k = 0`` keeps the creep
      detectable with the larger ``h`` (``k = 0.05, h = 8`` let the 24 h mean win in 6%
      of runs). Alarming a few dozen samples after the mean passes the target is out of
      reach of any detector at this noise: by then the mean is only ~0.4 s over.
    * ratio ``k = 0, h = 8`` (eight bad outcomes in excess of the target's share): the
      first draft ``k = 0.01, h = 2`` alarmed every 200 to 800 samples on a partner at
      *half* the target rate (three bad outcomes close together were enough). Now, for
      bad-outcome targets from 5% to 30%, half the target rate alarms every 460 000+
      samples, two thirds every 32 000 to 61 000, while 1.5 times the target alarms
      after 51 to 290 samples and twice after 27 to 154.

    ``h`` is in units of the per-sample noise squared, roughly: the mean/quantile
    default suits a cv around 0.5. Noisier KPIs need a larger ``h`` from the catalog
    (at cv 1 a partner at 50 s against 60 s alarms every ~800 samples with ``h = 10``,
    every ~0.9 M with ``h = 40``, which then detects 66 s after ~370 samples). For a
    percentile KPI the CUSUM of raw values tracks the *mean* against the percentile's
    target, so it rarely fires before the bound does.
    """

    __slots__ = ("_on", "h", "k", "lower_is_better", "relative", "s", "target")

    def __init__(self, target: float, lower_is_better: bool, k: float, h: float, relative: bool,
                 s: float = 0.0) -> None:
        if h <= 0:
            raise ValueError(f"h must be positive, not {h}")
        self.target = float(target)
        self.lower_is_better = bool(lower_is_better)
        self.k = float(k)
        self.h = float(h)
        self.relative = bool(relative)
        self.s = float(s)
        self._on = self.s > self.h

    @classmethod
    def for_kind(cls, kind: str, target: float, lower_is_better: bool,
                 params: JudgeParams | None = None) -> Cusum:
        """A CUSUM for a KPI of evidence ``kind``, with ``params``' k and h or the kind's defaults."""
        k, h = (params or JudgeParams()).cusum_params(kind)
        return cls(target, lower_is_better, k, h, relative=kind != "ratio")

    @property
    def scale(self) -> float:
        """Divisor of the deviation: ``max(|target|, tiny)`` when relative, else 1."""
        return max(abs(self.target), TINY) if self.relative else 1.0

    @property
    def alarm(self) -> bool:
        """Raised when the statistic passes ``h``; cleared when it falls to ``CUSUM_RELEASE * h``."""
        return self._on

    def update(self, x: float) -> float:
        """Add one sample and return the new statistic."""
        if not math.isfinite(x):
            return self.s  # a NaN would poison the statistic for good; the engine never sends one
        d = 1.0 if self.lower_is_better else -1.0
        z = d * (x - self.target) / self.scale
        self.s = min(max(0.0, self.s + z - self.k), CUSUM_CAP_FACTOR * self.h)
        if self.s > self.h:
            self._on = True
        elif self.s <= CUSUM_RELEASE * self.h:
            self._on = False
        return self.s

    def reset(self) -> None:
        """Forget the accumulated evidence."""
        self.s = 0.0
        self._on = False

    def to_tuple(self) -> tuple[float, bool, float, float, bool, float]:
        """``(target, lower_is_better, k, h, relative, s)`` for persistence.

        The configuration travels with the statistic so a restore can tell whether the
        catalog changed the target meanwhile (then ``S`` means nothing and should restart).
        """
        return (self.target, self.lower_is_better, self.k, self.h, self.relative, self.s)

    @classmethod
    def from_tuple(cls, data: tuple[float, bool, float, float, bool, float]) -> Cusum:
        """Inverse of :meth:`to_tuple`."""
        target, lower_is_better, k, h, relative, s = data
        return cls(target, lower_is_better, k, h, relative, s)

    def __repr__(self) -> str:
        return (f"Cusum(target={self.target}, lower_is_better={self.lower_is_better}, k={self.k}, "
                f"h={self.h}, relative={self.relative}, s={self.s})")


# --- the state machine -----------------------------------------------------------------------------
