"""partnerpulse benchmarks: ``python -m bench [--quick] [--only NAME] [--out bench/results.json]``.

Each benchmark module has ``run(quick: bool) -> dict`` returning a result of the shape
documented in :mod:`bench.common` (figures, baselines measured in the same run, ratios).
"""
