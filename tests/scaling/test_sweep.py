from __future__ import annotations

from concurrent.futures import Executor, Future
from pathlib import Path
from typing import Any

import pytest
import torch

import repro.scaling.facts_runs as facts_runs
from repro import cluster
from repro.scaling import sweep
from repro.scaling.sweep import run_sweep

CODE = [facts_runs]
CODE_NAMES = [facts_runs.__name__]


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


# --- the three ways a sweep runs its uncached points: here, a local pool, the cluster --------


class _InlinePool(Executor):
    """A stand-in for the sweep's ProcessPoolExecutor (and the cluster's executor) that runs
    each task when it is submitted, in this process, and records how it was opened."""

    opened: list[dict] = []

    def __init__(self, **kwargs: Any) -> None:
        self.opened.append(kwargs)
        self.submitted: list[tuple] = []

    def submit(self, fn, /, *args, **kwargs):  # type: ignore[override]
        self.submitted.append((fn, args))
        future: Future = Future()
        future.set_result(fn(*args, **kwargs))
        return future


def _square(point: dict) -> dict:
    return {"square": point["i"] ** 2, "i": point["i"]}


@pytest.fixture
def inline_pool(monkeypatch: pytest.MonkeyPatch):
    """The local pool runs inline; torch's thread count (a worker sets 1) is restored after."""
    threads = torch.get_num_threads()
    monkeypatch.setattr(_InlinePool, "opened", [])
    monkeypatch.setattr(sweep, "ProcessPoolExecutor", _InlinePool)
    yield _InlinePool
    torch.set_num_threads(threads)


def test_progress_counts_the_cached_points_first_then_each_computed_one() -> None:
    points = [{"i": i} for i in (3, 1, 4, 1.5, 9)]
    run_sweep("p", [points[1], points[3]], _square, CODE)  # two of five cached
    seen: list[tuple] = []
    out = run_sweep("p", points, _square, CODE, progress=lambda *a: seen.append(a))
    assert out == [{"square": p["i"] ** 2, "i": p["i"]} for p in points]
    assert seen == [("sweep", 2, 5), ("sweep", 3, 5), ("sweep", 4, 5), ("sweep", 5, 5)]
    seen.clear()
    run_sweep("p", points, _square, CODE, progress=lambda *a: seen.append(a), description="d")
    assert seen == [("d", 5, 5)]


@pytest.mark.parametrize(("jobs", "n_todo", "pooled"), [(1, 3, False), (2, 1, False), (2, 2, True)])
def test_a_pool_opens_only_for_several_jobs_and_several_uncached_points(
    inline_pool, jobs: int, n_todo: int, pooled: bool
) -> None:
    points = [{"i": i} for i in range(n_todo)]
    out = run_sweep("pool", points, _square, CODE, jobs=jobs)
    assert out == [{"square": i * i, "i": i} for i in range(n_todo)]
    assert bool(inline_pool.opened) == pooled


def test_the_pool_spawns_as_many_workers_as_jobs_allow_and_caches_each_point(
    inline_pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    import repro.lab.settings as settings

    monkeypatch.setattr(settings.os, "cpu_count", lambda: 48)
    points = [{"i": i} for i in (5, 2, 7)]
    run_sweep("pool", [points[1]], _square, CODE)  # cached: not sent to the pool
    seen: list[tuple] = []
    torch.set_num_threads(3)
    out = run_sweep("pool", points, _square, CODE, jobs=8, progress=lambda *a: seen.append(a))
    assert out == [{"square": 25, "i": 5}, {"square": 4, "i": 2}, {"square": 49, "i": 7}]
    ((opened),) = inline_pool.opened
    assert opened["max_workers"] == 2  # min(jobs 8, 48 CPUs, 2 uncached points)
    assert opened["mp_context"].get_start_method() == "spawn"
    assert seen == [("sweep", 1, 3), ("sweep", 2, 3), ("sweep", 3, 3)]
    assert torch.get_num_threads() == 1  # what a worker sets before it trains
    assert all(sweep.is_cached("pool", p, CODE) for p in points)
    again = run_sweep("pool", points, lambda p: pytest.fail("recomputed"), CODE, jobs=8)
    assert again == out
    inline_pool.opened.clear()
    run_sweep("pool", [{"i": i} for i in (11, 12, 13)], _square, CODE, jobs=2)
    assert [o["max_workers"] for o in inline_pool.opened] == [2]  # min(jobs 2, 48 CPUs, 3 points)


def test_a_worker_runs_its_point_through_the_cache_by_module_names(inline_pool) -> None:
    point = {"i": 6}
    assert sweep._run_cached("w", point, _square, CODE_NAMES) == _square(point)
    assert sweep.is_cached("w", point, CODE) and not sweep.is_cached("w", point, [sweep])
    assert torch.get_num_threads() == 1
    other = sweep._run_cached("w", point, lambda p: {"other": p["i"]}, [sweep.__name__])
    assert other == {"other": 6}  # other code: its own entry
    again = sweep._run_cached("w", point, lambda p: pytest.fail("recomputed"), CODE_NAMES)
    assert again == _square(point)


def test_on_a_cluster_the_workers_compute_and_this_machine_caches(
    inline_pool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(cluster, "code_fingerprint", lambda root=None: "this code")
    monkeypatch.setattr(cluster, "_where", lambda: "worker-1")  # no Dask import
    executor = _InlinePool()
    points = [{"i": i} for i in (4, 8, 3)]
    run_sweep("c", [points[0]], _square, CODE)
    token = cluster._current.set(executor)
    try:
        seen: list[tuple] = []
        out = run_sweep("c", points, _square, CODE, jobs=1, progress=lambda *a: seen.append(a))
    finally:
        cluster._current.reset(token)
    assert out == [{"square": 16, "i": 4}, {"square": 64, "i": 8}, {"square": 9, "i": 3}]
    assert [args[2] for _, args in executor.submitted] == points[1:]  # only the uncached
    assert seen == [("sweep", 1, 3), ("sweep", 2, 3), ("sweep", 3, 3)]
    assert all(sweep.is_cached("c", p, CODE) for p in points)
    assert run_sweep("c", points, lambda p: pytest.fail("recomputed"), CODE) == out
