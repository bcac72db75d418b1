"""The generated Grafana dashboards: committed bytes equal regeneration, and every panel query
is valid PromQL that returns data from a real Prometheus scraping a real worker.

The live check (:func:`assert_every_panel_has_data`) runs inside tests/test_demo.py: Debian's
``prometheus`` (scraping every second, loading the generated rules) scrapes the demo's worker,
fed by the simulator's warm-start history and live traffic so every window has data, and each
panel expression is queried, ``$partner`` being the first simulated partner with every KPI.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streams.config.catalog import load_catalog
from streams.generators import dashboards
from streams.generators.dashboards.oncall import URGENT_TITLE
from streams.tools.broker import free_port
from tests.harness import REPO, poll

DASHBOARDS = REPO / "dashboards"
RULES = REPO / "config" / "rules" / "partnerpulse.rules.yml"
# What Grafana substitutes before a query reaches Prometheus ($datasource is never in an expr);
# $partner: the partner the live test picks.
SUBSTITUTIONS = {"$window": "1h", "$__rate_interval": "1m", "$__interval": "15s"}
UIDS = {"partnerpulse-noc", "partnerpulse-oncall", "partnerpulse-exec"}


def _load(name: str) -> dict[str, Any]:
    return dict(json.loads((DASHBOARDS / name).read_text(encoding="utf-8")))


def _expressions() -> list[tuple[str, int, str, str]]:
    """(dashboard uid, panel id, panel title, expr) of every panel target."""
    out = []
    for path in sorted(DASHBOARDS.glob("*.json")):
        board = _load(path.name)
        for panel in board["panels"]:
            for target in panel.get("targets", []):
                out.append((board["uid"], panel["id"], panel["title"], target["expr"]))
    return out


def _substitute(expr: str, partner: str) -> str:
    values = {**SUBSTITUTIONS, "$partner": partner}
    # longest names first: $__rate_interval before $__interval
    for name in sorted(values, key=len, reverse=True):
        expr = expr.replace(name, values[name])
    return expr


# --- generation ---------------------------------------------------------------------------------

def test_links_to_the_on_call_dashboard_name_its_uid() -> None:
    """The worker's default dashboard_url and the generated rules' links open the dashboard
    generated with ONCALL_UID (one uid; the hosts differ: local Grafana vs placeholder)."""
    from streams.config.settings import Settings
    from streams.generators import rules

    default = Settings.model_fields["dashboard_url"].default
    assert default.endswith(f"/d/{dashboards.ONCALL_UID}")
    assert rules.DASHBOARD_URL.endswith(f"/d/{dashboards.ONCALL_UID}")
    assert f"{dashboards.ONCALL_UID}.json" in dashboards.DASHBOARDS

def test_regenerating_gives_the_committed_bytes(capsys: pytest.CaptureFixture[str]) -> None:
    catalog = load_catalog(REPO / "config" / "kpis.yaml")
    rendered = dashboards.render_all(catalog)
    assert set(rendered) == {f"{uid}.json" for uid in UIDS}
    assert {p.name for p in DASHBOARDS.glob("*.json")} == set(rendered)
    for name, text in rendered.items():
        assert (DASHBOARDS / name).read_bytes() == text.encode(), (
            f"{name} is stale: partnerpulse dashboards")
        assert text.endswith("}\n") and "\n  \"" in text
        assert json.dumps(json.loads(text), sort_keys=True, indent=2, ensure_ascii=False) + "\n" == text
    assert dashboards.render_all(catalog) == rendered  # deterministic
    assert dashboards.main(check=True) == 0
    assert "up to date" in capsys.readouterr().out


def test_check_reports_a_stale_file(tmp_path: Path) -> None:
    assert dashboards.main(check=True, out_dir=tmp_path) == 1
    assert dashboards.main(check=False, out_dir=tmp_path) == 0
    assert dashboards.main(check=True, out_dir=tmp_path) == 0
    (tmp_path / "partnerpulse-noc.json").write_text("{}\n")
    assert dashboards.main(check=True, out_dir=tmp_path) == 1


def test_dashboards_have_stable_uids_ids_and_a_datasource_variable() -> None:
    catalog = load_catalog(REPO / "config" / "kpis.yaml")
    for uid in UIDS:
        board = _load(f"{uid}.json")
        assert board["uid"] == uid
        variables = {v["name"]: v for v in board["templating"]["list"]}
        assert variables["datasource"]["type"] == "datasource"
        assert variables["datasource"]["query"] == "prometheus"
        ids = [p["id"] for p in board["panels"]]
        assert all(isinstance(i, int) for i in ids) and len(set(ids)) == len(ids)
        for panel in board["panels"]:
            assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
            assert panel["targets"], panel["title"]
            for target in panel["targets"]:
                assert target["datasource"]["uid"] == "${datasource}"
            pos = panel["gridPos"]
            assert pos["x"] >= 0 and pos["x"] + pos["w"] <= 24
    oncall = _load("partnerpulse-oncall.json")
    partner = {v["name"]: v for v in oncall["templating"]["list"]}["partner"]
    assert partner["query"] == "label_values(partnerpulse_partner_info, partner)"
    # one value-vs-target panel per KPI of the catalog, each with its target series
    exprs = [t["expr"] for p in oncall["panels"] for t in p["targets"]]
    for kpi in catalog.kpis:
        assert f'partnerpulse_kpi_value{{partner="$partner",kpi="{kpi.id}"}}' in "\n".join(exprs)
        assert f'partnerpulse_kpi_target{{partner="$partner",kpi="{kpi.id}"}}' in "\n".join(exprs)


def _panel(board: dict[str, Any], title: str) -> dict[str, Any]:
    found = [p for p in board["panels"] if p["title"] == title]
    assert len(found) == 1, [p["title"] for p in board["panels"]]
    return found[0]


def test_exec_has_an_sla_experience_quadrant_from_the_catalog() -> None:
    """One table per partner: SLA attainment (worst of the sla parts), experience attainment (the
    mean_field KPI the sla_experience KPI's answers are), the shares, the quadrant code."""
    from streams.generators.dashboards.executive import (
        QUADRANT_LABELS,
        QUADRANT_TITLE,
        experience_kpi,
        quadrants,
    )
    from streams.generators.promql import ATTAINMENT_SUFFICIENT
    from streams.outputs.series import KPI_VALUE

    catalog = load_catalog(REPO / "config" / "kpis.yaml")
    kinds = {k.id: k for k in catalog.kpis}
    shares = [k for k in catalog.kpis if k.kind == "sla_experience"]
    assert {k.outcome for k in shares} == {"watermelon", "rescued"}
    # the experience KPI is found by its source, not its id: csat, not xla (another survey kind)
    assert {experience_kpi(k, catalog).id for k in shares} == {"csat"}  # type: ignore[union-attr]
    [quadrant] = quadrants(catalog)
    panel = _panel(_load("partnerpulse-exec.json"), QUADRANT_TITLE)
    assert panel["type"] == "table"
    exprs = [t["expr"] for t in panel["targets"]]
    assert all(t["instant"] and t["format"] == "table" for t in panel["targets"])
    sla = "|".join(part.kpi for part in shares[0].sla)
    assert set(sla.split("|")) <= {k for k, v in kinds.items() if v.kind == "duration"}
    assert exprs[0] == (f"min by (partner) ({ATTAINMENT_SUFFICIENT}"
                        f'{{window="30d",kpi=~"{sla}"}})')
    assert exprs[1] == (f"max by (partner) ({ATTAINMENT_SUFFICIENT}"
                        f'{{window="30d",kpi="{quadrant.experience.id}"}})')
    for kpi, expr in zip(shares, exprs[2:4], strict=True):
        assert expr == f'max by (partner) ({KPI_VALUE}{{window="30d",kpi="{kpi.id}"}})'
    assert exprs[4].count("< bool 1") == 1 and exprs[4].count(">= bool 1") == 1
    assert [t["id"] for t in panel["transformations"]] == ["merge", "organize"]
    overrides = {o["matcher"]["options"]: o["properties"] for o in panel["fieldConfig"]["overrides"]}
    assert set(overrides) == {"SLA attainment", "Experience attainment", "Quadrant",
                              *(k.title for k in shares)}
    mapping = next(p["value"] for p in overrides["Quadrant"] if p["id"] == "mappings")
    assert mapping[0]["options"]["0"] == {"text": "WATERMELON", "color": "red", "index": 0}
    assert len(mapping[0]["options"]) == len(QUADRANT_LABELS)
    assert panel["options"]["sortBy"] == [{"displayName": "Quadrant", "desc": False}]
    # no sla_experience KPI: no quadrant
    plain = dataclasses.replace(catalog, kpis=tuple(k for k in catalog.kpis
                                                    if k.kind != "sla_experience"))
    titles = [p.title for p in dashboards.DASHBOARDS["partnerpulse-exec.json"](plain).build().panels]
    assert QUADRANT_TITLE not in titles and "Report card 30d (% of goal)" in titles


# (partner, kpi) -> (rate, samples) exported over 30d; escalation_rate is lower-is-better
FUNNEL_INPUT = {
    ("big", "service_level"): (0.80, 2000), ("small", "service_level"): (0.40, 20),
    ("mid", "service_level"): (0.90, 400), ("idle", "service_level"): (0.0, 0),
    ("big", "escalation_rate"): (0.18, 2000), ("small", "escalation_rate"): (0.30, 20),
    ("mid", "escalation_rate"): (0.05, 400),
    # the whole fleet at 100%: no spread, no cells
    ("big", "first_contact_resolution"): (1.0, 50), ("mid", "first_contact_resolution"): (1.0, 9),
}


def test_exec_funnel_cells_are_standard_errors_from_the_pooled_fleet_rate(
        promtool: str, tmp_path: Path) -> None:
    """The funnel panel's query, run by promtool on hand-made series (``big`` exported twice, as
    by two workers during a rebalance), equals z computed here: the fleet's pooled rate over
    partners with samples, the partner's distance from it in binomial standard errors at its
    volume, signed by the KPI's direction; a KPI the whole fleet has at 100% gives no cell."""
    from streams.generators.dashboards.executive import FUNNEL_TITLE, FUNNEL_Z
    from streams.outputs.series import KPI_SAMPLES, KPI_VALUE

    assert [round(z, 2) for z in FUNNEL_Z] == [1.96, 3.09]
    [expr] = [t["expr"] for t in _panel(_load("partnerpulse-exec.json"), FUNNEL_TITLE)["targets"]]
    series = []
    for (partner, kpi), (rate, samples) in FUNNEL_INPUT.items():
        for instance in ("w1", "w2") if partner == "big" else ("w1",):
            labels = f'partner="{partner}",kpi="{kpi}",window="30d",instance="{instance}"'
            series.append({"series": f"{KPI_VALUE}{{{labels}}}", "values": repr(rate)})
            series.append({"series": f"{KPI_SAMPLES}{{{labels}}}", "values": str(samples)})
    want = []
    for kpi, lower in (("service_level", False), ("escalation_rate", True)):
        rows = {p: v for (p, k), v in FUNNEL_INPUT.items() if k == kpi and v[1] > 0}
        centre = sum(r * n for r, n in rows.values()) / sum(n for _, n in rows.values())
        for partner, (rate, n) in rows.items():
            z = (rate - centre) / (centre * (1 - centre) / n) ** 0.5
            want.append({"labels": f'{{partner="{partner}",kpi="{kpi}"}}',
                         "value": -z if lower else z})
    assert any(abs(w["value"]) > 3.09 for w in want)  # the input does reach the limits
    spec = {"rule_files": [], "evaluation_interval": "1m", "tests": [{
        "interval": "1m", "input_series": series,
        "promql_expr_test": [{"expr": expr, "eval_time": "0m", "exp_samples": want}]}]}
    (tmp_path / "funnel.yml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    result = subprocess.run([promtool, "test", "rules", "funnel.yml"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_oncall_lists_the_partner_s_most_urgent_tickets() -> None:
    """The ticket list of the on-call dashboard reads the urgent-ticket series of $partner,
    most urgent first; a catalog without ticket alerts has no such panel."""
    from streams.outputs.series import URGENT_TICKET_LEFT

    oncall = _load("partnerpulse-oncall.json")
    panel = _panel(oncall, URGENT_TITLE)
    [target] = panel["targets"]
    assert target["expr"] == (f"sort(max by (kpi, ticket, state) "
                              f'({URGENT_TICKET_LEFT}{{partner="$partner"}}))')
    assert target["instant"] is True and target["format"] == "table"
    assert panel["gridPos"]["w"] == 24
    catalog = load_catalog(REPO / "config" / "kpis.yaml")
    plain = dashboards.DASHBOARDS["partnerpulse-oncall.json"](dataclasses.replace(
        catalog, kpis=tuple(dataclasses.replace(k, ticket_alerts=False) for k in catalog.kpis))
    ).build()
    assert URGENT_TITLE not in [p.title for p in plain.panels or []]


def test_noc_breaks_the_selected_partner_down_by_channel() -> None:
    from streams.outputs.series import KPI_CHANNEL_SAMPLES, KPI_CHANNEL_VALUE

    catalog = load_catalog(REPO / "config" / "kpis.yaml")
    assert "24h" in catalog.channel_windows
    bases = list(dict.fromkeys(k.base for k in catalog.channel_kpis))
    noc = _load("partnerpulse-noc.json")
    variables = {v["name"]: v for v in noc["templating"]["list"]}
    assert variables["partner"]["query"] == "label_values(partnerpulse_partner_info, partner)"
    for title, series in (("$partner per channel (24h)", KPI_CHANNEL_VALUE),
                          ("$partner samples per channel (24h)", KPI_CHANNEL_SAMPLES)):
        panel = _panel(noc, title)
        [target] = panel["targets"]
        assert target["expr"] == (f'max by (channel, kpi) ({series}'
                                  '{partner="$partner",window="24h"})')
        assert panel["transformations"][0]["options"] == {
            "rowField": "channel", "columnField": "kpi", "valueField": "Value"}
        # a column per catalog KPI kept by channel, in its unit or against its min_samples
        assert [o["matcher"]["options"] for o in panel["fieldConfig"]["overrides"]] == bases
    # no KPI kept by channel: neither the panels nor the $partner variable
    plain = dashboards.DASHBOARDS["partnerpulse-noc.json"](
        dataclasses.replace(catalog, channel_kpis=())).build()
    assert not [p for p in plain.panels or [] if "channel" in (p.title or "")]
    assert [v.name for v in plain.templating.list_val or []] == ["datasource"]


# --- against a real Prometheus ------------------------------------------------------------------
class Prometheus:
    """Debian's prometheus on a free loopback port, scraping one worker every second."""

    def __init__(self, binary: str, workdir: Path, scrape_port: int) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(RULES)],
            "scrape_configs": [{"job_name": "partnerpulse",
                                "static_configs": [{"targets": [f"127.0.0.1:{scrape_port}"]}]}],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        self.cmd = [binary, f"--config.file={config_path}",
                    f"--storage.tsdb.path={workdir / 'tsdb'}",
                    f"--web.listen-address=127.0.0.1:{self.port}"]
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Prometheus:
        with self.log_path.open("ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdout=log, stderr=subprocess.STDOUT)
        poll(self._ready, 60, "prometheus /-/ready")
        return self

    def _ready(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"prometheus exited: {self.log_path.read_text()[-3000:]}")
        with urllib.request.urlopen(f"{self.url}/-/ready", timeout=2) as resp:
            return bool(resp.status == 200)

    def query(self, expr: str) -> dict[str, Any]:
        """An instant query; the decoded body, also for a 400 (syntax error)."""
        data = urllib.parse.urlencode({"query": expr}).encode()
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/query", data=data, timeout=10) as resp:
                return dict(orjson.loads(resp.read()))
        except urllib.error.HTTPError as exc:  # 400/422 carry {"status": "error", ...}
            return dict(orjson.loads(exc.read()))

    def has_data(self, expr: str) -> bool:
        body = self.query(expr)
        assert body["status"] == "success", (expr, body)
        return bool(body["data"]["result"])

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def assert_every_panel_has_data(live: Prometheus) -> None:
    """Every panel expression of the committed dashboards is valid PromQL and returns data from
    ``live``, a real Prometheus scraping a worker fed by the demo's simulator (history and live
    traffic) with the generated rules loaded. Run by tests/test_demo.py on the demo it starts
    (one worker reading the simulator's history serves both: this check had its own broker,
    worker and simulator, two minutes of the suite)."""
    started = time.monotonic()
    poll(lambda: live.has_data('up{job="partnerpulse"} == 1'), 60, "the worker scraped (up == 1)")
    expressions = _expressions()
    assert len(expressions) >= 40
    # syntax first: any error fails at once, whatever the data (and before waiting for it)
    for uid, pid, title, expr in expressions:
        body = live.query(_substitute(expr, "any-partner"))
        assert body["status"] == "success", f"{uid} panel {pid} {title!r}: {expr}\n{body}"
    # the simulator's history reached the worker: a partner has a value of every KPI of the
    # catalog, the $partner of the panels. The first to (alphabetically among those at once):
    # which partner completes first depends on the simulated traffic (a rare KPI such as
    # rescued_share may need minutes of live traffic for one partner, seconds for another), and
    # the worker reads the topics at their own paces, so the last KPI may come minutes after the
    # first on a loaded machine.
    kpi_ids = {k.id for k in load_catalog(REPO / "config" / "kpis.yaml").kpis}

    def partner_with_every_kpi() -> str | None:
        body = live.query("count by (partner, kpi) (partnerpulse_kpi_value)")
        kpis: dict[str, set[str]] = {}
        for r in body["data"]["result"]:
            kpis.setdefault(r["metric"]["partner"], set()).add(r["metric"]["kpi"])
        return next((p for p in sorted(kpis) if kpis[p] >= kpi_ids), None)

    partner: str = poll(partner_with_every_kpi, 240, "a partner with every KPI in Prometheus")
    every_kpi_at = time.monotonic() - started
    # then data: some need a second scrape (rate, delta) or a rule evaluation: poll, one deadline
    deadline = time.monotonic() + 120
    # the urgent-ticket list is empty while $partner has no ticket at risk (it depends on the
    # moment): it must list some partner's, any partner's
    pending = [(uid, pid, title, expr.replace('partner="$partner"', 'partner=~".+"')
                if title == URGENT_TITLE else expr) for uid, pid, title, expr in expressions]
    while pending and time.monotonic() < deadline:
        pending = [e for e in pending if not live.has_data(_substitute(e[3], partner))]
        if pending:
            time.sleep(1)  # one scrape/evaluation interval between rounds of polling
    assert not pending, f"panels without data ($partner={partner}):\n" + "\n".join(
        f"{uid} panel {pid} {title!r}: {_substitute(expr, partner)}"
        for uid, pid, title, expr in pending)
    # the partner variable of the on-call dashboard lists the simulated partners
    with urllib.request.urlopen(
            f"{live.url}/api/v1/label/partner/values?match[]=partnerpulse_partner_info",
            timeout=10) as resp:
        assert partner in orjson.loads(resp.read())["data"]
    print(f"every KPI of {partner} in Prometheus {every_kpi_at:.1f}s and {len(expressions)} panel "
          f"queries returned data {time.monotonic() - started:.1f}s after the worker was up")
