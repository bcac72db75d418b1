"""The report card rendered: a terminal table, CSV (spreadsheet formulas neutralised), JSON, and one
self-contained printable HTML file (:mod:`streams.outputs.report` makes the card)."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable, Iterable
from dataclasses import asdict
from datetime import UTC, datetime
from typing import Any, Final

import orjson

from streams.config.catalog import Band
from streams.outputs.charts import ChartPoint, funnel_svg
from streams.outputs.report import Flag, KpiLine, PartnerCard, Report, flag_text


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


def _of_goal(line: KpiLine) -> str:
    """The attainment shown: '120%+' at the cap (the score counts no more), '-' unmeasured."""
    if line.not_measured and line.value is not None and line.samples > 0:
        return "not measured"
    text = _pct(line.attainment)
    return text + "+" if line.capped else text


def _terms(card: PartnerCard) -> str:
    """'tier premier since 2026-07; report policy since 2026-01', '' when nothing is dated."""
    parts = []
    if card.tier_since:
        parts.append(f"tier {card.tier} since {card.tier_since}")
    if card.policy_since:
        parts.append(f"report policy since {card.policy_since}")
    return "; ".join(parts)


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


def _projection(card: PartnerCard) -> str:
    """'month end: gold 72%, standard 25%, watch 3% (41% of the month gone); 3 more
    escalation_rate misses drop the band earned so far', '' for a past month."""
    p = card.projection
    if p is None:
        return ""
    odds = ", ".join(f"{band or 'no band'} {share * 100:.0f}%"
                     for band, share in list(p.probabilities.items())[:4])
    text = f"month end: {odds} ({p.elapsed * 100:.0f}% of the month gone)"
    if p.slack_kpi is not None:
        text += ("; " + (f"{p.slack_misses} more {p.slack_kpi} misses drop the band earned so far"
                         if p.slack_misses is not None else
                         f"no number of {p.slack_kpi} misses drops the band earned so far"))
    return text


def _units(card: PartnerCard) -> Callable[[str], str]:
    units = {line.kpi: line.unit for line in card.lines}
    return lambda kpi: units.get(kpi, "")


def _closing(card: PartnerCard, unit_of: Callable[[str], str]) -> list[str]:
    """'closed 2026-11-05 12:00 UTC, digest 3f2a...; ' and one line per restatement."""
    c = card.closing
    if c is None:
        return []
    at = datetime.fromtimestamp(c.closed_at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
    out = [f"{c.status}: frozen {at}, sha256 {c.digest}"]
    for r in c.restatements:
        when = datetime.fromtimestamp(r.at_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")
        unit = unit_of(r.kpi)
        out.append(f"restated {when}: {r.kpi} {show(r.old_value, unit)} ({r.old_samples}) -> "
                   f"{show(r.new_value, unit)} ({r.new_samples})")
    return out


def _rank(card: PartnerCard) -> str:
    """'3 (raw 1)': the place by the fair score, and by the raw score when it differs."""
    if card.rank is None:
        return "-"
    if card.raw_rank is not None and card.raw_rank != card.rank:
        return f"{card.rank} (raw {card.raw_rank})"
    return str(card.rank)


def _band(band: Band | None) -> str:
    return band.id if band is not None else "-"


def _flags(flags: Iterable[Flag]) -> str:
    """'escalation_rate: threshold_hugging, asa: deadline_bunching', or 'none'."""
    return ", ".join(map(flag_text, flags)) or "none"


def _flagged(card: PartnerCard) -> str:
    """The month's flags, and the band they withheld: 'asa: deadline_bunching (gold withheld)'."""
    held = f" ({card.withheld_band.id} withheld)" if card.withheld_band is not None else ""
    return _flags(card.integrity) + held


ChannelRow = tuple[str, str, str, list[tuple[float, int] | None]]
"""(kpi id, title, unit, per channel (value, samples) or None)"""


def _channel_grid(card: PartnerCard) -> tuple[list[str], list[ChannelRow]] | None:
    """The card's per-channel values as (channels, rows): a row per KPI, a column per channel
    with data (in first-seen, catalog order); None without any."""
    if not card.channels:
        return None
    channels = list(dict.fromkeys(line.channel for line in card.channels))
    rows: dict[str, ChannelRow] = {}
    for line in card.channels:
        row = rows.setdefault(line.kpi, (line.kpi, line.title, line.unit, [None] * len(channels)))
        row[3][channels.index(line.channel)] = (line.value, line.samples)
    return channels, list(rows.values())


def render_json(report: Report) -> str:
    """The whole card as JSON (values in base units)."""
    def card(c: PartnerCard) -> dict[str, Any]:
        out = asdict(c)
        out["lines"] = [{**asdict(line), "change": line.change} for line in c.lines]
        for field in ("integrity", "previous_integrity"):
            out[field] = [{"kpi": kpi, "signal": signal} for kpi, signal in getattr(c, field)]
        out["band_withheld_by"] = list(c.band_withheld_by)
        out["status"] = c.status
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
    "capped", "not_measured", "target_source", "tier_since", "policy_since",
    "shrunk_value", "shrunk_attainment", "fair_score", "rank", "raw_rank", "status",
    "digest", "evidence",
)


_FORMULA_START: Final = ("=", "+", "-", "@", "\t", "\r")
"""What makes a spreadsheet read a cell as a formula (OWASP, CSV injection)."""


def csv_text(value: str) -> str:
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
        return "" if b is None else csv_text(b.id)  # empty like a missing number (not "-")

    for c in report.cards:
        for line in c.lines:
            writer.writerow([
                *map(csv_text, (report.month, c.partner, c.name, c.tier, line.kpi, line.title,
                             line.unit)),
                num(line.value), line.samples, num(line.target), num(line.attainment),
                int(line.counted), num(line.weight), num(line.previous),
                num(line.previous_attainment), num(line.change), num(c.score), band(c.band),
                num(c.band.adjustment if c.band else None), num(c.previous_score),
                band(c.previous_band), csv_text(_flags(c.integrity)),
                csv_text(_flags(c.previous_integrity)), band(c.withheld_band),
                csv_text(", ".join(c.band_withheld_by)), int(line.capped), csv_text(line.not_measured),
                csv_text(line.target_source), c.tier_since or "", c.policy_since or "",
                num(line.shrunk), num(line.shrunk_attainment), num(c.fair_score),
                c.rank or "", c.raw_rank or "", c.status,
                c.closing.digest if c.closing is not None else "",
                csv_text(" ".join(line.evidence)),
            ])
    return out.getvalue()


def columns(rows: list[list[str]]) -> str:
    """Rows as aligned text columns, a dashed rule under the header."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def render_table(report: Report) -> str:
    """A summary of every partner, then each partner's KPI lines (for a terminal)."""
    out = [f"Partner report card {report.month} ({report.timezone}), "
           f"compared with {report.previous_month}", ""]
    summary = [["partner", "tier", "month", "score", "band", "fair score", "rank",
                f"{report.previous_month}", "floored by", "integrity flags"]]
    for c in report.cards:
        summary.append([c.name, c.tier, c.status, _pct(c.score), _band(c.band),
                        _pct(c.fair_score), _rank(c),
                        f"{_pct(c.previous_score)} {_band(c.previous_band)}",
                        _floored(c), _flagged(c)])
    out += [columns(summary), ""]
    for c in report.cards:
        out.append(f"{c.name} [{c.partner}] tier {c.tier}: score {_pct(c.score)}, band "
                   f"{c.band.label if c.band else '-'}")
        if _terms(c):
            out.append(f"terms: {_terms(c)}")
        if c.projection is not None:
            out.append(_projection(c))
        out += _closing(c, _units(c))
        if c.integrity or c.previous_integrity:
            held = (f" (band {c.withheld_band.id} withheld for them)" if c.withheld_band else "")
            out.append(f"integrity flags {report.month}: {_flags(c.integrity)}{held}; "
                       f"{report.previous_month}: {_flags(c.previous_integrity)}")
        rows = [["kpi", "value", "samples", "target", "target from", "of goal", "change"]]
        why = []
        for line in c.lines:
            if line.value is None and line.previous is None:
                continue
            mark = "" if line.counted else " *"
            rows.append([line.kpi, show(line.value, line.unit) + mark, str(line.samples),
                         show(line.target, line.unit), line.target_source, _of_goal(line),
                         _change(line)])
            if line.not_measured and line.value is not None:
                why.append(f"  * {line.kpi}: not measured: {line.not_measured}")
        out += [columns(rows) if len(rows) > 1 else "  no data this month", *why, ""]
        grid = _channel_grid(c)
        if grid:
            channels = grid[0]
            rows = [["by channel", *channels]]
            rows += [[kpi, *(show(cell[0], unit) + f" ({cell[1]})" if cell else "-"
                             for cell in cells)]
                     for kpi, _, unit, cells in grid[1]]
            out += [columns(rows), ""]
    out.append("* not counted in the score: not measured (the reason is under the table), or "
               "weight 0; '120%+': attainment at the policy's cap, which is all the score counts")
    out.append("fair score: the score with each KPI's month shrunk toward the fleet's for its "
               "volume (README: a fair league table); rank is by it")
    return "\n".join(out) + "\n"


CSS: Final = """
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
figure.funnel { display: inline-block; margin: .4em 1em .4em 0; }
figure.funnel figcaption { font-size: 9pt; color: #555; max-width: 480px; }
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
        f"<style>{CSS}</style></head><body>",
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
    parts += _league_html(report)
    for c in report.cards:
        parts.append(f'<section id="p-{e(c.partner)}"><h2>{e(c.name)} <span class="muted">'
                     f"({e(c.partner)}, tier {e(c.tier)})</span></h2>")
        if _terms(c):
            parts.append(f'<p class="terms muted">Terms in force: {e(_terms(c))}.</p>')
        if c.projection is not None:
            parts.append(f'<p class="projection">Forecast for the {e(_projection(c))}.</p>')
        closing = _closing(c, _units(c))
        if closing:
            parts.append(f'<p class="closing">{e(closing[0])}</p>')
            if closing[1:]:
                parts.append('<ul class="restatements">' + "".join(
                    f"<li>{e(x)}</li>" for x in closing[1:]) + "</ul>")
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
            why = f"not counted: {line.not_measured}" if line.not_measured else "not counted"
            note = "" if line.counted else f' <span class="muted">({e(why)})</span>'
            measured = not (line.not_measured and line.samples > 0)
            behind = ("" if not line.evidence else
                      f'<details><summary>{len(line.evidence)} misses</summary>'
                      f'<span class="muted">{e(", ".join(line.evidence))}</span></details>')
            parts.append(
                f"<tr><td>{e(line.title)}{behind}</td>"
                f"<td>{e(show(line.value, line.unit))}{note}</td>"
                f"<td>{line.samples}</td><td>{e(show(line.target, line.unit))}"
                f' <span class="muted">({e(line.target_source)})</span></td>'
                f'<td class="{cls(line.attainment) if measured else "muted"}">'
                f"{e(_of_goal(line))}</td><td>{e(_change(line))}</td></tr>")
        parts.append("</tbody></table>")
        grid = _channel_grid(c)
        if grid:
            channels, rows = grid
            parts.append('<table class="channels"><thead><tr><th>By channel</th>'
                         + "".join(f"<th>{e(ch)}</th>" for ch in channels)
                         + "</tr></thead><tbody>")
            for _, title, unit, cells in rows:
                parts.append(f"<tr><td>{e(title)}</td>" + "".join(
                    f"<td>{e(show(cell[0], unit))} <span class=\"muted\">({cell[1]})</span></td>"
                    if cell else '<td class="muted">-</td>' for cell in cells) + "</tr>")
            parts.append("</tbody></table>")
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


def _league_html(report: Report) -> list[str]:
    """The league table by fair score, then a funnel plot per KPI."""
    e = html.escape
    ranked = sorted((c for c in report.cards if c.rank is not None), key=lambda c: c.rank or 0)
    if not ranked:
        return []
    parts = ['<section class="league"><h2>League table</h2><p class="muted">Ranked by the fair '
             "score: each KPI's month shrunk toward the fleet's by as much as the partner's "
             "volume leaves room for, so a small partner is above or below the fleet only when "
             "its evidence says so.</p><table><thead><tr><th>Rank</th><th>Partner</th>"
             "<th>Fair score</th><th>Score</th><th>Rank by score</th></tr></thead><tbody>"]
    for c in ranked:
        parts.append(f"<tr><td>{c.rank}</td><td>{e(c.name)}</td><td>{_pct(c.fair_score)}</td>"
                     f"<td>{_pct(c.score)}</td><td>{c.raw_rank or '-'}</td></tr>")
    parts.append("</tbody></table>")
    for f in report.funnels:
        points = [ChartPoint(p.partner, p.samples, p.value,
                             "out998" if p.outside_998 else "out95" if p.outside_95 else "in")
                  for p in f.funnel.points]
        unit = f.unit

        def fmt(value: float, unit: str = unit) -> str:
            return show(value, unit)

        parts.append(f'<figure class="funnel"><figcaption>{e(f.title)}: partners against their '
                     "volume, inside the fleet's 95% and 99.8% limits</figcaption>"
                     + funnel_svg(points, f.funnel.centre, f.funnel.limits,
                                  title=f"{f.title} funnel plot", fmt=fmt,
                                  y_label=f.title) + "</figure>")
    parts.append("</section>")
    return parts


RENDERERS: Final[dict[str, Callable[[Report], str]]] = {
    "table": render_table, "csv": render_csv, "html": render_html, "json": render_json,
}
