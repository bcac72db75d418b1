"""A replay mapping (YAML, declarative, no code): its shape, and the checks that make it one."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, timedelta, timezone, tzinfo
from pathlib import Path
from typing import Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec

from streams.config.yamlfile import Fail, Scalar, Where, load_yaml
from streams.ingest.contract import EVENT_TYPES, PARTNER_ID_RE, PARTNER_ID_RULE, Topic

_OFFSET_RE: Final = re.compile(r"^(?:UTC|Z|([+-])(\d{2}):?(\d{2}))$")


# --- the YAML shape (validated by msgspec) ------------------------------------
class FieldSpec(msgspec.Struct, forbid_unknown_fields=True, rename={"as_": "as"}):
    """An extra event field: a constant, or a column optionally looked up in a table."""

    column: str | None = None
    constant: Scalar = None
    map: dict[str, Scalar] | None = None
    default: Scalar = None
    as_: Literal["str", "int", "float", "bool"] = "str"


class _Partner(msgspec.Struct, forbid_unknown_fields=True):
    column: str | None = None
    constant: str | None = None
    slugify: bool = False
    prefix: str = ""
    per_entity: Literal["first", "row"] = "first"


class TimeSpec(msgspec.Struct, forbid_unknown_fields=True):
    """Where and how a row's event time is read."""

    column: str
    format: str = "iso"  # iso | epoch_ms | epoch_s | a strptime format
    timezone: str | None = None  # IANA name or fixed offset (+01:00); for naive times
    ignore_offset: bool = False  # the file's offset is a wrong label: read the clock time in `timezone`


class SkipRule(msgspec.Struct, forbid_unknown_fields=True, rename={"in_": "in"}):
    """Rows to leave out: a column equal to a value, in a list, or empty."""

    column: str
    equals: str | None = None
    in_: list[str] | None = None
    empty: bool = False
    reason: str | None = None


class _Status(msgspec.Struct, forbid_unknown_fields=True):
    columns: list[str]
    table: dict[str, str | None]
    separator: str = "/"
    once: bool = True


class _LeaveQueue(msgspec.Struct, forbid_unknown_fields=True):
    column: str
    queued: list[str]
    type: str = "contacted"


class _LevelUp(msgspec.Struct, forbid_unknown_fields=True):
    column: str
    levels: dict[str, int]
    type: str = "escalated"


class _Derive(msgspec.Struct, forbid_unknown_fields=True):
    first_row: str | None = None
    leave_queue: _LeaveQueue | None = None
    level_up: _LevelUp | None = None


class MappingFile(msgspec.Struct, forbid_unknown_fields=True):
    """A mapping file as written."""

    version: Literal[1]
    partner: _Partner
    time: TimeSpec
    topic: Topic | None = None
    format: Literal["csv", "jsonl"] | None = None
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    entity: str | None = None
    id_prefix: str | None = None
    description: str = ""
    skip: list[SkipRule] = []
    status: _Status | None = None
    derive: _Derive = msgspec.field(default_factory=_Derive)
    fields: dict[str, dict[str, FieldSpec]] = {}


# --- the resolved model --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Mapping:
    """A checked mapping: how rows of one kind of file become contract events."""

    raw: MappingFile
    tz: tzinfo | None
    source: str = ""

    @property
    def topic(self) -> str | None:
        return self.raw.topic


def slugify(text: str, max_len: int = 64) -> str:
    """``Org line A2`` -> ``org-line-a2``: lower case, runs of other characters -> ``-``."""
    slug = re.sub(r"[^a-z0-9._-]+", "-", text.strip().lower())
    slug = re.sub(r"-{2,}", "-", slug).strip("-._")
    return slug[:max_len].rstrip("-._")


def parse_tz(name: str) -> tzinfo:
    """An IANA zone name (``Europe/Rome``) or a fixed offset (``+01:00``, ``UTC``)."""
    match = _OFFSET_RE.match(name.strip())
    if match:
        if not match.group(1):
            return UTC
        sign = -1 if match.group(1) == "-" else 1
        hours, minutes = int(match.group(2)), int(match.group(3))
        if hours > 23 or minutes > 59:
            raise ValueError(f"bad UTC offset {name!r}")
        return timezone(sign * timedelta(hours=hours, minutes=minutes))
    try:
        return ZoneInfo(name.strip())
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r} (an IANA name or an offset like +01:00)") from None


# --- checking -------------------------------------------------------------------
# The checks run in file order, and the first problem found is the one reported.
def load_mapping(path: Path | str) -> Mapping:
    """Load and check a mapping YAML file; raise ConfigError naming file and line."""
    path = Path(path)
    doc = load_yaml(path)
    fail = doc.error
    raw = doc.convert(MappingFile)
    tz = _time_zone(raw.time, fail)
    _check_partner(raw.partner, fail)
    if len(raw.delimiter) != 1:
        raise fail(["delimiter"], "delimiter must be one character")
    _check_types(raw, fail)
    derive = raw.derive
    if (derive.first_row or derive.leave_queue or derive.level_up) and raw.entity is None:
        raise fail(["derive"], "derived events need an entity column")
    for t, specs in raw.fields.items():
        for name, spec in specs.items():
            if (spec.column is None) == (spec.constant is None):
                raise fail(["fields", t, name], f"field {name!r} takes a column or a constant")
    for i, rule in enumerate(raw.skip):
        if (rule.equals is not None) + (rule.in_ is not None) + rule.empty != 1:
            raise fail(["skip", i], "a skip rule takes exactly one of equals, in, empty")
    return Mapping(raw, tz, str(path))


def _time_zone(spec: TimeSpec, fail: Fail) -> tzinfo | None:
    tz: tzinfo | None = None
    if spec.timezone is not None:
        try:
            tz = parse_tz(spec.timezone)
        except ValueError as exc:
            raise fail(["time", "timezone"], str(exc)) from None
    if spec.ignore_offset and tz is None:
        raise fail(["time", "ignore_offset"], "ignore_offset needs time.timezone")
    return tz


def _check_partner(partner: _Partner, fail: Fail) -> None:
    if partner.column is None and partner.constant is None:
        raise fail(["partner"], "partner needs a column or a constant")
    if partner.column is not None and partner.constant is not None:
        raise fail(["partner"], "partner takes a column or a constant, not both")
    if partner.constant is not None and not PARTNER_ID_RE.match(partner.constant):
        raise fail(["partner", "constant"],
                   f"partner id {partner.constant!r} must be {PARTNER_ID_RULE}")


def _check_types(raw: MappingFile, fail: Fail) -> None:
    """Every event type the mapping names exists on its topic (on any, when it names none)."""
    allowed = EVENT_TYPES[raw.topic] if raw.topic else frozenset().union(*EVENT_TYPES.values())
    named: list[tuple[Where, str]] = []
    if raw.status is not None:
        if not raw.status.columns:
            raise fail(["status", "columns"], "status needs at least one column")
        named += [(["status", "table", key], t) for key, t in raw.status.table.items() if t]
    derive = raw.derive
    if derive.first_row:
        named.append((["derive", "first_row"], derive.first_row))
    if derive.leave_queue:
        named.append((["derive", "leave_queue", "type"], derive.leave_queue.type))
    if derive.level_up:
        named.append((["derive", "level_up", "type"], derive.level_up.type))
    named += [(["fields", t], t) for t in raw.fields]
    for where, type_ in named:
        if type_ not in allowed:
            raise fail(where, f"unknown event type {type_!r}"
                       + (f" for topic {raw.topic}" if raw.topic else ""))
