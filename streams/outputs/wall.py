"""The live wall: one self-contained page a worker serves at ``/wall``, fed by ``/api/wall``.

Plain Python with explicit time, like the engine and the watch: :func:`snapshot` turns the
engine's values and the watch's judgements into one JSON-able dict (a tile per partner, worst
first) and :class:`History` keeps the short series behind each tile's sparklines. The Faust
layer only decides when to feed the history and serves :data:`WALL_HTML` and the snapshot.

The page is HTML, CSS and vanilla JavaScript in one string: no build step, no CDN, it works
offline. Every piece of data reaches the DOM through ``textContent`` or ``setAttribute`` (never
``innerHTML``), so a partner name containing markup is shown as text.
"""

from __future__ import annotations

import base64
import hashlib
import math
import re
import time
from collections import deque
from collections.abc import Iterable
from typing import Any, Final

from streams.config.catalog import Kpi
from streams.engine.core import Engine, attainment
from streams.judgement.judge import State
from streams.judgement.watch import Watch

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


def window_of(engine: Engine, kpi: Kpi) -> str:
    """The window a tile shows for ``kpi``: ``1h``, else the KPI's shortest window."""
    if WINDOW in kpi.windows:
        return WINDOW
    return min(kpi.windows, key=lambda w: engine.catalog.windows[w].length_ms)


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
        self._series: dict[tuple[str, str], deque[tuple[int, float]]] = {}

    def add(self, partner: str, kpi: str, ts_ms: int, value: float) -> bool:
        """Record one point; False when it was dropped (too soon after the last, or not finite)."""
        if not math.isfinite(value):
            return False
        series = self._series.get((partner, kpi))
        if series is None:
            series = self._series[(partner, kpi)] = deque(maxlen=self.maxlen)
        elif series:
            last = series[-1][0]
            if ts_ms < last:  # the clock went back (a replay restarted, partitions moved)
                series.clear()
            elif ts_ms - last < self.step_ms:
                return False
        series.append((ts_ms, float(value)))
        cutoff = ts_ms - self.span_ms
        while series and series[0][0] <= cutoff:
            series.popleft()
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
        series = self._series.get((partner, kpi))
        if not series:
            return []
        if now_ms is None:
            return list(series)
        cutoff = now_ms - self.span_ms
        return [(t, v) for t, v in series if cutoff < t <= now_ms]

    def values(self, partner: str, kpi: str, now_ms: int | None = None) -> list[float]:
        """The series' values, oldest first (what a sparkline draws)."""
        return [v for _, v in self.points(partner, kpi, now_ms)]

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


def _tile(engine: Engine, watch: Watch, partner: str, now_ms: int, history: History) -> dict[str, Any]:
    values = engine.evaluate(partner, now_ms)
    partners = engine.partners
    worst = State.INSUFFICIENT_DATA
    kpis: list[dict[str, Any]] = []
    alerts: list[dict[str, Any]] = []
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
        points = history.points(partner, kpi.id, now_ms)
        spark = [v for _, v in points]
        alerting = bool(alerts) and alerts[-1]["kpi"] == kpi.id
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
            "spark": spark,
            "spark_ts": [t for t, _ in points],
        })
    alerts.sort(key=lambda a: (-RANK[State(a["state"])], a["since_ms"] or 0, a["kpi"], a["window"]))
    return {
        "partner": partner,
        "name": partners.names.get(partner, partner),
        "tier": partners.tier(partner),
        "worst_state": worst.value,
        "kpis": kpis,
        "alerts": alerts,
    }


def _order(tile: dict[str, Any]) -> tuple[int, int, int, str]:
    states = [a["state"] for a in tile["alerts"]]
    return (-RANK[State(tile["worst_state"])], -states.count(State.BREACH.value),
            -states.count(State.AT_RISK.value), tile["partner"])


def snapshot(engine: Engine, watch: Watch, owned_partners: Iterable[str], now_ms: int,
             history: History, *, generated_at_ms: int | None = None) -> dict[str, Any]:
    """What ``/api/wall`` returns: a tile per owned partner, worst first.

    ``now_ms`` is the clock the windows are read at (``engine.now(wall_ms)``: the event clock in
    event mode); ``generated_at_ms`` is the wall clock (defaults to now). The history is fed
    lazily here too and forgets partners no longer owned.
    """
    owned = sorted(set(owned_partners))
    history.forget(owned)
    history.observe(engine, watch, owned, now_ms)
    tiles = sorted((_tile(engine, watch, p, now_ms, history) for p in owned), key=_order)
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


WALL_HTML: Final[bytes] = br"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>partnerpulse wall</title>
<style>
:root {
  --bg: #0a0e14; --panel: #131a24; --line: #233041; --text: #e8eef5; --muted: #8a99ad;
  --breach: #ff4d5e; --at_risk: #ffb020; --ok: #2ed47a; --insufficient_data: #6b7888;
}
* { box-sizing: border-box; }
html, body { margin: 0; background: var(--bg); color: var(--text); }
body { font: 18px/1.3 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       font-variant-numeric: tabular-nums; padding: 18px 22px; }
header { display: flex; align-items: center; gap: 28px; margin-bottom: 18px; flex-wrap: wrap; }
header h1 { font-size: 30px; margin: 0; letter-spacing: .08em; text-transform: uppercase; }
header h1 span { color: var(--muted); font-weight: 400; }
.counts { display: flex; gap: 12px; }
.count { padding: 6px 14px; border-radius: 999px; font-weight: 700; font-size: 20px;
         background: #1b2430; border: 2px solid var(--c); color: var(--c); }
.count.zero { opacity: .35; }
.clock { margin-left: auto; text-align: right; color: var(--muted); font-size: 18px; }
.clock b { color: var(--text); font-size: 26px; display: block; }
#conn { padding: 6px 14px; border-radius: 8px; font-weight: 700; display: none;
        background: var(--breach); color: #000; }
body.offline #conn { display: inline-block; }
body.offline main { opacity: .45; }
main { display: grid; gap: 18px; grid-template-columns: repeat(auto-fill, minmax(560px, 1fr)); }
.empty { color: var(--muted); font-size: 28px; padding: 40px; }
.tile { background: var(--panel); border-radius: 14px; border: 1px solid var(--line);
        border-top: 10px solid var(--c); padding: 16px 20px 14px; min-width: 0;
        box-shadow: 0 0 0 0 var(--c); }
.tile[data-state="breach"] { --c: var(--breach);
  background: linear-gradient(180deg, rgba(255,77,94,.20), var(--panel) 55%);
  animation: pulse 2s ease-in-out infinite; }
.tile[data-state="at_risk"] { --c: var(--at_risk);
  background: linear-gradient(180deg, rgba(255,176,32,.14), var(--panel) 55%); }
.tile[data-state="ok"] { --c: var(--ok); }
.tile[data-state="insufficient_data"] { --c: var(--insufficient_data); }
@keyframes pulse { 50% { box-shadow: 0 0 22px 2px rgba(255,77,94,.55); } }
.head { display: flex; align-items: flex-start; gap: 14px; }
.who { flex: 1; min-width: 0; }
.name { font-size: 40px; font-weight: 800; line-height: 1.1; overflow: hidden;
        text-overflow: ellipsis; white-space: nowrap; }
.meta { color: var(--muted); font-size: 17px; margin-top: 4px; }
.tier { text-transform: uppercase; letter-spacing: .1em; font-weight: 700; color: var(--text);
        border: 1px solid var(--line); border-radius: 6px; padding: 1px 8px; margin-right: 10px; }
.state { font-size: 22px; font-weight: 800; text-transform: uppercase; letter-spacing: .06em;
         padding: 6px 14px; border-radius: 8px; background: var(--c); color: #071018;
         white-space: nowrap; }
.kpis { margin-top: 12px; border-top: 1px solid var(--line); }
.kpi { display: grid; grid-template-columns: 14px minmax(0, 1fr) auto 150px; gap: 4px 14px;
       align-items: center; padding: 9px 0; border-bottom: 1px solid var(--line); }
.kpi .dot { width: 14px; height: 14px; border-radius: 50%; background: var(--k); }
.kpi .title { font-size: 19px; line-height: 1.2; overflow: hidden; display: -webkit-box;
              -webkit-line-clamp: 2; -webkit-box-orient: vertical; }
.kpi .sub { grid-column: 2 / span 2; color: var(--muted); font-size: 15px; white-space: nowrap;
            overflow: hidden; text-overflow: ellipsis; }
.kpi svg { grid-row: span 2; }
.kpi .value { font-size: 34px; font-weight: 800; text-align: right; color: var(--k); }
.kpi svg { width: 150px; height: 44px; display: block; }
.kpi .dot { grid-row: span 2; }
.k-breach { --k: var(--breach); } .k-at_risk { --k: var(--at_risk); }
.k-ok { --k: var(--ok); } .k-insufficient_data { --k: var(--insufficient_data); }
.k-insufficient_data .value { color: var(--muted); }
.kpis .none { color: var(--muted); font-size: 22px; padding: 14px 0; }
.alerts { margin: 12px 0 0; padding: 0; list-style: none; }
.alerts li { font-size: 19px; font-weight: 700; padding: 6px 10px; margin-top: 6px;
             border-radius: 8px; background: rgba(0,0,0,.35); border-left: 6px solid var(--k); }
.alerts li span { color: var(--muted); font-weight: 400; }
</style>
</head>
<body>
<header>
  <h1>partnerpulse <span id="subtitle">live wall</span></h1>
  <div class="counts" id="counts"></div>
  <div id="conn">connection lost</div>
  <div class="clock"><b id="clock">--:--:--</b><span id="updated">waiting for data</span></div>
</header>
<main id="wall"><div class="empty">Loading...</div></main>
<script>
"use strict";
// Data reaches the DOM only through textContent and setAttribute: never as markup.
const POLL_MS = 2500;
const LABEL = {breach: "breach", at_risk: "at risk", ok: "ok", insufficient_data: "no data"};
const COLOUR = {breach: "var(--breach)", at_risk: "var(--at_risk)", ok: "var(--ok)",
                insufficient_data: "var(--insufficient_data)"};
const SVG = "http://www.w3.org/2000/svg";
let lastOk = 0;
let dataClock = "wall";
let windowName = "1h";

function el(tag, cls, text) {
  const node = document.createElement(tag);
  if (cls) node.className = cls;
  if (text !== undefined && text !== null) node.textContent = String(text);
  return node;
}
function known(state) { return Object.prototype.hasOwnProperty.call(LABEL, state) ? state
                                                                     : "insufficient_data"; }
function pad(n) { return String(n).padStart(2, "0"); }
function duration(sec) {
  if (sec === null || sec === undefined || !isFinite(sec)) return "\u2013";
  if (sec < 10) return sec.toFixed(1) + "s";
  let s = Math.round(sec);
  if (s < 60) return s + "s";
  if (s < 3600) return Math.floor(s / 60) + "m " + (s % 60) + "s";
  if (s < 86400) return Math.floor(s / 3600) + "h " + pad(Math.floor(s % 3600 / 60)) + "m";
  return Math.floor(s / 86400) + "d " + Math.floor(s % 86400 / 3600) + "h";
}
function human(value, unit) {
  if (value === null || value === undefined || !isFinite(value)) return "\u2013";
  if (unit === "seconds") return duration(value);
  if (unit === "ratio") return (value * 100).toFixed(1) + "%";
  if (unit === "score") return value.toFixed(1);
  return Number(value.toPrecision(3)).toString();
}
function target(kpi) {
  return (kpi.better === "lower" ? "\u2264 " : "\u2265 ") + human(kpi.target, kpi.unit);
}
function clockText(ms) {
  if (ms === null || ms === undefined) return "--:--:--";
  const d = new Date(ms);
  return d.getUTCFullYear() + "-" + pad(d.getUTCMonth() + 1) + "-" + pad(d.getUTCDate()) + " " +
    pad(d.getUTCHours()) + ":" + pad(d.getUTCMinutes()) + ":" + pad(d.getUTCSeconds()) + " UTC";
}

function sparkline(kpi, nowMs, spanMs) {
  const w = 150, h = 44, m = 4;
  const svg = document.createElementNS(SVG, "svg");
  svg.setAttribute("viewBox", "0 0 " + w + " " + h);
  svg.setAttribute("preserveAspectRatio", "none");
  const values = (kpi.spark || []).filter(v => typeof v === "number" && isFinite(v));
  const all = values.concat(typeof kpi.target === "number" ? [kpi.target] : []);
  if (!all.length) return svg;
  let lo = Math.min.apply(null, all), hi = Math.max.apply(null, all);
  if (hi - lo < 1e-9) { hi += 1; lo -= 1; }
  const y = v => (h - m - (v - lo) / (hi - lo) * (h - 2 * m)).toFixed(1);
  if (typeof kpi.target === "number") {
    const line = document.createElementNS(SVG, "line");
    line.setAttribute("x1", "0"); line.setAttribute("x2", String(w));
    line.setAttribute("y1", y(kpi.target)); line.setAttribute("y2", y(kpi.target));
    line.setAttribute("stroke", "#8a99ad"); line.setAttribute("stroke-dasharray", "4 4");
    line.setAttribute("stroke-width", "1.5");
    svg.appendChild(line);
  }
  if (values.length) {
    // x is time over the last span when the timestamps came along, else the index
    const ts = kpi.spark_ts || [];
    const timed = ts.length === values.length && typeof nowMs === "number" && spanMs > 0;
    const step = values.length > 1 ? (w - 2 * m) / (values.length - 1) : 0;
    const x = i => timed ? m + Math.max(0, 1 - (nowMs - ts[i]) / spanMs) * (w - 2 * m) : m + i * step;
    const pts = values.map((v, i) => x(i).toFixed(1) + "," + y(v));
    if (values.length === 1) pts.unshift((x(0) - 6).toFixed(1) + "," + y(values[0]));
    const path = document.createElementNS(SVG, "polyline");
    path.setAttribute("points", pts.join(" "));
    path.setAttribute("fill", "none");
    path.setAttribute("stroke", COLOUR[known(kpi.state)]);
    path.setAttribute("stroke-width", "3");
    path.setAttribute("stroke-linejoin", "round");
    svg.appendChild(path);
  }
  return svg;
}

function tile(p, nowMs, spanMs) {
  const state = known(p.worst_state);
  const node = el("section", "tile");
  node.setAttribute("data-partner", String(p.partner));
  node.setAttribute("data-state", state);
  const head = el("div", "head");
  const who = el("div", "who");
  const name = el("div", "name", p.name || p.partner);
  name.setAttribute("title", String(p.partner));
  who.appendChild(name);
  const meta = el("div", "meta");
  meta.appendChild(el("span", "tier", p.tier));
  meta.appendChild(el("span", "id", p.partner));
  who.appendChild(meta);
  head.appendChild(who);
  head.appendChild(el("div", "state", LABEL[state]));
  node.appendChild(head);

  const kpis = el("div", "kpis");
  for (const k of p.kpis || []) {
    const row = el("div", "kpi k-" + known(k.state));
    row.setAttribute("data-kpi", String(k.id));
    row.setAttribute("data-state", known(k.state));
    row.appendChild(el("span", "dot"));
    const title = el("div", "title", k.title);
    title.setAttribute("title", String(k.title));
    row.appendChild(title);
    row.appendChild(el("div", "value", human(k.value, k.unit)));
    row.appendChild(sparkline(k, nowMs, spanMs));
    const win = k.window === windowName ? "" : " \u00b7 " + k.window;
    row.appendChild(el("div", "sub", "target " + target(k) + win + " \u00b7 " + k.samples + " samples"));
    kpis.appendChild(row);
  }
  if (!kpis.childNodes.length) kpis.appendChild(el("div", "none", "no data in the last " + windowName));
  node.appendChild(kpis);

  const alerts = el("ul", "alerts");
  for (const a of p.alerts || []) {
    const li = el("li", "k-" + known(a.state), LABEL[known(a.state)].toUpperCase() + " \u00b7 " +
                  a.title + " " + a.window + " ");
    const since = typeof a.since_ms === "number" ? " for " + duration((nowMs - a.since_ms) / 1000)
                                                 : "";
    li.appendChild(el("span", null, human(a.value, a.unit) + " vs " + target(a) + since));
    alerts.appendChild(li);
  }
  if (alerts.childNodes.length) node.appendChild(alerts);
  return node;
}

function render(data) {
  const counts = document.getElementById("counts");
  const pills = [];
  for (const s of ["breach", "at_risk", "ok", "insufficient_data"]) {
    const n = (data.counts && data.counts[s]) || 0;
    const pill = el("span", "count" + (n ? "" : " zero"), n + " " + LABEL[s]);
    pill.style.setProperty("--c", COLOUR[s]);
    pills.push(pill);
  }
  counts.replaceChildren(...pills);
  const clock = data.clock === "event" ? data.event_clock_ms : data.now_ms;
  document.getElementById("clock").textContent = clockText(clock);
  document.getElementById("subtitle").textContent = "live wall \u00b7 last " + data.window;
  const wall = document.getElementById("wall");
  const tiles = (data.partners || []).map(p => tile(p, data.now_ms, data.span_ms));
  if (!tiles.length) tiles.push(el("div", "empty", "No partners on this worker yet."));
  wall.replaceChildren(...tiles);
}

function tick() {
  const updated = document.getElementById("updated");
  if (lastOk) {
    const age = Math.round((Date.now() - lastOk) / 1000);
    updated.textContent = (dataClock === "event" ? "event clock \u00b7 " : "") +
      "updated " + age + "s ago";
  }
}
async function poll() {
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), 5000);
  try {
    const r = await fetch("/api/wall", {cache: "no-store", signal: ctrl.signal});
    if (!r.ok) throw new Error("HTTP " + r.status);
    const data = await r.json();
    dataClock = data.clock;
    windowName = data.window;
    render(data);
    lastOk = Date.now();
    document.body.classList.remove("offline");
  } catch (e) {
    document.body.classList.add("offline");
    document.getElementById("conn").textContent = "connection lost: " + String(e.message || e);
  } finally {
    clearTimeout(timer);
    tick();
    setTimeout(poll, POLL_MS);
  }
}
setInterval(tick, 1000);
poll();
</script>
</body>
</html>
"""


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
           "window_of"]
