"""What a study sheet shows of the stored runs: the newest run's stamp and commit, and its plots.

Reads `runs/<slug>/<stamp>/` as the runner writes it (environment.json, config.json, *.svg)
without importing torch. The plots are inlined into the HTML sheet, so their SVG is cleaned of
its XML prologue and its ids are made unique per plot (several plots share one page).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Plot:
    name: str  # file name, e.g. accuracy_vs_rank.svg
    svg: str  # an <svg> element ready to inline


@dataclass(frozen=True)
class RunInfo:
    stamp: str  # the run folder's name, a UTC timestamp
    commit: str  # git commit of the code that ran ("" when unknown)
    preset: str  # quick / full ("" when unknown)
    plots: list[Plot]
    plots_stamp: str  # the run the plots come from (the newest run that has plots)


def _runs(runs_dir: Path, slug: str) -> list[Path]:
    folder = runs_dir / slug
    if not folder.is_dir():
        return []
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  reverse=True)  # fmt: skip


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


_PROLOGUE = re.compile(r"\A.*?(?=<svg\b)", re.DOTALL)
_ID = re.compile(r'\bid="([^"]+)"')


def inline_svg(text: str, prefix: str) -> str:
    """An SVG file's text as an element for an HTML page, its ids prefixed with `prefix`."""
    svg = _PROLOGUE.sub("", text, count=1)
    svg = re.sub(r"<metadata>.*?</metadata>\s*", "", svg, flags=re.DOTALL)
    ids = set(_ID.findall(svg))
    if not ids:
        return svg.strip()

    def rename(m: re.Match) -> str:
        return m.group(1) + prefix + m.group(2) if m.group(2) in ids else m.group(0)

    svg = re.sub(r'(\bid="|#)([A-Za-z_][\w.-]*)', rename, svg)
    return svg.strip()


def latest_run(runs_dir: Path, slug: str) -> RunInfo | None:
    """The newest stored run of `slug` with the plots of the newest run that made any."""
    runs = [r for r in _runs(runs_dir, slug) if (r / "claims.json").exists()]
    if not runs:
        return None
    newest = runs[0]
    env = _read_json(newest / "environment.json")
    config = _read_json(newest / "config.json")
    plots: list[Plot] = []
    plots_stamp = ""
    for run in runs:
        files = sorted(run.glob("*.svg"))
        if files:
            plots_stamp = run.name
            for i, f in enumerate(files):
                prefix = f"{slug}-plot{i}-"
                plots.append(Plot(f.name, inline_svg(f.read_text(encoding="utf-8"), prefix)))
            break
    return RunInfo(
        stamp=newest.name,
        commit=str(env.get("git_commit") or ""),
        preset=str(config.get("_preset") or ""),
        plots=plots,
        plots_stamp=plots_stamp,
    )
