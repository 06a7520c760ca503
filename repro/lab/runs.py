"""The stored runs: `runs/<slug>/<stamp>/`, how a run folder is published, listed and compared.

A run is assembled in `runs/<slug>/.partial-<PID>-<ns>/` and renamed to its stamp at the end, so a
reader never sees half a run. A hard kill leaves the partial folder behind; the next run of that
paper removes every partial folder whose process is gone. Nothing here imports torch.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from repro.lab.claims import ClaimResult
from repro.lab.errors import BadOption

RUNS_ENV = "PAPERLAB_RUNS"
PARTIAL_PREFIX = ".partial-"


def default_runs_dir(papers_dir: Path) -> Path:
    """`$PAPERLAB_RUNS`, else `runs/` beside the papers folder."""
    env = os.environ.get(RUNS_ENV)
    return Path(env) if env else papers_dir.resolve().parent / "runs"


def partial_dir(runs_dir: Path, slug: str) -> Path:
    """A fresh hidden folder for a run in progress, named after this process."""
    return runs_dir / slug / f"{PARTIAL_PREFIX}{os.getpid()}-{time.time_ns()}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True  # exists but belongs to someone else (or cannot tell): keep its folder
    return True


def remove_stale_partials(runs_dir: Path, slug: str) -> list[Path]:
    """Delete the partial folders of `slug` left by processes that no longer run."""
    folder = runs_dir / slug
    removed = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for entry in entries:
        if not entry.name.startswith(PARTIAL_PREFIX):
            continue
        pid_text = entry.name[len(PARTIAL_PREFIX) :].split("-", 1)[0]
        if not pid_text.isdigit() or int(pid_text) == os.getpid() or _alive(int(pid_text)):
            continue
        shutil.rmtree(entry, ignore_errors=True)
        removed.append(entry)
    return removed


def new_stamp() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")


def publish(tmp: Path, stamp: str) -> Path:
    """Rename the finished `tmp` to `stamp` beside it; a taken stamp gets `-2`, `-3`, …"""
    for n in range(1, 1000):
        final = tmp.parent / (stamp if n == 1 else f"{stamp}-{n}")
        if final.exists():
            continue
        try:
            os.rename(tmp, final)  # a run folder is never empty, so this never replaces one
        except OSError as exc:
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY):
                continue
            raise
        return final
    raise OSError(errno.EEXIST, f"no free name for {stamp}")


# --- listing and comparing -----------------------------------------------------------------


@dataclass
class StoredRun:
    """What `paperlab runs` shows of one run folder."""

    slug: str
    stamp: str
    folder: Path
    preset: str = ""
    seed: int | None = None
    commit: str = ""
    seconds: float | None = None
    verdicts: dict[str, int] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    metrics: dict[str, Any] = field(default_factory=dict)
    claims: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self, full: bool = False) -> dict[str, Any]:
        out = {
            "paper": self.slug,
            "stamp": self.stamp,
            "path": str(self.folder),
            "preset": self.preset,
            "seed": self.seed,
            "commit": self.commit,
            "seconds": self.seconds,
            "verdicts": self.verdicts,
        }
        if full:
            out |= {"config": self.config, "metrics": self.metrics, "claims": self.claims}
        return out


def latest_results(runs_dir: Path, slug: str) -> dict[str, ClaimResult]:
    """The newest stored result of each claim of `slug`."""
    latest: dict[str, ClaimResult] = {}
    folder = runs_dir / slug
    if not folder.is_dir():
        return latest
    runs = (p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    for run in sorted(runs, reverse=True):
        try:
            rows = json.loads((run / "claims.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        for row in rows:
            if row.get("id") not in latest:
                try:
                    latest[row["id"]] = ClaimResult.from_json(row)
                except (KeyError, TypeError, ValueError):
                    continue
    return latest


def _read_json(path: Path, default: Any) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return default


def read_run(slug: str, folder: Path) -> StoredRun:
    """One run folder; missing or damaged files leave their fields empty."""
    config = _read_json(folder / "config.json", {})
    env = _read_json(folder / "environment.json", {})
    summary = _read_json(folder / "run.json", {})
    claims = _read_json(folder / "claims.json", [])
    metrics = _read_json(folder / "metrics.json", {})
    config = config if isinstance(config, dict) else {}
    env = env if isinstance(env, dict) else {}
    summary = summary if isinstance(summary, dict) else {}
    claims = [c for c in claims if isinstance(c, dict)] if isinstance(claims, list) else []
    verdicts: dict[str, int] = {}
    for c in claims:
        verdicts[str(c.get("verdict"))] = verdicts.get(str(c.get("verdict")), 0) + 1
    seconds = summary.get("seconds")
    if seconds is None and claims:  # runs saved before run.json: the checks' own time
        seconds = round(sum(float(c.get("seconds") or 0) for c in claims), 3)
    return StoredRun(
        slug=slug,
        stamp=folder.name,
        folder=folder,
        preset=str(summary.get("preset") or config.get("_preset") or ""),
        seed=summary.get("seed", env.get("seed")),
        commit=str(env.get("git_commit") or "")[:12],
        seconds=seconds,
        verdicts=verdicts,
        config={k: v for k, v in config.items() if k != "_preset"},
        metrics=metrics if isinstance(metrics, dict) else {},
        claims=claims,
    )


def last_seconds(runs_dir: Path, slug: str, preset: str) -> float | None:
    """Wall-clock seconds of the newest stored `preset` run of `slug` (only its run.json is
    read), or None."""
    folder = runs_dir / slug
    if not folder.is_dir():
        return None
    runs = (p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir())
    for run in sorted(runs, reverse=True):  # stamps sort by time
        summary = _read_json(run / "run.json", {})
        if not isinstance(summary, dict) or summary.get("preset") != preset:
            continue
        if isinstance(summary.get("seconds"), int | float):
            return float(summary["seconds"])
    return None


def list_runs(runs_dir: Path, slugs: list[str]) -> list[StoredRun]:
    """Every stored run of `slugs`, newest first."""
    found = []
    for slug in slugs:
        folder = runs_dir / slug
        if not folder.is_dir():
            continue
        for run in folder.iterdir():
            if not run.name.startswith(".") and run.is_dir():
                found.append(read_run(slug, run))
    return sorted(found, key=lambda r: r.stamp, reverse=True)


def find_run(runs_dir: Path, slug: str, name: str) -> StoredRun:
    """A run of `slug` by stamp, unique stamp prefix, `latest` or `previous`."""
    runs = list_runs(runs_dir, [slug])
    if not runs:
        raise BadOption(f"no stored runs of '{slug}' in {runs_dir}")
    if name in ("latest", "previous"):
        index = 0 if name == "latest" else 1
        if index >= len(runs):
            raise BadOption(f"'{slug}' has only one stored run")
        return runs[index]
    matches = [r for r in runs if r.stamp == name] or [r for r in runs if r.stamp.startswith(name)]
    if len(matches) == 1:
        return matches[0]
    if not matches:
        raise BadOption(f"no run '{name}' of '{slug}' (latest: {runs[0].stamp})")
    raise BadOption(f"'{name}' matches {len(matches)} runs of '{slug}'; give more of the stamp")


@dataclass
class Change:
    """One key whose value differs between run A and run B (None: absent there)."""

    section: str  # config | metrics | claims
    key: str
    a: Any
    b: Any

    def to_json(self) -> dict[str, Any]:
        return {"section": self.section, "key": self.key, "a": self.a, "b": self.b}


def _flat(data: Any, prefix: str = "") -> dict[str, Any]:
    """Nested metrics as dotted keys: {"loss": {"lora": 1}} → {"loss.lora": 1}; a list that
    holds dicts or lists is numbered ({"seeds": [{"gap": 1}]} → {"seeds.0.gap": 1}); a list of
    plain values stays one value (a curve)."""
    if isinstance(data, dict) and data:
        out: dict[str, Any] = {}
        for k, v in data.items():
            out |= _flat(v, f"{prefix}.{k}" if prefix else str(k))
        return out
    if isinstance(data, list | tuple) and any(isinstance(v, dict | list | tuple) for v in data):
        out = {}
        for i, v in enumerate(data):
            out |= _flat(v, f"{prefix}.{i}" if prefix else str(i))
        return out
    return {prefix: data}


def diff_runs(a: StoredRun, b: StoredRun) -> list[Change]:
    """What changed from run A to run B: settings, metrics, and each claim's verdict and value."""
    changes: list[Change] = []
    for section, left, right in (
        ("config", _flat(a.config), _flat(b.config)),
        ("metrics", _flat(a.metrics), _flat(b.metrics)),
        ("claims", _claim_view(a.claims), _claim_view(b.claims)),
    ):
        for key in sorted(set(left) | set(right)):
            if left.get(key) != right.get(key):
                changes.append(Change(section, key, left.get(key), right.get(key)))
    return changes


def _claim_view(claims: list[dict[str, Any]]) -> dict[str, Any]:
    view: dict[str, Any] = {}
    for c in claims:
        cid = str(c.get("id"))
        view[f"{cid}.verdict"] = c.get("verdict")
        view[f"{cid}.measured"] = c.get("measured")
    return view


# --- pruning -------------------------------------------------------------------------------


def folder_size(path: Path) -> int:
    """Bytes of the files under `path` (links not followed; unreadable entries count 0)."""
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


@dataclass
class PrunedRun:
    """A run folder that `prune_runs` deleted (or, in a dry run, would delete)."""

    slug: str
    stamp: str
    folder: Path
    size: int
    deleted: bool

    def to_json(self) -> dict[str, Any]:
        return {
            "paper": self.slug,
            "stamp": self.stamp,
            "path": str(self.folder),
            "bytes": self.size,
            "deleted": self.deleted,
        }


def prune_runs(
    runs_dir: Path, slugs: list[str], keep: int, *, dry_run: bool = False
) -> list[PrunedRun]:
    """Delete all but the newest `keep` runs of each paper in `slugs` (never its newest run, so
    `keep` < 1 is refused), oldest reported first; `dry_run` only says what would go. The
    partial folders of runs whose process is gone are removed as well (see
    `remove_stale_partials`); those of running processes are left alone."""
    if keep < 1:
        raise BadOption(
            f"--keep must be ≥ 1 (the newest run of a paper is always kept), got {keep}"
        )
    pruned: list[PrunedRun] = []
    for slug in slugs:
        folder = runs_dir / slug
        if not folder.is_dir():
            continue
        if not dry_run:
            remove_stale_partials(runs_dir, slug)
        stamps = sorted(
            (p for p in folder.iterdir() if not p.name.startswith(".") and p.is_dir()),
            key=lambda p: p.name,
            reverse=True,
        )
        for run in reversed(stamps[keep:]):
            size = folder_size(run)
            if not dry_run:
                shutil.rmtree(run)
            pruned.append(PrunedRun(slug, run.name, run, size, not dry_run))
    return pruned
