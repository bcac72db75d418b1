"""The ledger of open items: which tickets are about to breach, most urgent first.

NOC staff act on tickets, not on averages. For every ``open_items`` KPI (open-to-status per
severity, detractors to call back) the engine keeps each entity still waiting for its stop and
when it started (:meth:`streams.engine.core.Engine.open_list`); this module selects, sorts and
serialises them for ``GET /api/open`` on each worker, and gathers every worker's answer for
``partnerpulse open``, as ``report`` does for the card.

Ages are read on the engine's clock (the event clock by default): "time left" is what the
target leaves at the newest event time the worker has seen. A KPI on the business clock ages
only in its partner's working hours (``clock: business`` in the row; the table marks such an
age with a ``b``), and a KPI with ``pause_on`` not while the ticket waits (``paused_seconds``).
"""

from __future__ import annotations

import csv
import io
import urllib.parse
from bisect import bisect_right
from collections.abc import Callable, Generator, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Final

import orjson

from streams.engine.model import OPEN_STATES, URGENT, OpenItem, in_state, urgency
from streams.outputs.report import ask_workers, http_get

DEFAULT_LIMIT: Final = 100
"""Rows a ledger request returns unless it asks for another number."""
MAX_LIMIT: Final = 5000
"""The most rows one request may ask for: the answer stays small whatever the backlog."""
STATE_FILTERS: Final = (*OPEN_STATES, URGENT)
"""What ``state=`` may ask for: one state, or ``urgent`` (at risk or breached)."""


@dataclass(frozen=True, slots=True)
class LedgerQuery:
    """Which open items to list: each filter None for all."""

    partner: str | None = None
    kpi: str | None = None
    state: str | None = None
    """One of :data:`STATE_FILTERS`."""
    limit: int = DEFAULT_LIMIT

    @classmethod
    def parse(cls, args: Mapping[str, str]) -> LedgerQuery:
        """From a request's query string; ValueError says what is wrong."""
        state = args.get("state") or None
        if state is not None and state not in STATE_FILTERS:
            raise ValueError(f"state={state!r}: one of {', '.join(STATE_FILTERS)}")
        raw = args.get("limit") or str(DEFAULT_LIMIT)
        if not raw.isdigit() or not 1 <= int(raw) <= MAX_LIMIT:
            raise ValueError(f"limit={raw!r}: a whole number from 1 to {MAX_LIMIT}")
        return cls(args.get("partner") or None, args.get("kpi") or None, state, int(raw))

    def params(self) -> str:
        """The query string asking a worker for these items."""
        return urllib.parse.urlencode([(name, value) for name, value in (
            ("partner", self.partner), ("kpi", self.kpi), ("state", self.state),
            ("limit", str(self.limit))) if value])

    def keeps(self, item: OpenItem) -> bool:
        """Whether ``item`` passes the filters (the limit aside)."""
        if self.partner is not None and item.partner != self.partner:
            return False
        if self.kpi is not None and item.kpi != self.kpi:
            return False
        return in_state(item, self.state)


def select(items: Iterable[OpenItem], query: LedgerQuery) -> list[OpenItem]:
    """The items the query keeps, most urgent first, at most ``query.limit``."""
    return selection(items, query)[0]


def selection(items: Iterable[OpenItem], query: LedgerQuery) -> tuple[list[OpenItem], int]:
    """What :func:`select_steps` asks of each partner, from a list of its items: the
    ``query.limit`` most urgent the query keeps, and how many it keeps
    (:meth:`Engine.open_selection` gives the same without making every item)."""
    kept = [item for item in items if query.keeps(item)]
    return sorted(kept, key=urgency)[:query.limit], len(kept)


def select_steps(partners: Iterable[str],
                 selection_of: Callable[[str], tuple[list[OpenItem], int]],
                 query: LedgerQuery) -> Generator[None, None, tuple[list[OpenItem], int]]:
    """:func:`select` over the partners' open items, one partner per step; returns the rows
    and how many items matched before the limit. ``selection_of(partner)``: the partner's
    ``query.limit`` most urgent items the query keeps, most urgent first, and how many it
    keeps (:func:`selection`, or :meth:`Engine.open_selection` on the worker).

    Why: a filled partner waits on about 1,261 items, so gathering every partner's before
    selecting was 12.6 M items a request at 10,000 partners. Between steps only the limit's most
    urgent are kept (the first ``limit`` of their sorted order, as :func:`select` gives), and
    a caller on the worker's event loop lets it run between steps
    (streams/runtime/pacing.py)."""
    kept: list[OpenItem] = []
    keys: list[tuple[int, str, str, str]] = []  # kept's urgency keys, in the same order
    limit, matched = query.limit, 0
    for partner in partners:
        mine, count = selection_of(partner)
        matched += count
        # each of the partner's rows goes in at its place, and the least urgent falls off the
        # end: a row that does not beat a full list's last ends the partner (its rows are
        # sorted). Re-selecting the kept rows with each partner's (heapq.nsmallest) cost as
        # much as the rows themselves at limit=5,000: 5.9 s a request at 1,000 partners.
        for item in mine:
            key = urgency(item)
            if len(kept) == limit and key >= keys[-1]:
                break
            at = bisect_right(keys, key)
            keys.insert(at, key)
            kept.insert(at, item)
            if len(kept) > limit:
                keys.pop()
                kept.pop()
        yield
    return kept, matched


def to_json(item: OpenItem) -> dict[str, Any]:
    """One row, in base units (seconds; times in epoch milliseconds)."""
    return {"partner": item.partner, "kpi": item.kpi, "entity_id": item.entity_id,
            "severity": item.severity, "opened_ms": item.opened_ms,
            "age_seconds": item.age_ms / 1000, "target_seconds": item.target_ms / 1000,
            "left_seconds": item.left_ms / 1000, "state": item.state,
            "paused_seconds": item.paused_ms / 1000, "clock": item.clock}


def from_json(row: Mapping[str, Any]) -> OpenItem:
    """A row as served by :func:`to_json`."""
    return OpenItem(str(row["partner"]), str(row["kpi"]), str(row["entity_id"]),
                    None if row.get("severity") is None else str(row["severity"]),
                    int(row["opened_ms"]), round(float(row["age_seconds"]) * 1000),
                    round(float(row["target_seconds"]) * 1000), str(row["state"]),
                    round(float(row.get("paused_seconds") or 0) * 1000),
                    str(row.get("clock") or "calendar"))


@dataclass(frozen=True, slots=True)
class Gathered:
    """Every worker's open items, merged: the rows, and how many matched before the limit."""

    items: list[OpenItem]
    matched: int
    now_ms: dict[str, int]
    """Worker -> the clock its ages were read at."""


def fetch_open(workers: list[str], query: LedgerQuery, partitions: int,
               opener: Callable[[str], bytes] | None = None) -> Gathered:
    """Ask every worker for its open items; fail unless together they own every partition
    (a ledger missing a partition would hide its tickets)."""
    get = opener or http_get
    rows: list[OpenItem] = []
    matched = 0
    clocks: dict[str, int] = {}
    for base, body in ask_workers(workers, f"/api/open?{query.params()}", partitions, get):
        rows += [from_json(row) for row in body["items"]]
        matched += int(body["matched"])
        clocks[base] = int(body["now_ms"])
    return Gathered(select(rows, query), matched, clocks)


# --- rendering ----------------------------------------------------------------------------
COLUMNS: Final = ("partner", "kpi", "entity_id", "severity", "state", "age_seconds",
                  "target_seconds", "left_seconds", "opened_ms", "paused_seconds", "clock")


def _clock(seconds: float) -> str:
    """``-1h05m`` / ``42m10s``: a duration as the NOC reads it."""
    sign, s = ("-" if seconds < 0 else ""), int(abs(seconds))
    hours, rest = divmod(s, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{sign}{hours}h{minutes:02d}m" if hours else f"{sign}{minutes}m{secs:02d}s"


def render_table(got: Gathered) -> str:
    """Fixed-width columns, most urgent first, and how many matched beyond the shown rows."""
    head = ("partner", "kpi", "ticket", "severity", "state", "age", "target", "left", "paused")
    rows = [(i.partner, i.kpi, i.entity_id, i.severity or "-", i.state,
             _clock(i.age_ms / 1000) + ("b" if i.clock == "business" else ""),
             _clock(i.target_ms / 1000), _clock(i.left_ms / 1000),
             _clock(i.paused_ms / 1000) if i.paused_ms else "-") for i in got.items]
    widths = [max(len(str(r[c])) for r in (head, *rows)) for c in range(len(head))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
             for r in (head, *rows)]
    lines.append(f"{len(got.items)} of {got.matched} open items")
    return "\n".join(lines) + "\n"


def render_csv(got: Gathered) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(COLUMNS)
    for item in got.items:
        row = to_json(item)
        writer.writerow([row[c] if row[c] is not None else "" for c in COLUMNS])
    return out.getvalue()


def render_json(got: Gathered) -> str:
    return orjson.dumps({"items": [to_json(i) for i in got.items], "matched": got.matched,
                         "now_ms": got.now_ms}, option=orjson.OPT_INDENT_2).decode() + "\n"


RENDERERS: Final[dict[str, Callable[[Gathered], str]]] = {
    "table": render_table, "csv": render_csv, "json": render_json}
