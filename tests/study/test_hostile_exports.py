"""Hostile note text through every HTML export, parsed (no browser): only markup of our own.

tests/study/test_hostile_site.py opens a hostile site in Chromium; this is the fast layer that
runs everywhere. Every text field of two notes, their Chinese overlay included, holds markup,
scripts, `javascript:` links and `on*` attributes inside math. The complete site (both
languages, the must-know pack, the cheat sheet), a combined document and each paper's page on
its own are parsed the way a browser would: no element outside the pages' own vocabulary, no
`on*` attribute, no URL with a scheme other than http(s), and a MathML element carries only the
allow-listed attributes. The payloads are still there, as text.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
import yaml

from repro.lab.library import Library
from repro.study.mathtext import MATHML_ATTRS, MATHML_TAGS
from repro.study.publish import Request, publish
from repro.study.sheets import (
    must_know_entries,
    paper_sheet,
    render_cheatsheet,
    render_must_know,
    render_sheet,
)

REPO = Path(__file__).resolve().parents[2]
TOY = REPO / "tests" / "fixtures" / "library" / "toy"

PAYLOADS = [
    '<img src=x onerror="alert(1)"> raw & "quoted"',
    "<script>alert(2)</script> after",
    '$\\text{<img/src=x/onerror="alert(3)">}$ in math text',
    "$\\href{javascript:alert(4)}{x}$ a link in math",
    "[click](javascript:alert(5)) and [ok](https://example.org/a?b=1&c=2)",
    '<a href="javascript:alert(6)" onclick="alert(7)">b</a> $x < y$',
    "$\\text{</math><svg onload=alert(8)>}$ closing math",
    "</title></style></textarea><script>alert(9)</script>",
]
LATEX = [
    '\\text{<img/src=x/onerror="alert(10)">}',
    "\\href{javascript:alert(11)}{y}",
    "\\style{color:red}{z} + \\class{c}{w}",
    "a < b \\text{</math><script>alert(12)</script>}",
]
TEXT_LINE = re.compile(r"(?m)^(\s*(?:- )?[a-z_]+: |\s*- )(TODO[^\n]*)$")

# The elements the pages are made of (templates/*.html.j2, Pygments, our SVG plots) and MathML.
PAGE_TAGS = {
    "html", "head", "body", "meta", "title", "style", "link", "main", "nav", "header",
    "footer", "article", "section", "aside", "div", "span", "p", "a", "b", "i", "em",
    "strong", "code", "pre", "ul", "ol", "li", "dl", "dt", "dd", "h1", "h2", "h3", "h4",
    "h5", "h6", "table", "thead", "tbody", "tr", "th", "td", "details", "summary", "hr",
    "br", "small", "figure", "figcaption", "sup", "sub", "blockquote", "caption", "label",
}  # fmt: skip


def hostile_note(n: int) -> str:
    """The toy note with every TODO text, the title, the formulas' LaTeX, the related list and
    a zh overlay holding payloads."""
    text = (TOY / "note.yaml").read_text(encoding="utf-8")
    payloads = iter(PAYLOADS[n:] * 40)
    text = TEXT_LINE.sub(lambda m: m.group(1) + json.dumps(next(payloads)), text)
    text = text.replace('title: "Toy: a paper for tests"', f"title: {json.dumps(PAYLOADS[n])}")
    text = re.sub(r"(?m)^(\s*latex: ).*$", lambda m: m.group(1) + json.dumps(LATEX[n]), text)
    text = text.replace("priority: core", "priority: must-know")
    text = re.sub(
        r"(?m)^related: .*$", f"related: {json.dumps(['bad-1', 'bad-0', 'nowhere'])}", text
    )
    note = yaml.safe_load(text)
    note["short_title"] = PAYLOADS[(n + 1) % len(PAYLOADS)]
    note["url"] = f'https://e.org/"><script>alert({20 + n})</script><img src=x onerror=y>'
    note["plots"] = [{"file": "curve.svg", "claim": "two-plus-two", "caption": PAYLOADS[n + 2]}]
    note["compare"] = [
        {"table": "attention-heads", "row": PAYLOADS[n + 3], "claim": "two-plus-two",
         "cells": {"kv-heads": PAYLOADS[n + 4], "quality": PAYLOADS[n + 5]}}
    ]  # fmt: skip
    for i, claim in enumerate(note["claims"]):
        claim["statement"] = PAYLOADS[(n + i) % len(PAYLOADS)]
        claim["source"] = PAYLOADS[(n + i + 1) % len(PAYLOADS)].replace("$", "")
    note["claims"][0]["unit"] = "<b>|u|</b>"
    note["zh"] = {
        "short_title": "中文 " + PAYLOADS[n + 1],
        "contributions": [f"贡献：{p}" for p in PAYLOADS[n : n + 3]],
        "interview": {
            "summary": "总结 " + PAYLOADS[n + 2],
            "questions": [
                {"id": q["id"], "question": "问 " + PAYLOADS[n + 3], "answer": "答 " + PAYLOADS[n]}
                for q in note["interview"]["questions"]
            ],
            "deep_dive": {"topic": "题 " + PAYLOADS[n + 4], "explanation": "释 " + PAYLOADS[n + 5]},
        },
    }
    return yaml.safe_dump(note, allow_unicode=True)


class Markup(HTMLParser):
    """Every element, attribute and visible text of a page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.elements: list[tuple[str, list[tuple[str, str]]]] = []
        self.text: list[str] = []
        self.stack: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.elements.append((tag, [(k, v or "") for k, v in attrs]))

    def handle_data(self, data):
        self.text.append(data)


def parse(html: str) -> Markup:
    parser = Markup()
    parser.feed(html)
    parser.close()
    return parser


SVG_TAGS = {"svg", "g", "path", "defs", "clippath", "use", "rect", "text", "line", "polyline",
            "circle", "style", "title", "desc"}  # fmt: skip


def problems(html: str) -> list[str]:
    """What a browser would find active or foreign in `html` (empty when it is safe)."""
    found = []
    in_svg = False
    for tag, attrs in parse(html).elements:
        in_svg = in_svg or tag == "svg"
        if tag in MATHML_TAGS:
            allowed = MATHML_ATTRS["*"] | MATHML_ATTRS.get(tag, set())
            found += [f"<{tag} {k}>" for k, _ in attrs if k not in allowed]
        elif tag not in PAGE_TAGS and not (in_svg and tag in SVG_TAGS):
            found.append(f"<{tag}>")
        for k, v in attrs:
            value = re.sub(r"[\s\x00-\x1f]", "", v).lower()
            if k.startswith("on"):
                found.append(f"<{tag} {k}>")
            scheme = ":" in value.split("/")[0] and not value.startswith(("http:", "https:"))
            if k in ("href", "src", "action", "xlink:href", "formaction") and scheme:
                found.append(f"<{tag} {k}={v!r}>")
            if "javascript:" in value or "expression(" in value:
                found.append(f"<{tag} {k}={v!r}>")
    return found


@pytest.fixture(scope="module")
def library(tmp_path_factory: pytest.TempPathFactory) -> tuple[Library, Path]:
    root = tmp_path_factory.mktemp("hostile-exports")
    for n in range(2):
        folder = root / "papers" / f"bad-{n}"
        folder.mkdir(parents=True)
        shutil.copy(TOY / "repro.py", folder / "repro.py")
        (folder / "note.yaml").write_text(hostile_note(n), encoding="utf-8")
    run = root / "runs" / "bad-0" / "20260102T030405000000Z"
    run.mkdir(parents=True)
    verdicts = [{"paper": "bad-0", "id": "two-plus-two", "statement": "s", "kind": "derived",
                 "expected": 4, "tolerance": "exact", "verdict": "verified", "measured": 4,
                 "when": "2026-01-02T03:04:05Z"}]  # fmt: skip
    (run / "claims.json").write_text(json.dumps(verdicts), encoding="utf-8")
    svg = '<svg xmlns="http://www.w3.org/2000/svg" width="9"><g id="a"><path d="M0 0"/></g></svg>'
    (run / "curve.svg").write_text(svg, encoding="utf-8")
    library = Library(root / "papers")
    for paper in library.papers.values():
        paper.note  # noqa: B018 - the hostile notes load
    return library, root


@pytest.fixture(scope="module")
def site_pages(library) -> dict[str, str]:
    lib, root = library
    publish(lib, root / "runs", Request(all_papers=True, fmt="html", output=root / "site"))
    publish(lib, root / "runs", Request(all_papers=True, fmt="html", output=root / "all.html"))
    pages = {str(p.relative_to(root)): p.read_text(encoding="utf-8")
             for p in sorted((root / "site").rglob("*.html"))}  # fmt: skip
    pages["all.html"] = (root / "all.html").read_text(encoding="utf-8")
    return pages


def test_the_site_has_every_page_in_both_languages(site_pages: dict[str, str]) -> None:
    want = {f"site/{lang}{name}" for lang in ("", "zh/")
            for name in ("index.html", "bad-0.html", "bad-1.html", "must-know.html",
                         "cheatsheet.html")}  # fmt: skip
    assert want <= set(site_pages)


def test_no_hostile_text_is_markup_in_any_page(site_pages: dict[str, str]) -> None:
    for name, html in site_pages.items():
        assert problems(html) == [], name
        text = "".join(parse(html).text)
        if "bad-" in name or "all" in name or "cheatsheet" in name or "must-know" in name:
            # the payloads are shown, as text
            assert "onerror" in text and "alert(" in text, name
        if name.endswith(("bad-0.html", "all.html")):  # the paper's link, quotes and all
            assert 'href="https://e.org/&#34;&gt;&lt;script&gt;alert(20)' in html or (
                'href="https://e.org/&quot;&gt;&lt;script&gt;alert(20)' in html
            ), name


def test_the_zh_pages_show_the_overlays_payloads_as_text(site_pages: dict[str, str]) -> None:
    page = site_pages["site/zh/bad-0.html"]
    text = "".join(parse(page).text)
    assert "答 " + PAYLOADS[0] in text and "贡献：" + PAYLOADS[1] in text
    assert "中文 " + PAYLOADS[1] in text  # the zh display name
    assert problems(page) == []


def test_each_render_path_on_its_own(library) -> None:
    """render_sheet (one page, with and without a library), the pack and the cheat sheet, in
    both languages: the same guarantees, and the `<script>` payload shown escaped."""
    lib, root = library
    for lang in ("en", "zh"):
        for paper in lib.papers.values():
            for with_library in (lib, None):
                sheet = paper_sheet(paper, root / "runs", lang, with_library)
                html = render_sheet(sheet, "html", lang)
                assert problems(html) == [], (paper.slug, lang)
                assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html
        entries = must_know_entries(lib, root / "runs", lang)
        for html in (render_must_know(entries, "html", lang), render_cheatsheet(entries, lang)):
            assert problems(html) == [], lang
            assert "&lt;script&gt;alert(2)&lt;/script&gt;" in html


def test_the_plot_caption_and_claims_are_text(site_pages: dict[str, str]) -> None:
    page = site_pages["site/bad-0.html"]
    assert page.count("<svg") == 1 and problems(page) == []
    text = "".join(parse(page).text)
    assert PAYLOADS[2].split("$")[0] in text  # the caption, beside its claim
    assert "<b>|u|</b>" in text and "<b>" + "|u|" not in page  # a claim's unit
    assert PAYLOADS[0] in text  # a claim's statement


def test_a_bad_formula_is_shown_as_escaped_source(library) -> None:
    """LaTeX that may not become MathML is shown as its source in `code.bad-math`, escaped."""
    lib, root = library
    html = render_sheet(paper_sheet(lib.get("bad-0"), root / "runs"), "html")
    assert '<code class="bad-math">\\text{&lt;img/src=x/onerror=' in html
    html = render_sheet(paper_sheet(lib.get("bad-1"), root / "runs"), "html")
    assert '<code class="bad-math">\\href{javascript:alert(11)}{y}</code>' in html


def test_the_checker_would_see_a_payload() -> None:
    """`problems` can fail: each kind of leak is reported."""
    assert problems('<p><img src=x onerror="alert(1)"></p>')
    assert problems("<script>alert(1)</script>")
    assert problems('<a href="javascript:alert(1)">x</a>')
    assert problems('<a href=" java\tscript:alert(1)">x</a>')
    assert problems('<math><mi href="x">a</mi></math>')
    assert problems('<math><mi style="color:red">a</mi></math>')
    assert problems('<a href="data:text/html,x">x</a>')
    assert not problems('<p><a href="https://e.org/?a=1&amp;b=2">x</a> <code>&lt;b&gt;</code></p>')
