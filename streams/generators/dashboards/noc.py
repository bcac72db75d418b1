"""The NOC wall dashboard (``partnerpulse-noc``): partner x KPI state grids, aging tickets,
pipeline health, and the selected partner's (``$partner``) KPIs per contact channel. One function
per panel.

Per channel: the ``by: [channel]`` KPIs of the catalog (``catalog.channel_kpis``), in the NOC's
day (24h) when they are kept and exported in it, else in the first window they are (catalog
order). Values are not judged per channel (no per-channel target): a cell shows the value in the
KPI's unit; its samples sit next to it, in orange below the KPI's ``min_samples``.
"""

from __future__ import annotations

from collections.abc import Callable

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
)
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from streams.config.catalog import Catalog, Kpi
from streams.generators.grafana import (
    DS,
    NOC_UID,
    STATE_MAPPINGS,
    UNITS,
    big_stat,
    grid,
    kpi_glossary,
    matrix,
    new_dashboard,
    partner_variable,
    prom_query,
    state_code,
    thresholds,
)
from streams.generators.pipeline_rules import (
    CONSUMER_LAG_MESSAGES,
    FEED_STALE_AFTER_S,
    STALL_FOR,
    STALL_S,
)
from streams.generators.promql import (
    in_state,
)
from streams.outputs.series import (
    CONSUMER_LAG,
    EVENT_LOOP_LAG,
    EVENTS_TOTAL,
    FEED_STALE_FLAG,
    KPI_CHANNEL_SAMPLES,
    KPI_CHANNEL_VALUE,
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
    """Open items (per KPI) older than their target."""
    return big_stat(pid, "Overdue tickets",
                     f'sum(max by (partner, kpi) ({OPEN_ITEMS}{{stage="100"}})) or vector(0)',
                     pos, steps=((None, "green"), (1, "orange"), (10, "red")),
                     description="Items still open past their KPI's target, per KPI: tickets "
                     "without a first contact (open to status) or not resolved (repair time), "
                     "detractors not called back. A ticket late on both counts twice; the list: "
                     "/api/open.")


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
    """Open items aging past their target, per partner and KPI."""
    return (bargauge.Panel().id(pid).title("Tickets past target").datasource(DS).grid_pos(pos)
            .description("Items still open past 100% of their KPI's target, per partner and "
                         "KPI (first contact, resolution, call-back); the list: /api/open.")
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


def noc_loop_lag(pid: int, pos: model.GridPos) -> timeseries.Panel:
    """How late each worker's event loop ran what was due (the longest of the last minute)."""
    return (timeseries.Panel().id(pid).title("Worker loop lag").datasource(DS).grid_pos(pos)
            .description("The longest each worker's event loop was late over the last minute: "
                         "events, views and alert deliveries wait that long. "
                         f"PartnerpulseWorkerStalled fires past {STALL_S:g} s for {STALL_FOR}.")
            .with_target(prom_query(f"max by (instance) ({EVENT_LOOP_LAG})", "{{instance}}"))
            .unit("s").fill_opacity(10))


def noc_rejected_by_topic(pid: int, pos: model.GridPos) -> timeseries.Panel:
    """Rejected (dead-lettered) and late messages per second, by topic."""
    return (timeseries.Panel().id(pid).title("Rejected and late /s").datasource(DS).grid_pos(pos)
            .with_target(prom_query(f"sum by (topic, outcome) (rate({EVENTS_TOTAL}"
                            '{outcome=~"rejected|late"}[$__rate_interval])) or vector(0)',
                            "{{topic}} {{outcome}}"))
            .unit("short").fill_opacity(10))


# --- per channel: the selected partner ----------------------------------------------------------
P = 'partner="$partner"'


def channel_window(catalog: Catalog) -> str | None:
    """The window of the per-channel panels: 24h when the per-channel KPIs are kept and exported
    in it, else the first (catalog order) that is; None without any (no per-channel panels)."""
    kept = {w for kpi in catalog.channel_kpis for w in kpi.windows}
    usable = [w for w in catalog.windows if w in kept
              and (not catalog.export_windows or w in catalog.export_windows)]
    return "24h" if "24h" in usable else next(iter(usable), None)


def channel_bases(catalog: Catalog) -> list[Kpi]:
    """The catalog KPIs kept per channel (``by: [channel]``), in catalog order."""
    bases = {kpi.base for kpi in catalog.channel_kpis}
    return [kpi for kpi in catalog.kpis if kpi.id in bases]


def noc_channel_values(pid: int, pos: model.GridPos, window: str, kpis: list[Kpi]) -> table.Panel:
    """The partner's per-channel KPI values in ``window``: a row per channel, a column per KPI
    (in its unit: durations in time units, ratios in percent, scores as numbers)."""
    panel = (matrix(pid, f"$partner per channel ({window})",
                    f'max by (channel, kpi) ({KPI_CHANNEL_VALUE}{{{P},window="{window}"}})', pos,
                    rows="channel", columns="kpi",
                    description=f"Each KPI kept by contact channel, over {window}, among the "
                    "partner's contacts of that channel; not judged per channel (no per-channel "
                    "target): compare with the State grids. "
                    + "; ".join(f"{k.id}: {k.title} ({k.better} is better)" for k in kpis))
             .cell_options(common.TableAutoCellOptions()))
    for kpi in kpis:
        decimals = 2 if kpi.unit == "score" else 0 if kpi.unit == "seconds" else 1
        panel = panel.override_by_name(kpi.id, [
            model.DynamicConfigValue(id_val="unit", value=UNITS[kpi.unit]),
            model.DynamicConfigValue(id_val="decimals", value=decimals)])
    return panel


def noc_channel_samples(pid: int, pos: model.GridPos, window: str, kpis: list[Kpi]) -> table.Panel:
    """The samples behind each per-channel value: orange below the KPI's ``min_samples``."""
    panel = (matrix(pid, f"$partner samples per channel ({window})",
                    f'max by (channel, kpi) ({KPI_CHANNEL_SAMPLES}{{{P},window="{window}"}})', pos,
                    rows="channel", columns="kpi",
                    description="Samples behind each per-channel value; orange: fewer than the "
                    "KPI's min_samples (too few to judge it by, were it judged).")
             .unit("short").decimals(0)
             .cell_options(common.TableColorTextCellOptions()))
    for kpi in kpis:
        panel = panel.override_by_name(kpi.id, [model.DynamicConfigValue(
            id_val="thresholds", value={"mode": "absolute", "steps": [
                {"color": "orange", "value": None},
                {"color": "green", "value": kpi.min_samples}]})])
    return panel


def noc_dashboard(catalog: Catalog) -> dash.Dashboard:
    """The NOC wall: big numbers, the partner x KPI state grids, open items, pipeline health."""
    board = new_dashboard(NOC_UID, "partnerpulse NOC", "Partner KPI states and pipeline health.",
                       "30s", "now-3h")
    stats: list[Callable[[int, model.GridPos], stat.Panel]] = [
        noc_breaches, noc_at_risk, noc_overdue, noc_stale_feeds, noc_event_age, noc_rejected,
        noc_lag, noc_partners]
    for i, build in enumerate(stats):
        board = board.with_panel(build(1 + i, grid(3 * i, 0, 3, 4)))
    board = (board
             .with_panel(noc_state_grid(20, grid(0, 4, 12, 14), "1h", catalog))
             .with_panel(noc_state_grid(21, grid(12, 4, 12, 14), "24h", catalog))
             .with_panel(noc_open_items(30, grid(0, 18, 8, 10)))
             .with_panel(noc_feeds(40, grid(8, 18, 8, 5)))
             .with_panel(noc_event_age_by_topic(41, grid(8, 23, 8, 5)))
             .with_panel(noc_lag_by_topic(42, grid(16, 18, 8, 5)))
             .with_panel(noc_rejected_by_topic(43, grid(16, 23, 8, 5))))
    window = channel_window(catalog)
    if window is None:  # no by: [channel] KPI (or none exported): no $partner either
        return board.with_panel(noc_loop_lag(44, grid(0, 28, 24, 6)))
    kpis = channel_bases(catalog)
    return (board.with_variable(partner_variable())
            .with_panel(noc_channel_values(50, grid(0, 28, 14, 9), window, kpis))
            .with_panel(noc_channel_samples(51, grid(14, 28, 10, 9), window, kpis))
            .with_panel(noc_loop_lag(44, grid(0, 37, 24, 6))))
