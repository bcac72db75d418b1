"""Journal checkpoints on disk (streams/runtime/checkpoint_file.py, checkpoints.py): the file
refuses any damage, and a restarted worker reads the changelog from its checkpoints on, with the
same values as the reference; a checkpoint of another broker's topic is refused."""

from __future__ import annotations

import asyncio
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition
from faust.types import TP

from streams.config.settings import Settings
from streams.ingest.topics import all_topics, partition_for
from streams.runtime import checkpoint_file, checkpoints
from streams.runtime.checkpoints import Checkpoints, by_partition
from streams.runtime.journal_table import BulkLoadedMemoryStore
from streams.runtime.kafka_admin import ensure_topics
from streams.tools.broker import EmbeddedBroker
from tests.harness import StreamProducer, Worker, as_messages, poll, produce
from tests.test_faults import history, restart_counts_each_event_once

CHANGELOG = "pp-test-journal-changelog"


def _records(rng: random.Random, n: int) -> list[tuple[bytes, bytes]]:
    return [(f"p{rng.randrange(9)}\x1f{i:08x}".encode(), rng.randbytes(rng.randrange(0, 300)))
            for i in range(n)]


def test_a_checkpoint_file_reads_back_what_was_written(tmp_path: Path) -> None:
    rng = random.Random(3)
    for n in (0, 1, 500):
        records = _records(rng, n)
        path = checkpoint_file.path_for(tmp_path, CHANGELOG, 2)
        wrote = checkpoint_file.Checkpoint(CHANGELOG, 2, 1234 + n, b"p1\x1fk", records)
        size = checkpoint_file.write(path, wrote)
        assert size == path.stat().st_size
        assert checkpoint_file.read(path) == wrote
    assert [p.name for p in tmp_path.iterdir()] == [f"{CHANGELOG}-2.ckpt"]  # no temporary left


def test_a_damaged_truncated_or_foreign_checkpoint_file_is_refused(tmp_path: Path) -> None:
    rng = random.Random(5)
    path = tmp_path / "c.ckpt"
    checkpoint_file.write(path, checkpoint_file.Checkpoint(CHANGELOG, 0, 99, b"k",
                                                           _records(rng, 200)))
    good = path.read_bytes()
    # one flipped bit anywhere: header, a length, a key, a value, the trailer
    for pos in [*sorted(rng.sample(range(len(good)), 60)), len(good) - 1]:
        bad = bytearray(good)
        bad[pos] ^= 1 << rng.randrange(8)
        path.write_bytes(bytes(bad))
        with pytest.raises(checkpoint_file.CheckpointError):
            checkpoint_file.read(path)
    for cut in (0, 5, len(checkpoint_file.MAGIC) + 3, len(good) // 2, len(good) - 1):
        path.write_bytes(good[:cut])
        with pytest.raises(checkpoint_file.CheckpointError):
            checkpoint_file.read(path)
    path.write_bytes(good + b"\0")
    with pytest.raises(checkpoint_file.CheckpointError):
        checkpoint_file.read(path)
    # another format version
    path.write_bytes(good.replace(b"\xa6format\x01", b"\xa6format\x02", 1))
    with pytest.raises(checkpoint_file.CheckpointError, match="format 2"):
        checkpoint_file.read(path)
    with pytest.raises(checkpoint_file.CheckpointError, match="no checkpoint"):
        checkpoint_file.read(tmp_path / "missing.ckpt")


def test_records_are_split_by_their_partners_partition() -> None:
    rng = random.Random(8)
    records = [*_records(rng, 300), (b"p3\x1f#state", b"s"), (b"p4\x1f#month:2026-11", b"m")]
    got = by_partition(records, {0, 2}, lambda partner: partition_for(partner, 4))
    want: dict[int, list[tuple[bytes, bytes]]] = {0: [], 2: []}
    for key, value in records:
        part = partition_for(key.split(b"\x1f")[0].decode(), 4)
        if part in want:
            want[part].append((key, value))
    assert got == want and sum(map(len, want.values())) > 0


def _store(tmp_path: Path) -> BulkLoadedMemoryStore:
    """The worker's journal store without its Faust app: what a checkpoint pass reads."""
    store = BulkLoadedMemoryStore.__new__(BulkLoadedMemoryStore)
    BulkLoadedMemoryStore.__post_init__(store)
    store.checkpoint_dir = tmp_path
    store.assigned = {TP(CHANGELOG, p) for p in range(4)}
    return store


def test_a_checkpoint_waits_for_the_journal_writes_on_their_way(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A pass is not taken while a journal write of an owned partition is unacknowledged (the
    store then holds a record the changelog may never get); once every write is acknowledged it
    writes each changed partition's records with the newest acknowledged offset and key. A
    partition whose write failed is neither waited for nor checkpointed again."""
    monkeypatch.setattr(checkpoints, "QUIET_S", 0.05)
    rng = random.Random(11)
    store = _store(tmp_path)
    records = _records(rng, 200)
    store.data.update(records)
    part = {p: partition_for(p, 4) for p in {k.split(b"\x1f")[0].decode() for k, _ in records}}
    ownership = SimpleNamespace(ready=True, generation=3, owned={0, 1, 2, 3},
                                partition_of=part.__getitem__)
    journal = SimpleNamespace(data=store,
                              changelog_topic=SimpleNamespace(get_topic_name=lambda: CHANGELOG))
    passes = Checkpoints(Settings(), journal, ownership, asyncio.Lock())  # type: ignore[arg-type]
    for p in (0, 1, 1):
        store.note_sent(p)
    store.note_acked(TP(CHANGELOG, 0), 17, b"k17")
    store.note_acked(TP(CHANGELOG, 1), 40, b"k40")  # one of partition 1's two writes
    assert not asyncio.run(passes.take())
    assert passes.busy == 1 and not list(tmp_path.iterdir())
    store.note_acked(TP(CHANGELOG, 1), 41, b"k41")
    assert asyncio.run(passes.take())
    for p, offset, key in ((0, 17, b"k17"), (1, 41, b"k41")):
        ckpt = checkpoint_file.read(checkpoint_file.path_for(tmp_path, CHANGELOG, p))
        want = [(k, v) for k, v in records if part[k.split(b"\x1f")[0].decode()] == p]
        assert (ckpt.offset, ckpt.key, ckpt.records) == (offset, key, want) and want
    assert sorted(f.name for f in tmp_path.iterdir()) == [f"{CHANGELOG}-0.ckpt",
                                                          f"{CHANGELOG}-1.ckpt"]
    # partition 2: a write that failed is not waited for, and 2 is not checkpointed
    store.note_sent(2)
    store.note_sent(2)
    store.note_acked(TP(CHANGELOG, 2), 5, b"k5")
    store.note_failed(2)
    assert asyncio.run(passes.take())
    assert not checkpoint_file.path_for(tmp_path, CHANGELOG, 2).exists() and passes.busy == 1


def test_after_a_recovery_a_checkpoint_just_loaded_is_not_written_again(tmp_path: Path) -> None:
    """A partition the bulk load took from its checkpoint is written again by the pass after
    the recovery only once the changelog moved AFTER_RECOVERY_GAP records past it; by the
    periodic pass as soon as it moved at all."""
    store = _store(tmp_path)
    store.data.update(_records(random.Random(2), 50))
    ownership = SimpleNamespace(ready=True, generation=1, owned={0, 1},
                                partition_of=lambda partner: partition_for(partner, 4))
    journal = SimpleNamespace(data=store,
                              changelog_topic=SimpleNamespace(get_topic_name=lambda: CHANGELOG))
    passes = Checkpoints(Settings(), journal, ownership, asyncio.Lock())  # type: ignore[arg-type]
    gap = checkpoints.AFTER_RECOVERY_GAP
    store.checkpoint_offsets = {0: 500, 1: 500}
    store.last_record = {TP(CHANGELOG, 0): (500 + gap - 1, b"a"),
                         TP(CHANGELOG, 1): (500 + gap, b"b")}
    asyncio.run(passes.tick())  # a new generation: the pass after a recovery
    assert sorted(f.name for f in tmp_path.iterdir()) == [f"{CHANGELOG}-1.ckpt"]
    assert asyncio.run(passes.take())  # a periodic pass: partition 0 moved, it is written
    assert checkpoint_file.read(checkpoint_file.path_for(tmp_path, CHANGELOG, 0)).offset == (
        500 + gap - 1)


# --- end to end ------------------------------------------------------------------------------
@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as running:
        ensure_topics(running.bootstrap, all_topics(4))
        yield running


def _changelog_offsets(bootstrap: str) -> dict[int, list[int]]:
    """Every record offset of the journal's changelog, by partition (read to the end)."""

    async def run() -> dict[int, list[int]]:
        consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                                    group_id=None, fetch_max_wait_ms=100)
        await consumer.start()
        try:
            parts = [TopicPartition(CHANGELOG, p) for p in range(4)]
            consumer.assign(parts)
            await consumer.seek_to_beginning(*parts)
            out: dict[int, list[int]] = {p: [] for p in range(4)}
            empty = 0
            while empty < 3:
                batch = await consumer.getmany(timeout_ms=300)
                empty = 0 if batch else empty + 1
                for part, records in batch.items():
                    out[part.partition] += [r.offset for r in records]
            return out
        finally:
            await consumer.stop()

    return asyncio.run(run())


@pytest.mark.slow
def test_a_restart_reads_the_changelog_from_its_checkpoints_on(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    """One worker, snapshotting every half second and checkpointing every second (the shipped
    300 s would write one checkpoint per start, of a near-empty journal), is SIGKILLed at seeded
    random points of a live stream and restarted on the same data directory each time. Its last
    start, with the shipped settings, reads each changelog partition only past the offset of its
    checkpoint (counted here from the changelog itself), and ends with the reference's values,
    each distinct event counted once. Then the same data directory against a new broker: every
    checkpoint is refused (its offsets name records that topic does not have) and the worker,
    reading the new changelog whole, again equals the reference."""
    rng = random.Random(29)
    partners = ["acme", "bluefiber", "northwind-telecom", "zeta-9"]
    end = int(time.time() * 1000) - 60_000
    events = history(59, partners, end, scale=0.75)
    producer = StreamProducer(broker.bootstrap, as_messages(events), batch=12,
                              interval=0.2).start()
    fast = {"PARTNERPULSE_SNAPSHOT_INTERVAL_S": "0.5", "PARTNERPULSE_CHECKPOINT_INTERVAL_S": "1"}
    try:
        for _ in range(3):
            worker = Worker(broker.url, tmp_path, name="w", env=fast).spawn()
            worker.wait_ready(120)
            poll(lambda w=worker: w.ready()["checkpoints"]["written"] > 0, 60,
                 "a checkpoint written")
            after = time.monotonic() + rng.uniform(0.5, 3.0)
            poll(lambda a=after: time.monotonic() >= a, 10, "the kill point", 0.05)
            assert worker.alive, worker.log_tail()
            worker.kill(signal.SIGKILL)
        producer.finish()
    finally:
        if not producer.done:
            producer.finish()
    # what the last start must read: the changelog's records past each checkpoint's offset
    files = {p: checkpoint_file.read(checkpoint_file.path_for(tmp_path / "w" / "checkpoints",
                                                              CHANGELOG, p))
             for p in range(4)
             if checkpoint_file.path_for(tmp_path / "w" / "checkpoints", CHANGELOG, p).exists()}
    assert files, "no checkpoint on disk"
    offsets = _changelog_offsets(broker.bootstrap)
    past = sum(1 for p, ckpt in files.items() for o in offsets[p] if o > ckpt.offset)
    unread = sum(len(offsets[p]) for p in range(4) if p not in files)
    status: dict[str, Any] = {}
    restart_counts_each_event_once(broker.url, tmp_path, events, partners,
                                   "every event counted once after a restart from checkpoints",
                                   180, status, name="w")
    checkpoints, recovery = status["checkpoints"], status["recovery"]
    assert checkpoints["loaded"] == len(files) and checkpoints["refused"] == 0, checkpoints
    assert checkpoints["records"] == sum(len(c.records) for c in files.values())
    # the bulk load read only what came after the checkpoints (and the partitions without one)
    assert recovery["bulk_loaded_records"] == past + unread, (recovery, past, unread)
    assert past + unread < sum(map(len, offsets.values())) / 2

    # the same data directory against another broker: its changelog is not the one checkpointed
    with EmbeddedBroker(log_path=tmp_path / "broker2.log") as other:
        ensure_topics(other.bootstrap, all_topics(4))
        few = history(61, partners[:2], end, scale=0.2)
        produce(other.bootstrap, as_messages(few))
        status = {}
        restart_counts_each_event_once(other.url, tmp_path, few, partners[:2],
                                       "a new broker's events, the checkpoints refused", 180,
                                       status, name="w")
    checkpoints = status["checkpoints"]
    assert checkpoints["loaded"] == 0 and checkpoints["refused"] == len(files), checkpoints
    assert all("another topic" in why or "offset" in why for why in checkpoints["refusals"])
