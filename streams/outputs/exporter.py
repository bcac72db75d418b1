"""Prometheus export of the engine's state (the metric names are a contract).

The worker renders ``/metrics`` as text straight from the engine at scrape time
(:meth:`KpiCollector.exposition`): a partner whose partitions moved to another worker
disappears from this worker's ``/metrics`` at the next scrape. prometheus_client's
generic path (a Metric object per family, a Sample tuple per series, then text) costs
several microseconds per series, which at 10,000 partners is most of the scrape; here the
series are written from cached label fragments, each partner x window's numbers by one
``orjson.dumps``.

What is exported per partner: the KPI value, samples and attainment in each exported
window (catalog ``settings.export_windows``; every window when empty), the judged state as
**one series per partner x KPI x window, labelled with the current state** (value 1; the
series of a state left is no longer exported, so Prometheus marks it stale), when that state
began, the KPI targets, open items and the partner's tier. Queries written for a one-hot
state (``partnerpulse_kpi_state{state="breach"} == 1``) work unchanged.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Generator, Iterator, Mapping
from dataclasses import dataclass
from itertools import accumulate
from typing import Protocol

import orjson
from prometheus_client import CollectorRegistry
from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from streams.config.catalog import Partners
from streams.engine.core import OPEN_ITEM_STAGES, Engine, KpiValue, Outcome, attainment
from streams.ingest.contract import TOPICS
from streams.judgement.judge import Judgement, State
from streams.judgement.watch import Watch
from streams.outputs.forecasts import MonthEndForecasts
from streams.outputs.series import (
    CONSUMER_LAG,
    EVENTS,
    EVENTS_TOTAL,
    FEED_STALE_FLAG,
    HELP,
    INTEGRITY_FLAG,
    INTEGRITY_SCORE,
    KPI_ATTAINMENT,
    KPI_CHANNEL_SAMPLES,
    KPI_CHANNEL_VALUE,
    KPI_SAMPLES,
    KPI_STATE,
    KPI_STATE_SINCE,
    KPI_TARGET,
    KPI_VALUE,
    LAST_EVENT_TIMESTAMP,
    OPEN_ITEMS,
    OPEN_OLDEST_AGE,
    PARTNER_INFO,
    REPORT_PROJECTED_BAND,
    REPORT_RESTATEMENTS,
    REPORT_RESTATEMENTS_TOTAL,
    URGENT_TICKET_LEFT,
)
from streams.outputs.steps import finish


def _num(value: float) -> str:
    """A sample value as exposition text (Go's spelling of the non-finite values)."""
    if value - value == 0:  # finite
        return repr(float(value))
    if math.isnan(value):
        return "NaN"
    return "+Inf" if value > 0 else "-Inf"


def _numbers(numbers: list[float]) -> list[bytes]:
    """Each number's text, in order: orjson's shortest round-trip spelling (an exponent is
    written ``1e16`` where Python writes ``1e+16``; Prometheus's parser reads the same float)."""
    if not numbers:
        return []
    try:
        text = orjson.dumps(numbers, option=orjson.OPT_SERIALIZE_NUMPY)
    except TypeError:
        text = b"null"
    if b"null" in text:  # a non-finite value (orjson writes null), or a type it does not know
        return [(str(x) if isinstance(x, int) else _num(x)).encode() for x in numbers]
    return text[1:-1].split(b",")


def _label(value: str) -> str:
    """A label value escaped for the text format."""
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


_STATE = {state: _label(state.value) for state in State}


def _header(name: str, kind: str, help_text: str) -> str:
    if kind == "counter":
        name += "_total"
    escaped = help_text.replace("\\", "\\\\").replace("\n", "\\n")
    return f"# HELP {name} {escaped}\n# TYPE {name} {kind}\n"


BLOCK_BYTES = 1 << 20
"""About how much of ``/metrics`` the worker hands to the socket at a time."""

_PER_WINDOW = (KPI_VALUE, KPI_SAMPLES, KPI_ATTAINMENT, KPI_CHANNEL_VALUE, KPI_CHANNEL_SAMPLES)
"""The families kept per partner x window (rendered from its values), in chunk order."""
_NO_SERIES = (b"",) * len(_PER_WINDOW)
_VALUE, _SAMPLES, _ATTAINMENT, _CHANNEL_VALUE, _CHANNEL_SAMPLES = (
    name.encode() for name in _PER_WINDOW)
_PER_PARTNER = (KPI_TARGET, PARTNER_INFO, KPI_STATE, KPI_STATE_SINCE)
"""The families kept per partner (rendered from its targets and judgements), in order."""


def blocks(pieces: list[bytes]) -> Iterator[bytes]:
    """The exposition's pieces joined into blocks of about :data:`BLOCK_BYTES`, in order.

    Why blocks: at 10,000 partners the body is about 650 MiB. Joined into one object it is as
    much fresh memory at every scrape (the join alone was 0.6 s of a 1.5 s scrape, most of it
    the kernel handing over new pages), held until the last byte is sent. Blocks of 1 MiB are
    copied into memory the allocator has just freed. The pieces are one scrape's series, read
    before the first block is made, so the blocks are too whenever they are sent."""
    # where each block ends, found by bisection over the pieces' running lengths (all made in
    # C): a Python step per piece was about 3 us a partner (some 40 pieces each)
    ends = list(accumulate(map(len, pieces)))
    start = 0
    while start < len(pieces):
        done = ends[start - 1] if start else 0
        stop = bisect_left(ends, done + BLOCK_BYTES, start) + 1  # the piece reaching it
        yield b"".join(pieces[start:stop])
        start = stop


@dataclass(slots=True)
class _Rendered:
    """What one scrape wrote for one partner, kept for the next while its inputs stay put."""

    partners: Partners
    """The partner file it was rendered with (targets, tier): another one renders anew."""
    judged: int
    """The watch's stamp of the partner's judgements it was rendered with."""
    goals: list[float]
    """The partner's target per KPI, in catalog order."""
    head: tuple[bytes, bytes, bytes, bytes]
    """Its series of each family in ``_PER_PARTNER``."""
    views: list[Mapping[tuple[str, str], KpiValue] | None]
    """Per exported window: the values it was rendered from (compared by identity)."""
    chunks: list[tuple[bytes, ...]]
    """Per exported window: its series of each family in ``_PER_WINDOW``."""
    open_counts: tuple[int, ...] = ()
    """The open-item counts (by KPI and stage) ``open_items`` was written from."""
    open_items: str = ""
    """Its open-items series: they change only when an item opens, closes or ages past a
    stage, so most scrapes copy them."""


class KpiCollector(Collector):
    """Renders partnerpulse_* series from an engine for the partners this worker owns.

    A scrape costs what changed since the last one: each partner x window's series are kept
    as text and written again only when that window's values (:meth:`Engine.window_values`,
    a new object when one changes), the partner's judgements (:attr:`Watch.versions`) or
    the partner file changed (the cache contract: :mod:`streams.judgement.watch`). A new
    minute rewrites the 1 h window's series of partners with recent samples; the
    hour-resolution windows move once an hour or with new events. The kept text costs about
    as much memory as one scrape's body.
    """

    def __init__(
        self,
        engine: Engine,
        owned: Callable[[str], bool],
        wall_ms: Callable[[], int],
        watch: Watch | None = None,
        health: PipelineHealth | None = None,
        windows: tuple[str, ...] | None = None,
        ticket_alerts_max: int = 20,
    ) -> None:
        self.engine = engine
        self.ticket_kpis = frozenset(k.id for k in engine.catalog.kpis if k.ticket_alerts)
        """KPIs with ticket alerts: their most urgent tickets are series of their own."""
        self.ticket_alerts_max = ticket_alerts_max
        self.owned = owned
        self.wall_ms = wall_ms
        self.forecasts = MonthEndForecasts(engine)
        self.watch = watch
        self.health = health
        catalog = engine.catalog
        # ``windows`` overrides the catalog's settings.export_windows (every window when empty)
        exported = windows or catalog.export_windows or tuple(catalog.windows)
        self.windows: tuple[str, ...] = tuple(w for w in catalog.windows if w in exported)
        """The windows exported on /metrics, in catalog order."""
        # per KPI: `,kpi=".."} `; per exported window, per KPI judged in it: its catalog index,
        # the KPI, the evaluate() key, the label tail `,kpi="..",window=".."} ` and the state
        # series' `...,state="`
        self._kpi_tails = [f',kpi="{_label(kpi.id)}"}} ' for kpi in engine.kpis]
        self._window_kpis = [
            [(k, kpi, (kpi.id, w), f',kpi="{_label(kpi.id)}",window="{_label(w)}"}} ',
              f',kpi="{_label(kpi.id)}",window="{_label(w)}",state="')
             for k, kpi in enumerate(engine.kpis) if w in kpi.windows]
            for w in self.windows
        ]
        # per exported window: each per-channel KPI counted in it, its evaluate() key and its
        # label tail `,kpi="<catalog id>",window="..",channel=".."} `
        self._window_channels = [
            [((kpi.id, w), f',kpi="{_label(kpi.base or kpi.id)}",window="{_label(w)}",'
                           f'channel="{_label(kpi.channel or "")}"}} ')
             for kpi in catalog.channel_kpis if w in kpi.windows]
            for w in self.windows
        ]
        # the same, as bytes, for the series written from the window's values
        self._window_lines = [[(k, kpi, key, tail.encode()) for k, kpi, key, tail, _ in kpis]
                              for kpis in self._window_kpis]
        self._channel_lines = [[(key, tail.encode()) for key, tail in channels]
                               for channels in self._window_channels]
        self._stage_tails = {(kpi.id, stage): f',kpi="{_label(kpi.id)}",stage="{stage * 100:.0f}"}} '
                             for kpi in engine.kpis for stage in OPEN_ITEM_STAGES}
        """(kpi id, stage) -> the label tail of its open-items series."""
        self._partner_label: dict[str, str] = {}
        self._rendered: dict[str, _Rendered] = {}
        self._integrity_text: tuple[tuple[object, ...], tuple[list[str], list[str]]] | None = None

    def _partner(self, partner: str) -> str:
        """``{partner="..."`` for the partner, escaped once and cached."""
        label = self._partner_label.get(partner)
        if label is None:
            if len(self._partner_label) > 4 * len(self.engine.state) + 1000:
                self._partner_label.clear()  # partners that moved away
            label = self._partner_label[partner] = f'{{partner="{_label(partner)}"'
        return label

    def collect(self) -> Iterator[Metric]:
        """The same series as metric families, for generic registry users (the worker serves
        :meth:`exposition`, which is what this parses)."""
        yield from text_string_to_metric_families(self.exposition().decode())

    def _start(self, partner: str, p: str, judged: int,
                judgements: dict[tuple[str, str, str], Judgement]) -> _Rendered:
        """A partner's record with its target, info and state series, its values still to
        render."""
        partners = self.engine.partners
        goals = [float(partners.target(partner, kpi)) for kpi in self.engine.kpis]
        target = "".join(f"{KPI_TARGET}{p}{tail}{goal!r}\n"
                         for tail, goal in zip(self._kpi_tails, goals, strict=True))
        info = f'{PARTNER_INFO}{p},tier="{_label(partners.tier(partner))}"}} 1.0\n'
        state: list[str] = []
        since: list[str] = []
        for window, kpis in zip(self.windows, self._window_kpis, strict=True):
            for _, kpi, _, tail, state_tail in kpis:
                judgement = judgements.get((partner, kpi.id, window))
                if judgement is None:
                    continue
                state.append(f'{KPI_STATE}{p}{state_tail}'
                             f'{_STATE[judgement.state]}"}} 1.0\n')
                if judgement.since_ms is not None:
                    since.append(f"{KPI_STATE_SINCE}{p}{tail}"
                                 f"{judgement.since_ms / 1000.0!r}\n")
        n = len(self.windows)
        return _Rendered(partners, judged, goals,
                         (target.encode(), info.encode(), "".join(state).encode(),
                          "".join(since).encode()),
                         [None] * n, [_NO_SERIES] * n)

    def _window(self, p: str, i: int, values: Mapping[tuple[str, str], KpiValue],
                goals: list[float]) -> tuple[bytes, ...]:
        """One partner x window's value, samples and attainment series, and its per-channel
        value and samples series."""
        # Every number of the window is written by one orjson.dumps: Python's float repr cost
        # about 280 ns a value, most of the series' cost, and a new minute rewrites the 1 h
        # window of every partner with recent samples (42 numbers each in the default catalog).
        numbers: list[float] = []
        present: list[bytes] = []
        for k, kpi, key, tail in self._window_lines[i]:
            kv = values.get(key)
            if kv is not None:
                numbers += (kv.value, kv.samples, attainment(kpi, kv.value, goals[k]))
                present.append(tail)
        by_channel: list[bytes] = []
        for key, tail in self._channel_lines[i]:
            kv = values.get(key)
            if kv is not None:
                numbers += (kv.value, kv.samples)
                by_channel.append(tail)
        text = _numbers(numbers)
        p_ = p.encode()
        value: list[bytes] = []
        samples: list[bytes] = []
        attained: list[bytes] = []
        j = 0
        for tail in present:  # pieces joined once per family: no string built per series
            value += (_VALUE, p_, tail, text[j], b"\n")
            samples += (_SAMPLES, p_, tail, text[j + 1], b".0\n")
            attained += (_ATTAINMENT, p_, tail, text[j + 2], b"\n")
            j += 3
        by_value: list[bytes] = []
        by_samples: list[bytes] = []
        for tail in by_channel:
            by_value += (_CHANNEL_VALUE, p_, tail, text[j], b"\n")
            by_samples += (_CHANNEL_SAMPLES, p_, tail, text[j + 1], b".0\n")
            j += 2
        return (b"".join(value), b"".join(samples), b"".join(attained),
                b"".join(by_value), b"".join(by_samples))

    def exposition(self) -> bytes:
        """Every series at this moment, in the Prometheus text format (0.0.4)."""
        return b"".join(self._pieces())

    def exposition_blocks(self) -> Iterator[bytes]:
        """:meth:`exposition` in blocks of about :data:`BLOCK_BYTES`, as the worker sends it
        (:func:`blocks`)."""
        return blocks(self._pieces())

    def _pieces(self) -> list[bytes]:
        """The exposition's text as pieces, in order, rendered in one go."""
        return finish(self.render())

    def render(self) -> Generator[None, None, list[bytes]]:
        """The exposition's text as pieces, in order (family headers, then their series),
        rendered one owned partner per step; the pieces are the generator's return value.

        Why steps: a scrape of a large fleet is seconds of work (at 10,000 partners about 1 s
        in a new minute, 10 s in the first of a new hour), and the worker's event loop also
        runs its agent and its other views. The worker renders a few tens of milliseconds'
        steps at a time and lets the loop run between them (streams/runtime/pacing.py). Between two
        steps events may be applied and partitions revoked: each step reads the clock and
        asks whether the partner is still owned: each partner's series are one moment's, and
        a partner revoked before its step is left out (one revoked after it is exported as
        it stood when it was owned, as by a scrape that ended just before the revocation).
        A partner first seen after the scrape began is exported from the next one."""
        engine = self.engine
        watch = self.watch
        judgements: dict[tuple[str, str, str], Judgement] = watch.judgements if watch else {}
        versions = watch.versions if watch else {}
        items: list[str] = []
        oldest: list[str] = []
        urgent: list[str] = []
        restatements: list[str] = []
        last, rendered = self._rendered, {}
        for partner in engine.partner_ids():  # a sorted copy: partners come and go meanwhile
            if not self.owned(partner):
                continue
            now = engine.now(self.wall_ms())
            partners = engine.partners
            p = self._partner(partner)
            judged = versions.get(partner, 0)
            r = last.get(partner)
            if r is None or r.partners is not partners or r.judged != judged:
                r = self._start(partner, p, judged, judgements)
            views = engine.window_values(partner, now, self.windows)
            for i, window in enumerate(self.windows):
                values = views.get(window)
                if values is not r.views[i]:
                    r.views[i] = values
                    r.chunks[i] = (self._window(p, i, values, r.goals)
                                   if values is not None else _NO_SERIES)
            rendered[partner] = r
            restated = engine.restatements(partner)
            if restated is not None:
                restatements.append(f"{REPORT_RESTATEMENTS_TOTAL}{p}}} {restated}.0\n")
            if watch is not None:
                counts = engine.open_items(partner, now)
                if (key := tuple(counts.values())) != r.open_counts or not r.open_items:
                    r.open_counts = key
                    r.open_items = "".join(
                        f"{OPEN_ITEMS}{p}{self._stage_tails[kpi_id, stage]}{count}.0\n"
                        for (kpi_id, stage), count in counts.items())
                items.append(r.open_items)
                for kpi_id, age_ms in sorted(engine.oldest_open(partner, now).items()):
                    oldest.append(f'{OPEN_OLDEST_AGE}{p},kpi="{_label(kpi_id)}"}} '
                                  f"{_num(max(age_ms, 0) / 1000.0)}\n")
                if self.ticket_kpis:
                    tickets, _ = engine.most_urgent_open(partner, now, self.ticket_alerts_max,
                                                         self.ticket_kpis)
                    urgent += [f'{URGENT_TICKET_LEFT}{p},kpi="{_label(i.kpi)}",'
                               f'ticket="{_label(i.entity_id)}",state="{i.state}"}} '
                               f"{_num(i.left_ms / 1000.0)}\n" for i in tickets]
            yield
        # then the families in order, a step after each month-end forecast (a few ms each)
        # and one before the pipeline's families
        now = engine.now(self.wall_ms())
        self._rendered = rendered  # partners no longer exported are let go
        records = list(rendered.values())
        text: list[bytes] = []
        for f, name in enumerate(_PER_WINDOW):
            text.append(_header(name, "gauge", HELP[name]).encode())
            text += [chunks[f] for r in records for chunks in r.chunks]
        for f, name in enumerate(_PER_PARTNER):
            if f >= 2 and watch is None:
                break  # no judgements: no state series
            text.append(_header(name, "gauge", HELP[name]).encode())
            text += [r.head[f] for r in records]
        if restatements:
            text.append(_header(REPORT_RESTATEMENTS, "counter", HELP[REPORT_RESTATEMENTS]).encode())
            text += [line.encode() for line in restatements]
        kept = yield from self.forecasts.refresh(rendered, now, self.wall_ms())
        if kept:
            text.append(_header(REPORT_PROJECTED_BAND, "gauge",
                                HELP[REPORT_PROJECTED_BAND]).encode())
            text += [f'{REPORT_PROJECTED_BAND}{self._partner(partner)},band="{_label(band)}"}} '
                     f"{share!r}\n".encode()
                     for partner, forecast in sorted(kept.items())
                     for band, share in forecast.bands]
        yield
        text.append(self._pipeline(items, oldest, urgent).encode())
        return text

    def _pipeline(self, items: list[str], oldest: list[str], urgent: list[str]) -> str:
        """The families beyond the partners: open items, feeds, lag, events, delivery."""
        engine = self.engine
        watch = self.watch
        out: list[tuple[str, str, list[str]]] = []
        if watch is not None:
            stale_now = watch.stale_topics(self.wall_ms())
            flags, scores = self._integrity(watch)
            out += [
                (OPEN_ITEMS, "gauge", items),
                (OPEN_OLDEST_AGE, "gauge", oldest),
                (URGENT_TICKET_LEFT, "gauge", urgent),
                (INTEGRITY_FLAG, "gauge", flags),
                (INTEGRITY_SCORE, "gauge", scores),
                (FEED_STALE_FLAG, "gauge", [
                    f'{FEED_STALE_FLAG}{{topic="{_label(topic)}"}} '
                    f"{1.0 if topic in stale_now else 0.0}\n"
                    for topic in sorted(watch.last_arrival_ms)]),
            ]
            if self.health is not None:
                out.append((CONSUMER_LAG, "gauge", [
                    f'{CONSUMER_LAG}{{topic="{_label(topic)}",'
                    f'partition="{partition}"}} {_num(behind)}\n'
                    for (topic, partition), behind in sorted(self.health.lag().items())]))
        out.append((EVENTS, "counter", [
            f'{EVENTS_TOTAL}{{topic="{_label(topic)}",outcome="{outcome.value}"}} '
            f"{_num(engine.counts.get((topic, outcome), 0))}\n"
            for topic in TOPICS for outcome in Outcome]))
        out.append((LAST_EVENT_TIMESTAMP, "gauge", [
            f'{LAST_EVENT_TIMESTAMP}{{topic="{_label(topic)}"}} '
            f"{_num(ts / 1000.0)}\n"
            for topic, ts in sorted(engine.last_event_ms.items())]))
        tail = [piece for name, kind, lines in out
                for piece in (_header(name, kind, HELP[name]), *lines)]
        # (the 0.0.4 text format names a counter family by its sample: partnerpulse_events_total)
        if watch is not None and self.health is not None:
            for name, (kind, help_text, number) in sorted(self.health.delivery().items()):
                sample = f"{name}_total" if kind == "counter" else name
                tail += [_header(name, kind, help_text), f"{sample} {_num(number)}\n"]
        return "".join(tail)


    def _integrity(self, watch: Watch) -> tuple[list[str], list[str]]:
        """The integrity lens's flag (while one holds) and score series of owned partners: kept
        until the lens's evidence or the partners exported change (sorting and writing every
        held signal of a large fleet at each scrape cost a fifth of a cold scrape)."""
        key = (watch.lens.version, tuple(self._rendered))
        if self._integrity_text is not None and self._integrity_text[0] == key:
            return self._integrity_text[1]
        flags: list[str] = []
        scores: list[str] = []
        for (partner, kpi, signal), held in sorted(watch.lens.held.items()):
            if not self.owned(partner):
                continue
            labels = (f'{self._partner(partner)},kpi="{_label(kpi)}",signal="{_label(signal)}"}} ')
            scores.append(f"{INTEGRITY_SCORE}{labels}{_num(held.finding.score)}\n")
            if held.since_ms is not None:
                flags.append(f"{INTEGRITY_FLAG}{labels}1.0\n")
        self._integrity_text = (key, (flags, scores))
        return flags, scores


class PipelineHealth(Protocol):
    """What the Faust layer knows about the pipeline beyond the engine."""

    def lag(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> messages behind the partition's high watermark."""

    def delivery(self) -> dict[str, tuple[str, str, float]]:
        """Metric name -> (counter|gauge, help, value) for alert delivery."""


def make_registry(collector: Collector) -> CollectorRegistry:
    """A dedicated registry (never the global one) holding the collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return registry
