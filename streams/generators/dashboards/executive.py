"""The executive report card dashboard (``partnerpulse-exec``): attainment per partner, KPI and
tier; worst movers; integrity flags. One function per panel."""

from __future__ import annotations

from collections.abc import Callable

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
)
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

from streams.config.catalog import Catalog
from streams.generators.grafana import (
    ATTAINMENT_STEPS,
    DS,
    EXEC_UID,
    big_stat,
    grid,
    kpi_glossary,
    matrix,
    new_dashboard,
    prom_query,
    thresholds,
)
from streams.generators.promql import (
    ATTAINMENT_SUFFICIENT,
    PARTNER_ATTAINMENT_MIN,
    TIER_ATTAINMENT_MIN,
    TIER_JOIN,
)
from streams.outputs.series import (
    INTEGRITY_FLAG,
    INTEGRITY_SCORE,
    KPI_ATTAINMENT,
)


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


def exec_integrity_flagged(pid: int, pos: model.GridPos) -> stat.Panel:
    """Partners with an integrity flag holding now."""
    return big_stat(pid, "Integrity flags",
                    f"count(count by (partner) ({INTEGRITY_FLAG} == 1)) or vector(0)", pos,
                    steps=((None, "green"), (1, "orange")),
                    description="Partners whose numbers look managed against a target "
                                "(threshold hugging, deadline bunching, under-reporting): see README, "
                                "Integrity.")


def exec_integrity_evidence(pid: int, pos: model.GridPos) -> bargauge.Panel:
    """The strongest integrity evidence of the fleet, flagged or not."""
    return (bargauge.Panel().id(pid).title("Integrity evidence (top 10, -log10 p)").datasource(DS)
            .grid_pos(pos)
            .description("The ten strongest integrity signals, whether they hold or not: a bar past "
                         "the flag level is a flag (the level depends on the windows a KPI is "
                         "tested in; flags: the panel on the left).")
            .with_target(prom_query(f"topk(10, max by (partner, kpi, signal) ({INTEGRITY_SCORE}))",
                                    "{{partner}} {{kpi}} {{signal}}", instant=True))
            .min(0).thresholds(thresholds((None, "green"), (2, "orange"), (3.6, "red")))
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
    board = (board
            .with_panel(exec_report_card(10, grid(0, 4, 24, 13), "30d", catalog))
            .with_panel(exec_report_card(11, grid(0, 17, 24, 13), "7d", catalog))
            .with_panel(exec_worst_kpi(20, grid(0, 30, 8, 12)))
            .with_panel(exec_tiers(21, grid(8, 30, 8, 6)))
            .with_panel(exec_tiers_over_time(22, grid(8, 36, 8, 6)))
            .with_panel(exec_movers(30, grid(16, 30, 8, 6), "1h"))
            .with_panel(exec_movers(31, grid(16, 36, 8, 6), "1d")))
    if any(kpi.integrity for kpi in catalog.kpis):  # no series to show without a signal watched
        board = (board.with_panel(exec_integrity_flagged(40, grid(0, 42, 6, 8)))
                 .with_panel(exec_integrity_evidence(41, grid(6, 42, 18, 8))))
    return board
