from __future__ import annotations

from pathlib import Path

import pytest

from repro.lab import cache
from repro.lab.cache import cache_key, cached_json


@pytest.fixture(autouse=True)
def _tmp_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path / "cache"))


def test_computes_once_per_config() -> None:
    calls = []

    def compute() -> dict:
        calls.append(1)
        return {"loss": 1.5}

    assert cached_json("k", {"n": 1}, compute) == {"loss": 1.5}
    assert cached_json("k", {"n": 1}, compute) == {"loss": 1.5}
    assert len(calls) == 1
    cached_json("k", {"n": 2}, compute)
    assert len(calls) == 2


def test_key_depends_on_config_and_code() -> None:
    assert cache_key({"a": 1, "b": 2}) == cache_key({"b": 2, "a": 1})
    assert cache_key({"a": 1}) != cache_key({"a": 2})
    assert cache_key({"a": 1}, code=[cache_key]) != cache_key({"a": 1}, code=[cached_json])


def test_damaged_entry_is_recomputed(tmp_path: Path) -> None:
    cached_json("k", {"n": 1}, lambda: 1)
    (entry,) = [p for p in (tmp_path / "cache" / "k").iterdir() if p.is_dir()]
    (entry / "value.json").write_text("{not json")
    assert cached_json("k", {"n": 1}, lambda: 2) == 2


def test_unwritable_cache_still_returns(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    target = tmp_path / "file"
    target.write_text("")
    monkeypatch.setattr(cache, "cache_root", lambda: target / "sub")
    assert cached_json("k", {"n": 1}, lambda: 3) == 3  # no folder can be made under a file
