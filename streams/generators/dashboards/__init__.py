"""Grafana dashboards as code, generated from the KPI catalog with grafana-foundation-sdk.

Three dashboards land in ``dashboards/`` as JSON (sorted keys, 2-space indent, trailing
newline), committed and checked byte for byte against regeneration:

* ``partnerpulse-noc``: the NOC wall. Partner x KPI state grids (1h, 24h), tickets aging
  past their open-to-status target, pipeline health, breach and at-risk counts; one partner's
  (``$partner``) ``by: [channel]`` KPIs per contact channel (value and samples, 24h).
* ``partnerpulse-oncall``: one partner (``$partner``): each KPI's value against its target
  over time, samples, state history, events rate, open items.
* ``partnerpulse-exec``: report cards (each KPI as % of goal, 7d and 30d), worst KPI per
  partner, tier comparison, worst movers, integrity; the SLA x experience quadrant per partner
  (30d; watermelon partners, SLA met and experience below target, first and in red).

Every dashboard has a ``${datasource}`` Prometheus variable; every dashboard and panel has an
explicit, stable id (panels of per-KPI loops derive theirs from the KPI id, so adding a KPI
does not renumber the others). One function per panel.

Regenerate:  partnerpulse dashboards
Check:       partnerpulse dashboards --check   (exit 1 when a file is stale)

Worst movers: ``A - A offset 1h`` is exact but empty until the series is an hour old (a fresh
Prometheus, a new partner). The query is ``(A - A offset 1h) or delta(A[1h])``: the exact
change once an hour of history exists, otherwise the change over the history there is
(``delta`` extrapolates by at most half a scrape interval at each end), so the panel shows
data from the second scrape on. The same holds for 1d.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Final

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import dashboard as model

from streams.config.catalog import DEFAULT_CONFIG_DIR, Catalog
from streams.generators.dashboards.executive import exec_dashboard
from streams.generators.dashboards.noc import noc_dashboard
from streams.generators.dashboards.oncall import oncall_dashboard
from streams.generators.files import load_catalog_or_report, write_or_check
from streams.generators.grafana import (
    DATASOURCE_UID,
    EXEC_UID,
    NOC_UID,
    ONCALL_UID,
    kpi_panel_id,
    state_code,
)

# --- rendering ----------------------------------------------------------------------------------
DASHBOARDS: Final[dict[str, Callable[[Catalog], dash.Dashboard]]] = {
    f"{NOC_UID}.json": noc_dashboard,
    f"{ONCALL_UID}.json": oncall_dashboard,
    f"{EXEC_UID}.json": exec_dashboard,
}


def _check_ids(name: str, built: cogbuilder.Builder[model.Dashboard]) -> model.Dashboard:
    board = built.build()
    ids = [panel.id_val for panel in board.panels or []]
    if None in ids or len(set(ids)) != len(ids):
        raise ValueError(f"{name}: panel ids must be explicit and unique: {ids}")
    return board


def render_all(catalog: Catalog) -> dict[str, str]:
    """Every dashboard as file name -> JSON text (sorted keys, 2-space indent, final newline)."""
    out: dict[str, str] = {}
    for name, build in DASHBOARDS.items():
        board = _check_ids(name, build(catalog))
        out[name] = json.dumps(board, cls=JSONEncoder, sort_keys=True, indent=2,
                               ensure_ascii=False) + "\n"
    return out


def dashboards_dir(config_dir: Path | None = None) -> Path:
    """``dashboards/`` next to the config directory."""
    return (config_dir or DEFAULT_CONFIG_DIR).resolve().parent / "dashboards"


def main(check: bool = False, config_dir: Path | None = None, out_dir: Path | None = None) -> int:
    """Write ``dashboards/*.json``, or with ``check`` return 1 when any file is stale."""
    base = config_dir or DEFAULT_CONFIG_DIR
    catalog = load_catalog_or_report(base)
    if catalog is None:
        return 2
    target = out_dir or dashboards_dir(base)
    files = {target / name: text for name, text in render_all(catalog).items()}
    return write_or_check(files, check, "partnerpulse dashboards")


__all__ = [  # DATASOURCE_UID, kpi_panel_id and state_code live in streams.generators.grafana
    "DASHBOARDS",
    "DATASOURCE_UID",
    "EXEC_UID",
    "NOC_UID",
    "ONCALL_UID",
    "dashboards_dir",
    "kpi_panel_id",
    "main",
    "render_all",
    "state_code",
]
