"""Math spans in note text: found where GitHub would find them, converted or refused loudly."""

from __future__ import annotations

import gc
import re
import time

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from repro.study.mathtext import (
    MATHML_TAGS,
    MathError,
    iter_segments,
    math_problem,
    render_markdown,
    sanitize_mathml,
    split_math,
    text_problems,
    to_mathml,
    to_unicode,
)


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


# --- hostile math: nothing but MathML reaches a page ------------------------------------------

HOSTILE_LATEX = [
    r'\text{<img/src=x/onerror="window.pwned=1">}',
    r"\text{<script>window.pwned=1</script>}",
    r"\text{<style>body{display:none}}",
    r"\textbf{</math><img src=x onerror=alert(1)>}",
    r"\mbox{a > b}",
    r"\href{javascript:alert(1)}{x}",
    r"\url{javascript:alert(1)}",
    r"\style{color:red}{x}",
    r"\class{evil}{x}",
    r"\cssId{x}{y}",
    r"\htmlClass{x}{y}",
    r"\htmlStyle{x}{y}",
    r"\input{/etc/passwd}",
    r"\include{x}",
    r"\def\x{y}",
    r"\newcommand{\x}{y}",
    r"\unicode{x}",
]


@pytest.mark.parametrize("latex", HOSTILE_LATEX)
def test_hostile_latex_is_refused(latex: str) -> None:
    with pytest.raises(MathError, match="not allowed|not MathML|would produce"):
        to_mathml(latex)


def test_text_without_markup_still_converts() -> None:
    assert "<mtext>" in to_mathml(r"\text{if } a = b") and math_problem(r"\text{a, b}") is None


def _tags_and_attributes(html: str) -> tuple[set[str], set[str]]:
    tags = {t.lower() for t in re.findall(r"<\s*([A-Za-z][\w-]*)", html)}
    attributes = {a.lower() for a in re.findall(r"\s([A-Za-z_:][\w:.-]*)\s*=", html)}
    return tags, attributes


@pytest.mark.parametrize(
    "fragment",
    [
        # latex2mathml's raw output for the payloads of the issue, and worse
        '<math><mrow><mtext><img/src=x/onerror="window.pwned=1"></mtext></mrow></math>',
        "<math><mtext><script>window.pwned=1</script></mtext></math>",
        '<math><mrow href="javascript:alert(1)"><mi>x</mi></mrow></math>',
        '<math><mi style="x" class="y" onclick="z" xlink:href="javascript:1">x</mi></math>',
        "<math><mtext></math><img src=x onerror=alert(1)></mtext></math>",
        '<math><annotation-xml encoding="text/html"><img src=x onerror=1></annotation-xml></math>',
        '<math><mo maxsize="url(javascript:1)" stretchy="true">(</mo></math>',
        "<math><mtext><style>*{display:none}</style>a &amp; b</mtext></math>",
    ],
)
def test_sanitiser_keeps_only_mathml(fragment: str) -> None:
    clean = sanitize_mathml(fragment)
    tags, attributes = _tags_and_attributes(clean)
    assert tags <= MATHML_TAGS, tags
    assert not {a for a in attributes if a.startswith("on")}
    assert not attributes & {"href", "xlink:href", "style", "class", "src"}
    assert "javascript" not in clean and "script" not in tags and "window.pwned" not in clean


def test_sanitiser_keeps_what_latex2mathml_makes_of_real_math() -> None:
    latex = r"\hat{W} = \frac{\alpha}{r} B A \quad \sum_{i=1}^{n} \left( x_i \right)^2"
    from latex2mathml.converter import convert

    raw = convert(latex)
    clean = to_mathml(latex)
    assert _tags_and_attributes(raw)[0] == _tags_and_attributes(clean)[0]
    assert 'stretchy="true"' in clean and "<mfrac>" in clean


# --- linear scanning, checked against a plain reference ----------------------------------------


def split_ref(text: str) -> list[tuple[str, str, int]]:
    """The same rules written the slow, obvious way (quadratic): the reference."""
    out, pos, i, n = [], 0, 0, len(text)
    while i < n:
        c = text[i]
        seg = None
        if c == "`":
            j = i
            while j < n and text[j] == "`":
                j += 1
            run = j - i
            k = j
            close = -1
            while k < n:
                if text[k] == "`":
                    m = k
                    while m < n and text[m] == "`":
                        m += 1
                    if m - k == run:
                        close = k
                        break
                    k = m
                else:
                    k += 1
            if close < 0:
                i = j
                continue
            seg = ("code", text[j:close], i, close + run)
        elif c == "$":
            if text[i : i + 2] == "$$":
                close = text.find("$$", i + 3)
                if close >= 0:
                    seg = ("display", text[i + 2 : close].strip(), i, close + 2)
            if seg is None and (i == 0 or text[i - 1] not in "\\$"):
                close = text.find("$", i + 1)
                ok = close > i + 1
                ok = ok and not text[i + 1].isspace() and not text[close - 1].isspace()
                ok = ok and text[close - 1] != "\\"
                ok = ok and not (close + 1 < n and text[close + 1].isdigit())
                if ok:
                    seg = ("inline", text[i + 1 : close], i, close + 1)
        if seg is None:
            i += 1
            continue
        if seg[2] > pos:
            out.append(("text", text[pos : seg[2]], pos))
        out.append(seg[:3])
        pos = i = seg[3]
    if pos < n:
        out.append(("text", text[pos:], pos))
    return out


@settings(max_examples=400, deadline=None, database=None)
@given(st.text(alphabet="`$\\ ax1\n{}", max_size=40))
def test_scanner_matches_the_reference(text: str) -> None:
    assert [(s.kind, s.body, s.start) for s in split_math(text)] == split_ref(text)
    assert "".join(s.raw for s in split_math(text)) == text


@pytest.mark.parametrize(
    "text",
    [
        "`" * 16_000,
        "".join("`" * k + "x" for k in range(1, 600)),
        "$" * 200_000,
        "$x" * 100_000,
        "$$a" * 60_000,
        "{" * 200_000,
    ],
    ids=["backticks", "backtick-ladder", "dollars", "dollar-x", "display-opens", "braces"],
)
def test_pathological_text_scans_in_linear_time(text: str) -> None:
    # Growth, not a wall-clock budget (which fails under coverage or a loaded machine): four
    # times the text may cost about four times the CPU, where a quadratic scan costs sixteen.
    def cpu_seconds(part: str) -> float:
        gc.collect()
        gc.disable()  # a collection walks every live object: its cost is not the scan's
        try:
            start = time.process_time()
            segments = list(iter_segments(part))
            took = time.process_time() - start
        finally:
            gc.enable()
        assert "".join(s.raw for s in segments) == part
        return took

    quarter = cpu_seconds(text[: len(text) // 4])
    assert cpu_seconds(text) < 8 * quarter + 0.05


# --- placeholders no note can forge ----------------------------------------------------------


def _md():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False})


@pytest.mark.parametrize("forged", ["\ue0007\ue001", "\ue0000\ue001", "&#xE000;0&#xE001;"])
def test_note_text_cannot_forge_a_math_placeholder(forged: str) -> None:
    html = render_markdown(_md(), f"a $x$ and {forged} b", False, lambda s, d: f"<M>{s}</M>")
    assert html.count("<M>") == 1 and "<M>x</M>" in html


def test_math_never_lands_inside_an_attribute() -> None:
    text = '[a](http://e.x/$y$ "t $z$") ![i $w$](p.png) `$c$` $v$'
    html = render_markdown(_md(), text, True, lambda s, d: f"<M>{s}</M>")
    assert html.count("<M>") == 1 and "<M>v</M>" in html  # only the span in text
    for attribute in re.findall(r'="([^"]*)"', html):
        assert "<" not in attribute and "\ue000" not in attribute


# --- the bounds, at their edges, and what happens past them --------------------------------


def test_a_formula_of_the_longest_allowed_length_converts_one_longer_does_not() -> None:
    from repro.study.mathtext import MAX_SPAN_CHARS

    assert MAX_SPAN_CHARS == 1_000
    ok = "x+" * 499 + "yy"
    assert len(ok) == 1_000 and to_mathml(ok).startswith("<math")
    with pytest.raises(MathError, match=r"1,001 characters \(at most 1,000\)"):
        to_mathml(ok + "z")
    assert to_unicode(ok + r"\alpha") == ok + r"\alpha"  # too long: shown as written
    assert to_unicode(r"\alpha") == "α"


def test_the_note_budget_counts_spans_and_characters() -> None:
    from repro.study.mathtext import MathBudget

    budget = MathBudget()
    assert all(budget.over("x" * 1_000) is None for _ in range(10))  # exactly 10,000
    why = budget.over("y")
    assert why and "more than 10,000 characters of math" in why and budget.exhausted
    spans = MathBudget()
    assert all(spans.over("a") is None for _ in range(1_000))
    assert "more than 1,000 math spans" in (spans.over("a") or "")


@pytest.mark.parametrize("block", [True, False])
def test_a_field_too_long_for_markdown_is_escaped_plain_text(block: bool) -> None:
    """Past MAX_MARKDOWN_CHARS a field is not parsed as Markdown: it is shown as plain text,
    still escaped (a hostile note can make a field that long)."""
    from repro.study.mathtext import MAX_MARKDOWN_CHARS

    text = '<script>alert(1)</script> <img src=x onerror="y"> & *a* $x$ ' + "z" * MAX_MARKDOWN_CHARS
    html = render_markdown(_md(), text, block, lambda s, d: f"<M>{s}</M>")
    assert "<script" not in html and "<img" not in html and "<M>" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html and "&amp; *a* $x$" in html
    assert html.startswith("<p>") == block
    short = render_markdown(_md(), "<b>x</b> *a*", block, lambda s, d: s)
    assert "<b>" not in short and "&lt;b&gt;" in short and "<em>a</em>" in short


def test_markup_inside_a_nested_text_group_is_refused_by_the_first_layer() -> None:
    """`\\text{a{<b>}}`: the `{` inside a text argument is text too; the refusal names the
    markup, not just the MathML check behind it."""
    for latex in (r"\text{a{<img src=x>}}", r"\textbf{{{<b>}}}", r"\mbox{x {y {z > w}}}"):
        assert "markup-like text" in (math_problem(latex) or ""), latex
    assert math_problem(r"\frac{a}{b} < c \text{ if } \{x\} > 0") is None


def test_an_escaped_dollar_is_no_stray_dollar() -> None:
    assert text_problems(r"costs \$5 and \$6") == []
    ((offset, message),) = text_problems(r"costs \$5 and $ 6")
    assert offset == 14 and "unmatched $" in message


@pytest.mark.parametrize(
    "latex",
    [r"a_1 * b_2 * c_3", r"x + \text{_a_} + \_b\_", r"\# x | y ~ z", r"x^{*} \backslash y",
     r"\text{[x](javascript:y)} + \text{<b>hi</b>}", r"\text{`code`} \{ a \}"],
)  # fmt: skip
def test_terminal_math_is_read_back_by_markdown_as_the_same_characters(latex: str) -> None:
    """`show` hands rich Markdown with each formula as Unicode; whatever characters the
    formula has, Markdown must show exactly them (no emphasis, link, code or HTML)."""
    from html import unescape

    from repro.study.sheets import text_term

    shown = to_unicode(latex)
    for text in (f"see ${latex}$ here", f"see $${latex}$$ here"):  # inline and display math
        html = _md().renderInline(text_term(text))
        assert "<" not in html.replace("&lt;", "")  # no element at all
        assert unescape(html) == f"see {shown} here"
