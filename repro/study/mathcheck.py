"""`validate`'s math check: every formula and every `$…$` span of a note must convert to MathML.

Reported as `path:line:col: field.path: message`, pointing at the span itself in the YAML source,
so the HTML sheet never shows raw LaTeX. Reads the file's node tree (positions), not the loaded
note. A note's math is bounded (mathtext.MathBudget): spans past the bound are one error, not
converted. The `related:` links are checked here too, against the library: an unknown paper is
an error, the note itself a warning.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache
from pathlib import Path

import yaml

from repro.lab.errors import UnknownPaper
from repro.lab.library import Library
from repro.lab.textfile import TextFileError, read_text_file
from repro.study.mathtext import MathBudget, iter_segments, math_problem, text_problems

MAX_REPORTED = 100  # problems of one note; a note of 100,000 broken spans gets one more line

_SafeLoader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def _dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _scalars(node: yaml.Node, path: tuple):
    """(field path, scalar node) for every string in the document."""
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            yield from _scalars(value, path + (key.value,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _scalars(item, path + (i,))
    elif isinstance(node, yaml.ScalarNode) and node.tag.endswith(":str"):
        yield path, node


def _locate(source: str, node: yaml.ScalarNode, fragment: str) -> tuple[int, int]:
    """1-based line and column of `fragment` inside the scalar's source text; the scalar's
    start when the YAML folding or escaping hides it."""
    lo, hi = node.start_mark.index, node.end_mark.index
    for probe in (fragment, fragment.replace("\\", "\\\\"), fragment.split("\n")[0]):
        at = source.find(probe, lo, hi) if probe else -1
        if at >= 0:
            line = source.count("\n", 0, at) + 1
            return line, at - (source.rfind("\n", 0, at) + 1) + 1
    return node.start_mark.line + 1, node.start_mark.column + 1


def _root(path: Path) -> tuple[str, yaml.Node | None]:
    """The note's source and node tree (None when it does not parse: the loader reports that);
    `validate` asks twice (math, links), so the last few are kept while the file is unchanged."""
    try:
        info = path.stat()
    except OSError:
        return "", None
    return _parsed(str(path), info.st_mtime_ns, info.st_size)


@lru_cache(maxsize=4)
def _parsed(path: str, mtime_ns: int, size: int) -> tuple[str, yaml.Node | None]:
    try:
        source = read_text_file(Path(path), path)
    except TextFileError:
        return "", None
    loader = _SafeLoader(source)
    try:
        return source, loader.get_single_node()
    except yaml.YAMLError:
        return source, None
    finally:
        loader.dispose()


def note_math_problems(path: Path, display_path: str) -> list[str]:
    """Every formula or math span of the note at `path` that would not render."""
    source, root = _root(path)
    if root is None:
        return []
    problems: list[str] = []
    budget = MathBudget()
    for field, node in _scalars(root, ()):
        for anchor, why in _problems(field, node.value, budget):
            line, col = _locate(source, node, anchor)
            problems.append(f"{display_path}:{line}:{col}: {_dotted(field)}: {why}")
            if budget.exhausted:
                return problems
        if len(problems) >= MAX_REPORTED:
            problems.append(f"{display_path}:{line}:{col}: (note): more problems not shown")
            return problems
    return problems


def within_math_budget(data: object) -> bool:
    """Whether the strings of a loaded note (`note.model_dump()`) keep to MathBudget: the quick
    test before `math_budget_problem` reads the file again for the position."""
    budget, stack = MathBudget(), [data]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            formula = item.get("latex")
            if isinstance(formula, str) and budget.over(formula.strip()):
                return False
            stack.extend(v for k, v in item.items() if k != "latex")
        elif isinstance(item, list | tuple):
            stack.extend(item)
        elif (
            isinstance(item, str)
            and "$" in item
            and any(budget.over(body) for body in _math_bodies(item))
        ):
            return False
    return True


def math_budget_problem(path: Path, display_path: str) -> str | None:
    """The located error of a note whose math passes the bounds of MathBudget, else None.
    Converts nothing: `sheet` and `show` call it before rendering a note."""
    source, root = _root(path)
    if root is None:
        return None
    budget = MathBudget()
    for field, node in _scalars(root, ()):
        formula = len(field) == 3 and field[0] == "formulas" and field[2] == "latex"
        for anchor, body in _math_spans(node.value, formula):  # stops at the first one over
            over = budget.over(body)
            if over:
                line, col = _locate(source, node, anchor)
                return f"{display_path}:{line}:{col}: {_dotted(field)}: {over}"
    return None


def _math_spans(value: str, formula: bool) -> Iterator[tuple[str, str]]:
    """(text to find in the source, LaTeX) of each math span, as `_problems` anchors them."""
    if formula:
        yield value.strip()[:200], value.strip()
        return
    for seg in iter_segments(value):
        if seg.kind in ("inline", "display"):
            yield value[seg.start :].split("\n")[0][:200], seg.body


def _math_bodies(value: str) -> Iterator[str]:
    return (s.body for s in iter_segments(value) if s.kind in ("inline", "display"))


def _problems(field: tuple, value: str, budget: MathBudget) -> list[tuple[str, str]]:
    """(text to find in the source, message) for each failing span of one string field."""
    if len(field) == 3 and field[0] == "formulas" and field[2] == "latex":
        over = budget.over(value.strip())
        if over:
            return [(value.strip()[:200], over)]
        why = math_problem(value.strip())
        return [(value.strip(), why)] if why else []
    for seg in iter_segments(value):
        if seg.kind in ("inline", "display"):
            over = budget.over(seg.body)
            if over:  # the rest of the note is not converted
                return [(value[seg.start :].split("\n")[0][:200], over)]
    # from the span's `$` to the end of its first line: unique enough to find in the source
    return [(value[at:].split("\n")[0][:200], why) for at, why in text_problems(value)]


def related_problems(
    path: Path, display_path: str, slug: str, library: Library
) -> tuple[list[str], list[str]]:
    """(errors, warnings) of the `related:` links: a paper the library does not have (an alias
    finds its paper) is an error; the note naming itself is a warning."""
    source, root = _root(path)
    errors: list[str] = []
    warnings: list[str] = []
    if not isinstance(root, yaml.MappingNode):
        return errors, warnings
    for key, value in root.value:
        if key.value != "related" or not isinstance(value, yaml.SequenceNode):
            continue
        for i, item in enumerate(value.value):
            if not isinstance(item, yaml.ScalarNode):
                continue
            where = f"{display_path}:{item.start_mark.line + 1}:{item.start_mark.column + 1}"
            try:
                target = library.get(item.value).slug
            except UnknownPaper:
                target = None
            if target is None:
                errors.append(f"{where}: related[{i}]: unknown paper {item.value!r}")
            elif target == slug:
                warnings.append(f"{where}: related[{i}]: the note links to itself")
    return errors, warnings
