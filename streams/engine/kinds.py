"""The KPI kinds: how each compiles into routes (:mod:`streams.engine.plan`) and its sampler.

A sampler gives the samples an entity contributes to one KPI, as a function of its record (see
:data:`streams.engine.model.Sample`); it is compiled once per KPI. Samplers of durations and
distinct ratios compare marks with the unset mark of their topic's records, known only once
every slot is: :meth:`Kind.compile` therefore returns the entity topic and a builder taking that
mark. The catalog's validation of a kind stays in :mod:`streams.config.catalog`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from streams.config.calendars import BusinessCalendar
from streams.config.catalog import Kpi, Match
from streams.config.kpis import channel_topic
from streams.engine import sketch
from streams.engine.clock import elapsed
from streams.engine.model import UNSET, LimitedSampler, Record, Sample, Sampler, SlaLimits
from streams.engine.plan import PlanBuilder
from streams.ingest.contract import CHANNELS, ENTITY_FIELD, parse_due

SamplerBuild = tuple[str | None, Callable[[Any], Sampler | LimitedSampler]]
"""(entity topic whose unset mark the sampler compares with, build(unset mark) -> sampler)."""


def no_samples(rec: Record) -> tuple[Sample, ...]:
    return ()


def _constant(sampler: Sampler) -> Callable[[Any], Sampler]:
    return lambda unset: sampler


class Kind:
    """A KPI kind without entity samples (its samples are counted by route steps, if any)."""

    def compile(self, k: int, kpi: Kpi, plan: PlanBuilder) -> SamplerBuild:
        """Add KPI ``k``'s steps to ``plan``; return how to build its sampler."""
        return None, _constant(no_samples)


class Duration(Kind):
    """Start to the earliest stop (or miss), counted at the end; in whole milliseconds of its
    clock (:mod:`streams.engine.clock`): every millisecond, or the partner's working time
    (``clock: business``: the sampler then also takes the partner's calendar), less pauses."""

    def compile(self, k: int, kpi: Kpi, plan: PlanBuilder) -> SamplerBuild:
        assert kpi.start and kpi.stop
        start = plan.mark(k, kpi.start)
        stop = plan.mark(k, kpi.stop)
        miss = plan.mark(k, kpi.miss) if kpi.miss else 0
        pause = plan.pause_mark(k, kpi.pause, kpi.resume) if kpi.pause else 0
        if kpi.open_items:
            plan.open_item(k, start, stop, kpi.start.topic, pause)
        return kpi.start.topic, functools.partial(self.sampler, kpi, start, stop, miss, pause)

    @staticmethod
    def sampler(kpi: Kpi, start_i: int, stop_i: int, miss_i: int, pause_i: int,
                unset: Any) -> Any:
        within = kpi.threshold_ms if kpi.statistic == "share_within" else None
        percentile = kpi.quantile is not None
        key_of = sketch.key_of

        def timed(rec: Record, calendar: BusinessCalendar | None) -> tuple[Sample, ...]:
            start = rec[start_i]
            if start == unset:
                return ()
            end, missed = rec[stop_i], False
            if miss_i:
                miss = rec[miss_i]
                if miss != unset and (end == unset or miss < end):
                    end, missed = miss, True
            if end == unset or end < start:
                return ()
            if calendar is None and not pause_i:
                ms = end - start
            else:
                ms = elapsed(start, end, rec[pause_i] if pause_i else None, calendar)[0]
            if within is not None:
                return ((0, end, 1, 0 if missed or ms > within else 1, None),)
            if missed:
                return ()
            return ((0, end, 1, ms, key_of(ms / 1000.0) if percentile else None),)

        if kpi.clock == "business":
            return timed  # (rec, the partner's calendar): a LimitedSampler

        def samples(rec: Record) -> tuple[Sample, ...]:
            return timed(rec, None)

        return samples


class Ratio(Kind):
    """Numerator count over denominator count; a distinct side counts an entity once, at its
    earliest event (role 0 the numerator, role 1 the denominator)."""

    def compile(self, k: int, kpi: Kpi, plan: PlanBuilder) -> SamplerBuild:
        assert kpi.numerator and kpi.denominator
        num = den = 0
        if kpi.numerator.distinct:
            num = plan.mark(k, kpi.numerator)
        else:
            plan.count(k, kpi.numerator, 0, 1)
        if kpi.denominator.distinct:
            den = plan.mark(k, kpi.denominator)
        else:
            plan.count(k, kpi.denominator, 1, 0)
        topic = kpi.numerator.topic if num else kpi.denominator.topic
        return topic, functools.partial(self.sampler, num, den)

    @staticmethod
    def sampler(num_i: int, den_i: int, unset: Any) -> Sampler:
        def samples(rec: Record) -> tuple[Sample, ...]:
            num = rec[num_i] if num_i else unset
            den = rec[den_i] if den_i else unset
            if num == unset:
                return () if den == unset else ((1, den, 1, 0, None),)
            if den == unset:
                return ((0, num, 0, 1, None),)
            return ((0, num, 0, 1, None), (1, den, 1, 0, None))

        return samples


class MeanField(Kind):
    """Mean of a numeric field: each matching event adds the field's value."""

    def compile(self, k: int, kpi: Kpi, plan: PlanBuilder) -> SamplerBuild:
        assert kpi.source
        plan.add_field(k, kpi.source, kpi.field or "")
        return None, _constant(no_samples)


class FollowUp(Kind):
    """1 when a follow-up came within the horizon after the start, counted at the start (the
    earliest start of the entity)."""

    def compile(self, k: int, kpi: Kpi, plan: PlanBuilder) -> SamplerBuild:
        assert kpi.start and kpi.follow and kpi.link and kpi.horizon_ms is not None
        if ENTITY_FIELD[kpi.start.topic] is not None:
            start = plan.mark(k, kpi.start)
            # a follow-up event is attached to the *start's* entity through the link field
            follow = plan.mark(k, kpi.follow, kpi.start.topic, kpi.link, reducer="set")
        else:
            # a start without an entity of its own (a survey response) joins the follow-up's
            # entity through the link field (the catalog checks it names that entity)
            start = plan.mark(k, kpi.start, kpi.follow.topic, kpi.link)
            follow = plan.mark(k, kpi.follow, reducer="set")
        if kpi.open_items:  # starts not followed yet (a detractor nobody called back)
            topic = kpi.start.topic if ENTITY_FIELD[kpi.start.topic] is not None else kpi.follow.topic
            plan.open_item(k, start, follow, topic)
        if kpi.count_at == "decision":
            return None, _constant(self.decided(start, follow, kpi.horizon_ms))
        return None, _constant(self.sampler(start, follow, kpi.horizon_ms))

    @staticmethod
    def sampler(start_i: int, follow_i: int, horizon_ms: int) -> Sampler:
        # its records are lists (a 'set' mark is never packed): None is the unset mark
        def samples(rec: Record) -> tuple[Sample, ...]:
            start = rec[start_i]
            if start is None:
                return ()
            follows = rec[follow_i] or ()
            hit = any(start < f <= start + horizon_ms for f in follows)
            return ((0, start, 1, 1 if hit else 0, None),)

        return samples

    @staticmethod
    def decided(start_i: int, follow_i: int, horizon_ms: int) -> Sampler:
        """``count_at: decision``: 1 at the first follow within the horizon, else 0 dated at the
        horizon's end (in a bucket no window reaches before then: undecided starts weigh on no
        live value, where counted at the start they would read as misses until followed)."""
        def samples(rec: Record) -> tuple[Sample, ...]:
            start = rec[start_i]
            if start is None:
                return ()
            end = start + horizon_ms
            hits = [f for f in rec[follow_i] or () if start < f <= end]
            if hits:
                return ((0, min(hits), 1, 1, None),)
            return ((0, end, 1, 0, None),)

        return samples


class Deadline(Kind):
    """1 when done by the latest due date, counted when done."""

    def compile(self, k: int, kpi: Kpi, plan: PlanBuilder) -> SamplerBuild:
        assert kpi.due and kpi.done
        due = plan.mark(k, kpi.due, reducer="max", extra="due")
        done = plan.mark(k, kpi.done, extra="done")
        return None, _constant(self.sampler(due, done))

    @staticmethod
    def sampler(due_i: int, done_i: int) -> Sampler:
        # its marks carry extras (never packed): None is the unset mark
        def samples(rec: Record) -> tuple[Sample, ...]:
            due, done = rec[due_i], rec[done_i]
            if due is None or done is None:
                return ()
            return ((0, done[0], 1, 1 if deadline_met(done[0], done[1], due[1]) else 0, None),)

        return samples


class Reviewed(Kind):
    """1 when an entity's earliest subject event (an escalation) was good, counted at that event:
    good by the latest review where there is one (``approved`` later than ``rejected``; on a tie,
    rejected), by the partner's own flags otherwise (its earliest subject event matches ``claim``).
    A review arriving later corrects the sample where it was counted."""

    def compile(self, k: int, kpi: Kpi, plan: PlanBuilder) -> SamplerBuild:
        assert kpi.subject and kpi.claim and kpi.approved and kpi.rejected
        marks = (plan.mark(k, kpi.subject), plan.mark(k, kpi.claim),
                 plan.mark(k, kpi.approved, reducer="max"), plan.mark(k, kpi.rejected, reducer="max"))
        return kpi.subject.topic, functools.partial(self.sampler, *marks)

    @staticmethod
    def sampler(subject_i: int, claim_i: int, approved_i: int, rejected_i: int,
                unset: Any) -> Sampler:
        def samples(rec: Record) -> tuple[Sample, ...]:
            subject = rec[subject_i]
            if subject == unset:
                return ()
            approved, rejected = rec[approved_i], rec[rejected_i]
            if approved == unset and rejected == unset:
                good = rec[claim_i] == subject
            else:
                good = approved != unset and (rejected == unset or approved > rejected)
            return ((0, subject, 1, 1 if good else 0, None),)

        return samples


class ReviewAgreement(Reviewed):
    """1 when the latest review of an entity's subject agrees with the partner's own flags on it
    (both good or both not), counted at that review; entities without a review have no sample."""

    @staticmethod
    def sampler(subject_i: int, claim_i: int, approved_i: int, rejected_i: int,
                unset: Any) -> Sampler:
        def samples(rec: Record) -> tuple[Sample, ...]:
            subject, approved, rejected = rec[subject_i], rec[approved_i], rec[rejected_i]
            if subject == unset or (approved == unset and rejected == unset):
                return ()
            verdict = approved != unset and (rejected == unset or approved > rejected)
            claimed = rec[claim_i] == subject
            return ((0, approved if verdict else rejected, 1, 1 if verdict == claimed else 0,
                     None),)

        return samples


class SlaExperience(Kind):
    """A ticket's survey experience against its SLA, counted at its earliest answer.

    The experience is good when the earliest answer matches ``good`` (a tie with ``poor`` is
    poor). The SLA is known once every SLA part that started on the ticket has stopped; it is met
    when each of those durations, on its KPI's clock, is within the partner's target
    (``PartnerState.sampler_args``).
    ``watermelon``: SLA met, 1 for a poor experience; ``rescued``: SLA missed, 1 for a good one.
    A ticket with no answer, no SLA part started, or one still running has no sample (yet)."""

    def compile(self, k: int, kpi: Kpi, plan: PlanBuilder) -> SamplerBuild:
        assert kpi.good and kpi.poor and kpi.link and kpi.sla
        topic = kpi.sla[0].start.topic
        parts = tuple((plan.mark(k, part.start), plan.mark(k, part.stop),
                       plan.pause_mark(k, part.pause, part.resume) if part.pause else 0)
                      for part in kpi.sla)
        good = plan.mark(k, kpi.good, topic, kpi.link)
        poor = plan.mark(k, kpi.poor, topic, kpi.link)
        return topic, functools.partial(self.sampler, parts, good, poor,
                                        kpi.outcome == "watermelon")

    @staticmethod
    def sampler(parts: tuple[tuple[int, int, int], ...], good_i: int, poor_i: int,
                watermelon: bool, unset: Any) -> LimitedSampler:
        def samples(rec: Record, limits: SlaLimits) -> tuple[Sample, ...]:
            good, poor = rec[good_i], rec[poor_i]
            if good == unset and poor == unset:
                return ()
            happy = good != unset and (poor == unset or good < poor)
            timed = False
            met = True
            for (start_i, stop_i, pause_i), (limit, calendar) in zip(parts, limits, strict=True):
                start = rec[start_i]
                if start == unset:
                    continue  # not this part's ticket (another severity)
                stop = rec[stop_i]
                if stop == unset:
                    return ()  # the SLA is not known yet
                if stop < start:
                    continue  # no duration (as the duration KPI counts none)
                timed = True
                if calendar is None and not pause_i:
                    ms = stop - start
                else:  # on the part's own clock: the SLA met is the duration the KPI counts
                    ms = elapsed(start, stop, rec[pause_i] if pause_i else None, calendar)[0]
                met = met and ms <= limit
            if not timed or met != watermelon:
                return ()
            at = good if happy else poor
            return ((0, at, 1, 1 if happy != watermelon else 0, None),)

        return samples


class PerChannel:
    """A per-channel KPI (``by: [channel]``): its catalog KPI's samples, of the entities whose
    channel is this one. The channel is a mark like the others (the channel of the entity's
    earliest channel event: a ticket's ``opened``), so a sample waits for it and follows it,
    whatever order the events come in. A mean of a field keeps each value on the entity its
    event links to (a survey's ticket) instead of counting it at once."""

    def compile(self, k: int, kpi: Kpi, plan: PlanBuilder) -> SamplerBuild:
        assert kpi.channel is not None
        topic = channel_topic(kpi)
        event_type, _ = CHANNELS[topic]
        channel_i = plan.mark(k, Match(topic, event_type), extra="channel")
        plan.channel_marks[k] = (channel_i, kpi.channel)
        if kpi.kind == "mean_field":
            assert kpi.source and kpi.link and kpi.field
            values_i = plan.mark(k, kpi.source, topic, kpi.link, reducer="set", extra="value",
                                 field=kpi.field)
            return None, _constant(self.values(channel_i, values_i, kpi.channel))
        _, build = KINDS[kpi.kind].compile(k, kpi, plan)
        return topic, functools.partial(self.sampler, build, channel_i, kpi.channel,
                                        kpi.clock == "business")

    @staticmethod
    def sampler(build: Callable[[Any], Any], channel_i: int, channel: str, limited: bool,
                unset: Any) -> Any:
        base = build(unset)

        def samples(rec: Record) -> tuple[Sample, ...]:
            mark = rec[channel_i]  # the topic keeps a list: None until the channel event came
            if mark is None or mark[1] != channel:
                return ()
            return base(rec)

        def with_calendar(rec: Record, calendar: Any) -> tuple[Sample, ...]:
            mark = rec[channel_i]
            if mark is None or mark[1] != channel:
                return ()
            return base(rec, calendar)

        return with_calendar if limited else samples

    @staticmethod
    def values(channel_i: int, values_i: int, channel: str) -> Sampler:
        def samples(rec: Record) -> tuple[Sample, ...]:
            mark = rec[channel_i]
            if mark is None or mark[1] != channel or not rec[values_i]:
                return ()
            return tuple((0, ts, 1, value, None) for ts, value, _ in rec[values_i])

        return samples


PER_CHANNEL: Final = PerChannel()

KINDS: Final[dict[str, Kind]] = {
    "duration": Duration(), "ratio": Ratio(), "mean_field": MeanField(),
    "follow_up": FollowUp(), "deadline": Deadline(), "reviewed": Reviewed(),
    "review_agreement": ReviewAgreement(), "sla_experience": SlaExperience()}
"""Kind name (``Kpi.kind``) -> its compiler; any other kind has no samples."""
OTHER: Final = Kind()


_parse_due: Final = functools.lru_cache(maxsize=4096)(parse_due)
"""Due dates repeat (one per order, re-read on every change of the order's marks)."""


def deadline_met(done_ms: int, offset_s: int, due_date: str) -> bool:
    """Whether a completion at ``done_ms`` (local UTC offset ``offset_s``) met ``due_date``."""
    day, instant = _parse_due(due_date)
    if instant is not None:
        return done_ms <= instant
    assert day is not None
    local = datetime.fromtimestamp(done_ms / 1000, UTC) + timedelta(seconds=offset_s)
    return local.date() <= day


def compile_kpis(kpis: tuple[Kpi, ...],
                 ) -> tuple[PlanBuilder, dict[str, bool], list[Sampler | LimitedSampler]]:
    """The catalog's KPIs compiled: the plan (routes, slots, open items), which entity topics
    keep packed records, and each KPI's sampler."""
    plan = PlanBuilder()
    builds = [(PER_CHANNEL if kpi.channel is not None else KINDS.get(kpi.kind, OTHER)).compile(
        k, kpi, plan) for k, kpi in enumerate(kpis)]
    packed = plan.packed_topics()
    samplers = [build(UNSET if topic is not None and packed.get(topic) else None)
                for topic, build in builds]
    return plan, packed, samplers
