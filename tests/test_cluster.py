"""`--executor`: a sweep and `run --seeds` on a local 2-worker Dask cluster equal local runs;
a killed worker's task is retried; a worker on other code is refused.

The tests that start a cluster are marked slow (run them with `-m slow`): a 2-process
LocalCluster inside an xdist worker once crashed that worker (a stray KeyboardInterrupt while
the cluster shut down), which aborts the whole default run."""

from __future__ import annotations

import json
import os
import signal
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from click.testing import CliRunner

from repro import cluster
from repro.lab.errors import BadOption

distributed = pytest.importorskip("distributed", reason="needs the [cluster] extra")

from paperlab import cli  # noqa: E402
from repro.scaling import facts_runs  # noqa: E402
from repro.scaling.sweep import run_sweep  # noqa: E402

CODE = [facts_runs]


def _points(n: int, steps: int = 30) -> list[dict]:
    return [
        {"n_keys": 64, "zipf_s": 1.1, "vocab_size": 8, "noise": 0.1, "code_dim": 8,
         "source_seed": 1234, "width": w, "n_hidden": 1, "seed": 7, "steps": steps,
         "lr": 0.05, "device": "cpu"}
        for w in (4, 8, 16, 32)[:n]
    ]  # fmt: skip


CLUSTER = pytest.mark.slow


@pytest.fixture(scope="module")
def dask_cluster():
    cluster_ = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None,
        silence_logs=40,
    )  # fmt: skip
    yield cluster_
    cluster_.close()


@pytest.fixture
def fresh_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.mark.parametrize(
    ("text", "spec"),
    [
        ("local", cluster.ExecutorSpec("local")),
        ("processes", cluster.ExecutorSpec("processes")),
        ("dask://host:8786", cluster.ExecutorSpec("dask", "host:8786")),
        ("tcp://10.0.0.1:8786", cluster.ExecutorSpec("dask", "10.0.0.1:8786")),
    ],
)
def test_parse_executor(text: str, spec: cluster.ExecutorSpec) -> None:
    assert cluster.parse_executor(text) == spec


@pytest.mark.parametrize("bad", ["dask://host", "dask://host:0", "ray://x:1", "threads"])
def test_a_bad_executor_is_one_error(bad: str) -> None:
    with pytest.raises(BadOption, match="--executor"):
        cluster.parse_executor(bad)


def test_other_code_is_refused_and_the_same_code_runs() -> None:
    with pytest.raises(cluster.CodeMismatch, match="other code than the client"):
        cluster.run_checked("0" * 64, len, "abc")
    assert cluster.run_checked(cluster.code_fingerprint(), len, "abc")[0] == 3


def test_the_fingerprint_changes_with_the_code(tmp_path: Path) -> None:
    (tmp_path / "repro").mkdir()
    (tmp_path / "papers").mkdir()
    (tmp_path / "repro" / "a.py").write_text("x = 1\n")
    before = cluster.code_fingerprint.__wrapped__(tmp_path)
    (tmp_path / "repro" / "a.py").write_text("x = 2\n")
    assert cluster.code_fingerprint.__wrapped__(tmp_path) != before


@CLUSTER
def test_a_sweep_on_the_cluster_equals_the_local_sweep(
    dask_cluster, fresh_cache, tmp_path, monkeypatch
) -> None:
    points = _points(4)
    local = run_sweep("cluster-test", points, facts_runs.converged_run, CODE)
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path / "cache2"))  # empty: all on the cluster
    with cluster.use(cluster.ExecutorSpec("dask", dask_cluster.scheduler_address)):
        remote = run_sweep("cluster-test", points, facts_runs.converged_run, CODE)
        placed = cluster.placements()
    assert remote == local  # bit for bit: the same seeds, one thread each
    assert sum(placed.values()) == 4 and all(w.startswith("tcp://") for w in placed)
    # the client cached what the workers computed: a rerun reads it back without the cluster
    again = run_sweep("cluster-test", points, lambda p: pytest.fail("recomputed"), CODE)
    assert again == local


@CLUSTER
def test_a_worker_on_other_code_is_refused(dask_cluster) -> None:
    with distributed.Client(dask_cluster.scheduler_address) as client:
        executor = client.get_executor(pure=False)
        future = executor.submit(cluster.run_checked, "f" * 64, facts_runs.converged_run, {})
        with pytest.raises(cluster.CodeMismatch):
            future.result(timeout=60)


@CLUSTER
def test_a_killed_worker_does_not_lose_the_sweep(dask_cluster, fresh_cache, monkeypatch):
    points = _points(2, steps=400)
    local = run_sweep("cluster-kill", points, facts_runs.converged_run, CODE)
    monkeypatch.setenv("PAPERLAB_CACHE", str(fresh_cache.parent / "cache-kill"))
    spec = cluster.ExecutorSpec("dask", dask_cluster.scheduler_address)

    def kill_one_worker_once_busy() -> None:
        with distributed.Client(dask_cluster.scheduler_address) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                busy = [w for w, tasks in client.processing().items() if tasks]
                if busy:
                    pid = client.run(os.getpid, workers=[busy[0]])[busy[0]]
                    os.kill(pid, signal.SIGKILL)
                    return
                time.sleep(0.05)

    with ThreadPoolExecutor(1) as killer, cluster.use(spec):
        killing = killer.submit(kill_one_worker_once_busy)
        remote = run_sweep("cluster-kill", points, facts_runs.converged_run, CODE)
        killing.result()
    assert remote == local


@CLUSTER
def test_run_seeds_on_the_cluster_equals_local(dask_cluster, library_dir) -> None:
    args = ["run", "toy", "--quick", "--seeds", "0,5", "--json", "--no-save"]
    local = CliRunner().invoke(cli, args)
    address = dask_cluster.scheduler_address.removeprefix("tcp://")
    remote = CliRunner().invoke(cli, [*args, "--executor", f"dask://{address}"])
    assert json.loads(remote.stdout) == json.loads(local.stdout)
    assert "tasks on dask://" in remote.stderr
