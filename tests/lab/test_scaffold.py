"""`paperlab new` with hostile input: nothing typed can inject into, or break, the files written."""

from __future__ import annotations

import ast
import os
from pathlib import Path

import pytest

from repro.lab.errors import ScaffoldError
from repro.lab.library import Library
from repro.lab.note import load_note
from repro.lab.scaffold import scaffold_paper

HOSTILE_TITLES = [
    "x\ntitle: injected",
    'X""" + __import__("os").system("touch pwned") + """',
    "X''' + __import__('os').system('touch pwned') + '''",
    "ends with a backslash \\",
    "a: b # not a comment",
    "{{ 7 * 7 }} {% if 1 %}jinja{% endif %}",
    "- [list] & *alias !tag %percent @at `tick`",
    "tab\there and a newline\nthere",
    "Attention Is All You Need — 注意力 🚀",
    "'single' \"double\"",
]


@pytest.mark.parametrize("title", HOSTILE_TITLES)
def test_a_hostile_title_round_trips_and_injects_nothing(tmp_path: Path, title: str) -> None:
    folder = scaffold_paper(tmp_path, "paper", title, "2401.00001", 2024)
    assert load_note(folder / "note.yaml").title == title
    source = (folder / "repro.py").read_text(encoding="utf-8")
    module = ast.parse(source)  # still valid Python
    docstring = ast.get_docstring(module, clean=False)
    assert docstring is not None and docstring.startswith(title + " — reproduction.")
    calls = [n for n in ast.walk(module) if isinstance(n, ast.Call)]
    assert not any(getattr(c.func, "attr", "") == "system" for c in calls)
    assert not (tmp_path / "pwned").exists()
    assert Library(tmp_path).get("paper").wiring_problems() == []


@pytest.mark.parametrize("title", ["CR\rthere", "NUL\x00", "bell\x07", "escape\x1b]0;x", "c1\x9b"])
def test_a_title_with_control_characters_is_refused(tmp_path: Path, title: str) -> None:
    with pytest.raises(ScaffoldError, match="control character U\\+00"):
        scaffold_paper(tmp_path, "paper", title, "2401.00001", 2024)
    assert not (tmp_path / "paper").exists()


@pytest.mark.parametrize(
    ("slug", "message"),
    [
        ("nl\n", "invalid slug 'nl\\n'"),
        ("a" * 65, "invalid slug: 65 characters, at most 64"),
        ("a" * 300, "invalid slug: 300 characters"),
        ("Upper", "invalid slug 'Upper'"),
        ("../escape", "invalid slug"),
        ("-dash", "invalid slug"),
        ("", "invalid slug"),
    ],
)
def test_bad_slugs_are_refused_before_writing(tmp_path: Path, slug: str, message: str) -> None:
    with pytest.raises(ScaffoldError, match="^" + message.replace("\\", "\\\\")):
        scaffold_paper(tmp_path, slug, "T", "2401.00001", 2024)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("arxiv", "year", "message"),
    [
        ("2401.00001\n", 2024, "invalid arXiv id"),
        ("1234.5", 2024, "invalid arXiv id"),
        ("2401.00001", 99999, "invalid year 99999: expected 1950–2100"),
        ("2401.00001", -5, "invalid year -5"),
    ],
)
def test_arxiv_and_year_follow_the_schema(tmp_path: Path, arxiv: str, year: int, message: str):
    with pytest.raises(ScaffoldError, match=message):
        scaffold_paper(tmp_path, "paper", "T", arxiv, year)


def test_the_longest_slug_scaffolds_a_valid_note(tmp_path: Path) -> None:
    folder = scaffold_paper(tmp_path, "a" * 64, "T", "2401.00001", 2024)
    assert load_note(folder / "note.yaml").year == 2024


def test_a_dangling_symlink_is_never_written_through(tmp_path: Path) -> None:
    (tmp_path / "paper").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(ScaffoldError, match="already exists"):
        scaffold_paper(tmp_path, "paper", "T", "2401.00001", 2024)
    assert not (tmp_path / "elsewhere").exists()


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_papers_folder_is_one_error(tmp_path: Path) -> None:
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(ScaffoldError, match="cannot write"):
            scaffold_paper(tmp_path, "paper", "T", "2401.00001", 2024)
    finally:
        tmp_path.chmod(0o755)


def test_a_papers_path_that_is_a_file_is_one_error(tmp_path: Path) -> None:
    (tmp_path / "papers").write_text("")
    with pytest.raises(ScaffoldError, match="cannot write"):
        scaffold_paper(tmp_path / "papers", "paper", "T", "2401.00001", 2024)


def test_a_write_failure_is_one_error_and_leaves_nothing(tmp_path: Path, monkeypatch) -> None:
    def full_disk(self, *args, **kwargs):
        raise OSError(28, "No space left on device", str(self))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(ScaffoldError, match="cannot write .*: No space left on device"):
        scaffold_paper(tmp_path, "paper", "T", "2401.00001", 2024)
    assert list(tmp_path.iterdir()) == []


def test_a_missing_parent_folder_is_not_created(tmp_path: Path) -> None:
    with pytest.raises(ScaffoldError, match="cannot write"):
        scaffold_paper(tmp_path / "typo" / "papers", "paper", "T", "2401.00001", 2024)
    assert not (tmp_path / "typo").exists()
