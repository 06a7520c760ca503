"""What a sheet shows of the stored runs: which run is the latest, whose plots, inlined how."""

from __future__ import annotations

import json
import re
from pathlib import Path

from repro.study.runview import inline_svg, latest_run

SVG = """<?xml version="1.0" encoding="utf-8" standalone="no"?>
<!DOCTYPE svg PUBLIC "-//W3C//DTD SVG 1.1//EN" "http://www.w3.org/Graphics/SVG/1.1/DTD/svg11.dtd">
<svg xmlns="http://www.w3.org/2000/svg" width="10pt" height="10pt">
 <metadata>
  <rdf:RDF><dc:date>2026-01-01</dc:date></rdf:RDF>
 </metadata>
 <defs><clipPath id="p1"><rect width="1"/></clipPath><path id="m2" d="M0 0"/></defs>
 <g id="figure_1" clip-path="url(#p1)"><use xlink:href="#m2"/><use xlink:href="#m2"/>
 <a href="#elsewhere">x</a></g>
</svg>
"""


def test_inline_svg_drops_the_prologue_and_prefixes_every_id_and_reference() -> None:
    out = inline_svg(SVG, "lora-plot0-")
    assert out.startswith("<svg ") and out.endswith("</svg>")
    assert "<?xml" not in out and "DOCTYPE" not in out and "metadata" not in out
    assert set(re.findall(r'\bid="([^"]+)"', out)) == {
        "lora-plot0-p1", "lora-plot0-m2", "lora-plot0-figure_1",
    }  # fmt: skip
    assert "url(#lora-plot0-p1)" in out and out.count('xlink:href="#lora-plot0-m2"') == 2
    assert 'href="#elsewhere"' in out  # not an id of this plot: left alone
    assert inline_svg("<svg><g/></svg>", "x-") == "<svg><g/></svg>"


def _run(runs: Path, stamp: str, plots: tuple[str, ...] = (), claims: bool = True, **env) -> Path:
    run = runs / "toy" / stamp
    run.mkdir(parents=True)
    if claims:
        (run / "claims.json").write_text("[]")
    if env:
        (run / "environment.json").write_text(json.dumps({"git_commit": env["commit"]}))
        (run / "config.json").write_text(json.dumps({"_preset": env["preset"]}))
    for name in plots:
        (run / name).write_text(SVG)
    return run


def test_the_latest_run_and_the_plots_of_the_latest_run_that_made_any(tmp_path: Path) -> None:
    """Three runs: the oldest made plots, the middle one made others, the newest none; a run
    without claims.json (interrupted) and a hidden folder are not runs."""
    runs = tmp_path / "runs"
    assert latest_run(runs, "toy") is None
    _run(runs, "20260101T000000000000Z", ("old.svg",), commit="aaa", preset="full")
    _run(runs, "20260102T000000000000Z", ("b_plot.svg", "a_plot.svg"), commit="bbb", preset="")
    _run(runs, "20260103T000000000000Z", commit="c" * 40, preset="quick")
    _run(runs, "20260104T000000000000Z", ("late.svg",), claims=False)
    _run(runs, ".20260105T000000000000Z", ("hidden.svg",))
    info = latest_run(runs, "toy")
    assert info.stamp == "20260103T000000000000Z"
    assert (info.commit, info.preset) == ("c" * 40, "quick")
    assert info.plots_stamp == "20260102T000000000000Z"
    assert [p.name for p in info.plots] == ["a_plot.svg", "b_plot.svg"]
    ids = [set(re.findall(r'\bid="([^"]+)"', p.svg)) for p in info.plots]
    assert all(i.startswith("toy-plot0-") for i in ids[0])
    assert all(i.startswith("toy-plot1-") for i in ids[1]) and not ids[0] & ids[1]


def test_a_run_without_readable_environment_shows_no_commit_or_preset(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run = _run(runs, "20260101T000000000000Z")
    (run / "environment.json").write_text("[1, 2]")  # not an object
    (run / "config.json").write_text("{broken")
    info = latest_run(runs, "toy")
    assert (info.stamp, info.commit, info.preset, info.plots, info.plots_stamp) == (
        "20260101T000000000000Z", "", "", [], "",
    )  # fmt: skip
