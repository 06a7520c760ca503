"""`paperlab validate --strict`: what keeps a valid note from being complete.

A note can be valid — every field present and well typed — and still be a scaffold: `TODO`s
left in, no claims, no year, a measured claim with no control, questions with no stable id. This
module lists those as a checklist, each item located (`path:line:col: field: what to do`), so
that a contributor sees at once what is left. The sixteen notes of the library pass it.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from repro.lab.library import Paper
from repro.lab.note import Note
from repro.lab.strict_yaml import Position, YamlProblem, load_document

TODO_RE = re.compile(r"\bTODO\b")
# A claim's source points into the paper: a number (§4.1, Table 2, Eq. 3) or a named part.
SOURCE_RE = re.compile(r"\d|§|abstract|introduction|conclusion|appendix|discussion", re.I)
MIN_QUESTIONS = 3  # the interview block: at least three questions with answers
CONTROL_KINDS = "mechanism off, broken variant, untrained model"


def completeness_problems(paper: Paper) -> list[str]:
    """The checklist of a valid note, located; empty when the note is complete. (`validate
    --strict` adds the study side's warnings, e.g. bare math, which this layer cannot see.)"""
    note = paper.note
    shown = paper.display(paper.note_path)
    text = paper.note_path.read_text(encoding="utf-8")
    try:
        positions = load_document(text).positions
    except YamlProblem:  # the note loaded a moment ago; keep going without positions
        positions = {}

    def at(path: tuple, message: str) -> str:
        line, col = _nearest(path, positions)
        return f"{shown}:{line}:{col}: {_dotted(path) or '(note)'}: {message}"

    out = [f"{shown}:{line}:{col}: {what}" for line, col, what in _todos(text)]
    out += _missing(note, at)
    for i, c in enumerate(note.claims):
        if c.kind == "measured" and not c.control:
            what = f"measured claim {c.id!r} names no control that must lose"
            out.append(at(("claims", i, "control"), f"{what} ({CONTROL_KINDS})"))
    return out


def _missing(note: Note, at: Callable[[tuple, str], str]) -> list[str]:
    out = []
    if note.year is None:
        out.append(at(("year",), "the year of publication is missing"))
    if not note.claims:
        out.append(at(("claims",), "no claims: add the paper's checkable claims"))
    elif all(c.kind == "cited" for c in note.claims):
        out.append(at(("claims",), "every claim is cited: nothing is checked by code"))
    if not note.related:
        out.append(at(("related",), "no related papers (slugs of other notes)"))
    if len(note.interview.questions) < MIN_QUESTIONS:
        out.append(at(("interview", "questions"), f"fewer than {MIN_QUESTIONS} questions"))
    if len(note.interview.answer_outline.follow_ups) < 2:
        out.append(at(("interview", "answer_outline", "follow_ups"), "fewer than 2 follow-ups"))
    for p in note.missing_ids():
        out.append(at(_path(p), "no stable id (`python scripts/add_note_ids.py` adds one)"))
    for i, c in enumerate(note.claims):
        if not SOURCE_RE.search(c.source):
            what = f"claim {c.id!r}: the source names no section, table or figure"
            out.append(at(("claims", i, "source"), what))
    return out


def _todos(text: str) -> list[tuple[int, int, str]]:
    """`TODO` in the note's values (comments are guidance, not content)."""
    found = []
    for n, line in enumerate(text.splitlines(), 1):
        body = _without_comment(line)
        m = TODO_RE.search(body)
        if m:
            found.append((n, m.start() + 1, f"TODO left: {body.strip()[:70]}"))
    return found


def _without_comment(line: str) -> str:
    """The line up to a YAML comment (` #` outside quotes), or nothing for a comment line."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1] in " \t"):
            return line[:i]
    return line


def _path(dotted: str) -> tuple:
    """`interview.questions[1]` → ("interview", "questions", 1)."""
    parts: list = []
    for name, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", dotted):
        parts.append(int(index) if index else name)
    return tuple(parts)


def _dotted(path: tuple) -> str:
    out = ""
    for p in path:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else p)
    return out


def _nearest(path: tuple, positions: dict[tuple, Position]) -> Position:
    """Where `path` starts, or its nearest ancestor that is in the file."""
    for n in range(len(path), 0, -1):
        if path[:n] in positions:
            return positions[path[:n]]
    return (1, 1)
