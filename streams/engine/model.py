"""The engine's records: what a message became, a KPI's value, and everything kept per partner.

The packed layouts (window buckets, percentile codes, entity records) are arrays for memory; each
has one named accessor in the module that owns it (:mod:`streams.engine.windows`,
:mod:`streams.engine.entities`).
"""

from __future__ import annotations

import array
import enum
import itertools
import types
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, NamedTuple

import numpy as np
import numpy.typing as npt

from streams.config.calendars import BusinessCalendar
from streams.config.catalog import Kpi
from streams.engine.cold import ColdRecords
from streams.engine.cusum import Cusum
from streams.engine.dedup import SeenIds

_STATE_UIDS: Final = itertools.count()


class Outcome(enum.StrEnum):
    """What became of one input message."""

    ACCEPTED = "accepted"
    DUPLICATE = "duplicate"
    LATE = "late"
    REJECTED = "rejected"


@dataclass(frozen=True, slots=True)
class Result:
    """Outcome of one message, with the reason when it was rejected."""

    outcome: Outcome
    partner: str | None = None
    reason: str = ""
    ts_ms: int | None = None


class KpiValue(NamedTuple):
    """A KPI's value in one window for one partner, with what a judge needs to weigh it.

    A named tuple, not a frozen dataclass: a scrape of a large fleet builds hundreds of
    thousands of them (a new minute recomputes every partner's 1 h window), and a frozen
    dataclass's ``__init__`` costs 0.64 us against 0.24 us here. Immutable either way."""

    value: float
    samples: int
    total: float = 0.0
    """Sum of the sample values (the numerator count for ratios)."""
    squares: float = 0.0
    """Sum of the squared sample values (spread of mean KPIs)."""
    hist: dict[int, int] | None = None
    """Merged log-histogram of the window (percentile KPIs)."""


OPEN_ITEM_STAGES: Final = (0.5, 0.75, 1.0)
"""Shares of the target at which a waiting item counts in ``open_items`` (cumulative)."""

AT_RISK_SHARE: Final = 0.75
"""An open item whose age passed this share of its target is ``at_risk`` in the ledger
(``/api/open``); past the whole target it is ``breached``. The middle stage of
:data:`OPEN_ITEM_STAGES`: the wall's and the rules' amber."""

OPEN_STATES: Final = ("breached", "at_risk", "ok")
"""An open item's states in the ledger, most urgent first."""

URGENT: Final = "urgent"
"""The ledger's filter for the items at risk or breached (the states a wall names)."""


@dataclass(frozen=True, slots=True)
class OpenItem:
    """One entity still waiting for its stop (a ticket without first contact, a detractor not
    called back), against the partner's target: a row of the ledger (``/api/open``)."""

    partner: str
    kpi: str
    entity_id: str
    severity: str | None
    """The severity the KPI selects its starts by (``where: {severity: ...}``), else None."""
    opened_ms: int
    """Event time of the start (the ticket's first ``opened`` of the KPI's filter)."""
    age_ms: int
    """``now - opened_ms`` on the clock the ledger was read at: on the KPI's clock (working
    time of the partner's calendar for ``clock: business``), less pauses."""
    target_ms: int
    """The partner's target for the KPI (a follow-up's horizon)."""
    state: str
    """One of :data:`OPEN_STATES`."""
    paused_ms: int = 0
    """Time the clock stood still while the entity waited (``pause_on``), on the KPI's clock;
    ``age_ms`` leaves it out."""
    clock: str = "calendar"
    """The KPI's clock: ``calendar`` or ``business`` (ages in the partner's working time)."""

    @property
    def left_ms(self) -> int:
        """Time left before the target is passed; negative once it is."""
        return self.target_ms - self.age_ms


def in_state(item: OpenItem, state: str | None) -> bool:
    """Whether the item passes a ledger state filter: one of :data:`OPEN_STATES`,
    :data:`URGENT` (at risk or breached), or None (any)."""
    if state is None:
        return True
    if state == URGENT:
        return item.state != "ok"
    return item.state == state


def urgency(item: OpenItem) -> tuple[int, str, str, str]:
    """Sort key of open items: least time left first (the most overdue at the top), ties by
    name."""
    return item.left_ms, item.partner, item.kpi, item.entity_id


NO_VALUES: Final[Mapping[tuple[str, str], KpiValue]] = types.MappingProxyType({})
"""The values of a window without samples (one shared, read-only object)."""

Values = dict[tuple[str, str], KpiValue]
"""(kpi id, window name) -> value."""

Agg = list[Any]
"""A month aggregate: [n, sum, sum of squares] or [n, sum, sum of squares, {hist_key: count}]
(percentile KPIs), in base units (seconds)."""
Bucket = array.array
"""A window bucket: float64 [n, sum, sum of squares] for each KPI index, packed (24 B per KPI).

The sums are in the KPI's *internal* unit: whole milliseconds for durations, counts for ratios,
the field's value for mean_field KPIs. Integers are exact in a float64 up to 2**53 (285,000
years of milliseconds), so counts and duration sums never drift under retraction or in the
running window totals; sums of squares (used only for the spread) are rounded as floats are.
Percentile KPIs keep their samples' histogram keys beside the bucket (``PartnerState.hists``)."""
FrozenBucket = bytes
"""A closed bucket kept compact, as bytes of float64: the judged KPIs' ``[n, sum, sum of
squares]`` as in a :data:`Bucket` (the catalog's KPIs come first in every bucket), then
``(kpi index, n, sum, sum of squares)`` for each per-channel KPI with a sample, in index order.

Why: an hour bucket has a slot for every KPI counted by the hour, the per-channel ones included
(66 with the default catalog), yet a filled partner's hour holds samples of about 21 of the 24
judged KPIs and 8 of the 42 per-channel ones: as dense arrays its 720 hour buckets took 1.2 MiB,
a third of its memory. The judged prefix stays dense because nearly all of it is sampled and
the integrity lens reads it straight from there (a 30d window's 719 closed buckets in one
copy). A bucket is frozen at the hourly sweep once it is two buckets old
(:meth:`streams.engine.windows.WindowStore.evict`), when that makes it at most two thirds of its
dense size; a sample that arrives for it later thaws it back to a :data:`Bucket`. Readers take
either: the sums they add are the same IEEE additions (an absent KPI adds 0.0 to a dense sum,
which leaves it as it is)."""
Hists = dict[int, dict[int, int]]
"""kpi index -> log-histogram (sketch keys -> count)."""
HistCodes = array.array
"""The percentile samples of one bucket: int64 ``kpi index << 32 | (sketch key - ZERO_KEY)``, one
per sample (a multiset: order means nothing, a retraction removes one equal code).

Why not a histogram per KPI per bucket: a bucket of the long windows holds a handful of samples,
and two dicts (bucket -> KPI -> key -> count) cost 560 B for one sample against 88 B here, for
each of the 720 hourly buckets of every partner. A bucket with thousands of samples costs 8 B
per sample, still less than a dict unless the samples share a dozen keys each."""
Record = list[Any] | array.array
"""An entity's marks: [last event time, mark of slot 1, mark of slot 2, ...] (see
``PartnerState.entities`` and :class:`streams.engine.entities.EntityStore`). An int64 array,
:data:`UNSET` for a mark not set yet, on entity topics whose marks are all plain times; a list,
None for unset, on topics with a mark that carries more (a due date, a UTC offset, a set of
follow-up times)."""
Frozen = bytes
"""A record idle for an hour (:data:`streams.engine.entities.COLD_AFTER_MS`), frozen: its last
event time plus 2**63 as 8 bytes big-endian (so frozen records compare as bytes as their times
do), then its other marks -- int64 little-endian on packed topics, msgpack on list topics.
Written and read only by :mod:`streams.engine.entities`; snapshots carry it as it is."""
UNSET: Final = -(2**63)
"""A packed record's unset mark (no event time is that small)."""
Sample = tuple[int, int, int, Any, int | None]
"""One counted sample of an entity: ``(role, time, n, s, histogram key)``, read by unpacking
(``role, ts, n, s, key = sample``); role 0 is the sample of a duration/follow-up/deadline KPI or
a ratio's numerator, role 1 a ratio's denominator.

A plain tuple, not a NamedTuple: samplers build two per dependent KPI on every mark change, and
a NamedTuple costs about seven times a tuple to build (its ``__new__`` is a Python function)."""
Sampler = Callable[[Record], tuple[Sample, ...]]
SlaLimits = tuple[tuple[int, BusinessCalendar | None], ...]
"""An sla_experience KPI's SLA parts for one partner: (its target in ms, its business calendar
or None on the calendar clock) each."""
LimitedSampler = Callable[[Record, Any], tuple[Sample, ...]]
"""A sampler that also reads something of the partner (``PartnerState.sampler_args``): the
SLA limits of an sla_experience KPI, the business calendar of a duration on that clock."""
"""An entity's samples for one KPI, from its record (compiled once per KPI: see kinds)."""
Warn = tuple[int, int, float | None]
"""An early-warning update of one event: (selector position, kpi index, sample value or None
for a ratio's denominator event), applied in position order once the event is counted."""


class WindowSpec(NamedTuple):
    """A window some KPI is counted in (built once per engine)."""

    name: str
    resolution_ms: int
    ring: int
    """Index of its resolution's ring of buckets (``PartnerState.rings``)."""
    buckets: int
    """Its span in buckets, the current one included."""
    kpis: tuple[int, ...]
    """Indices of the KPIs counted in it."""


class RingAdd(NamedTuple):
    """Where a sample of one KPI goes at one resolution: its ring and the windows it feeds."""

    resolution_ms: int
    ring: int
    windows: tuple[tuple[int, int], ...]
    """(window index, span in buckets) of the KPI's windows at this resolution."""


@dataclass(slots=True)
class Totals:
    """A window's running sums over its *closed* buckets: indices ``hi - span < i < hi``.

    The current bucket ``hi`` (where nearly every new sample lands) is added at read time, so
    an in-order event never touches the totals; a sample added or retracted in an older bucket
    of the range updates them. Reading at a later ``hi`` slides the range bucket by bucket."""

    hi: int
    sums: Bucket
    """[n, sum, sum of squares] per KPI index: a float64 array like a bucket."""
    hists: Hists = field(default_factory=dict)
    slid: int = 0
    """Buckets slid since the totals were rebuilt: after a whole window's worth they are summed
    afresh, so float rounding (sums of squares, mean_field sums) cannot accumulate."""


class Evaluated(NamedTuple):
    """A window's last evaluation: valid while the partner's version and bucket index hold."""

    version: int
    hi: int
    """Bucket index it was computed at."""
    values: Mapping[tuple[str, str], KpiValue]
    changes: list[int]
    """``PartnerState.changes`` then: which KPIs moved since is which differ now."""


EVIDENCE_CAP: Final = 20
"""Entity ids kept per partner, KPI and month behind its misses: enough to answer "which
tickets?" in a dispute, bounded whatever arrives."""


@dataclass(frozen=True, slots=True)
class Restatement:
    """A closed month's KPI value changed by events that came after the close."""

    at_ms: int
    """Engine time when the change was recorded."""
    kpi: str
    old_value: float | None
    """The value stated last (the frozen card's, or the previous restatement's)."""
    new_value: float | None
    old_samples: int
    new_samples: int


@dataclass(slots=True)
class ClosedMonth:
    """A calendar month's values as frozen at its close, and every restatement since."""

    closed_at_ms: int
    values: dict[str, list[float]]
    """kpi id -> [value, samples, sum, sum of squares] at the close: the card as paid."""
    digest: str
    """SHA-256 of the frozen values (:func:`streams.engine.months.digest`)."""
    restatements: list[Restatement] = field(default_factory=list)


@dataclass(slots=True)
class PartnerState:
    """Everything the engine keeps for one partner."""

    seen: SeenIds = field(default_factory=SeenIds)
    """:func:`streams.engine.journal.id_hash` of the accepted event ids, each with the hour of
    its event time: an id is a duplicate whatever the time of a redelivery (see
    :mod:`streams.engine.dedup`)."""
    entities: dict[str, dict[str, Record | Frozen]] = field(default_factory=dict)
    """entity topic -> entity id -> [last event time, mark of slot 1, mark of slot 2, ...]
    (frozen as bytes after an hour without an event).

    A mark is an event time (earliest/latest reducers), ``(time, extra)`` for marks that carry
    the due date or the UTC offset, or a sorted tuple of times (follow-ups); unset until an
    event sets it (see :data:`Record`). The samples an entity contributes are a function of its
    marks, recomputed on change."""
    cold: dict[str, ColdRecords] = field(default_factory=dict)
    """entity topic -> the records frozen after an hour without an event, packed
    (:class:`~streams.engine.cold.ColdRecords`); an event for one thaws it back into
    ``entities``. (Snapshots before format 5 held them frozen in ``entities``, as bytes: they
    are moved here at the next hourly sweep.)"""
    rings: list[dict[int, Bucket | FrozenBucket]] = field(default_factory=list)
    """per resolution (``WindowStore.resolutions``): bucket index -> packed sums of every KPI
    (or, closed and sparse, of the KPIs sampled in it: :data:`FrozenBucket`)."""
    hists: list[dict[int, HistCodes]] = field(default_factory=list)
    """per resolution: bucket index -> the percentile samples counted in it (:data:`HistCodes`)."""
    ahead: list[dict[int, array.array]] = field(default_factory=list)
    """per resolution: bucket index -> the samples dated ahead of ``horizon_ms`` and the newest
    event, ``(kpi index, n, sum, sum of squares)`` per KPI in one float64 array, until the
    clock reaches their bucket (:meth:`streams.engine.windows.WindowStore.advance`)."""
    ahead_due: list[list[int]] = field(default_factory=list)
    """per resolution: the bucket indexes in ``ahead`` as a heap, earliest first."""
    horizon_ms: int = -1
    """Latest time the windows were read at: buckets up to it are in the rings."""
    windows: list[Totals | None] = field(default_factory=list)
    """per window (``WindowStore.specs``): running totals, None until read (or invalidated)."""
    values: list[Evaluated | None] = field(default_factory=list)
    """per window: its last evaluation, None until read (or invalidated)."""
    changes: list[int] = field(default_factory=list)
    """per KPI index: samples added or retracted so far. Within one bucket index a KPI's window
    value moves only with these, so an evaluation recomputes just the KPIs that moved."""
    last_ms: int = -1
    """Largest event time accepted for this partner."""
    cusum: dict[int, Cusum] = field(default_factory=dict)
    """kpi index -> CUSUM of its samples against the partner's target (early warning)."""
    pending: dict[int, dict[str, int]] = field(default_factory=dict)
    """open_items KPIs: kpi index -> entity id -> start time, while the stop is missing."""
    waiting_starts: dict[int, list[int]] = field(default_factory=dict)
    """open_items KPIs: kpi index -> the start times in ``pending``, sorted; dropped when its
    ``pending`` entry changes (a cache: not in snapshots)."""
    waiting_oldest: dict[int, tuple[int, list[tuple[str, int]]]] = field(default_factory=dict)
    """open_items KPIs: kpi index -> (a start time, the entities of ``pending`` that started at
    or before it); dropped with ``waiting_starts`` (a cache: not in snapshots)."""
    seq: int = 0
    """Accepted events so far (each journal record carries its number: replay order)."""
    snap_seq: int = -1
    """``seq`` of the partner's last snapshot, written or loaded (-1: none)."""
    topic_last_ms: dict[str, int] = field(default_factory=dict)
    """Input topic -> largest event time accepted on it for this partner (what a snapshot
    gives back of the engine's ``last_event_ms``)."""
    months: dict[int, dict[int, Agg]] = field(default_factory=dict)
    """Calendar month (year * 12 + month - 1) -> kpi index -> aggregate, for the report card."""
    month_seq: dict[int, int] = field(default_factory=dict)
    """Month -> ``seq`` of its last persisted snapshot (-1 while it has none)."""
    months_dirty: set[int] = field(default_factory=set)
    """Months changed since their last snapshot."""
    closed: dict[int, ClosedMonth] = field(default_factory=dict)
    """Closed months (their grace period over): the values frozen then, and restatements."""
    closed_touched: set[int] = field(default_factory=set)
    """Closed months a late event changed, until their restatement is recorded."""
    close_due_ms: int = -1
    """When the oldest open month with data is due to close (-1: work it out)."""
    evidence: dict[int, dict[int, list[str]]] = field(default_factory=dict)
    """Month -> kpi index -> ids of the entities behind its misses (a ticket over its OTS
    target, a late install, an escalated ticket), first come, at most ``EVIDENCE_CAP``."""
    miss_limits: list[float] = field(default_factory=list)
    """Per KPI index: the partner's target in the units samples are counted in (a sample on
    the wrong side of it is a miss)."""
    version: int = 0
    """Bumped by every accepted event: with the minute, it keys the cached evaluation."""
    uid: int = field(default_factory=lambda: next(_STATE_UIDS))
    """Unique per state object, so a state rebuilt by a restore never matches an old key."""
    evicted_at: int = -1
    cache_key: tuple[int, int] | None = None
    cache: dict[tuple[str, str], KpiValue] | None = None
    bins: dict[int, dict[int, array.array[int]]] = field(default_factory=dict)
    """KPIs watched for deadline bunching: kpi index -> UTC day -> sample counts in the bins
    around the partner's target (:mod:`streams.engine.bins`)."""
    bin_targets: dict[int, float] = field(default_factory=dict)
    """kpi index -> the target its bins are laid around (the partner's, when its state began)."""
    sampler_args: dict[int, Any] = field(default_factory=dict)
    """KPIs whose samplers read something of the partner (when its state began, like the
    bins): kpi index -> an sla_experience KPI's :data:`SlaLimits`, or the business calendar of
    a duration with ``clock: business``."""


ATTAINMENT_CAP: Final = 10.0
"""The most a KPI's attainment counts, however far past its target."""


def attainment(kpi: Kpi, value: float, target: float) -> float:
    """1.0 on target, above 1 better than target, for either direction; capped at 10."""
    # (conditionals, not min(): a scrape computes one per partner x KPI x window written)
    cap = ATTAINMENT_CAP
    if kpi.lower_is_better:
        if value <= 0:
            return cap
        ratio = target / value
    else:
        if target <= 0:
            return cap
        ratio = value / target
    return ratio if ratio < cap else cap


def attainments(kpi: Kpi, values: npt.NDArray[np.float64], target: float,
                ) -> npt.NDArray[np.float64]:
    """:func:`attainment` of every value of an array (the same divisions and comparisons)."""
    cap = ATTAINMENT_CAP
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        if kpi.lower_is_better:
            ratio = target / values
            ratio = np.where(values <= 0, cap, ratio)
        else:
            if target <= 0:
                return np.full(values.shape, cap)
            ratio = values / target
    return np.where(ratio < cap, ratio, cap)
