"""The executive report card dashboard (``partnerpulse-exec``): attainment per partner, KPI and
tier; worst movers; integrity flags; the SLA x experience quadrant. One function per panel.

SLA x experience: each ``sla_experience`` KPI of the catalog names its SLA (``sla``: the duration
KPIs whose targets make a ticket's SLA) and the answers that make its experience good or poor.
Its experience KPI is the ``mean_field`` KPI averaging those very answers: same topic and type,
filtered by the conditions ``good`` and ``poor`` share (csat: ``kind: csat``), averaging the field
they split on (``score``). The sla_experience KPIs with the same SLA and experience KPI (the
watermelon and the rescued share) make one quadrant panel; one without an experience KPI has no
y axis, and no panel.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from grafana_foundation_sdk.builders import bargauge, stat, table, timeseries
from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders.common import (
    ReduceDataOptions,
    TableSortByFieldState,
)
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model
from scipy import stats

from streams.config.catalog import Catalog, Kpi
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
from streams.judgement.league import COVERAGES
from streams.outputs.series import (
    INTEGRITY_FLAG,
    INTEGRITY_SCORE,
    KPI_ATTAINMENT,
    KPI_SAMPLES,
    KPI_VALUE,
    REPORT_PROJECTED_BAND,
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


# --- SLA x experience ---------------------------------------------------------------------------
QUADRANT_WINDOW = "30d"
QUADRANT_TITLE = f"SLA \N{MULTIPLICATION SIGN} experience ({QUADRANT_WINDOW})"


@dataclass(frozen=True, slots=True)
class Quadrant:
    """One SLA x experience quadrant: the SLA's duration KPIs (x), the experience KPI (y) and the
    sla_experience shares judged on them (watermelon, rescued)."""

    sla: tuple[str, ...]
    experience: Kpi
    shares: tuple[Kpi, ...]


def experience_kpi(kpi: Kpi, catalog: Catalog) -> Kpi | None:
    """The mean_field KPI averaging the answers ``kpi`` (sla_experience) judges good or poor: the
    same topic and type, filtered by the conditions good and poor share, averaging the field
    they differ on (see the module docstring)."""
    good, poor = kpi.good, kpi.poor
    if good is None or poor is None or (good.topic, good.type) != (poor.topic, poor.type):
        return None
    shared = set(good.where) & set(poor.where)
    split = {cond.field for cond in set(good.where) ^ set(poor.where)}
    for candidate in catalog.kpis:
        source = candidate.source
        if (candidate.kind == "mean_field" and source is not None
                and (source.topic, source.type) == (good.topic, good.type)
                and set(source.where) == shared and split == {candidate.field}):
            return candidate
    return None


def quadrants(catalog: Catalog) -> list[Quadrant]:
    """The catalog's SLA x experience quadrants, in catalog order (see the module docstring)."""
    found: dict[tuple[tuple[str, ...], str], list[Kpi]] = {}
    experience: dict[str, Kpi] = {}
    for kpi in catalog.kpis:
        exp = experience_kpi(kpi, catalog) if kpi.kind == "sla_experience" and kpi.sla else None
        if exp is not None:
            experience[exp.id] = exp
            found.setdefault((tuple(part.kpi for part in kpi.sla), exp.id), []).append(kpi)
    return [Quadrant(sla, experience[exp], tuple(shares)) for (sla, exp), shares in found.items()]


def kpi_selector(ids: tuple[str, ...]) -> str:
    """``kpi="a"`` or ``kpi=~"a|b"`` (catalog ids are ``[a-z][a-z0-9_]*``: nothing to escape)."""
    return f'kpi="{ids[0]}"' if len(ids) == 1 else f'kpi=~"{"|".join(ids)}"'


def sufficient(ids: tuple[str, ...], how: str) -> str:
    """Each partner's ``how`` (min, max) attainment of KPIs ``ids`` with enough samples."""
    return (f"{how} by (partner) ({ATTAINMENT_SUFFICIENT}"
            f'{{window="{QUADRANT_WINDOW}",{kpi_selector(ids)}}})')


def share_value(kpi: Kpi) -> str:
    """A share KPI's value per partner (as the report card, whatever its samples: the rescued
    share has few, SLAs being mostly met)."""
    return f'max by (partner) ({KPI_VALUE}{{window="{QUADRANT_WINDOW}",kpi="{kpi.id}"}})'


def target_steps(kpi: Kpi) -> tuple[tuple[float | None, str], ...]:
    """Colours of a share against the catalog target: ATTAINMENT_STEPS in the KPI's units."""
    (_, low), (at_risk, mid), (_, high) = ATTAINMENT_STEPS
    assert at_risk is not None
    if kpi.lower_is_better:  # attainment = target / value
        return ((None, high), (kpi.target, mid), (round(kpi.target / at_risk, 4), low))
    return ((None, low), (kpi.target * at_risk, mid), (kpi.target, high))


# Quadrant code: (SLA missed) + 2 * (experience met). Sorted ascending, watermelons come first.
QUADRANT_LABELS: tuple[tuple[str, str], ...] = (
    ("WATERMELON", "red"),      # 0: SLA met, experience below target: green outside, red inside
    ("BOTH BELOW", "orange"),   # 1: SLA missed, experience below target
    ("ON TARGET", "green"),     # 2: SLA met, experience met
    ("RESCUED", "blue"),        # 3: SLA missed, experience met anyway
)
SLA_COLUMN = "SLA attainment"
EXPERIENCE_COLUMN = "Experience attainment"
QUADRANT_COLUMN = "Quadrant"


def quadrant_code(quadrant: Quadrant) -> str:
    """Each partner's quadrant as one number (QUADRANT_LABELS), where both axes are known."""
    return (f"(\n  {sufficient(quadrant.sla, 'min')} < bool 1\n)\n+ 2 * (\n  "
            f"{sufficient((quadrant.experience.id,), 'max')} >= bool 1\n)")


def _cells(*props: model.DynamicConfigValue) -> list[model.DynamicConfigValue]:
    return [model.DynamicConfigValue(id_val="custom.cellOptions",
                                     value={"type": "color-background"}), *props]


def _steps(steps: tuple[tuple[float | None, str], ...]) -> model.DynamicConfigValue:
    return model.DynamicConfigValue(id_val="thresholds", value={
        "mode": "absolute", "steps": [{"color": color, "value": value} for value, color in steps]})


def exec_sla_experience(pid: int, pos: model.GridPos, quadrant: Quadrant) -> table.Panel:
    """Each partner's SLA attainment (x: its worst SLA KPI), experience attainment (y) and
    quadrant over 30d, with the sla_experience shares: watermelon partners (SLA met, experience
    below target) first, in red. A table rather than an XY chart: every partner is named on
    its row (an XY chart names a point only in its tooltip), watermelons sort to the top, and
    each column is one instant query merged on ``partner``: plain table transformations, where
    the xychart panel's series mapping was reworked within Grafana 11."""
    exp = quadrant.experience
    columns = [SLA_COLUMN, EXPERIENCE_COLUMN, *(k.title for k in quadrant.shares),
               QUADRANT_COLUMN]
    refs = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    rename = {f"Value #{refs[i]}": name for i, name in enumerate(columns)}
    order = ["partner", QUADRANT_COLUMN, *columns[:-1]]
    panel = (table.Panel().id(pid).title(QUADRANT_TITLE).datasource(DS)
             .grid_pos(pos)
             .description(
                 f"Per partner over {QUADRANT_WINDOW}. {SLA_COLUMN}: the worst attainment of the "
                 f"SLA's KPIs ({', '.join(quadrant.sla)}); {EXPERIENCE_COLUMN}: {exp.id} "
                 f"({exp.title}); both of KPIs with enough samples only, and the quadrant of the "
                 "two (100% = on target). Quadrant: WATERMELON = SLA met, "
                 "experience below target (green outside, red inside); BOTH BELOW; ON TARGET; "
                 "RESCUED = SLA missed, experience on target. "
                 + " ".join(f"{k.title} ({k.id}): {k.description} Coloured against the catalog "
                             f"target, {k.target:g} (a partner's own target may differ: see the "
                             "report card)." for k in quadrant.shares))
             .with_target(prom_query(sufficient(quadrant.sla, "min"), instant=True, fmt="table"))
             .with_target(prom_query(sufficient((exp.id,), "max"), ref="B", instant=True,
                                     fmt="table")))
    for i, kpi in enumerate(quadrant.shares):
        panel = panel.with_target(prom_query(share_value(kpi), ref=refs[2 + i], instant=True,
                                             fmt="table"))
    panel = (panel
             .with_target(prom_query(quadrant_code(quadrant), ref=refs[len(columns) - 1],
                                     instant=True, fmt="table"))
             .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
             .with_transformation(model.DataTransformerConfig(id_val="organize", options={
                 "excludeByName": {"Time": True},
                 "indexByName": {name: i for i, name in enumerate(order)},
                 "renameByName": rename}))
             .unit("percentunit").decimals(0)
             .sort_by([TableSortByFieldState().display_name(QUADRANT_COLUMN).desc(False)])
             .override_by_name(SLA_COLUMN, _cells(_steps(ATTAINMENT_STEPS)))
             .override_by_name(EXPERIENCE_COLUMN, _cells(_steps(ATTAINMENT_STEPS))))
    for kpi in quadrant.shares:
        panel = panel.override_by_name(kpi.title, _cells(_steps(target_steps(kpi))))
    return panel.override_by_name(QUADRANT_COLUMN, _cells(
        model.DynamicConfigValue(id_val="unit", value="none"),
        model.DynamicConfigValue(id_val="mappings", value=[model.ValueMap(options={
            str(code): model.ValueMappingResult(text=text, color=color, index=code)
            for code, (text, color) in enumerate(QUADRANT_LABELS)})])))


def exec_month_end(pid: int, pos: model.GridPos) -> table.Panel:
    """Each partner's chance of ending the month in progress in each band."""
    return (matrix(pid, "Month-end band forecast (chance)",
                   f"max by (partner, band) ({REPORT_PROJECTED_BAND})", pos, rows="partner",
                   columns="band",
                   description="Where each partner's month in progress is heading: the chance "
                   "of each reward band at month end, from the month to date (README: the "
                   "month in progress). Refreshed every 15 minutes per partner.")
            .unit("percentunit").decimals(0))


# --- funnel: who is distinguishable from the fleet ---------------------------------------------
FUNNEL_WINDOW = "30d"
FUNNEL_TITLE = f"Funnel {FUNNEL_WINDOW}: distance from the fleet in standard errors (+ better)"
FUNNEL_Z: tuple[float, ...] = tuple(float(stats.norm.ppf(0.5 + c / 2)) for c in COVERAGES)
"""The funnel's limits as z: 1.96 (95%) and 3.09 (99.8%), the report card's two limit pairs."""


def funnel_kpis(catalog: Catalog) -> list[Kpi]:
    """The ratio KPIs: those whose funnel the exported series give (a 0/1 sample's spread is
    fixed by its rate; a mean KPI's would need the samples' spread, which is not exported)."""
    return [k for k in catalog.kpis if k.stat_kind == "ratio"]


def funnel_z(kpis: list[Kpi], window: str = FUNNEL_WINDOW) -> str:
    """Each partner x ratio KPI as standard errors from the fleet's rate at the partner's volume,
    signed so that positive is better: ``(p - c) / sqrt(c (1 - c) / n)``, ``c`` the fleet's
    pooled rate (sum of successes over sum of samples, as the card's funnel centre). The normal
    form of the card's exact binomial limits: a partner past +-1.96 is outside the 95% funnel,
    past +-3.09 outside the 99.8% one. A KPI the whole fleet has at 0 or 1 has no spread, and
    no cells."""
    parts = []
    for lower, sign in ((False, ""), (True, "-")):
        ids = "|".join(k.id for k in kpis if k.lower_is_better == lower)
        if not ids:
            continue
        sel = f'window="{window}",kpi=~"{ids}"'
        value = f"max by (partner, kpi) ({KPI_VALUE}{{{sel}}})"
        samples = f"(max by (partner, kpi) ({KPI_SAMPLES}{{{sel}}}) > 0)"
        centre = f"(sum by (kpi) ({value} * {samples}) / sum by (kpi) ({samples}))"
        error = f"sqrt(({centre} * (1 - {centre}) > 0) / on (kpi) group_right () {samples})"
        parts.append(f"{sign}(\n  ({value} - on (kpi) group_left () {centre})\n  / {error}\n)")
    return "\nor\n".join(parts)


def exec_funnel(pid: int, pos: model.GridPos, catalog: Catalog) -> table.Panel:
    """The card's funnel plot as a matrix: each partner x ratio KPI, in standard errors from
    the fleet, coloured outside the 95% and 99.8% limits."""
    inner, outer = FUNNEL_Z
    kpis = funnel_kpis(catalog)
    return (matrix(pid, FUNNEL_TITLE, funnel_z(kpis), pos, rows="partner", columns="kpi",
                   description=f"Over {FUNNEL_WINDOW}: how far each partner's rate is from the "
                   "fleet's, in standard errors at its own volume (the funnel plot of the report "
                   "card, read as numbers). Positive is better than the fleet. Past "
                   f"{inner:.2f} either way a partner is outside the 95% funnel, past "
                   f"{outer:.2f} outside the 99.8% one: distinguishable from the fleet whatever "
                   "its volume. Inside, its difference from the fleet may be luck, however its "
                   "raw value ranks. Ratio KPIs: "
                   + ", ".join(k.id for k in kpis) + ".")
            .unit("none").decimals(1)
            .thresholds(thresholds((None, "red"), (-outer, "orange"), (-inner, "transparent"),
                                   (inner, "green"))))


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
    shown = quadrants(catalog)
    for i, quadrant in enumerate(shown):
        board = board.with_panel(exec_sla_experience(50 + i, grid(0, 50 + 12 * i, 24, 12),
                                                     quadrant))
    below = 50 + 12 * len(shown)
    board = board.with_panel(exec_month_end(60, grid(0, below, 24, 10)))
    if funnel_kpis(catalog):
        board = board.with_panel(exec_funnel(61, grid(0, below + 10, 24, 12), catalog))
    return board
