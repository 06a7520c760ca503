"""How `check` reports, the way pytest does: a line per paper as it finishes, details only for
failures, one summary line.

On a terminal a progress bar shows the papers done and the ones running; piped into a log
(`| tee`, CI, nohup) the same lines appear as plain text, and a heartbeat line says which papers
are still running whenever nothing has been printed for `HEARTBEAT_S` seconds.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterable

from rich.text import Text

from repro.cli.common import VERDICT_ORDER, VERDICT_STYLE, console
from repro.lab.errors import one_line
from repro.lab.format import format_seconds, format_value, plural, shorten, with_unit
from repro.lab.runner import Reporter, RunReport

HEARTBEAT_S = 27.0  # silence after which a piped check says what is still running (< 30 s)
ORDER = VERDICT_ORDER


def counts(reports: Iterable[RunReport]) -> dict[str, int]:
    found: dict[str, int] = {}
    for report in reports:
        for r in report.results:
            found[r.verdict.value] = found.get(r.verdict.value, 0) + 1
    return {k: found[k] for k in (*ORDER, *sorted(set(found) - set(ORDER))) if k in found}


def counts_text(found: dict[str, int]) -> Text:
    text = Text()
    for i, (verdict, n) in enumerate(found.items()):
        if i:
            text.append(", ")
        text.append(f"{n} {verdict}", style=VERDICT_STYLE.get(verdict, ""))
    return text if found else Text("no claims")


def summary_text(reports: list[RunReport], seconds: float, stopped: bool = False) -> Text:
    """`16 papers: 162 verified, 60 cited in 4 min 12 s`, green when nothing failed."""
    ok = all(r.ok for r in reports)
    text = Text(f"{plural(len(reports), 'paper')}: ", style="bold green" if ok else "bold red")
    text.append_text(counts_text(counts(reports)))
    text.append(f" in {format_seconds(seconds)}")
    if stopped:
        text.append(" (stopped after the first failure: -x)", style="bold red")
    return text


def claim_line(r, indent: str = "  ") -> Text:
    """One claim: verdict, id, the statement's short form, expected → measured (or why)."""
    text = Text(indent)
    text.append(f"{r.verdict.value:<8}", style=VERDICT_STYLE.get(r.verdict.value, ""))
    text.append(f" {r.paper}::{r.id}  ")
    text.append(one_line(shorten(r.statement, 56)), style="dim")
    if r.verdict.value == "cited":
        if r.message:
            text.append(f"  ({one_line(shorten(r.message, 60))})", style="dim")
        return text
    if r.verdict.value in ("error", "skipped"):
        text.append(f"  {one_line(shorten(r.message, 100))}")
        return text
    expected = with_unit(r.expected, r.unit)
    text.append(f"  expected {one_line(expected)} ({r.tolerance or 'exact'}), ")
    text.append(f"measured {one_line(format_value(r.measured))}")
    return text


class CheckReporter(Reporter):
    """Prints what `run_papers` reports; `close()` stops the bar and the heartbeat."""

    def __init__(
        self, slugs: list[str], *, quiet: bool = False, show: frozenset[str] = frozenset()
    ) -> None:
        self.out = console()
        self.tty = sys.stdout.isatty()
        self.quiet = quiet
        self.show = set(ORDER) if "all" in show else set(show)
        self.width = max((len(s) for s in slugs), default=0) + 3
        self.running: dict[str, list] = {}  # slug -> [start, current claim or step]
        self.pending = len(slugs)  # papers not finished
        self.lock = threading.Lock()
        self.last_output = time.monotonic()
        self.bar = None
        self.task = None
        self.done = threading.Event()
        self.heart = None
        if self.tty:
            from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

            self.bar = Progress(
                TextColumn("checking"),
                BarColumn(),
                TextColumn("{task.completed}/{task.total} papers"),
                TimeElapsedColumn(),
                TextColumn("{task.fields[running]}", style="dim", markup=False),
                console=self.out,
                transient=True,
            )
            self.task = self.bar.add_task("check", total=len(slugs), running="")
            self.bar.start()
        if self.bar is not None or not quiet:
            self.heart = threading.Thread(target=self._beat, daemon=True)
            self.heart.start()

    # --- output ---------------------------------------------------------------------------

    def print(self, text: Text | str) -> None:
        with self.lock:
            (self.bar.console if self.bar is not None else self.out).print(text, soft_wrap=True)
            self.last_output = time.monotonic()

    def _running_text(self) -> str:
        now = time.monotonic()
        parts = []
        for slug, (start, current) in sorted(self.running.items()):
            where = f", {current}" if current else ""
            parts.append(f"{slug} ({format_seconds(now - start)}{where})")
        return ", ".join(parts)

    def _beat(self) -> None:
        """On a terminal: keep the running papers' times in the bar current. In a log: a line
        saying what still runs whenever nothing was printed for HEARTBEAT_S seconds."""
        while not self.done.wait(min(0.5, HEARTBEAT_S / 4)):
            with self.lock:
                if self.bar is not None:
                    self._refresh()
                    continue
                quiet_for = time.monotonic() - self.last_output
                running = self._running_text() if self.running else ""
                pending = self.pending
            if quiet_for < HEARTBEAT_S or not (running or pending):
                continue
            if running:
                self.print(Text(f"  … still running: {one_line(running)}", style="dim"))
            else:  # workers still starting (spawning, importing torch) on a busy machine
                self.print(Text(f"  … starting: {plural(pending, 'paper')} to check", style="dim"))

    def _refresh(self) -> None:
        if self.bar is not None:
            self.bar.update(self.task, running=shorten(self._running_text(), 60))

    # --- Reporter -------------------------------------------------------------------------

    def started(self, slug: str) -> None:
        with self.lock:
            self.running[slug] = [time.monotonic(), ""]
            self._refresh()

    def progress(self, slug: str, description: str, completed: int, total: int) -> None:
        with self.lock:
            if slug not in self.running:
                return
            prefix = f"{slug}: "
            if description.startswith(prefix):
                claim = description[len(prefix) :]
                current = "" if claim == "done" else f"{claim} {completed + 1}/{total}"
            else:  # the experiment's own steps
                current = f"{description} {completed}/{total}"
            self.running[slug][1] = one_line(current)
            self._refresh()

    def finished(self, report: RunReport) -> None:
        with self.lock:
            self.running.pop(report.paper, None)
            self.pending -= 1
            if self.bar is not None:
                self.bar.advance(self.task)
                self._refresh()
        if self.quiet and report.ok:
            return
        line = Text(f"{report.paper} ")
        line.append("." * (self.width - len(report.paper)) + " ", style="dim")
        line.append_text(counts_text(counts([report])))
        line.append(f"  {format_seconds(report.seconds)}", style="dim")
        self.print(line)
        for r in report.results:
            if r.verdict.value in self.show:
                self.print(claim_line(r, indent="    "))

    def close(self) -> None:
        self.done.set()
        if self.heart is not None:
            self.heart.join(timeout=2)
        if self.bar is not None:
            self.bar.stop()


def print_failures(out, reports: list[RunReport]) -> None:
    """The claims that failed or crashed (and experiments that crashed), one block each."""
    for report in reports:
        err = report.environment.get("experiment_error")
        if err:
            line = Text("error    ", style=VERDICT_STYLE["error"])
            line.append(f"{report.paper} (experiment)  {one_line(shorten(err, 100))}")
            out.print(line, soft_wrap=True)
        for r in report.results:
            if r.verdict.value in ("failed", "error"):
                out.print(claim_line(r, indent=""), soft_wrap=True)


def print_durations(out, reports: list[RunReport], n: int) -> None:
    """The `n` slowest papers of this check (0: all), as stored with their runs."""
    slowest = sorted(reports, key=lambda r: r.seconds, reverse=True)
    slowest = slowest[:n] if n else slowest
    if not slowest:
        return
    out.print(Text(f"slowest {plural(len(slowest), 'paper')}:", style="bold"))
    width = max(len(r.paper) for r in slowest)
    for r in slowest:
        out.print(Text(f"  {r.paper:<{width}}  {format_seconds(r.seconds):>10}"))
