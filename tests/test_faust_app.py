"""The app class: Faust's worker consumer, with the fetch wait partnerpulse configures."""

from __future__ import annotations

import asyncio
import subprocess
import sys
from pathlib import Path

from streams.config.settings import Settings
from streams.runtime.faust_app import App

REPO = Path(__file__).resolve().parent.parent


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


def test_the_worker_imports_no_generator(tmp_path: Path) -> None:
    """A worker built on a catalog whose export is narrowed (the case that used to import the
    dashboard generator to name the empty panels) loads neither the rule nor the dashboard
    generator, nor the optional dashboard SDK: the image installs no `[dashboards]` extra."""
    kpis = (REPO / "config" / "kpis.yaml").read_text()
    assert "  export_windows: [1h, 24h, 7d, 30d]\n" in kpis
    (tmp_path / "kpis.yaml").write_text(kpis.replace("  export_windows: [1h, 24h, 7d, 30d]\n",
                                                     "  export_windows: [24h]\n"))
    (tmp_path / "partners.yaml").write_text((REPO / "config" / "partners.yaml").read_text())
    script = f"""
import sys
from streams.runtime.pipeline import Pipeline
from streams.config.settings import Settings
Pipeline(Settings(config_dir={str(tmp_path)!r}, web_port=6099, app_id="pp-no-generators"))
import streams.cli  # the command module the worker starts from
loaded = sorted(m for m in sys.modules
                if m.split(".")[0] == "grafana_foundation_sdk"
                or m.startswith("streams.generators"))
print(" ".join(loaded))
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=REPO, timeout=120, check=True)
    assert out.stdout.strip() == "", out.stdout


def test_the_partition_cache_obeys_the_partner_cap() -> None:
    """The worker's partner -> partition cache, asked for every event before the engine sees
    it, keeps at most ``max_partners`` entries and still answers every id right."""
    from streams.ingest.topics import partition_for
    from streams.runtime.pipeline import Pipeline
    from streams.tools.broker import free_port

    pipeline = Pipeline(Settings(max_partners=50, web_port=free_port(), app_id="pp-cap"))
    ids = [f"flood-{i}" for i in range(10_000)]
    assert [pipeline._partition_of(p) for p in ids] == [partition_for(p, 4) for p in ids]
    assert len(pipeline._partitions_by_partner) == 50


def test_the_shipped_group_timing_is_one_kafka_accepts_and_the_fence_can_keep() -> None:
    """The default session timeout is at least Apache Kafka's default
    ``group.min.session.timeout.ms`` (6 s: a broker refuses a join with less); the consumer
    beats at most every third of it, so two beats may be lost before the session ends; and a
    beat is sent well within the membership fence's lease (half a session), so a healthy
    worker's batches are not held between two beats. The app built from the default settings
    carries exactly that."""
    from streams.runtime.faust_app import worker_app

    settings = Settings()
    kafka_min_session_s = 6.0  # Kafka's group.min.session.timeout.ms default, 6000
    assert settings.session_timeout_s >= kafka_min_session_s
    app = worker_app(settings)
    session = app.conf.broker_session_timeout
    heartbeat = app.conf.broker_heartbeat_interval
    assert session == settings.session_timeout_s
    assert app.conf.broker_rebalance_timeout == settings.rebalance_timeout_s
    assert heartbeat <= session / 3
    assert app.fence.lease_s == session / 2
    assert heartbeat < app.fence.lease_s - 0.5  # a beat's round trip fits in the lease
