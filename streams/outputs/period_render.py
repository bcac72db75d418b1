"""The year or quarter card rendered: a terminal table, CSV, JSON and one self-contained printable
HTML file with a sparkline per KPI row (:mod:`streams.outputs.period` makes the card)."""

from __future__ import annotations

import csv
import html
import io
from collections.abc import Callable
from dataclasses import asdict
from typing import Final

import orjson

from streams.outputs.charts import sparkline_svg
from streams.outputs.period import PeriodCard, PeriodLine, PeriodReport
from streams.outputs.report_render import CSS, columns, csv_text, show

TREND: Final = {"up": "▲", "down": "▼", "": "="}
"""Trend marks: improving, worsening, steady (or too few months to say)."""


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{value * 100:.0f}%"


def _month_label(month: str) -> str:
    """'Jan' for '2026-01'."""
    return ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
            "Dec")[int(month[5:7]) - 1]


def _shown(card: PeriodCard) -> list[PeriodLine]:
    return [line for line in card.lines
            if line.value is not None or any(c.value is not None for c in line.months)]


def render_period_json(report: PeriodReport) -> str:
    """The whole period card as JSON (values in base units; the monthly cards left out: ask
    ``report --month`` for any of them)."""
    body = {
        "period": report.period, "months": list(report.months), "timezone": report.timezone,
        "generated_at": report.generated_at, "bands": list(report.band_ids),
        "band_counts": [dict(c) for c in report.band_counts],
        "programme": [asdict(p) for p in report.programme],
        "partners": [asdict(c) for c in report.cards],
    }
    return orjson.dumps(body, option=orjson.OPT_INDENT_2).decode() + "\n"


PERIOD_CSV_COLUMNS: Final = (
    "period", "partner", "name", "tier", "kpi", "title", "unit", "month", "value", "samples",
    "target", "attainment", "counted", "band", "trend",
)
"""One row per partner, KPI and month, then a row with month = the period (its merged value)."""


def render_period_csv(report: PeriodReport) -> str:
    """One row per partner, KPI and month, and one for the period (month column = the period)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(PERIOD_CSV_COLUMNS)

    def num(x: float | None) -> str:
        return "" if x is None else repr(x)

    for c in report.cards:
        head = [csv_text(report.period), csv_text(c.partner), csv_text(c.name), csv_text(c.tier)]
        for line in c.lines:
            kpi = [csv_text(line.kpi), csv_text(line.title), csv_text(line.unit)]
            for i, cell in enumerate(line.months):
                writer.writerow([*head, *kpi, cell.month, num(cell.value), cell.samples,
                                 num(cell.target), num(cell.attainment), int(cell.counted),
                                 csv_text(c.bands[i] or ""), ""])
            writer.writerow([*head, *kpi, csv_text(report.period), num(line.value), line.samples,
                             num(line.target), num(line.attainment), int(not line.not_measured),
                             "", line.trend])
    return out.getvalue()


def render_period_table(report: PeriodReport) -> str:
    """The programme's rows, then each partner's KPIs as % of goal month by month (terminal)."""
    labels = [_month_label(m) for m in report.months]
    out = [f"Partner card {report.period} ({report.timezone}): % of goal per month, and the "
           f"period's own value", ""]
    rows = [["band", *labels]]
    for band in report.band_ids:
        rows.append([band, *(str(c.get(band, 0)) for c in report.band_counts)])
    rows.append(["partners on target, by KPI", *[""] * len(labels)])
    for p in report.programme:
        if any(x is not None for x in p.on_target):
            rows.append([f"  {p.kpi}", *(_pct(x) for x in p.on_target)])
    out += [columns(rows), ""]
    for c in report.cards:
        out.append(f"{c.name} [{c.partner}] tier {c.tier}")
        rows = [["kpi", *labels, report.period, "value", "trend"]]
        for line in _shown(c):
            rows.append([line.kpi, *(_pct(cell.attainment) + ("" if cell.counted else "*")
                                     if cell.value is not None else "-" for cell in line.months),
                         _pct(line.attainment) + ("*" if line.not_measured else ""),
                         show(line.value, line.unit), TREND[line.trend]])
        rows.append(["band", *(b or "-" for b in c.bands), "", "", ""])
        out += [columns(rows), ""]
    out.append("* not counted (not measured, or weight 0: see the month's card); "
               "▲ improving, ▼ worsening, = steady or fewer than 3 months")
    return "\n".join(out) + "\n"


def render_period_html(report: PeriodReport) -> str:
    """One self-contained HTML file (no scripts, no external resources) that prints well."""
    e = html.escape
    labels = [_month_label(m) for m in report.months]

    def cls(att: float | None, counted: bool = True) -> str:
        if att is None or not counted:
            return "muted"
        return "good" if att >= 1 else "bad"

    heads = "".join(f"<th>{e(x)}</th>" for x in labels)
    parts = [
        "<!doctype html>", '<html lang="en"><head><meta charset="utf-8">',
        f"<title>Partner card {e(report.period)}</title>",
        f"<style>{CSS} svg {{ vertical-align: middle; }} .spark .ok {{ fill: #0a6b2a; }} "
        ".spark .miss { fill: #a0161b; } .spark polyline { stroke: #333; fill: none; } "
        ".spark line { stroke: #999; stroke-dasharray: 2 2; }</style></head><body>",
        f"<h1>Partner card {e(report.period)}</h1>",
        f'<div class="meta">Calendar months in {e(report.timezone)}; each month scored with the '
        f"terms in force in it; the period's value from its months' samples together. Generated "
        f"{e(report.generated_at)} from the pipeline's state.</div>",
        "<section><h2>Programme</h2><table><thead><tr><th>Band</th>" + heads
        + "</tr></thead><tbody>",
    ]
    for band in report.band_ids:
        parts.append(f"<tr><td>{e(band)}</td>" + "".join(
            f"<td>{c.get(band, 0)}</td>" for c in report.band_counts) + "</tr>")
    parts.append("</tbody></table><table><thead><tr><th>Partners on target</th>" + heads
                 + f"<th>{e(report.period)}</th></tr></thead><tbody>")
    for p in report.programme:
        if any(x is not None for x in p.on_target):
            parts.append(f"<tr><td>{e(p.title)}</td>" + "".join(
                f"<td>{_pct(x)}</td>" for x in p.on_target)
                + f"<td>{_pct(p.period_on_target)}</td></tr>")
    parts.append("</tbody></table></section>")
    for c in report.cards:
        parts.append(f'<section id="p-{e(c.partner)}"><h2>{e(c.name)} <span class="muted">'
                     f"({e(c.partner)}, tier {e(c.tier)})</span></h2>")
        lines = _shown(c)
        if not lines:
            parts.append('<p class="muted">No data in the period.</p></section>')
            continue
        parts.append("<table><thead><tr><th>KPI</th>" + heads
                     + f"<th>{e(report.period)}</th><th>Value</th><th>Trend</th><th></th>"
                     "</tr></thead><tbody>")
        for line in lines:
            cells = "".join(
                f'<td class="{cls(cell.attainment, cell.counted)}" title="'
                f'{e(show(cell.value, line.unit))} ({cell.samples})">{_pct(cell.attainment)}</td>'
                for cell in line.months)
            spark = sparkline_svg([cell.attainment if cell.counted else None
                                   for cell in line.months], target=1.0,
                                  title=f"{line.title}: % of goal by month")
            parts.append(
                f"<tr><td>{e(line.title)}</td>{cells}"
                f'<td class="{cls(line.attainment, not line.not_measured)}">'
                f"<strong>{_pct(line.attainment)}</strong></td>"
                f"<td>{e(show(line.value, line.unit))}</td><td>{TREND[line.trend]}</td>"
                f'<td class="spark">{spark}</td></tr>')
        parts.append("<tr><td>Band</td>" + "".join(f"<td>{e(b or '-')}</td>" for b in c.bands)
                     + "<td></td><td></td><td></td><td></td></tr></tbody></table>")
        if c.integrity:
            flagged = "; ".join(f"{m}: " + ", ".join(f"{k}: {s}" for k, s in flags)
                                for m, flags in c.integrity)
            parts.append(f'<p class="flag">Integrity flags: {e(flagged)}</p>')
        parts.append("</section>")
    parts.append("</body></html>")
    return "\n".join(parts) + "\n"


PERIOD_RENDERERS: Final[dict[str, Callable[[PeriodReport], str]]] = {
    "table": render_period_table, "csv": render_period_csv, "html": render_period_html,
    "json": render_period_json,
}
