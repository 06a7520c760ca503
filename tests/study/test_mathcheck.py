"""`validate`'s formula check: every failing span reported as path:line:col, none in the library."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.lab.library import Library
from repro.study.mathcheck import note_math_problems

REPO = Path(__file__).resolve().parents[2]


def test_failures_are_reported_at_their_position(tmp_path: Path, valid_note_text: str) -> None:
    note = tmp_path / "note.yaml"
    note.write_text(valid_note_text, encoding="utf-8")
    assert note_math_problems(note, "note.yaml") == []
    broken = valid_note_text.replace("venue: ", "venue: Bad $\\foo{x}$ ", 1)
    note.write_text(broken, encoding="utf-8")
    (problem,) = note_math_problems(note, "note.yaml")
    line_no = next(i for i, line in enumerate(broken.splitlines(), 1) if "\\foo" in line)
    col = broken.splitlines()[line_no - 1].index("$\\foo") + 1
    assert problem.startswith(f"note.yaml:{line_no}:{col}: venue: cannot convert $\\foo{{x}}$")


def test_a_formula_with_unbalanced_braces(tmp_path: Path) -> None:
    note = tmp_path / "note.yaml"
    note.write_text("formulas:\n  - name: f\n    latex: 'h = {W x'\n    meaning: m\n")
    (problem,) = note_math_problems(note, "n.yaml")
    assert problem.startswith("n.yaml:3:13: formulas[0].latex: cannot convert")
    assert "unbalanced braces" in problem


@pytest.mark.parametrize("slug", Library(REPO / "papers").slugs())
def test_every_note_in_the_library_renders(slug: str) -> None:
    paper = Library(REPO / "papers").get(slug)
    assert note_math_problems(paper.note_path, slug) == []
