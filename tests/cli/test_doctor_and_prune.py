"""`paperlab doctor` and `paperlab runs --prune`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from repro.lab import doctor
from repro.lab.errors import BadOption
from repro.lab.runs import list_runs, prune_runs


def _fake_program(folder: Path, name: str, body: str = "exit 0") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return path


def test_find_browser_takes_chromium_or_chromium_browser(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(doctor.Path, "exists", lambda self: False)  # no /usr/bin/chromium
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert doctor.find_browser() is None
    ubuntu = _fake_program(tmp_path / "bin", "chromium-browser")
    assert doctor.find_browser() == str(ubuntu)
    debian = _fake_program(tmp_path / "bin", "chromium")
    assert doctor.find_browser() == str(debian)


def test_ci_asks_the_same_helper(tmp_path: Path) -> None:
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    assert "from repro.lab.doctor import find_browser" in ci
    _fake_program(tmp_path / "bin", "chromium-browser")
    code = "import sys; from repro.lab.doctor import find_browser; sys.exit(not find_browser())"
    env = {**os.environ, "PATH": f"{tmp_path / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run([sys.executable, "-c", code], env=env, cwd=Path(__file__).parents[2])
    assert done.returncode == 0


def test_fonts_are_read_from_fc_list(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert doctor.font_families(":lang=zh") is None  # no fc-list: cannot tell
    _fake_program(
        tmp_path / "bin",
        "fc-list",
        'printf "WenQuanYi Micro Hei,文泉驛微米黑\\nNoto Sans CJK SC,Noto Sans CJK SC Regular\\n'
        'WenQuanYi Micro Hei,x\\n"',
    )
    assert doctor.font_families(":lang=zh") == ["Noto Sans CJK SC", "WenQuanYi Micro Hei"]


def test_doctor_json_names_folders_sizes_and_versions(invoke, library_dir: Path, tmp_path) -> None:
    invoke("check", "toy", "--claim", "two-plus-two")
    result = invoke("doctor", "--json")
    assert result.exit_code == 0
    found = json.loads(result.stdout)
    assert found["folders"]["papers"] == {
        "path": str(library_dir.resolve()),
        "papers": 1,
        "bytes": sum(p.stat().st_size for p in library_dir.rglob("*") if p.is_file()),
    }
    runs = found["folders"]["runs"]
    assert runs["path"] == str((tmp_path / "runs").resolve()) and runs["runs"] == 1
    assert runs["bytes"] > 0
    import torch

    assert found["versions"]["torch"]["version"] == torch.__version__
    assert found["versions"]["torch"]["build"] == (
        f"CUDA {torch.version.cuda}" if torch.version.cuda else "CPU"
    )
    assert found["versions"]["commit"] == doctor.git_commit()[0]
    assert set(found["extras"]) >= {"test", "conformance", "triton"}


def test_doctor_says_what_is_missing_and_how_to_fix_it(invoke, monkeypatch) -> None:
    monkeypatch.setattr(doctor, "find_browser", lambda: None)
    monkeypatch.setattr(doctor, "font_families", lambda pattern: [])
    monkeypatch.setattr(doctor, "_dist_version", lambda name: None)
    found = json.loads(invoke("doctor", "--json").stdout)
    fixes = {p["fix"] for p in found["problems"] if p["level"] == "missing"}
    assert {
        "sudo apt-get install -y chromium",
        "sudo apt-get install -y fonts-wqy-microhei",
        "sudo apt-get install -y fonts-lmodern",
        doctor.install_suite_command(),
    } <= fixes
    text = invoke("doctor").stdout
    assert "missing: no Chromium (`chromium` or `chromium-browser`)" in text
    assert "  fix: sudo apt-get install -y chromium" in text
    assert "[conformance]  missing: transformers —" in text


def test_the_suite_extras_are_those_ci_installs(tmp_path: Path) -> None:
    ci = (Path(__file__).resolve().parents[2] / ".ci" / "run").read_text()
    command = doctor.install_suite_command()
    assert command.endswith("]'") and f"{command} && python -m pytest" in ci
    (tmp_path / ".ci").mkdir()
    (tmp_path / ".ci" / "run").write_text("pip install -e '.[test,gpu]' && python -m pytest\n")
    assert doctor.suite_extras(tmp_path) == ("test", "gpu")
    assert doctor.suite_extras(tmp_path / "nowhere") == doctor.SUITE_EXTRAS


def test_doctor_flags_a_cuda_build_without_a_gpu(monkeypatch) -> None:
    import torch

    monkeypatch.setattr(torch.version, "cuda", "12.8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    problems: list = []
    info = doctor._torch_info(problems)
    assert info["build"] == "CUDA 12.8" and info["cuda_devices"] == []
    assert problems[0].fix == f"pip uninstall -y torch && {doctor.CPU_TORCH}"


def _runs(tmp_path: Path, slug: str, stamps: list[str]) -> Path:
    root = tmp_path / "runs"
    for stamp in stamps:
        (root / slug / stamp).mkdir(parents=True)
        (root / slug / stamp / "claims.json").write_text("[]" + " " * 98)
    return root


STAMPS = ["20260101T000000Z", "20260102T000000Z", "20260103T000000Z", "20260103T000000Z-2"]


def test_prune_keeps_the_newest_runs_of_each_paper(tmp_path: Path) -> None:
    root = _runs(tmp_path, "a", STAMPS)
    _runs(tmp_path, "b", STAMPS[:1])
    (root / "a" / ".partial-999999999-1").mkdir()  # a dead process's half run
    dry = prune_runs(root, ["a", "b"], 2, dry_run=True)
    assert [(p.slug, p.stamp, p.size, p.deleted) for p in dry] == [
        ("a", STAMPS[0], 100, False), ("a", STAMPS[1], 100, False),
    ]  # fmt: skip
    assert len(list_runs(root, ["a"])) == 4 and (root / "a" / ".partial-999999999-1").exists()
    done = prune_runs(root, ["a", "b"], 2)
    assert [p.stamp for p in done if p.deleted] == STAMPS[:2]
    assert [r.stamp for r in list_runs(root, ["a", "b"])] == [STAMPS[3], STAMPS[2], STAMPS[0]]
    assert not (root / "a" / ".partial-999999999-1").exists()
    assert prune_runs(root, ["a", "b", "missing"], 1)[0].stamp == STAMPS[2]
    assert [r.stamp for r in list_runs(root, ["a"])] == [STAMPS[3]]  # the newest stays
    with pytest.raises(BadOption, match="newest run of a paper is always kept"):
        prune_runs(root, ["a"], 0)


def test_runs_prune_command(invoke, tmp_path: Path) -> None:
    _runs(tmp_path, "toy", STAMPS)
    dry = invoke("runs", "--prune", "--keep", "3", "--dry-run")
    assert dry.exit_code == 0
    assert dry.stdout == f"would delete toy/{STAMPS[0]} (100 B)\n"
    assert dry.stderr == (
        f"would delete 1 run of 1 paper (100 B) in {tmp_path / 'runs'}, keeping the newest 3 "
        "of each; run without --dry-run to delete them\n"
    )
    assert len(list_runs(tmp_path / "runs", ["toy"])) == 4
    done = json.loads(invoke("runs", "toy", "--prune", "--keep", "1", "--json").stdout)
    assert [(r["stamp"], r["deleted"]) for r in done] == [(s, True) for s in STAMPS[:3]]
    assert [r.stamp for r in list_runs(tmp_path / "runs", ["toy"])] == [STAMPS[3]]
    assert invoke("runs", "--prune").stderr.startswith("deleted 0 runs of 0 papers (0 B)")


ALONE = "Error: --keep and --dry-run go with --prune: paperlab runs --prune --keep N\n"


@pytest.mark.parametrize(
    ("args", "error"),
    [
        (["--keep", "2"], ALONE),
        (["--dry-run"], ALONE),
        (
            ["--prune", "--keep", "0"],
            "Error: --keep must be ≥ 1 (the newest run of a paper is always kept), got 0\n",
        ),
        (["toy", "--prune", "--diff", "a", "b"], "Error: --prune and --diff cannot be combined\n"),
    ],
)
def test_runs_prune_refuses_bad_options(invoke, args: list[str], error: str) -> None:
    result = invoke("runs", *args)
    assert result.exit_code == 2
    assert result.stderr == error


def test_listing_and_pruning_never_import_torch(library_dir: Path, tmp_path: Path) -> None:
    script = """
import sys
import click
from paperlab import cli
for args in (["show", "toy", "--json"], ["runs"], ["runs", "--prune", "--dry-run"],
             ["--version"], ["check", "-k", "("], ["run", "toy", "--device", "gpu"]):
    try:
        cli.main(args, prog_name="paperlab", standalone_mode=False)
    except click.ClickException:  # --device gpu
        pass
assert "torch" not in sys.modules, "torch was imported"
print("no-torch")
"""
    out = subprocess.run(
        [sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert out.stdout.strip().endswith("no-torch"), out.stderr
