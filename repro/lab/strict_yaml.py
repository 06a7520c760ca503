"""Strict, bounded YAML: one document of mappings, lists and scalars, built from parser events.

Notes need nothing more, and each refusal below closes a way for a file to hang or crash the
loader (an alias bomb grows without bound; a self-referencing alias or 1,000 nested lists
recurse; a 5,000-digit integer does not convert):

- no anchors, aliases or tags (`&a`, `*a`, `!!set`): refused at their position;
- no control characters (C0 but tab and line feed, DEL, C1), raw or written as a double-quoted
  escape (`"\\e"`, `"\\x9b"`): a title that reaches a terminal must not be able to retitle
  the window, clear the screen or plant a link;
- nesting at most `MAX_DEPTH` levels, checked while the events arrive;
- every scalar is converted on its own, so a bad value (`2021-13-45`, a 5,000-digit integer)
  is reported at its position;
- mapping keys are taken as written (`1:` is the key "1"), and duplicates are reported.

The document is built with an explicit stack, so nothing here recurses. Every error is a
`YamlProblem` carrying its 1-based line and column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

MAX_DEPTH = 64
Position = tuple[int, int]  # 1-based (line, column)
_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when available: ~20× faster

# Characters YAML 1.1 does not allow in a stream (§5.1); found here so the error has a position.
_NOT_PRINTABLE = re.compile(
    "[^\x09\x0a\x0d\x20-\x7e\x85\xa0-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"
)
# What a loaded string may not hold, however it was written (a raw CR of a CRLF file is already
# a line break by then; `"\r"` is not).
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def _control_problem(mark: Any, value: str) -> YamlProblem | None:
    bad = CONTROL.search(value)
    if bad is None:
        return None
    return _problem(
        mark,
        f"control character U+{ord(bad.group()):04X} is not allowed in notes "
        "(terminal escapes, bells and line tricks)",
    )


class YamlProblem(Exception):
    def __init__(self, line: int, column: int, message: str) -> None:
        super().__init__(message)
        self.line, self.column, self.message = line, column, message


@dataclass
class Document:
    data: Any
    positions: dict[tuple, Position]  # path of keys/indices -> where it starts
    duplicates: list[tuple[tuple, Position]]  # (path, position) of each repeated key


def _at(mark: Any) -> Position:
    return (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)


def _problem(mark: Any, message: str) -> YamlProblem:
    return YamlProblem(*_at(mark), message)


def _position_of_offset(text: str, offset: int) -> Position:
    before = text[:offset]
    return before.count("\n") + 1, offset - (before.rfind("\n") + 1) + 1


@dataclass
class _Open:
    """A mapping or list being filled."""

    value: dict | list
    path: tuple
    start: Any  # where it begins
    key: str | None = None  # a mapping's key waiting for its value
    key_mark: Any = None


def load_document(text: str) -> Document:
    """Parse `text`; raise YamlProblem at the first thing a note may not contain."""
    bad = _NOT_PRINTABLE.search(text)
    if bad:
        line, col = _position_of_offset(text, bad.start())
        raise YamlProblem(line, col, f"character U+{ord(bad.group()):04X} is not allowed in YAML")
    loader = _SafeLoader(text)
    try:
        return _build(loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        reason = exc.problem or exc.context or "parse error"
        raise _problem(mark, f"invalid YAML: {reason}") from None
    except yaml.YAMLError as exc:  # a reader error has an offset, not a mark
        offset = getattr(exc, "position", 0) or 0
        raise YamlProblem(*_position_of_offset(text, offset), f"invalid YAML: {exc}") from None
    finally:
        loader.dispose()


def _build(loader: Any) -> Document:
    positions: dict[tuple, Position] = {}
    duplicates: list[tuple[tuple, Position]] = []
    stack: list[_Open] = []
    root: Any = None
    documents = 0

    def place(value: Any, mark: Any) -> None:
        """Attach a finished value to the open container (or make it the document)."""
        nonlocal root
        if not stack:
            root = value
            positions.setdefault((), _at(mark))
            return
        top = stack[-1]
        if isinstance(top.value, list):
            positions[top.path + (len(top.value),)] = _at(mark)
            top.value.append(value)
            return
        if top.key is None:  # this value is a key
            if isinstance(value, dict | list):
                raise _problem(mark, "a mapping key must be plain text")
            top.key, top.key_mark = value, mark
            return
        path = top.path + (top.key,)
        if top.key in top.value:
            duplicates.append((path, _at(top.key_mark)))
        top.value[top.key] = value
        # a key's own problems (e.g. unknown field) point at the key, not its value
        positions[path] = _at(top.key_mark)
        top.key = None

    def child_path() -> tuple:
        top = stack[-1]
        return top.path + ((len(top.value),) if isinstance(top.value, list) else (top.key,))

    while True:
        event = loader.get_event()
        if isinstance(event, yaml.StreamEndEvent):
            break
        if isinstance(event, yaml.DocumentStartEvent):
            documents += 1
            if documents > 1:
                raise _problem(event.start_mark, "a note is one YAML document (found a second)")
            continue
        if isinstance(event, yaml.StreamStartEvent | yaml.DocumentEndEvent):
            continue
        if isinstance(event, yaml.AliasEvent):
            raise _problem(
                event.start_mark,
                f"aliases (*{event.anchor}) are not supported in notes: write the value out",
            )
        if getattr(event, "anchor", None) is not None:
            raise _problem(
                event.start_mark,
                f"anchors (&{event.anchor}) are not supported in notes: write the value out",
            )
        if isinstance(event, yaml.ScalarEvent):
            problem = _control_problem(event.start_mark, event.value)
            if problem is not None:
                raise problem
            is_key = bool(stack) and isinstance(stack[-1].value, dict) and stack[-1].key is None
            place(event.value if is_key else _scalar(loader, event), event.start_mark)
        elif isinstance(event, yaml.CollectionStartEvent):
            if event.tag is not None and event.tag != "!":
                raise _problem(event.start_mark, f"tags ({event.tag}) are not supported in notes")
            if len(stack) >= MAX_DEPTH:
                raise _problem(
                    event.start_mark, f"nested more than {MAX_DEPTH} levels deep; notes need few"
                )
            if stack and isinstance(stack[-1].value, dict) and stack[-1].key is None:
                raise _problem(event.start_mark, "a mapping key must be plain text")
            path = child_path() if stack else ()
            container: dict | list = {} if isinstance(event, yaml.MappingStartEvent) else []
            stack.append(_Open(container, path, event.start_mark))
            positions.setdefault(path, _at(event.start_mark))
        elif isinstance(event, yaml.CollectionEndEvent):
            done = stack.pop()
            place(done.value, done.start)
    return Document(root, positions, duplicates)


def _scalar(loader: Any, event: yaml.ScalarEvent) -> Any:
    """Resolve and convert one scalar (`yes` → True, `1e3` → 1000.0); errors at its position."""
    tag = event.tag
    if tag is not None and tag != "!":
        raise _problem(event.start_mark, f"tags ({tag}) are not supported in notes")
    if event.style:  # quoted or block text is a string as written: most of a note
        return event.value
    tag = loader.resolve(yaml.ScalarNode, event.value, event.implicit)
    node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark, event.style)
    try:
        return loader.construct_object(node)
    except (ValueError, OverflowError, ArithmeticError, yaml.YAMLError) as exc:
        reason = getattr(exc, "problem", None) or str(exc)
        if tag.endswith(":int") and "digits" in reason:  # Python's int-from-text limit
            reason = f"an integer of {len(event.value):,} characters is too long"
        raise _problem(event.start_mark, f"cannot read this value: {reason}") from None
