"""Fault injection for worker subprocesses of the tests, never for the product.

Python imports ``sitecustomize`` at start-up from the path: a test puts this folder first on a
worker's PYTHONPATH and names event ids in PP_TEST_RAISE_ON; ``Engine.apply`` then raises on
each of them, as an unforeseen bug would, in the middle of the agent's batch.
"""

from __future__ import annotations

import os

_IDS = {i for i in os.environ.get("PP_TEST_RAISE_ON", "").split(",") if i}

if _IDS:
    from typing import Any

    from streams.engine.core import Engine

    _apply = Engine.apply

    def _failing_apply(self: Engine, parsed: Any, wall_ms: int) -> Any:
        if parsed.event.event_id in _IDS:
            raise RuntimeError(f"injected failure on event {parsed.event.event_id}")
        return _apply(self, parsed, wall_ms)

    Engine.apply = _failing_apply  # type: ignore[method-assign]
