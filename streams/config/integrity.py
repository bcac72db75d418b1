"""The integrity lens's facts shared by the catalog, the engine and the judgement: the signal
names (a contract: they are label values of exported series and alert labels), which KPIs get
which signal by default, and the geometry of the bins the engine keeps around duration targets.
"""

from __future__ import annotations

from typing import Final

THRESHOLD_HUGGING: Final = "threshold_hugging"
"""Share KPIs: sub-period values sit just inside the target and vary less than chance allows."""
DEADLINE_BUNCHING: Final = "deadline_bunching"
"""Duration KPIs: samples pile up just inside the target against just past it."""
UNDER_REPORTING: Final = "under_reporting"
"""Ratio KPIs whose numerator events may stop being reported: the recent rate falls far below
the partner's own earlier rate in the window."""
SIGNALS: Final = (THRESHOLD_HUGGING, DEADLINE_BUNCHING, UNDER_REPORTING)

BUNCHING_WIDTH: Final = 0.1
"""Width of one bin around a duration target, as a share of the target."""
BUNCHING_EACH_SIDE: Final = 5
"""Bins on each side of the target: [0.5, 1.5) x target at the width above."""


def default_signals(kind: str, unit: str, statistic: str, stat_kind: str) -> tuple[str, ...]:
    """The signals a KPI gets when the catalog does not list them (``integrity:``).

    Hugging needs a share (0/1 samples or a count ratio); bunching a duration in seconds with a
    target (mean or percentile: the samples are durations either way). Under-reporting is never
    a default: only the catalog knows whose numerator events can be withheld."""
    if stat_kind == "ratio":
        return (THRESHOLD_HUGGING,)
    if kind == "duration" and unit == "seconds" and statistic != "share_within":
        return (DEADLINE_BUNCHING,)
    return ()


def allowed_signals(kind: str, unit: str, statistic: str, stat_kind: str) -> tuple[str, ...]:
    """The signals a KPI may list: its defaults, and under-reporting for count ratios and
    follow-ups."""
    allowed = default_signals(kind, unit, statistic, stat_kind)
    if kind in ("ratio", "follow_up"):
        allowed = (*allowed, UNDER_REPORTING)
    return allowed


def vanishing_side(kind: str, better: str) -> str:
    """Which events under-reporting watches vanish, in the terms of
    :func:`streams.judgement.integrity.under_reporting`'s ``better``: ``"lower"`` for the
    numerator's, ``"higher"`` for the complement's.

    A ratio's events that count against the partner may stop being logged: the numerator of a
    lower-is-better rate (escalations), the misses of a higher-is-better one. A follow-up's
    events are the follows whatever its direction: a partner surveying only customers likely to
    be happy makes answers vanish (survey_coverage, higher is better)."""
    return "lower" if kind == "follow_up" else better
