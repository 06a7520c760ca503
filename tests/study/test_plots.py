"""Line plots by matplotlib: an SVG with the title, the series and no NaN points."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from repro.study.plots import save_line_plot

REPO = Path(__file__).resolve().parents[2]


def test_svg_with_title_and_legend(tmp_path: Path) -> None:
    path = save_line_plot(
        tmp_path / "loss.svg",
        {"train": ([1, 2, 4], [3.0, float("nan"), 1.0]), "val": ([1, 2, 4], [3.2, 2.0, 1.5])},
        "steps", "loss", "Loss against steps", logx=True,
    )  # fmt: skip
    svg = path.read_text()
    assert svg.lstrip().startswith("<?xml") and "<svg" in svg
    for text in ("Loss against steps", "train", "val", "steps", "loss"):
        assert text in svg


def test_same_plot_same_bytes(tmp_path: Path) -> None:
    series = {"a": ([1, 2], [1.0, 2.0])}
    one = save_line_plot(tmp_path / "p.svg", series, "x", "y", "t").read_bytes()
    two = save_line_plot(tmp_path / "p.svg", series, "x", "y", "t").read_bytes()
    assert one == two  # no date in the metadata: reruns do not churn


def test_importing_the_module_does_not_import_matplotlib() -> None:
    code = "import sys, repro.study.plots; print('matplotlib' in sys.modules)"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=REPO
    )
    assert out.stdout.strip() == "False"


def test_short_tick_labels() -> None:
    from repro.study.plots import short_number

    assert [short_number(v) for v in (0, 2.5, 999, 1500, 123456, 4e6)] == [
        "0", "2.5", "999", "1.5k", "123k", "4M",
    ]  # fmt: skip
    assert short_number(1e15) == "$10^{15}$" and short_number(3.3e18) == r"$3.3\times10^{18}$"


def test_math_labels() -> None:
    from repro.study.plots import math_label

    assert math_label("N_opt") == r"$N_{\mathrm{opt}}$"
    assert math_label("head dim d_k") == "head dim $d_{k}$"
    assert (
        math_label("$a_b$ kept") == "$a_b$ kept"
        and math_label("snake_case_name") == "snake_case_name"
    )


def _ticks(svg: str, axis: str) -> list[str]:
    import re

    block = svg.split(f'<g id="matplotlib.axis_{axis}">', 1)[1].split('<g id="matplotlib.axis_', 1)[
        0
    ]
    return re.findall(r"<text[^>]*>([^<]*)</text>", block)


def test_few_rounded_ticks_and_fits_share_a_colour(tmp_path: Path) -> None:
    import re

    ms = [96 * 2**k + 7 for k in range(9)]  # 9 distinct, unround values
    path = save_line_plot(
        tmp_path / "io.svg",
        {"C = 1e+15": (ms, [1e9 / m for m in ms]),
         "parabola, C = 1e+15": (ms, [1.1e9 / m for m in ms]),
         "other": (ms, [5e8 / m for m in ms])},
        "SRAM size M", "N_opt", "HBM accesses", logx=True, logy=True,
    )  # fmt: skip
    svg = path.read_text()
    labels = [t for t in _ticks(svg, "1") if t.strip()]
    assert 2 <= len(labels) <= 7
    assert all(len(t) <= 12 and "e+" not in t for t in labels), labels
    strokes = re.findall(r"stroke: (#[0-9a-f]{6})", svg)
    assert strokes.count("#1f77b4") >= 2 and "#ff7f0e" in strokes  # data + its fit; `other`


def test_heatmap_title_is_kept_whole(tmp_path: Path) -> None:
    from repro.study.plots import save_heatmap

    title = "log10 Δ in the first Mamba block over one selective-copy sequence, a long title"
    path = save_heatmap(
        tmp_path / "h.svg", [[1.0, 2.0, 3.0], [0.5, 0.1, 2.0]], "token", "channel", title,
        xticklabels=["a", "b", "c"], colorbar="log10 Delta_t",
    )  # fmt: skip
    svg = path.read_text()
    assert "log10 Δ in the first Mamba block" in svg and "a long title" in svg  # wrapped, whole
    import re

    width = float(re.search(r'<svg[^>]*width="([\d.]+)pt"', svg).group(1))
    xs = [float(x) for x in re.findall(r'<text[^>]*\bx="([\d.-]+)"', svg)]
    assert xs and min(xs) >= 0 and max(xs) <= width  # nothing drawn outside the figure


def test_round_values_have_at_most_two_significant_digits() -> None:
    from repro.study.plots import _is_round

    for v in (1, 2, 4, 8, 16, 64, 250, 1e6, 0.5, 1.5, 0.01, 4.5e9):
        assert _is_round(v), v
    for v in (103, 0.125, 999, 1234, 96 * 2 + 7, 0, -4):
        assert not _is_round(v), v


def test_fits_pair_with_their_series_by_name_or_by_the_table() -> None:
    from repro.study.plots import pair_fits

    names = ["C = 1e15", "fit, C = 1e15", "loss (fit)", "loss", "parabola, C = 1e17",
             "model fit, other", "other", "fitted, nowhere", "fit, fit, loss"]  # fmt: skip
    assert pair_fits(names) == {
        "fit, C = 1e15": "C = 1e15",
        "loss (fit)": "loss",
        "model fit, other": "other",
    }  # "parabola, C = 1e17", "fitted, nowhere" and "fit, fit, loss" name no series here
    table = pair_fits(["a", "b", "smooth"], {"smooth": "b"})
    assert table == {"smooth": "b"}
    # the table wins over the name
    assert pair_fits(["a", "fit, a", "b"], {"fit, a": "b"}) == {"fit, a": "b"}


def test_tick_labels_keep_their_sign_and_small_magnitudes() -> None:
    from repro.study.plots import short_number

    assert [short_number(v) for v in (-1500, -2.5, 0.001, 1e3, 1e6, 2.5e8)] == [
        "-1.5k", "-2.5", "0.001", "1k", "1M", "250M",
    ]  # fmt: skip
    assert short_number(1e9) == "$10^{9}$" and short_number(5e-4) == r"$5\times10^{-4}$"
    assert short_number(1e-6) == "$10^{-6}$" and short_number(-3e12) == r"$-3\times10^{12}$"


def test_math_labels_for_braced_and_numeric_subscripts() -> None:
    from repro.study.plots import math_label

    assert math_label("C_{min} and x_1") == r"$C_{\mathrm{min}}$ and $x_{1}$"
    assert math_label("ab_c or a_b_c") == "ab_c or a_b_c"  # identifiers stay text
