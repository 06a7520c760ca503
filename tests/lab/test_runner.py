from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.lab.claims import Verdict
from repro.lab.errors import BadOption
from repro.lab.library import Library
from repro.lab.runner import latest_results, make_config, run_paper


@pytest.fixture
def toy(library_dir: Path):
    return Library(library_dir).get("toy")


def test_one_crashing_claim_never_stops_the_others(toy, tmp_path: Path) -> None:
    report = run_paper(toy, runs_dir=tmp_path / "runs")
    verdicts = {r.id: r.verdict for r in report.results}
    assert verdicts == {
        "two-plus-two": Verdict.VERIFIED,
        "wrong-sum": Verdict.FAILED,
        "crashes": Verdict.ERROR,
        "needs-gpu": Verdict.SKIPPED,
        "mean-loss": Verdict.VERIFIED,
        "bleu": Verdict.CITED,
    }
    crashed = next(r for r in report.results if r.id == "crashes")
    assert crashed.message == "RuntimeError: boom"
    assert not report.ok


def test_results_are_stored_completely(toy, tmp_path: Path) -> None:
    report = run_paper(toy, runs_dir=tmp_path / "runs", experiment=True, seed=7)
    files = sorted(p.name for p in report.run_dir.iterdir())
    assert files == [
        "claims.json", "config.json", "environment.json", "log.txt", "metrics.json", "run.json"
    ]  # fmt: skip
    env = json.loads((report.run_dir / "environment.json").read_text())
    assert env["seed"] == 7 and env["torch"] and env["python"]
    assert json.loads((report.run_dir / "metrics.json").read_text())["steps"] == 3
    assert [p.name for p in (tmp_path / "runs" / "toy").iterdir()] == [report.run_dir.name]


def test_the_experiment_runs_once_and_is_shared(toy) -> None:
    module = toy.module()
    before = module.CALLS["experiment"]
    run_paper(toy, experiment=True)
    assert module.CALLS["experiment"] == before + 1


def test_an_interrupted_run_leaves_nothing(toy, tmp_path: Path, monkeypatch) -> None:
    module = toy.module()

    def interrupted(cfg, ctx):
        raise KeyboardInterrupt

    monkeypatch.setattr(module, "experiment", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_paper(toy, runs_dir=tmp_path / "runs", experiment=True)
    assert list((tmp_path / "runs" / "toy").iterdir()) == []


def test_latest_results_prefer_the_newest_run(toy, tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    run_paper(toy, runs_dir=runs, claim_ids=("two-plus-two", "wrong-sum"))
    run_paper(toy, runs_dir=runs, claim_ids=("two-plus-two",))
    latest = latest_results(runs, "toy")
    assert set(latest) == {"two-plus-two", "wrong-sum"}
    assert latest["wrong-sum"].measured == 5


def test_overrides_are_checked_against_the_config(toy) -> None:
    module = toy.module()
    cfg = make_config(module, quick=False, overrides=("steps=5", "widths=1, 2,4", "verbose=yes"))
    assert (cfg.steps, cfg.widths, cfg.verbose, cfg.lr) == (5, (1, 2, 4), True, 0.5)
    assert make_config(module, quick=True).steps == 3
    with pytest.raises(BadOption, match=r"unknown setting 'step'"):
        make_config(module, quick=True, overrides=("step=5",))
    with pytest.raises(BadOption, match=r"--set lr: expected float, got 'fast'"):
        make_config(module, quick=True, overrides=("lr=fast",))
    with pytest.raises(BadOption, match=r"--set expects key=value, got 'steps'"):
        make_config(module, quick=True, overrides=("steps",))


def test_cuda_request_without_cuda_is_bad_input(toy) -> None:
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(BadOption, match="CUDA is not available"):
        run_paper(toy, device="cuda")
