"""`paperlab cache`: what the cache holds, verifying every entry, clearing it."""

from __future__ import annotations

import click

from repro.cli.common import emit_json, terminal_text
from repro.lab.format import format_bytes, plural


@click.group(invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@click.pass_context
def cache(ctx: click.Context, as_json: bool) -> None:
    """The cache of pretrained models and sweep points: kinds, entries, sizes.

    Every entry records its kind, its key and the SHA-256 of its files, and is verified each
    time it is read; `verify` checks them all now and removes damaged ones, `clear` empties it."""
    if ctx.invoked_subcommand is not None:
        return
    from repro.lab.cache import cache_root, summary

    root = cache_root()
    rows = summary(root)
    if as_json:
        emit_json(
            {"root": str(root), "kinds": [{"kind": r.kind, "entries": r.entries,
                                           "bytes": r.bytes} for r in rows]}
        )  # fmt: skip
        return
    from rich.table import Table
    from rich.text import Text

    from repro.cli.common import console

    total, entries = sum(r.bytes for r in rows), sum(r.entries for r in rows)
    table = Table()
    for col in ("kind", "entries", "size"):
        table.add_column(col, justify="left" if col == "kind" else "right")
    for r in rows:
        table.add_row(Text(terminal_text(r.kind)), str(r.entries), format_bytes(r.bytes))
    if rows:
        console().print(table)
    where = terminal_text(root)
    click.echo(f"{plural(entries, 'entry', 'entries')}, {format_bytes(total)} in {where}")


@cache.command()
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@click.option("--keep", is_flag=True, help="Report damaged entries without removing them.")
def verify(as_json: bool, keep: bool) -> None:
    """Check every entry (kind, key, SHA-256 of each file); remove the damaged ones.

    Exit 0 when every entry verified, 1 when some were damaged (and removed unless --keep)."""
    from repro.lab.cache import verify as verify_all

    checked, problems = verify_all(remove=not keep)
    if as_json:
        emit_json(
            {"checked": checked, "removed": not keep,
             "damaged": [{"kind": p.kind, "key": p.key, "why": p.why} for p in problems]}
        )  # fmt: skip
    else:
        verb = "kept" if keep else "removed"
        for p in problems:
            click.echo(f"damaged: {terminal_text(f'{p.kind}/{p.key}')} {p.why} ({verb})", err=True)
        click.echo(
            f"{plural(checked, 'entry', 'entries')} checked, {len(problems)} damaged", err=True
        )
    raise SystemExit(1 if problems else 0)


@cache.command()
@click.argument("kind", required=False)
def clear(kind: str | None) -> None:
    """Remove every entry, or only those of KIND; they are recomputed when next needed."""
    from repro.lab.cache import cache_root, summary
    from repro.lab.cache import clear as clear_all
    from repro.lab.errors import BadOption

    if kind is not None:
        kinds = [r.kind for r in summary()]
        if kind not in kinds:
            raise BadOption(f"the cache has no kind '{kind}' (kinds: {', '.join(kinds) or 'none'})")
    count, freed = clear_all(kind=kind)
    where = f"{cache_root()}" + (f"/{kind}" if kind else "")
    click.echo(f"removed {plural(count, 'entry', 'entries')} ({format_bytes(freed)}) from {where}")
