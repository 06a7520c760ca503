"""What every command shares: the state, consoles, completion, output files, JSON."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from repro.lab.errors import BadOption, NoteError, PaperlabError
from repro.lab.library import Library, Paper

VERDICT_STYLE = {
    "verified": "green",
    "failed": "bold red",
    "error": "bold red",
    "cited": "blue",
    "skipped": "yellow",
    "not yet run": "dim",
}


def console(stderr: bool = False):
    from rich.console import Console

    stream = sys.stderr if stderr else sys.stdout
    # Piped output has no terminal width; rich would fold tables into 80 columns.
    width = None if stream.isatty() or os.environ.get("COLUMNS") else 160
    return Console(stderr=stderr, highlight=False, soft_wrap=False, width=width)


class State:
    def __init__(self, papers_dir: Path | None, debug: bool) -> None:
        self.library = Library(papers_dir)
        self.debug = debug

    @property
    def runs_dir(self) -> Path:
        from repro.lab.runner import default_runs_dir

        return default_runs_dir(self.library.root)


pass_state = click.make_pass_decorator(State)


def completion_library(ctx: click.Context) -> Library:
    """The library the command line names, while the shell asks for completions."""
    papers_dir = ctx.find_root().params.get("papers_dir")
    return Library(papers_dir)


def complete_slugs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    try:
        slugs = completion_library(ctx).slugs()
    except PaperlabError:
        return []
    return [s for s in slugs if s.startswith(incomplete.lower())]


def complete_claims(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    """Claim ids of the papers named so far on the line (all papers when none is)."""
    try:
        library = completion_library(ctx)
        named = ctx.params.get("slugs") or ([ctx.params["slug"]] if ctx.params.get("slug") else [])
        ids = set()
        for paper in library.select(tuple(named)):
            try:
                ids.update(c.id for c in paper.note.claims)
            except NoteError:
                continue
    except PaperlabError:
        return []
    return sorted(i for i in ids if i.startswith(incomplete))


def write_output(path: Path, text: str) -> None:
    """Write a file the user named; a missing folder or no permission is one `Error:` line."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BadOption(f"cannot write {path}: {exc.strerror or exc}") from None


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def status_summary(paper: Paper, runs_dir: Path) -> dict:
    from repro.lab.runner import latest_results

    note = paper.note
    latest = latest_results(runs_dir, paper.slug)
    counts: dict[str, int] = {}
    for c in note.claims:
        if c.kind == "cited":
            verdict = "cited"
        else:
            verdict = latest[c.id].verdict.value if c.id in latest else "not yet run"
        counts[verdict] = counts.get(verdict, 0) + 1
    return counts


@contextmanager
def progress_bar(enabled: bool) -> Iterator:
    """A rich progress bar on stderr, started at the first report; yields the callback."""
    bar = None
    tasks: dict[str, int] = {}

    def report(description: str, completed: int, total: int) -> None:
        nonlocal bar
        if not enabled:
            return
        if bar is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            bar = Progress(
                TextColumn("{task.description}"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total}"),
                TimeElapsedColumn(),
                console=console(stderr=True),
                transient=True,
            )
            bar.start()
        if description not in tasks:
            tasks[description] = bar.add_task(description, total=total)
        bar.update(tasks[description], completed=completed, total=total)

    try:
        yield report
    finally:
        if bar is not None:
            bar.stop()
