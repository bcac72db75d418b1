"""The month-end band forecast of every exported partner, for ``/metrics``
(``partnerpulse_report_projected_band{partner,band}``, a probability) and the executive
dashboard.

A forecast draws the rest of the month (:func:`streams.outputs.report.project`), which costs
milliseconds a partner: too much to redo for a fleet at every scrape. So each partner's forecast
is kept and redone once it is ``refresh_ms`` old (or the month turned), at most ``budget``
partners per scrape, the stalest first: a scrape's extra cost stays bounded whatever the fleet,
and a forecast is at most ``refresh_ms`` plus a fleet's worth of scrapes old.
"""

from __future__ import annotations

import logging
from collections.abc import Generator, Iterable
from dataclasses import dataclass
from typing import Final

from streams.engine.core import Engine, MonthCalendar
from streams.outputs.report import month_values, project
from streams.outputs.steps import finish

log = logging.getLogger("partnerpulse")

DRAWS: Final = 300
"""Draws per exported forecast: a band probability to about +-3 points at 50%, at a fifth of
the card's cost."""


@dataclass(frozen=True, slots=True)
class Kept:
    """A partner's last forecast: for which month, when, and the probability of every band."""

    month: int
    at_ms: int
    bands: tuple[tuple[str, float], ...]


class MonthEndForecasts:
    """Month-end band probabilities of the partners a worker exports, kept and refreshed."""

    def __init__(self, engine: Engine, refresh_ms: int = 15 * 60_000, budget: int = 10) -> None:
        self.engine = engine
        self.refresh_ms = refresh_ms
        self.budget = budget
        self.calendar = MonthCalendar(engine.catalog.report_timezone)
        self.kept: dict[str, Kept] = {}

    def bands(self, partners: Iterable[str], now_ms: int,
              wall_ms: int | None = None) -> dict[str, Kept]:
        """partner -> its forecast (the partners with a month in progress), refreshing up to
        ``budget`` of the stalest; partners not asked for are let go (:meth:`refresh` in one
        go)."""
        return finish(self.refresh(partners, now_ms, wall_ms))

    def refresh(self, partners: Iterable[str], now_ms: int, wall_ms: int | None = None, *,
                others: bool = False) -> Generator[None, None, dict[str, Kept]]:
        """:meth:`bands` one forecast per step (a few milliseconds each), for a caller that
        lets its event loop run between steps (the worker's /metrics).

        ``others``: the caller asks for some of the exported partners only (the wall of a
        token scoped to one partner), so the forecasts of the others are kept, not let go:
        /metrics would otherwise lose their band series until it had redone them all, ten a
        scrape.

        ``now_ms`` is the clock the month is read at (the event clock in event mode);
        ``wall_ms`` (default ``now_ms``) the one a forecast ages by: a worker catching up a
        backlog moves its event clock by days a second, and must not redo forecasts for it."""
        wall = now_ms if wall_ms is None else wall_ms
        month = self.calendar.index(now_ms)
        start = self.calendar.start_ms(month)
        elapsed = (now_ms - start) / (self.calendar.start_ms(month + 1) - start)
        asked = list(partners)
        kept = {p: self.kept[p] for p in asked if p in self.kept}
        due = sorted((p for p in asked if p not in kept or kept[p].month != month
                      or wall - kept[p].at_ms >= self.refresh_ms),
                     key=lambda p: kept[p].at_ms if p in kept else -1)
        engine, name = self.engine, MonthCalendar.name(month)
        partners_file = engine.partners
        policy = partners_file.policy(month)
        for partner in due[:self.budget]:
            values = month_values(engine, partner, name)
            if not values or elapsed <= 0:
                kept.pop(partner, None)
                continue
            try:
                ahead = project(engine.catalog, partners_file, partner, values, month,
                                min(elapsed, 1.0), False, draws=DRAWS)
            except ValueError:
                # a forecast is an extra of /metrics: one it cannot draw (a bug) costs that
                # partner's band series, logged, never the scrape of every KPI (it answered 500)
                log.exception("month-end forecast of %s failed; its band series are left out",
                              partner)
                kept.pop(partner, None)
                continue
            kept[partner] = Kept(month, wall, tuple(
                (band.id, ahead.probabilities.get(band.id, 0.0)) for band in policy.bands))
            yield
        if others:
            for partner in asked:
                if partner in kept:
                    self.kept[partner] = kept[partner]
                else:
                    self.kept.pop(partner, None)
        else:
            self.kept = kept
        return kept
