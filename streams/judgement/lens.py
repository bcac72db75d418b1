"""The integrity lens over a worker's partners: which gaming signals hold, since when, and what
changed (raised or cleared) at each review.

Plain Python with explicit time, like the watch. The statistics are in
:mod:`streams.judgement.integrity`; this module decides what they are asked and when:

* Every KPI is read in each of its windows: the window's closed buckets are the sub-periods
  (1 min buckets of the 1 h window at high volume, 1 h buckets of the 30 d window for a
  partner with 50 tickets a day). A signal holds when any window flags it at its level
  (``alpha / windows``, spread over the window's looks of a day, below: Bonferroni, so looking
  in four windows must not quadruple false flags); its evidence is the window with the smallest
  p-value.
* Each window is asked every twelfth of its length, at most once a day (of the clock judging
  runs on: the wall, or the partner's event time): the 1 h window every 5 minutes, the 24 h one
  every 2 hours, 7 d and 30 d daily. A window asked ``k`` times a day is tested at
  ``alpha / windows / k``, so each window spends the same false-flag budget per day as the daily
  looks the README's rates were measured for (the looks overlap, so this is conservative); a
  high-volume partner's steering shows in the 1 h window within minutes, and its p-values are
  far below these levels. A window is also asked sooner once its volume grew by a quarter since
  its last look (:data:`GROWTH`: a worker catching up, a new partner filling its windows).
* A statistic that cannot read its input (a bucket with negative counts: an engine bug) logs it
  and stays silent for that window: judging goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Final

from streams.config.integrity import (
    DEADLINE_BUNCHING,
    THRESHOLD_HUGGING,
    UNDER_REPORTING,
    vanishing_side,
)
from streams.engine.core import Engine, KpiValue
from streams.judgement.integrity import (
    Finding,
    IntegrityParams,
    deadline_bunching,
    threshold_hugging,
    under_reporting,
)

log = logging.getLogger("partnerpulse")

REVIEW_EVERY_MS: Final = 86_400_000
"""The longest one partner x KPI x window waits to be asked again (see the module docstring)."""
LOOKS_PER_LENGTH: Final = 12
"""A window is asked again every ``length / LOOKS_PER_LENGTH``, if that is under a day."""

GROWTH: Final = 1.25
"""A window asked before its day is up once its samples grew by this factor since its last look:
a worker catching up on a backlog (or a partner's volume rising) is looked at as its data
arrives, at the cost of a few looks (from 200 samples to 20,000, about 20), not one a bucket."""

HOLD_FACTOR: Final = 100.0
"""A flag raised at ``alpha`` holds while the signal's p-value stays under ``HOLD_FACTOR * alpha``
(and its other conditions hold): a steered partner's p-value wanders around the level as its
window slides (measured on the demo's gaming partner: 1e-8 to 1e-6 at a level of 2.6e-7), and a
flag that clears and rises again alerts partner management each time."""

FlagKey = tuple[str, str, str]
"""(partner, kpi id, signal)."""


@dataclass(slots=True)
class _Asked:
    """One window's last look (updated in place at the next: a fleet's judge pass at a new
    day asks every partner's windows, and each new record would be one more object for the
    garbage collector to traverse)."""

    again_ms: int
    """When it is asked again whatever the volume."""
    volume: int
    """The window's samples at the look."""
    found: Sequence[tuple[str, Finding | None]]


@dataclass(frozen=True, slots=True)
class Held:
    """A signal's latest evidence for one partner x KPI (flagged or not)."""

    window: str
    finding: Finding
    since_ms: int | None
    """When the flag was raised (None while it does not hold)."""


@dataclass(frozen=True, slots=True)
class IntegrityChange:
    """A flag raised (``held`` True) or cleared for one partner x KPI x signal."""

    partner: str
    tier: str
    kpi: str
    signal: str
    held: bool
    window: str
    finding: Finding
    at_ms: int

    @property
    def dedup_key(self) -> str:
        return f"{self.partner}/{self.kpi}/{self.signal}/{int(self.held)}/{self.at_ms}"

    def summary(self) -> str:
        """One human line for the log and the alert."""
        verb = "flagged" if self.held else "cleared"
        return (f"{self.partner} ({self.tier}) {self.kpi}: {self.signal} {verb} in {self.window}: "
                f"{self.finding.detail}")


class IntegrityLens:
    """The integrity signals of the partners one worker owns."""

    def __init__(self, engine: Engine, params: IntegrityParams | None = None) -> None:
        self.engine = engine
        self.params = params or IntegrityParams()
        self.held: dict[FlagKey, Held] = {}
        """Latest evidence per partner x KPI x signal that is not silent (enough volume)."""
        self.version = 0
        """Bumped whenever ``held`` changes, and only then: what renders it may keep its text
        until then."""
        self.raised: dict[str, dict[str, set[tuple[str, str]]]] = {}
        """partner -> month (report time zone) -> (kpi, signal) flagged at some review in that
        month (raised then, or held into it). In memory: a restart or a rebalance forgets it,
        and the lens finds again only what still holds."""
        self._asked: dict[tuple[str, str, str], _Asked] = {}
        """(partner, kpi, window) -> its last look."""
        self._silent: dict[tuple[str, ...], tuple[tuple[str, None], ...]] = {}
        """Signals -> each one's silence: the one answer of every window too thin to test."""
        self._levels: dict[tuple[str, int, bool], IntegrityParams] = {}
        """(window, the KPI's windows, a flag held) -> the parameters its tests run at."""
        self._watched = [(kpi, kpi.integrity) for kpi in engine.kpis if kpi.integrity]
        self._kinds = {kpi.id: kpi.kind for kpi in engine.kpis}
        self._every = {name: min(REVIEW_EVERY_MS, max(w.length_ms // LOOKS_PER_LENGTH, 1))
                       for name, w in engine.catalog.windows.items()}
        """Window name -> how often it is asked (ms)."""
        p = self.params
        self._least = min(p.min_periods * p.min_per_period, p.min_bunching_samples,
                          p.min_under_reporting_samples)
        """Fewest samples in a window any statistic can speak on (each needs at least this many
        of the window's samples: sub-periods of tickets, binned durations, recent tickets)."""

    def review(self, partner: str, now_ms: int,
               values: Mapping[tuple[str, str], KpiValue] | None = None) -> list[IntegrityChange]:
        """Ask every watched KPI of ``partner`` at ``now_ms``; the flags raised or cleared.

        ``values`` (:meth:`Engine.evaluate` at ``now_ms``, which the judge has at hand) give each
        window's volume: a window whose samples grew by :data:`GROWTH` since its last look is
        asked again before its day is up (see the module docstring)."""
        engine, out = self.engine, []
        values = engine.evaluate(partner, now_ms) if values is None else values
        tier = engine.partners.tier(partner)
        for kpi, signals in self._watched:
            windows = kpi.windows
            target = engine.partners.target(partner, kpi)
            best: dict[str, tuple[str, Finding]] = {}
            for window in windows:
                kv = values.get((kpi.id, window))
                volume = kv.samples if kv is not None else 0
                for signal, finding in self._ask(partner, kpi.id, window, now_ms, volume, target,
                                                 kpi.better, signals, len(windows)):
                    if finding is None:
                        continue
                    have = best.get(signal)
                    if have is None or finding.p_value < have[1].p_value:
                        best[signal] = (window, finding)
            for signal in signals:
                change = self._settle(partner, tier, kpi.id, signal, best.get(signal), now_ms)
                if change is not None:
                    out.append(change)
        return out

    def _ask(self, partner: str, kpi_id: str, window: str, now_ms: int, volume: int,
             target: float, better: str, signals: tuple[str, ...], windows: int,
             ) -> Sequence[tuple[str, Finding | None]]:
        key = (partner, kpi_id, window)
        asked = self._asked.get(key)
        if asked is not None and now_ms < asked.again_ms and volume < asked.volume * GROWTH:
            return asked.found
        every = self._every[window]
        found: Sequence[tuple[str, Finding | None]]
        if volume < self._least:  # every statistic would stay silent: not worth the inputs
            silent = self._silent.get(signals)
            if silent is None:
                silent = self._silent[signals] = tuple((signal, None) for signal in signals)
            found = silent
        else:
            found = self._test(partner, kpi_id, window, now_ms, target, better, signals, windows)
        # Asked again at its next cadence mark, or sooner once its volume grew by GROWTH: a
        # window silent for lack of volume (a partner just seen, a worker catching up) is asked
        # as its data arrives, and one that stays thin (a 3-tickets-a-day partner) is not re-read
        # every bucket for nothing.
        again = (now_ms // every + 1) * every
        if asked is None:
            self._asked[key] = _Asked(again, max(volume, 1), found)
        else:
            asked.again_ms, asked.volume, asked.found = again, max(volume, 1), found
        return found

    def _level(self, window: str, windows: int, held: bool) -> IntegrityParams:
        """The parameters one window's tests run at: alpha split over the KPI's ``windows`` and
        over the window's reviews in REVIEW_EVERY_MS, HOLD_FACTOR x that while a flag is held.
        Made once per combination (a first judgement of a fleet asks for thousands)."""
        key = (window, windows, held)
        level = self._levels.get(key)
        if level is None:
            every = self._every[window]
            level = replace(self.params,
                            alpha=self.params.alpha / windows * every / REVIEW_EVERY_MS)
            if held:
                level = replace(level, alpha=min(level.alpha * HOLD_FACTOR, 0.5))
            self._levels[key] = level
        return level

    def _test(self, partner: str, kpi_id: str, window: str, now_ms: int, target: float,
              better: str, signals: tuple[str, ...], windows: int,
              ) -> list[tuple[str, Finding | None]]:
        """Each signal's finding on the window; a flag held is tested at HOLD_FACTOR x alpha."""
        buckets, bins = self.engine.integrity_inputs(partner, kpi_id, window, now_ms)
        found: list[tuple[str, Finding | None]] = []
        for signal in signals:
            was = self.held.get((partner, kpi_id, signal))
            level = self._level(window, windows, was is not None and was.since_ms is not None)
            try:
                if signal == THRESHOLD_HUGGING:
                    found.append((signal, threshold_hugging(buckets, target, better, level)))
                elif signal == UNDER_REPORTING:
                    side = vanishing_side(self._kinds[kpi_id], better)
                    found.append((signal, under_reporting(buckets, side, level)))
                elif signal == DEADLINE_BUNCHING:
                    found.append((signal, deadline_bunching(bins, target, better, level)))
            except ValueError as exc:
                log.error("integrity %s of %s %s in %s not tested: %s", signal, partner, kpi_id,
                          window, exc)
                found.append((signal, None))
        return found

    def _settle(self, partner: str, tier: str, kpi_id: str, signal: str,
                best: tuple[str, Finding] | None, now_ms: int) -> IntegrityChange | None:
        """Record the signal's newest evidence; the change, when the flag moved."""
        key = (partner, kpi_id, signal)
        was = self.held.get(key)
        was_flagged = was is not None and was.since_ms is not None
        if best is None:  # silent now (volume gone): a flag held is cleared with its last evidence
            if was is None:
                return None
            del self.held[key]
            self.version += 1
            if not was_flagged:
                return None
            return IntegrityChange(partner, tier, kpi_id, signal, False, was.window, was.finding,
                                   now_ms)
        window, finding = best
        since = (was.since_ms if was_flagged and was is not None else now_ms) if finding.flagged else None
        if was is None or was.finding is not finding or (was.window, was.since_ms) != (window, since):
            self.held[key] = Held(window, finding, since)
            # only a change moves the version: /metrics rewrites every held signal's series
            # when it moves. Most reviews answer from the last asking (the very finding held),
            # and a new asking of the same data finds the same.
            if was is None or was.finding != finding or (was.window, was.since_ms) != (window, since):
                self.version += 1
        if finding.flagged:  # a flag held into a new month counts in that month too
            self._note(partner, kpi_id, signal, now_ms)
        if finding.flagged == was_flagged:
            return None
        return IntegrityChange(partner, tier, kpi_id, signal, finding.flagged, window, finding,
                               now_ms)

    def _note(self, partner: str, kpi_id: str, signal: str, now_ms: int) -> None:
        """Remember that the flag held in the month of ``now_ms`` (report time zone)."""
        calendar = self.engine.months
        months = self.raised.setdefault(partner, {})
        months.setdefault(calendar.name(calendar.index(now_ms)), set()).add((kpi_id, signal))
        while len(months) > self.engine.catalog.report_months:  # as many as the report keeps
            del months[min(months)]

    def flags(self, partner: str) -> list[tuple[str, str, Held]]:
        """(kpi, signal, evidence) of the partner's flags holding now, in catalog order."""
        return [(kpi, signal, held) for (p, kpi, signal), held in self.held.items()
                if p == partner and held.since_ms is not None]

    def raised_in(self, partner: str, month: str) -> list[tuple[str, str]]:
        """(kpi, signal) flagged at some review in ``month`` (``'2026-10'``), sorted."""
        return sorted(self.raised.get(partner, {}).get(month, set()))

    def forget(self, keep: set[str]) -> None:
        """Drop what is held for partners this worker no longer owns."""
        for key in [k for k in self.held if k[0] not in keep]:
            del self.held[key]
        self.version += 1
        for asked in [k for k in self._asked if k[0] not in keep]:
            del self._asked[asked]
        for partner in [p for p in self.raised if p not in keep]:
            del self.raised[partner]


__all__ = ["HOLD_FACTOR", "FlagKey", "Held", "IntegrityChange", "IntegrityLens"]
