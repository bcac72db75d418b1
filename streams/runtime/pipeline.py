"""The Faust layer: topics, the state table, the agent and the web views.

Everything that counts lives in :mod:`streams.engine.core`; this module only moves
bytes between Kafka and the engine:

* one agent reads the four input topics and the repartition topic, with
  concurrency 1, and hands each message to the engine;
* an event that arrived on a partition other than its partner's (a producer
  that did not key by ``partner_id``) is forwarded once to the repartition
  topic on the right partition, so all of a partner's state lives on one worker;
* each accepted event is one record in the changelog-backed table
  ``<app_id>-journal``; on recovery the engine is rebuilt from the table;
* contract violations go to the dead-letter topic with the original bytes and
  the reason in the ``pp-reason`` header.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import time
from collections.abc import Sequence
from typing import Any, cast

import faust
import mode
import orjson
from faust.types import TP, EventT
from prometheus_client import CONTENT_TYPE_LATEST

from streams.config.catalog import load_config
from streams.config.kafka_auth import client_kwargs
from streams.config.settings import Settings
from streams.engine.core import Engine, MonthCalendar, Outcome, settle_gc
from streams.ingest.contract import TOPICS, ContractError, decode, redact
from streams.ingest.topics import (
    ALERTS,
    DEAD_LETTER,
    REASON_HEADER,
    REPARTITION,
    SOURCE_HEADER,
    partition_for,
    replication_configs,
)
from streams.judgement.judge import State
from streams.judgement.watch import ALERT_NAME, PIPELINE_ALERT, SEVERITY, Alert, Watch
from streams.outputs.alertmanager import AlertFanout
from streams.outputs.exporter import KpiCollector, make_registry
from streams.outputs.wall import History
from streams.runtime.faust_app import worker_app
from streams.runtime.journal_table import BulkLoadedMemoryStore, JournalTable

log = logging.getLogger("partnerpulse")

RESTORE_CHUNK = 5_000
"""Journal events replayed between two passes of the event loop during recovery."""
BATCH = 500
"""Most events the agent takes at once (one synchronous stretch of processing)."""


def wall_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000




def _header(headers: Any, name: str) -> str | None:
    if not headers:
        return None
    items = headers.items() if hasattr(headers, "items") else headers
    for key, value in items:
        if key == name:
            # a header is producer input like the value: bad UTF-8 must not crash the agent
            return value.decode(errors="replace") if isinstance(value, bytes) else str(value)
    return None


class Pipeline:
    """The Faust app with its engine, wired together."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        catalog, partners = load_config(settings.config_dir)
        # The worker imports no generator (the dashboard SDK is an optional extra): it only
        # says which windows are left out; `partnerpulse check-config` names their readers.
        for window in catalog.windows:
            if catalog.export_windows and window not in catalog.export_windows:
                log.warning("window %s is not exported (settings.export_windows): generated "
                            "dashboard panels and rules that read it stay empty "
                            "(`partnerpulse check-config` names them)", window)
        self.engine = Engine(catalog, partners, clock=settings.clock,
                             max_partners=settings.max_partners)
        self.app = worker_app(settings)
        self.partitions = settings.partitions
        self.source = self._raw_topic(*TOPICS, REPARTITION)
        self.repartition = self._raw_topic(REPARTITION)
        self.dead_letter = self._raw_topic(DEAD_LETTER)
        self.alerts = self._raw_topic(ALERTS)
        self.watch = Watch(self.engine, stale_after_ms=int(settings.stale_after_s * 1000))
        self.sender: AlertFanout | None = None
        if settings.alertmanager:
            # each Alertmanager (an HA cluster's members) gets every alert, on its own queue
            self.sender = AlertFanout(settings.alertmanager)
            self.app.task(self._run_sender)
        self.stale: set[str] = set()
        if settings.clock == "wall":
            self.app.timer(settings.judge_interval_s)(self._judge_tick)
        else:
            self.app.timer(settings.judge_interval_s)(self._health_tick)
        # app.Table, with the memory store loaded in bulk (streams/runtime/journal_table.py says why)
        self.journal = JournalTable(
            self.app, name="journal", beacon=self.app.tables.beacon,
            partitions=settings.partitions, key_type=bytes, value_type=bytes,
            # min.insync.replicas of the changelog topic Faust creates (its replicas: the app's)
            extra_topic_configs=replication_configs(settings.topic_min_insync_replicas),
        )
        self.app.tables.add(self.journal)
        self.journal.on_recover(self._on_recover)
        # An exception in the agent stops the worker (after the events from the failing one on
        # are kept out of the commit): a restart rebuilds a consistent state from the journal
        # and reads them again. Faust's default restarts the agent, whose state may then hold
        # half an event, and had acknowledged the rest of the batch (lost).
        self.app.agent(self.source, name="ingest", concurrency=1,
                       supervisor_strategy=mode.CrashingSupervisor)(self._ingest)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self._on_assigned)  # type: ignore[arg-type]
        self.recovery: dict[str, float] = {}
        """Wall times (epoch s) of the last recovery's phases, and its record counts."""
        self.restoring: tuple[int, int] | None = None
        """(events replayed, of records) while a restore runs."""
        self.ready = False
        self._owned: set[int] = set()
        self.recovered_events = 0
        self.repartitioned = 0
        self._generation = 0
        """Bumped by each revocation, so that a restore in progress can tell it is stale."""
        self._survivors: set[str] = set()
        """Partners still held when the last revocation finished: the only in-memory states a
        recovery may keep (anything created since came from events outside an assignment)."""
        self._partitions_by_partner: dict[str, int] = {}
        """Events forwarded to the repartition topic (producers that did not key by partner)."""
        self.last_judged_ms: int | None = None
        """Wall time of the last completed judging tick (a stuck judge shows here)."""
        self.positions: dict[tuple[str, int], int] = {}
        self._last_fetch_ms: int | None = None
        self.history = History()
        """Last hour of each owned partner's 1h KPI values, for the wall's sparklines."""
        self.collector = KpiCollector(self.engine, self.owns, wall_ms, self.watch, self)
        self.registry = make_registry(self.collector)
        self._add_views()

    def _raw_topic(self, *names: str) -> faust.TopicT:
        """Topics carry raw bytes: decoding and validation are the engine's job."""
        return self.app.topic(*names, key_type=bytes, value_type=bytes,
                              key_serializer="raw", value_serializer="raw")

    # --- ownership ----------------------------------------------------------------
    def owned_partitions(self) -> set[int]:
        """Partitions of the input topics this worker holds now."""
        return {tp.partition for tp in self.app.assignor.assigned_actives()
                if tp.topic == TOPICS[0]}

    def owns(self, partner: str) -> bool:
        """True while the partner's partition is assigned to this worker."""
        return self.ready and self._partition_of(partner) in self._owned

    async def _on_revoked(self, app: faust.App, revoked: set[TP], **_: Any) -> None:
        self.ready = False  # export nothing until recovery gives us a consistent view
        self._generation += 1  # a restore still running is for an assignment that is gone
        self.app.commit_guard.forget(revoked)
        gone = {tp.partition for tp in revoked if tp.topic == TOPICS[0]}
        self.engine.drop_partners(lambda p: partition_for(p, self.partitions) not in gone)
        self._survivors = set(self.engine.partner_ids())
        self.watch.forget(self.engine.partner_ids())
        self.history.forget(self.engine.partner_ids())

    async def _on_assigned(self, app: faust.App, assigned: set[TP], **_: Any) -> None:
        self.recovery["assigned_at"] = time.time()

    async def _on_recover(self) -> None:
        """Rebuild the owned partners' windows from the journal Faust has just recovered.

        A long replay must not hold the event loop: in chunks of RESTORE_CHUNK events, each
        followed by a pass of the loop, so the consumer keeps polling (a loop blocked past the
        max poll interval is dropped from the group, and the rebalance starts recovery over),
        the producer keeps flushing and /ready keeps answering (not ready, with the progress).
        """
        phases: dict[str, float] = {"recover_started_at": time.time()}
        generation = self._generation
        owned = self.owned_partitions()
        # Keep only states that are whole: owned, and held since before the revocation. A state
        # created in between (an event applied between revocation and recovery) holds just that
        # event; dropped here, it is rebuilt from the journal, which has its record too.
        survivors = self._survivors
        self.engine.drop_partners(lambda p: self._partition_of(p) in owned and p in survivors)
        had = set(self.engine.partner_ids())
        tail = await self._changelog_tail(owned)
        phases["tail_done_at"] = time.time()
        for key, (partition, value) in tail.items():
            self.journal.put_local(partition, key, value)
        data = self.journal.data
        # Keep the owned partners' records that are not already in memory: one decision per
        # partner (the key's prefix), not per record.
        wanted: dict[bytes, bool] = {}
        records: list[tuple[bytes, bytes]] = []
        for key, value in data.items():
            prefix = key[:key.find(b"\x1f")]
            keep = wanted.get(prefix)
            if keep is None:
                partner = prefix.decode()
                keep = wanted[prefix] = (partner not in had
                                         and self._partition_of(partner) in owned)
            if keep:
                records.append((key, value))
        phases["collected_at"] = time.time()
        phases["records"] = len(records)
        applied = 0
        # The replay allocates millions of long-lived objects and no cyclic garbage: the cyclic
        # GC would rescan the growing heap again and again for nothing. Off during the replay;
        # afterwards what was rebuilt moves to the permanent generation (gc.freeze), so later
        # full collections under live traffic do not rescan it either.
        gc.disable()
        try:
            for applied in self.engine.restore_steps(records, RESTORE_CHUNK):
                self.restoring = (applied, len(records))
                await asyncio.sleep(0)
                if self._generation != generation:
                    # Revoked meanwhile (the revocation dropped the partners restored so far):
                    # stop, not ready; the next assignment's recovery starts over.
                    log.info("restore abandoned after %d events: partitions revoked", applied)
                    return
        finally:
            gc.enable()
            self.restoring = None
        del records
        settle_gc()  # the rebuilt state is long-lived: out of the cyclic GC's sight
        phases["restored_at"] = time.time()
        phases["applied"] = applied
        self.recovered_events += applied
        self._owned = owned
        self.ready = True
        self.recovery = {"assigned_at": self.recovery.get("assigned_at", 0.0)} | phases
        store = self.journal.data
        if isinstance(store, BulkLoadedMemoryStore):
            self.recovery |= {"bulk_load_started_at": store.load_started_at,
                              "bulk_load_done_at": store.load_done_at,
                              "bulk_loaded_records": store.loaded_records}
        log.info("recovered %d journal events (%d from the changelog tail) in %.2fs "
                 "(restore %.2fs); partitions %s, %d partners kept", applied, len(tail),
                 phases["restored_at"] - phases["recover_started_at"],
                 phases["restored_at"] - phases["collected_at"], sorted(owned), len(had))

    async def _changelog_tail(self, owned: set[int]) -> dict[bytes, tuple[int, bytes | None]]:
        """Changelog records past the end offset the broker reported to Faust's recovery.

        Why: the embedded tansu broker answers ListOffsets(latest) with the *base* offset of
        the last record batch, so Faust's recovery stops before that batch. Reading on from
        there until a fetch comes back empty recovers it; on Apache Kafka it reads nothing.
        """
        if not owned:
            return {}
        from aiokafka import AIOKafkaConsumer
        from aiokafka.structs import TopicPartition

        from streams.runtime.kafka_admin import parse_broker_url

        topic = self.journal.changelog_topic.get_topic_name()
        tps = [TopicPartition(topic, p) for p in sorted(owned)]
        consumer = AIOKafkaConsumer(
            bootstrap_servers=parse_broker_url(self.settings.broker), enable_auto_commit=False,
            group_id=None, fetch_max_wait_ms=200, **client_kwargs(self.settings),
        )
        tail: dict[bytes, tuple[int, bytes | None]] = {}
        await consumer.start()
        try:
            consumer.assign(tps)
            ends = await consumer.end_offsets(tps)
            for tp in tps:
                consumer.seek(tp, ends[tp])
            empty = 0
            while empty < 2:
                batch = await consumer.getmany(timeout_ms=300)
                records = [r for rs in batch.values() for r in rs]
                empty = 0 if records else empty + 1
                for record in records:
                    if record.key is not None:
                        tail[record.key] = (record.partition, record.value)
        finally:
            await consumer.stop()
        return tail

    # --- the agent ----------------------------------------------------------------
    async def _ingest(self, stream: faust.StreamT) -> None:
        # Batches, not one event per iteration: Faust's per-event machinery (an await, a
        # context switch and an ack per event) costs more than the engine's work on it. A batch
        # is processed without awaiting, then the loop runs (heartbeats, web, producer) before
        # the next one; BATCH bounds that synchronous stretch (a few tens of ms). take_events
        # acks the batch's events after the body returns, so a crash mid-batch replays them.
        within = self.settings.batch_within_s
        batches = cast(faust.Stream, stream).take_events(BATCH, within=within)  # not on StreamT
        fence = self.app.fence
        async for events in batches:
            # a worker whose partitions went to another one (a zombie) must not write
            if not await fence.admit(events):
                self._unacknowledged(events, 0, "dropped unapplied: no longer a group member")
                continue
            self._process(events)

    def _unacknowledged(self, events: Sequence[EventT], start: int, why: str) -> None:
        """Keep ``events[start:]`` out of every commit: their partitions' next owner (this worker
        after a restart, or another) reads them again."""
        guard = self.app.commit_guard
        for event in events[start:]:
            msg = event.message
            guard.hold(msg.tp, msg.offset, why)
            # acknowledged for Faust's revocation (it waits for every event taken) without being
            # recorded for the commit: Message.ack does nothing once `acked` is set
            msg.acked = True

    def _process(self, events: Sequence[EventT]) -> None:
        now = wall_ms()  # one arrival time per batch: its events were fetched together
        judge_events = self.ready and self.engine.clock == "event"
        done = 0
        try:
            for done, event in enumerate(events):  # noqa: B007 - read in the handler
                self._process_one(event, now, judge_events)
        except BaseException as exc:
            self._unacknowledged(events, done, f"processing failed: {exc!r}")
            raise

    def _process_one(self, event: EventT, now: int, judge_events: bool) -> None:
        engine, watch, guard = self.engine, self.watch, self.app.commit_guard
        msg = event.message
        self.positions[(msg.topic, msg.partition)] = msg.offset
        raw: bytes = event.value if isinstance(event.value, bytes) else b""
        topic = msg.topic
        if topic == REPARTITION:
            topic = _header(msg.headers, SOURCE_HEADER) or ""
        watch.note_arrival(topic, now)
        try:
            parsed = decode(topic, raw, now)
        except ContractError as exc:
            engine.reject(topic, str(exc))
            guard.track(msg.tp, msg.offset, self._dead_letter(msg, raw, topic, str(exc)))
            return
        partner = parsed.event.partner_id
        expected = self._partition_of(partner)
        if msg.topic != REPARTITION and msg.partition != expected:
            self.repartitioned += 1
            guard.track(msg.tp, msg.offset, self.repartition.send_soon(
                key=partner.encode(), value=raw, partition=expected,
                headers=[(SOURCE_HEADER, topic.encode())],
            ))
            return
        if judge_events and engine.has_room_for(partner):
            # judge at each minute boundary of the partner's event time: replays are repeatable
            # (not for a partner past the cap: its minute would be remembered for nothing)
            boundary = watch.due_for_event_clock(partner, parsed.ts_ms)
            if boundary is not None:
                self._deliver(watch.judge_partner(partner, boundary, self.stale))
                self.history.observe(engine, watch, [partner], boundary)
        result = engine.apply(parsed, now)
        if result.outcome is Outcome.REJECTED:
            guard.track(msg.tp, msg.offset, self._dead_letter(msg, raw, topic, result.reason))
        # store, then changelog, on the partition of the event being processed
        for key, value in engine.drain():
            guard.track(msg.tp, msg.offset, self.journal.write(msg.partition, key, value))

    def _partition_of(self, partner: str) -> int:
        """The partner's partition (murmur2 of its id), remembered: it is asked per event."""
        cache = self._partitions_by_partner
        part = cache.get(partner)
        if part is None:
            part = partition_for(partner, self.partitions)
            # bounded like the engine's partners: a flood of new ids is computed, not kept
            if len(cache) < self.settings.max_partners:
                cache[partner] = part
        return part

    # --- judgement and alerts -------------------------------------------------------
    async def _judge_tick(self) -> None:
        """Wall clock: judge every owned partner now."""
        if not self.ready:
            return
        try:
            now = wall_ms()
            self._health(now)
            owned = [p for p in self.engine.partner_ids() if self.owns(p)]
            self._deliver(self.watch.judge(owned, now, self.stale))
            self.history.observe(self.engine, self.watch, owned, now)
            self.last_judged_ms = now
        except Exception:
            # a Faust timer whose function raises stops for good, silently: never let it
            log.exception("judging failed; retrying at the next tick")

    async def _health_tick(self) -> None:
        """Event clock: partners are judged from the stream; feeds are still watched live."""
        if not self.ready:
            return
        try:
            self._health(wall_ms())
        except Exception:
            log.exception("feed health check failed; retrying at the next tick")

    def _health(self, now: int) -> None:
        stale = self.watch.stale_topics(now)
        for topic in sorted(stale - self.stale):
            log.warning("feed stale: no %s message for %.0fs; its partner alerts are held",
                        topic, self.settings.stale_after_s)
            if self.sender is not None:
                self.sender.set_active(
                    f"pipeline/{topic}",
                    {"alertname": PIPELINE_ALERT, "service": "partnerpulse", "scope": "pipeline",
                     "topic": topic, "severity": "critical"},
                    {"summary": f"No {topic} events for {self.settings.stale_after_s:.0f}s: "
                                "partner alerts on KPIs fed by it are held",
                     "runbook_url": self.settings.runbook_url},
                    now)
        for topic in sorted(self.stale - stale):
            log.warning("feed back: %s", topic)
            if self.sender is not None:
                self.sender.resolve(f"pipeline/{topic}", now)
        self.stale = stale

    def _deliver(self, alerts: list[Alert]) -> None:
        for alert in alerts:
            log.warning("kpi state %s", alert.summary())
            self.alerts.send_soon(key=alert.partner.encode(), value=alert.to_json())
            if self.sender is None:
                continue
            key = f"{alert.partner}/{alert.kpi}/{alert.window}"
            new = State(alert.new)
            if new in SEVERITY:
                labels = {"alertname": ALERT_NAME[new], "service": "partnerpulse",
                          "scope": "partner", "partner": alert.partner, "tier": alert.tier,
                          "kpi": alert.kpi, "window": alert.window, "severity": SEVERITY[new]}
                value = "n/a" if alert.value is None else f"{alert.value:.4g}"
                annotations = {
                    "summary": alert.summary(),
                    "value": value, "target": f"{alert.target:.4g}",
                    "dashboard": f"{self.settings.dashboard_url}?var-partner={alert.partner}",
                    "runbook_url": self.settings.runbook_url,
                }
                self.sender.set_active(key, labels, annotations, alert.since_ms)
            else:
                self.sender.resolve(key, alert.since_ms)

    async def _run_sender(self) -> None:
        assert self.sender is not None
        await self.sender.run()

    # --- health (for the exporter) ----------------------------------------------------
    def lag(self) -> dict[tuple[str, int], int]:
        """Messages behind the high watermark, per input partition this worker processes."""
        out: dict[tuple[str, int], int] = {}
        consumer = self.app.consumer
        for (topic, partition), offset in list(self.positions.items()):
            if partition not in self._owned:
                continue
            try:
                highwater = consumer.highwater(TP(topic, partition))
            except Exception:
                continue
            if highwater is not None:
                out[(topic, partition)] = max(0, highwater - offset - 1)
        return out

    def last_fetch_ms(self) -> int | None:
        """Wall time of the broker's newest fetch answer for an owned input partition.

        Why: a frozen or unreachable broker shows nowhere else. Lag is computed from the last
        answer and freezes with it, and quiet partners look like a dead feed. aiokafka stamps
        each partition on every fetch answer, records or not, so the age grows only while no
        answer comes.
        """
        try:
            consumer = self.app.consumer._thread._ensure_consumer()  # type: ignore[attr-defined]
            stamps = [consumer.last_poll_timestamp(tp) for tp in list(consumer.assignment())
                      if tp.topic in (*TOPICS, REPARTITION)]
        except Exception:  # not started yet, or the assignment changed under us
            stamps = []
        # remembered: a lost broker also costs the assignment (the group must be rejoined), and
        # the figure must keep growing then instead of disappearing
        newest = max((s for s in stamps if s is not None), default=None)
        if newest is not None and (self._last_fetch_ms is None or newest > self._last_fetch_ms):
            self._last_fetch_ms = newest
        return self._last_fetch_ms

    def delivery(self) -> dict[str, tuple[str, str, float]]:
        """Alert delivery figures, and when partners were last judged."""
        out: dict[str, tuple[str, str, float]] = {}
        if self.last_judged_ms is not None:
            out["partnerpulse_last_judged_timestamp_seconds"] = (
                "gauge", "Wall time of the last judging tick (wall clock mode).",
                self.last_judged_ms / 1000)
        fetched_ms = self.last_fetch_ms()
        if fetched_ms is not None:
            out["partnerpulse_consumer_fetch_age_seconds"] = (
                "gauge", "Seconds since the broker last answered a fetch for this worker's input "
                "partitions: grows while the broker is unreachable or the consumer is stalled.",
                max(0.0, (wall_ms() - fetched_ms) / 1000))
        guard, fence = self.app.commit_guard, self.app.fence
        out |= {
            "partnerpulse_write_failures": (
                "counter", "Writes made for input events (journal changelog, repartition, dead "
                "letter) that the broker did not take; each holds its partition's commit.",
                guard.send_failures),
            "partnerpulse_commit_held_partitions": (
                "gauge", "Input partitions whose offset commit is held at a failed write or a "
                "failed event until they are reassigned (a restart reads from there).",
                guard.held),
            "partnerpulse_fence_held_batches": (
                "counter", "Batches held because no heartbeat had proven group membership "
                "within half the session timeout.", fence.held_batches),
            "partnerpulse_fence_dropped_events": (
                "counter", "Events dropped unapplied because this worker had left the group "
                "(their new owner reads them).", fence.dropped_events),
        }
        if self.sender is None:
            return out
        return out | {
            "partnerpulse_alertmanager_posts": (
                "counter", "Batches of alerts Alertmanager accepted.", self.sender.sent_batches),
            "partnerpulse_alertmanager_failed_posts": (
                "counter", "Posts to Alertmanager that failed (retried).", self.sender.failed_posts),
            "partnerpulse_alertmanager_dropped_alerts": (
                "counter", "Alerts and resolutions dropped because max_pending were already "
                "queued for an Alertmanager.", self.sender.dropped),
            "partnerpulse_alertmanager_pending_alerts": (
                "gauge", "Alerts and resolutions not yet accepted by Alertmanager.",
                self.sender.pending),
        }

    def _dead_letter(self, msg: Any, raw: bytes, topic: str, reason: str) -> Any:
        """Send the message to the dead-letter topic; returns the send's future."""
        # the log names the message, not its content: quoted values are elided from the reason
        # (the pp-reason header keeps them, next to the original bytes)
        log.warning("dead letter %s[%s]@%s: %s", msg.topic, msg.partition, msg.offset,
                    redact(reason))
        return self.dead_letter.send_soon(
            key=msg.key if isinstance(msg.key, bytes) else None,
            value=raw,
            headers=[
                (REASON_HEADER, reason.encode()),
                (SOURCE_HEADER, topic.encode()),
                ("pp-partition", str(msg.partition).encode()),
                ("pp-offset", str(msg.offset).encode()),
            ],
        )

    # --- web ----------------------------------------------------------------------
    def _add_views(self) -> None:
        pipeline = self
        from streams.outputs.wall import WALL_CSP, WALL_HTML, snapshot

        def headers(content_type: str, csp: str = "default-src 'none'; frame-ancestors 'none'"
                    ) -> dict[str, str]:
            """Every view's headers: a browser must not sniff a type, frame a page, or run or
            load anything but the wall's own script and style (data views allow nothing)."""
            return {"Content-Type": content_type, "Content-Security-Policy": csp,
                    "X-Content-Type-Options": "nosniff", "X-Frame-Options": "DENY"}

        json_type = "application/json"

        class Metrics(faust.web.View):
            """Prometheus exposition of this worker's partners."""

            async def get(self, request: faust.web.Request) -> faust.web.Response:
                body = pipeline.collector.exposition()  # direct text: see streams/outputs/exporter.py
                return self.bytes(body, headers=headers(CONTENT_TYPE_LATEST))

        class Ready(faust.web.View):
            """Readiness: partitions held, partners exported, counts; 503 until recovered."""

            async def get(self, request: faust.web.Request) -> faust.web.Response:
                body = pipeline.status()
                return self.bytes(orjson.dumps(body), status=200 if body["ready"] else 503,
                                  headers=headers(json_type))

        self.app.page("/metrics")(Metrics)
        self.app.page("/ready")(Ready)

        # --- live wall (streams/outputs/wall.py) -----------------------------------------------
        class Wall(faust.web.View):
            """The live wall page: one self-contained HTML document."""

            async def get(self, request: faust.web.Request) -> faust.web.Response:
                return self.bytes(WALL_HTML, headers=headers("text/html; charset=utf-8", WALL_CSP))

        class WallApi(faust.web.View):
            """The wall's data: a tile per owned partner, worst first."""

            async def get(self, request: faust.web.Request) -> faust.web.Response:
                engine = pipeline.engine
                owned = [p for p in engine.partner_ids() if pipeline.owns(p)]
                body = snapshot(engine, pipeline.watch, owned, engine.now(wall_ms()), pipeline.history)
                return self.bytes(orjson.dumps(body),
                                  headers=headers(json_type) | {"Cache-Control": "no-store"})

        self.app.page("/wall")(Wall)
        self.app.page("/api/wall")(WallApi)
        # --- end live wall -----------------------------------------------------------------

        from streams.outputs.report import month_state

        class ReportApi(faust.web.View):
            """Calendar-month KPI values of the owned partners (``?month=2026-10``), for the
            report card; says which partitions they cover so a report can tell it is whole."""

            async def get(self, request: faust.web.Request) -> faust.web.Response:
                month = request.query.get("month", "")
                try:
                    MonthCalendar.parse(month)
                except ValueError as exc:
                    return self.bytes(orjson.dumps({"error": str(exc)}), status=400,
                                      headers=headers(json_type))
                engine = pipeline.engine
                owned = [p for p in engine.partner_ids() if pipeline.owns(p)]
                body = {**month_state(engine, owned, month), "ready": pipeline.ready,
                        "partitions": pipeline.partitions,
                        "owned_partitions": sorted(pipeline._owned) if pipeline.ready else []}
                return self.bytes(orjson.dumps(body), status=200 if pipeline.ready else 503,
                                  headers=headers(json_type))

        self.app.page("/api/report")(ReportApi)

    def status(self) -> dict[str, Any]:
        """What /ready reports."""
        engine = self.engine
        return {
            "ready": self.ready,
            "partitions": sorted(self._owned),
            "partners": [p for p in engine.partner_ids() if self.owns(p)],
            "event_clock_ms": engine.event_clock_ms,
            "recovered_events": self.recovered_events,
            "repartitioned": self.repartitioned,
            "recovery": self.recovery,
            "restoring": self.restoring,
            "last_judged_ms": self.last_judged_ms,
            "counts": {f"{t}:{o.value}": n for (t, o), n in sorted(engine.counts.items())},
        }
