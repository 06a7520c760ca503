"""Study sheets rendered from a note and its latest results: Markdown, HTML, and Anki cards.

One Jinja environment, StrictUndefined (a typo in a template is an error, not a blank), HTML
autoescaped. Nothing here imports torch.
"""

from __future__ import annotations

import csv
import io
from functools import cache
from pathlib import Path
from typing import Literal

import jinja2

from repro.lab.claims import ClaimResult
from repro.lab.format import format_value
from repro.lab.library import REPO_ROOT, Paper

TEMPLATES = REPO_ROOT / "templates"
Format = Literal["md", "html", "anki"]
SUFFIX = {"md": ".md", "html": ".html", "anki": ".tsv"}


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(["html", "html.j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["measured"] = format_value
    return env


def claim_rows(paper: Paper, results: dict[str, ClaimResult]) -> list[dict]:
    """The note's claims joined with their latest stored results."""
    rows = []
    for c in paper.note.claims:
        r = results.get(c.id)
        if c.kind == "cited":
            verdict, measured, when = "cited", None, ""
        elif r is None:
            verdict, measured, when = "not yet run", None, ""
        else:
            verdict, measured, when = r.verdict.value, r.measured, r.when
        rows.append(
            {
                "claim": c,
                "verdict": verdict,
                "measured": measured,
                "when": when,
                "tolerance": c.tolerance_text,
            }
        )
    return rows


def render_sheet(paper: Paper, results: dict[str, ClaimResult], fmt: Format = "md") -> str:
    """The study sheet of one paper in `fmt`."""
    if fmt == "anki":
        return render_cards([paper])
    template = environment().get_template(f"sheet.{fmt}.j2")
    return template.render(slug=paper.slug, note=paper.note, claims=claim_rows(paper, results))


def render_cards(papers: list[Paper]) -> str:
    """Flashcards as tab-separated front/back/tags lines (File → Import in Anki)."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    out.write("#separator:tab\n#html:false\n#tags column:3\n")
    for paper in papers:
        note = paper.note
        tag = f"paperlab::{paper.slug}"
        writer.writerow(
            [
                f"{note.title}: what are its three contributions?",
                " | ".join(note.contributions),
                tag,
            ]
        )
        for qa in note.interview.questions:
            writer.writerow([f"[{note.title}] {qa.question}", qa.answer, tag])
        writer.writerow(
            [
                f"[{note.title}] Deep dive: {note.interview.deep_dive.topic}",
                note.interview.deep_dive.explanation,
                tag,
            ]
        )
        for f in note.formulas:
            writer.writerow(
                [f"[{note.title}] Formula: {f.name}", f"${f.latex}$ — {f.meaning}", tag]
            )
    return out.getvalue()


def default_output(slug: str, fmt: Format, folder: Path) -> Path:
    return folder / f"{slug}{SUFFIX[fmt]}"
