"""``python -m bench [--quick] [--only NAME] [--out bench/results.json] [--md BENCHMARKS.md]``."""

from __future__ import annotations

import argparse
import json
import sys
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
    args = parser.parse_args(argv)
    names = args.only or list(BENCHMARKS)
    command = "python -m bench " + " ".join(sys.argv[1:] if argv is None else argv)
    results: dict[str, Any] = {
        "command": command.strip(),
        "quick": args.quick,
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
        try:
            result = BENCHMARKS[name](args.quick)
        except Exception as exc:  # one broken benchmark must not lose the others' figures
            traceback.print_exc()
            failed.append(name)
            result = {"title": name, "method": "", "figures": {}, "ratios": {},
                      "error": f"{type(exc).__name__}: {exc}", "goal_met": None}
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


if __name__ == "__main__":
    raise SystemExit(main())
