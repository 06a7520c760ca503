"""One executor setting for the work that fans out: sweep points, seeds, papers of a check.

`--executor local` (the default) keeps today's behaviour: sweeps and checks use this machine's
processes as `jobs` says. `processes` runs the fanned-out tasks in a pool of local worker
processes. `dask://HOST:PORT` sends them to a Dask cluster: `distributed.Client(...)
.get_executor()` is a `concurrent.futures.Executor`, so the calling code has one path for all
three, and Dask's own retries move a task off a worker that dies.

Two rules keep remote results honest:
- **Same code everywhere.** Each task carries the client's code fingerprint (the SHA-256 of every
  `repro/` module and paper folder file, the source that the cache keys already hash); a worker
  whose checkout differs refuses the task, so no result from other code ever comes back.
- **The client keeps the results.** Workers return values and write nothing of the client's:
  the client caches sweep points in its content-addressed cache and stores runs in its `runs/`,
  so a rerun after a lost worker recomputes only what is missing.

Dask is an optional extra: `pip install -e '.[cluster]'`.
"""

from __future__ import annotations

import hashlib
import os
import socket
from collections.abc import Callable, Iterator
from concurrent.futures import Executor
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Literal

from repro.lab.errors import BadOption

EXECUTOR_ENV = "PAPERLAB_EXECUTOR"
ROOT = Path(__file__).resolve().parents[1]
CONNECT_TIMEOUT_S = 10
RETRIES = 2  # a task whose worker dies is resubmitted elsewhere this many times


@dataclass(frozen=True)
class ExecutorSpec:
    kind: Literal["local", "processes", "dask"]
    address: str = ""

    def __str__(self) -> str:
        return f"dask://{self.address}" if self.kind == "dask" else self.kind


def parse_executor(text: str | None) -> ExecutorSpec:
    """`local`, `processes` or `dask://HOST:PORT` (`tcp://` and a bare `HOST:PORT` too)."""
    text = (text or os.environ.get(EXECUTOR_ENV) or "local").strip()
    if text in ("local", "processes"):
        return ExecutorSpec(text)  # type: ignore[arg-type]
    rest = next((text[len(p) :] for p in ("dask://", "tcp://") if text.startswith(p)), text)
    host, sep, port = rest.rpartition(":")
    if sep and host and "/" not in host and port.isdigit() and 0 < int(port) < 65536:
        return ExecutorSpec("dask", f"{host}:{port}")
    raise BadOption(f"--executor: expected local, processes or dask://HOST:PORT, got {text!r}")


class CodeMismatch(RuntimeError):
    """A worker runs other code than the client: its result would not be this code's."""


@cache
def code_fingerprint(root: Path = ROOT) -> str:
    """SHA-256 over the library's and the papers' source files, by relative path."""
    digest = hashlib.sha256()
    files = sorted(
        p for p in [*(root / "repro").rglob("*.py"), *(root / "papers").rglob("*")]
        if p.is_file() and "__pycache__" not in p.parts
    )  # fmt: skip
    for path in files:
        digest.update(str(path.relative_to(root)).encode())
        digest.update(b"\0" + hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def run_checked(fingerprint: str, fn: Callable[..., Any], *args: Any) -> tuple[Any, str]:
    """On a worker: refuse other code, else run `fn(*args)`; returns (result, where it ran)."""
    mine = code_fingerprint()
    if mine != fingerprint:
        raise CodeMismatch(
            f"worker {_where()} has other code than the client (fingerprint {mine[:12]} vs "
            f"{fingerprint[:12]}): run the workers from the client's commit"
        )
    import torch

    torch.set_num_threads(1)
    return fn(*args), _where()


def _where() -> str:
    try:
        from distributed import get_worker

        return get_worker().address
    except (ImportError, ValueError):
        return f"{socket.gethostname()}:{os.getpid()}"


_current: ContextVar[Executor | None] = ContextVar("paperlab_executor", default=None)
_placements: ContextVar[list[str] | None] = ContextVar("paperlab_placements", default=None)


def current() -> Executor | None:
    """The executor that `use` installed for the work in progress (None: decide locally)."""
    return _current.get()


def placed(where: str) -> None:
    """Note where a task ran, for the command's summary."""
    record = _placements.get()
    if record is not None:
        record.append(where)


def placements() -> dict[str, int]:
    """Tasks per worker since `use` opened the executor."""
    counts: dict[str, int] = {}
    for where in _placements.get() or []:
        counts[where] = counts.get(where, 0) + 1
    return counts


@contextmanager
def use(spec: ExecutorSpec, workers: int | None = None) -> Iterator[Executor | None]:
    """Open the executor `spec` names for the duration of a command; `local` opens none."""
    token = _placements.set([])
    try:
        with _open(spec, workers) as executor:
            yield executor
    finally:
        _placements.reset(token)


@contextmanager
def _open(spec: ExecutorSpec, workers: int | None) -> Iterator[Executor | None]:
    if spec.kind == "local":
        yield None
        return
    if spec.kind == "processes":
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(workers or os.cpu_count(), mp_context=context) as pool:
            token = _current.set(pool)
            try:
                yield pool
            finally:
                _current.reset(token)
        return
    client = _dask_client(spec.address)
    try:
        executor = client.get_executor(retries=RETRIES, pure=False)
        token = _current.set(executor)
        try:
            yield executor
        finally:
            _current.reset(token)
    finally:
        client.close()


def _dask_client(address: str):
    try:
        from distributed import Client
    except ImportError:
        raise BadOption(
            "--executor dask:// needs the cluster extra: pip install -e '.[cluster]'"
        ) from None
    try:
        return Client(address, timeout=CONNECT_TIMEOUT_S)
    except (OSError, TimeoutError) as exc:
        raise BadOption(f"cannot reach the Dask scheduler at {address}: {exc}") from None


def submit(executor: Executor, fn: Callable[..., Any], *args: Any):
    """Submit `fn(*args)` with the client's fingerprint; the future gives (result, where)."""
    return executor.submit(run_checked, code_fingerprint(), fn, *args)


def result(future) -> Any:
    """A submitted task's value; where it ran goes to `placements()`."""
    value, where = future.result()
    placed(where)
    return value


def run_paper_at(slug: str, folder: str, kwargs: dict) -> Any:
    """On a worker: run one paper of the client's library, storing nothing."""
    from repro.lab.library import Paper
    from repro.lab.runner import run_paper

    return run_paper(Paper(slug, Path(folder)), runs_dir=None, **kwargs)
