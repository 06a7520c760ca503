from __future__ import annotations

import json
from pathlib import Path

import pytest

from repro.lab.errors import NoteError
from repro.lab.note import Note, load_note, note_json_schema, parse_note

REPO = Path(__file__).resolve().parents[2]


def problems(text: str) -> list[str]:
    with pytest.raises(NoteError) as info:
        parse_note(text, "papers/x/note.yaml")
    return info.value.problems


def test_valid_note_loads(valid_note_text: str) -> None:
    note = parse_note(valid_note_text, "note.yaml")
    assert note.title == "Toy: a paper for tests"
    assert [c.kind for c in note.claims].count("cited") == 1


def test_unknown_field_is_reported_at_its_key(valid_note_text: str) -> None:
    text = valid_note_text.replace("venue:", "colour: blue\nvenue:", 1)
    line = text.splitlines().index("colour: blue") + 1
    assert problems(text) == [f"papers/x/note.yaml:{line}:1: colour: unknown field"]


def test_every_problem_is_reported_at_once(valid_note_text: str) -> None:
    text = valid_note_text.replace("  - TODO third contribution\n", "").replace(
        "      answer: TODO the answer\n", "", 1
    )
    found = problems(text)
    assert len(found) == 2
    assert found[0].endswith(
        "contributions: List should have at least 3 items after validation, not 2"
    )
    assert found[1].endswith("interview.questions[0].answer: field required")


def test_positions_point_into_nested_lists(valid_note_text: str) -> None:
    text = valid_note_text.replace("    tolerance: exact\n", "    tolerance: exakt\n", 1)
    line = text.splitlines().index("    tolerance: exakt") + 1
    assert problems(text) == [
        f"papers/x/note.yaml:{line}:5: claims[0].tolerance: expected 'exact', {{rel: x}}, "
        "{abs: x} or {range: [lo, hi]}, got 'exakt'"
    ]


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("    why: Needs the full WMT training run.\n", "", "a cited claim needs `why`"),
        (
            "    tolerance: {abs: 0.5}\n",
            "    tolerance: {abs: 0.5, rel: 0.1}\n",
            "give exactly one of rel, abs, range",
        ),
        (
            "    tolerance: {range: [null, 1.0]}\n",
            "    tolerance: {range: [2, 1]}\n",
            "range lower bound 2.0 exceeds upper bound 1.0",
        ),
        ("  - id: wrong-sum\n", "  - id: two-plus-two\n", "duplicate claim id 'two-plus-two'"),
        ("  - id: wrong-sum\n", "  - id: Wrong_Sum\n", "String should match pattern"),
    ],
)
def test_claim_rules(valid_note_text: str, old: str, new: str, message: str) -> None:
    assert old in valid_note_text
    (found,) = problems(valid_note_text.replace(old, new, 1))
    assert message in found


def test_invalid_yaml_gives_one_positioned_line() -> None:
    (found,) = problems("title: [unclosed\nauthors: x\n")
    assert found.startswith("papers/x/note.yaml:2:")
    assert "invalid YAML" in found


def test_duplicate_keys_are_errors(valid_note_text: str) -> None:
    text = valid_note_text.replace("venue:", "year: 1999\nvenue:", 1)
    assert any("year: duplicate key" in p for p in problems(text))


def test_yaml_is_loaded_safely(valid_note_text: str) -> None:
    text = valid_note_text.replace(
        'title: "Toy', 'title: !!python/object/apply:os.system ["echo"]\nx: "Toy', 1
    )
    assert any("tags (tag:yaml.org,2002:python/object/apply:os.system) are not supported" in p for p in problems(text))


def test_not_a_mapping() -> None:
    assert problems("- a\n- b\n") == [
        "papers/x/note.yaml:1:1: (note): expected a mapping of note fields"
    ]


def test_unreadable_file(tmp_path: Path) -> None:
    with pytest.raises(NoteError, match="cannot read"):
        load_note(tmp_path / "missing.yaml")


def test_committed_schema_is_current() -> None:
    committed = json.loads((REPO / "note.schema.json").read_text(encoding="utf-8"))
    assert committed == note_json_schema(), "run `paperlab schema -o note.schema.json`"


def test_schema_forbids_extra_fields() -> None:
    schema = note_json_schema()
    assert schema["additionalProperties"] is False
    assert set(schema["required"]) >= {"title", "authors", "interview", "passes"}
    assert Note.model_fields["contributions"].metadata
