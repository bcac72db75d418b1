"""The generated Grafana dashboards: committed bytes equal regeneration, and every panel query
is valid PromQL that returns data from a real Prometheus scraping a real worker.

The second test runs the embedded broker, a wall-clock worker, the simulator (live traffic plus
its warm-start history, so every window has data) and Debian's ``prometheus`` (scraping every
second, loading the generated rules), then queries each panel expression.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import yaml

from streams.config.catalog import load_catalog
from streams.generators import dashboards
from streams.ingest.topics import all_topics
from streams.runtime.kafka_admin import ensure_topics
from streams.tools.broker import EmbeddedBroker, free_port
from tests.conftest import require_binary
from tests.harness import REPO, Worker, poll

DASHBOARDS = REPO / "dashboards"
RULES = REPO / "config" / "rules" / "partnerpulse.rules.yml"
PARTNER = "summit-broadband"
# What Grafana substitutes before a query reaches Prometheus ($datasource is never in an expr).
SUBSTITUTIONS = {"$partner": PARTNER, "$window": "1h", "$__rate_interval": "1m",
                 "$__interval": "15s"}
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


def _substitute(expr: str) -> str:
    # longest names first: $__rate_interval before $__interval
    for name in sorted(SUBSTITUTIONS, key=len, reverse=True):
        expr = expr.replace(name, SUBSTITUTIONS[name])
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


@pytest.fixture
def live(tmp_path: Path) -> Iterator[Prometheus]:
    """Broker, wall-clock worker, simulator and Prometheus, all stopped afterwards.

    The simulator runs as ``partnerpulse simulate`` (which calls ``run_simulator``) in a
    subprocess rather than a thread: ``run_simulator`` installs a SIGTERM handler, which Python
    allows only in the main thread, and a subprocess can be stopped as soon as the test is done.
    """
    binary = require_binary("prometheus", "prometheus")
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as broker:
        ensure_topics(broker.bootstrap, all_topics(4))
        worker = Worker(broker.url, tmp_path, clock="wall", app_id="pp-dashboards").start()
        sim_log = (tmp_path / "simulator.log").open("ab")
        sim = subprocess.Popen(
            [sys.executable, "-m", "streams", "simulate", "--broker", broker.url, "--rate", "50",
             "--seed", "7", "--drift-minutes", "10", "--duration", "200"],
            stdout=sim_log, stderr=subprocess.STDOUT, cwd=REPO)
        sim_log.close()
        prom: Prometheus | None = None
        try:
            prom = Prometheus(binary, tmp_path, worker.port).start()
            yield prom
        finally:
            if prom is not None:
                prom.stop()
            sim.terminate()  # run_simulator flushes and returns on SIGTERM
            try:
                sim.wait(30)
            except subprocess.TimeoutExpired:
                sim.kill()
                sim.wait()
            worker.stop()


@pytest.mark.slow
@pytest.mark.timeout(420)
def test_every_panel_query_returns_data_from_prometheus(live: Prometheus) -> None:
    started = time.monotonic()
    poll(lambda: live.has_data('up{job="partnerpulse"} == 1'), 60, "the worker scraped (up == 1)")
    # the simulator's history reached the worker: every KPI of the catalog has a value for the
    # partner (the worker reads the topics at their own paces, so the last KPI may come minutes
    # after the first on a loaded machine)
    kpi_ids = {k.id for k in load_catalog(REPO / "config" / "kpis.yaml").kpis}

    def every_kpi_exported() -> bool:
        body = live.query(f'count by (kpi) (partnerpulse_kpi_value{{partner="{PARTNER}"}})')
        return {r["metric"]["kpi"] for r in body["data"]["result"]} >= kpi_ids

    poll(every_kpi_exported, 240, f"every KPI of {PARTNER} in Prometheus")
    expressions = _expressions()
    assert len(expressions) >= 40
    # syntax first: any error fails at once, whatever the data
    for uid, pid, title, expr in expressions:
        body = live.query(_substitute(expr))
        assert body["status"] == "success", f"{uid} panel {pid} {title!r}: {expr}\n{body}"
    # then data: some need a second scrape (rate, delta) or a rule evaluation: poll, one deadline
    deadline = time.monotonic() + 60
    pending = list(expressions)
    while pending and time.monotonic() < deadline:
        pending = [e for e in pending if not live.has_data(_substitute(e[3]))]
        if pending:
            time.sleep(1)  # one scrape/evaluation interval between rounds of polling
    assert not pending, "panels without data:\n" + "\n".join(
        f"{uid} panel {pid} {title!r}: {_substitute(expr)}" for uid, pid, title, expr in pending)
    # the partner variable of the on-call dashboard lists the simulated partners
    with urllib.request.urlopen(
            f"{live.url}/api/v1/label/partner/values?match[]=partnerpulse_partner_info",
            timeout=10) as resp:
        assert PARTNER in orjson.loads(resp.read())["data"]
    print(f"{len(expressions)} panel queries returned data {time.monotonic() - started:.1f}s "
          "after the worker was up")
