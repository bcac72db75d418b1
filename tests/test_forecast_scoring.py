"""A forecast scores its drawn months all at once (``report._draw_bands``): every draw must get
the band the report card's own rule (``report._score``, one month at a time) gives it.

Random scoring terms (targets either side of 0 and 1, weights, a floor or none) and random draws
with the edges the rule turns on: no samples, fewer than a KPI's minimum, ratios at exactly 0
and 1 (the implausibility check), values at and below 0, KPIs absent from the draws.
"""

from __future__ import annotations

import dataclasses
import random

import numpy as np
import pytest

from streams.config.catalog import load_config
from streams.engine.model import attainment, attainments
from streams.judgement.forecast import Draws
from streams.outputs import report


def _terms(rng: random.Random) -> report._Terms:
    catalog, partners = load_config()
    month = 24_300
    terms = report._terms(catalog, partners, next(iter(partners.partner_tier)), month)
    policy = terms.policy
    if rng.random() < 0.5:
        policy = dataclasses.replace(policy, floor=rng.choice([0.5, 0.8, 1.0]),
                                     floor_band=rng.choice([b.id for b in policy.bands]))
    policy = dataclasses.replace(policy, attainment_cap=rng.choice([1.0, 1.2, 2.0]))
    kpis = []
    for kpi in catalog.kpis:
        if rng.random() < 0.15:
            continue  # weight 0: not in the terms
        target = rng.choice([0.0, 0.05, 0.15, 0.5, 0.95, 1.0, 3.0, 120.0, 7200.0])
        kpis.append((kpi, rng.choice([0.5, 1.0, 2.0, 3.0]), target))
    return report._Terms(policy, tuple(kpis))


def _draws(terms: report._Terms, rng: random.Random, draws: int) -> Draws:
    gen = np.random.default_rng(rng.randrange(2**32))
    out: Draws = {}
    for kpi, _, target in terms.kpis:
        if rng.random() < 0.1:
            continue  # no samples this month: absent from every draw
        samples = gen.choice([0, 1, 2, kpi.min_samples - 1, kpi.min_samples, 7, 40, 400],
                             size=draws).astype(np.int64)
        if kpi.stat_kind == "ratio":
            values = gen.choice([0.0, 1.0, 0.5, 0.01, 0.99, target], size=draws)
            values = np.where(gen.random(draws) < 0.5, gen.random(draws), values)
        else:
            values = gen.choice([0.0, -1.0, 1e-6, target, 2 * target + 1], size=draws)
            values = np.where(gen.random(draws) < 0.5, gen.lognormal(3, 2, draws), values)
        out[kpi.id] = (values.astype(np.float64), samples)
    return out


def _one_by_one(terms: report._Terms, drawn: Draws, draws: int, flagged: bool) -> list[str | None]:
    bands: list[str | None] = []
    for i in range(draws):
        month = {kpi: (float(values[i]), int(samples[i]))
                 for kpi, (values, samples) in drawn.items()}
        band = terms.policy.withhold(report._score(terms, month)[1], flagged)
        bands.append(band.id if band is not None else None)
    return bands


@pytest.mark.parametrize("seed", range(40))
def test_every_draw_gets_the_band_the_card_gives_that_month(seed: int) -> None:
    rng = random.Random(seed)
    terms = _terms(rng)
    draws = 300
    drawn = _draws(terms, rng, draws)
    flagged = rng.random() < 0.3
    want = _one_by_one(terms, drawn, draws, flagged)
    assert report._draw_bands(terms, drawn, draws, flagged) == want
    assert len(set(want)) > 1 or seed % 2  # the cases are not all one band


def test_attainment_of_an_array_is_attainment_of_each_value() -> None:
    catalog, _ = load_config()
    rng = np.random.default_rng(4)
    values = np.concatenate([[0.0, -0.0, -3.0, 1e-300, 1e300, 0.1, 10.0],
                             rng.lognormal(0, 3, 500), -rng.random(20)])
    for kpi in catalog.kpis[:6] + catalog.kpis[-6:]:
        for target in (0.0, -1.0, 1e-9, 0.15, 1.0, 7200.0):
            got = attainments(kpi, values, target).tolist()
            assert got == [attainment(kpi, float(v), target) for v in values], (kpi.id, target)
