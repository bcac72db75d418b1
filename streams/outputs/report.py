"""The monthly partner report card: each KPI's calendar month against its goal, and what it earns.

The numbers come from the pipeline's own state (the engine's calendar-month aggregates, served by
each worker at ``/api/report``), never from a second computation. This module turns them into a
card per partner (value, target, attainment, change from the previous month, tier, reward band,
the integrity flags the workers' lens raised in the month) and renders it as a terminal table, CSV,
JSON or one self-contained printable HTML file.
"""

from __future__ import annotations

import csv
import html
import io
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple

import orjson

from streams.config.catalog import Band, Catalog, Kpi, Partners
from streams.engine.core import Engine, MonthCalendar, attainment

FORMATS: Final = ("table", "csv", "html", "json")

MonthValues = dict[str, dict[str, tuple[float, int]]]
"""partner -> kpi id -> (value in base units, samples) for one calendar month."""
Flag = tuple[str, str]
"""(kpi id, integrity signal)."""
MonthFlags = dict[str, tuple[Flag, ...]]
"""partner -> the integrity flags raised at some time in one calendar month, sorted."""
RaisedIn = Callable[[str, str], Sequence[Flag]]
"""(partner, month) -> flags raised in that month: ``IntegrityLens.raised_in``."""


class ReportError(RuntimeError):
    """The report cannot be made (a worker unreachable, partitions not covered, a bad month)."""


# --- the card ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class KpiLine:
    """One KPI of one partner for the month."""

    kpi: str
    title: str
    unit: str
    better: str
    value: float | None
    samples: int
    target: float
    attainment: float | None
    """Value as a share of the goal (1.0 on target, above 1 better), None without data."""
    counted: bool
    """Whether it enters the score: it has at least the KPI's min_samples and a weight."""
    weight: float
    previous: float | None
    previous_attainment: float | None

    @property
    def change(self) -> float | None:
        """Value minus last month's, in base units."""
        if self.value is None or self.previous is None:
            return None
        return self.value - self.previous


@dataclass(frozen=True, slots=True)
class PartnerCard:
    """A partner's month: its KPI lines, score and band, and last month's for comparison."""

    partner: str
    name: str
    tier: str
    lines: tuple[KpiLine, ...]
    score: float | None
    """Weighted mean of the counted KPIs' capped attainment; None when no KPI counts."""
    band: Band | None
    floored_by: tuple[str, ...]
    """Counted KPIs below the floor (they cap the band)."""
    previous_score: float | None
    previous_band: Band | None
    """Last month's band (as ``band``: withheld when a flag was raised in that month)."""
    integrity: tuple[Flag, ...] = ()
    """(kpi, signal) of the integrity flags raised at some time in the month, sorted."""
    previous_integrity: tuple[Flag, ...] = ()
    """The same for the previous month."""
    withheld_band: Band | None = None
    """The band the score earned that the month's flags withheld (``integrity_withholds``); None
    when nothing was withheld. ``band`` is then the best band not withheld."""
    band_withheld_by: tuple[str, ...] = ()
    """``kpi: signal`` of the flags that withheld ``withheld_band`` (empty when none was)."""


@dataclass(frozen=True, slots=True)
class Report:
    """The report card of every partner for one calendar month."""

    month: str
    previous_month: str
    timezone: str
    generated_at: str
    cards: tuple[PartnerCard, ...]


def previous_month(month: str) -> str:
    """'2026-09' for '2026-10'."""
    return MonthCalendar.name(MonthCalendar.parse(month) - 1)


def _score(catalog: Catalog, partners: Partners, partner: str,
           values: Mapping[str, tuple[float, int]]) -> tuple[float | None, Band | None,
                                                                tuple[str, ...]]:
    policy = partners.report
    total = weights = 0.0
    floored: list[str] = []
    for kpi in catalog.kpis:
        got = values.get(kpi.id)
        weight = policy.weight(kpi.id)
        if got is None or got[1] < kpi.min_samples or weight <= 0:
            continue
        att = attainment(kpi, got[0], partners.target(partner, kpi))
        total += weight * min(att, policy.attainment_cap)
        weights += weight
        if policy.floor is not None and att < policy.floor:
            floored.append(kpi.id)
    if weights == 0:
        return None, None, ()
    score = total / weights
    return score, policy.band_for(score, bool(floored)), tuple(floored)


def _line(kpi: Kpi, partners: Partners, partner: str, now: tuple[float, int] | None,
          before: tuple[float, int] | None) -> KpiLine:
    target = partners.target(partner, kpi)
    weight = partners.report.weight(kpi.id)
    value = now[0] if now is not None else None
    prev = before[0] if before is not None else None
    return KpiLine(
        kpi=kpi.id, title=kpi.title, unit=kpi.unit, better=kpi.better, value=value,
        samples=now[1] if now is not None else 0, target=target,
        attainment=attainment(kpi, value, target) if value is not None else None,
        counted=now is not None and now[1] >= kpi.min_samples and weight > 0, weight=weight,
        previous=prev,
        previous_attainment=attainment(kpi, prev, target) if prev is not None else None,
    )


def flag_text(flag: Flag) -> str:
    """'escalation_rate: threshold_hugging'."""
    return f"{flag[0]}: {flag[1]}"


def build_report(catalog: Catalog, partners: Partners, month: str, current: MonthValues,
                 previous: MonthValues, generated_ms: int,
                 integrity: Mapping[str, Iterable[Flag]] | None = None,
                 previous_integrity: Mapping[str, Iterable[Flag]] | None = None) -> Report:
    """Cards for every listed partner and every partner with data or flags in either month.

    ``integrity`` (``previous_integrity``): partner -> integrity flags raised in the month (the
    one before). A band in the policy's ``integrity_withholds`` is not given to a partner flagged
    in that month: it gets the best band it qualifies for that is not withheld.
    """
    flags_now, flags_before = integrity or {}, previous_integrity or {}
    ids = sorted({*partners.partner_tier, *current, *previous, *flags_now, *flags_before})
    policy = partners.report
    cards = []
    for partner in ids:
        now, before = current.get(partner, {}), previous.get(partner, {})
        raised = tuple(sorted(set(flags_now.get(partner, ()))))
        raised_before = tuple(sorted(set(flags_before.get(partner, ()))))
        score, earned, floored = _score(catalog, partners, partner, now)
        prev_score, prev_earned, _ = _score(catalog, partners, partner, before)
        band = policy.withhold(earned, bool(raised))
        withheld = earned if band != earned else None
        lines = tuple(_line(k, partners, partner, now.get(k.id), before.get(k.id))
                      for k in catalog.kpis)
        cards.append(PartnerCard(
            partner, partners.names.get(partner, partner), partners.tier(partner), lines, score,
            band, floored, prev_score, policy.withhold(prev_earned, bool(raised_before)),
            integrity=raised, previous_integrity=raised_before, withheld_band=withheld,
            band_withheld_by=tuple(map(flag_text, raised)) if withheld is not None else ()))
    generated = datetime.fromtimestamp(generated_ms / 1000, UTC).isoformat(timespec="seconds")
    return Report(month, previous_month(month), catalog.report_timezone, generated, tuple(cards))


# --- where the numbers come from -----------------------------------------------------------
def month_state(engine: Engine, partner_ids: Iterable[str], month: str,
                integrity: RaisedIn | None = None) -> dict[str, Any]:
    """What a worker serves at /api/report: its partners' values for the month and the one before,
    and (``integrity``: the watch's ``lens.raised_in``) the integrity flags raised in each."""
    before = previous_month(month)
    out: dict[str, Any] = {}
    flags: dict[str, dict[str, list[list[str]]]] = {}
    for partner in partner_ids:
        months = {}
        raised = {}
        for name in (month, before):
            values = engine.evaluate_month(partner, name)
            if values:
                months[name] = {k: [v.value, v.samples] for k, v in values.items()}
            found = integrity(partner, name) if integrity is not None else ()
            if found:
                raised[name] = [[kpi, signal] for kpi, signal in found]
        if months:
            out[partner] = months
        if raised:
            flags[partner] = raised
    return {"month": month, "previous_month": before, "timezone": engine.catalog.report_timezone,
            "partners": out, "integrity": flags}


class Fetched(NamedTuple):
    """What the workers serve for a month: values and integrity flags, this month and the last."""

    current: MonthValues
    previous: MonthValues
    integrity: MonthFlags
    previous_integrity: MonthFlags


def fetch(workers: list[str], month: str, partitions: int,
          opener: Callable[[str], bytes] | None = None) -> Fetched:
    """Ask every worker for its partners' month; fail unless together they own every partition."""
    get = opener or _http_get
    current: MonthValues = {}
    previous: MonthValues = {}
    flags_now: MonthFlags = {}
    flags_before: MonthFlags = {}
    covered: set[int] = set()
    before = previous_month(month)
    for base in workers:
        url = f"{base.rstrip('/')}/api/report?month={month}"
        try:
            body = orjson.loads(get(url))
        except (OSError, ValueError) as exc:
            raise ReportError(f"cannot read {url}: {exc}") from None
        if not body.get("ready"):
            raise ReportError(f"{base} is not ready (still recovering its state); try again")
        if body.get("partitions") != partitions:
            raise ReportError(f"{base} has {body.get('partitions')} partitions, expected "
                              f"{partitions}")
        if "integrity" not in body:  # a band withheld on flags must not be paid for want of them
            raise ReportError(f"{base} does not serve integrity flags (an older version?): "
                              "upgrade every worker")
        covered.update(body.get("owned_partitions", []))
        for partner, months in body["partners"].items():
            for name, into in ((month, current), (before, previous)):
                if name in months:
                    into[partner] = {k: (float(v), int(n)) for k, (v, n) in months[name].items()}
        for partner, months in body["integrity"].items():
            for name, flags in ((month, flags_now), (before, flags_before)):
                if months.get(name):
                    flags[partner] = tuple(sorted((str(k), str(s)) for k, s in months[name]))
    missing = sorted(set(range(partitions)) - covered)
    if missing:
        raise ReportError(f"partitions {missing} are owned by none of the workers asked: pass "
                          f"every worker with --worker (a partial report would miss partners)")
    return Fetched(current, previous, flags_now, flags_before)


def _http_get(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            body: bytes = response.read()
            return body
    except urllib.error.HTTPError as exc:  # 503 while recovering still carries the JSON body
        body = exc.read()
        return body


# --- rendering --------------------------------------------------------------------------------
def show(value: float | None, unit: str) -> str:
    """A value for people: durations as 1h 05m, ratios as percentages."""
    if value is None:
        return "-"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "seconds":
        sign, s = ("-" if value < 0 else ""), abs(value)
        if s < 120:
            return f"{sign}{s:.0f}s"
        minutes = round(s / 60)
        if minutes < 120:
            return f"{sign}{minutes}m"
        hours, minutes = divmod(minutes, 60)
        if hours < 48:
            return f"{sign}{hours}h {minutes:02d}m"
        days, hours = divmod(hours, 24)
        return f"{sign}{days}d {hours:02d}h"
    return f"{value:.2f}"


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _change(line: KpiLine) -> str:
    """'-30m better': the value's move since last month (ratios in percentage points)."""
    if line.change is None:
        return "-"
    delta = line.change
    if abs(delta) < 1e-12:
        return "same"
    if line.unit == "ratio":
        text = f"{delta * 100:+.1f} pts"
    else:
        text = ("+" if delta > 0 else "-") + show(abs(delta), line.unit)
    better = (delta < 0) == (line.better == "lower")
    return f"{text} {'better' if better else 'worse'}"


def _floored(card: PartnerCard, most: int = 3) -> str:
    if not card.floored_by:
        return "-"
    shown = ", ".join(card.floored_by[:most])
    more = len(card.floored_by) - most
    return shown + (f" +{more} more" if more > 0 else "")


def _band(band: Band | None) -> str:
    return band.id if band is not None else "-"


def _flags(flags: Iterable[Flag]) -> str:
    """'escalation_rate: threshold_hugging, asa: deadline_bunching', or 'none'."""
    return ", ".join(map(flag_text, flags)) or "none"


def _flagged(card: PartnerCard) -> str:
    """The month's flags, and the band they withheld: 'asa: deadline_bunching (gold withheld)'."""
    held = f" ({card.withheld_band.id} withheld)" if card.withheld_band is not None else ""
    return _flags(card.integrity) + held


def render_json(report: Report) -> str:
    """The whole card as JSON (values in base units)."""
    def card(c: PartnerCard) -> dict[str, Any]:
        out = asdict(c)
        out["lines"] = [{**asdict(line), "change": line.change} for line in c.lines]
        for field in ("integrity", "previous_integrity"):
            out[field] = [{"kpi": kpi, "signal": signal} for kpi, signal in getattr(c, field)]
        out["band_withheld_by"] = list(c.band_withheld_by)
        return out

    body = {"month": report.month, "previous_month": report.previous_month,
            "timezone": report.timezone, "generated_at": report.generated_at,
            "partners": [card(c) for c in report.cards]}
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"


CSV_COLUMNS: Final = (
    "month", "partner", "name", "tier", "kpi", "title", "unit", "value", "samples", "target",
    "attainment", "counted", "weight", "previous_value", "previous_attainment", "change",
    "score", "band", "adjustment", "previous_score", "previous_band",
    "integrity_flags", "previous_integrity_flags", "band_withheld", "band_withheld_by",
)


_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP, CSV injection)."""


def _text(value: str) -> str:
    """A text cell a spreadsheet will not run: a leading ' makes a would-be formula plain text.

    Why: display names, tiers and titles come from configuration and exports that others
    write; ``=HYPERLINK(...)`` in a partner name would otherwise run in the reader's spreadsheet.
    Numbers never pass through here, so a negative change stays a number.
    """
    return "'" + value if value.startswith(_FORMULA_START) else value


def render_csv(report: Report) -> str:
    """One row per partner and KPI, values in base units (for spreadsheets)."""
    out = io.StringIO()
    # RFC 4180's CRLF: the writer quotes a field holding any character of the line terminator,
    # and with "\n" alone a carriage return in a name went out bare and split the row
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)

    def num(x: float | None) -> str:
        return "" if x is None else repr(x)

    def band(b: Band | None) -> str:
        return "" if b is None else _text(b.id)  # empty like a missing number (not "-")

    for c in report.cards:
        for line in c.lines:
            writer.writerow([
                *map(_text, (report.month, c.partner, c.name, c.tier, line.kpi, line.title,
                             line.unit)),
                num(line.value), line.samples, num(line.target), num(line.attainment),
                int(line.counted), num(line.weight), num(line.previous),
                num(line.previous_attainment), num(line.change), num(c.score), band(c.band),
                num(c.band.adjustment if c.band else None), num(c.previous_score),
                band(c.previous_band), _text(_flags(c.integrity)),
                _text(_flags(c.previous_integrity)), band(c.withheld_band),
                _text(", ".join(c.band_withheld_by)),
            ])
    return out.getvalue()


def _columns(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_table(report: Report) -> str:
    """A summary of every partner, then each partner's KPI lines (for a terminal)."""
    out = [f"Partner report card {report.month} ({report.timezone}), "
           f"compared with {report.previous_month}", ""]
    summary = [["partner", "tier", "score", "band", f"{report.previous_month}", "floored by",
                "integrity flags"]]
    for c in report.cards:
        summary.append([c.name, c.tier, _pct(c.score), _band(c.band),
                        f"{_pct(c.previous_score)} {_band(c.previous_band)}",
                        _floored(c), _flagged(c)])
    out += [_columns(summary), ""]
    for c in report.cards:
        out.append(f"{c.name} [{c.partner}] tier {c.tier}: score {_pct(c.score)}, band "
                   f"{c.band.label if c.band else '-'}")
        if c.integrity or c.previous_integrity:
            held = (f" (band {c.withheld_band.id} withheld for them)" if c.withheld_band else "")
            out.append(f"integrity flags {report.month}: {_flags(c.integrity)}{held}; "
                       f"{report.previous_month}: {_flags(c.previous_integrity)}")
        rows = [["kpi", "value", "samples", "target", "of goal", "change"]]
        for line in c.lines:
            if line.value is None and line.previous is None:
                continue
            mark = "" if line.counted else " *"
            rows.append([line.kpi, show(line.value, line.unit) + mark, str(line.samples),
                         show(line.target, line.unit), _pct(line.attainment), _change(line)])
        out += [_columns(rows) if len(rows) > 1 else "  no data this month", ""]
    out.append("* not counted in the score: fewer samples than the KPI's min_samples, or weight 0")
    return "\n".join(out) + "\n"


_CSS: Final = """
body { font: 11pt/1.35 system-ui, sans-serif; color: #111; margin: 2em; }
h1 { font-size: 18pt; margin: 0 0 .2em; } h2 { font-size: 13pt; margin: 1.4em 0 .3em; }
.meta { color: #555; margin-bottom: 1em; }
table { border-collapse: collapse; width: 100%; margin-bottom: .6em; }
th, td { border-bottom: 1px solid #ccc; padding: .25em .5em; text-align: right; }
th:first-child, td:first-child, .left { text-align: left; }
th { background: #eee; } .muted { color: #888; }
.good { color: #0a6b2a; } .bad { color: #a0161b; font-weight: 600; }
.flag { color: #7a3e00; font-weight: 600; }
section { break-inside: avoid; page-break-inside: avoid; }
@media print { body { margin: 0; } section { break-before: auto; } a { color: inherit; } }
@page { size: A4 landscape; margin: 12mm; }
"""


def render_html(report: Report) -> str:
    """One self-contained HTML file (no scripts, no external resources) that prints well."""
    e = html.escape

    def cls(att: float | None) -> str:
        if att is None:
            return "muted"
        return "good" if att >= 1 else "bad"

    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Partner report card {e(report.month)}</title>",
        f"<style>{_CSS}</style></head><body>",
        f"<h1>Partner report card {e(report.month)}</h1>",
        f'<div class="meta">Calendar month in {e(report.timezone)}, compared with '
        f"{e(report.previous_month)}. Generated {e(report.generated_at)} from the pipeline's "
        "state.</div>",
        "<section><h2>Summary</h2><table><thead><tr><th>Partner</th><th>Tier</th><th>Score</th>"
        f"<th>Band</th><th>{e(report.previous_month)}</th><th>Floored by</th>"
        "<th>Integrity flags</th></tr></thead><tbody>",
    ]
    for c in report.cards:
        parts.append(
            f'<tr><td><a href="#p-{e(c.partner)}">{e(c.name)}</a></td><td>{e(c.tier)}</td>'
            f'<td class="{cls(c.score)}">{_pct(c.score)}</td>'
            f"<td>{e(c.band.label) if c.band else '-'}</td>"
            f"<td>{_pct(c.previous_score)} {e(_band(c.previous_band))}</td>"
            f"<td>{e(_floored(c))}</td>"
            f'<td class="{"flag" if c.integrity else "muted"}">{e(_flagged(c))}</td></tr>')
    parts.append("</tbody></table></section>")
    for c in report.cards:
        parts.append(f'<section id="p-{e(c.partner)}"><h2>{e(c.name)} <span class="muted">'
                     f"({e(c.partner)}, tier {e(c.tier)})</span></h2>")
        if c.integrity or c.previous_integrity:
            held = (f" (band <strong>{e(c.withheld_band.label)}</strong> withheld for them)"
                    if c.withheld_band else "")
            parts.append(
                f'<p class="integrity">Integrity flags this month: <span class="flag">'
                f"{e(_flags(c.integrity))}</span>{held}; {e(report.previous_month)}: "
                f"{e(_flags(c.previous_integrity))}.</p>")
        shown = [line for line in c.lines if line.value is not None or line.previous is not None]
        if not shown:
            parts.append("<p class=\"muted\">No data this month.</p></section>")
            continue
        parts.append(
            f"<p>Score {_pct(c.score)}: <strong>{e(c.band.label) if c.band else 'no band'}"
            f"</strong>{'; below the floor: ' + e(', '.join(c.floored_by)) if c.floored_by else ''}"
            ".</p><table><thead><tr><th>KPI</th><th>Value</th><th>Samples</th><th>Target</th>"
            "<th>Of goal</th><th>Change</th></tr></thead><tbody>")
        for line in shown:
            note = "" if line.counted else ' <span class="muted">(not counted)</span>'
            parts.append(
                f"<tr><td>{e(line.title)}</td><td>{e(show(line.value, line.unit))}{note}</td>"
                f"<td>{line.samples}</td><td>{e(show(line.target, line.unit))}</td>"
                f'<td class="{cls(line.attainment)}">{_pct(line.attainment)}</td>'
                f"<td>{e(_change(line))}</td></tr>")
        parts.append("</tbody></table></section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


RENDERERS: Final[dict[str, Callable[[Report], str]]] = {
    "table": render_table, "csv": render_csv, "html": render_html, "json": render_json,
}
