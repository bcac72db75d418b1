"""Replay a real event log (CSV or JSON Lines, optionally gzipped) as contract events.

``partnerpulse replay FILE --topic tickets --mapping MAPPING.yaml --broker URL [--speed N]``

A *mapping* (YAML, declarative, no code) says how rows become events: which column names the
entity and the partner, how the event time is read and in which time zone, which rows to skip,
how a source status maps to an event type, and which events are *derived* per entity:

* ``first_row``: an event (``opened``) from the entity's first row (by event time);
* ``leave_queue``: an event (``contacted``) from the first move out of a queued state;
* ``level_up``: an event (``escalated``) from the first change of a support-level column to a
  higher level (``L1 -> L2``).

Rows are grouped by entity and sorted by event time (ties: file order) before anything is
derived, so a file need not be time-ordered. Every event type is emitted at most once per entity
unless ``status.once: false``. ``partner.per_entity: first`` (the default) gives all of an
entity's events the partner of its first row, so a ticket never splits across partners when the
partner column changes along its life.

``event_id`` is ``<id_prefix>:<line>:<type>`` (``id_prefix`` defaults to the file name slugified):
replaying the same file twice produces duplicates, which the worker drops, never new events.

Rows or events that cannot be mapped are reported as :class:`Skip` (line, reason) and never
abort the run. :func:`map_rows` is pure; :func:`replay` produces to Kafka in event-time order,
as fast as the broker takes them or at ``speed`` times real time.
"""

from __future__ import annotations

import csv
import gzip
import io
import re
import time
from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from pathlib import Path
from typing import IO, Any, Final, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import msgspec
import orjson

from streams.config.yamlfile import ConfigError, Scalar, load_yaml
from streams.ingest import contract
from streams.ingest.contract import EVENT_TYPES, PARTNER_ID_RE, PARTNER_ID_RULE, TOPICS, ContractError, Topic

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)
_OFFSET_RE: Final = re.compile(r"^(?:UTC|Z|([+-])(\d{2}):?(\d{2}))$")


# --- the YAML shape (validated by msgspec) ------------------------------------
class _Field(msgspec.Struct, forbid_unknown_fields=True, rename={"as_": "as"}):
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


class _Time(msgspec.Struct, forbid_unknown_fields=True):
    column: str
    format: str = "iso"  # iso | epoch_ms | epoch_s | a strptime format
    timezone: str | None = None  # IANA name or fixed offset (+01:00); for naive times
    ignore_offset: bool = False  # the file's offset is a wrong label: read the clock time in `timezone`


class _SkipRule(msgspec.Struct, forbid_unknown_fields=True, rename={"in_": "in"}):
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


class _MappingFile(msgspec.Struct, forbid_unknown_fields=True):
    version: Literal[1]
    partner: _Partner
    time: _Time
    topic: Topic | None = None
    format: Literal["csv", "jsonl"] | None = None
    delimiter: str = ","
    encoding: str = "utf-8-sig"
    entity: str | None = None
    id_prefix: str | None = None
    description: str = ""
    skip: list[_SkipRule] = []
    status: _Status | None = None
    derive: _Derive = msgspec.field(default_factory=_Derive)
    fields: dict[str, dict[str, _Field]] = {}


# --- the resolved model --------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Mapping:
    """A checked mapping: how rows of one kind of file become contract events."""

    raw: _MappingFile
    tz: tzinfo | None
    source: str = ""

    @property
    def topic(self) -> str | None:
        return self.raw.topic


@dataclass(frozen=True, slots=True)
class Skip:
    """A row (or one event of a row) that could not be mapped, with the reason."""

    line: int
    reason: str


@dataclass
class ReplayStats:
    """What one replay did."""

    rows: int = 0
    events: int = 0
    produced: int = 0
    failed: int = 0
    skips: list[Skip] = field(default_factory=list)
    seconds: float = 0.0
    """Wall time of the whole replay: reading, mapping, producing."""
    produce_seconds: float = 0.0
    """Wall time of producing alone (paced when ``speed`` is given)."""
    first_ts_ms: int | None = None
    last_ts_ms: int | None = None

    @property
    def skipped(self) -> int:
        return len(self.skips)

    @property
    def skipped_lines(self) -> int:
        return len({s.line for s in self.skips})

    def reasons(self) -> Counter[str]:
        """Skip reasons with their counts (values in quotes are folded)."""
        return Counter(_fold_reason(s.reason) for s in self.skips)

    @property
    def events_per_s(self) -> float:
        """Events produced per second of producing."""
        return self.produced / self.produce_seconds if self.produce_seconds > 0 else 0.0


def _fold_reason(reason: str) -> str:
    return re.sub(r"'[^']*'", "'…'", reason)


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


def load_mapping(path: Path | str) -> Mapping:
    """Load and check a mapping YAML file; raise ConfigError naming file and line."""
    path = Path(path)
    doc = load_yaml(path)
    fail = doc.error
    raw = doc.convert(_MappingFile)
    tz: tzinfo | None = None
    if raw.time.timezone is not None:
        try:
            tz = parse_tz(raw.time.timezone)
        except ValueError as exc:
            raise fail(["time", "timezone"], str(exc)) from None
    if raw.time.ignore_offset and tz is None:
        raise fail(["time", "ignore_offset"], "ignore_offset needs time.timezone")
    if raw.partner.column is None and raw.partner.constant is None:
        raise fail(["partner"], "partner needs a column or a constant")
    if raw.partner.column is not None and raw.partner.constant is not None:
        raise fail(["partner"], "partner takes a column or a constant, not both")
    if raw.partner.constant is not None and not PARTNER_ID_RE.match(raw.partner.constant):
        raise fail(["partner", "constant"],
                   f"partner id {raw.partner.constant!r} must be {PARTNER_ID_RULE}")
    if len(raw.delimiter) != 1:
        raise fail(["delimiter"], "delimiter must be one character")
    # every type named must exist on the topic (when the mapping names it)
    allowed = EVENT_TYPES[raw.topic] if raw.topic else frozenset().union(*EVENT_TYPES.values())
    named: list[tuple[list[str | int], str]] = []
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


# --- reading rows ----------------------------------------------------------------
Row = tuple[int, dict[str, Any]]


def _open_text(path: Path, encoding: str) -> IO[str]:
    with path.open("rb") as probe:
        magic = probe.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding=encoding, newline="")
    return path.open(encoding=encoding, newline="")


def file_format(path: Path, mapping: Mapping) -> str:
    """csv or jsonl: the mapping's ``format``, else from the file name."""
    if mapping.raw.format:
        return mapping.raw.format
    name = path.name.lower().removesuffix(".gz")
    return "jsonl" if name.endswith((".jsonl", ".ndjson", ".json")) else "csv"


def read_rows(source: IO[str], fmt: str = "csv", delimiter: str = ",") -> Iterator[Row | Skip]:
    """Rows as (line number, dict); rows that cannot be read are Skips. Line 1 is a CSV's header."""
    if fmt == "jsonl":
        for line_no, line in enumerate(source, 1):
            if not line.strip():
                continue
            try:
                value = orjson.loads(line)
            except orjson.JSONDecodeError as exc:
                yield Skip(line_no, f"not JSON: {exc}")
                continue
            if isinstance(value, dict):
                yield line_no, value
            else:
                yield Skip(line_no, "not a JSON object")
        return
    reader = csv.reader(source, delimiter=delimiter)
    try:
        header = next(reader)
    except StopIteration:
        return
    except csv.Error as exc:
        yield Skip(1, f"unreadable CSV header: {exc}")
        return
    width = len(header)
    previous = reader.line_num
    while True:
        start = previous + 1
        try:
            record = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            yield Skip(start, f"unreadable CSV row: {exc}")
            previous = reader.line_num
            continue
        previous = reader.line_num
        if not record:
            continue
        if len(record) != width:
            yield Skip(start, f"{len(record)} fields where the header has {width}")
            continue
        yield start, dict(zip(header, record, strict=True))


def rows_from_text(text: str, fmt: str = "csv", delimiter: str = ",") -> list[Row | Skip]:
    """Rows of CSV or JSON Lines text (for tests and small inputs)."""
    return list(read_rows(io.StringIO(text, newline=""), fmt, delimiter))


def read_file(path: Path, mapping: Mapping) -> Iterator[Row | Skip]:
    """Rows of a CSV or JSON Lines file, gzipped or not."""
    with _open_text(path, mapping.raw.encoding) as source:
        yield from read_rows(source, file_format(path, mapping), mapping.raw.delimiter)


# --- mapping rows to events --------------------------------------------------------
def _text(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _parse_time(value: Any, spec: _Time, tz: tzinfo | None) -> datetime:
    if spec.format in ("epoch_ms", "epoch_s"):
        number = float(value)
        seconds = number / 1000 if spec.format == "epoch_ms" else number
        return datetime.fromtimestamp(seconds, UTC)
    text = str(value).strip()
    if not text:
        raise ValueError("empty time")
    moment = (datetime.fromisoformat(text) if spec.format == "iso"
              else datetime.strptime(text, spec.format))
    if moment.tzinfo is not None and not spec.ignore_offset:
        return moment
    if tz is None:
        raise ValueError(f"time {text!r} has no UTC offset and the mapping names no time.timezone")
    return moment.replace(tzinfo=tz)


def _ms(moment: datetime) -> int:
    return (moment - _EPOCH) // _MS


def _field_value(name: str, spec: _Field, row: dict[str, Any]) -> Any:
    if spec.column is None:
        return spec.constant
    value: Any = row.get(spec.column)
    if spec.map is not None:
        key = _text(row, spec.column)
        if key in spec.map:
            return spec.map[key]
        if spec.default is None:
            raise ValueError(f"field {name}: {key!r} is not in its map and there is no default")
        return spec.default
    if value is None or value == "":
        if spec.default is None:
            raise ValueError(f"field {name}: column {spec.column!r} is empty")
        return spec.default
    if spec.as_ == "int":
        return int(value)
    if spec.as_ == "float":
        return float(value)
    if spec.as_ == "bool":
        if isinstance(value, bool):
            return value
        lowered = str(value).strip().lower()
        if lowered in ("true", "yes", "1", "y"):
            return True
        if lowered in ("false", "no", "0", "n"):
            return False
        raise ValueError(f"field {name}: {value!r} is not a boolean")
    return value if isinstance(value, str) else str(value)


def _skip_reason(rules: list[_SkipRule], row: dict[str, Any]) -> str | None:
    for rule in rules:
        value = _text(row, rule.column)
        if rule.empty:
            hit = not value.strip()
            what = "is empty"
        elif rule.equals is not None:
            hit = value == rule.equals
            what = f"= {rule.equals!r}"
        else:
            hit = value in (rule.in_ or ())
            what = f"in {rule.in_!r}"
        if hit:
            return rule.reason or f"skip rule: {rule.column} {what}"
    return None


@dataclass(slots=True)
class _Parsed:
    line: int
    ts: datetime
    ts_ms: int
    entity: str | None
    partner: str
    row: dict[str, Any]


def _id_prefix(mapping: Mapping, source: str) -> str:
    if mapping.raw.id_prefix:
        return mapping.raw.id_prefix
    name = Path(source).name if source else ""
    for suffix in (".gz", ".csv", ".jsonl", ".ndjson", ".json"):
        name = name.removesuffix(suffix)
    return slugify(name, 48) or "row"


def map_rows(rows: Iterable[Row | Skip], mapping: Mapping, source: str = "",
             topic: str | None = None, wall_ms: int | None = None) -> Iterator[dict[str, Any] | Skip]:
    """Contract events (dicts) for ``rows``, in event-time order, and a Skip per row or event that
    could not be mapped (those first, in line order). Pure: the same rows give the same events.

    ``source`` names the file (it seeds ``event_id``); ``topic`` defaults to the mapping's, then
    ``tickets``. Every event is checked with :func:`streams.ingest.contract.decode` (at ``wall_ms``,
    default now): one that breaks the contract becomes a Skip, like a row the mapping rejects.
    """
    raw = mapping.raw
    topic = topic or raw.topic or "tickets"
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}")
    entity_field = contract.ENTITY_FIELD[topic]
    prefix = _id_prefix(mapping, source)
    wall = wall_ms if wall_ms is not None else time.time_ns() // 1_000_000
    skips: list[Skip] = []
    groups: dict[str | None, list[_Parsed]] = defaultdict(list)
    for item in rows:
        if isinstance(item, Skip):
            skips.append(item)
            continue
        line, row = item
        reason = _skip_reason(raw.skip, row)
        if reason is not None:
            skips.append(Skip(line, reason))
            continue
        try:
            ts = _parse_time(row.get(raw.time.column), raw.time, mapping.tz)
        except (ValueError, TypeError, OverflowError) as exc:
            skips.append(Skip(line, f"time column {raw.time.column!r}: {exc}"))
            continue
        entity: str | None = None
        if raw.entity is not None:
            entity = _text(row, raw.entity).strip()
            if not entity:
                skips.append(Skip(line, f"entity column {raw.entity!r} is empty"))
                continue
        if raw.partner.constant is not None:
            partner = raw.partner.constant
        else:
            value = _text(row, raw.partner.column or "").strip()
            partner = raw.partner.prefix + (slugify(value) if raw.partner.slugify else value)
            if not value or not PARTNER_ID_RE.match(partner):
                skips.append(Skip(line, f"partner {partner!r} from column {raw.partner.column!r} "
                                  "is not a valid partner id"))
                continue
        groups[entity].append(_Parsed(line, ts, _ms(ts), entity, partner, row))

    out: list[tuple[int, int, int, dict[str, Any]]] = []
    for entity, parsed in groups.items():
        parsed.sort(key=lambda p: (p.ts_ms, p.line))
        if entity is None:  # no entity column: every row stands alone
            for p in parsed:
                for seq, type_ in enumerate(_status_types(raw, p.row)):
                    _emit(out, skips, mapping, topic, entity_field, prefix, wall, p, p.partner, type_, seq)
            continue
        _derive_entity(out, skips, mapping, topic, entity_field, prefix, wall, parsed)
    skips.sort(key=lambda s: s.line)
    yield from skips
    out.sort(key=lambda item: item[:3])
    for *_, event in out:
        yield event


def _status_types(raw: _MappingFile, row: dict[str, Any]) -> list[str]:
    status = raw.status
    if status is None:
        return []
    values = [_text(row, c).strip() for c in status.columns]
    key = status.separator.join(values)
    if key in status.table:
        found = status.table[key]
        return [found] if found else []
    # wildcards: "Queued/*" (first columns fixed), then "*"
    for n in range(len(values) - 1, 0, -1):
        wild = status.separator.join([*values[:n], "*"])
        if wild in status.table:
            found = status.table[wild]
            return [found] if found else []
    found = status.table.get("*")
    return [found] if found else []


def _derive_entity(out: list[tuple[int, int, int, dict[str, Any]]], skips: list[Skip],
                   mapping: Mapping, topic: str, entity_field: str | None, prefix: str, wall: int,
                   parsed: list[_Parsed]) -> None:
    raw = mapping.raw
    derive = raw.derive
    partner_first = raw.partner.per_entity == "first"
    emitted: set[str] = set()
    was_queued: bool | None = None
    level: int | None = None
    repeatable = raw.status is not None and not raw.status.once
    for i, p in enumerate(parsed):
        partner = parsed[0].partner if partner_first else p.partner
        candidates: list[tuple[str, bool]] = []  # (type, may repeat)
        if i == 0 and derive.first_row:
            candidates.append((derive.first_row, False))
        candidates += [(t, repeatable) for t in _status_types(raw, p.row)]
        if derive.leave_queue is not None:
            queued = _text(p.row, derive.leave_queue.column).strip() in derive.leave_queue.queued
            if was_queued and not queued:
                candidates.append((derive.leave_queue.type, False))
            was_queued = queued
        if derive.level_up is not None:
            now = derive.level_up.levels.get(_text(p.row, derive.level_up.column).strip())
            if now is not None:
                if level is not None and now > level:
                    candidates.append((derive.level_up.type, False))
                level = now
        this_row: set[str] = set()
        for type_, may_repeat in candidates:
            if type_ in this_row or (type_ in emitted and not may_repeat):
                continue
            this_row.add(type_)
            emitted.add(type_)
            _emit(out, skips, mapping, topic, entity_field, prefix, wall, p, partner, type_, len(this_row))


def _emit(out: list[tuple[int, int, int, dict[str, Any]]], skips: list[Skip], mapping: Mapping,
          topic: str, entity_field: str | None, prefix: str, wall: int, p: _Parsed, partner: str,
          type_: str, seq: int) -> None:
    event: dict[str, Any] = {
        "event_id": f"{prefix}:{p.line}:{type_}",
        "type": type_,
        "partner_id": partner,
        "ts": p.ts.isoformat(),
    }
    if entity_field is not None and p.entity is not None:
        event[entity_field] = p.entity
    try:
        for name, spec in mapping.raw.fields.get(type_, {}).items():
            value = _field_value(name, spec, p.row)
            if value is not None:
                event[name] = value
    except (ValueError, TypeError) as exc:
        skips.append(Skip(p.line, f"{type_}: {exc}"))
        return
    try:
        contract.decode(topic, orjson.dumps(event), wall)
    except ContractError as exc:
        skips.append(Skip(p.line, f"{type_} event breaks the contract: {exc}"))
        return
    out.append((p.ts_ms, p.line, seq, event))


# --- producing -------------------------------------------------------------------------
def replay(path: Path | str, topic: str, mapping: Mapping | Path | str, bootstrap: str,
           speed: float | None = None, progress: bool = True,
           security: dict[str, Any] | None = None) -> ReplayStats:
    """Map ``path`` with ``mapping`` and produce its events to ``topic`` in event-time order,
    keyed by partner: as fast as the broker takes them, or at ``speed`` times real time.
    ``security``: TLS/SASL client arguments (:func:`streams.config.kafka_auth.client_kwargs`)."""
    from kafka import KafkaProducer
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from streams.runtime.kafka_admin import parse_broker_url

    path = Path(path)
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}; one of {', '.join(TOPICS)}")
    if speed is not None and speed <= 0:
        raise ValueError("speed must be positive")
    if not isinstance(mapping, Mapping):
        mapping = load_mapping(mapping)
    if mapping.topic is not None and mapping.topic != topic:
        raise ValueError(f"mapping {mapping.source} is for topic {mapping.topic}, not {topic}")
    stats = ReplayStats()
    started = time.monotonic()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[note]}"), TimeElapsedColumn())
    with Progress(*columns, console=Console(stderr=True), disable=not progress) as bar:
        reading = bar.add_task("rows read", total=None, note="")
        rows: list[Row | Skip] = []
        for item in read_file(path, mapping):
            rows.append(item)
            if not isinstance(item, Skip):
                stats.rows += 1
            if len(rows) % 2000 == 0:
                bar.update(reading, completed=len(rows))
        bar.update(reading, completed=len(rows), total=len(rows))
        events: list[dict[str, Any]] = []
        for mapped in map_rows(rows, mapping, source=path.name, topic=topic):
            if isinstance(mapped, Skip):
                stats.skips.append(mapped)
            else:
                events.append(mapped)
        del rows
        stats.events = len(events)
        bar.update(reading, note=f"{stats.skipped} skipped ({stats.skipped_lines} lines)")
        producing = bar.add_task("events produced", total=len(events), note="")
        producer = KafkaProducer(bootstrap_servers=parse_broker_url(bootstrap), linger_ms=20,
                                 acks=1, batch_size=256 * 1024, max_in_flight_requests_per_connection=1,
                                 **(security or {}))
        acked = failed = 0

        def _ok(_meta: object) -> None:
            nonlocal acked
            acked += 1

        def _err(_exc: BaseException) -> None:
            nonlocal failed
            failed += 1

        try:
            t0 = time.monotonic()
            first_ms = _event_ms(events[0]) if events else 0
            for i, event in enumerate(events):
                if speed is not None:
                    delay = t0 + (_event_ms(event) - first_ms) / 1000 / speed - time.monotonic()
                    if delay > 0:
                        bar.update(producing, completed=i)
                        time.sleep(delay)
                future = producer.send(topic, key=event["partner_id"].encode(), value=orjson.dumps(event))
                future.add_callback(_ok)
                future.add_errback(_err)
                if i % 1000 == 0:
                    bar.update(producing, completed=i, note=f"acked {acked}")
            producer.flush()
            stats.produce_seconds = time.monotonic() - t0
        finally:
            producer.close()
        stats.produced, stats.failed = acked, failed
        bar.update(producing, completed=len(events), note=f"acked {acked}, failed {failed}")
    if events:
        stats.first_ts_ms, stats.last_ts_ms = _event_ms(events[0]), _event_ms(events[-1])
    stats.seconds = time.monotonic() - started
    return stats


def _event_ms(event: dict[str, Any]) -> int:
    return _ms(datetime.fromisoformat(event["ts"]))


def run_replay_cli(file: Path, topic: str, mapping: Path, broker: str, speed: float | None,
                   security: dict[str, Any] | None = None) -> int:
    """The ``partnerpulse replay`` command: 0 on success, 1 on a usage or mapping error, 2 when
    some events could not be produced. Skipped rows are reported, not errors."""
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=True)
    if not file.is_file():
        console.print(f"[red]no such file[/red] {file}")
        return 1
    try:
        loaded = load_mapping(mapping)
        stats = replay(file, topic, loaded, broker, speed=speed, progress=console.is_terminal,
                       security=security)
    except ConfigError as exc:
        console.print(f"[red]mapping error[/red] {exc}")
        return 1
    except (ValueError, OSError, UnicodeDecodeError) as exc:
        console.print(f"[red]replay error[/red] {exc}")
        return 1
    if stats.skips:
        table = Table(title=f"{stats.skipped} skipped ({stats.skipped_lines} lines)")
        table.add_column("reason")
        table.add_column("count", justify="right")
        table.add_column("lines")
        by_reason: dict[str, list[int]] = defaultdict(list)
        for skip in stats.skips:
            by_reason[_fold_reason(skip.reason)].append(skip.line)
        for reason, lines in sorted(by_reason.items(), key=lambda kv: -len(kv[1])):
            shown = ", ".join(map(str, lines[:10])) + (" …" if len(lines) > 10 else "")
            table.add_row(reason, str(len(lines)), shown)
        console.print(table)
    span_days = ((stats.last_ts_ms or 0) - (stats.first_ts_ms or 0)) / 86_400_000
    if speed is None and span_days > 30:
        console.print(f"[yellow]note[/yellow] the events span {span_days:.0f} days: a worker on the "
                      "event clock drops as late any event more than 30 days behind the newest it has "
                      "seen, and its partitions are read at different paces, so part of an "
                      "unpaced replay this long can count as late (partnerpulse_events_total"
                      "{outcome=\"late\"}); --speed paces the replay.")
    console.print(f"{file.name}: {stats.rows} rows, {stats.events} events, {stats.produced} produced "
                  f"to {topic}, {stats.failed} failed, {stats.skipped} skipped, "
                  f"{stats.seconds:.1f} s ({stats.events_per_s:.0f} events/s produced)")
    return 2 if stats.failed else 0
