"""Malformed input messages: each one breaks the event contract of its topic unambiguously.

``malformed_messages(n)`` cycles through :data:`CATEGORIES` (round robin), varying the
topic, the event type and the exact defect with a seeded RNG. Everything else about a
message is valid (a recent timestamp, well-formed ids, the fields its type requires), so
the named defect is the reason to reject it.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

TOPICS = ("tickets", "calls", "orders", "surveys")
_PARTNERS = ("bluefiber", "northwind-telecom", "summit-broadband", "acme")
_ENTITY = {"tickets": "ticket_id", "calls": "call_id", "orders": "order_id"}
_MINUTE = 60_000

Event = dict[str, Any]
Builder = Callable[[random.Random, int, int], tuple[str, bytes]]


def _rfc3339(ms: int, offset_h: int) -> str:
    tz = timezone(timedelta(hours=offset_h))
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz).isoformat(timespec="milliseconds")


def _ts(rng: random.Random, now_ms: int) -> int | str:
    """A valid, recent event time: epoch ms or RFC 3339 with an offset."""
    ms = now_ms - rng.randrange(_MINUTE, 60 * _MINUTE)
    return ms if rng.random() < 0.5 else _rfc3339(ms, rng.choice((-5, 0, 2, 9)))


def _valid(rng: random.Random, now_ms: int, i: int, topic: str, etype: str | None = None) -> Event:
    """A contract-valid event of ``topic`` (and type, if given)."""
    partner = rng.choice(_PARTNERS)
    event: Event = {"event_id": f"bad-{i}-{rng.randrange(10**9)}", "partner_id": partner,
                    "ts": _ts(rng, now_ms)}
    if topic == "tickets":
        etype = etype or rng.choice(
            ("opened", "contacted", "escalated", "resolved", "closed", "reopened"))
        event["ticket_id"] = f"T-{rng.randrange(10**6)}"
        if etype == "opened":
            event["severity"] = rng.choice(("down_hard", "service_affecting", "question"))
            event["channel"] = rng.choice(("phone", "chat", "portal"))
        elif etype == "escalated":
            event["documented"] = rng.random() < 0.5
        elif etype == "resolved":
            event["first_contact"] = rng.random() < 0.5
            event["truck_roll"] = rng.random() < 0.2
    elif topic == "calls":
        etype = etype or rng.choice(("queued", "answered", "abandoned"))
        event["call_id"] = f"C-{rng.randrange(10**6)}"
    elif topic == "orders":
        etype = etype or rng.choice(("scheduled", "installed", "cancelled"))
        event["order_id"] = f"O-{rng.randrange(10**6)}"
        if etype == "scheduled":
            event["due_date"] = "2026-12-01" if rng.random() < 0.5 else "2026-12-01T17:00:00+01:00"
    else:
        etype = "response"
        kind = rng.choice(("csat", "xla"))
        event["kind"] = kind
        event["score"] = rng.randint(1, 5) if kind == "csat" else rng.randint(0, 10)
        if rng.random() < 0.5:
            event["ticket_id"] = f"T-{rng.randrange(10**6)}"
    event["type"] = etype
    return event


def _dump(event: Any) -> bytes:
    return json.dumps(event, separators=(",", ":")).encode()


def _any_topic(rng: random.Random) -> str:
    return rng.choice(TOPICS)


# --- the categories ---------------------------------------------------------------------


def _not_utf8(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    topic = _any_topic(rng)
    event = _valid(rng, now_ms, i, topic)
    variant = rng.randrange(4)
    if variant == 0:  # Latin-1 text in an (otherwise ignored) extra field
        event["note"] = "réclamation déjà traitée"
        return topic, json.dumps(event, ensure_ascii=False).encode("latin-1")
    if variant == 1:  # Latin-1 text in a contract field
        event["event_id"] = f"réf-{i}"
        return topic, json.dumps(event, ensure_ascii=False).encode("latin-1")
    if variant == 2:  # the whole message in UTF-16
        return topic, json.dumps(event).encode("utf-16")
    return topic, b"\xff\xfe\xfd" + _dump(event)


def _not_json(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    return _any_topic(rng), rng.choice((
        b"ticket opened at 10:00",
        b"{event_id: 1, type: opened}",
        b"event_id=e1&type=opened&partner_id=acme",
        b"<event><type>opened</type></event>",
        b"{'event_id': 'e1', 'type': 'opened'}",
    ))


def _json_array(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    topic = _any_topic(rng)
    return topic, _dump([_valid(rng, now_ms, i, topic)])


def _json_scalar(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    return _any_topic(rng), rng.choice((b"42", b"1790000000000", b'"opened"', b"null", b"true"))


def _truncated(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    topic = _any_topic(rng)
    raw = _dump(_valid(rng, now_ms, i, topic))
    return topic, raw[: rng.randrange(1, len(raw) - 1)]


def _without(field: str) -> Builder:
    def build(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
        topic = _any_topic(rng)
        event = _valid(rng, now_ms, i, topic)
        del event[field]
        return topic, _dump(event)

    return build


def _ts_wrong_type(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    topic = _any_topic(rng)
    event = _valid(rng, now_ms, i, topic)
    ms = now_ms - 5 * _MINUTE
    event["ts"] = rng.choice((True, False, ms + 0.5, [ms], {"ms": ms}, None))
    return topic, _dump(event)


def _ts_unparseable(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    topic = _any_topic(rng)
    event = _valid(rng, now_ms, i, topic)
    event["ts"] = rng.choice((
        "yesterday at noon", "2026-13-45T25:61:00Z", str(now_ms - _MINUTE), "", "10:00:00Z",
        "2026-10-01 10:00 CET",
    ))
    return topic, _dump(event)


def _ts_without_offset(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    topic = _any_topic(rng)
    event = _valid(rng, now_ms, i, topic)
    local = datetime.fromtimestamp((now_ms - 10 * _MINUTE) / 1000, UTC).replace(tzinfo=None)
    event["ts"] = local.isoformat(timespec=rng.choice(("seconds", "milliseconds")))
    return topic, _dump(event)


def _ts_in_future(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    topic = _any_topic(rng)
    event = _valid(rng, now_ms, i, topic)
    ahead = now_ms + 24 * 60 * _MINUTE + rng.randrange(60 * _MINUTE)  # a day ahead
    event["ts"] = ahead if rng.random() < 0.5 else _rfc3339(ahead, rng.choice((0, 2)))
    return topic, _dump(event)


def _unknown_type(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    topic = _any_topic(rng)
    event = _valid(rng, now_ms, i, topic)
    event["type"] = rng.choice({
        "tickets": ("deleted", "queued", "installed", "Opened"),
        "calls": ("opened", "ringing", "transferred"),
        "orders": ("shipped", "resolved", "scheduled_v2"),
        "surveys": ("csat", "answer", "opened"),
    }[topic])
    return topic, _dump(event)


def _missing_entity_id(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    topic = rng.choice(("tickets", "calls", "orders"))
    event = _valid(rng, now_ms, i, topic)
    del event[_ENTITY[topic]]
    return topic, _dump(event)


def _wrong_field_type(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    case = rng.randrange(8)
    if case == 0:
        event = _valid(rng, now_ms, i, "tickets", "opened")
        event["severity"] = rng.choice((1, 2, 3))
        return "tickets", _dump(event)
    if case == 1:
        event = _valid(rng, now_ms, i, "tickets", "escalated")
        event["documented"] = rng.choice(("yes", "true", "false"))
        return "tickets", _dump(event)
    if case == 2:
        event = _valid(rng, now_ms, i, "surveys")
        event["score"] = str(event["score"])
        return "surveys", _dump(event)
    if case == 3:
        event = _valid(rng, now_ms, i, "tickets", "resolved")
        event["first_contact"] = rng.choice(("true", "yes"))
        return "tickets", _dump(event)
    if case == 4:
        event = _valid(rng, now_ms, i, "tickets", "escalated")
        event["kb_article"] = 4711
        return "tickets", _dump(event)
    if case == 5:
        event = _valid(rng, now_ms, i, "orders", "scheduled")
        event["due_date"] = 20261201
        return "orders", _dump(event)
    if case == 6:
        topic = rng.choice(("tickets", "calls", "orders"))
        event = _valid(rng, now_ms, i, topic)
        event[_ENTITY[topic]] = rng.randrange(1, 10**6)
        return topic, _dump(event)
    topic = _any_topic(rng)
    event = _valid(rng, now_ms, i, topic)
    event["partner_id"] = rng.choice((42, ["acme"], None))
    return topic, _dump(event)


def _score_out_of_range(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    event = _valid(rng, now_ms, i, "surveys")
    if rng.random() < 0.5:
        event["kind"], event["score"] = "csat", rng.choice((0, 6, 7.5, -1, 10))
    else:
        event["kind"], event["score"] = "xla", rng.choice((-1, 11, 10.5, 100))
    return "surveys", _dump(event)


def _unknown_survey_kind(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    event = _valid(rng, now_ms, i, "surveys")
    event["kind"] = rng.choice(("nps", "ces", "CSAT", "", "csat "))
    event["score"] = 3
    return "surveys", _dump(event)


def _empty_object(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    return _any_topic(rng), b"{}"


def _empty_event_id(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    topic = _any_topic(rng)
    event = _valid(rng, now_ms, i, topic)
    event["event_id"] = ""
    return topic, _dump(event)


def _missing_required_field(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    case = rng.randrange(4)
    if case == 0:
        event = _valid(rng, now_ms, i, "tickets", "opened")
        del event["severity"]
        return "tickets", _dump(event)
    if case == 1:
        event = _valid(rng, now_ms, i, "orders", "scheduled")
        del event["due_date"]
        return "orders", _dump(event)
    event = _valid(rng, now_ms, i, "surveys")
    del event["score" if case == 2 else "kind"]
    return "surveys", _dump(event)


def _bad_channel(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    event = _valid(rng, now_ms, i, "tickets", "opened")
    event["channel"] = rng.choice(("pigeon", "fax", "Phone", "", 3))
    return "tickets", _dump(event)


def _bad_due_date(rng: random.Random, now_ms: int, i: int) -> tuple[str, bytes]:
    event = _valid(rng, now_ms, i, "orders", "scheduled")
    event["due_date"] = rng.choice((
        "next tuesday", "2026-02-30", "2026-12-01T17:00:00", "01/12/2026", "",
        "2026-12-01T25:00:00Z",
    ))
    return "orders", _dump(event)


CATEGORIES: dict[str, Builder] = {
    "not_utf8": _not_utf8,
    "not_json": _not_json,
    "json_array": _json_array,
    "json_scalar": _json_scalar,
    "truncated_json": _truncated,
    "missing_event_id": _without("event_id"),
    "missing_partner_id": _without("partner_id"),
    "missing_ts": _without("ts"),
    "missing_type": _without("type"),
    "ts_wrong_type": _ts_wrong_type,
    "ts_unparseable": _ts_unparseable,
    "ts_without_offset": _ts_without_offset,
    "ts_in_future": _ts_in_future,
    "unknown_type": _unknown_type,
    "missing_entity_id": _missing_entity_id,
    "wrong_field_type": _wrong_field_type,
    "score_out_of_range": _score_out_of_range,
    "unknown_survey_kind": _unknown_survey_kind,
    "empty_object": _empty_object,
    "empty_event_id": _empty_event_id,
    "missing_required_field": _missing_required_field,
    "bad_channel": _bad_channel,
    "bad_due_date": _bad_due_date,
}
"""Every kind of defect, in round-robin order."""


def malformed_messages(n: int, seed: int = 1, *,
                       now_ms: int | None = None) -> list[tuple[str, bytes, str]]:
    """``n`` malformed messages as (topic, raw bytes, category), round robin over
    :data:`CATEGORIES`. Timestamps are relative to ``now_ms`` (default: the wall clock at
    the call): recent ones are 1..60 min old, "in the future" is a day ahead."""
    rng = random.Random(seed)
    if now_ms is None:
        now_ms = int(time.time() * 1000)
    names = list(CATEGORIES)
    out: list[tuple[str, bytes, str]] = []
    for i in range(n):
        name = names[i % len(names)]
        topic, raw = CATEGORIES[name](rng, now_ms, i)
        out.append((topic, raw, name))
    return out
