"""A small log-log line chart as SVG, so the suite plots without a plotting library."""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

WIDTH, HEIGHT = 640, 400
LEFT, RIGHT, TOP, BOTTOM = 70, 190, 40, 50
COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#7f7f7f")
DASHES = ("", "6 3", "2 3", "8 3 2 3")


def _decades(low: float, high: float) -> list[float]:
    return [10.0**k for k in range(math.floor(math.log10(low)), math.ceil(math.log10(high)) + 1)]


def loglog_svg(
    path: Path,
    title: str,
    x_label: str,
    y_label: str,
    series: Sequence[tuple[str, Sequence[tuple[float, float]]]],
) -> None:
    """Write ``series`` (label, [(x, y), ...]) as lines with markers on log-log axes."""
    points = [(x, y) for _label, values in series for x, y in values if x > 0 and y > 0]
    if not points:
        return
    xs = _decades(min(p[0] for p in points), max(p[0] for p in points))
    ys = _decades(min(p[1] for p in points), max(p[1] for p in points))
    if len(xs) < 2:
        xs.append(xs[0] * 10)
    if len(ys) < 2:
        ys.append(ys[0] * 10)
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def px(x: float) -> float:
        return LEFT + plot_w * (math.log10(x) - math.log10(xs[0])) / math.log10(xs[-1] / xs[0])

    def py(y: float) -> float:
        return TOP + plot_h * (1 - (math.log10(y) - math.log10(ys[0])) / math.log10(ys[-1] / ys[0]))

    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{HEIGHT}" '
        f'font-family="sans-serif" font-size="12">',
        f'<rect width="{WIDTH}" height="{HEIGHT}" fill="white"/>',
        f'<text x="{WIDTH / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
    ]
    for x in xs:
        out.append(
            f'<line x1="{px(x):.1f}" y1="{TOP}" x2="{px(x):.1f}" y2="{TOP + plot_h}" '
            'stroke="#ddd"/>'
        )
        out.append(
            f'<text x="{px(x):.1f}" y="{TOP + plot_h + 18}" text-anchor="middle">{x:,.0f}</text>'
        )
    for y in ys:
        out.append(
            f'<line x1="{LEFT}" y1="{py(y):.1f}" x2="{LEFT + plot_w}" y2="{py(y):.1f}" '
            'stroke="#ddd"/>'
        )
        out.append(f'<text x="{LEFT - 6}" y="{py(y) + 4:.1f}" text-anchor="end">{y:g}</text>')
    out.append(
        f'<text x="{LEFT + plot_w / 2}" y="{HEIGHT - 12}" text-anchor="middle">{x_label}</text>'
    )
    out.append(
        f'<text x="16" y="{TOP + plot_h / 2}" text-anchor="middle" '
        f'transform="rotate(-90 16 {TOP + plot_h / 2})">{y_label}</text>'
    )
    for index, (label, values) in enumerate(series):
        colour = COLOURS[index % len(COLOURS)]
        dash = DASHES[(index // 2) % len(DASHES)]
        good = [(px(x), py(y)) for x, y in sorted(values) if x > 0 and y > 0]
        if not good:
            continue
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in good)
        dash_attr = f' stroke-dasharray="{dash}"' if dash else ""
        out.append(
            f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"{dash_attr}/>'
        )
        out += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{colour}"/>' for x, y in good]
        legend_y = TOP + 10 + 18 * index
        out.append(
            f'<line x1="{WIDTH - RIGHT + 10}" y1="{legend_y}" x2="{WIDTH - RIGHT + 34}" '
            f'y2="{legend_y}" stroke="{colour}" stroke-width="2"{dash_attr}/>'
        )
        out.append(f'<text x="{WIDTH - RIGHT + 40}" y="{legend_y + 4}">{label}</text>')
    out.append("</svg>")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(out) + "\n", encoding="utf-8")
