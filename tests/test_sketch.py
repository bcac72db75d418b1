"""The log-histogram's nearest-rank reads against the samples themselves, listed and sorted."""

from __future__ import annotations

import math
import random

import pytest

from streams.engine import sketch


def _samples(hist: dict[int, int]) -> list[int]:
    """Every sample's key, smallest first (a count of 0 is no sample)."""
    return sorted(key for key, count in hist.items() for _ in range(max(count, 0)))


def _hists(seed: int) -> list[dict[int, int]]:
    """Histograms as windows hold them: keys in arrival order, not sorted, some emptied to 0
    by retraction, the sketch's zero key now and then."""
    rng = random.Random(seed)
    out = []
    for _ in range(60):
        hist = {rng.randint(-40, 900): rng.randint(0, 4) for _ in range(rng.randint(1, 400))}
        if rng.random() < 0.3:
            hist[sketch.ZERO_KEY] = rng.randint(1, 3)
        if any(hist.values()):
            out.append(hist)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_quantile_of_is_the_nearest_rank_sample(seed: int) -> None:
    for hist in _hists(seed):
        samples = _samples(hist)
        n = len(samples)
        # every q on both sides of the middle (the walk goes up or down from there), and the
        # q landing exactly on each rank
        for q in (0.0, 0.01, 0.25, 0.5, 0.5 + 1e-9, 0.75, 0.9, 0.95, 0.99, 1.0,
                  *(r / n for r in range(1, n + 1, max(1, n // 7)))):
            rank = max(1, math.ceil(q * n - 1e-9))
            assert sketch.quantile_of(hist, q) == sketch.value_of(samples[rank - 1]), (q, n)


@pytest.mark.parametrize("seed", range(5))
def test_at_rank_reads_every_rank(seed: int) -> None:
    for hist in _hists(seed):
        samples = _samples(hist)
        keys, running = sketch.ranked(hist)
        assert running[-1] == len(samples)
        for rank in range(1, len(samples) + 1):
            assert sketch.at_rank(keys, running, rank) == sketch.value_of(samples[rank - 1])


def test_an_empty_histogram_has_no_quantile() -> None:
    assert sketch.quantile_of({}, 0.9) is None
    assert sketch.quantile_of({3: 0, 5: 0}, 0.9) is None
    assert sketch.ranked({3: 0}) == ([], [])
