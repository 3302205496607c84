"""Small-multiple line charts as a standalone SVG file, for the benchmarks' figures against size.

The benchmarks run in the project's venv, which has no plotting library; a chart of a handful of
points per figure needs none. Each panel is one figure against the same x values (for example pods
in the cluster), with an optional goal drawn as a dashed line, so growth (flat, linear or worse) and
the margin to the goal are visible at a glance.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from dataclasses import field
from html import escape
from pathlib import Path

PANEL_WIDTH, PANEL_HEIGHT = 300, 210
MARGIN_LEFT, MARGIN_RIGHT, MARGIN_TOP, MARGIN_BOTTOM = 56, 28, 30, 40
COLUMNS = 3
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd")


@dataclass(frozen=True)
class Panel:
    """One figure: a title, its unit, one or more named series of y values (None where not measured)
    aligned with the chart's x values, and an optional goal (a horizontal dashed line)."""

    title: str
    unit: str
    series: dict[str, list[float | None]]
    goal: float | None = None
    goal_label: str = "goal"
    notes: list[str] = field(default_factory=list)


def nice_top(value: float) -> float:
    """The smallest 1/2/2.5/5 x 10^k at or above value: the y axis' upper end."""
    if value <= 0:
        return 1.0
    magnitude = 10 ** math.floor(math.log10(value))
    for step in (1, 2, 2.5, 5, 10):
        if step * magnitude >= value:
            return step * magnitude
    return 10 * magnitude


def _number(value: float) -> str:
    return f"{value:,.0f}" if value >= 100 or value == int(value) else f"{value:.3g}"


def render(title: str, x_label: str, xs: list[float], panels: list[Panel]) -> str:
    """The SVG text of a grid of panels sharing the x values xs (at least one, all positive)."""
    if not xs:
        raise ValueError("a chart needs at least one x value")
    rows = math.ceil(len(panels) / COLUMNS)
    width, height = COLUMNS * PANEL_WIDTH, rows * PANEL_HEIGHT + 34
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
           f'viewBox="0 0 {width} {height}" font-family="sans-serif" font-size="11">',
           f'<rect width="{width}" height="{height}" fill="white"/>',
           f'<text x="{width / 2}" y="20" text-anchor="middle" font-size="14">{escape(title)}</text>']
    x_top = max(xs)
    for index, panel in enumerate(panels):
        left = (index % COLUMNS) * PANEL_WIDTH + MARGIN_LEFT
        top = (index // COLUMNS) * PANEL_HEIGHT + 34 + MARGIN_TOP
        plot_w = PANEL_WIDTH - MARGIN_LEFT - MARGIN_RIGHT
        plot_h = PANEL_HEIGHT - MARGIN_TOP - MARGIN_BOTTOM
        values = [v for ys in panel.series.values() for v in ys if v is not None]
        y_top = nice_top(max(values + ([panel.goal] if panel.goal is not None else []) + [0.0]) * 1.05)

        def px(x: float, left: float = left, plot_w: float = plot_w) -> float:
            return left + plot_w * x / x_top

        def py(y: float, top: float = top, plot_h: float = plot_h, y_top: float = y_top) -> float:
            return top + plot_h * (1 - y / y_top)

        out.append(f'<text x="{left + plot_w / 2}" y="{top - 10}" text-anchor="middle" font-weight="bold">'
                   f'{escape(panel.title)} ({escape(panel.unit)})</text>')
        out.append(f'<rect x="{left}" y="{top}" width="{plot_w}" height="{plot_h}" fill="none" stroke="#999"/>')
        for tick in range(5):
            y = y_top * tick / 4
            out.append(f'<line x1="{left}" y1="{py(y):.1f}" x2="{left + plot_w}" y2="{py(y):.1f}" stroke="#eee"/>')
            out.append(f'<text x="{left - 4}" y="{py(y) + 4:.1f}" text-anchor="end">{_number(y)}</text>')
        for x in xs:
            out.append(f'<text x="{px(x):.1f}" y="{top + plot_h + 14}" text-anchor="middle">{_number(x)}</text>')
        out.append(f'<text x="{left + plot_w / 2}" y="{top + plot_h + 30}" text-anchor="middle" fill="#555">'
                   f'{escape(x_label)}</text>')
        if panel.goal is not None:
            out.append(f'<line x1="{left}" y1="{py(panel.goal):.1f}" x2="{left + plot_w}" y2="{py(panel.goal):.1f}" '
                       f'stroke="#e67e22" stroke-dasharray="5,3"/>')
            out.append(f'<text x="{left + 4}" y="{py(panel.goal) - 3:.1f}" fill="#e67e22">'
                       f'{escape(panel.goal_label)} {_number(panel.goal)}</text>')
        for number, (name, ys) in enumerate(panel.series.items()):
            colour = COLOURS[number % len(COLOURS)]
            points = [(px(x), py(y)) for x, y in zip(xs, ys, strict=True) if y is not None]
            if len(points) > 1:
                path = " ".join(f"{x:.1f},{y:.1f}" for x, y in points)
                out.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="1.5"/>')
            out.extend(f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{colour}"/>' for x, y in points)
            if len(panel.series) > 1:
                out.append(f'<text x="{left + plot_w - 4}" y="{top + 12 + 12 * number}" text-anchor="end" '
                           f'fill="{colour}">{escape(name)}</text>')
        for number, note in enumerate(panel.notes):
            out.append(f'<text x="{left + 4}" y="{top + 12 + 12 * number}" fill="#555">{escape(note)}</text>')
    out.append("</svg>")
    return "\n".join(out) + "\n"


def write(path: Path, title: str, x_label: str, xs: list[float], panels: list[Panel]) -> Path:
    path.write_text(render(title, x_label, xs, panels))
    return path
