"""The Faust layer's wiring: topics, the journal table, the agent and its timers, and the
agent's batch processing (the hot path).

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

The parts it composes, each in its own module: the Faust app and its configuration
(``faust_app``), which partitions this worker owns (``ownership``), the rebuild from the
journal (``recovery``), where alerts go (``alerting``), the health figures (``health``) and the
web views (``views``).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Generator, Sequence
from time import monotonic
from typing import Any, cast

import faust
import mode
from faust.types import TP, EventT

from streams.config.access import check_tokens_file
from streams.config.catalog import load_config
from streams.config.settings import Settings
from streams.engine.core import Engine, Outcome
from streams.ingest.contract import TOPICS, ContractError, decode, redact
from streams.ingest.topics import (
    ALERTS,
    DEAD_LETTER,
    REASON_HEADER,
    REPARTITION,
    SOURCE_HEADER,
    replication_configs,
)
from streams.judgement.tickets import TicketAlerts
from streams.judgement.watch import Watch
from streams.outputs.alertmanager import AlertFanout
from streams.outputs.exporter import KpiCollector, make_registry
from streams.outputs.wall import History
from streams.runtime.alerting import Alerting
from streams.runtime.checkpoints import Checkpoints
from streams.runtime.faust_app import worker_app
from streams.runtime.health import Health, wall_ms
from streams.runtime.journal_table import BulkLoadedMemoryStore, JournalTable
from streams.runtime.ownership import Ownership
from streams.runtime.pacing import LoopLag, run_paced
from streams.runtime.recovery import Recovery
from streams.runtime.skip_guard import SkipGuard
from streams.runtime.snapshots import Snapshots
from streams.runtime.views import add_views

log = logging.getLogger("partnerpulse")

BATCH = 500
"""Most events the agent takes at once (one synchronous stretch of processing)."""


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
        # read at start: a token file that cannot be used stops the worker, never opens it
        self.access_tokens = check_tokens_file(settings.access_tokens_file)
        self.web_bind = settings.web_bind
        self.app = worker_app(settings)
        self.partitions = settings.partitions
        self.source = self._raw_topic(*TOPICS, REPARTITION)
        self.repartition = self._raw_topic(REPARTITION)
        self.dead_letter = self._raw_topic(DEAD_LETTER)
        self.alerts = self._raw_topic(ALERTS)
        self.watch = Watch(self.engine, stale_after_ms=int(settings.stale_after_s * 1000))
        self.alerting = Alerting(settings, self.alerts, self.watch)
        if self.alerting.sender is not None:
            self.app.task(self.alerting.run_sender)
        self.tickets = TicketAlerts([k.id for k in catalog.kpis if k.ticket_alerts],
                                    settings.ticket_alerts_max)
        """Per-ticket alerts of the ``ticket_alerts`` KPIs (none: never asked)."""
        self.alerting.tickets = self.tickets
        if self.tickets.kpis and settings.clock == "wall":
            self.app.timer(settings.ticket_alerts_interval_s)(self._ticket_tick)
        self._wall = settings.clock == "wall"
        self._news: dict[str, None] = {}
        """Wall clock: the partners with events applied since the judge pass last took them,
        in the order of their first such event (the next pass judges them first, oldest news
        first; emptied by each pass, so it holds at most the owned partners)."""
        if settings.clock == "wall":
            self.app.task(self._judge_every_interval)
        else:
            self.app.timer(settings.judge_interval_s)(self._health_tick)
        # app.Table, with the memory store loaded in bulk (streams/runtime/journal_table.py says why)
        self.journal = JournalTable(
            self.app, name="journal", beacon=self.app.tables.beacon,
            partitions=settings.partitions, key_type=bytes, value_type=bytes,
            # min.insync.replicas of the changelog topic Faust creates (its replicas: the app's)
            extra_topic_configs=replication_configs(settings.topic_min_insync_replicas),
        )
        self.journal.snapshot_covers = self.engine.snapshot_covers
        store = self.journal.data
        if isinstance(store, BulkLoadedMemoryStore):
            store.checkpoint_dir = settings.data_dir / "checkpoints"
        self.app.tables.add(self.journal)
        self.ownership = Ownership(self.app, self.engine, settings.partitions,
                                   settings.max_partners)
        self._partition_of: Callable[[str], int] = self.ownership.partition_of
        """The hot path's handle on the ownership's partition cache (asked per event)."""
        self.skips = SkipGuard(settings)
        """Reads again what Faust's fetch loop skips across a rebalance (skip_guard says why)."""
        self.recovery = Recovery(settings, self.engine, self.journal, self.ownership, self.skips)
        self.journal.on_recover(self.recovery.on_recover)
        self.snapshots = Snapshots(settings, self.engine, self.journal, self.ownership,
                                   self.app.fence.proven)
        """Partner snapshots in the journal: a restart replays only the events after them."""
        self.app.timer(self.snapshots.tick_s)(self._snapshot_tick)
        self.journal_lock = asyncio.Lock()
        """Held by the agent around each batch, and by a checkpoint while it waits for the
        journal writes on their way (streams/runtime/checkpoints.py)."""
        self.checkpoints = Checkpoints(settings, self.journal, self.ownership, self.journal_lock,
                                       self.app.fence.proven)
        """The journal's checkpoints on disk: a restart reads the changelog from them on."""
        self.app.timer(self.checkpoints.tick_s)(self._checkpoint_tick)
        # An exception in the agent stops the worker (after the events from the failing one on
        # are kept out of the commit): a restart rebuilds a consistent state from the journal
        # and reads them again. Faust's default restarts the agent, whose state may then hold
        # half an event, and had acknowledged the rest of the batch (lost).
        self.app.agent(self.source, name="ingest", concurrency=1,
                       supervisor_strategy=mode.CrashingSupervisor)(self._ingest)
        self.app.on_partitions_revoked.connect(self._on_revoked)  # type: ignore[arg-type]
        self.app.on_partitions_assigned.connect(self.recovery.on_assigned)  # type: ignore[arg-type]
        self.repartitioned = 0
        """Events forwarded to the repartition topic (producers that did not key by partner)."""
        self.loop_lag = LoopLag()
        """How late the event loop runs what is due (exported; PartnerpulseWorkerStalled)."""
        self.app.task(self.loop_lag.run)
        self.health = Health(self.app, self.ownership, self.alerting, self.loop_lag)
        self.positions = self.health.positions
        """(topic, partition) -> last offset taken: the agent writes it, lag reads it."""
        self.history = History()
        """Last hour of each owned partner's 1h KPI values, for the wall's sparklines."""
        self.collector = KpiCollector(self.engine, self.ownership.owns, wall_ms, self.watch,
                                      self.health, ticket_alerts_max=settings.ticket_alerts_max)
        self.registry = make_registry(self.collector)
        self.scrape_lock = asyncio.Lock()
        """One /metrics render at a time (streams/runtime/views.py)."""
        add_views(self.app, self)

    def _raw_topic(self, *names: str) -> faust.TopicT:
        """Topics carry raw bytes: decoding and validation are the engine's job."""
        return self.app.topic(*names, key_type=bytes, value_type=bytes,
                              key_serializer="raw", value_serializer="raw")

    @property
    def sender(self) -> AlertFanout | None:
        """The Alertmanager fan-out (None without ``--alertmanager``)."""
        return self.alerting.sender

    @sender.setter
    def sender(self, sender: AlertFanout | None) -> None:
        self.alerting.sender = sender

    @property
    def _partitions_by_partner(self) -> dict[str, int]:
        """The partner -> partition cache (:attr:`Ownership.partition_cache`)."""
        return self.ownership.partition_cache

    async def _on_revoked(self, app: faust.App, revoked: set[TP], **_: Any) -> None:
        """Faust's on_partitions_revoked signal: ownership first (not ready, the revoked
        partners dropped), then the judge's and the wall's memory of the partners gone."""
        self.ownership.revoke(revoked)
        self.skips.forget()
        self.watch.forget(self.engine.partner_ids())
        self.history.forget(self.engine.partner_ids())
        self.alerting.deliver_tickets(self.tickets.keep(self.engine.partner_ids(), wall_ms()),
                                      self.engine.partners.tier)

    # --- timers -------------------------------------------------------------------
    async def _judge_every_interval(self) -> None:
        """Wall clock: a judge pass starts every ``judge_interval_s`` (at once after one that
        took longer).

        Why not Faust's ``app.timer``: it sleeps the interval after each run, so a pass of
        0.2 s under load made the period 0.7 s, and an alert waited for it. Measured on the
        latency benchmark's wall-clock run: passes of 150-250 ms at half the peak rate."""
        app, interval = self.app, self.settings.judge_interval_s
        due = monotonic() + interval
        while not app.should_stop:
            await app.sleep(max(0.0, due - monotonic()))
            if app.should_stop:
                break
            await self._judge_tick()
            due = max(due + interval, monotonic())

    async def _judge_tick(self) -> None:
        """Wall clock: judge every owned partner now, a slice at a time (:meth:`_judge_steps`)."""
        if not self.ownership.ready:
            return
        try:
            await run_paced(self._judge_steps())
        except Exception:
            # a Faust timer whose function raises stops for good, silently: never let it
            log.exception("judging failed; retrying at the next tick")

    def _judge_steps(self) -> Generator[None, None, None]:
        """Judge the owned partners one step each, delivering as it goes.

        Why steps: judging a fleet is seconds (streams/runtime/pacing.py), and between two
        slices the loop runs the agent, the views and a revocation. So each partner is judged
        at the clock of its own step, and a revocation ends the tick: the partners left are
        the next assignment's, judged by the next tick once it is recovered."""
        ownership, watch, alerting = self.ownership, self.watch, self.alerting
        generation = ownership.generation
        started = wall_ms()
        alerting.check_feeds(started)
        # Oldest news first, then the partners with a breach timer due or never judged, then
        # those only the clock moved. Why: an event waits for the pass to start, then for its
        # partner's step. Taken in the order their news came, the partners whose events waited
        # longest for the start wait least in the pass, so no event waits for both a whole
        # interval and a whole pass (which a fixed order allowed: the benchmark's p99).
        news = [p for p in self._news if ownership.owns(p)]
        self._news.clear()  # events from here on are news for the next pass
        taken = set(news)
        owned = [p for p in self.engine.partner_ids() if ownership.owns(p) and p not in taken]
        for i, partner in enumerate(news + watch.in_judging_order(owned, started)):
            if ownership.generation != generation or not ownership.ready:
                # the news not judged yet keeps its place, oldest first, ahead of what came
                # meanwhile: those of these partners still owned after the rebalance lead the
                # next pass in the order their events came
                self._news = dict.fromkeys([*news[i:], *self._news])
                return
            now = wall_ms()
            alerting.deliver(watch.judge_partner(partner, now, alerting.stale))
            alerting.deliver_integrity(watch.drain_integrity())
            self.history.observe(self.engine, watch, (partner,), now)
            yield
        self.health.last_judged_ms = started  # every owned partner judged at or after it

    async def _ticket_tick(self) -> None:
        """Wall clock: the ticket alerts of every owned partner (tickets age without events),
        a slice at a time as the judge tick's."""
        if not self.ownership.ready:
            return
        try:
            await run_paced(self._ticket_steps())
        except Exception:
            log.exception("ticket alerts failed; retrying at the next tick")

    def _ticket_steps(self) -> Generator[None, None, None]:
        """The ticket alerts of the owned partners, one step each (ended by a revocation)."""
        ownership = self.ownership
        generation = ownership.generation
        for partner in [p for p in self.engine.partner_ids() if ownership.owns(p)]:
            if ownership.generation != generation or not ownership.ready:
                return
            self._ticket_alerts([partner], wall_ms())
            yield

    def _ticket_alerts(self, partners: list[str], now: int) -> None:
        """Fire and resolve the ticket alerts of ``partners`` as their ledgers stand at ``now``."""
        tickets, engine = self.tickets, self.engine
        for partner in partners:
            kept, urgent = engine.most_urgent_open(partner, now, tickets.max_per_partner,
                                                   tickets.kpis)
            changes = tickets.update_urgent(partner, kept, urgent, now)
            if changes:
                self.alerting.deliver_tickets(changes, engine.partners.tier)

    async def _snapshot_tick(self) -> None:
        """Snapshot the owned partners that are due (streams/runtime/snapshots.py)."""
        try:
            await self.snapshots.tick()
        except Exception:
            log.exception("snapshots failed; retrying at the next tick")

    async def _checkpoint_tick(self) -> None:
        """Checkpoint the journal's partitions that are due (streams/runtime/checkpoints.py)."""
        try:
            await self.checkpoints.tick()
        except Exception:
            log.exception("journal checkpoints failed; retrying at the next tick")

    async def _health_tick(self) -> None:
        """Event clock: partners are judged from the stream; feeds are still watched live."""
        if not self.ownership.ready:
            return
        try:
            self.alerting.check_feeds(wall_ms())
        except Exception:
            log.exception("feed health check failed; retrying at the next tick")

    # --- the agent ----------------------------------------------------------------
    async def _ingest(self, stream: faust.StreamT) -> None:
        # Batches, not one event per iteration: Faust's per-event machinery (an await, a
        # context switch and an ack per event) costs more than the engine's work on it. A batch
        # is processed without awaiting, then the loop runs (heartbeats, web, producer) before
        # the next one; BATCH bounds that synchronous stretch (a few tens of ms). take_events
        # acks the batch's events after the body returns, so a crash mid-batch replays them.
        within = self.settings.batch_within_s
        batches = cast(faust.Stream, stream).take_events(BATCH, within=within)  # not on StreamT
        fence, lock = self.app.fence, self.journal_lock
        async for events in batches:
            # not while a checkpoint waits for the journal's writes; and the fence is asked
            # once the lock is held, so that no wait comes between its answer and the writes
            async with lock:
                # a worker whose partitions went to another one (a zombie) must not write
                if not await fence.admit(events):
                    self._unacknowledged(events, 0, "dropped unapplied: no longer a group member")
                    continue
                if self.skips.expected:
                    await self._process_after_rebalance(events)
                else:
                    self._process(events)

    async def _process_after_rebalance(self, events: Sequence[EventT]) -> None:
        """Process a batch that may hold a partition's first event since the recovery: a gap
        before it (events the fetch loop skipped) is read and applied first, in offset order."""
        skips, start = self.skips, 0
        for i, event in enumerate(events):
            msg = event.message
            gap = skips.gap_before(msg.tp, msg.offset)
            if gap is None:
                continue
            self._process(events[start:i])
            start = i
            try:
                missed = await skips.read(msg.tp, gap, msg.offset)
            except Exception as exc:
                # not read now: the commit stays before the gap, the next owner reads it
                log.exception("could not read %s[%d] %d-%d again", msg.topic, msg.partition,
                              gap, msg.offset - 1)
                self.app.commit_guard.hold(msg.tp, gap, f"skipped events not read again: {exc!r}")
                continue
            self._process(cast(Sequence[EventT], missed))
        self._process(events[start:])

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
        judge_events = self.ownership.ready and self.engine.clock == "event"
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
                self.alerting.deliver(watch.judge_partner(partner, boundary, self.alerting.stale))
                self.alerting.deliver_integrity(watch.drain_integrity())
                self.history.observe(engine, watch, [partner], boundary)
                if self.tickets.kpis:
                    self._ticket_alerts([partner], boundary)
        result = engine.apply(parsed, now)
        if self._wall and result.outcome is Outcome.ACCEPTED:
            self._news.setdefault(partner)  # judged first by the next pass (_judge_steps)
        if result.outcome is Outcome.REJECTED:
            guard.track(msg.tp, msg.offset, self._dead_letter(msg, raw, topic, result.reason))
        # store, then changelog, on the partition of the event being processed
        for key, value in engine.drain():
            guard.track(msg.tp, msg.offset, self.journal.write(msg.partition, key, value))

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

    def _journal_held(self) -> dict[str, int] | None:
        """The in-memory journal's records, and the event records it forgot as snapshots
        covered them (None on the RocksDB store, which keeps every record on disk)."""
        store = self.journal.data
        if not isinstance(store, BulkLoadedMemoryStore):
            return None
        return {"records": len(store.data), "forgotten": store.covered.forgotten}

    def status(self) -> dict[str, Any]:
        """What /ready reports."""
        engine, ownership, recovery = self.engine, self.ownership, self.recovery
        return {
            "ready": ownership.ready,
            "partitions": sorted(ownership.owned),
            "partners": [p for p in engine.partner_ids() if ownership.owns(p)],
            "event_clock_ms": engine.event_clock_ms,
            "recovered_events": recovery.recovered_events,
            "repartitioned": self.repartitioned,
            "refetched": {"gaps": self.skips.gaps, "events": self.skips.refetched},
            "recovery": recovery.last,
            "snapshots": self.snapshots.status(),
            "checkpoints": self.checkpoints.status(),
            "journal": self._journal_held(),
            "restoring": recovery.restoring,
            "last_judged_ms": self.health.last_judged_ms,
            "counts": {f"{t}:{o.value}": n for (t, o), n in sorted(engine.counts.items())},
            # the offset of the last message taken per owned input partition: caught up when
            # it reaches the partition's last offset (counts alone cannot say: an event
            # delivered again after a crash counts again)
            "positions": {f"{t}/{p}": o for (t, p), o in sorted(self.positions.items())
                          if p in ownership.owned},
        }
