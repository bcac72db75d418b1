"""The worker's topics, created at start with the settings' replication."""

from __future__ import annotations

from streams.config.kafka_auth import client_kwargs
from streams.config.settings import Settings
from streams.ingest.topics import all_topics, replication_configs
from streams.runtime.kafka_admin import ensure_topics, parse_broker_url


def ensure_worker_topics(settings: Settings) -> None:
    """Create the topics a worker needs (:func:`all_topics`), with the settings' replication
    factor and ``min.insync.replicas``; those that exist are left as they are."""
    topics = all_topics(settings.partitions)
    config = replication_configs(settings.topic_min_insync_replicas)
    ensure_topics(parse_broker_url(settings.broker), topics,
                  configs={name: config for name in topics},
                  replication_factor=settings.topic_replication_factor,
                  security=client_kwargs(settings))
