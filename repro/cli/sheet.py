"""`paperlab sheet`: study sheets, the site, the must-know pack and the Anki deck."""

from __future__ import annotations

import click

from repro.cli.common import (
    complete_slugs,
    pass_state,
)


@click.command()
@click.argument("slugs", nargs=-1, shell_complete=complete_slugs)
@click.option("--all", "all_papers", is_flag=True, help="Every paper (also the default).")
@click.option("--must-know", is_flag=True, help="The revision pack of the five must-know papers.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html", "anki", "tsv", "cheatsheet"]),
    help="Default: from the -o suffix, else md. anki: an .apkg deck; tsv: the cards as text; "
    "cheatsheet: 1–2 A4 pages a paper, to print (HTML).",
)
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True)
@click.option(
    "--only-translated",
    is_flag=True,
    help="anki/tsv in zh: leave out the cards with no Chinese text (else marked 【英文原文】).",
)
@click.option(
    "-o",
    "--output",
    type=click.Path(),  # kept as typed: a trailing "/" asks for a folder (Path() drops it)
    help="FILE (one paper, or several in one document) or DIR/ (a site: index + one page "
    "per paper); default: stdout.",
)
@pass_state
def sheet(state, slugs, all_papers, must_know, fmt, lang, only_translated, output) -> None:
    """Study sheets with the latest verdicts (Markdown, HTML, Anki), in English or Chinese."""
    from repro.study.publish import Request, publish

    request = Request(slugs, all_papers, must_know, fmt, lang, output, only_translated)
    outcome = publish(state.library, state.runs_dir, request)
    for slug in outcome.missing or []:
        click.echo(f"note: must-know paper '{slug}' has no note yet; listed as missing", err=True)
    if outcome.removed:
        n = len(outcome.removed)
        click.echo(
            f"note: {n} card{'s' if n != 1 else ''} of the previous export to this file "
            "no longer exist (an import never deletes; delete them in Anki's browser):",
            err=True,
        )
        for front in outcome.removed[:20]:
            click.echo(f"  - {front}", err=True)
        if n > 20:
            click.echo(f"  … and {n - 20} more", err=True)
    if outcome.written is None:
        click.echo(outcome.stdout, nl=False)
        return
    shown = outcome.written if len(outcome.written) <= 3 else outcome.written[-1:]
    for path in shown:
        click.echo(f"wrote {path}", err=True)
    if len(outcome.written) > 3:
        click.echo(f"({len(outcome.written)} files in {output})", err=True)
