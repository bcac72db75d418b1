"""The report card's SVG charts (streams/outputs/charts.py): well-formed, and drawn where the numbers say.

Every SVG is parsed with ElementTree (it must be well-formed XML); expected coordinates are computed
here from the geometry the docstrings state (pad 2 px for the sparkline; margins 56/12/12/40 and a
5% headroom for the funnel), then rounded to the one decimal place the attributes carry.
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET

import pytest

from streams.outputs.charts import ChartPoint, funnel_svg, sparkline_svg

NS = "{http://www.w3.org/2000/svg}"
PAD = 2.0


def _parse(svg: str) -> ET.Element:
    root = ET.fromstring(svg)
    assert root.tag == f"{NS}svg"
    return root


def _vertices(line: ET.Element) -> list[tuple[float, float]]:
    return [(float(x), float(y)) for x, y in (pair.split(",") for pair in line.attrib["points"].split())]


def _one_decimal(root: ET.Element) -> None:
    """Every numeric attribute has exactly one decimal place."""
    for el in root.iter():
        for name, value in el.attrib.items():
            if name in ("points", "viewBox", "stroke-dasharray"):
                numbers = value.replace(",", " ").split()
            elif name == "transform":
                numbers = value[value.index("(") + 1: -1].split()
            else:
                numbers = [value]
            for text in numbers:
                try:
                    float(text)
                except ValueError:
                    continue
                assert "." in text and len(text.split(".")[1]) == 1, (el.tag, name, value)


def test_sparkline_vertices_follow_the_values() -> None:
    values = [3.0, 5.0, 4.0, 8.0, 6.0]
    width, height = 100, 20
    root = _parse(sparkline_svg(values, width=width, height=height, title="asa"))
    _one_decimal(root)
    lines = root.findall(f"{NS}polyline")
    assert len(lines) == 1
    got = _vertices(lines[0])
    assert len(got) == len(values)
    lo, hi = 3.0, 8.0
    for i, ((x, y), v) in enumerate(zip(got, values, strict=True)):
        assert x == pytest.approx(round(PAD + i * (width - 2 * PAD) / 4, 1), abs=0.051)
        assert y == pytest.approx(round(PAD + (hi - v) / (hi - lo) * (height - 2 * PAD), 1), abs=0.051)
    xs = [x for x, _ in got]
    assert xs == sorted(xs) and len(set(xs)) == len(xs)
    # higher value, smaller y: the 8 is at the top edge, the 3 at the bottom
    assert got[3][1] == min(y for _, y in got) == PAD
    assert got[0][1] == max(y for _, y in got) == height - PAD
    assert [t.text for t in root.findall(f"{NS}title")] == ["asa"]
    # the last value is marked
    last = root.find(f"{NS}circle[@class='spark-last']")
    assert last is not None
    assert (float(last.attrib["cx"]), float(last.attrib["cy"])) == got[-1]


def test_a_gap_splits_the_line() -> None:
    values: list[float | None] = [1.0, 2.0, None, 4.0, 3.0, 5.0]
    width, height = 120, 24
    root = _parse(sparkline_svg(values, width=width, height=height))
    lines = root.findall(f"{NS}polyline")
    assert len(lines) == 2
    first, second = _vertices(lines[0]), _vertices(lines[1])
    assert len(first) + len(second) == sum(v is not None for v in values)
    assert (len(first), len(second)) == (2, 3)
    step = (width - 2 * PAD) / 5
    # the second run starts at slot 3: the gap keeps its place on the x axis
    assert second[0][0] == pytest.approx(round(PAD + 3 * step, 1), abs=0.051)
    assert first[-1][0] < PAD + 2 * step < second[0][0]


@pytest.mark.parametrize(
    ("target", "lower_is_better", "verdict"),
    [(0.11, True, "miss"), (0.13, True, "ok"), (0.15, False, "miss"), (0.11, False, "ok")],
)
def test_target_line_and_last_dot_against_it(target: float, lower_is_better: bool, verdict: str) -> None:
    values = [0.10, 0.14, 0.12]
    width, height = 120, 24
    root = _parse(sparkline_svg(values, width=width, height=height, target=target,
                                lower_is_better=lower_is_better))
    _one_decimal(root)
    lo, hi = min(*values, target), max(*values, target)
    line = root.find(f"{NS}line[@class='spark-target']")
    assert line is not None
    expected = round(PAD + (hi - target) / (hi - lo) * (height - 2 * PAD), 1)
    assert float(line.attrib["y1"]) == float(line.attrib["y2"]) == pytest.approx(expected, abs=0.051)
    assert (float(line.attrib["x1"]), float(line.attrib["x2"])) == (0.0, width)
    assert "stroke-dasharray" in line.attrib
    # the values are scaled together with the target: the 0.14 peak sits where the range puts it
    peak = _vertices(root.findall(f"{NS}polyline")[0])[1]
    assert peak[1] == pytest.approx(round(PAD + (hi - 0.14) / (hi - lo) * (height - 2 * PAD), 1), abs=0.051)
    dot = root.find(f"{NS}circle")
    assert dot is not None
    assert dot.attrib["class"] == f"spark-last {verdict}"


def test_sparkline_edge_cases() -> None:
    flat = _parse(sparkline_svg([5.0, 5.0, 5.0], width=60, height=20))
    assert {y for _, y in _vertices(flat.findall(f"{NS}polyline")[0])} == {10.0}
    single = _parse(sparkline_svg([7.0], width=60, height=20))
    assert _vertices(single.findall(f"{NS}polyline")[0]) == [(30.0, 10.0)]
    empty = _parse(sparkline_svg([None, None], title="nothing yet"))
    assert empty.findall(f"{NS}polyline") == [] and empty.findall(f"{NS}circle") == []
    lone = _parse(sparkline_svg([1.0, None, 2.0, None, 3.0]))
    assert [len(_vertices(pl)) for pl in lone.findall(f"{NS}polyline")] == [1, 1, 1]


def test_text_is_escaped() -> None:
    nasty = 'a <b> & "c"'
    spark = sparkline_svg([1.0, 2.0], title=nasty)
    assert "<b>" not in spark
    root = _parse(spark)
    assert [t.text for t in root.findall(f"{NS}title")] == [nasty]
    assert root.attrib["aria-label"] == nasty
    chart = funnel_svg([ChartPoint(nasty, 10, 0.5, "in")], 0.5, lambda n, c: (0.0, 1.0),
                       x_label="<x>", y_label="y & z", title="</svg>")
    assert "<b>" not in chart and "<x>" not in chart
    root = _parse(chart)
    titles = [t.text for t in root.iter(f"{NS}title")]
    assert titles[0] == "</svg>"
    assert any(t is not None and t.startswith(nasty + ":") for t in titles)
    assert {"<x>", "y & z"} <= {t.text for t in root.iter(f"{NS}text")}


# --- funnel ----------------------------------------------------------------------------------------

LEFT, RIGHT, TOP, BOTTOM = 56.0, 12.0, 12.0, 40.0


def test_funnel_points_sit_where_the_numbers_say_linear_x() -> None:
    width, height = 400, 250
    points = [
        ChartPoint("north", 100, 0.2, "in"),
        ChartPoint("south", 300, 0.9, "out998"),
        ChartPoint("east", 500, 0.5, "out95"),
        ChartPoint("west", 200, 0.4, "in"),
    ]
    svg = funnel_svg(points, 0.5, lambda n, c: (0.0, 1.0), width=width, height=height, log_x=False)
    root = _parse(svg)
    _one_decimal(root)
    # y spans the limits 0..1 (the widest of points, centre and limits) plus 5% either side
    y_lo, y_hi = -0.05, 1.05
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    circles = root.findall(f"{NS}circle")
    assert len(circles) == len(points)
    colours: dict[str, str] = {}
    for circle, p in zip(circles, points, strict=True):
        cx = LEFT + (p.x - 100) / (500 - 100) * plot_w
        cy = TOP + (y_hi - p.y) / (y_hi - y_lo) * plot_h
        assert float(circle.attrib["cx"]) == pytest.approx(round(cx, 1), abs=0.051)
        assert float(circle.attrib["cy"]) == pytest.approx(round(cy, 1), abs=0.051)
        assert circle.attrib["class"].split() == ["pt", p.state]
        title = circle.find(f"{NS}title")
        assert title is not None and title.text is not None and title.text.startswith(f"{p.label}: {p.y:.3g}")
        colours.setdefault(p.state, circle.attrib["fill"])
        assert colours[p.state] == circle.attrib["fill"]
    assert len(set(colours.values())) == 3  # one colour per state
    centre = root.find(f"{NS}line[@class='centre']")
    assert centre is not None
    assert float(centre.attrib["y1"]) == pytest.approx(round(TOP + (y_hi - 0.5) / (y_hi - y_lo) * plot_h, 1),
                                                       abs=0.051)
    # the two limit pairs are drawn, flat at 0 and 1 here
    for css in ("limit95", "limit998"):
        curves = root.findall(f"{NS}polyline[@class='{css}']")
        assert len(curves) == 2
        ys = {y for curve in curves for _, y in _vertices(curve)}
        assert ys == {round(TOP + (y_hi - 0.0) / (y_hi - y_lo) * plot_h, 1),
                      round(TOP + (y_hi - 1.0) / (y_hi - y_lo) * plot_h, 1)}
    # axes: the x axis along the bottom of the plot area, tick labels present
    axes = root.findall(f"{NS}line[@class='axis']")
    assert len(axes) == 2
    assert float(axes[0].attrib["y1"]) == TOP + plot_h
    labels = {t.text for t in root.iter(f"{NS}text")}
    assert {"100", "200", "300", "400", "500", "samples"} <= labels


def test_funnel_limit_curves_on_a_log_scale() -> None:
    calls: list[tuple[int, float]] = []

    def limits(n: int, coverage: float) -> tuple[float, float]:
        calls.append((n, coverage))
        z = 1.96 if coverage == 0.95 else 3.09
        half = z * 0.3 / math.sqrt(n)
        return 0.12 - half, 0.12 + half

    points = [ChartPoint("a", 10, 0.3, "out95"), ChartPoint("b", 1000, 0.11, "in")]
    root = _parse(funnel_svg(points, 0.12, limits, width=480, height=300))
    volumes = sorted({n for n, c in calls if c == 0.95})
    assert volumes[0] == 10 and volumes[-1] == 1000
    assert 30 <= len(volumes) <= 40
    # spread on a log scale: about as many volumes below 100 as above
    below = sum(n < 100 for n in volumes)
    assert abs(below - (len(volumes) - below)) <= 4
    # the curves' x follow log10(n) between the margins
    plot_w = 480 - LEFT - RIGHT
    upper95 = _vertices(root.findall(f"{NS}polyline[@class='limit95']")[1])
    for (x, _), n in zip(upper95, volumes, strict=True):
        assert x == pytest.approx(round(LEFT + (math.log10(n) - 1) / 2 * plot_w, 1), abs=0.051)
    # the funnel narrows: the upper 95% curve comes down (higher y) with volume
    ys = [y for _, y in upper95]
    assert ys == sorted(ys)


def test_funnel_refuses_bad_input_and_draws_empty() -> None:
    with pytest.raises(ValueError, match="state"):
        ChartPoint("a", 1, 0.1, "outside")
    with pytest.raises(ValueError, match="x > 0"):
        funnel_svg([ChartPoint("a", 0, 0.1, "in")], 0.1, lambda n, c: (0.0, 1.0))
    root = _parse(funnel_svg([], 0.1, lambda n, c: (0.0, 1.0)))
    assert root.findall(f"{NS}circle") == []
