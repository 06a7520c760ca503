from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
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


# --- integrity: a damaged or mixed-up entry is reported, recomputed, never used ----------------


def _entry(root: Path, kind: str) -> Path:
    (entry,) = [p for p in (root / kind).iterdir() if p.is_dir() and not p.name.startswith(".")]
    return entry


def _counting(value: object) -> tuple[list, object]:
    calls: list = []

    def compute() -> object:
        calls.append(1)
        return value

    return calls, compute


def _damage_digit(entry: Path, other: Path) -> None:
    data = (entry / "value.json").read_text()
    (entry / "value.json").write_text(data.replace("6.4", "6.5"))


def _other_valid_json(entry: Path, other: Path) -> None:
    (entry / "value.json").write_text('{"ratio": 1.0}')


def _symlink_to_other(entry: Path, other: Path) -> None:
    (entry / "value.json").unlink()
    (entry / "value.json").symlink_to(other / "value.json")


def _swap_whole_entries(entry: Path, other: Path) -> None:
    tmp = entry.with_name("swap")
    entry.rename(tmp)
    other.rename(entry)
    tmp.rename(other)


def _fifo(entry: Path, other: Path) -> None:
    (entry / "value.json").unlink()
    os.mkfifo(entry / "value.json")


def _entry_is_symlink(entry: Path, other: Path) -> None:
    shutil.rmtree(entry)
    entry.symlink_to(other, target_is_directory=True)


def _no_record(entry: Path, other: Path) -> None:
    (entry / "entry.json").unlink()


def _extra_file(entry: Path, other: Path) -> None:
    (entry / "extra.json").write_text("{}")


@pytest.mark.parametrize(
    "damage",
    [_damage_digit, _other_valid_json, _symlink_to_other, _swap_whole_entries, _fifo,
     _entry_is_symlink, _no_record, _extra_file],
)  # fmt: skip
def test_damaged_entries_are_reported_and_recomputed(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, damage
) -> None:
    root = tmp_path / "cache"
    cached_json("curves", {"n": 1}, lambda: {"ratio": 6.4})
    entry = _entry(root, "curves")
    cached_json("other", {"n": 2}, lambda: {"ratio": 2.5})
    other = _entry(root, "other")
    if damage is _swap_whole_entries:  # two entries of one kind trade places
        cached_json("curves", {"n": 3}, lambda: {"ratio": 9.9})
        other = next(p for p in (root / "curves").iterdir() if p.is_dir() and p != entry)
    damage(entry, other)
    calls, compute = _counting({"ratio": 6.4})
    with caplog.at_level(logging.WARNING, logger="repro.lab.cache"):
        assert cached_json("curves", {"n": 1}, compute) == {"ratio": 6.4}
    assert calls == [1], "a damaged entry was used"
    (record,) = caplog.records
    assert f"curves/{entry.name}" in record.getMessage() and "\n" not in record.getMessage()
    # recomputed and stored again: the next read is silent and uses the cache
    caplog.clear()
    calls, compute = _counting({"ratio": 0.0})
    assert cached_json("curves", {"n": 1}, compute) == {"ratio": 6.4} and calls == []
    assert not caplog.records
    if damage in (_symlink_to_other, _entry_is_symlink):  # the link went, not its target
        assert cached_json("other", {"n": 2}, lambda: {"ratio": -1}) == {"ratio": 2.5}


def test_entry_problem_names_the_difference(tmp_path: Path) -> None:
    cached_json("k", {"n": 1}, lambda: [1, 2])
    entry = _entry(tmp_path / "cache", "k")
    assert cache.entry_problem(entry, "k", entry.name) is None
    assert "not its own" in cache.entry_problem(entry, "k", "0" * 16)
    assert "not its own" in cache.entry_problem(entry, "other-kind", entry.name)
    (entry / "value.json").write_text("[1, 3]")
    assert "value.json: SHA-256 differs" in cache.entry_problem(entry, "k", entry.name)


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_leftovers_of_killed_processes_are_removed(tmp_path: Path) -> None:
    kind = tmp_path / "cache" / "k"
    kind.mkdir(parents=True)
    dead, alive = _dead_pid(), os.getppid()
    (kind / f".abc-{dead}-x1").mkdir()  # a killed writer's temporary folder
    (kind / f".abc-{alive}-x2").mkdir()  # a running writer's
    (kind / "abc.lock").write_text("")  # nobody holds it
    held = kind / "def.lock"
    holder = cache._lock(held)
    try:
        removed = cache.remove_stale(kind)
        assert sorted(p.name for p in removed) == sorted([f".abc-{dead}-x1", "abc.lock"])
        assert (kind / f".abc-{alive}-x2").exists() and held.exists()
    finally:
        holder.close()
    # the first use of a kind in a process cleans it
    (kind / f".abc-{dead}-x3").mkdir()
    cache._CLEANED.discard(kind)
    cached_json("k", {"n": 1}, lambda: 1)
    assert not (kind / f".abc-{dead}-x3").exists()


def test_a_planted_lock_symlink_is_not_followed(tmp_path: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    key = cache.cache_key({"n": 1})
    kind = tmp_path / "cache" / "k"
    kind.mkdir(parents=True)
    (kind / f"{key}.lock").symlink_to(victim)
    assert cached_json("k", {"n": 1}, lambda: 5) == 5  # computed, uncached: no lock
    assert victim.read_text() == "keep"


def test_verify_and_clear(tmp_path: Path) -> None:
    root = tmp_path / "cache"
    cached_json("a", {"n": 1}, lambda: 1)
    cached_json("a", {"n": 2}, lambda: 2)
    cached_json("b", {"n": 3}, lambda: 3)
    assert [(s.kind, s.entries) for s in cache.summary(root)] == [("a", 2), ("b", 1)]
    bad = _entry(root, "b")
    (bad / "value.json").write_text("4")
    checked, problems = cache.verify(root)
    assert checked == 3 and [(p.kind, p.key) for p in problems] == [("b", bad.name)]
    assert not bad.exists()
    assert cache.clear(root, "a")[0] == 2 and cache.summary(root)[0].entries == 0


def test_cache_command(tmp_path: Path) -> None:
    from click.testing import CliRunner

    from paperlab import cli

    cached_json("a", {"n": 1}, lambda: 1)
    cached_json("b", {"n": 2}, lambda: 2)
    runner = CliRunner()
    listing = runner.invoke(cli, ["cache", "--json"])
    assert listing.exit_code == 0
    kinds = json.loads(listing.stdout)["kinds"]
    assert [(k["kind"], k["entries"]) for k in kinds] == [("a", 1), ("b", 1)]
    bad = _entry(tmp_path / "cache", "b")
    (bad / "value.json").write_text("3")
    result = runner.invoke(cli, ["cache", "verify"])
    assert result.exit_code == 1
    assert f"damaged: b/{bad.name} value.json: SHA-256 differs" in result.stderr
    assert "2 entries checked, 1 damaged" in result.stderr
    assert runner.invoke(cli, ["cache", "verify"]).exit_code == 0
    wrong = runner.invoke(cli, ["cache", "clear", "zzz"])
    assert wrong.exit_code == 2 and wrong.stderr.startswith("Error: the cache has no kind 'zzz'")
    cleared = runner.invoke(cli, ["cache", "clear"])
    assert cleared.exit_code == 0 and cleared.stdout.startswith("removed 1 entry")
