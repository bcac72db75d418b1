"""The month-end band forecast (streams/judgement/forecast.py), against answers computed here.

* Degenerate months: over (elapsed 1), or a partner far above every threshold.
* Analytic answers: a ratio KPI's month-end rate is a beta-binomial (Jeffreys posterior) over the
  remaining trials, mixed over a negative binomial remaining volume when that is drawn; a mean KPI's
  month-end mean is a Student t (normal model, Jeffreys prior); a quantile KPI's month-end quantile
  is at or below a bucket exactly when the samples at or below it reach the rank, whose count is
  beta-binomial (Dirichlet aggregation). Each is compared within Monte Carlo error.
* Slack: the fewest extra misses that drop the band, by a formula of the test.
* Calibration: 1,200 simulated partner-months (seeds 0..1199, 400 draws each), forecast at
  mid-month, the rest of the month simulated from the true parameters: the partner-bands forecast at
  70-90% must land in that band 65-95% of the time, and the Brier score must beat "the current band
  stays". ``pytest -s`` prints the reliability table and the figures.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np
import pytest
from scipy import stats

from streams.engine import sketch
from streams.judgement.forecast import (
    NO_BAND,
    Forecast,
    KpiModel,
    MonthToDate,
    forecast,
    slack,
)

RATIO = KpiModel("ratio", miss_value=1.0)
"""A ratio that counts bad outcomes (an escalation rate): a miss is a 1."""


def _ratio(ones: int, n: int) -> MonthToDate:
    return MonthToDate(n, float(ones), float(ones))


def _mean(values: np.ndarray) -> MonthToDate:
    return MonthToDate(len(values), float(values.sum()), float((values * values).sum()))


def _hist(counts: Mapping[float, int]) -> MonthToDate:
    """A quantile KPI's aggregate with ``count`` samples at each value."""
    hist: dict[int, int] = {}
    for value, count in counts.items():
        key = sketch.key_of(value)
        hist[key] = hist.get(key, 0) + count
    n = sum(counts.values())
    total = sum(v * c for v, c in counts.items())
    squares = sum(v * v * c for v, c in counts.items())
    return MonthToDate(n, total, squares, hist)


def _mc_tolerance(p: float, draws: int) -> float:
    """Four standard errors of a share estimated from ``draws`` draws (floored for p near 0/1)."""
    return 4.0 * math.sqrt(max(p * (1.0 - p), 0.01) / draws)


# --- degenerate months ---------------------------------------------------------------------------


def _esc_band(values: Mapping[str, tuple[float, int]]) -> str | None:
    """gold at an escalation rate up to 0.1517, watch above (no band without samples)."""
    got = values.get("esc")
    if got is None:
        return None
    return "gold" if got[0] <= 0.1517 else "watch"


@pytest.mark.parametrize("elapsed", [1.0, 1.25])
def test_a_month_over_keeps_its_current_band_for_sure(elapsed: float) -> None:
    # 16/100 = 0.16 > 0.1517: watch now, and a month over cannot move
    got = forecast({"esc": _ratio(16, 100)}, {"esc": RATIO}, elapsed, _esc_band)
    assert got == Forecast({"watch": 1.0}, "watch", "watch", 0)
    # and no band at all is reported as such
    empty = forecast({"esc": _ratio(0, 0)}, {"esc": RATIO}, elapsed, _esc_band)
    assert empty == Forecast({NO_BAND: 1.0}, NO_BAND, None, 0)


def test_a_partner_far_above_every_threshold_keeps_its_band() -> None:
    """Escalations at 2% against 15%, durations a tenth of the target, p90 a third of it: every draw
    of every kind of KPI stays in platinum."""
    rng = np.random.default_rng(7)
    durations = rng.lognormal(math.log(700.0), 0.5, size=400)
    mtd = {"esc": _ratio(8, 400), "mttr": _mean(durations),
           "asa_p90": _hist({20.0: 300, 30.0: 60, 40.0: 40})}
    models = {"esc": RATIO, "mttr": KpiModel("mean"), "asa_p90": KpiModel("quantile", quantile=0.9)}

    def band_of(values: Mapping[str, tuple[float, int]]) -> str | None:
        ok = (values["esc"][0] <= 0.15 and values["mttr"][0] <= 7200.0
              and values["asa_p90"][0] <= 120.0)
        return "platinum" if ok else "standard"

    got = forecast(mtd, models, 0.3, band_of, draws=2000, seed=3)
    assert got.current == "platinum" and got.likely == "platinum"
    assert got.probabilities.get("platinum", 0.0) > 0.99
    assert math.isclose(sum(got.probabilities.values()), 1.0)


# --- analytic answers ----------------------------------------------------------------------------

THRESHOLD = 0.1517
"""Escalation-rate threshold of :func:`_esc_band`: no month-end rate (a ratio of integers below
10,000) equals it, so float rounding cannot decide a draw."""


def _p_gold_fixed(ones: int, n: int, m: int, prior: tuple[float, float] = (0.5, 0.5)) -> float:
    """P(month-end rate <= THRESHOLD) with m more trials: the Beta(ones + a, n - ones + b) posterior
    (Jeffreys: a = b = 1/2) makes the remaining 1s beta-binomial."""
    most = math.floor(THRESHOLD * (n + m)) - ones  # the most remaining 1s that stay at/below it
    if most < 0:
        return 0.0
    return float(stats.betabinom.cdf(most, m, ones + prior[0], n - ones + prior[1]))


@pytest.mark.parametrize("prior", [None, (3.0, 17.0)], ids=["jeffreys", "fleet-prior"])
def test_a_ratio_with_a_known_remaining_volume_matches_the_beta_binomial(
        prior: tuple[float, float] | None) -> None:
    ones, n, m, draws = 14, 100, 100, 20_000
    want = _p_gold_fixed(ones, n, m, prior or (0.5, 0.5))
    model = KpiModel("ratio", miss_value=1.0, prior=prior)
    got = forecast({"esc": _ratio(ones, n)}, {"esc": model}, 0.5, _esc_band, draws=draws, seed=11,
                   remaining={"esc": m})
    assert 0.2 < want < 0.8  # a case that discriminates
    assert abs(got.probabilities.get("gold", 0.0) - want) < _mc_tolerance(want, draws)
    assert got.current == "gold"


MIN_SAMPLES = 90


def _counted_band(values: Mapping[str, tuple[float, int]]) -> str | None:
    """:func:`_esc_band`, but no band below MIN_SAMPLES (the report card's min_samples rule)."""
    got = values.get("esc")
    if got is None or got[1] < MIN_SAMPLES:
        return None
    return _esc_band(values)


def test_a_ratio_with_a_drawn_remaining_volume_matches_the_negative_binomial_mixture() -> None:
    """The remaining volume after ``n`` samples in ``elapsed`` of the month: Poisson of a rate with
    the Gamma(n, elapsed) posterior, i.e. negative binomial NB(n, elapsed). With a min-samples rule
    the volume itself decides whether there is a band; a Poisson volume (the rate taken as known)
    would give the 90 samples about half the chance."""
    ones, n, elapsed, draws = 3, 20, 0.25, 20_000
    ms = np.arange(0, 3000)
    weights = stats.nbinom.pmf(ms, n, elapsed)
    assert weights.sum() > 1 - 1e-9
    counted = n + ms >= MIN_SAMPLES
    gold = np.array([_p_gold_fixed(ones, n, int(m)) for m in ms])
    want = {"gold": float((weights * counted * gold).sum()),
            "watch": float((weights * counted * (1 - gold)).sum()),
            NO_BAND: float((weights * ~counted).sum())}
    got = forecast({"esc": _ratio(ones, n)}, {"esc": RATIO}, elapsed, _counted_band, draws=draws,
                   seed=5)
    assert got.current is None
    for band, p in want.items():
        assert 0.05 < p < 0.95, band  # each outcome discriminates
        assert abs(got.probabilities.get(band, 0.0) - p) < _mc_tolerance(p, draws), band


@pytest.mark.parametrize("n", [6, 40])
def test_a_mean_matches_the_student_t_predictive(n: int) -> None:
    """Normal samples, Jeffreys prior: the mean of m future samples is mean + s sqrt(1/n + 1/m) t(n-1),
    so P(month-end mean <= T) is a t tail. The target is put 1.4 predictive sds above the mean, where
    with 6 samples the t tail (0.89) is far from the normal one (0.92): a spread taken as known
    would be overconfident."""
    rng = np.random.default_rng(21)
    values = rng.normal(7000.0, 2500.0, size=n)
    m, draws = 40, 20_000
    mean, sd = float(values.mean()), float(values.std(ddof=1))
    future_mean_cut = mean + 1.4 * sd * math.sqrt(1 / n + 1 / m)
    target = (n * mean + m * future_mean_cut) / (n + m)
    want = float(stats.t.cdf(1.4, n - 1))

    def band_of(v: Mapping[str, tuple[float, int]]) -> str | None:
        return "gold" if v["mttr"][0] <= target else "watch"

    got = forecast({"mttr": _mean(values)}, {"mttr": KpiModel("mean")}, 0.5, band_of, draws=draws,
                   seed=2, remaining={"mttr": m})
    assert 0.8 < want < 0.95
    assert abs(got.probabilities.get("gold", 0.0) - want) < _mc_tolerance(want, draws)


def test_a_quantile_matches_the_dirichlet_aggregate_at_every_bucket() -> None:
    """The month-end p90 is at or below bucket j exactly when the samples at or below it (month to
    date C_j, remaining Y_j) reach the rank; Y_j is beta-binomial(m, C_j, n - C_j) because the
    remaining samples are Dirichlet-multinomial over the buckets. Checked at every bucket of a
    spread-out histogram (each band_of threshold a bucket's value), so the whole distribution is."""
    rng = np.random.default_rng(4)
    raw = rng.lognormal(math.log(60.0), 0.7, size=300)
    hist: dict[int, int] = {}
    for x in raw:
        sketch.bump_hist(hist, sketch.key_of(float(x)), 1)
    agg = MonthToDate(len(raw), float(raw.sum()), float((raw * raw).sum()), hist)
    n, m, q, draws = len(raw), 250, 0.9, 20_000
    rank = math.ceil(q * (n + m))
    keys = sorted(hist)
    below = np.cumsum([hist[k] for k in keys])
    checked = 0
    for j, key in enumerate(keys):
        c = int(below[j])
        # P(c + Y >= rank), certain once every month-to-date sample is at or below the bucket
        want = 1.0 if c == n else float(stats.betabinom.sf(rank - c - 1, m, c, n - c))
        if not 0.01 < want < 0.99:
            continue
        cut = sketch.value_of(key)

        def band_of(v: Mapping[str, tuple[float, int]], cut: float = cut) -> str | None:
            return "gold" if v["p90"][0] <= cut else "watch"

        got = forecast({"p90": agg}, {"p90": KpiModel("quantile", quantile=q)}, 0.5, band_of,
                       draws=draws, seed=j, remaining={"p90": m})
        assert abs(got.probabilities.get("gold", 0.0) - want) < _mc_tolerance(want, draws), key
        checked += 1
    assert checked >= 5  # the quantile's neighbourhood spans several buckets


# --- slack ---------------------------------------------------------------------------------------

ORDER = ("gold", "standard", "watch")


def _tiered(values: Mapping[str, tuple[float, int]]) -> str | None:
    """gold up to an escalation rate of 0.10, standard up to 0.15, watch above."""
    rate = values["esc"][0]
    return "gold" if rate <= 0.10 else "standard" if rate <= 0.15 else "watch"


@pytest.mark.parametrize(("ones", "n"), [(10, 100), (37, 412), (120, 900)])
def test_slack_of_a_ratio_is_the_fewest_misses_past_the_next_threshold(ones: int, n: int) -> None:
    rate = ones / n
    limit = 10 if rate <= 0.10 else 15  # the current band's upper threshold, in percent
    # smallest k with (ones + k) / (n + k) > limit / 100, i.e. 100 (ones + k) > limit (n + k)
    want = (limit * n - 100 * ones) // (100 - limit) + 1
    got = slack({"esc": _ratio(ones, n)}, {"esc": RATIO}, _tiered, "esc", ORDER)
    assert got.misses == want
    assert got.current == ("gold" if rate <= 0.10 else "standard")


def test_slack_of_a_mean_and_of_a_quantile() -> None:
    # mean 100 s over 50 samples, a band lost above 120 s, a miss is 300 s:
    # (5000 + 300 k) / (50 + k) > 120  <=>  180 k > 1000
    want_mean = 1000 // 180 + 1
    # p90 of 95 samples at 100 s and 5 at 5000 s; a miss is 5000 s: the p90 is a 5000 s sample once
    # the rank ceil(0.9 (100 + k)) passes the 95 fast ones
    want_p90 = next(k for k in range(1, 1000) if -(-9 * (100 + k) // 10) > 95)
    mtd = {"mttr": MonthToDate(50, 5000.0, 50 * 100.0**2), "p90": _hist({100.0: 95, 5000.0: 5})}
    models = {"mttr": KpiModel("mean", miss_value=300.0),
              "p90": KpiModel("quantile", quantile=0.9, miss_value=5000.0)}

    def band_of(v: Mapping[str, tuple[float, int]]) -> str | None:
        return "gold" if v["mttr"][0] <= 120.0 and v["p90"][0] <= 1000.0 else "watch"

    assert slack(mtd, models, band_of, "mttr", ("gold", "watch")).misses == want_mean
    assert slack(mtd, models, band_of, "p90", ("gold", "watch")).misses == want_p90


def test_slack_is_none_when_no_misses_up_to_the_cap_drop_the_band() -> None:
    mtd = {"esc": _ratio(5, 100)}
    good_miss = {"esc": KpiModel("ratio", miss_value=0.0)}  # "misses" that only lower the rate
    assert slack(mtd, good_miss, _tiered, "esc", ORDER).misses is None
    # 5/100 -> above 0.10 after 6 misses: a cap of 5 cannot reach it, a cap of 6 can
    assert slack(mtd, {"esc": RATIO}, _tiered, "esc", ORDER, cap=5).misses is None
    assert slack(mtd, {"esc": RATIO}, _tiered, "esc", ORDER, cap=6).misses == 6


# --- calibration over simulated months -----------------------------------------------------------

DAYS = 30
MID = 15
CAP = 1.2
BANDS = (("platinum", 1.10), ("gold", 1.00), ("standard", 0.90), ("watch", 0.75), ("remedy", 0.0))
KPIS = {"esc": (0.15, "lower", 1.0), "fcr": (0.75, "higher", 1.0), "mttr": (7200.0, "lower", 2.0)}
"""KPI id -> (target, better, weight in the score)."""
CAL_MODELS = {"esc": RATIO, "fcr": KpiModel("ratio", miss_value=0.0), "mttr": KpiModel("mean")}
PARTNERS = 1200
CAL_DRAWS = 400


def _score_band(values: Mapping[str, tuple[float, int]]) -> str | None:
    """The report card's rule in small: weighted mean of capped attainments, the best band reached."""
    total = weights = 0.0
    for kpi, (value, _) in values.items():
        target, better, weight = KPIS[kpi]
        if better == "lower":
            att = 10.0 if value <= 0 else min(10.0, target / value)
        else:
            att = min(10.0, value / target)
        total += weight * min(att, CAP)
        weights += weight
    if weights == 0:
        return None
    score = total / weights
    return next(band for band, least in BANDS if score >= least)


def _month(seed: int) -> tuple[dict[str, MonthToDate], dict[str, MonthToDate]]:
    """One partner-month: (aggregates at the end of day 15, at the end of day 30). True escalation
    rate, first-contact resolution and mean repair time are drawn around their targets (so partners
    straddle the thresholds); tickets a day Poisson; repair times lognormal."""
    rng = np.random.default_rng([20, seed])
    esc, fcr = rng.uniform(0.11, 0.20), rng.uniform(0.62, 0.88)
    mttr, sigma = rng.uniform(5500.0, 9500.0), 0.9
    daily = rng.poisson(rng.uniform(5.0, 30.0), size=DAYS)
    halves = []
    for tickets in (int(daily[:MID].sum()), int(daily[MID:].sum())):
        durations = rng.lognormal(math.log(mttr) - sigma * sigma / 2, sigma, size=tickets)
        halves.append((tickets, int(rng.binomial(tickets, esc)), int(rng.binomial(tickets, fcr)),
                       float(durations.sum()), float((durations * durations).sum())))

    def aggs(parts: list[tuple[int, int, int, float, float]]) -> dict[str, MonthToDate]:
        n = sum(p[0] for p in parts)
        e, f = sum(p[1] for p in parts), sum(p[2] for p in parts)
        return {"esc": _ratio(e, n), "fcr": _ratio(f, n),
                "mttr": MonthToDate(n, sum(p[3] for p in parts), sum(p[4] for p in parts))}

    return aggs(halves[:1]), aggs(halves)


def _final_band(month: dict[str, MonthToDate]) -> str | None:
    return _score_band({k: (a.total / a.samples, a.samples) for k, a in month.items() if a.samples})


def test_forecasts_are_calibrated_over_simulated_months() -> None:
    band_ids = [band for band, _ in BANDS]
    brier = naive = 0.0
    bucket_hits: dict[int, list[int]] = {}
    bucket_probs: dict[int, list[float]] = {}
    in_70_90: list[int] = []
    changed = 0
    for seed in range(PARTNERS):
        mid, end = _month(seed)
        got = forecast(mid, CAL_MODELS, MID / DAYS, _score_band, draws=CAL_DRAWS, seed=seed)
        realised = _final_band(end)
        assert realised is not None and got.current is not None
        changed += realised != got.current
        for band in band_ids:
            p = got.probabilities.get(band, 0.0)
            hit = int(band == realised)
            brier += (p - hit) ** 2
            naive += (float(band == got.current) - hit) ** 2
            if p > 0.0:
                decile = min(int(p * 10), 9)
                bucket_hits.setdefault(decile, []).append(hit)
                bucket_probs.setdefault(decile, []).append(p)
            if 0.7 <= p < 0.9:
                in_70_90.append(hit)
    assert len(in_70_90) >= 100, "too few forecasts at 70-90% to judge"
    brier, naive = brier / PARTNERS, naive / PARTNERS
    landed = sum(in_70_90) / len(in_70_90)
    print(f"\n{PARTNERS} partner-months, {CAL_DRAWS} draws each; band changed after mid-month in "
          f"{changed / PARTNERS:.1%}")
    print(f"of partners forecast at ~80% (70-90%) for a band, {landed:.1%} landed in it "
          f"({len(in_70_90)} forecasts)")
    print(f"Brier: forecast {brier:.4f}, current band stays {naive:.4f}")
    for decile in sorted(bucket_hits):
        hits, probs = bucket_hits[decile], bucket_probs[decile]
        print(f"  forecast {decile / 10:.1f}-{(decile + 1) / 10:.1f}: mean {np.mean(probs):.3f}, "
              f"landed {np.mean(hits):.3f} ({len(hits)})")
    assert 0.65 <= landed <= 0.95
    # all confident forecasts (50% or more) pooled: landed as often as forecast, less 3 standard
    # errors and a point for the forecast's known lean (a partner's own month cannot tell a lucky
    # start from a good partner: the module's docstring)
    probs = np.array([p for d in range(5, 10) for p in bucket_probs.get(d, [])])
    hits = np.array([h for d in range(5, 10) for h in bucket_hits.get(d, [])])
    lean = float(hits.mean() - probs.mean())
    print(f"forecasts at 50% or more: landed - forecast = {lean:+.3f} ({len(probs)} forecasts)")
    assert lean > -(3 * math.sqrt(float((probs * (1 - probs)).sum())) / len(probs) + 0.01)
    assert brier < naive
    assert changed > PARTNERS * 0.1  # the months move: the comparison with "stays" means something


# --- input checks --------------------------------------------------------------------------------


@pytest.mark.parametrize(("mtd", "models", "elapsed"), [
    ({"esc": _ratio(5, 100)}, {"esc": RATIO}, 0.0),
    ({"esc": _ratio(5, 100)}, {}, 0.5),
    ({"esc": MonthToDate(100, -3.0, 3.0)}, {"esc": RATIO}, 0.5),
    ({"p90": MonthToDate(10, 1.0, 1.0)}, {"p90": KpiModel("quantile", quantile=0.9)}, 0.5),
], ids=["no-time-elapsed", "no-model", "ratio-below-zero", "quantile-without-histogram"])
def test_forecast_rejects_what_it_cannot_draw(mtd: dict[str, MonthToDate], models: dict[str, KpiModel],
                                              elapsed: float) -> None:
    with pytest.raises(ValueError):
        forecast(mtd, models, elapsed, _esc_band)


def test_a_ratio_with_more_ones_than_samples_is_forecast_not_refused() -> None:
    """A distinct ratio counts each side at its own event: a month can hold a ticket reopened in
    it and resolved the month before (a 1 without its sample). 2 reopenings over 1 resolution at
    mid-month: the month ends above 1 whatever comes (each new sample is at most one more 1 and
    one more sample), so always in the worse band; the forecast says so instead of raising (it
    raised inside /metrics, answering 500)."""
    got = forecast({"esc": MonthToDate(1, 2.0, 2.0)}, {"esc": RATIO}, 0.5, _esc_band,
                   order=("gold", "watch"))
    assert got.probabilities == {"watch": 1.0}


def test_models_and_slack_reject_what_they_cannot_mean() -> None:
    with pytest.raises(ValueError):
        KpiModel("median")
    with pytest.raises(ValueError):
        KpiModel("quantile")
    with pytest.raises(ValueError):
        KpiModel("mean", quantile=0.5)
    with pytest.raises(ValueError):  # a Beta prior is for a ratio's rate
        KpiModel("mean", prior=(1.0, 1.0))
    with pytest.raises(ValueError):  # and needs positive pseudo-counts
        KpiModel("ratio", prior=(0.0, 4.0))
    with pytest.raises(ValueError):  # slack needs to know what a miss is
        slack({"esc": _ratio(5, 100)}, {"esc": KpiModel("ratio")}, _tiered, "esc", ORDER)
    with pytest.raises(ValueError):  # a band the order does not know
        slack({"esc": _ratio(5, 100)}, {"esc": RATIO}, _tiered, "esc", ("platinum",))
