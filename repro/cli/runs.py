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
)
from repro.lab.errors import BadOption
from repro.lab.format import format_seconds, format_value, plural


@click.command()
@click.argument("slug", required=False, shell_complete=complete_slugs)
@click.option(
    "--diff", nargs=2, metavar="A B", help="Compare two runs of SLUG (stamps, prefixes, latest)."
)
@click.option("-n", "--count", default=20, show_default=True, type=click.IntRange(0),
              help="How many runs to list, newest first (0: all).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@pass_state
def runs(state: State, slug: str | None, diff: tuple[str, str] | None, count: int, as_json):
    """Stored runs (all papers, or SLUG's), or what changed between two runs with --diff."""
    from repro.lab.runs import diff_runs, find_run, list_runs

    slugs = [state.library.get(slug).slug] if slug else state.library.slugs()
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

    table = Table(title=f"{plural(len(found), 'run')}, newest first", title_justify="left")
    for col in ("paper", "stamp", "preset", "seed", "commit", "claims", "took"):
        table.add_column(col, no_wrap=True)
    for r in found:
        verdicts = ", ".join(
            f"[{VERDICT_STYLE.get(k, '')}]{n} {k}[/]" for k, n in sorted(r.verdicts.items())
        )
        table.add_row(
            r.slug, r.stamp, r.preset or "—", "—" if r.seed is None else str(r.seed),
            r.commit or "—", verdicts or "—", format_seconds(r.seconds),
        )  # fmt: skip
    console().print(table)


def _diff_table(a, b, changes: list) -> None:
    from rich.table import Table
    from rich.text import Text

    if not changes:
        click.echo(f"{a.stamp} and {b.stamp}: same settings, metrics and claims")
        return
    table = Table(title=f"{a.slug}: A = {a.stamp}, B = {b.stamp}", title_justify="left")
    for col in ("", "key", "A", "B"):
        table.add_column(col, no_wrap=col in ("", "key"), overflow="fold")
    for c in changes:
        table.add_row(*(Text(x) for x in (c.section, c.key, _cell(c.a), _cell(c.b))))
    console().print(table)


def _cell(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value)
    return format_value(value)
