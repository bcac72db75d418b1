"""Shared pieces: machine facts, event generation, engines with filled windows.

A benchmark result is a dict::

    {"title": str, "method": str, "figures": {name: number}, "units": {name: str},
     "ratios": {name: number}, "goal": str, "goal_met": bool | None, "notes": [str], ...}

``figures`` holds every measured number; ``ratios`` every figure divided by its baseline
measured in the same run (the baseline is itself one of the figures).
"""

from __future__ import annotations

import cProfile
import hashlib
import mmap
import os
import pickle
import platform
import pstats
import random
import sys
import time
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Final

import orjson

from streams.config.catalog import load_config
from streams.engine.core import Engine, PartnerState
from streams.ingest.contract import CHANNELS
from streams.tools.simulator import PROFILES, SimPartner, Simulator

T0 = 1_788_000_000_000  # 2026-08-29T10:40:00Z: a fixed instant, no benchmark reads the clock
MINUTE = 60_000
HOUR = 3_600_000
DAY = 86_400_000
TIERS = ("premier", "business", "select", "authorized")
_OFFSETS_MIN = (0, 60, 120, -300, 330, 540)


def machine() -> dict[str, Any]:
    """CPU model, cores, Python version, OS."""
    model = "unknown"
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem_kib = 0
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemTotal:"):
                    mem_kib = int(line.split()[1])
    except OSError:
        pass
    return {
        "cpu_model": model,
        "cores": os.cpu_count() or 0,
        "memory_gib": round(mem_kib / 2**20, 1),
        "python": sys.version.split()[0],
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
    }


def deep_size(obj: Any, seen: set[int] | None = None) -> int:
    """Bytes of ``obj`` and everything it references (containers, slots), each object once."""
    seen = set() if seen is None else seen
    stack = [obj]
    total = 0
    while stack:
        o = stack.pop()
        if id(o) in seen:
            continue
        seen.add(id(o))
        total += sys.getsizeof(o)
        if isinstance(o, dict):
            stack.extend(o.keys())
            stack.extend(o.values())
        elif isinstance(o, list | tuple | set | frozenset):
            stack.extend(o)
        elif hasattr(o, "__slots__"):
            stack.extend(getattr(o, a) for a in o.__slots__ if hasattr(o, a))
    return total


def vm_rss_kib(pid: int | str = "self") -> int:
    """A process' resident set size (VmRSS in /proc/<pid>/status; this one's by default), KiB."""
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


def first_touch_s_per_gib(gib: int = 4) -> list[float]:
    """Seconds to touch each GiB of fresh anonymous memory in turn (one byte per 4 KiB page).

    Why: what a process pays the kernel (and, in a VM, the host) for memory it has never
    touched, apart from any work done in it. A restart that rebuilds gigabytes of state pays
    it for every page; on a VM whose guest hands free memory back to the host, much more than
    on bare metal."""
    out: list[float] = []
    with mmap.mmap(-1, gib << 30, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS) as m:
        for g in range(gib):
            start = time.perf_counter()
            for offset in range((g << 30), (g + 1) << 30, 4096):
                m[offset] = 1
            out.append(time.perf_counter() - start)
    return out


def engine(clock: str = "event", journal: bool = True) -> Engine:
    """An engine on the repository's default catalog and partner list."""
    catalog, partners = load_config()
    return Engine(catalog, partners, clock=clock, journal=journal)


def rfc3339(ms: int, offset_min: int) -> str:
    """Epoch ms as RFC 3339 in a fixed offset, millisecond precision."""
    tz = timezone(timedelta(minutes=offset_min))
    return datetime.fromtimestamp(ms / 1000, UTC).astimezone(tz).isoformat(timespec="milliseconds")


def envelope(event: dict[str, Any], region: int) -> dict[str, Any]:
    """A simulator event as a producer would send it: RFC 3339 ``ts`` with the partner's UTC
    offset and the envelope fields real producers add (ignored by the contract)."""
    eid = event["event_id"]
    out = dict(event)
    out["ts"] = rfc3339(event["ts"], _OFFSETS_MIN[region % len(_OFFSETS_MIN)])
    out["source"] = f"crm-{('emea', 'amer', 'apac')[region % 3]}-{region % 7:02d}"
    out["schema"] = "partnerpulse.event.v1"
    out["trace_id"] = hashlib.blake2b(eid.encode(), digest_size=16).hexdigest()
    return out


def sim_partners(n: int) -> tuple[SimPartner, ...]:
    """``n`` simulated partners cycling over the profiles and tiers."""
    return tuple(SimPartner(f"partner-{i:05d}", TIERS[i % len(TIERS)], PROFILES[i % len(PROFILES)])
                 for i in range(n))


def sim_messages(partners: int, count: int, seed: int = 11, warm_start: bool = True) -> tuple[
        list[tuple[str, bytes]], list[tuple[str, bytes]]]:
    """Pre-encoded contract messages from the simulator, in event-time order, as (topic, JSON).

    Returns (warm-up, timed): the warm-start backlog (tickets and orders already in flight at
    the simulator's start), then ``count`` messages of live traffic with the full mix. Without
    ``warm_start`` (``--quick`` runs: generating the ~100,000-event backlog takes seconds) the
    warm-up is empty and the live traffic starts from nothing in flight.
    """
    sim = Simulator(sim_partners(partners), seed=seed, rate=50.0, start_ms=T0,
                    warm_start=warm_start)
    region = {p.partner_id: i for i, p in enumerate(sim.partners)}

    def encode(events: list[tuple[str, dict[str, Any]]]) -> list[tuple[str, bytes]]:
        return [(topic, orjson.dumps(envelope(ev, region[ev["partner_id"]])))
                for topic, ev in events]

    warmup = encode(sim.events_between(sim.history_start_ms, T0))
    timed: list[tuple[str, bytes]] = []
    t = T0
    while len(timed) < count:
        timed.extend(encode(sim.events_between(t, t + 10 * MINUTE)))
        t += 10 * MINUTE
    return warmup, timed[:count]


# --- filled windows -------------------------------------------------------------------------


TICKET_CHANNELS: Final = CHANNELS["tickets"][1]
CALL_CHANNELS: Final = CHANNELS["calls"][1]


def fill_events(partner: str, now_ms: int, rng: random.Random, serial: str = "") -> list[
        tuple[str, dict[str, Any]]]:
    """Contract events that put samples of every default KPI into every bucket of every window.

    One set of lifecycles per hour bucket of the last 30 days (720) and per minute bucket of the
    last hour (60): a down_hard ticket (contacted, escalated, resolved, closed, reopened), a
    service_affecting ticket, an answered and an abandoned call, an order scheduled and
    installed on time with a failure-after-install ticket, a csat and an xla answer. About 23
    events per set, 18k per partner: the least traffic that fills every bucket.
    """
    out: list[tuple[str, dict[str, Any]]] = []
    n = 0

    def emit(topic: str, etype: str, ts: int, **fields: Any) -> None:
        nonlocal n
        n += 1
        out.append((topic, {"event_id": f"{partner}-{serial}{n}", "type": etype,
                            "partner_id": partner, "ts": ts, **fields}))

    starts: list[int] = []
    spans: list[int] = []
    for res, count in ((HOUR, 720), (MINUTE, 60)):  # bucket-aligned, never past now_ms
        for b in range(count):
            start = (now_ms // res - b) * res
            span = min(res, now_ms - start) - 2
            if span >= 1000:
                starts.append(start + 1)
                spans.append(span)
    for i, (t0, span) in enumerate(zip(starts, spans, strict=True)):
        unit = span / 40  # every lifecycle fits inside its bucket
        tid, sid, oid = f"T{serial}{i}", f"S{serial}{i}", f"O{serial}{i}"

        def at(k: float, t0: int = t0, unit: float = unit) -> int:
            return t0 + int(k * unit)

        d = min(20.0, rng.lognormvariate(1.5, 0.6))  # open -> contact, in units
        # the channels in turn, bucket by bucket: every by-channel KPI has every channel in its
        # channel windows, as a partner taking contacts on all of them
        emit("tickets", "opened", at(0), ticket_id=tid, severity="down_hard",
             channel=TICKET_CHANNELS[i % len(TICKET_CHANNELS)])
        emit("tickets", "contacted", at(d), ticket_id=tid)
        emit("tickets", "escalated", at(d + 1), ticket_id=tid, documented=rng.random() < 0.8,
             kb_article=None)
        emit("tickets", "resolved", at(d + 2), ticket_id=tid, first_contact=rng.random() < 0.7,
             truck_roll=rng.random() < 0.2)
        emit("tickets", "closed", at(d + 3), ticket_id=tid)
        emit("tickets", "reopened", at(d + 4), ticket_id=tid)
        d2 = min(20.0, rng.lognormvariate(1.5, 0.6))
        emit("tickets", "opened", at(1), ticket_id=sid, severity="service_affecting",
             channel=TICKET_CHANNELS[(i + 3) % len(TICKET_CHANNELS)])
        emit("tickets", "contacted", at(1 + d2), ticket_id=sid)
        emit("tickets", "resolved", at(2 + d2), ticket_id=sid, first_contact=False, truck_roll=True)
        emit("calls", "queued", at(2), call_id=f"C{serial}{i}a",
             channel=CALL_CHANNELS[i % len(CALL_CHANNELS)])
        emit("calls", "answered", at(2 + rng.random() * 5), call_id=f"C{serial}{i}a")
        emit("calls", "queued", at(3), call_id=f"C{serial}{i}b")
        emit("calls", "abandoned", at(4), call_id=f"C{serial}{i}b")
        due = datetime.fromtimestamp((t0 + span) / 1000, UTC).isoformat(timespec="seconds")
        emit("orders", "scheduled", at(5), order_id=oid, due_date=due)
        emit("orders", "installed", at(6), order_id=oid)
        emit("tickets", "opened", at(7), ticket_id=f"F{serial}{i}", severity="question",
             order_id=oid)
        emit("surveys", "response", at(8), score=float(rng.randint(1, 5)), kind="csat",
             ticket_id=tid)
        emit("surveys", "response", at(9), score=float(rng.randint(5, 10)), kind="xla")
    out.sort(key=lambda te: te[1]["ts"])
    return out


def filled_engine(partners: int, templates: int, clock: str = "wall",
                  now_ms: int = T0, seed: int = 5, share: bool = False) -> tuple[Engine, int]:
    """An engine holding ``partners`` partners with every window filled.

    ``templates`` partners are built by ingesting :func:`fill_events`; the others are
    deep copies of them through pickle (fresh objects, no sharing with the template, so the
    memory is that of independently built state). With ``share``, the copies instead reference
    the template's window buckets, CUSUMs, entities, waiting lists and month aggregates (read-only for
    rendering; no dedup set): rendering costs the same, memory does not. Returns the engine
    and the events ingested.
    """
    eng = engine(clock=clock, journal=False)
    rng = random.Random(seed)
    ingested = 0
    names = [f"partner-{i:05d}" for i in range(partners)]
    for name in names[:templates]:
        for topic, ev in fill_events(name, now_ms, rng):
            eng.ingest(topic, orjson.dumps(ev), ev["ts"] + 1000)  # live: the wall follows events
            ingested += 1
    copies = names[templates:]
    for t in range(templates):
        src = eng.state[names[t]]
        mine = copies[t::templates]  # copy i is of template i % templates
        if share:
            for name in mine:
                eng.state[name] = PartnerState(rings=src.rings, hists=src.hists, cusum=src.cusum,
                                               ahead=src.ahead, ahead_due=src.ahead_due,
                                               horizon_ms=src.horizon_ms, last_ms=src.last_ms,
                                               version=src.version, evicted_at=src.evicted_at,
                                               windows=[None] * len(src.windows),
                                               values=[None] * len(src.windows),
                                               changes=src.changes[:], bins=src.bins,
                                               entities=src.entities, cold=src.cold, pending=src.pending,
                                               bin_targets=src.bin_targets, months=src.months,
                                               month_seq=src.month_seq, closed=src.closed)
        elif mine:
            # One template's pickle at a time, and none when there is nothing to copy: a freed
            # blob is garbage in the C heap (glibc keeps it), which a memory reading would count:
            # twelve of them made the ingest-only cross-check read 0.8 MiB more per partner.
            blob = pickle.dumps(src, protocol=pickle.HIGHEST_PROTOCOL)
            for name in mine:
                eng.state[name] = pickle.loads(blob)
            del blob
    return eng, ingested


_REPO_PREFIX = str(Path(__file__).resolve().parent.parent) + "/"


def profile_rows(prof: cProfile.Profile) -> list[dict[str, Any]]:
    """Every function of a cProfile run, by self time: ``function`` (path relative to the repo
    or site-packages, line, name), ``calls``, ``self_s``, ``cum_s`` and ``self_share`` (of the
    profiled total), as the report's profile table shows them."""
    stats = pstats.Stats(prof)
    entries: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    total = sum(v[2] for v in entries.values())
    rows = []
    for (path, line, func), (_cc, ncalls, tottime, cumtime, _callers) in entries.items():
        short = path.split("/site-packages/")[-1].removeprefix(_REPO_PREFIX)
        rows.append({"function": f"{short}:{line}({func})", "calls": ncalls,
                     "self_s": tottime, "cum_s": cumtime,
                     "self_share": tottime / total if total else 0.0})
    rows.sort(key=lambda r: r["self_s"], reverse=True)
    return rows
