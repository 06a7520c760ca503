"""LaTeX in note text: find the `$…$` spans and turn them into MathML (HTML) or Unicode (terminal).

Notes write math the way GitHub, Obsidian and Typora read it: `$…$` inline, `$$…$$` displayed,
and code spans in backticks are left alone. The HTML sheet needs MathML (offline, no JavaScript),
the terminal needs plain Unicode (`\\hat{L}_{LoRA}` → `L̂_LoRA`), and `validate` needs to know which
span would not convert. Nothing here imports torch.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Literal

from repro.lab.errors import PaperlabError

Kind = Literal["text", "code", "inline", "display"]

# One pass, leftmost match wins: a code span hides any `$` inside it. Inline math follows the
# Pandoc rule: no space after the opening `$` nor before the closing one, and no digit right
# after the closing one, so "$5 and $6" stays text.
_TOKENS = re.compile(
    r"(?P<code>`+)(?P<code_body>.+?)(?P=code)"
    r"|\$\$(?P<display>.+?)\$\$"
    r"|(?<![\\$])\$(?P<inline>[^\s$](?:[^$]*?[^\s\\$])?)\$(?!\d)",
    re.DOTALL,
)


class MathError(PaperlabError):
    """A LaTeX fragment that latex2mathml cannot turn into MathML."""


@dataclass(frozen=True)
class Segment:
    kind: Kind
    body: str  # for math: the LaTeX without delimiters; for code: the code; else the text
    start: int  # offset of the segment (delimiters included) in the text
    raw: str  # the segment as written, delimiters included


def split_math(text: str) -> list[Segment]:
    """`text` cut into plain text, code spans and math spans, in order."""
    out: list[Segment] = []
    pos = 0
    for m in _TOKENS.finditer(text):
        if m.start() > pos:
            out.append(Segment("text", text[pos : m.start()], pos, text[pos : m.start()]))
        if m.group("code"):
            out.append(Segment("code", m.group("code_body"), m.start(), m.group(0)))
        elif m.group("display") is not None:
            out.append(Segment("display", m.group("display").strip(), m.start(), m.group(0)))
        else:
            out.append(Segment("inline", m.group("inline"), m.start(), m.group(0)))
        pos = m.end()
    if pos < len(text):
        out.append(Segment("text", text[pos:], pos, text[pos:]))
    return out


_LEFTOVER_COMMAND = re.compile(r">[^<]*\\[A-Za-z]+")  # `<mi>\foo</mi>`: an unknown macro


def _unbalanced_brace(latex: str) -> bool:
    depth = 0
    for token in re.findall(r"\\.|[{}]", latex):
        depth += {"{": 1, "}": -1}.get(token, 0)
        if depth < 0:
            return True
    return depth != 0


@cache
def to_mathml(latex: str, display: bool = False) -> str:
    """`latex` as a `<math>` element; MathError if it does not convert cleanly."""
    from latex2mathml.converter import convert

    if _unbalanced_brace(latex):  # latex2mathml would guess silently
        raise MathError(f"cannot convert ${latex}$: unbalanced braces")
    try:
        mathml = convert(latex, display="block" if display else "inline")
    except Exception as exc:  # latex2mathml raises a zoo of exception types
        raise MathError(f"cannot convert ${latex}$: {type(exc).__name__} {exc}".strip()) from None
    leftover = _LEFTOVER_COMMAND.search(mathml)
    if leftover:
        command = leftover.group(0).lstrip(">").strip()
        raise MathError(f"cannot convert ${latex}$: unknown command {command}")
    return mathml


def math_problem(latex: str) -> str | None:
    """Why `latex` would not render in the HTML sheet, or None when it converts."""
    try:
        to_mathml(latex)
    except MathError as exc:
        return str(exc)
    return None


def text_problems(text: str) -> list[tuple[int, str]]:
    """(offset, message) for every math span of `text` that fails, and for stray `$`s."""
    problems = []
    for seg in split_math(text):
        if seg.kind in ("inline", "display"):
            why = math_problem(seg.body)
            if why:
                problems.append((seg.start, why))
        elif seg.kind == "text" and "$" in seg.body.replace("\\$", ""):
            offset = seg.start + seg.body.index("$")
            problems.append((offset, "unmatched $ (math spans are $…$ with no space inside)"))
    return problems


@cache
def _latex2text():
    from pylatexenc.latex2text import LatexNodes2Text

    return LatexNodes2Text(math_mode="text", strict_latex_spaces=True)


def to_unicode(latex: str) -> str:
    """`latex` as readable Unicode text (`\\frac{a}{b}` → `a/b`); the LaTeX itself if that fails."""
    try:
        text = _latex2text().latex_to_text(latex)
    except Exception:  # pylatexenc is lenient, but never let a formula break `show`
        return latex
    return " ".join(text.split())
