"""Low-discrepancy sequences and hashes: the simulator's only sources of variation, so that a
lifecycle is a pure function of its arrival."""

from __future__ import annotations

import hashlib
import math
from datetime import UTC, datetime, timedelta, timezone
from statistics import NormalDist
from typing import Final

from streams.tools.simulator.profiles import (
    CAP_FCR,
    CAP_LEAD,
    CAP_OTS,
    CAP_PATIENCE,
    CAP_WAIT,
    CAP_WORK,
    SEVERITIES,
    SIG_FCR,
    SIG_LEAD,
    SIG_OTS,
    SIG_PATIENCE,
    SIG_WAIT,
    SIG_WORK,
    S,
)

# --- low-discrepancy and hashing helpers ----------------------------------------------
#
# Delays and yes/no decisions of arrival k use the Kronecker sequence {k * alpha + offset}
# (one alpha per dimension: quadratic irrationals with small partial quotients, from
# different fields so dimensions stay independent). Compared with independent draws,
# counts per minute and shares over a few hundred entities are close to their means.

ALPHA: Final = tuple(
    x % 1.0
    for x in (
        (math.sqrt(5) - 1) / 2, math.sqrt(2), math.sqrt(3), (math.sqrt(17) - 3) / 2,
        math.sqrt(7), (math.sqrt(21) - 3) / 2, (math.sqrt(13) - 3) / 2, math.sqrt(6),
        math.sqrt(14), (math.sqrt(33) - 5) / 2, (math.sqrt(37) - 5) / 2, math.sqrt(11),
        math.sqrt(23), math.sqrt(19), math.sqrt(15), math.sqrt(61),
    )
)
NDIM: Final = len(ALPHA)
# Ticket dimensions.
(T_C, T_W, T_ESC, T_HOPS, T_FCR, T_ESC_T, T_CSAT, T_XLA, T_CSAT_T, T_XLA_T,
 T_TRUCK, T_REOPEN, T_CSAT_V, T_XLA_V, T_ESC_GAP, T_SEV) = range(16)
# Call dimensions.
C_WAIT, C_AB, C_PAT = range(3)
# Order dimensions.
O_LEAD, O_CANCEL, O_ONTIME, O_FAI, O_RESCHED = range(5)

NZ: Final = 4096
Z: Final[tuple[float, ...]] = tuple(NormalDist().inv_cdf((i + 0.5) / NZ) for i in range(NZ))
M64: Final = (1 << 64) - 1
U16: Final = 1.0 / 65536.0
U64: Final = 1.0 / 2**64


def _ln_table(sigma: float, cap: float) -> tuple[float, ...]:
    """Lognormal multipliers (mean 1 before the cap) by quantile bucket, truncated at ``cap``.

    Truncated, not clipped: clipping piles every draw over the cap onto the cap itself (6% of
    them at sigma 0.55 and cap 2), a spike that the integrity lens rightly reads as durations
    bunched just inside a target when a target sits just past it."""
    shift = 0.5 * sigma * sigma
    top = NormalDist().cdf((math.log(cap) + shift) / sigma)
    inv = NormalDist().inv_cdf
    return tuple(math.exp(sigma * inv((i + 0.5) / NZ * top) - shift) for i in range(NZ))


LN_OTS: Final = _ln_table(SIG_OTS, CAP_OTS)
LN_WORK: Final = _ln_table(SIG_WORK, CAP_WORK)
LN_FCR: Final = _ln_table(SIG_FCR, CAP_FCR)
LN_WAIT: Final = _ln_table(SIG_WAIT, CAP_WAIT)
LN_PATIENCE: Final = _ln_table(SIG_PATIENCE, CAP_PATIENCE)
LN_LEAD: Final = _ln_table(SIG_LEAD, CAP_LEAD)


def mix(x: int) -> int:
    """splitmix64 finaliser: a well-mixed 64-bit hash of ``x``."""
    x = (x + 0x9E3779B97F4A7C15) & M64
    x = ((x ^ (x >> 30)) * 0xBF58476D1CE4E5B9) & M64
    x = ((x ^ (x >> 27)) * 0x94D049BB133111EB) & M64
    return x ^ (x >> 31)


def severity_of(u: float) -> str:
    for name, share in SEVERITIES:
        if u < share:
            return name
        u -= share
    return SEVERITIES[-1][0]


def digest64(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")


def u16(h: int, slot: int) -> float:
    """The ``slot``-th (0..3) 16-bit field of the hash ``h`` as a uniform in [0, 1)."""
    return ((h >> (16 * slot)) & 0xFFFF) * U16


def rfc3339(ms: int, offset_min: int) -> str:
    """An instant as RFC 3339 (whole seconds), written in the given UTC offset."""
    tz = timezone(timedelta(minutes=offset_min))
    text = datetime.fromtimestamp(ms // S, tz).isoformat()
    return text.replace("+00:00", "Z") if offset_min == 0 else text


def utc_date(ms: int, days: int = 0) -> str:
    return (datetime.fromtimestamp(ms // S, UTC).date() + timedelta(days=days)).isoformat()
