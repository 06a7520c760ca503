"""The site around the pages: display names, topic groups, the reading path, comparison tables.

Everything comes from the notes:
- a paper's **display name** is its `short_title` (`zh.short_title` in Chinese), else its title;
- its **topic** (`topic:`) puts it in one of four groups; inside a group the must-know papers
  come first, then by year;
- the **reading path** orders the papers so that each comes after the related papers it builds
  on (a `related` paper from an earlier year), must-know first among those ready;
- the **comparison tables** collect the notes' `compare:` rows: a row names its table (one of
  `TABLES`), its cells by column, and optionally the claim that checks it; each cell links to
  the note it comes from.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

from repro.study.sheetlang import Lang

TOPICS = ("architecture", "training", "alignment", "efficiency")
TOPIC_NAMES: dict[str, dict[Lang, str]] = {
    "architecture": {"en": "Architecture", "zh": "模型架构"},
    "training": {"en": "Training & scaling", "zh": "预训练与缩放定律"},
    "alignment": {"en": "Alignment", "zh": "对齐"},
    "efficiency": {"en": "Efficiency", "zh": "训练与推理效率"},
    "other": {"en": "Other", "zh": "其他"},
}
PRIORITY_RANK = {"must-know": 0, "core": 1, "further": 2}


@dataclass(frozen=True)
class Table:
    title: dict[Lang, str]
    columns: tuple[tuple[str, dict[Lang, str]], ...]  # (key, header)


TABLES: dict[str, Table] = {
    "attention-heads": Table(
        {"en": "Attention heads: MHA / MQA / GQA / MLA", "zh": "注意力头：MHA / MQA / GQA / MLA"},
        (
            ("kv-heads", {"en": "key/value heads", "zh": "K/V 头数"}),
            ("kv-cache", {"en": "KV cache", "zh": "键值缓存"}),
            ("quality", {"en": "quality and speed", "zh": "效果与速度"}),
        ),
    ),
    "positions": Table(
        {"en": "Positions: sinusoidal / learned / RoPE", "zh": "位置编码：正弦 / 可学习 / RoPE"},
        (
            ("where", {"en": "where it enters", "zh": "加在哪里"}),
            ("params", {"en": "parameters", "zh": "参数"}),
            ("relative", {"en": "relative position", "zh": "相对位置"}),
            ("length", {"en": "longer sequences", "zh": "长度外推"}),
        ),
    ),
    "norms": Table(
        {"en": "Normalisation: LayerNorm / RMSNorm", "zh": "归一化：LayerNorm / RMSNorm"},
        (
            ("formula", {"en": "formula", "zh": "公式"}),
            ("params", {"en": "parameters", "zh": "参数"}),
            ("statistics", {"en": "statistics", "zh": "统计量"}),
            ("placement", {"en": "where and how fast", "zh": "位置与速度"}),
        ),
    ),
    "scaling": Table(
        {
            "en": "Compute-optimal scaling: Kaplan / Chinchilla",
            "zh": "算力最优：Kaplan / Chinchilla",
        },
        (
            ("n-exp", {"en": "model size", "zh": "参数量"}),
            ("d-exp", {"en": "training tokens", "zh": "训练 token 数"}),
            ("advice", {"en": "what it says to do", "zh": "结论"}),
            ("protocol", {"en": "how it was measured", "zh": "实验设置"}),
        ),
    ),
}


def display_name(note, lang: Lang = "en") -> str:
    """The short name a reader knows the paper by."""
    if lang == "zh" and note.zh is not None and note.zh.short_title:
        return note.zh.short_title
    return note.short_title or note.title


def topic_of(note) -> str:
    return note.topic or "other"


def _order_key(note, slug: str) -> tuple:
    return (PRIORITY_RANK[note.priority], note.year, slug)


def grouped(sheets: list) -> list[tuple[str, list]]:
    """(topic, sheets) in the index's order: the four topics, must-know first, then by year."""
    groups: dict[str, list] = {}
    for s in sheets:
        groups.setdefault(topic_of(s.note), []).append(s)
    order = [t for t in TOPICS if t in groups] + (["other"] if "other" in groups else [])
    return [(t, sorted(groups[t], key=lambda s: _order_key(s.note, s.slug))) for t in order]


def site_order(sheets: list) -> list:
    """The pages in the order of the index (previous/next follow it)."""
    return [s for _, group in grouped(sheets) for s in group]


@dataclass(frozen=True)
class Step:
    sheet: object  # PaperSheet
    after: list  # the sheets it builds on that come earlier on the path


def reading_path(sheets: list) -> list[Step]:
    """Every paper after the related papers from earlier years it builds on; among the papers
    ready to read, must-know first, then the oldest (Kahn's algorithm, so never a cycle)."""
    by_slug = {s.slug: s for s in sheets}
    needs = {
        s.slug: {r for r in s.note.related if r in by_slug and by_slug[r].note.year < s.note.year}
        for s in sheets
    }
    waiting = {slug: set(n) for slug, n in needs.items()}
    ready = [(_order_key(s.note, s.slug), s.slug) for s in sheets if not waiting[s.slug]]
    heapq.heapify(ready)
    path: list[Step] = []
    done: set[str] = set()
    while ready:
        _, slug = heapq.heappop(ready)
        done.add(slug)
        s = by_slug[slug]
        path.append(
            Step(s, [by_slug[r] for r in sorted(needs[slug], key=lambda r: by_slug[r].note.year)])
        )
        for other, w in waiting.items():
            if slug in w:
                w.discard(slug)
                if not w and other not in done:
                    o = by_slug[other]
                    heapq.heappush(ready, (_order_key(o.note, o.slug), other))
    return path


@dataclass(frozen=True)
class Row:
    name: str
    sheet: object  # PaperSheet the row comes from
    claim: str | None
    cells: list[str]  # Markdown, in the table's column order ("" when the note gives none)


@dataclass(frozen=True)
class Comparison:
    key: str
    title: str
    headers: list[str]
    rows: list[Row]


def comparisons(sheets: list, lang: Lang = "en") -> list[Comparison]:
    """The comparison tables that at least two notes contribute rows to, rows oldest first."""
    found: dict[str, list[Row]] = {}
    for s in sorted(sheets, key=lambda s: (s.note.year, s.slug)):
        for r in s.note.compare:
            table = TABLES.get(r.table)
            if table is None:
                continue
            cells = [r.cells.get(key, "") for key, _ in table.columns]
            found.setdefault(r.table, []).append(Row(r.row, s, r.claim, cells))
    out = []
    for key, table in TABLES.items():
        rows = found.get(key, [])
        if len({row.sheet.slug for row in rows}) >= 2:
            headers = [h[lang] for _, h in table.columns]
            out.append(Comparison(key, table.title[lang], headers, rows))
    return out


def table_problems(note) -> list[str]:
    """`compare:` rows naming an unknown table or column (reported by validate)."""
    out = []
    for i, r in enumerate(note.compare):
        table = TABLES.get(r.table)
        if table is None:
            out.append(
                f"compare[{i}].table: unknown table {r.table!r} (one of {', '.join(TABLES)})"
            )
            continue
        keys = {k for k, _ in table.columns}
        for col in r.cells:
            if col not in keys:
                out.append(
                    f"compare[{i}].cells.{col}: not a column of {r.table} "
                    f"({', '.join(sorted(keys))})"
                )
    return out


# --- what a page shows beyond the note: code beside formulas, plots beside claims, neighbours --


@dataclass(frozen=True)
class ClaimRef:
    id: str
    verdict: str


@dataclass(frozen=True)
class CodeView:
    ref: str  # as written in the note
    path: str
    first: int
    last: int
    html: object  # Markup: Pygments' highlighted lines
    claims: list[ClaimRef]
    error: str = ""  # the reference does not resolve (validate reports it); no code shown


@dataclass(frozen=True)
class PlotView:
    svg: str
    caption: str  # Markdown: what to look for (from the note), else the file name
    file: str
    claim: ClaimRef | None


@dataclass(frozen=True)
class Link:
    name: str
    href: str


@dataclass
class Nav:
    index: str = ""  # href of the index ("" outside a site)
    prev: Link | None = None
    next: Link | None = None
    other_lang: Link | None = None


@dataclass
class PageExtras:
    name: str
    formula_code: list  # CodeView | None per formula
    step_code: list  # CodeView | None per method step
    claim_plots: dict  # claim id -> [PlotView]
    other_plots: list  # PlotView without a claim
    nav: Nav


def _code_view(ref: str | None, claim_ids: list[str], verdicts: dict[str, str]) -> CodeView | None:
    from repro.lab.library import REPO_ROOT
    from repro.study.excerpts import CodeRefError, highlight, resolve

    if not ref:
        return None
    claims = [ClaimRef(c, verdicts.get(c, "not yet run")) for c in claim_ids]
    try:
        ex = resolve(REPO_ROOT, ref)
    except CodeRefError as exc:
        return CodeView(ref, ref, 0, 0, "", claims, str(exc))
    return CodeView(ref, ex.path, ex.first, ex.last, highlight(ex), claims)


def css_string(text: str) -> str:
    """`text` as a quoted CSS string that cannot end the string or the <style> element: only
    letters, digits, spaces, a little punctuation and non-ASCII characters pass; anything else
    is a hex escape."""
    safe = " -_.,()·—"

    def one(c: str) -> str:
        ok = c.isalnum() or c in safe or (ord(c) > 127 and c.isprintable())
        return c if ok else f"\\{ord(c):x} "

    return '"' + "".join(one(c) for c in text) + '"'


def _humanise(file: str) -> str:
    return file.removesuffix(".svg").replace("_", " ").replace("-", " ")


def page_extras(paper, rows: list[dict], run, lang: Lang) -> PageExtras:
    """The page's code excerpts (with the verdicts of the claims that run them), its plots
    placed by claim, and an empty navigation (a site fills it in: `link_neighbours`)."""
    from repro.study.excerpts import claims_for, parse_ref

    note = paper.note
    verdicts = {row["claim"].id: row["verdict"] for row in rows}
    formula_code = [_code_view(f.code, claims_for(f, note), verdicts) for f in note.formulas]
    step_code = []
    for step in note.method.steps:
        ids = []
        if step.code:
            target = parse_ref(step.code).target
            ids = [c.id for c in note.claims if any(parse_ref(x).target == target for x in c.code)]
        step_code.append(_code_view(step.code, ids, verdicts))
    described = {p.file: p for p in note.plots}
    claim_plots: dict[str, list[PlotView]] = {}
    other: list[PlotView] = []
    for plot in run.plots if run is not None else []:
        about = described.get(plot.name)
        claim = about.claim if about is not None else None
        view = PlotView(
            plot.svg,
            about.caption if about is not None else _humanise(plot.name),
            plot.name,
            ClaimRef(claim, verdicts.get(claim, "not yet run")) if claim else None,
        )
        if claim and claim in verdicts:
            claim_plots.setdefault(claim, []).append(view)
        else:
            other.append(view)
    return PageExtras(display_name(note, lang), formula_code, step_code, claim_plots, other, Nav())


def link_neighbours(sheets: list, ext: str, other_lang: Link | None = None) -> list:
    """Fill in each page's navigation in the site's order; returns the sheets in that order.
    `other_lang`: the other language's name and its site's folder relative to this one."""
    ordered = site_order(sheets)
    for i, s in enumerate(ordered):
        nav = s.extras.nav
        nav.index = f"index{ext}"
        if i > 0:
            nav.prev = Link(ordered[i - 1].extras.name, f"{ordered[i - 1].slug}{ext}")
        if i + 1 < len(ordered):
            nav.next = Link(ordered[i + 1].extras.name, f"{ordered[i + 1].slug}{ext}")
        if other_lang is not None:
            nav.other_lang = Link(other_lang.name, f"{other_lang.href}/{s.slug}{ext}")
    return ordered


# --- the whole site: both languages, the must-know pack, the cheat sheets, the deck ---------


def write_site(library, runs_dir, papers: list, lang: Lang, folder, write, complete: bool) -> None:
    """Write a site into `folder` through `write(path, content)`: a page per paper and the
    index. A `complete` site (every paper) also gets the must-know pack, its print cheat sheet
    and the Anki deck, and the other language's site in a subfolder (`zh/`, or `en/` when the
    site is Chinese), every page linked to its counterpart."""
    other: Lang = "zh" if lang == "en" else "en"
    _one_site(library, runs_dir, papers, lang, folder, write, complete, other)
    if complete:
        (folder / other).mkdir(exist_ok=True)
        _one_site(library, runs_dir, papers, other, folder / other, write, complete, "..")


def _one_site(library, runs_dir, papers, lang, folder, write, complete, other_href) -> None:
    from repro.study.sheetlang import labels
    from repro.study.sheets import (
        must_know_entries,
        paper_sheet,
        render_cheatsheet,
        render_index,
        render_must_know,
        render_sheet,
    )

    L = labels(lang)
    inside = {p.slug for p in papers}

    def sibling(paper) -> str:
        return f"{paper.slug}.html" if paper.slug in inside else paper.note.url

    sheets = [paper_sheet(p, runs_dir, lang, library, sibling) for p in papers]
    for s in sheets:
        s.extras = page_extras(s.paper, s.claims, s.run, lang)
    link_neighbours(sheets, ".html", Link(L["other_lang"], other_href) if complete else None)
    for s in sheets:
        write(folder / f"{s.slug}.html", render_sheet(s, "html", lang))
    links: dict[str, str] = {}
    if complete:
        from repro.study.anki import write_apkg

        entries = must_know_entries(library, runs_dir, lang)
        write(folder / "must-know.html", render_must_know(entries, "html", lang))
        write(folder / "cheatsheet.html", render_cheatsheet(entries, lang))
        deck = f"paperlab-{lang}.apkg"
        write(folder / deck, lambda tmp: write_apkg(papers, tmp, lang))
        links = {
            L["must_know_pack"]: "must-know.html",
            L["cheatsheet"]: "cheatsheet.html",
            L["anki_deck"]: deck,
            L["zh_site"]: f"{other_href}/index.html",
        }
    from repro.study.drill import due_summary

    study = due_summary(None, [s.slug for s in sheets])  # the drill's progress, if any
    write(folder / "index.html", render_index(sheets, "html", lang, links, study))


def page_problems(paper, shown: str) -> list[str]:
    """What `validate` reports for the study side, located: questions, contributions and
    formulas without an id, `code:` references that do not resolve, comparison rows that name
    an unknown table or column."""
    from repro.lab.library import REPO_ROOT
    from repro.lab.strict_yaml import YamlProblem, load_document
    from repro.study.excerpts import code_problems

    note = paper.note
    try:
        positions = load_document(paper.note_path.read_text(encoding="utf-8")).positions
    except (OSError, UnicodeDecodeError, YamlProblem):
        positions = {}

    def at(path: tuple) -> str:
        for n in range(len(path), -1, -1):
            if path[:n] in positions:
                line, col = positions[path[:n]]
                return f"{shown}:{line}:{col}"
        return f"{shown}:1:1"

    out = []
    for field in note.missing_ids():
        path = tuple(
            int(p) if p.isdigit() else p
            for p in field.replace("]", "").replace("[", ".").split(".")
        )
        out.append(f"{at(path)}: {field}: no id (python scripts/add_note_ids.py adds one)")
    out += code_problems(note, shown, REPO_ROOT, positions)
    out += [f"{at(('compare',))}: {p}" for p in table_problems(note)]
    return out
