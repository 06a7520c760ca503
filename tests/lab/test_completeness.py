"""`validate --strict`: the checklist of what keeps a valid note from being complete."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from paperlab import cli
from repro.lab.completeness import completeness_problems
from repro.lab.library import Library


def test_a_fresh_scaffold_lists_its_todos_and_missing_year(library_dir: Path) -> None:
    CliRunner().invoke(cli, ["new", "fresh", "--title", "T", "--offline"])
    problems = completeness_problems(Library(library_dir).get("fresh"))
    assert any("TODO left" in p for p in problems)
    assert any(p.endswith("year: the year of publication is missing") for p in problems)
    assert all(p.startswith(f"{library_dir.name}/fresh/note.yaml:") for p in problems)


def test_a_measured_claim_without_a_control_is_listed_and_one_with_it_is_not(library_dir: Path):
    paper = Library(library_dir).get("toy")
    measured = [c.id for c in paper.note.claims if c.kind == "measured"]
    listed = [p for p in completeness_problems(paper) if "names no control" in p]
    assert len(listed) == len(measured) > 0
    text = paper.note_path.read_text(encoding="utf-8")
    first = f"  - id: {measured[0]}\n"
    paper.note_path.write_text(
        text.replace(first, first + "    control: the untrained model, which must lose\n"),
        encoding="utf-8",
    )
    listed = [p for p in completeness_problems(Library(library_dir).get("toy"))
              if "names no control" in p]  # fmt: skip
    assert len(listed) == len(measured) - 1 and measured[0] not in " ".join(listed)


def test_strict_lists_bare_math_and_exits_1_while_plain_validate_passes(library_dir: Path):
    CliRunner().invoke(cli, ["new", "bm", "--title", "T", "--year", "2024"])
    note = library_dir / "bm" / "note.yaml"
    note.write_text(
        note.read_text(encoding="utf-8").replace(
            "key_idea: TODO the idea in one sentence", "key_idea: scores use d_k here"
        ),
        encoding="utf-8",
    )
    assert CliRunner().invoke(cli, ["validate", "bm"]).exit_code == 0
    strict = CliRunner().invoke(cli, ["validate", "--strict", "bm"])
    assert strict.exit_code == 1
    assert "  [ ] " in strict.stderr and "bare math 'd_k'" in strict.stderr.split("left to")[1]
