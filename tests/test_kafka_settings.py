"""Kafka in production shape: replication factor, min.insync.replicas, standbys, acks (issue 14).

Topic creation is checked on a broker of its own (the session broker's topics were created by
other tests, and existing topics are left as they are). tansu reports a topic's replicas (the
one broker, listed once per replica) but ignores DescribeConfigs, so ``min.insync.replicas`` is
checked where it is handed to the admin client and to Faust.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kafka import KafkaAdminClient
from pydantic import ValidationError

from streams.config.settings import Settings
from streams.ingest.topics import ALERTS, DEAD_LETTER, REPARTITION, all_topics
from streams.runtime.pipeline import Pipeline
from streams.runtime.topic_setup import ensure_worker_topics
from streams.tools.broker import EmbeddedBroker, free_port

PRODUCTION = {"topic_replication_factor": 3, "topic_min_insync_replicas": 2}


@pytest.fixture(scope="module")
def fresh_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedBroker]:
    with EmbeddedBroker(log_path=tmp_path_factory.mktemp("rf") / "tansu.log") as running:
        yield running


def _replicas(bootstrap: str, names: list[str]) -> dict[str, set[int]]:
    """Topic -> the replica counts of its partitions, as the broker reports them."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        return {t["name"]: {len(p["replica_nodes"]) for p in t["partitions"]}
                for t in admin.describe_topics(names) if not t["error_code"]}
    finally:
        admin.close()


def _pipeline(tmp_path: Path, app_id: str, **settings: Any) -> Pipeline:
    return Pipeline(Settings(store="memory", web_port=free_port(), app_id=app_id,
                             data_dir=tmp_path, **settings))


def test_min_insync_replicas_above_the_replication_factor_is_refused(
        monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValidationError) as err:
        Settings(topic_replication_factor=3, topic_min_insync_replicas=4)
    assert "topic_min_insync_replicas (4) exceeds topic_replication_factor (3)" in str(err.value)
    # from the environment too, against the default replication factor of 1
    monkeypatch.setenv("PARTNERPULSE_TOPIC_MIN_INSYNC_REPLICAS", "2")
    with pytest.raises(ValidationError, match=r"\(2\) exceeds topic_replication_factor \(1\)"):
        Settings()
    monkeypatch.setenv("PARTNERPULSE_TOPIC_REPLICATION_FACTOR", "3")
    monkeypatch.setenv("PARTNERPULSE_TABLE_STANDBY_REPLICAS", "1")
    got = Settings()
    assert (got.topic_replication_factor, got.topic_min_insync_replicas,
            got.table_standby_replicas) == (3, 2, 1)


def test_the_defaults_fit_one_broker() -> None:
    got = Settings()
    assert (got.topic_replication_factor, got.topic_min_insync_replicas,
            got.table_standby_replicas) == (1, 1, 0)


def test_the_app_gets_replication_standbys_and_acks_all(tmp_path: Path) -> None:
    pipeline = _pipeline(tmp_path, "pp-rf-app", table_standby_replicas=1, **PRODUCTION)
    conf = pipeline.app.conf
    assert (conf.topic_replication_factor, conf.table_standby_replicas) == (3, 1)
    assert conf.producer_acks == -1  # acks=all: min.insync.replicas applies to every write
    assert pipeline.journal.changelog_topic.config == {"min.insync.replicas": "2"}
    # with the defaults: one replica, no standby, and no topic config to override the broker's
    default = _pipeline(tmp_path, "pp-rf-default")
    assert (default.app.conf.topic_replication_factor, default.app.conf.table_standby_replicas,
            default.app.conf.producer_acks) == (1, 0, -1)
    assert default.journal.changelog_topic.config == {}


def test_the_worker_creates_its_topics_with_the_replication_settings(
        fresh_broker: EmbeddedBroker, monkeypatch: pytest.MonkeyPatch) -> None:
    sent: dict[str, dict[str, Any]] = {}
    create = KafkaAdminClient.create_topics

    def spy(self: KafkaAdminClient, specs: Any, *args: Any, **kwargs: Any) -> Any:
        sent.update(specs)
        return create(self, specs, *args, **kwargs)

    monkeypatch.setattr(KafkaAdminClient, "create_topics", spy)
    settings = Settings(broker=fresh_broker.url, partitions=2, **PRODUCTION)
    ensure_worker_topics(settings)
    names = list(all_topics(2))
    assert {REPARTITION, ALERTS, DEAD_LETTER} <= set(names)
    assert set(sent) == set(names)
    for name in names:
        assert sent[name]["replication_factor"] == 3, name
        assert sent[name]["configs"] == {"min.insync.replicas": "2"}, name
    assert _replicas(fresh_broker.bootstrap, names) == {name: {3} for name in names}


def test_faust_creates_the_changelog_with_the_replication_settings(
        fresh_broker: EmbeddedBroker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The journal changelog is Faust's to create (at the table's start): through its own
    declaration, the app's replication factor and the table's min.insync.replicas."""
    pipeline = _pipeline(tmp_path, "pp-rf-faust", broker=fresh_broker.url, **PRODUCTION)
    changelog = pipeline.journal.changelog_topic
    configs: list[Any] = []

    async def declare() -> None:
        # the producer only from inside the loop: made outside, it is bound to another loop
        producer = pipeline.app.producer
        create = producer.create_topic

        async def spy(*args: Any, **kwargs: Any) -> Any:
            configs.append(kwargs["config"])
            return await create(*args, **kwargs)

        monkeypatch.setattr(producer, "create_topic", spy)
        try:
            await changelog.declare()
        finally:
            await producer.stop()

    asyncio.run(declare())
    assert configs == [{"min.insync.replicas": "2"}]
    name = changelog.get_topic_name()
    assert _replicas(fresh_broker.bootstrap, [name]) == {name: {3}}
