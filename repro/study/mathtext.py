"""LaTeX in note text: find the `$…$` spans and turn them into MathML (HTML) or Unicode (terminal).

Notes write math the way GitHub, Obsidian and Typora read it: `$…$` inline, `$$…$$` displayed,
and code spans in backticks are left alone. The HTML sheet needs MathML (offline, no JavaScript),
the terminal needs plain Unicode (`\\hat{L}_{LoRA}` → `L̂_LoRA`), and `validate` needs to know which
span would not convert. Nothing here imports torch.

Note text is untrusted. latex2mathml copies `\\text{…}` into `<mtext>` unescaped and turns
`\\href` into an attribute, so every fragment is (1) refused when its LaTeX holds a command that
is not math (links, styles, definitions, file inclusion) or markup-like text, and (2) sanitised
with `nh3` against an allow-list of MathML elements and attributes before it reaches a page.
Scanning is linear in the text: no regex here can backtrack over a run of backticks or dollars.
"""

from __future__ import annotations

import re
import secrets
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import cache
from html import escape as html_escape
from typing import Any, Literal

from repro.lab.errors import PaperlabError

Kind = Literal["text", "code", "inline", "display"]

# Bounds that keep a hostile note fast: latex2mathml costs ~50 µs per character. The library's
# longest span has 227 characters, its busiest note 331 spans and 3,200 characters of LaTeX.
MAX_SPAN_CHARS = 1_000
MAX_NOTE_SPANS = 1_000
MAX_NOTE_MATH_CHARS = 10_000
# markdown-it costs ~10 µs per markup character (`<`, `*`, `[`…): a longer field is shown as
# plain text. The library's longest field has 4,116 characters.
MAX_MARKDOWN_CHARS = 20_000


class MathError(PaperlabError):
    """A LaTeX fragment that latex2mathml cannot turn into MathML, or that a note may not hold."""


@dataclass(frozen=True)
class Segment:
    kind: Kind
    body: str  # for math: the LaTeX without delimiters; for code: the code; else the text
    start: int  # offset of the segment (delimiters included) in the text
    raw: str  # the segment as written, delimiters included


# --- finding the spans: one linear scan --------------------------------------------------------

_SPECIAL = re.compile(r"[`$]")
_BACKTICKS = re.compile(r"`+")


def _code_closers(text: str) -> dict[int, list[int]]:
    """Start offsets of every backtick run, grouped by run length (ascending)."""
    runs: dict[int, list[int]] = {}
    for m in _BACKTICKS.finditer(text):
        runs.setdefault(m.end() - m.start(), []).append(m.start())
    return runs


def split_math(text: str) -> list[Segment]:
    """`text` cut into plain text, code spans and math spans, in order (see iter_segments)."""
    return list(iter_segments(text))


def iter_segments(text: str) -> Iterator[Segment]:
    """The segments of `text` one by one, so a caller can stop early.

    - A code span opens with a run of n backticks and closes at the next run of exactly n
      (CommonMark); an opener without a closer is text. Math inside a code span is code.
    - `$$…$$` is displayed math (the body is at least one character).
    - `$…$` is inline math by the Pandoc rule: not after `\\` or `$`, no space after the opening
      `$` nor before the closing one (which is the next `$`), and no digit right after it, so
      "$5 and $6" stays text.

    Every step moves forward and each backtick run is looked at a bounded number of times, so
    the scan is linear in the text (8,000 backticks in a row cost nothing)."""
    runs = _code_closers(text) if "`" in text else {}
    cursor = {n: 0 for n in runs}  # per run length: index of the first run not yet passed
    pos = 0  # end of the last segment emitted
    i = 0
    n_text = len(text)
    no_display_after = n_text + 1  # searching `$$` from here on finds nothing

    while True:
        m = _SPECIAL.search(text, i)
        if m is None:
            break
        i = m.start()
        if text[i] == "`":
            j = i
            while j < n_text and text[j] == "`":
                j += 1
            length, starts = j - i, runs[j - i]
            k = cursor[length]
            while k < len(starts) and starts[k] < j:
                k += 1
            cursor[length] = k
            if k < len(starts):  # the next run of exactly this length closes the span
                close = starts[k]
                if i > pos:
                    yield Segment("text", text[pos:i], pos, text[pos:i])
                end = close + length
                yield Segment("code", text[j:close], i, text[i:end])
                pos = end
                cursor[length] = k + 1
                i = close + length
            else:
                i = j  # no closer: the backticks are text
            continue
        # a `$`
        if text.startswith("$$", i) and i + 3 <= no_display_after:
            close = text.find("$$", i + 3)
            if close >= 0:
                if i > pos:
                    yield Segment("text", text[pos:i], pos, text[pos:i])
                end = close + 2
                yield Segment("display", text[i + 2 : close].strip(), i, text[i:end])
                pos = end
                i = close + 2
                continue
            no_display_after = i + 3
        close = _inline_close(text, i)
        if close is not None:
            if i > pos:
                yield Segment("text", text[pos:i], pos, text[pos:i])
            end = close + 1
            yield Segment("inline", text[i + 1 : close], i, text[i:end])
            pos = end
            i = close + 1
        else:
            i += 1
    if pos < n_text:
        yield Segment("text", text[pos:], pos, text[pos:])


def _inline_close(text: str, i: int) -> int | None:
    """Offset of the `$` closing inline math opened at `i`, or None (Pandoc's rule)."""
    if i > 0 and text[i - 1] in "\\$":
        return None
    close = text.find("$", i + 1)
    if close <= i + 1:  # no closer, or `$$`
        return None
    if text[i + 1].isspace() or text[close - 1].isspace() or text[close - 1] == "\\":
        return None
    if close + 1 < len(text) and text[close + 1].isdigit():
        return None
    return close


# --- what a note may not write in math ---------------------------------------------------------

_COMMAND = re.compile(r"\\([A-Za-z]+)")
# Links, styles, identifiers, definitions and file inclusion are not math; MathJax (Anki) and
# latex2mathml act on some of them (`\href` becomes an href attribute).
FORBIDDEN = frozenset(
    (
        "href", "url", "style", "class", "cssId", "input", "include", "includeonly", "def", "edef",
        "gdef", "xdef", "let", "newcommand", "renewcommand", "providecommand", "newenvironment",
        "renewenvironment", "DeclareMathOperator", "require", "unicode", "mmlToken", "texttip",
        "mathtip", "toggle", "tooltip", "includegraphics", "special", "write", "openout",
        "immediate", "catcode",
    )
)  # fmt: skip
# Commands whose argument is text: `<` or `>` in it is markup, not math.
TEXT_COMMANDS = frozenset(
    (
        "text", "textbf", "textit", "textrm", "textsf", "texttt", "textup", "textnormal", "textmd",
        "textsc", "mbox", "hbox", "fbox", "operatorname",
    )
)  # fmt: skip


def _forbidden(latex: str) -> str | None:
    """Why `latex` may not be in a note (a command or markup-like text), else None."""
    for m in _COMMAND.finditer(latex):
        name = m.group(1)
        if name in FORBIDDEN or name.startswith("html"):
            return f"\\{name} is not allowed in notes (links, styles and definitions are not math)"
    # One pass with a stack of "inside a text argument" flags: linear in the LaTeX.
    stack: list[bool] = []
    pending_text = False  # a text command was just read; its `{` opens a text argument
    i, n = 0, len(latex)
    while i < n:
        ch = latex[i]
        if ch == "\\":
            m = _COMMAND.match(latex, i)
            if m:
                pending_text = m.group(1) in TEXT_COMMANDS
                i = m.end()
                continue
            i += 2
            continue
        if ch == "{":
            stack.append(pending_text or (bool(stack) and stack[-1]))
            pending_text = False
        elif ch == "}":
            if stack:
                stack.pop()
            pending_text = False
        elif ch in "<>" and stack and stack[-1]:
            return "markup-like text in \\text{…} (`<` or `>`) is not allowed in notes"
        elif not ch.isspace():
            pending_text = False
        i += 1
    return None


def _unbalanced_brace(latex: str) -> bool:
    depth = 0
    for token in re.findall(r"\\.|[{}]", latex):
        depth += {"{": 1, "}": -1}.get(token, 0)
        if depth < 0:
            return True
    return depth != 0


# --- the MathML allow-list -----------------------------------------------------------------

MATHML_NS = "http://www.w3.org/1998/Math/MathML"
MATHML_TAGS = frozenset(
    (
        "math", "mi", "mn", "mo", "ms", "mtext", "mspace", "mrow", "mfrac", "msqrt", "mroot",
        "mstyle", "merror", "mpadded", "mphantom", "menclose", "msub", "msup", "msubsup",
        "munder", "mover", "munderover", "mmultiscripts", "mprescripts", "none",
        "mtable", "mtr", "mtd",
    )
)  # fmt: skip
_COMMON_ATTRS = {"mathvariant", "displaystyle", "scriptlevel", "mathsize", "dir"}
MATHML_ATTRS: dict[str, set[str]] = {
    "*": _COMMON_ATTRS,
    "math": {"xmlns", "display"},
    "mo": {
        "accent", "fence", "form", "largeop", "lspace", "rspace", "maxsize", "minsize",
        "movablelimits", "separator", "stretchy", "symmetric",
    },
    "mfrac": {"linethickness"},
    "mover": {"accent"},
    "munder": {"accentunder"},
    "munderover": {"accent", "accentunder"},
    "mspace": {"width", "height", "depth"},
    "mpadded": {"width", "height", "depth", "lspace", "voffset"},
    "menclose": {"notation"},
    "mtable": {
        "columnalign", "rowalign", "columnlines", "rowlines", "columnspacing", "rowspacing",
        "frame", "framespacing", "equalrows", "equalcolumns",
    },
    "mtr": {"columnalign", "rowalign"},
    "mtd": {"columnalign", "rowalign", "columnspan", "rowspan"},
}  # fmt: skip
# Attribute values are keywords, numbers and lengths: no quote, colon, parenthesis or `;`, so
# no URL, no CSS and no script can hide in one.
_SAFE_VALUE = re.compile(r"[A-Za-z0-9 .+\-#%]{0,64}")


def _keep_attribute(tag: str, attribute: str, value: str) -> str | None:
    if attribute == "xmlns":
        return value if value == MATHML_NS else None
    return value if _SAFE_VALUE.fullmatch(value) else None


def sanitize_mathml(fragment: str) -> str:
    """`fragment` with only allow-listed MathML elements and attributes, text escaped.

    nh3 (ammonia) parses it the way a browser would, drops every other element (the content of
    `<script>` and `<style>` too), every other attribute (`href`, `style`, `class`, `on*`), and
    serialises the tree again with its text escaped."""
    import nh3

    return nh3.clean(
        fragment,
        tags=set(MATHML_TAGS),
        attributes={k: set(v) for k, v in MATHML_ATTRS.items()},
        attribute_filter=_keep_attribute,
        clean_content_tags={"script", "style"},
        strip_comments=True,
        link_rel=None,
        url_schemes=set(),
    )


def _markup_problem(mathml: str) -> str | None:
    """Why latex2mathml's raw output is not plain MathML (so the LaTeX is refused), else None."""
    try:
        root = ET.fromstring(mathml)
    except ET.ParseError:
        return "it would produce markup that is not MathML"
    for element in root.iter():
        tag = element.tag.rsplit("}", 1)[-1]
        if tag not in MATHML_TAGS:
            return f"it would produce a <{tag}> element"
        allowed = MATHML_ATTRS["*"] | MATHML_ATTRS.get(tag, set())
        for name, value in element.attrib.items():
            if name not in allowed or _keep_attribute(tag, name, value) is None:
                return f"it would produce the attribute {name}={value!r}"
        for text in (element.text, element.tail):
            command = _COMMAND.search(text or "")
            if command:
                return f"unknown command {command.group(0)}"
    return None


@cache
def to_mathml(latex: str, display: bool = False) -> str:
    """`latex` as a sanitised `<math>` element; MathError if it does not convert cleanly or
    holds something a note may not (see FORBIDDEN, TEXT_COMMANDS)."""
    from latex2mathml.converter import convert

    if len(latex) > MAX_SPAN_CHARS:
        raise MathError(
            f"cannot convert a formula of {len(latex):,} characters (at most {MAX_SPAN_CHARS:,})"
        )
    shown = latex if len(latex) <= 80 else latex[:77] + "..."
    why = _forbidden(latex)
    if why:
        raise MathError(f"cannot convert ${shown}$: {why}")
    if _unbalanced_brace(latex):  # latex2mathml would guess silently
        raise MathError(f"cannot convert ${shown}$: unbalanced braces")
    try:
        mathml = convert(latex, display="block" if display else "inline")
    except Exception as exc:  # latex2mathml raises a zoo of exception types
        raise MathError(f"cannot convert ${shown}$: {type(exc).__name__} {exc}".strip()) from None
    why = _markup_problem(mathml)
    if why:
        raise MathError(f"cannot convert ${shown}$: {why}")
    return sanitize_mathml(mathml)


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
            offset = seg.start + re.search(r"(?<!\\)\$", seg.body).start()  # not a `\$`
            problems.append((offset, "unmatched $ (math spans are $…$ with no space inside)"))
    return problems


class MathBudget:
    """Counts a note's math; `over(latex)` says when it passes the note's bounds."""

    def __init__(self) -> None:
        self.spans = 0
        self.chars = 0
        self.exhausted = False

    def over(self, latex: str) -> str | None:
        self.spans += 1
        self.chars += len(latex)
        if self.spans > MAX_NOTE_SPANS:
            self.exhausted = True
            return f"more than {MAX_NOTE_SPANS:,} math spans in one note (the rest is not checked)"
        if self.chars > MAX_NOTE_MATH_CHARS:
            self.exhausted = True
            return (
                f"more than {MAX_NOTE_MATH_CHARS:,} characters of math in one note "
                "(the rest is not checked)"
            )
        return None


# --- Markdown with math, placeholders no note can forge ----------------------------------------


def render_markdown(md: Any, text: str, block: bool, math: Callable[[str, bool], str]) -> str:
    """`text` rendered by the markdown-it instance `md`, each `$…$` as `math(latex, display)`.

    The math spans are swapped for placeholders before Markdown sees them (so `_` and `*` inside
    a formula are never emphasis). A placeholder carries a random nonce made for this call, so
    text in the note cannot forge one, and it is replaced only inside text tokens: one that
    lands in a link, an image, a code span or a code block is put back as the LaTeX it stood for
    (escaped by the renderer like any text), never as markup inside an attribute."""
    from markdown_it.token import Token

    if len(text) > MAX_MARKDOWN_CHARS:
        plain = html_escape(text)
        return f"<p>{plain}</p>\n" if block else plain
    nonce = secrets.token_hex(8)
    found = re.compile("\ue000" + nonce + "([0-9]+)\ue001")
    segments: list[Segment] = []
    parts = []
    for seg in split_math(text):
        if seg.kind in ("inline", "display"):
            parts.append(f"\ue000{nonce}{len(segments)}\ue001")
            segments.append(seg)
        else:
            parts.append(seg.raw)
    source = "".join(parts)
    env: dict = {}
    tokens = md.parse(source, env) if block else md.parseInline(source, env)
    if not segments:
        return md.renderer.render(tokens, md.options, env)

    def as_written(s: str) -> str:
        return found.sub(lambda m: segments[int(m.group(1))].raw, s) if "\ue000" in s else s

    def restore(token: Any) -> None:
        token.content = as_written(token.content)
        if token.attrs:
            token.attrs = {k: as_written(v) if isinstance(v, str) else v
                           for k, v in token.attrs.items()}  # fmt: skip
        token.info = as_written(token.info)
        for child in token.children or []:
            restore(child)

    def place(children: list) -> list:
        out = []
        for child in children:
            if child.type != "text" or "\ue000" not in child.content:
                restore(child)
                out.append(child)
                continue
            at = 0
            for m in found.finditer(child.content):
                if m.start() > at:
                    out.append(Token("text", "", 0, content=child.content[at : m.start()]))
                seg = segments[int(m.group(1))]
                html = math(seg.body, seg.kind == "display")
                out.append(Token("html_inline", "", 0, content=html))
                at = m.end()
            if at < len(child.content):
                out.append(Token("text", "", 0, content=child.content[at:]))
        return out

    for token in tokens:
        if token.type == "inline" and token.children is not None:
            token.children = place(token.children)
        else:
            restore(token)
    return md.renderer.render(tokens, md.options, env)


# --- Unicode for the terminal --------------------------------------------------------------


@cache
def _latex2text():
    from pylatexenc.latex2text import LatexNodes2Text

    return LatexNodes2Text(math_mode="text", strict_latex_spaces=True)


def to_unicode(latex: str) -> str:
    """`latex` as readable Unicode text (`\\frac{a}{b}` → `a/b`); the LaTeX itself if that fails
    or if it is longer than a formula may be."""
    if len(latex) > MAX_SPAN_CHARS:
        return latex
    try:
        text = _latex2text().latex_to_text(latex)
    except Exception:  # pylatexenc is lenient, but never let a formula break `show`
        return latex
    return " ".join(text.split())
