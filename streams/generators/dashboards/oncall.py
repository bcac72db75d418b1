"""The on-call dashboard (``partnerpulse-oncall``): one partner's KPIs against their targets over
time, samples, state history, events rate, open items. One function per panel."""

from __future__ import annotations

from collections.abc import Callable

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders.common import (
    TableSortByFieldState,
    VizLegendOptions,
)
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from streams.config.catalog import Catalog, Kpi
from streams.generators.grafana import (
    ATTAINMENT_STEPS,
    DS,
    ONCALL_UID,
    STATE_MAPPINGS,
    UNITS,
    big_stat,
    grid,
    kpi_panel_id,
    new_dashboard,
    partner_variable,
    prom_query,
    state_code,
    thresholds,
)
from streams.generators.promql import (
    ATTAINMENT_SUFFICIENT,
    in_state,
)
from streams.outputs.series import (
    EVENTS_TOTAL,
    KPI_SAMPLES,
    KPI_TARGET,
    KPI_VALUE,
    OPEN_ITEMS,
    PARTNER_INFO,
    URGENT_TICKET_LEFT,
)

# --- on-call: one partner -----------------------------------------------------------------------
P = 'partner="$partner"'


def oncall_tier(pid: int, pos: model.GridPos) -> stat.Panel:
    """The partner's tier."""
    return (big_stat(pid, "Tier", f"max by (tier) ({PARTNER_INFO}{{{P}}})", pos,
                      legend="{{tier}}", steps=((None, "blue"),))
            .text_mode(common.BigValueTextMode.NAME))


def oncall_breaches(pid: int, pos: model.GridPos) -> stat.Panel:
    """The partner's KPI x window in breach."""
    return big_stat(pid, "Breaches",
                     f"count({in_state('breach', 'kpi, window', P)})"
                     " or vector(0)", pos)


def oncall_at_risk(pid: int, pos: model.GridPos) -> stat.Panel:
    """The partner's KPI x window at risk."""
    return big_stat(pid, "At risk",
                     f"count({in_state('at_risk', 'kpi, window', P)})"
                     " or vector(0)", pos, steps=((None, "green"), (1, "orange")))


def oncall_overdue(pid: int, pos: model.GridPos) -> stat.Panel:
    """The partner's open items past their target (per KPI)."""
    return big_stat(pid, "Overdue tickets",
                     f'sum(max by (kpi) ({OPEN_ITEMS}{{{P},stage="100"}})) or vector(0)', pos,
                     steps=((None, "green"), (1, "orange"), (10, "red")))


def oncall_worst_attainment(pid: int, pos: model.GridPos) -> stat.Panel:
    """The partner's worst attainment in $window, among KPIs with enough samples."""
    return big_stat(pid, "Worst KPI ($window)",
                     f"bottomk(1, {ATTAINMENT_SUFFICIENT}"
                     f'{{{P},window="$window"}})', pos, unit="percentunit", legend="{{kpi}}",
                     steps=ATTAINMENT_STEPS).text_mode(common.BigValueTextMode.VALUE_AND_NAME)


def oncall_state_history(pid: int, pos: model.GridPos) -> statetimeline.Panel:
    """Each KPI's state over time in $window."""
    return (statetimeline.Panel().id(pid).title("State ($window)").datasource(DS).grid_pos(pos)
            .with_target(prom_query(state_code(f'{P},window="$window"', "kpi"), "{{kpi}}"))
            .mappings(STATE_MAPPINGS).thresholds(thresholds((None, "transparent")))
            .show_value(common.VisibilityMode.NEVER)
            .legend(VizLegendOptions().show_legend(False)))


def oncall_kpi(pid: int, pos: model.GridPos, kpi: Kpi) -> timeseries.Panel:
    """One KPI of the partner: its value in every window against its target."""
    sel = f'{P},kpi="{kpi.id}"'
    return (timeseries.Panel().id(pid).title(kpi.title).datasource(DS).grid_pos(pos)
            .description(f"{kpi.description} ({kpi.better} is better; kpi {kpi.id})")
            .with_target(prom_query(f"max by (window) ({KPI_VALUE}{{{sel}}})", "{{window}}"))
            .with_target(prom_query(f"max({KPI_TARGET}{{{sel}}})", "target", ref="B"))
            .unit(UNITS[kpi.unit]).decimals(2 if kpi.unit == "score" else 0 if kpi.unit == "seconds" else 1)
            .override_by_name("target", [
                model.DynamicConfigValue(id_val="custom.lineStyle",
                                         value={"fill": "dash", "dash": [10, 10]}),
                model.DynamicConfigValue(id_val="color",
                                         value={"mode": "fixed", "fixedColor": "red"})]))


def oncall_samples(pid: int, pos: model.GridPos) -> timeseries.Panel:
    """Samples behind each KPI in $window."""
    return (timeseries.Panel().id(pid).title("Samples ($window)").datasource(DS).grid_pos(pos)
            .with_target(prom_query(f'max by (kpi) ({KPI_SAMPLES}{{{P},window="$window"}})', "{{kpi}}"))
            .unit("short"))


def oncall_events_rate(pid: int, pos: model.GridPos) -> timeseries.Panel:
    """Events per second by topic and outcome (all partners: the counter has no partner)."""
    return (timeseries.Panel().id(pid).title("Events /s (all partners)").datasource(DS).grid_pos(pos)
            .with_target(prom_query(f"sum by (topic, outcome) (rate({EVENTS_TOTAL}[$__rate_interval]))",
                            "{{topic}} {{outcome}}"))
            .unit("short"))


def oncall_open_items(pid: int, pos: model.GridPos) -> timeseries.Panel:
    """The partner's tickets waiting for a first contact, by age against the target."""
    return (timeseries.Panel().id(pid).title("Tickets without first contact").datasource(DS)
            .grid_pos(pos).description("Cumulative: older than 50, 75 and 100% of the OTS target.")
            .with_target(prom_query(f"max by (kpi, stage) ({OPEN_ITEMS}{{{P}}})",
                            "{{kpi}} >= {{stage}}%"))
            .unit("short"))


URGENT_TITLE = "Most urgent tickets"
"""The on-call dashboard's ticket list (its panel is looked up by this title in the tests)."""


def oncall_urgent_tickets(pid: int, pos: model.GridPos) -> table.Panel:
    """The partner's tickets at risk or breached of KPIs with ticket alerts, least time left
    first: the tickets its PartnerTicket* alerts name."""
    return (table.Panel().id(pid).title(URGENT_TITLE).datasource(DS).grid_pos(pos)
            .description("Tickets at 75% of their target or past it (state), of KPIs with "
                         "ticket_alerts, least time left first (negative: past the target); "
                         "at most settings.ticket_alerts_max per partner. /api/open and the "
                         "wall list every open ticket.")
            .with_target(prom_query(f"sort(max by (kpi, ticket, state) "
                                    f"({URGENT_TICKET_LEFT}{{{P}}}))", instant=True,
                                    fmt="table"))
            .with_transformation(model.DataTransformerConfig(id_val="organize", options={
                "excludeByName": {"Time": True},
                "indexByName": {"ticket": 0, "kpi": 1, "state": 2, "Value": 3},
                "renameByName": {"Value": "time left"}}))
            .unit("s")
            .sort_by([TableSortByFieldState().display_name("time left").desc(False)])
            .override_by_name("state", [
                model.DynamicConfigValue(id_val="custom.cellOptions",
                                         value={"type": "color-background"}),
                model.DynamicConfigValue(id_val="mappings", value=[model.ValueMap(options={
                    "breached": model.ValueMappingResult(color="red", index=0),
                    "at_risk": model.ValueMappingResult(color="orange", index=1)})])]))


def oncall_dashboard(catalog: Catalog) -> dash.Dashboard:
    """On-call: one partner, every KPI against its target."""
    windows = list(catalog.windows)
    default_window = "24h" if "24h" in windows else windows[0]
    board = (new_dashboard(ONCALL_UID, "partnerpulse on-call", "One partner: every KPI against its target.",
                        "1m", "now-6h")
             .with_variable(partner_variable())
             .with_variable(dash.CustomVariable("window").label("Window").values(",".join(windows))
                            .current(model.VariableOption(selected=True, text=default_window,
                                                          value=default_window))
                            .options([model.VariableOption(selected=w == default_window, text=w, value=w)
                                      for w in windows])))
    head: list[Callable[[int, model.GridPos], stat.Panel]] = [
        oncall_tier, oncall_breaches, oncall_at_risk, oncall_overdue, oncall_worst_attainment]
    widths = [4, 4, 4, 4, 8]
    x = 0
    for i, (build, w) in enumerate(zip(head, widths, strict=True)):
        board = board.with_panel(build(1 + i, grid(x, 0, w, 4)))
        x += w
    board = (board.with_panel(oncall_state_history(10, grid(0, 4, 24, 10)))
             .with_panel(oncall_samples(11, grid(0, 14, 8, 8)))
             .with_panel(oncall_events_rate(12, grid(8, 14, 8, 8)))
             .with_panel(oncall_open_items(13, grid(16, 14, 8, 8))))
    top = 22
    if any(k.ticket_alerts for k in catalog.kpis):
        board = board.with_panel(oncall_urgent_tickets(14, grid(0, 22, 24, 8)))
        top = 30
    for i, kpi in enumerate(catalog.kpis):
        board = board.with_panel(oncall_kpi(kpi_panel_id(kpi, 1000),
                                            grid(8 * (i % 3), top + 8 * (i // 3), 8, 8), kpi))
    return board
