"""Frozen entity records packed (``ColdRecords``): the same answers as a dict of them, through
thaws, sweeps, retention, arena rewrites and hash collisions; a snapshot carries them, and a
snapshot from before them (records frozen in place) still restores."""

from __future__ import annotations

import io
import pickle
import random
import struct

import lz4.frame
import msgspec
import pytest

from streams.engine import cold, snapshot
from streams.engine.cold import ColdRecords
from streams.engine.journal import state_key
from tests.streams_gen import HOUR, random_events
from tests.test_engine import PARTNERS, WALL, _engine, _feed
from tests.test_snapshot import _assert_same_view, _snapshotted, _view


@pytest.mark.parametrize(("seed", "collide"), [(1, False), (2, False), (3, True)])
def test_cold_records_answer_as_a_dict_does(seed: int, collide: bool,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Random puts (sweeps), pops (thaws), gets and evictions against a dict of (record, last
    event time); with ``collide`` every id hashes to one of four values."""
    if collide:
        monkeypatch.setattr(cold, "entity_hash", lambda entity_id: len(entity_id) % 4)
    rng = random.Random(seed)
    store, model = ColdRecords(), {}
    ids = [f"T{rng.randrange(10**rng.randint(1, 6))}-\u00e9" * rng.randint(1, 3) for _ in range(400)]
    for _ in range(300):
        op = rng.random()
        if op < 0.3:  # a sweep freezes some records not held
            batch = {}
            for entity_id in rng.sample(ids, rng.randint(0, 30)):
                if entity_id not in model:
                    batch[entity_id] = (rng.randbytes(rng.randint(8, 120)), rng.randint(0, 1000))
            store.put_many((i, rec, last) for i, (rec, last) in batch.items())
            model.update(batch)
        elif op < 0.6:  # thaws
            for entity_id in rng.sample(ids, 10):
                want = model.pop(entity_id, (None, 0))[0]
                assert store.pop(entity_id) == want
        elif op < 0.7:  # retention
            floor = rng.randint(0, 1000)
            gone = sorted(i for i, (_, last) in model.items() if last < floor)
            assert sorted(store.evict_before(floor)) == gone
            for entity_id in gone:
                del model[entity_id]
        for entity_id in rng.sample(ids, 10):
            assert store.get(entity_id) == model.get(entity_id, (None, 0))[0]
        assert len(store) == len(model)
        assert dict(store.items()) == {i: rec for i, (rec, _) in model.items()}
        assert store._waste * 2 <= len(store._arena)  # rewritten once half of it is waste
    again = pickle.loads(pickle.dumps(store, protocol=5))
    assert dict(again.items()) == dict(store.items())
    again.check()  # what a snapshot's copy must pass


def _damaged(records: ColdRecords, how: str) -> ColdRecords:
    """A copy of ``records`` broken one way."""
    bad = pickle.loads(pickle.dumps(records, protocol=5))
    if how == "offset past the arena":
        bad._offsets[0] = len(bad._arena)
    elif how == "record past the arena":  # the entry at the arena's end: 1 B longer
        last = max(range(len(bad._offsets)), key=lambda i: bad._offsets[i])
        at = bad._offsets[last]
        id_len, rec_len = struct.unpack_from("<HI", bad._arena, at)
        struct.pack_into("<HI", bad._arena, at, id_len, rec_len + 1)
    elif how == "unsorted":
        bad._hashes[0], bad._hashes[-1] = bad._hashes[-1], bad._hashes[0]
    elif how == "short array":
        del bad._lasts[0]
    elif how == "wrong type":
        bad._arena = list(bad._arena)  # type: ignore[assignment]
    return bad


@pytest.mark.parametrize("how", ["offset past the arena", "record past the arena", "unsorted",
                                 "short array", "wrong type"])
def test_a_snapshot_with_damaged_frozen_records_is_refused(how: str) -> None:
    """Frozen records that do not fit together are refused at restore (the partner is rebuilt
    from its events), not found broken by a later sweep."""
    live, journal = _snapshotted(9)
    partner = PARTNERS[0]
    key = state_key(partner)
    digest, seq = snapshot.peek(journal[key])
    body = lz4.frame.decompress(msgspec.msgpack.decode(journal[key])[3])
    fields = snapshot._StateUnpickler(io.BytesIO(body)).load()
    topic = max(fields["cold"], key=lambda t: len(fields["cold"][t]))
    assert len(fields["cold"][topic]) > 2
    fields["cold"][topic] = _damaged(fields["cold"][topic], how)
    bad = msgspec.msgpack.Encoder().encode(
        (snapshot.FORMAT, digest, seq, lz4.frame.compress(pickle.dumps(fields, protocol=5))))
    restored = _engine()
    restored.restore({**journal, key: bad}.items())
    assert restored.restore_stats["refused"] == 1
    assert restored.refusals[0][0] == partner and "frozen" in restored.refusals[0][1]
    now = live.now(WALL)
    _assert_same_view(_view(restored, now), _view(live, now))


def test_a_snapshot_carries_them_and_one_from_before_them_still_restores() -> None:
    """A partner's packed frozen records go through its snapshot (the restricted unpickler
    allows them); a format 4 snapshot (frozen records in ``entities``, as bytes, no ``cold``)
    restores to the same view, and its records are packed at the next hourly sweep."""
    live, journal = _snapshotted(8)
    held = {p: sum(len(c) for c in live.state[p].cold.values()) for p in PARTNERS}
    assert all(n > 50 for n in held.values()), held
    now = live.now(WALL)
    restored = _engine()
    restored.restore(journal.items())
    assert restored.restore_stats["snapshots"] == len(PARTNERS)
    assert {p: sum(len(c) for c in restored.state[p].cold.values()) for p in PARTNERS} == held
    assert _view(restored, now) == _view(live, now)

    encoder = msgspec.msgpack.Encoder()
    old = dict(journal)
    for partner in PARTNERS:
        digest, seq = snapshot.peek(journal[state_key(partner)])
        body = lz4.frame.decompress(msgspec.msgpack.decode(journal[state_key(partner)])[3])
        fields = snapshot._StateUnpickler(io.BytesIO(body)).load()
        packed = fields.pop("cold")
        fields["entities"] = {topic: {**live_records, **dict(packed[topic].items())}
                              for topic, live_records in fields["entities"].items()}
        old[state_key(partner)] = encoder.encode(
            (4, digest, seq, lz4.frame.compress(pickle.dumps(fields, protocol=5))))
    restored = _engine()
    restored.restore(old.items())
    assert restored.restore_stats["snapshots"] == len(PARTNERS)
    assert restored.restore_stats["refused"] == 0
    assert all(not c for p in PARTNERS for c in restored.state[p].cold.values())
    for at in (now, now + 5 * HOUR):
        assert _view(restored, at) == _view(live, at)
    later = random_events(61, PARTNERS, now + HOUR, HOUR, n_tickets=3, n_calls=5, n_orders=1,
                          n_surveys=2, prefix="later-")
    assert _feed(restored, later) == _feed(live, later)  # the next hour's sweep packs them
    assert all(sum(len(c) for c in restored.state[p].cold.values()) > 0 for p in PARTNERS)
    assert _view(restored, live.now(WALL)) == _view(live, live.now(WALL))
    assert not any(isinstance(r, bytes) for p in PARTNERS
                   for e in restored.state[p].entities.values() for r in e.values())
