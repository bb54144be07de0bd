"""The server-side SVG charts: well-formed, proportional, accessible, honest when empty."""

import xml.etree.ElementTree as ET

import pytest

from chatsvc.usage.charts import Point, axis, bar_chart, compact, nice_step

SVG = "{http://www.w3.org/2000/svg}"


def parse(svg: str) -> ET.Element:
    return ET.fromstring(str(svg))  # noqa: S314 - our own output; raises unless well-formed


def bars(root: ET.Element) -> list[ET.Element]:
    return root.findall(f"{SVG}g/{SVG}rect[@class='bar']")


def points(*values, ticks=None) -> list[Point]:
    return [
        Point(label=f"hour {i}", value=v, tick=(ticks or {}).get(i)) for i, v in enumerate(values)
    ]


def test_bar_heights_are_proportional_to_the_values():
    root = parse(bar_chart(points(0, 5, 10, 2.5 * 4, 1), chart_id="c", title="Messages"))
    heights = [float(b.get("height")) for b in bars(root)]
    assert len(heights) == 5  # one bar per bucket, zero included
    assert heights[0] == 0
    assert heights[2] == pytest.approx(2 * heights[1], abs=0.02)
    assert heights[2] == heights[3]
    assert heights[1] == pytest.approx(5 * heights[4], abs=0.02)
    # Bars stand on the same baseline, left to right.
    bottoms = {round(float(b.get("y")) + float(b.get("height")), 1) for b in bars(root)}
    assert len(bottoms) == 1
    xs = [float(b.get("x")) for b in bars(root)]
    assert xs == sorted(xs)


def test_the_chart_names_itself_and_each_bar():
    root = parse(
        bar_chart(
            points(3, 7, ticks={0: "12:00"}), chart_id="chart-x", title='Lag <&> "q"', unit="s"
        )
    )
    assert root.get("role") == "img"
    assert root.get("aria-labelledby") == "chart-x-title chart-x-desc"
    assert root.find(f"{SVG}title").text == 'Lag <&> "q"'  # escaped in, intact out
    desc = root.find(f"{SVG}desc").text
    assert "2 values from hour 0 to hour 1" in desc and "highest 7 s at hour 1" in desc
    assert [b.find(f"{SVG}title").text for b in bars(root)] == ["hour 0: 3 s", "hour 1: 7 s"]
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "x-label"]
    assert labels == ["12:00"]


def test_the_y_axis_has_nice_ticks_above_the_data():
    root = parse(bar_chart(points(0, 37), chart_id="c", title="t"))
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "y-label"]
    assert labels == ["0", "10", "20", "30", "40"]
    assert axis(37) == (40, [0, 10, 20, 30, 40])
    assert axis(3) == (3, [0, 1, 2, 3])  # counts: whole-number steps
    assert axis(0.3, integer=False)[0] == pytest.approx(0.3)
    assert nice_step(120) == 200 and nice_step(0.04, integer=False) == pytest.approx(0.05)
    assert [compact(v) for v in (0, 7, 1234, 2_500_000, 0.5)] == ["0", "7", "1.2k", "2.5M", "0.5"]


@pytest.mark.parametrize("values", [(), (0, 0, 0)])
def test_no_data_is_said_plainly(values):
    root = parse(
        bar_chart(points(*values), chart_id="c", title="Webhook failures", empty_text="No failures")
    )
    assert bars(root) == []
    assert root.find(f"{SVG}desc").text == "No failures"
    assert [t.text for t in root.iter(f"{SVG}text")] == ["No failures"]


def test_a_large_series_stays_well_formed_and_inside_the_frame():
    root = parse(bar_chart(points(*range(720)), chart_id="c", title="t", width=720, height=180))
    rects = bars(root)
    assert len(rects) == 720
    assert all(
        0 <= float(r.get("x")) and float(r.get("x")) + float(r.get("width")) <= 720 for r in rects
    )
    assert all(float(r.get("y")) >= 0 for r in rects)
