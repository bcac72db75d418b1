"""End to end on the embedded broker: one worker vs a plain aiokafka consumer that only decodes."""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from streams.broker import EmbeddedBroker, ensure_topics
from streams.contract import TOPICS
from streams.topics import all_topics
from tests.harness import Worker, produce

from . import common


async def _plain_consume(bootstrap: str, n: int, group: str) -> tuple[float, int]:
    """Seconds from the first to the n-th message, decoding each value with orjson."""
    consumer = AIOKafkaConsumer(*TOPICS, bootstrap_servers=bootstrap, group_id=group,
                                auto_offset_reset="earliest", enable_auto_commit=False)
    await consumer.start()
    got = got_at_first = 0
    first = 0.0
    try:
        deadline = time.monotonic() + 300
        while got < n and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500, max_records=500)
            for records in batches.values():
                for record in records:
                    orjson.loads(record.value or b"{}")
                    got += 1
            if got and not first:  # like the worker's: count from the end of the first batch
                first = time.perf_counter()
                got_at_first = got
        end = time.perf_counter()
    finally:
        await consumer.stop()
    return (end - first, got - got_at_first) if first else (0.0, 0)


def _worker_rate(worker: Worker, n: int, timeout: float, stall_s: float = 30.0) -> tuple[
        float, int, bool]:
    """Poll /ready counts: (seconds, messages) from the first processed to the n-th, and whether
    the worker stalled (no progress for ``stall_s``) before reaching n; then up to the stall."""
    deadline = time.monotonic() + timeout
    first_t, first_c = 0.0, 0
    last_c, last_t = 0, time.perf_counter()
    while time.monotonic() < deadline:
        done = worker.processed()
        now = time.perf_counter()
        if done and not first_t:
            first_t, first_c = now, done
        if done != last_c:
            last_c, last_t = done, now
        if done >= n:
            return now - first_t, n - first_c, False
        if first_t and now - last_t > stall_s:
            break
        time.sleep(0.05)
    if not first_t:
        return 0.0, 0, True
    return last_t - first_t, last_c - first_c, True


def run(quick: bool) -> dict[str, Any]:
    n = 3_000 if quick else 30_000
    _, messages = common.sim_messages(1000, n, seed=13)
    keyed = [(topic, orjson.loads(raw)["partner_id"].encode(), raw) for topic, raw in messages]
    with tempfile.TemporaryDirectory(prefix="pp-bench-") as tmp:
        work = Path(tmp)
        with EmbeddedBroker(log_path=work / "broker.log") as broker:
            ensure_topics(broker.bootstrap, all_topics(4))
            start = time.perf_counter()
            produce(broker.bootstrap, keyed)
            produce_s = time.perf_counter() - start
            plain_s, plain_n = asyncio.run(_plain_consume(broker.bootstrap, n, "pp-bench-plain"))
            worker = Worker(broker.url, work, app_id="pp-bench", clock="event").start()
            try:
                worker_s, worker_n, stalled = _worker_rate(worker, n, timeout=300)
                counts = worker.counts()
                ready = worker.ready()
            finally:
                worker.stop()
    worker_eps = worker_n / worker_s if worker_s > 0 else 0.0
    plain_eps = plain_n / plain_s if plain_s > 0 else 0.0
    accepted = sum(v for k, v in counts.items() if k.endswith(":accepted"))
    return {
        "title": "End to end through the embedded broker (one worker)",
        "method": (
            f"{n:,} simulator messages (1,000 partners, keyed by partner, 4 partitions) produced "
            "to the embedded tansu broker first. Baseline, same broker and topics, same run: a "
            "plain aiokafka consumer (new group, from earliest, getmany of up to 500) that only "
            "orjson-decodes each value; rate from the end of its first batch to its n-th message. "
            "Then one worker (tests.harness.Worker, --clock event, --store memory) consumes the "
            "same topics with its own group; rate from the first to the last processed message, "
            "by polling /ready counts every 50 ms (up to 300 s; a worker whose counts stop "
            "moving for 30 s is reported as stalled, with its rate up to the stall)."
        ),
        "figures": {
            "messages": n,
            "produce_s": produce_s,
            "worker_events_per_s": worker_eps,
            "plain_consumer_events_per_s": plain_eps,
            "worker_accepted": accepted,
            "worker_stalled": int(stalled),
        },
        "ratios": {"worker_vs_plain_consumer": worker_eps / plain_eps if plain_eps else 0.0},
        "notes": [] if not stalled else [
            f"**The worker stalled**: its /ready counts stopped at {accepted:,} of {n:,} for 30 s "
            f"(ready={ready.get('ready')}, partners={len(ready.get('partners', []))}); the rate "
            "above is up to the stall. A worker busy on a backlog likely missed its group "
            "heartbeats (the harness sets --rebalance-timeout 3) and went into a rebalance "
            "and recovery."],
        "goal": "none (reported)",
        "goal_met": None,
    }
