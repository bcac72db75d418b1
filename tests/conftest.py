"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from streams.tools.broker import PORT_RANGE_ENV, EmbeddedBroker
from streams.tools.broker import free_port as _free_port


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist, give each worker process its own range of ports (inherited by the
    brokers, workers and demos it starts): see ``PORT_RANGE_ENV`` in streams/tools/broker.py."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    if worker.startswith("gw") and worker[2:].isdigit():
        slot = int(worker[2:]) % 4
        os.environ[PORT_RANGE_ENV] = f"{10_000 + 5_000 * slot}-{14_999 + 5_000 * slot}"


def on_ci() -> bool:
    """CI runs .ci/run with CI=true: there a missing tool is a failure, not a skip."""
    return os.environ.get("CI", "").strip().lower() in {"1", "true", "yes"}


def require_binary(name: str, package: str) -> str:
    """Path of ``name``; skip the test without it, except on CI where it fails.

    scripts/test.sh installs the Debian ``package`` (see APT_NEEDS there).
    """
    path = shutil.which(name)
    if path is None:
        message = f"{name} not installed (Debian package {package}; scripts/test.sh installs it)"
        if on_ci():
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    """One embedded tansu broker for the whole session (memory only).

    Topics and consumer groups persist across tests: use unique names per test,
    or a function-scoped fixture of your own for a fresh broker.
    """
    log = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(log_path=log) as running:
        yield running


@pytest.fixture
def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free when the test started."""
    return _free_port()


@pytest.fixture
def alertmanager(tmp_path: Path) -> Iterator[Any]:
    """A real Alertmanager (Debian's) on a free port, loaded with the shipped
    ``config/alertmanager.yml``: its own API is the witness of what partnerpulse pushed."""
    from tests.test_alertmanager_client import Alertmanager

    binary = require_binary("prometheus-alertmanager", "prometheus-alertmanager")
    config = (Path(__file__).resolve().parent.parent / "config" / "alertmanager.yml").read_text()
    (tmp_path / "am").mkdir()
    am = Alertmanager(binary, tmp_path / "am", _free_port(), config=config).start()
    yield am
    am.stop()


@pytest.fixture
def promtool() -> str:
    """Path of Prometheus' ``promtool`` (skip locally without it, fail on CI)."""
    return require_binary("promtool", "prometheus")


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A throwaway CA, a server certificate for localhost/127.0.0.1 and a client certificate."""
    openssl = require_binary("openssl", "openssl")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=pp-test-ca")
    (d / "san.cnf").write_text("subjectAltName=DNS:localhost,IP:127.0.0.1\n")
    for name, cn in (("server", "localhost"), ("client", "pp-worker")):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={cn}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2", "-extfile", "san.cnf")
    # a second CA that signed nothing here: trusting it must fail the handshake
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "other.key", "-out",
        "other.pem", "-days", "2", "-subj", "/CN=pp-other-ca")
    return {p.stem + p.suffix.replace(".", "_"): p for p in d.iterdir()}
