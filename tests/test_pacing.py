"""Long work on the worker's event loop is done in slices (streams/runtime/pacing.py).

Judging every owned partner, rendering /metrics and the data views are seconds of Python at
fleet size; the agent's events and the other views share the loop. These tests run that work
beside a task that watches the loop: it must run between slices, and what changes between two
slices (events, a revocation) must be seen by the steps after it, never crash them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Generator
from typing import Any

import orjson
import pytest
from faust.types import TP

from streams.config.catalog import load_config
from streams.config.settings import Settings
from streams.engine.core import Engine
from streams.ingest.contract import TOPICS
from streams.judgement.watch import Watch
from streams.outputs.exporter import KpiCollector
from streams.outputs.series import EVENT_LOOP_LAG
from streams.runtime import pacing
from streams.runtime.health import wall_ms
from streams.runtime.pacing import LoopLag, Pacer, run_paced
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


def _judged_partners(pipeline: Any, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The partners the pipeline's watch judges from now on, in order (a list kept filled)."""
    calls: list[str] = []
    judge_partner = pipeline.watch.judge_partner

    def judging(partner: str, *args: object) -> object:
        calls.append(partner)
        return judge_partner(partner, *args)

    monkeypatch.setattr(pipeline.watch, "judge_partner", judging)
    return calls


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

    calls = _judged_partners(pipeline, monkeypatch)

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

    # the worker's loop lag is one of its health series
    pipeline.loop_lag.note(pipeline.loop_lag._clock(), 1.25)
    assert pipeline.health.delivery()[EVENT_LOOP_LAG][2] == 1.25

    calls.clear()
    pipeline.health.last_judged_ms = None
    turns = asyncio.run(tick(3))
    assert len(calls) == 3  # no partner judged after the revocation
    assert pipeline.health.last_judged_ms is None


def _survey(partner: str, n: int, ts: int) -> bytes:
    return orjson.dumps({"event_id": f"news-{partner}-{n}", "type": "response",
                         "partner_id": partner, "ts": ts, "kind": "csat", "score": 4.0})


def test_a_judge_pass_takes_the_partners_in_the_order_their_news_came(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """Events applied by the agent between two passes put their partners first in the next
    pass, oldest news first (a partner with several events once, at its first); then the
    others. A duplicate event is no news."""
    from types import SimpleNamespace

    from streams.runtime.pipeline import Pipeline
    from streams.tools.broker import free_port

    pipeline = Pipeline(Settings(web_port=free_port(), app_id="pp-news"))
    names = [f"news-{i}" for i in range(8)]
    now = wall_ms()
    for topic, raw, arrival in _events(names, now - DAY, DAY - HOUR):
        pipeline.engine.ingest(topic, raw, arrival)
    monkeypatch.setattr(pipeline.alerts, "send_soon", lambda key, value: None, raising=False)
    monkeypatch.setattr(pipeline.journal, "write", lambda partition, key, value: None)
    monkeypatch.setattr(pipeline.app.commit_guard, "track", lambda tp, offset, future: None)
    ownership = pipeline.ownership
    ownership.recovered(set(range(pipeline.partitions)))
    calls = _judged_partners(pipeline, monkeypatch)

    def event(partner: str, n: int, offset: int) -> SimpleNamespace:
        part = ownership.partition_of(partner)
        tp = TP("surveys", part)
        msg = SimpleNamespace(tp=tp, topic="surveys", partition=part, offset=offset,
                              headers=[], key=partner.encode())
        return SimpleNamespace(message=msg, value=_survey(partner, n, wall_ms() - 1_000))

    pipeline._process([event("news-6", 0, 0)])  # type: ignore[list-item]
    asyncio.run(pipeline._judge_tick())  # every partner judged: nothing new after it
    assert calls[0] == "news-6"
    assert sorted(calls) == sorted(names)

    news = ["news-5", "news-2", "news-5", "news-7", "news-2"]
    pipeline._process([event(p, i, i) for i, p in enumerate(news, 1)])  # type: ignore[misc]
    pipeline._process([event("news-6", 0, 20)])  # type: ignore[list-item]
    pipeline._process([event("news-0", 1, 21), event("news-3", 1, 22)])  # type: ignore[list-item]
    calls.clear()
    asyncio.run(pipeline._judge_tick())
    first = ["news-5", "news-2", "news-7", "news-0", "news-3"]  # news-6's event: a duplicate
    assert calls[:len(first)] == first
    assert sorted(calls) == sorted(names)
    # taken by that pass: the next one has no news, and judges in the partners' order
    calls.clear()
    asyncio.run(pipeline._judge_tick())
    assert calls == pipeline.watch.in_judging_order(sorted(names), wall_ms())

    # a revocation ends a pass after its first partner: the news it did not judge leads the
    # next pass in the order it came, ahead of news that came after the pass began
    pipeline._process([event(p, i, 30 + i) for i, p in  # type: ignore[misc]
                       enumerate(["news-4", "news-1", "news-7", "news-3"], 10)])
    calls.clear()
    judged = pipeline.watch.judge_partner

    def judge_then_revoke(partner: str, *args: object) -> object:
        out = judged(partner, *args)
        if ownership.ready:
            ownership.revoke({TP(TOPICS[0], p) for p in range(pipeline.partitions)})
            pipeline._process([event("news-6", 20, 40)])  # type: ignore[list-item]
        return out

    monkeypatch.setattr(pipeline.watch, "judge_partner", judge_then_revoke)
    asyncio.run(pipeline._judge_tick())
    assert calls == ["news-4"]
    monkeypatch.setattr(pipeline.watch, "judge_partner", judged)
    ownership.recovered(set(range(pipeline.partitions)))
    calls.clear()
    asyncio.run(pipeline._judge_tick())
    assert calls[:4] == ["news-1", "news-7", "news-3", "news-6"]
    assert len(calls) == len(set(calls))  # each once


def test_judge_passes_start_every_interval_whatever_they_take(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """On a clock of its own: a pass starts each ``judge_interval_s`` after the last began, or
    at once when the last one took longer (Faust's timer slept the interval after each)."""
    from streams.runtime import pipeline as module
    from streams.tools.broker import free_port

    pipeline = module.Pipeline(Settings(web_port=free_port(), app_id="pp-period",
                                        judge_interval_s=0.5))
    clock = [100.0]
    took = iter([0.2, 0.7, 0.1, 1.6, 0.05])
    starts: list[float] = []

    class Done(Exception):
        pass

    async def sleep(seconds: float) -> None:
        assert seconds >= 0
        clock[0] += seconds

    async def tick() -> None:
        starts.append(round(clock[0], 6))
        try:
            clock[0] += next(took)
        except StopIteration:
            raise Done from None

    monkeypatch.setattr(module, "monotonic", lambda: clock[0])
    monkeypatch.setattr(pipeline.app, "sleep", sleep)
    monkeypatch.setattr(pipeline, "_judge_tick", tick)
    with pytest.raises(Done):
        asyncio.run(pipeline._judge_every_interval())
    # independently: each pass starts at the later of (the last start + 0.5) and its end
    want, start = [], 100.5
    for duration in [0.2, 0.7, 0.1, 1.6, 0.05, None]:
        want.append(round(start, 6))
        if duration is not None:
            start = max(start + 0.5, start + duration)
    assert starts == want


def test_the_loop_lag_is_the_longest_delay_of_its_span() -> None:
    clock = [1000.0]
    lag = LoopLag(tick_s=0.25, span_s=60.0, clock=lambda: clock[0])
    assert lag.longest() == 0.0
    delays = [(1000.0, 0.01), (1010.0, 2.5), (1030.0, 0.4), (1065.0, 0.2), (1070.0, -0.001)]
    for woke, late in delays:
        lag.note(woke, late)
    for now in (1030.0, 1069.0, 1070.0, 1089.9, 1126.0):
        clock[0] = now
        expected = max([max(late, 0.0) for woke, late in delays if woke >= now - 60.0],
                       default=0.0)
        assert lag.longest() == expected, now
    # bounded: a tick's worth of entries for the span, whatever runs
    for i in range(10_000):
        lag.note(2000.0 + i * 0.25, 0.0)
    assert len(lag._delays) <= 60.0 / 0.25 + 1


def test_the_loop_lag_task_sees_a_stretch_that_held_the_loop() -> None:
    """A stretch of 0.2 s without a pause (a busy loop, as unpaced work is) shows as a delay
    of at least 0.2 s less one tick."""
    lag = LoopLag(tick_s=0.01, span_s=60.0)

    async def main() -> float:
        task = asyncio.create_task(lag.run())
        while not lag._delays:  # the task has run a tick
            await asyncio.sleep(0.005)
        end = time.perf_counter() + 0.2
        while time.perf_counter() < end:
            pass
        woke = len(lag._delays)
        while len(lag._delays) == woke:  # the tick due during the stretch has run
            await asyncio.sleep(0.005)
        task.cancel()
        return lag.longest()

    assert asyncio.run(main()) >= 0.19


def test_the_wall_is_made_a_tile_per_step() -> None:
    """/api/wall's body is made one partner per step (the view lets the loop run between
    slices), and is the same body as made in one go."""
    from streams.outputs.wall import History, snapshot, snapshot_steps

    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="wall")
    watch = Watch(engine)
    names = ["w-one", "w-two", "w-three"]
    wall = T0 + 2 * DAY
    for topic, raw, _ in _events(names, T0, 2 * DAY):
        engine.ingest(topic, raw, wall)
    watch.judge(names, wall)
    steps = snapshot_steps(engine, watch, names, wall, History(), generated_at_ms=1)
    taken = 0
    with pytest.raises(StopIteration) as done:
        while True:
            next(steps)
            taken += 1
    body = done.value.value
    assert taken == len(names)
    assert sorted(tile["partner"] for tile in body["partners"]) == sorted(names)
    assert body == snapshot(engine, watch, names, wall, History(), generated_at_ms=1)


def test_the_report_s_months_and_periods_are_read_a_partner_per_step() -> None:
    """/api/report's body (a month, or a period) is read one partner per step, and is the
    same as read in one go."""
    from streams.engine.core import MonthCalendar
    from streams.outputs.period import period_state, period_state_steps
    from streams.outputs.report import month_state, month_state_steps

    catalog, partners = load_config()
    engine = Engine(catalog, partners, clock="wall")
    names = ["r-one", "r-two", "r-three", "r-four"]
    for topic, raw, _ in _events(names, T0, 2 * DAY):
        engine.ingest(topic, raw, T0 + 2 * DAY)
    month = MonthCalendar.name(MonthCalendar(catalog.report_timezone).index(T0 + DAY))
    for steps, whole in ((month_state_steps(engine, names, month),
                          month_state(engine, names, month)),
                         (period_state_steps(engine, names, [month]),
                          period_state(engine, names, [month]))):
        taken = 0
        with pytest.raises(StopIteration) as done:
            while True:
                next(steps)
                taken += 1
        assert taken == len(names)
        assert done.value.value == whole
        assert set(whole["partners"]) == set(names)
