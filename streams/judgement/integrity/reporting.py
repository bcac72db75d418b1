"""Under-reporting: numerator events that stop being logged (see the package docstring)."""

from __future__ import annotations

import math

from scipy import special

from streams.judgement.integrity.findings import (
    DEFAULT_PARAMS,
    Buckets,
    Finding,
    IntegrityParams,
    _as_buckets,
    _check_better,
    score_of,
)

# --- under-reporting -------------------------------------------------------------------------------


def under_reporting(
    buckets: Buckets, better: str = "lower", params: IntegrityParams = DEFAULT_PARAMS
) -> Finding | None:
    """Have the numerator events (escalations) started to vanish? ``None`` below the minimum volume.

    The buckets (oldest first) split in time: the last ``round(recent_share * len)`` buckets are
    recent, the rest baseline. Conditional on the total count of the events that count against
    the partner, the recent count is ``Binomial(total, recent share of the denominator)`` when
    the rate is unchanged; the p-value is its lower tail at the observed recent count. Flagged
    when it is below ``alpha`` and the recent rate is below ``min_ratio_drop`` times the
    baseline's. For ``better="lower"`` (escalation rate) those events are the numerator; for
    ``"higher"`` (a resolution rate) they are the complement ``n - x`` (unlogged failures push a
    higher-is-better rate up). ``None`` unless the recent part holds at least
    ``min_under_reporting_samples`` tickets and the baseline at least as many.
    """
    _check_better(better)
    n, x = _as_buckets(buckets)
    if better == "higher":
        x = n - x
    recent_len = max(1, round(params.recent_share * len(n)))
    if len(n) < 2 or recent_len >= len(n):
        return None
    n_r, x_r = float(n[-recent_len:].sum()), float(x[-recent_len:].sum())
    n_b, x_b = float(n[:-recent_len].sum()), float(x[:-recent_len].sum())
    minimum = params.min_under_reporting_samples
    if n_r < minimum or n_b < minimum:
        return None
    samples = round(n_r + n_b)
    total = round(x_r + x_b)
    share = n_r / (n_r + n_b)
    # bdtr(k, n, p) = P(X <= k): the exact binomial lower tail
    p = float(special.bdtr(round(x_r), total, share)) if total > 0 else 1.0
    rate_r, rate_b = x_r / n_r, x_b / n_b
    ratio = rate_r / rate_b if rate_b > 0.0 else math.nan
    flagged = rate_b > 0.0 and p < params.alpha and ratio < params.min_ratio_drop
    what = "misses" if better == "higher" else "events"
    verdict = "they are vanishing" if flagged else "no sign of vanishing"
    detail = (
        f"{what} in {rate_r:.1%} of the latest {round(n_r)} tickets against {rate_b:.1%} of the "
        f"{round(n_b)} before ({f'{ratio:.2f}x' if rate_b > 0.0 else 'none before'}, p={p:.2g}): {verdict}"
    )
    return Finding("under_reporting", flagged, score_of(p), p, samples, 2, ratio, detail)
