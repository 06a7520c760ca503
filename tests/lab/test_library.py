from __future__ import annotations

from pathlib import Path

import pytest

from repro.lab.errors import BadOption, MissingLibrary, NoteError, UnknownPaper, WiringError
from repro.lab.library import Library, check_claim_ids, notes_or_error


def test_discovers_papers_and_aliases(library_dir: Path) -> None:
    lib = Library(library_dir)
    assert lib.slugs() == ["toy"]
    assert lib.get("toy-alias").slug == "toy"


def test_unknown_paper_suggests_the_closest(library_dir: Path) -> None:
    with pytest.raises(UnknownPaper, match=r"^unknown paper 'tyo'; did you mean 'toy'\?$"):
        Library(library_dir).get("tyo")


def test_unknown_paper_without_a_close_match_lists_the_known(library_dir: Path) -> None:
    with pytest.raises(UnknownPaper, match=r"^unknown paper 'zzzzzz' \(known: toy\)$"):
        Library(library_dir).get("zzzzzz")


def test_wiring_is_read_without_importing(library_dir: Path) -> None:
    paper = Library(library_dir).get("toy")
    assert set(paper.claim_ids_in_code()) == {
        "two-plus-two",
        "wrong-sum",
        "crashes",
        "needs-gpu",
        "mean-loss",
    }
    assert paper.wiring_problems() == []


def test_wiring_problems_in_both_directions(library_dir: Path) -> None:
    repro = library_dir / "toy" / "repro.py"
    text = repro.read_text().replace('@claim("crashes")', '@claim("crashes-renamed")')
    repro.write_text(text)
    problems = Library(library_dir).get("toy").wiring_problems()
    assert any("claim 'crashes' (measured) has no @claim function" in p for p in problems)
    assert any("@claim('crashes-renamed') has no claim in note.yaml" in p for p in problems)


def test_a_cited_claim_must_not_have_a_check(library_dir: Path) -> None:
    repro = library_dir / "toy" / "repro.py"
    repro.write_text(repro.read_text() + '\n\n@claim("bleu")\ndef bleu(ctx):\n    return 1\n')
    (problem,) = Library(library_dir).get("toy").wiring_problems()
    assert "claim 'bleu' is cited in the note but has a check" in problem


def test_a_missing_folder_is_an_error_not_an_empty_library(tmp_path: Path) -> None:
    with pytest.raises(MissingLibrary, match=r"papers folder .*nowhere does not exist"):
        Library(tmp_path / "nowhere").slugs()
    (tmp_path / "file").write_text("")
    with pytest.raises(MissingLibrary, match="is not a folder"):
        Library(tmp_path / "file").slugs()


def test_slugs_and_aliases_match_in_any_case(library_dir: Path) -> None:
    lib = Library(library_dir)
    assert lib.get("TOY").slug == "toy" and lib.get("Toy-Alias").slug == "toy"
    assert [p.slug for p in lib.select(["toy", "TOY"])] == ["toy"]


def test_every_broken_note_is_reported_at_once(library_dir: Path) -> None:
    for slug in ("one", "two"):
        (library_dir / slug).mkdir()
        (library_dir / slug / "note.yaml").write_bytes(b"title: [\n")
    lib = Library(library_dir)
    with pytest.raises(NoteError) as info:
        notes_or_error(list(lib.papers.values()))
    assert [p.split("/")[-2] for p in info.value.problems] == ["one", "two"]


def test_claim_ids_are_checked_with_a_suggestion(library_dir: Path) -> None:
    toy = Library(library_dir).get("toy")
    check_claim_ids([toy], ("two-plus-two",))
    with pytest.raises(
        BadOption, match=r"toy has no claim 'two-plus-too'; did you mean 'two-plus-two'"
    ):
        check_claim_ids([toy], ("two-plus-too",))


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (b"x = '\xff'\n", ":1:6: not UTF-8"),
        (b"def (:\n", ":1:5: invalid syntax"),
        (b"x\x00\n", ":1:1: "),
    ],
)
def test_an_unreadable_repro_is_one_located_wiring_error(
    library_dir: Path, source: bytes, message: str
) -> None:
    (library_dir / "toy" / "repro.py").write_bytes(source)
    with pytest.raises(WiringError, match=message):
        Library(library_dir).get("toy").claim_ids_in_code()
