"""Line plots of an experiment's curves, written as SVG by matplotlib (Agg backend).

Readable by default:
- **few, rounded ticks**: a log axis shows at most ~6 ticks — the data's own values when there
  are few and they are round (ranks 1, 2, 4, 8), else powers of ten — written short (`1k`,
  `2M`, `10¹⁵` as mathtext), never six-digit floats;
- **a series and its fit share a colour**: a series named `fit, NAME`, `parabola, NAME` or
  `NAME (fit)` — or listed in `fits={"fit name": "data name"}` — is drawn as a dashed line in
  the colour of `NAME`, whose points are then markers only;
- **math in labels**: `N_opt` in an axis label becomes mathtext `$N_{\\mathrm{opt}}$`; a label
  already holding `$…$` is left alone;
- **no clipped titles**: long titles wrap, and the layout is constrained.

matplotlib is imported inside the functions, so the commands that only read notes (list, show,
sheet, validate) never pay for it. The SVG keeps its text as text (`svg.fonttype: none`), so the
file stays small and the HTML sheet can inline it.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence
from pathlib import Path

Series = dict[str, tuple[Sequence[float], Sequence[float]]]  # name -> (xs, ys)
MAX_TICKS = 6
MAX_MARKERS = 40  # points of a series above which it is drawn as a plain line
_FIT_NAME = re.compile(
    r"^(?:fit|parabola|fitted|model)\b[^,]*,\s*(?P<a>.+)$|^(?P<b>.+?)\s*\(fit\)$"
)
_SUBSCRIPT = re.compile(r"(?<![\w$\\])([A-Za-z])_(\{[^}]*\}|[A-Za-z0-9]+)(?![\w$])")


def math_label(text: str) -> str:
    """Axis text with `X_sub` written as mathtext (`N_opt` → `$N_{\\mathrm{opt}}$`)."""
    if "$" in text:
        return text

    def sub(m: re.Match) -> str:
        base, s = m.group(1), m.group(2).strip("{}")
        s = rf"\mathrm{{{s}}}" if len(s) > 1 and s.isalpha() else s
        return f"${base}_{{{s}}}$"

    return _SUBSCRIPT.sub(sub, text)


def short_number(v: float) -> str:
    """A tick label: 3 significant digits at most; thousands and millions as k and M; other
    large or small magnitudes as a power of ten in mathtext."""
    if v == 0:
        return "0"
    a = abs(v)
    if 1e-3 <= a < 1e3:
        return f"{v:.3g}"
    for scale, suffix in ((1e6, "M"), (1e3, "k")):
        if scale <= a < scale * 1e3:
            return f"{v / scale:.3g}{suffix}"
    exp = math.floor(math.log10(a))
    mant = v / 10**exp
    if abs(mant - round(mant)) < 1e-9 and round(mant) == 1:
        return f"$10^{{{exp}}}$"
    return f"${mant:.2g}\\times10^{{{exp}}}$"


def _is_round(v: float) -> bool:
    """At most two significant digits (1, 2, 4, 8, 16, 250, 1e6 …)."""
    if v <= 0:
        return False
    exp = math.floor(math.log10(v))
    return abs(v / 10 ** (exp - 1) - round(v / 10 ** (exp - 1))) < 1e-9


def pair_fits(names: Sequence[str], fits: dict[str, str] | None = None) -> dict[str, str]:
    """fit series → the data series it belongs to (from `fits`, or from the names)."""
    out = dict(fits or {})
    for name in names:
        if name in out:
            continue
        m = _FIT_NAME.match(name)
        target = m and (m["a"] or m["b"]).strip()
        if target and target in names and target != name:
            out[name] = target
    return out


def save_line_plot(
    path: Path,
    series: Series,
    xlabel: str,
    ylabel: str,
    title: str,
    logx: bool = False,
    logy: bool = False,
    fits: dict[str, str] | None = None,
) -> Path:
    """Write `series` as an SVG line chart with axes, a grid and a legend; returns the path."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    finite = [float(y) for _, ys in series.values() for y in ys if math.isfinite(float(y))]
    assert finite, f"nothing to plot in {title!r}"
    path = Path(path)
    paired = pair_fits(list(series), fits)
    has_fit = set(paired.values())
    style = {"svg.fonttype": "none", "svg.hashsalt": path.stem, "font.size": 10}
    with plt.rc_context(style):
        fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
        try:
            colours: dict[str, str] = {}
            cycle = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
            order = [n for n in series if n not in paired] + [n for n in series if n in paired]
            for name in order:
                xs, ys = series[name]
                points = [
                    (float(x), float(y)) for x, y in zip(xs, ys, strict=True)
                    if math.isfinite(float(y))
                ]  # fmt: skip
                if not points:
                    continue
                colour = colours.get(paired.get(name, "")) or next(cycle)
                colours[name] = colour
                if name in paired:
                    kw = {"linestyle": "--", "linewidth": 1.3}
                elif name in has_fit:
                    kw = {"linestyle": "none", "marker": "o", "markersize": 4}
                elif len(points) > MAX_MARKERS:  # a dense curve: markers would blot it
                    kw = {"linewidth": 1.4}
                else:
                    kw = {"marker": "o", "markersize": 3}
                ax.plot(*zip(*points, strict=True), color=colour, label=name, **kw)
            ax.set_xlabel(math_label(xlabel))
            ax.set_ylabel(math_label(ylabel))
            ax.set_title("\n".join(textwrap.wrap(title, 60)) or title)
            if logx:
                _log_axis(ax.xaxis, ax.set_xscale, [x for xs, _ in series.values() for x in xs])
            else:
                _linear_axis(ax.xaxis)
            if logy:
                _log_axis(ax.yaxis, ax.set_yscale, finite)
            else:
                _linear_axis(ax.yaxis)
            ax.grid(True, which="major", alpha=0.3)
            if len(series) > 1 or next(iter(series), ""):
                ax.legend(frameon=False, fontsize=8)
            fig.savefig(path, format="svg", metadata={"Date": None})
        finally:
            plt.close(fig)
    return path


def _linear_axis(axis) -> None:
    from matplotlib.ticker import FuncFormatter, MaxNLocator

    axis.set_major_locator(MaxNLocator(nbins=MAX_TICKS - 1, steps=[1, 2, 2.5, 5, 10]))
    axis.set_major_formatter(FuncFormatter(lambda v, _: short_number(v)))


def _log_axis(axis, set_scale, values: list) -> None:
    """A log axis with at most ~6 ticks, labelled with short numbers: the data's values when
    they are few and round (a sweep over ranks or sizes), else powers of ten."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    set_scale("log")
    distinct = sorted({float(v) for v in values if math.isfinite(float(v)) and float(v) > 0})
    if distinct and len(distinct) <= MAX_TICKS and all(_is_round(v) for v in distinct):
        axis.set_ticks(distinct)
    else:
        span = math.log10(distinct[-1] / distinct[0]) if len(distinct) > 1 else 1
        subs = (1.0, 2.0, 5.0) if span < 2 else (1.0,)
        step = max(1, math.ceil(span / MAX_TICKS)) if span >= 2 else 1
        axis.set_major_locator(LogLocator(base=10.0**step, subs=subs, numticks=MAX_TICKS + 2))
    axis.set_major_formatter(FuncFormatter(lambda v, _: short_number(v)))
    axis.set_minor_formatter(NullFormatter())


def save_heatmap(
    path: Path,
    values: Sequence[Sequence[float]],
    xlabel: str,
    ylabel: str,
    title: str,
    xticklabels: Sequence[str] | None = None,
    colorbar: str = "",
) -> Path:
    """Write a matrix (rows × columns) as an SVG heat map: a wrapped title that is never
    clipped (constrained layout), mathtext labels, a labelled colour bar."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    path = Path(path)
    rows = [[float(v) for v in row] for row in values]
    assert rows and rows[0], f"nothing to plot in {title!r}"
    width = max(6.0, min(16.0, 0.25 * len(rows[0])))
    style = {"svg.fonttype": "none", "svg.hashsalt": path.stem, "font.size": 10}
    with plt.rc_context(style):
        fig, ax = plt.subplots(figsize=(width, 4.0), layout="constrained")
        try:
            im = ax.imshow(rows, aspect="auto", cmap="viridis")
            if xticklabels is not None:
                ax.set_xticks(range(len(xticklabels)), list(xticklabels))
            ax.set_xlabel(math_label(xlabel))
            ax.set_ylabel(math_label(ylabel))
            ax.set_title("\n".join(textwrap.wrap(title, 60)) or title)
            bar = fig.colorbar(im, ax=ax)
            if colorbar:
                bar.set_label(math_label(colorbar))
            fig.savefig(path, format="svg", metadata={"Date": None})
        finally:
            plt.close(fig)
    return path
