"""The live wall: one self-contained page a worker serves at ``/wall``, fed by ``/api/wall``.

Plain Python with explicit time, like the engine and the watch: :func:`snapshot` turns the
engine's values and the watch's judgements (and the integrity flags its lens holds) into one
JSON-able dict (a tile per partner, worst first) and :class:`History` keeps the short series
behind each tile's sparklines. The Faust layer only decides when to feed the history and
serves :data:`WALL_HTML` and the snapshot.

A tile also carries its partner's *watermelon* marks: a KPI of kind ``sla_experience`` with
``outcome: watermelon`` (the share of surveyed tickets that met their SLA yet were answered
poorly) judged past its target in the window the tile shows. Green outside, red inside: the SLA
rows of such a card can all be green while its customers are unhappy, so the card says so.

The page is HTML, CSS and vanilla JavaScript in one file, ``wall.html`` beside this module
(package data, read at import): no build step, no CDN, it works offline. Every piece of data
reaches the DOM through ``textContent`` or ``setAttribute`` (never ``innerHTML``), so a partner
name containing markup is shown as text.
"""

from __future__ import annotations

import array
import base64
import bisect
import hashlib
import math
import re
import time
from collections.abc import Generator, Iterable, Mapping, Sequence
from importlib import resources
from typing import Any, Final

from streams.config.catalog import Kpi
from streams.engine.core import Engine, KpiValue, attainment
from streams.judgement.judge import Judgement, State
from streams.judgement.lens import Held
from streams.judgement.watch import Watch
from streams.outputs.steps import finish

SPAN_MS: Final = 3_600_000
"""How far back a sparkline reaches."""
STEP_MS: Final = 10_000
"""At most one point per partner x KPI per this much of the clock the history is given."""
WINDOW: Final = "1h"
"""The window a tile shows (a KPI without it shows its shortest window)."""

RANK: Final = {State.INSUFFICIENT_DATA: 0, State.OK: 1, State.AT_RISK: 2, State.BREACH: 3}
"""How bad a state is: a tile takes the colour of its worst KPI."""
ALERTING: Final = (State.BREACH, State.AT_RISK)


def _finite(value: float | None) -> float | None:
    return value if value is not None and math.isfinite(value) else None


def watermelon_kpis(kpis: Iterable[Kpi]) -> tuple[Kpi, ...]:
    """The watermelon KPIs of ``kpis``: kind ``sla_experience`` with ``outcome: watermelon``.

    Found by what they count, never by id, so a catalog that renames the KPI or adds another
    (say one per survey kind) is marked on the wall without a code change; the ``rescued``
    outcome of the same kind is its mirror (SLA missed, answered well) and is no watermelon.
    """
    return tuple(k for k in kpis if k.kind == "sla_experience" and k.outcome == "watermelon")


def window_of(engine: Engine, kpi: Kpi) -> str:
    """The window a tile shows for ``kpi``: ``1h``, else the KPI's shortest window."""
    if WINDOW in kpi.windows:
        return WINDOW
    return min(kpi.windows, key=lambda w: engine.catalog.windows[w].length_ms)


class _Series:
    """One partner x KPI's points, oldest first: times and values in two packed arrays.

    Why packed: the judge tick feeds every owned partner's series every ``step_ms``, so after
    an hour a filled partner holds about 7,300 points. As a deque of (int, float) tuples a
    point took about 127 B (1,075 KiB a partner, 10 GiB at 10,000 partners); here about 18 B
    (measured with tracemalloc, 5 December)."""

    __slots__ = ("times", "values")

    def __init__(self) -> None:
        self.times = array.array("q")
        self.values = array.array("d")

    def __len__(self) -> int:
        return len(self.times)


class History:
    """Per partner x KPI, the tile window's value over the last hour, for sparklines.

    Bounded: a series keeps at most ``span_ms / step_ms + 1`` points and only those newer than
    ``span_ms`` before its newest point; a point closer than ``step_ms`` to the previous one is
    dropped. Time is whatever clock the caller judges on (wall or event), always explicit.
    """

    def __init__(self, span_ms: int = SPAN_MS, step_ms: int = STEP_MS) -> None:
        if span_ms <= 0 or step_ms <= 0:
            raise ValueError("span_ms and step_ms must be positive")
        self.span_ms = span_ms
        self.step_ms = step_ms
        self.maxlen = span_ms // step_ms + 1
        self._series: dict[tuple[str, str], _Series] = {}

    def add(self, partner: str, kpi: str, ts_ms: int, value: float) -> bool:
        """Record one point; False when it was dropped (too soon after the last, or not finite)."""
        if not math.isfinite(value):
            return False
        series = self._series.get((partner, kpi))
        if series is None:
            series = self._series[(partner, kpi)] = _Series()
        times, values = series.times, series.values
        if times:
            last = times[-1]
            if ts_ms < last:  # the clock went back (a replay restarted, partitions moved)
                del times[:], values[:]
            elif ts_ms - last < self.step_ms:
                return False
        times.append(ts_ms)
        values.append(float(value))
        # the points an hour or more before the newest leave, and at most maxlen stay
        drop = max(bisect.bisect_right(times, ts_ms - self.span_ms), len(times) - self.maxlen)
        if drop > 0:
            del times[:drop], values[:drop]
        return True

    def observe(self, engine: Engine, watch: Watch | None, partners: Iterable[str],
                now_ms: int) -> int:
        """Sample the tile window of every KPI of ``partners`` at ``now_ms``; points added.

        Call it from the judging tick (every partner on the wall clock, or one partner at its
        minute boundary on the event clock); :func:`snapshot` also calls it lazily. ``watch`` is
        accepted so every wall function takes the same arguments; the values come from the engine.
        """
        added = 0
        for partner in partners:
            values = engine.evaluate(partner, now_ms)
            for kpi in engine.kpis:
                kv = values.get((kpi.id, window_of(engine, kpi)))
                if kv is not None and self.add(partner, kpi.id, now_ms, kv.value):
                    added += 1
        return added

    def points(self, partner: str, kpi: str, now_ms: int | None = None) -> list[tuple[int, float]]:
        """The series, oldest first; with ``now_ms`` only the points of the hour before it."""
        times, values = self.series(partner, kpi, now_ms)
        return list(zip(times, values, strict=True))

    def series(self, partner: str, kpi: str, now_ms: int | None = None,
               ) -> tuple[list[int], list[float]]:
        """The points of :meth:`points` as two lists, times and values."""
        series = self._series.get((partner, kpi))
        if not series:
            return [], []
        times, values = series.times, series.values
        if now_ms is None:
            return times.tolist(), values.tolist()
        # the times are increasing: the points of the hour before now_ms are one run
        lo = bisect.bisect_right(times, now_ms - self.span_ms)
        hi = bisect.bisect_right(times, now_ms)
        return times[lo:hi].tolist(), values[lo:hi].tolist()

    def values(self, partner: str, kpi: str, now_ms: int | None = None) -> list[float]:
        """The series' values, oldest first (what a sparkline draws)."""
        return self.series(partner, kpi, now_ms)[1]

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the series of partners not in ``keep`` (partitions moved away)."""
        kept = set(keep)
        for key in [k for k in self._series if k[0] not in kept]:
            del self._series[key]

    def size(self) -> int:
        """Points held in all series."""
        return sum(len(s) for s in self._series.values())

    def __len__(self) -> int:
        return len(self._series)


def thin(values: Sequence[float], n: int) -> list[int]:
    """The indices of at most ``n`` of ``values`` (a series, oldest first) that draw much the
    same sparkline: the newest, and from each of ``(n - 1) // 2`` runs of the others the first
    lowest and first highest, in time order.

    Why these: a sparkline is about 150 pixels wide and an hour holds up to 361 points, so most
    of them fall on a pixel another already took (a wall of 200 partners with an hour of history
    was 43 MB of JSON a poll). Keeping each run's extremes keeps every spike and the line's
    range (its vertical scale); the newest point is the value the tile shows. ``n`` of 1 keeps
    the newest, 2 the oldest and the newest.
    """
    size = len(values)
    if n >= size:
        return list(range(size))
    if n <= 0:
        return []
    if n <= 2:
        return [0, size - 1][-n:]
    runs, rest = (n - 1) // 2, size - 1
    kept: list[int] = []
    for r in range(runs):
        a, b = r * rest // runs, (r + 1) * rest // runs
        run = values[a:b]  # a slice: min, max and index run in C (a tile has 16 of these)
        lo, hi = a + run.index(min(run)), a + run.index(max(run))
        kept.extend((lo, hi) if lo < hi else (hi, lo) if hi < lo else (lo,))
    kept.append(size - 1)
    return kept


MAX_SPARK: Final = 100_000
"""The largest ``spark`` a request may ask for (more than any series holds)."""


def spark_param(args: Mapping[str, str]) -> int | None:
    """``/api/wall``'s ``?spark=N`` (at most N sparkline points per KPI; absent: every point);
    ValueError says what is wrong."""
    raw = args.get("spark")
    if raw is None or raw == "":
        return None
    if not raw.isdigit() or int(raw) > MAX_SPARK:
        raise ValueError(f"spark={raw!r}: a whole number from 0 to {MAX_SPARK}")
    return int(raw)


def _tile(engine: Engine, watch: Watch, partner: str, now_ms: int, history: History,
          flags: list[tuple[str, str, Held]], melons: frozenset[str],
          spark: int | None) -> dict[str, Any]:
    values = engine.evaluate(partner, now_ms)
    partners = engine.partners
    worst = State.INSUFFICIENT_DATA
    kpis: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
    watermelon: list[dict[str, Any]] = []
    for kpi in engine.kpis:
        target = partners.target(partner, kpi)
        for window in kpi.windows:
            judgement = watch.state(partner, kpi.id, window)
            state = judgement.state if judgement is not None else State.INSUFFICIENT_DATA
            if RANK[state] > RANK[worst]:
                worst = state
            if state in ALERTING:
                kv_w = values.get((kpi.id, window))
                alerts.append({
                    "kpi": kpi.id, "title": kpi.title, "unit": kpi.unit, "better": kpi.better,
                    "window": window, "state": state.value,
                    "since_ms": judgement.since_ms if judgement is not None else None,
                    "value": None if kv_w is None else _finite(kv_w.value), "target": target,
                })
        shown = window_of(engine, kpi)
        kv = values.get((kpi.id, shown))
        judgement = watch.state(partner, kpi.id, shown)
        state = judgement.state if judgement is not None else State.INSUFFICIENT_DATA
        if spark is None:
            times, spark_values = history.series(partner, kpi.id, now_ms)
        elif spark > 0:
            times, spark_values = history.series(partner, kpi.id, now_ms)
            kept = thin(spark_values, spark)
            times, spark_values = [times[i] for i in kept], [spark_values[i] for i in kept]
        else:
            times, spark_values = [], []  # the fleet view draws none: the history is not read
        alerting = bool(alerts) and alerts[-1]["kpi"] == kpi.id
        if kpi.id in melons:
            mark = _watermelon(kpi, shown, judgement, kv, target)
            if mark is not None:
                watermelon.append(mark)
        if kv is None and state is State.INSUFFICIENT_DATA and not alerting:
            continue  # nothing in the window and nothing to say: keep the tile short
        value = None if kv is None else _finite(kv.value)
        kpis.append({
            "id": kpi.id, "title": kpi.title, "unit": kpi.unit, "better": kpi.better,
            "window": shown, "value": value, "target": target,
            "attainment": None if value is None else _finite(attainment(kpi, value, target)),
            "state": state.value,
            "since_ms": judgement.since_ms if judgement is not None else None,
            "samples": 0 if kv is None else kv.samples,
            "spark": spark_values,
            "spark_ts": times,
        })
    alerts.sort(key=lambda a: (-RANK[State(a["state"])], a["since_ms"] or 0, a["kpi"], a["window"]))
    return {
        "partner": partner,
        "name": partners.names.get(partner, partner),
        "tier": partners.tier(partner),
        "worst_state": worst.value,
        "kpis": kpis,
        "alerts": alerts,
        "integrity": _integrity(engine, flags),
        "watermelon": watermelon,
    }


def _watermelon(kpi: Kpi, window: str, judgement: Judgement | None, kv: KpiValue | None,
                target: float) -> dict[str, Any] | None:
    """The watermelon mark of one watermelon KPI in the tile's window, or None.

    The judgement decides, as it does for the tile's colour (breach, or at risk: the states the
    wall raises an alert line for), so the mark never disagrees with the row below it. The
    value must also hold ``min_samples`` now: a judgement held while a feed is stale may
    outlive the samples, and a share of a handful of tickets is no evidence.
    """
    if judgement is None or judgement.state not in ALERTING:
        return None
    if kv is None or kv.samples < kpi.min_samples:
        return None
    value = _finite(kv.value)
    if value is None:
        return None
    return {"kpi": kpi.id, "title": kpi.title, "unit": kpi.unit, "better": kpi.better,
            "window": window, "state": judgement.state.value, "since_ms": judgement.since_ms,
            "value": value, "target": target, "samples": kv.samples}


def _flags(watch: Watch, owned: set[str]) -> dict[str, list[tuple[str, str, Held]]]:
    """``watch.lens.flags(partner)`` of every owned partner, in one pass over what the lens holds
    (asking it partner by partner would scan everything once per tile)."""
    out: dict[str, list[tuple[str, str, Held]]] = {}
    for (partner, kpi, signal), held in watch.lens.held.items():
        if held.since_ms is not None and partner in owned:
            out.setdefault(partner, []).append((kpi, signal, held))
    return out


def _integrity(engine: Engine, flags: list[tuple[str, str, Held]]) -> list[dict[str, Any]]:
    """A partner's integrity flags holding now, in catalog order, with the lens's evidence: the
    detail sentence, and the score (``-log10 p``)."""
    order = {kpi.id: (i, kpi.title) for i, kpi in enumerate(engine.kpis)}
    flags = sorted(flags, key=lambda f: (order.get(f[0], (len(order), ""))[0], f[0], f[1]))
    return [{"kpi": kpi, "title": order.get(kpi, (0, kpi))[1], "signal": signal,
             "window": held.window, "since_ms": held.since_ms, "detail": held.finding.detail,
             "score": _finite(held.finding.score)} for kpi, signal, held in flags]


def _order(tile: dict[str, Any]) -> tuple[int, int, int, str]:
    states = [a["state"] for a in tile["alerts"]]
    return (-RANK[State(tile["worst_state"])], -states.count(State.BREACH.value),
            -states.count(State.AT_RISK.value), tile["partner"])


TICKETS_PER_TILE: Final = 3
"""The most urgent open items (at risk or breached) a tile names, least time left first; the
rest are counted (the whole list: ``/api/open``)."""


def _tickets(engine: Engine, partner: str, now_ms: int) -> tuple[list[dict[str, Any]], int]:
    """The partner's most urgent open items for its tile, and how many more are urgent."""
    urgent, count = engine.most_urgent_open(partner, now_ms, TICKETS_PER_TILE)
    titles = {k.id: k.title for k in engine.kpis}
    shown = [{"kpi": i.kpi, "title": titles.get(i.kpi, i.kpi), "entity_id": i.entity_id,
              "state": i.state, "left_seconds": i.left_ms / 1000}
             for i in urgent]
    return shown, count - len(shown)


def snapshot(engine: Engine, watch: Watch, owned_partners: Iterable[str], now_ms: int,
             history: History, *, generated_at_ms: int | None = None,
             month_end: Mapping[str, Iterable[tuple[str, float]]] | None = None,
             spark: int | None = None) -> dict[str, Any]:
    """What ``/api/wall`` returns: a tile per owned partner, worst first.

    ``now_ms`` is the clock the windows are read at (``engine.now(wall_ms)``: the event clock in
    event mode); ``generated_at_ms`` is the wall clock (defaults to now); ``month_end``: partner
    -> (band, chance) of its month-end forecast, shown on its tile; ``spark``: at most this many
    sparkline points per KPI (:func:`thin`; 0 none, as the fleet view asks; None every point).
    The history is fed lazily here too and forgets partners no longer owned.
    (:func:`snapshot_steps` in one go.)
    """
    return finish(snapshot_steps(engine, watch, owned_partners, now_ms, history,
                                 generated_at_ms=generated_at_ms, month_end=month_end,
                                 spark=spark))


def snapshot_steps(engine: Engine, watch: Watch, owned_partners: Iterable[str], now_ms: int,
                   history: History, *, generated_at_ms: int | None = None,
                   month_end: Mapping[str, Iterable[tuple[str, float]]] | None = None,
                   spark: int | None = None) -> Generator[None, None, dict[str, Any]]:
    """:func:`snapshot` one tile per step (about 0.25 ms a filled partner): the worker's view
    lets its event loop run between slices (streams/outputs/steps.py says why)."""
    owned = sorted(set(owned_partners))
    history.forget(owned)
    flags = _flags(watch, set(owned))
    melons = frozenset(k.id for k in watermelon_kpis(engine.kpis))
    tiles: list[dict[str, Any]] = []
    for partner in owned:
        history.observe(engine, watch, (partner,), now_ms)
        tile = _tile(engine, watch, partner, now_ms, history, flags.get(partner, []), melons,
                     spark)
        tickets, more = _tickets(engine, partner, now_ms)  # about to breach, or past it
        if tickets:
            tile["tickets"], tile["tickets_more"] = tickets, more
        tiles.append(tile)
        yield
    tiles.sort(key=_order)
    for tile in tiles:  # the month-end band forecast, most likely band first
        chances = (month_end or {}).get(tile["partner"])
        if chances:
            tile["month_end"] = [{"band": band, "chance": chance} for band, chance in
                                 sorted(chances, key=lambda bc: -bc[1]) if chance > 0]
    counts = {s.value: 0 for s in sorted(RANK, key=RANK.__getitem__, reverse=True)}
    for tile in tiles:
        counts[tile["worst_state"]] += 1
    return {
        "generated_at": time.time_ns() // 1_000_000 if generated_at_ms is None else generated_at_ms,
        "clock": engine.clock,
        "now_ms": now_ms,
        "event_clock_ms": engine.event_clock_ms,
        "window": WINDOW,
        "span_ms": history.span_ms,
        "counts": counts,
        "partners": tiles,
    }


WALL_HTML: Final[bytes] = (resources.files("streams.outputs") / "wall.html").read_bytes()
"""The page (``streams/outputs/wall.html``, package data): HTML, CSS and JavaScript in one file."""


def _inline_hashes(tag: bytes) -> str:
    """CSP source expressions ('sha256-...') for each inline <tag> element of the page."""
    bodies = re.findall(rb"<" + tag + rb">(.*?)</" + tag + rb">", WALL_HTML, re.DOTALL)
    if not bodies:
        raise RuntimeError(f"no inline <{tag.decode()}> in WALL_HTML")
    return " ".join(f"'sha256-{base64.b64encode(hashlib.sha256(b).digest()).decode()}'"
                    for b in bodies)


WALL_CSP: Final[str] = (
    # Only the page's own inline script and style run (by hash, computed here from the page, so
    # an edit to either cannot get out of step); it fetches nothing but /api/wall.
    f"default-src 'none'; script-src {_inline_hashes(b'script')}; "
    f"style-src {_inline_hashes(b'style')}; connect-src 'self'; base-uri 'none'; "
    "form-action 'none'; frame-ancestors 'none'"
)
"""The Content-Security-Policy /wall is served with."""

__all__ = ["RANK", "SPAN_MS", "STEP_MS", "WALL_CSP", "WALL_HTML", "WINDOW", "History", "snapshot",
           "spark_param", "thin", "watermelon_kpis", "window_of"]
