"""Counts of duration samples in narrow bins around each partner's target, per day.

The integrity lens's deadline-bunching test (:mod:`streams.judgement.integrity`) compares the
density just inside a duration target with the density just past it. Window buckets keep only
sums, so the engine keeps this one extra shape for the duration KPIs that watch for bunching:
per partner x KPI x UTC day, the samples in ``2 * BUNCHING_EACH_SIDE`` bins of
``BUNCHING_WIDTH x target`` on either side of the partner's target. Samples outside the bins are
not counted here. Days older than the longest window are dropped with its buckets.
"""

from __future__ import annotations

import array
import math
from collections.abc import Sequence
from typing import Final

from streams.config.catalog import Kpi, Partners
from streams.config.integrity import BUNCHING_EACH_SIDE, BUNCHING_WIDTH, DEADLINE_BUNCHING
from streams.engine.model import PartnerState

DAY_MS: Final = 86_400_000
BINS: Final = 2 * BUNCHING_EACH_SIDE


def bin_of(value: float, target: float, lower_is_better: bool = True) -> int | None:
    """The bin of a duration ``value`` (base units) around ``target``, None outside them.

    Positions are relative to the target, ``r = (value - target) / (width x target)``, so the
    target itself is exact in floating point. For a lower-is-better duration the bins are closed
    on the right: a value exactly at the target met it and counts just inside (bin
    ``BUNCHING_EACH_SIDE - 1``); for higher-is-better, closed on the left. The same convention
    as :func:`streams.judgement.integrity.bunching_bins`, which the tests hold it to."""
    if target <= 0:
        return None
    r = (value - target) / (BUNCHING_WIDTH * target)
    i = math.ceil(r) + BUNCHING_EACH_SIDE - 1 if lower_is_better else math.floor(r) + BUNCHING_EACH_SIDE
    return i if 0 <= i < BINS else None


class TargetBins:
    """The per-day bin counts of every partner (``PartnerState.bins``)."""

    def __init__(self, kpis: Sequence[Kpi], partners: Partners, scale: Sequence[int],
                 keep_ms: int) -> None:
        self._kpis = kpis
        self._partners = partners
        self._scale = scale
        self.watched: frozenset[int] = frozenset(
            k for k, kpi in enumerate(kpis) if DEADLINE_BUNCHING in kpi.integrity)
        """KPI indices whose samples are binned."""
        self._keep_days = -(-keep_ms // DAY_MS)
        self._lower = [kpi.lower_is_better for kpi in kpis]

    def fill(self, st: PartnerState, partner: str) -> None:
        """Give a new partner state its targets (the bins are relative to them)."""
        st.bin_targets = {k: float(self._partners.target(partner, self._kpis[k]))
                          for k in self.watched}

    def add(self, st: PartnerState, k: int, ts: int, s: float, sign: int) -> None:
        """Count (sign 1) or retract (sign -1) a sample of internal value ``s`` at ``ts``."""
        i = bin_of(abs(s) / self._scale[k], st.bin_targets[k], self._lower[k])
        if i is None:
            return
        days = st.bins.get(k)
        if days is None:
            days = st.bins[k] = {}
        day = ts // DAY_MS
        counts = days.get(day)
        if counts is None:
            counts = days[day] = array.array("i", bytes(4 * BINS))
        counts[i] += sign

    def counts(self, st: PartnerState, k: int, now_ms: int, span_ms: int) -> list[int]:
        """The bin counts summed over the days overlapping ``(now - span, now]`` (whole days: the
        bins are kept per day)."""
        total = [0] * BINS
        first, last = (now_ms - span_ms) // DAY_MS, now_ms // DAY_MS
        for day, counts in st.bins.get(k, {}).items():
            if first <= day <= last:
                for i, c in enumerate(counts):
                    total[i] += c
        return total

    def evict(self, st: PartnerState, now_ms: int) -> None:
        """Drop the days older than the longest window."""
        floor = now_ms // DAY_MS - self._keep_days
        for days in st.bins.values():
            for day in [d for d in days if d < floor]:
                del days[day]
