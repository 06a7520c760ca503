"""Anki export: a real .apkg whose cards keep their GUIDs, so re-importing updates them."""

from __future__ import annotations

import shutil
import sqlite3
import zipfile
from pathlib import Path

import pytest

from repro.study.anki import card_guid, paper_cards, render_tsv, write_apkg
from repro.lab.library import Library

REPO = Path(__file__).resolve().parents[2]


def notes_in(apkg: Path, tmp_path: Path) -> list[tuple]:
    """(guid, fields, tags) of every note in the package's SQLite collection."""
    with zipfile.ZipFile(apkg) as z:
        assert "collection.anki2" in z.namelist()
        z.extract("collection.anki2", tmp_path)
    db = sqlite3.connect(tmp_path / "collection.anki2")
    try:
        return db.execute("select guid, flds, tags from notes order by guid").fetchall()
    finally:
        db.close()


def deck_names(tmp_path: Path) -> set[str]:
    """Deck names of the collection `notes_in` extracted to `tmp_path`."""
    import json

    db = sqlite3.connect(tmp_path / "collection.anki2")
    try:
        (decks,) = db.execute("select decks from col").fetchone()
    finally:
        db.close()
    return {d["name"] for d in json.loads(decks).values()}


@pytest.fixture
def two_papers(tmp_path: Path) -> Path:
    root = tmp_path / "papers"
    for slug in ("lora", "transformer"):
        shutil.copytree(REPO / "papers" / slug, root / slug)
    return root


def test_apkg_is_a_zip_with_the_expected_notes(two_papers: Path, tmp_path: Path) -> None:
    papers = list(Library(two_papers).papers.values())
    out = tmp_path / "deck.apkg"
    count = write_apkg(papers, out)
    expected = sum(len(paper_cards(p)) for p in papers)
    assert count == expected
    rows = notes_in(out, tmp_path)
    assert len(rows) == expected
    assert deck_names(tmp_path) >= {"paperlab::lora", "paperlab::transformer"}
    tags = {tag for _, _, t in rows for tag in t.split()}
    assert {"lora", "transformer", "core", "must-know", "question", "formula"} <= tags
    fields = "\x1f".join(f for _, f, _ in rows)
    assert "\\(W_0\\)" in fields and "\\[" in fields
    assert "$W_0$" not in fields


def test_same_guids_on_every_export(two_papers: Path, tmp_path: Path) -> None:
    papers = list(Library(two_papers).papers.values())
    write_apkg(papers, tmp_path / "a.apkg")
    (tmp_path / "a").mkdir()
    first = [r[0] for r in notes_in(tmp_path / "a.apkg", tmp_path / "a")]
    write_apkg(list(Library(two_papers).papers.values()), tmp_path / "b.apkg")
    (tmp_path / "b").mkdir()
    second = [r[0] for r in notes_in(tmp_path / "b.apkg", tmp_path / "b")]
    assert first == second and len(set(first)) == len(first)


def test_an_edited_answer_keeps_its_guid(two_papers: Path, tmp_path: Path) -> None:
    def export(name: str) -> dict[str, str]:
        (tmp_path / name).mkdir()
        write_apkg([Library(two_papers).get("lora")], tmp_path / name / "deck.apkg")
        rows = notes_in(tmp_path / name / "deck.apkg", tmp_path / name)
        return {guid: fields for guid, fields, _ in rows}

    before = export("before")
    note = two_papers / "lora" / "note.yaml"
    text = note.read_text(encoding="utf-8")
    edited = text.replace("The LoRA branch is linear", "EDITED: the branch is linear", 1)
    assert edited != text
    note.write_text(edited, encoding="utf-8")
    after = export("after")
    assert after.keys() == before.keys()
    changed = [g for g in after if after[g] != before[g]]
    assert len(changed) == 1 and "EDITED" in after[changed[0]]
    assert card_guid("lora", "question-1") != card_guid("lora", "question-2")
    assert card_guid("lora", "question-1") != card_guid("lora", "question-1", "zh")


def test_zh_cards_use_the_overlay(two_papers: Path) -> None:
    cards = paper_cards(Library(two_papers).get("transformer"), "zh")
    assert cards[0].front.endswith("3个核心贡献是什么？")
    assert "缩放点积注意力" in cards[0].back


def test_tsv_has_guids_and_mathjax(two_papers: Path) -> None:
    tsv = render_tsv([Library(two_papers).get("lora")])
    assert tsv.startswith("#separator:tab\n#html:true\n#guid column:1\n")
    assert "\\(W_0\\)" in tsv and "paperlab::lora" in tsv
