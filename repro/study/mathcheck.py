"""`validate`'s math check: every formula and every `$…$` span of a note must convert to MathML.

Reported as `path:line:col: field.path: message`, pointing at the span itself in the YAML source,
so the HTML sheet never shows raw LaTeX. Reads the file's node tree (positions), not the loaded
note.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from repro.study.mathtext import math_problem, text_problems

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


def note_math_problems(path: Path, display_path: str) -> list[str]:
    """Every formula or math span of the note at `path` that would not render."""
    source = path.read_text(encoding="utf-8")
    loader = _SafeLoader(source)
    try:
        root = loader.get_single_node()
    except yaml.YAMLError:
        return []  # the note loader reports broken YAML
    finally:
        loader.dispose()
    if root is None:
        return []
    problems = []
    for field, node in _scalars(root, ()):
        for anchor, why in _problems(field, node.value):
            line, col = _locate(source, node, anchor)
            problems.append(f"{display_path}:{line}:{col}: {_dotted(field)}: {why}")
    return problems


def _problems(field: tuple, value: str) -> list[tuple[str, str]]:
    """(text to find in the source, message) for each failing span of one string field."""
    if len(field) == 3 and field[0] == "formulas" and field[2] == "latex":
        why = math_problem(value.strip())
        return [(value.strip(), why)] if why else []
    # from the span's `$` to the end of its first line: unique enough to find in the source
    return [(value[at:].split("\n")[0], why) for at, why in text_problems(value)]
