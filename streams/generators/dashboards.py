"""Grafana dashboards as code, generated from the KPI catalog with grafana-foundation-sdk.

Three dashboards land in ``dashboards/`` as JSON (sorted keys, 2-space indent, trailing
newline), committed and checked byte for byte against regeneration:

* ``partnerpulse-noc``: the NOC wall. Partner x KPI state grids (1h, 24h), tickets aging
  past their open-to-status target, pipeline health, breach and at-risk counts.
* ``partnerpulse-oncall``: one partner (``$partner``): each KPI's value against its target
  over time, samples, state history, events rate, open items.
* ``partnerpulse-exec``: report cards (each KPI as % of goal, 7d and 30d), worst KPI per
  partner, tier comparison, worst movers.

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

from grafana_foundation_sdk.builders import bargauge, stat, statetimeline, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    VizLegendOptions,
)
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from streams.config.catalog import DEFAULT_CONFIG_DIR, Catalog, Kpi
from streams.generators.files import load_catalog_or_report, write_or_check
from streams.generators.grafana import (
    ATTAINMENT_STEPS,
    DATASOURCE_UID,
    DS,
    EXEC_UID,
    NOC_UID,
    ONCALL_UID,
    STATE_MAPPINGS,
    UNITS,
    big_stat,
    grid,
    kpi_glossary,
    kpi_panel_id,
    matrix,
    new_dashboard,
    prom_query,
    state_code,
    thresholds,
)
from streams.generators.promql import (
    ATTAINMENT_SUFFICIENT,
    PARTNER_ATTAINMENT_MIN,
    TIER_ATTAINMENT_MIN,
    TIER_JOIN,
    in_state,
)
from streams.generators.rules import CONSUMER_LAG_MESSAGES, FEED_STALE_AFTER_S
from streams.outputs.series import (
    CONSUMER_LAG,
    EVENTS_TOTAL,
    FEED_STALE_FLAG,
    KPI_ATTAINMENT,
    KPI_SAMPLES,
    KPI_TARGET,
    KPI_VALUE,
    LAST_EVENT_TIMESTAMP,
    OPEN_ITEMS,
    PARTNER_INFO,
)


# --- NOC wall -----------------------------------------------------------------------------------
def noc_breaches(pid: int, pos: model.GridPos) -> stat.Panel:
    """Partner x KPI x window currently in breach (ALERTS may be empty; the state never is)."""
    return big_stat(pid, "Breaches",
                     f"count({in_state('breach')})"
                     " or vector(0)", pos)


def noc_at_risk(pid: int, pos: model.GridPos) -> stat.Panel:
    """Partner x KPI x window currently at risk."""
    return big_stat(pid, "At risk",
                     f"count({in_state('at_risk')})"
                     " or vector(0)", pos, steps=((None, "green"), (1, "orange")))


def noc_overdue(pid: int, pos: model.GridPos) -> stat.Panel:
    """Tickets without a first contact older than their OTS target."""
    return big_stat(pid, "Overdue tickets",
                     f'sum(max by (partner, kpi) ({OPEN_ITEMS}{{stage="100"}})) or vector(0)',
                     pos, steps=((None, "green"), (1, "orange"), (10, "red")),
                     description="Tickets still without a first contact, older than the OTS target.")


def noc_stale_feeds(pid: int, pos: model.GridPos) -> stat.Panel:
    """Topics whose feed is stale."""
    return big_stat(pid, "Stale feeds", f"sum(max by (topic) ({FEED_STALE_FLAG})) or vector(0)",
                     pos)


def noc_event_age(pid: int, pos: model.GridPos) -> stat.Panel:
    """Age of the newest accepted event, any topic."""
    return big_stat(pid, "Newest event", f"time() - max({LAST_EVENT_TIMESTAMP})",
                     pos, unit="s",
                     steps=((None, "green"), (FEED_STALE_AFTER_S / 3, "orange"),
                            (FEED_STALE_AFTER_S, "red")))


def noc_rejected(pid: int, pos: model.GridPos) -> stat.Panel:
    """Messages sent to the dead letter per second."""
    return big_stat(pid, "Rejected/s",
                     f'sum(rate({EVENTS_TOTAL}{{outcome="rejected"}}[$__rate_interval]))'
                     " or vector(0)", pos, unit="short",
                     steps=((None, "green"), (0.01, "orange"), (1, "red")))


def noc_lag(pid: int, pos: model.GridPos) -> stat.Panel:
    """Messages not yet consumed, all topics."""
    return big_stat(pid, "Lag", f"sum({CONSUMER_LAG})", pos,
                     steps=((None, "green"), (CONSUMER_LAG_MESSAGES / 10, "orange"),
                            (CONSUMER_LAG_MESSAGES, "red")))


def noc_partners(pid: int, pos: model.GridPos) -> stat.Panel:
    """Partners exported by the workers."""
    return big_stat(pid, "Partners", f"count(max by (partner) ({PARTNER_INFO}))", pos,
                     steps=((None, "blue"),))


def noc_state_grid(pid: int, pos: model.GridPos, window: str, catalog: Catalog) -> table.Panel:
    """Partner x KPI state in one window, coloured OK / AT RISK / BREACH."""
    return (matrix(pid, f"State {window}", state_code(f'window="{window}"', "partner, kpi"), pos,
                    rows="partner", columns="kpi", description=kpi_glossary(catalog))
            .mappings(STATE_MAPPINGS))


def noc_open_items(pid: int, pos: model.GridPos) -> bargauge.Panel:
    """Tickets aging past their OTS target, per partner and severity KPI."""
    return (bargauge.Panel().id(pid).title("Tickets past OTS target").datasource(DS).grid_pos(pos)
            .description("Tickets without a first contact older than 100% of the target.")
            .with_target(prom_query(f'sort_desc(max by (partner, kpi) ({OPEN_ITEMS}{{stage="100"}}))',
                            "{{partner}} {{kpi}}", instant=True))
            .thresholds(thresholds((None, "green"), (1, "orange"), (10, "red")))
            .display_mode(common.BarGaugeDisplayMode.BASIC)
            .orientation(common.VizOrientation.HORIZONTAL)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def noc_lag_by_topic(pid: int, pos: model.GridPos) -> timeseries.Panel:
    """Consumer lag per topic over time."""
    return (timeseries.Panel().id(pid).title("Consumer lag").datasource(DS).grid_pos(pos)
            .with_target(prom_query(f"sum by (topic) ({CONSUMER_LAG})", "{{topic}}"))
            .unit("short").fill_opacity(10))


def noc_event_age_by_topic(pid: int, pos: model.GridPos) -> stat.Panel:
    """Age of the newest accepted event per topic."""
    return (big_stat(pid, "Event age", f"time() - max by (topic) ({LAST_EVENT_TIMESTAMP})",
                      pos, unit="s", legend="{{topic}}",
                      steps=((None, "green"), (FEED_STALE_AFTER_S / 3, "orange"),
                             (FEED_STALE_AFTER_S, "red")))
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME))


def noc_feeds(pid: int, pos: model.GridPos) -> stat.Panel:
    """Each topic's feed: LIVE or STALE."""
    return (big_stat(pid, "Feeds", f"max by (topic) ({FEED_STALE_FLAG})", pos,
                      legend="{{topic}}")
            .mappings([model.ValueMap(options={
                "0": model.ValueMappingResult(text="LIVE", color="green", index=0),
                "1": model.ValueMappingResult(text="STALE", color="red", index=1)})])
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME))


def noc_rejected_by_topic(pid: int, pos: model.GridPos) -> timeseries.Panel:
    """Rejected (dead-lettered) and late messages per second, by topic."""
    return (timeseries.Panel().id(pid).title("Rejected and late /s").datasource(DS).grid_pos(pos)
            .with_target(prom_query(f"sum by (topic, outcome) (rate({EVENTS_TOTAL}"
                            '{outcome=~"rejected|late"}[$__rate_interval])) or vector(0)',
                            "{{topic}} {{outcome}}"))
            .unit("short").fill_opacity(10))


def noc_dashboard(catalog: Catalog) -> dash.Dashboard:
    """The NOC wall: big numbers, the partner x KPI state grids, open items, pipeline health."""
    board = new_dashboard(NOC_UID, "partnerpulse NOC", "Partner KPI states and pipeline health.",
                       "30s", "now-3h")
    stats: list[Callable[[int, model.GridPos], stat.Panel]] = [
        noc_breaches, noc_at_risk, noc_overdue, noc_stale_feeds, noc_event_age, noc_rejected,
        noc_lag, noc_partners]
    for i, build in enumerate(stats):
        board = board.with_panel(build(1 + i, grid(3 * i, 0, 3, 4)))
    return (board
            .with_panel(noc_state_grid(20, grid(0, 4, 12, 14), "1h", catalog))
            .with_panel(noc_state_grid(21, grid(12, 4, 12, 14), "24h", catalog))
            .with_panel(noc_open_items(30, grid(0, 18, 8, 10)))
            .with_panel(noc_feeds(40, grid(8, 18, 8, 5)))
            .with_panel(noc_event_age_by_topic(41, grid(8, 23, 8, 5)))
            .with_panel(noc_lag_by_topic(42, grid(16, 18, 8, 5)))
            .with_panel(noc_rejected_by_topic(43, grid(16, 23, 8, 5))))


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
    """The partner's tickets past the OTS target without a first contact."""
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


def oncall_dashboard(catalog: Catalog) -> dash.Dashboard:
    """On-call: one partner, every KPI against its target."""
    windows = list(catalog.windows)
    default_window = "24h" if "24h" in windows else windows[0]
    board = (new_dashboard(ONCALL_UID, "partnerpulse on-call", "One partner: every KPI against its target.",
                        "1m", "now-6h")
             .with_variable(dash.QueryVariable("partner").label("Partner").datasource(DS)
                            .query(f"label_values({PARTNER_INFO}, partner)")
                            .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
                            .sort(model.VariableSort.ALPHABETICAL_ASC))
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
    for i, kpi in enumerate(catalog.kpis):
        board = board.with_panel(oncall_kpi(kpi_panel_id(kpi, 1000),
                                            grid(8 * (i % 3), 22 + 8 * (i // 3), 8, 8), kpi))
    return board


# --- executive report card ----------------------------------------------------------------------
def attainment(window: str, extra: str = "") -> str:
    """Attainment per partner x KPI in one window (max: one value if exported twice)."""
    return f'max by (partner, kpi) ({KPI_ATTAINMENT}{{window="{window}"{extra}}})'


def movers(window: str, over: str) -> str:
    """Change of attainment over ``over``: exact once the series is that old, else ``delta``
    over the history there is (see the module docstring)."""
    now = attainment(window)
    then = f'max by (partner, kpi) ({KPI_ATTAINMENT}{{window="{window}"}} offset {over})'
    fallback = (f'max by (partner, kpi) (delta({KPI_ATTAINMENT}'
                f'{{window="{window}"}}[{over}]))')
    return f"bottomk(10,\n  ({now} - {then})\n  or\n  {fallback}\n)"


def exec_on_target(pid: int, pos: model.GridPos) -> stat.Panel:
    """Partners whose every KPI (with enough samples) is on target over 30d."""
    return big_stat(pid, "On target (30d)",
                     f'count({PARTNER_ATTAINMENT_MIN}{{window="30d"}} >= 1)'
                     " or vector(0)", pos, steps=((None, "green"),),
                     description="Partners with every KPI on target over 30 days.")


def exec_below_target(pid: int, pos: model.GridPos) -> stat.Panel:
    """Partners with at least one KPI below target over 30d."""
    return big_stat(pid, "Below target (30d)",
                     f'count({PARTNER_ATTAINMENT_MIN}{{window="30d"}} < 1)'
                     " or vector(0)", pos, steps=((None, "green"), (1, "red")),
                     description="Partners with at least one KPI below target over 30 days.")


def exec_median(pid: int, pos: model.GridPos) -> stat.Panel:
    """Median attainment of all partner x KPI over 30d."""
    return big_stat(pid, "Median attainment (30d)",
                     f'quantile(0.5, {ATTAINMENT_SUFFICIENT}'
                     '{window="30d"})', pos, unit="percentunit", steps=ATTAINMENT_STEPS)


def exec_worst_tier(pid: int, pos: model.GridPos) -> stat.Panel:
    """The tier with the lowest KPI attainment over 30d."""
    return (big_stat(pid, "Weakest tier (30d)",
                      f'bottomk(1, {TIER_ATTAINMENT_MIN}{{window="30d"}})', pos,
                      unit="percentunit", legend="{{tier}}", steps=ATTAINMENT_STEPS)
            .text_mode(common.BigValueTextMode.VALUE_AND_NAME))


def exec_report_card(pid: int, pos: model.GridPos, window: str, catalog: Catalog) -> table.Panel:
    """Each KPI as % of goal per partner (100% = on target, capped at 200%)."""
    return (matrix(pid, f"Report card {window} (% of goal)",
                    f"clamp_max({attainment(window)}, 2)", pos, rows="partner", columns="kpi",
                    description="Attainment: 100% is on target, more is better, capped at 200%. "
                    + kpi_glossary(catalog))
            .unit("percentunit").decimals(0).thresholds(thresholds(*ATTAINMENT_STEPS)))


def exec_worst_kpi(pid: int, pos: model.GridPos) -> bargauge.Panel:
    """Each partner's worst KPI attainment (enough samples only), 7d and 30d."""
    return (bargauge.Panel().id(pid).title("Worst KPI per partner").datasource(DS).grid_pos(pos)
            .with_target(prom_query(f'{PARTNER_ATTAINMENT_MIN}{{window="7d"}}',
                            "{{partner}} 7d", instant=True))
            .with_target(prom_query(f'{PARTNER_ATTAINMENT_MIN}{{window="30d"}}',
                            "{{partner}} 30d", ref="B", instant=True))
            .unit("percentunit").min(0).max(2).thresholds(thresholds(*ATTAINMENT_STEPS))
            .display_mode(common.BarGaugeDisplayMode.BASIC)
            .orientation(common.VizOrientation.HORIZONTAL)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def tier_average(window: str) -> str:
    """Mean attainment of a tier's partner x KPI in one window."""
    return f"avg by (tier) (\n  {attainment(window)}\n  {TIER_JOIN}\n)"


def exec_tiers(pid: int, pos: model.GridPos) -> bargauge.Panel:
    """Mean attainment by tier, 7d and 30d."""
    return (bargauge.Panel().id(pid).title("Tiers: mean attainment").datasource(DS).grid_pos(pos)
            .with_target(prom_query(tier_average("7d"), "{{tier}} 7d", instant=True))
            .with_target(prom_query(tier_average("30d"), "{{tier}} 30d", ref="B", instant=True))
            .unit("percentunit").min(0).max(2).thresholds(thresholds(*ATTAINMENT_STEPS))
            .display_mode(common.BarGaugeDisplayMode.BASIC)
            .orientation(common.VizOrientation.HORIZONTAL)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def exec_tiers_over_time(pid: int, pos: model.GridPos) -> timeseries.Panel:
    """Mean 30d attainment by tier over time."""
    return (timeseries.Panel().id(pid).title("Tiers over time (30d)").datasource(DS).grid_pos(pos)
            .with_target(prom_query(tier_average("30d"), "{{tier}}"))
            .unit("percentunit"))


def exec_movers(pid: int, pos: model.GridPos, over: str) -> bargauge.Panel:
    """The ten largest drops of 24h attainment over ``over``."""
    return (bargauge.Panel().id(pid).title(f"Worst movers ({over}, 24h window)").datasource(DS)
            .grid_pos(pos)
            .description(f"Change of 24h attainment over the last {over}; until the series is "
                         f"{over} old, the change since it appeared.")
            .with_target(prom_query(movers("24h", over), "{{partner}} {{kpi}}", instant=True))
            .unit("percentunit").thresholds(thresholds((None, "red"), (0, "green")))
            .display_mode(common.BarGaugeDisplayMode.BASIC)
            .orientation(common.VizOrientation.HORIZONTAL)
            .reduce_options(ReduceDataOptions().calcs(["lastNotNull"]).values(False)))


def exec_dashboard(catalog: Catalog) -> dash.Dashboard:
    """Executive report card: attainment per partner, KPI and tier; worst movers."""
    board = new_dashboard(EXEC_UID, "partnerpulse report card",
                       "Partner KPI attainment over 7 and 30 days.", "5m", "now-7d")
    head: list[Callable[[int, model.GridPos], stat.Panel]] = [
        exec_on_target, exec_below_target, exec_median, exec_worst_tier]
    for i, build in enumerate(head):
        board = board.with_panel(build(1 + i, grid(6 * i, 0, 6, 4)))
    return (board
            .with_panel(exec_report_card(10, grid(0, 4, 24, 13), "30d", catalog))
            .with_panel(exec_report_card(11, grid(0, 17, 24, 13), "7d", catalog))
            .with_panel(exec_worst_kpi(20, grid(0, 30, 8, 12)))
            .with_panel(exec_tiers(21, grid(8, 30, 8, 6)))
            .with_panel(exec_tiers_over_time(22, grid(8, 36, 8, 6)))
            .with_panel(exec_movers(30, grid(16, 30, 8, 6), "1h"))
            .with_panel(exec_movers(31, grid(16, 36, 8, 6), "1d")))


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
