"""Golden files for the generators, in the style of slok/sloth's tests: one small catalog per
KPI kind under ``tests/golden/<case>/`` (``kpis.yaml``, ``partners.yaml``), with the rules file
and the dashboards generated from it committed beside it (``rules/partnerpulse.rules.yml``,
``dashboards/*.json``). Each case is regenerated and compared byte for byte, so a change to the
generators' output shows up here as a diff of the committed files, case by case.

After a deliberate change of the generated output, rewrite the expected files with::

    .venv/bin/python tests/test_golden.py

and review the diff before committing it.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from streams.config.catalog import load_config
from streams.generators import dashboards, rules

GOLDEN = Path(__file__).resolve().parent / "golden"
CASES = sorted(p.name for p in GOLDEN.iterdir() if (p / "kpis.yaml").is_file())


def _expected(case: str) -> dict[Path, str]:
    """Every generated file of a case: its path under the case directory -> its text."""
    base = GOLDEN / case
    catalog, _ = load_config(base)  # the partner file must be valid too
    files = {rules.rules_path(base): rules.render_rules(catalog)}
    files.update({base / "dashboards" / name: text
                  for name, text in dashboards.render_all(catalog).items()})
    return files


def test_every_kpi_kind_has_a_case() -> None:
    kinds = {"deadline", "duration_mean", "duration_percentile", "duration_share_within",
             "follow_up", "mean_field", "ratio", "ratio_distinct"}
    assert set(CASES) == kinds


@pytest.mark.parametrize("case", CASES)
def test_generated_files_match_the_golden_files(case: str) -> None:
    expected = _expected(case)
    on_disk = {p for p in (GOLDEN / case).rglob("*")
               if p.is_file() and p.name not in ("kpis.yaml", "partners.yaml")}
    assert on_disk == set(expected), f"{case}: golden files differ from the generated set"
    for path, text in expected.items():
        assert path.read_bytes() == text.encode("utf-8"), (
            f"{path.relative_to(GOLDEN)} differs from the generator's output "
            "(after a deliberate change: python tests/test_golden.py, then review the diff)")


@pytest.mark.parametrize("case", CASES)
def test_golden_rules_pass_promtool(case: str, promtool: str) -> None:
    path = rules.rules_path(GOLDEN / case)
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True,
                            text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def _update() -> None:
    for case in CASES:
        for path, text in _expected(case).items():
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            print(f"wrote {path.relative_to(GOLDEN.parent.parent)}")


if __name__ == "__main__":
    _update()
    sys.exit(0)
