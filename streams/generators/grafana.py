"""Grafana building blocks for the generated dashboards (grafana-foundation-sdk builders).

The data source, the state colours, and one helper per kind of panel the dashboards repeat
(big numbers, matrices); :mod:`streams.generators.dashboards` builds each panel from these.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterable
from typing import Final

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import prometheus, stat, table
from grafana_foundation_sdk.builders.common import ReduceDataOptions, TableSortByFieldState
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

from streams.config.catalog import Catalog, Kpi
from streams.generators.promql import in_state
from streams.outputs.series import PARTNER_INFO

NOC_UID: Final = "partnerpulse-noc"
ONCALL_UID: Final = "partnerpulse-oncall"
"""The on-call dashboard: the generated rules link it (and the worker's default dashboard_url)."""
EXEC_UID: Final = "partnerpulse-exec"
DATASOURCE_UID: Final = "prometheus"
"""uid of the provisioned Prometheus data source (config/grafana/provisioning/datasources)."""

DS: Final = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
TAGS: Final = ["partnerpulse"]

# partnerpulse_kpi_state as one number per partner x KPI x window (value mappings below)
STATE_CODES: Final = (("breach", 2), ("at_risk", 1), ("ok", 0), ("insufficient_data", -1))
STATE_MAPPINGS: Final[list[model.ValueMapping]] = [model.ValueMap(options={
    "-1": model.ValueMappingResult(text="n/a", color="#3d3d3d", index=0),
    "0": model.ValueMappingResult(text="OK", color="green", index=1),
    "1": model.ValueMappingResult(text="AT RISK", color="orange", index=2),
    "2": model.ValueMappingResult(text="BREACH", color="red", index=3),
})]

UNITS: Final = {"seconds": "s", "ratio": "percentunit", "score": "none"}


# --- helpers ----------------------------------------------------------------------------------
def prom_query(expr: str, legend: str = "", ref: str = "A", instant: bool = False,
       fmt: str | None = None) -> prometheus.Dataquery:
    query = prometheus.Dataquery().expr(expr).ref_id(ref).datasource(DS)
    if legend:
        query = query.legend_format(legend)
    query = query.instant() if instant else query.range()
    if fmt == "table":
        query = query.format(PromQueryFormat.TABLE)
    return query


def grid(x: int, y: int, w: int, h: int) -> model.GridPos:
    return model.GridPos(h=h, w=w, x=x, y=y)


def thresholds(*steps: tuple[float | None, str]) -> dash.ThresholdsConfig:
    return dash.ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(
        [model.Threshold(value=value, color=color) for value, color in steps])


ATTAINMENT_STEPS: Final = ((None, "red"), (0.9, "orange"), (1.0, "green"))


def big_stat(pid: int, title: str, expr: str, pos: model.GridPos, unit: str = "short",
              steps: Iterable[tuple[float | None, str]] = ((None, "green"), (1, "red")),
              description: str = "", legend: str = "") -> stat.Panel:
    return (stat.Panel().id(pid).title(title).description(description).datasource(DS)
            .grid_pos(pos).unit(unit).with_target(prom_query(expr, legend, instant=True))
            .thresholds(thresholds(*steps))
            .color_mode(common.BigValueColorMode.BACKGROUND)
            .graph_mode(common.BigValueGraphMode.NONE)
            .text_mode(common.BigValueTextMode.VALUE)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def matrix(pid: int, title: str, expr: str, pos: model.GridPos, rows: str, columns: str,
            description: str = "") -> table.Panel:
    """An instant query as a table: one row per ``rows`` label, one column per ``columns``."""
    return (table.Panel().id(pid).title(title).description(description).datasource(DS)
            .grid_pos(pos).with_target(prom_query(expr, instant=True, fmt="table"))
            .with_transformation(model.DataTransformerConfig(
                id_val="groupingToMatrix",
                options={"columnField": columns, "rowField": rows, "valueField": "Value"}))
            .cell_options(common.TableColoredBackgroundCellOptions())
            .sort_by([TableSortByFieldState().display_name(f"{rows}\\{columns}").desc(False)]))


def kpi_glossary(catalog: Catalog) -> str:
    return "; ".join(f"{k.id}: {k.title} ({k.better} is better)" for k in catalog.kpis)


def state_code(selector: str, by: str = "partner, kpi, window") -> str:
    """The current state of every partner x KPI x window as one number: 2 breach, 1 at risk,
    0 ok, -1 insufficient data (``partnerpulse_kpi_state`` is 1 for exactly one state)."""
    parts = [f"({in_state(state, by, selector)}) * {code}"
             for state, code in STATE_CODES]
    return "max by ({}) (\n  {}\n)".format(by, "\nor\n  ".join(parts))


def kpi_panel_id(kpi: Kpi, base: int) -> int:
    """A panel id derived from the KPI id: stable when KPIs are added, removed or reordered."""
    return base + zlib.crc32(kpi.id.encode()) % 90_000


def datasource_variable() -> dash.DatasourceVariable:
    return (dash.DatasourceVariable("datasource").label("Data source").type("prometheus")
            .current(model.VariableOption(selected=True, text="Prometheus", value=DATASOURCE_UID)))


def partner_variable() -> dash.QueryVariable:
    """``$partner``: one of the partners the workers export (on-call, the NOC's channels)."""
    return (dash.QueryVariable("partner").label("Partner").datasource(DS)
            .query(f"label_values({PARTNER_INFO}, partner)")
            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
            .sort(model.VariableSort.ALPHABETICAL_ASC))


def new_dashboard(uid: str, title: str, description: str, refresh: str,
               time_from: str) -> dash.Dashboard:
    return (dash.Dashboard(title).uid(uid).description(description).tags(TAGS)
            .editable().refresh(refresh).time(time_from, "now").timezone("browser")
            .tooltip(model.DashboardCursorSync.CROSSHAIR)
            .with_variable(datasource_variable())
            .link(dash.DashboardLink("partnerpulse").type(model.DashboardLinkType.DASHBOARDS)
                  .tags(TAGS).as_dropdown(True).include_vars(False).keep_time(True)))
