"""How `--device` reaches a paper: through `ctx.device`, unless its Config says CPU_ONLY (the
paper runs on the CPU, with one `note:` line) or CPU_EXPERIMENT (the experiment is CPU work by
design; the device still reaches the timing checks)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from paperlab import cli
from repro.cli.checks import device_notes
from repro.lab import runner
from repro.lab.library import Library
from repro.lab.runner import RunReport, run_paper
from repro.lab.settings import device_limit


@pytest.fixture
def toy(library_dir: Path) -> Path:
    """The toy paper, its experiment reporting the device it was given."""
    repro = library_dir / "toy" / "repro.py"
    text = repro.read_text()
    old = 'return {"loss": loss, "steps": cfg.steps}'
    assert old in text
    repro.write_text(
        text.replace(old, 'return {"loss": loss, "steps": cfg.steps, "device": ctx.device}')
    )
    return repro


def declare(repro: Path, line: str) -> None:
    text = repro.read_text()
    head = "class Config:\n"
    repro.write_text(text.replace(head, f"{head}    {line}\n"))


@pytest.fixture
def any_device(monkeypatch: pytest.MonkeyPatch) -> None:
    """As on a machine with every device (the environment record asks no GPU for its name)."""
    monkeypatch.setattr(runner, "resolve_device", lambda device: device)
    real = runner.environment
    monkeypatch.setattr(
        runner, "environment", lambda device, seed: {**real("cpu", seed), "device": device}
    )


def run_toy(library_dir: Path, device: str) -> RunReport:
    paper = Library(library_dir).get("toy")
    return run_paper(paper, device=device, claim_ids=("two-plus-two",), experiment=True)


def test_the_device_reaches_the_experiment(toy: Path, library_dir: Path) -> None:
    report = run_toy(library_dir, "cpu")
    assert report.metrics["device"] == "cpu"
    assert "device_note" not in report.environment


def test_an_undeclared_paper_gets_the_device_asked_for(
    toy: Path, library_dir: Path, any_device: None
) -> None:
    report = run_toy(library_dir, "cuda")
    assert report.metrics["device"] == "cuda" and report.environment["device"] == "cuda"


def test_a_cpu_only_paper_runs_on_the_cpu_and_says_so(
    toy: Path, library_dir: Path, any_device: None
) -> None:
    declare(toy, 'CPU_ONLY = "sums of two numbers"')
    report = run_toy(library_dir, "cuda")
    assert report.metrics["device"] == "cpu" and report.environment["device"] == "cpu"
    assert report.environment["device_requested"] == "cuda"
    assert report.environment["device_note"] == (
        "toy runs on the CPU only: sums of two numbers (--device cuda not used)"
    )
    assert run_toy(library_dir, "cpu").environment.get("device_note") is None  # nothing to say


def test_a_cpu_experiment_paper_keeps_the_device_for_its_checks(
    toy: Path, library_dir: Path, any_device: None
) -> None:
    declare(toy, 'CPU_EXPERIMENT = "exact sums"')
    report = run_toy(library_dir, "cuda:1")
    assert report.metrics["device"] == "cuda:1"
    assert report.environment["device_note"] == (
        "toy: the experiment runs on the CPU (exact sums); --device cuda:1 reaches its timing "
        "checks"
    )


def test_run_says_it_in_one_line_and_still_runs(
    toy: Path, library_dir: Path, any_device: None
) -> None:
    declare(toy, 'CPU_ONLY = "sums of two numbers"')
    result = CliRunner().invoke(
        cli, ["run", "toy", "--device", "cuda", "--no-save", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 1  # the toy's failing claims, as on the CPU
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: toy runs on the CPU only: sums of two numbers (--device cuda not used)"]
    assert json.loads(result.stdout)["metrics"]["device"] == "cpu"


def test_run_seeds_says_it_once(toy: Path, library_dir: Path, any_device: None) -> None:
    declare(toy, 'CPU_ONLY = "sums of two numbers"')
    result = CliRunner().invoke(
        cli, ["run", "toy", "--device", "cuda", "--no-save", "--seeds", "0,1", "--json"]
    )
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: toy runs on the CPU only: sums of two numbers (--device cuda not used)"]


def test_check_says_it_too(toy: Path, library_dir: Path, any_device: None) -> None:
    declare(toy, 'CPU_ONLY = "sums of two numbers"')
    result = CliRunner().invoke(cli, ["check", "toy", "--device", "cuda", "--no-save", "--json"])
    assert result.exit_code == 1  # the toy's failing claims
    notes = [line for line in result.stderr.splitlines() if line.startswith("note:")]
    assert notes == ["note: toy runs on the CPU only: sums of two numbers (--device cuda not used)"]


def test_check_names_every_cpu_only_paper_in_one_line() -> None:
    def report(slug: str, limit: str | None) -> RunReport:
        env = {"device_limit": limit, "device_note": f"{slug}: why"} if limit else {}
        return RunReport(slug, {}, None, [], environment=env)

    reports = [
        report("a", "CPU_ONLY"), report("b", None), report("c", "CPU_ONLY"),
        report("d", "CPU_EXPERIMENT"),
    ]  # fmt: skip
    assert device_notes(reports, "cuda") == [
        "note: 2 papers run on the CPU only (--device cuda not used; `paperlab settings SLUG` "
        "says why): a, c",
        "note: d: why",
    ]
    assert device_notes(reports[:2], "cuda") == ["note: a: why"]
    assert device_notes([reports[1]], "cuda") == []


def test_settings_shows_the_reason(toy: Path, library_dir: Path) -> None:
    declare(toy, 'CPU_ONLY = "sums of two numbers"')
    result = CliRunner().invoke(cli, ["settings", "toy"], catch_exceptions=False)
    assert result.exit_code == 0
    assert "toy runs on the CPU only: sums of two numbers" in result.stderr
    assert "steps" in result.stdout


@pytest.mark.parametrize("reason", ["", "   ", 3, True])
def test_a_declaration_is_a_reason(reason: object) -> None:
    config = type("Config", (), {"CPU_ONLY": reason})
    with pytest.raises(TypeError, match="Config.CPU_ONLY must be the reason, as text"):
        device_limit(config)
    assert device_limit(type("Config", (), {})) is None
    assert device_limit(None) is None
