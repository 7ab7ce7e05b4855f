"""Charts drawn on the server as SVG text: no script, no font or file from elsewhere.

:func:`line_chart` plots one or more series of (time, value) points on shared axes,
each series a polyline with its points marked, with a legend; labels are escaped.
"""

from __future__ import annotations

from datetime import datetime
from html import escape

COLOURS = ("#1565c0", "#2e8540", "#ef6c00", "#6a1b9a", "#c62828")
WIDTH, HEIGHT, MARGIN = 640, 220, 44


def line_chart(title: str, unit: str, series: dict[str, list[tuple[datetime, float]]]) -> str:
    """An SVG chart of ``series`` (name → points), scaled to fit; a note when there is nothing to draw."""
    points = [p for values in series.values() for p in values]
    head = (f'<figure><figcaption>{escape(title)}</figcaption><svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" '
            f'aria-label="{escape(title)}" xmlns="http://www.w3.org/2000/svg" width="100%">')
    if not points:
        return head + f'<text x="{MARGIN}" y="{HEIGHT // 2}" fill="#667">-</text></svg></figure>'
    first = min(p[0] for p in points).timestamp()
    last = max(p[0] for p in points).timestamp()
    top = max(p[1] for p in points) or 1.0
    span = (last - first) or 1.0

    def x(moment: datetime) -> float:
        return MARGIN + (moment.timestamp() - first) / span * (WIDTH - 2 * MARGIN)

    def y(value: float) -> float:
        return HEIGHT - MARGIN + 10 - value / top * (HEIGHT - 2 * MARGIN)

    parts = [head,
             f'<line x1="{MARGIN}" y1="{HEIGHT - MARGIN + 10}" x2="{WIDTH - MARGIN}" y2="{HEIGHT - MARGIN + 10}" '
             f'stroke="#99a"/>',
             f'<line x1="{MARGIN}" y1="{MARGIN - 10}" x2="{MARGIN}" y2="{HEIGHT - MARGIN + 10}" stroke="#99a"/>',
             f'<text x="4" y="{MARGIN - 14}" font-size="11" fill="#445">{top:.4g} {escape(unit)}</text>',
             f'<text x="{MARGIN}" y="{HEIGHT - 8}" font-size="11" fill="#445">'
             f'{escape(datetime.fromtimestamp(first).strftime("%m-%d %H:%M"))}</text>',
             f'<text x="{WIDTH - MARGIN}" y="{HEIGHT - 8}" font-size="11" fill="#445" text-anchor="end">'
             f'{escape(datetime.fromtimestamp(last).strftime("%m-%d %H:%M"))}</text>']
    for index, (name, values) in enumerate(sorted(series.items())):
        colour = COLOURS[index % len(COLOURS)]
        ordered = sorted(values)
        path = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v in ordered)
        parts.append(f'<polyline points="{path}" fill="none" stroke="{colour}" stroke-width="2"/>')
        parts.extend(f'<circle cx="{x(t):.1f}" cy="{y(v):.1f}" r="3" fill="{colour}"><title>{escape(name)} '
                     f'{v:.4g} {escape(unit)}</title></circle>' for t, v in ordered)
        parts.append(f'<text x="{WIDTH - MARGIN - 120 * index}" y="14" font-size="12" fill="{colour}" '
                     f'text-anchor="end">{escape(name)}</text>')
    parts.append("</svg></figure>")
    return "".join(parts)
