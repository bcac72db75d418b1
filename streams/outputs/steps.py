"""Work written as a generator of steps, for the worker to run a slice at a time.

A scrape, a month-end forecast refresh, the wall's tiles and the ledger walk every partner a
worker owns: seconds at fleet size. Written as generators that yield between partners, the
worker's views run them with the event loop let run between slices
(:func:`streams.runtime.pacing.run_paced`), and everything else runs them in one go here.
"""

from __future__ import annotations

from collections.abc import Generator
from typing import TypeVar

T = TypeVar("T")


def finish(steps: Generator[None, None, T]) -> T:
    """Run every step at once; the generator's return value."""
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
