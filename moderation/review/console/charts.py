"""Inline SVG charts drawn on the server: stacked bars, a line, proportion bars. No JavaScript.

Plain strings built from numbers and fixed labels only (never post text), escaped all the same.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from html import escape

COLORS = {"allow": "#3f9b5a", "review": "#d9a21b", "block": "#c8423b", "line": "#3867b5", "muted": "#8a8f98"}


def _frame(width: int, height: int, body: str, title: str) -> str:
    return (
        f'<svg class="chart" viewBox="0 0 {width} {height}" width="100%" role="img" aria-label="{escape(title)}" '
        f'xmlns="http://www.w3.org/2000/svg"><title>{escape(title)}</title>{body}</svg>'
    )


def stacked_bars(
    labels: Sequence[str], series: Mapping[str, Sequence[float]], title: str, width: int = 640, height: int = 220
) -> str:
    """One bar per label, stacked by series (e.g. decisions per action per time bucket)."""
    pad_l, pad_b, pad_t = 40, 28, 10
    n = max(1, len(labels))
    totals = [sum(values[i] for values in series.values()) for i in range(len(labels))]
    top = max([*totals, 1.0])
    plot_h, plot_w = height - pad_b - pad_t, width - pad_l - 10
    bar_w = plot_w / n
    parts = [
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 10}" y2="{pad_t + plot_h}" stroke="#ccc"/>',
        f'<text x="{pad_l - 6}" y="{pad_t + 8}" text-anchor="end" font-size="10">{top:g}</text>',
        f'<text x="{pad_l - 6}" y="{pad_t + plot_h}" text-anchor="end" font-size="10">0</text>',
    ]
    for i, label in enumerate(labels):
        y: float = pad_t + plot_h
        for name, values in series.items():
            h = plot_h * values[i] / top
            if h > 0:
                y -= h
                parts.append(
                    f'<rect x="{pad_l + i * bar_w + 1:.1f}" y="{y:.1f}" width="{max(1.0, bar_w - 2):.1f}" '
                    f'height="{h:.1f}" fill="{COLORS.get(name, COLORS["muted"])}"><title>{escape(label)} '
                    f"{escape(name)}: {values[i]:g}</title></rect>"
                )
        if n <= 12 or i % max(1, n // 8) == 0:
            parts.append(
                f'<text x="{pad_l + (i + 0.5) * bar_w:.1f}" y="{height - 10}" text-anchor="middle" '
                f'font-size="10">{escape(label)}</text>'
            )
    legend_x = pad_l
    for name in series:
        parts.append(f'<rect x="{legend_x}" y="0" width="10" height="8" fill="{COLORS.get(name, COLORS["muted"])}"/>')
        parts.append(f'<text x="{legend_x + 14}" y="8" font-size="10">{escape(name)}</text>')
        legend_x += 70
    return _frame(width, height, "".join(parts), title)


def line(
    labels: Sequence[str], values: Sequence[float], title: str, unit: str = "", width: int = 640, height: int = 180
) -> str:
    """A line over time (escalation rate, queue depth)."""
    pad_l, pad_b, pad_t = 40, 28, 10
    top = max([*values, 1e-9])
    plot_h, plot_w = height - pad_b - pad_t, width - pad_l - 10
    n = len(values)
    step = plot_w / max(1, n - 1)
    points = " ".join(f"{pad_l + i * step:.1f},{pad_t + plot_h - plot_h * v / top:.1f}" for i, v in enumerate(values))
    parts = [
        f'<line x1="{pad_l}" y1="{pad_t + plot_h}" x2="{width - 10}" y2="{pad_t + plot_h}" stroke="#ccc"/>',
        f'<text x="{pad_l - 6}" y="{pad_t + 8}" text-anchor="end" font-size="10">{top:.3g}{escape(unit)}</text>',
        f'<text x="{pad_l - 6}" y="{pad_t + plot_h}" text-anchor="end" font-size="10">0</text>',
    ]
    if n == 1:
        x, y = points.split(",")
        parts.append(f'<circle cx="{x}" cy="{y}" r="3" fill="{COLORS["line"]}"/>')
    elif n:
        parts.append(f'<polyline points="{points}" fill="none" stroke="{COLORS["line"]}" stroke-width="2"/>')
    for i, label in enumerate(labels):
        if n <= 12 or i % max(1, n // 8) == 0:
            parts.append(
                f'<text x="{pad_l + i * step:.1f}" y="{height - 10}" text-anchor="middle" font-size="10">'
                f"{escape(label)}</text>"
            )
    if not n:
        parts.append(f'<text x="{width / 2}" y="{height / 2}" text-anchor="middle" font-size="12">no data yet</text>')
    return _frame(width, height, "".join(parts), title)


def share_bars(rows: dict[str, tuple[int, int]], title: str, width: int = 640) -> str:
    """Per row, the share overturned (red) vs confirmed (green), with counts."""
    height = 30 + 34 * max(1, len(rows))
    pad_l, plot_w = 90, width - 90 - 60
    parts = []
    for i, (name, (overturned, confirmed)) in enumerate(rows.items()):
        total = overturned + confirmed
        share = overturned / total if total else 0.0
        y = 12 + i * 34
        parts.append(f'<text x="{pad_l - 8}" y="{y + 14}" text-anchor="end" font-size="12">{escape(name)}</text>')
        parts.append(f'<rect x="{pad_l}" y="{y}" width="{plot_w}" height="20" fill="{COLORS["allow"]}"/>')
        parts.append(f'<rect x="{pad_l}" y="{y}" width="{plot_w * share:.1f}" height="20" fill="{COLORS["block"]}"/>')
        parts.append(
            f'<text x="{pad_l + plot_w + 6}" y="{y + 14}" font-size="12">{share:.0%} of {total}</text>'
        )
    if not rows:
        parts.append(f'<text x="{width / 2}" y="30" text-anchor="middle" font-size="12">no verdicts yet</text>')
    return _frame(width, height, "".join(parts), title)
