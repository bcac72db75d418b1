"""Partner snapshots: a restore from snapshots and the events after them gives the state a
restore of every event gives, and the reference's values; a snapshot the configuration or the
code does not fit is refused, never trusted."""

from __future__ import annotations

import asyncio
import math
import os
import pickle
import random
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import lz4.frame
import msgspec
import orjson
import pytest
import yaml

from streams.config.catalog import load_config
from streams.engine import snapshot
from streams.engine.core import Engine, Outcome
from streams.engine.journal import CoveredEvents, decode_record, state_key
from streams.ingest.topics import all_topics
from streams.runtime.kafka_admin import ensure_topics
from streams.tools.broker import EmbeddedBroker
from tests.harness import REPO, StreamProducer, Worker, as_messages, drain_into, poll
from tests.streams_gen import DAY, HOUR, _ms, random_events
from tests.test_engine import PARTNERS, T0, WALL, _assert_matches, _engine, _feed
from tests.test_faults import history, restart_counts_each_event_once

STATE = b"\x1f#state"


def _events(seed: int) -> list[tuple[str, dict[str, Any]]]:
    events = random_events(seed, PARTNERS, T0, 40 * DAY)
    events += random_events(seed, PARTNERS, T0 + 40 * DAY, 2 * HOUR, prefix="burst-")
    end = T0 + 40 * DAY + 2 * HOUR
    return [(t, e) for t, e in events if _ms(e["ts"]) <= end]


def _view(engine: Engine, now: int) -> dict[str, Any]:
    """Everything a reader of the engine sees of its partners at ``now``: window values,
    months, the ledger, the integrity lens's inputs, CUSUM alarms, ids remembered."""
    out: dict[str, Any] = {}
    for p in engine.partner_ids():
        values = {key: (v.value, v.samples, v.total) for key, v in engine.evaluate(p, now).items()}
        months = {m: {k: (v.value, v.samples) for k, v in engine.evaluate_month(p, m).items()}
                  for m in engine.months_held(p)}
        ledger = sorted((i.kpi, i.entity_id, i.age_ms, i.state, i.paused_ms)
                        for i in engine.open_list(p, now))
        lens = {(k.id, w): (buckets.tolist(), bins) for k in engine.kpis for w in k.windows
                for buckets, bins in [engine.integrity_inputs(p, k.id, w, now)]}
        alarms = {k.id for k in engine.kpis if engine.cusum_alarm(p, k.id)}
        st = engine.state[p]
        out[p] = (values, months, ledger, lens, alarms, len(st.seen), st.seq, st.last_ms,
                  engine.evidence(p, engine.months_held(p)[-1]) if engine.months_held(p) else {})
    return out


def _assert_same_view(a: dict[str, Any], b: dict[str, Any]) -> None:
    assert set(a) == set(b)
    for p in a:
        for i, (x, y) in enumerate(zip(a[p], b[p], strict=True)):
            if i == 0:  # float sums: the same samples added in another order
                assert set(x) == set(y), (p, sorted(set(x) ^ set(y))[:5])
                for key in x:
                    assert x[key][1] == y[key][1], (p, key)
                    assert math.isclose(x[key][0], y[key][0], rel_tol=1e-9, abs_tol=1e-9), key
                    assert math.isclose(x[key][2], y[key][2], rel_tol=1e-9, abs_tol=1e-9), key
            else:
                assert x == y, (p, i)


def _live_with_snapshots(events: list[tuple[str, dict[str, Any]]], seed: int,
                         ) -> tuple[Engine, list[tuple[bytes, bytes | None]]]:
    """An engine fed ``events`` in slices, each partner snapshotted at random points; and every
    journal write in the order the worker sends them."""
    engine, rng, reads = _engine(), random.Random(seed), random.Random(seed + 100)
    writes: list[tuple[bytes, bytes | None]] = []
    step = max(1, len(events) // 12)
    for start in range(0, len(events), step):
        _feed(engine, events[start:start + step])
        writes += engine.drain()
        for partner in engine.partner_ids():
            if reads.random() < 0.5:
                # read first, as a worker's judging does: the windows' running totals exist
                engine.evaluate(partner, engine.now(WALL))
            if rng.random() < 0.5:
                writes += engine.snapshot(partner, WALL).writes
    return engine, writes


def _snapshotted(seed: int) -> tuple[Engine, dict[bytes, bytes]]:
    """An engine fed :func:`_events` whole, every partner then snapshotted, and its journal."""
    live = _engine()
    _feed(live, _events(seed))
    writes = live.drain()
    for partner in PARTNERS:
        writes += live.snapshot(partner, WALL).writes
    return live, _journal(writes)


def _journal(writes: list[tuple[bytes, bytes | None]], states: bool = True) -> dict[bytes, bytes]:
    journal: dict[bytes, bytes] = {}
    for key, value in writes:
        if not states and key.endswith(STATE):
            continue
        if value is None:
            journal.pop(key, None)
        else:
            journal[key] = value
    return journal


@pytest.mark.parametrize("seed", [1, 2])
def test_a_restore_from_snapshots_is_the_live_state(seed: int) -> None:
    events = _events(seed)
    live, writes = _live_with_snapshots(events, seed)
    journal = _journal(writes)
    assert sum(key.endswith(STATE) for key in journal) == len(PARTNERS)
    restored = _engine()
    applied = restored.restore(journal.items())
    stats = restored.restore_stats
    assert stats["snapshots"] == len(PARTNERS) and stats["refused"] == 0
    # the windows' running totals came back with the snapshots (not rebuilt at the first read)
    assert any(totals is not None for p in PARTNERS for totals in restored.state[p].windows)
    # only the events after each partner's last snapshot were replayed
    tail = sum(live.unsnapshotted(p) for p in PARTNERS)
    assert applied == stats["events"] == tail
    assert stats["records_skipped"] > 10 * tail
    # the snapshots stand for every retained event they cover: with the tail, every record
    assert stats["events_covered"] + tail == sum(b"\x1f#" not in key for key in journal)
    now = live.now(WALL)
    assert restored.now(WALL) == now
    assert restored.last_event_ms == live.last_event_ms
    _assert_same_view(_view(restored, now), _view(live, now))
    _assert_matches(restored, events, None)
    for later in (now + 23 * HOUR, now + 6 * DAY):
        _assert_same_view(_view(restored, later), _view(live, later))
    # the whole stream again: duplicates (or late, past 30 days) as for the live engine
    again = _feed(restored, events)
    assert again == _feed(live, events) and Outcome.ACCEPTED not in again
    _assert_matches(restored, events, None)


def test_every_cut_of_the_journal_restores_what_a_full_replay_restores() -> None:
    """A crash may end the journal after any write: a month record of a snapshot written, its
    state record not; a snapshot written, the events after it not. From every such cut a
    restore with the snapshots gives what a restore from the events alone gives."""
    events = _events(3)
    _, writes = _live_with_snapshots(events, 3)
    states = [i for i, (key, _) in enumerate(writes) if key.endswith(STATE)]
    cuts = {len(writes)}
    for i in states:
        cuts |= {i, i + 1}  # just before a snapshot record (its months written), just after
    rng = random.Random(5)
    cuts |= {rng.randrange(len(writes)) for _ in range(6)}
    for cut in sorted(cuts):
        journal = _journal(writes[:cut])
        with_states, events_only = _engine(), _engine()
        with_states.restore(journal.items())
        events_only.restore(_journal(writes[:cut], states=False).items())
        assert with_states.restore_stats["snapshots"] == sum(k.endswith(STATE) for k in journal)
        now = events_only.now(WALL)
        _assert_same_view(_view(with_states, now), _view(events_only, now))
    assert len(cuts) > 2 * len(states)


def _retargeted(tmp_path: Path) -> Path:
    """The shipped configuration with acme's ASA target changed."""
    out = tmp_path / "config"
    out.mkdir()
    for name in ("kpis.yaml", "partners.yaml"):
        (out / name).write_text((REPO / "config" / name).read_text())
    partners = yaml.safe_load((out / "partners.yaml").read_text())
    partners["partners"].append({"id": "acme", "tier": "premier", "targets": {"asa": 7}})
    (out / "partners.yaml").write_text(yaml.safe_dump(partners))
    return out


def test_a_snapshot_taken_under_other_targets_is_refused(tmp_path: Path) -> None:
    events = _events(4)
    _, writes = _live_with_snapshots(events, 4)
    journal = _journal(writes)
    catalog, partners = load_config(_retargeted(tmp_path))
    assert partners.target("acme", catalog.kpi("asa")) == 7
    restored, replayed = Engine(catalog, partners), Engine(catalog, partners)
    restored.restore(journal.items())
    replayed.restore(_journal(writes, states=False).items())
    # acme's targets changed (its evidence of misses, its bins): rebuilt from every event;
    # the others' snapshots still fit
    assert restored.restore_stats["refused"] == 1
    assert restored.refusals == [("acme", "taken under another catalog or partner file")]
    assert restored.restore_stats["snapshots"] == len(PARTNERS) - 1
    now = replayed.now(WALL)
    _assert_same_view(_view(restored, now), _view(replayed, now))


class _Run:
    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, ...]:
        return (os.system, (f"touch {self.path}",))


def test_a_snapshot_that_names_other_code_or_is_damaged_is_refused(tmp_path: Path) -> None:
    events = _events(5)
    live, writes = _live_with_snapshots(events, 5)
    journal = _journal(writes)
    key = state_key("acme")
    digest, seq = snapshot.peek(journal[key])
    marker = tmp_path / "ran"
    evil = pickle.dumps({name: _Run(str(marker)) for name in snapshot.FIELDS})
    encoder = msgspec.msgpack.Encoder()
    for bad in (encoder.encode((snapshot.FORMAT, digest, seq, lz4.frame.compress(evil))),
                journal[key][:-200],
                encoder.encode((snapshot.FORMAT + 1, digest, seq, b""))):
        restored = _engine()
        restored.restore({**journal, key: bad}.items())
        assert restored.restore_stats["refused"] == 1
        assert restored.refusals[0][0] == "acme"
        now = live.now(WALL)
        _assert_same_view(_view(restored, now), _view(live, now))
    assert not marker.exists()
    assert "may not name posix.system" in _refusal(journal, key, encoder.encode(
        (snapshot.FORMAT, digest, seq, lz4.frame.compress(evil))))


def _refusal(journal: dict[bytes, bytes], key: bytes, bad: bytes) -> str:
    restored = _engine()
    restored.restore({**journal, key: bad}.items())
    return restored.refusals[0][1]


def test_a_snapshot_before_any_event_and_of_an_unknown_partner() -> None:
    engine = _engine()
    assert engine.snapshot("nobody", WALL).writes == []
    assert engine.unsnapshotted("nobody") == -1
    event = {"event_id": "e1", "type": "opened", "partner_id": "acme", "ticket_id": "t1",
             "severity": "down_hard", "ts": T0}
    assert engine.ingest("tickets", orjson.dumps(event), WALL).outcome is Outcome.ACCEPTED
    assert engine.unsnapshotted("acme") == 1
    small = engine.snapshot("acme", WALL, max_bytes=100)
    assert not small.kept and small.size > 100
    assert all(key != state_key("acme") for key, _ in small.writes)
    assert engine.unsnapshotted("acme") == 1  # not kept: still due
    writes = small.writes + engine.snapshot("acme", WALL).writes
    # the event's record first, the snapshot last
    assert writes[0][0] != state_key("acme") and writes[-1][0] == state_key("acme")
    assert engine.unsnapshotted("acme") == 0
    restored = _engine()
    assert restored.restore(drain_into(engine, _journal(writes)).items()) == 0
    assert restored.open_list("acme", T0 + HOUR) == engine.open_list("acme", T0 + HOUR)


# --- end to end: workers that snapshot every half second, SIGKILLed -----------------------------
@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path / "broker.log") as running:
        ensure_topics(running.bootstrap, all_topics(4))
        yield running


@pytest.mark.slow
def test_sigkills_between_and_during_snapshots_count_each_event_once(
        broker: EmbeddedBroker, tmp_path: Path) -> None:
    """Workers snapshotting every partner every half second (the shipped 600 s would write
    none in a test's minute) are SIGKILLed at seeded random points of a live stream: before,
    between and while snapshots are written. A last worker with the shipped settings restores
    from the snapshots and the events after them: its values equal the reference's, and each
    distinct event counts once (covered by a snapshot or replayed, plus newly accepted)."""
    rng = random.Random(17)
    partners = ["acme", "bluefiber", "northwind-telecom", "zeta-9"]
    end = int(time.time() * 1000) - 60_000
    events = history(53, partners, end, scale=0.75)
    producer = StreamProducer(broker.bootstrap, as_messages(events), batch=12,
                              interval=0.2).start()
    fast = {"PARTNERPULSE_SNAPSHOT_INTERVAL_S": "0.5"}
    written = 0
    try:
        for i in range(4):
            worker = Worker(broker.url, tmp_path, name=f"s{i}", env=fast).spawn()
            worker.wait_ready(120)
            after = time.monotonic() + rng.uniform(0.5, 3.0)
            poll(lambda a=after: time.monotonic() >= a, 10, "the kill point", 0.05)
            written += worker.ready()["snapshots"]["written"]
            assert worker.alive, worker.log_tail()
            worker.kill(signal.SIGKILL)
        producer.finish()
        status: dict[str, Any] = {}
        restored, _, distinct = restart_counts_each_event_once(
            broker.url, tmp_path, events, partners, "every event counted once", 180, status)
    finally:
        if not producer.done:
            producer.finish()
    recovery = status["recovery"]
    assert written > 0 and recovery["snapshots"] > 0, recovery
    assert recovery["snapshots_refused"] == 0
    # most of the journal came back through snapshots, not replay
    assert recovery["events_covered_by_snapshots"] > recovery["applied"], recovery
    assert restored == recovery["events_covered_by_snapshots"] + recovery["applied"]
    assert restored > 0 and distinct >= restored
    # the final worker's in-memory journal forgot the event records the snapshots cover
    held = status["journal"]
    assert held["forgotten"] >= recovery["events_covered_by_snapshots"] > 0
    # what it holds: the events not covered (replayed, or accepted since), and per partner its
    # snapshot and a few month records
    not_covered = distinct - recovery["events_covered_by_snapshots"]
    assert not_covered <= held["records"] <= not_covered + 4 * 10, (held, not_covered)


def test_a_journal_in_memory_forgets_the_event_records_snapshots_cover() -> None:
    """The worker's in-memory journal keeps a partner's snapshot and the event records after it;
    the restore from what it keeps is the live state. A snapshot that does not fit keeps all."""
    events = _events(6)
    live, writes = _live_with_snapshots(events, 6)
    full = _journal(writes)
    # what should stay, worked out from the records themselves: every month and snapshot record,
    # and the event records numbered after their partner's last snapshot
    last = {key.split(b"\x1f")[0]: snapshot.peek(value)[1]
            for key, value in full.items() if key.endswith(STATE)}
    keep = {key: value for key, value in full.items()
            if b"\x1f#" in key or decode_record(value)[0] > last[key.split(b"\x1f")[0]]}
    covers = _engine().snapshot_covers
    held: dict[bytes, bytes] = {}
    covered = CoveredEvents()
    for key, value in writes:
        covered.put(held, key, value, covers)
    assert held == keep
    # the same records with every snapshot record last (a changelog written in another order):
    # what a snapshot forgets is decided by the records' numbers
    reordered: dict[bytes, bytes] = {}
    later = CoveredEvents()
    for key, value in sorted(full.items(), key=lambda kv: kv[0].endswith(STATE)):
        later.put(reordered, key, value, covers)
    assert reordered == keep
    assert len(held) < len(full) / 4 and covered.forgotten >= len(full) - len(held)
    restored = _engine()
    restored.restore(held.items())
    assert restored.restore_stats["snapshots"] == len(PARTNERS)
    now = live.now(WALL)
    _assert_same_view(_view(restored, now), _view(live, now))
    # snapshots of another configuration forget nothing
    kept_all: dict[bytes, bytes] = {}
    never = CoveredEvents()
    for key, value in writes:
        never.put(kept_all, key, value, lambda key, value: None)
    assert kept_all == full and never.forgotten == 0


class _Journal:
    def __init__(self) -> None:
        self.writes: list[tuple[int, bytes, bytes | None]] = []

    def write(self, partition: int, key: bytes, value: bytes | None) -> None:
        self.writes.append((partition, key, value))


class _Ownership:
    ready, generation = True, 0

    def owns(self, partner: str) -> bool:
        return True

    def partition_of(self, partner: str) -> int:
        return 2


def test_which_partners_are_due_and_what_a_tick_writes() -> None:
    from streams.config.settings import Settings
    from streams.runtime.snapshots import Snapshots

    engine = _engine()
    _feed(engine, _events(7)[:600])
    engine.drain()
    pending = {p: engine.unsnapshotted(p) for p in PARTNERS}
    assert all(n > 0 for n in pending.values())
    limit = sorted(pending.values())[1]  # one partner below it, two at or above
    assert sum(n < limit for n in pending.values()) == 1
    settings = Settings(snapshot_interval_s=60, snapshot_events=limit)
    journal, member = _Journal(), {"proven": False}
    snaps = Snapshots(settings, engine, journal, _Ownership(),  # type: ignore[arg-type]
                      lambda: member["proven"])
    # due at once with snapshot_events piled up; otherwise once the interval has passed
    t0 = time.monotonic()  # the clock the tick reads
    for p, n in pending.items():
        assert snaps.due(p, t0) is (n >= limit)
    quiet = [p for p, n in pending.items() if n < limit]
    assert all(not snaps.due(p, t0 + 59.0) and snaps.due(p, t0 + 60.0) for p in quiet)
    # a worker whose membership is not proven writes nothing
    asyncio.run(snaps.tick())
    assert journal.writes == [] and snaps.written == 0
    member["proven"] = True
    asyncio.run(snaps.tick())
    due_now = [p for p, n in pending.items() if n >= limit]
    states = [key for _, key, _ in journal.writes if key.endswith(STATE)]
    assert states == [state_key(p) for p in sorted(due_now)] and snaps.written == len(due_now)
    assert {part for part, _, _ in journal.writes} == {2}
    assert all(engine.unsnapshotted(p) == 0 for p in due_now)
    # too large: not written, not tried again before the interval
    snaps.max_bytes = 100
    p = quiet[0]
    assert engine.unsnapshotted(p) > 0
    assert not snaps.write(p) and snaps.too_large == 1
    assert not snaps.due(p, time.monotonic())


def test_the_keys_a_journal_in_memory_lists_stay_bounded_without_snapshots() -> None:
    """A partner never snapshotted (too large) whose records are written and deleted for ever:
    the keys listed for it stay within twice its live records (and the compaction floor)."""
    data: dict[bytes, bytes] = {}
    covered = CoveredEvents()
    for i in range(20_000):
        key = f"acme\x1f{i:016x}".encode()
        covered.put(data, key, b"r", lambda key, value: None)
        if i >= 100:  # retention deletes the oldest: 100 live records at any time
            covered.put(data, f"acme\x1f{i - 100:016x}".encode(), None, lambda key, value: None)
    assert len(data) == 100
    assert len(covered._held[b"acme"]) <= max(CoveredEvents.COMPACT_AT, 2 * len(data))
