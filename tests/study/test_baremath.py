"""`validate --strict`'s bare-math warning: which fragments count as math, and where they are."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.study.baremath import MAX_REPORTED, bare_math, bare_math_warnings, suggestion

TEXT = (
    "scores use d_k and W_O, C^0.73 and \\frac{a}{b}; lora_B, io_vs_sram and d_verylongname "
    "stay; `d_v` and $d_q$ pass; see papers/x_y.py or https://e.org/a_b and N_opt, C_{min}, "
    "e^−Δ, 2^20, \\alpha, W^O."
)


def test_math_fragments_outside_math_and_code_in_order() -> None:
    """Short names with a subscript, superscripts and LaTeX commands are found, each at its
    offset; identifiers (`lora_B`, `io_vs_sram`), code spans, math, file names and links are
    not."""
    want = ["d_k", "W_O", "C^0.73", "\\frac", "N_opt", "C_{min}", "e^−Δ", "2^20", "\\alpha", "W^O"]
    assert bare_math(TEXT) == [(TEXT.index(frag), frag) for frag in want]
    # a sentence's full stop is not part of the exponent
    assert bare_math("it scales as C^0.73. Then") == [(13, "C^0.73")]
    for identifier in ("lora_B", "io_vs_sram", "my_var_name", "d_verylongname", "x_y.py"):
        assert bare_math(f"the {identifier} here") == [], identifier


@pytest.mark.parametrize(
    ("fragment", "math"),
    [("d_model", "$d_{model}$"), ("C^0.73", "$C^{0.73}$"), ("C_{min}", "$C_{min}$"),
     ("e^−Δ", "$e^{-Δ}$"), ("d_k", "$d_k$"), ("W^O", "$W^O$"), ("\\frac", "$\\frac$")],
)  # fmt: skip
def test_the_suggestion_braces_a_long_script(fragment: str, math: str) -> None:
    assert suggestion(fragment) == math


SOURCE = """title: T
method:
  key_idea: scores use d_k and d_k again
  latex: d_k
formulas:
  - latex: W_O
    code: a_b.py::W_O
    meaning: the W^O projection
url: https://x.org/d_k
zh:
  summary: 注意力除以 \\sqrt d_k。
"""


def test_warnings_are_located_and_skip_latex_code_and_links(tmp_path: Path) -> None:
    note = tmp_path / "note.yaml"
    note.write_text(SOURCE, encoding="utf-8")
    lines = SOURCE.splitlines()
    first = lines[2].index("d_k") + 1
    second = lines[2].index("d_k", first) + 1
    zh = lines[10].index("\\sqrt") + 1
    assert bare_math_warnings(note, "t.yaml") == [
        f"t.yaml:3:{first}: method.key_idea: bare math 'd_k' outside $…$ (write $d_k$)",
        f"t.yaml:3:{second}: method.key_idea: bare math 'd_k' outside $…$ (write $d_k$)",
        f"t.yaml:8:{lines[7].index('W^O') + 1}: formulas[0].meaning: bare math 'W^O' outside "
        "$…$ (write $W^O$)",
        f"t.yaml:11:{zh}: zh.summary: bare math '\\\\sqrt' outside $…$ (write $\\sqrt$)",
        f"t.yaml:11:{zh + 6}: zh.summary: bare math 'd_k' outside $…$ (write $d_k$)",
    ]


def test_at_most_max_reported_warnings_then_one_line(tmp_path: Path) -> None:
    note = tmp_path / "note.yaml"
    note.write_text("summary: " + "d_k " * (MAX_REPORTED + 50) + "\n", encoding="utf-8")
    out = bare_math_warnings(note, "t.yaml")
    assert len(out) == MAX_REPORTED + 1 and out[-1] == "t.yaml: more bare math not shown"
    cols = [int(w.split(":")[2]) for w in out[:-1]]
    assert cols == [10 + 4 * i for i in range(MAX_REPORTED)]  # each at its own column
    assert bare_math_warnings(tmp_path / "missing.yaml", "m.yaml") == []
