"""How long a duration has run: on the calendar or the partner's business clock, less pauses.

A duration KPI with ``clock: business`` counts only the working time of the partner's calendar
(:class:`streams.config.calendars.BusinessCalendar`); one with ``pause_on`` stops while the
entity waits (a ticket ``pending`` on the customer) until its next ``resume_on`` event. Both are
functions of the entity's marks and the instants, so arrival order never changes the numbers,
and the same function serves the samples, the SLA of a survey answer and the ledger's ages.
"""

from __future__ import annotations

from typing import Final

from streams.config.calendars import BusinessCalendar

Pauses = tuple[tuple[int, int], ...]
"""A ``pause`` mark: the entity's pause and resume events as ``(time, 1 pause / 0 resume)``,
sorted; None while it has none."""

MAX_PAUSE_EVENTS: Final = 64
"""Pause and resume events kept per entity: a ticket put on hold more than 32 times keeps its
first 64 such events (memory stays bounded whatever a producer sends); later ones are ignored."""


def pause_intervals(pauses: Pauses | None, start: int, end: int) -> list[tuple[int, int]]:
    """The paused intervals within ``[start, end)``, disjoint and sorted: each pause holds from
    its time to the first resume strictly after it (to ``end`` without one)."""
    if not pauses:
        return []
    out: list[tuple[int, int]] = []
    resumes = [t for t, paused in pauses if not paused]
    for t, paused in pauses:
        if not paused or t >= end:
            continue
        until = next((r for r in resumes if r > t), end)
        lo, hi = max(t, start), min(until, end)
        if hi <= lo:
            continue
        if out and lo <= out[-1][1]:  # overlaps (or touches) the previous pause: one interval
            if hi > out[-1][1]:
                out[-1] = (out[-1][0], hi)
        else:
            out.append((lo, hi))
    return out


def elapsed(start: int, end: int, pauses: Pauses | None,
            calendar: BusinessCalendar | None) -> tuple[int, int]:
    """``(counted, paused)`` milliseconds from ``start`` to ``end``: the clock's time (working
    time of ``calendar``, every millisecond without one) less what it spent paused, and that
    paused time on the same clock."""
    if end <= start:
        return 0, 0
    span = calendar.working_ms(start, end) if calendar is not None else end - start
    if not pauses:
        return span, 0
    paused = 0
    for lo, hi in pause_intervals(pauses, start, end):
        paused += calendar.working_ms(lo, hi) if calendar is not None else hi - lo
    return span - paused, paused
