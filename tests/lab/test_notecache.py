"""The note cache: a hit is what a fresh load gives; any change, damage or oddity rebuilds it."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
from click.testing import CliRunner

import repro.lab.note as note_module
from paperlab import cli
from repro.lab import cache, notecache, strict_yaml
from repro.lab.errors import NoteError
from repro.lab.library import Library
from repro.lab.note import Claim, Note, load_note
from repro.lab.notecache import NoteSummary, entry_path, note_summary

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture
def cache_dir(library_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("PAPERLAB_CACHE", str(folder))
    return folder


@pytest.fixture
def toy(library_dir: Path, cache_dir: Path) -> Path:
    return library_dir / "toy" / "note.yaml"


@pytest.fixture
def parses(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The display paths of the full loads note_summary makes (a hit makes none)."""
    calls: list[str] = []
    real = note_module.parse_note

    def counted(text: str, display_path: str) -> Note:
        if display_path != "fresh":  # the test's own loads
            calls.append(display_path)
        return real(text, display_path)

    monkeypatch.setattr(note_module, "parse_note", counted)
    return calls


def fresh(path: Path) -> NoteSummary:
    return NoteSummary.of(load_note(path, "fresh"))


def payload(note: Path) -> Path:
    return entry_path(note) / notecache.PAYLOAD


def rewrite(note: Path, data: bytes, *, sign: bool) -> None:
    """Replace the entry's summary; `sign`: record its new SHA-256, as a forger would."""
    payload(note).write_bytes(data)
    if sign:
        (entry_path(note) / cache.MANIFEST).unlink()
        cache._write_manifest(entry_path(note), "notes", entry_path(note).name)


def test_a_hit_equals_a_fresh_load_and_parses_nothing(toy: Path, parses: list[str]) -> None:
    first = note_summary(toy, "toy")
    assert parses == ["toy"] and payload(toy).is_file()
    assert cache.entry_problem(entry_path(toy), "notes", entry_path(toy).name) is None
    again = note_summary(toy, "toy")
    assert parses == ["toy"]  # the entry was used
    assert again == first == fresh(toy)
    assert again.title == "Toy: a paper for tests" and again.aliases == ("toy-alias",)
    assert {c.id for c in again.claims} >= {"two-plus-two", "bleu"}


def test_every_paper_of_the_library_round_trips(cache_dir: Path) -> None:
    library = Library(REPO / "papers")
    for paper in library.papers.values():
        built = note_summary(paper.note_path, paper.slug)
        assert note_summary(paper.note_path, paper.slug) == built == fresh(paper.note_path)


def test_an_edit_of_the_same_size_and_mtime_is_seen(toy: Path, parses: list[str]) -> None:
    note_summary(toy, "toy")
    before = os.stat(toy)
    text = toy.read_text()
    toy.write_text(text.replace('title: "Toy:', 'title: "Tay:'))
    os.utime(toy, ns=(before.st_atime_ns, before.st_mtime_ns))  # as if the clock did not tick
    assert os.stat(toy).st_size == before.st_size
    assert note_summary(toy, "toy").title == "Tay: a paper for tests"
    assert len(parses) == 2


def test_a_new_mtime_rebuilds_the_entry(toy: Path, parses: list[str]) -> None:
    note_summary(toy, "toy")
    os.utime(toy, ns=(0, os.stat(toy).st_mtime_ns + 10**9))
    assert note_summary(toy, "toy") == fresh(toy)
    assert len(parses) == 2
    assert json.loads(payload(toy).read_text())["mtime_ns"] == os.stat(toy).st_mtime_ns
    note_summary(toy, "toy")
    assert len(parses) == 2  # rebuilt once, then used


def test_another_loader_version_rebuilds_without_a_warning(
    toy: Path, parses: list[str], caplog: pytest.LogCaptureFixture
) -> None:
    note_summary(toy, "toy")
    record = json.loads(payload(toy).read_text())
    rewrite(toy, json.dumps({**record, "loader": "0" * 64}).encode(), sign=True)
    with caplog.at_level(logging.WARNING):
        assert note_summary(toy, "toy") == fresh(toy)
    assert len(parses) == 2 and caplog.records == []  # an upgrade, not damage


DAMAGE = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "not JSON": lambda raw: b"\x80\x81 not json",
    "empty": lambda raw: b"",
    "a list": lambda raw: b"[1, 2]",
    "no summary": lambda raw: json.dumps(
        {k: v for k, v in json.loads(raw).items() if k != "summary"}
    ).encode(),
    "a year as text": lambda raw: _edit_summary(raw, year="2021"),
    "a bool as year": lambda raw: _edit_summary(raw, year=True),
    "claims as a dict": lambda raw: _edit_summary(raw, claims={"a": "b"}),
    "an unknown claim kind": lambda raw: _edit_summary(raw, claims=[["x", "guessed"]]),
    "an escape in the title": lambda raw: _edit_summary(raw, title="Toy\x1b]0;pwned\x07"),
    "a C1 control in a tag": lambda raw: _edit_summary(raw, tags=["a\x9bb"]),
    "an extra field": lambda raw: _edit_summary(raw, extra=1),
    "a javascript url": lambda raw: _edit_summary(raw, url="javascript:alert(1)"),
}


def _edit_summary(raw: bytes, **changes) -> bytes:
    record = json.loads(raw)
    record["summary"] = {**record["summary"], **changes}
    return json.dumps(record).encode()


@pytest.mark.parametrize("signed", [False, True], ids=["as damaged", "with a new record"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_ignored_with_one_warning_and_rebuilt(
    toy: Path,
    parses: list[str],
    caplog: pytest.LogCaptureFixture,
    damage: str,
    signed: bool,
) -> None:
    """Unsigned, the entry's record catches the change; re-signed (a forger recomputing the
    SHA-256), the checks of the summary itself do."""
    note_summary(toy, "toy")
    rewrite(toy, DAMAGE[damage](payload(toy).read_bytes()), sign=signed)
    with caplog.at_level(logging.WARNING, logger="repro.lab.notecache"):
        assert note_summary(toy, "toy") == fresh(toy)
    assert len(parses) == 2
    (warning,) = caplog.records
    assert warning.getMessage().startswith(f"note cache entry notes/{entry_path(toy).name} ")
    assert warning.getMessage().endswith("; rebuilding it")
    assert ("SHA-256 differs" in warning.getMessage()) is not signed
    note_summary(toy, "toy")
    assert len(parses) == 2  # the rebuilt entry is used


@pytest.mark.parametrize("what", ["the entry", "its summary"])
def test_a_symlink_is_not_trusted(
    toy: Path, parses: list[str], caplog: pytest.LogCaptureFixture, tmp_path: Path, what: str
) -> None:
    note_summary(toy, "toy")
    entry = entry_path(toy)
    target = entry if what == "the entry" else payload(toy)
    elsewhere = tmp_path / "planted"
    os.rename(target, elsewhere)  # a good entry (or summary), but reached through a link
    target.symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING, logger="repro.lab.notecache"):
        assert note_summary(toy, "toy") == fresh(toy)
    assert len(parses) == 2
    assert re.search("is a symlink|not a regular file", caplog.records[0].getMessage())
    assert not entry.is_symlink() and not payload(toy).is_symlink()  # a real entry again
    assert cache.entry_problem(entry, "notes", entry.name) is None
    assert elsewhere.exists()  # what the link pointed at is left alone


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("what", ["the entry", "its summary"])
def test_a_fifo_does_not_hang(
    toy: Path, parses: list[str], caplog: pytest.LogCaptureFixture, what: str
) -> None:
    note_summary(toy, "toy")
    target = entry_path(toy) if what == "the entry" else payload(toy)
    if what == "the entry":
        shutil.rmtree(target)
    else:
        target.unlink()
    os.mkfifo(target)
    with caplog.at_level(logging.WARNING, logger="repro.lab.notecache"):
        assert note_summary(toy, "toy") == fresh(toy)
    assert re.search("is not a folder|not a regular file", caplog.records[0].getMessage())
    assert payload(toy).is_file()


def test_the_cache_commands_see_note_entries(toy: Path, cache_dir: Path) -> None:
    note_summary(toy, "toy")
    assert cache.verify(cache_dir) == (1, [])
    assert [(k.kind, k.entries) for k in cache.summary(cache_dir)] == [("notes", 1)]
    assert cache.clear(cache_dir, "notes")[0] == 1 and not entry_path(toy).exists()


def test_an_entry_of_another_note_is_not_used(
    toy: Path, library_dir: Path, parses: list[str]
) -> None:
    other = library_dir / "other" / "note.yaml"
    other.parent.mkdir()
    other.write_text(toy.read_text().replace('title: "Toy:', 'title: "Other:'))
    note_summary(toy, "toy")
    note_summary(other, "other")
    rewrite(other, payload(toy).read_bytes(), sign=True)  # toy's summary, swapped in
    assert note_summary(other, "other").title == "Other: a paper for tests"
    assert parses == ["toy", "other", "other"]  # rebuilt: the record names another path


def test_a_broken_note_is_reported_every_time_and_not_cached(toy: Path, parses: list[str]) -> None:
    toy.write_text("title: [unclosed\n")
    for _ in range(2):
        with pytest.raises(NoteError, match=r"^toy:2:1: invalid YAML"):
            note_summary(toy, "toy")
    assert len(parses) == 2 and not os.path.lexists(entry_path(toy))
    toy.unlink()
    with pytest.raises(NoteError, match="toy:1:1: cannot read"):
        note_summary(toy, "toy")


def test_an_unwritable_cache_is_no_cache(
    toy: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path / "a-file"))
    assert note_summary(toy, "toy") == note_summary(toy, "toy") == fresh(toy)


def test_the_entry_checks_restate_the_schema() -> None:
    assert notecache.SLUG_RE.pattern == note_module.SLUG_RE.strip("^$")
    assert notecache.YEAR_RANGE == note_module.YEAR_RANGE
    assert typing.get_args(Note.model_fields["priority"].annotation) == notecache.PRIORITIES
    assert typing.get_args(Claim.model_fields["kind"].annotation) == notecache.CLAIM_KINDS
    assert notecache.CONTROL.pattern == strict_yaml.CONTROL.pattern
    url = Note.model_fields["url"].metadata
    assert any(getattr(m, "pattern", None) == r"^https?://" for m in url)
    for name in notecache.LOADER_MODULES:
        assert (REPO / "repro" / "lab" / name).is_file()
    assert re.fullmatch(r"[0-9a-f]{64}", notecache.loader_version())


def test_validate_reads_the_note_not_the_cache(library_dir: Path, cache_dir: Path) -> None:
    """A forged entry (matching the note's hash and stat) makes `list` show a broken note as
    fine, but `validate` and `show` load the note itself and report it."""
    runner = CliRunner()
    toy = library_dir / "toy" / "note.yaml"
    assert runner.invoke(cli, ["list", "--json"]).exit_code == 0  # writes the entry
    good = json.loads(payload(toy).read_text())
    toy.write_text(toy.read_text().replace("priority: core", "priority: urgent"))
    info = os.stat(toy)
    forged = {
        **good,
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "sha256": hashlib.sha256(toy.read_bytes()).hexdigest(),
    }
    rewrite(toy, json.dumps(forged).encode(), sign=True)
    assert json.loads(runner.invoke(cli, ["list", "--json"]).stdout)[0]["priority"] == "core"
    validate = runner.invoke(cli, ["validate", "toy"])
    assert validate.exit_code == 2 and "priority: Input should be" in validate.stderr
    assert runner.invoke(cli, ["show", "toy", "--json"]).exit_code == 2


def test_a_warm_list_imports_neither_yaml_pydantic_nor_rich(
    library_dir: Path, cache_dir: Path
) -> None:
    """The rows from the note cache, the table from the show cache (repro.cli.show_cache)."""
    script = """
import sys
from paperlab import cli
try:
    cli.main(["list"], prog_name="paperlab", standalone_mode=False)
except SystemExit:
    pass
print(sorted(m for m in ("pydantic", "yaml", "jinja2", "torch", "rich") if m in sys.modules))
"""
    command = [sys.executable, "-c", script]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    cold = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert cold.returncode == 0, cold.stderr
    *shown, imported = cold.stdout.strip().splitlines()
    assert imported == "['pydantic', 'rich', 'yaml']"  # a full load, a table laid out
    warm = subprocess.run(command, env=env, capture_output=True, text=True, timeout=60)
    assert warm.returncode == 0, warm.stderr
    *again, imported = warm.stdout.strip().splitlines()
    assert imported == "[]" and again == shown and "Toy: a paper for tests" in warm.stdout


def test_an_entry_rewritten_while_it_is_read_is_a_miss_without_a_warning(
    toy: Path, parses: list[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Another process replacing the entry mid-check (its files vanish under the reader) is
    not damage: the reader loads the note and says nothing."""
    note_summary(toy, "toy")

    def replaced_meanwhile(folder: Path, kind: str, key: str) -> str | None:
        moved = folder.with_name(".elsewhere")
        os.rename(folder, moved)  # the writer moves the old entry away …
        shutil.copytree(moved, folder)  # … and renames its new one in
        shutil.rmtree(moved)
        return "files differ from its record"

    monkeypatch.setattr(cache, "entry_problem", replaced_meanwhile)
    with caplog.at_level(logging.WARNING, logger="repro.lab.notecache"):
        assert note_summary(toy, "toy") == fresh(toy)
    assert caplog.records == [] and len(parses) == 2


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_summary_swapped_for_a_fifo_after_its_check_does_not_hang(
    toy: Path, parses: list[str], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    note_summary(toy, "toy")

    def verified_then_swapped(folder: Path, kind: str, key: str) -> str | None:
        payload(toy).unlink()
        os.mkfifo(payload(toy))
        return None

    monkeypatch.setattr(cache, "entry_problem", verified_then_swapped)
    with caplog.at_level(logging.WARNING, logger="repro.lab.notecache"):
        assert note_summary(toy, "toy") == fresh(toy)
    assert "is damaged (DamagedEntry)" in caplog.records[0].getMessage()
