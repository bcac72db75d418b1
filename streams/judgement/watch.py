"""Judging every partner x KPI x window against its target, and what a state change says.

Plain Python with explicit time, like the engine: the Faust layer decides *when* to
judge (every ``judge_interval_s`` on the wall clock; at each minute boundary of a partner's event
time on the event clock, so a replay gives the same alerts every time) and where the
resulting :class:`Alert` messages go.

**The cache contract** (the one statement of it; the engine, this watch and the exporter rely
on it): *a value that changes is a new object; an unchanged value is the very same object.*

* The engine never mutates a :class:`~streams.engine.core.KpiValue` or a window's mapping it
  has handed out: :meth:`Engine.evaluate` returns the same dict while
  :meth:`Engine.evaluation_key` is unchanged, and each mapping of
  :meth:`Engine.window_values` stays the same object until one of its values changes (a new
  mapping is built, never updated in place).
* :meth:`Watch.judge_partner` skips a partner whose evaluation key, stale topics and breach
  timer are unchanged, and a partner x KPI x window stepped last time with the very same
  ``KpiValue`` (``is``; ``==`` as a fallback) and CUSUM alarm.
* :attr:`Watch.versions` is the watch's side of the contract for what it owns (judgements are
  mutated in place): a stamp, never reused, renewed whenever a partner's judgements are
  created or change state.
* :class:`~streams.outputs.exporter.KpiCollector` keeps each partner x window's rendered text
  while its mapping ``is`` the one it rendered, and the partner's head while its stamp and the
  partner file object are unchanged.

Breaking the contract (mutating a value in place) would not fail loudly: the watch would skip
a judgement and the exporter would serve stale text. Any change to the engine's caching must
keep it, or replace the identity checks here and in the exporter by explicit versions.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Final

from streams.config.settings import Settings
from streams.engine.core import Engine, KpiValue
from streams.judgement.alerts import ALERT_NAME, PIPELINE_ALERT, SEVERITY, Alert
from streams.judgement.judge import Evidence, Judgement, State, Transition
from streams.judgement.lens import IntegrityChange, IntegrityLens

__all__ = ["ALERT_NAME", "PIPELINE_ALERT", "SEVERITY", "STALE_AFTER_MS", "Alert", "Watch", "evidence"]
# ALERT_NAME, PIPELINE_ALERT, SEVERITY and Alert live in streams.judgement.alerts (re-exported)

STALE_AFTER_MS: Final = int(Settings.model_fields["stale_after_s"].default * 1000)
"""A topic whose newest message arrived longer ago than this is a stale feed: the default of
``settings.stale_after_s`` (the one definition; the worker passes its setting)."""


_UNSEEN: Final = object()
"""Not stepped yet (a value of None is a window without samples)."""


def evidence(kind: str, value: KpiValue, quantile: float | None) -> Evidence:
    """The engine's window aggregate as evidence for the judge."""
    return Evidence(kind=kind, n=value.samples, value=value.value, s=value.total,
                    s2=value.squares, hist=value.hist, q=quantile)


def _alert(partner: str, tier: str, kpi: str, window: str, change: Transition) -> Alert:
    """The message of one state change."""
    new = change.new.value
    return Alert(partner=partner, tier=tier, kpi=kpi, window=window, old=change.old.value,
                 new=new, value=change.value, target=change.target, lower=change.lower,
                 upper=change.upper, samples=change.n, since_ms=change.at_ms,
                 dedup_key=f"{partner}/{kpi}/{window}/{new}/{change.at_ms}")


class Watch:
    """The judgements of the partners one worker owns, and the health of its feeds."""

    def __init__(self, engine: Engine, stale_after_ms: int = STALE_AFTER_MS) -> None:
        self.engine = engine
        self.stale_after_ms = stale_after_ms
        self.judgements: dict[tuple[str, str, str], Judgement] = {}
        self.last_arrival_ms: dict[str, int] = {}
        self._judged_minute: dict[str, int] = {}
        self._judged: dict[str, tuple[tuple[int, int, int] | None, frozenset[str], int | None]] = {}
        """partner -> (evaluation key, stale topics, next breach timer due) of its last
        judging: judging it again with all three unchanged (and the timer not due) changes
        nothing, so it is skipped. That makes a sweep cost what changed, not the fleet."""
        # partner x KPI x window -> the value and the CUSUM alarm it was last stepped with: two
        # maps, not one of pairs, so that a judge pass over a fleet makes no new object per
        # pair for the garbage collector to traverse (the values are the engine's own)
        self._stepped_value: dict[tuple[str, str, str], KpiValue | None] = {}
        self._stepped_alarm: dict[tuple[str, str, str], bool] = {}
        self._kpi_topics = {k.id: frozenset(m.topic for m in k.matches()) for k in engine.kpis}
        self.versions: dict[str, int] = {}
        """partner -> a stamp renewed whenever one of its judgements is created or changes state
        (the exporter keeps the partner's rendered state series until it moves). Stamps are
        never reused, so a partner forgotten and judged again never matches an old one."""
        self._stamps = itertools.count(1)
        self.lens = IntegrityLens(engine)
        """The integrity signals, reviewed with each partner's judging (what it changed waits in
        :attr:`integrity_changes` for the caller to deliver)."""
        self.integrity_changes: list[IntegrityChange] = []

    # --- feeds ------------------------------------------------------------------
    def note_arrival(self, topic: str, wall_ms: int) -> None:
        """A message of ``topic`` arrived (any outcome): the feed is alive."""
        self.last_arrival_ms[topic] = wall_ms

    def stale_topics(self, wall_ms: int) -> set[str]:
        """Topics that had traffic and have been silent for longer than ``stale_after_ms``."""
        return {t for t, at in self.last_arrival_ms.items() if wall_ms - at > self.stale_after_ms}

    # --- judging ----------------------------------------------------------------
    def due_for_event_clock(self, partner: str, ts_ms: int) -> int | None:
        """On the event clock, the minute boundary to judge ``partner`` at before this event."""
        minute = ts_ms // 60_000
        last = self._judged_minute.get(partner)
        self._judged_minute[partner] = max(minute, last if last is not None else minute)
        if last is None or minute <= last:
            return None
        return minute * 60_000

    def judge(self, partners: Iterable[str], now_ms: int,
              stale: frozenset[str] | set[str] = frozenset()) -> list[Alert]:
        """Judge each partner at ``now_ms``; the state changes, in a stable order."""
        out: list[Alert] = []
        for partner in partners:
            out.extend(self.judge_partner(partner, now_ms, stale))
        return out

    def in_judging_order(self, partners: Iterable[str], now_ms: int) -> list[str]:
        """``partners`` in the order a pass should judge them: first those with news since
        their last judging (new events, a breach timer due, never judged), then those whose
        values only the clock moved (or without state), each group in the order given.

        Why: a wall-clock pass over a fleet takes a good part of its interval (every partner's
        1 h window slides at a new minute), and an event that tips a partner waits for its
        step. Judging the partners that had events first bounds that wait by their work, not
        the fleet's."""
        engine = self.engine
        news: list[str] = []
        clock_only: list[str] = []
        for partner in partners:
            last = self._judged.get(partner)
            key = engine.evaluation_key(partner, now_ms)
            if key is not None and (
                    last is None or last[0] is None or last[0][:2] != key[:2]
                    or (last[2] is not None and now_ms >= last[2])):
                news.append(partner)
            else:
                clock_only.append(partner)
        return news + clock_only

    def judge_partner(self, partner: str, now_ms: int,
                      stale: frozenset[str] | set[str] = frozenset()) -> list[Alert]:
        """Judge one partner's KPIs in every window at ``now_ms``.

        A KPI fed by a stale topic is held where it is (no transitions): the pipeline alert
        speaks for it instead of a flood of partner alerts.
        """
        engine = self.engine
        key = engine.evaluation_key(partner, now_ms)
        stale_set = frozenset(stale)
        last = self._judged.get(partner)
        if (last is not None and key is not None and last[0] == key and last[1] == stale_set
                and (last[2] is None or now_ms < last[2])):
            return []
        values = engine.evaluate(partner, now_ms)
        tier = engine.partners.tier(partner)
        out: list[Alert] = []
        due: int | None = None
        stepped_value, stepped_alarm = self._stepped_value, self._stepped_alarm
        for kpi in engine.kpis:
            if stale and self._kpi_topics[kpi.id] & stale:
                continue
            target: float | None = None
            alarm = engine.cusum_alarm(partner, kpi.id)
            for window in kpi.windows:
                jkey = (partner, kpi.id, window)
                judgement = self.judgements.get(jkey)
                if judgement is None:
                    judgement = self.judgements[jkey] = Judgement()
                    self.versions[partner] = next(self._stamps)
                kv = values.get((kpi.id, window))
                pending = judgement.pending_since_ms
                timed = pending is not None and judgement.state is not State.BREACH
                seen = stepped_value.get(jkey, _UNSEEN)
                if (not timed and seen is not _UNSEEN and stepped_alarm[jkey] is alarm
                        and (seen is kv or seen == kv)):
                    # the same evidence gives the same state unless a breach timer runs
                    # (judge.Judgement.step): an event moves 1-3 of a partner's KPIs, not 16, and
                    # evaluate() hands the others back as the very objects judged last time
                    # (the cache contract, module docstring)
                    continue
                stepped_value[jkey] = kv
                stepped_alarm[jkey] = alarm
                if target is None:
                    target = engine.partners.target(partner, kpi)
                ev = None if kv is None else evidence(kpi.stat_kind, kv, kpi.quantile)
                change = judgement.step(now_ms, ev, target, kpi.lower_is_better, kpi.min_samples,
                                        kpi.judge, alarm)
                pending = judgement.pending_since_ms
                if pending is not None and judgement.state is not State.BREACH:
                    # the one change time alone makes: a bound past for `for` becomes a breach
                    at = pending + kpi.judge.for_ms
                    due = at if due is None or at < due else due
                if change is None:
                    continue
                self.versions[partner] = next(self._stamps)
                out.append(_alert(partner, tier, kpi.id, window, change))
        self.integrity_changes += self.lens.review(partner, now_ms, values)
        self._judged[partner] = (key, stale_set, due)
        return out

    def drain_integrity(self) -> list[IntegrityChange]:
        """The integrity flags raised or cleared since the last drain, oldest first."""
        out, self.integrity_changes = self.integrity_changes, []
        return out

    def state(self, partner: str, kpi: str, window: str) -> Judgement | None:
        """The current judgement, if the partner was judged."""
        return self.judgements.get((partner, kpi, window))

    def forget(self, keep: Iterable[str]) -> None:
        """Drop the judgements of partners this worker no longer owns."""
        kept = set(keep)
        for key in [k for k in self.judgements if k[0] not in kept]:
            del self.judgements[key]
            self._stepped_value.pop(key, None)
            self._stepped_alarm.pop(key, None)
        for partner in [p for p in self._judged_minute if p not in kept]:
            del self._judged_minute[partner]
        for partner in [p for p in self._judged if p not in kept]:
            del self._judged[partner]
        for partner in [p for p in self.versions if p not in kept]:
            del self.versions[partner]
        self.lens.forget(kept)
