"""The command line, through click's CliRunner, on a temporary copy of the toy library."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from paperlab import cli

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def invoke(library_dir: Path):
    runner = CliRunner()

    def go(*args: str):
        return runner.invoke(cli, list(args), catch_exceptions=False)

    return go


def test_list_json_round_trip(invoke) -> None:
    result = invoke("list", "--json")
    assert result.exit_code == 0
    (row,) = json.loads(result.stdout)
    assert row["slug"] == "toy" and row["claims"] == {"cited": 1, "not yet run": 5}


def test_list_filters_by_tag(invoke) -> None:
    assert json.loads(invoke("list", "--tag", "nope", "--json").stdout) == []


def test_unknown_paper_is_one_line_and_exit_2(invoke) -> None:
    result = invoke("check", "tyo")
    assert result.exit_code == 2
    assert result.stderr == "Error: unknown paper 'tyo'; did you mean 'toy'?\n"
    assert result.stdout == ""


def test_check_exit_1_when_a_claim_fails_and_json_round_trip(invoke) -> None:
    result = invoke("check", "toy", "--json")
    assert result.exit_code == 1
    (report,) = json.loads(result.stdout)
    verdicts = {c["id"]: c["verdict"] for c in report["claims"]}
    assert verdicts["two-plus-two"] == "verified" and verdicts["wrong-sum"] == "failed"
    assert report["ok"] is False


def test_check_selected_claims_passes(invoke) -> None:
    result = invoke("check", "toy", "--claim", "two-plus-two", "--claim", "mean-loss")
    assert result.exit_code == 0, result.output
    assert "verified" in result.stdout


def test_run_rejects_unknown_setting(invoke) -> None:
    result = invoke("run", "toy", "--set", "stepz=3")
    assert result.exit_code == 2
    assert result.stderr == (
        "Error: --set: unknown setting 'stepz' (settings: steps, lr, widths, verbose)\n"
    )


def test_run_json_has_metrics_and_saves(invoke, tmp_path: Path) -> None:
    result = invoke("run", "toy", "--quick", "--set", "steps=4", "--json")
    report = json.loads(result.stdout)
    assert report["metrics"] == {"loss": 0.0625, "steps": 4}
    assert Path(report["run_dir"]).parent == tmp_path / "runs" / "toy"


def test_sheet_shows_latest_verdicts(invoke) -> None:
    assert "not yet run" in invoke("sheet", "toy").stdout
    invoke("check", "toy", "--claim", "two-plus-two")
    sheet = invoke("sheet", "toy").stdout
    row = next(line for line in sheet.splitlines() if line.startswith("| Two plus two"))
    assert "| 4 | 4 | exact | verified |" in row


@pytest.mark.parametrize("fmt", ["md", "html", "tsv"])
def test_sheet_formats_write_files(invoke, tmp_path: Path, fmt: str) -> None:
    out = tmp_path / f"sheet.{fmt}"
    result = invoke("sheet", "toy", "--format", fmt, "-o", str(out))
    assert result.exit_code == 0
    assert "Toy: a paper for tests" in out.read_text()


def test_new_scaffolds_a_valid_paper(invoke, library_dir: Path) -> None:
    result = invoke("new", "fresh-paper", "--title", "Fresh", "--arxiv", "2401.00001")
    assert result.exit_code == 0, result.output
    assert (library_dir / "fresh-paper" / "note.yaml").exists()
    assert invoke("validate", "fresh-paper").exit_code == 0


def test_new_never_overwrites(invoke, library_dir: Path) -> None:
    note = library_dir / "toy" / "note.yaml"
    before = note.read_text()
    result = invoke("new", "toy", "--title", "Again")
    assert result.exit_code == 2
    assert (
        result.stderr.startswith("Error: ")
        and "already exists; not overwriting it" in result.stderr
    )
    assert note.read_text() == before


@pytest.mark.parametrize("slug", ["../escape", "Upper", "a/b", "-dash", "", "x y"])
def test_new_refuses_bad_slugs(invoke, library_dir: Path, slug: str) -> None:
    result = invoke("new", "--title", "T", "--", slug)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: invalid slug '{slug}'")
    assert sorted(p.name for p in library_dir.iterdir()) == ["toy"]
    assert not (library_dir.parent / "escape").exists()


def test_broken_note_is_reported_with_position(invoke, library_dir: Path) -> None:
    note = library_dir / "toy" / "note.yaml"
    note.write_text(note.read_text().replace("year: 2021", "year: twenty"))
    result = invoke("validate", "toy")
    assert result.exit_code == 2
    assert "papers/toy/note.yaml:" in result.stderr
    assert "year: Input should be a valid integer" in result.stderr
    assert "Traceback" not in result.output
    check = invoke("check", "toy")
    assert check.exit_code == 2 and check.stderr.startswith("Error: papers/toy/note.yaml:")


def test_validate_json(invoke) -> None:
    result = invoke("validate", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {"toy": {"ok": True, "problems": []}}


def test_schema_is_json(invoke) -> None:
    assert json.loads(invoke("schema").stdout)["title"] == "paperlab note"


def test_bad_option_exits_2(invoke) -> None:
    assert invoke("sheet", "toy", "--format", "pdf").exit_code == 2


def test_reading_commands_never_import_torch(library_dir: Path, tmp_path: Path) -> None:
    script = """
import sys
from paperlab import cli
for args in (["list"], ["show", "toy"], ["sheet", "toy"], ["validate"], ["schema"],
             ["new", "brand-new", "--title", "B"]):
    try:
        cli.main(args, prog_name="paperlab", standalone_mode=False)
    except SystemExit:
        pass
assert "torch" not in sys.modules, "torch was imported"
print("no torch")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().endswith("no torch")
