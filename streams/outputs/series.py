"""The names of the series partnerpulse exports, and their help text: a contract.

The exporter (:mod:`streams.outputs.exporter`) writes these series; the generated Prometheus
rules and Grafana dashboards (:mod:`streams.generators`) query them. Each name is spelled here
once and read everywhere else, so a renamed series cannot leave a rule or a panel querying the
old name.
"""

from __future__ import annotations

from typing import Final

KPI_VALUE: Final = "partnerpulse_kpi_value"
KPI_SAMPLES: Final = "partnerpulse_kpi_samples"
KPI_CHANNEL_VALUE: Final = "partnerpulse_kpi_channel_value"
"""A ``by: [channel]`` KPI's value per contact channel (label ``channel``)."""
KPI_CHANNEL_SAMPLES: Final = "partnerpulse_kpi_channel_samples"
KPI_ATTAINMENT: Final = "partnerpulse_kpi_attainment_ratio"
KPI_TARGET: Final = "partnerpulse_kpi_target"
PARTNER_INFO: Final = "partnerpulse_partner_info"
KPI_STATE: Final = "partnerpulse_kpi_state"
KPI_STATE_SINCE: Final = "partnerpulse_kpi_state_since_timestamp_seconds"
OPEN_ITEMS: Final = "partnerpulse_open_items"
OPEN_OLDEST_AGE: Final = "partnerpulse_open_oldest_age_seconds"
"""The age of a partner's oldest entity still waiting, per open_items KPI (absent when none)."""
URGENT_TICKET_LEFT: Final = "partnerpulse_urgent_ticket_left_seconds"
"""Time left of each partner's most urgent tickets of ``ticket_alerts`` KPIs (the ones their
ticket alerts name): bounded by ``settings.ticket_alerts_max`` per partner."""
INTEGRITY_FLAG: Final = "partnerpulse_integrity_flag"
INTEGRITY_SCORE: Final = "partnerpulse_integrity_score"
REPORT_RESTATEMENTS: Final = "partnerpulse_report_restatements"
"""A counter family (sample ``..._total``): KPI values of closed months changed by late events."""
REPORT_RESTATEMENTS_TOTAL: Final = f"{REPORT_RESTATEMENTS}_total"
REPORT_PROJECTED_BAND: Final = "partnerpulse_report_projected_band"
"""The probability of each reward band at the end of the month in progress."""
EVENTS: Final = "partnerpulse_events"
"""A counter family: its sample is :data:`EVENTS_TOTAL` (the text format adds ``_total``)."""
EVENTS_TOTAL: Final = f"{EVENTS}_total"
LAST_EVENT_TIMESTAMP: Final = "partnerpulse_last_event_timestamp_seconds"
FEED_STALE_FLAG: Final = "partnerpulse_feed_stale"
CONSUMER_LAG: Final = "partnerpulse_consumer_lag_messages"
CONSUMER_FETCH_AGE: Final = "partnerpulse_consumer_fetch_age_seconds"
"""Exported by the worker with its delivery figures (``runtime/pipeline.py``); read by the rules."""
EVENT_LOOP_LAG: Final = "partnerpulse_worker_event_loop_lag_seconds"
"""Exported by the worker with its delivery figures (``runtime/pacing.py``); read by the rules."""

HELP: Final = {
    KPI_VALUE: "KPI value over the rolling window, in base units (seconds, ratio 0-1, score).",
    KPI_SAMPLES: "Samples behind the KPI value in the window (denominator for ratios).",
    KPI_CHANNEL_VALUE:
        "KPI value over the rolling window among the partner's contacts of one channel (KPIs "
        "declared by: [channel]).",
    KPI_CHANNEL_SAMPLES: "Samples behind the KPI's per-channel value in the window.",
    KPI_ATTAINMENT:
        "KPI as a share of its target: 1 on target, above 1 better, either direction.",
    KPI_TARGET: "The partner's target for the KPI (partner, tier or catalog default).",
    PARTNER_INFO: "Partners exported by this worker, with their tier.",
    KPI_STATE:
        "Judgement of the KPI in the window: one series, labelled with the current state, value 1.",
    KPI_STATE_SINCE: "When the KPI entered its current state.",
    OPEN_ITEMS:
        "Items still waiting whose age passed 50/75/100% of the target (cumulative): tickets "
        "without first contact, or for follow-up KPIs starts not followed yet (of the horizon).",
    OPEN_OLDEST_AGE:
        "Age of the partner's oldest item still waiting (ticket without first contact, "
        "detractor not called back); absent while none waits.",
    URGENT_TICKET_LEFT:
        "Seconds left before the target (negative past it) of the partner's most urgent "
        "tickets at risk or breached, of KPIs with ticket alerts: at most "
        "settings.ticket_alerts_max per partner, least time left first.",
    INTEGRITY_FLAG:
        "1 while an integrity signal holds for the partner's KPI (threshold_hugging, "
        "deadline_bunching, under_reporting); absent otherwise.",
    INTEGRITY_SCORE:
        "Evidence of the integrity signal: -log10 of its p-value (higher is stronger), for every "
        "partner x KPI x signal with enough volume to be tested.",
    EVENTS: "Input messages by topic and outcome (accepted, duplicate, late, rejected).",
    REPORT_PROJECTED_BAND:
        "Probability that the partner's month in progress ends in the band (month-end "
        "forecast from the month to date; refreshed every 15 minutes).",
    REPORT_RESTATEMENTS:
        "Restatements of the partner's closed months kept (a KPI value of a frozen month card "
        "changed by events that came after its close); exported once a month has closed.",
    LAST_EVENT_TIMESTAMP: "Event time of the newest accepted event per topic.",
    FEED_STALE_FLAG: "1 while the topic's feed is stale (its partner alerts are held).",
    CONSUMER_LAG: "Messages on the partition not yet processed by this worker.",
}
"""The help text of each family the exporter writes itself."""
