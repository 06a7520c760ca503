"""`validate`'s warning for math written as plain text: `d_k`, `C^0.73`, `\\frac{a}{b}` outside
`$…$` and outside code spans never become MathML, so the page shows the raw characters.

A warning, not an error (the note still renders): `path:line:col: field.path: bare math 'd_k'
outside $…$ (write $d_k$)`. What counts as math:
- a subscript on a short name: `d_k`, `W_O`, `N_opt`, `C_{min}` (one or two letters, or a Greek
  letter, before the `_`; `lora_B` or `io_vs_sram` read as identifiers and pass);
- a superscript: `C^0.73`, `e^−Δ`, `W^O`, `2^20`;
- a LaTeX command: `\\frac`, `\\sqrt`, `\\alpha`, `\\mathrm` …
Links, `latex:` fields, ids, code references and file names are not checked.
"""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from repro.lab.textfile import TextFileError, read_text_file
from repro.study.mathtext import iter_segments

SKIP_KEYS = frozenset(
    {"latex", "id", "code", "url", "arxiv", "file", "table", "claims", "related", "aliases",
     "tags", "priority", "topic", "kind", "claim"}
)  # fmt: skip
GREEK = (
    "alpha|beta|gamma|delta|epsilon|eta|theta|kappa|lambda|mu|nu|pi|rho|sigma|tau|phi|chi|psi|"
    "omega|Delta|Gamma|Theta|Lambda|Sigma|Phi|Omega"
)
_NAME = rf"(?:[A-Za-z]{{1,2}}|{GREEK}|[\u0370-\u03ff\u2113])"  # short names, Greek, ℓ
_SUB = re.compile(
    rf"(?<![\w\\/.-]){_NAME}_(?:\{{[^}}\s]{{1,20}}\}}|[A-Za-z0-9\u0370-\u03ff]{{1,8}}(?!\w))(?![\w/-]*\.\w)"
)
_SUP = re.compile(
    r"(?<![\w\\/^])[\w\u0370-\u03ff\u2113)\]]{1,8}\^(?:\{[^}\s]{1,20}\}|[-−+]?(?:[\w\u0370-\u03ff]|\.(?=\w)){1,8})"
)
_CMD = re.compile(
    r"\\(?:frac|dfrac|sqrt|sum|prod|int|log|exp|mathrm|mathbf|mathcal|text|cdot|times|le|ge|"
    rf"leq|geq|approx|propto|infty|partial|nabla|top|odot|{GREEK})(?![A-Za-z])"
)
_URL = re.compile(r"https?://\S+|\b[\w./-]+\.(?:py|svg|json|yaml|md)\b")
MAX_REPORTED = 200


def bare_math(text: str) -> list[tuple[int, str]]:
    """(offset, fragment) of each bare-math fragment of `text`, outside `$…$` and code."""
    found: list[tuple[int, str]] = []
    for seg in iter_segments(text):
        if seg.kind != "text":
            continue
        raw = seg.raw
        blank = _URL.sub(lambda m: " " * len(m.group(0)), raw)
        blank = re.sub(r"`[^`]*`", lambda m: " " * len(m.group(0)), blank)
        hits = []
        for pattern in (_CMD, _SUP, _SUB):
            for m in pattern.finditer(blank):
                if not any(s <= m.start() < e for s, e, _ in hits):
                    hits.append((m.start(), m.end(), m.group(0)))
        found += [(seg.start + s, frag) for s, _, frag in sorted(hits)]
    return found


def suggestion(fragment: str) -> str:
    """The fragment as math: `d_model` → `$d_{model}$`, `C^0.73` → `$C^{0.73}$`."""
    text = re.sub(r"([_^])([^{][^_^]+)$", r"\1{\2}", fragment.replace("−", "-"))
    return f"${text}$"


def _strings(node: yaml.Node, path: tuple):
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            if key.value not in SKIP_KEYS:
                yield from _strings(value, path + (key.value,))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            yield from _strings(item, path + (i,))
    elif isinstance(node, yaml.ScalarNode) and node.tag.endswith(":str"):
        yield path, node


def _dotted(path: tuple) -> str:
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def bare_math_warnings(note_path: Path, display_path: str) -> list[str]:
    """One located warning per bare-math fragment of the note (at most MAX_REPORTED)."""
    try:
        source = read_text_file(note_path, display_path)
        root = yaml.compose(source, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
    except (TextFileError, yaml.YAMLError):
        return []  # loading reports it
    if root is None:
        return []
    out: list[str] = []
    for path, node in _strings(root, ()):
        lo, hi = node.start_mark.index, node.end_mark.index
        for _offset, frag in bare_math(node.value):
            at = source.find(frag, lo, hi)
            if at >= 0:
                lo = at + len(frag)
                line = source.count("\n", 0, at) + 1
                col = at - (source.rfind("\n", 0, at) + 1) + 1
            else:
                line, col = node.start_mark.line + 1, node.start_mark.column + 1
            out.append(
                f"{display_path}:{line}:{col}: {_dotted(path)}: bare math {frag!r} outside $…$ "
                f"(write {suggestion(frag)})"
            )
            if len(out) >= MAX_REPORTED:
                out.append(f"{display_path}: more bare math not shown")
                return out
    return out
