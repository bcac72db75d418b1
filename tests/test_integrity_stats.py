"""The integrity lens (streams/judgement/integrity/), validated by simulation.

Goals: honest partners falsely flagged in at most 1% of partner-months; gaming partners flagged in
at least 95% of cases within 14 days at 50 tickets a day. All are asserted except for the mildest
throttler (g: 20% of its tickets need escalating, so it withholds a quarter of them), which no
test found here reaches at that false-flag level: its test asserts what is measured (about 71%
within 14 days, 92% within 30) less a margin, and says why. Throttlers withholding more (g2: 25%
need, 40% withheld; g3: 30% need, half withheld) are caught within 14 days in 99-100%.

* A **partner-month** is 30 daily evaluations (at the end of days 30..59) of a rolling 30-day
  window of 1-hour buckets (720 of them, as the engine hands them over); it is falsely flagged if
  any of the 30 flags.
* A **gaming partner** starts on day 0 (or, for vanishing escalations, turns at day 20); it is
  evaluated at the end of each day on the 30-day window so far (empty buckets before its start),
  and detected on day ``d`` if the evaluation at the end of day ``d`` flags.

Every seed has its own numpy Generator (``default_rng([case, seed])``) and each partner's hours are
drawn vectorised. ``pytest -s`` prints one row per case: these are the figures of the README's
Integrity section.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import numpy as np
import numpy.typing as npt
import pytest
from scipy import stats

from streams.judgement.integrity import (
    BUNCHING_K,
    DEFAULT_PARAMS,
    SCORE_CAP,
    SIGNALS,
    Finding,
    IntegrityParams,
    bunching_bins,
    deadline_bunching,
    dispersion_lower_p,
    dispersion_null_moments,
    feedback_test,
    merge_periods,
    score_of,
    threshold_hugging,
    under_reporting,
)

HOURS = 24
WINDOW_DAYS = 30
WINDOW = WINDOW_DAYS * HOURS
MONTH_DAYS = 30
TICKETS_PER_DAY = 50.0
DETECT_DAYS = 14
TARGET_OTS = 7200.0  # the 2-hour open-to-status target, in seconds

FALSE_FLAG_GOAL = 0.01
DETECTION_GOAL = 0.95

Evaluate = Callable[[npt.NDArray[np.float64]], Finding | None]


# --- simulation ------------------------------------------------------------------------------------


def _rng(case: int, seed: int) -> np.random.Generator:
    return np.random.default_rng([case, seed])


def _hourly_volume(rng: np.random.Generator, days: int) -> npt.NDArray[np.int64]:
    """Tickets opened per hour: Poisson, 50 a day."""
    return rng.poisson(TICKETS_PER_DAY / HOURS, size=days * HOURS)


def _binomial_buckets(
    rng: np.random.Generator, days: int, rate: float, concentration: float | None = None
) -> npt.NDArray[np.float64]:
    """(n, x) per hour: x ~ Binomial(n, rate); with ``concentration``, the day's rate is drawn
    from Beta(rate * c, (1 - rate) * c) first (extra-binomial day-to-day variation)."""
    n = _hourly_volume(rng, days)
    if concentration is None:
        p: npt.NDArray[np.float64] | float = rate
    else:
        daily = rng.beta(rate * concentration, (1.0 - rate) * concentration, size=days)
        p = np.repeat(daily, HOURS)
    x = rng.binomial(n, p)
    return np.column_stack((n, x)).astype(np.float64)


def _window(buckets: npt.NDArray[np.float64], end_day: int) -> npt.NDArray[np.float64]:
    """The 30-day window of 1-hour buckets ending with day ``end_day`` (1-based), zero-padded
    before the partner's first day as the engine's empty buckets are."""
    end = end_day * HOURS
    start = end - WINDOW
    if start >= 0:
        return buckets[start:end]
    return np.concatenate((np.zeros((-start, buckets.shape[1])), buckets[:end]))


Window = Callable[[npt.NDArray[np.float64], int], npt.NDArray[np.float64]]


def _first_flag(
    data: npt.NDArray[np.float64], evaluate: Evaluate, days: range, window: Window = _window
) -> int | None:
    """The first day in ``days`` whose end-of-day evaluation (of ``window(data, day)``) flags."""
    for day in days:
        finding = evaluate(window(data, day))
        if finding is not None and finding.flagged:
            return day
    return None


def _ots_durations(rng: np.random.Generator, count: int) -> npt.NDArray[np.float64]:
    """Honest open-to-status durations: lognormal, median 6500 s, sigma 0.6 (straddles 2 h)."""
    return rng.lognormal(math.log(6500.0), 0.6, size=count)


def _daily_bins(rng: np.random.Generator, days: int, bunch_share: float = 0.0) -> npt.NDArray[np.float64]:
    """Per day, the bunching bins of that day's open-to-status durations. With ``bunch_share``,
    each ticket that would exceed 2 h is logged at a uniform 1h50-1h59 with that probability."""
    volume = rng.poisson(TICKETS_PER_DAY, size=days)
    out = np.zeros((days, 2 * BUNCHING_K))
    for day, count in enumerate(volume):
        values = _ots_durations(rng, int(count))
        if bunch_share > 0.0:
            late = (values > TARGET_OTS) & (rng.random(values.size) < bunch_share)
            values[late] = rng.uniform(6600.0, 7140.0, size=int(late.sum()))
        out[day] = bunching_bins(values, TARGET_OTS, DEFAULT_PARAMS.bunching_width, BUNCHING_K)
    return out


def _bins_window(daily: npt.NDArray[np.float64], end_day: int) -> npt.NDArray[np.float64]:
    """The engine's bins of the 30-day window ending with day ``end_day``."""
    return daily[max(0, end_day - WINDOW_DAYS) : end_day].sum(axis=0)


def _throttled_buckets(
    rng: np.random.Generator, days: int, memory_days: int = WINDOW_DAYS, need_rate: float = 0.20
) -> npt.NDArray[np.float64]:
    """(n, x) per hour of a partner whose tickets need escalating at ``need_rate`` but who
    escalates one that needs it only while its running rate over its last ``memory_days`` (before
    that ticket) is below 14.9%. Within the first ``memory_days`` that is the rate since the start."""
    n = _hourly_volume(rng, days)
    need = (rng.random(int(n.sum())) < need_rate).tolist()
    x = np.zeros(n.size, dtype=np.int64)
    memory = memory_days * HOURS
    tickets = escalated = 0  # over the trailing memory, before the current ticket
    i = 0
    for hour, count in enumerate(n.tolist()):
        if hour >= memory:  # the hour leaving the controller's memory
            tickets -= int(n[hour - memory])
            escalated -= int(x[hour - memory])
        for _ in range(count):
            if need[i] and (tickets == 0 or escalated < 0.149 * tickets):
                x[hour] += 1
                escalated += 1
            tickets += 1
            i += 1
    return np.column_stack((n, x)).astype(np.float64)


def _vanishing_buckets(rng: np.random.Generator, days: int, turn_day: int) -> npt.NDArray[np.float64]:
    """Honest 12% escalations; from ``turn_day`` on only 30% of them are reported."""
    buckets = _binomial_buckets(rng, days, 0.12)
    late = slice(turn_day * HOURS, None)
    buckets[late, 1] = rng.binomial(buckets[late, 1].astype(np.int64), 0.30)
    return buckets


# --- running the cases -----------------------------------------------------------------------------

Simulate = Callable[[np.random.Generator], npt.NDArray[np.float64]]


def _report(case: str, what: str, rate: float, seeds: int, extra: str = "") -> None:
    print(f"\n[integrity] {case}: {what} {rate:.2%} of {seeds} seeds{extra}")


def honest_rate(
    case: int, simulate: Simulate, evaluate: Evaluate, seeds: int, window: Window = _window
) -> float:
    """Share of honest partner-months (evaluations at the end of days 30..59) with any flag."""
    flagged = 0
    for seed in range(seeds):
        month = range(WINDOW_DAYS, WINDOW_DAYS + MONTH_DAYS)
        flagged += _first_flag(simulate(_rng(case, seed)), evaluate, month, window) is not None
    return flagged / seeds


def detection_days(
    case: int, simulate: Simulate, evaluate: Evaluate, days: range, seeds: int, window: Window = _window
) -> npt.NDArray[np.float64]:
    """Per gaming partner, the day (counted from ``days.start - 1``) of its first flag in ``days``,
    infinite if none."""
    found: list[float] = []
    for seed in range(seeds):
        day = _first_flag(simulate(_rng(case, seed)), evaluate, days, window)
        found.append(math.inf if day is None else day - (days.start - 1))
    return np.array(found)


def hug_lower(buckets: npt.NDArray[np.float64]) -> Finding | None:
    return threshold_hugging(buckets, 0.15, "lower")


def hug_higher(buckets: npt.NDArray[np.float64]) -> Finding | None:
    return threshold_hugging(buckets, 0.85, "higher")


def bunch(bins: npt.NDArray[np.float64]) -> Finding | None:
    return deadline_bunching(bins, TARGET_OTS, "lower")


def vanish(buckets: npt.NDArray[np.float64]) -> Finding | None:
    return under_reporting(buckets, "lower")


# --- honest partners -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("case", "label", "rate", "evaluate", "seeds"),
    [
        (1, "(a) honest 14.9% escalations, 15% target", 0.149, hug_lower, 300),
        (2, "(b) honest 12% escalations, 15% target", 0.12, hug_lower, 200),
        (3, "(c) honest 86% resolution, 85% target (higher is better)", 0.86, hug_higher, 300),
    ],
    ids=["a", "b", "c"],
)
def test_honest_rates_are_not_hugging(
    case: int, label: str, rate: float, evaluate: Evaluate, seeds: int
) -> None:
    """(a)-(c) Binomial escalations (or resolutions) per ticket, Poisson volume of 50 a day."""
    false_rate = honest_rate(case, lambda rng: _binomial_buckets(rng, 59, rate), evaluate, seeds)
    _report(label, "partner-months falsely flagged (hugging):", false_rate, seeds)
    assert false_rate <= FALSE_FLAG_GOAL, f"{label}: {false_rate:.2%} of partner-months flagged"


def test_honest_durations_are_not_bunched() -> None:
    """(d) Lognormal open-to-status, median 6500 s and sigma 0.6: the density straddles the 2 h
    target and slopes down through it, which the smooth fit must absorb."""
    seeds = 200
    false_rate = honest_rate(4, lambda rng: _daily_bins(rng, 59), bunch, seeds, _bins_window)
    _report(
        "(d) honest lognormal OTS, median 6500 s, 2 h target",
        "partner-months flagged (bunching):",
        false_rate,
        seeds,
    )
    assert false_rate <= FALSE_FLAG_GOAL, f"(d) bunching: {false_rate:.2%} of partner-months flagged"


def test_honest_stable_rate_is_not_under_reporting() -> None:
    """(e) A stable honest 12% escalation rate: no drop, no flag."""
    seeds = 200
    false_rate = honest_rate(5, lambda rng: _binomial_buckets(rng, 59, 0.12), vanish, seeds)
    _report(
        "(e) honest stable 12% escalations", "partner-months flagged (under-reporting):", false_rate, seeds
    )
    assert false_rate <= FALSE_FLAG_GOAL, f"(e) under-reporting: {false_rate:.2%} of partner-months flagged"


@pytest.mark.parametrize(("signal", "evaluate"), [("hugging", hug_lower), ("under-reporting", vanish)])
def test_honest_overdispersed_partners_are_not_flagged(signal: str, evaluate: Evaluate) -> None:
    """(f) Real partners' daily rates vary more than binomially: the day's rate is Beta(mean 14.9%,
    concentration 150), a day-to-day sd of 2.9 points. Over-dispersion is the opposite of
    hugging; for under-reporting it is the hard case (a quiet week looks like a drop), which the
    effect size absorbs."""
    seeds = 200
    false_rate = honest_rate(
        6, lambda rng: _binomial_buckets(rng, 59, 0.149, concentration=150.0), evaluate, seeds
    )
    _report(
        "(f) honest beta-binomial 14.9% (day sd 2.9 pts)",
        f"partner-months flagged ({signal}):",
        false_rate,
        seeds,
    )
    assert false_rate <= FALSE_FLAG_GOAL, f"(f) {signal}: {false_rate:.2%} of partner-months flagged"


# --- gaming partners -------------------------------------------------------------------------------


def test_throttled_escalations_are_caught() -> None:
    """(g) Tickets need escalating at 20%; from day 0 the partner escalates one only while its
    running rate is under 14.9%.

    The 14-day goal (95%) is NOT met: hourly buckets of 50 tickets a day carry too little
    evidence after 14 days for a test that keeps honest partner-months under 1%. Each time its
    running rate dips, this partner escalates every ticket that needs it (20%), so its deficit
    wanders for dozens of tickets the way an honest partner's count does; only a few of the
    slowest frequencies of its escalation sequence differ from an honest one's after 700
    tickets. The floors asserted here are the measured rates less a margin for the seed count;
    the README's Integrity section has the trade-off against alpha.
    """
    seeds = 300
    found = detection_days(
        7, lambda rng: _throttled_buckets(rng, WINDOW_DAYS), hug_lower, range(1, WINDOW_DAYS + 1), seeds
    )
    within14 = float(np.mean(found <= DETECT_DAYS))
    within30 = float(np.mean(np.isfinite(found)))
    median = float(np.median(found))
    _report(
        "(g) throttled escalations (need 20%, held under 14.9%)",
        "detected within 14 days:",
        within14,
        seeds,
        f", within 30 days {within30:.2%}, median day {median:g}",
    )
    assert within14 >= 0.65, f"(g) hugging: {within14:.2%} detected within {DETECT_DAYS} days (goal 95%)"
    assert within30 >= 0.88, f"(g) hugging: {within30:.2%} detected within {WINDOW_DAYS} days"
    assert median <= DETECT_DAYS, f"(g) hugging: median day of detection {median:g}"


@pytest.mark.parametrize(("case", "label", "need"), [
    (12, "(g2) throttled escalations (need 25%, held under 14.9%)", 0.25),
    (13, "(g3) throttled escalations (need 30%, held under 14.9%)", 0.30),
])
def test_throttlers_withholding_more_are_caught_within_14_days(case: int, label: str,
                                                              need: float) -> None:
    """The same throttler with more to hide: 25% (30%) of its tickets need escalating, so holding
    at 14.9% withholds 40% (half) of them. Its running rate then climbs back to the target within
    a few tickets of each dip, and the steadiness shows within days (the demo's gaming partner
    needs 30%)."""
    seeds = 300
    found = detection_days(
        case, lambda rng: _throttled_buckets(rng, WINDOW_DAYS, need_rate=need), hug_lower,
        range(1, WINDOW_DAYS + 1), seeds)
    rate = float(np.mean(found <= DETECT_DAYS))
    _report(label, "detected within 14 days:", rate, seeds, f", median day {np.median(found):g}")
    assert rate >= DETECTION_GOAL, f"{label}: {rate:.2%} detected within {DETECT_DAYS} days"


def test_bunched_first_contacts_are_caught() -> None:
    """(h) Honest durations as in (d), but 60% of those that would miss 2 h are logged at 1h50-1h59."""
    seeds = 300
    found = detection_days(
        8,
        lambda rng: _daily_bins(rng, DETECT_DAYS, bunch_share=0.6),
        bunch,
        range(1, DETECT_DAYS + 1),
        seeds,
        _bins_window,
    )
    rate = float(np.mean(np.isfinite(found)))
    median = float(np.median(found))
    _report(
        "(h) bunched first contacts (60% of late ones at 1h50-1h59)",
        "detected within 14 days:",
        rate,
        seeds,
        f", median day {median:g}",
    )
    assert rate >= DETECTION_GOAL, f"(h) bunching: {rate:.2%} detected within {DETECT_DAYS} days"


def test_vanishing_escalations_are_caught() -> None:
    """(i) Honest 12% for 20 days, then only 30% of escalations are reported: detected within 14
    days of the turn, and (nearly) never before it."""
    seeds, turn = 300, 20

    def simulate(rng: np.random.Generator) -> npt.NDArray[np.float64]:
        return _vanishing_buckets(rng, turn + DETECT_DAYS, turn)

    early = float(np.mean(np.isfinite(detection_days(9, simulate, vanish, range(1, turn + 1), seeds))))
    found = detection_days(9, simulate, vanish, range(turn + 1, turn + DETECT_DAYS + 1), seeds)
    rate = float(np.mean(np.isfinite(found)))
    median = float(np.median(found))
    _report(
        "(i) vanishing escalations (12%, then 30% reported from day 20)",
        "detected within 14 days of the turn:",
        rate,
        seeds,
        f", median day {median:g} after it; flagged before it: {early:.2%}",
    )
    assert early <= FALSE_FLAG_GOAL, f"(i) {early:.2%} of partners flagged before the turn"
    assert rate >= DETECTION_GOAL, f"(i) under-reporting: {rate:.2%} detected within {DETECT_DAYS} days"


# --- calibration of the nulls ----------------------------------------------------------------------


def _honest_windows(count: int, days: int, rate: float) -> Iterator[npt.NDArray[np.float64]]:
    for seed in range(count):
        yield _binomial_buckets(_rng(11, seed), days, rate)


def test_hugging_null_is_calibrated() -> None:
    """Per-evaluation p-values of honest windows are uniform: the exact-moment gamma null of the
    dispersion index, and the feedback test's martingale z (whose p-values are discrete, so only
    its tails are checked). The chi-square on m - 1 df is measured beside it: its lower tail is
    too heavy at ~25 tickets a sub-period (conservative, a loss of power)."""
    p_gamma: list[float] = []
    p_chi2: list[float] = []
    p_feedback: list[float] = []
    for buckets in _honest_windows(1500, 7, 0.149):
        n, x = buckets[:, 0], buckets[:, 1]
        merged = np.asarray(merge_periods(buckets, DEFAULT_PARAMS.min_per_period))
        sizes, counts = merged[:, 0], merged[:, 1]
        rate = counts.sum() / sizes.sum()
        d = float(((counts - sizes * rate) ** 2 / (sizes * rate * (1 - rate))).sum())
        mean, var = dispersion_null_moments(sizes, float(counts.sum()))
        p_gamma.append(dispersion_lower_p(d, mean, var))
        p_chi2.append(float(stats.chi2.cdf(d, len(sizes) - 1)))
        p_feedback.append(feedback_test(n, x, 0.15).p_value)
    gamma = np.array(p_gamma)
    ks = stats.kstest(gamma, "uniform")
    tail = float(np.mean(gamma < 0.01))
    chi2_tail = float(np.mean(np.array(p_chi2) < 0.01))
    feedback_tail = float(np.mean(np.array(p_feedback) < 0.01))
    print(
        f"\n[integrity] hugging null, 1500 honest 7-day windows: gamma KS D={ks.statistic:.3f} "
        f"(p={ks.pvalue:.2f}), P(p<1%): gamma {tail:.2%}, chi-square {chi2_tail:.2%}, "
        f"feedback {feedback_tail:.2%}"
    )
    assert ks.pvalue > 1e-3, f"dispersion p-values not uniform: KS D={ks.statistic:.3f}"
    assert 0.005 <= tail <= 0.02, f"dispersion P(p < 1%) = {tail:.2%}"
    assert feedback_tail <= 0.02, f"feedback P(p < 1%) = {feedback_tail:.2%}"


def test_dispersion_moments_are_exact() -> None:
    """The closed-form conditional moments against a Monte Carlo of the multivariate
    hypergeometric, and Haldane's mean ``(m - 1) N / (N - 1)``."""
    rng = np.random.default_rng(12)
    sizes = rng.integers(3, 40, size=30).astype(np.float64)
    total = 90.0
    draws = rng.multivariate_hypergeometric(sizes.astype(np.int64), int(total), size=100_000).astype(float)
    rate = total / sizes.sum()
    d = ((draws - sizes * rate) ** 2 / (sizes * rate * (1 - rate))).sum(axis=1)
    mean, var = dispersion_null_moments(sizes, total)
    assert mean == pytest.approx((len(sizes) - 1) * sizes.sum() / (sizes.sum() - 1))
    assert d.mean() == pytest.approx(mean, rel=0.01)
    assert d.var() == pytest.approx(var, rel=0.03)


def test_special_functions_are_the_stats_distributions() -> None:
    """The module calls scipy.special for speed; these are the scipy.stats distributions."""
    assert dispersion_lower_p(20.0, 30.0, 50.0) == pytest.approx(
        stats.gamma.cdf(20.0, 18.0, scale=50.0 / 30.0)
    )
    finding = under_reporting(
        [(100.0, 10.0)] * 3 + [(100.0, 2.0)], params=IntegrityParams(min_under_reporting_samples=50)
    )
    assert finding is not None
    assert finding.p_value == pytest.approx(stats.binom.cdf(2, 32, 0.25))


# --- units -----------------------------------------------------------------------------------------


def test_merge_periods() -> None:
    buckets = [(0, 0), (10, 1), (0, 0), (20, 3), (5, 1), (30, 4), (3, 0), (0, 0)]
    # 10 + 0 + 20 >= 25 -> (30, 4); 5 + 30 -> (35, 5); the remainder (3, 0) joins the last
    assert merge_periods(buckets, 25) == [(30.0, 4.0), (38.0, 5.0)]
    assert merge_periods(buckets, 100) == []  # 68 in all: no full sub-period
    assert merge_periods([], 25) == []
    assert merge_periods([(25, 5), (25, 6)], 25) == [(25.0, 5.0), (25.0, 6.0)]
    rng = np.random.default_rng(13)
    for _ in range(50):
        n = rng.poisson(2.0, size=720)
        x = rng.binomial(n, 0.2)
        merged = merge_periods(np.column_stack((n, x)), 25)
        assert sum(a for a, _ in merged) == n.sum() and sum(b for _, b in merged) == x.sum()
        assert all(a >= 25 for a, _ in merged)
    # a bucket may hold more numerator events than denominator ones (an escalation lands an hour
    # after its ticket's opening); negative counts are an engine fault
    assert merge_periods([(3, 4), (30, 1)], 25) == [(33.0, 5.0)]
    with pytest.raises(ValueError):
        merge_periods([(3, -1)], 25)


def test_bunching_bins_edges() -> None:
    target, width, k = 7200.0, 0.1, 5
    edges = [target * (1 + width * j) for j in range(-k, k + 1)]  # 3600, 4320, ..., 10800
    lower = bunching_bins([target], target, width, k)
    assert len(lower) == 2 * k and lower[k - 1] == 1  # meets "<= 2 h": counts just inside
    assert bunching_bins([target], target, width, k, better="higher")[k] == 1
    assert bunching_bins([target + 1e-6], target, width, k)[k] == 1
    assert bunching_bins([6480.0, 6480.5], target, width, k)[k - 2 : k] == [1, 1]  # (6480, 7200] is bin k-1
    assert sum(bunching_bins([edges[0], edges[-1], 100.0, 1e6], target, width, k)) == 1  # (3600, 10800]
    assert bunching_bins([edges[-1]], target, width, k)[-1] == 1
    assert bunching_bins([edges[0]], target, width, k, better="higher")[0] == 1  # [3600, 10800)
    assert bunching_bins([6600.0, 7140.0, 7199.0], target, width, k)[k - 1] == 3  # 1h50-1h59


def test_silent_below_minimum_volume() -> None:
    p = DEFAULT_PARAMS
    short = [(p.min_per_period, 3)] * (p.min_periods - 1)
    assert threshold_hugging(short, 0.15, "lower") is None
    assert threshold_hugging([*short, (p.min_per_period, 4)], 0.15, "lower") is not None
    assert deadline_bunching([19] * 10, TARGET_OTS) is None  # 190 < 200
    assert deadline_bunching([], TARGET_OTS) is None  # a partner without state
    assert deadline_bunching([20] * 10, TARGET_OTS) is not None
    # four buckets: the recent quarter is the last one, and it must hold the minimum on its own
    few = [(p.min_under_reporting_samples, 20)] * 3 + [(p.min_under_reporting_samples - 1, 20)]
    assert under_reporting(few) is None
    assert under_reporting([(p.min_under_reporting_samples, 20)] * 4) is not None


def test_evidence_fields() -> None:
    steered = _throttled_buckets(_rng(14, 0), WINDOW_DAYS)
    hug = threshold_hugging(steered, 0.15, "lower")
    assert hug is not None and hug.flagged and hug.signal == "threshold_hugging"
    assert hug.score == pytest.approx(min(SCORE_CAP, -math.log10(hug.p_value)))
    assert hug.samples == int(steered[:, 0].sum()) and hug.periods == len(merge_periods(steered, 25))
    assert 0.0 < hug.statistic < 0.6  # dispersion index far under the binomial's 1
    assert "steered to the target" in hug.detail and f"{hug.samples} tickets" in hug.detail

    daily = _daily_bins(_rng(14, 1), WINDOW_DAYS, bunch_share=0.6)
    bunched = deadline_bunching(_bins_window(daily, WINDOW_DAYS), TARGET_OTS)
    assert bunched is not None and bunched.flagged and bunched.signal == "deadline_bunching"
    assert bunched.periods == 2 * BUNCHING_K and bunched.statistic > DEFAULT_PARAMS.min_excess
    assert bunched.samples == int(_bins_window(daily, WINDOW_DAYS).sum())
    assert "1h48-2h00" in bunched.detail and "bunched" in bunched.detail

    vanished = under_reporting(_vanishing_buckets(_rng(14, 2), WINDOW_DAYS, 20))
    assert vanished is not None and vanished.flagged and vanished.signal == "under_reporting"
    assert vanished.periods == 2 and vanished.statistic < DEFAULT_PARAMS.min_ratio_drop
    assert "vanishing" in vanished.detail

    assert {hug.signal, bunched.signal, vanished.signal} == set(SIGNALS)
    assert score_of(0.0) == SCORE_CAP and score_of(1.0) == 0.0 and score_of(1e-3) == pytest.approx(3.0)


def test_higher_is_better_mirrors_lower() -> None:
    """A resolution rate hugging 85% from above is its miss rate hugging 15% from below."""
    steered = _throttled_buckets(_rng(15, 0), WINDOW_DAYS)
    mirrored = steered.copy()
    mirrored[:, 1] = steered[:, 0] - steered[:, 1]
    low = threshold_hugging(steered, 0.15, "lower")
    high = threshold_hugging(mirrored, 0.85, "higher")
    assert low is not None and high is not None
    assert (low.flagged, low.p_value, low.statistic) == (
        high.flagged,
        pytest.approx(high.p_value),
        pytest.approx(high.statistic),
    )
    vanishing = _vanishing_buckets(_rng(15, 1), WINDOW_DAYS, 20)
    flipped = vanishing.copy()
    flipped[:, 1] = vanishing[:, 0] - vanishing[:, 1]
    lost, lost_mirrored = under_reporting(vanishing, "lower"), under_reporting(flipped, "higher")
    assert lost is not None and lost_mirrored is not None
    assert (lost.flagged, lost.p_value, lost.statistic) == (
        lost_mirrored.flagged,
        lost_mirrored.p_value,
        lost_mirrored.statistic,
    )


def test_params_are_validated() -> None:
    with pytest.raises(ValueError):
        IntegrityParams(alpha=0.0)
    with pytest.raises(ValueError):
        IntegrityParams(recent_share=1.0)
    with pytest.raises(ValueError):
        threshold_hugging([(25, 3)] * 10, 0.15, "sideways")
