"""Error messages that say how to fix the note, not only what is wrong."""

from __future__ import annotations

import pytest

from repro.lab.errors import NoteError
from repro.lab.note import parse_note


def test_an_unquoted_colon_in_a_list_item_asks_to_quote_it(valid_note_text: str) -> None:
    lines = valid_note_text.splitlines(keepends=True)
    at = next(i for i, line in enumerate(lines) if line.strip().startswith("key_points:"))
    indent = " " * (len(lines[at]) - len(lines[at].lstrip()) + 2)
    lines.insert(at + 1, f"{indent}- Offline: the cache is read first\n")
    with pytest.raises(NoteError) as err:
        parse_note("".join(lines), "n.yaml")
    (problem,) = err.value.problems
    assert problem.startswith(f"n.yaml:{at + 2}:")
    assert problem.endswith("YAML read `key: value` here as a mapping — quote this value")


def test_a_plain_type_error_gets_no_quoting_hint(valid_note_text: str) -> None:
    text = valid_note_text.replace("title:", "title: [a, list]\nx_title:", 1)
    with pytest.raises(NoteError) as err:
        parse_note(text, "n.yaml")
    assert not any("quote this value" in p for p in err.value.problems)
