from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.lab.errors import BadOption
from repro.lab.library import Library
from repro.lab.runner import run_paper
from repro.lab.runs import diff_runs, find_run, list_runs, read_run


@pytest.fixture
def two_runs(library_dir: Path, tmp_path: Path):
    toy = Library(library_dir).get("toy")
    runs = tmp_path / "runs"
    a = run_paper(toy, runs_dir=runs, experiment=True, quick=True, seed=1)
    b = run_paper(toy, runs_dir=runs, experiment=True, quick=False, seed=2)
    return runs, a, b


def test_runs_are_listed_newest_first_with_their_summary(two_runs) -> None:
    runs, a, b = two_runs
    listed = list_runs(runs, ["toy"])
    assert [r.stamp for r in listed] == [b.run_dir.name, a.run_dir.name]
    newest = listed[0]
    assert (newest.preset, newest.seed) == ("full", 2)
    assert newest.verdicts == {"verified": 2, "failed": 1, "error": 1, "skipped": 1, "cited": 1}
    assert newest.seconds == b.seconds


def test_a_run_is_found_by_stamp_prefix_or_name(two_runs) -> None:
    runs, a, b = two_runs
    assert find_run(runs, "toy", "latest").stamp == b.run_dir.name
    assert find_run(runs, "toy", "previous").stamp == a.run_dir.name
    assert find_run(runs, "toy", a.run_dir.name).stamp == a.run_dir.name
    with pytest.raises(BadOption, match="no run 'nope' of 'toy'"):
        find_run(runs, "toy", "nope")
    with pytest.raises(BadOption, match="matches 2 runs"):
        find_run(runs, "toy", "2")


def test_diff_shows_what_changed(two_runs) -> None:
    runs, a, b = two_runs
    changes = {(c.section, c.key): (c.a, c.b) for c in diff_runs(*(read_run("toy", r.run_dir)
                                                                  for r in (a, b)))}  # fmt: skip
    assert changes[("config", "steps")] == (3, 10)
    assert changes[("metrics", "steps")] == (3, 10)
    assert ("claims", "two-plus-two.verdict") not in changes  # the same in both


def test_damaged_run_files_leave_fields_empty(tmp_path: Path) -> None:
    folder = tmp_path / "toy" / "20260101T000000000000Z"
    folder.mkdir(parents=True)
    (folder / "claims.json").write_text("{not json")
    (folder / "config.json").write_text(json.dumps([1, 2]))
    (run,) = list_runs(tmp_path, ["toy"])
    assert (run.preset, run.verdicts, run.seconds) == ("", {}, None)


def test_a_partial_folder_of_a_process_we_may_not_signal_is_kept(tmp_path: Path, monkeypatch):
    import os

    from repro.lab.runs import remove_stale_partials

    folder = tmp_path / "toy" / ".partial-999999-1"
    folder.mkdir(parents=True)

    def not_ours(pid: int, signal: int) -> None:
        raise PermissionError(1, "Operation not permitted")

    monkeypatch.setattr(os, "kill", not_ours)
    assert remove_stale_partials(tmp_path, "toy") == []
    assert folder.exists()


def test_publish_gives_a_taken_stamp_the_next_free_suffix(tmp_path: Path) -> None:
    from repro.lab.runs import publish

    (tmp_path / "S-2").mkdir()  # taken by someone else: skipped, left as it was
    finals = []
    for i in range(3):
        tmp = tmp_path / f".partial-1-{i}"
        tmp.mkdir()
        (tmp / "claims.json").write_text(str(i))
        finals.append(publish(tmp, "S"))
    assert [f.name for f in finals] == ["S", "S-3", "S-4"]
    assert [(f / "claims.json").read_text() for f in finals] == ["0", "1", "2"]
    assert list((tmp_path / "S-2").iterdir()) == []
