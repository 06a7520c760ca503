"""The code beside the math: the lines of the library that compute a formula, highlighted.

A formula or an algorithm step in a note may name its code:

    code: repro/nn/lora.py::LoRALinear.forward        # a function, class or method
    code: repro/nn/flash.py::_forward#rescale   # from a `# [rescale]` to a `# [/rescale]` line
    code: repro/nn/norm.py#L38-L46                    # lines of the file

The path is relative to the checkout and must be a Python file inside it; the symbol is found
with `ast` (decorators included); a marker pair must lie inside the symbol when one is named.
`validate` reports every reference that does not resolve (`code_problems`).

Which claims exercise the code: the formula's own `claims:` list, plus every claim whose `code:`
list names the same file and symbol. The page shows their verdicts beside the excerpt.

Highlighting is Pygments' HTML with CSS classes (no JavaScript, no inline styles); `css()` gives
the rules for light and dark, which the page's stylesheet includes.
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from markupsafe import Markup

MAX_BYTES = 1 << 20
_REF = re.compile(
    r"^(?P<path>[A-Za-z0-9_./-]+\.py)"
    r"(?:::(?P<symbol>[A-Za-z_]\w*(?:\.[A-Za-z_]\w*)*))?"
    r"(?:#(?:L(?P<start>\d+)(?:-L(?P<end>\d+))?|(?P<marker>[a-z0-9][a-z0-9-]*)))?$"
)


class CodeRefError(ValueError):
    """A `code:` reference that does not resolve; the message says why."""


@dataclass(frozen=True)
class CodeRef:
    path: str
    symbol: str | None = None
    start: int | None = None  # 1-based file lines, inclusive
    end: int | None = None
    marker: str | None = None

    @property
    def target(self) -> str:
        """`path::symbol` (or the path): what a claim and a formula share."""
        return f"{self.path}::{self.symbol}" if self.symbol else self.path


def parse_ref(text: str) -> CodeRef:
    m = _REF.match(text.strip())
    if not m:
        raise CodeRefError(f"{text!r} is not path.py[::symbol][#L10-L20|#marker]")
    start = int(m["start"]) if m["start"] else None
    end = int(m["end"]) if m["end"] else start
    if start is not None and (start < 1 or end < start):
        raise CodeRefError(f"{text!r}: bad line range")
    return CodeRef(m["path"], m["symbol"], start, end, m["marker"])


@dataclass(frozen=True)
class Excerpt:
    ref: str  # the reference as written in the note
    path: str
    first: int  # 1-based line number of lines[0]
    lines: tuple[str, ...]

    @property
    def last(self) -> int:
        return self.first + len(self.lines) - 1


def _source(root: Path, rel: str) -> str:
    parts = Path(rel).parts
    if Path(rel).is_absolute() or ".." in parts:
        raise CodeRefError(f"{rel}: give a path inside the checkout, without ..")
    path = root / rel
    try:
        real = path.resolve(strict=True)
        real.relative_to(root.resolve())
    except (OSError, ValueError):
        raise CodeRefError(f"{rel}: no such file in the checkout") from None
    if not real.is_file() or real.stat().st_size > MAX_BYTES:
        raise CodeRefError(f"{rel}: not a Python file of at most 1 MiB")
    try:
        return real.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise CodeRefError(f"{rel}: cannot read it ({exc})") from None


def _symbol_lines(tree: ast.Module, symbol: str, rel: str) -> tuple[int, int]:
    body: list[ast.stmt] = tree.body
    node: ast.AST | None = None
    for part in symbol.split("."):
        node = next(
            (
                n
                for n in body
                if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)
                and n.name == part
            ),
            None,
        )
        if node is None:
            raise CodeRefError(f"{rel}: no function or class {symbol!r}")
        body = getattr(node, "body", [])
    first = min([node.lineno] + [d.lineno for d in getattr(node, "decorator_list", [])])
    return first, node.end_lineno or node.lineno


@cache
def _resolve(root: Path, text: str) -> Excerpt:
    ref = parse_ref(text)
    source = _source(root, ref.path)
    lines = source.splitlines()
    lo, hi = 1, len(lines)
    if ref.symbol:
        try:
            tree = ast.parse(source)
        except SyntaxError as exc:
            raise CodeRefError(f"{ref.path}: not valid Python ({exc.msg})") from None
        lo, hi = _symbol_lines(tree, ref.symbol, ref.path)
    if ref.start is not None:
        if not (lo <= ref.start and ref.end <= hi):
            where = f"{ref.symbol} (lines {lo}–{hi})" if ref.symbol else f"{hi} lines"
            raise CodeRefError(f"{text}: lines {ref.start}–{ref.end} are outside {where}")
        lo, hi = ref.start, ref.end
    elif ref.marker:
        begin = [i for i in range(lo, hi + 1) if lines[i - 1].strip() == f"# [{ref.marker}]"]
        end = [i for i in range(lo, hi + 1) if lines[i - 1].strip() == f"# [/{ref.marker}]"]
        if len(begin) != 1 or len(end) != 1 or end[0] <= begin[0]:
            raise CodeRefError(
                f"{text}: needs one `# [{ref.marker}]` line and one `# [/{ref.marker}]` after it"
                + (f" inside {ref.symbol}" if ref.symbol else "")
            )
        lo, hi = begin[0] + 1, end[0] - 1
    chosen = lines[lo - 1 : hi]
    indent = min((len(x) - len(x.lstrip()) for x in chosen if x.strip()), default=0)
    return Excerpt(text, ref.path, lo, tuple(x[indent:] for x in chosen))  # a method: dedented


def resolve(root: Path, text: str) -> Excerpt:
    """The lines `text` names, read from the checkout at `root`; CodeRefError if it does not
    resolve."""
    return _resolve(Path(root), text.strip())


def code_problems(note, display_path: str, root: Path, positions: dict | None = None) -> list[str]:
    """One `path:line:col: field: message` per `code:` reference of `note` that does not
    resolve (formulas, method steps, claims)."""
    refs: list[tuple[tuple, str]] = []
    for i, f in enumerate(note.formulas):
        if f.code:
            refs.append((("formulas", i, "code"), f.code))
    for i, step in enumerate(note.method.steps):
        if step.code:
            refs.append((("method", "steps", i, "code"), step.code))
    for i, c in enumerate(note.claims):
        for j, code in enumerate(c.code):
            refs.append((("claims", i, "code", j), code))
    problems = []
    for loc, text in refs:
        try:
            resolve(root, text)
        except CodeRefError as exc:
            line, col = _position(loc, positions or {})
            field = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc)[1:]
            problems.append(f"{display_path}:{line}:{col}: {field}: {exc}")
    return problems


def _position(loc: tuple, positions: dict) -> tuple[int, int]:
    for n in range(len(loc), -1, -1):
        if loc[:n] in positions:
            return positions[loc[:n]]
    return (1, 1)


def claims_for(formula, note) -> list[str]:
    """Ids of the claims that exercise a formula's code: its `claims:` list, then the claims
    whose `code:` names the same file and symbol, in the note's order, each once."""
    ids = list(formula.claims)
    if formula.code:
        target = parse_ref(formula.code).target
        for c in note.claims:
            if c.id not in ids and any(parse_ref(x).target == target for x in c.code):
                ids.append(c.id)
    return ids


# --- highlighting ---------------------------------------------------------------------------

CSS_CLASS = "hl"


@cache
def _formatter(first: int):
    from pygments.formatters import HtmlFormatter

    return HtmlFormatter(cssclass=CSS_CLASS, linenos="inline", linenostart=first, wrapcode=True)


def highlight(excerpt: Excerpt) -> Markup:
    """The excerpt as highlighted HTML (`<div class="hl"><pre><code>…`), line numbers as in
    the file. Pygments escapes the source; nothing here comes from the note but the path."""
    from pygments import highlight as pyg_highlight
    from pygments.lexers import PythonLexer

    code = "\n".join(excerpt.lines) + "\n"
    return Markup(pyg_highlight(code, PythonLexer(), _formatter(excerpt.first)))


@cache
def css() -> str:
    """Pygments rules for the page: a light style, and a dark one under prefers-color-scheme."""
    from pygments.formatters import HtmlFormatter

    light = HtmlFormatter(style="friendly").get_style_defs(f".{CSS_CLASS}")
    dark = HtmlFormatter(style="github-dark").get_style_defs(f".{CSS_CLASS}")
    keep = re.compile(rf"^\.{CSS_CLASS} ")  # token rules only: the page styles the box itself
    light = "\n".join(x for x in light.splitlines() if keep.match(x) and " .hll" not in x)
    dark = "\n".join(x for x in dark.splitlines() if keep.match(x) and " .hll" not in x)
    dark_block = f"@media (prefers-color-scheme: dark) {{\n{dark}\n}}"
    return f"{light}\n{dark_block}\n@media print {{\n{light}\n}}"
