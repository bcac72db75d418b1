"""Log-bucketed histogram for percentile KPIs.

A value ``x > 0`` goes to bucket ``ceil(log_gamma(x))`` with
``gamma = (1 + a) / (1 - a)``; every value in a bucket is within relative error
``a`` of the bucket's representative (the DDSketch construction). Buckets are
plain ``dict[int, int]`` so they merge by addition, subtract for retraction and
serialise compactly into the changelog.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from itertools import accumulate
from typing import Final

RELATIVE_ACCURACY: Final = 0.005
"""Half a percent: percentile KPIs must be within 1% of the exact value."""

_GAMMA: Final = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA: Final = math.log(_GAMMA)
_MIN_VALUE: Final = 1e-3  # below a millisecond counts as zero
ZERO_KEY: Final = -(2**31)


def key_of(value: float) -> int:
    """Bucket key of a non-negative value."""
    if value < _MIN_VALUE:
        return ZERO_KEY
    return math.ceil(math.log(value) / _LOG_GAMMA)


def bump_hist(hist: dict[int, int], key: int, sign: int) -> None:
    """Add (sign 1) or retract (-1) one sample of key ``key``; a count of 0 is removed."""
    count = hist.get(key, 0) + sign
    if count:
        hist[key] = count
    else:
        hist.pop(key, None)


def value_of(key: int) -> float:
    """Representative value of a bucket: within RELATIVE_ACCURACY of every member."""
    if key == ZERO_KEY:
        return 0.0
    return 2.0 * _GAMMA**key / (_GAMMA + 1.0)


def merge(buckets: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """Sum histograms; empty buckets are dropped."""
    merged: dict[int, int] = {}
    for hist in buckets:
        if not merged:
            merged = dict(hist)
            continue
        get = merged.get
        for key, count in hist.items():
            merged[key] = get(key, 0) + count
    if all(merged.values()):
        return merged
    return {k: c for k, c in merged.items() if c}


def quantile(buckets: Iterable[Mapping[int, int]], q: float) -> float | None:
    """Nearest-rank quantile over merged histograms (``None`` when empty).

    Nearest rank: the smallest value with at least ``ceil(q * n)`` samples at or below it.
    """
    return quantile_of(merge(buckets), q)


def quantile_of(merged: Mapping[int, int], q: float) -> float | None:
    """:func:`quantile` of one histogram already merged (counts of 0 or below are skipped)."""
    counts = merged.values()
    total = sum(counts) if min(counts, default=0) > 0 else sum(c for c in counts if c > 0)
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total - 1e-9))
    if 2 * rank <= total:
        seen = 0
        for key in sorted(merged):
            count = merged[key]
            if count > 0:
                seen += count
                if seen >= rank:
                    return value_of(key)
    # Walked from the top: a window's histogram holds hundreds of keys and the KPIs' quantiles
    # are p90 and p95, so a walk from the bottom visits nine tenths of them. The answer is the
    # smallest key with at least ``rank`` samples at or below it: the last key, going down,
    # with at most ``total - rank`` samples above it.
    limit = total - rank
    above = 0
    found = 0
    for key in sorted(merged, reverse=True):
        if above > limit:
            break
        count = merged[key]
        if count > 0:
            found = key
            above += count
    return value_of(found)


def ranked(hist: Mapping[int, int]) -> tuple[list[int], list[int]]:
    """The keys with a positive count in ascending order, and the running total of their
    counts: the samples at or below each key (what rank bounds read; see :func:`at_rank`)."""
    if min(hist.values(), default=0) > 0:
        keys = sorted(hist)
    else:
        keys = sorted(key for key, count in hist.items() if count > 0)
    return keys, list(accumulate(map(hist.__getitem__, keys)))


def at_rank(keys: list[int], running: list[int], rank: int) -> float:
    """The value of the ``rank``-th smallest sample (1-based, at most the total) of a
    histogram as :func:`ranked` gives it."""
    return value_of(keys[bisect_left(running, rank)])
