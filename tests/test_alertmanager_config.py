"""config/alertmanager.yml: valid, and routes partnerpulse's alerts where they belong.

``amtool`` comes from Debian's ``prometheus-alertmanager`` (scripts/test.sh installs it):
without it these tests skip locally and fail on CI. The inhibition is checked on a real
Alertmanager in tests/test_alertmanager_client.py.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml
from conftest import require_binary

REPO = Path(__file__).resolve().parent.parent
CONFIG = REPO / "config" / "alertmanager.yml"
RULES = REPO / "config" / "rules" / "partnerpulse.rules.yml"

PARTNER = {"service": "partnerpulse", "scope": "partner", "partner": "northwind-telecom",
           "tier": "premier", "kpi": "asa", "window": "24h"}
PIPELINE = {"service": "partnerpulse", "scope": "pipeline", "topic": "calls"}


@pytest.fixture
def amtool() -> str:
    return require_binary("amtool", "prometheus-alertmanager")


def _receivers(amtool: str, labels: dict[str, str]) -> list[str]:
    args = [f"{k}={v}" for k, v in labels.items()]
    result = subprocess.run([amtool, "config", "routes", "test", f"--config.file={CONFIG}", *args],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout.strip().split(",")


def test_amtool_check_config(amtool: str) -> None:
    result = subprocess.run([amtool, "check-config", str(CONFIG)], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_critical_partner_alert_pages_oncall_and_reaches_the_digest(amtool: str) -> None:
    got = _receivers(amtool, {"alertname": "PartnerKpiBreach", "severity": "critical", **PARTNER})
    assert got == ["executive-digest", "oncall"]


@pytest.mark.parametrize("alertname", ["PartnerKpiAtRisk", "PartnerKpiBelowTarget",
                                       "PartnerOpenTicketsOverdue"])
def test_warning_partner_alert_goes_to_noc_and_reaches_the_digest(amtool: str, alertname: str) -> None:
    got = _receivers(amtool, {"alertname": alertname, "severity": "warning", **PARTNER})
    assert got == ["executive-digest", "noc-channel"]


def test_integrity_alert_goes_to_partner_management_never_to_paging(amtool: str) -> None:
    labels = {**PARTNER, "alertname": "PartnerIntegrity", "severity": "warning",
              "signal": "threshold_hugging"}
    labels.pop("window")
    assert _receivers(amtool, labels) == ["executive-digest", "partner-management"]


@pytest.mark.parametrize("alertname", ["PartnerTicketAtRisk", "PartnerTicketBreached"])
def test_ticket_alerts_go_to_the_noc_grouped_never_paging_or_the_digest(amtool: str,
                                                                       alertname: str) -> None:
    labels = {"alertname": alertname, "service": "partnerpulse", "scope": "ticket",
              "partner": "northwind-telecom", "tier": "premier", "kpi": "ots_down_hard",
              "ticket": "T-1", "severity": "critical" if "Breached" in alertname else "warning"}
    assert _receivers(amtool, labels) == ["noc-channel"]
    config = yaml.safe_load(CONFIG.read_text())
    route = next(r for r in config["route"]["routes"] if 'scope="ticket"' in r["matchers"])
    assert route["group_by"] == ["alertname", "partner", "kpi"]  # not per ticket
    stale = [r for r in config["inhibit_rules"]
             if r["source_matchers"] == ['alertname="PartnerpulseFeedStale"']]
    assert any(r["target_matchers"] == ['scope="ticket"'] for r in stale)


def test_pipeline_alerts_skip_the_digest(amtool: str) -> None:
    critical = {"alertname": "PartnerpulseFeedStale", "severity": "critical", **PIPELINE}
    assert _receivers(amtool, critical) == ["oncall"]
    warning = {"alertname": "PartnerpulseConsumerLagHigh", "severity": "warning", **PIPELINE}
    assert _receivers(amtool, warning) == ["noc-channel"]


def test_unknown_alerts_fall_back_to_noc(amtool: str) -> None:
    assert _receivers(amtool, {"alertname": "Something", "severity": "info"}) == ["noc-channel"]


def test_digest_route_is_daily_by_tier_and_continues() -> None:
    config = yaml.safe_load(CONFIG.read_text())
    digest = next(r for r in config["route"]["routes"] if r["receiver"] == "executive-digest")
    assert digest["continue"] is True
    assert digest["group_by"] == ["tier"]
    assert digest["group_interval"] == digest["repeat_interval"] == "24h"


def test_config_matches_the_rules() -> None:
    """Every alert of the rules has a severity the routes know; the inhibited names exist."""
    rules = yaml.safe_load(RULES.read_text())
    alerts = {r["alert"]: r["labels"] for g in rules["groups"] for r in g["rules"] if "alert" in r}
    assert {labels["severity"] for labels in alerts.values()} == {"critical", "warning"}
    assert all(labels["service"] == "partnerpulse" for labels in alerts.values())
    config = yaml.safe_load(CONFIG.read_text())
    feed = config["inhibit_rules"][0]
    assert feed["source_matchers"] == ['alertname="PartnerpulseFeedStale"']
    (target,) = feed["target_matchers"]
    inhibited = target.split("=~", 1)[1].strip('"').split("|")
    partner_alerts = {name for name, labels in alerts.items() if labels["scope"] == "partner"}
    assert set(inhibited) == partner_alerts
    for name in ("PartnerKpiBreach", "PartnerKpiAtRisk", "PartnerKpiBelowTarget"):
        assert name in partner_alerts
