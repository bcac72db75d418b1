"""Log-bucketed histogram for percentile KPIs.

A value ``x > 0`` goes to bucket ``ceil(log_gamma(x))`` with
``gamma = (1 + a) / (1 - a)``; every value in a bucket is within relative error
``a`` of the bucket's representative (the DDSketch construction). Buckets are
plain ``dict[int, int]`` so they merge by addition, subtract for retraction and
serialise compactly into the changelog.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
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
    """:func:`quantile` of one histogram already merged (no zero counts)."""
    counts = merged.values()
    total = sum(counts) if min(counts, default=0) > 0 else sum(c for c in counts if c > 0)
    if total <= 0:
        return None
    rank = max(1, math.ceil(q * total - 1e-9))
    seen = 0
    for key in sorted(merged):
        seen += merged[key]
        if seen >= rank:
            return value_of(key)
    return value_of(max(merged))
