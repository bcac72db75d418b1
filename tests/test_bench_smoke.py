"""The benchmark suite runs end to end at small sizes and reports every figure (no timing asserts)."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import pytest

from bench import report
from tests.harness import REPO

pytestmark = [pytest.mark.slow, pytest.mark.xdist_group("cpu")]
BENCHMARKS = ("engine", "metrics", "memory", "percentile", "e2e")
"""The benchmarks smoke-tested here. latency and recovery (75 s together at --quick) are left
to `python -m bench`: the suite's 30-minute budget; their subject is tested by the alerting and
fault tests."""


@pytest.mark.timeout(600)
def test_quick_suite_writes_every_benchmark(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out),
         *(f"--only={name}" for name in BENCHMARKS)],
        cwd=REPO, capture_output=True, text=True, timeout=540,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    results = json.loads(out.read_text())
    assert results["quick"] is True
    machine = results["machine"]
    assert machine["cores"] >= 1 and machine["python"].startswith("3.")
    assert set(results["benchmarks"]) == set(BENCHMARKS)
    # each in its own fresh process: no figure inherits the heap of the benchmarks before it
    assert results["fresh_processes"] is True
    pids = [result.get("pid") for result in results["benchmarks"].values()]
    assert len(set(pids)) == len(BENCHMARKS), pids
    for name, result in results["benchmarks"].items():
        figures = result["figures"]
        assert figures, name
        for key, value in {**figures, **result["ratios"]}.items():
            assert isinstance(value, int | float) and not isinstance(value, bool), (name, key)
            assert math.isfinite(value), (name, key, value)
    engine = results["benchmarks"]["engine"]
    assert engine["figures"]["engine_events_per_s"] > 0
    assert engine["profile_top"], "the engine benchmark profiles where the time goes"
    assert results["benchmarks"]["metrics"]["profile_top"], "and so does the scrape's"
    e2e = results["benchmarks"]["e2e"]["figures"]
    assert e2e["stock_faust_decode_events_per_s"] > 0, "the stock Faust baseline ran"
    assert e2e["worker_accepted"] == e2e["messages"]
    assert e2e["repartition_topic_messages"] == 0, "keyed events take no repartition hop"
    # the profiled worker's samples, every one in a part (bench/spy.py; py-spy is a bench extra)
    assert e2e.get("profile_samples", 0) > 0, ("the e2e benchmark profiles its worker",
                                              results["benchmarks"]["e2e"].get("notes"))
    shares = [v for k, v in e2e.items() if k.startswith("profile_share_")]
    assert math.isclose(sum(shares), 1.0), shares
    # quick runs never overwrite the committed report, but the report renders from their results
    assert "BENCHMARKS.md" not in proc.stderr
    text = report.markdown(results)
    for name in BENCHMARKS:
        assert f"## {name}:" in text, name
