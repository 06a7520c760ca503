"""One way to ask: --set suggestions before torch, completion filtered by the papers on the
line, --device validated, show --json, --version with the commit, one duration format, runs
--diff with nested metrics flattened."""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from paperlab import cli
from repro.lab.doctor import git_commit
from repro.lab.format import format_bytes, format_seconds, shorten
from repro.lab.library import Library
from repro.lab.note import load_note
from repro.lab.runner import setting_names
from repro.lab.runs import _flat

REPO = Path(__file__).resolve().parents[2]


def test_an_unknown_set_key_gets_a_suggestion_before_torch_is_imported(
    library_dir: Path, tmp_path: Path
) -> None:
    script = """
import sys
from paperlab import cli
code = cli.main(["run", "toy", "--set", "stpes=3"], prog_name="paperlab", standalone_mode=False)
print("exit", code)
assert "torch" not in sys.modules, "torch was imported"
print("no-torch")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.split() == ["exit", "2", "no-torch"], out.stdout + out.stderr
    assert out.stderr == (
        "Error: --set: unknown setting 'stpes'; did you mean 'steps'? "
        "(settings: steps, lr, widths, verbose)\n"
    )


def test_settings_read_statically_match_every_papers_config() -> None:
    for paper in Library(REPO / "papers").papers.values():
        presets = getattr(paper.module(), "PRESETS", None)
        fields = [f.name for f in dataclasses.fields(presets["full"])] if presets else None
        assert setting_names(paper.repro_path) == fields, paper.slug


def test_setting_names_give_up_where_the_source_cannot_tell(tmp_path: Path) -> None:
    path = tmp_path / "repro.py"
    path.write_text("class Config(Base):\n    steps: int = 1\n")
    assert setting_names(path) is None  # inherited fields live elsewhere: import to know
    path.write_text("from typing import ClassVar\nclass Config:\n    a: int = 1\n"
                    "    K: ClassVar[int] = 2\n    b = 3\n")  # fmt: skip
    assert setting_names(path) == ["a"]
    path.write_text("def broken(:\n")
    assert setting_names(path) is None


def _complete(words: str) -> list[str]:
    env = {
        "_PAPERLAB_COMPLETE": "bash_complete",
        "COMP_WORDS": words,
        "COMP_CWORD": str(len(words.split()) - (0 if words.endswith(" ") else 1)),
    }
    result = CliRunner().invoke(cli, [], env=env, prog_name="paperlab")
    return [line.split(",", 1)[1] for line in result.stdout.splitlines() if line]


def test_claim_completion_is_filtered_by_the_papers_on_the_line(two_papers: Path) -> None:
    toy = ["bleu", "crashes", "mean-loss", "needs-gpu", "two-plus-two", "wrong-sum"]
    assert _complete("paperlab check toy --claim ") == toy
    assert _complete("paperlab check slow --claim ") == sorted([*toy[:4], "slow-two", toy[5]])
    assert _complete("paperlab check --claim ") == sorted({*toy, "slow-two"})
    assert _complete("paperlab check toy --claim s") == []
    assert _complete("paperlab check slow --claim s") == ["slow-two"]


def test_set_keys_and_devices_complete(library_dir: Path) -> None:
    assert _complete("paperlab run toy --set ") == ["lr=", "steps=", "verbose=", "widths="]
    assert _complete("paperlab run toy --set st") == ["steps="]
    assert _complete("paperlab run toy --device c") == ["cpu", "cuda"]


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "CPU", "cuda:", "mps:0"])
def test_device_is_validated(invoke, device: str) -> None:
    result = invoke("run", "toy", "--device", device)
    assert result.exit_code == 2
    assert (
        f"Error: Invalid value for '--device': expected cpu, cuda, cuda:N or mps, got '{device}'"
        in result.stderr
    )


def test_a_well_formed_device_that_is_not_here_is_one_error(invoke) -> None:
    import torch

    if torch.cuda.device_count() >= 8:
        pytest.skip("this machine has cuda:7")
    result = invoke("check", "toy", "--device", "cuda:7")
    assert result.exit_code == 2
    expected = (
        "Error: --device cuda:7: CUDA is not available on this machine\n"
        if not torch.cuda.is_available()
        else f"Error: --device cuda:7: this machine has {torch.cuda.device_count()} CUDA device(s)"
        "\n"
    )
    assert result.stderr == expected


def test_show_json_is_the_note(invoke, library_dir: Path) -> None:
    result = invoke("show", "toy", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == load_note(library_dir / "toy" / "note.yaml").model_dump(
        mode="json"
    )
    assert (
        invoke("show", "tyo", "--json").stderr
        == "Error: unknown paper 'tyo'; did you mean 'toy'?\n"
    )


def test_version_prints_the_commit(invoke) -> None:
    result = invoke("--version")
    assert result.exit_code == 0
    commit, dirty = git_commit()
    if not commit:
        assert "commit unknown (not a git checkout)" in result.stdout
        return
    assert result.stdout.startswith("paperlab ")
    assert f", commit {commit[:12]}" in result.stdout
    assert result.stdout.endswith(" (with local changes)\n" if dirty else f"{commit[:12]}\n")


def test_git_commit_sees_local_changes(tmp_path: Path) -> None:
    def git(*args: str) -> None:
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "f").write_text("a")
    git("add", "f")
    git("-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "x")
    commit, dirty = git_commit(tmp_path)
    assert len(commit) == 40 and not dirty
    (tmp_path / "f").write_text("b")
    assert git_commit(tmp_path) == (commit, True)
    assert git_commit(tmp_path / "nowhere") == ("", False)


def test_one_duration_and_size_format() -> None:
    assert [format_seconds(s) for s in (59.94, 59.96, 61.5, 3599.6)] == [
        "59.9 s", "1 min 00 s", "1 min 02 s", "1 h 00 min",
    ]  # fmt: skip
    assert [format_bytes(n) for n in (0, 999, 1000, 999_949, 999_960, 12_345_678)] == [
        "0 B", "999 B", "1.0 kB", "999.9 kB", "1.0 MB", "12.3 MB",
    ]  # fmt: skip


def test_shorten_cuts_at_a_word() -> None:
    text = "The LoRA update has 256 times fewer trainable parameters than full fine-tuning"
    assert shorten(text, 200) == text
    assert shorten(text, 40) == "The LoRA update has 256 times fewer…"
    assert len(shorten(text, 40)) <= 40
    assert shorten("a\nb   c", 10) == "a b c"
    assert shorten("x" * 50, 10) == "x" * 9 + "…"  # no space to cut at


def test_nested_metrics_flatten_to_dotted_keys() -> None:
    metrics = {"seeds": [{"gap": 1.5, "loss": {"a": 1}}, {"gap": 2}], "curve": [1, 2], "e": {}}
    assert _flat(metrics) == {
        "seeds.0.gap": 1.5, "seeds.0.loss.a": 1, "seeds.1.gap": 2, "curve": [1, 2], "e": {},
    }  # fmt: skip


def _stored(runs: Path, stamp: str, metrics: dict) -> None:
    folder = runs / "toy" / stamp
    folder.mkdir(parents=True)
    (folder / "metrics.json").write_text(json.dumps(metrics))
    (folder / "run.json").write_text(json.dumps({"preset": "quick", "seconds": 75}))


def test_runs_diff_shows_nested_metrics_side_by_side(invoke, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    curve = [float(i) for i in range(40)]
    _stored(runs, "20260101T000000Z", {"per_seed": [{"gap": 0.5}, {"gap": 1.0}], "curve": curve})
    later = {"per_seed": [{"gap": 0.75}, {"gap": 1.0}], "curve": curve[::-1]}
    _stored(runs, "20260102T000000Z", later)
    table = invoke("runs", "toy", "--diff", "previous", "latest").stdout
    row = next(line for line in table.splitlines() if "per_seed.0.gap" in line)
    assert [cell.strip() for cell in row.split("│")[3:6]] == ["0.5", "0.75", "+0.25 (+50.0%)"]
    assert "per_seed.1.gap" not in table  # unchanged
    curve_row = next(line for line in table.splitlines() if " curve " in line)
    assert (
        "[0, 1, 2, 3, 4, 5, … +34]" in curve_row and "[39, 38, 37, 36, 35, 34, … +34]" in curve_row
    )
    assert len(table.splitlines()) == 7  # title, 3 rule lines, header, 2 rows
    listing = invoke("runs", "toy").stdout
    assert "1 min 15 s" in listing
