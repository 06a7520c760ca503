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


def test_zh_labels_and_marked_fallback(runs_dir: Path) -> None:
    lora = render_sheet(paper_sheet(LIBRARY.get("lora"), runs_dir, "zh"), "md", "zh")
    for label in ("基本信息", "核心问题", "核心贡献", "方法", "实验", "优缺点", "启发", "相关论文",
                  "5分钟口述总结", "回答框架", "【背景】", "【准备追问】"):  # fmt: skip
        assert label in lora, label
    assert "## 核心贡献 *（暂无中文，以下为英文原文）*" in lora  # lora has no zh overlay
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


def test_must_know_pack_picks_up_a_new_note(library_dir: Path, runs_dir: Path) -> None:
    shutil.copytree(library_dir / "toy", library_dir / "instructgpt")
    note = library_dir / "instructgpt" / "note.yaml"
    note.write_text(note.read_text().replace("aliases: [toy-alias]\n", ""))
    entries = must_know_entries(Library(library_dir), runs_dir, "zh")
    by_slug = {e.slug: e for e in entries}
    assert by_slug["instructgpt"].sheet is not None and by_slug["llama"].sheet is None
    html = render_must_know(entries, "html", "zh")
    assert "5分钟口述总结" in html and "缺失：papers/llama/" in html
