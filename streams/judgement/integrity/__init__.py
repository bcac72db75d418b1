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

from streams.config.integrity import SIGNALS
from streams.judgement.integrity.bunching import bunching_bins, deadline_bunching
from streams.judgement.integrity.findings import (
    BUNCHING_K,
    DEFAULT_PARAMS,
    SCORE_CAP,
    Buckets,
    Finding,
    IntegrityParams,
    merge_periods,
    score_of,
)
from streams.judgement.integrity.hugging import (
    Feedback,
    dispersion_lower_p,
    dispersion_null_moments,
    feedback_test,
    fisher_pair,
    threshold_hugging,
)
from streams.judgement.integrity.reporting import under_reporting

__all__ = [
    "BUNCHING_K",
    "DEFAULT_PARAMS",
    "SCORE_CAP",
    "SIGNALS",
    "Buckets",
    "Feedback",
    "Finding",
    "IntegrityParams",
    "bunching_bins",
    "deadline_bunching",
    "dispersion_lower_p",
    "dispersion_null_moments",
    "feedback_test",
    "fisher_pair",
    "merge_periods",
    "score_of",
    "threshold_hugging",
    "under_reporting",
]
