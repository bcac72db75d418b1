"""Business calendars: the working time between two instants, in a partner's own time zone.

An SLA clock in business hours (issue 19) counts only the partner's working hours: a ticket
opened on Friday at 17:30 against a 4-hour target in an 08:00-18:00 week is due on Monday at
11:30, not on Friday at 21:30. A :class:`BusinessCalendar` says which local hours of which
weekdays are working time, and which dates are holidays: given as dates, or drawn from the
``holidays`` library's set for a country (and region), which is kept up to date upstream.

Working hours are wall-clock hours in the calendar's zone: on the night the clocks change, an
08:00-18:00 day is still 08:00 to 18:00 local, whatever its length in UTC. (A working interval
that includes the skipped or repeated hour is 9 or 11 hours long that day, as it is for the
people working it.)

Plain Python, no clock of its own: every instant is passed in epoch milliseconds.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from functools import lru_cache
from typing import Any, Final
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

WEEKDAYS: Final = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
"""Weekday keys of ``hours``, Monday first (``date.weekday()`` order)."""
_SPAN: Final = re.compile(r"^(\d{2}):(\d{2})-(\d{2}):(\d{2})$")
MINUTES_PER_DAY: Final = 24 * 60


class CalendarError(ValueError):
    """A calendar definition that cannot be used; the message says which part and why."""


@dataclass(frozen=True, slots=True)
class Span:
    """Working time of one day, ``start`` to ``end`` in minutes after local midnight."""

    start: int
    end: int
    """Exclusive; at most 24:00 (1440)."""


@dataclass(frozen=True)
class BusinessCalendar:
    """Working hours per weekday in a time zone, less holidays."""

    zone: str
    hours: tuple[tuple[Span, ...], ...]
    """Per weekday, Monday first: the day's working spans, sorted and disjoint."""
    dates: frozenset[date] = frozenset()
    """Holidays given as dates."""
    country: str | None = None
    """A ``holidays`` country code (``IT``, ``US``): its public holidays are holidays too."""
    subdiv: str | None = None
    """The country's region (``holidays`` subdivision code), for regional holidays."""
    _tz: ZoneInfo = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "_tz", ZoneInfo(self.zone))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise CalendarError(f"timezone {self.zone!r}: not a known IANA time zone") from exc
        if len(self.hours) != 7:
            raise CalendarError("hours: give the spans of each of the seven weekdays")
        if self.country is not None:
            _country_holidays(self.country, self.subdiv, 2000)  # fails now, not at first use

    def is_holiday(self, day: date) -> bool:
        """Whether ``day`` (a local date) is a holiday: listed, or the country's."""
        if day in self.dates:
            return True
        return (self.country is not None
                and day in _country_holidays(self.country, self.subdiv, day.year))

    def _instant(self, day: date, minute: int, last: bool) -> int:
        """Epoch ms of local ``day`` + ``minute``. A time the clocks skip (spring forward) is
        the instant of the jump; a repeated one (fall back) its first occurrence for a span's
        start and its second for its end (``last``): the span then holds every instant whose
        local time is in it, as a clock on the wall shows."""
        naive = datetime(day.year, day.month, day.day) + timedelta(minutes=minute)
        early = naive.replace(tzinfo=self._tz, fold=0)
        late = naive.replace(tzinfo=self._tz, fold=1)
        a, b = int(early.timestamp() * 1000), int(late.timestamp() * 1000)
        if a <= b:  # unambiguous (equal) or repeated (the first pass is the earlier instant)
            return b if last else a
        # skipped: fold=0 reads it with the offset before the jump (later in UTC), fold=1 with
        # the one after (earlier); the jump is between: find the first instant past it
        lo, hi = b, a
        while hi - lo > 1:
            mid = (lo + hi) // 2
            local = datetime.fromtimestamp(mid / 1000, self._tz).replace(tzinfo=None)
            if local >= naive:
                hi = mid
            else:
                lo = mid
        return hi

    def day_spans(self, day: date) -> tuple[tuple[int, int], ...]:
        """The working intervals of local ``day`` in epoch ms, ``(start, end)``: none on a
        holiday. Cached per calendar: a ledger read asks the same few days for every ticket."""
        return _day_spans_ms(self, day)

    def _local_date(self, ms: int) -> date:
        return datetime.fromtimestamp(ms / 1000, self._tz).date()

    def working_ms(self, start_ms: int, end_ms: int) -> int:
        """Working milliseconds from ``start_ms`` to ``end_ms`` (0 when the end is not later)."""
        if end_ms <= start_ms:
            return 0
        # a day's spans may begin before its local midnight in UTC terms only through the zone
        # offset, which the local dates already account for: from the start's local day on
        day = self._local_date(start_ms)
        last = self._local_date(end_ms)
        total = 0
        while day <= last:
            for lo, hi in self.day_spans(day):
                lo, hi = max(start_ms, lo), min(end_ms, hi)
                if hi > lo:
                    total += hi - lo
            day += _ONE_DAY
        return total

    def back(self, end_ms: int, working: int, floor_ms: int) -> int:
        """The latest instant ``s`` with ``working_ms(s, end_ms) >= working``: an item opened
        at or before it has aged ``working`` by ``end_ms``. ``floor_ms`` (returned when even
        that much earlier has less) bounds the walk; ``working <= 0`` gives ``end_ms``."""
        if working <= 0:
            return end_ms
        need = working
        day = self._local_date(end_ms)
        stop = self._local_date(floor_ms)
        while day >= stop:
            for lo, hi in reversed(self.day_spans(day)):
                hi = min(hi, end_ms)
                if hi <= lo:
                    continue
                if hi - lo >= need:
                    return hi - need
                need -= hi - lo
            day -= _ONE_DAY
        return floor_ms


_ONE_DAY: Final = timedelta(days=1)


@lru_cache(maxsize=65_536)
def _day_spans_ms(calendar: BusinessCalendar, day: date) -> tuple[tuple[int, int], ...]:
    if calendar.is_holiday(day):
        return ()
    out = []
    for span in calendar.hours[day.weekday()]:
        lo = calendar._instant(day, span.start, False)
        hi = calendar._instant(day, span.end, True)
        if hi > lo:
            out.append((lo, hi))
    return tuple(out)


@lru_cache(maxsize=256)
def _country_holidays(country: str, subdiv: str | None, year: int) -> frozenset[date]:
    """The public holidays of ``country`` (and ``subdiv``) in ``year``, from ``holidays``."""
    import holidays

    try:
        found = holidays.country_holidays(country, subdiv=subdiv, years=year)
    except NotImplementedError as exc:  # what holidays raises for an unknown country or region
        raise CalendarError(f"holidays: {exc}") from None
    return frozenset(found)


def parse_span(text: str, where: str) -> Span:
    """``"08:00-18:00"`` as a span; ``24:00`` may end one. A span past midnight is refused:
    give its two parts to the two days."""
    m = _SPAN.match(text.strip())
    if m is None:
        raise CalendarError(f"{where}: {text!r} is not HH:MM-HH:MM")
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    start, end = h1 * 60 + m1, h2 * 60 + m2
    if h1 > 23 or m1 > 59 or m2 > 59 or end > MINUTES_PER_DAY:
        raise CalendarError(f"{where}: {text!r} is not a time of day")
    if end <= start:
        raise CalendarError(f"{where}: {text!r} ends before it starts (a span past midnight: "
                            "give its part after 00:00 to the next day)")
    return Span(start, end)


def _day_spans(raw: Any, where: str) -> tuple[Span, ...]:
    """A weekday's spans: absent or ``closed`` (none), one ``"HH:MM-HH:MM"``, or a list."""
    if raw is None or raw == "closed":
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list):
        raise CalendarError(f"{where}: give 'HH:MM-HH:MM', a list of them, or closed")
    spans = sorted((parse_span(str(s), where) for s in items), key=lambda s: s.start)
    for a, b in itertools.pairwise(spans):
        if b.start < a.end:
            raise CalendarError(f"{where}: spans overlap")
    return tuple(spans)


def calendar_from_yaml(raw: Mapping[str, Any], where: str = "calendar") -> BusinessCalendar:
    """A calendar from its YAML form::

        timezone: Europe/Rome
        hours: {mon: "08:00-18:00", ..., fri: ["08:00-12:00", "13:00-17:00"], sat: closed}
        holidays: {country: IT, subdiv: null, dates: [2026-08-14]}

    A weekday not listed is closed."""
    unknown = set(raw) - {"timezone", "hours", "holidays"}
    if unknown:
        raise CalendarError(f"{where}: unknown keys {sorted(unknown)}")
    if "timezone" not in raw:
        raise CalendarError(f"{where}: timezone is required")
    hours = raw.get("hours") or {}
    bad = set(hours) - set(WEEKDAYS)
    if bad:
        raise CalendarError(f"{where}.hours: unknown weekdays {sorted(bad)} (use {WEEKDAYS})")
    spans = tuple(_day_spans(hours.get(day), f"{where}.hours.{day}") for day in WEEKDAYS)
    if not any(spans):
        raise CalendarError(f"{where}.hours: no working time on any day")
    hol = raw.get("holidays") or {}
    unknown = set(hol) - {"country", "subdiv", "dates"}
    if unknown:
        raise CalendarError(f"{where}.holidays: unknown keys {sorted(unknown)}")
    try:
        dates = frozenset(d if isinstance(d, date) else date.fromisoformat(str(d))
                          for d in hol.get("dates") or [])
    except ValueError as exc:
        raise CalendarError(f"{where}.holidays.dates: {exc}") from None
    return BusinessCalendar(str(raw["timezone"]), spans, dates,
                            hol.get("country"), hol.get("subdiv"))
