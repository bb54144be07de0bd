"""Bar charts as inline SVG, rendered on the server: no script, no CDN, no library.

`bar_chart` draws one bar per bucket (zero-height bars included, so each
bucket has its `<rect class="bar">` with a `<title>` tooltip), a y axis with
"nice" gridlines (1, 2 or 5 times a power of ten), and the x labels the caller
gives. The SVG names itself for screen readers (`role="img"`, `<title>` and a
`<desc>` summary) and the page repeats the numbers in a table. Colours come
from the admin's CSS variables (chatsvc/usage/static/usage/usage.css), with
presentation attributes as the fallback.
"""

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

WIDTH = 720
HEIGHT = 180
LEFT, RIGHT, TOP, BOTTOM = 52, 8, 10, 24
TARGET_TICKS = 4


@dataclass(frozen=True)
class Point:
    label: str  # the bucket, in the tooltip and the description: "2026-12-01 14:00"
    value: float
    tick: str | None = None  # shown under the bar when set: "14:00"


def compact(value: float) -> str:
    """1234 -> "1.2k", 2500000 -> "2.5M", 3 -> "3", 0.5 -> "0.5"."""
    for size, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= size:
            return f"{value / size:.1f}".rstrip("0").rstrip(".") + suffix
    if float(value).is_integer():
        return str(int(value))
    return f"{value:.2f}".rstrip("0").rstrip(".")


def plain(value: float) -> str:
    return f"{int(value):,}" if float(value).is_integer() else f"{value:,.2f}"


def nice_step(raw: float, *, integer: bool = True) -> float:
    """The smallest of 1, 2, 5 times a power of ten that is at least `raw`."""
    if raw <= 0:
        return 1
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        step = factor * power
        if step >= raw:
            return max(step, 1) if integer else step
    return 10 * power  # pragma: no cover - the loop always returns


def axis(maximum: float, *, integer: bool = True) -> tuple[float, list[float]]:
    """The axis top and its ticks (from 0) for data up to `maximum`."""
    step = nice_step(maximum / TARGET_TICKS, integer=integer)
    top = max(step, math.ceil(maximum / step) * step)
    count = round(top / step)
    return top, [step * i for i in range(count + 1)]


def _n(value: float) -> str:
    """A coordinate: short, and stable for tests."""
    return f"{value:.2f}".rstrip("0").rstrip(".")


def bar_chart(
    points: Sequence[Point],
    *,
    chart_id: str,
    title: str,
    unit: str = "",
    empty_text: str = "No data for this period",
    fmt: Callable[[float], str] = plain,
    width: int = WIDTH,
    height: int = HEIGHT,
) -> SafeString:
    """An SVG bar chart of `points`, or a "no data" panel when every value is 0."""
    chart_id = escape(chart_id)
    unit_text = f" {unit}" if unit else ""
    head = (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="usage-chart" id="{chart_id}" '
        f'viewBox="0 0 {width} {height}" width="100%" preserveAspectRatio="xMinYMin meet" '
        f'role="img" aria-labelledby="{chart_id}-title {chart_id}-desc">'
        f'<title id="{chart_id}-title">{escape(title)}</title>'
    )
    values = [max(0.0, float(p.value)) for p in points]
    if not points or not any(values):
        return mark_safe(  # noqa: S308 - every text is escaped above and below
            f'{head}<desc id="{chart_id}-desc">{escape(empty_text)}</desc>'
            f'<rect class="frame" x="0.5" y="0.5" width="{width - 1}" height="{height - 1}" '
            f'fill="none" stroke="#ccc"/>'
            f'<text class="empty" x="{width / 2:g}" y="{height / 2:g}" text-anchor="middle" '
            f'dominant-baseline="middle" font-size="14" fill="#666">{escape(empty_text)}</text>'
            "</svg>"
        )

    integer = all(float(v).is_integer() for v in values)
    peak = max(values)
    top, ticks = axis(peak, integer=integer)
    plot_w, plot_h = width - LEFT - RIGHT, height - TOP - BOTTOM
    base = TOP + plot_h
    slot = plot_w / len(points)
    bar_w = max(1.0, slot * 0.8)

    peak_at = points[values.index(peak)].label
    summary = (
        f"{len(points)} values from {points[0].label} to {points[-1].label}; "
        f"highest {fmt(peak)}{unit_text} at {peak_at}; total {fmt(sum(values))}{unit_text}."
    )
    parts = [head, f'<desc id="{chart_id}-desc">{escape(summary)}</desc>']

    parts.append('<g class="grid" aria-hidden="true">')
    for tick in ticks:
        y = base - tick / top * plot_h
        parts.append(
            f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{_n(y)}" y2="{_n(y)}" '
            f'stroke="#ddd" stroke-width="1"/>'
            f'<text class="y-label" x="{LEFT - 6}" y="{_n(y)}" text-anchor="end" '
            f'dominant-baseline="middle" font-size="11" fill="#666">{escape(compact(tick))}</text>'
        )
    parts.append("</g>")

    parts.append('<g class="bars">')
    for index, (point, value) in enumerate(zip(points, values, strict=True)):
        bar_h = value / top * plot_h
        x = LEFT + index * slot + (slot - bar_w) / 2
        parts.append(
            f'<rect class="bar" x="{_n(x)}" y="{_n(base - bar_h)}" width="{_n(bar_w)}" '
            f'height="{_n(bar_h)}" fill="#417690" data-value="{escape(_n(value))}">'
            f"<title>{escape(point.label)}: {escape(fmt(value))}{escape(unit_text)}</title></rect>"
        )
    parts.append("</g>")

    parts.append('<g class="x-axis" aria-hidden="true">')
    parts.append(f'<line x1="{LEFT}" x2="{width - RIGHT}" y1="{base}" y2="{base}" stroke="#999"/>')
    for index, point in enumerate(points):
        if point.tick is None:
            continue
        x = LEFT + (index + 0.5) * slot
        parts.append(
            f'<line x1="{_n(x)}" x2="{_n(x)}" y1="{base}" y2="{base + 4}" stroke="#999"/>'
            f'<text class="x-label" x="{_n(x)}" y="{base + 16}" text-anchor="middle" '
            f'font-size="11" fill="#666">{escape(point.tick)}</text>'
        )
    parts.append("</g></svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every text is escaped
