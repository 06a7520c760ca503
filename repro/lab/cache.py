"""A content-addressed, verified cache for expensive intermediate results.

Pretraining a tiny model or training one point of a scaling sweep takes seconds to minutes, and
several papers (and the test suite, and `paperlab check`) need the same result. Each result is
stored under `<cache>/<kind>/<key>/`, where the key hashes the configuration *and* the source code
of the modules that produced it: edit the model or the data generator (or plant a bug in it) and
the key changes, so a cached result can never hide a change in the code that made it.

An entry is trusted only after it is verified. Beside its payload it holds `entry.json`: its kind,
its own key and the SHA-256 of every file. On load the folder must be a real folder, every file
a regular file (no symlink, no FIFO), the kind and key its own and every hash equal; anything
else is one warning naming the entry (logger `repro.lab.cache`), and the entry is removed and
recomputed, never used. This catches damage and mix-ups (a digit changed, a file swapped with
another key's, a symlink planted); it is not a signature against someone who can write the cache
and recompute the hashes.

The cache folder is `$PAPERLAB_CACHE`, else `.cache/` inside the runs folder (`$PAPERLAB_RUNS`,
else `runs/` at the repository root). Writes go to a temporary folder `.<key>-<pid>-…` and are
renamed; a lock file `<key>.lock` makes concurrent processes compute a key once. A killed process
leaves both behind: the first use of a kind in a process removes the temporary folders of
processes that are gone and the lock files nobody holds.
"""

from __future__ import annotations

import fcntl
import hashlib
import inspect
import json
import logging
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import IO, Any, TypeVar

from repro.lab.library import REPO_ROOT

T = TypeVar("T")
CACHE_ENV = "PAPERLAB_CACHE"
MANIFEST = "entry.json"
LOCK_SUFFIX = ".lock"
log = logging.getLogger(__name__)


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


# --- verifying an entry --------------------------------------------------------------------


def _sha256(path: Path) -> str:
    """SHA-256 of a regular file, read without following a symlink at its name."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0))
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path.name} is not a regular file")
        h = hashlib.sha256()
        with os.fdopen(fd, "rb", closefd=False) as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    finally:
        os.close(fd)


def _payload_files(folder: Path) -> dict[str, Path]:
    """Every file under `folder` by its relative name (symlinks and oddities included)."""
    found = {}
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=False):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = Path(dirpath) / name
            found[path.relative_to(folder).as_posix()] = path
    return found


def _write_manifest(folder: Path, kind: str, key: str) -> None:
    files = {name: _sha256(path) for name, path in sorted(_payload_files(folder).items())}
    record = {"kind": kind, "key": key, "sha256": files}
    (folder / MANIFEST).write_text(json.dumps(record, indent=1, sort_keys=True))


def entry_problem(folder: Path, kind: str, key: str) -> str | None:
    """Why the entry at `folder` may not be used as (kind, key); None when it verifies."""
    try:
        info = os.lstat(folder)
    except OSError as exc:
        return f"cannot be read ({exc.strerror or exc})"
    if stat.S_ISLNK(info.st_mode):
        return "is a symlink, not a folder"
    if not stat.S_ISDIR(info.st_mode):
        return "is not a folder"
    files = _payload_files(folder)
    manifest = files.pop(MANIFEST, None)
    if manifest is None:
        return f"has no {MANIFEST} (written by an older paperlab, or damaged)"
    try:
        _sha256(manifest)  # a regular file, not a link
        record = json.loads(manifest.read_text())
        hashes = record["sha256"]
        assert isinstance(hashes, dict)
    except (OSError, ValueError, KeyError, TypeError, AssertionError) as exc:
        return f"has an unreadable {MANIFEST} ({type(exc).__name__})"
    if record.get("kind") != kind or record.get("key") != key:
        return f"is the entry of {record.get('kind')}/{record.get('key')}, not its own"
    if set(files) != set(hashes):
        extra, missing = sorted(set(files) - set(hashes)), sorted(set(hashes) - set(files))
        return f"files differ from its record (extra {extra}, missing {missing})"
    for name, path in sorted(files.items()):
        try:
            digest = _sha256(path)
        except OSError as exc:
            return f"{name}: not a regular file ({exc.strerror or exc})"
        if digest != hashes[name]:
            return f"{name}: SHA-256 differs from its record (changed since it was written)"
    return None


def _discard(folder: Path) -> None:
    """Remove a damaged entry (a symlink itself, never what it points at)."""
    try:
        if folder.is_symlink() or not folder.is_dir():
            folder.unlink()
        else:
            shutil.rmtree(folder)
    except OSError:
        pass


# --- locks and leftovers of killed processes -----------------------------------------------


def _lock(path: Path) -> IO[str]:
    """An exclusive lock held until the returned file is closed.

    Another process may remove a lock file nobody holds (see remove_stale); a lock taken on a
    file that was removed meanwhile is taken again on the new one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        f = _open_lock(path)
        try:
            fcntl.flock(f, fcntl.LOCK_EX)
            if os.path.samestat(os.fstat(f.fileno()), os.stat(path)):
                return f
        except OSError:
            pass
        f.close()


def _open_lock(path: Path) -> IO[str]:
    """The lock file, created if needed; a symlink planted at its name is refused (ELOOP)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_APPEND | getattr(os, "O_NOFOLLOW", 0)
    return os.fdopen(os.open(path, flags, 0o644), "a")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # someone else's process (or cannot tell): keep its files
    return True


def remove_stale(kind_dir: Path) -> list[Path]:
    """Delete what killed processes left in `kind_dir`: temporary folders `.<key>-<pid>-…` of
    processes that are gone, and lock files that no process holds."""
    removed: list[Path] = []
    try:
        entries = list(kind_dir.iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if name.startswith(".") and not name.endswith(LOCK_SUFFIX):
            parts = name[1:].split("-")
            if len(parts) < 3 or not parts[1].isdigit():
                continue
            pid = int(parts[1])
            if pid != os.getpid() and not _alive(pid):
                shutil.rmtree(entry, ignore_errors=True)
                removed.append(entry)
        elif name.endswith(LOCK_SUFFIX):
            if entry.is_symlink() or not entry.is_file():
                continue
            try:
                f = _open_lock(entry)
            except OSError:
                continue
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                f.close()
                continue  # held: a computation is running
            try:
                entry.unlink()
                removed.append(entry)
            except OSError:
                pass
            finally:
                f.close()
    return removed


_CLEANED: set[Path] = set()


def _clean_once(kind_dir: Path) -> None:
    if kind_dir not in _CLEANED:
        _CLEANED.add(kind_dir)
        remove_stale(kind_dir)


# --- the cache -----------------------------------------------------------------------------


def cached(
    kind: str,
    config: Mapping[str, Any],
    compute: Callable[[], T],
    *,
    save: Callable[[T, Path], None],
    load: Callable[[Path], T],
    code: Iterable[ModuleType | Callable] = (),
) -> T:
    """`load(folder)` if this (kind, config, code) was computed before and its entry verifies,
    else compute and save.

    `save(value, folder)` writes files into an empty folder; `load(folder)` reads them back.
    An entry that fails verification or cannot be loaded (a different torch version, a
    truncated file) is reported in one warning line, removed and recomputed."""
    key = cache_key(config, code)
    folder = cache_root() / kind / key
    try:
        lock = _lock(folder.with_name(key + LOCK_SUFFIX))
    except OSError:  # no cache folder can be made (read-only, a file in the way): no caching
        return compute()
    try:
        _clean_once(folder.parent)
        if os.path.lexists(folder):
            why = entry_problem(folder, kind, key)
            if why is None:
                try:
                    return load(folder)
                except Exception as exc:  # verified but unreadable here: recomputed
                    why = f"cannot be loaded ({type(exc).__name__})"
            log.warning("cache entry %s/%s %s; recomputing it", kind, key, why)
            _discard(folder)
        value = compute()
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{key}-{os.getpid()}-", dir=folder.parent))
        except OSError:
            return value
        try:
            (tmp / "config.json").write_text(json.dumps(config, sort_keys=True, default=repr))
            save(value, tmp)
            _write_manifest(tmp, kind, key)
            os.rename(tmp, folder)
        except OSError:  # a full disk: the result is still returned, uncached
            shutil.rmtree(tmp, ignore_errors=True)
        return value
    finally:
        lock.close()


def is_cached(kind: str, config: Mapping[str, Any], code: Iterable[ModuleType | Callable]) -> bool:
    """Whether a verified entry exists (a damaged one is not: it will be recomputed)."""
    key = cache_key(config, code)
    folder = cache_root() / kind / key
    return os.path.lexists(folder) and entry_problem(folder, kind, key) is None


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


# --- looking after the cache (`paperlab cache`) --------------------------------------------


@dataclass(frozen=True)
class KindSummary:
    kind: str
    entries: int
    bytes: int


@dataclass(frozen=True)
class EntryProblem:
    kind: str
    key: str
    why: str


def _kind_dirs(root: Path) -> list[Path]:
    try:
        return sorted(p for p in root.iterdir() if p.is_dir() and not p.is_symlink())
    except OSError:
        return []


def _entries(kind_dir: Path) -> list[Path]:
    return sorted(
        p
        for p in kind_dir.iterdir()
        if not p.name.startswith(".") and not p.name.endswith(LOCK_SUFFIX)
    )


def _size(path: Path) -> int:
    if path.is_symlink() or not path.is_dir():
        return path.lstat().st_size
    return sum(p.lstat().st_size for p in _payload_files(path).values())


def summary(root: Path | None = None) -> list[KindSummary]:
    """Each kind of the cache with its number of entries and their size on disk."""
    root = root or cache_root()
    out = []
    for kind_dir in _kind_dirs(root):
        entries = _entries(kind_dir)
        out.append(KindSummary(kind_dir.name, len(entries), sum(_size(e) for e in entries)))
    return out


def verify(root: Path | None = None, remove: bool = True) -> tuple[int, list[EntryProblem]]:
    """(entries checked, problems): every entry verified; damaged ones removed when `remove`."""
    root = root or cache_root()
    checked, problems = 0, []
    for kind_dir in _kind_dirs(root):
        remove_stale(kind_dir)
        for entry in _entries(kind_dir):
            checked += 1
            why = entry_problem(entry, kind_dir.name, entry.name)
            if why is not None:
                problems.append(EntryProblem(kind_dir.name, entry.name, why))
                if remove:
                    _discard(entry)
    return checked, problems


def clear(root: Path | None = None, kind: str | None = None) -> tuple[int, int]:
    """Remove every entry (of `kind`, when given): (entries removed, bytes freed)."""
    root = root or cache_root()
    count = freed = 0
    for kind_dir in _kind_dirs(root):
        if kind is not None and kind_dir.name != kind:
            continue
        for entry in _entries(kind_dir):
            count, freed = count + 1, freed + _size(entry)
            _discard(entry)
        remove_stale(kind_dir)
    return count, freed
