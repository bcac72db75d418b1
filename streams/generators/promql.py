"""PromQL pieces shared by the generated rules and dashboards.

The recording rules are defined in :mod:`streams.generators.rules` and read by the dashboards:
their names are spelled here once, built from the series they aggregate
(``level:metric:operation``, Prometheus' naming convention).
"""

from __future__ import annotations

from typing import Final

from streams.outputs.series import KPI_ATTAINMENT, KPI_STATE, PARTNER_INFO

INFO_PER_PARTNER: Final = f"topk by (partner) (1, {PARTNER_INFO})"
"""Exactly one info series per partner: a partner exported twice (two workers during a
rebalance) cannot make a join fail with "many-to-many matching"."""
TIER_JOIN: Final = f"* on(partner) group_left(tier) {INFO_PER_PARTNER}"
"""Join the partner's tier onto a vector with a ``partner`` label."""

# --- recording rules -----------------------------------------------------------------------------
ATTAINMENT_SUFFICIENT: Final = f"partner_kpi_window:{KPI_ATTAINMENT}:sufficient"
"""Attainment of the partner x KPI x window with enough samples (insufficient data left out)."""
PARTNER_ATTAINMENT_MIN: Final = f"partner_window:{KPI_ATTAINMENT}:min"
"""Each partner's worst sufficient attainment per window."""
PARTNER_TIER_ATTAINMENT_MAX: Final = f"partner_tier_kpi_window:{KPI_ATTAINMENT}:max"
"""Attainment with the partner's tier joined."""
TIER_ATTAINMENT_MIN: Final = f"tier_window:{KPI_ATTAINMENT}:min"
"""Each tier's worst sufficient attainment per window."""
TIER_STATE_COUNT: Final = f"tier_kpi_window_state:{KPI_STATE}:count"
"""Partners per tier, KPI, window and state."""


def in_state(state: str, by: str = "partner, kpi, window", selector: str = "") -> str:
    """``max by (by) (partnerpulse_kpi_state{selector,state="..."}) == 1``: the series in that
    state (``partnerpulse_kpi_state`` is 1 for exactly one state; ``max`` merges a partner
    exported twice)."""
    sel = f"{selector}," if selector else ""
    return f'max by ({by}) ({KPI_STATE}{{{sel}state="{state}"}}) == 1'
