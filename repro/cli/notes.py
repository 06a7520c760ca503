"""Reading notes: `list`, `show`, `new`, `validate`, `schema` (none of them imports torch)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import click

from repro.cli.common import (
    VERDICT_STYLE,
    State,
    complete_slugs,
    console,
    emit_json,
    pass_state,
    status_summary,
    terminal_sheet,
    terminal_text,
    write_output,
)
from repro.lab.errors import NoteError, one_line
from repro.lab.format import plural


@click.command("list")
@click.option("--tag", help="Only papers with this tag.")
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@pass_state
def list_cmd(state: State, tag: str | None, as_json: bool) -> None:
    """Papers in the library with the status of their claims."""
    rows = []
    runs_dir = state.runs_dir
    for slug, paper in state.library.papers.items():
        try:
            note = paper.summary  # the note cache's: no YAML, no pydantic when it is warm
        except NoteError as exc:  # keep listing; show the first problem
            more = len(exc.problems) - 1
            first = exc.problems[0] + (f" (+{plural(more, 'more problem')})" if more else "")
            rows.append({"slug": slug, "error": first})
            continue
        if tag and tag not in note.tags:
            continue
        rows.append(
            {
                "slug": slug,
                "title": note.title,
                "year": note.year,
                "priority": note.priority,
                "tags": note.tags,
                "claims": status_summary(paper, runs_dir),
            }
        )
    if as_json:
        emit_json(rows)
        return
    from repro.cli.show_cache import print_listing

    # A repeated `list` of unchanged rows prints the stored table (repro.cli.show_cache).
    print_listing(console, rows, state.library, runs_dir, lambda: listing_table(rows))


def listing_table(rows: list[dict]):
    """The rich table of `list` (`rows` as `list --json` prints them)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"paperlab — {plural(len(rows), 'paper')}", title_justify="left")
    for col in ("paper", "title", "year", "priority", "claims"):
        table.add_column(col, overflow="fold", no_wrap=col == "paper")
    for r in rows:
        if "error" in r:
            slug, error = Text(terminal_text(r["slug"])), Text(one_line(r["error"]), style="red")
            table.add_row(slug, error, "", "", "")
            continue
        claims = ", ".join(
            f"[{VERDICT_STYLE.get(k, '')}]{n} {k}[/]" for k, n in sorted(r["claims"].items())
        )
        slug, title = Text(terminal_text(r["slug"])), Text(terminal_text(r["title"]))
        table.add_row(slug, title, str(r["year"]), r["priority"], claims or "—")
    return table


@click.command()
@click.argument("slug", shell_complete=complete_slugs)
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The note as JSON (every field, as written).")
@pass_state
def show(state: State, slug: str, lang: str, as_json: bool) -> None:
    """A paper's note, rendered in the terminal (formulas as Unicode text)."""
    if as_json:
        paper = state.library.get(slug)
        emit_json(paper.note.model_dump(mode="json"))  # valid against note.schema.json
        return
    from repro.cli.show_cache import print_sheet

    paper = state.library.get(slug)

    def render():
        from rich.markdown import Markdown

        from repro.study.sheets import paper_sheet, render_sheet

        sheet = paper_sheet(paper, state.runs_dir, lang, state.library)
        # The "term" flavour writes every formula as escaped Unicode: rich's Markdown shows it.
        text = terminal_sheet(render_sheet(sheet, "term", lang), f"paperlab sheet {paper.slug}")
        return Markdown(text), [[r.slug, r.title, r.href] for r in sheet.related]

    # A repeated `show` of an unchanged paper prints the stored text (repro.cli.show_cache).
    print_sheet(console, paper, state.library, state.runs_dir, lang, render)


@click.command()
@click.argument("slug")
@click.option("--title", help="The paper's title (filled from arXiv when --arxiv is given).")
@click.option("--arxiv", help="arXiv id, e.g. 2106.09685: fills title, authors, year.")
@click.option("--year", type=int, help="Year of publication (else from arXiv, else left to do).")
@click.option(
    "--template", type=click.Choice(["derived", "experiment", "align"]), default="derived",
    show_default=True,
    help="The example claim to start from: a count, a measured experiment with its control, "
    "or an alignment experiment.",
)  # fmt: skip
@click.option("--offline", is_flag=True, help="Do not ask arXiv for the metadata.")
@pass_state
def new(state: State, slug, title, arxiv, year, template, offline) -> None:
    """Scaffold papers/SLUG/ (note.yaml + repro.py) from the templates; never overwrites."""
    from repro.lab.errors import ScaffoldError
    from repro.lab.scaffold import check_inputs, scaffold_paper

    authors: tuple[str, ...] = ()
    abstract = ""
    if arxiv and not offline:
        from repro.lab.arxiv import arxiv_metadata

        check_inputs(slug, title or "-", arxiv, year)  # a typo fails before any request
        meta, why = arxiv_metadata(arxiv)
        if meta is None:
            click.echo(f"note: {why}; the scaffold has the arXiv URL alone", err=True)
        else:
            title = title or meta.title
            year = year or meta.year
            authors, abstract = tuple(meta.authors), meta.first_sentence
            click.echo(f"arXiv {arxiv}: {meta.title} ({meta.year}, "
                       f"{plural(len(meta.authors), 'author')})", err=True)  # fmt: skip
    if not title:
        raise ScaffoldError("give the paper's --title (or --arxiv ID to fill it from arXiv)")
    folder = scaffold_paper(
        state.library.root, slug, title, arxiv or "0000.00000", year, template=template,
        authors=authors, abstract=abstract,
    )  # fmt: skip
    click.echo(f"created {folder}/note.yaml and {folder}/repro.py ({template} template)")
    click.echo(f"next: fill in the TODOs; `paperlab validate --strict {slug}` lists what is left")


@click.command()
@click.argument("slugs", nargs=-1, shell_complete=complete_slugs)
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@click.option(
    "--strict", is_flag=True,
    help="Also list what keeps a valid note from being complete (TODOs, no claims, measured "
    "claims without a control …); exit 1 when anything is listed.",
)  # fmt: skip
@pass_state
def validate(state: State, slugs: tuple[str, ...], as_json: bool, strict: bool) -> None:
    """Lint notes, their formulas and their claim wiring (no torch); exit 2 on any problem."""
    from repro.lab.completeness import completeness_problems
    from repro.study.baremath import bare_math_warnings
    from repro.study.mathcheck import note_math_problems, related_problems
    from repro.study.site import page_problems

    report: dict[str, list[str]] = {}
    todo: dict[str, list[str]] = {}
    warned: dict[str, list[str]] = {}
    for paper in state.library.select(slugs):
        try:
            paper.note  # noqa: B018
        except NoteError as exc:
            report[paper.slug] = exc.problems
            continue
        shown = paper.display(paper.note_path)
        links, warned[paper.slug] = related_problems(
            paper.note_path, shown, paper.slug, state.library
        )
        report[paper.slug] = (
            paper.wiring_problems() + note_math_problems(paper.note_path, shown) + links
        ) + page_problems(paper, shown)  # ids, code: references, comparison rows
        warned[paper.slug] += bare_math_warnings(paper.note_path, shown)  # d_k outside $…$
        if strict:  # a warning (bare math, a link to itself) keeps a note from complete
            todo[paper.slug] = completeness_problems(paper) + warned[paper.slug]
    bad = {slug: problems for slug, problems in report.items() if problems}
    left = {slug: items for slug, items in todo.items() if items}
    if as_json:
        emit_json({
            slug: {
                "ok": not p,
                "problems": p,
                **({"warnings": warned[slug]} if warned.get(slug) else {}),
                **({"todo": todo[slug]} if strict else {}),
            }
            for slug, p in report.items()
        })  # fmt: skip
    else:
        for problems in bad.values():
            for line in problems:
                click.echo(f"Error: {line}", err=True)
        for line in (w for lines in warned.values() for w in lines):
            click.echo(f"warning: {one_line(line)}", err=True)
        for slug, items in left.items():
            click.echo(f"{slug}: {plural(len(items), 'thing')} left to complete:", err=True)
            for line in items:
                click.echo(f"  [ ] {line}", err=True)
        summary = f"{len(report) - len(bad)}/{plural(len(report), 'note')} valid"
        if strict:
            summary += f", {len(todo) - len(left)} complete"
        click.echo(summary, err=True)
    sys.exit(2 if bad else 1 if left else 0)


@click.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)
def schema(output: Path | None) -> None:
    """The JSON Schema of note.yaml (editors use it to complete and validate notes)."""
    from repro.lab.note import note_json_schema

    text = json.dumps(note_json_schema(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        write_output(output, text)
        click.echo(f"wrote {output}", err=True)
