"""`paperlab doctor`: what this installation is made of and what it lacks, with the fix.

Versions (paperlab and the commit it runs from, Python, torch and its build, Triton), the papers,
runs and cache folders with their sizes, the extras of the test suite, and the system pieces the
study pages and the browser test use (Chromium, a CJK font, a math font). Every missing piece
comes with the command that installs it.

Only the standard library is imported at module level: `.ci/run` asks `find_browser` whether
Chromium is there before anything is installed.
"""

from __future__ import annotations

import importlib.metadata
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[2]
BROWSERS = ("chromium", "chromium-browser")  # Debian names it chromium, Ubuntu chromium-browser
CPU_TORCH = "pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu"
SUITE_EXTRAS = ("test", "conformance", "triton")  # when .ci/run cannot be read
MATH_FONTS = ("STIX Two Math", "Cambria Math", "Latin Modern Math")  # templates/sheet.css.j2


def find_browser() -> str | None:
    """The Chromium the browser test drives: `chromium` or `chromium-browser` on the PATH, else
    /usr/bin/chromium; None when there is none. `.ci/run` and the test both ask here."""
    for name in BROWSERS:
        found = shutil.which(name)
        if found:
            return found
    return "/usr/bin/chromium" if Path("/usr/bin/chromium").exists() else None


def suite_extras(root: Path = REPO_ROOT) -> tuple[str, ...]:
    """The extras the full test suite needs: those `.ci/run` installs (its `pip install -e
    '.[…]'`, the README's test command)."""
    try:
        found = re.search(r"pip install -e '\.\[([\w,-]+)\]'", (root / ".ci" / "run").read_text())
    except OSError:
        found = None
    return tuple(found.group(1).split(",")) if found else SUITE_EXTRAS


def install_suite_command(root: Path = REPO_ROOT) -> str:
    return f"pip install -e '.[{','.join(suite_extras(root))}]'"


def font_families(pattern: str) -> list[str] | None:
    """Families `fc-list PATTERN` knows (first name of each), sorted; None without fc-list."""
    if shutil.which("fc-list") is None:
        return None
    try:
        out = subprocess.run(
            ["fc-list", pattern, "family"], capture_output=True, text=True, timeout=20
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return sorted({line.split(",")[0].strip() for line in out.splitlines() if line.strip()})


def git_commit(root: Path = REPO_ROOT) -> tuple[str, bool]:
    """(commit of the checkout, whether it has uncommitted changes); ('', False) without git."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=5
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root, capture_output=True, text=True, timeout=10,
        ).stdout.strip()  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return "", False
    return head, bool(head and dirty)


def version_text() -> str:
    """`paperlab 0.1.0, commit 3f8decbdfbc0 (with local changes)` — what `--version` prints;
    runs record the same commit."""
    try:
        version = importlib.metadata.version("paperlab")
    except importlib.metadata.PackageNotFoundError:
        version = "(not installed)"
    commit, dirty = git_commit()
    where = f"commit {commit[:12]}" + (" (with local changes)" if dirty else "") if commit else (
        "commit unknown (not a git checkout)"
    )  # fmt: skip
    return f"paperlab {version}, {where}"


def folder_size(path: Path, skip: Path | None = None) -> int:
    """Bytes of the files under `path`, leaving out the folder `skip` (the cache in runs/)."""
    total = 0
    for root, dirs, files in os.walk(path):
        if skip is not None:
            dirs[:] = [d for d in dirs if Path(root, d) != skip]
        for name in files:
            try:
                total += os.lstat(os.path.join(root, name)).st_size
            except OSError:
                continue
    return total


@dataclass
class Problem:
    """Something missing (`level` "missing") or worth changing ("hint"), and the command that
    fixes it."""

    what: str
    fix: str
    level: str = "missing"


@dataclass
class Diagnosis:
    versions: dict[str, Any] = field(default_factory=dict)
    folders: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    system: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def _torch_info(problems: list[Problem]) -> dict[str, Any]:
    try:
        import torch
    except ImportError as exc:
        problems.append(Problem(f"torch does not import ({exc})", CPU_TORCH))
        return {"version": None}
    cuda_build = torch.version.cuda
    available = torch.cuda.is_available()
    info: dict[str, Any] = {
        "version": torch.__version__,
        "build": f"CUDA {cuda_build}" if cuda_build else "CPU",
        "cuda_devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
        if available
        else [],
        "mps": bool(getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()),
    }
    if cuda_build and not available:
        problems.append(
            Problem(
                "torch is a CUDA build on a machine without a CUDA device (GBs for nothing; "
                "paperlab runs on the CPU)",
                f"pip uninstall -y torch && {CPU_TORCH}",
            )
        )
    return info


def _dist_version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def _extras() -> dict[str, list[str]]:
    """extra -> requirement names, from the checkout's pyproject.toml (else the installed
    metadata); requirements whose markers do not apply to this machine are left out."""
    try:
        import tomllib

        data = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))
        declared = data["project"]["optional-dependencies"]
    except (ImportError, OSError, KeyError, ValueError):
        declared = {}
        for req in importlib.metadata.requires("paperlab") or []:
            m = re.search(r"extra == ['\"]([\w-]+)['\"]", req)
            if m:
                declared.setdefault(m.group(1), []).append(req.split(";")[0])
    out: dict[str, list[str]] = {}
    for extra, reqs in declared.items():
        names = []
        for req in reqs:
            text, _, marker = req.partition(";")
            if marker.strip() and not _marker_applies(marker):
                continue
            names.append(re.split(r"[<>=!~\[ ;]", text.strip(), maxsplit=1)[0])
        out[extra] = names
    return out


def _marker_applies(marker: str) -> bool:
    try:
        from packaging.markers import Marker

        return Marker(marker).evaluate({"extra": ""})
    except Exception:
        return True  # cannot tell: report the package


def diagnose(papers_dir: Path, runs_dir: Path, cache_dir: Path) -> Diagnosis:
    """Everything `paperlab doctor` prints. Imports torch (to tell its build and devices)."""
    problems: list[Problem] = []
    papers_dir, runs_dir, cache_dir = (p.resolve() for p in (papers_dir, runs_dir, cache_dir))
    commit, dirty = git_commit()
    versions = {
        "paperlab": _dist_version("paperlab"),
        "commit": commit or None,
        "local_changes": dirty,
        "checkout": str(REPO_ROOT),
        "python": platform.python_version(),
        "python_executable": sys.executable,
        "virtualenv": sys.prefix != sys.base_prefix,
        "platform": platform.platform(),
        "torch": _torch_info(problems),
        "triton": _dist_version("triton"),
    }
    if not versions["virtualenv"]:
        problems.append(
            Problem(
                "not running in a virtual environment (pip may refuse, or mix with the "
                "system's packages)",
                "python -m venv .venv && . .venv/bin/activate, then the README's quick start",
                "hint",
            )
        )
    papers = sorted(p.parent.name for p in papers_dir.glob("*/note.yaml"))
    if not papers_dir.is_dir():
        problems.append(
            Problem(
                f"papers folder {papers_dir} does not exist",
                "unset PAPERLAB_PAPERS, or point it at a folder of papers",
            )
        )
    runs = [
        run
        for slug in (runs_dir.iterdir() if runs_dir.is_dir() else ())
        if slug.is_dir() and not slug.name.startswith(".")
        for run in slug.iterdir()
        if run.is_dir() and not run.name.startswith(".")
    ]
    cache_inside = cache_dir.parent == runs_dir
    folders = {
        "papers": {"path": str(papers_dir), "papers": len(papers),
                   "bytes": folder_size(papers_dir) if papers_dir.is_dir() else 0},
        "runs": {"path": str(runs_dir), "runs": len(runs),
                 "bytes": folder_size(runs_dir, cache_dir if cache_inside else None)
                 if runs_dir.is_dir() else 0},
        "cache": {"path": str(cache_dir),
                  "bytes": folder_size(cache_dir) if cache_dir.is_dir() else 0},
    }  # fmt: skip
    extras = {}
    suite, absent = suite_extras(), []
    for extra, names in _extras().items():
        packages = {name: _dist_version(name) for name in names}
        missing = [n for n, v in packages.items() if v is None]
        extras[extra] = {"packages": packages, "installed": not missing}
        if missing and extra in suite:
            absent.append(f"[{extra}] ({', '.join(missing)})")
    if absent:
        problems.append(
            Problem(
                f"extras not installed: {', '.join(absent)}; the tests that need them skip",
                install_suite_command(),
            )
        )
    browser = find_browser()
    cjk = font_families(":lang=zh")
    math_fonts = font_families(":")
    math_found = (
        None if math_fonts is None else [f for f in math_fonts if "Math" in f.split()]
    )  # fmt: skip
    system = {
        "browser": browser,
        "fc_list": cjk is not None,
        "cjk_fonts": cjk,
        "math_fonts": math_found,
        "math_fonts_wanted": list(MATH_FONTS),
    }
    if browser is None:
        problems.append(
            Problem(
                "no Chromium (`chromium` or `chromium-browser`): the browser test of the "
                "study pages is skipped",
                "sudo apt-get install -y chromium",
            )
        )
    if cjk is None:
        problems.append(
            Problem(
                "no fc-list: cannot tell which fonts are installed",
                "sudo apt-get install -y fontconfig",
            )
        )
    elif not cjk:
        problems.append(
            Problem(
                "no CJK font: Chinese study pages (--lang zh) draw empty boxes and the browser "
                "test fails",
                "sudo apt-get install -y fonts-wqy-microhei",
            )
        )
    if math_found is not None and not math_found:
        problems.append(
            Problem(
                "no math font (the pages ask for " + ", ".join(MATH_FONTS) + "): formulas fall "
                "back to the browser's default",
                "sudo apt-get install -y fonts-lmodern",
            )
        )
    return Diagnosis(versions, folders, extras, system, problems)
