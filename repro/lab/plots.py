"""Line plots as standalone SVG files, with no plotting dependency (and no torch)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape
from pathlib import Path

Series = dict[str, tuple[Sequence[float], Sequence[float]]]  # name -> (xs, ys)
_COLOURS = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#17becf"]
W, H, PAD = 640, 400, 60


def _scale(values: list[float], log: bool, lo_px: float, hi_px: float):
    vals = [math.log10(v) for v in values] if log else values
    lo, hi = min(vals), max(vals)
    span = hi - lo or 1.0

    def to_px(v: float) -> float:
        v = math.log10(v) if log else v
        return lo_px + (v - lo) / span * (hi_px - lo_px)

    return to_px, lo, hi


def save_line_plot(
    path: Path,
    series: Series,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
) -> Path:
    """Write `series` as an SVG line chart with axes, ranges and a legend; returns the path."""
    xs = [float(x) for s in series.values() for x in s[0]]
    ys = [float(y) for s in series.values() for y in s[1] if math.isfinite(float(y))]
    assert xs and ys, f"nothing to plot in {title!r}"
    fx, x0, x1 = _scale(xs, logx, PAD, W - PAD / 2)
    fy, y0, y1 = _scale(ys, logy, H - PAD, PAD / 2)

    def fmt(v: float) -> str:
        return f"{v:.3g}"

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" font-family="sans-serif"'
        f' font-size="12"><rect width="100%" height="100%" fill="white"/>',
        f'<text x="{W / 2}" y="18" text-anchor="middle" font-size="14">{escape(title)}</text>',
        f'<line x1="{PAD}" y1="{H - PAD}" x2="{W - PAD / 2}" y2="{H - PAD}" stroke="black"/>',
        f'<line x1="{PAD}" y1="{PAD / 2}" x2="{PAD}" y2="{H - PAD}" stroke="black"/>',
        f'<text x="{W / 2}" y="{H - 15}" text-anchor="middle">{escape(xlabel)}'
        f"{' (log)' if logx else ''}</text>",
        f'<text x="15" y="{H / 2}" text-anchor="middle" transform="rotate(-90 15 {H / 2})">'
        f"{escape(ylabel)}{' (log)' if logy else ''}</text>",
    ]
    for v, anchor, x, y in [
        (x0, "start", PAD, H - PAD + 15),
        (x1, "end", W - PAD / 2, H - PAD + 15),
    ]:
        parts.append(
            f'<text x="{x}" y="{y}" text-anchor="{anchor}">{fmt(10**v if logx else v)}</text>'
        )
    for v, y in [(y0, H - PAD), (y1, PAD / 2 + 10)]:
        parts.append(
            f'<text x="{PAD - 5}" y="{y}" text-anchor="end">{fmt(10**v if logy else v)}</text>'
        )
    for i, (name, (sx, sy)) in enumerate(series.items()):
        colour = _COLOURS[i % len(_COLOURS)]
        points = " ".join(
            f"{fx(float(x)):.1f},{fy(float(y)):.1f}"
            for x, y in zip(sx, sy, strict=True)
            if math.isfinite(float(y))
        )
        parts.append(
            f'<polyline points="{points}" fill="none" stroke="{colour}" stroke-width="2"/>'
        )
        ly = PAD / 2 + 16 * (i + 1)
        parts.append(
            f'<text x="{W - PAD / 2 - 5}" y="{ly}" text-anchor="end" fill="{colour}">'
            f"{escape(name)}</text>"
        )
    parts.append("</svg>")
    path = Path(path)
    path.write_text("\n".join(parts) + "\n", encoding="utf-8")
    return path
