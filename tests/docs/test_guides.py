"""The contributor's guide names only code that exists."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
GUIDE = ROOT / "docs" / "adding-a-paper.md"
# `repro/align/dpo.py::dpo_loss`, `repro/nn/attention.py`, `papers/dpo/` … in backticks or a table
PATH_RE = re.compile(r"((?:repro|papers|tests|scripts|docs|templates)/[\w./-]*)(?:::([\w.]+))?")
NAME_RE = re.compile(r"`(\w+)`")


def _defined(path: Path) -> set[str]:
    tree = ast.parse(path.read_text(encoding="utf-8"))
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign):
            names.update(t.id for t in node.targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.ImportFrom):
            names.update(a.asname or a.name for a in node.names)
    return names


def _references(text: str) -> list[tuple[str, str | None]]:
    return [(m.group(1).rstrip("."), m.group(2)) for m in PATH_RE.finditer(text)]


def test_every_path_and_function_the_guide_names_exists() -> None:
    text = GUIDE.read_text(encoding="utf-8")
    refs = _references(text)
    assert len(refs) > 20
    missing = []
    for path, name in refs:
        if "<" in path or path.endswith("test_"):
            continue
        target = ROOT / path
        if not target.exists():
            missing.append(path)
        elif name and name.split(".")[0] not in _defined(target):
            missing.append(f"{path}::{name}")
    assert missing == []


def test_the_library_map_names_functions_of_its_modules() -> None:
    """Each row of the map: the functions in its last column are defined in its modules."""
    rows = [line for line in GUIDE.read_text(encoding="utf-8").splitlines()
            if line.startswith("| ") and "repro/" in line]  # fmt: skip
    assert len(rows) >= 10
    checked = 0
    for row in rows:
        cells = [c.strip() for c in row.strip("|").split("|")]
        modules = [ROOT / p for p, _ in _references(cells[1]) if p.endswith(".py")]
        if not modules:
            continue
        defined = set().union(*(_defined(m) for m in modules))
        calls = [n for n in NAME_RE.findall(cells[2]) if not n.endswith("py")]
        unknown = [n for n in calls if n not in defined]
        assert unknown == [], row
        checked += len(calls)
    assert checked >= 20  # the map's function names were really looked up


@pytest.mark.parametrize(("name", "present"), [("nope_not_here", False), ("dpo_loss", True)])
def test_the_check_can_fail(name: str, present: bool) -> None:
    assert (name in _defined(ROOT / "repro" / "align" / "dpo.py")) is present
