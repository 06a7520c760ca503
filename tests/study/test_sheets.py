"""Study sheets: math in every format, complete HTML pages, zh labels, the must-know pack."""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest

from repro.lab.library import Library
from repro.study.plots import save_line_plot
from repro.study.sheets import (
    MUST_KNOW,
    must_know_entries,
    paper_sheet,
    render_combined,
    render_must_know,
    render_sheet,
)

REPO = Path(__file__).resolve().parents[2]
LIBRARY = Library(REPO / "papers")


class VisibleText(HTMLParser):
    """The text a reader sees: no <style>, no MathML (it is drawn, not read as source)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs):
        self.hidden += tag in ("style", "math", "code", "svg")

    def handle_endtag(self, tag):
        self.hidden -= tag in ("style", "math", "code", "svg")

    def handle_data(self, data):
        if not self.hidden:
            self.parts.append(data)


def visible_text(html: str) -> str:
    parser = VisibleText()
    parser.feed(html)
    return "".join(parser.parts)


@pytest.fixture
def runs_dir(tmp_path: Path) -> Path:
    return tmp_path / "runs"


def test_markdown_keeps_dollar_math(runs_dir: Path) -> None:
    md = render_sheet(paper_sheet(LIBRARY.get("lora"), runs_dir), "md")
    assert render_sheet(paper_sheet(LIBRARY.get("lora"), runs_dir)) == md  # Markdown by default
    assert paper_sheet(LIBRARY.get("lora"), runs_dir) == paper_sheet(
        LIBRARY.get("lora"), runs_dir, "en"
    )  # in English by default
    assert "$W_0$" in md and "$$\n" in md
    assert "<math" not in md


@pytest.mark.parametrize("slug", LIBRARY.slugs())
def test_html_has_mathml_and_no_raw_latex(slug: str, runs_dir: Path) -> None:
    paper = LIBRARY.get(slug)
    html = render_sheet(paper_sheet(paper, runs_dir, library=LIBRARY), "html")
    assert html.count("<math") >= len(paper.note.formulas)
    text = visible_text(html)
    for raw in ("\\frac", "\\mathrm", "$"):
        assert raw not in text, f"{slug}: raw {raw!r} in the visible text"
    assert "bad-math" not in html
    assert "http" not in re.sub(r'<a href="https?://[^"]+"', "", html).split("</style>")[0]


def test_combined_document_lists_the_papers_in_order_in_its_language(runs_dir: Path) -> None:
    def sheets():  # fresh: a sheet keeps the page extras of the first language it is shown in
        return [
            paper_sheet(LIBRARY.get(slug), runs_dir, library=LIBRARY) for slug in ("lora", "gpt3")
        ]

    md = render_combined(sheets(), "md")  # English unless asked
    assert md.startswith("# paperlab study sheets\n\n**Contents**\n")
    lora, gpt3 = LIBRARY.get("lora").note.title, LIBRARY.get("gpt3").note.title
    assert f"1. [{lora}](#lora)\n2. [{gpt3}](#gpt3)\n" in md
    assert md.index(f"## {lora}") < md.index(f"## {gpt3}")  # each paper one level down
    html = render_combined(sheets(), "html", "zh")
    assert "<h1>paperlab 论文学习笔记</h1>" in html and "<b>目录</b>" in html
    toc = html[html.index('<nav class="toc"') : html.index("</nav>")]
    assert re.findall(r'<a href="#([^"]+)">([^<]+)</a>', toc) == [
        ("lora", "LoRA 低秩适配"),  # the page's language decides the names
        ("gpt3", "GPT-3"),
    ]


def test_html_page_is_complete(runs_dir: Path) -> None:
    paper = LIBRARY.get("lora")
    html = render_sheet(paper_sheet(paper, runs_dir, library=LIBRARY), "html")
    text = visible_text(html)
    for heading in (
        "Basic information", "Three passes", "The problem", "Three contributions", "Method",
        "Key formulas", "Experiments", "Strengths", "Weaknesses", "Takeaways",
        "Related papers", "The 5-minute summary", "Interview questions", "Deep dive",
        "Answer framework", "Claims, checked by paperlab",
    ):  # fmt: skip
        assert heading in text, heading
    note = paper.note
    assert note.problem.prior_limits.split()[0] in text
    assert "M parameters" in text  # a claim's unit
    assert "not yet run" in text and "<code>paperlab check lora</code>" in html
    assert 'href="https://arxiv.org/abs/1706.03762"' in html  # related: transformer, resolvable
    assert 'href="https://arxiv.org/abs/2305.11206"' in html  # related: lima, resolvable
    alone = render_sheet(paper_sheet(paper, runs_dir, library=None), "html")
    assert "lima" in visible_text(alone)  # a related paper outside the library: named ...
    assert "2305.11206" not in alone  # ... but not linked


def _fake_run(runs_dir: Path, slug: str, claim_id: str, stamp: str) -> Path:
    run = runs_dir / slug / stamp
    run.mkdir(parents=True)
    claims = [
        {"paper": slug, "id": claim_id, "statement": "s", "kind": "derived", "expected": 256,
         "tolerance": "exact", "verdict": "verified", "unit": "×", "measured": 256,
         "when": "2026-01-02T03:04:05Z"}
    ]  # fmt: skip
    (run / "claims.json").write_text(json.dumps(claims))
    (run / "environment.json").write_text(json.dumps({"git_commit": "0123456789abcdef0123"}))
    (run / "config.json").write_text(json.dumps({"_preset": "quick"}))
    return run


def test_run_stamp_commit_and_plots_inline(runs_dir: Path) -> None:
    run = _fake_run(runs_dir, "lora", "param-reduction-4096", "20260102T030405000000Z")
    for name in ("a_plot", "b_plot"):
        save_line_plot(run / f"{name}.svg", {"r=1": ([1, 2], [0.5, 0.7])}, "x", "y", name)
    html = render_sheet(paper_sheet(LIBRARY.get("lora"), runs_dir), "html")
    assert "20260102T030405000000Z" in html and "0123456789ab" in html and "quick" in html
    assert html.count("<svg") == 2 and "<?xml" not in html and "DOCTYPE svg" not in html
    ids = re.findall(r'\bid="([^"]+)"', html)
    assert len(ids) == len(set(ids)), "two inlined plots share an id"
    assert '<td class="verdict verified" data-label="verdict">verified</td>' in html


def test_pipe_in_a_unit_is_escaped_in_the_markdown_table(library_dir: Path, runs_dir: Path) -> None:
    note = library_dir / "toy" / "note.yaml"
    unit = "    expected: 4\n    unit: max |logit|\n"
    note.write_text(note.read_text().replace("    expected: 4\n", unit, 1))
    sheet = paper_sheet(Library(library_dir).get("toy"), runs_dir)
    md = render_sheet(sheet, "md")
    row = next(line for line in md.splitlines() if line.startswith("| Two plus two"))
    assert "4 max \\|logit\\|" in row
    header = next(line for line in md.splitlines() if line.startswith("| claim"))
    unescaped = re.compile(r"(?<!\\)\|")
    assert len(unescaped.findall(row)) == len(unescaped.findall(header))


def test_zh_labels_and_marked_fallback(runs_dir: Path, tmp_path: Path) -> None:
    root = tmp_path / "papers"
    shutil.copytree(REPO / "papers" / "lora", root / "lora")
    note = root / "lora" / "note.yaml"
    text = note.read_text(encoding="utf-8")
    note.write_text(text[: text.index("\nzh:")] + text[text.index("\nclaims:") :], "utf-8")
    lora = render_sheet(paper_sheet(Library(root).get("lora"), runs_dir, "zh"), "md", "zh")
    for label in ("基本信息", "核心问题", "核心贡献", "方法", "实验", "优缺点", "启发", "相关论文",
                  "5分钟口述总结", "回答框架", "【背景】", "【准备追问】"):  # fmt: skip
        assert label in lora, label
    assert "## 核心贡献 *（暂无中文，以下为英文原文）*" in lora  # no zh overlay left
    transformer = render_sheet(paper_sheet(LIBRARY.get("transformer"), runs_dir, "zh"), "md", "zh")
    assert "## 核心贡献\n" in transformer  # translated: no fallback mark
    assert "## 方法 *（暂无中文，以下为英文原文）*" in transformer  # not in the overlay
    assert "缩放点积注意力" in transformer


def test_must_know_pack_lists_missing_papers(runs_dir: Path) -> None:
    entries = must_know_entries(LIBRARY, runs_dir, "en")
    assert [e.slug for e in entries][: len(MUST_KNOW)] == list(MUST_KNOW)
    text = render_must_know(entries, "md")
    if "instructgpt" not in LIBRARY.papers:
        assert "Missing: no note at papers/instructgpt/ yet." in text
    for heading in ("5-minute spoken summary", "3 core contributions",
                    "2 frequent interview questions", "1 deep technical detail",
                    "Answer framework", "Background** (30 s)", "Likely follow-ups"):  # fmt: skip
        assert heading in text
    assert text.index("Attention Is All You Need") < text.index("LLaMA")
    assert text.count("**Q3.") == 0  # exactly two questions per paper


def test_must_know_pack_picks_up_a_new_note(library_dir: Path, toy_copy, runs_dir: Path) -> None:
    toy_copy("instructgpt", {"aliases: [toy-alias]\n": ""})
    entries = must_know_entries(Library(library_dir), runs_dir, "zh")
    by_slug = {e.slug: e for e in entries}
    assert by_slug["instructgpt"].sheet is not None and by_slug["llama"].sheet is None
    html = render_must_know(entries, "html", "zh")
    assert "5分钟口述总结" in html and "缺失：papers/llama/" in html


def test_the_pack_holds_each_papers_own_sheet_in_its_language(
    library_dir: Path, toy_copy, runs_dir: Path
) -> None:
    """Both ways into the pack (one of the five by alias, another must-know note) give the sheet
    `paper_sheet` gives: the note in the pack's language, related papers found in the library."""
    for slug, alias in (("toy2", "[llama]"), ("toy3", "[]")):
        toy_copy(slug, {
            "aliases: [toy-alias]": f"aliases: {alias}",
            "priority: core": "priority: must-know",
            "related: []": "related: [toy]",
        })  # fmt: skip
    lib = Library(library_dir)
    english = paper_sheet(lib.get("toy2"), runs_dir, "en", lib)
    assert english != paper_sheet(lib.get("toy2"), runs_dir, "zh", lib)  # the languages differ
    assert english != paper_sheet(lib.get("toy2"), runs_dir, "en")  # and so do related links
    for lang in ("en", "zh"):
        made = [e for e in must_know_entries(lib, runs_dir, lang) if e.sheet is not None]
        assert [e.slug for e in made] == ["toy2", "toy3"]
        for e in made:
            assert e.sheet == paper_sheet(lib.get(e.slug), runs_dir, lang, lib)


def test_the_pack_names_its_papers_in_its_language(runs_dir: Path) -> None:
    for lang, name in (("en", "InstructGPT"), ("zh", "InstructGPT（RLHF）")):
        entries = must_know_entries(LIBRARY, runs_dir, lang)  # fresh sheets: no page extras
        html = render_must_know(entries, "html", lang)
        assert '<a href="#instructgpt">' + name + "</a>" in html


# --- pages built for revision: card first, code beside the math, plots beside claims ---------


@pytest.fixture
def lora_copy(tmp_path: Path) -> Path:
    """A library with LoRA (its forward pass linked to its code, a claim declaring the same
    code, a plot captioned for a claim) and the Transformer."""
    root = tmp_path / "papers"
    for slug in ("lora", "transformer", "gqa", "rope", "bert"):
        shutil.copytree(REPO / "papers" / slug, root / slug)
    note = root / "lora" / "note.yaml"
    text = note.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^    (code|claims): .*\n", "", text)  # the note's own links, if any
    if "\nplots:" in text:
        text = text[: text.index("\nplots:")] + text[text.index("\nclaims:") :]
    text = text.replace(
        "  - id: lora-forward-pass\n",
        "  - id: lora-forward-pass\n    code: repro/nn/lora.py::LoRALinear.forward\n"
        "    claims: [zero-init-equivalence]\n",
        1,
    ).replace(
        "  - id: merge-equivalence\n",
        "  - id: merge-equivalence\n    code: [repro/nn/lora.py::LoRALinear.forward]\n",
        1,
    )
    text = text.replace(
        "\nclaims:\n",
        "\nplots:\n  - file: curve.svg\n    claim: param-reduction-4096\n"
        "    caption: Look where the two curves meet.\n\nclaims:\n",
        1,
    )
    note.write_text(text, encoding="utf-8")
    return root


def test_revision_card_is_the_first_section_and_questions_fold(runs_dir: Path) -> None:
    html = render_sheet(paper_sheet(LIBRARY.get("transformer"), runs_dir, library=LIBRARY), "html")
    article = html[html.index('<article id="transformer"') :]
    first = re.search(r"<section[^>]*>", article).group(0)
    assert 'class="revision"' in first
    card = article[: article.index("</section>")]
    for heading in ("The 5-minute summary", "Three contributions", "Interview questions",
                    "Deep dive", "Answer framework", "(30 s)", "(1–2 min)"):  # fmt: skip
        assert heading in card, heading
    n = len(LIBRARY.get("transformer").note.interview.questions)
    assert card.count('<details class="qa"') == n
    assert article.index("revision") < article.index("Three passes") < article.index("Method")


def test_code_beside_the_formula_with_the_claims_that_run_it(
    lora_copy: Path, runs_dir: Path
) -> None:
    library = Library(lora_copy)
    _fake_run(runs_dir, "lora", "merge-equivalence", "20260102T030405000000Z")
    html = render_sheet(paper_sheet(library.get("lora"), runs_dir, library=library), "html")
    formula = html[html.index('id="lora-f-lora-forward-pass"') :]
    formula = formula[: formula.index('<div class="formula"')]
    assert "repro/nn/lora.py" in formula and '<div class="hl">' in formula
    assert 'class="k">def</span>' in formula  # Pygments' classes, styled by the page's CSS
    assert "zero-init-equivalence · not yet run" in formula  # from the formula's claims: list
    assert "merge-equivalence · verified" in formula  # the claim declares the same code
    assert "<script" not in html and ".hl .k" in html


def test_plot_sits_beside_its_claim_with_caption_and_verdict(
    lora_copy: Path, runs_dir: Path
) -> None:
    library = Library(lora_copy)
    run = _fake_run(runs_dir, "lora", "param-reduction-4096", "20260102T030405000000Z")
    save_line_plot(run / "curve.svg", {"a": ([1, 2], [1.0, 2.0])}, "x", "y", "t")
    save_line_plot(run / "loose.svg", {"a": ([1, 2], [1.0, 2.0])}, "x", "y", "t")
    html = render_sheet(paper_sheet(library.get("lora"), runs_dir, library=library), "html")
    row = html.index('id="lora-claim-param-reduction-4096"')
    plot = html.index("Look where the two curves meet.")
    next_row = html.index('<tr id="lora-claim-', row + 10)
    assert row < plot < next_row
    assert "param-reduction-4096 · verified" in html[row:next_row]
    assert html.index("loose") > next_row  # a plot no note describes: after the table


def test_unresolvable_code_is_a_located_validate_error(lora_copy: Path) -> None:
    from repro.study.site import page_problems

    note = lora_copy / "lora" / "note.yaml"
    note.write_text(note.read_text().replace("LoRALinear.forward\n", "LoRALinear.nope\n", 1))
    paper = Library(lora_copy).get("lora")
    (problem,) = page_problems(paper, "papers/lora/note.yaml")
    assert re.match(
        r"papers/lora/note.yaml:\d+:\d+: formulas\[2\]\.code: .*'LoRALinear.nope'", problem
    )


def test_excerpt_markers_and_ranges(tmp_path: Path) -> None:
    from repro.study.excerpts import CodeRefError, resolve

    (tmp_path / "m.py").write_text(
        "def f(x):\n    y = x\n    # [core]\n    z = y + 1\n    # [/core]\n    return z\n"
    )
    assert resolve(tmp_path, "m.py::f#core").lines == ("z = y + 1",)
    ex = resolve(tmp_path, "m.py#L2-L4")
    assert (ex.first, ex.last) == (2, 4)
    for bad in ("m.py::g", "m.py#L5-L9", "m.py::f#other", "../m.py", "n.py"):
        with pytest.raises(CodeRefError):
            resolve(tmp_path, bad)


def _site(library_root: Path, runs_dir: Path, out: Path) -> Path:
    from repro.study.publish import Request, publish

    publish(Library(library_root), runs_dir, Request(all_papers=True, fmt="html", output=out))
    return out


def test_index_groups_names_path_tables_and_links(
    lora_copy: Path, runs_dir: Path, tmp_path: Path
) -> None:
    site = _site(lora_copy, runs_dir, tmp_path / "site")
    index = (site / "index.html").read_text()
    text = visible_text(index)
    # display names, grouped by topic, must-know first in its group
    assert "Transformer" in text and "Attention Is All You Need" in text
    assert text.index("Architecture") < text.index("Transformer") < text.index("RoPE")
    assert text.index("Training & scaling") < text.index("BERT") < text.index("Efficiency")
    # the reading path puts a paper after the earlier papers it names as related
    path = text[text.index("Reading path") :]
    assert path.index("Transformer") < path.index("BERT") < path.index("GQA")
    # comparison tables built from the notes' compare: rows, each cell citing its note
    tables = index[index.index('id="comparisons"') :]
    assert "MHA" in tables and "MQA" in tables and "GQA" in tables
    assert "Sinusoidal" in tables and "RoPE" in tables and "Learned" in tables
    assert 'href="gqa.html#gqa-claim-table1-t5-xxl"' in tables
    assert tables.count('class="cite"') >= 3 * 3
    # links to the pack, the cheat sheets, the deck, the other language: all exist
    for href in ("must-know.html", "cheatsheet.html", "paperlab-en.apkg", "zh/index.html"):
        assert f'href="{href}"' in index and (site / href).exists(), href
    zh = (site / "zh" / "index.html").read_text()
    assert "RoPE 旋转位置编码" in zh and "模型架构" in zh and 'href="../index.html"' in zh
    assert (site / "zh" / "paperlab-zh.apkg").exists()
    # no runs: no verdict counts; once a paper has run, its counts show
    assert "not yet run" not in text
    _fake_run(runs_dir, "lora", "param-reduction-4096", "20260102T030405000000Z")
    index = (_site(lora_copy, runs_dir, tmp_path / "site2") / "index.html").read_text()
    assert "1 verified" in visible_text(index)


def test_pages_link_back_and_to_neighbours(lora_copy: Path, runs_dir: Path, tmp_path: Path) -> None:
    site = _site(lora_copy, runs_dir, tmp_path / "site")
    from repro.study.site import site_order

    order = [
        s.slug
        for s in site_order([paper_sheet(p, runs_dir) for p in Library(lora_copy).papers.values()])
    ]
    for i, slug in enumerate(order):
        page = (site / f"{slug}.html").read_text()
        assert 'href="index.html"' in page and f'href="zh/{slug}.html"' in page
        if i:
            assert f'rel="prev" href="{order[i - 1]}.html"' in page
        if i + 1 < len(order):
            assert f'rel="next" href="{order[i + 1]}.html"' in page


def test_cheatsheet_has_every_part(runs_dir: Path) -> None:
    from repro.study.sheets import render_cheatsheet

    entries = must_know_entries(LIBRARY, runs_dir, "en")
    html = render_cheatsheet(entries, "en")
    assert html.count('<article id="') == len(entries)
    text = visible_text(html)
    for part in ("5-minute spoken summary", "3 core contributions", "Key formula",
                 "Interview questions", "Answer framework"):  # fmt: skip
        assert text.count(part) == len(entries), part
    assert render_cheatsheet(must_know_entries(LIBRARY, runs_dir, "en")) == html  # English


def test_cheatsheet_names_the_papers_in_its_language(runs_dir: Path) -> None:
    from repro.study.sheets import PackEntry, render_cheatsheet

    for lang, name in (("en", "LoRA"), ("zh", "LoRA 低秩适配")):
        sheet = paper_sheet(LIBRARY.get("lora"), runs_dir, lang)  # no page extras yet
        html = render_cheatsheet([PackEntry("lora", sheet)], lang)
        assert re.findall(r"<h1>([^<]+) <span", html) == [name]


def test_note_markdown_is_inline_unless_a_block_is_asked_for() -> None:
    from repro.study.sheets import markdown_html, text_html

    assert markdown_html("*a*") == "<em>a</em>"
    assert markdown_html("*a*", block=True) == "<p><em>a</em></p>"
    assert text_html("*b*") == "<em>b</em>"
    assert text_html("*b*", block=True) == "<p><em>b</em></p>"


def test_note_markdown_makes_no_request_images_stay_text() -> None:
    from repro.study.sheets import markdown_html

    html = str(
        markdown_html("see ![pixel](https://tracker.invalid/p.png) and [x](javascript:alert(1))")
    )
    assert "<img" not in html and "tracker.invalid" in html  # shown as text, never fetched
    assert 'href="javascript:' not in html


# --- zh sheets section by section, cited claims beside run ones ------------------------------

FALLBACK = " *（暂无中文，以下为英文原文）*"
ENGLISH_ONLY_HEADINGS = ("## 三遍阅读法", "## 核心问题", "## 方法", "## 关键公式", "## 实验",
                         "## 优缺点", "## 启发", "## 论文结论的复现核验")  # fmt: skip


def _toy_with(library_dir: Path, edit) -> Library:
    import yaml

    path = library_dir / "toy" / "note.yaml"
    note = yaml.safe_load(path.read_text(encoding="utf-8"))
    edit(note)
    path.write_text(yaml.safe_dump(note, allow_unicode=True), encoding="utf-8")
    return Library(library_dir)


def _full_overlay(note: dict) -> None:
    note["zh"] = {
        "short_title": "玩具",
        "contributions": ["贡献一", "贡献二", "贡献三"],
        "interview": {
            "summary": "中文总结。",
            "questions": [{"id": q["id"], "question": f"中文问题{n}？", "answer": f"中文回答{n}。"}
                          for n, q in enumerate(note["interview"]["questions"], 1)],
            "deep_dive": {"topic": "中文细节", "explanation": "中文解释。"},
            "answer_outline": {"background": "背景文字", "innovation": "创新文字",
                               "details": "细节文字", "impact": "影响文字",
                               "follow_ups": ["追问一"]},
        },
    }  # fmt: skip


def test_a_zh_sheet_marks_exactly_the_sections_shown_in_english(
    library_dir: Path, runs_dir: Path
) -> None:
    """With a complete overlay only the sections the overlay cannot cover are marked; with an
    overlay of questions only, the rest of the interview block is marked too."""
    lib = _toy_with(library_dir, _full_overlay)
    md = render_sheet(paper_sheet(lib.get("toy"), runs_dir, "zh"), "md", "zh")
    lines = md.splitlines()
    for heading in ENGLISH_ONLY_HEADINGS:
        assert heading + FALLBACK in lines, heading
    translated = ("## 核心贡献", "### 5分钟口述总结", "### 面试高频问题", "### 回答框架",
                  "### 深度技术细节：中文细节")  # fmt: skip
    for heading in translated:
        assert heading in lines, heading
    assert md.count(FALLBACK) == len(ENGLISH_ONLY_HEADINGS)
    for text in ("2. 贡献二", "中文总结。", "**Q2. 中文问题2？**", "中文回答1。", "中文解释。",
                 "1. **【背景】** （30秒） — 背景文字", "   - 追问一"):  # fmt: skip
        assert text in md, text

    def questions_only(note: dict) -> None:
        _full_overlay(note)
        note["zh"] = {"interview": {"questions": note["zh"]["interview"]["questions"]}}

    lib = _toy_with(library_dir, questions_only)
    md = render_sheet(paper_sheet(lib.get("toy"), runs_dir, "zh"), "md", "zh")
    lines = md.splitlines()
    assert "### 面试高频问题" in lines and "**Q1. 中文问题1？**" in md
    for heading in ("## 核心贡献", "### 5分钟口述总结", "### 回答框架"):
        assert heading + FALLBACK in lines, heading
    assert any(line.startswith("### 深度技术细节：") and line.endswith(FALLBACK) for line in lines)
    en = render_sheet(paper_sheet(lib.get("toy"), runs_dir, "en"), "md", "en")
    assert "暂无中文" not in en and "中文问题" not in en


def test_a_zh_html_page_marks_the_same_sections(library_dir: Path, runs_dir: Path) -> None:
    lib = _toy_with(library_dir, _full_overlay)
    html = render_sheet(paper_sheet(lib.get("toy"), runs_dir, "zh", lib), "html", "zh")
    assert html.count('<span class="fallback">') == len(ENGLISH_ONLY_HEADINGS)
    assert "中文问题1？" in html and "玩具" in visible_text(html)


def test_claim_rows_join_stored_results_and_cited_claims_stay_cited(
    library_dir: Path, runs_dir: Path
) -> None:
    """The toy note's six claims: two with stored results (one verified, one failed), three not
    run, and a cited one — which says "cited" even when a run stored something for it."""
    from repro.study.sheets import claim_counts, claim_rows

    run = runs_dir / "toy" / "20260102T030405000000Z"
    run.mkdir(parents=True)
    base = {"paper": "toy", "statement": "s", "kind": "derived", "tolerance": "exact",
            "expected": 4, "when": "2026-01-02T03:04:05Z"}  # fmt: skip
    results = [
        {**base, "id": "two-plus-two", "verdict": "verified", "measured": 4},
        {**base, "id": "wrong-sum", "verdict": "failed", "measured": 5},
        {**base, "id": "bleu", "verdict": "verified", "measured": 28.4},
    ]
    (run / "claims.json").write_text(json.dumps(results))
    paper = Library(library_dir).get("toy")
    from repro.lab.runs import latest_results

    rows = claim_rows(paper, latest_results(runs_dir, "toy"))
    assert [(r["claim"].id, r["verdict"], r["measured"]) for r in rows] == [
        ("two-plus-two", "verified", 4), ("wrong-sum", "failed", 5),
        ("crashes", "not yet run", None), ("needs-gpu", "not yet run", None),
        ("mean-loss", "not yet run", None), ("bleu", "cited", None),
    ]  # fmt: skip
    assert [bool(r["when"]) for r in rows] == [True, True, False, False, False, False]
    sheet = paper_sheet(paper, runs_dir)
    assert claim_counts(sheet) == {"verified": 1, "failed": 1, "not yet run": 3, "cited": 1}
    md = render_sheet(sheet, "md")
    row = next(line for line in md.splitlines() if line.startswith("| The paper reports a BLEU"))
    assert "| cited | 28.4 | — | — | cited | — |" in row
    assert "Cited, not reproduced here:\n\n- *bleu*: Needs the full WMT training run." in md
    zh = render_sheet(paper_sheet(paper, runs_dir, "zh"), "md", "zh")
    assert "| 引用 | 28.4 | — | — | 引用 | — |" in zh and "仅引用、未在本地复现" in zh
    assert "| 已验证 |" in zh and "| 未通过 |" in zh and "| 尚未运行 |" in zh


def test_the_index_counts_each_verdict_and_shows_the_drills_progress(
    library_dir: Path, runs_dir: Path
) -> None:
    """The index's line per paper: one count per verdict (the toy has six claims: one
    verified, one failed, three not run, one cited), and the drill's due items and retention
    as a whole percentage, in either language."""
    from repro.study.sheets import render_index

    run = runs_dir / "toy" / "20260102T030405000000Z"
    run.mkdir(parents=True)
    base = {"paper": "toy", "statement": "s", "kind": "derived", "tolerance": "exact",
            "expected": 4, "when": "2026-01-02T03:04:05Z"}  # fmt: skip
    (run / "claims.json").write_text(json.dumps([
        {**base, "id": "two-plus-two", "verdict": "verified", "measured": 4},
        {**base, "id": "wrong-sum", "verdict": "failed", "measured": 5},
    ]))  # fmt: skip
    lib = Library(library_dir)
    study = {"toy": {"due": 3, "retention": 0.8749, "seen": 4}}
    html = render_index([paper_sheet(lib.get("toy"), runs_dir)], "html", "en", study=study)
    text = " ".join(visible_text(html).split())
    assert "1 cited · 1 failed · 3 not yet run · 1 verified" in text
    assert "3 due for review · retention 87%" in text
    zh = render_index([paper_sheet(lib.get("toy"), runs_dir, "zh")], "html", "zh", study=study)
    zh_text = " ".join(visible_text(zh).split())
    assert "1 引用 · 1 未通过 · 3 尚未运行 · 1 已验证" in zh_text
    assert "3 待复习 · 记忆保持率 87%" in zh_text
    md = render_index([paper_sheet(lib.get("toy"), runs_dir)], "md", "en")
    row = next(line for line in md.splitlines() if line.startswith("| [Toy"))
    assert row.endswith("| 1 cited, 1 failed, 3 not yet run, 1 verified |")
    quiet = render_index([paper_sheet(lib.get("toy"), runs_dir)], "html", "en")
    assert "due for review" not in quiet  # no study database: no progress line
    assert render_index([paper_sheet(lib.get("toy"), runs_dir)], "html") == quiet  # English


def test_the_index_names_the_papers_in_its_language(runs_dir: Path) -> None:
    from repro.study.sheets import render_index

    def names(html: str) -> list[str]:
        return re.findall(r'<a class="name" href="lora\.html">([^<]+)</a>', html)

    for lang, name in (("en", "LoRA"), ("zh", "LoRA 低秩适配")):
        sheet = paper_sheet(LIBRARY.get("lora"), runs_dir, lang, LIBRARY)  # no page extras yet
        assert names(render_index([sheet], "html", lang)) == [name]
    # and its comparison tables: two notes fill the norms table
    pair = [
        paper_sheet(LIBRARY.get(s), runs_dir, "zh", LIBRARY) for s in ("rmsnorm", "transformer")
    ]
    text = visible_text(render_index(pair, "html", "zh"))
    assert "归一化：LayerNorm / RMSNorm" in text and "Normalisation" not in text


def test_the_pack_adds_other_must_know_notes_once_after_the_five(
    library_dir: Path, toy_copy, runs_dir: Path
) -> None:
    """The five in the source's order (a note found by its alias takes that place), then every
    other must-know note once; a core note never."""
    toy_copy("toy2", {"aliases: [toy-alias]": "aliases: [llama]",
                      "priority: core": "priority: must-know"})  # fmt: skip
    toy_copy("toy3", {"aliases: [toy-alias]\n": "", "priority: core": "priority: must-know"})
    entries = must_know_entries(Library(library_dir), runs_dir, "en")
    assert [e.slug for e in entries] == [
        "transformer", "bert", "gpt3", "instructgpt", "toy2", "toy3",
    ]  # fmt: skip
    assert [e.sheet is not None for e in entries] == [False] * 4 + [True, True]
    md = render_must_know(entries, "md")
    for slug in ("transformer", "bert", "gpt3", "instructgpt"):
        assert f"Missing: no note at papers/{slug}/ yet." in md
    assert "papers/llama/" not in md and "papers/toy2/" not in md


def test_a_multi_line_statement_stays_one_table_row(library_dir: Path, runs_dir: Path) -> None:
    """A claim statement written over several lines (a YAML block) is one Markdown table row,
    its line breaks and runs of spaces collapsed, its `|` escaped once."""
    note = library_dir / "toy" / "note.yaml"
    block = "    statement: |\n      Two plus\n      two   is |four|,\n      \\| kept.\n"
    note.write_text(note.read_text().replace("    statement: Two plus two is four.\n", block, 1))
    md = render_sheet(paper_sheet(Library(library_dir).get("toy"), runs_dir), "md")
    (row,) = [line for line in md.splitlines() if line.startswith("| Two plus two")]
    assert row.startswith("| Two plus two is \\|four\\|, \\| kept. | Eq. 1 |")
    header = next(line for line in md.splitlines() if line.startswith("| claim"))
    unescaped = re.compile(r"(?<!\\)\|")
    assert len(unescaped.findall(row)) == len(unescaped.findall(header))


def test_a_note_over_the_math_budget_is_one_located_error_not_a_slow_sheet(
    library_dir: Path, runs_dir: Path
) -> None:
    from repro.lab.errors import NoteError
    from repro.study.mathcheck import within_math_budget

    note = library_dir / "toy" / "note.yaml"
    spans = " ".join(f"$a_{{{i}}}$" for i in range(1_050))
    text = note.read_text().replace("what: TODO the problem", f"what: '{spans}'")
    note.write_text(text)
    line = next(n for n, x in enumerate(text.splitlines(), 1) if x.lstrip().startswith("what:"))
    paper = Library(library_dir).get("toy")
    with pytest.raises(NoteError) as caught:
        paper_sheet(paper, runs_dir)
    assert re.search(rf"note\.yaml:{line}:\d+: problem\.what: more than 1,000 math spans",
                     str(caught.value)), str(caught.value)  # fmt: skip
    # the quick check counts formulas' LaTeX as math too
    formulas = [{"latex": "x" * 1_000} for _ in range(10)]
    assert within_math_budget({"formulas": formulas, "a": "$y$"}) is False
    assert within_math_budget({"formulas": formulas}) is True
    assert within_math_budget({"a": ["$x$ " * 1_000]}) is True
    assert within_math_budget({"a": ["$x$ " * 1_000, {"b": "$y$"}]}) is False


def test_inline_math_sits_in_its_own_scrolling_box_display_math_does_not() -> None:
    """On a page each inline formula is wrapped in `span.mi` (it scrolls by itself on a phone);
    a displayed one is a block already; an Anki card or a bare fragment gets no wrapper."""
    from repro.study.sheets import markdown_html, text_html

    html = str(text_html("a $x_1$ and $y$ then $$z = 1$$", block=True))
    assert html.count('<span class="mi"><math') == 2
    assert (
        html.count('display="block"') == 1 and '<span class="mi"><math display="block"' not in html
    )
    assert '<span class="mi">' not in str(markdown_html("a $x_1$"))
