"""Early warning: each partner's CUSUM per KPI, fed the samples of every accepted event."""

from __future__ import annotations

from streams.config.catalog import Kpi, Partners
from streams.engine.cusum import Cusum
from streams.engine.model import PartnerState, Warn


def _position(item: Warn) -> int:
    return item[0]


class EarlyWarning:
    """The CUSUMs of every partner (``PartnerState.cusum``)."""

    def __init__(self, kpis: tuple[Kpi, ...], partners: Partners) -> None:
        self.kpis = kpis
        self.partners = partners

    def feed(self, partner: str, st: PartnerState, warn: list[Warn]) -> None:
        """Feed an event's samples to the CUSUMs, in the catalog order of their selectors."""
        if len(warn) > 1:
            warn.sort(key=_position)
        for _, k, x in warn:
            cusum = self._cusum(partner, st, k)
            if x is None or self.kpis[k].kind == "ratio":
                # a count ratio: each denominator adds -target, each numerator +1 (see below)
                cusum.update(0.0 if x is None else cusum.target + 1.0)
            else:
                cusum.update(x)

    def _cusum(self, partner: str, st: PartnerState, k: int) -> Cusum:
        """The CUSUM of KPI ``k``: its samples, or for a count ratio each denominator event
        as 0 and each numerator event as ``target + 1`` (with the CUSUM's
        ``z = d * (x - target)`` the drift per denominator event is exactly ``rate - target``)."""
        cusum = st.cusum.get(k)
        if cusum is None:
            kpi = self.kpis[k]
            cusum = st.cusum[k] = Cusum.for_kind(
                kpi.stat_kind, self.partners.target(partner, kpi), kpi.lower_is_better, kpi.judge)
        return cusum

    def alarm(self, st: PartnerState, k: int) -> bool:
        """Whether KPI ``k``'s CUSUM is past its threshold."""
        cusum = st.cusum.get(k)
        return cusum is not None and cusum.alarm
