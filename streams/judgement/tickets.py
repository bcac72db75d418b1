"""Per-ticket alerts before the breach: which open items of a ``ticket_alerts`` KPI fire.

The ledger (:meth:`streams.engine.core.Engine.open_list`) says how each waiting ticket stands
against its partner's target; a KPI with ``ticket_alerts: true`` turns the urgent ones into
alerts with the ticket id as a label: ``PartnerTicketAtRisk`` (warning) from 75% of the target,
``PartnerTicketBreached`` (critical) from 100%. An alert resolves when its ticket gets its stop,
or moves to the other name when it passes the target.

Rate-limited twice: a partner has at most ``max_per_partner`` ticket alerts at once (its most
urgent, least time left first; the others are counted as held back, and take a freed place),
and Alertmanager's route groups them per partner and KPI (``config/alertmanager.yml``), so a
storm of tickets is one notification per group interval, not one per ticket.

Plain Python: the caller passes the ledger's items and the instant.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final

from streams.engine.model import OpenItem
from streams.judgement.alerts import CRITICAL, WARNING

TICKET_AT_RISK: Final = "PartnerTicketAtRisk"
TICKET_BREACHED: Final = "PartnerTicketBreached"
TICKET_ALERT: Final = {"at_risk": TICKET_AT_RISK, "breached": TICKET_BREACHED}
"""Ledger state -> the ticket alert it raises (``ok`` raises none)."""
TICKET_SEVERITY: Final = {"at_risk": WARNING, "breached": CRITICAL}


@dataclass(frozen=True, slots=True)
class TicketChange:
    """A ticket alert fired (``item`` set, in its state) or resolved (``item`` None)."""

    key: str
    """``partner/kpi/ticket/<entity id>``: the Alertmanager sender's key."""
    partner: str
    kpi: str
    entity_id: str
    item: OpenItem | None
    at_ms: int


class TicketAlerts:
    """The ticket alerts of the partners one worker owns, and how they change."""

    def __init__(self, kpis: Iterable[str], max_per_partner: int) -> None:
        self.kpis = frozenset(kpis)
        """The KPIs with ``ticket_alerts: true``."""
        self.max_per_partner = max_per_partner
        self._active: dict[str, dict[str, str]] = {}
        """partner -> alert key -> the state it fired in."""
        self.held_back: dict[str, int] = {}
        """partner -> urgent items beyond its cap at its last update (0: none)."""

    def update(self, partner: str, items: Iterable[OpenItem], now_ms: int) -> list[TicketChange]:
        """What changes for ``partner`` given its ledger ``items`` at ``now_ms``: new or
        re-stated alerts (a ticket passing its target), then resolutions."""
        if not self.kpis:
            return []
        kept, held = most_urgent(items, self.kpis, self.max_per_partner)
        return self.update_urgent(partner, kept, held + len(kept), now_ms)

    def update_urgent(self, partner: str, kept: list[OpenItem], urgent: int,
                      now_ms: int) -> list[TicketChange]:
        """:meth:`update` from the partner's ``max_per_partner`` most urgent items of the
        alerting KPIs (least time left first) and how many are urgent: what
        ``Engine.most_urgent_open`` gives without making every waiting item, as the worker's
        ticket tick asks for every owned partner."""
        if not self.kpis:
            return []
        self.held_back[partner] = max(0, urgent - len(kept))
        active = self._active.get(partner, {})
        now: dict[str, str] = {}
        out: list[TicketChange] = []
        for item in kept:
            key = _key(item.partner, item.kpi, item.entity_id)
            now[key] = item.state
            if active.get(key) != item.state:
                out.append(TicketChange(key, partner, item.kpi, item.entity_id, item, now_ms))
        for key in sorted(set(active) - set(now)):
            _, kpi, _, entity = key.split("/", 3)
            out.append(TicketChange(key, partner, kpi, entity, None, now_ms))
        if now:
            self._active[partner] = now
        else:
            self._active.pop(partner, None)
        return out

    def keep(self, partners: Iterable[str], now_ms: int) -> list[TicketChange]:
        """Resolve the alerts of every partner not in ``partners`` (those this worker no
        longer owns: their new owner raises what still holds at its first update)."""
        alive = set(partners)
        out: list[TicketChange] = []
        for partner in sorted(set(self._active) - alive):
            for key in sorted(self._active.pop(partner)):
                _, kpi, _, entity = key.split("/", 3)
                out.append(TicketChange(key, partner, kpi, entity, None, now_ms))
        for partner in set(self.held_back) - alive:
            del self.held_back[partner]
        return out

    def firing(self) -> int:
        """Ticket alerts firing now, over every partner."""
        return sum(len(a) for a in self._active.values())

    def active(self, partner: str) -> dict[str, str]:
        """Alert key -> state of the partner's ticket alerts firing now."""
        return dict(self._active.get(partner, {}))


def most_urgent(items: Iterable[OpenItem], kpis: frozenset[str],
                cap: int) -> tuple[list[OpenItem], int]:
    """The at-risk and breached items of ``kpis``, least time left first (ties by KPI and
    entity), at most ``cap`` of them; and how many more there were. What fires as ticket alerts
    and what the on-call dashboard lists."""
    urgent = sorted((i for i in items if i.kpi in kpis and i.state in TICKET_ALERT),
                    key=lambda i: (i.left_ms, i.kpi, i.entity_id))
    return urgent[:cap], max(0, len(urgent) - cap)


def _key(partner: str, kpi: str, entity_id: str) -> str:
    # the entity id last: it is the one part that may contain a slash
    return f"{partner}/{kpi}/ticket/{entity_id}"
