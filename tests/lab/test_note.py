from __future__ import annotations

import json
import os
import subprocess
import sys
import time
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
    third = "  - id: todo-third-contribution\n    text: TODO third contribution\n"
    text = valid_note_text.replace(third, "").replace("      answer: TODO the answer\n", "", 1)
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
    assert any(
        "tags (tag:yaml.org,2002:python/object/apply:os.system) are not supported" in p
        for p in problems(text)
    )


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


# --- hostile files: each is one located error, fast, in bounded memory ---------------------

BOMB = b'a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n' + b"".join(
    f"l{i}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n".encode() for i in range(9)
)


@pytest.mark.parametrize(
    ("data", "where", "message"),
    [
        (b"title: \xff\n", "1:8", "not UTF-8: byte 0xff cannot be decoded"),
        ("title: ü\n".encode("utf-16"), "1:1", "a UTF-16 file? save it as UTF-8"),
        ("title: x\nvenue: é".encode()[:-1], "2:8", "not UTF-8: byte 0xc3"),
        (b"year: " + b"9" * 5000 + b"\n", "1:7", "cannot read this value"),
        (b"a: " + b"[" * 990 + b"]" * 990 + b"\n", "1:", "nested more than 64 levels deep"),
        (b"rec: &r [1, *r]\n", "1:6", "anchors (&r) are not supported in notes"),
        (b"a: 1\nb: *x\n", "2:4", "aliases (*x) are not supported in notes"),
        (BOMB, "1:4", "anchors (&a) are not supported"),
        (b"title: a\x00b\n", "1:9", "character U+0000 is not allowed in YAML"),
        (b"year: 2021-13-45\n", "1:7", "cannot read this value: month must be in 1..12"),
        (b"? [a]\n: b\n", "1:3", "a mapping key must be plain text"),
        (b"a: 1\n---\nb: 2\n", "2:1", "a note is one YAML document"),
        (b"s: !!set {a}\n", "1:4", "tags (tag:yaml.org,2002:set) are not supported"),
    ],
)
def test_hostile_bytes_give_one_located_error(
    tmp_path: Path, data: bytes, where: str, message: str
) -> None:
    path = tmp_path / "note.yaml"
    path.write_bytes(data)
    start = time.process_time()
    with pytest.raises(NoteError) as info:
        load_note(path, "n.yaml")
    assert time.process_time() - start < 1.0
    (problem,) = info.value.problems
    assert problem.startswith(f"n.yaml:{where}"), problem
    assert message in problem


def test_deep_block_nesting_is_refused_before_recursion() -> None:
    text = "a:\n" + "".join(" " * (i + 1) + "- \n" for i in range(500))
    (found,) = problems(text)
    assert "nested more than 64 levels deep" in found


def test_a_huge_file_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "note.yaml"
    with path.open("wb") as f:
        f.truncate(64 << 20)  # sparse: 64 MiB of zeros, no disk used
    with pytest.raises(NoteError, match=r"n.yaml:1:1: cannot read: 67,108,864 bytes is more"):
        load_note(path, "n.yaml")


def test_a_directory_is_not_a_note(tmp_path: Path) -> None:
    with pytest.raises(NoteError, match=r"^n.yaml:1:1: cannot read: not a regular file$"):
        load_note(tmp_path, "n.yaml")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_is_refused_without_blocking(tmp_path: Path) -> None:
    """Opening a FIFO for reading blocks until a writer comes: the loader must not wait."""
    fifo = tmp_path / "note.yaml"
    os.mkfifo(fifo)
    code = "from repro.lab.note import load_note; import sys; load_note(sys.argv[1])"
    result = subprocess.run(
        [sys.executable, "-c", code, str(fifo)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert "not a regular file" in result.stderr


def test_a_utf8_bom_and_crlf_line_ends_are_fine(valid_note_text: str, tmp_path: Path) -> None:
    path = tmp_path / "note.yaml"
    path.write_bytes(b"\xef\xbb\xbf" + valid_note_text.replace("\n", "\r\n").encode())
    assert load_note(path).title == "Toy: a paper for tests"


def test_control_characters_in_keys_stay_on_one_line() -> None:
    found = problems('"bad\\nkey": 1\n')
    assert all("\n" not in p for p in found)
    assert any(p.endswith(":1:1: bad\\nkey: unknown field") for p in found), found


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("tolerance: {abs: 0.5}", "tolerance: {abs: .inf}", "abs: Input should be a finite number"),
        ("tolerance: {abs: 0.5}", "tolerance: {rel: .inf}", "rel: Input should be a finite number"),
        ("tolerance: {abs: 0.5}", "tolerance: {abs: .nan}", "abs: Input should be a finite number"),
        (
            "tolerance: {abs: 0.5}",
            "tolerance: {range: [-.inf, .inf]}",
            "range[0]: Input should be a finite number",
        ),
        ("expected: 1.0", "expected: .nan", "`expected` must be a finite number"),
        ("expected: 1.0", "expected: -.inf", "`expected` must be a finite number"),
        ("expected: 1.0", "expected: " + "9" * 400, "`expected` must be a finite number"),
    ],
)
def test_meaningless_tolerances_are_refused(
    valid_note_text: str, old: str, new: str, message: str
) -> None:
    assert old in valid_note_text, old
    found = problems(valid_note_text.replace(old, new, 1))
    assert any(message in p for p in found), found


# --- stable ids, code references, the migration -------------------------------------------


def test_ids_must_be_unique_within_a_list(valid_note_text: str) -> None:
    text = valid_note_text.replace(
        "id: todo-another-question", "id: todo-question-interviewers-ask"
    )
    (found,) = problems(text)
    assert "interview.questions: duplicate id 'todo-question-interviewers-ask'" in found
    # the same id in two different lists is fine: a card's kind is part of its key
    text = valid_note_text.replace("id: todo-name", "id: todo-another-question")
    assert parse_note(text, "n.yaml").formulas[0].id == "todo-another-question"


def test_plain_strings_still_load_but_lack_ids(valid_note_text: str) -> None:
    text = valid_note_text.replace(
        "  - id: todo-first-contribution\n    text: TODO first contribution\n",
        "  - TODO first contribution\n",
    ).replace("    - id: todo-another-question\n      question:", "    - question:")
    note = parse_note(text, "n.yaml")
    assert note.contributions[0].text == "TODO first contribution"
    assert note.missing_ids() == ["contributions[0]", "interview.questions[1]"]
    assert parse_note(valid_note_text, "n.yaml").missing_ids() == []


@pytest.mark.parametrize(
    "ref",
    ["repro/nn/lora.py", "repro/nn/lora.py::LoRALinear.forward", "a/b.py#L3-L9", "x.py::f#marker"],
)
def test_code_reference_syntax(valid_note_text: str, ref: str) -> None:
    text = valid_note_text.replace(
        "    latex: 'TODO'\n", f"    latex: 'TODO'\n    code: {ref}\n", 1
    )
    assert parse_note(text, "n.yaml").formulas[0].code == ref


@pytest.mark.parametrize("ref", ["lora.py:forward", "/etc/x.py", "x.py#L", "x.py::1f", "x.txt"])
def test_bad_code_reference_is_located(valid_note_text: str, ref: str) -> None:
    text = valid_note_text.replace(
        "    latex: 'TODO'\n", f"    latex: 'TODO'\n    code: '{ref}'\n", 1
    )
    (found,) = problems(text)
    assert "formulas[0].code: String should match pattern" in found


def test_formula_and_plot_claims_must_exist(valid_note_text: str) -> None:
    text = valid_note_text.replace(
        "    latex: 'TODO'\n", "    latex: 'TODO'\n    claims: [nope]\n", 1
    )
    assert "lists unknown claim 'nope'" in problems(text)[0]
    text = valid_note_text + "plots:\n  - file: a.svg\n    claim: nope\n    caption: c\n"
    assert "plot 'a.svg' names unknown claim 'nope'" in problems(text)[0]


def _migrate(text: str) -> tuple[str, int]:
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "add_note_ids", REPO / "scripts" / "add_note_ids.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.add_ids(text)


def test_migration_adds_content_ids_and_keeps_the_rest(valid_note_text: str) -> None:
    old = valid_note_text.replace(
        "  - id: todo-first-contribution\n    text: TODO first contribution\n",
        "  - |\n    First: a contribution\n    on two lines.\n  # a comment stays\n",
    ).replace("    - id: todo-another-question\n      question:", "    - question:")
    assert parse_note(old, "n.yaml").missing_ids() == ["contributions[0]", "interview.questions[1]"]
    new, added = _migrate(old)
    assert added == 2
    note = parse_note(new, "n.yaml")
    assert note.missing_ids() == []
    assert note.contributions[0].id == "first-contribution-lines"  # four words at most
    assert note.contributions[0].text == "First: a contribution\non two lines.\n"
    assert note.interview.questions[1].id == "todo-another-question"
    assert "  # a comment stays\n" in new
    # only the edited items changed, and a second run changes nothing
    assert len(new.splitlines()) == len(old.splitlines()) + 2
    assert _migrate(new) == (new, 0)


def test_migration_ids_do_not_depend_on_position(valid_note_text: str) -> None:
    base = valid_note_text.replace(
        "    - id: todo-another-question\n      question:", "    - question:"
    )
    first, _ = _migrate(base)
    q1 = (
        "    - id: todo-question-interviewers-ask\n"
        "      question: TODO a question interviewers ask\n      answer: TODO the answer\n"
    )
    end = "      answer: TODO the answer\n  deep_dive:"
    moved = base.replace(q1, "").replace(end, f"      answer: TODO the answer\n{q1}  deep_dive:")
    second, _ = _migrate(moved)
    ids = lambda t: {q.question: q.id for q in parse_note(t, "n.yaml").interview.questions}  # noqa: E731
    assert ids(first) == ids(second)
