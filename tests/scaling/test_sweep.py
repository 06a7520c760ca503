from __future__ import annotations

from pathlib import Path

import pytest

import repro.scaling.facts_runs as facts_runs
from repro.scaling import sweep
from repro.scaling.sweep import run_sweep

CODE = [facts_runs]


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path / "cache"))


def test_an_interrupted_sweep_resumes_where_it_stopped() -> None:
    calls = []

    def run_point(point: dict) -> dict:
        if point["i"] == 2 and not calls.count("resumed"):
            raise KeyboardInterrupt  # the user stops the sweep at the third point
        calls.append(point["i"])
        return {"square": point["i"] ** 2}

    points = [{"i": i} for i in range(4)]
    with pytest.raises(KeyboardInterrupt):
        run_sweep("t", points, run_point, CODE)
    assert calls == [0, 1]
    calls.append("resumed")
    out = run_sweep("t", points, run_point, CODE)
    assert [r["square"] for r in out] == [0, 1, 4, 9]
    assert calls == [0, 1, "resumed", 2, 3]  # the first two came from the cache
    progress = []
    run_sweep("t", points, run_point, CODE, progress=lambda d, c, n: progress.append((c, n)))
    assert calls[-1] == 3 and progress == [(4, 4)]  # everything cached: no work, one report


def test_parallel_points_match_serial_ones(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    point = {
        "n_keys": 32, "zipf_s": 1.5, "vocab_size": 8, "noise": 0.1, "code_dim": 4,
        "source_seed": 1, "width": 4, "n_hidden": 1, "seed": 0, "steps": 5, "lr": 1e-2,
        "device": "cpu",
    }  # fmt: skip
    points = [point, {**point, "width": 6}]
    serial = run_sweep("s", points, facts_runs.converged_run, CODE)
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path / "other"))
    assert not any(sweep.is_cached("s", p, CODE) for p in points)
    parallel = run_sweep("s", points, facts_runs.converged_run, CODE, jobs=2)
    assert parallel == serial
