"""Producing a mapped export to Kafka, in event-time order, and the ``partnerpulse replay``
command's report."""

from __future__ import annotations

import re
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from streams.config.yamlfile import ConfigError
from streams.ingest.contract import TOPICS
from streams.tools.replay.events import event_ms, map_rows
from streams.tools.replay.mapping import Mapping, load_mapping
from streams.tools.replay.rows import Row, Skip, read_file

if TYPE_CHECKING:
    from kafka import KafkaProducer
    from rich.console import Console
    from rich.progress import Progress, TaskID


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
        events = _mapped(path, topic, mapping, stats, bar)
        producing = bar.add_task("events produced", total=len(events), note="")
        producer = KafkaProducer(bootstrap_servers=parse_broker_url(bootstrap), linger_ms=20,
                                 acks=1, batch_size=256 * 1024, max_in_flight_requests_per_connection=1,
                                 **(security or {}))
        try:
            _produce(producer, topic, events, speed, stats, bar, producing)
        finally:
            producer.close()
        bar.update(producing, completed=len(events),
                   note=f"acked {stats.produced}, failed {stats.failed}")
    if events:
        stats.first_ts_ms, stats.last_ts_ms = event_ms(events[0]), event_ms(events[-1])
    stats.seconds = time.monotonic() - started
    return stats


def _mapped(path: Path, topic: str, mapping: Mapping, stats: ReplayStats,
            bar: Progress) -> list[dict[str, Any]]:
    """The file's events in replay order; rows and skips counted in ``stats``."""
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
    stats.events = len(events)
    bar.update(reading, note=f"{stats.skipped} skipped ({stats.skipped_lines} lines)")
    return events


def _produce(producer: KafkaProducer, topic: str, events: list[dict[str, Any]],
             speed: float | None, stats: ReplayStats, bar: Progress, task: TaskID) -> None:
    """Send every event, paced at ``speed`` times real time when given; acks counted in ``stats``
    (by the producer's thread: read them once the producer is closed)."""

    def _ok(_meta: object) -> None:
        stats.produced += 1

    def _err(_exc: BaseException) -> None:
        stats.failed += 1

    t0 = time.monotonic()
    first_ms = event_ms(events[0]) if events else 0
    for i, event in enumerate(events):
        if speed is not None:
            delay = t0 + (event_ms(event) - first_ms) / 1000 / speed - time.monotonic()
            if delay > 0:
                bar.update(task, completed=i)
                time.sleep(delay)
        future = producer.send(topic, key=event["partner_id"].encode(), value=orjson.dumps(event))
        future.add_callback(_ok)
        future.add_errback(_err)
        if i % 1000 == 0:
            bar.update(task, completed=i, note=f"acked {stats.produced}")
    producer.flush()
    stats.produce_seconds = time.monotonic() - t0


def run_replay_cli(file: Path, topic: str, mapping: Path, broker: str, speed: float | None,
                   security: dict[str, Any] | None = None) -> int:
    """The ``partnerpulse replay`` command: 0 on success, 1 on a usage or mapping error, 2 when
    some events could not be produced. Skipped rows are reported, not errors."""
    from rich.console import Console

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
        _print_skips(console, stats)
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


def _print_skips(console: Console, stats: ReplayStats) -> None:
    """The skips by reason, most frequent first, with their first lines."""
    from rich.table import Table

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
