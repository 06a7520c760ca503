"""paperlab — landmark LLM papers as notes, verified reproductions and study sheets.

The command line only: it parses, calls `repro.lab`, and prints. Commands that only read notes
(list, show, sheet, new, validate, schema) never import torch.
"""

from __future__ import annotations

import os
from pathlib import Path

import click

from repro.cli import bench, cache, checks, doctor, drill, notes, runs, sheet
from repro.cli.common import State
from repro.lab.errors import NoteError, PaperlabError, one_line
from repro.lab.library import PAPERS_ENV, check_checkout


class PaperlabGroup(click.Group):
    """Turns library errors into one `Error: …` line and exit code 2 (tracebacks with --debug)."""

    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except PaperlabError as exc:
            if (ctx.obj is not None and ctx.obj.debug) or os.environ.get("PAPERLAB_DEBUG"):
                raise
            lines = exc.problems if isinstance(exc, NoteError) else [str(exc)]
            for line in lines:
                click.echo(f"Error: {one_line(line)}", err=True)
            ctx.exit(2)
        except KeyboardInterrupt:
            # click would print "Aborted!" and exit 1, the code of a failed claim
            click.echo("Interrupted.", err=True)
            ctx.exit(130)


def _print_version(ctx: click.Context, _param: click.Parameter, wanted: bool) -> None:
    if wanted:
        from repro.lab.doctor import version_text

        click.echo(version_text())
        ctx.exit()


@click.group(cls=PaperlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--papers-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=PAPERS_ENV,
    help=f"Library of paper folders (default: ./papers of this checkout; env {PAPERS_ENV}).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.option(
    "--version", is_flag=True, expose_value=False, is_eager=True, callback=_print_version,
    help="Show the version and the commit it runs from (runs record the same), then exit.",
)  # fmt: skip
@click.pass_context
def cli(ctx: click.Context, papers_dir: Path | None, debug: bool) -> None:
    """Landmark LLM papers as notes, verified reproductions and interview study sheets."""
    ctx.obj = State(papers_dir, debug)
    check_checkout()


for _command in (
    notes.list_cmd, notes.show, notes.new, notes.validate, notes.schema,
    checks.run, checks.check, checks.settings,
    sheet.sheet, drill.drill_cmd, runs.runs, bench.bench, doctor.doctor, cache.cache,
):  # fmt: skip
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="paperlab")


if __name__ == "__main__":
    main()
