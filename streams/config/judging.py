"""How partners are judged: the parameters of the statistics and the state machine (catalog)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

KINDS: Final = ("ratio", "mean", "quantile")
"""Evidence kinds: what a KPI's value is made of (a count ratio, a mean, a quantile)."""

CUSUM_DEFAULTS: Final[Mapping[str, tuple[float, float]]] = {
    "ratio": (0.0, 8.0),
    "mean": (0.0, 10.0),
    "quantile": (0.0, 10.0),
}
"""Default ``(k, h)`` per evidence kind; see :class:`Cusum` for how they were chosen."""


@dataclass(frozen=True)
class JudgeParams:
    """Tuning of the judgement; the defaults are the catalog's defaults.

    ``cusum_k``/``cusum_h`` of ``None`` mean the evidence kind's default from
    :data:`CUSUM_DEFAULTS` (ratios and durations need different ones).
    """

    confidence: float = 0.95
    for_ms: int = 300_000
    recovery_margin: float = 0.05
    cusum_k: float | None = None
    cusum_h: float | None = None

    def __post_init__(self) -> None:
        if not 0.5 <= self.confidence < 1.0:
            raise ValueError(f"confidence must be in [0.5, 1), not {self.confidence}")
        if self.for_ms < 0:
            raise ValueError(f"for_ms must be >= 0, not {self.for_ms}")
        if not 0.0 <= self.recovery_margin < 1.0:
            raise ValueError(f"recovery_margin must be in [0, 1), not {self.recovery_margin}")
        if self.cusum_h is not None and self.cusum_h <= 0:
            raise ValueError(f"cusum_h must be positive, not {self.cusum_h}")

    def cusum_params(self, kind: str) -> tuple[float, float]:
        """``(k, h)`` for evidence ``kind``: the explicit values, else the kind's defaults."""
        if kind not in CUSUM_DEFAULTS:
            raise ValueError(f"unknown evidence kind {kind!r} (expected one of {KINDS})")
        k, h = CUSUM_DEFAULTS[kind]
        return (k if self.cusum_k is None else self.cusum_k,
                h if self.cusum_h is None else self.cusum_h)
