"""Event times: old history is accepted, the unit is told by magnitude, the future is refused.

Issue 14: a replay of call-center archives from the 1990s lost every event to a 2000..2100
bound meant to catch epoch seconds. Seconds are now told from milliseconds by the number's
size (below 1e10 an integer is seconds until the year 2286; milliseconds pass it in April 1970).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from streams.config.catalog import load_config
from streams.engine.core import Engine, Outcome
from streams.ingest.contract import MAX_FUTURE_MS, ContractError, decode

WALL = 1_788_000_000_000  # 2026-08-29, a fixed wall clock: nothing depends on the real one
PLUS_ONE = timezone(timedelta(hours=1))


def _call(ts: object) -> bytes:
    return orjson.dumps({"event_id": "c-1", "type": "queued", "partner_id": "acme",
                         "call_id": "c-1", "ts": ts})


def _ms(moment: datetime) -> int:
    """Epoch milliseconds by calendar arithmetic, not through the contract's own conversion."""
    return (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)


def test_a_1995_ticket_history_in_strings_and_milliseconds_is_counted() -> None:
    """Down-hard tickets from March 1995, their times alternately RFC 3339 with an offset and
    integer milliseconds: every event accepted, the 24h mean and the month's mean as computed
    here from the durations, and the same after a restore from the journal."""
    opened_at = datetime(1995, 3, 14, 9, 0, tzinfo=PLUS_ONE)
    waits_s = [600, 1_800, 3_000, 4_500, 7_200]
    events: list[bytes] = []
    for i, wait in enumerate(waits_s):
        opened = opened_at + timedelta(minutes=10 * i)
        contacted = opened + timedelta(seconds=wait)
        # one ticket's pair in each spelling, the others mixed both ways
        ts_open: object = opened.isoformat() if i % 2 == 0 else _ms(opened)
        ts_contact: object = _ms(contacted) if i % 3 == 0 else contacted.isoformat()
        events.append(orjson.dumps({"event_id": f"o-{i}", "type": "opened", "partner_id": "acme",
                                    "ticket_id": f"T-{i}", "severity": "down_hard",
                                    "ts": ts_open}))
        events.append(orjson.dumps({"event_id": f"c-{i}", "type": "contacted",
                                    "partner_id": "acme", "ticket_id": f"T-{i}",
                                    "ts": ts_contact}))
    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="event")
    outcomes = [engine.ingest("tickets", raw, WALL) for raw in events]
    assert [r.outcome for r in outcomes] == [Outcome.ACCEPTED] * len(events), outcomes
    last = opened_at + timedelta(minutes=10 * (len(waits_s) - 1), seconds=waits_s[-1])
    assert engine.now(WALL) == _ms(last)
    want = sum(waits_s) / len(waits_s)
    got = engine.evaluate("acme", _ms(last))[("ots_down_hard", "24h")]
    assert (got.value, got.samples) == (want, len(waits_s))
    month = engine.evaluate_month("acme", "1995-03")["ots_down_hard"]
    assert (month.value, month.samples) == (want, len(waits_s))
    # the journal carries 1995 times through a recovery unchanged
    restored = Engine(catalog, partners, clock="event")
    restored.restore([(k, v) for k, v in engine.drain() if v is not None])
    again = restored.evaluate("acme", _ms(last))[("ots_down_hard", "24h")]
    assert (again.value, again.samples) == (want, len(waits_s))


@pytest.mark.parametrize("ts", [1_700_000_000, 795_168_000, 9_999_999_999, 0])
def test_an_integer_that_looks_like_epoch_seconds_is_dead_lettered(ts: int) -> None:
    reason = f"ts {ts} looks like epoch seconds; the contract wants milliseconds"
    with pytest.raises(ContractError) as err:
        decode("calls", _call(ts), WALL)
    assert str(err.value) == reason
    catalog, partners = load_config()
    result = Engine(catalog, partners).ingest("calls", _call(ts), WALL)
    assert (result.outcome, result.reason) == (Outcome.REJECTED, reason)


def test_milliseconds_are_accepted_from_the_first_one_past_the_seconds_range() -> None:
    first = 10_000_000_000
    assert _ms(datetime(1970, 4, 26, 17, 46, 40, tzinfo=UTC)) == first
    assert decode("calls", _call(first), WALL).ts_ms == first


@pytest.mark.parametrize("ts", [-1, -795_168_000_000])
def test_a_negative_integer_is_refused(ts: int) -> None:
    with pytest.raises(ContractError, match="is negative"):
        decode("calls", _call(ts), WALL)


def test_rfc3339_strings_are_taken_from_1970_on() -> None:
    # no unit to guess in a string: only the engine's epoch bounds it
    start = decode("calls", _call("1970-01-01T00:00:00Z"), WALL)
    assert (start.ts_ms, start.offset_s) == (0, 0)
    local = decode("calls", _call("1970-01-01T01:30:00+01:00"), WALL)
    assert (local.ts_ms, local.offset_s) == (_ms(datetime(1970, 1, 1, 0, 30, tzinfo=UTC)), 3600)
    # the first local hour of 1970 east of UTC is still 1969 in UTC
    with pytest.raises(ContractError, match="before 1970-01-01"):
        decode("calls", _call("1970-01-01T00:30:00+01:00"), WALL)
    with pytest.raises(ContractError, match="before 1970-01-01") as err:
        decode("calls", _call("1969-12-31T23:59:59.999Z"), WALL)
    assert "1969-12-31T23:59:59.999000+00:00" in str(err.value)


def test_the_future_check_is_unchanged() -> None:
    edge = WALL + MAX_FUTURE_MS
    assert decode("calls", _call(edge), WALL).ts_ms == edge
    for ts in (edge + 1, WALL + 365 * 86_400_000,
               datetime.fromtimestamp((WALL + MAX_FUTURE_MS + 1_000) / 1000, PLUS_ONE).isoformat(),
               "2100-01-01T00:00:00Z", 2**63):
        with pytest.raises(ContractError, match="ahead of the wall clock"):
            decode("calls", _call(ts), WALL)
