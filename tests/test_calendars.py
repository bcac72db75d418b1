"""Business calendars (issue 19, part 2, the first piece): working time between two instants,
against a brute-force reference that walks the interval minute by minute (or second by second)
and asks of each instant whether its local time is working time: DST changes, holidays of a
country and listed dates, nights and weekends, split days."""

from __future__ import annotations

import random
from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

import pytest

from streams.config.calendars import (
    WEEKDAYS,
    BusinessCalendar,
    CalendarError,
    calendar_from_yaml,
)

ROME = {
    "timezone": "Europe/Rome",
    "hours": {"mon": "08:00-18:00", "tue": "08:00-18:00", "wed": "08:00-18:00",
              "thu": "08:00-18:00", "fri": ["08:00-12:00", "13:00-17:00"], "sat": "09:00-13:00"},
    "holidays": {"country": "IT", "dates": ["2026-08-14"]},
}
# Italian public holidays in the test's spans, written out here (not read from the library)
IT_HOLIDAYS = {date(2026, 1, 1), date(2026, 1, 6), date(2026, 4, 5), date(2026, 4, 6),
               date(2026, 4, 25), date(2026, 5, 1), date(2026, 6, 2), date(2026, 8, 15),
               date(2026, 11, 1), date(2026, 12, 8), date(2026, 12, 25), date(2026, 12, 26),
               date(2027, 1, 1)}
SPANS = {  # weekday -> (start minute, end minute) of working time, as ROME says
    0: [(480, 1080)], 1: [(480, 1080)], 2: [(480, 1080)], 3: [(480, 1080)],
    4: [(480, 720), (780, 1020)], 5: [(540, 780)], 6: [],
}


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def brute_force(start_ms: int, end_ms: int, step_ms: int = 60_000,
                zone: str = "Europe/Rome") -> int:
    """Working ms counted one ``step_ms`` at a time: each step of the interval counts when the
    local wall-clock time at its start is within a span of a non-holiday's weekday."""
    tz = ZoneInfo(zone)
    holidays = IT_HOLIDAYS | {date(2026, 8, 14)}
    total = 0
    t = start_ms
    while t < end_ms:
        local = datetime.fromtimestamp(t / 1000, tz)
        minute = local.hour * 60 + local.minute
        if local.date() not in holidays and any(
                a <= minute < b for a, b in SPANS[local.weekday()]):
            total += min(step_ms, end_ms - t)
        t += step_ms
    return total


@pytest.mark.parametrize(("start", "end"), [
    # a plain week, Monday to Monday
    ("2026-06-08T00:00:00+02:00", "2026-06-15T00:00:00+02:00"),
    # Friday afternoon over the weekend: the lunch break, Saturday morning, Sunday closed
    ("2026-06-12T11:30:00+02:00", "2026-06-15T09:15:00+02:00"),
    # spring forward (29 March 2026) and fall back (25 October 2026), whole weeks around them
    ("2026-03-26T07:00:00+01:00", "2026-04-02T19:00:00+02:00"),
    ("2026-10-22T07:00:00+02:00", "2026-10-29T19:00:00+01:00"),
    # Easter Monday and Liberation Day; Ferragosto with the listed 14 August before it
    ("2026-04-03T10:00:00+02:00", "2026-04-28T10:00:00+02:00"),
    ("2026-08-10T00:00:00+02:00", "2026-08-18T00:00:00+02:00"),
    # December: the Immaculate Conception, Christmas, St Stephen's, over New Year
    ("2026-12-01T00:00:00+01:00", "2027-01-02T00:00:00+01:00"),
    # inside one working span, and inside one night
    ("2026-06-09T09:10:00+02:00", "2026-06-09T09:40:00+02:00"),
    ("2026-06-09T19:00:00+02:00", "2026-06-10T07:59:00+02:00"),
])
def test_working_time_equals_the_minute_by_minute_count(start: str, end: str) -> None:
    calendar = calendar_from_yaml(ROME)
    a, b = _ms(start), _ms(end)
    want = brute_force(a, b)
    assert calendar.working_ms(a, b) == want
    assert want > 0 or "T19:00" in start  # the night is the one span with no working time


def test_random_instants_to_the_second() -> None:
    """Start and end on any second (not on whole minutes), over spans of up to three weeks:
    within four days each equals the second-by-second count, beyond it (moved to whole minutes)
    the minute-by-minute one; and working time adds up over any split point."""
    calendar = calendar_from_yaml(ROME)
    rng = random.Random(19)
    base = _ms("2026-03-20T00:00:00+01:00")
    for _ in range(25):
        a = base + rng.randrange(260 * 86_400) * 1000
        b = a + rng.randrange(1, 21 * 86_400) * 1000
        if b - a > 4 * 86_400_000:  # long: on whole minutes, against the minute count
            a, b = a - a % 60_000, b - b % 60_000
            got = calendar.working_ms(a, b)
            assert got == brute_force(a, b)
        else:
            got = calendar.working_ms(a, b)
            assert got == brute_force(a, b, step_ms=1000)
        mid = a + (b - a) // 3 + rng.randrange(1000)
        assert calendar.working_ms(a, mid) + calendar.working_ms(mid, b) == got
    assert calendar.working_ms(base, base) == 0 and calendar.working_ms(base + 5, base) == 0


def test_back_finds_the_latest_start_that_has_aged_that_much() -> None:
    """``back(end, w)``: the latest instant from which ``w`` of working time has passed by
    ``end`` (what the ledger's counts compare each opening with): checked with the minute count,
    a minute later must be short of ``w``; across the spring clock change and a weekend."""
    calendar = calendar_from_yaml(ROME)
    rng = random.Random(7)
    floor = _ms("2026-01-01T00:00:00+01:00")
    for end_text in ("2026-03-30T10:17:00+02:00", "2026-08-17T09:00:00+02:00",
                     "2026-10-26T08:30:00+01:00"):
        end = _ms(end_text)
        for working in (0, 60_000, 2 * 3_600_000, 10 * 3_600_000, 31 * 3_600_000,
                        rng.randrange(1, 40) * 600_000):
            s = calendar.back(end, working, floor)
            # every instant here is on a whole minute (ends, spans, workings): a minute later
            # must be short of the working time asked for
            assert s % 60_000 == 0
            assert brute_force(s, end) >= working
            assert working == 0 or brute_force(s + 60_000, end) < working
    # nothing to find past the floor: the floor comes back
    assert calendar.back(floor + 3_600_000, 100 * 3_600_000, floor) == floor


def test_a_whole_day_across_the_clock_change_is_23_and_25_hours() -> None:
    every_day = calendar_from_yaml({"timezone": "Europe/Rome",
                                    "hours": {d: "00:00-24:00" for d in WEEKDAYS}})
    hour = 3_600_000
    spring = _ms("2026-03-29T00:00:00+01:00")
    autumn = _ms("2026-10-25T00:00:00+02:00")
    assert every_day.working_ms(spring, spring + 30 * hour) == 30 * hour
    assert every_day.working_ms(spring, _ms("2026-03-30T00:00:00+02:00")) == 23 * hour
    assert every_day.working_ms(autumn, _ms("2026-10-26T00:00:00+01:00")) == 25 * hour


def test_a_span_in_the_skipped_hour_starts_at_the_jump() -> None:
    """02:30-04:00 on the spring-forward night: 02:00-03:00 does not exist, so the span holds
    the hour from the jump (03:00 local, 01:00 UTC) to 04:00."""
    night = calendar_from_yaml({"timezone": "Europe/Rome", "hours": {"sun": "02:30-04:00"}})
    a = int(datetime(2026, 3, 28, 12, tzinfo=UTC).timestamp() * 1000)
    b = int(datetime(2026, 3, 30, tzinfo=UTC).timestamp() * 1000)
    assert night.working_ms(a, b) == 3_600_000 == brute_force_span(night, a, b)


def brute_force_span(calendar: BusinessCalendar, a: int, b: int) -> int:
    tz = ZoneInfo(calendar.zone)
    total = 0
    for t in range(a, b, 60_000):
        local = datetime.fromtimestamp(t / 1000, tz)
        minute = local.hour * 60 + local.minute
        if any(s.start <= minute < s.end for s in calendar.hours[local.weekday()]):
            total += 60_000
    return total


def test_the_library_holidays_are_the_country_s() -> None:
    calendar = calendar_from_yaml(ROME)
    assert {d for d in IT_HOLIDAYS if calendar.is_holiday(d)} == IT_HOLIDAYS
    assert not calendar.is_holiday(date(2026, 6, 9)) and calendar.is_holiday(date(2026, 8, 14))
    regional = calendar_from_yaml({"timezone": "Europe/Berlin", "hours": {"mon": "08:00-16:00"},
                                   "holidays": {"country": "DE", "subdiv": "BY"}})
    berlin = calendar_from_yaml({"timezone": "Europe/Berlin", "hours": {"mon": "08:00-16:00"},
                                 "holidays": {"country": "DE", "subdiv": "BE"}})
    epiphany = date(2026, 1, 6)  # a holiday in Bavaria, not in Berlin
    assert regional.is_holiday(epiphany) and not berlin.is_holiday(epiphany)


@pytest.mark.parametrize(("raw", "message"), [
    ({"hours": {"mon": "08:00-18:00"}}, "timezone is required"),
    ({"timezone": "Mars/Olympus", "hours": {"mon": "08:00-18:00"}}, "not a known IANA"),
    ({"timezone": "UTC", "hours": {"monday": "08:00-18:00"}}, "unknown weekdays"),
    ({"timezone": "UTC", "hours": {"mon": "8-18"}}, "not HH:MM-HH:MM"),
    ({"timezone": "UTC", "hours": {"mon": "22:00-06:00"}}, "past midnight"),
    ({"timezone": "UTC", "hours": {"mon": "08:00-25:00"}}, "not a time of day"),
    ({"timezone": "UTC", "hours": {"mon": ["08:00-12:00", "11:00-13:00"]}}, "overlap"),
    ({"timezone": "UTC", "hours": {}}, "no working time"),
    ({"timezone": "UTC", "hours": {"mon": "08:00-18:00"}, "holidays": {"country": "XX"}},
     "holidays"),
    ({"timezone": "UTC", "hours": {"mon": "08:00-18:00"}, "holidays": {"dates": ["14 Aug"]}},
     "dates"),
    ({"timezone": "UTC", "hours": {"mon": "08:00-18:00"}, "week": 5}, "unknown keys"),
])
def test_a_bad_calendar_says_what_is_wrong(raw: dict[str, object], message: str) -> None:
    with pytest.raises(CalendarError, match=message):
        calendar_from_yaml(raw)
