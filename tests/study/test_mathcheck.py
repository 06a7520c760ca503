"""`validate`'s formula check: every failing span reported as path:line:col, none in the library."""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest

from repro.lab.library import Library
from repro.study.mathcheck import math_budget_problem, note_math_problems, related_problems
from repro.study.mathtext import MAX_NOTE_SPANS

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


@pytest.mark.parametrize(
    ("latex", "why"),
    [
        (r"\text{<img src=x onerror=1>}", "markup-like text"),
        (r"\href{javascript:alert(1)}{x}", r"\\href is not allowed"),
        (r"\url{https://e.x}", r"\\url is not allowed"),
        (r"\style{color:red}{x}", r"\\style is not allowed"),
        (r"\class{c}{x}", r"\\class is not allowed"),
        (r"\htmlId{i}{x}", r"\\htmlId is not allowed"),
        (r"\input{f}", r"\\input is not allowed"),
        (r"\include{f}", r"\\include is not allowed"),
        (r"\def\x{y} \x", r"\\def is not allowed"),
    ],
)
def test_forbidden_math_is_a_located_error(tmp_path: Path, latex: str, why: str) -> None:
    note = tmp_path / "note.yaml"
    note.write_text(f"title: ok\nproblem:\n  what: 'see ${latex}$ here'\n", encoding="utf-8")
    (problem,) = note_math_problems(note, "n.yaml")
    col = note.read_text().splitlines()[2].index("$") + 1
    assert re.match(rf"^n\.yaml:3:{col}: problem\.what: cannot convert .*{why}", problem), problem


def test_too_much_math_is_one_located_error(tmp_path: Path) -> None:
    spans = " ".join(f"$a_{{{i}}}$" for i in range(MAX_NOTE_SPANS + 50))
    note = tmp_path / "note.yaml"
    note.write_text(f"title: ok\nproblem:\n  what: '{spans}'\n", encoding="utf-8")
    start = time.process_time()
    problems = note_math_problems(note, "n.yaml")
    assert time.process_time() - start < 2.0
    assert len(problems) == 1 and problems[0].startswith("n.yaml:3:")
    assert f"more than {MAX_NOTE_SPANS:,} math spans" in problems[0]
    assert math_budget_problem(note, "n.yaml") == problems[0]


def test_related_links_to_unknown_papers_and_to_itself(library_dir: Path) -> None:
    second = library_dir / "toy2"
    second.mkdir()
    (second / "repro.py").write_text((library_dir / "toy" / "repro.py").read_text())
    text = (library_dir / "toy" / "note.yaml").read_text()
    (second / "note.yaml").write_text(text.replace("aliases: [toy-alias]", "aliases: []"))
    note = library_dir / "toy" / "note.yaml"
    related = "related: [toy2, toy-alias, nowhere-paper, toy]\n"
    note.write_text(re.sub(r"(?m)^related:.*\n", "", text) + related)
    library = Library(library_dir)
    errors, warnings = related_problems(note, "t.yaml", "toy", library)
    line = len(note.read_text().splitlines())
    (error,) = errors
    assert error.startswith(f"t.yaml:{line}:")
    assert "related[2]: unknown paper 'nowhere-paper'" in error
    assert len(warnings) == 2 and all("links to itself" in w for w in warnings)  # alias and slug


def test_an_edited_note_is_read_again_whatever_changed_its_size_or_its_time(
    tmp_path: Path,
) -> None:
    """The parsed note is kept while the file is unchanged (`validate` asks twice): an edit
    that keeps the size (a new time) and one that keeps the time (a new size) are both seen."""
    import os

    note = tmp_path / "note.yaml"
    note.write_text("problem:\n  what: see $\\foo{x}$\n", encoding="utf-8")
    (problem,) = note_math_problems(note, "n.yaml")
    assert problem.startswith("n.yaml:2:13: problem.what: cannot convert")
    stat = note.stat()
    note.write_text("problem:\n  what: see $\\bar{x}$\n", encoding="utf-8")  # same size
    os.utime(note, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    assert note.stat().st_size == stat.st_size
    assert note_math_problems(note, "n.yaml") == []
    stat = note.stat()
    note.write_text("problem:\n  what: see $\\foo{xy}$\n", encoding="utf-8")  # same time
    os.utime(note, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    assert note.stat().st_mtime_ns == stat.st_mtime_ns
    (problem,) = note_math_problems(note, "n.yaml")
    assert "\\foo" in problem
