"""Prometheus rules generated from the KPI catalog (streams/generators/rules.py).

* the committed ``config/rules/partnerpulse.rules.yml`` is exactly what the generator gives;
* ``promtool check rules`` accepts it and ``promtool test rules`` passes the hand-written
  ``config/rules/partnerpulse.rules.test.yml``;
* the promtool tests can fail: on mutated copies of the rules (no min_samples clause, no
  ``for``, no tier join) they do.

promtool comes from Debian's ``prometheus`` package (scripts/test.sh installs it): without
it these tests skip locally and fail on CI.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
import yaml

from streams.config.catalog import load_catalog
from streams.generators import rules

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config"
RULES = CONFIG / "rules" / "partnerpulse.rules.yml"
RULES_TEST = CONFIG / "rules" / "partnerpulse.rules.test.yml"


def _promtool(promtool: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([promtool, *args], capture_output=True, text=True, timeout=120, cwd=cwd)


def _alerts(text: str) -> list[dict]:
    data = yaml.safe_load(text)
    return [r for g in data["groups"] for r in g["rules"] if "alert" in r]


# --- generation ----------------------------------------------------------------------
def test_committed_file_is_what_the_generator_gives() -> None:
    catalog = load_catalog(CONFIG / "kpis.yaml")
    assert RULES.read_bytes() == rules.render_rules(catalog).encode("utf-8"), (
        "config/rules/partnerpulse.rules.yml is stale: run `partnerpulse rules`")
    assert rules.main(check=True) == 0


def test_render_is_deterministic_and_says_it_is_generated() -> None:
    catalog = load_catalog(CONFIG / "kpis.yaml")
    first = rules.render_rules(catalog)
    assert first == rules.render_rules(load_catalog(CONFIG / "kpis.yaml"))
    head = first.splitlines()[:4]
    assert any("GENERATED" in line for line in head)
    assert any("partnerpulse rules" in line for line in head)


def test_check_reports_a_stale_file_and_main_rewrites_it(tmp_path: Path) -> None:
    shutil.copy(CONFIG / "kpis.yaml", tmp_path / "kpis.yaml")
    assert rules.main(check=True, config_dir=tmp_path) == 1  # missing counts as stale
    assert rules.main(check=False, config_dir=tmp_path) == 0
    written = tmp_path / "rules" / "partnerpulse.rules.yml"
    assert written.read_bytes() == RULES.read_bytes()
    assert rules.main(check=True, config_dir=tmp_path) == 0
    written.write_text(written.read_text().replace(">= 20", ">= 2"))
    assert rules.main(check=True, config_dir=tmp_path) == 1
    assert rules.main(check=False, config_dir=tmp_path) == 0
    assert rules.main(check=True, config_dir=tmp_path) == 0


def test_every_kpi_gets_a_below_target_alert_with_its_min_samples() -> None:
    catalog = load_catalog(CONFIG / "kpis.yaml")
    below = [a for a in _alerts(RULES.read_text()) if a["alert"] == "PartnerKpiBelowTarget"]
    assert sorted(a["labels"]["kpi"] for a in below) == sorted(k.id for k in catalog.kpis)
    for alert in below:
        kpi = catalog.kpi(alert["labels"]["kpi"])
        expr = alert["expr"]
        assert f'partnerpulse_kpi_attainment_ratio{{kpi="{kpi.id}",window="24h"}}) < 1' in expr
        assert f'partnerpulse_kpi_samples{{kpi="{kpi.id}",window="24h"}}) >= {kpi.min_samples}' in expr
        assert alert["for"] == "15m"
        assert alert["labels"]["severity"] == "warning"
        assert "group_left(tier)" in expr


def test_a_new_kpi_is_a_catalog_change_only() -> None:
    catalog = load_catalog(CONFIG / "kpis.yaml")
    extra = replace(catalog.kpi("csat"), id="nps_like", title="A new score", min_samples=42)
    bigger = replace(catalog, kpis=(*catalog.kpis, extra))
    alerts = _alerts(rules.render_rules(bigger))
    new = [a for a in alerts if a["labels"].get("kpi") == "nps_like"]
    assert len(new) == 1
    assert 'partnerpulse_kpi_samples{kpi="nps_like",window="24h"}) >= 42' in new[0]["expr"]
    # the generic state alerts learn its unit for their annotations
    breach = next(a for a in alerts if a["alert"] == "PartnerKpiBreach")
    assert '"csat" "xla" "nps_like" }}{{ $unit = "score" }}' in breach["annotations"]["description"]


def test_alert_contract() -> None:
    alerts = {a["alert"]: a for a in _alerts(RULES.read_text())}
    for name, severity in (("PartnerKpiBreach", "critical"), ("PartnerKpiAtRisk", "warning")):
        alert = alerts[name]
        assert alert["labels"]["severity"] == severity
        assert alert["labels"]["scope"] == "partner"
        assert "by (partner, kpi, window)" in alert["expr"]
        assert "group_left(tier)" in alert["expr"]
        for key in ("summary", "description", "dashboard", "runbook_url"):
            assert key in alert["annotations"]
        assert "var-partner={{ $labels.partner }}" in alert["annotations"]["dashboard"]
    stale = alerts["PartnerpulseFeedStale"]
    assert stale["labels"]["severity"] == "critical"
    assert "partnerpulse_feed_stale" in stale["expr"]
    assert "time() - max by (topic) (partnerpulse_last_event_timestamp_seconds) > 900" in stale["expr"]


# --- promtool ------------------------------------------------------------------------
def test_promtool_check_rules(promtool: str) -> None:
    result = _promtool(promtool, "check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_promtool_unit_tests_pass(promtool: str) -> None:
    result = _promtool(promtool, "test", "rules", str(RULES_TEST))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


_MIN_SAMPLES_CLAUSE = re.compile(
    r"\n *and on\(partner, kpi, window\)\n *max by \(partner, kpi, window\) "
    r"\(partnerpulse_kpi_samples\{[^}]*\}\) >= \d+")


def _drop_min_samples(text: str) -> str:
    mutated, count = _MIN_SAMPLES_CLAUSE.subn("", text)
    assert count == len(load_catalog(CONFIG / "kpis.yaml").kpis)
    return mutated


def _drop_breach_for(text: str) -> str:
    mutated, count = re.subn(r"(- alert: PartnerKpiBreach\n(?:    .*\n|      .*\n)*?)    for: 5m\n",
                             r"\1", text)
    assert count == 1
    return mutated


def _breach_on_any_state(text: str) -> str:
    old = 'partnerpulse_kpi_state{state="breach"}'
    assert old in text
    return text.replace(old, "partnerpulse_kpi_state")


def _stall_at_the_goal(text: str) -> str:
    old = "(partnerpulse_worker_event_loop_lag_seconds) > 1\n"
    assert text.count(old) == 1
    return text.replace(old, "(partnerpulse_worker_event_loop_lag_seconds) >= 1\n")


def _drop_stall_for(text: str) -> str:
    mutated, count = re.subn(r"(- alert: PartnerpulseWorkerStalled\n(?:    .*\n|      .*\n)*?)"
                             r"    for: 10m\n", r"\1", text)
    assert count == 1
    return mutated


@pytest.mark.parametrize(("mutate", "failing"), [
    (_drop_min_samples, "PartnerKpiBelowTarget"),
    (_drop_breach_for, "PartnerKpiBreach"),
    (_breach_on_any_state, "PartnerKpiBreach"),
    (_stall_at_the_goal, "PartnerpulseWorkerStalled"),
    (_drop_stall_for, "PartnerpulseWorkerStalled"),
], ids=["no-min-samples", "breach-without-for", "breach-any-state", "stall-at-the-goal",
        "stall-without-for"])
def test_promtool_unit_tests_catch_mutants(promtool: str, tmp_path: Path, mutate: Callable[[str], str],
                                           failing: str) -> None:
    mutant = mutate(RULES.read_text())
    (tmp_path / RULES.name).write_text(mutant)
    shutil.copy(RULES_TEST, tmp_path / RULES_TEST.name)
    check = _promtool(promtool, "check", "rules", str(tmp_path / RULES.name))
    assert check.returncode == 0, check.stdout + check.stderr  # the mutant is a valid file...
    result = _promtool(promtool, "test", "rules", RULES_TEST.name, cwd=tmp_path)
    assert result.returncode != 0, result.stdout  # ...that the unit tests reject
    assert f"alertname: {failing}" in result.stdout + result.stderr
