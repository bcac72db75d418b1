"""Report card terms as they were: dated targets, tiers, weights and policies (each month scored
with the versions in force in it), and attainment that cannot mislead (capped as scored; a KPI
with too few samples, or a ratio implausibly perfect at its target, shown as not measured).

Expected scores and bands are computed here from the YAML written by the test."""

from __future__ import annotations

import dataclasses
import math
import shutil
from datetime import date
from pathlib import Path

import numpy as np
import orjson
import pytest

from streams.config.catalog import ConfigError, load_catalog, load_config, load_partners
from streams.outputs.report import build_report
from streams.outputs.report_render import render_csv, render_html, render_json, render_table
from tests.harness import REPO

T0 = 1_796_000_000_000
CATALOG_ASA_TARGET = 60.0  # kpis.yaml's asa target, for a tier that sets none
CATALOG_ESCALATION_TARGET = 0.15

DATED = """\
version: 1
default_tier: authorized
tiers:
  premier:
    targets:
      asa: [{value: 60}, {value: 45, effective: 2026-07}]
partners:
  - id: acme
    tier: [{value: business}, {value: premier, effective: "2026-07"}]
  - id: beta
    tier: business
    targets:
      escalation_rate: [{value: 0.2}, {value: 0.15, effective: 2026-09-01}]
report:
  - bands: [{id: good, min_score: 1.0}, {id: poor, min_score: 0}]
  - effective: 2026-08
    attainment_cap: 1.1
    weights:
      asa: [{value: 1}, {value: 3, effective: 2026-10}]
    bands: [{id: top, min_score: 1.05}, {id: good, min_score: 0.95}, {id: poor, min_score: 0}]
"""

VALUES = {"acme": {"asa": (50.0, 100), "escalation_rate": (0.16, 200)},
          "beta": {"asa": (50.0, 100), "escalation_rate": (0.16, 200)}}


def _config(tmp_path: Path, partners_yaml: str) -> Path:
    shutil.copy(REPO / "config" / "kpis.yaml", tmp_path / "kpis.yaml")
    (tmp_path / "partners.yaml").write_text(partners_yaml)
    return tmp_path


def _expected(asa_target: float, esc_target: float, asa_weight: float, cap: float,
              bands: list[tuple[str, float]]) -> tuple[float, str]:
    """Score and band of a month with these terms, on VALUES (the same for both partners)."""
    asa = min(asa_target / 50.0, cap)
    esc = min(esc_target / 0.16, cap)
    score = (asa_weight * asa + esc) / (asa_weight + 1)
    return score, next(band for band, floor in bands if score >= floor)


OLD_BANDS = [("good", 1.0), ("poor", 0.0)]
NEW_BANDS = [("top", 1.05), ("good", 0.95), ("poor", 0.0)]


@pytest.mark.parametrize(("month", "acme", "beta"), [
    # month: (asa target, escalation target, asa weight, cap, bands) for acme, then for beta
    ("2026-06", (CATALOG_ASA_TARGET, CATALOG_ESCALATION_TARGET, 1, 1.2, OLD_BANDS),
     (CATALOG_ASA_TARGET, 0.2, 1, 1.2, OLD_BANDS)),
    # acme premier from July: premier's asa target (45 from July)
    ("2026-07", (45.0, CATALOG_ESCALATION_TARGET, 1, 1.2, OLD_BANDS),
     (CATALOG_ASA_TARGET, 0.2, 1, 1.2, OLD_BANDS)),
    # the second policy from August: cap 1.1, three bands
    ("2026-08", (45.0, CATALOG_ESCALATION_TARGET, 1, 1.1, NEW_BANDS),
     (CATALOG_ASA_TARGET, 0.2, 1, 1.1, NEW_BANDS)),
    # beta's own escalation target tightened from September
    ("2026-09", (45.0, CATALOG_ESCALATION_TARGET, 1, 1.1, NEW_BANDS),
     (CATALOG_ASA_TARGET, 0.15, 1, 1.1, NEW_BANDS)),
    # asa weighs 3 from October (a dated weight inside the second policy)
    ("2026-10", (45.0, CATALOG_ESCALATION_TARGET, 3, 1.1, NEW_BANDS),
     (CATALOG_ASA_TARGET, 0.15, 3, 1.1, NEW_BANDS)),
])
def test_each_month_is_scored_with_the_terms_in_force_in_it(
        tmp_path: Path, month: str, acme: tuple[float, float, float, float, list[tuple[str, float]]],
        beta: tuple[float, float, float, float, list[tuple[str, float]]]) -> None:
    catalog, partners = load_config(_config(tmp_path, DATED))
    report = build_report(catalog, partners, month, VALUES, {}, T0)
    cards = {c.partner: c for c in report.cards}
    for partner, terms in (("acme", acme), ("beta", beta)):
        score, band = _expected(*terms)
        card = cards[partner]
        assert card.score is not None and math.isclose(card.score, score, rel_tol=1e-12), partner
        assert card.band is not None and card.band.id == band, (partner, card.score)
        lines = {line.kpi: line for line in card.lines}
        assert lines["asa"].target == terms[0] and lines["escalation_rate"].target == terms[1]
        assert lines["asa"].weight == terms[2]
    # the card says which versions it used
    acme_card, beta_card = cards["acme"], cards["beta"]
    july_on = month >= "2026-07"
    assert acme_card.tier == ("premier" if july_on else "business")
    assert acme_card.tier_since == ("2026-07" if july_on else None)
    assert acme_card.policy_since == ("2026-08" if month >= "2026-08" else None)
    asa_source = {line.kpi: line.target_source for line in acme_card.lines}["asa"]
    assert asa_source == ("tier premier since 2026-07" if july_on else "catalog")
    esc_source = {line.kpi: line.target_source for line in beta_card.lines}["escalation_rate"]
    assert esc_source == ("partner since 2026-09" if month >= "2026-09" else "partner")


def test_a_new_version_never_changes_a_month_before_it(tmp_path: Path) -> None:
    """Adding next year's terms to the file leaves every month scored before it as it was."""
    catalog, partners = load_config(_config(tmp_path, DATED))
    later = DATED.replace("      asa: [{value: 1}, {value: 3, effective: 2026-10}]",
                          "      asa: [{value: 1}, {value: 3, effective: 2026-10}, "
                          "{value: 0, effective: 2027-01}]")
    later = later.replace("effective: 2026-09-01}]", "effective: 2026-09-01}, "
                                                     "{value: 0.05, effective: 2027-01}]")
    assert later != DATED
    (tmp_path / "later").mkdir()
    _, partners_later = load_config(_config(tmp_path / "later", later))
    for month in ("2026-06", "2026-09", "2026-12"):
        before = render_json(build_report(catalog, partners, month, VALUES, VALUES, T0))
        after = render_json(build_report(catalog, partners_later, month, VALUES, VALUES, T0))
        assert before == after, month
    changed = build_report(catalog, partners_later, "2027-01", VALUES, {}, T0)
    beta = {c.partner: c for c in changed.cards}["beta"]
    assert {line.kpi: line.target for line in beta.lines}["escalation_rate"] == 0.05


def test_live_judging_uses_the_versions_in_force_when_loaded(tmp_path: Path) -> None:
    path = _config(tmp_path, DATED)
    catalog = load_catalog(path / "kpis.yaml")
    asa = next(k for k in catalog.kpis if k.id == "asa")
    escalation = next(k for k in catalog.kpis if k.id == "escalation_rate")
    june = load_partners(path / "partners.yaml", catalog, today=date(2026, 6, 15))
    assert june.tier("acme") == "business" and june.target("acme", asa) == CATALOG_ASA_TARGET
    assert june.target("beta", escalation) == 0.2 and june.report.attainment_cap == 1.2
    november = load_partners(path / "partners.yaml", catalog, today=date(2026, 11, 2))
    assert november.tier("acme") == "premier" and november.target("acme", asa) == 45.0
    assert november.target("beta", escalation) == 0.15
    assert november.report.attainment_cap == 1.1 and november.report.weight("asa") == 3


@pytest.mark.parametrize(("fragment", "replacement", "problem"), [
    ("{value: 45, effective: 2026-07}", "{value: 45}", "needs an 'effective' month"),
    ("{value: 45, effective: 2026-07}", "{value: 45, effective: 2026-07-15}",
     "from a month's first day"),
    ("{value: 45, effective: 2026-07}", "{value: 45, effective: July}", "not a month like"),
    ("asa: [{value: 60}, {value: 45, effective: 2026-07}]",
     "asa: [{value: 60, effective: 2026-08}, {value: 45, effective: 2026-07}]", "oldest first"),
    ("{value: premier, effective: \"2026-07\"}", "{value: gold, effective: \"2026-07\"}",
     "unknown tier 'gold'"),
    ("      asa: [{value: 60}, {value: 45, effective: 2026-07}]", "      asa: []",
     "an empty list of versions"),
])
def test_bad_dated_terms_are_named(tmp_path: Path, fragment: str, replacement: str,
                                   problem: str) -> None:
    assert fragment in DATED
    with pytest.raises(ConfigError, match=problem):
        load_config(_config(tmp_path, DATED.replace(fragment, replacement, 1)))


def test_attainment_is_capped_as_scored_and_unmeasured_months_say_why() -> None:
    catalog, partners = load_config()
    policy = partners.report
    cap = policy.attainment_cap
    esc_target = 0.20  # acme is not listed: the default tier, authorized, sets 0.20
    current = {
        # 0 escalations in 100 tickets at a 20% target: 0.8^100 = 2e-10, not measured
        "acme": {"escalation_rate": (0.0, 100), "asa": (0.0, 50), "abandon_rate": (0.02, 300)},
        # 0 in 20: 0.8^20 = 1.2% -- plausible, so measured, and capped at the policy's cap
        "zeta": {"escalation_rate": (0.0, 20), "asa": (120.0, 5)},  # asa: 5 < 20 min_samples
    }
    report = build_report(catalog, partners, "2026-10", current, {}, T0)
    cards = {c.partner: c for c in report.cards}
    acme = {line.kpi: line for line in cards["acme"].lines}
    assert (1 - esc_target) ** 100 < 0.001 <= (1 - esc_target) ** 20
    assert not acme["escalation_rate"].counted
    assert "no 'escalated' events in 100 samples" in acme["escalation_rate"].not_measured
    # a lower-is-better KPI at 0: shown at the cap the score counts, not at 1000%
    assert acme["asa"].attainment == cap and acme["asa"].capped and acme["asa"].counted
    abandon = min(0.05 / 0.02, cap)
    weights = policy.weight("asa") + policy.weight("abandon_rate")
    want = (policy.weight("asa") * cap + policy.weight("abandon_rate") * abandon) / weights
    assert cards["acme"].score is not None and math.isclose(cards["acme"].score, want)
    zeta = {line.kpi: line for line in cards["zeta"].lines}
    assert zeta["escalation_rate"].counted and zeta["escalation_rate"].attainment == cap
    assert not zeta["asa"].counted and "5 samples, fewer than the 20" in zeta["asa"].not_measured
    assert cards["zeta"].score == cap
    # every rendering says it: the terminal and HTML name the reason, the CSV carries it
    table = render_table(report)
    assert "escalation_rate: not measured: no 'escalated' events" in table
    assert "not measured" in render_html(report) and "120%+" in table
    rows = [r for r in render_csv(report).splitlines() if r.startswith("2026-10,acme,")]
    assert any("no 'escalated' events" in r for r in rows)
    body = orjson.loads(render_json(report))
    acme_json = next(p for p in body["partners"] if p["partner"] == "acme")
    assert {line["kpi"]: line["capped"] for line in acme_json["lines"]}["asa"] is True


def test_a_perfect_month_of_a_higher_is_better_ratio_is_also_checked() -> None:
    catalog, partners = load_config()
    # service_level target 0.8: 40 of 40 calls answered in time is 0.8^40 = 1.3e-4
    current = {"acme": {"service_level": (1.0, 40)},
               "zeta": {"service_level": (1.0, 20)}}  # 0.8^20 = 1.2%: plausible
    cards = {c.partner: c for c in build_report(catalog, partners, "2026-10", current, {}, T0).cards}
    level = {p: {line.kpi: line for line in cards[p].lines}["service_level"]
             for p in ("acme", "zeta")}
    assert 0.8 ** 40 < 0.001 <= 0.8 ** 20
    assert not level["acme"].counted and "every sample at 1 in 40" in level["acme"].not_measured
    assert level["zeta"].counted and level["zeta"].not_measured == ""
    assert dataclasses.asdict(level["zeta"])["attainment"] == pytest.approx(min(1 / 0.8, 1.2))


# --- the fair league table ---------------------------------------------------------------------
def test_league_ranks_on_values_shrunk_toward_the_fleet_for_their_volume() -> None:
    """Twelve partners' escalation rates and answer times; one tiny partner with a perfect-looking
    asa and low escalation rate tops the raw table and drops once shrunk. The card's shrunk
    values are the posterior means under the fitted prior, written out here; the fair score and
    the ranks are recomputed here from them."""
    from streams.judgement.league import Observed, shrink

    catalog, partners = load_config()
    rng = np.random.default_rng(3)
    current: dict[str, dict[str, tuple[float, int, float, float]]] = {}
    # targets of the default tier (authorized): escalation_rate 20%, asa 90 s. The fleet sits
    # just below both; p00 answered 25 calls and had 0 escalations in 20 tickets (a 1.2% chance
    # at 20%, so measured): capped at 120% raw, the fleet's ~21% once shrunk.
    for i in range(12):
        n_tickets = 20 if i == 0 else int(rng.integers(1000, 3000))
        escalated = 0 if i == 0 else int(rng.binomial(n_tickets, rng.uniform(0.20, 0.24)))
        waits = (rng.gamma(4.0, 25.0, 25) if i == 0
                 else rng.gamma(4.0, rng.uniform(22, 25), int(rng.integers(300, 2000))))
        rate = escalated / n_tickets
        current[f"p{i:02d}"] = {
            "escalation_rate": (rate, n_tickets, float(escalated), float(escalated)),
            "asa": (float(waits.mean()), len(waits), float(waits.sum()), float((waits ** 2).sum())),
        }
    report = build_report(catalog, partners, "2026-10", current, {}, T0)
    cards = {c.partner: c for c in report.cards if c.partner in current}
    kpis = {k.id: k for k in catalog.kpis}
    cap = partners.report.attainment_cap
    for kpi_id in ("escalation_rate", "asa"):
        kind = kpis[kpi_id].stat_kind
        prior, _ = shrink(kind, [Observed(p, v[kpi_id][1], v[kpi_id][2], v[kpi_id][3])
                                 for p, v in current.items()])
        for partner, values in current.items():
            _, n, total, squares = values[kpi_id]
            if kind == "ratio":
                assert prior.alpha is not None and prior.beta is not None
                want = (total + prior.alpha) / (n + prior.alpha + prior.beta)
            else:
                mean = total / n
                variance = (squares - n * mean * mean) / (n - 1)
                weight = prior.tau2 / (prior.tau2 + variance / n)
                want = weight * mean + (1 - weight) * prior.centre
            line = {x.kpi: x for x in cards[partner].lines}[kpi_id]
            assert line.shrunk == pytest.approx(want, rel=1e-9), (partner, kpi_id)
    fair = {}
    for partner, card in cards.items():
        total_w = weights = 0.0
        for line in card.lines:
            if line.counted:
                target = partners.target(partner, kpis[line.kpi])
                assert line.shrunk is not None
                att = (target / line.shrunk if kpis[line.kpi].lower_is_better
                       else line.shrunk / target)
                total_w += line.weight * min(att, cap)
                weights += line.weight
        fair[partner] = total_w / weights
        assert card.fair_score == pytest.approx(fair[partner], rel=1e-12)
    order = sorted(fair, key=lambda p: -fair[p])
    assert [p for p in order] == sorted(cards, key=lambda p: cards[p].rank or 99)
    raw_order = sorted(cards, key=lambda p: -(cards[p].score or 0))
    assert [cards[p].raw_rank for p in raw_order] == list(range(1, 13))
    # the tiny partner: first on the raw score, not first once shrunk
    assert cards["p00"].raw_rank == 1 and (cards["p00"].rank or 0) > 1
    # a funnel plot per shrunk KPI on the HTML card, with every partner on it
    page = render_html(report)
    assert page.count('<figure class="funnel">') == len(report.funnels) >= 2
    assert all(len(f.funnel.points) == 12 for f in report.funnels)
    assert "League table" in page and "1 (raw" not in render_table(report).split("\n")[3]


# --- the month in progress -----------------------------------------------------------------------
def test_the_month_in_progress_carries_its_forecast_and_slack() -> None:
    """A card made on 2026-10-11 12:00 UTC: a third of October gone. One KPI, escalations 30 of
    200 against the default tier's 20%: 120% of goal (capped), platinum; 8 more escalations take
    the rate past 0.2 / 1.10 and the band below platinum (the least k, found here by counting)."""
    catalog, partners = load_config()
    now = 1_791_720_000_000  # 2026-10-11 12:00 UTC
    start, end = 1_790_812_800_000, 1_793_491_200_000  # 2026-10-01, 2026-11-01 (UTC)
    current = {"acme": {"escalation_rate": (0.15, 200, 30.0, 30.0)}}
    report = build_report(catalog, partners, "2026-10", current, {}, now)
    card = {c.partner: c for c in report.cards}["acme"]
    assert card.band is not None and card.band.id == "platinum"
    p = card.projection
    assert p is not None
    assert p.elapsed == pytest.approx((now - start) / (end - start))
    assert sum(p.probabilities.values()) == pytest.approx(1.0)
    assert p.likely == max(p.probabilities, key=lambda b: p.probabilities[b])
    assert set(p.probabilities) <= {b.id for b in partners.report.bands}
    k = 0
    while 0.20 / ((30 + k) / (200 + k)) >= 1.10:
        k += 1
    assert k == 8 and p.slack_kpi == "escalation_rate" and p.slack_misses == k
    assert "8 more escalation_rate misses" in render_table(report)
    # a past month has no forecast
    past = build_report(catalog, partners, "2026-09", current, {}, now)
    assert all(c.projection is None for c in past.cards)
