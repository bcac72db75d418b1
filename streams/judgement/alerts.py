"""What partnerpulse alerts are called, how severe they are, and the message of a state change.

One definition for both places an alert comes from: the worker, which pushes the state changes
of :class:`Alert` to Alertmanager (``runtime/alerting.py``), and the Prometheus rules generated
from the catalog (``generators/rules.py``). Both give a partner alert the same ``alertname``,
``severity``, ``service`` and ``scope`` labels, so Alertmanager's routes and inhibitions
(``config/alertmanager.yml``, tests/test_alertmanager_config.py) treat them alike.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Final

import orjson

from streams.judgement.judge import State

CRITICAL: Final = "critical"
WARNING: Final = "warning"
"""The two severities (``config/alertmanager.yml`` routes on them)."""

SERVICE: Final = "partnerpulse"

PARTNER_LABELS: Final = {"service": SERVICE, "scope": "partner"}
"""Labels of every alert about one partner."""
PIPELINE_LABELS: Final = {"service": SERVICE, "scope": "pipeline"}
"""Labels of every alert about the pipeline (feeds, lag, the workers)."""
TICKET_LABELS: Final = {"service": SERVICE, "scope": "ticket"}
"""Labels of every alert about one ticket (``judgement/tickets.py``): the NOC's, never the
executive digest's."""

# --- partner alerts ------------------------------------------------------------------------------
KPI_BREACH: Final = "PartnerKpiBreach"
KPI_AT_RISK: Final = "PartnerKpiAtRisk"
KPI_BELOW_TARGET: Final = "PartnerKpiBelowTarget"
OPEN_TICKETS_OVERDUE: Final = "PartnerOpenTicketsOverdue"
PARTNER_INTEGRITY: Final = "PartnerIntegrity"
"""A partner's numbers look managed (integrity lens): for partner management, never a page."""
INTEGRITY_SEVERITY: Final = WARNING

ALERT_NAME: Final = {State.AT_RISK: KPI_AT_RISK, State.BREACH: KPI_BREACH}
"""The judged states that alert, and the alert each raises (the others resolve it)."""
SEVERITY: Final = {State.AT_RISK: WARNING, State.BREACH: CRITICAL}

# --- pipeline alerts -----------------------------------------------------------------------------
FEED_STALE: Final = "PartnerpulseFeedStale"
CONSUMER_LAG_HIGH: Final = "PartnerpulseConsumerLagHigh"
BROKER_UNREACHABLE: Final = "PartnerpulseBrokerUnreachable"
REJECTED_OR_LATE_HIGH: Final = "PartnerpulseRejectedOrLateHigh"
METRICS_ABSENT: Final = "PartnerpulseMetricsAbsent"
PARTNER_INFO_MISSING: Final = "PartnerpulsePartnerInfoMissing"
WORKER_STALLED: Final = "PartnerpulseWorkerStalled"

PIPELINE_ALERT: Final = FEED_STALE
"""The alert the worker itself raises for a stale feed (severity :data:`CRITICAL`)."""


@dataclass(frozen=True, slots=True)
class Alert:
    """One state change of one partner x KPI x window: a message on ``partnerpulse-alerts``."""

    partner: str
    tier: str
    kpi: str
    window: str
    old: str
    new: str
    value: float | None
    target: float
    lower: float | None
    upper: float | None
    samples: int
    since_ms: int
    dedup_key: str

    def to_json(self) -> bytes:
        """The message body."""
        return orjson.dumps(asdict(self))

    def summary(self) -> str:
        """One human line: what changed and the value against the target."""
        value = "n/a" if self.value is None else f"{self.value:.4g}"
        return (f"{self.partner} ({self.tier}) {self.kpi} {self.window}: {self.old} -> {self.new}, "
                f"value {value} vs target {self.target:.4g} over {self.samples} samples")


__all__ = [
    "ALERT_NAME",
    "BROKER_UNREACHABLE",
    "CONSUMER_LAG_HIGH",
    "CRITICAL",
    "FEED_STALE",
    "INTEGRITY_SEVERITY",
    "KPI_AT_RISK",
    "KPI_BELOW_TARGET",
    "KPI_BREACH",
    "METRICS_ABSENT",
    "OPEN_TICKETS_OVERDUE",
    "PARTNER_INFO_MISSING",
    "PARTNER_INTEGRITY",
    "PARTNER_LABELS",
    "PIPELINE_ALERT",
    "PIPELINE_LABELS",
    "REJECTED_OR_LATE_HIGH",
    "SERVICE",
    "SEVERITY",
    "WARNING",
    "WORKER_STALLED",
    "Alert",
]
