"""``python -m bench [--quick] [--only NAME] [--out bench/results.json] [--md BENCHMARKS.md]``."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import common, e2e, engine, latency, memory, metrics, percentile, recovery, report, restart

BENCHMARKS: dict[str, Callable[[bool], dict[str, Any]]] = {
    "engine": engine.run,
    "metrics": metrics.run,
    "memory": memory.run,
    "percentile": percentile.run,
    "e2e": e2e.run,
    "latency": latency.run,
    "recovery": recovery.run,
    "restart": restart.run,
}
REPO = Path(__file__).resolve().parent.parent


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="small sizes (about a minute)")
    parser.add_argument("--only", action="append", choices=sorted(BENCHMARKS),
                        help="run only this benchmark (repeatable)")
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results.json")
    parser.add_argument("--md", type=Path, default=None,
                        help="write the Markdown report here (default: BENCHMARKS.md for a full "
                             "run of every benchmark, none otherwise)")
    parser.add_argument("--in-process", action="store_true",
                        help="run the benchmarks in this process, one after the other (by "
                             "default each runs in a fresh child process)")
    parser.add_argument("--child", metavar="RESULT", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child is not None:  # the fresh process of one benchmark (see run_fresh)
        (name,) = args.only
        args.child.write_text(json.dumps(run_one(name, args.quick) | {"pid": os.getpid()}))
        return 0
    names = args.only or list(BENCHMARKS)
    command = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {
        "command": command.strip(),
        "quick": args.quick,
        "fresh_processes": not args.in_process,
        "started": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": common.machine(),
        "benchmarks": {},
    }
    md = args.md
    if md is None and not args.quick and not args.only:
        md = REPO / "BENCHMARKS.md"
    args.out.parent.mkdir(parents=True, exist_ok=True)
    failed = []
    for name in names:
        print(f"running {name} ...", file=sys.stderr, flush=True)
        start = time.perf_counter()
        result = run_one(name, args.quick) if args.in_process else run_fresh(name, args.quick)
        if result.get("error"):
            failed.append(name)
        result["elapsed_s"] = time.perf_counter() - start
        results["benchmarks"][name] = result
        if not result.get("error"):
            report.print_table(name, result)
        # written after every benchmark: a later failure or interruption keeps what was measured
        args.out.write_text(json.dumps(results, indent=2, sort_keys=False) + "\n")
        if md is not None:
            md.write_text(report.markdown(results))
    print(f"wrote {args.out}" + (f" and {md}" if md else ""), file=sys.stderr)
    return 1 if failed else 0


def run_one(name: str, quick: bool) -> dict[str, Any]:
    """One benchmark's result in this process; a failure becomes the result's ``error``."""
    try:
        return BENCHMARKS[name](quick)
    except Exception as exc:  # one broken benchmark must not lose the others' figures
        traceback.print_exc()
        return _failed(name, f"{type(exc).__name__}: {exc}")


def run_fresh(name: str, quick: bool) -> dict[str, Any]:
    """One benchmark's result, measured in a fresh child process.

    Why: a benchmark run after others inherits their process: the metrics benchmark's
    10,000-partner engines leave a heap of several GiB and a cyclic GC that pauses the next
    benchmark's producer and alert receiver (the latency benchmark's wall-clock p99 was
    1.37 s after it in a full run and 0.71 s alone). Each figure should not depend on
    which benchmarks ran before it.
    """
    with tempfile.TemporaryDirectory(prefix="pp-bench-child-") as tmp:
        out = Path(tmp) / "result.json"
        cmd = [sys.executable, "-m", "bench", "--only", name, "--child", str(out)]
        done = subprocess.run(cmd + (["--quick"] if quick else []), cwd=REPO, check=False)
        if done.returncode == 0 and out.exists():
            result: dict[str, Any] = json.loads(out.read_text())
            return result
    return _failed(name, f"the benchmark's process exited with {done.returncode}")


def _failed(name: str, error: str) -> dict[str, Any]:
    """The result of a benchmark that failed: no figures, and why."""
    return {"title": name, "method": "", "figures": {}, "ratios": {}, "error": error,
            "goal_met": None}


if __name__ == "__main__":
    raise SystemExit(main())
