"""A partner's state as one journal record: restart cost O(state), not O(events seen).

Why: without it a restart replays every journalled event through the engine (about 35 µs
each), so a worker's restart time grows with the history it holds (30 days of busy partners:
tens of millions of events). A snapshot holds what the events built -- dedup ids, entity marks,
open items, window buckets, CUSUMs, target bins -- as of one sequence number ``seq``; a restore
loads it and replays only the partner's events numbered after it (the tail).

Atomic per partner: a snapshot is one record, written after the records of every event it
covers (the same partition, the same producer, so in that order), with the partner's month
records brought up to date just before it. A crash that loses it leaves the previous snapshot
and a longer tail; one that keeps it but loses later event records is the ordinary crash the
journal already survives (their source offsets are not committed; they are read again).

What a snapshot does not hold: the calendar months and closed months (they keep their own
records, :mod:`streams.engine.journal`), and whatever the catalog and the partner file derive
(targets, calendars, SLA limits). Each snapshot carries a digest of those: a snapshot taken
under other settings is ignored and the partner is rebuilt from every event, as before.

Encoding: pickle (fast for the arrays the state is made of), read back by an unpickler that
allows only the few classes a state holds -- a changelog record must never be able to run code
in the worker -- and compressed with LZ4 (a filled partner: 2.4 MB of pickle, 0.5 MB compressed
in 1.5 ms; zlib needed 10 ms).
"""

from __future__ import annotations

import hashlib
import io
import pickle
from collections.abc import Mapping
from typing import Any, Final

import lz4.frame
import msgspec

from streams.config.calendars import BusinessCalendar
from streams.config.catalog import Catalog
from streams.engine.cold import ColdRecords
from streams.engine.model import PartnerState

FORMAT: Final = 5
"""Version of the snapshot layout written: a snapshot of a version not in :data:`READS` is
ignored (full replay). 2: the windows' running totals are in it. 3: entity records idle an hour
are frozen bytes (:data:`streams.engine.model.Frozen`), which a version before it cannot read,
and samples dated ahead wait in sparse buckets (``PartnerState.ahead``). 4: closed window
buckets may be frozen too (:data:`streams.engine.model.FrozenBucket`), which version 3 cannot
read; a version 3 snapshot is a version 4 one without them. 5: frozen entity records are packed
in ``PartnerState.cold`` (:class:`streams.engine.cold.ColdRecords`); in a snapshot before it they
are in ``entities``, as bytes, and move at the next hourly sweep."""
READS: Final = frozenset({3, 4, 5})
"""The versions this one restores. Why 3 too: refusing it would make the first start after an
upgrade replay every partner's whole history (about an hour at 10,000 filled partners)."""
DIGEST_FORMAT: Final = 3
"""The layout version the catalog digest names: unchanged when a new layout still reads the old
one, so an upgrade does not set every snapshot aside as taken under other settings."""

FIELDS: Final = ("seen", "entities", "cold", "pending", "rings", "hists", "ahead", "ahead_due",
                 "horizon_ms", "cusum", "bins", "last_ms", "seq", "topic_last_ms", "windows")
"""The ``PartnerState`` fields a snapshot holds: what events built, less the months (their own
records) and what is derived from the configuration or kept as a cache -- except the windows'
running totals (``windows``): rebuilding them from every bucket was the costliest part of a
restored partner's first judgement (22 ms of a filled partner's 41 ms), and restored they are
the live engine's own sums, not sums of the same buckets in another order."""

_ALLOWED: Final = frozenset({
    ("array", "_array_reconstructor"),
    ("array", "array"),
    ("streams.engine.dedup", "SeenIds"),
    ("streams.engine.cusum", "Cusum"),
    ("streams.engine.model", "Totals"),
    ("streams.engine.cold", "ColdRecords"),
})
"""The only globals a snapshot may name (pickle's "restricting globals")."""

_ENVELOPE: Final = msgspec.msgpack.Decoder(tuple[int, str, int, bytes])
_ENCODER: Final = msgspec.msgpack.Encoder()


class SnapshotError(ValueError):
    """A snapshot record that cannot be used (the partner is then rebuilt from its events)."""


class _StateUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED:
            raise SnapshotError(f"a snapshot may not name {module}.{name}")
        return super().find_class(module, name)


def catalog_digest(catalog: Catalog) -> str:
    """What of the catalog the state's layout and samples depend on, as a digest.

    ``repr`` of the resolved, frozen dataclasses: the same YAML gives the same text in any
    process (no sets or objects without a value repr in them)."""
    text = repr((DIGEST_FORMAT, catalog.windows, catalog.counted, catalog.entity_retention_ms,
                 catalog.report_timezone, catalog.report_months, catalog.month_close_ms))
    return hashlib.sha256(text.encode()).hexdigest()


def _args_text(value: Any) -> str:
    """A stable text of a sampler's partner arguments (a calendar's holiday set sorted: the
    order of a frozenset of dates changes from one process to the next)."""
    if isinstance(value, BusinessCalendar):
        return repr((value.zone, value.hours, sorted(value.dates), value.country, value.subdiv))
    if isinstance(value, tuple):
        return "(" + ",".join(_args_text(v) for v in value) + ")"
    return repr(value)


def partner_digest(catalog_text: str, st: PartnerState) -> str:
    """The digest a partner's snapshot must carry to be used: the catalog's, and what the
    partner file gave this partner's fresh state (targets, bins' targets, calendars)."""
    args: Mapping[int, Any] = st.sampler_args
    text = repr((catalog_text, st.miss_limits, sorted(st.bin_targets.items()),
                 [(k, _args_text(args[k])) for k in sorted(args)]))
    return hashlib.sha256(text.encode()).hexdigest()


def encode(st: PartnerState, digest: str) -> bytes:
    """The snapshot record of ``st`` (its ``seq`` the last event it covers)."""
    body = pickle.dumps({name: getattr(st, name) for name in FIELDS}, protocol=5)
    return _ENCODER.encode((FORMAT, digest, st.seq, lz4.frame.compress(body)))


def peek(raw: bytes) -> tuple[str, int]:
    """(digest, seq) of a snapshot record, without decoding the state."""
    _, digest, seq, _ = _decode_envelope(raw)
    return digest, seq


def _decode_envelope(raw: bytes) -> tuple[int, str, int, bytes]:
    try:
        version, digest, seq, body = _ENVELOPE.decode(raw)
    except msgspec.DecodeError as exc:
        raise SnapshotError(f"not a snapshot record: {exc}") from exc
    if version not in READS:
        raise SnapshotError(f"snapshot format {version}, this version reads "
                            f"{', '.join(map(str, sorted(READS)))}")
    return version, digest, seq, body


def _check_cold(cold: Any) -> None:
    """A snapshot's packed frozen records, checked before use (SnapshotError otherwise)."""
    if not isinstance(cold, dict):
        raise SnapshotError("snapshot's frozen records are not a mapping")
    for topic, records in cold.items():
        if not isinstance(records, ColdRecords):
            raise SnapshotError(f"snapshot's frozen {topic!r} records are not packed records")
        try:
            records.check()
        except ValueError as exc:
            raise SnapshotError(f"snapshot's frozen {topic!r} records: {exc}") from exc


def load(st: PartnerState, raw: bytes) -> None:
    """Set the snapshot's fields on ``st`` (a fresh state of the same partner)."""
    version, *_, body = _decode_envelope(raw)
    try:
        fields = _StateUnpickler(io.BytesIO(lz4.frame.decompress(body))).load()
    except SnapshotError:
        raise
    except Exception as exc:  # a damaged record: whatever pickle or LZ4 raise
        raise SnapshotError(f"snapshot unreadable: {exc!r}") from exc
    if isinstance(fields, dict) and version < 5:
        fields.setdefault("cold", {})  # its frozen records are still in "entities"
    if not isinstance(fields, dict) or set(fields) != set(FIELDS):
        raise SnapshotError("snapshot fields differ from this version's")
    _check_cold(fields["cold"])
    for name in FIELDS:
        setattr(st, name, fields[name])
