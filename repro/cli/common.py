"""What every command shares: the state, consoles, completion, output files, JSON."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import click

from repro.lab.errors import NoteError, PaperlabError, one_line
from repro.lab.library import Library, Paper

VERDICT_STYLE = {
    "verified": "green",
    "failed": "bold red",
    "error": "bold red",
    "cited": "blue",
    "skipped": "yellow",
    "not yet run": "dim",
}
VERDICT_ORDER = tuple(VERDICT_STYLE)  # the order counts are written in: verified first


def verdict_order(item: tuple[str, int]) -> int:
    """Sort key of (verdict, count) pairs in VERDICT_ORDER; unknown verdicts last."""
    return VERDICT_ORDER.index(item[0]) if item[0] in VERDICT_ORDER else len(VERDICT_ORDER)


# What may not reach a terminal from a note, a stored run or a claim's message: C0 controls but
# tab and newline, DEL, C1 (ESC and CSI start escape sequences), and the bidirectional overrides.
_TERMINAL_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
# rich's Markdown costs ~10 µs per markup character: `show` cuts a longer sheet (the library's
# longest is ~41,000 characters) and says where the rest is.
TERMINAL_SHEET_CHARS = 120_000


def terminal_text(text: object) -> str:
    """`text` with every control character written as a visible escape (`\\x1b`): defence in
    depth behind the loader, for notes from other folders, stored runs and claim messages."""
    return _TERMINAL_UNSAFE.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def terminal_markup(text: object) -> str:
    """`text` safe to put inside rich markup: escaped controls and escaped `[…]` tags."""
    from rich.markup import escape

    return escape(terminal_text(text))


def terminal_sheet(markdown: str, rest_hint: str) -> str:
    """A sheet's Markdown as `show` prints it: escaped, and cut at a line end when it is longer
    than TERMINAL_SHEET_CHARS, with `rest_hint` saying where the whole of it is."""
    text = terminal_text(markdown)
    if len(text) <= TERMINAL_SHEET_CHARS:
        return text
    cut = text.rfind("\n", 0, TERMINAL_SHEET_CHARS)
    cut = cut if cut > 0 else TERMINAL_SHEET_CHARS
    left = len(text) - cut
    return f"{text[:cut]}\n\n---\n\n*{left:,} more characters not shown: {rest_hint}*\n"


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
        from repro.lab.runs import default_runs_dir

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


def _named_slugs(ctx: click.Context) -> list[str]:
    """The papers named so far on the line. While the shell completes, click parses resiliently
    and leaves a command's variadic arguments in `ctx.args`, not yet in `ctx.params`."""
    named = list(ctx.params.get("slugs") or ())
    if ctx.params.get("slug"):
        named.append(ctx.params["slug"])
    return named + [a for a in ctx.args if not a.startswith("-")]


def complete_claims(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    """Claim ids of the papers named so far on the line (all papers when none is)."""
    try:
        library = completion_library(ctx)
        named = [s for s in _named_slugs(ctx) if s.lower() in library.papers]
        ids = set()
        for paper in library.select(tuple(named)):
            try:
                ids.update(c.id for c in paper.summary.claims)
            except NoteError:
                continue
    except PaperlabError:
        return []
    return sorted(i for i in ids if i.startswith(incomplete))


def complete_set_keys(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    """`key=` for each setting of the paper named on the line (read without importing it)."""
    from click.shell_completion import CompletionItem

    from repro.lab.runner import setting_names

    try:
        library = completion_library(ctx)
        names: set[str] = set()
        for slug in _named_slugs(ctx):
            if slug.lower() in library.papers:
                names.update(setting_names(library.papers[slug.lower()].repro_path) or ())
    except PaperlabError:
        return []
    return [CompletionItem(f"{n}=") for n in sorted(names) if n.startswith(incomplete)]


class DeviceType(click.ParamType):
    """`--device`: cpu, cuda, cuda:N or mps (whether it exists here is checked when it is used)."""

    name = "device"
    PATTERN = re.compile(r"cpu|cuda|cuda:\d+|mps")

    def convert(self, value, param, ctx):
        if isinstance(value, str) and self.PATTERN.fullmatch(value):
            return value
        self.fail(f"expected cpu, cuda, cuda:N or mps, got '{one_line(str(value))}'", param, ctx)

    def shell_complete(self, ctx, param, incomplete):
        from click.shell_completion import CompletionItem

        return [CompletionItem(d) for d in ("cpu", "cuda", "mps") if d.startswith(incomplete)]


DEVICE = DeviceType()


def write_output(path: Path, text: str) -> None:
    """Write a file the user named by the rules of `write_user_file` (`-` is stdout, a FIFO or
    device is written to and never replaced, a folder is refused): one `Error:` line if not."""
    from repro.lab.textfile import write_user_file

    write_user_file(path, text)


def emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def status_summary(paper: Paper, runs_dir: Path) -> dict:
    from repro.lab.runs import latest_results

    latest = latest_results(runs_dir, paper.slug)
    counts: dict[str, int] = {}
    for c in paper.summary.claims:
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
