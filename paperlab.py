"""paperlab — landmark LLM papers as notes, verified reproductions and study sheets.

The command line only: it parses, calls `repro.lab`, and prints. Commands that only read notes
(list, show, sheet, new, validate, schema) never import torch.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import click

from repro.lab.errors import BadOption, NoteError, PaperlabError, one_line
from repro.lab.format import format_seconds, format_value, plural, with_unit
from repro.lab.library import PAPERS_ENV, Library, Paper, check_checkout

VERDICT_STYLE = {
    "verified": "green",
    "failed": "bold red",
    "error": "bold red",
    "cited": "blue",
    "skipped": "yellow",
    "not yet run": "dim",
}


def _console(stderr: bool = False):
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


def _completion_library(ctx: click.Context) -> Library:
    """The library the command line names, while the shell asks for completions."""
    papers_dir = ctx.find_root().params.get("papers_dir")
    return Library(papers_dir)


def _complete_slugs(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    try:
        slugs = _completion_library(ctx).slugs()
    except PaperlabError:
        return []
    return [s for s in slugs if s.startswith(incomplete.lower())]


def _complete_claims(ctx: click.Context, param: click.Parameter, incomplete: str) -> list:
    """Claim ids of the papers named so far on the line (all papers when none is)."""
    try:
        library = _completion_library(ctx)
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


def _write_output(path: Path, text: str) -> None:
    """Write a file the user named; a missing folder or no permission is one `Error:` line."""
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise BadOption(f"cannot write {path}: {exc.strerror or exc}") from None


@click.group(cls=PaperlabGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--papers-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar=PAPERS_ENV,
    help=f"Library of paper folders (default: ./papers of this checkout; env {PAPERS_ENV}).",
)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="paperlab")
@click.pass_context
def cli(ctx: click.Context, papers_dir: Path | None, debug: bool) -> None:
    """Landmark LLM papers as notes, verified reproductions and interview study sheets."""
    ctx.obj = State(papers_dir, debug)
    check_checkout()


def _emit_json(data: object) -> None:
    click.echo(json.dumps(data, indent=2, default=str))


def _status_summary(paper: Paper, runs_dir: Path) -> dict:
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


# --- list / show ---------------------------------------------------------------------------


@cli.command("list")
@click.option("--tag", help="Only papers with this tag.")
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@pass_state
def list_cmd(state: State, tag: str | None, as_json: bool) -> None:
    """Papers in the library with the status of their claims."""
    rows = []
    for slug, paper in state.library.papers.items():
        try:
            note = paper.note
        except NoteError as exc:  # keep listing; show the first problem
            more = len(exc.problems) - 1
            first = exc.problems[0] + (f" (+{plural(more, 'more problem')})" if more else "")
            rows.append({"slug": slug, "error": first})
            continue
        if tag and tag not in note.tags:
            continue
        rows.append(
            {
                "slug": slug,
                "title": note.title,
                "year": note.year,
                "priority": note.priority,
                "tags": note.tags,
                "claims": _status_summary(paper, state.runs_dir),
            }
        )
    if as_json:
        _emit_json(rows)
        return
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"paperlab — {plural(len(rows), 'paper')}", title_justify="left")
    for col in ("paper", "title", "year", "priority", "claims"):
        table.add_column(col, overflow="fold", no_wrap=col == "paper")
    for r in rows:
        if "error" in r:
            table.add_row(r["slug"], Text(one_line(r["error"]), style="red"), "", "", "")
            continue
        claims = ", ".join(
            f"[{VERDICT_STYLE.get(k, '')}]{n} {k}[/]" for k, n in sorted(r["claims"].items())
        )
        table.add_row(r["slug"], Text(r["title"]), str(r["year"]), r["priority"], claims or "—")
    _console().print(table)


@cli.command()
@click.argument("slug", shell_complete=_complete_slugs)
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True)
@pass_state
def show(state: State, slug: str, lang: str) -> None:
    """A paper's note, rendered in the terminal (formulas as Unicode text)."""
    from rich.markdown import Markdown

    from repro.lab.sheets import paper_sheet, render_sheet

    paper = state.library.get(slug)
    sheet = paper_sheet(paper, state.runs_dir, lang, state.library)
    # The "term" flavour writes every formula as escaped Unicode: rich's Markdown shows it as is.
    _console().print(Markdown(render_sheet(sheet, "term", lang)))


# --- run / check ---------------------------------------------------------------------------


@contextmanager
def _progress(enabled: bool) -> Iterator:
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
                console=_console(stderr=True),
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


def _results_table(reports: list) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title_justify="left")
    for col in ("paper", "claim", "kind", "expected", "measured", "tolerance", "verdict"):
        if col in ("paper", "claim"):  # slugs and ids are copied into commands: never folded
            table.add_column(col, no_wrap=True)
        else:
            table.add_column(col, overflow="fold", max_width=36)
    for report in reports:
        for r in report.results:
            style = VERDICT_STYLE.get(r.verdict.value, "")
            measured = format_value(r.measured)
            if r.verdict.value in ("error", "skipped"):
                measured = r.message if len(r.message) <= 80 else r.message[:77] + "…"
            table.add_row(
                r.paper,
                r.id,
                r.kind,
                escape(with_unit(r.expected, r.unit)),
                escape(one_line(measured)),
                escape(r.tolerance or "—"),
                f"[{style}]{r.verdict.value}[/]",
            )
    _console().print(table)


def _summary_line(reports: list, seconds: float) -> str:
    counts: dict[str, int] = {}
    for report in reports:
        for r in report.results:
            counts[r.verdict.value] = counts.get(r.verdict.value, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"{plural(len(reports), 'paper')}: {parts or 'no claims'} in {seconds:.1f}s"


def _common_run_options(fn):
    fn = click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")(fn)
    fn = click.option(
        "--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1),
        help="Seed of every random generator (0 to 2^32 - 1).",
    )(fn)  # fmt: skip
    fn = click.option("--no-save", is_flag=True, help="Don't store results under runs/.")(fn)
    fn = click.option(
        "--threads", default=1, show_default=True, type=click.IntRange(1),
        help="torch CPU threads (the tiny experiments are fastest on one).",
    )(fn)  # fmt: skip
    fn = click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")(fn)
    return fn


def _save_failed(reports: list) -> bool:
    """After the results are printed: one `Error:` line per run that could not be saved."""
    failed = [r for r in reports if r.save_error]
    for r in failed:
        click.echo(f"Error: {one_line(r.save_error)}", err=True)
    return bool(failed)


@cli.command()
@click.argument("slug", shell_complete=_complete_slugs)
@click.option("--quick", is_flag=True, help="The quick preset (seconds) instead of the full one.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override an experiment setting (repeatable; `paperlab settings SLUG` lists them).",
)
@click.option("--yes", is_flag=True, help="Run even when --set asks for ≥ 100× the full preset.")
@click.option("-v", "--verbose", is_flag=True, help="Also print the experiment's metrics.")
@_common_run_options
@pass_state
def run(
    state, slug, quick, overrides, yes, verbose, device, seed, no_save, threads, as_json
) -> None:
    """Run a paper's experiment and check its claims; results go to runs/<slug>/<stamp>/."""
    from repro.lab.runner import run_paper

    paper = state.library.get(slug)
    start = time.perf_counter()
    with _progress(not as_json) as progress:
        report = run_paper(
            paper,
            quick=quick,
            experiment=True,
            device=device,
            seed=seed,
            overrides=tuple(overrides),
            progress=progress,
            runs_dir=None if no_save else state.runs_dir,
            threads=threads,
            confirmed=yes,
        )
    if as_json:
        _emit_json(report.to_json())
    else:
        if report.metrics and verbose:  # the metrics are always in the saved run
            from rich.pretty import Pretty

            _console().print(Pretty(report.metrics, max_length=12))
        _results_table([report])
        err = report.environment.get("experiment_error")
        if err:
            click.echo(f"Error: {one_line(err)}", err=True)
        where = f"; saved to {report.run_dir}" if report.run_dir else ""
        click.echo(_summary_line([report], time.perf_counter() - start) + where, err=True)
    if _save_failed([report]):
        sys.exit(2)
    sys.exit(0 if report.ok else 1)


@cli.command()
@click.argument("slugs", nargs=-1, shell_complete=_complete_slugs)
@click.option("--full", is_flag=True, help="The full preset (minutes) instead of the quick one.")
@click.option(
    "--claim",
    "claim_ids",
    multiple=True,
    shell_complete=_complete_claims,
    help="Only this claim id (repeatable).",
)
@click.option("--skip-benchmarks", is_flag=True, help="Leave out wall-clock timing claims.")
@click.option(
    "--jobs", type=click.IntRange(1), default=None,
    help="Papers checked at once, each in its own process [default: one per CPU core; 1 on cuda].",
)  # fmt: skip
@_common_run_options
@pass_state
def check(
    state, slugs, full, claim_ids, skip_benchmarks, device, seed, no_save, threads, jobs, as_json
) -> None:
    """Verify claims (all papers when none is named); exit 1 if any fails."""
    from repro.lab.library import check_claim_ids, notes_or_error
    from repro.lab.runner import run_papers

    papers = state.library.select(slugs)
    notes_or_error(papers)  # every note must load before anything runs; all problems at once
    check_claim_ids(papers, tuple(claim_ids))
    start = time.perf_counter()
    if jobs is None:  # one paper per core; a GPU is shared by one process at a time
        jobs = 1 if device != "cpu" else min(len(papers), os.cpu_count() or 1)
    with _progress(not as_json) as progress:
        reports = run_papers(
            papers,
            jobs=jobs,
            progress=progress,
            quick=not full,
            device=device,
            seed=seed,
            claim_ids=tuple(claim_ids),
            skip_benchmarks=skip_benchmarks,
            runs_dir=None if no_save else state.runs_dir,
            history=state.runs_dir,
            threads=threads,
        )
    if as_json:
        _emit_json([r.to_json() for r in reports])
    else:
        _results_table(reports)
        click.echo(_summary_line(reports, time.perf_counter() - start), err=True)
    if _save_failed(reports):
        sys.exit(2)
    sys.exit(0 if all(r.ok for r in reports) else 1)


# --- sheet / new / validate / schema ----------------------------------------------------------


@cli.command()
@click.argument("slugs", nargs=-1, shell_complete=_complete_slugs)
@click.option("--all", "all_papers", is_flag=True, help="Every paper (also the default).")
@click.option("--must-know", is_flag=True, help="The revision pack of the five must-know papers.")
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["md", "html", "anki", "tsv"]),
    help="Default: from the -o suffix, else md. anki: an .apkg deck; tsv: the cards as text.",
)
@click.option("--lang", type=click.Choice(["en", "zh"]), default="en", show_default=True)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="FILE (one paper, or several in one document) or DIR/ (a site: index + one page "
    "per paper); default: stdout.",
)
@pass_state
def sheet(state, slugs, all_papers, must_know, fmt, lang, output) -> None:
    """Study sheets with the latest verdicts (Markdown, HTML, Anki), in English or Chinese."""
    from repro.lab.publish import Request, publish

    request = Request(slugs, all_papers, must_know, fmt, lang, output)
    outcome = publish(state.library, state.runs_dir, request)
    for slug in outcome.missing or []:
        click.echo(f"note: must-know paper '{slug}' has no note yet; listed as missing", err=True)
    if outcome.written is None:
        click.echo(outcome.stdout, nl=False)
        return
    shown = outcome.written if len(outcome.written) <= 3 else outcome.written[-1:]
    for path in shown:
        click.echo(f"wrote {path}", err=True)
    if len(outcome.written) > 3:
        click.echo(f"({len(outcome.written)} files in {output})", err=True)


@cli.command()
@click.argument("slug")
@click.option("--title", required=True, help="The paper's title.")
@click.option("--arxiv", default="0000.00000", show_default=True, help="arXiv id, e.g. 2106.09685.")
@click.option("--year", default=date.today().year, show_default=True, type=int)
@pass_state
def new(state: State, slug: str, title: str, arxiv: str, year: int) -> None:
    """Scaffold papers/SLUG/ (note.yaml + repro.py) from the templates; never overwrites."""
    from repro.lab.scaffold import scaffold_paper

    folder = scaffold_paper(state.library.root, slug, title, arxiv, year)
    click.echo(f"created {folder}/note.yaml and {folder}/repro.py")
    click.echo(f"next: fill in the TODOs, then `paperlab validate {slug}`")


@cli.command()
@click.argument("slugs", nargs=-1, shell_complete=_complete_slugs)
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@pass_state
def validate(state: State, slugs: tuple[str, ...], as_json: bool) -> None:
    """Lint notes, their formulas and their claim wiring (no torch); exit 2 on any problem."""
    from repro.lab.mathcheck import note_math_problems

    report: dict[str, list[str]] = {}
    for paper in state.library.select(slugs):
        try:
            paper.note  # noqa: B018
        except NoteError as exc:
            report[paper.slug] = exc.problems
            continue
        shown = paper.display(paper.note_path)
        report[paper.slug] = paper.wiring_problems() + note_math_problems(paper.note_path, shown)
    bad = {slug: problems for slug, problems in report.items() if problems}
    if as_json:
        _emit_json({slug: {"ok": not p, "problems": p} for slug, p in report.items()})
    else:
        for problems in bad.values():
            for line in problems:
                click.echo(f"Error: {line}", err=True)
        click.echo(f"{len(report) - len(bad)}/{plural(len(report), 'note')} valid", err=True)
    sys.exit(2 if bad else 0)


@cli.command()
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this file instead of stdout.",
)
def schema(output: Path | None) -> None:
    """The JSON Schema of note.yaml (editors use it to complete and validate notes)."""
    from repro.lab.note import note_json_schema

    text = json.dumps(note_json_schema(), indent=2) + "\n"
    if output is None:
        click.echo(text, nl=False)
    else:
        _write_output(output, text)
        click.echo(f"wrote {output}", err=True)


# --- settings / runs ---------------------------------------------------------------------


@cli.command()
@click.argument("slug", shell_complete=_complete_slugs)
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@pass_state
def settings(state: State, slug: str, as_json: bool) -> None:
    """The experiment settings `run --set KEY=VALUE` accepts: type, range, quick and full value."""
    from rich.markup import escape

    from repro.lab.settings import as_set_value, describe_settings

    paper = state.library.get(slug)
    presets = getattr(paper.module(), "PRESETS", None)
    rows = describe_settings(presets) if presets else []
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        click.echo(f"{paper.slug} has no experiment settings", err=True)
        return
    from rich.table import Table

    table = Table(
        title=f"{paper.slug}: {plural(len(rows), 'setting')} (values as --set takes them)",
        title_justify="left",
    )
    for col in ("setting", "type", "quick", "full", "range", "meaning"):
        table.add_column(col, no_wrap=col == "setting", overflow="fold")
    for r in rows:
        cells = (r["name"], r["type"], as_set_value(r["quick"]), as_set_value(r["full"]),
                 r["bounds"] or "—", r["help"] or "")  # fmt: skip
        table.add_row(*(escape(c) for c in cells))
    _console().print(table)


@cli.command()
@click.argument("slug", required=False, shell_complete=_complete_slugs)
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
            _emit_json(
                {"a": a.to_json(), "b": b.to_json(), "changes": [c.to_json() for c in changes]}
            )
            return
        _diff_table(a, b, changes)
        return
    found = list_runs(state.runs_dir, slugs)
    found = found[:count] if count else found
    if as_json:
        _emit_json([r.to_json() for r in found])
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
    _console().print(table)


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
    _console().print(table)


def _cell(value: object) -> str:
    if isinstance(value, list | tuple):
        return ", ".join(format_value(v) for v in value)
    return format_value(value)


# --- bench ---------------------------------------------------------------------------------


@cli.group()
def bench() -> None:
    """Performance tables (attention kernels, KV-cache decoding, selective scan)."""


def _int_list(text: str, option: str) -> tuple[int, ...]:
    try:
        values = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise click.BadParameter(
            f"expected comma-separated integers, got '{text}'", param_hint=option
        ) from None
    if any(v <= 0 for v in values):
        raise click.BadParameter("values must be positive", param_hint=option)
    return values


@bench.command("attention")
@click.option(
    "--n",
    "ns_text",
    default="1024,2048,4096,8192",
    show_default=True,
    help="Sequence lengths (comma-separated).",
)
@click.option("--no-backward", is_flag=True, help="Forward only.")
@click.option("--device", default="cpu", show_default=True)
@click.option(
    "--dtype", type=click.Choice(["fp32", "fp16", "bf16"]), default="fp32", show_default=True
)
@click.option("--repeats", default=5, show_default=True, type=click.IntRange(1))
@click.option(
    "--memory",
    "memory_text",
    default="",
    help="Also measure peak extra memory of one forward at these N (fresh processes).",
)
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
def bench_attention_cmd(ns_text, no_backward, device, dtype, repeats, memory_text, as_json):
    """FlashAttention (tiled PyTorch on CPU, Triton on CUDA) vs SDPA: time, GFLOP/s, % of peak."""
    import torch

    from repro.bench.attention import IMPLS, bench_attention, measure_peak_memory
    from repro.lab.runner import resolve_device

    ns = _int_list(ns_text, "--n")
    memory_ns = _int_list(memory_text, "--memory") if memory_text else ()
    device = resolve_device(device)
    torch_dtype = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}[dtype]
    total = len(ns) * 2 * (1 if no_backward else 2)
    with _progress(not as_json) as progress:
        rows = bench_attention(
            ns,
            backward=not no_backward,
            device=device,
            dtype=torch_dtype,
            repeats=repeats,
            progress=lambda i, n, row: progress("attention benchmark", i, total),
        )
        memory = []
        for i, n in enumerate(memory_ns):
            for impl in IMPLS:
                if impl == "naive" and 4 * n * n * 8 > 16 * 2**30:
                    continue  # the (N, N) scores alone would not fit
                memory.append(
                    {
                        "n": n,
                        "impl": impl,
                        "extra_bytes": measure_peak_memory(n, impl, device=device),
                    }
                )
            progress("peak memory", i + 1, len(memory_ns))
    if as_json:
        _emit_json({"rows": rows, "memory": memory})
        return
    from rich.table import Table

    table = Table(
        title=f"attention, {device} {dtype}, B=1 H=8 D=64 — matmul peak "
        f"{rows[0]['peak_gflops']:.0f} GFLOP/s",
        title_justify="left",
    )
    for col in (
        "N",
        "causal",
        "pass",
        "flash ms",
        "SDPA ms",
        "flash/SDPA",
        "flash GFLOP/s",
        "flash % peak",
        "SDPA % peak",
    ):
        table.add_column(col, justify="right")
    for r in rows:
        table.add_row(
            str(r["n"]),
            "yes" if r["causal"] else "no",
            r["pass"],
            f"{r['flash_ms']:.1f}",
            f"{r['sdpa_ms']:.1f}",
            f"{r['ratio']:.2f}",
            f"{r['flash_gflops']:.0f}",
            _percent_of_peak(r["flash_frac_peak"]),
            _percent_of_peak(r["sdpa_frac_peak"]),
        )
    _console().print(table)
    if any(max(r["flash_frac_peak"], r["sdpa_frac_peak"]) > 1 for r in rows):
        click.echo(
            "* above 100% of the matmul peak: the peak was measured while the machine was busy, "
            "so every % of peak in this table is unreliable; rerun on an idle machine.",
            err=True,
        )
    if memory:
        mem = Table(title="peak extra memory of one forward", title_justify="left")
        for col in ("N", "impl", "extra MB", "(N, N) scores MB"):
            mem.add_column(col, justify="right")
        for m in memory:
            scores = 8 * m["n"] ** 2 * 4 / 2**20  # H = 8 fp32 score matrices
            mem.add_row(str(m["n"]), m["impl"], f"{m['extra_bytes'] / 2**20:.0f}", f"{scores:.0f}")
        _console().print(mem)


def _percent_of_peak(fraction: float) -> str:
    """A share of the calibrated peak; above 100% the calibration itself was disturbed."""
    return f"{100 * fraction:.0f}%" + ("*" if fraction > 1 else "")


@bench.command("decode")
@click.option(
    "--new-tokens",
    default=1024,
    show_default=True,
    type=click.IntRange(129),
    help="Tokens to decode; at least 129, because the table compares the first 64 decode "
    "steps with the last 64 and they must not overlap.",
)
@click.option("--prompt-len", default=16, show_default=True, type=click.IntRange(1))
@click.option("--device", default="cpu", show_default=True)
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1))
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
def bench_decode_cmd(new_tokens, prompt_len, device, repeats, as_json):
    """KV-cached decoding vs recomputing the prefix (tiny GPT: 4 layers, d 256, 4 heads)."""
    from repro.bench.decode import bench_decode
    from repro.lab.runner import resolve_device

    device = resolve_device(device)
    with _progress(not as_json) as progress:
        progress("decode benchmark", 0, 1)
        out = bench_decode(new_tokens, prompt_len, device=device, repeats=repeats)
        progress("decode benchmark", 1, 1)
    if as_json:
        _emit_json(out)
        return
    from rich.table import Table

    clock = "cpu" if device == "cpu" else "wall"
    table = Table(
        title=f"greedy decoding of {new_tokens} tokens after a {prompt_len}-token "
        f"prompt, {device} ({clock} time)",
        title_justify="left",
    )
    for col in ("", "total s", "ms/token first 64", "ms/token last 64", "last/first"):
        table.add_column(col, justify="right")
    for name in ("cached", "recompute"):
        table.add_row(
            name,
            f"{out[f'{name}_s_{clock}']:.2f}",
            f"{out[f'{name}_first_ms_{clock}']:.2f}",
            f"{out[f'{name}_last_ms_{clock}']:.2f}",
            f"{out[f'{name}_last_over_first_{clock}']:.2f}",
        )
    _console().print(table)
    click.echo(f"speed-up {out[f'speedup_{clock}']:.1f}x; identical tokens: {out['tokens_match']}")


@bench.command("scan")
@click.option(
    "--l",
    "ls_text",
    default="512,1024,2048,4096,8192",
    show_default=True,
    help="Sequence lengths (comma-separated).",
)
@click.option("--repeats", default=3, show_default=True, type=click.IntRange(1))
@click.option("--memory", is_flag=True, help="Also measure peak extra memory (fresh processes).")
@click.option("--decode-tokens", default=512, show_default=True, type=click.IntRange(129))
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
def bench_scan_cmd(ls_text, repeats, memory, decode_tokens, as_json):
    """Selective scan (loop, parallel) vs SDPA and naive attention over L; recurrent decoding."""
    from repro.bench.scan import IMPLS, bench_decode_recurrent, bench_scan, peak_memory

    lengths = _int_list(ls_text, "--l")
    with _progress(not as_json) as progress:
        out = bench_scan(
            lengths, repeats=repeats, progress=lambda i, n: progress("scan benchmark", i, n)
        )
        if memory:
            out["memory"] = [
                {"L": L, "impl": impl, "extra_bytes": peak_memory(impl, L)}
                for L in lengths
                for impl in IMPLS
            ]
        progress("decode benchmark", 0, 1)
        out["decode"] = bench_decode_recurrent(decode_tokens)
        progress("decode benchmark", 1, 1)
    if as_json:
        _emit_json(out)
        return
    from rich.table import Table

    table = Table(
        title=f"one layer's sequence mixing, CPU time, 1 thread, fp32, B=1: scan D={out['D']} "
        f"N={out['N']}, "
        f"causal attention H=1 Dh={out['Dh']}",
        title_justify="left",
    )
    table.add_column("L", justify="right")
    for impl in IMPLS:
        table.add_column(f"{impl} ms", justify="right")
    for L in lengths:
        ms = {r["impl"]: r["ms"] for r in out["rows"] if r["L"] == L}
        table.add_row(str(L), *(f"{ms[impl]:.1f}" for impl in IMPLS))
    if len(lengths) > 1:
        table.add_row("exponent", *(f"{out['exponents'][impl]:.2f}" for impl in IMPLS))
    _console().print(table)
    if memory:
        mem = Table(title="peak extra memory of one forward (MB)", title_justify="left")
        mem.add_column("L", justify="right")
        for impl in IMPLS:
            mem.add_column(impl, justify="right")
        for L in lengths:
            b = {m["impl"]: m["extra_bytes"] for m in out["memory"] if m["L"] == L}
            mem.add_row(str(L), *(f"{b[impl] / 2**20:.0f}" for impl in IMPLS))
        _console().print(mem)
    d = out["decode"]
    dec = Table(
        title=f"greedy decoding, {d['new_tokens']} tokens (cpu ms/token)", title_justify="left"
    )
    for col in ("", "params", "first 64", "last 64", "state/cache bytes at end"):
        dec.add_column(col, justify="right")
    dec.add_row(
        "Mamba step",
        f"{d['mamba_params']:,}",
        f"{d['mamba_first_ms']:.2f}",
        f"{d['mamba_last_ms']:.2f}",
        f"{d['mamba_state_bytes']:,}",
    )
    dec.add_row(
        "GPT KV cache",
        f"{d['gpt_params']:,}",
        f"{d['gpt_first_ms']:.2f}",
        f"{d['gpt_last_ms']:.2f}",
        f"{d['gpt_kv_bytes_at_end']:,}",
    )
    _console().print(dec)


def main() -> None:
    cli(prog_name="paperlab")


if __name__ == "__main__":
    main()
