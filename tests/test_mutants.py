"""The catalogue of planted bugs stays plantable: every `find` still occurs once in its file."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

TOOL = Path(__file__).with_name("mutants.py")


def _tool():
    spec = importlib.util.spec_from_file_location("paperlab_mutants_tool", TOOL)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up by name
    spec.loader.exec_module(module)
    return module


def test_every_catalogue_entry_still_applies_to_the_code() -> None:
    # a refactor that moves a planted line out from under its entry must fail here, not hours
    # later when someone runs the catalogue (and the count in the closing note must be real)
    tool = _tool()
    files = sorted(tool.CATALOGUE.glob("*.yaml"))
    mutants = tool.load_catalogue(files)
    assert len({m.id for m in mutants}) == len(mutants) > 0
    assert {m.source for m in mutants} == {str(f.relative_to(tool.REPO)) for f in files}


@pytest.mark.parametrize(("find", "times"), [("gone", 0), ("twice", 2)])
def test_an_entry_whose_find_is_not_there_once_is_refused(monkeypatch, tmp_path, find, times):
    tool = _tool()
    monkeypatch.setattr(tool, "REPO", tmp_path)
    (tmp_path / "code.py").write_text("once = 1\ntwice = 2\ntwice = 3\n", encoding="utf-8")
    entry = {"id": "e", "file": "code.py", "find": "once", "replace": "x", "why": "w",
             "tests": ["tests/test_code.py"], "papers": []}  # fmt: skip
    catalogue = tmp_path / "c.yaml"
    catalogue.write_text(yaml.safe_dump([entry]), encoding="utf-8")
    assert [m.id for m in tool.load_catalogue([catalogue])] == ["e"]
    catalogue.write_text(yaml.safe_dump([{**entry, "find": find}]), encoding="utf-8")
    with pytest.raises(SystemExit, match=rf"\(e\): `find` occurs {times} times in code.py"):
        tool.load_catalogue([catalogue])
