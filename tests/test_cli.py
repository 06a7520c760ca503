"""The command line, through click's CliRunner, on a temporary copy of the toy library."""

from __future__ import annotations

import json
import os
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
        "Error: --set: unknown setting 'stepz'; did you mean 'steps'? "
        "(settings: steps, lr, widths, verbose)\n"
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


# --- hardening: every bad input is one `Error:` line with the documented exit code ----------


def _second_paper(library_dir: Path, slug: str, note: bytes) -> None:
    (library_dir / slug).mkdir()
    (library_dir / slug / "note.yaml").write_bytes(note)


def test_a_missing_papers_folder_is_exit_2(invoke, tmp_path: Path) -> None:
    for command in (["check"], ["list"], ["validate"]):
        result = invoke("--papers-dir", str(tmp_path / "typo"), *command)
        assert result.exit_code == 2, command
        assert result.stderr.startswith(f"Error: papers folder {tmp_path / 'typo'} does not exist")
        assert len(result.stderr.splitlines()) == 1


def test_an_unknown_claim_is_exit_2_with_a_suggestion(invoke) -> None:
    result = invoke("check", "toy", "--claim", "two-plus-tow")
    assert result.exit_code == 2
    assert (
        result.stderr
        == "Error: --claim: toy has no claim 'two-plus-tow'; did you mean 'two-plus-two'?\n"
    )
    assert "claims: bleu, crashes" in invoke("check", "toy", "--claim", "zzz").stderr


def test_slugs_match_in_any_case(invoke) -> None:
    result = invoke("check", "TOY", "--claim", "two-plus-two", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout)[0]["paper"] == "toy"


def test_list_keeps_going_past_a_broken_note(invoke, library_dir: Path) -> None:
    _second_paper(library_dir, "broken", b"title: [unclosed\n")
    rows = {r["slug"]: r for r in json.loads(invoke("list", "--json").stdout)}
    assert rows["toy"]["title"] == "Toy: a paper for tests"
    assert rows["broken"]["error"].startswith("papers/broken/note.yaml:2:1: invalid YAML")
    table = invoke("list")
    assert table.exit_code == 0 and "broken/note.yaml:2:1" in table.stdout


def test_validate_and_check_report_every_broken_note(invoke, library_dir: Path) -> None:
    _second_paper(library_dir, "one", b"title: \xff\n")
    _second_paper(library_dir, "two", b"a: &x 1\n")
    for command in ("validate", "check"):
        result = invoke(command)
        assert result.exit_code == 2
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert any(line.startswith("Error: papers/one/note.yaml:1:8:") for line in errors), errors
        assert any(line.startswith("Error: papers/two/note.yaml:1:4:") for line in errors), errors


@pytest.mark.parametrize("value", [".nan", "-.inf", "9" * 400])
def test_validate_locates_a_meaningless_expected_value(invoke, library_dir: Path, value) -> None:
    note = library_dir / "toy" / "note.yaml"
    text = note.read_text(encoding="utf-8")
    line = text[: text.index("    expected: 4\n")].count("\n") + 1
    note.write_text(text.replace("    expected: 4\n", f"    expected: {value}\n", 1), "utf-8")
    result = invoke("validate")
    assert result.exit_code == 2
    errors = [e for e in result.stderr.splitlines() if e.startswith("Error: papers/toy/note.yaml")]
    assert any(f":{line}:" in e and "`expected` must be a finite number" in e for e in errors), (
        result.stderr
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_note_does_not_hang_list_or_validate(library_dir: Path, tmp_path: Path) -> None:
    (library_dir / "pipe").mkdir()
    os.mkfifo(library_dir / "pipe" / "note.yaml")
    for command in (["list", "--json"], ["validate"]):
        result = subprocess.run(
            [sys.executable, str(REPO / "paperlab.py"), *command],
            cwd=tmp_path, capture_output=True, text=True, timeout=60,
        )  # fmt: skip
        assert "pipe/note.yaml:1:1: cannot read: not a regular file" in (
            result.stdout + result.stderr
        )
        assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["sheet", "toy", "-o", "missing/folder/x.md"], "cannot write missing/folder/x.md"),
        (["schema", "-o", "missing/schema.json"], "cannot write missing/schema.json"),
    ],
)
def test_an_unwritable_output_is_one_error(invoke, args: list[str], message: str) -> None:
    result = invoke(*args)
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {message}: No such file or directory")
    assert len(result.stderr.splitlines()) == 1


def test_new_refuses_hostile_input_in_one_line(invoke, library_dir: Path) -> None:
    for args in (
        ["new", "nl\n", "--title", "T"],
        ["new", "a" * 300, "--title", "T"],
        ["new", "ok", "--title", "T", "--year", "99999"],
        ["new", "ok", "--title", "T", "--arxiv", "2401.00001\n"],
    ):
        result = invoke(*args)
        assert result.exit_code == 2, args
        assert result.stderr.startswith("Error: invalid ") and result.stderr.count("\n") == 1
    assert sorted(p.name for p in library_dir.iterdir()) == ["toy"]


def test_new_with_an_injecting_title_validates(invoke, library_dir: Path) -> None:
    title = 'x\ntitle: injected""" + __import__("os").system("x") + """'
    assert invoke("new", "fresh", "--title", title).exit_code == 0
    assert invoke("validate", "fresh").exit_code == 0
    from repro.lab.note import load_note

    assert load_note(library_dir / "fresh" / "note.yaml").title == title


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--set", "steps=0"], "Error: --set: steps: 0 is out of range (expected ≥ 1)\n"),
        (["--set", "lr=2"], "Error: --set: lr: 2.0 is out of range (expected (0, 1])\n"),
        (["--seed", "-1"], "Invalid value for '--seed'"),
        (["--set", "steps=1000"], "about 100× the work of the full preset"),
    ],
)
def test_bad_settings_are_refused_before_work(invoke, args: list[str], message: str) -> None:
    result = invoke("run", "toy", *args)
    assert result.exit_code == 2
    assert message in result.stderr


def test_yes_confirms_an_oversized_run(invoke) -> None:
    result = invoke("run", "toy", "--quick", "--set", "steps=1000", "--yes", "--no-save")
    assert result.exit_code == 1  # the toy's failing claim; the run itself went ahead


def test_run_prints_metrics_only_when_verbose(invoke) -> None:
    assert "'loss'" not in invoke("run", "toy", "--quick", "--no-save").stdout
    assert "'loss'" in invoke("run", "toy", "--quick", "--no-save", "--verbose").stdout


@pytest.mark.parametrize("as_json", [False, True])
def test_a_failed_save_prints_the_results_then_one_error(
    invoke, tmp_path: Path, monkeypatch, as_json: bool
) -> None:
    (tmp_path / "runs-file").write_text("")
    monkeypatch.setenv("PAPERLAB_RUNS", str(tmp_path / "runs-file"))
    result = invoke("run", "toy", "--quick", *(["--json"] if as_json else []))
    assert result.exit_code == 2
    if as_json:
        assert json.loads(result.stdout)["claims"][0]["verdict"] == "verified"
    else:
        assert "two-plus-two" in result.stdout and "verified" in result.stdout
    errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
    assert errors == [
        f"Error: results not saved: cannot create a run folder in {tmp_path / 'runs-file'}: "
        "Not a directory"
    ]


def test_ctrl_c_exits_130(invoke, library_dir: Path, monkeypatch) -> None:
    from repro.lab.library import Library

    module = Library(library_dir).get("toy").module()

    def interrupted(cfg, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "experiment", interrupted)
    result = invoke("run", "toy", "--quick")
    assert result.exit_code == 130
    assert result.stderr.endswith("Interrupted.\n")


def test_settings_lists_every_field(invoke) -> None:
    rows = json.loads(invoke("settings", "toy", "--json").stdout)
    assert [r["name"] for r in rows] == ["steps", "lr", "widths", "verbose"]
    assert rows[0] == {
        "name": "steps", "type": "int", "quick": 3, "full": 10, "bounds": "≥ 1",
        "help": "training steps",
    }  # fmt: skip
    table = invoke("settings", "toy").stdout
    assert "tuple[int, ...]" in table and "1,2" in table


def test_runs_lists_and_diffs(invoke) -> None:
    assert invoke("runs", "--json").stdout.strip() == "[]"
    invoke("run", "toy", "--quick", "--seed", "1")
    invoke("run", "toy", "--seed", "2")
    runs = json.loads(invoke("runs", "toy", "--json").stdout)
    assert [(r["preset"], r["seed"]) for r in runs] == [("full", 2), ("quick", 1)]
    assert runs[0]["verdicts"]["verified"] == 2
    diff = json.loads(invoke("runs", "toy", "--diff", "previous", "latest", "--json").stdout)
    assert {"section": "config", "key": "steps", "a": 3, "b": 10} in diff["changes"]
    table = invoke("runs", "toy", "--diff", "previous", "latest")
    assert table.exit_code == 0 and "steps" in table.stdout
    assert invoke("runs", "--diff", "a", "b").exit_code == 2


def test_shell_completion_of_slugs_and_claims(library_dir: Path) -> None:
    runner = CliRunner()

    def complete(words: str) -> list[str]:
        env = {
            "_PAPERLAB_COMPLETE": "bash_complete",
            "COMP_WORDS": words,
            "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
        }
        result = runner.invoke(cli, [], env=env, prog_name="paperlab")
        return [line.split(",", 1)[1] for line in result.stdout.splitlines()]

    assert complete("paperlab check t") == ["toy"]
    assert complete("paperlab check toy --claim two") == ["two-plus-two"]
