"""The year and quarter card: the period's values equal the samples of its months together,
computed here from the events; each month's cells and band equal the monthly card's, computed
here from first principles; the programme rows count them; the four renderings carry them."""

from __future__ import annotations

import csv
import io
import math
import re

import numpy as np
import orjson
import pytest

from streams.config.catalog import load_config
from streams.engine.core import Engine
from streams.judgement.watch import Watch
from streams.outputs.period import build_period, fetch_period, period_months, period_state, trend
from streams.outputs.period_render import (
    PERIOD_CSV_COLUMNS,
    render_period_csv,
    render_period_html,
    render_period_json,
    render_period_table,
)
from tests import reference
from tests.streams_gen import DAY, random_events
from tests.test_engine import _feed
from tests.test_report import _expected_card, _policy

T0 = 1_782_345_600_000  # 2026-06-25 00:00 UTC
PARTNERS = ["acme", "bluefiber", "northwind-telecom", "vertex-outsourcing"]
Q3 = ["2026-07", "2026-08", "2026-09"]


def test_period_names() -> None:
    assert period_months("2026") == ("2026", [f"2026-{m:02d}" for m in range(1, 13)])
    assert period_months("2026-Q3") == ("2026-Q3", Q3)
    assert period_months("2025-Q1")[1] == ["2025-01", "2025-02", "2025-03"]
    for bad in ("26", "2026-Q5", "2026-10", "Q3-2026", ""):
        with pytest.raises(ValueError, match="not a"):
            period_months(bad)


@pytest.mark.parametrize("seed", range(20))
def test_trend_is_the_sign_of_the_least_squares_slope(seed: int) -> None:
    rng = np.random.default_rng(seed)
    points = [None if rng.random() < 0.2 else float(rng.normal(1, 0.1) + 0.02 * i * rng.choice(
        [-1, 1])) for i in range(12)]
    xy = [(i, y) for i, y in enumerate(points) if y is not None]
    slope = np.polyfit([x for x, _ in xy], [y for _, y in xy], 1)[0]
    want = "up" if slope >= 0.01 else "down" if slope <= -0.01 else ""
    assert trend(points) == want
    assert trend([1.0, None, 2.0]) == ""  # fewer than three measured months: no mark


def test_quarter_card_equals_its_months_recomputed_from_the_events() -> None:
    """Events over 2026-06-25 .. 2026-10-05 through the engine, served as a worker serves them,
    fetched and built into the Q3 card; every value against the reference."""
    events = random_events(5, PARTNERS, T0, 102 * DAY, n_tickets=150, n_calls=220)
    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="event")
    _feed(engine, events)
    watch = Watch(engine)
    state = period_state(engine, engine.partner_ids(), Q3, watch.lens.raised_in)
    body = orjson.dumps({**state, "ready": True, "partitions": 1, "owned_partitions": [0]})
    fetched = fetch_period(["http://w"], "2026-Q3", 1, lambda _: body)
    card = build_period(catalog, partners, "2026-Q3", Q3, fetched.values, fetched.totals,
                        fetched.flags, T0)

    months = reference.compute_months(events)
    whole = reference.compute_groups(events, lambda m: "Q3" if m in Q3 else None)
    targets = reference.expected_targets(PARTNERS)
    policy = _policy()
    cards = {c.partner: c for c in card.cards}
    assert set(cards) >= set(PARTNERS)
    checked = 0
    expected_bands: dict[str, list[str | None]] = {}
    for partner in PARTNERS:
        lines = {line.kpi: line for line in cards[partner].lines}
        for kpi in catalog.kpis:
            line = lines[kpi.id]
            tolerance = 0.01 if kpi.id.endswith("_p90") else 1e-9
            want = whole.get((partner, kpi.id, "Q3"))
            if want is None:
                assert line.value is None, (partner, kpi.id)
            else:
                assert line.samples == want.samples, (partner, kpi.id)
                assert math.isclose(line.value or 0.0, want.value, rel_tol=tolerance,
                                    abs_tol=1e-12), (partner, kpi.id)
                checked += 1
            for cell in line.months:
                got = months.get((partner, kpi.id, cell.month))
                assert (cell.value is None) == (got is None), (partner, kpi.id, cell.month)
                if got is not None:
                    assert cell.samples == got.samples
                    assert math.isclose(cell.value or 0.0, got.value, rel_tol=tolerance,
                                        abs_tol=1e-12)
                    assert cell.target == targets[(partner, kpi.id)]
                    checked += 1
        expected_bands[partner] = [
            _expected_card(partner, {k: (r.value, r.samples) for (p, k, m), r in months.items()
                                     if p == partner and m == month}, policy)[1]
            for month in Q3]
        assert list(cards[partner].bands) == expected_bands[partner], partner
    assert checked > 150  # period values and month cells, every partner
    # the programme rows: partners per band, month by month
    for i, _month in enumerate(Q3):
        want_counts: dict[str, int] = {}
        for partner in PARTNERS:
            band = expected_bands[partner][i]
            if band is not None:
                want_counts[band] = want_counts.get(band, 0) + 1
        assert card.band_counts[i] == want_counts
    # the renderings
    rows = list(csv.DictReader(io.StringIO(render_period_csv(card), newline="")))
    assert list(rows[0]) == list(PERIOD_CSV_COLUMNS)
    assert len(rows) == len(card.cards) * len(catalog.kpis) * (len(Q3) + 1)
    acme_asa = [r for r in rows if r["partner"] == "acme" and r["kpi"] == "asa"]
    assert [r["month"] for r in acme_asa] == [*Q3, "2026-Q3"]
    assert float(acme_asa[-1]["value"]) == pytest.approx(whole[("acme", "asa", "Q3")].value)
    page = render_period_html(card)
    shown = sum(1 for c in card.cards for line in c.lines
                if line.value is not None or any(x.value is not None for x in line.months))
    assert len(re.findall(r'<td class="spark"><svg', page)) == shown
    assert "<script" not in page and "http://" not in page.replace("http://www.w3.org", "")
    table = render_period_table(card)
    assert "Jul" in table and "Sep" in table and "2026-Q3" in table
    body_json = orjson.loads(render_period_json(card))
    assert body_json["months"] == Q3 and len(body_json["partners"]) == len(card.cards)
