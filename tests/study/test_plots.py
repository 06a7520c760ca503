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
