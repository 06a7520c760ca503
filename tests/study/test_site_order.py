"""The site's orderings and links on hand-made notes where the orders disagree.

In the real library the oldest papers are also the must-know ones and the ones the others
build on, so the index test (tests/study/test_sheets.py) would pass an order by year alone.
Here priority, year and the `related` links pull in different directions, so each rule of
repro/study/site.py decides the outcome on its own.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import SimpleNamespace

from repro.study.site import (
    TABLES,
    Link,
    Nav,
    PageExtras,
    comparisons,
    css_string,
    display_name,
    grouped,
    link_neighbours,
    reading_path,
    site_order,
)


def sheet(slug, year, priority="core", topic="architecture", related=(), compare=(), **note):
    n = SimpleNamespace(
        year=year, priority=priority, topic=topic, related=list(related), compare=list(compare),
        title=note.get("title", slug.upper()), short_title=note.get("short_title"),
        zh=note.get("zh"),
    )  # fmt: skip
    s = SimpleNamespace(slug=slug, note=n)
    s.extras = PageExtras(display_name(n), [], [], {}, [], Nav())
    return s


def slugs(sheets) -> list[str]:
    return [s.slug for s in sheets]


def test_groups_in_topic_order_must_know_first_then_by_year() -> None:
    sheets = [
        sheet("old-core", 2017, "core"),
        sheet("new-must", 2023, "must-know"),
        sheet("old-further", 2015, "further"),
        sheet("mid-core", 2020, "core"),
        sheet("eff", 2019, "core", topic="efficiency"),
        sheet("misc", 2010, "must-know", topic=None),
        sheet("align", 2022, "further", topic="alignment"),
        sheet("train", 2021, "core", topic="training"),
    ]
    groups = grouped(sheets)
    assert [t for t, _ in groups] == [
        "architecture",
        "training",
        "alignment",
        "efficiency",
        "other",
    ]
    assert slugs(groups[0][1]) == ["new-must", "old-core", "mid-core", "old-further"]
    assert slugs(site_order(sheets)) == [
        "new-must", "old-core", "mid-core", "old-further", "train", "align", "eff", "misc"
    ]  # fmt: skip


def test_reading_path_puts_what_a_paper_builds_on_first_whatever_its_priority() -> None:
    """A must-know paper waits for the older `further` paper it builds on; a `related` link to
    a newer paper is not a dependency; among the papers ready, must-know first, then oldest."""
    sheets = [
        sheet("base", 2015, "further"),
        sheet("star", 2023, "must-know", related=["base", "later"]),  # `later` is newer: no wait
        sheet("later", 2024, "core", related=["star"]),
        sheet("side", 2016, "core"),
        sheet("early-star", 2018, "must-know"),
        sheet("two", 2022, "core", related=["side", "base", "unknown"]),
    ]
    path = reading_path(sheets)
    order = slugs(step.sheet for step in path)
    assert sorted(order) == sorted(slugs(sheets))  # every paper once
    assert order == ["early-star", "side", "base", "star", "two", "later"]
    after = {step.sheet.slug: slugs(step.after) for step in path}
    assert after == {
        "early-star": [], "side": [], "base": [], "star": ["base"],
        "two": ["base", "side"], "later": ["star"],
    }  # fmt: skip


def _row(table: str, row: str, claim=None, **cells):
    return SimpleNamespace(table=table, row=row, claim=claim, cells=cells)


def test_comparison_tables_need_two_notes_and_keep_column_order() -> None:
    heads = TABLES["attention-heads"]
    sheets = [
        sheet("gqa", 2023, compare=[_row("attention-heads", "GQA", "c1", quality="q",
                                         **{"kv-heads": "G"})]),
        sheet("mqa", 2019, compare=[_row("attention-heads", "MQA", **{"kv-cache": "1/H"})]),
        sheet("rope", 2021, compare=[_row("positions", "RoPE", where="q, k")]),
        sheet("odd", 2020, compare=[_row("no-such-table", "x")]),
    ]  # fmt: skip
    (table,) = comparisons(sheets, "zh")  # `positions` has one note only
    assert table.key == "attention-heads" and table.title == heads.title["zh"]
    assert table.headers == [h["zh"] for _, h in heads.columns]
    assert [(r.name, r.sheet.slug, r.claim) for r in table.rows] == [
        ("MQA", "mqa", None), ("GQA", "gqa", "c1")
    ]  # oldest first  # fmt: skip
    keys = [k for k, _ in heads.columns]
    assert table.rows[0].cells == ["" if k != "kv-cache" else "1/H" for k in keys]
    assert table.rows[1].cells == [{"kv-heads": "G", "quality": "q"}.get(k, "") for k in keys]


def test_neighbour_links_follow_the_site_order_and_name_the_other_language() -> None:
    sheets = [
        sheet("c", 2019, "core", short_title="C-name"),
        sheet("a", 2017, "must-know"),
        sheet("b", 2018, "core", topic="training"),
    ]
    ordered = link_neighbours(sheets, ".html", Link("English", ".."))
    assert slugs(ordered) == ["a", "c", "b"]
    navs = {s.slug: s.extras.nav for s in ordered}
    assert navs["a"].prev is None and navs["a"].next == Link("C-name", "c.html")
    assert navs["c"].prev == Link("A", "a.html") and navs["c"].next == Link("B", "b.html")
    assert navs["b"].next is None and navs["b"].prev == Link("C-name", "c.html")
    assert all(n.index == "index.html" for n in navs.values())
    assert navs["b"].other_lang == Link("English", "../b.html")
    plain = [sheet("x", 2020)]
    assert link_neighbours(plain, ".md")[0].extras.nav.other_lang is None


def test_display_names_prefer_the_short_title_in_each_language() -> None:
    zh = SimpleNamespace(short_title="旋转位置编码")
    assert display_name(sheet("r", 2021, short_title="RoPE", zh=zh).note, "zh") == "旋转位置编码"
    assert display_name(sheet("r", 2021, short_title="RoPE", zh=zh).note, "en") == "RoPE"
    assert display_name(sheet("r", 2021, title="Long Title").note, "zh") == "Long Title"
    no_zh_name = SimpleNamespace(short_title=None)  # an overlay without a display name
    assert display_name(sheet("r", 2021, short_title="RoPE", zh=no_zh_name).note, "zh") == "RoPE"
    assert display_name(sheet("r", 2021, title="T", zh=no_zh_name).note, "zh") == "T"


def _css_unescape(quoted: str) -> str:
    """A CSS string's value: hex escapes `\\hh ` decoded (the only escapes css_string writes)."""
    assert quoted[0] == quoted[-1] == '"'
    return re.sub(r"\\([0-9a-f]{1,6}) ", lambda m: chr(int(m.group(1), 16)), quoted[1:-1])


def test_css_string_cannot_close_the_string_or_the_style_element() -> None:
    for text in ('a"b', "x</style><script>", "back\\slash", "line\nbreak", "注意力 · RoPE", "';}"):
        out = css_string(text)
        inner = out[1:-1]
        assert not set(inner) & set("\"'<>\n;{}"), out
        assert re.fullmatch(r'"([^\\]|\\[0-9a-f]{1,6} )*"', out), out  # only hex escapes
        assert _css_unescape(out) == text
    assert css_string("LoRA (2021)") == '"LoRA (2021)"'  # plain names pass unchanged


def test_reading_path_of_the_library_respects_every_older_related_paper() -> None:
    """On the library's own notes: each paper comes after every related paper of an earlier
    year that is in the library, lists exactly those as what it builds on, and the path opens
    with a must-know paper."""
    from repro.lab.library import Library

    papers = Library().papers
    sheets = [SimpleNamespace(slug=slug, note=p.note) for slug, p in papers.items()]
    path = reading_path(sheets)
    position = {step.sheet.slug: i for i, step in enumerate(path)}
    assert sorted(position) == sorted(papers)
    checked = 0
    for step in path:
        note = step.sheet.note
        older = {r for r in note.related if r in papers and papers[r].note.year < note.year}
        assert {s.slug for s in step.after} == older, step.sheet.slug
        for r in older:
            assert position[r] < position[step.sheet.slug], (r, step.sheet.slug)
            checked += 1
    assert checked >= 5  # the library has enough links for this to say something
    assert path[0].sheet.note.priority == "must-know" and not path[0].after


# --- what a page shows beside the note: code with the claims that run it, plots by claim -----


def _claim(id, code=()):
    return SimpleNamespace(id=id, code=list(code))


def test_claims_for_a_formula_are_its_own_then_those_naming_its_code_once_each() -> None:
    from repro.study.excerpts import claims_for

    note = SimpleNamespace(claims=[
        _claim("c1", ["a.py::f#core"]),  # a marker inside f: the same target
        _claim("c2", ["a.py::f"]),  # already listed by the formula
        _claim("c3", ["a.py::g"]),
        _claim("c4", ["b.py::f", "a.py::f"]),
        _claim("c5", ["a.py#L1-L3"]),  # the file, not the symbol
        _claim("c6", ["a.py::f.inner"]),
    ])  # fmt: skip
    formula = SimpleNamespace(code="a.py::f", claims=["c2", "c9"])
    assert claims_for(formula, note) == ["c2", "c9", "c1", "c4"]
    assert claims_for(SimpleNamespace(code=None, claims=["c3"]), note) == ["c3"]


def test_page_extras_link_steps_to_claims_and_place_plots_by_claim() -> None:
    from repro.study.runview import Plot, RunInfo
    from repro.study.site import ClaimRef, page_extras

    code = "repro/nn/lora.py::merge_lora"
    note = SimpleNamespace(
        title="T", short_title=None, zh=None, formulas=[],
        method=SimpleNamespace(steps=[SimpleNamespace(code=code), SimpleNamespace(code=None),
                                      SimpleNamespace(code="repro/nn/lora.py::nope")]),
        claims=[_claim("merge", [code]), _claim("other", ["repro/nn/lora.py::LoRALinear"]),
                _claim("marker", [code + "#L1-L2"])],
        plots=[SimpleNamespace(file="a.svg", claim="merge", caption="Look at $x$."),
               SimpleNamespace(file="b.svg", claim="gone", caption="A removed claim."),
               SimpleNamespace(file="c.svg", claim=None, caption="No claim.")],
    )  # fmt: skip
    verdicts = ["verified", "failed", "not yet run"]
    rows = [{"claim": c, "verdict": v} for c, v in zip(note.claims, verdicts, strict=True)]
    plots = [Plot(n, f"<svg>{n}</svg>") for n in ("a.svg", "b.svg", "c.svg", "loss_vs-rank.svg")]
    run = RunInfo("20260101T000000Z", "", "", plots, "20260101T000000Z")
    extras = page_extras(SimpleNamespace(note=note), rows, run, "en")
    first, none, broken = extras.step_code
    assert none is None and first.path == "repro/nn/lora.py" and not first.error
    # the claims naming the step's symbol (with or without a range); `other` names another one
    assert first.claims == [ClaimRef("merge", "verified"), ClaimRef("marker", "not yet run")]
    assert broken.error and broken.claims == []
    assert list(extras.claim_plots) == ["merge"]
    (placed,) = extras.claim_plots["merge"]
    assert (placed.file, placed.caption, placed.claim) == (
        "a.svg", "Look at $x$.", ClaimRef("merge", "verified"),
    )  # fmt: skip
    assert [(p.file, p.caption) for p in extras.other_plots] == [
        ("b.svg", "A removed claim."), ("c.svg", "No claim."), ("loss_vs-rank.svg", "loss vs rank"),
    ]  # fmt: skip
    assert extras.other_plots[0].claim == ClaimRef("gone", "not yet run")
    assert extras.name == "T" and extras.nav.prev is None


def test_compare_rows_naming_an_unknown_table_or_column_are_reported() -> None:
    from repro.study.site import table_problems

    note = SimpleNamespace(compare=[
        _row("attention-heads", "MHA", **{"kv-heads": "H", "kv-cache": "2 H d"}),
        _row("bogus", "X"),
        _row("norms", "RMSNorm", formula="x / rms", speed="fast", colour="red"),
    ])  # fmt: skip
    assert table_problems(note) == [
        "compare[1].table: unknown table 'bogus' (one of attention-heads, positions, norms, "
        "scaling)",
        "compare[2].cells.speed: not a column of norms (formula, params, placement, statistics)",
        "compare[2].cells.colour: not a column of norms (formula, params, placement, statistics)",
    ]
    assert table_problems(SimpleNamespace(compare=[])) == []


def test_page_problems_locate_missing_ids_and_bad_compare_rows(tmp_path: Path) -> None:
    import shutil

    import yaml

    from repro.lab.library import Library
    from repro.study.site import page_problems

    toy = Path(__file__).resolve().parents[1] / "fixtures" / "library" / "toy"
    folder = tmp_path / "papers" / "toy"
    shutil.copytree(toy, folder)
    note = yaml.safe_load((folder / "note.yaml").read_text(encoding="utf-8"))
    del note["interview"]["questions"][1]["id"]
    del note["formulas"][0]["id"]
    note["compare"] = [{"table": "bogus", "row": "X", "cells": {}}]
    text = yaml.safe_dump(note, allow_unicode=True, sort_keys=False)
    (folder / "note.yaml").write_text(text, encoding="utf-8")
    lines = text.splitlines()

    def where(needle: str, start: int = 0) -> str:
        n = next(i for i in range(start, len(lines)) if needle in lines[i])
        return f"{n + 1}:{lines[n].index(needle) + 1}"

    formula = where("name: TODO name", lines.index("formulas:"))
    question = where("question: TODO another question")
    compare = f"{lines.index('compare:') + 1}:1"  # the rows are located at their list
    problems = page_problems(Library(tmp_path / "papers").get("toy"), "n.yaml")
    fix = "no id (python scripts/add_note_ids.py adds one)"
    assert problems == [
        f"n.yaml:{question}: interview.questions[1]: {fix}",
        f"n.yaml:{formula}: formulas[0]: {fix}",
        f"n.yaml:{compare}: compare[0].table: unknown table 'bogus' (one of attention-heads, "
        "positions, norms, scaling)",
    ]
