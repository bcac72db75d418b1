"""The Faust app: stock Faust with one consumer setting Faust does not expose, a guard on its
offset commits and a fence on group membership (``runtime/commit_guard.py``,
``runtime/fence.py``); and :func:`worker_app`, the translation of the worker's
:class:`~streams.config.settings.Settings` into Faust's configuration (each setting with the
reason it has the value it has).

Faust's aiokafka driver creates the worker's consumer with ``fetch_max_wait_ms=1500``
hard-coded. That is how long a fetch may wait at the broker for data, and on the embedded
broker (tansu) a fetch waits it out even when data arrives meanwhile: the event-to-alert
latency benchmark measured p50 0.71 s and p99 1.77 s with 1.5 s, and p50 0.04 s and p99
0.09 s with 0.1 s. Apache Kafka answers a fetch as soon as ``fetch_min_bytes`` (1) is
there, so a shorter wait only costs a few more empty fetches of an idle worker there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiokafka
import faust
from faust.transport.drivers import aiokafka as driver
from faust.types import TP, TransportT

from streams.config.kafka_auth import faust_credentials
from streams.config.settings import Settings
from streams.runtime.commit_guard import CommitGuard
from streams.runtime.fence import MembershipFence


class _ConsumerThread(driver.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> aiokafka.AIOKafkaConsumer:
        consumer = super()._create_worker_consumer(transport)
        # read by AIOKafkaConsumer.start() when it builds its fetcher: set before that
        consumer._fetch_max_wait_ms = cast_app(self.app).fetch_max_wait_ms
        return consumer

    async def on_partitions_assigned(self, assigned: set[TP], generation_id: int = 0) -> None:
        # the coordinator exists once the consumer has started, and a join just succeeded
        cast_app(self.app).fence.attach(self._ensure_consumer()._coordinator)
        await super().on_partitions_assigned(assigned, generation_id)


class _Consumer(driver.Consumer):
    def _new_consumer_thread(self) -> driver.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)

    async def _commit(self, offsets: Mapping[TP, int]) -> bool:
        # every commit path of Faust's consumer ends here, after the producer's flush
        allowed = cast_app(self.app).commit_guard.allowed(offsets)
        return bool(allowed) and bool(await super()._commit(allowed))


class _Transport(driver.Transport):
    Consumer = _Consumer


class App(faust.App):
    """``faust.App`` whose worker consumer waits at most ``fetch_max_wait_ms`` per fetch, commits
    only what :class:`~streams.runtime.commit_guard.CommitGuard` allows, and keeps a
    :class:`~streams.runtime.fence.MembershipFence` up to date on every assignment."""

    fetch_max_wait_ms: int = 100

    def __init__(self, *args: Any, fetch_max_wait_ms: int = 100,
                 session_timeout_s: float = 10.0, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        self.commit_guard = CommitGuard()
        self.fence = MembershipFence(session_timeout_s)
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> TransportT:
        # only Kafka is supported: the kafka:// and aiokafka:// schemes are the same driver
        return _Transport(self.conf.broker_consumer, self)


def cast_app(app: Any) -> App:
    """The app a consumer thread belongs to, as this module's App."""
    if not isinstance(app, App):
        raise TypeError(f"expected streams.runtime.faust_app.App, got {type(app).__name__}")
    return app


def worker_app(settings: Settings) -> App:
    """The worker's Faust app, configured from the settings."""
    store = "memory://" if settings.store == "memory" else "rocksdb://"
    return App(
        settings.app_id,
        fetch_max_wait_ms=int(settings.fetch_max_wait_s * 1000),
        broker=settings.broker,
        broker_credentials=faust_credentials(settings),  # TLS / SASL, None for PLAINTEXT
        store=store,
        datadir=str(settings.data_dir),
        env_prefix="PARTNERPULSE_FAUST_",
        web_bind=settings.web_bind,
        web_port=settings.web_port,
        web_host=settings.web_bind,
        web_tables_enabled=False,
        # /router/* lists every worker's URL and which one owns a key: only @table_route
        # needs it, and nothing here routes requests between workers
        web_router_enabled=False,
        topic_partitions=settings.partitions,
        # the changelog and leader topics Faust creates itself (README "Kafka in production")
        topic_replication_factor=settings.topic_replication_factor,
        topic_allow_declare=True,
        table_standby_replicas=settings.table_standby_replicas,
        **_group_timing(settings.rebalance_timeout_s, settings.session_timeout_s),
        consumer_auto_offset_reset="earliest",
        # Faust's recovery check compares the store's offset with ListOffsets(latest), which
        # tansu answers with the last batch's *base* offset: on every rebalance after a
        # multi-record changelog batch it raised ConsistencyError and killed a healthy worker.
        # A memory store's offsets are this process's own reads and writes, so the check can
        # never find anything real there; Recovery.changelog_tail (runtime/recovery.py) reads
        # what the wrong end hides. The RocksDB store keeps its offsets on disk, where the check
        # could catch a changelog topic recreated under it, but it trips on tansu all the same:
        # off too, and the README says to wipe a RocksDB data directory when its topics are
        # recreated.
        recovery_consistency_check=False,
        # A revocation waits until the agent has acked every event it took (its take buffer
        # and the batch in hand): with False, Faust signals the revocation at once and the
        # agent's next batch -- events of the revoked partitions -- was applied after their
        # partners were dropped, recreating them from a few events; a worker given the same
        # partitions back then kept those partial states (see Recovery.on_recover).
        stream_wait_empty=True,
        producer_linger_ms=5,
        # acks=all: a write counts once every in-sync replica has it, which is what gives
        # topic_min_insync_replicas its meaning (Faust's default too; explicit, as it matters)
        producer_acks=-1,
    )


def _group_timing(rebalance: float, session: float) -> dict[str, float]:
    """The consumer group's timeouts (``--rebalance-timeout``, ``--session-timeout``)."""
    return dict(
        broker_rebalance_timeout=rebalance,
        broker_session_timeout=session,
        session_timeout_s=session,  # the membership fence's lease: half of it
        # a third of the session, Kafka's rule: two beats may be lost before the session ends,
        # and a beat lands within the fence's lease (half a session) with time to spare
        broker_heartbeat_interval=session / 3,
        # A consumer that does not poll for max_poll_interval leaves the group. Faust polls
        # again only once it has handed every record of the previous poll to the agent, and
        # one poll of a backlog is tens of thousands of records: at 10 s (what this once was
        # under a 3 s session) the worker was dropped mid-backlog and hung in the
        # revocation. 300 s is a hang detector, not a pace. (Polls stay unbounded: bounded
        # ones come from one partition at a time, so partitions drift apart in event time,
        # which the event clock's windows are sensitive to; see test_alerting.)
        broker_max_poll_interval=max(rebalance, 300.0),
    )
