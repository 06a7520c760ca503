"""Stored results: `runs` (listing and diffs)."""

from __future__ import annotations

import click

from repro.cli.common import (
    VERDICT_STYLE,
    State,
    complete_slugs,
    console,
    emit_json,
    pass_state,
    terminal_markup,
    terminal_text,
    verdict_order,
)
from repro.lab.errors import BadOption
from repro.lab.format import format_bytes, format_seconds, format_value, plural


@click.command()
@click.argument("slug", required=False, shell_complete=complete_slugs)
@click.option(
    "--diff", nargs=2, metavar="A B", help="Compare two runs of SLUG (stamps, prefixes, latest)."
)
@click.option("-n", "--count", default=20, show_default=True, type=click.IntRange(0),
              help="How many runs to list, newest first (0: all).")  # fmt: skip
@click.option("--prune", is_flag=True, help="Delete all but the newest --keep runs of each paper.")
@click.option("--keep", type=int, default=None, metavar="N",
              help="With --prune: runs kept per paper [default: 5; at least 1].")  # fmt: skip
@click.option("--dry-run", is_flag=True, help="With --prune: only say what would be deleted.")
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@pass_state
def runs(
    state: State, slug: str | None, diff: tuple[str, str] | None, count: int, prune: bool,
    keep: int | None, dry_run: bool, as_json: bool,
):  # fmt: skip
    """Stored runs (all papers, or SLUG's), what changed between two runs with --diff, or
    --prune to delete old ones (never a paper's newest run)."""
    from repro.lab.runs import diff_runs, find_run, list_runs

    slugs = [state.library.get(slug).slug] if slug else state.library.slugs()
    if (keep is not None or dry_run) and not prune:
        raise BadOption("--keep and --dry-run go with --prune: paperlab runs --prune --keep N")
    if prune:
        if diff:
            raise BadOption("--prune and --diff cannot be combined")
        _prune(state, slugs, 5 if keep is None else keep, dry_run, as_json)
        return
    if diff:
        if not slug:
            raise BadOption("--diff needs a paper: paperlab runs SLUG --diff A B")
        a, b = (find_run(state.runs_dir, slugs[0], name) for name in diff)
        changes = diff_runs(a, b)
        if as_json:
            emit_json(
                {"a": a.to_json(), "b": b.to_json(), "changes": [c.to_json() for c in changes]}
            )
            return
        _diff_table(a, b, changes)
        return
    found = list_runs(state.runs_dir, slugs)
    found = found[:count] if count else found
    if as_json:
        emit_json([r.to_json() for r in found])
        return
    if not found:
        click.echo(f"no stored runs in {state.runs_dir}", err=True)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"{plural(len(found), 'run')}, newest first", title_justify="left")
    for col in ("paper", "stamp", "preset", "seed", "commit", "claims", "took"):
        table.add_column(col, no_wrap=True)
    for r in found:
        verdicts = ", ".join(
            f"[{VERDICT_STYLE.get(k, '')}]{n} {k}[/]"
            for k, n in sorted(r.verdicts.items(), key=verdict_order)
        )
        table.add_row(  # folder names and stored text are shown as text, escaped
            *(Text(terminal_text(x)) for x in (r.slug, r.stamp, r.preset or "—")),
            "—" if r.seed is None else str(r.seed), Text(terminal_text(r.commit or "—")),
            verdicts or "—", format_seconds(r.seconds),
        )  # fmt: skip
    console().print(table)


def _prune(state: State, slugs: list[str], keep: int, dry_run: bool, as_json: bool) -> None:
    from repro.lab.runs import prune_runs

    pruned = prune_runs(state.runs_dir, slugs, keep, dry_run=dry_run)
    if as_json:
        emit_json([p.to_json() for p in pruned])
        return
    verb = "would delete" if dry_run else "deleted"
    for p in pruned:
        click.echo(f"{verb} {terminal_text(f'{p.slug}/{p.stamp}')} ({format_bytes(p.size)})")
    papers = len({p.slug for p in pruned})
    total = format_bytes(sum(p.size for p in pruned))
    click.echo(
        f"{verb} {plural(len(pruned), 'run')} of {plural(papers, 'paper')} ({total}) in "
        f"{state.runs_dir}, keeping the newest {keep} of each"
        + ("; run without --dry-run to delete them" if dry_run and pruned else ""),
        err=True,
    )


def _diff_table(a, b, changes: list) -> None:
    from rich.table import Table
    from rich.text import Text

    if not changes:
        click.echo(terminal_text(f"{a.stamp} and {b.stamp}: same settings, metrics and claims"))
        return
    title = terminal_markup(f"{a.slug}: A = {a.stamp}, B = {b.stamp}")
    table = Table(title=title, title_justify="left")
    for col in ("", "key", "A", "B", "B − A"):
        table.add_column(
            col,
            no_wrap=col in ("", "key"),
            overflow="fold",
            justify="left" if col in ("", "key") else "right",
        )
    for c in changes:
        cells = (c.section, c.key, _cell(c.a), _cell(c.b), _change(c.a, c.b))
        table.add_row(*(Text(terminal_text(x)) for x in cells))
    console().print(table)


def _change(a: object, b: object) -> str:
    """B − A for two numbers, with the relative change when A is not 0; '' otherwise."""
    numbers = (int, float)
    if (
        not (isinstance(a, numbers) and isinstance(b, numbers))
        or isinstance(a, bool)
        or isinstance(b, bool)
    ):
        return ""
    delta = b - a
    text = ("+" if delta > 0 else "") + format_value(delta)
    return f"{text} ({delta / abs(a):+.1%})" if a else text


LIST_ITEMS = 6  # values of a curve shown in a diff cell, then how many more


def _cell(value: object) -> str:
    """A value of a run as one short cell: numbers as everywhere, a curve by its first items."""
    if isinstance(value, list | tuple):
        shown = ", ".join(format_value(v) for v in value[:LIST_ITEMS])
        more = len(value) - LIST_ITEMS
        return f"[{shown}, … +{more}]" if more > 0 else f"[{shown}]"
    if isinstance(value, dict):  # an empty dict (others are flattened into dotted keys)
        return "{}"
    return format_value(value)
