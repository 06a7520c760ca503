"""`paperlab drill`: rehearse answers against the clock; the schedule is FSRS's.

On a terminal a live timer walks through the beats (Enter: next beat, `s`: skip, `q`: end the
round); with `--script FILE`, or when stdin is not a terminal, events come from the script and
the clock advances only by the seconds it names, so whole rounds run the same way every time.
The screens live in `repro.cli.drill_round`, imported when a round starts.
"""

from __future__ import annotations

import json
import sys
from datetime import datetime, timezone
from pathlib import Path

import click

from repro.cli.common import complete_slugs, console, emit_json, pass_state
from repro.lab.errors import BadOption


@click.command()
@click.argument("slugs", nargs=-1, shell_complete=complete_slugs)
@click.option("--must-know", is_flag=True, help="Only the five must-know papers.")
@click.option("--due", "due_only", is_flag=True, help="Only items that are due.")
@click.option("--summary", "mode", flag_value="summary", help="Rehearse 5-minute summaries.")
@click.option("--numbers", "mode", flag_value="numbers", help="Numbers from the papers' claims.")
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True)
@click.option("-n", "count", default=10, show_default=True, type=click.IntRange(1, 500),
              help="Items in the round.")  # fmt: skip
@click.option("--script", type=click.Path(dir_okay=False, path_type=Path),
              help="Read keys and grades from FILE (`-`: stdin); see below.")  # fmt: skip
@click.option("--stats", is_flag=True, help="Per-paper progress and the weakest items.")
@click.option("--export", "export_to", type=click.Path(dir_okay=False, path_type=Path),
              help="Write the study history to FILE (JSON).")  # fmt: skip
@click.option("--import", "import_from", type=click.Path(dir_okay=False, path_type=Path),
              help="Merge a study history from FILE (JSON).")  # fmt: skip
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout (--stats, rounds).")
@pass_state
def drill_cmd(state, slugs, must_know, due_only, mode, lang, count, script, stats, export_to,
              import_from, as_json) -> None:  # fmt: skip
    """A timed mock interview: answer aloud in four beats, compare, grade; FSRS schedules.

    \b
    Script events, one a line: `clock ISO-TIME` (first line), `enter [SECONDS]`,
    `skip`, `quit`, `grade N` (1 again, 2 hard, 3 good, 4 easy), `answer VALUE`, `interrupt`.
    The history lives in the user's data folder (PAPERLAB_STUDY_DB chooses another file).
    """
    from repro.cli.drill_round import (
        ScriptIO,
        TerminalIO,
        pool_of,
        read_script,
        show_stats,
        summary_table,
    )
    from repro.study import drill
    from repro.study.drill_store import StudyDb, default_db_path

    mode = mode or "questions"
    path = default_db_path()
    with StudyDb(path) as db:
        if export_to is not None:
            from repro.cli.common import write_output

            data = db.export()
            write_output(export_to, json.dumps(data, indent=2, ensure_ascii=False) + "\n")
            click.echo(f"wrote {len(data['items'])} items and {len(data['reviews'])} reviews "
                       f"to {export_to}", err=True)  # fmt: skip
            return
        if import_from is not None:
            try:
                data = json.loads(import_from.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise BadOption(f"cannot read {import_from}: {exc}") from None
            items, reviews = db.import_(data, datetime.now(timezone.utc))
            click.echo(
                f"imported {items} new items and {reviews} new reviews into {path}", err=True
            )
            return
        pool, order = pool_of(state, slugs, must_know, mode, lang)
        if stats:
            show_stats(db, pool, as_json)
            return
        shown = console(stderr=as_json)  # --json: the round on stderr, the result on stdout
        if script is None and not sys.stdin.isatty():
            script = Path("-")
        if script is not None:
            stdin = str(script) == "-"
            lines = sys.stdin if stdin else read_script(script).splitlines()
            events = drill.parse_script(lines, "stdin" if stdin else str(script))
            io = ScriptIO(events, lang, shown)
        else:
            io = TerminalIO(lang, shown)
        now = io.now()
        drill.sync_items(db, pool, sorted(order), mode, now)
        picked = drill.pick(pool, drill.load_cards(db, sorted(order)), now, count, due_only, order)
        if not picked:
            click.echo("nothing to rehearse: no item is due" if due_only else "no items", err=True)
            return
        result = drill.run_round(db, pool, picked, io, lang)
    if as_json:
        emit_json({
            "reviewed": [{"key": r.item.key, "grade": r.grade, "beats": r.beats,
                          "due": r.due.isoformat(), "answer": r.answer, "correct": r.correct}
                         for r in result.reviewed],
            "stopped": result.stopped,
            "next_due": result.next_due.isoformat() if result.next_due else None,
        })  # fmt: skip
    else:
        summary_table(console(stderr=True), result, lang)
