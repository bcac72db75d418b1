"""Rows to contract events: time, entity and partner per row, then per entity the event types of
its statuses and the derived ones, each event checked against the contract."""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import Any, Final

import orjson

from streams.ingest import contract
from streams.ingest.contract import PARTNER_ID_RE, TOPICS, ContractError
from streams.tools.replay.mapping import FieldSpec, Mapping, MappingFile, SkipRule, TimeSpec, slugify
from streams.tools.replay.rows import Row, Skip

_EPOCH: Final = datetime(1970, 1, 1, tzinfo=UTC)
_MS: Final = timedelta(milliseconds=1)


def _text(row: dict[str, Any], column: str) -> str:
    value = row.get(column)
    if value is None:
        return ""
    return value if isinstance(value, str) else str(value)


def _parse_time(value: Any, spec: TimeSpec, tz: tzinfo | None) -> datetime:
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


def _field_value(name: str, spec: FieldSpec, row: dict[str, Any]) -> Any:
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


def _skip_reason(rules: list[SkipRule], row: dict[str, Any]) -> str | None:
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


def _parse_row(line: int, row: dict[str, Any], mapping: Mapping) -> _Parsed | Skip:
    """A row's event time, entity and partner; a Skip when the row is left out or unreadable."""
    raw = mapping.raw
    reason = _skip_reason(raw.skip, row)
    if reason is not None:
        return Skip(line, reason)
    try:
        ts = _parse_time(row.get(raw.time.column), raw.time, mapping.tz)
    except (ValueError, TypeError, OverflowError) as exc:
        return Skip(line, f"time column {raw.time.column!r}: {exc}")
    entity: str | None = None
    if raw.entity is not None:
        entity = _text(row, raw.entity).strip()
        if not entity:
            return Skip(line, f"entity column {raw.entity!r} is empty")
    if raw.partner.constant is not None:
        partner = raw.partner.constant
    else:
        value = _text(row, raw.partner.column or "").strip()
        partner = raw.partner.prefix + (slugify(value) if raw.partner.slugify else value)
        if not value or not PARTNER_ID_RE.match(partner):
            return Skip(line, f"partner {partner!r} from column {raw.partner.column!r} "
                        "is not a valid partner id")
    return _Parsed(line, ts, _ms(ts), entity, partner, row)


def map_rows(rows: Iterable[Row | Skip], mapping: Mapping, source: str = "",
             topic: str | None = None, wall_ms: int | None = None) -> Iterator[dict[str, Any] | Skip]:
    """Contract events (dicts) for ``rows``, in event-time order, and a Skip per row or event that
    could not be mapped (those first, in line order). Pure: the same rows give the same events.

    ``source`` names the file (it seeds ``event_id``); ``topic`` defaults to the mapping's, then
    ``tickets``. Every event is checked with :func:`streams.ingest.contract.decode` (at ``wall_ms``,
    default now): one that breaks the contract becomes a Skip, like a row the mapping rejects.
    """
    topic = topic or mapping.raw.topic or "tickets"
    if topic not in TOPICS:
        raise ValueError(f"unknown topic {topic!r}")
    wall = wall_ms if wall_ms is not None else time.time_ns() // 1_000_000
    emitter = _Emitter(mapping, topic, contract.ENTITY_FIELD[topic], _id_prefix(mapping, source), wall)
    groups: dict[str | None, list[_Parsed]] = defaultdict(list)
    for item in rows:
        parsed = item if isinstance(item, Skip) else _parse_row(*item, mapping)
        if isinstance(parsed, Skip):
            emitter.skips.append(parsed)
        else:
            groups[parsed.entity].append(parsed)
    for entity, group in groups.items():
        group.sort(key=lambda p: (p.ts_ms, p.line))
        if entity is None:  # no entity column: every row stands alone
            for p in group:
                for seq, type_ in enumerate(_status_types(mapping.raw, p.row)):
                    emitter.emit(p, p.partner, type_, seq)
            continue
        emitter.derive_entity(group)
    emitter.skips.sort(key=lambda s: s.line)
    yield from emitter.skips
    emitter.out.sort(key=lambda item: item[:3])
    for *_, event in emitter.out:
        yield event


def _status_types(raw: MappingFile, row: dict[str, Any]) -> list[str]:
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


@dataclass(slots=True)
class _Emitter:
    """The events (and the skips) of one :func:`map_rows` call."""

    mapping: Mapping
    topic: str
    entity_field: str | None
    prefix: str
    wall: int
    out: list[tuple[int, int, int, dict[str, Any]]] = field(default_factory=list)
    """(ts_ms, line, sequence in the row, event): sorted, the replay's order."""
    skips: list[Skip] = field(default_factory=list)

    def derive_entity(self, parsed: list[_Parsed]) -> None:
        """The events of one entity's rows (in event-time order): status and derived types."""
        raw = self.mapping.raw
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
                self.emit(p, partner, type_, len(this_row))

    def emit(self, p: _Parsed, partner: str, type_: str, seq: int) -> None:
        """One event of row ``p``, or a Skip when its fields or the contract reject it."""
        event: dict[str, Any] = {
            "event_id": f"{self.prefix}:{p.line}:{type_}",
            "type": type_,
            "partner_id": partner,
            "ts": p.ts.isoformat(),
        }
        if self.entity_field is not None and p.entity is not None:
            event[self.entity_field] = p.entity
        try:
            for name, spec in self.mapping.raw.fields.get(type_, {}).items():
                value = _field_value(name, spec, p.row)
                if value is not None:
                    event[name] = value
        except (ValueError, TypeError) as exc:
            self.skips.append(Skip(p.line, f"{type_}: {exc}"))
            return
        try:
            contract.decode(self.topic, orjson.dumps(event), self.wall)
        except ContractError as exc:
            self.skips.append(Skip(p.line, f"{type_} event breaks the contract: {exc}"))
            return
        self.out.append((p.ts_ms, p.line, seq, event))


def event_ms(event: dict[str, Any]) -> int:
    """Epoch milliseconds of a mapped event's ``ts``."""
    return _ms(datetime.fromisoformat(event["ts"]))
