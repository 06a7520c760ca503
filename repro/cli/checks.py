"""Running reproductions: `run`, `check` and the settings they accept."""

from __future__ import annotations

import functools
import os
import sys
import time

import click

from repro.cli.common import (
    DEVICE,
    VERDICT_STYLE,
    State,
    complete_claims,
    complete_set_keys,
    complete_slugs,
    console,
    emit_json,
    pass_state,
    progress_bar,
)
from repro.lab.errors import one_line
from repro.lab.format import format_seconds, format_value, plural, shorten, with_unit

SHOW_CHOICES = ("cited", "skipped", "verified", "all")  # what `check --show` lists per paper


def _results_table(reports: list) -> None:
    from rich.markup import escape
    from rich.table import Table

    table = Table(title_justify="left")
    for col in ("paper", "claim", "statement", "expected", "measured", "tolerance", "verdict"):
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
                escape(one_line(shorten(r.statement, 36))),
                escape(with_unit(r.expected, r.unit)),
                escape(one_line(measured)),
                escape(r.tolerance or "—"),
                f"[{style}]{r.verdict.value}[/]",
            )
    console().print(table)


def _summary_line(reports: list, seconds: float) -> str:
    counts: dict[str, int] = {}
    for report in reports:
        for r in report.results:
            counts[r.verdict.value] = counts.get(r.verdict.value, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"{plural(len(reports), 'paper')}: {parts or 'no claims'} in {format_seconds(seconds)}"


def _common_run_options(fn):
    fn = click.option(
        "--device", default="cpu", show_default=True, type=DEVICE, help="cpu, cuda, cuda:N or mps."
    )(fn)
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


def _executor_option(fn):
    """`--executor local|processes|dask://HOST:PORT` around a command: the sweeps, seeds and
    papers it fans out run there; the summary says where they ran."""

    @functools.wraps(fn)
    def wrapper(*args, executor: str | None = None, **kwargs):
        from repro import cluster

        spec = cluster.parse_executor(executor)
        with cluster.use(spec):
            try:
                return fn(*args, **kwargs)
            finally:
                placed = cluster.placements()
                if placed:
                    where = ", ".join(f"{w} ({n})" for w, n in sorted(placed.items()))
                    click.echo(f"{sum(placed.values())} tasks on {spec}: {where}", err=True)

    return click.option(
        "--executor", metavar="local|processes|dask://HOST:PORT",
        help="Where sweeps, seeds and papers run [default: local; env PAPERLAB_EXECUTOR].",
    )(wrapper)  # fmt: skip


def device_notes(reports: list, device: str) -> list[str]:
    """`note:` lines for the papers that did not run (all) on `device`: one line for every
    CPU-only paper together, one for each paper whose experiment runs on the CPU by design."""
    only = [r.paper for r in reports if r.environment.get("device_limit") == "CPU_ONLY"]
    if len(only) == 1:
        (report,) = (r for r in reports if r.paper == only[0])
        lines = [f"note: {report.environment['device_note']}"]
    elif only:
        lines = [f"note: {plural(len(only), 'paper')} run on the CPU only (--device {device} not "
                 f"used; `paperlab settings SLUG` says why): {', '.join(only)}"]  # fmt: skip
    else:
        lines = []
    return lines + [
        f"note: {r.environment['device_note']}"
        for r in reports
        if r.environment.get("device_limit") == "CPU_EXPERIMENT"
    ]


def _save_failed(reports: list) -> bool:
    """After the results are printed: one `Error:` line per run that could not be saved."""
    failed = [r for r in reports if r.save_error]
    for r in failed:
        click.echo(f"Error: {one_line(r.save_error)}", err=True)
    return bool(failed)


@click.command()
@click.argument("slug", shell_complete=complete_slugs)
@click.option("--quick", is_flag=True, help="The quick preset (seconds) instead of the full one.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    shell_complete=complete_set_keys,
    help="Override an experiment setting (repeatable; `paperlab settings SLUG` lists them).",
)
@click.option("--yes", is_flag=True, help="Run even when --set asks for ≥ 100× the full preset.")
@click.option("-v", "--verbose", is_flag=True, help="Also print the experiment's metrics.")
@click.option(
    "--seeds", "seeds_text", metavar="N|S1,S2,…",
    help="Run once per seed (3 → 0,1000,2000) and print each claim's spread and a suggested "
    "tolerance with a margin beyond the worst seed.",
)  # fmt: skip
@_common_run_options
@pass_state
@_executor_option
def run(
    state, slug, quick, overrides, yes, verbose, seeds_text, device, seed, no_save, threads,
    as_json,
) -> None:  # fmt: skip
    """Run a paper's experiment and check its claims; results go to runs/<slug>/<stamp>/."""
    from repro.lab.runner import check_setting_keys, run_paper

    paper = state.library.get(slug)
    check_setting_keys(paper, tuple(overrides))  # a typo gets its suggestion before torch loads
    if seeds_text is not None:
        _run_seeds(state, paper, seeds_text, quick, overrides, yes, device, no_save, threads,
                   as_json)  # fmt: skip
        return
    start = time.perf_counter()
    with progress_bar(not as_json) as progress:
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
    for line in device_notes([report], device):
        click.echo(line, err=True)
    if as_json:
        emit_json(report.to_json())
    else:
        if report.metrics and verbose:  # the metrics are always in the saved run
            from rich.pretty import Pretty

            console().print(Pretty(report.metrics, max_length=12))
        _results_table([report])
        err = report.environment.get("experiment_error")
        if err:
            click.echo(f"Error: {one_line(err)}", err=True)
        where = f"; saved to {report.run_dir}" if report.run_dir else ""
        click.echo(_summary_line([report], time.perf_counter() - start) + where, err=True)
    if _save_failed([report]):
        sys.exit(2)
    sys.exit(0 if report.ok else 1)


@click.command()
@click.argument("slugs", nargs=-1, shell_complete=complete_slugs)
@click.option("--full", is_flag=True, help="The full preset (minutes) instead of the quick one.")
@click.option(
    "--claim",
    "claim_ids",
    multiple=True,
    metavar="ID",
    shell_complete=complete_claims,
    help="Only this claim id (repeatable); without SLUGS, only the papers that have it.",
)
@click.option("-k", "keyword", metavar="EXPR",
              help="Only claims whose id contains these words: 'rank and not memory'.")  # fmt: skip
@click.option("--lf", "--last-failed", "last_failed", is_flag=True,
              help="Only the claims that failed or errored in their last stored run.")  # fmt: skip
@click.option("-x", "--exitfirst", is_flag=True, help="Stop at the first paper with a failure.")
@click.option("--skip-benchmarks", is_flag=True, help="Leave out wall-clock timing claims.")
@click.option(
    "--jobs", type=click.IntRange(1), default=None,
    help="Papers checked at once, each in its own process [default: one per CPU core; 1 on cuda].",
)  # fmt: skip
@click.option("--show", "show", multiple=True, type=click.Choice(SHOW_CHOICES),
              help="Also list these claims under their paper (repeatable).")  # fmt: skip
@click.option("-v", "--verbose", is_flag=True, help="List every claim (same as --show all).")
@click.option("-q", "--quiet", is_flag=True, help="Only failures and the summary line.")
@click.option("--durations", type=click.IntRange(0), default=None, metavar="N",
              help="Then list the N slowest papers (0: all).")  # fmt: skip
@_common_run_options
@pass_state
@_executor_option
def check(
    state, slugs, full, claim_ids, keyword, last_failed, exitfirst, skip_benchmarks, jobs, show,
    verbose, quiet, durations, device, seed, no_save, threads, as_json,
) -> None:  # fmt: skip
    """Verify claims (all papers when none is named), reporting each paper as it finishes;
    exit 1 if any claim fails or errors."""
    from repro.lab.library import notes_or_error
    from repro.lab.selection import select_claims

    papers = state.library.select(slugs)
    notes_or_error(papers)  # every note must load before anything runs; all problems at once
    chosen = select_claims(
        papers,
        named=bool(slugs),
        claim_ids=tuple(claim_ids),
        keyword=keyword,
        failed_first=state.runs_dir if last_failed else None,
    )
    for line in chosen.notes:  # how the papers were chosen (stderr: --json stays plain)
        click.echo(one_line(line), err=True)
    start = time.perf_counter()
    if jobs is None:  # one paper per core; a GPU is shared by one process at a time
        jobs = 1 if device != "cpu" else min(len(chosen.papers), os.cpu_count() or 1)
    from repro.cli.report import CheckReporter, print_durations, print_failures, summary_text
    from repro.lab.runner import Reporter, run_papers

    slugs_run = [p.slug for p in chosen.papers]
    if as_json:
        reporter = Reporter()
    else:
        if not sys.stdout.isatty() and not quiet:
            preset = "full" if full else "quick"
            at_once = max(1, min(jobs, len(slugs_run)))
            click.echo(f"checking {plural(len(slugs_run), 'paper')} ({preset} preset, "
                       f"{at_once} at a time)")  # fmt: skip
        reporter = CheckReporter(slugs_run, quiet=quiet, show=frozenset(show) | (
            {"all"} if verbose else set()))  # fmt: skip
    try:
        reports = run_papers(
            chosen.papers,
            jobs=jobs,
            reporter=reporter,
            exitfirst=exitfirst,
            claims=chosen.claims,
            quick=not full,
            device=device,
            seed=seed,
            skip_benchmarks=skip_benchmarks,
            runs_dir=None if no_save else state.runs_dir,
            history=state.runs_dir,
            threads=threads,
        )
    finally:
        if isinstance(reporter, CheckReporter):
            reporter.close()
    for line in device_notes(reports, device):
        click.echo(line, err=True)
    if as_json:
        emit_json([r.to_json() for r in reports])
    else:
        out = console()
        print_failures(out, reports)
        if durations is not None:
            print_durations(out, reports, durations)
        stopped = exitfirst and len(reports) < len(chosen.papers)
        out.print(summary_text(reports, time.perf_counter() - start, stopped))
    if _save_failed(reports):
        sys.exit(2)
    sys.exit(0 if all(r.ok for r in reports) else 1)


@click.command()
@click.argument("slug", shell_complete=complete_slugs)
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@pass_state
def settings(state: State, slug: str, as_json: bool) -> None:
    """The experiment settings `run --set KEY=VALUE` accepts: type, range, quick and full value."""
    from rich.markup import escape

    from repro.lab.settings import as_set_value, describe_settings, device_limit

    paper = state.library.get(slug)
    presets = getattr(paper.module(), "PRESETS", None)
    rows = describe_settings(presets) if presets else []
    if as_json:
        emit_json(rows)
        return
    limit = device_limit(presets["full"] if presets else getattr(paper.module(), "Config", None))
    if limit is not None:  # on stderr: the table stays the settings alone
        if limit[0] == "CPU_ONLY":
            click.echo(f"{paper.slug} runs on the CPU only: {one_line(limit[1])}", err=True)
        else:
            click.echo(f"{paper.slug} runs its experiment on the CPU ({one_line(limit[1])}); "
                       "--device reaches its timing checks", err=True)  # fmt: skip
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
    console().print(table)


def _run_seeds(state, paper, seeds_text, quick, overrides, yes, device, no_save, threads, as_json):
    """`run --seeds`: the experiment once per seed, then each claim's spread."""
    from rich.markup import escape
    from rich.table import Table

    from repro import cluster
    from repro.lab.runner import run_paper, store_report
    from repro.lab.seeds import parse_seeds, seed_spreads

    seeds = parse_seeds(seeds_text)
    reports = []
    options = {"quick": quick, "experiment": True, "device": device, "threads": threads,
               "overrides": tuple(overrides), "confirmed": yes}  # fmt: skip
    executor = cluster.current()
    remote = {  # every seed at once on the cluster; the client stores the runs
        seed: cluster.submit(executor, cluster.run_paper_at, paper.slug, str(paper.folder),
                             {**options, "seed": seed})  # fmt: skip
        for seed in seeds
    } if executor is not None else {}  # fmt: skip

    def run_one(seed: int):
        if seed in remote:
            report = cluster.result(remote[seed])
            if not no_save:
                store_report(report, state.runs_dir, quick, tuple(overrides))
        else:
            with progress_bar(not as_json) as progress:
                report = run_paper(
                    paper, seed=seed, progress=progress,
                    runs_dir=None if no_save else state.runs_dir, **options,
                )  # fmt: skip
        reports.append(report)
        if not as_json:
            click.echo(f"{paper.slug} seed {seed}: {_verdict_counts(report)}", err=True)
        return report.results

    spreads = seed_spreads(paper.note.claims, seeds, run_one)
    for line in device_notes(reports[:1], device):  # the same for every seed
        click.echo(line, err=True)
    if as_json:
        emit_json({"paper": paper.slug, "seeds": seeds, "claims": [s.to_json() for s in spreads]})
    else:
        table = Table(title=f"{paper.slug}: {len(seeds)} seeds", title_justify="left")
        for col in ("claim", "kind", *[f"seed {s}" for s in seeds], "spread", "tolerance",
                    "all pass", "suggested"):  # fmt: skip
            table.add_column(col, no_wrap=col == "claim", overflow="fold")
        for sp in spreads:
            summary = sp.summary()
            spread = "—" if summary is None else (
                f"{format_value(summary['min'])} … {format_value(summary['max'])}"
            )  # fmt: skip
            table.add_row(
                sp.claim, sp.kind, *[escape(format_value(sp.values.get(s))) for s in seeds],
                spread, sp.tolerance or "—", "yes" if all(sp.passes.values()) else "no",
                sp.suggested or "—",
            )  # fmt: skip
        console().print(table)
    if _save_failed(reports):
        sys.exit(2)
    sys.exit(0 if all(r.ok for r in reports) else 1)


def _verdict_counts(report) -> str:
    counts: dict[str, int] = {}
    for r in report.results:
        counts[r.verdict.value] = counts.get(r.verdict.value, 0) + 1
    return ", ".join(f"{n} {k}" for k, n in sorted(counts.items())) or "no claims"
