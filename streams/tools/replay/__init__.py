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

The package: :mod:`.mapping` (the YAML file and its checks), :mod:`.rows` (reading an export),
:mod:`.events` (rows to events), :mod:`.produce` (to Kafka, and the command's report).
"""

from streams.ingest.contract import EVENT_TYPES
from streams.tools.replay.events import map_rows
from streams.tools.replay.mapping import Mapping, load_mapping, parse_tz, slugify
from streams.tools.replay.produce import ReplayStats, replay, run_replay_cli
from streams.tools.replay.rows import Row, Skip, file_format, read_file, read_rows, rows_from_text

__all__ = [
    "EVENT_TYPES", "Mapping", "ReplayStats", "Row", "Skip", "file_format", "load_mapping",
    "map_rows", "parse_tz", "read_file", "read_rows", "replay", "rows_from_text", "run_replay_cli",
    "slugify",
]
