"""Where the judge's verdicts go: the alerts topic, and Alertmanager when it is configured.

Why a part of its own: a partner's state change is logged, written to the alerts topic (keyed
by partner) and, with ``--alertmanager``, fired or resolved at every Alertmanager (an HA
cluster's members, each on its own queue) under labels and annotations the generated rules,
routes and runbooks rely on. A stale input feed is an alert of its own (about the pipeline), and
the set of stale feeds is what holds the partner alerts that depend on them.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import faust
import orjson

from streams.config.settings import Settings
from streams.judgement.alerts import (
    ALERT_NAME,
    CRITICAL,
    INTEGRITY_SEVERITY,
    PARTNER_INTEGRITY,
    PARTNER_LABELS,
    PIPELINE_ALERT,
    PIPELINE_LABELS,
    SEVERITY,
    TICKET_LABELS,
    Alert,
)
from streams.judgement.judge import State
from streams.judgement.lens import IntegrityChange
from streams.judgement.tickets import TICKET_ALERT, TICKET_SEVERITY, TicketAlerts, TicketChange
from streams.judgement.watch import Watch
from streams.outputs.alertmanager import AlertFanout

log = logging.getLogger("partnerpulse")

STATE_LINES_PER_S = 20
"""KPI state changes logged one by one per second; the rest of a second's are counted in one
line. After a restart (or a fleet-wide breach) the first judgements re-announce every KPI state:
a thousand filled partners logged thousands of lines, 2.5 s of the worker's catch-up, which no
one reads one by one. Every change still goes to the alerts topic and Alertmanager."""


class LogBudget:
    """At most ``per_s`` lines a second; what is over is counted, to be said in one line."""

    def __init__(self, per_s: int, clock: Callable[[], float] = time.monotonic) -> None:
        self.per_s = per_s
        self.clock = clock
        self._second = clock()
        self._used = 0
        self.held = 0
        """Lines not logged since the last :meth:`summary`."""

    def allow(self) -> bool:
        """Whether one more line may be logged now (if not, it is counted in :attr:`held`)."""
        now = self.clock()
        if now - self._second >= 1.0:
            self._second, self._used = now, 0
        if self._used < self.per_s:
            self._used += 1
            return True
        self.held += 1
        return False

    def summary(self) -> int:
        """The lines held back, once the second they were held in is over (0 before, or if
        none): the caller logs that count."""
        if not self.held or self.clock() - self._second < 1.0:
            return 0
        held, self.held = self.held, 0
        return held


class Alerting:
    """Routes partner alerts and feed staleness to the alerts topic and Alertmanager."""

    def __init__(self, settings: Settings, topic: faust.TopicT, watch: Watch) -> None:
        self.settings = settings
        self.topic = topic
        self.watch = watch
        self.sender: AlertFanout | None = None
        if settings.alertmanager:
            # each Alertmanager (an HA cluster's members) gets every alert, on its own queue
            self.sender = AlertFanout(settings.alertmanager)
        self.tickets: TicketAlerts | None = None
        """The worker's ticket alerts, for their figures (set by the pipeline)."""
        self.stale: set[str] = set()
        """Input topics with no message for ``stale_after_s``: their partner alerts are held."""
        self.state_lines = LogBudget(STATE_LINES_PER_S)
        """How many KPI state changes are logged one by one (:data:`STATE_LINES_PER_S`)."""

    async def run_sender(self) -> None:
        """The app task posting to Alertmanager (registered only with a sender)."""
        assert self.sender is not None
        await self.sender.run()

    def deliver(self, alerts: list[Alert]) -> None:
        """Log each state change (up to :data:`STATE_LINES_PER_S` a second, the rest counted),
        write it to the alerts topic, and fire or resolve it."""
        budget = self.state_lines
        for alert in alerts:
            if budget.allow():
                log.warning("kpi state %s", alert.summary())
            self.topic.send_soon(key=alert.partner.encode(), value=alert.to_json())
            if self.sender is None:
                continue
            key = f"{alert.partner}/{alert.kpi}/{alert.window}"
            new = State(alert.new)
            if new in SEVERITY:
                labels = {"alertname": ALERT_NAME[new], **PARTNER_LABELS,
                          "partner": alert.partner, "tier": alert.tier,
                          "kpi": alert.kpi, "window": alert.window, "severity": SEVERITY[new]}
                value = "n/a" if alert.value is None else f"{alert.value:.4g}"
                annotations = {
                    "summary": alert.summary(),
                    "value": value, "target": f"{alert.target:.4g}",
                    "dashboard": f"{self.settings.dashboard_url}?var-partner={alert.partner}",
                    "runbook_url": self.settings.runbook_url,
                }
                self.sender.set_active(key, labels, annotations, alert.since_ms)
            else:
                self.sender.resolve(key, alert.since_ms)
        self.log_held_states()

    def deliver_integrity(self, changes: list[IntegrityChange]) -> None:
        """Log each integrity flag raised or cleared, write it to the alerts topic (``"kind":
        "integrity"``), and fire or resolve ``PartnerIntegrity`` (partner management's route)."""
        for change in changes:
            log.warning("integrity %s", change.summary())
            finding = change.finding
            body = {"kind": "integrity", "partner": change.partner, "tier": change.tier,
                    "kpi": change.kpi, "signal": change.signal, "held": change.held,
                    "window": change.window, "p_value": finding.p_value, "score": finding.score,
                    "samples": finding.samples, "periods": finding.periods,
                    "statistic": finding.statistic, "detail": finding.detail,
                    "since_ms": change.at_ms, "dedup_key": change.dedup_key}
            self.topic.send_soon(key=change.partner.encode(), value=orjson.dumps(body))
            if self.sender is None:
                continue
            key = f"{change.partner}/{change.kpi}/integrity/{change.signal}"
            if not change.held:
                self.sender.resolve(key, change.at_ms)
                continue
            labels = {"alertname": PARTNER_INTEGRITY, **PARTNER_LABELS, "partner": change.partner,
                      "tier": change.tier, "kpi": change.kpi, "signal": change.signal,
                      "severity": INTEGRITY_SEVERITY}
            annotations = {
                "summary": change.summary(), "score": f"{finding.score:.1f}",
                "dashboard": f"{self.settings.dashboard_url}?var-partner={change.partner}",
                "runbook_url": self.settings.runbook_url,
            }
            self.sender.set_active(key, labels, annotations, change.at_ms)

    def deliver_tickets(self, changes: list[TicketChange], tier_of: Callable[[str], str]) -> None:
        """Write each ticket alert fired or resolved to the alerts topic (``"kind": "ticket"``)
        and fire or resolve it in Alertmanager, with the ticket id as a label."""
        for change in changes:
            item = change.item
            body: dict[str, object] = {
                "kind": "ticket", "partner": change.partner, "kpi": change.kpi,
                "entity_id": change.entity_id, "state": None if item is None else item.state,
                "at_ms": change.at_ms}
            if item is not None:
                body.update(age_seconds=item.age_ms / 1000, target_seconds=item.target_ms / 1000,
                            left_seconds=item.left_ms / 1000, opened_ms=item.opened_ms)
            self.topic.send_soon(key=change.partner.encode(), value=orjson.dumps(body))
            if self.sender is None:
                continue
            if item is None:
                self.sender.resolve(change.key, change.at_ms)
                continue
            labels = {"alertname": TICKET_ALERT[item.state], **TICKET_LABELS,
                      "partner": change.partner, "tier": tier_of(change.partner),
                      "kpi": change.kpi, "ticket": change.entity_id,
                      "severity": TICKET_SEVERITY[item.state]}
            if item.severity is not None:
                labels["ticket_severity"] = item.severity
            left = item.left_ms / 1000
            annotations = {
                "summary": (f"{change.partner} ticket {change.entity_id}: {change.kpi} "
                            f"{item.age_ms / 1000:.0f}s of {item.target_ms / 1000:.0f}s, "
                            + (f"{left:.0f}s left" if left > 0 else f"{-left:.0f}s over")),
                "dashboard": f"{self.settings.dashboard_url}?var-partner={change.partner}",
                "runbook_url": self.settings.runbook_url,
            }
            self.sender.set_active(change.key, labels, annotations, item.opened_ms)

    def log_held_states(self) -> None:
        """Say how many KPI state changes were not logged one by one (none: nothing)."""
        held = self.state_lines.summary()
        if held:
            log.warning("kpi state: %d more changes in the last seconds, not logged one by one "
                        "(over %d a second); each is on the alerts topic%s", held,
                        STATE_LINES_PER_S, " and sent to Alertmanager" if self.sender else "")

    def check_feeds(self, now: int) -> None:
        """Feeds gone stale, or back, since the last check: logged, and fired or resolved; and
        the count of KPI state changes held back from the log."""
        self.log_held_states()
        stale = self.watch.stale_topics(now)
        for topic in sorted(stale - self.stale):
            log.warning("feed stale: no %s message for %.0fs; its partner alerts are held",
                        topic, self.settings.stale_after_s)
            if self.sender is not None:
                self.sender.set_active(
                    f"pipeline/{topic}",
                    {"alertname": PIPELINE_ALERT, **PIPELINE_LABELS,
                     "topic": topic, "severity": CRITICAL},
                    {"summary": f"No {topic} events for {self.settings.stale_after_s:.0f}s: "
                                "partner alerts on KPIs fed by it are held",
                     "runbook_url": self.settings.runbook_url},
                    now)
        for topic in sorted(self.stale - stale):
            log.warning("feed back: %s", topic)
            if self.sender is not None:
                self.sender.resolve(f"pipeline/{topic}", now)
        self.stale = stale

    def figures(self) -> dict[str, tuple[str, str, float]]:
        """Ticket alert and Alertmanager delivery figures for /metrics (the first only with
        ``ticket_alerts`` KPIs, the others only with a sender)."""
        out: dict[str, tuple[str, str, float]] = {}
        tickets = self.tickets
        if tickets is not None and tickets.kpis:
            out["partnerpulse_ticket_alerts_firing"] = (
                "gauge", "Ticket alerts (at risk or breached tickets of ticket_alerts KPIs) this "
                "worker has firing.", tickets.firing())
            out["partnerpulse_ticket_alerts_held_back"] = (
                "gauge", "Urgent tickets without an alert of their own because their partner "
                "has settings.ticket_alerts_max firing already.", sum(tickets.held_back.values()))
        if self.sender is None:
            return out
        return out | {
            "partnerpulse_alertmanager_posts": (
                "counter", "Batches of alerts Alertmanager accepted.", self.sender.sent_batches),
            "partnerpulse_alertmanager_failed_posts": (
                "counter", "Posts to Alertmanager that failed (retried).", self.sender.failed_posts),
            "partnerpulse_alertmanager_dropped_alerts": (
                "counter", "Alerts and resolutions dropped because max_pending were already "
                "queued for an Alertmanager.", self.sender.dropped),
            "partnerpulse_alertmanager_pending_alerts": (
                "gauge", "Alerts and resolutions not yet accepted by Alertmanager.",
                self.sender.pending),
        }
