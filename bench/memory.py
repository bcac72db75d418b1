"""Memory: RSS of a process holding N partners with every window filled (measured in a child)."""

from __future__ import annotations

import gc
import json
import subprocess
import sys
from typing import Any

from . import common

GOAL_BYTES = 2 * 2**30


def child(partners: int, templates: int) -> dict[str, Any]:
    """Runs in the child: VmRSS before and after building the state."""
    eng0 = common.engine(clock="wall", journal=False)  # imports, catalog, allocator warm
    del eng0
    gc.collect()
    before = common.vm_rss_kib()
    eng, ingested = common.filled_engine(partners, templates, clock="wall", now_ms=common.T0)
    gc.collect()
    after = common.vm_rss_kib()
    st = eng.state[next(iter(eng.state))]
    sizes = {
        "rings_bytes": common.deep_size(st.rings),
        "seen_bytes": common.deep_size(st.seen),
        "entities_bytes": common.deep_size(st.entities),
        "pending_bytes": common.deep_size(st.pending),
        "cusum_bytes": common.deep_size(st.cusum),
    }
    shape = {**sizes,
        "buckets": sum(len(r) for r in st.rings),
        "aggregates": sum(a is not None for r in st.rings for b in r.values() for a in b),
        "event_ids": sum(len(s) for s in st.seen.values()),
        "entities": sum(len(e) for e in st.entities.values()),
    }
    return {"before_kib": before, "after_kib": after, "ingested": ingested,
            "partners": len(eng.state), "shape": shape}


def _spawn(partners: int, templates: int) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, "-m", "bench.memory", str(partners), str(templates)],
        check=True, capture_output=True, text=True, timeout=1800,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def run(quick: bool) -> dict[str, Any]:
    # 10,000 filled partners need far more memory than a test machine has (see the per-partner
    # figure): hold as many as fit comfortably, measure, and project to 10,000 linearly.
    target = 8 if quick else 300
    templates = 4 if quick else 12
    small = _spawn(templates, templates)  # every partner built by ingest: no copies
    big = _spawn(target, templates)
    per_ingested = (small["after_kib"] - small["before_kib"]) * 1024 / templates
    delta = (big["after_kib"] - big["before_kib"]) * 1024
    per_partner = delta / target
    shape = big["shape"]
    notes = [
        f"**Where it goes** (deep size of one partner): entity marks "
        f"{shape['entities_bytes'] / 2**20:.1f} MiB for {shape['entities']:,} entities "
        f"({shape['entities_bytes'] / max(1, shape['entities']):,.0f} B each; kept for the 90-day "
        "entity retention, complete or not, so a late event can still correct its sample), "
        f"window buckets {shape['rings_bytes'] / 2**20:.1f} "
        f"MiB for {shape['aggregates']:,} aggregates in {shape['buckets']} buckets "
        f"({shape['rings_bytes'] / max(1, shape['aggregates']):,.0f} B each: a Python list of "
        f"boxed numbers in a dict in a dict), dedup ids {shape['seen_bytes'] / 2**20:.1f} MiB for "
        f"{shape['event_ids']:,} event ids. The rest of the RSS is allocator overhead "
        "(pymalloc pools, dict/set slack).",
        "Even the window buckets alone exceed the goal at 10,000 partners "
        f"({shape['rings_bytes'] * 10_000 / 2**30:.0f} GiB). Packed arrays (16 KPIs x 780 buckets "
        "x count/sum/sum-of-squares as float64) would be ~0.3 MiB per partner, ~2.8 GiB at "
        "10,000, so the goal also needs fewer buckets (e.g. 6 h resolution for 7d/30d) or "
        "32-bit sums, and a far more compact entity record (or a shorter retention for "
        "entities whose samples are final).",
    ]
    return {
        "notes": notes,
        "title": "Memory per partner, windows filled (projected to 10,000)",
        "method": (
            f"A child process (python -m bench.memory) builds an Engine with {target:,} partners, "
            "default catalog, every bucket of every window holding samples of every KPI "
            f"(30 days of minimal traffic: {big['ingested'] // templates:,} events per partner, "
            "ingested with the wall clock following the events, so eviction runs as in a live "
            f"worker). {templates} partners are built by Engine.ingest; the rest are pickle "
            "copies of them (fresh objects, nothing shared). RSS is VmRSS from /proc/self/status "
            "after imports and catalog load (before) and after building + gc.collect() (after). "
            "Projected to 10,000 partners linearly (per-partner cost x 10,000). Deep sizes "
            "(sys.getsizeof over the object graph) of one partner's window buckets, entity marks "
            "and dedup ids show where it goes. Cross-check, same run: a child holding only the "
            f"{templates} ingested partners (no copies)."
        ),
        "figures": {
            "partners": target,
            "rss_before_mib": big["before_kib"] / 1024,
            "rss_after_mib": big["after_kib"] / 1024,
            "state_mib": delta / 2**20,
            "per_partner_kib": per_partner / 1024,
            "per_partner_kib_ingest_only": per_ingested / 1024,
            "buckets_per_partner": big["shape"]["buckets"],
            "aggregates_per_partner": big["shape"]["aggregates"],
            "event_ids_per_partner": big["shape"]["event_ids"],
            "entities_per_partner": big["shape"]["entities"],
            "deep_size_rings_kib": big["shape"]["rings_bytes"] / 1024,
            "deep_size_entities_kib": big["shape"]["entities_bytes"] / 1024,
            "deep_size_dedup_ids_kib": big["shape"]["seen_bytes"] / 1024,
            "projected_gib_at_10000": per_partner * 10_000 / 2**30,
            "goal_gib": GOAL_BYTES / 2**30,
        },
        "ratios": {
            "state_vs_goal_at_10000": per_partner * 10_000 / GOAL_BYTES,
            "copies_vs_ingest_per_partner": per_partner / per_ingested if per_ingested else 0.0,
        },
        "goal": "< 2 GiB at 10,000 partners",
        "goal_met": per_partner * 10_000 < GOAL_BYTES,
    }


if __name__ == "__main__":
    print(json.dumps(child(int(sys.argv[1]), int(sys.argv[2]))))
