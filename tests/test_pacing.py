"""Long work on the worker's event loop is done in slices (streams/runtime/pacing.py).

Judging every owned partner and rendering /metrics are seconds of Python at fleet size; the
consumer's heartbeats share the loop. These tests run that work beside a task that watches
the loop: it must run between slices, and what changes between two slices (events, a
revocation) must be seen by the steps after it, never crash them.
"""

from __future__ import annotations

import asyncio
from collections.abc import Generator

import orjson
import pytest
from faust.types import TP

from streams.config.catalog import load_config
from streams.config.settings import Settings
from streams.engine.core import Engine
from streams.ingest.contract import TOPICS
from streams.judgement.watch import Watch
from streams.outputs.exporter import KpiCollector
from streams.runtime import pacing
from streams.runtime.health import wall_ms
from streams.runtime.pacing import Pacer, run_paced
from tests.streams_gen import DAY, HOUR, _ms, random_events
from tests.test_exporter import T0, _samples


def _counting(steps: int, seen: list[int]) -> Generator[None, None, str]:
    """``steps`` steps, each noting how many steps ran before it; returns "done"."""
    for i in range(steps):
        seen.append(i)
        yield
    return "done"


async def _beside(work: asyncio.Future[object] | object, turns: list[int],
                  seen: list[int]) -> object:
    """Run ``work`` with a task that notes, at each turn of the loop, how far the work got."""
    stop = asyncio.Event()

    async def watcher() -> None:
        while not stop.is_set():
            turns.append(len(seen))
            await asyncio.sleep(0)

    task = asyncio.create_task(watcher())
    await asyncio.sleep(0)  # the watcher's first turn
    try:
        return await work  # type: ignore[misc]
    finally:
        stop.set()
        await task


@pytest.mark.parametrize("slice_s", [0.0, 3600.0])
def test_steps_run_to_their_end_letting_the_loop_run_when_a_slice_is_spent(
        slice_s: float) -> None:
    seen: list[int] = []
    turns: list[int] = []
    pacer = Pacer(slice_s)
    result = asyncio.run(_beside(run_paced(_counting(5, seen), pacer), turns, seen))
    assert result == "done"
    assert seen == [0, 1, 2, 3, 4]
    if slice_s == 0.0:
        # a spent slice after every step: the other task ran after each of them
        assert pacer.pauses == 5
        assert {1, 2, 3, 4, 5} <= set(turns)
    else:
        # never spent: the steps held the loop from the first to the last
        assert pacer.pauses == 0
        assert not set(turns) & {1, 2, 3, 4}


def _events(partners: list[str], start: int, span: int) -> list[tuple[str, bytes, int]]:
    """The generator's events for ``partners`` as (topic, raw, arrival), in time order."""
    events = sorted(random_events(11, partners, start, span), key=lambda te: _ms(te[1]["ts"]))
    return [(topic, orjson.dumps(e), _ms(e["ts"]) + 1) for topic, e in events]


def test_a_scrape_in_steps_sees_the_events_and_revocations_that_come_between_them() -> None:
    """Between two steps of a render, a new partner appears (its first events), another is
    revoked and a third gets new events: the scrape ends without error and equals a scrape
    made in one go after those changes, but for the new partner (exported from the next
    scrape on: a scrape renders the partners there when it began)."""
    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="wall")
    watch = Watch(engine)
    names = ["p-one", "p-two", "p-three", "p-four"]
    wall = T0 + 2 * DAY
    for topic, raw, _ in _events(names, T0, 2 * DAY):
        engine.ingest(topic, raw, wall)
    watch.judge(names, wall)
    away: set[str] = set()

    def collector() -> KpiCollector:
        return KpiCollector(engine, owned=lambda p: p not in away, wall_ms=lambda: wall,
                            watch=watch)

    kept = collector()
    kept.exposition()  # a scrape before: the next one keeps what did not change
    order = list(engine.partner_ids())
    steps = kept.render()
    next(steps)  # the first partner is rendered
    gone, moved = order[2], order[3]
    away.add(gone)  # revoked before its step
    later = _events([moved, "p-five"], wall - HOUR, HOUR - 1)
    assert {orjson.loads(raw)["partner_id"] for _, raw, _ in later} == {moved, "p-five"}
    for topic, raw, _ in later:
        engine.ingest(topic, raw, wall)
    with pytest.raises(StopIteration) as done:
        while True:
            next(steps)
    got = b"".join(done.value.value)
    want = collector().exposition()
    got_samples = _samples(got)
    want_samples = {key: value for key, value in _samples(want).items()
                    if ("partner", "p-five") not in key[1]}
    assert got_samples == want_samples
    exported = {dict(pairs).get("partner") for (_, pairs) in got_samples} - {None}
    assert exported == set(names) - {gone}
    assert b"p-five" in want  # the next scrape exports it


def test_the_judge_tick_lets_the_loop_run_between_partners_and_stops_at_a_revocation(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker's wall-clock judge tick, in process: with a slice spent after each partner,
    a task beside it sees the partners judged one by one; a revocation in the middle ends the
    tick (the rest belong to the next assignment) without marking the fleet judged."""
    from streams.runtime.pipeline import Pipeline
    from streams.tools.broker import free_port

    monkeypatch.setattr(pacing, "SLICE_S", 0.0)
    pipeline = Pipeline(Settings(web_port=free_port(), app_id="pp-pacing"))
    names = [f"pace-{i}" for i in range(8)]
    now = wall_ms()
    for topic, raw, arrival in _events(names, now - DAY, DAY - HOUR):
        pipeline.engine.ingest(topic, raw, arrival)
    sent: list[bytes] = []
    monkeypatch.setattr(pipeline.alerts, "send_soon",
                        lambda key, value: sent.append(value), raising=False)
    ownership = pipeline.ownership
    ownership.recovered(set(range(pipeline.partitions)))
    owned = [p for p in pipeline.engine.partner_ids() if ownership.owns(p)]
    assert sorted(owned) == sorted(names)

    calls: list[str] = []
    judge_partner = pipeline.watch.judge_partner

    def judging(partner: str, *args: object) -> object:
        calls.append(partner)
        return judge_partner(partner, *args)  # type: ignore[arg-type]

    monkeypatch.setattr(pipeline.watch, "judge_partner", judging)

    async def tick(revoke_after: int | None) -> list[int]:
        turns: list[int] = []
        stop = asyncio.Event()

        async def watcher() -> None:
            while not stop.is_set():
                count = len(calls)
                turns.append(count)
                if revoke_after is not None and count >= revoke_after and ownership.ready:
                    ownership.revoke({TP(TOPICS[0], p) for p in range(pipeline.partitions)})
                await asyncio.sleep(0)

        task = asyncio.create_task(watcher())
        await asyncio.sleep(0)
        await pipeline._judge_tick()
        stop.set()
        await task
        return turns

    turns = asyncio.run(tick(None))
    assert sorted(calls) == sorted(names)
    assert set(range(1, len(names))) <= set(turns)  # seen between every two partners
    assert pipeline.health.last_judged_ms is not None and pipeline.health.last_judged_ms >= now

    calls.clear()
    pipeline.health.last_judged_ms = None
    turns = asyncio.run(tick(3))
    assert len(calls) == 3  # no partner judged after the revocation
    assert pipeline.health.last_judged_ms is None
