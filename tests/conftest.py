"""Shared pytest fixtures."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator

import pytest

from streams.broker import EmbeddedBroker
from streams.broker import free_port as _free_port


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
def promtool() -> str:
    """Path of Prometheus' ``promtool`` (skip locally without it, fail on CI)."""
    return require_binary("promtool", "prometheus")
