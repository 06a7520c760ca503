"""Study sheets rendered from notes and their latest results: Markdown, HTML, terminal text.

- Markdown keeps `$…$` math (GitHub, Obsidian and Typora render it).
- HTML turns every math span and formula into MathML (latex2mathml): a page that works offline,
  with no JavaScript, in light and dark, on a phone and on A4 paper.
- The terminal flavour (for `show`) is the Markdown sheet with the math written as Unicode and
  escaped, so rich's Markdown never re-reads a formula.

Several papers become a site (a folder: index.html + one page each), one combined document with a
table of contents (a file), or the must-know pack. One Jinja environment, StrictUndefined,
HTML autoescaped. Nothing here imports torch.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache, lru_cache
from pathlib import Path
from typing import Literal

import jinja2
from markupsafe import Markup, escape

from repro.lab.claims import ClaimResult
from repro.lab.errors import NoteError, UnknownPaper
from repro.lab.format import format_value, with_unit
from repro.lab.library import REPO_ROOT, Library, Paper
from repro.study.mathtext import (
    MathError,
    render_markdown,
    split_math,
    to_mathml,
    to_unicode,
)
from repro.study.runview import RunInfo, latest_run
from repro.study.sheetlang import Lang, View, labels, localize
from repro.study.site import PageExtras, css_string, page_extras

TEMPLATES = REPO_ROOT / "templates"
Mode = Literal["md", "html", "term"]
Format = Literal["md", "html"]
SUFFIX = {"md": ".md", "html": ".html"}

# The source material's five papers to know by heart, in its order (papers/<slug>/).
MUST_KNOW = ("transformer", "bert", "gpt3", "instructgpt", "llama")


# --- text filters: one per output mode ------------------------------------------------------

_MD_SPECIAL = re.compile(r"([\\`*_\[\]{}<>#|~])")


def _md_escape(text: str) -> str:
    return _MD_SPECIAL.sub(r"\\\1", text)


def text_term(text: str) -> str:
    """Markdown for rich: math spans as escaped Unicode, so rich shows them as written."""
    out = []
    for seg in split_math(text):
        if seg.kind in ("inline", "display"):
            out.append(_md_escape(to_unicode(seg.body)))
        else:
            out.append(seg.raw)
    return "".join(out)


@cache
def _markdown():
    from markdown_it import MarkdownIt

    # No raw HTML, and no images: a note's `![x](https://…)` would make the offline page fetch
    # (and a remote server learn of) every reader; it stays text.
    return MarkdownIt("commonmark", {"html": False, "typographer": False}).disable("image")


def _mathml_or_code(latex: str, display: bool) -> str:
    try:
        return to_mathml(latex, display)
    except MathError:  # `validate` reports it; the sheet still shows the source, marked
        return f'<code class="bad-math">{escape(latex)}</code>'


def markdown_html(
    text: str, block: bool = False, math: Callable[[str, bool], str] | None = None
) -> Markup:
    """Note Markdown as HTML; each `$…$` becomes `math(latex, display)` (default: sanitised
    MathML), placed only in text (see mathtext.render_markdown: no note can forge the spot)."""
    html = render_markdown(_markdown(), text.strip(), block, math or _mathml_or_code)
    return Markup(html.strip())


def _page_math(latex: str, display: bool) -> str:
    """MathML for a page: inline math in a box that scrolls by itself when wider than a phone."""
    html = _mathml_or_code(latex, display)
    return html if display else f'<span class="mi">{html}</span>'


def text_html(text: str, block: bool = False) -> Markup:
    """Note Markdown as HTML with every `$…$` as MathML; `block` keeps paragraphs.
    (An item with an id, a contribution or a step, is its text.)"""
    return _text_html(str(text), block)


@lru_cache(maxsize=16384)
def _text_html(text: str, block: bool) -> Markup:
    """Memoised: a site renders the English sections twice (en and zh pages) and the same
    text often recurs; the result depends on nothing but the text."""
    return markdown_html(text, block, _page_math)


def cell_md(text: str) -> str:
    """One Markdown table cell: no line breaks, `|` escaped."""
    return re.sub(r"(?<!\\)\|", r"\\|", " ".join(str(text).split()))


@cache
def environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        undefined=jinja2.StrictUndefined,
        autoescape=jinja2.select_autoescape(["html", "html.j2"]),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        measured=format_value,
        with_unit=with_unit,
        cell=cell_md,
        html=text_html,
        html_block=lambda text: text_html(text, block=True),
        mathml=lambda latex: Markup(_mathml_or_code(latex.strip(), True)),
        unicode=lambda latex: _md_escape(to_unicode(latex.strip())),
    )
    env.filters["t"] = _text_for_mode
    env.globals["code_css"] = _code_css
    env.globals["css_name"] = css_string
    return env


def _code_css() -> Markup:
    from repro.study.excerpts import css

    return Markup(css())


@jinja2.pass_context
def _text_for_mode(context: jinja2.runtime.Context, text: str) -> str:
    """A note's text in the Markdown template: as written for `md`, Unicode math for `term`."""
    text = str(text).strip()
    return text_term(text) if context.get("mode") == "term" else text


# --- what a sheet shows of one paper --------------------------------------------------------


@dataclass(frozen=True)
class Related:
    slug: str
    title: str  # "" when the slug is not in the library
    href: str  # "" when there is nothing to link to


@dataclass
class PaperSheet:
    """Everything the templates need about one paper."""

    slug: str
    paper: Paper
    view: View
    claims: list[dict]
    run: RunInfo | None
    related: list[Related] = field(default_factory=list)
    extras: PageExtras | None = None  # code excerpts, plots by claim, navigation (site.py)

    @property
    def note(self):
        return self.paper.note


def claim_rows(paper: Paper, results: dict[str, ClaimResult]) -> list[dict]:
    """The note's claims joined with their latest stored results."""
    rows = []
    for c in paper.note.claims:
        r = results.get(c.id)
        if c.kind == "cited":
            verdict, measured, when = "cited", None, ""
        elif r is None:
            verdict, measured, when = "not yet run", None, ""
        else:
            verdict, measured, when = r.verdict.value, r.measured, r.when
        rows.append(
            {
                "claim": c,
                "verdict": verdict,
                "measured": measured,
                "when": when,
                "tolerance": c.tolerance_text,
            }
        )
    return rows


def _related(paper: Paper, library: Library | None, link: Callable[[Paper], str]) -> list[Related]:
    out = []
    for slug in paper.note.related:
        try:
            other = library.get(slug) if library is not None else None
            title = other.summary.title if other is not None else ""  # the note cache's
        except (UnknownPaper, NoteError):
            other, title = None, ""
        out.append(Related(slug, title, link(other) if other is not None else ""))
    return out


def paper_sheet(
    paper: Paper,
    runs_dir: Path,
    lang: Lang = "en",
    library: Library | None = None,
    link: Callable[[Paper], str] = lambda other: other.summary.url,
) -> PaperSheet:
    """One paper's sheet data: the note in `lang`, its latest results, run and plots.

    `link` gives the href of a related paper that is in `library` (a sibling page, an anchor
    in the same document, or by default its arXiv page)."""
    from repro.lab.runs import latest_results
    from repro.study.mathcheck import math_budget_problem, within_math_budget

    if not within_math_budget(paper.note.model_dump()):  # converting it all would take minutes
        over = math_budget_problem(paper.note_path, paper.display(paper.note_path))
        raise NoteError([over or f"{paper.display(paper.note_path)}:1:1: too much math"])
    return PaperSheet(
        slug=paper.slug,
        paper=paper,
        view=localize(paper.note, lang),
        claims=claim_rows(paper, latest_results(runs_dir, paper.slug)),
        run=latest_run(runs_dir, paper.slug),
        related=_related(paper, library, link),
    )


def claim_counts(sheet: PaperSheet) -> dict[str, int]:
    counts: dict[str, int] = {}
    for row in sheet.claims:
        counts[row["verdict"]] = counts.get(row["verdict"], 0) + 1
    return counts


# --- rendering ------------------------------------------------------------------------------


def _render(template: str, lang: Lang, **context) -> str:
    return environment().get_template(template).render(L=labels(lang), lang=lang, **context)


def with_extras(sheet: PaperSheet, lang: Lang) -> PaperSheet:
    """`sheet` with its page extras computed (once)."""
    if sheet.extras is None:
        sheet.extras = page_extras(sheet.paper, sheet.claims, sheet.run, lang)
    return sheet


def render_sheet(sheet: PaperSheet, mode: Mode = "md", lang: Lang = "en") -> str:
    """One paper as a complete document (`md`, `html` page, or `term` text for rich)."""
    if mode == "html":
        return _render("sheet.html.j2", lang, s=with_extras(sheet, lang))
    return _render("sheet.md.j2", lang, s=sheet, mode=mode, level=1)


def render_combined(sheets: list[PaperSheet], fmt: Format, lang: Lang = "en") -> str:
    """Several papers as one document with a table of contents."""
    sheets = [with_extras(s, lang) for s in sheets]
    return _render(f"combined.{fmt}.j2", lang, sheets=sheets, mode=fmt)


def render_index(
    sheets: list[PaperSheet], fmt: Format, lang: Lang = "en", links: dict | None = None,
    study: dict | None = None,
) -> str:  # fmt: skip
    """The index page of a site: the papers by topic (display names, priority, verdicts once
    runs exist), the reading path, the comparison tables, and `links` (must-know pack, the
    other language, the Anki deck: name -> href). `study` (slug -> due, retention) adds the
    drill's progress when a study database exists (`repro.study.drill.due_summary`)."""
    from repro.study import site

    sheets = [with_extras(s, lang) for s in sheets]
    rows = [(s, claim_counts(s)) for s in sheets]
    counts = {s.slug: c for s, c in rows}
    ran = {s.slug: s.run is not None for s in sheets}
    return _render(
        f"index.{fmt}.j2", lang, rows=rows, counts=counts, ran=ran,
        groups=site.grouped(sheets), topic_names=site.TOPIC_NAMES,
        path=site.reading_path(sheets), tables=site.comparisons(sheets, lang),
        links=links or {}, study=study or {},
    )  # fmt: skip


def render_cheatsheet(entries: list, lang: Lang = "en") -> str:
    """One to two A4 pages per paper: summary, contributions, the key formula with its code,
    the questions and the answer framework."""
    for e in entries:
        if e.sheet is not None:
            with_extras(e.sheet, lang)
    return _render("cheatsheet.html.j2", lang, entries=entries)


@dataclass(frozen=True)
class PackEntry:
    slug: str
    sheet: PaperSheet | None  # None: the paper is not in the library yet


def must_know_entries(library: Library, runs_dir: Path, lang: Lang) -> list[PackEntry]:
    """The five must-know papers in the source material's order, then any other must-know
    note; a paper without a note is listed as missing, never skipped."""
    entries, seen = [], set()
    for slug in MUST_KNOW:
        try:
            paper = library.get(slug)
        except UnknownPaper:
            entries.append(PackEntry(slug, None))
            continue
        seen.add(paper.slug)
        entries.append(PackEntry(paper.slug, paper_sheet(paper, runs_dir, lang, library)))
    for paper in library.papers.values():
        if paper.slug not in seen and paper.note.priority == "must-know":
            entries.append(PackEntry(paper.slug, paper_sheet(paper, runs_dir, lang, library)))
    return entries


def render_must_know(entries: list[PackEntry], fmt: Format, lang: Lang = "en") -> str:
    """The revision pack for the evening before an interview, as one document."""
    for e in entries:
        if e.sheet is not None:
            with_extras(e.sheet, lang)
    return _render(f"mustknow.{fmt}.j2", lang, entries=entries)
