"""Line plots of an experiment's curves, written as SVG by matplotlib (Agg backend).

matplotlib is imported inside the function, so the commands that only read notes (list, show,
sheet, validate) never pay for it. The SVG keeps its text as text (`svg.fonttype: none`), so the
file stays small and the HTML sheet can inline it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

Series = dict[str, tuple[Sequence[float], Sequence[float]]]  # name -> (xs, ys)


def save_line_plot(
    path: Path,
    series: Series,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
) -> Path:
    """Write `series` as an SVG line chart with axes, a grid and a legend; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    finite = [float(y) for _, ys in series.values() for y in ys if math.isfinite(float(y))]
    assert finite, f"nothing to plot in {title!r}"
    path = Path(path)
    style = {"svg.fonttype": "none", "svg.hashsalt": path.stem, "font.size": 10}
    with plt.rc_context(style):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
        try:
            for name, (xs, ys) in series.items():
                points = [
                    (float(x), float(y)) for x, y in zip(xs, ys, strict=True)
                    if math.isfinite(float(y))
                ]  # fmt: skip
                if points:
                    ax.plot(*zip(*points, strict=True), marker="o", markersize=3, label=name)
            ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
            if logx:
                _log_axis(ax.xaxis, ax.set_xscale, [x for xs, _ in series.values() for x in xs])
            if logy:
                _log_axis(ax.yaxis, ax.set_yscale, finite)
            ax.grid(True, which="major", alpha=0.3)
            if len(series) > 1 or next(iter(series), ""):
                ax.legend(frameon=False)
            fig.savefig(path, format="svg", metadata={"Date": None})
        finally:
            plt.close(fig)
    return path


def _log_axis(axis, set_scale, values: list) -> None:
    """A log axis labelled with plain numbers (1, 2, 4, 8 rather than 2×10⁰); ticks at the
    data when there are few distinct values, as in a sweep over ranks or sizes."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    set_scale("log")
    distinct = sorted({float(v) for v in values if math.isfinite(float(v)) and float(v) > 0})
    if len(distinct) <= 10:
        axis.set_ticks(distinct)
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())
