"""Rendering ``/metrics``: the worker's exposition vs plain prometheus_client Gauges of the same size."""

from __future__ import annotations

import asyncio
import cProfile
import gc
import statistics
import time
from collections.abc import Coroutine, Generator
from typing import Any

from prometheus_client import CollectorRegistry, Gauge, generate_latest

from streams.engine.core import Engine, settle_gc
from streams.judgement.watch import Watch
from streams.outputs.exporter import KpiCollector, blocks, make_registry
from streams.runtime.pacing import run_paced

from . import common

GOAL_S = 1.0
NARROW = ("24h",)
"""A narrower export (settings.export_windows) measured besides the default."""


def fmt_int(value: float) -> str:
    return f"{int(value):,}"


def _baseline_registry(registry: CollectorRegistry) -> tuple[CollectorRegistry, dict[str, int]]:
    """Plain Gauges with exactly the families, label names and label values the collector
    produced (the same cardinality), each set to its value."""
    plain = CollectorRegistry(auto_describe=False)
    per_family: dict[str, int] = {}
    for family in registry.collect():
        if not family.samples:
            continue
        labelnames = list(family.samples[0].labels)
        gauge = Gauge(f"baseline_{family.name}", family.documentation or "baseline",
                      labelnames, registry=plain)
        for sample in family.samples:
            if labelnames:
                gauge.labels(*[sample.labels[n] for n in labelnames]).set(sample.value)
            else:
                gauge.set(sample.value)
            per_family[family.name] = per_family.get(family.name, 0) + 1
    return plain, per_family


def _scrape(collector: KpiCollector) -> int:
    """One scrape as the worker serves it (streams/runtime/views.py): every block of the body
    made, each dropped once counted, as each is dropped once written to the socket; its bytes."""
    return sum(len(block) for block in collector.exposition_blocks())


async def _paced_scrape(collector: KpiCollector) -> None:
    """A scrape as the worker's view makes it: rendered in paced steps, then sent block by
    block (a write to a busy socket waits, letting the loop run: here each block yields)."""
    for _ in blocks(await run_paced(collector.render())):
        await asyncio.sleep(0)


def _judge_steps(watch: Watch, engine: Engine, now_ms: int) -> Generator[None, None, None]:
    """The worker's wall-clock judge tick (Pipeline._judge_steps), without its delivery."""
    for partner in engine.partner_ids():
        watch.judge_partner(partner, now_ms)
        yield


def _on_loop(work: Coroutine[Any, Any, None]) -> tuple[float, float]:
    """Run ``work`` on an event loop beside a task noting each turn of the loop: the work's
    wall time, and the longest the loop went without a turn (what the agent's events, the
    producer and the other views wait at most while it runs)."""
    async def main() -> tuple[float, float]:
        longest = 0.0
        done = False

        async def watcher() -> None:
            nonlocal longest
            last = time.perf_counter()
            while not done:
                await asyncio.sleep(0)
                now = time.perf_counter()
                longest, last = max(longest, now - last), now

        task = asyncio.create_task(watcher())
        await asyncio.sleep(0)
        start = time.perf_counter()
        await work
        elapsed = time.perf_counter() - start
        done = True
        await task
        return elapsed, longest

    return asyncio.run(main())


def _measure(partners: int, templates: int, reps: int,
             windows: tuple[str, ...] | None = None, baseline: bool = True,
             profile: bool = False) -> dict[str, Any]:
    now = [common.T0]
    eng, _ = common.filled_engine(partners, templates, clock="wall", now_ms=common.T0, share=True)
    watch = Watch(eng)
    watch.judge(eng.partner_ids(), now[0])
    collector = KpiCollector(eng, owned=lambda p: True, wall_ms=lambda: now[0], watch=watch,
                             windows=windows)
    # as the worker after its recovery: the state frozen out of the cyclic GC's sight, so a
    # full collection does not rescan it in the middle of a timed scrape
    thresholds = gc.get_threshold()
    settle_gc()
    now[0] += 60_000
    start = time.perf_counter()
    _scrape(collector)  # the first scrape: nothing kept yet (a worker just started)
    first = time.perf_counter() - start
    cold: list[float] = []
    warm: list[float] = []
    live: list[float] = []
    size = 0
    for _ in range(reps):
        now[0] += 60_000  # a new minute: the 1 min buckets moved (cold scrape)
        start = time.perf_counter()
        size = _scrape(collector)
        cold.append(time.perf_counter() - start)
        start = time.perf_counter()
        _scrape(collector)  # same minute, no new events: evaluate() answers from its cache
        warm.append(time.perf_counter() - start)
        for st in eng.state.values():  # as if every partner had events moving every KPI since
            st.version += 1          # the last scrape (the worst case: an event moves 1-3 of 16)
            st.changes = [c + 1 for c in st.changes]
        start = time.perf_counter()
        _scrape(collector)
        live.append(time.perf_counter() - start)
    rows: list[dict[str, Any]] = []
    if profile:  # one more cold scrape (a new minute) under cProfile: where its time goes
        now[0] += 60_000
        prof = cProfile.Profile()
        prof.enable()
        _scrape(collector)
        prof.disable()
        rows = common.profile_rows(prof)
    # a new minute whose window values the worker's judge tick has already computed (wall
    # clock: it evaluates every owned partner every judge interval, before most scrapes).
    # Engine.evaluate, not Watch.judge: judging would also move every copy's state at once (they
    # share one template), which a fleet does not do, and the scrape would rewrite everything
    now[0] += 60_000
    for partner in eng.partner_ids():
        eng.evaluate(partner, now[0])
    start = time.perf_counter()
    _scrape(collector)
    values_ready = time.perf_counter() - start
    # the first minute of a new hour: the hour-resolution windows (24h, 7d, 30d) of every
    # partner slide too, so each is recomputed and written again (once an hour)
    now[0] = (now[0] // common.HOUR + 1) * common.HOUR + 60_000
    start = time.perf_counter()
    _scrape(collector)
    new_hour = time.perf_counter() - start
    body = collector.exposition()  # (untimed) the series of the last scrape, counted
    samples = body.count(b"\n") - body.count(b"\n#") - (1 if body.startswith(b"#") else 0)
    del body
    out: dict[str, Any] = {
           "first_s": first, "cold_s": statistics.median(cold), "cold_max_s": max(cold),
           "warm_s": statistics.median(warm), "new_hour_s": new_hour,
           "cold_values_ready_s": values_ready,
           "live_s": statistics.median(live), "bytes": size, "samples": samples,
           "profile_rows": rows}
    if baseline:
        plain, per_family = _baseline_registry(make_registry(collector))
        base: list[float] = []
        for _ in range(reps):
            start = time.perf_counter()
            generate_latest(plain)
            base.append(time.perf_counter() - start)
        out |= {"baseline_s": statistics.median(base), "per_family": per_family}
        del plain
        # the first minutes of the next hours as the worker lives them (paced, on its event
        # loop): a scrape, then the judge tick's pass over every partner. Last, because judging
        # moves every copy's shared state at once
        now[0] = (now[0] // common.HOUR + 1) * common.HOUR + 60_000
        out["paced_new_hour_s"], out["paced_new_hour_hold_s"] = _on_loop(
            _paced_scrape(collector))
        now[0] = (now[0] // common.HOUR + 1) * common.HOUR + 60_000
        out["judge_new_hour_s"], out["judge_new_hour_hold_s"] = _on_loop(
            run_paced(_judge_steps(watch, eng, now[0])))
    del eng, watch, collector
    gc.unfreeze()
    gc.set_threshold(*thresholds)
    gc.collect()
    return out


def run(quick: bool) -> dict[str, Any]:
    # --quick: a smoke run of the same code (the test suite runs it), seconds not a minute
    sizes = (20, 50) if quick else (1000, 10_000)
    templates = 4 if quick else 16
    reps = 2 if quick else 3
    figures: dict[str, float] = {}
    ratios: dict[str, float] = {}
    profile_top: list[dict[str, Any]] = []
    for n in sizes:
        m = _measure(n, templates, reps, profile=n == sizes[-1])
        if m["profile_rows"]:
            profile_top = m["profile_rows"][:12]
        figures[f"render_first_s_{n}"] = m["first_s"]
        figures[f"render_cold_s_{n}"] = m["cold_s"]
        figures[f"render_cold_slowest_s_{n}"] = m["cold_max_s"]
        figures[f"render_cached_s_{n}"] = m["warm_s"]
        figures[f"render_live_s_{n}"] = m["live_s"]
        figures[f"render_new_hour_s_{n}"] = m["new_hour_s"]
        figures[f"render_cold_values_ready_s_{n}"] = m["cold_values_ready_s"]
        figures[f"render_new_hour_paced_s_{n}"] = m["paced_new_hour_s"]
        figures[f"render_new_hour_paced_longest_hold_s_{n}"] = m["paced_new_hour_hold_s"]
        figures[f"judge_new_hour_paced_s_{n}"] = m["judge_new_hour_s"]
        figures[f"judge_new_hour_paced_longest_hold_s_{n}"] = m["judge_new_hour_hold_s"]
        figures[f"baseline_gauges_s_{n}"] = m["baseline_s"]
        figures[f"samples_{n}"] = m["samples"]
        figures[f"body_bytes_{n}"] = m["bytes"]
        ratios[f"first_vs_gauges_{n}"] = m["first_s"] / m["baseline_s"]
        ratios[f"cold_vs_gauges_{n}"] = m["cold_s"] / m["baseline_s"]
        ratios[f"cached_vs_gauges_{n}"] = m["warm_s"] / m["baseline_s"]
        ratios[f"live_vs_gauges_{n}"] = m["live_s"] / m["baseline_s"]
    largest = max(sizes)
    fam: dict[str, int] = m["per_family"]
    narrow = _measure(largest, templates, reps, windows=NARROW, baseline=False)
    tag = "_".join(NARROW)
    figures[f"render_first_s_{largest}_export_{tag}"] = narrow["first_s"]
    figures[f"render_cold_s_{largest}_export_{tag}"] = narrow["cold_s"]
    figures[f"render_live_s_{largest}_export_{tag}"] = narrow["live_s"]
    figures[f"samples_{largest}_export_{tag}"] = narrow["samples"]
    per_partner = {k: v / largest for k, v in sorted(fam.items(), key=lambda kv: -kv[1])}
    n = largest
    cold, live, first = (figures[f"render_{k}_s_{n}"] for k in ("cold", "live", "first"))
    samples = figures[f"samples_{n}"]
    narrow_tag = f"{n}_export_{tag}"
    notes = [
        f"**What limits it.** /metrics at {n:,} partners with the default export (every window "
        f"the generated rules and dashboards read) is {fmt_int(samples)} samples "
        f"({figures[f'body_bytes_{n}'] / 2**20:.0f} MiB of text), {samples / n:.0f} per partner: "
        + ", ".join(f"{k} {v:.0f}" for k, v in per_partner.items() if v >= 1)
        + ". The worker writes the text directly (cached label fragments, and each partner x "
        "window's numbers by one orjson.dumps) and keeps it: each partner x window's value, "
        "samples and attainment series "
        "are written again only when the engine hands back a new values object for that window "
        "(window values come from running totals and are rebuilt only for the KPIs that moved), "
        "and a partner's target and state series only when its judgements or the partner file "
        "change. A scrape in a new minute therefore rewrites the 1 h window of partners with "
        "samples in it (here every partner: every bucket is filled) and copies the rest: "
        f"{cold:.2f} s cold, {cold / figures[f'baseline_gauges_s_{n}']:.3f}x what "
        "prometheus_client takes to render plain Gauges of the same series "
        f"({figures[f'baseline_gauges_s_{n}']:.1f} s)"
        + (f", within the {GOAL_S:g} s goal. " if cold < GOAL_S else
           f", {cold / GOAL_S:.1f}x the {GOAL_S:g} s goal. ")
        + f"What is not kept costs the text itself: the first scrape after a start or a "
        f"rebalance writes everything ({first:.2f} s, about {first / samples * 1e9:.0f} ns per "
        f"series), and so does a scrape after every partner's every KPI moved ({live:.2f} s; "
        "an event moves 1-3 of a partner's 16 KPIs, and a busy fleet's scrape interval sees a "
        "fraction of its partners move). Once an hour the hour-resolution windows (24h, 7d, "
        "30d) of every partner slide as well, and the first scrape of the hour writes them "
        f"again: {figures[f'render_new_hour_s_{n}']:.2f} s "
        f"(slowest cold scrape of the minute: {figures[f'render_cold_slowest_s_{n}']:.2f} s). "
        "In the worker (wall clock) the judge tick evaluates every owned partner at each new "
        "minute, so a scrape after it finds the window values computed and only writes them: "
        f"{figures[f'render_cold_values_ready_s_{n}']:.2f} s; the figure against the goal is the "
        "scrape that computes them itself (one landing before the tick, or on the event clock). "
        "The kept text costs about one body of memory "
        f"({figures[f'body_bytes_{n}'] / n / 1024:.0f} KiB per partner); the body itself is "
        "made and sent in 1 MiB blocks (joined into one object it was as much fresh memory at "
        "every scrape: 0.62 s of a 1.43 s cold scrape at 10,000 partners under cProfile, most of "
        "it the kernel handing over new pages). "
        f"Exporting only {', '.join(NARROW)} (settings.export_windows) gives "
        f"{fmt_int(figures[f'samples_{narrow_tag}'])} samples: "
        f"{figures[f'render_cold_s_{narrow_tag}']:.2f} s cold, "
        f"{figures[f'render_first_s_{narrow_tag}']:.2f} s first, "
        f"{figures[f'render_live_s_{narrow_tag}']:.2f} s with every partner changed; "
        "the dashboard panels of the other windows are then empty. Beyond that, shard the "
        "partners over more workers (each exports only its own).",
        f"**The worker's event loop.** A scrape and the judge tick run on the loop that also "
        "runs the agent (every event waits while it is held) and the other views. Both work "
        "a partner "
        "per step and let the loop run once a 20 ms slice is spent "
        "(streams/runtime/pacing.py). In the first minute of an hour at "
        f"{n:,} partners the scrape took "
        f"{figures[f'render_new_hour_paced_s_{n}']:.2f} s and the loop waited at most "
        f"{figures[f'render_new_hour_paced_longest_hold_s_{n}'] * 1000:.0f} ms; the judge "
        f"tick's pass took {figures[f'judge_new_hour_paced_s_{n}']:.2f} s, the loop waiting "
        f"at most {figures[f'judge_new_hour_paced_longest_hold_s_{n}'] * 1000:.0f} ms. "
        "Held in one stretch, as before this was paced, the loop would have waited the whole "
        "time. What a step cannot cut is a collection of the garbage collector's young "
        "generations, which runs inside whichever step allocates past its threshold: after "
        "a judge pass has made every partner's new window values, one such collection took "
        "over a second at 10,000 partners when measured by hand.",
        "partnerpulse_kpi_state is one series per partner x KPI x window, labelled with the "
        "current state (it was one-hot over the 4 states: 4x the series); the rules' and "
        "dashboards' `partnerpulse_kpi_state{state=\"...\"} == 1` read it unchanged.",
    ]
    return {
        "notes": notes,
        "title": "/metrics render time",
        "method": (
            f"Engines holding {', '.join(f'{n:,}' for n in sizes)} partners with every bucket of "
            f"every window filled (default catalog: 16 KPIs x 4 windows; {templates} partners built by "
            "Engine.ingest, the others referencing their window buckets, entities, waiting "
            "lists and month aggregates read-only, which renders the same and fits in memory: "
            "each copy counts its template's waiting entities by age for the open-items series "
            "and has a month in progress to forecast), judged once by a "
            "Watch, the state then frozen out of "
            "the cyclic GC's sight (streams.engine.core.settle_gc(), as the worker does after its "
            "recovery), rendered as the worker serves "
            "/metrics: every block of KpiCollector(..., watch=...).exposition_blocks() made "
            "(1 MiB blocks; the worker writes each to the socket and drops it) with the catalog's "
            "default export_windows (state/open-items series included). 'first': the "
            "collector's first "
            "scrape, nothing kept yet (a worker just started or rebalanced); 'cold': a later "
            "scrape after the clock moved to a new minute (the 1 min buckets slid), the steady "
            "state; 'cached': a second scrape in the same minute; "
            "'live': every partner's state changed since the last scrape (as if each had new "
            "events moving every KPI), so every window value is recomputed from its running "
            "totals; at the largest size, after the repetitions, one more cold scrape under "
            "cProfile (its table below; the profiler inflates call-heavy code); "
            "'values ready': after the repetitions, one scrape in a new minute after "
            "Engine.evaluate of every partner at that minute (untimed), as the worker's judge "
            "tick does before most scrapes; 'new hour': one scrape in the first minute of the "
            "next hour (the hour-resolution windows slid too). Median of "
            f"{reps}, the slowest cold scrape also given. Every scrape also redoes the month-end "
            "forecasts of up to 10 partners (MonthEndForecasts' budget; at this fleet size every "
            "scrape finds that many due). Baseline, same run: a registry of plain prometheus_client "
            "Gauges with the same families, label names and label values (same number of "
            f"samples), rendered by generate_latest. Also at {largest:,}: the export narrowed "
            f"to {', '.join(NARROW)}. Last, on an asyncio loop beside a task noting each turn "
            "of the loop (the longest gap between two turns is the 'longest hold'): a scrape in "
            "the first minute of the next hour as the worker's view makes it (KpiCollector.render "
            "run by streams.runtime.pacing.run_paced, then each block awaited), and in the first "
            "minute of the hour after, the wall-clock judge tick's pass over every partner "
            "(Watch.judge_partner a step each, paced the same way; no alert delivery)."
        ),
        "figures": figures,
        "ratios": ratios,
        "profile_top": profile_top,
        "goal": f"< {GOAL_S:g} s at {largest:,} partners (cold), no slower than plain Gauges",
        "goal_met": (figures[f"render_cold_s_{largest}"] < GOAL_S
                     and all(v <= 1.0 for k, v in ratios.items() if k.startswith("cold")))
        if not quick else None,
    }
