"""Judgement: confidence bounds, the CUSUM early warning and the ok / at_risk / breach machine.

Every expected number is derived here, from closed-form formulas written out in the test,
textbook table values or hand arithmetic (shown in the comments), never copied from the
module's output. Time is always an explicit argument: no sleeps, no wall clock.
"""

from __future__ import annotations

import math
import random
import statistics
from statistics import NormalDist

import pytest

from streams.config.judging import JudgeParams
from streams.engine import sketch
from streams.engine.cusum import CUSUM_CAP_FACTOR, Cusum
from streams.judgement.judge import Evidence, Judgement, State, Transition, bounds, is_past, t_quantile

T0 = 1_788_000_000_000  # a fixed instant; nothing depends on the real clock
SEC = 1_000
MIN = 60 * SEC
HOUR = 60 * MIN
DAY = 24 * HOUR

Z95 = NormalDist().inv_cdf(0.95)
P = JudgeParams()


def test_z_is_the_one_sided_95_percent_normal_quantile() -> None:
    assert pytest.approx(1.644854, abs=1e-6) == Z95  # standard normal table


# --- helpers: independent formulas ---------------------------------------------------------------


def wilson_roots(successes: int, n: int, z: float) -> tuple[float, float]:
    """The Wilson bounds as the two roots of the score-test equation.

    (p_hat - p)^2 = z^2 p (1 - p) / n  <=>  (1 + z^2/n) p^2 - (2 p_hat + z^2/n) p + p_hat^2 = 0,
    solved with the quadratic formula (the module uses the center +/- half-width form).
    """
    p_hat = successes / n
    a = 1 + z * z / n
    b = 2 * p_hat + z * z / n
    c = p_hat * p_hat
    root = math.sqrt(b * b - 4 * a * c)
    return (b - root) / (2 * a), (b + root) / (2 * a)


def ratio(successes: int, n: int) -> Evidence:
    return Evidence("ratio", n, successes / n, s=float(successes))


def mean_of(samples: list[float]) -> Evidence:
    return Evidence("mean", len(samples), sum(samples) / len(samples), s=sum(samples),
                    s2=sum(x * x for x in samples))


def lognormal(rng: random.Random, mean: float, cv: float) -> float:
    """A lognormal sample with the given mean and coefficient of variation."""
    sigma2 = math.log(1 + cv * cv)
    return rng.lognormvariate(math.log(mean) - sigma2 / 2, math.sqrt(sigma2))


# --- bounds: ratios (Wilson) ---------------------------------------------------------------------


def test_wilson_zero_of_ten() -> None:
    # p_hat = 0: the lower root is 0 and the upper is z^2 / (n + z^2) = 2.70554 / 12.70554 = 0.21294
    lower, upper = bounds(ratio(0, 10), 0.95)
    assert lower == 0.0
    assert upper == pytest.approx(Z95**2 / (10 + Z95**2), rel=1e-12)
    assert upper == pytest.approx(0.21294, abs=1e-5)


def test_wilson_ten_of_ten_mirrors_zero_of_ten() -> None:
    # p_hat = 1: lower = n / (n + z^2) = 10 / 12.70554 = 0.78706, upper 1
    lower, upper = bounds(ratio(10, 10), 0.95)
    assert lower == pytest.approx(10 / (10 + Z95**2), rel=1e-12)
    assert upper == 1.0


@pytest.mark.parametrize(("successes", "n", "hand_lower", "hand_upper"), [
    # 5/10: a = 1.270554, b = 1.270554, c = 0.25, sqrt(b^2 - 4ac) = 0.586305 -> 0.26927, 0.73073
    (5, 10, 0.26927, 0.73073),
    # 15/100: a = 1.027055, b = 0.327055, c = 0.0225, sqrt(disc) = 0.120540 -> 0.10054, 0.21790
    (15, 100, 0.10054, 0.21790),
])
def test_wilson_against_the_score_equation(successes: int, n: int, hand_lower: float,
                                           hand_upper: float) -> None:
    lower, upper = bounds(ratio(successes, n), 0.95)
    expected_lower, expected_upper = wilson_roots(successes, n, Z95)
    assert lower == pytest.approx(expected_lower, rel=1e-12)
    assert upper == pytest.approx(expected_upper, rel=1e-12)
    assert (lower, upper) == pytest.approx((hand_lower, hand_upper), abs=1e-5)
    # and the defining property: both bounds solve (p_hat - p)^2 n = z^2 p (1 - p)
    p_hat = successes / n
    for bound in (lower, upper):
        assert (p_hat - bound) ** 2 * n == pytest.approx(Z95**2 * bound * (1 - bound), rel=1e-9)


def test_wilson_five_of_ten_is_symmetric_about_one_half() -> None:
    lower, upper = bounds(ratio(5, 10), 0.95)
    assert lower + upper == pytest.approx(1.0, abs=1e-15)


def test_higher_confidence_widens_the_bounds() -> None:
    z99 = NormalDist().inv_cdf(0.99)  # 2.326348
    assert bounds(ratio(15, 100), 0.99) == pytest.approx(wilson_roots(15, 100, z99), rel=1e-12)
    assert bounds(ratio(15, 100), 0.99)[0] < bounds(ratio(15, 100), 0.95)[0]


# --- bounds: means -------------------------------------------------------------------------------


def test_mean_bound_uses_z_from_thirty_samples() -> None:
    samples = [float(i % 10) for i in range(100)]  # mean 4.5
    sd = statistics.stdev(samples)  # n - 1 denominator: sqrt(825 / 99) = 2.88675
    assert sd == pytest.approx(math.sqrt(825 / 99), rel=1e-12)
    half = Z95 * sd / math.sqrt(100)
    assert bounds(mean_of(samples), 0.95) == pytest.approx((4.5 - half, 4.5 + half), rel=1e-12)


def test_mean_bound_uses_student_t_below_thirty_samples() -> None:
    samples = [float(i) for i in range(1, 11)]  # 1..10: mean 5.5, sd sqrt(82.5 / 9) = 3.02765
    t_9 = 1.833113  # t table, 95% one-sided, 9 degrees of freedom
    half = t_9 * math.sqrt(82.5 / 9) / math.sqrt(10)  # 1.75507
    lower, upper = bounds(mean_of(samples), 0.95)
    assert lower == pytest.approx(5.5 - half, abs=1e-5)
    assert upper == pytest.approx(5.5 + half, abs=1e-5)
    assert half == pytest.approx(1.75507, abs=1e-5)


def test_mean_bound_of_one_sample_is_the_sample() -> None:
    assert bounds(mean_of([42.0]), 0.95) == (42.0, 42.0)


def test_mean_bound_clamps_negative_variance_from_float_error() -> None:
    # identical samples: s2 - s^2/n is pure rounding error (either sign), the spread is 0
    for value in (0.1, 0.3, 7.7, 86_400.5):
        samples = [value] * 50
        lower, upper = bounds(mean_of(samples), 0.95)
        assert lower == upper == pytest.approx(value, rel=1e-12)


def test_mean_bound_keeps_a_small_real_spread() -> None:
    samples = [1000.0, 1000.1] * 15  # sd 0.05085: tiny next to the values, but real
    half = Z95 * statistics.stdev(samples) / math.sqrt(30)
    assert bounds(mean_of(samples), 0.95) == pytest.approx((1000.05 - half, 1000.05 + half), rel=1e-9)
    assert half == pytest.approx(Z95 * math.sqrt(0.075 / 29) / math.sqrt(30), rel=1e-6)


@pytest.mark.parametrize(("p", "df", "expected"), [
    (0.95, 1, math.tan(math.pi * 0.45)),  # df 1 is Cauchy: t = tan(pi (p - 1/2)) = 6.313752
    (0.95, 2, 0.9 * math.sqrt(2 / (4 * 0.95 * 0.05))),  # df 2: (2p - 1) sqrt(2 / (4p(1 - p))) = 2.919986
    (0.95, 4, 2.131847),  # t table
    (0.95, 9, 1.833113),
    (0.975, 9, 2.262157),
    (0.95, 28, 1.701131),
    (0.99, 5, 3.364930),
    (0.05, 4, -2.131847),  # symmetry
])
def test_t_quantile_against_closed_forms_and_tables(p: float, df: int, expected: float) -> None:
    assert t_quantile(p, df) == pytest.approx(expected, abs=2e-6)


# --- bounds: quantiles (order statistics) --------------------------------------------------------


def test_quantile_bound_ranks_on_a_simple_histogram() -> None:
    hist = {key: 1 for key in range(100)}  # one sample in each of keys 0..99: rank r is key r - 1
    ev = Evidence("quantile", 100, sketch.value_of(89), hist=hist, q=0.9)
    # sqrt(n q (1 - q)) = sqrt(9) = 3, z * 3 = 4.93456
    # r_lo = floor(90 - 4.93456) = floor(85.07) = 85 -> key 84
    # r_hi = ceil(90 + 4.93456) + 1 = 95 + 1 = 96 -> key 95
    assert bounds(ev, 0.95) == (sketch.value_of(84), sketch.value_of(95))


def test_quantile_bound_ranks_clamp_to_the_sample() -> None:
    hist = {sketch.ZERO_KEY: 1, 5: 1, 7: 1, 6: 0}  # the empty key 6 must be skipped
    ev = Evidence("quantile", 3, sketch.value_of(5), hist=hist, q=0.5)
    # z * sqrt(3 * 0.25) = 1.42449: r_lo = floor(0.0755) = 0 -> 1; r_hi = ceil(2.92) + 1 = 4 -> 3
    assert bounds(ev, 0.95) == (0.0, sketch.value_of(7))


def test_quantile_bound_walks_counts_in_key_order() -> None:
    hist = {30: 3, 10: 2}  # ranks 1-2 in key 10, ranks 3-5 in key 30 (insertion order must not matter)
    ev = Evidence("quantile", 5, sketch.value_of(30), hist=hist, q=0.9)
    # z * sqrt(5 * 0.09) = 1.10342: r_lo = floor(3.40) = 3 -> key 30; r_hi = ceil(5.60) + 1 = 7 -> 5
    assert bounds(ev, 0.95) == (sketch.value_of(30), sketch.value_of(30))
    ev = Evidence("quantile", 5, sketch.value_of(10), hist=hist, q=0.2)
    # z * sqrt(5 * 0.16) = 1.47121: r_lo = floor(-0.47) -> 1 -> key 10; r_hi = ceil(2.47) + 1 = 4 -> key 30
    assert bounds(ev, 0.95) == (sketch.value_of(10), sketch.value_of(30))


def test_bounds_reject_nonsense() -> None:
    with pytest.raises(ValueError):
        bounds(ratio(1, 2), 1.0)
    with pytest.raises(ValueError):
        bounds(Evidence("median", 3, 1.0), 0.95)
    with pytest.raises(ValueError):
        bounds(Evidence("quantile", 3, 1.0), 0.95)


def test_is_past_needs_the_whole_bound_on_the_wrong_side() -> None:
    assert is_past(0.16, 0.30, 0.15, lower_is_better=True)
    assert not is_past(0.14, 0.30, 0.15, lower_is_better=True)
    assert is_past(0.50, 0.69, 0.70, lower_is_better=False)
    assert not is_past(0.50, 0.71, 0.70, lower_is_better=False)


# --- the state machine -----------------------------------------------------------------------------
# escalation_rate: lower is better, target 15%, min 20 samples


def esc_step(j: Judgement, now: int, ev: Evidence | None, cusum_alarm: bool = False) -> Transition | None:
    return j.step(now, ev, 0.15, True, 20, P, cusum_alarm)


def test_three_samples_at_33_percent_is_insufficient_data_never_breach() -> None:
    j = Judgement()
    ev = ratio(1, 3)  # 33% escalation rate, but only 3 tickets
    for now in (T0, T0 + 5 * MIN, T0 + HOUR, T0 + 30 * DAY):
        assert esc_step(j, now, ev, cusum_alarm=True) is None  # no change: it starts insufficient
        assert j.state is State.INSUFFICIENT_DATA
        assert j.pending_since_ms is None
    assert j.since_ms is None
    assert esc_step(j, T0 + 31 * DAY, None) is None


def test_breach_requires_the_bound_past_for_five_minutes() -> None:
    j = Judgement()
    ev = ratio(60, 100)
    lower, upper = wilson_roots(60, 100, Z95)  # 0.51781, 0.67692: wholly above 0.15
    assert lower > 0.15
    first = esc_step(j, T0, ev)
    assert first is not None and (first.old, first.new) == (State.INSUFFICIENT_DATA, State.AT_RISK)
    assert j.pending_since_ms == T0
    assert esc_step(j, T0 + 4 * MIN + 59 * SEC, ev) is None
    assert j.state is State.AT_RISK
    breach = esc_step(j, T0 + 5 * MIN, ev)
    assert breach is not None
    assert (breach.old, breach.new, breach.at_ms) == (State.AT_RISK, State.BREACH, T0 + 5 * MIN)
    assert breach.value == 0.6 and breach.target == 0.15 and breach.n == 100
    assert breach.lower == pytest.approx(lower, rel=1e-12)
    assert breach.upper == pytest.approx(upper, rel=1e-12)
    assert j.state is State.BREACH and j.since_ms == T0 + 5 * MIN


def test_a_break_in_the_bound_restarts_the_timer() -> None:
    j = Judgement()
    esc_step(j, T0, ratio(60, 100))
    # 30 of 200 = 15%: Wilson lower 0.1101 is below the target, so the bound is no longer past
    assert wilson_roots(30, 200, Z95)[0] < 0.15
    esc_step(j, T0 + 3 * MIN, ratio(30, 200))
    assert j.pending_since_ms is None and j.state is State.OK
    esc_step(j, T0 + 4 * MIN, ratio(60, 100))
    assert esc_step(j, T0 + 8 * MIN + 59 * SEC, ratio(60, 100)) is None  # 4m59s since T0 + 4m
    assert j.state is State.AT_RISK
    assert esc_step(j, T0 + 9 * MIN, ratio(60, 100)) is not None
    assert j.state is State.BREACH


def _breached(lower_is_better: bool = True) -> Judgement:
    j = Judgement()
    bad, target = (ratio(60, 100), 0.15) if lower_is_better else (ratio(30, 100), 0.70)
    j.step(T0, bad, target, lower_is_better, 20, P, False)
    j.step(T0 + 5 * MIN, bad, target, lower_is_better, 20, P, False)
    assert j.state is State.BREACH
    return j


def test_no_flapping_at_the_target_after_a_breach() -> None:
    j = _breached()
    # recovery needs value <= 0.15 * (1 - 0.05) = 0.1425; with 2000 tickets:
    hover = [300, 298, 290, 286, 300, 299]  # 15.0%, 14.9%, 14.5%, 14.3%, 15.0%, 14.95%
    now = T0 + 10 * MIN
    for escalated in hover:
        assert wilson_roots(escalated, 2000, Z95)[0] < 0.15  # the bound is not past: only hysteresis holds
        assert esc_step(j, now, ratio(escalated, 2000)) is None
        assert j.state is State.BREACH
        now += MIN
    back = esc_step(j, now, ratio(285, 2000))  # 285 / 2000 = 0.1425: inside by the margin
    assert back is not None and (back.old, back.new) == (State.BREACH, State.OK)
    # once out of breach, hovering at or just under the target is ok, not a new breach
    for escalated in hover:
        now += MIN
        assert esc_step(j, now, ratio(escalated, 2000)) is None
        assert j.state is State.OK


def test_no_flapping_higher_is_better() -> None:
    # first_contact_resolution: target 70%, recovery needs value >= 0.70 * 1.05 = 0.735
    j = _breached(lower_is_better=False)
    now = T0 + 10 * MIN
    for resolved in (700, 710, 730, 734):
        j.step(now, ratio(resolved, 1000), 0.70, False, 20, P, False)
        assert j.state is State.BREACH
        now += MIN
    j.step(now, ratio(740, 1000), 0.70, False, 20, P, False)
    assert j.state is State.OK


def test_breach_held_by_hysteresis_does_not_drop_when_the_bound_is_past_again() -> None:
    j = _breached()
    esc_step(j, T0 + 10 * MIN, ratio(300, 2000))  # not past (timer cleared), not recovered: held
    assert j.state is State.BREACH and j.pending_since_ms is None
    # past again: the timer restarts, but a breach that never recovered stays a breach
    assert esc_step(j, T0 + 11 * MIN, ratio(60, 100)) is None
    assert j.state is State.BREACH and j.pending_since_ms == T0 + 11 * MIN


def test_few_samples_just_above_the_target_is_at_risk_not_breach() -> None:
    j = Judgement()
    ev = ratio(4, 20)  # 20%, above 15%, but Wilson lower 0.0931 is below the target
    assert wilson_roots(4, 20, Z95)[0] < 0.15
    for now in (T0, T0 + 5 * MIN, T0 + HOUR, T0 + DAY):
        esc_step(j, now, ev)
        assert j.state is State.AT_RISK
        assert j.pending_since_ms is None


def test_cusum_alarm_raises_at_risk_only() -> None:
    j = Judgement()
    good = ratio(20, 200)  # 10%: inside the target
    assert esc_step(j, T0, good, cusum_alarm=False) is not None
    assert j.state is State.OK
    esc_step(j, T0 + MIN, good, cusum_alarm=True)
    assert j.state is State.AT_RISK
    esc_step(j, T0 + DAY, good, cusum_alarm=True)
    assert j.state is State.AT_RISK  # an alarm alone never becomes a breach
    esc_step(j, T0 + DAY + MIN, good, cusum_alarm=False)
    assert j.state is State.OK


def test_point_value_on_the_wrong_side_is_at_risk_and_on_target_is_ok() -> None:
    j = Judgement()
    esc_step(j, T0, ratio(31, 200))  # 15.5% > 15%
    assert j.state is State.AT_RISK
    esc_step(j, T0 + MIN, ratio(30, 200))  # exactly 15%: not on the wrong side
    assert j.state is State.OK


def test_losing_the_data_interrupts_a_breach_and_its_timer() -> None:
    j = _breached()
    gone = esc_step(j, T0 + 10 * MIN, None)
    assert gone is not None
    assert (gone.old, gone.new, gone.value, gone.lower, gone.upper, gone.n) == (
        State.BREACH, State.INSUFFICIENT_DATA, None, None, None, 0)
    assert j.pending_since_ms is None
    esc_step(j, T0 + 20 * MIN, ratio(60, 100))
    assert j.state is State.AT_RISK  # a fresh five minutes are needed
    esc_step(j, T0 + 25 * MIN, ratio(60, 100))
    assert j.state is State.BREACH


def test_mean_and_quantile_evidence_drive_the_machine() -> None:
    # ASA, target 60 s: 100 calls at 80 s +/- 10 s, lower bound 80 - 1.645 * 10.05 / 10 = 78.3 > 60
    samples = [70.0, 90.0] * 50
    j = Judgement()
    j.step(T0, mean_of(samples), 60.0, True, 20, P, False)
    j.step(T0 + 5 * MIN, mean_of(samples), 60.0, True, 20, P, False)
    assert j.state is State.BREACH
    # p90 of open-to-status, target 14400 s: 100 tickets, the rank-85 bound already at key 84
    hist = {sketch.key_of(14400.0) + 10 + i: 1 for i in range(100)}  # every sample > 14400 s
    ev = Evidence("quantile", 100, sketch.value_of(max(hist)), hist=hist, q=0.9)
    j = Judgement()
    j.step(T0, ev, 14400.0, True, 10, P, False)
    assert j.state is State.AT_RISK and j.pending_since_ms == T0


def test_judgement_round_trips_through_a_tuple_with_its_timer() -> None:
    j = Judgement()
    esc_step(j, T0, ratio(60, 100))
    saved = j.to_tuple()
    assert saved == ("at_risk", T0, T0)
    restored = Judgement.from_tuple(saved)
    assert restored == j
    esc_step(restored, T0 + 5 * MIN, ratio(60, 100))  # the timer survived the restart
    assert restored.state is State.BREACH


def test_params_validate_and_resolve_cusum_defaults() -> None:
    assert (P.confidence, P.for_ms, P.recovery_margin) == (0.95, 300_000, 0.05)
    assert P.cusum_params("ratio") == (0.0, 8.0)
    assert P.cusum_params("mean") == P.cusum_params("quantile") == (0.0, 10.0)
    assert JudgeParams(cusum_k=0.1, cusum_h=3.0).cusum_params("ratio") == (0.1, 3.0)
    for bad in ({"confidence": 1.0}, {"for_ms": -1}, {"recovery_margin": 1.0}, {"cusum_h": 0.0}):
        with pytest.raises(ValueError):
            JudgeParams(**bad)


# --- CUSUM: arithmetic ---------------------------------------------------------------------------


def test_cusum_arithmetic_by_hand_relative_lower_is_better() -> None:
    c = Cusum(60.0, True, k=0.05, h=0.5, relative=True)  # cap = 2 * 0.5 = 1.0
    assert CUSUM_CAP_FACTOR == 2.0
    assert c.update(90.0) == pytest.approx(0.45)  # z = 30/60 = 0.5; 0 + 0.5 - 0.05
    assert not c.alarm
    assert c.update(30.0) == 0.0  # z = -0.5; max(0, 0.45 - 0.5 - 0.05)
    assert c.update(96.0) == pytest.approx(0.55)  # z = 0.6; 0.6 - 0.05
    assert c.alarm  # 0.55 > 0.5
    assert c.update(120.0) == pytest.approx(1.0)  # z = 1: 0.55 + 0.95 = 1.5, capped at 1.0
    assert c.update(60.0) == pytest.approx(0.95)  # z = 0: 1.0 - 0.05
    assert c.alarm
    c.reset()
    assert c.s == 0.0 and not c.alarm


def test_cusum_arithmetic_by_hand_ratio_higher_is_better() -> None:
    c = Cusum(0.8, False, k=0.0, h=1.0, relative=False)  # service level: a miss is the bad outcome
    assert c.scale == 1.0
    assert c.update(0.0) == pytest.approx(0.8)  # z = -(0 - 0.8)
    assert c.update(0.0) == pytest.approx(1.6)
    assert c.alarm
    assert c.update(1.0) == pytest.approx(1.4)  # z = -(1 - 0.8) = -0.2
    assert c.update(math.nan) == pytest.approx(1.4)  # ignored


def test_cusum_alarm_has_hysteresis() -> None:
    c = Cusum(0.0, True, k=0.0, h=1.0, relative=False)  # z = x: the statistic is a plain sum
    c.update(1.2)
    assert c.alarm  # 1.2 > h
    c.update(-0.3)
    assert c.s == pytest.approx(0.9) and c.alarm  # below h but above h/2: still raised
    c.update(-0.4)
    assert c.s == pytest.approx(0.5) and not c.alarm  # at h/2: cleared
    c.update(0.4)
    assert c.s == pytest.approx(0.9) and not c.alarm  # not raised again until past h


def test_cusum_scale() -> None:
    assert Cusum(-5.0, True, 0.0, 1.0, relative=True).scale == 5.0
    assert Cusum(0.0, True, 0.0, 1.0, relative=True).scale == pytest.approx(1e-9)
    assert Cusum.for_kind("ratio", 0.05, True).scale == 1.0
    assert Cusum.for_kind("mean", 60.0, True).scale == 60.0


def test_cusum_round_trips_through_a_tuple() -> None:
    c = Cusum.for_kind("mean", 60.0, True)
    c.update(660.0)  # z = 10, k = 0: S = 10, not yet above h = 10
    assert c.to_tuple() == (60.0, True, 0.0, 10.0, True, 10.0)
    restored = Cusum.from_tuple(c.to_tuple())
    restored.update(61.0)  # z = 1/60: S = 10.0167 > 10
    assert restored.alarm


# --- CUSUM: simulations --------------------------------------------------------------------------

SEEDS = (1, 2, 3, 4, 5)


def first_alarm(c: Cusum, samples: list[float]) -> int | None:
    for i, x in enumerate(samples):
        c.update(x)
        if c.alarm:
            return i
    return None


def first_running_mean_above(samples: list[float], window: int, level: float) -> int | None:
    """First index whose trailing ``window``-sample mean exceeds ``level`` (the 24 h window proxy)."""
    total = sum(samples[:window])
    if total / window > level:
        return window - 1
    for i in range(window, len(samples)):
        total += samples[i] - samples[i - window]
        if total / window > level:
            return i
    return None


@pytest.mark.parametrize("seed", SEEDS)
def test_cusum_catches_a_creeping_asa_before_the_24h_mean_does(seed: int) -> None:
    rng = random.Random(seed)
    # mean creeping linearly from 50 s to 70 s over 2000 calls: it passes the 60 s target at call ~1000
    samples = [lognormal(rng, 50.0 + 20.0 * i / 1999, 0.5) for i in range(2000)]
    crossing = first_running_mean_above(samples, 1000, 60.0)
    assert crossing is not None
    alarm = first_alarm(Cusum.for_kind("mean", 60.0, True), samples)
    assert alarm is not None
    assert alarm < crossing


@pytest.mark.parametrize("seed", SEEDS)
def test_cusum_never_alarms_on_a_steady_partner_17_percent_under_target(seed: int) -> None:
    rng = random.Random(1000 + seed)
    samples = [lognormal(rng, 50.0, 0.5) for _ in range(5000)]
    assert statistics.fmean(samples) == pytest.approx(50.0, rel=0.03)  # the generator is what it claims
    c = Cusum.for_kind("mean", 60.0, True)
    assert first_alarm(c, samples) is None


@pytest.mark.parametrize("seed", SEEDS)
def test_ratio_cusum_quiet_at_half_the_target_and_quick_at_twice(seed: int) -> None:
    # abandon rate, target 5%: a partner at 2.5% stays quiet over 5000 calls, one at 10% alarms
    # well within 1000 (an excess of 8 abandons over 5% needs ~8 / 0.05 = 160 calls on average)
    rng = random.Random(2000 + seed)
    quiet = [1.0 if rng.random() < 0.025 else 0.0 for _ in range(5000)]
    assert first_alarm(Cusum.for_kind("ratio", 0.05, True), quiet) is None
    loud = [1.0 if rng.random() < 0.10 else 0.0 for _ in range(1000)]
    assert first_alarm(Cusum.for_kind("ratio", 0.05, True), loud) is not None


def test_gaming_escalations_at_14_9_percent_never_breach() -> None:
    # A partner escalating exactly 149 of every 1000 tickets, evenly spread, one ticket every 3 min;
    # judged every minute on the last 480 tickets (the 24 h window), its CUSUM fed every ticket.
    window = 480
    outcomes = [1 if (i * 149) % 1000 < 149 else 0 for i in range(20_000)]
    assert sum(outcomes[:1000]) == 149
    cusum = Cusum.for_kind("ratio", 0.15, True)
    j = Judgement()
    states = set()
    for i, x in enumerate(outcomes):
        cusum.update(float(x))
        recent = outcomes[max(0, i + 1 - window):i + 1]
        ev = ratio(sum(recent), len(recent))
        for minute in range(3):
            esc_step(j, T0 + (3 * i + minute) * MIN, ev, cusum.alarm)
            states.add(j.state)
    assert State.BREACH not in states
    assert j.state is State.OK
