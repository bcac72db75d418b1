"""The gaming partner's escalation throttle: it escalates what needs escalating until its running
rate reaches the limit, then holds escalations back until the rate has fallen under it again.

Every other behaviour of the simulator is a pure function of an arrival. A partner steering on its
own running rate is not: whether it escalates a ticket depends on what it escalated before. So the
throttle runs over the events as they are handed out, in event-time order, and keeps or drops each
ticket's escalation hops (all of them, decided at the first). That is what the engine sees too, so
the partner's rate as the engine counts it (escalated tickets over opened tickets) is what it
steers: it never rises over the limit by more than one escalation, and it sits just under it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Final

GAMING_LIMIT: Final = 0.149
"""The running escalation rate the gaming partner holds under (its target is 15%)."""
STEERED_SINCE_MS: Final = 3_600_000
"""How long before the simulator's start the partner starts counting. The warm-start backlog
replays only part of the history before that (tickets still in flight at start), and a rate
counted over it would read far under the limit and let the partner escalate freely for hours."""


@dataclass(slots=True)
class _Running:
    """One partner's counts since it started steering, and its pending decisions."""

    opened: int = 0
    escalated: int = 0
    kept: dict[str, bool] = field(default_factory=dict)
    """Ticket id -> whether its escalations are kept, from its first hop to its resolution."""


class EscalationThrottle:
    """Drops the escalation hops of ``partners``' tickets escalated while the running rate was at
    ``limit`` or over; the running rate counts opened and escalated tickets from ``since_ms``."""

    def __init__(self, partners: set[str], since_ms: int, limit: float = GAMING_LIMIT) -> None:
        self.limit = limit
        self.since_ms = since_ms
        self._running = {p: _Running() for p in partners}

    def __call__(self, events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, dict[str, Any]]]:
        """The events (sorted by ts) without the hops the partners held back."""
        running = self._running
        out: list[tuple[str, dict[str, Any]]] = []
        for topic, event in events:
            r = running.get(event["partner_id"]) if topic == "tickets" else None
            if r is None or self._keep(r, event):
                out.append((topic, event))
        return out

    def _keep(self, r: _Running, event: dict[str, Any]) -> bool:
        typ = event["type"]
        counted = event["ts"] >= self.since_ms
        if typ == "opened":
            r.opened += counted
            return True
        tid = event["ticket_id"]
        if typ == "resolved":  # every hop is before the (first) resolution
            r.kept.pop(tid, None)
            return True
        if typ == "escalation_reviewed":  # no review of an escalation never made
            return r.kept.get(tid, True)
        if typ != "escalated":
            return True
        keep = r.kept.get(tid)
        if keep is None:  # the first hop decides for the ticket
            keep = not counted or r.escalated < self.limit * r.opened
            r.kept[tid] = keep
            r.escalated += keep and counted
        return keep


__all__ = ["GAMING_LIMIT", "STEERED_SINCE_MS", "EscalationThrottle"]
