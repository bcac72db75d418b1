"""Event contract v1: the shape of every message on the four input topics.

Decoding is done by msgspec straight into tagged-union structs (one union per
topic, tagged by ``type``), which validates types, required fields and known
event types in one pass. Anything that does not fit raises
:class:`ContractError` with a human-readable reason; the caller dead-letters it.
"""

from __future__ import annotations

import math
import re
import typing
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any, Final, Literal

import msgspec

Topic = Literal["tickets", "calls", "orders", "surveys"]
"""An input topic (the type of the YAML files' ``topic:`` fields)."""

TOPICS: Final[tuple[str, ...]] = typing.get_args(Topic)
"""The input topics, in a fixed order."""

MAX_MESSAGE_BYTES: Final = 64 * 1024
"""Largest accepted message; contract events are a few hundred bytes."""

MAX_FUTURE_MS: Final = 5 * 60 * 1000
"""An event may be at most this far ahead of the wall clock (producer clock skew)."""

MIN_MS_INT: Final = 10_000_000_000
"""Smallest integer ``ts`` taken as epoch milliseconds (1970-04-26T17:46:40Z).

The unit is told by magnitude, not by the calendar, so that replays of archives decades old are
accepted: epoch *seconds* stay below 1e10 until the year 2286, while epoch milliseconds pass it
in April 1970. An integer below this is a producer sending seconds, and is rejected rather than
counted 1,000 times too early. RFC 3339 strings carry no unit, so they are taken from
1970-01-01 on."""

# \Z, not $: "$" also matches before a final newline, so "acme\n" passed (found by
# tests/test_security.py); ids end up in labels, logs and HTML.
_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+-]{0,127}\Z")
# Partner ids end up in Prometheus labels, table keys and HTML: keep them tame.
PARTNER_ID_RE: Final = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}\Z")
"""A valid ``partner_id``: in events, in partners.yaml, in replay mappings."""
PARTNER_ID_RULE: Final = "1-64 of letters, digits, '.', '_', '-'"
""":data:`PARTNER_ID_RE` in words, for error messages."""

Id = Annotated[str, msgspec.Meta(min_length=1, max_length=128)]
# Entity ids (ticket, call, order, KB article) are free-form, but a control character (a newline,
# the \x1f key separator) in an id is never legitimate: decode() rejects it. Not a msgspec
# pattern: that tripled the decode time, and JSON can only carry one escaped (see decode()).
EntityId = Id
_CONTROL_RE: Final = re.compile(r"[\x00-\x1f\x7f]")
_ENTITY_FIELDS: Final = ("ticket_id", "call_id", "order_id", "kb_article")
Timestamp = int | Annotated[datetime, msgspec.Meta(tz=True)]
Channel = Literal["phone", "email", "chat", "chatbot", "portal", "self_service", "proactive"]
"""How a ticket reached the partner (``opened.channel``)."""
CallChannel = Literal["phone", "callback", "chat"]
"""The queue a call waited in (``queued.channel``)."""


class ContractError(ValueError):
    """A message that breaks the event contract; ``str(err)`` is the reason."""


class _Event(msgspec.Struct, kw_only=True, tag_field="type", frozen=True):
    event_id: Id
    partner_id: Id
    ts: Timestamp


# --- tickets -----------------------------------------------------------------
class _Ticket(_Event, kw_only=True, frozen=True):
    ticket_id: EntityId


class TicketOpened(_Ticket, tag="opened", frozen=True):
    severity: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    channel: Channel | None = None
    order_id: EntityId | None = None


class TicketContacted(_Ticket, tag="contacted", frozen=True):
    pass


class TicketEscalated(_Ticket, tag="escalated", frozen=True):
    documented: bool | None = None
    kb_article: EntityId | None = None


Verdict = Literal["good", "bad"]
REVIEW_REASON_RE: Final = r"^[a-z][a-z0-9_]{0,63}$"
"""A review reason: a short code like ``kb_solvable``, ``undocumented`` or ``duplicate``."""


class TicketEscalationReviewed(_Ticket, tag="escalation_reviewed", frozen=True):
    """The vendor's tier that received the partner's escalation judged it (contract v1, additive)."""

    verdict: Verdict
    reasons: Annotated[
        tuple[Annotated[str, msgspec.Meta(pattern=REVIEW_REASON_RE)], ...],
        msgspec.Meta(max_length=16),
    ] = ()


class TicketFollowUp(_Ticket, tag="follow_up", frozen=True):
    """Someone contacted the customer about their feedback (contract v1, additive)."""


class TicketResolved(_Ticket, tag="resolved", frozen=True):
    first_contact: bool | None = None
    truck_roll: bool | None = None


class TicketClosed(_Ticket, tag="closed", frozen=True):
    pass


class TicketReopened(_Ticket, tag="reopened", frozen=True):
    pass


PENDING_REASON_RE: Final = r"^[a-z][a-z0-9_]{0,63}$"
"""Why a ticket waits: a short code like ``customer``, ``access`` or ``third_party``."""


class TicketPending(_Ticket, tag="pending", frozen=True):
    """The ticket waits on the customer (contract v1, additive): a KPI with ``pause_on:
    [pending]`` stops its clock until the ticket's next ``resumed`` (or ``resume_on``) event."""

    reason: Annotated[str, msgspec.Meta(pattern=PENDING_REASON_RE)] | None = None


class TicketResumed(_Ticket, tag="resumed", frozen=True):
    """The wait is over (contract v1, additive): a paused clock runs again."""


TicketEvent = (
    TicketOpened | TicketContacted | TicketEscalated | TicketEscalationReviewed | TicketResolved
    | TicketClosed | TicketReopened | TicketFollowUp | TicketPending | TicketResumed
)


# --- calls -------------------------------------------------------------------
class _Call(_Event, kw_only=True, frozen=True):
    call_id: EntityId


class CallQueued(_Call, tag="queued", frozen=True):
    channel: CallChannel | None = None


class CallAnswered(_Call, tag="answered", frozen=True):
    pass


class CallAbandoned(_Call, tag="abandoned", frozen=True):
    pass


CallEvent = CallQueued | CallAnswered | CallAbandoned


# --- orders ------------------------------------------------------------------
class _Order(_Event, kw_only=True, frozen=True):
    order_id: EntityId


class OrderPlaced(_Order, tag="ordered", frozen=True):
    """The customer's order was placed (the start of order-to-install)."""


class OrderScheduled(_Order, tag="scheduled", frozen=True):
    # A date (local calendar day) or an instant; validated further in decode().
    due_date: Annotated[str, msgspec.Meta(min_length=10, max_length=40)]


class OrderInstalled(_Order, tag="installed", frozen=True):
    pass


class OrderCancelled(_Order, tag="cancelled", frozen=True):
    pass


OrderEvent = OrderPlaced | OrderScheduled | OrderInstalled | OrderCancelled


# --- surveys -----------------------------------------------------------------
class SurveyResponse(_Event, tag="response", frozen=True):
    score: float
    kind: Literal["csat", "xla"]
    ticket_id: EntityId | None = None


class _NoSurvey(_Event, tag="\x00", frozen=True):
    """Only there so that msgspec requires ``type`` on surveys (a one-member union would not);
    decode() rejects it when a message spells its tag."""


SurveyEvent = SurveyResponse | _NoSurvey

Event = TicketEvent | CallEvent | OrderEvent | SurveyResponse


def _tags(union: Any) -> frozenset[str]:
    return frozenset(str(m.__struct_config__.tag) for m in typing.get_args(union)
                     if m is not _NoSurvey)


EVENT_TYPES: Final[dict[str, frozenset[str]]] = {
    "tickets": _tags(TicketEvent),
    "calls": _tags(CallEvent),
    "orders": _tags(OrderEvent),
    "surveys": _tags(SurveyEvent),
}
"""The event types (``type`` tags) of each topic, read from the structs above."""

EVENT_FIELDS: Final[dict[tuple[str, str], frozenset[str]]] = {
    (topic, str(m.__struct_config__.tag)): frozenset(m.__struct_fields__)
    for topic, union in (("tickets", TicketEvent), ("calls", CallEvent), ("orders", OrderEvent),
                         ("surveys", SurveyEvent))
    for m in typing.get_args(union) if m is not _NoSurvey
}
"""(topic, type) -> the fields its events carry (unknown fields are dropped on decode, so a
``where`` filter on another field could never match)."""

ENTITY_FIELD: Final[dict[str, str | None]] = {
    "tickets": "ticket_id",
    "calls": "call_id",
    "orders": "order_id",
    "surveys": None,
}
"""Which field names the entity an event belongs to, per topic."""

CHANNELS: Final[dict[str, tuple[str, tuple[str, ...]]]] = {
    "tickets": ("opened", typing.get_args(Channel)),
    "calls": ("queued", typing.get_args(CallChannel)),
}
"""Entity topic -> (the event type whose ``channel`` is the entity's channel, the channels it may
name): a closed list, so per-channel state and series stay bounded whatever arrives."""

SCORE_RANGE: Final = {"csat": (1.0, 5.0), "xla": (0.0, 10.0)}

_DECODERS: Final[dict[str, msgspec.json.Decoder[Any]]] = {
    "tickets": msgspec.json.Decoder(TicketEvent),
    "calls": msgspec.json.Decoder(CallEvent),
    "orders": msgspec.json.Decoder(OrderEvent),
    "surveys": msgspec.json.Decoder(SurveyEvent),
}

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


class Parsed(msgspec.Struct, frozen=True):
    """A validated event plus its event time, normalised."""

    topic: str
    event: Any
    ts_ms: int
    offset_s: int
    """UTC offset the producer wrote ``ts`` in (0 for epoch milliseconds)."""


def to_ms(ts: int | datetime) -> tuple[int, int]:
    """Event time as (epoch milliseconds, UTC offset in seconds)."""
    if isinstance(ts, int):
        return ts, 0
    offset = ts.utcoffset()
    return (ts - _EPOCH) // _MS, int(offset.total_seconds()) if offset is not None else 0


def parse_due(due: str) -> tuple[date | None, int | None]:
    """A due date as (calendar date, None) or (None, epoch ms of the instant)."""
    if len(due) == 10:
        try:
            return date.fromisoformat(due), None
        except ValueError as exc:
            raise ContractError(f"due_date {due!r} is not a valid date: {exc}") from None
    try:
        instant = datetime.fromisoformat(due.replace("Z", "+00:00"))
    except ValueError:
        raise ContractError(f"due_date {due!r} is not an RFC 3339 date or date-time") from None
    if instant.tzinfo is None:
        raise ContractError(f"due_date {due!r} has a time but no UTC offset")
    return None, to_ms(instant)[0]


_QUOTED: Final = re.compile(r"""'(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|'.*|".*""", re.DOTALL)


def redact(reason: str) -> str:
    """A rejection reason fit for a log line: every quoted value from the message is elided.

    Reasons quote the offending value (``Invalid value 'x' - at `$.type```), which helps whoever
    reads the dead letter next to the original bytes, but logs carry ids, not payloads. An
    unterminated quote elides the rest of the line.
    """
    return _QUOTED.sub("'…'", reason)


def decode(topic: str, raw: bytes, wall_ms: int) -> Parsed:
    """Validate one message of ``topic``; raise ContractError with the reason."""
    decoder = _DECODERS.get(topic)
    if decoder is None:
        raise ContractError(f"unknown topic {topic!r}")
    if len(raw) > MAX_MESSAGE_BYTES:
        raise ContractError(f"message of {len(raw)} bytes exceeds the {MAX_MESSAGE_BYTES} limit")
    if not raw.isascii():
        try:
            raw.decode("utf-8")  # also inside fields that are otherwise ignored
        except UnicodeDecodeError as exc:
            raise ContractError(f"not UTF-8: {exc.reason} at byte {exc.start}") from None
    try:
        event = decoder.decode(raw)
    except msgspec.ValidationError as exc:
        raise ContractError(f"invalid {topic} event: {exc}") from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise ContractError(f"not a JSON object: {exc}") from None
    except RecursionError:
        # nesting deeper than the interpreter's recursion limit, even in an ignored field:
        # found by tests/test_fuzz.py, it used to escape decode() and stop the agent
        raise ContractError("not a JSON object: nested too deeply") from None
    if not PARTNER_ID_RE.match(event.partner_id):
        raise ContractError(f"partner_id {event.partner_id!r} must be {PARTNER_ID_RULE}")
    if not _ID_RE.match(event.event_id):
        raise ContractError(f"event_id {event.event_id!r} has characters outside [A-Za-z0-9._:@/+-]")
    if b"\\" in raw:  # JSON strings carry control characters only as escapes: skip the scan
        for name in _ENTITY_FIELDS:
            value = getattr(event, name, None)
            if value is not None and _CONTROL_RE.search(value):
                raise ContractError(f"{name} {value!r} contains a control character")
    ts_ms, offset_s = to_ms(event.ts)
    if isinstance(event.ts, int):
        if ts_ms < 0:
            raise ContractError(f"ts {ts_ms} is negative; the contract wants epoch milliseconds")
        if ts_ms < MIN_MS_INT:
            raise ContractError(
                f"ts {ts_ms} looks like epoch seconds; the contract wants milliseconds")
    elif ts_ms < 0:
        # The engine counts time from the epoch (a partner's newest event time is -1 before
        # its first event), so times before 1970 are refused, not misfiled.
        raise ContractError(f"ts {event.ts.isoformat()} is before 1970-01-01")
    # the only upper bound, also against microseconds or nanoseconds sent as milliseconds
    if ts_ms - wall_ms > MAX_FUTURE_MS:
        raise ContractError(
            f"ts is {(ts_ms - wall_ms) / 1000:.0f} s ahead of the wall clock (limit 300 s)"
        )
    if isinstance(event, SurveyResponse):
        lo, hi = SCORE_RANGE[event.kind]
        if not (math.isfinite(event.score) and lo <= event.score <= hi):
            raise ContractError(f"{event.kind} score {event.score} outside {lo:g}..{hi:g}")
    elif isinstance(event, OrderScheduled):
        parse_due(event.due_date)
    elif isinstance(event, _NoSurvey):
        # its tag is reachable after all: JSON can spell "\u0000" (found by tests/test_fuzz.py;
        # accepted, it marked a real event's id as seen and the real one was dropped later)
        raise ContractError(f"invalid {topic} event: Invalid value '\\x00' - at `$.type`")
    return Parsed(topic, event, ts_ms, offset_s)
