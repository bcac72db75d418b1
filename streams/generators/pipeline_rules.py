"""The pipeline's own alerts in the generated rules: feeds, lag, the broker, bad input, the workers
and the partner-info join (the partner alerts are in :mod:`streams.generators.rules`)."""

from __future__ import annotations

from typing import Any, Final

from streams.generators.templates import DASHBOARD_URL, RUNBOOK_URL, queried
from streams.judgement.alerts import (
    BROKER_UNREACHABLE,
    CONSUMER_LAG_HIGH,
    CRITICAL,
    FEED_STALE,
    METRICS_ABSENT,
    PARTNER_INFO_MISSING,
    PIPELINE_LABELS,
    REJECTED_OR_LATE_HIGH,
    WARNING,
    WORKER_STALLED,
)
from streams.judgement.watch import STALE_AFTER_MS
from streams.outputs.series import (
    CONSUMER_FETCH_AGE,
    CONSUMER_LAG,
    EVENT_LOOP_LAG,
    EVENTS_TOTAL,
    FEED_STALE_FLAG,
    KPI_ATTAINMENT,
    LAST_EVENT_TIMESTAMP,
    PARTNER_INFO,
)

FEED_STALE_EVENT_MARGIN: Final = 1.5
FEED_STALE_AFTER_S: Final = round(STALE_AFTER_MS / 1000 * FEED_STALE_EVENT_MARGIN)
"""Age of the newest *event* (event time) that makes the rules call a feed stale: 900 s, half as
long again as the worker's own threshold (``settings.stale_after_s``, 600 s, measured on message
*arrival*). The worker's flag is the first signal; this half of the rule is the fallback for a
worker that cannot flag (restarted with no arrival since, or gone), and the margin keeps events
that merely arrive late (event time behind arrival) from firing it before the worker's flag."""
FEED_STALE_FOR: Final = "1m"
CONSUMER_LAG_MESSAGES: Final = 10_000
CONSUMER_LAG_FOR: Final = "10m"
FETCH_AGE_S: Final = 60
"""Seconds without a fetch answer from the broker that make a worker's Kafka unreachable
(a rebalance or a restart pauses fetching for a few seconds; the frozen-broker test saw 59 s
for a 60 s freeze)."""
FETCH_AGE_FOR: Final = "2m"
BAD_INPUT_SHARE: Final = 0.05
"""Share of a topic's messages rejected or late that makes the pipeline alert fire."""
BAD_INPUT_FOR: Final = "15m"
ABSENT_FOR: Final = "5m"
STALL_S: Final = 1.0
"""Seconds the worker's event loop may be late at worst within a minute: the event-to-alert
latency goal. Paced work holds it 20 ms at a time; what goes past a second is unpaced work or a
garbage collection over a large heap (about 1.3 s at 10,000 filled partners)."""
STALL_FOR: Final = "10m"
"""A stall past :data:`STALL_S` in every minute for this long: the worker is overloaded, not
passing through one slow moment (a new hour's collection, a restart's first judgement)."""


def _alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str,
           runbook: str, dashboard: str = DASHBOARD_URL) -> dict[str, Any]:
    """One pipeline alert rule, its keys in the order the generated file has them."""
    return {
        "alert": name,
        "expr": expr,
        "for": for_,
        "labels": {"severity": severity, **PIPELINE_LABELS},
        "annotations": {
            "summary": summary,
            "description": description,
            "dashboard": dashboard,
            "runbook_url": f"{RUNBOOK_URL}/{runbook}",
        },
    }


def _feed_stale_alert() -> dict[str, Any]:
    age = (f'(print "time() - max({LAST_EVENT_TIMESTAMP}{{topic=\\"" '
           '$labels.topic "\\"})")')
    # Partner alerts are inhibited while this fires (config/alertmanager.yml): without
    # events their KPIs say nothing. The timestamp is event time: with --clock event
    # (replaying old data) the second half fires by design.
    return _alert(
        FEED_STALE,
        (f"max by (topic) ({FEED_STALE_FLAG}) == 1\n"
         "or\n"
         f"time() - max by (topic) ({LAST_EVENT_TIMESTAMP}) > {FEED_STALE_AFTER_S}\n"),
        FEED_STALE_FOR, CRITICAL,
        "partnerpulse: the {{ $labels.topic }} feed is stale",
        ("Newest accepted {{ $labels.topic }} event: " + queried(age, "seconds") + " ago. "
         "Partner KPI alerts are inhibited while the feed is stale."),
        "feed-stale", dashboard=f"{DASHBOARD_URL}?var-topic={{{{ $labels.topic }}}}")


def _consumer_lag_alert() -> dict[str, Any]:
    return _alert(
        CONSUMER_LAG_HIGH, f"sum by (topic) ({CONSUMER_LAG}) > {CONSUMER_LAG_MESSAGES}\n",
        CONSUMER_LAG_FOR, WARNING,
        "partnerpulse: {{ $value }} {{ $labels.topic }} messages not yet consumed",
        "The workers are behind on {{ $labels.topic }}; KPIs lag behind the events.",
        "consumer-lag", dashboard=f"{DASHBOARD_URL}?var-topic={{{{ $labels.topic }}}}")


def _broker_unreachable_alert() -> dict[str, Any]:
    # Lag freezes at its last value while the broker is unreachable, and quiet feeds
    # look alike: the age of the newest fetch answer is the one figure that grows.
    return _alert(
        BROKER_UNREACHABLE, f"max by (instance) ({CONSUMER_FETCH_AGE}) > {FETCH_AGE_S}\n",
        FETCH_AGE_FOR, CRITICAL,
        ("partnerpulse: worker {{ $labels.instance }} has had no answer from "
         "Kafka for {{ $value | humanizeDuration }}"),
        ("The broker is down or unreachable from this worker, or its consumer is stuck: the "
         "KPIs of its partners stop moving, and its lag figures freeze at their last values."),
        "broker-unreachable")


def _bad_input_alert() -> dict[str, Any]:
    # A producer that breaks the contract (or sends stale history) silently shrinks the
    # samples behind every KPI; judged per topic as a share of all messages.
    return _alert(
        REJECTED_OR_LATE_HIGH,
        ("sum by (topic, outcome) "
         f"(rate({EVENTS_TOTAL}{{outcome=~\"rejected|late\"}}[10m]))\n"
         "  / on (topic) group_left\n"
         f"  sum by (topic) (rate({EVENTS_TOTAL}[10m])) > {BAD_INPUT_SHARE}\n"),
        BAD_INPUT_FOR, WARNING,
        ("partnerpulse: {{ $value | humanizePercentage }} of {{ $labels.topic }} "
         "messages are {{ $labels.outcome }}"),
        ("Dead letters (rejected) or events older than the largest window (late) "
         "are dropped and counted in no KPI: check the producers."),
        "bad-input")


def _metrics_absent_alert() -> dict[str, Any]:
    # Without series every partner alert above silently resolves: this one does not.
    return _alert(
        METRICS_ABSENT, f"absent({EVENTS_TOTAL})\n", ABSENT_FOR, CRITICAL,
        "partnerpulse: no worker exports metrics",
        (f"{EVENTS_TOTAL} is absent: no partnerpulse worker is scraped, so no partner KPI "
         "alert can fire."),
        "metrics-absent")


def _partner_info_missing_alert() -> dict[str, Any]:
    return _alert(
        PARTNER_INFO_MISSING,
        f"count by (partner) ({KPI_ATTAINMENT})\nunless on(partner) {PARTNER_INFO}\n",
        "15m", WARNING,
        f"partnerpulse: {{{{ $labels.partner }}}} has KPIs but no {PARTNER_INFO}",
        (f"Partner alerts join {PARTNER_INFO} for the tier: without it, no partner alert of "
         "{{ $labels.partner }} can fire."),
        "partner-info-missing", dashboard=f"{DASHBOARD_URL}?var-partner={{{{ $labels.partner }}}}")


def _worker_stalled_alert() -> dict[str, Any]:
    # The worker's loop runs every event, every view and every alert delivery: stalled
    # past the latency goal minute after minute, its alerts come late and its scrapes slow.
    return _alert(
        WORKER_STALLED, f"max by (instance) ({EVENT_LOOP_LAG}) > {STALL_S:g}\n",
        STALL_FOR, WARNING,
        ("partnerpulse: worker {{ $labels.instance }} ran events up to "
         "{{ $value | humanizeDuration }} late"),
        ("The worker's event loop was held past the 1 s latency goal in every minute: its "
         "partners' alerts and views wait. Too many partners for one worker (add workers: each "
         "takes a share of the partitions), or a long stretch of work that is not paced."),
        "worker-stalled")


def pipeline_alerts() -> list[dict[str, Any]]:
    return [_feed_stale_alert(), _consumer_lag_alert(), _broker_unreachable_alert(),
            _bad_input_alert(), _metrics_absent_alert(), _partner_info_missing_alert(),
            _worker_stalled_alert()]
