"""Math spans in note text: found where GitHub would find them, converted or refused loudly."""

from __future__ import annotations

import pytest

from repro.study.mathtext import MathError, split_math, text_problems, to_mathml, to_unicode


def kinds(text: str) -> list[tuple[str, str]]:
    return [(s.kind, s.body) for s in split_math(text)]


def test_inline_display_and_code_spans() -> None:
    assert kinds(r"a $x_1$ b $$\frac{1}{2}$$ `$not math$` c") == [
        ("text", "a "),
        ("inline", "x_1"),
        ("text", " b "),
        ("display", r"\frac{1}{2}"),
        ("text", " "),
        ("code", "$not math$"),
        ("text", " c"),
    ]


@pytest.mark.parametrize("text", ["costs $5 and $6", "a $ b $ c", r"escaped \$x\$"])
def test_dollars_that_are_not_math(text: str) -> None:
    assert [s.kind for s in split_math(text)] == ["text"]


def test_offsets_point_at_the_opening_dollar() -> None:
    text = "see $W_0$ and $\\foo{x}$"
    ((offset, message),) = text_problems(text)
    assert text[offset:].startswith("$\\foo") and "unknown command \\foo" in message


def test_mathml_for_a_fraction() -> None:
    mathml = to_mathml(r"\frac{\alpha}{r} B A x")
    assert mathml.startswith("<math") and "<mfrac>" in mathml and "\\" not in mathml
    assert 'display="block"' in to_mathml("x", display=True)


@pytest.mark.parametrize(
    ("latex", "why"),
    [
        (r"\foo{x}", "unknown command"),
        (r"h = {W_0 x", "unbalanced braces"),
        ("x^", "MissingSuperScriptOrSubscript"),
    ],
)
def test_broken_latex_raises(latex: str, why: str) -> None:
    with pytest.raises(MathError, match=why):
        to_mathml(latex)


def test_stray_dollar_is_a_problem() -> None:
    ((offset, message),) = text_problems("price: $ 5")
    assert offset == 7 and "unmatched $" in message


def test_unicode_keeps_subscripts_and_backslash_free() -> None:
    # rich's Markdown turned this into "2,\hat{L}{LoRA}, d{model}" (the bug this fixes)
    text = to_unicode(r"2\,\hat{L}_{LoRA}\, d_{model}")
    assert "L̂_LoRA" in text and "d_model" in text and "\\" not in text
    assert to_unicode(r"\frac{a}{\sqrt{d_k}}") == "a/√(d_k)"
