"""Entity records idle for an hour are kept frozen as bytes, and thaw to the same record."""

from __future__ import annotations

import array
from typing import Any

import orjson
import pytest

from streams.config.catalog import load_config
from streams.engine.core import Engine, Outcome
from streams.engine.entities import (
    COLD_AFTER_MS,
    freeze_list,
    freeze_packed,
    frozen_before,
    last_event,
    thaw_list,
    thaw_packed,
)
from streams.engine.model import UNSET

T0 = 1_788_000_000_000
HOUR = 3_600_000

LIST_RECORDS: list[list[Any]] = [
    [T0, None, None],
    [T0, T0 - 5, None, (T0 - 5, "self_service"), (T0 - 9, None), (T0 - 7, 3600), (T0 - 7, 0)],
    [T0 + 1, (T0 - 3, "2026-07-30T11:59:59+00:00"), (T0 - 9, T0 - 4, T0), ()],
    [T0, ((T0 - 2, 3.0, "partner-1"), (T0 - 1, 0.5, "partner-2")), ((T0 - 8, 1), (T0 - 6, 0))],
    [-(2**62), 2**63 - 1, -(2**63), 1.5, True, False, "", "é"],
]


def _shape(value: Any) -> Any:
    """A value with its types spelled out, so a tuple and an equal list, 1 and 1.0 or True,
    differ."""
    if isinstance(value, tuple | list):
        return (type(value).__name__, [_shape(v) for v in value])
    return (type(value).__name__, value)


@pytest.mark.parametrize("rec", LIST_RECORDS, ids=range(len(LIST_RECORDS)))
def test_a_list_record_thaws_mark_for_mark(rec: list[Any]) -> None:
    frozen = freeze_list(rec)
    assert isinstance(frozen, bytes)
    assert last_event(frozen) == rec[0]
    assert _shape(thaw_list(frozen)) == _shape(rec)


@pytest.mark.parametrize("marks", [[T0], [T0, UNSET, T0 - 1, UNSET], [-1, 0, 2**63 - 1]])
def test_a_packed_record_thaws_mark_for_mark(marks: list[int]) -> None:
    rec = array.array("q", marks)
    frozen = freeze_packed(rec)
    # the last event time first (big-endian, shifted to unsigned), then the marks little-endian
    assert frozen == ((marks[0] + 2**63).to_bytes(8, "big")
                      + b"".join(m.to_bytes(8, "little", signed=True) for m in marks[1:]))
    assert last_event(frozen) == marks[0]
    thawed = thaw_packed(frozen)
    assert isinstance(thawed, array.array) and thawed.typecode == "q"
    assert thawed.tolist() == marks


def test_a_frozen_record_compares_below_a_time_as_its_last_event_does() -> None:
    """The hourly sweep compares frozen records with :func:`frozen_before` as bytes."""
    times = [-(2**63), -(2**62), -1, 0, 1, 255, 256, T0 - 1, T0, T0 + 1, 2**63 - 1]
    for last in times:
        for frozen in (freeze_list([last, None, (last, "x")]),
                       freeze_packed(array.array("q", [last, UNSET, 7]))):
            for ms in times:
                assert (frozen < frozen_before(ms)) == (last < ms), (last, ms)


def _event(topic: str, etype: str, event_id: str, ts: int, **fields: Any) -> bytes:
    return orjson.dumps({"event_id": event_id, "type": etype, "partner_id": "acme", "ts": ts,
                         **fields})


def test_an_entity_idle_for_an_hour_is_frozen_and_its_next_event_counts_as_live() -> None:
    """A ticket (list record) and a call (packed record) opened at T0, frozen by the sweep the
    partner's clock runs hours later, then stopped: the durations are what the events say."""
    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="event")
    wall = T0 + 30 * 24 * HOUR
    later = T0 + 3 * HOUR

    def feed(topic: str, raw: bytes) -> None:
        assert engine.ingest(topic, raw, wall).outcome == Outcome.ACCEPTED

    feed("tickets", _event("tickets", "opened", "e1", T0, ticket_id="A", severity="down_hard",
                           channel="phone"))
    feed("calls", _event("calls", "queued", "e2", T0 + 1000, call_id="C"))
    # another entity's event moves the partner's clock past both records' hour: the sweep runs
    feed("tickets", _event("tickets", "opened", "e3", later, ticket_id="B", severity="question"))
    st = engine.state["acme"]
    entities = st.entities

    def frozen(topic: str, entity_id: str) -> bool:
        """Held packed among the frozen records, not live."""
        return entity_id not in entities[topic] and st.cold[topic].get(entity_id) is not None
    assert later - COLD_AFTER_MS > T0 + 1000
    assert frozen("tickets", "A"), "the test needs A frozen"
    assert frozen("calls", "C"), "the test needs C frozen"
    assert not frozen("tickets", "B") and isinstance(entities["tickets"]["B"], list)
    # A is still waiting for its contact: an open item aged from its opening
    assert engine.oldest_open("acme", later)["ots_down_hard"] == later - T0

    feed("tickets", _event("tickets", "contacted", "e4", later + 60_000, ticket_id="A"))
    feed("calls", _event("calls", "answered", "e5", later + 5000, call_id="C"))
    values = engine.evaluate("acme", later + 120_000)
    ots = values[("ots_down_hard", "24h")]
    assert (ots.samples, ots.value) == (1, (later + 60_000 - T0) / 1000)
    asa = values[("asa", "24h")]
    assert (asa.samples, asa.value) == (1, (later + 5000 - T0 - 1000) / 1000)
    assert "ots_down_hard" not in engine.oldest_open("acme", later + 120_000)
    assert not frozen("tickets", "A") and isinstance(entities["tickets"]["A"], list)
    assert st.cold["tickets"].get("A") is None  # thawed: held once, live
