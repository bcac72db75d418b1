"""/metrics keeps each partner x window's text between scrapes: it must write what a fresh render writes.

The collector re-renders a partner's window only when the engine hands back a new values
object for it, the watch renews the partner's judgement stamp, or the partner file changes.
A cache that misses any of those serves stale series; these tests compare a long-lived
collector with a new one (nothing kept) after each kind of change.
"""

from __future__ import annotations

import dataclasses
import math
import random
from collections.abc import Callable
from pathlib import Path

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from streams.config.catalog import Kpi, load_config
from streams.engine.core import Engine, KpiValue, Outcome
from streams.judgement.watch import Watch
from streams.outputs import exporter
from streams.outputs.exporter import KpiCollector
from streams.outputs.series import REPORT_PROJECTED_BAND
from tests.streams_gen import DAY, HOUR, MINUTE, _ms, random_events

T0 = 1_788_000_000_000
PARTNERS = ["acme", "bluefiber", "cityloop", "dunmore"]


def _ts(event: dict[str, object]) -> int:
    value = event["ts"]
    assert isinstance(value, int | str)
    return _ms(value)


def _samples(body: bytes) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a scrape but the month-end forecasts: a collector keeps each partner's
    for 15 minutes by design (streams/outputs/forecasts.py), so a fresh one differs there."""
    out: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(body.decode()):
        if family.name == REPORT_PROJECTED_BAND:
            continue
        for s in family.samples:
            key = (s.name, tuple(sorted(s.labels.items())))
            assert key not in out, f"series written twice: {key}"
            out[key] = s.value
    return out


class _Fleet:
    """An engine and watch on the wall clock, a long-lived collector and a way to check it."""

    def __init__(self) -> None:
        catalog, partners = load_config()
        self.engine = Engine(catalog, partners, clock="wall")
        self.watch = Watch(self.engine)
        self.wall = T0
        self.away: set[str] = set()
        self.kept = self._collector()
        self.checks = 0

    def _collector(self) -> KpiCollector:
        return KpiCollector(self.engine, owned=lambda p: p not in self.away,
                            wall_ms=lambda: self.wall, watch=self.watch)

    def ingest(self, events: list[tuple[str, dict[str, object]]]) -> None:
        for topic, event in events:
            self.wall = max(self.wall, _ts(event) + 1)
            self.engine.ingest(topic, orjson.dumps(event), self.wall)

    def judge(self) -> None:
        self.watch.judge([p for p in self.engine.partner_ids() if p not in self.away], self.wall)

    def check(self, what: str) -> None:
        """The long-lived collector's scrape equals a fresh collector's, sample for sample."""
        got = self.kept.exposition()
        fresh = self._collector().exposition()
        assert got == fresh or _samples(got) == _samples(fresh), what
        self.checks += 1


def _ordered(seed: int, start: int, span: int) -> list[tuple[str, dict[str, object]]]:
    return sorted(random_events(seed, PARTNERS, start, span), key=lambda te: _ts(te[1]))


def test_kept_text_matches_a_fresh_render_through_every_kind_of_change() -> None:
    fleet = _Fleet()
    events = _ordered(5, T0, 3 * DAY)
    steps: list[tuple[str, Callable[[], None]]] = []
    for i in range(0, len(events), 97):
        chunk = events[i:i + 97]
        steps.append((f"events {i}..", lambda chunk=chunk: fleet.ingest(chunk)))
        steps.append(("judged", fleet.judge))
    for label, step in steps:
        step()
        fleet.check(label)
        fleet.check(label + ", scraped again")
    # time alone: a new minute slides the 1 h window, a new hour the others
    for advance, label in ((MINUTE, "a minute later"), (HOUR, "an hour later"),
                           (2 * DAY, "two days later")):
        fleet.wall += advance
        fleet.check(label)
        fleet.judge()
        fleet.check(label + ", judged")
    # a partner moves away (not exported), changes meanwhile and comes back
    fleet.away.add("bluefiber")
    fleet.check("bluefiber away")
    fleet.ingest([(t, e) for t, e in _ordered(6, fleet.wall - HOUR, HOUR)
                  if e["partner_id"] == "bluefiber"])
    fleet.away.clear()
    fleet.check("bluefiber back")
    # the partner file changes: targets move attainment and the target series
    engine = fleet.engine
    kpi = engine.kpis[0]
    engine.partners = dataclasses.replace(
        engine.partners, partner_targets={"acme": {kpi.id: kpi.target * 3}})
    fleet.check("new partner file")
    # a partner dropped with its judgements, then seen again
    engine.drop_partners(lambda p: p != "cityloop")
    fleet.watch.forget([p for p in PARTNERS if p != "cityloop"])
    fleet.check("cityloop dropped")
    fleet.ingest([(t, e) for t, e in _ordered(7, fleet.wall - 10 * MINUTE, 10 * MINUTE)
                  if e["partner_id"] == "cityloop"])
    fleet.judge()
    fleet.check("cityloop again")
    assert fleet.checks > 20


def test_the_worker_sends_the_same_scrape_block_by_block(monkeypatch: pytest.MonkeyPatch) -> None:
    """/metrics goes out in blocks (the worker's view writes each to the socket): joined they
    are the scrape, every block but the last holds at least the block size, and each ends with a
    whole line."""
    fleet = _Fleet()
    fleet.ingest(_ordered(8, T0, DAY))
    fleet.judge()
    whole = fleet._collector().exposition()
    for size in (1000, 4096, 7777, len(whole) // 2, 1 << 20):
        monkeypatch.setattr(exporter, "BLOCK_BYTES", size)
        blocks = list(fleet.kept.exposition_blocks())
        joined = b"".join(blocks)
        assert joined == whole or _samples(joined) == _samples(whole), size
        assert len(blocks) >= min(len(whole) // size, 3), (size, len(whole))
        assert all(len(block) >= size for block in blocks[:-1]), size
        assert all(block.endswith(b"\n") for block in blocks), size


def _series_lines(text: bytes) -> list[tuple[str, str]]:
    """Each series line of a text as (name and labels, the number's text)."""
    return [(head + " ", number) for head, number in
            (line.rsplit(" ", 1) for line in text.decode().splitlines())]


def _reads_as(number: str, value: float) -> bool:
    """The number's text is ``value`` to a Prometheus parser (Go's spellings of NaN and Inf)."""
    if math.isnan(value):
        return number == "NaN"
    if math.isinf(value):
        return number == ("+Inf" if value > 0 else "-Inf")
    return float(number) == value and not number.lower().startswith(("nan", "inf", "+", "-i"))


def _window_lines(window: str, kpis: list[tuple[int, Kpi]], channels: list[Kpi],
                  shown: dict[tuple[str, str], KpiValue], goals: list[float], escaped: str,
                  ) -> list[list[tuple[str, float | str]]]:
    """Each family's series of a partner x window, written here: (name and labels, the value
    as a float, or the samples count's text)."""
    want: list[list[tuple[str, float | str]]] = [[], [], [], [], []]
    for k, kpi in kpis:
        kv = shown.get((kpi.id, window))
        if kv is None:
            continue
        tail = f'{{partner="{escaped}",kpi="{kpi.id}",window="{window}"}} '
        want[0].append((f"partnerpulse_kpi_value{tail}", kv.value))
        want[1].append((f"partnerpulse_kpi_samples{tail}", f"{kv.samples}.0"))
        if kv.value <= 0 and kpi.better == "lower":
            ratio = 10.0
        else:
            ratio = (min(10.0, goals[k] / kv.value) if kpi.better == "lower"
                     else min(10.0, kv.value / goals[k]))
        want[2].append((f"partnerpulse_kpi_attainment_ratio{tail}", ratio))
    for kpi in channels:
        kv = shown.get((kpi.id, window))
        if kv is None:
            continue
        tail = f'{{partner="{escaped}",kpi="{kpi.base}",window="{window}",channel="{kpi.channel}"}} '
        want[3].append((f"partnerpulse_kpi_channel_value{tail}", kv.value))
        want[4].append((f"partnerpulse_kpi_channel_samples{tail}", f"{kv.samples}.0"))
    return want


def _assert_window_text(got: tuple[bytes, ...], want: list[list[tuple[str, float | str]]],
                        context: object) -> None:
    assert len(got) == len(want), context
    for text, lines in zip(got, want, strict=True):
        assert text.endswith(b"\n") or not text, context
        series = _series_lines(text)
        assert [head for head, _ in series] == [head for head, _ in lines], context
        for (head, number), (_, expected) in zip(series, lines, strict=True):
            if isinstance(expected, str):
                assert number == expected, (context, head, number)
            else:
                assert _reads_as(number, expected), (context, head, number, expected)


def test_a_partner_window_s_text_is_each_series_line() -> None:
    """A partner x window's kept text: each series' line, written here, whether every KPI has
    a value or some have none (those have no series). Random values, and a partner label with
    a `%` and an escaped quote in it."""
    fleet = _Fleet()
    collector, catalog = fleet.kept, fleet.engine.catalog
    rng = random.Random(3)
    goals = [rng.uniform(0.1, 100.0) for _ in fleet.engine.kpis]
    escaped = 'a%s\\"b'  # the label value a%s"b, escaped for the text format
    p = '{partner="' + escaped + '"'
    for i, window in enumerate(collector.windows):
        kpis = [(k, kpi) for k, kpi in enumerate(fleet.engine.kpis) if window in kpi.windows]
        channels = [kpi for kpi in catalog.channel_kpis if window in kpi.windows]
        values = {(kpi.id, window): KpiValue(rng.uniform(0.0, 1e6), rng.randrange(1, 10**6))
                  for kpi in [kpi for _, kpi in kpis] + channels}
        for missing in [None, kpis[0][1].id] + [kpi.id for kpi in channels[-1:]]:
            shown = {key: v for key, v in values.items() if key[0] != missing}
            want = _window_lines(window, kpis, channels, shown, goals, escaped)
            _assert_window_text(collector._window(p, i, shown, goals), want, (window, missing))


def test_numbers_of_every_magnitude_are_written_as_prometheus_reads_them(promtool: str) -> None:
    """Values from the smallest subnormal to the largest float, zero, integers, NaN and the
    infinities: each series' number is the value exactly (non-finite ones in Go's spelling),
    and promtool parses the window's text with its headers."""
    import subprocess

    fleet = _Fleet()
    collector, catalog = fleet.kept, fleet.engine.catalog
    rng = random.Random(11)
    finite = [0.0, 5e-324, 1e-9, 2.5e-7, 7.9e-05, 1e-4, 1 / 3, 1.0, 60.0, 1e15, 123456789012345.6,
              1e16, 1e22, 1.7976931348623157e308]
    odd = [math.nan, math.inf, -math.inf]
    window = collector.windows[-1]
    i = collector.windows.index(window)
    kpis = [(k, kpi) for k, kpi in enumerate(fleet.engine.kpis) if window in kpi.windows]
    channels = [kpi for kpi in catalog.channel_kpis if window in kpi.windows]
    goals = [rng.choice(finite[1:]) for _ in fleet.engine.kpis]
    p = '{partner="p"'
    for case in range(6):
        pool = finite if case < 4 else finite + odd  # one odd value spells the others one by one
        values = {(kpi.id, window): KpiValue(rng.choice(pool), rng.randrange(1, 10**9))
                  for kpi in [kpi for _, kpi in kpis] + channels}
        got = collector._window(p, i, values, goals)
        _assert_window_text(got, _window_lines(window, kpis, channels, values, goals, "p"), case)
        text = b"".join(exporter._header(name, "gauge", "h").encode() + chunk
                        for name, chunk in zip(exporter._PER_WINDOW, got, strict=True) if chunk)
        result = subprocess.run([promtool, "check", "metrics"], input=text, capture_output=True,
                                check=False)
        assert result.returncode == 0, (case, result.stderr.decode())
        assert not result.stdout.strip() and not result.stderr.strip(), case


def test_a_forecast_that_fails_leaves_its_bands_out_not_the_scrape(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A month-end forecast it cannot draw (a ratio month it refused raised inside /metrics,
    which answered 500) costs that partner's band series only: every KPI series is served, and
    the other partners keep their bands."""
    from streams.outputs import forecasts

    fleet = _Fleet()
    fleet.ingest(_ordered(8, T0, 2 * DAY))
    fleet.judge()
    real = forecasts.project

    def failing(catalog: object, partners: object, partner: str, *args: object,
                **kwargs: object) -> object:
        if partner == "acme":
            raise ValueError("a forecast this partner's month cannot have")
        return real(catalog, partners, partner, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(forecasts, "project", failing)
    body = fleet.kept.exposition()
    banded = {labels["partner"] for family in text_string_to_metric_families(body.decode())
              if family.name == REPORT_PROJECTED_BAND
              for labels in (s.labels for s in family.samples)}
    assert "acme" not in banded and banded  # the others are forecast
    served = {s.labels.get("partner") for family in text_string_to_metric_families(body.decode())
              if family.name == "partnerpulse_kpi_value" for s in family.samples}
    assert "acme" in served


def test_a_scrape_rewrites_only_the_windows_that_moved() -> None:
    fleet = _Fleet()
    fleet.ingest(_ordered(8, T0, 2 * DAY))
    fleet.judge()
    fleet.kept.exposition()
    before = {p: list(r.chunks) for p, r in fleet.kept._rendered.items()}
    fleet.kept.exposition()  # nothing moved: every chunk is the one kept
    assert all(r.chunks[i] is before[p][i] for p, r in fleet.kept._rendered.items()
               for i in range(len(r.chunks)))
    # one event of one partner, in the current minute and hour: the windows that hold it move,
    # the other partners' text stays
    accepted = fleet.engine.counts.get(("surveys", Outcome.ACCEPTED), 0)
    fleet.ingest([("surveys", {"event_id": "late-survey-1", "type": "response",
                               "partner_id": "acme", "ts": fleet.wall - 1, "score": 4,
                               "kind": "csat"})])
    assert fleet.engine.counts[("surveys", Outcome.ACCEPTED)] == accepted + 1
    body = fleet.kept.exposition()
    moved = {p for p, r in fleet.kept._rendered.items()
             if any(r.chunks[i] is not before[p][i] for i in range(len(r.chunks)))}
    assert moved == {"acme"}
    assert _samples(body) == _samples(fleet._collector().exposition())


def test_a_catalog_window_no_kpi_is_counted_in_exports_nothing_and_does_not_fail(
        tmp_path: Path) -> None:
    """Regression: with every KPI cut down to 1h, the catalog still declares 24h/7d/30d (and
    exports them); the engine keeps no ring for those, and /metrics answered HTTP 500."""
    from tests.test_alerting import _asa_only_config

    catalog, partners = load_config(_asa_only_config(tmp_path))
    assert {"1h", "24h"} <= set(catalog.windows) and catalog.kpis[0].windows == ("1h",)
    engine = Engine(catalog, partners, clock="wall")
    now = T0 + 30 * MINUTE  # every call of the scenario inside the last hour
    watch = Watch(engine)
    collector = KpiCollector(engine, owned=lambda p: True, wall_ms=lambda: now,
                             watch=watch)
    assert set(collector.windows) > {"1h"}
    for i in range(5):
        event = {"event_id": f"c-{i}", "type": "answered", "partner_id": "acme",
                 "call_id": f"c{i}", "ts": T0 + i * MINUTE}
        engine.ingest("calls", orjson.dumps({**event, "type": "queued",
                                             "event_id": f"q-{i}", "ts": T0}), now)
        engine.ingest("calls", orjson.dumps(event), now)
    watch.judge(["acme"], now)
    got = _samples(collector.exposition())
    values = {dict(labels)["window"]: v for (name, labels), v in got.items()
              if name == "partnerpulse_kpi_value"}
    # five calls queued at T0 and answered 0..4 minutes later: a mean wait of 2 minutes
    assert values == {"1h": 120.0}


def test_a_wall_scoped_to_one_partner_keeps_the_others_month_end_bands() -> None:
    """/api/wall of a token scoped to one partner refreshes that partner's month-end forecast
    only; the next /metrics scrape still has every partner's bands (they were let go before,
    and came back ten a scrape)."""
    fleet = _Fleet()
    fleet.ingest(_ordered(8, T0, 2 * DAY))
    fleet.judge()

    def banded() -> set[str]:
        return {s.labels["partner"]
                for family in text_string_to_metric_families(fleet.kept.exposition().decode())
                if family.name == REPORT_PROJECTED_BAND for s in family.samples}

    everyone = banded()
    assert len(everyone) >= 3
    forecasts = fleet.kept.forecasts
    forecasts.budget = 0  # the next scrape redoes none: it serves what is kept
    assert banded() == everyone
    forecasts.bands(["acme"], fleet.wall, fleet.wall + 16 * MINUTE)  # /metrics' own call
    assert banded() == everyone & {"acme"}  # what "let go" means for /metrics' own refresh
    forecasts.budget = 10
    assert banded() == everyone
    forecasts.budget = 0
    steps = forecasts.refresh(["acme"], fleet.wall, fleet.wall + 16 * MINUTE, others=True)
    for _ in steps:
        pass
    assert banded() == everyone
