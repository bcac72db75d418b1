"""Small inline SVG charts for the printable report card: a KPI's sparkline and the fleet's funnel plot.

Pure functions from numbers to SVG strings: no script, no external asset, no import from the rest
of the package (the funnel takes the league's numbers as :class:`ChartPoint` and a limits
callable, so this module does not depend on :mod:`streams.judgement.league`). The card is printed
and mailed, so a chart must draw the same in any browser and on paper: every shape carries its
colour as a presentation attribute as well as a class (a page's CSS may restyle it; without CSS
it still reads). Every number in an attribute is rounded to one decimal place (a tenth of a pixel
is below what a printer resolves, and it keeps the card small and its diffs readable), and every
piece of text is escaped.
"""

from __future__ import annotations

import html
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Final

SVG_NS: Final = "http://www.w3.org/2000/svg"

SPARK_PAD: Final = 2.0
"""Pixels kept free inside each edge of a sparkline, so the end dot and the line are not clipped."""

FUNNEL_MARGIN: Final = (56.0, 12.0, 12.0, 40.0)
"""Left, right, top, bottom margins of the funnel's plot area (room for tick labels and axis titles)."""

FUNNEL_CURVE_POINTS: Final = 40
"""Volumes the limit curves are evaluated at, spread on a log scale (a funnel narrows fastest at
small volumes, so that is where the curve needs its points)."""

STATES: Final = ("in", "out95", "out998")
STATE_FILL: Final = {"in": "#5b7290", "out95": "#d99a00", "out998": "#c62828"}
"""A funnel point's colour by state: muted inside the limits, amber outside 95%, red outside 99.8%."""

_OK, _MISS, _INK, _GRID = "#2e7d32", "#c62828", "#333333", "#888888"


@dataclass(frozen=True, slots=True)
class ChartPoint:
    """One partner on the funnel plot: ``x`` its volume, ``y`` its value, ``state`` one of :data:`STATES`."""

    label: str
    x: float
    y: float
    state: str

    def __post_init__(self) -> None:
        if self.state not in STATES:
            raise ValueError(f"chart point state must be one of {STATES}, got {self.state!r}")


def _f(value: float) -> str:
    """A number for an attribute: one decimal place (and no ``-0.0``)."""
    text = f"{value:.1f}"
    return "0.0" if text == "-0.0" else text


def _esc(text: str) -> str:
    return html.escape(text, quote=True)


def _short(value: float) -> str:
    return f"{value:.3g}"


def _open_svg(width: float, height: float, title: str, css_class: str) -> list[str]:
    return [
        f'<svg xmlns="{SVG_NS}" class="{css_class}" width="{_f(width)}" height="{_f(height)}" '
        f'viewBox="0.0 0.0 {_f(width)} {_f(height)}" role="img" aria-label="{_esc(title)}">',
        f"<title>{_esc(title)}</title>",
    ]


# --- sparkline -------------------------------------------------------------------------------------


def sparkline_svg(
    values: Sequence[float | None],
    *,
    width: int = 120,
    height: int = 24,
    target: float | None = None,
    lower_is_better: bool = False,
    title: str = "",
) -> str:
    """A KPI's recent values as a small inline ``<svg>`` line.

    Value ``i`` of ``m`` sits at ``x = PAD + i (width - 2 PAD) / (m - 1)`` (the middle when ``m`` is 1),
    and at ``y = PAD + (hi - v) / (hi - lo) (height - 2 PAD)`` with ``lo``/``hi`` the least and
    greatest of the values and the target (the middle when they are equal): higher values are
    drawn higher. ``None`` (or a non-finite value: a month without data) is a gap: the line breaks
    there, one ``<polyline>`` per run of values (a lone value between gaps gets a small dot too, as
    a one-vertex line draws nothing). The target, if any, is a dashed horizontal line; the last
    value is marked with a dot, classed ``ok`` or ``miss`` against the target (``lower_is_better``
    says which side passes) so the reader sees at a glance where the month ended.
    """
    pad = SPARK_PAD
    slots = len(values)
    finite = [v for v in values if v is not None and math.isfinite(v)]
    lo_hi = [*finite, *([target] if target is not None and math.isfinite(target) else [])]
    lo, hi = (min(lo_hi), max(lo_hi)) if lo_hi else (0.0, 0.0)

    def x_of(i: int) -> float:
        return width / 2 if slots == 1 else pad + i * (width - 2 * pad) / (slots - 1)

    def y_of(v: float) -> float:
        return height / 2 if hi == lo else pad + (hi - v) / (hi - lo) * (height - 2 * pad)

    out = _open_svg(width, height, title, "spark")
    if target is not None and math.isfinite(target):
        y = _f(y_of(target))
        out.append(f'<line class="spark-target" x1="{_f(0.0)}" y1="{y}" x2="{_f(width)}" y2="{y}" '
                   f'stroke="{_GRID}" stroke-width="1.0" stroke-dasharray="2.0 2.0"/>')
    runs: list[list[tuple[float, float]]] = [[]]
    for i, v in enumerate(values):
        if v is None or not math.isfinite(v):
            if runs[-1]:
                runs.append([])
            continue
        runs[-1].append((x_of(i), y_of(v)))
    for run in (r for r in runs if r):
        pts = " ".join(f"{_f(x)},{_f(y)}" for x, y in run)
        out.append(f'<polyline class="spark-line" points="{pts}" fill="none" stroke="{_INK}" '
                   f'stroke-width="1.2" stroke-linejoin="round" stroke-linecap="round"/>')
        if len(run) == 1:
            out.append(f'<circle class="spark-point" cx="{_f(run[0][0])}" cy="{_f(run[0][1])}" r="1.0" '
                       f'fill="{_INK}"/>')
    last = next((i for i in range(slots - 1, -1, -1) if (v := values[i]) is not None and math.isfinite(v)),
                None)
    if last is not None:
        v = values[last]
        assert v is not None
        css, fill = "spark-last", _INK
        if target is not None and math.isfinite(target):
            ok = v <= target if lower_is_better else v >= target
            css, fill = ("spark-last ok", _OK) if ok else ("spark-last miss", _MISS)
        out.append(f'<circle class="{css}" cx="{_f(x_of(last))}" cy="{_f(y_of(v))}" r="{_f(pad)}" '
                   f'fill="{fill}"/>')
    out.append("</svg>")
    return "".join(out)


# --- funnel plot -----------------------------------------------------------------------------------


def funnel_svg(
    points: Sequence[ChartPoint],
    centre: float,
    limits: Callable[[int, float], tuple[float, float]],
    *,
    width: int = 480,
    height: int = 300,
    x_label: str = "samples",
    y_label: str = "",
    log_x: bool = True,
    title: str = "",
    fmt: Callable[[float], str] = _short,
) -> str:
    """The fleet's funnel plot: each partner's value against its volume, inside the control limits.

    ``limits(samples, coverage)`` gives the (lower, upper) limits at a volume (the league's
    ``Funnel.limits``); the 95% and 99.8% curves are evaluated at :data:`FUNNEL_CURVE_POINTS`
    volumes spread on a log scale between the smallest and largest ``x`` (rounded to whole
    samples; non-finite limits are skipped). ``fmt`` writes values for people (tick labels, the
    points' titles): pass a percentage formatter for a ratio KPI.

    Geometry, inside the margins of :data:`FUNNEL_MARGIN`: ``x`` maps linearly (of ``log10 x``
    when ``log_x``) from the smallest to the largest point's ``x`` (the middle when they are
    equal); ``y`` from ``lo - 5% span`` (bottom) to ``hi + 5% span`` (top), where ``lo``/``hi`` are
    the least and greatest of the points' values, the centre and the drawn limits (a span of 0
    is widened by 0.5 either side). ``log_x`` needs every ``x`` > 0.
    """
    title = title or "funnel plot"
    out = _open_svg(width, height, title, "funnel")
    if not points:
        out.append(f'<text x="{_f(width / 2)}" y="{_f(height / 2)}" text-anchor="middle" '
                   f'fill="{_INK}">no data</text></svg>')
        return "".join(out)
    if log_x and min(p.x for p in points) <= 0.0:
        raise ValueError("a log x axis needs every point's x > 0")
    left, right, top, bottom = FUNNEL_MARGIN
    plot_w, plot_h = width - left - right, height - top - bottom
    x_min, x_max = min(p.x for p in points), max(p.x for p in points)
    curves = _limit_curves(limits, x_min, x_max)
    ys = [p.y for p in points if math.isfinite(p.y)] + [centre]
    ys += [v for curve in curves.values() for _, lo_hi in curve for v in lo_hi]
    y_lo, y_hi = min(ys), max(ys)
    span = y_hi - y_lo
    y_lo, y_hi = (y_lo - 0.05 * span, y_hi + 0.05 * span) if span > 0.0 else (y_lo - 0.5, y_hi + 0.5)

    tx = math.log10 if log_x else float
    t_min, t_max = tx(x_min), tx(x_max)

    def px(x: float) -> float:
        return left + plot_w / 2 if t_max == t_min else left + (tx(x) - t_min) / (t_max - t_min) * plot_w

    def py(y: float) -> float:
        return top + (y_hi - y) / (y_hi - y_lo) * plot_h

    out.extend(_axes(left, top, plot_w, plot_h, x_min, x_max, y_lo, y_hi, log_x, px, py, fmt,
                     x_label, y_label))
    out.append(f'<line class="centre" x1="{_f(left)}" y1="{_f(py(centre))}" x2="{_f(left + plot_w)}" '
               f'y2="{_f(py(centre))}" stroke="{_INK}" stroke-width="1.0"/>')
    for coverage, dash in ((0.95, "4.0 3.0"), (0.998, "1.5 2.5")):
        css = "limit95" if coverage == 0.95 else "limit998"
        for side in (0, 1):
            pts = " ".join(f"{_f(px(n))},{_f(py(lo_hi[side]))}" for n, lo_hi in curves[coverage])
            if pts:
                out.append(f'<polyline class="{css}" points="{pts}" fill="none" stroke="{_GRID}" '
                           f'stroke-width="1.0" stroke-dasharray="{dash}"/>')
    for p in points:
        if not math.isfinite(p.y):
            continue
        label = f"{p.label}: {fmt(p.y)} ({p.x:g} {x_label})"
        out.append(f'<circle class="pt {p.state}" cx="{_f(px(p.x))}" cy="{_f(py(p.y))}" r="3.5" '
                   f'fill="{STATE_FILL[p.state]}" fill-opacity="0.8"><title>{_esc(label)}</title></circle>')
    out.append("</svg>")
    return "".join(out)


def _limit_curves(limits: Callable[[int, float], tuple[float, float]], x_min: float, x_max: float
                  ) -> dict[float, list[tuple[int, tuple[float, float]]]]:
    """(volume, (lower, upper)) along each coverage's curve, at log-spaced whole volumes."""
    lo, hi = math.log(max(x_min, 1.0)), math.log(max(x_max, 1.0))
    steps = FUNNEL_CURVE_POINTS - 1
    volumes = sorted({max(1, round(math.exp(lo + (hi - lo) * i / steps))) for i in range(steps + 1)})
    curves: dict[float, list[tuple[int, tuple[float, float]]]] = {}
    for coverage in (0.95, 0.998):
        curve = [(n, limits(n, coverage)) for n in volumes]
        curves[coverage] = [(n, b) for n, b in curve if math.isfinite(b[0]) and math.isfinite(b[1])]
    return curves


def _axes(left: float, top: float, plot_w: float, plot_h: float, x_min: float, x_max: float,
          y_lo: float, y_hi: float, log_x: bool, px: Callable[[float], float],
          py: Callable[[float], float], fmt: Callable[[float], str], x_label: str, y_label: str
          ) -> list[str]:
    """Axis lines, ticks with labels, and the axis titles."""
    base = top + plot_h
    out = [
        f'<line class="axis" x1="{_f(left)}" y1="{_f(base)}" x2="{_f(left + plot_w)}" y2="{_f(base)}" '
        f'stroke="{_INK}" stroke-width="1.0"/>',
        f'<line class="axis" x1="{_f(left)}" y1="{_f(top)}" x2="{_f(left)}" y2="{_f(base)}" '
        f'stroke="{_INK}" stroke-width="1.0"/>',
    ]
    x_ticks = _log_ticks(x_min, x_max) if log_x else _nice_ticks(x_min, x_max)
    for t in x_ticks:
        x = _f(px(t))
        out.append(f'<line class="tick" x1="{x}" y1="{_f(base)}" x2="{x}" y2="{_f(base + 4)}" '
                   f'stroke="{_INK}" stroke-width="1.0"/>')
        out.append(f'<text class="tick-label" x="{x}" y="{_f(base + 15)}" text-anchor="middle" '
                   f'font-size="10.0" fill="{_INK}">{_esc(f"{t:g}")}</text>')
    for t in _nice_ticks(y_lo, y_hi):
        y = _f(py(t))
        out.append(f'<line class="tick" x1="{_f(left - 4)}" y1="{y}" x2="{_f(left)}" y2="{y}" '
                   f'stroke="{_INK}" stroke-width="1.0"/>')
        out.append(f'<text class="tick-label" x="{_f(left - 6)}" y="{_f(py(t) + 3.5)}" text-anchor="end" '
                   f'font-size="10.0" fill="{_INK}">{_esc(fmt(t))}</text>')
    out.append(f'<text class="axis-label" x="{_f(left + plot_w / 2)}" y="{_f(base + 32)}" '
               f'text-anchor="middle" font-size="11.0" fill="{_INK}">{_esc(x_label)}</text>')
    if y_label:
        cx, cy = _f(12.0), _f(top + plot_h / 2)
        out.append(f'<text class="axis-label" x="{cx}" y="{cy}" transform="rotate(-90.0 {cx} {cy})" '
                   f'text-anchor="middle" font-size="11.0" fill="{_INK}">{_esc(y_label)}</text>')
    return out


def _nice_ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    """About ``count`` round ticks (steps of 1, 2 or 5 times a power of ten) within ``[lo, hi]``."""
    if not hi > lo:
        return [lo]
    raw = (hi - lo) / count
    power = 10.0 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1.0, 2.0, 5.0, 10.0) if m * power >= raw)
    first = math.ceil(lo / step - 1e-9)
    ticks = []
    i = first
    while i * step <= hi + 1e-9 * step:
        ticks.append(round(i * step, 12))
        i += 1
    return ticks


def _log_ticks(lo: float, hi: float) -> list[float]:
    """1-2-5 ticks per decade within ``[lo, hi]``; powers of ten only when that makes more than 7."""
    ticks: list[float] = []
    for decade in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1):
        ticks.extend(m * 10.0**decade for m in (1, 2, 5) if lo <= m * 10.0**decade <= hi)
    if len(ticks) > 7:
        ticks = [t for t in ticks if math.isclose(10 ** round(math.log10(t)), t)]
    return ticks or [lo]
