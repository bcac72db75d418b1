"""Judgement: from a window's KPI evidence to ok / at_risk / breach, with hysteresis.

Pure Python and no Faust: time is always an explicit argument (``now_ms``), so
every rule is unit-tested with exact timestamps.

Three ideas keep the state honest:

* **Confidence bounds, not point values, decide a breach.** A partner with 3
  tickets and one escalation has a 33% escalation rate, but that says almost
  nothing; the breach needs the whole one-sided confidence bound past the target
  (Wilson for ratios, a mean bound for means, an order-statistic bound for
  percentiles), and needs it for ``for_ms`` in a row.
* **Hysteresis.** Once in breach, the point value must come back inside the
  target by ``recovery_margin`` before the state leaves breach, so a KPI hovering
  at the target does not flap.
* **CUSUM early warning.** A one-sided CUSUM anchored on the target sees a
  creeping KPI long before a 24 h rolling mean crosses the target; its alarm
  only ever raises ``at_risk``, never ``breach``.
"""

from __future__ import annotations

import enum
import functools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from statistics import NormalDist
from typing import Final

from . import sketch


class State(enum.StrEnum):
    """Judgement of one partner x KPI x window."""

    OK = "ok"
    AT_RISK = "at_risk"
    BREACH = "breach"
    INSUFFICIENT_DATA = "insufficient_data"


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the engine knows about one partner x KPI x window.

    ``kind`` is ``"ratio"`` (``value = s / n``, ``s`` the numerator count),
    ``"mean"`` (``value = s / n``, ``s`` and ``s2`` the sums of the samples and of
    their squares) or ``"quantile"`` (``value`` the nearest-rank ``q`` quantile of
    the log-histogram ``hist``, keyed as in :mod:`streams.sketch`).
    """

    kind: str
    n: int
    value: float
    s: float = 0.0
    s2: float = 0.0
    hist: Mapping[int, int] | None = None
    q: float | None = None


KINDS: Final = ("ratio", "mean", "quantile")
"""The evidence kinds :func:`bounds` and :class:`Cusum` understand."""

T_BELOW: Final = 30
"""Mean bounds use Student's t below this many samples and the normal z from there on."""

_TINY: Final = 1e-9  # keeps a relative CUSUM finite for a zero target
_VARIANCE_FLOOR: Final = 1e-10  # relative float noise of s2 - s^2/n


# --- statistics ------------------------------------------------------------------------------------


def bounds(ev: Evidence, confidence: float) -> tuple[float, float]:
    """One-sided lower and upper confidence bounds of the KPI at ``confidence`` (e.g. 0.95).

    Each bound on its own holds with probability ``confidence`` (so the pair is a
    ``2 * confidence - 1`` two-sided interval); ``z = NormalDist().inv_cdf(confidence)``.

    * ratio: the Wilson score bounds with that z.
    * mean: ``mean -/+ c * sd / sqrt(n)`` with the sample standard deviation (n - 1
      denominator, 0 below two samples); ``c`` is the exact Student t quantile with
      ``n - 1`` degrees of freedom below :data:`T_BELOW` samples, ``z`` from there on.
    * quantile: the distribution-free order-statistic bounds: ranks
      ``floor(n q - z sqrt(n q (1 - q)))`` and ``ceil(n q + z sqrt(n q (1 - q))) + 1``,
      clamped to ``[1, n]``, read off the histogram (``n`` = its total count).

    Without samples nothing is bounded: ``(0, 1)`` for a ratio, ``(-inf, inf)`` otherwise.
    """
    if not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence must be in (0, 1), not {confidence}")
    z = NormalDist().inv_cdf(confidence)
    if ev.kind == "ratio":
        return _wilson(ev.s, ev.n, z)
    if ev.kind == "mean":
        return _mean_bounds(ev, confidence, z)
    if ev.kind == "quantile":
        return _quantile_bounds(ev, z)
    raise ValueError(f"unknown evidence kind {ev.kind!r} (expected one of {KINDS})")


def _wilson(successes: float, n: int, z: float) -> tuple[float, float]:
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    z2n = z * z / n
    center = (p + z2n / 2) / (1 + z2n)
    half = z / (1 + z2n) * math.sqrt(max(0.0, p * (1 - p) / n + z2n / (4 * n)))
    # 0/n and n/n have the exact bounds 0 and 1, which float error would miss by an ulp
    lower = 0.0 if successes <= 0 else max(0.0, center - half)
    upper = 1.0 if successes >= n else min(1.0, center + half)
    return lower, upper


def _mean_bounds(ev: Evidence, confidence: float, z: float) -> tuple[float, float]:
    n = ev.n
    if n <= 0:
        return -math.inf, math.inf
    mean = ev.s / n
    if n < 2:
        return mean, mean
    # s2 - s^2/n cancels catastrophically for near-identical samples and can even come out
    # negative: below a noise floor far under any real spread (sd < 1e-5 of the rms) it is 0
    spread = ev.s2 - ev.s * ev.s / n
    variance = spread / (n - 1) if spread > _VARIANCE_FLOOR * abs(ev.s2) else 0.0
    c = t_quantile(confidence, n - 1) if n < T_BELOW else z
    half = c * math.sqrt(variance / n)
    return mean - half, mean + half


def _quantile_bounds(ev: Evidence, z: float) -> tuple[float, float]:
    if ev.hist is None or ev.q is None:
        raise ValueError("quantile evidence needs hist and q")
    # retraction can leave zero (never negative in a consistent window) counts: skip them
    items = sorted((key, count) for key, count in ev.hist.items() if count > 0)
    n = sum(count for _, count in items)
    if n <= 0:
        return -math.inf, math.inf
    q = ev.q
    spread = z * math.sqrt(n * q * (1 - q))
    r_lo = min(n, max(1, math.floor(n * q - spread)))
    r_hi = min(n, max(1, math.ceil(n * q + spread) + 1))
    return _value_at_rank(items, r_lo), _value_at_rank(items, r_hi)


def _value_at_rank(items: list[tuple[int, int]], rank: int) -> float:
    seen = 0
    for key, count in items:
        seen += count
        if seen >= rank:
            return sketch.value_of(key)
    return sketch.value_of(items[-1][0])


@functools.lru_cache(maxsize=1024)
def t_quantile(p: float, df: int) -> float:
    """Quantile of Student's t distribution with ``df`` (>= 1) degrees of freedom.

    Exact (to ~1e-12): the closed-form t CDF for integer degrees of freedom
    (Abramowitz & Stegun 26.7.3/26.7.4) inverted by bisection. Only used below
    ``T_BELOW`` samples, with one confidence per catalog, so the few distinct (p, df) pairs
    are cached: the bisection (about 50 CDF series) was 70% of judging every partner.
    """
    if df < 1:
        raise ValueError(f"df must be >= 1, not {df}")
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), not {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    hi = 1.0
    while _t_cdf(hi, df) < p:
        hi *= 2.0
    lo = 0.0
    for _ in range(200):
        mid = (lo + hi) / 2
        if _t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
        if hi - lo <= 1e-13 * hi:
            break
    return (lo + hi) / 2


def _t_cdf(t: float, df: int) -> float:
    theta = math.atan(abs(t) / math.sqrt(df))
    c, s = math.cos(theta), math.sin(theta)
    c2 = c * c
    if df % 2:  # odd: A = 2/pi (theta + sin(theta) (c + 2/3 c^3 + 2*4/(3*5) c^5 + ...))
        total, term = 0.0, c
        for j in range(1, (df - 1) // 2 + 1):
            total += term
            term *= c2 * (2 * j) / (2 * j + 1)
        two_sided = 2 / math.pi * (theta + s * total)
    else:  # even: A = sin(theta) (1 + 1/2 c^2 + 1*3/(2*4) c^4 + ...)
        total, term = 0.0, 1.0
        for j in range(1, df // 2 + 1):
            total += term
            term *= c2 * (2 * j - 1) / (2 * j)
        two_sided = s * total
    return 0.5 + math.copysign(two_sided / 2, t)


def is_past(lower: float, upper: float, target: float, lower_is_better: bool) -> bool:
    """Whether the confidence bound lies wholly on the wrong side of the target.

    Lower-is-better KPIs are past when even the lower bound exceeds the target;
    higher-is-better KPIs when even the upper bound falls short of it.
    """
    return lower > target if lower_is_better else upper < target


# --- CUSUM -----------------------------------------------------------------------------------------

CUSUM_DEFAULTS: Final[Mapping[str, tuple[float, float]]] = {
    "ratio": (0.0, 8.0),
    "mean": (0.0, 10.0),
    "quantile": (0.0, 10.0),
}
"""Default ``(k, h)`` per evidence kind; see :class:`Cusum` for how they were chosen."""

CUSUM_RELEASE: Final = 0.5
"""Once raised, the alarm clears only when the statistic falls to ``CUSUM_RELEASE * h``: a
statistic hovering around ``h`` would otherwise flap the KPI between ok and at_risk."""

CUSUM_CAP_FACTOR: Final = 2.0
"""The statistic is capped at ``CUSUM_CAP_FACTOR * h``: see :class:`Cusum`."""


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
        return max(abs(self.target), _TINY) if self.relative else 1.0

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


@dataclass(frozen=True)
class JudgeParams:
    """Tuning of the judgement; the defaults are the catalog's defaults.

    ``cusum_k``/``cusum_h`` of ``None`` mean the evidence kind's default from
    :data:`CUSUM_DEFAULTS` (ratios and durations need different ones).
    """

    confidence: float = 0.95
    for_ms: int = 300_000
    recovery_margin: float = 0.05
    cusum_k: float | None = None
    cusum_h: float | None = None

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), not {self.confidence}")
        if self.for_ms < 0:
            raise ValueError(f"for_ms must be >= 0, not {self.for_ms}")
        if not 0.0 <= self.recovery_margin < 1.0:
            raise ValueError(f"recovery_margin must be in [0, 1), not {self.recovery_margin}")
        if self.cusum_h is not None and self.cusum_h <= 0:
            raise ValueError(f"cusum_h must be positive, not {self.cusum_h}")

    def cusum_params(self, kind: str) -> tuple[float, float]:
        """``(k, h)`` for evidence ``kind``: the explicit values, else the kind's defaults."""
        if kind not in CUSUM_DEFAULTS:
            raise ValueError(f"unknown evidence kind {kind!r} (expected one of {KINDS})")
        k, h = CUSUM_DEFAULTS[kind]
        return (k if self.cusum_k is None else self.cusum_k,
                h if self.cusum_h is None else self.cusum_h)


@dataclass(frozen=True, slots=True)
class Transition:
    """A change of state, with the evidence that caused it (``None`` fields: no evidence/bounds)."""

    old: State
    new: State
    at_ms: int
    value: float | None
    target: float
    lower: float | None
    upper: float | None
    n: int


@dataclass(slots=True)
class Judgement:
    """The mutable state of one partner x KPI x window."""

    state: State = State.INSUFFICIENT_DATA
    since_ms: int | None = None
    """When the current state was entered (``None`` before the first change)."""
    pending_since_ms: int | None = None
    """Since when the bound has been wholly past the target without a break."""

    def step(self, now_ms: int, ev: Evidence | None, target: float, lower_is_better: bool,
             min_samples: int, params: JudgeParams, cusum_alarm: bool) -> Transition | None:
        """Judge the evidence at ``now_ms``; returns the transition when the state changes.

        Rules, in order:

        1. no evidence or fewer than ``min_samples`` samples: insufficient data (the
           breach timer restarts);
        2. the bound wholly past the target for ``for_ms`` without a break: breach
           (a bound not past restarts the timer);
        3. in breach, the point value not back inside the target by the recovery margin
           (lower is better: ``value <= target * (1 - margin)``; higher:
           ``value >= target * (1 + margin)``): still breach;
        4. at risk when the CUSUM alarms, the point value is on the wrong side of the
           target, or the bound is past but not yet for ``for_ms``;
        5. otherwise ok.

        Rule 3 also holds while the bound is past but its timer restarted (a breach
        held by hysteresis whose bound dips back past the target): that is not a
        recovery and must not fall to at risk.
        """
        if ev is None or ev.n < min_samples:
            self.pending_since_ms = None
            return self._move(State.INSUFFICIENT_DATA, now_ms, ev, target, None, None)
        lower, upper = bounds(ev, params.confidence)
        past = is_past(lower, upper, target, lower_is_better)
        if not past:
            self.pending_since_ms = None
        elif self.pending_since_ms is None:
            self.pending_since_ms = now_ms
        value = ev.value
        sustained = (past and self.pending_since_ms is not None
                     and now_ms - self.pending_since_ms >= params.for_ms)
        held = self.state is State.BREACH and not _recovered(value, target, lower_is_better,
                                                             params.recovery_margin)
        if sustained or held:
            new = State.BREACH
        elif cusum_alarm or past or (value > target if lower_is_better else value < target):
            new = State.AT_RISK
        else:
            new = State.OK
        return self._move(new, now_ms, ev, target, lower, upper)

    def _move(self, new: State, now_ms: int, ev: Evidence | None, target: float,
              lower: float | None, upper: float | None) -> Transition | None:
        if new is self.state:
            return None
        old, self.state, self.since_ms = self.state, new, now_ms
        return Transition(old, new, now_ms, None if ev is None else ev.value, target, lower, upper,
                          0 if ev is None else ev.n)

    def to_tuple(self) -> tuple[str, int | None, int | None]:
        """``(state, since_ms, pending_since_ms)`` for persistence."""
        return (self.state.value, self.since_ms, self.pending_since_ms)

    @classmethod
    def from_tuple(cls, data: tuple[str, int | None, int | None]) -> Judgement:
        """Inverse of :meth:`to_tuple`."""
        state, since_ms, pending_since_ms = data
        return cls(State(state), since_ms, pending_since_ms)


def _recovered(value: float, target: float, lower_is_better: bool, margin: float) -> bool:
    if lower_is_better:
        return value <= target * (1 - margin)
    return value >= target * (1 + margin)


__all__ = [
    "CUSUM_CAP_FACTOR",
    "CUSUM_DEFAULTS",
    "KINDS",
    "T_BELOW",
    "Cusum",
    "Evidence",
    "JudgeParams",
    "Judgement",
    "State",
    "Transition",
    "bounds",
    "is_past",
    "t_quantile",
]
