"""The package's layers: each sub-package imports only the layers below it (docs/architecture.md).

Read from the source (every import statement, function-level ones included), not from a running
process, so an import hidden in a rarely taken branch counts too.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "streams"

ALLOWED: dict[str, frozenset[str]] = {
    "ingest": frozenset({"ingest"}),
    "config": frozenset({"ingest", "config"}),
    "engine": frozenset({"ingest", "config", "engine"}),
    "judgement": frozenset({"ingest", "config", "engine", "judgement"}),
    "outputs": frozenset({"ingest", "config", "engine", "judgement", "outputs"}),
    # generators and the worker's runtime stand side by side: neither imports the other (the
    # worker must run without the dashboard SDK, and a generator needs no Kafka)
    "generators": frozenset({"ingest", "config", "engine", "judgement", "outputs", "generators"}),
    "runtime": frozenset({"ingest", "config", "engine", "judgement", "outputs", "runtime"}),
    "tools": frozenset({"ingest", "config", "engine", "judgement", "outputs", "runtime", "tools"}),
}
"""Sub-package -> the sub-packages its modules may import. Modules at the top (cli.py) may
import anything."""


def _imported_layers(path: Path) -> set[tuple[str, int]]:
    """(sub-package, line) of every ``streams.<sub-package>`` import in a module."""
    out: set[tuple[str, int]] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative imports would hide the layer: the package uses none
                out.add((f"relative import (level {node.level})", node.lineno))
                continue
            names = [node.module or ""]
        for name in names:
            parts = name.split(".")
            if parts[0] == "streams" and len(parts) > 1 and parts[1] in ALLOWED:
                out.add((parts[1], node.lineno))
    return out


def _modules() -> list[Path]:
    return sorted(p for layer in ALLOWED for p in (PACKAGE / layer).rglob("*.py"))


def test_every_module_sits_in_a_layer() -> None:
    """No module lives loose in the package but the command line (and its ``__main__``)."""
    loose = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert loose == ["__init__.py", "__main__.py", "cli.py"], loose
    assert {p.name for p in PACKAGE.iterdir() if p.is_dir() and p.name != "__pycache__"} == set(ALLOWED)


@pytest.mark.parametrize("path", _modules(), ids=lambda p: str(p.relative_to(PACKAGE)))
def test_a_module_imports_only_the_layers_below_it(path: Path) -> None:
    layer = path.relative_to(PACKAGE).parts[0]
    wrong = sorted((imported, line) for imported, line in _imported_layers(path)
                   if imported not in ALLOWED[layer])
    assert not wrong, f"{path.relative_to(PACKAGE)} ({layer}) imports " + ", ".join(
        f"{imported} at line {line}" for imported, line in wrong)


def test_a_worker_starts_without_the_heavy_imports_only_reports_need() -> None:
    """Every restart pays the worker's imports: scipy.stats (0.4 s of it) is imported where a
    report's funnel needs it, not when the worker's modules load."""
    import subprocess
    import sys

    code = ("import sys, streams.cli, streams.runtime.pipeline, streams.runtime.views; "
            "print('scipy.stats' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=PACKAGE.parent)
    assert out.stdout.strip() == "False", out.stderr
