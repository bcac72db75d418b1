"""What the generated rules' annotations are made of: the Go templates Prometheus expands, and the
placeholder links. Shared by the partner rules (:mod:`streams.generators.rules`) and the
pipeline's (:mod:`streams.generators.pipeline_rules`)."""

from __future__ import annotations

import re
from typing import Final

from streams.config.catalog import Catalog
from streams.generators.grafana import ONCALL_UID

GRAFANA_URL: Final = "https://grafana.example"
DASHBOARD_URL: Final = f"{GRAFANA_URL}/d/{ONCALL_UID}"
RUNBOOK_URL: Final = "https://runbooks.example/partnerpulse"
"""Placeholders for Grafana and the runbooks in the committed rules: replace them for a real
site. (The worker's own alerts link ``settings.dashboard_url`` and ``settings.runbook_url``,
whose defaults point at the local docker-compose Grafana and the README: a running worker has
real links, a rules file for any site has obvious placeholders.)"""


# --- template helpers (Go text/template, expanded by Prometheus) ---------------------
_BRACE_PAIR: Final = re.compile(r"([{}])(?=[{}])")


def static(text: str) -> str:
    """Catalog text placed in a template: no accidental template actions.

    A space goes between every two adjacent braces: replacing "{{" alone left "{{{" as "{ {{",
    which still opens an action (found by tests/test_security.py).
    """
    return _BRACE_PAIR.sub(r"\1 ", text)


def unit_switch(catalog: Catalog) -> str:
    """Template code setting ``$unit`` from ``$labels.kpi``, generated from the catalog."""
    by_unit: dict[str, list[str]] = {}
    for kpi in catalog.kpis:
        by_unit.setdefault(kpi.unit, []).append(kpi.id)
    branches: list[str] = []
    for unit in sorted(by_unit):
        ids = " ".join(f'"{kpi_id}"' for kpi_id in by_unit[unit])
        keyword = "if" if not branches else "else if"
        branches.append(f'{{{{- {keyword} eq $labels.kpi {ids} }}}}{{{{ $unit = "{unit}" }}}}')
    return '{{- $unit := "" -}}\n' + "\n".join(branches) + "\n{{- end -}}\n"


def format_value(var: str, unit: str | None) -> str:
    """Template code printing ``var`` in the KPI's unit (``$unit`` at run time when None)."""
    by_unit = {
        "seconds": f"{{{{ {var} | humanizeDuration }}}}",
        "ratio": f"{{{{ {var} | humanizePercentage }}}}",
        "score": f'{{{{ printf "%.2f" {var} }}}}',
        "count": f'{{{{ printf "%.0f" {var} }}}}',
    }
    if unit is not None:
        return by_unit.get(unit, f'{{{{ printf "%g" {var} }}}}')
    return (f'{{{{ if eq $unit "seconds" }}}}{by_unit["seconds"]}'
            f'{{{{ else if eq $unit "ratio" }}}}{by_unit["ratio"]}'
            f'{{{{ else if eq $unit "score" }}}}{by_unit["score"]}'
            f'{{{{ else }}}}{{{{ printf "%g" {var} }}}}{{{{ end }}}}')


def queried(query: str, unit: str | None) -> str:
    """Template code running ``query`` (a Go expression) and printing its first value, or n/a."""
    return (f"{{{{ with query {query} }}}}{{{{ $v := . | first | value }}}}{format_value('$v', unit)}"
            "{{ else }}n/a{{ end }}")
