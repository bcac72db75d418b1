"""The app class: Faust's worker consumer, with the fetch wait partnerpulse configures."""

from __future__ import annotations

import asyncio

from streams.faust_app import App
from streams.settings import Settings


def test_the_worker_consumer_waits_at_most_the_configured_fetch_wait() -> None:
    async def created_wait(app: App) -> int:
        consumer = app.consumer._thread._create_worker_consumer(app.transport)
        try:
            return int(consumer._fetch_max_wait_ms)
        finally:
            await consumer.stop()

    app = App("pp-test-fetch-wait", broker="kafka://127.0.0.1:9", store="memory://",
              fetch_max_wait_ms=123)
    assert asyncio.run(created_wait(app)) == 123  # Faust alone hard-codes 1500


def test_the_default_fetch_wait_is_well_under_the_latency_goal() -> None:
    assert Settings.model_fields["fetch_max_wait_s"].default <= 0.2
