"""A resumable sweep: every point is cached by its config and the source of the code that runs it.

A scaling study is dozens of small training runs. Each point goes through
`repro.lab.cache.cached_json`, keyed by the point's settings plus the source of `code`, so a sweep
that was interrupted restarts where it stopped, a second run that changes only a fit setting
reads every point back in milliseconds, and an edit to the model, data or training code reruns
everything. With `jobs > 1` the uncached points run in worker processes (spawned, so a CUDA
device works unchanged); each worker uses one torch thread. Under `--executor processes` or
`dask://…` (`repro.cluster`) they run on that executor instead, and come back to be cached here.

Glossary: a point is one dict of settings; `run_point(point) -> dict` trains and measures it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from types import ModuleType
from typing import Any

from repro import cluster
from repro.lab import cache
from repro.lab.cache import cached_json
from repro.lab.claims import ProgressFn
from repro.lab.settings import worker_count

RunPoint = Callable[[dict], dict]


def is_cached(kind: str, point: Mapping[str, Any], code: Sequence[ModuleType]) -> bool:
    return cache.is_cached(kind, point, code)  # a damaged entry is not: it is recomputed


def _run_cached(kind: str, point: dict, run_point: RunPoint, code_names: list[str]) -> dict:
    """One point through the cache; module names (not modules) cross the process boundary."""
    import torch

    torch.set_num_threads(1)
    code = [importlib.import_module(name) for name in code_names]
    return cached_json(kind, point, lambda: run_point(point), code=code)


def run_sweep(
    kind: str,
    points: Sequence[dict],
    run_point: RunPoint,
    code: Sequence[ModuleType],
    jobs: int = 1,
    progress: ProgressFn | None = None,
    description: str = "sweep",
) -> list[dict]:
    """`run_point` on every point (results in the order of `points`), through the cache.

    `run_point` must be a module-level function when `jobs > 1` (workers import it by name).
    """
    names = [m.__name__ for m in code]
    results: list[dict | None] = [None] * len(points)
    todo = []
    for i, point in enumerate(points):
        if is_cached(kind, point, code):
            results[i] = cached_json(kind, point, lambda p=point: run_point(p), code=code)
        else:
            todo.append(i)
    done = len(points) - len(todo)
    report = progress or (lambda *_: None)
    report(description, done, len(points))
    executor = cluster.current()
    if executor is not None and todo:
        # The cluster computes, the client caches: workers never write this machine's cache.
        futures = {cluster.submit(executor, run_point, points[i]): i for i in todo}
        for future in as_completed(futures):
            i = futures[future]
            value = cluster.result(future)
            results[i] = cached_json(kind, points[i], lambda v=value: v, code=code)
            done += 1
            report(description, done, len(points))
    elif jobs <= 1 or len(todo) <= 1:
        for i in todo:
            results[i] = cached_json(kind, points[i], lambda p=points[i]: run_point(p), code=code)
            done += 1
            report(description, done, len(points))
    else:
        import multiprocessing

        ctx = multiprocessing.get_context("spawn")
        workers = worker_count(jobs, len(todo))  # never more processes than CPUs
        with ProcessPoolExecutor(max_workers=workers, mp_context=ctx) as pool:
            futures = {pool.submit(_run_cached, kind, points[i], run_point, names): i for i in todo}
            for future in as_completed(futures):
                results[futures[future]] = future.result()
                done += 1
                report(description, done, len(points))
    return [r for r in results if r is not None]
