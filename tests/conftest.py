"""Shared fixtures: every test that touches a library works on a temporary copy of it."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def library_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary copy of the toy library; runs are stored beside it, under tmp_path."""
    root = tmp_path / "papers"
    shutil.copytree(FIXTURES / "library", root)
    monkeypatch.setenv("PAPERLAB_PAPERS", str(root))
    monkeypatch.setenv("PAPERLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    return root


@pytest.fixture
def valid_note_text() -> str:
    return (FIXTURES / "notes" / "valid.yaml").read_text(encoding="utf-8")
