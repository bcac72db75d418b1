"""The journal's records: keys, encoding, and the hash event ids are kept by.

The durable state is a journal of accepted events, one record per event keyed by partner and
the event_id's hash (:func:`id_hash`; deleted once the event ages past retention). One record per
event makes each event's effect atomic in the changelog, so a crash between two writes can never
leave half an event counted; and it is the dedup set as well. Calendar months outlive the
journal, so each month's aggregate is a snapshot record of its own (:func:`month_key`); and
each partner's other state is a snapshot record (:func:`state_key`), so a restart replays only
the events after it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, MutableMapping
from typing import Any, Final

import msgspec
import xxhash

from streams.ingest.contract import Event, Parsed

SEP: Final = "\x1f"
"""Separator inside state keys (never valid in ids)."""

MONTH_PREFIX: Final = "#month:"
"""Journal keys of month snapshots: '#' never starts an event id, so they cannot collide."""
CLOSED_PREFIX: Final = "#closed:"
"""Journal keys of closed months: the values frozen at the close and the restatements since."""
STATE_PREFIX: Final = "#state"
"""The journal key of a partner's snapshot (:mod:`streams.engine.snapshot`): one per partner."""

Write = tuple[bytes, bytes | None]
"""A journal write: (key, record), or (key, None) to delete."""

ENCODER: Final = msgspec.msgpack.Encoder()
_RECORD_DECODER: Final = msgspec.msgpack.Decoder(tuple[str, int, int, Event, int])
_SEQ_DECODER: Final = msgspec.msgpack.Decoder(tuple[str, int, int, msgspec.Raw, int])
"""An event record with the event left undecoded: its sequence number, cheaply."""
MONTH_DECODER: Final = msgspec.msgpack.Decoder(list[Any])
"""A month snapshot: [seq, {kpi: aggregate}] or, since evidence, [seq, {kpi: aggregate},
{kpi: [entity ids behind misses]}]."""
CLOSED_DECODER: Final = msgspec.msgpack.Decoder(
    tuple[int, str, dict[str, list[float]], list[tuple[int, str, float | None, float | None,
                                                       int, int]]])


def id_hash(event_id: str) -> int:
    """The 64-bit hash (XXH3) an event id is deduplicated and journalled by.

    Why a hash, not the id: 90 days of ids are the engine's largest per-event state after the
    entity marks, and a hash is 8 B against an id's 50-80 B as a str. Two different ids of one
    partner's retained events share a hash with probability about n**2 / 2**65: 5e-12 for the
    14,000 events of 30 days of busy traffic. XXH3's output is fixed by its specification, so
    journal keys stay the same across versions and machines (unlike ``hash()``, salted per
    process)."""
    return xxhash.xxh3_64_intdigest(event_id.encode())


def record_key(partner: str, h: int) -> bytes:
    """The journal key of an event: partner and the id's hash (16 hex digits)."""
    return f"{partner}{SEP}{h:016x}".encode()


def month_key(partner: str, month_name: str) -> bytes:
    """The journal key of a month's snapshot (``month_name`` like '2026-10')."""
    return f"{partner}{SEP}{MONTH_PREFIX}{month_name}".encode()


def closed_key(partner: str, month_name: str) -> bytes:
    """The journal key of a closed month (``month_name`` like '2026-10')."""
    return f"{partner}{SEP}{CLOSED_PREFIX}{month_name}".encode()


STATE_KEY_END: Final = f"{SEP}{STATE_PREFIX}".encode()
"""How every snapshot record's key ends (:func:`state_key`)."""


def state_key(partner: str) -> bytes:
    """The journal key of a partner's snapshot."""
    return partner.encode() + STATE_KEY_END


def split_key(key: bytes) -> tuple[str, str | None, str]:
    """(partner, month name, prefix) of a month record's key ('#month:' or '#closed:'),
    (partner, '', '#state') of a snapshot's, (partner, None, '') of an event's."""
    partner, _, rest = key.decode().partition(SEP)
    if rest == STATE_PREFIX:
        return partner, "", STATE_PREFIX
    for prefix in (MONTH_PREFIX, CLOSED_PREFIX):
        if rest.startswith(prefix):
            return partner, rest[len(prefix):], prefix
    return partner, None, ""


def encode_record(parsed: Parsed, seq: int) -> bytes:
    return ENCODER.encode((parsed.topic, parsed.ts_ms, parsed.offset_s, parsed.event, seq))


def decode_record(raw: bytes) -> tuple[int, Parsed]:
    """(sequence number, event) of an event record."""
    topic, ts_ms, offset_s, event, seq = _RECORD_DECODER.decode(raw)
    return seq, Parsed(topic, event, ts_ms, offset_s)


def read_journal(records: Iterable[tuple[bytes, bytes]],
                 ) -> tuple[list[tuple[str, str, bytes]], list[tuple[str, bytes]]]:
    """Journal (key, record) pairs in any order, sorted out, nothing decoded yet: the month
    and snapshot records as (partner, prefix + month name, e.g. '#closed:2026-10' or '#state',
    record) in the order read, and the event records as (partner, record)."""
    snapshots: list[tuple[str, str, bytes]] = []
    events: list[tuple[str, bytes]] = []
    for key, raw in records:
        partner, month, prefix = split_key(key)
        if month is not None:
            snapshots.append((partner, prefix + month, raw))
        else:
            events.append((partner, raw))
    return snapshots, events


def decode_events(events: Iterable[tuple[str, bytes]], after: Mapping[str, int],
                  ) -> list[tuple[int, Parsed]]:
    """The event records of :func:`read_journal` as (sequence number, event), in the order they
    were accepted (by partner, then sequence number); of a partner in ``after``, only those
    numbered after its entry (what its snapshot does not cover: the rest is never decoded
    past its number)."""
    out: list[tuple[int, Parsed]] = []
    for partner, raw in events:
        floor = after.get(partner)
        if floor is not None and _SEQ_DECODER.decode(raw)[-1] <= floor:
            continue
        out.append(decode_record(raw))
    out.sort(key=lambda e: (e[1].event.partner_id, e[0]))
    return out


_SEP_BYTE: Final = SEP.encode()
_STATE_SUFFIX: Final = STATE_PREFIX.encode()


class CoveredEvents:
    """Which event records a journal held in memory may forget: those a snapshot covers.

    Why: an in-memory journal otherwise holds every retained event record besides the engine's
    state (a partner with 30 days of busy traffic: 14,000 of them, about 3.9 MB of the worker's
    RSS, measured in bench/recovery). Once a partner's snapshot is
    written or read, its event records numbered up to the snapshot's ``seq`` are never replayed
    again (the snapshot has their effect and their ids), so only the snapshot and the records
    after it need to stay; the changelog topic keeps them all, for a restart under another
    configuration. Decided by each record's number, not by the order records came in: a
    snapshot record read after later events (a changelog written in another order) forgets
    none of them. A snapshot that does not fit this configuration (``covers`` says None)
    forgets nothing: that partner is rebuilt from every event.
    """

    COMPACT_AT: Final = 1024
    """A partner's list of keys is compacted (keys deleted meanwhile, listed twice) once it
    reaches this length, then twice its length after each compaction: a partner that is never
    snapshotted (its snapshot too large) keeps a list bounded by its live records."""

    def __init__(self) -> None:
        self._held: dict[bytes, list[bytes]] = {}
        """Partner (key prefix) -> keys of its event records put and not forgotten yet."""
        self._compact_at: dict[bytes, int] = {}
        self.forgotten = 0
        """Event records forgotten so far."""

    def put(self, data: MutableMapping[bytes, bytes], key: bytes, value: bytes | None,
            covers: Callable[[bytes, bytes], int | None]) -> None:
        """Put (or, with None, delete) one journal record in ``data``. A snapshot record
        (``covers`` gives the last number it covers, or None when it does not fit) makes the
        partner's event records numbered up to there forgotten."""
        if value is None:
            data.pop(key, None)
            return
        data[key] = value
        cut = key.find(_SEP_BYTE)
        partner = key[:cut]
        if key[cut + 1:cut + 2] != b"#":  # an event record (a hex hash follows the separator)
            held = self._held.setdefault(partner, [])
            held.append(key)
            if len(held) >= self._compact_at.get(partner, self.COMPACT_AT):
                held[:] = [k for k in dict.fromkeys(held) if k in data]
                self._compact_at[partner] = max(self.COMPACT_AT, 2 * len(held))
            return
        if key[cut + 1:] != _STATE_SUFFIX:
            return
        last = covers(key, value)
        listed = self._held.get(partner)
        if last is None or not listed:
            return
        kept = []
        for old in listed:
            raw = data.get(old)
            if raw is None:
                continue  # deleted meanwhile, or listed twice
            if _SEQ_DECODER.decode(raw)[-1] <= last:
                del data[old]
                self.forgotten += 1
            else:
                kept.append(old)
        self._held[partner] = kept
