"""docker-compose.yml, Dockerfile and config/prometheus.yml stay consistent.

No Docker needed: the compose file is parsed, not run. ``promtool`` (Debian
package ``prometheus``, installed by scripts/test.sh) validates the Prometheus
config; without it the check is skipped locally but fails on CI (CI=true): see
the ``promtool`` fixture in conftest.py.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
COMPOSE = REPO / "docker-compose.yml"
PROMETHEUS = REPO / "config" / "prometheus.yml"


def _compose() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict) and isinstance(data.get("services"), dict)
    return data


def _services() -> dict[str, dict[str, Any]]:
    return _compose()["services"]


def _bind_sources(service: dict[str, Any]) -> list[str]:
    """Host paths bind-mounted into a service (short and long volume syntax)."""
    sources = []
    for vol in service.get("volumes", []):
        if isinstance(vol, str):
            source = vol.split(":", 1)[0]
            if source.startswith((".", "/", "~")):
                sources.append(source)
        elif isinstance(vol, dict) and vol.get("type") == "bind":
            sources.append(str(vol["source"]))
    return sources


def _command(service: dict[str, Any]) -> list[str]:
    cmd = service.get("command", [])
    return cmd.split() if isinstance(cmd, str) else list(cmd)


def test_expected_services() -> None:
    services = _services()
    assert {"kafka", "worker-1", "worker-2", "simulator", "prometheus"} <= set(services)
    assert services["simulator"].get("profiles") == ["sim"]


@pytest.mark.parametrize("name", sorted(_services()))
def test_service_has_image_or_build_and_healthcheck(name: str) -> None:
    service = _services()[name]
    assert service.get("image") or service.get("build"), f"{name}: neither image nor build"
    build = service.get("build")
    if build is not None:
        context = build if isinstance(build, str) else build.get("context", ".")
        dockerfile = "Dockerfile" if isinstance(build, str) else build.get("dockerfile", "Dockerfile")
        assert (REPO / context / dockerfile).is_file(), f"{name}: no {dockerfile} in {context}"
    image = service.get("image", "")
    if image and not build:
        assert re.fullmatch(r"[\w./-]+:[\w.-]+", image), f"{name}: pin an image tag: {image!r}"
        assert not image.endswith(":latest"), f"{name}: pin an image tag, not latest"
    health = service.get("healthcheck")
    assert health and health.get("test") and not health.get("disable"), f"{name}: no healthcheck"


@pytest.mark.parametrize("name", sorted(_services()))
def test_bind_mounts_exist_in_repo(name: str) -> None:
    for source in _bind_sources(_services()[name]):
        assert not source.startswith(("/", "~")), f"{name}: absolute host path {source}"
        path = (REPO / source).resolve()
        assert path.is_relative_to(REPO), f"{name}: {source} is outside the repo"
        assert path.exists(), f"{name}: bind-mounted {source} is not in the repo"


def test_named_volumes_are_declared() -> None:
    data = _compose()
    declared = set(data.get("volumes") or {})
    for name, service in data["services"].items():
        for vol in service.get("volumes", []):
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if source and not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: volume {source} not declared"


def test_depends_on_healthy_services() -> None:
    services = _services()
    for name, service in services.items():
        deps = service.get("depends_on") or {}
        for dep, spec in (deps.items() if isinstance(deps, dict) else ((d, {}) for d in deps)):
            assert dep in services, f"{name} depends on unknown service {dep}"
            if spec.get("condition") == "service_healthy":
                assert services[dep].get("healthcheck"), f"{dep} has no healthcheck"
    for worker in ("worker-1", "worker-2", "simulator"):
        assert services[worker]["depends_on"]["kafka"]["condition"] == "service_healthy"


def test_workers_and_simulator_commands() -> None:
    services = _services()
    for worker in ("worker-1", "worker-2"):
        cmd = _command(services[worker])
        assert cmd[0] == "worker"
        assert cmd[cmd.index("--broker") + 1] == "kafka://kafka:9092"
        assert cmd[cmd.index("--web-port") + 1] == "6066"
        assert cmd[cmd.index("--web-bind") + 1] == "0.0.0.0"
    data = {v for w in ("worker-1", "worker-2") for v in services[w]["volumes"]
            if v.endswith(":/data")}
    assert len(data) == 2, "each worker needs its own data volume"
    for w in ("worker-1", "worker-2"):  # and reads the shipped token file (read-only)
        env = services[w]["environment"]["PARTNERPULSE_ACCESS_TOKENS_FILE"]
        assert f"./config/access-tokens.yaml:{env}:ro" in services[w]["volumes"]
    sim = _command(services["simulator"])
    assert sim[0] == "simulate" and sim[sim.index("--broker") + 1] == "kafka://kafka:9092"


def test_dockerfile() -> None:
    text = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim\b", text, re.M)
    # the image installs the base package: whatever the worker needs by default is in it
    install = re.search(r"^RUN pip install (\S+)", text, re.M)
    assert install is not None and install.group(1) == ".", "the image installs `pip install .`"
    assert re.search(r'^ENTRYPOINT \["partnerpulse"\]', text, re.M)
    for line in text.splitlines():
        if line.startswith("COPY "):
            for source in line.split()[1:-1]:
                assert (REPO / source).exists(), f"Dockerfile: COPY {source}: not in the repo"


def test_prometheus_scrapes_both_workers() -> None:
    config = yaml.safe_load(PROMETHEUS.read_text())
    targets = {
        target
        for job in config["scrape_configs"]
        for static in job.get("static_configs", [])
        for target in static["targets"]
    }
    assert {"worker-1:6066", "worker-2:6066"} <= targets
    services = _services()
    for target in targets:
        assert target.split(":")[0] in services
    assert config["global"]["scrape_interval"] == "15s"


def test_promtool_check_config(promtool: str) -> None:
    result = subprocess.run(
        [promtool, "check", "config", str(PROMETHEUS)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


# --- Grafana: provisioning and the generated dashboards -----------------------------------------
GRAFANA_PROVISIONING = REPO / "config" / "grafana" / "provisioning"


def _grafana_mounts() -> dict[str, str]:
    """Container path -> host path of the grafana service's bind mounts."""
    mounts = {}
    for vol in _services()["grafana"].get("volumes", []):
        assert isinstance(vol, str), vol
        source, target = vol.split(":")[:2]
        mounts[target] = source
    return mounts


def test_grafana_service() -> None:
    services = _services()
    grafana = services["grafana"]
    assert re.fullmatch(r"grafana/grafana-oss:\d+\.\d+\.\d+", grafana["image"])
    assert grafana["ports"] == ["127.0.0.1:3000:3000"]
    assert grafana["depends_on"]["prometheus"]["condition"] == "service_healthy"
    assert "/api/health" in " ".join(grafana["healthcheck"]["test"])
    env = grafana["environment"]
    assert str(env["GF_AUTH_ANONYMOUS_ENABLED"]).lower() == "true"
    assert env["GF_AUTH_ANONYMOUS_ORG_ROLE"] == "Viewer"
    mounts = _grafana_mounts()
    assert (REPO / mounts["/etc/grafana/provisioning"]).resolve() == GRAFANA_PROVISIONING
    home = env.get("GF_DASHBOARDS_DEFAULT_HOME_DASHBOARD_PATH")
    if home:
        folder, name = home.rsplit("/", 1)
        assert (REPO / mounts[folder] / name).is_file(), home


def test_grafana_datasource_provisioning() -> None:
    data = yaml.safe_load((GRAFANA_PROVISIONING / "datasources" / "prometheus.yml").read_text())
    assert data["apiVersion"] == 1
    (source,) = data["datasources"]
    assert source["uid"] == "prometheus" and source["type"] == "prometheus"
    assert source["url"] == "http://prometheus:9090"
    host, port = source["url"].removeprefix("http://").split(":")
    assert host in _services() and f"127.0.0.1:{port}:{port}" in _services()[host]["ports"]


def test_grafana_dashboard_provider_points_at_the_generated_dashboards() -> None:
    import json

    from streams.config.catalog import load_catalog
    from streams.generators.dashboards import DATASOURCE_UID, render_all

    data = yaml.safe_load((GRAFANA_PROVISIONING / "dashboards" / "partnerpulse.yml").read_text())
    assert data["apiVersion"] == 1
    (provider,) = data["providers"]
    assert provider["type"] == "file"
    path = provider["options"]["path"]
    assert path == "/var/lib/grafana/dashboards"
    host = REPO / _grafana_mounts()[path]
    assert host.resolve() == REPO / "dashboards" and host.is_dir()
    expected = render_all(load_catalog(REPO / "config" / "kpis.yaml"))
    assert {p.name for p in host.glob("*.json")} == set(expected)
    for name, text in expected.items():
        assert (host / name).read_text(encoding="utf-8") == text, f"{name} is stale"
        variables = {v["name"]: v for v in json.loads(text)["templating"]["list"]}
        assert variables["datasource"]["current"]["value"] == DATASOURCE_UID


# --- what ships is what is tested --------------------------------------------------------------
# Options that say where a worker connects, listens or keeps its files, or which clock and
# catalog a test runs: they may differ between docker-compose and the test harness. The group's
# timing is not among them: the tests run the shipped session and rebalance timeouts. Every other option
# changes what the worker does, so it must be left at its default on both sides.
DEPLOYMENT_OPTIONS = frozenset({
    "--broker", "--web-port", "--web-bind", "--data-dir", "--alertmanager", "--app-id",
    "--partitions", "--log-level", "--clock", "--config",
})
# the token file decides who may read the data views, not what a worker computes; the access
# tests (tests/test_access.py) run a worker with one
DEPLOYMENT_ENV = frozenset({"PARTNERPULSE_DATA_DIR", "PARTNERPULSE_ACCESS_TOKENS_FILE"})


def _options(cmd: list[str]) -> set[str]:
    return {arg.split("=", 1)[0] for arg in cmd if arg.startswith("--")}


def test_shipped_worker_runs_the_tested_configuration(tmp_path: Path) -> None:
    """docker-compose's workers, the demo and the fault tests' workers set only deployment
    options: the store and every other behaviour come from the settings' defaults on all of
    them, and the image installs no extra that changes what runs."""
    from streams.config.settings import Settings
    from tests.harness import Worker

    tested = Worker("kafka://127.0.0.1:9", tmp_path).cmd
    tested = tested[tested.index("worker") + 1:]
    assert _options(tested) <= DEPLOYMENT_OPTIONS, _options(tested) - DEPLOYMENT_OPTIONS
    for name in ("worker-1", "worker-2"):
        service = _services()[name]
        shipped = _command(service)[1:]
        assert _options(shipped) <= DEPLOYMENT_OPTIONS, (name, _options(shipped) - DEPLOYMENT_OPTIONS)
        assert set(service.get("environment", {})) <= DEPLOYMENT_ENV, name
    import inspect

    from streams.tools import demo as cli  # the demo (and its worker command) lives in tools/demo.py

    # the demo's worker command is built in cmd = [...] / cmd += [...] statements
    demo = inspect.getsource(cli.demo)
    statements = re.findall(r"cmd \+?= \[(.*?)\]", demo, re.S)
    assert statements, "cli.demo no longer builds its worker command as `cmd = [...]`"
    flags = set(re.findall(r'"(--[a-z-]+)"', " ".join(statements)))
    assert "--broker" in flags and flags <= DEPLOYMENT_OPTIONS, flags - DEPLOYMENT_OPTIONS
    # the default store needs no optional extra: the image (`pip install .`) can run it
    assert Settings.model_fields["store"].default == "memory"
