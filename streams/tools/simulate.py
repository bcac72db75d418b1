"""Simulated partner traffic produced to Kafka in real time (``partnerpulse simulate``, the demo)."""

from __future__ import annotations

import signal
import time
from typing import Any

import orjson


def run_simulator(bootstrap: str, rate: float, seed: int, drift_minutes: float,
                  stop_at: float | None, security: dict[str, Any] | None = None) -> int:
    """Produce simulated events in real time, keyed by partner, until ``stop_at``."""
    from kafka import KafkaProducer

    from streams.tools.simulator import Simulator

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1,
                             key_serializer=str.encode, **(security or {}))
    start = time.time_ns() // 1_000_000
    sim = Simulator(seed=seed, rate=rate, start_ms=start, drift_minutes=drift_minutes)
    produced, cursor = 0, sim.history_start_ms  # warm start: work already in flight
    stopping = False

    def _stop(*_: object) -> None:
        nonlocal stopping
        stopping = True

    previous = signal.signal(signal.SIGTERM, _stop)
    try:
        while not stopping and (stop_at is None or time.monotonic() < stop_at):
            now = time.time_ns() // 1_000_000
            for topic, event in sim.events_between(cursor, now):
                producer.send(topic, key=event["partner_id"], value=orjson.dumps(event))
                produced += 1
            cursor = now
            producer.flush()
            time.sleep(0.2)  # pacing the producer to real time, not synchronisation
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        producer.flush()
        producer.close()
    return produced
