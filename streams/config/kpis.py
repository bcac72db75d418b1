"""One KPI of the catalog: its YAML shape, its checked record (:class:`Kpi`), and per kind what it
needs (:data:`KIND_RULES`)."""

from __future__ import annotations

import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from dataclasses import field as dataclass_field
from typing import Any, Final, Literal, get_args

import msgspec

from streams.config.integrity import SIGNALS, allowed_signals, default_signals
from streams.config.judging import JudgeParams
from streams.config.yamlfile import Fail, Scalar, Where, duration_ms
from streams.ingest.contract import CHANNELS, ENTITY_FIELD, EVENT_FIELDS, EVENT_TYPES, Topic

# \Z, not $: "$" also matches before a final newline
_KPI_ID_RE: Final = re.compile(r"^[a-z][a-z0-9_]{0,63}\Z")
_PERCENTILE_RE: Final = re.compile(r"^p(\d{1,2}(?:\.\d+)?)\Z")

KpiKind = Literal["duration", "ratio", "mean_field", "follow_up", "deadline", "reviewed",
                  "review_agreement", "sla_experience"]

SELECTORS: Final = ("start", "stop", "miss", "numerator", "denominator", "source", "follow",
                    "due", "done", "subject", "claim", "approved", "rejected", "good", "poor")
OUTCOMES: Final = ("watermelon", "rescued")
"""What an ``sla_experience`` KPI counts: poor experiences of tickets whose SLA was met, or good
experiences of tickets whose SLA was missed."""
"""The KPI fields that select events (a :class:`Match` each)."""


@dataclass(frozen=True, slots=True)
class KindRule:
    """What a KPI of one kind must and may say."""

    needs: tuple[str, ...]
    """Fields the kind cannot do without."""
    one_entity: tuple[str, ...] = ()
    """Selectors whose events are marks of one entity record, so they must be of one topic."""
    one_entity_if_distinct: bool = False
    """``one_entity`` holds only when every one of those selectors is ``distinct``."""
    statistics: bool = False
    """Takes a statistic other than the mean (percentiles, share within)."""
    open_items: bool = False
    """May export its open items (durations in seconds: by age against the target; follow-ups:
    starts not followed yet, by age against the horizon)."""


_REVIEW: Final = ("subject", "claim", "approved", "rejected")
"""A reviewed KPI's selectors: the events reviewed (an entity's earliest counts), those of them the
partner itself flags good, and the reviews that approve or reject it (the latest decides)."""

KIND_RULES: Final[dict[str, KindRule]] = {
    "duration": KindRule(("start", "stop"), ("start", "stop", "miss"), statistics=True,
                         open_items=True),
    "ratio": KindRule(("numerator", "denominator"), ("numerator", "denominator"),
                      one_entity_if_distinct=True),
    "mean_field": KindRule(("source", "field")),
    "follow_up": KindRule(("start", "follow", "link", "horizon"), open_items=True),
    "deadline": KindRule(("due", "done"), ("due", "done")),
    "reviewed": KindRule(_REVIEW, _REVIEW),
    "review_agreement": KindRule(_REVIEW, _REVIEW),
    "sla_experience": KindRule(("sla", "good", "poor", "link", "outcome")),
}
assert set(KIND_RULES) == set(get_args(KpiKind))


# --- the YAML shapes (validated by msgspec) ---------------------------------
RawCondition = Scalar | dict[str, Scalar | list[Scalar]]
"""A ``where`` value as written: a scalar (equality) or ``{op: value, ...}`` (:data:`OPERATORS`)."""


class _Match(msgspec.Struct, forbid_unknown_fields=True):
    topic: Topic
    type: str
    where: dict[str, RawCondition] = {}
    distinct: bool = False


class RawJudge(msgspec.Struct, forbid_unknown_fields=True, rename={"for_": "for"}):
    """``judge:`` of the catalog or of one KPI: each value set overrides the one above."""

    confidence: float | None = None
    for_: str | int | None = None
    recovery_margin: float | None = None
    cusum_k: float | None = None
    cusum_h: float | None = None


class RawKpi(msgspec.Struct, forbid_unknown_fields=True):
    """One entry of ``kpis:`` as written."""

    id: str
    title: str
    kind: KpiKind
    unit: Literal["seconds", "ratio", "score"]
    better: Literal["lower", "higher"]
    target: float
    min_samples: int
    windows: list[str] | None = None
    description: str = ""
    start: _Match | None = None
    stop: _Match | None = None
    miss: _Match | None = None
    statistic: str | dict[str, float] = "mean"
    numerator: _Match | None = None
    denominator: _Match | None = None
    source: _Match | None = None
    field: str | None = None
    follow: _Match | None = None
    link: str | None = None
    horizon: str | int | None = None
    due: _Match | None = None
    done: _Match | None = None
    subject: _Match | None = None
    claim: _Match | None = None
    approved: _Match | None = None
    rejected: _Match | None = None
    sla: list[str] | None = None
    good: _Match | None = None
    poor: _Match | None = None
    outcome: Literal["watermelon", "rescued"] | None = None
    count_at: Literal["start", "decision"] = "start"
    open_items: bool = False
    ticket_alerts: bool = False
    clock: Literal["calendar", "business"] = "calendar"
    pause_on: list[str] = []
    resume_on: list[str] | None = None
    judge: RawJudge | None = None
    integrity: list[str] | None = None
    by: list[Literal["channel"]] = []


# --- the resolved, engine-facing model ----------------------------------------
OPERATORS: Final = ("eq", "le", "ge", "lt", "gt", "in")
"""Comparisons a ``where`` filter may use: ``score: {le: 2}``; a bare value is ``eq``."""
_ORDERED: Final = {"le": operator.le, "ge": operator.ge, "lt": operator.lt, "gt": operator.gt}


def _same(got: Any, want: Scalar) -> bool:
    """Equality as the contract types it: ``1`` is not ``True``, ``None`` is absent or null."""
    return got == want and (want is None or type(got) is type(want)
                            or (_is_number(got) and _is_number(want)))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


@dataclass(frozen=True, slots=True)
class Condition:
    """One ``where`` filter: the event's ``field`` compared with ``value`` by ``op``."""

    field: str
    op: str
    """One of :data:`OPERATORS`."""
    value: Scalar | tuple[Scalar, ...]
    """A number for the ordered comparisons, a tuple for ``in``, any scalar for ``eq``."""

    def holds(self, got: Any) -> bool:
        """Whether the event's field value ``got`` (None when absent) passes. An absent or
        non-numeric field fails an ordered comparison."""
        if self.op == "eq":
            return _same(got, self.value)  # type: ignore[arg-type]
        if self.op == "in":
            return any(_same(got, v) for v in self.value)  # type: ignore[union-attr]
        return _is_number(got) and bool(_ORDERED[self.op](got, self.value))  # type: ignore[arg-type]


@dataclass(frozen=True, slots=True)
class Match:
    """Which events a KPI looks at: topic, type and filters on fields."""

    topic: str
    type: str
    where: tuple[Condition, ...] = ()
    distinct: bool = False

    def matches(self, event: Any) -> bool:
        """True when every filter holds; ``None`` matches an absent or null field."""
        for cond in self.where:  # noqa: SIM110 (a loop: all() over a generator is slower per event)
            if not cond.holds(getattr(event, cond.field, None)):
                return False
        return True

    def compiled(self) -> Callable[[Any], bool]:
        """:meth:`matches` for the per-event path: equality-only filters (most of them) compared
        inline, without a method call per condition (measured 360 ns against 670 ns a match)."""
        if any(cond.op != "eq" for cond in self.where):
            return self.matches
        pairs = tuple((cond.field, cond.value) for cond in self.where)

        def equal(event: Any) -> bool:
            for name, want in pairs:
                got = getattr(event, name, None)
                if got != want or (want is not None and type(got) is not type(want)
                                   and not (_is_number(got) and _is_number(want))):
                    return False
            return True

        return equal


@dataclass(frozen=True, slots=True)
class SlaPart:
    """One duration KPI of a ticket's SLA: its start and stop selectors, met within the partner's
    target for ``kpi``."""

    kpi: str
    start: Match
    stop: Match
    clock: str = "calendar"
    """The duration KPI's clock: the SLA is met on the same duration the KPI counts."""
    pause: tuple[Match, ...] = ()
    resume: tuple[Match, ...] = ()


@dataclass(frozen=True, slots=True)
class Kpi:
    """One KPI of the catalog, resolved and checked."""

    id: str
    title: str
    kind: str
    unit: str
    better: str
    target: float
    min_samples: int
    windows: tuple[str, ...]
    description: str = ""
    start: Match | None = None
    stop: Match | None = None
    miss: Match | None = None
    statistic: str = "mean"
    """'mean', 'share_within' (with ``threshold_ms``) or a percentile like 'p90'."""
    quantile: float | None = None
    threshold_ms: int | None = None
    numerator: Match | None = None
    denominator: Match | None = None
    source: Match | None = None
    field: str | None = None
    follow: Match | None = None
    link: str | None = None
    horizon_ms: int | None = None
    due: Match | None = None
    done: Match | None = None
    subject: Match | None = None
    """reviewed, review_agreement: the events a review judges (the entity's earliest counts)."""
    claim: Match | None = None
    """... those of them the partner flags good itself (its claim is its earliest subject's)."""
    approved: Match | None = None
    """... the reviews that find it good; ``rejected``: that find it bad (the latest decides)."""
    rejected: Match | None = None
    sla: tuple[SlaPart, ...] = ()
    """sla_experience: the duration KPIs whose partner targets make a ticket's SLA (resolved
    against the catalog once every KPI is known)."""
    good: Match | None = None
    """sla_experience: answers that make the experience good; ``poor``: that make it poor (the
    earliest answer of the ticket decides; a tie is poor)."""
    poor: Match | None = None
    outcome: str | None = None
    """sla_experience: one of :data:`OUTCOMES`."""
    count_at: str = "start"
    """follow_up: ``start`` counts each start at once, as 0 until its follow comes (provisional
    until the horizon passes); ``decision`` counts it when it is decided: 1 at its follow, or 0
    when the horizon ends without one (a sample dated then, which no window holds before)."""
    open_items: bool = False
    """Export the entities still waiting for their stop, by age against the target."""
    ticket_alerts: bool = False
    """Alert on each open item of this KPI at risk (75% of its target) or breached, with its
    entity id as a label (an ``open_items`` KPI only; a capped number per partner)."""
    clock: str = "calendar"
    """A duration's clock: ``calendar`` (every millisecond) or ``business`` (only the working
    time of the partner's calendar, ``calendars:`` in partners.yaml)."""
    pause: tuple[Match, ...] = ()
    """A duration's ``pause_on`` events: each stops its clock (a ticket waiting on the
    customer) until the entity's next ``resume`` event."""
    resume: tuple[Match, ...] = ()
    """A duration's ``resume_on`` events (``resumed`` unless told): the clock runs again."""
    judge: JudgeParams = dataclass_field(default_factory=JudgeParams)
    """Confidence, ``for`` duration, recovery margin and CUSUM parameters of the judgement."""
    integrity: tuple[str, ...] = ()
    """The integrity signals watched on this KPI (:mod:`streams.config.integrity`)."""
    by: tuple[str, ...] = ()
    """Dimensions the KPI is also kept by (``channel``): each adds a KPI per channel
    (:func:`channel_kpis`)."""
    channel: str | None = None
    """A per-channel KPI's channel (its samples are the base KPI's of entities of that channel);
    None for a catalog KPI."""
    base: str | None = None
    """A per-channel KPI's catalog KPI id."""

    @property
    def lower_is_better(self) -> bool:
        """Direction of goodness."""
        return self.better == "lower"

    @property
    def stat_kind(self) -> str:
        """How the KPI's uncertainty is judged: 'ratio' (0/1 or count ratio), 'mean' or 'quantile'."""
        if self.quantile is not None:
            return "quantile"
        if self.kind in ("duration", "mean_field") and self.statistic == "mean":
            return "mean"
        return "ratio"

    def matches(self) -> list[Match]:
        """Every event selector this KPI uses."""
        found = (getattr(self, name) for name in SELECTORS)
        return [m for m in found if m is not None]


# --- checking one KPI -----------------------------------------------------------
def _match(raw: _Match | None, fail: Fail, here: Where) -> Match | None:
    """The checked selector; a misused ``where`` fails at ``here``."""
    if raw is None:
        return None
    fields = EVENT_FIELDS.get((raw.topic, raw.type), frozenset())
    conditions: list[Condition] = []
    for name, spec in raw.where.items():
        at = [*here, "where", name]
        if name not in fields:
            raise fail(at, f"{raw.topic} {raw.type!r} events have no field {name!r} "
                           f"(they have {', '.join(sorted(fields))})")
        if not isinstance(spec, dict):
            conditions.append(Condition(name, "eq", spec))
            continue
        if not spec:
            raise fail(at, f"where {name}: an empty comparison; use one of {', '.join(OPERATORS)}")
        for op, value in spec.items():
            conditions.append(_condition(name, op, value, fail, [*at, op]))
    order = sorted(conditions, key=lambda c: (c.field, c.op, repr(c.value)))
    return Match(raw.topic, raw.type, tuple(order), raw.distinct)


def _condition(name: str, op: str, value: Scalar | list[Scalar], fail: Fail,
               here: Where) -> Condition:
    if op not in OPERATORS:
        raise fail(here, f"where {name}: unknown comparison {op!r} (one of {', '.join(OPERATORS)})")
    if op == "in":
        if not isinstance(value, list) or not value:
            raise fail(here, f"where {name}: 'in' takes a non-empty list of values")
        return Condition(name, op, tuple(value))
    if isinstance(value, list):
        raise fail(here, f"where {name}: {op!r} takes one value, not a list")
    if op != "eq" and not _is_number(value):
        raise fail(here, f"where {name}: {op!r} compares numbers, not {value!r}")
    return Condition(name, op, value)


def judge_params(base: JudgeParams, raw: RawJudge | None, fail: Fail, where: Where) -> JudgeParams:
    """``base`` with the values ``raw`` sets; a bad value fails at ``where``."""
    if raw is None:
        return base
    try:
        return JudgeParams(
            confidence=base.confidence if raw.confidence is None else raw.confidence,
            for_ms=base.for_ms if raw.for_ is None else duration_ms(raw.for_),
            recovery_margin=(base.recovery_margin if raw.recovery_margin is None
                             else raw.recovery_margin),
            cusum_k=base.cusum_k if raw.cusum_k is None else raw.cusum_k,
            cusum_h=base.cusum_h if raw.cusum_h is None else raw.cusum_h,
        )
    except ValueError as exc:
        raise fail(where, str(exc)) from None


def _check_selectors(raw: RawKpi, fail: Fail, here: Where) -> None:
    rule = KIND_RULES[raw.kind]
    for name in rule.needs:
        if getattr(raw, name) is None:
            raise fail(here, f"KPI {raw.id!r} of kind {raw.kind} needs '{name}'")
    for name in SELECTORS:
        match = getattr(raw, name)
        if match is not None and match.type not in EVENT_TYPES[match.topic]:
            raise fail([*here, name, "type"],
                       f"KPI {raw.id!r}: {match.topic} has no event type {match.type!r}")
    # The engine computes a KPI's samples from the marks of *one* entity record: the events it
    # combines per entity must come from one topic (a follow-up joins its start's entity by
    # `link` instead, so it may come from another).
    joined = rule.one_entity
    if rule.one_entity_if_distinct and not all(
            getattr(raw, name) and getattr(raw, name).distinct for name in joined):
        joined = ()
    topics = {name: getattr(raw, name).topic for name in joined if getattr(raw, name) is not None}
    if len(set(topics.values())) > 1:
        last = list(topics)[-1]
        raise fail([*here, last, "topic"],
                   f"KPI {raw.id!r}: {' and '.join(topics)} are marks of one entity and must be "
                   "events of one topic, not " + " and ".join(sorted(set(topics.values()))))


def _check_link(raw: RawKpi, fail: Fail, here: Where) -> None:
    """A follow-up's ``link`` names a field of its follow events; a start without an entity of
    its own (a survey response) joins the follow events' entity, so ``link`` must name that."""
    start, follow, link = raw.start, raw.follow, raw.link
    if raw.kind != "follow_up" or start is None or follow is None or link is None:
        return
    if link not in EVENT_FIELDS[(follow.topic, follow.type)]:
        raise fail([*here, "link"], f"KPI {raw.id!r}: {follow.topic} {follow.type!r} events have "
                                    f"no field {link!r} to link them by")
    if ENTITY_FIELD[start.topic] is None:
        entity = ENTITY_FIELD[follow.topic]
        if link != entity or link not in EVENT_FIELDS[(start.topic, start.type)]:
            raise fail([*here, "link"], f"KPI {raw.id!r}: {start.topic} events have no entity of "
                                        f"their own: link must be the {follow.topic} entity "
                                        f"{entity!r}, carried by both")


def resolve_sla(kpis: list[Kpi], raws: list[RawKpi], fail: Fail) -> list[Kpi]:
    """``kpis`` with each ``sla_experience`` KPI's ``sla`` resolved to the duration KPIs it names:
    durations in seconds of one entity topic, whose entity the answers join by ``link``."""
    by_id = {kpi.id: kpi for kpi in kpis}
    out: list[Kpi] = []
    for i, (kpi, raw) in enumerate(zip(kpis, raws, strict=True)):
        if kpi.kind != "sla_experience":
            out.append(kpi)
            continue
        here: Where = ["kpis", i, "sla"]
        parts: list[SlaPart] = []
        for name in raw.sla or ():
            part = by_id.get(name)
            if part is None or part.kind != "duration" or part.unit != "seconds":
                raise fail(here, f"KPI {kpi.id!r}: sla names {name!r}, which is not a duration "
                                 "KPI in seconds of this catalog")
            assert part.start and part.stop
            entity = ENTITY_FIELD[part.start.topic]
            if entity != kpi.link:
                raise fail(here, f"KPI {kpi.id!r}: {name!r} is timed on {part.start.topic}; the "
                                 f"answers join it by link {kpi.link!r}, not {entity!r}")
            parts.append(SlaPart(name, part.start, part.stop, part.clock, part.pause,
                                 part.resume))
        if not parts:
            raise fail(here, f"KPI {kpi.id!r}: sla needs at least one duration KPI")
        for side in (kpi.good, kpi.poor):
            assert side is not None
            if kpi.link not in EVENT_FIELDS[(side.topic, side.type)]:
                raise fail(["kpis", i, "link"], f"KPI {kpi.id!r}: {side.topic} {side.type!r} "
                                                f"events have no field {kpi.link!r}")
        out.append(replace(kpi, sla=tuple(parts)))
    return out


def _clock(raw: RawKpi, fail: Fail, here: Where) -> tuple[tuple[Match, ...], tuple[Match, ...]]:
    """A duration's pause and resume selectors, checked with its ``clock``: both only for
    durations in seconds; pause and resume events are events of the start's entity (their
    topic), of types that are not both."""
    timed = raw.kind == "duration" and raw.unit == "seconds"
    if raw.clock != "calendar" and not timed:
        raise fail([*here, "clock"], f"KPI {raw.id!r}: clock is only for durations in seconds")
    if not raw.pause_on:
        if raw.resume_on is not None:
            raise fail([*here, "resume_on"], f"KPI {raw.id!r}: resume_on needs pause_on")
        return (), ()
    if not timed:
        raise fail([*here, "pause_on"], f"KPI {raw.id!r}: pause_on is only for durations in "
                                        "seconds")
    assert raw.start is not None
    topic = raw.start.topic
    resume_on = ["resumed"] if raw.resume_on is None else raw.resume_on
    for name, types in (("pause_on", raw.pause_on), ("resume_on", resume_on)):
        if not types:
            raise fail([*here, name], f"KPI {raw.id!r}: {name} needs at least one event type")
        for i, t in enumerate(types):
            if t not in EVENT_TYPES[topic]:
                raise fail([*here, name, i], f"KPI {raw.id!r}: {name} names {t!r}, not an event "
                                             f"type of {topic} (the start's entity)")
    both = set(raw.pause_on) & set(resume_on)
    if both:
        raise fail([*here, "resume_on"], f"KPI {raw.id!r}: {sorted(both)} both pause and resume")
    return (tuple(Match(topic, t) for t in dict.fromkeys(raw.pause_on)),
            tuple(Match(topic, t) for t in dict.fromkeys(resume_on)))


def _statistic(raw: RawKpi, fail: Fail, here: Where) -> tuple[str, float | None, int | None]:
    """(statistic, quantile, threshold_ms) of the KPI's ``statistic:``."""
    statistic, quantile, threshold = "mean", None, None
    if isinstance(raw.statistic, dict):
        if set(raw.statistic) != {"within"}:
            raise fail([*here, "statistic"], "statistic mapping must be {within: SECONDS}")
        statistic, threshold = "share_within", round(raw.statistic["within"] * 1000)
    elif raw.statistic != "mean":
        pct = _PERCENTILE_RE.match(raw.statistic)
        if not pct or not 0 < float(pct.group(1)) < 100:
            raise fail([*here, "statistic"],
                       f"statistic {raw.statistic!r}: use mean, pNN or {{within: SECONDS}}")
        statistic, quantile = raw.statistic, float(pct.group(1)) / 100
    if not KIND_RULES[raw.kind].statistics and statistic != "mean":
        raise fail([*here, "statistic"], f"statistic {raw.statistic!r} is only for durations")
    if raw.miss is not None and statistic != "share_within":
        raise fail([*here, "miss"], "'miss' only makes sense with statistic {within: SECONDS}")
    return statistic, quantile, threshold


def resolve_kpi(i: int, raw: RawKpi, windows: tuple[str, ...], fail: Fail,
                judge: JudgeParams) -> Kpi:
    """Check entry ``i`` of ``kpis:`` against the catalog's window names; the checked Kpi."""
    here: Where = ["kpis", i]
    if not _KPI_ID_RE.match(raw.id):
        raise fail([*here, "id"], f"KPI id {raw.id!r} must be snake_case ([a-z][a-z0-9_]*)")
    _check_selectors(raw, fail, here)
    _check_link(raw, fail, here)
    if raw.count_at != "start" and raw.kind != "follow_up":
        raise fail([*here, "count_at"], f"KPI {raw.id!r}: count_at is only for follow_up KPIs")
    if raw.open_items and (not KIND_RULES[raw.kind].open_items
                           or (raw.kind == "duration" and raw.unit != "seconds")):
        raise fail([*here, "open_items"],
                   "open_items is only for durations in seconds and for follow_up KPIs")
    if raw.ticket_alerts and not raw.open_items:
        raise fail([*here, "ticket_alerts"], f"KPI {raw.id!r}: ticket_alerts alert on open "
                                             "items: set open_items too")
    pause, resume = _clock(raw, fail, here)
    if raw.min_samples < 1:
        raise fail([*here, "min_samples"], f"KPI {raw.id!r}: min_samples must be at least 1")
    names = tuple(raw.windows) if raw.windows is not None else windows
    for name in names:
        if name not in windows:
            raise fail([*here, "windows"], f"KPI {raw.id!r}: unknown window {name!r}")
    statistic, quantile, threshold = _statistic(raw, fail, here)
    horizon = None
    if raw.horizon is not None:
        try:
            horizon = duration_ms(raw.horizon)
        except ValueError as exc:
            raise fail([*here, "horizon"], str(exc)) from None
    def sel(name: str) -> Match | None:
        return _match(getattr(raw, name), fail, [*here, name])

    kpi = Kpi(
        id=raw.id, title=raw.title, kind=raw.kind, unit=raw.unit, better=raw.better,
        target=float(raw.target), min_samples=raw.min_samples, windows=names,
        description=raw.description.strip(), start=sel("start"), stop=sel("stop"),
        miss=sel("miss"), statistic=statistic, quantile=quantile, threshold_ms=threshold,
        numerator=sel("numerator"), denominator=sel("denominator"), source=sel("source"),
        field=raw.field, follow=sel("follow"), link=raw.link, horizon_ms=horizon, due=sel("due"),
        done=sel("done"), subject=sel("subject"), claim=sel("claim"), approved=sel("approved"),
        rejected=sel("rejected"), good=sel("good"), poor=sel("poor"), outcome=raw.outcome,
        count_at=raw.count_at, open_items=raw.open_items, ticket_alerts=raw.ticket_alerts,
        clock=raw.clock, pause=pause,
        resume=resume, judge=judge_params(judge, raw.judge, fail, [*here, "judge"]),
        by=tuple(dict.fromkeys(raw.by)),
    )
    if kpi.by:
        _channel_topic(kpi, fail, [*here, "by"])
    return replace(kpi, integrity=_integrity(raw, kpi, fail, here))


CHANNEL_SEP: Final = "@"
"""Joins a catalog KPI id and a channel into its per-channel KPI's id (``mttr@phone``): a
character no catalog id has."""


def _channel_topic(kpi: Kpi, fail: Fail | None = None, here: Where | None = None) -> str:
    """The entity topic whose channel a ``by: [channel]`` KPI's samples are split by: the entity
    its samples are derived from (a duration's start, a distinct ratio's), or for a mean of a
    field the entity its events name by ``link`` (a survey's ticket)."""
    topic: str | None = None
    if kpi.kind == "duration" and kpi.start:
        topic = kpi.start.topic
    elif (kpi.kind == "ratio" and kpi.numerator and kpi.denominator and kpi.numerator.distinct
          and kpi.denominator.distinct):
        topic = kpi.numerator.topic
    elif kpi.kind == "mean_field" and kpi.source and kpi.link:
        topic = next((t for t, name in ENTITY_FIELD.items() if name == kpi.link), None)
        if topic is None or kpi.link not in EVENT_FIELDS[(kpi.source.topic, kpi.source.type)]:
            topic = None
    if topic in CHANNELS:
        return topic
    if fail is None:
        raise ValueError(f"KPI {kpi.id!r} cannot be split by channel")
    raise fail(here or [], f"KPI {kpi.id!r}: by [channel] needs a duration, a ratio of distinct "
                           "entities or a mean_field with a link to their entity, on "
                           f"{' or '.join(CHANNELS)} (whose {', '.join(t for t, _ in CHANNELS.values())} "
                           "events carry the channel)")


def channel_kpis(kpis: tuple[Kpi, ...], windows: tuple[str, ...] | None) -> tuple[Kpi, ...]:
    """One KPI per channel of each ``by: [channel]`` KPI, counted in ``windows`` (of those the KPI
    is; all of them when None) and in the calendar months. Not judged: no target is set per
    channel, and no integrity signal is watched."""
    out: list[Kpi] = []
    for kpi in kpis:
        if "channel" not in kpi.by:
            continue
        names = kpi.windows if windows is None else tuple(w for w in kpi.windows if w in windows)
        _, channels = CHANNELS[_channel_topic(kpi)]
        out.extend(replace(kpi, id=f"{kpi.id}{CHANNEL_SEP}{channel}", windows=names,
                           channel=channel, base=kpi.id, by=(), integrity=(), open_items=False,
                           ticket_alerts=False)
                   for channel in channels)
    return tuple(out)


def channel_topic(kpi: Kpi) -> str:
    """The entity topic a per-channel KPI (or a ``by: [channel]`` one) takes the channel of."""
    return _channel_topic(kpi)


def _integrity(raw: RawKpi, kpi: Kpi, fail: Fail, here: Where) -> tuple[str, ...]:
    """The KPI's ``integrity:`` signals checked, or its kind's defaults when absent."""
    shape = (kpi.kind, kpi.unit, kpi.statistic, kpi.stat_kind)
    if raw.integrity is None:
        return default_signals(*shape)
    allowed = allowed_signals(*shape)
    for j, signal in enumerate(raw.integrity):
        if signal not in SIGNALS:
            raise fail([*here, "integrity", j],
                       f"KPI {raw.id!r}: unknown integrity signal {signal!r} (one of {', '.join(SIGNALS)})")
        if signal not in allowed:
            raise fail([*here, "integrity", j],
                       f"KPI {raw.id!r}: {signal} does not apply to a {raw.kind} KPI with statistic "
                       f"{kpi.statistic} (it may use: {', '.join(allowed) or 'none'})")
    return tuple(dict.fromkeys(raw.integrity))
