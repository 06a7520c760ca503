from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from repro.lab.claims import Verdict
from repro.lab.errors import BadOption
from repro.lab.library import Library
from repro.lab.runner import make_config, run_paper
from repro.lab.runs import latest_results


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


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("steps=0", "--set: steps: 0 is out of range (expected ≥ 1)"),
        ("steps=-5", "--set: steps: -5 is out of range (expected ≥ 1)"),
        ("lr=0", "--set: lr: 0.0 is out of range (expected (0, 1])"),
        ("lr=nan", "--set lr: expected a finite number, got 'nan'"),
        ("lr=inf", "--set lr: expected a finite number, got 'inf'"),
        ("widths=", "--set: widths: must not be empty"),
        ("widths=1,0", "--set: widths: 0 is out of range (expected ≥ 1)"),
    ],
)
def test_settings_out_of_range_are_refused_before_work(toy, override: str, message: str) -> None:
    with pytest.raises(BadOption) as info:
        make_config(toy.module(), quick=True, overrides=(override,))
    assert str(info.value) == message


def test_an_oversized_override_needs_confirmation(toy) -> None:
    module = toy.module()
    grown = r"about 100× the work of the full preset \(steps=1000, full preset 10\)"
    with pytest.raises(BadOption, match=grown):
        make_config(module, quick=True, overrides=("steps=1000",), confirmed=False)
    assert make_config(module, quick=True, overrides=("steps=1000",)).steps == 1000
    assert make_config(module, quick=True, overrides=("steps=999",), confirmed=False)
    # growth multiplies: 10× the steps and 10× the widths is 100× the work
    with pytest.raises(BadOption, match="about 100×"):
        make_config(module, False, ("steps=100", "widths=10,20"), confirmed=False)


def test_a_negative_seed_is_bad_input(toy) -> None:
    with pytest.raises(BadOption, match="--seed must be ≥ 0"):
        run_paper(toy, seed=-1)


def test_a_run_keeps_the_partial_folder_of_a_process_it_may_not_signal(
    toy, tmp_path: Path, monkeypatch
) -> None:
    """Another user's live process answers kill(pid, 0) with EPERM: its folder stays; a pid
    that does not exist (ESRCH) is stale and goes."""
    runs = tmp_path / "runs"
    theirs, gone = runs / "toy" / ".partial-424242-1", runs / "toy" / ".partial-424243-1"
    for folder in (theirs, gone):
        folder.mkdir(parents=True)

    def kill(pid: int, signal: int) -> None:
        if pid == 424242:
            raise PermissionError(1, "Operation not permitted")
        raise ProcessLookupError(3, "No such process")

    monkeypatch.setattr(os, "kill", kill)
    run_paper(toy, runs_dir=runs, claim_ids=("two-plus-two",))
    assert theirs.exists() and not gone.exists()


def test_stale_partial_folders_are_removed_by_the_next_run(toy, tmp_path: Path) -> None:
    import subprocess
    import sys

    runs = tmp_path / "runs"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()  # fmt: skip
    stale = runs / "toy" / f".partial-{dead}-1"
    live = runs / "toy" / f".partial-{os.getppid()}-2"  # a running process: left alone
    for folder in (stale, live):
        folder.mkdir(parents=True)
        (folder / "claims.json").write_text("[]")
    report = run_paper(toy, runs_dir=runs, claim_ids=("two-plus-two",))
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in (runs / "toy").iterdir()) == sorted(
        [live.name, report.run_dir.name]
    )


def test_colliding_stamps_get_a_suffix(toy, tmp_path: Path, monkeypatch) -> None:
    import repro.lab.runner as runner

    monkeypatch.setattr(runner, "new_stamp", lambda: "20260101T000000000000Z")
    runs = tmp_path / "runs"
    first = run_paper(toy, runs_dir=runs, claim_ids=("two-plus-two",))
    second = run_paper(toy, runs_dir=runs, claim_ids=("two-plus-two",))
    assert (first.run_dir.name, second.run_dir.name) == (
        "20260101T000000000000Z",
        "20260101T000000000000Z-2",
    )
    assert not second.save_error


@pytest.mark.parametrize("how", ["runs path is a file", "disk full at save"])
def test_a_failed_save_keeps_the_results(toy, tmp_path: Path, monkeypatch, how: str) -> None:
    runs = tmp_path / "runs"
    if how == "runs path is a file":
        runs.write_text("")
    else:
        import repro.lab.runner as runner

        def full(path, data):
            raise OSError(28, "No space left on device")

        monkeypatch.setattr(runner, "_write_json", full)
    report = run_paper(toy, runs_dir=runs, claim_ids=("two-plus-two",))
    assert [r.verdict for r in report.results] == [Verdict.VERIFIED]
    assert report.run_dir is None
    assert report.save_error.startswith("results not saved")
    assert ("Not a directory" in report.save_error) or ("No space left" in report.save_error)
    if runs.is_dir():
        assert [p.name for p in (runs / "toy").iterdir()] == []


def test_papers_checked_in_parallel_give_the_same_reports(library_dir: Path) -> None:
    from repro.lab.runner import run_papers

    toy = Library(library_dir).get("toy")
    events: list[tuple] = []
    serial = run_papers([toy, toy], jobs=1)
    parallel = run_papers([toy, toy], jobs=2, progress=lambda *e: events.append(e))

    def verdicts(reports):
        return [[(r.id, r.verdict, r.measured) for r in rep.results] for rep in reports]

    assert verdicts(parallel) == verdicts(serial)
    assert all(rep.paper == "toy" for rep in parallel)


def test_papers_start_longest_first_by_their_last_stored_run(tmp_path: Path) -> None:
    from repro.lab.library import Paper
    from repro.lab.runner import longest_first

    def stored(slug: str, stamp: str, seconds: float, preset: str = "quick") -> None:
        folder = tmp_path / slug / stamp
        folder.mkdir(parents=True)
        (folder / "run.json").write_text(json.dumps({"seconds": seconds, "preset": preset}))

    stored("fast", "20260101T000000Z", 1.0)
    stored("slow", "20260101T000000Z", 2.0)
    stored("slow", "20260102T000000Z", 30)  # the newest run counts, an int as well as a float
    stored("fast", "20260103T000000Z", 99.0, preset="full")  # another preset does not
    (tmp_path / "fast" / "20260104T000000Z").mkdir()
    (tmp_path / "fast" / "20260104T000000Z" / "run.json").write_text("[1, 2]")  # nor a bad file
    papers = [Paper(slug, tmp_path) for slug in ("fast", "slow", "new", "other-new")]
    assert longest_first(papers, tmp_path) == [2, 3, 1, 0]  # never run first, in given order
    assert longest_first(papers, None) == [0, 1, 2, 3]
    assert longest_first(papers, tmp_path, "full")[:3] == [1, 2, 3]
    # without stored runs, the longest repro.py goes first (a guess at the biggest experiment)
    for slug, lines in (("small", 1), ("big", 50)):
        (tmp_path / "code" / slug).mkdir(parents=True)
        (tmp_path / "code" / slug / "repro.py").write_text("x = 1\n" * lines)
    papers = [Paper(slug, tmp_path / "code" / slug) for slug in ("small", "big", "none")]
    assert longest_first(papers, None) == [1, 0, 2]


def test_stop_pool_terminates_the_running_workers() -> None:
    """`check -x` after a failure: a worker still inside a long claim is terminated, not left to
    run on as an orphan (shutdown() alone forgets the processes without stopping them)."""
    import multiprocessing
    import time
    from concurrent.futures import ProcessPoolExecutor

    from repro.lab.runner import _stop_pool

    pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn"))
    pool.submit(time.sleep, 120)
    deadline = time.monotonic() + 60
    while not (pool._processes and all(p.is_alive() for p in pool._processes.values())):
        assert time.monotonic() < deadline, "the worker did not start"
        time.sleep(0.05)
    workers = list(pool._processes.values())
    time.sleep(1.0)  # the worker is now inside time.sleep(120)
    _stop_pool(pool)
    # The executor's own thread reaps the workers too: while it does, a join here can return at
    # once with the exit code not yet recorded, so wait until it is (or 30 s have passed).
    deadline = time.monotonic() + 30
    for process in workers:
        while process.is_alive() and time.monotonic() < deadline:
            process.join(timeout=0.1)
        assert not process.is_alive()
