"""The drill's screens: a live timer on a terminal, or a script of events; the round's summary.

On a terminal a live timer walks through the beats (Enter: next beat, `s`: skip, `q`: end the
round); with `--script FILE`, or when stdin is not a terminal, events come from the script and
the clock advances only by the seconds it names, so whole rounds run the same way every time.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path

from rich.text import Text

from repro.cli.common import State, console, emit_json, terminal_text
from repro.lab.errors import BadOption
from repro.study import drill
from repro.study.drill import BEAT_LABELS, GRADES, Item, Quit, Skip
from repro.study.drill_store import StudyDb

MUST_KNOW = "must-know"


class ScriptIO:
    """Events from a script; time passes only when an event says so."""

    def __init__(self, events: Iterator[drill.Event], lang: str, out) -> None:
        self.events = events
        self.lang = lang
        self.pending = next(self.events, None)
        self.clock = datetime.now(timezone.utc).replace(microsecond=0)
        if self.pending is not None and self.pending.kind == "clock":
            self.clock = self.pending.value
            self.pending = next(self.events, None)
        self.out = out

    def now(self) -> datetime:
        return self.clock

    def _next(self, wanted: set[str]) -> drill.Event:
        event, self.pending = self.pending, None
        if event is None:
            event = next(self.events, None)
        if event is None:  # the script ran out: the round ends, graded items kept
            raise Quit
        if event.kind == "interrupt":
            raise KeyboardInterrupt
        if event.kind == "quit":
            raise Quit
        if event.kind == "skip":
            raise Skip
        if event.kind not in wanted:
            raise BadOption(f"script line {event.line}: expected {' or '.join(sorted(wanted))}")
        return event

    def present(self, item: Item, index: int, total: int) -> None:
        _present(self.out, item, index, total)

    def beat(self, item: Item, name: str, budget: int) -> float:
        seconds = self._next({"enter"}).value
        self.clock = self.clock.fromtimestamp(self.clock.timestamp() + seconds, timezone.utc)
        over = f" (+{seconds - budget:.0f} s over)" if seconds > budget else ""
        self.out.print(
            Text(f"  {BEAT_LABELS[self.lang][name]}: {seconds:.0f} s / {budget} s{over}")
        )
        return seconds

    def number(self, item: Item) -> str:
        return str(self._next({"answer"}).value)

    def reveal(self, item: Item, outcome: dict) -> None:
        _reveal(self.out, item, outcome, self.lang)

    def grade(self, item: Item, suggested: int | None) -> int:
        return self._next({"grade"}).value


class TerminalIO:
    """A live timer on a terminal, keys read one at a time."""

    def __init__(self, lang: str, out) -> None:
        self.lang = lang
        self.out = out

    def now(self) -> datetime:
        return datetime.now(timezone.utc)

    def present(self, item: Item, index: int, total: int) -> None:
        _present(self.out, item, index, total)

    def beat(self, item: Item, name: str, budget: int) -> float:
        from rich.live import Live

        start = time.monotonic()
        with _keys() as read, Live(console=self.out, refresh_per_second=4, transient=True) as live:
            while True:
                spent = time.monotonic() - start
                live.update(_timer(BEAT_LABELS[self.lang][name], spent, budget))
                key = read(0.25)
                if key in ("\r", "\n"):
                    break
                if key == "s":
                    raise Skip
                if key == "q":
                    raise Quit
        over = f" (+{spent - budget:.0f} s over)" if spent > budget else ""
        self.out.print(Text(f"  {BEAT_LABELS[self.lang][name]}: {spent:.0f} s / {budget} s{over}"))
        return spent

    def number(self, item: Item) -> str:
        text = self.out.input("  your number (s: skip, q: quit): ").strip()
        if text.lower() in ("s", "q"):
            raise Skip if text.lower() == "s" else Quit
        return text

    def reveal(self, item: Item, outcome: dict) -> None:
        _reveal(self.out, item, outcome, self.lang)

    def grade(self, item: Item, suggested: int | None) -> int:
        self.out.print("  grade: 1 again · 2 hard · 3 good · 4 easy   (q: end the round)")
        with _keys() as read:
            while True:
                key = read(None)
                if key in ("1", "2", "3", "4"):
                    return int(key)
                if key == "q":
                    raise Quit


def _keys():
    """Single keys from the terminal (cbreak mode: Ctrl-C still interrupts)."""
    import contextlib
    import select
    import termios
    import tty

    @contextlib.contextmanager
    def reader():
        fd = sys.stdin.fileno()
        saved = termios.tcgetattr(fd)
        tty.setcbreak(fd)

        def read(timeout: float | None) -> str | None:
            ready, _, _ = select.select([sys.stdin], [], [], timeout)
            return sys.stdin.read(1).lower() if ready else None

        try:
            yield read
        finally:
            termios.tcsetattr(fd, termios.TCSADRAIN, saved)

    return reader()


def _timer(label: str, spent: float, budget: int):
    from rich.console import Group
    from rich.progress_bar import ProgressBar

    left = budget - spent
    clock = f"{left:.0f} s left" if left >= 0 else f"{-left:.0f} s over"
    style = "green" if left >= 0 else "bold red"
    line = Text.assemble(
        (f"  {label}  ", "bold"), (clock, style), "   Enter: next · s: skip · q: end"
    )
    bar = ProgressBar(total=budget, completed=min(spent, budget), width=50)
    return Group(line, bar)


def _present(out, item: Item, index: int, total: int) -> None:
    out.rule(Text(f"{index}/{total} · {item.paper} · {item.kind}"))
    if item.kind == "summary":
        out.print(Text(f"{item.prompt}: the 5-minute summary and its 3 contributions", "bold"))
    else:
        out.print(Text(_shown(item.prompt), "bold"))


def _reveal(out, item: Item, outcome: dict, lang: str) -> None:
    labels = BEAT_LABELS[lang]
    if item.kind == "number":
        claim = item.claim
        mark = Text("correct", "green") if outcome["correct"] else Text("not within", "red")
        tolerance = claim.tolerance_text or "±5% (cited: the note sets no tolerance)"
        out.print(Text.assemble("  ", mark, f": expected {claim.expected:g} {claim.unit}".rstrip(),
                                f" ({tolerance})"))  # fmt: skip
        out.print(Text(f"  {_shown(claim.statement)}", "dim"))
        source = f"  {drill.provenance(claim)}; source: {claim.source}"
        if item.verdict:
            source += f"; latest check: {item.verdict}"
        out.print(Text(source, "dim"))
        return
    out.print(Text(_shown(item.answer)))
    for text in item.contributions:
        out.print(Text(f"  • {_shown(text)}"))
    for key, value in item.outline.items():
        out.print(Text.assemble((f"  {labels[key]}: ", "bold"), _shown(value)))
    if item.follow_ups:
        out.print(Text(f"  {labels['follow_ups']}:", "bold"))
        for text in item.follow_ups:
            out.print(Text(f"    – {_shown(text)}"))


def pool_of(state: State, slugs, must_know: bool, mode: str, lang: str) -> tuple[list, dict]:
    from repro.lab.runs import latest_results

    papers = state.library.select(slugs)
    if must_know:
        papers = [p for p in papers if p.note.priority == MUST_KNOW]
    items = []
    for paper in papers:
        verdicts = {}
        if mode == "numbers":
            verdicts = {
                k: r.verdict.value for k, r in latest_results(state.runs_dir, paper.slug).items()
            }
        items += drill.paper_items(paper, mode, lang, verdicts)
    return items, {p.slug: n for n, p in enumerate(papers)}


def summary_table(out, result: drill.RoundResult, lang: str) -> None:
    from rich.table import Table

    table = Table(title="round", title_justify="left")
    for col in ("item", "grade", "over budget", "next due"):
        table.add_column(col)
    for r in result.reviewed:
        over = ", ".join(f"{BEAT_LABELS[lang][n]} +{s - b:.0f} s" for n, b, s in r.beats if s > b)
        first_line = _shown(r.item.prompt).splitlines()[0][:60]
        grade = f"{r.grade} {GRADES[r.grade]}"
        table.add_row(
            Text(f"{r.item.paper}: {first_line}"), grade, over or "—", f"{r.due:%F %H:%M}"
        )
    out.print(table)
    means = ", ".join(f"{BEAT_LABELS[lang][n]} {s:.0f} s" for n, s in result.over_budget().items())
    if means:
        out.print(Text(f"mean time over budget: {means}"))
    nxt = f"{result.next_due:%Y-%m-%d %H:%M} UTC" if result.next_due else "nothing scheduled"
    out.print(Text(f"{len(result.reviewed)} graded; due now: {result.due_now}; next due: {nxt}"))


def read_script(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadOption(f"cannot read {path}: {exc}") from None


def show_stats(db: StudyDb, pool: list[Item], as_json: bool) -> None:
    from rich.table import Table

    data = drill.study_stats(db, pool, datetime.now(timezone.utc))
    if as_json:
        emit_json(data)
        return
    table = Table(title="study progress", title_justify="left")
    for col in ("paper", "seen", "due today", "due this week", "retention", "over budget"):
        table.add_column(col)
    for slug, row in data["papers"].items():
        retention = "—" if row["retention"] is None else f"{row['retention']:.0%}"
        over = ", ".join(f"{n} +{s:.0f} s" for n, s in row["over_budget_s"].items() if s) or "—"
        table.add_row(slug, f"{row['seen']}/{row['items']}", str(row["due_today"]),
                      str(row["due_week"]), retention, over)  # fmt: skip
    out = console()
    out.print(table)
    for weak in data["weakest"]:
        out.print(Text(f"weak: {weak['paper']}: {weak['prompt'].splitlines()[0][:70]} "
                       f"({weak['retention']:.0%})"))  # fmt: skip


def _shown(text: str) -> str:
    """Note text for the terminal: math as Unicode, control characters as visible escapes
    (the loader refuses them; this is the second layer, for notes from other folders)."""
    return terminal_text(drill.plain(text))
