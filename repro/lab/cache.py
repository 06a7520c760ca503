"""A content-addressed cache for expensive intermediate results.

Pretraining a tiny model or training one point of a scaling sweep takes seconds to minutes, and
several papers (and the test suite, and `paperlab check`) need the same result. Each result is
stored under `<cache>/<kind>/<key>/`, where the key hashes the configuration *and* the source code
of the modules that produced it: edit the model or the data generator (or plant a bug in it) and
the key changes, so a cached result can never hide a change in the code that made it.

The cache folder is `$PAPERLAB_CACHE`, else `.cache/` inside the runs folder (`$PAPERLAB_RUNS`,
else `runs/` at the repository root). Writes go to a temporary name and are renamed, and a lock
file makes concurrent processes compute a key once.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from types import ModuleType
from typing import IO, Any, TypeVar

from repro.lab.library import REPO_ROOT

T = TypeVar("T")
CACHE_ENV = "PAPERLAB_CACHE"


def cache_root() -> Path:
    if env := os.environ.get(CACHE_ENV):
        return Path(env)
    runs = os.environ.get("PAPERLAB_RUNS")
    return (Path(runs) if runs else REPO_ROOT / "runs") / ".cache"


def cache_key(config: Mapping[str, Any], code: Iterable[ModuleType | Callable] = ()) -> str:
    """16 hex digits of SHA-256 over the canonical JSON of `config` and the source of `code`."""
    h = hashlib.sha256(json.dumps(config, sort_keys=True, default=repr).encode())
    for obj in code:
        h.update(inspect.getsource(obj).encode())
    return h.hexdigest()[:16]


def _lock(path: Path) -> IO[str]:
    """An exclusive lock held until the returned file is closed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    f = open(path, "w")  # noqa: SIM115 - closed by the caller, which releases the lock
    fcntl.flock(f, fcntl.LOCK_EX)
    return f


def cached(
    kind: str,
    config: Mapping[str, Any],
    compute: Callable[[], T],
    *,
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
    code: Iterable[ModuleType | Callable] = (),
) -> T:
    """`load(folder)` if this (kind, config, code) was computed before, else compute and save.

    `save(value, folder)` writes files into an empty folder; `load(folder)` reads them back.
    An unreadable cache entry (a different torch version, a truncated file) is recomputed.
    """
    folder = cache_root() / kind / cache_key(config, code)
    try:
        lock = _lock(folder.with_name(folder.name + ".lock"))
    except OSError:  # no cache folder can be made (read-only, a file in the way): no caching
        return compute()
    try:
        if folder.is_dir():
            try:
                return load(folder)
            except Exception:  # a stale or damaged entry is recomputed, never trusted
                shutil.rmtree(folder, ignore_errors=True)
        value = compute()
        tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
        try:
            (tmp / "config.json").write_text(json.dumps(config, sort_keys=True, default=repr))
            save(value, tmp)
            os.replace(tmp, folder)
        except OSError:  # a full disk: the result is still returned, uncached
            shutil.rmtree(tmp, ignore_errors=True)
        return value
    finally:
        lock.close()


def cached_json(
    kind: str,
    config: Mapping[str, Any],
    compute: Callable[[], Any],
    *,
    code: Iterable[ModuleType | Callable] = (),
) -> Any:
    """`cached` for JSON-serialisable results (metrics of a sweep point)."""

    def save(value: Any, folder: Path) -> None:
        (folder / "value.json").write_text(json.dumps(value))

    def load(folder: Path) -> Any:
        return json.loads((folder / "value.json").read_text())

    return cached(kind, config, compute, save=save, load=load, code=code)


def cached_state(
    kind: str,
    config: Mapping[str, Any],
    compute: Callable[[], Any],
    *,
    code: Iterable[ModuleType | Callable] = (),
) -> Any:
    """`cached` for anything `torch.save` can write (a model's state_dict, tensors, dicts)."""
    import torch

    def save(value: Any, folder: Path) -> None:
        torch.save(value, folder / "value.pt")

    def load(folder: Path) -> Any:
        return torch.load(folder / "value.pt", weights_only=True)

    return cached(kind, config, compute, save=save, load=load, code=code)
