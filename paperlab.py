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

from repro.lab.errors import NoteError, PaperlabError
from repro.lab.library import PAPERS_ENV, Library, Paper

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
                click.echo(f"Error: {line}", err=True)
            ctx.exit(2)


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
        except NoteError as exc:
            rows.append({"slug": slug, "error": f"invalid note ({len(exc.problems)} problems)"})
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

    table = Table(title=f"paperlab — {len(rows)} papers", title_justify="left")
    for col in ("paper", "title", "year", "priority", "claims"):
        table.add_column(col, overflow="fold")
    for r in rows:
        if "error" in r:
            table.add_row(r["slug"], f"[red]{r['error']}[/]", "", "", "")
            continue
        claims = ", ".join(
            f"[{VERDICT_STYLE.get(k, '')}]{n} {k}[/]" for k, n in sorted(r["claims"].items())
        )
        table.add_row(r["slug"], r["title"], str(r["year"]), r["priority"], claims or "—")
    _console().print(table)


@cli.command()
@click.argument("slug")
@pass_state
def show(state: State, slug: str) -> None:
    """A paper's note, rendered in the terminal."""
    from rich.markdown import Markdown

    from repro.lab.runner import latest_results
    from repro.lab.sheets import render_sheet

    paper = state.library.get(slug)
    text = render_sheet(paper, latest_results(state.runs_dir, paper.slug), "md")
    _console().print(Markdown(text))


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
    from rich.table import Table

    from repro.lab.sheets import format_value

    table = Table(title_justify="left")
    for col in ("paper", "claim", "kind", "expected", "measured", "tolerance", "verdict"):
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
                f"{format_value(r.expected)} {r.unit}".rstrip(),
                measured,
                r.tolerance or "—",
                f"[{style}]{r.verdict.value}[/]",
            )
    _console().print(table)


def _summary_line(reports: list, seconds: float) -> str:
    counts: dict[str, int] = {}
    for report in reports:
        for r in report.results:
            counts[r.verdict.value] = counts.get(r.verdict.value, 0) + 1
    parts = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    return f"{len(reports)} papers: {parts or 'no claims'} in {seconds:.1f}s"


def _common_run_options(fn):
    fn = click.option("--device", default="cpu", show_default=True, help="cpu or cuda.")(fn)
    fn = click.option("--seed", default=0, show_default=True, type=int)(fn)
    fn = click.option("--no-save", is_flag=True, help="Don't store results under runs/.")(fn)
    fn = click.option(
        "--threads", default=1, show_default=True, type=click.IntRange(1),
        help="torch CPU threads (the tiny experiments are fastest on one).",
    )(fn)  # fmt: skip
    fn = click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")(fn)
    return fn


@cli.command()
@click.argument("slug")
@click.option("--quick", is_flag=True, help="The quick preset (seconds) instead of the full one.")
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override an experiment setting (repeatable).",
)
@_common_run_options
@pass_state
def run(state, slug, quick, overrides, device, seed, no_save, threads, as_json) -> None:
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
        )
    if as_json:
        _emit_json(report.to_json())
    else:
        if report.metrics:
            from rich.pretty import Pretty

            _console().print(Pretty(report.metrics, max_length=12))
        _results_table([report])
        err = report.environment.get("experiment_error")
        if err:
            click.echo(f"Error: {err}", err=True)
        where = f"; saved to {report.run_dir}" if report.run_dir else ""
        click.echo(_summary_line([report], time.perf_counter() - start) + where, err=True)
    sys.exit(0 if report.ok else 1)


@cli.command()
@click.argument("slugs", nargs=-1)
@click.option("--full", is_flag=True, help="The full preset (minutes) instead of the quick one.")
@click.option("--claim", "claim_ids", multiple=True, help="Only this claim id (repeatable).")
@click.option("--skip-benchmarks", is_flag=True, help="Leave out wall-clock timing claims.")
@_common_run_options
@pass_state
def check(
    state, slugs, full, claim_ids, skip_benchmarks, device, seed, no_save, threads, as_json
) -> None:
    """Verify claims (all papers when none is named); exit 1 if any fails."""
    from repro.lab.runner import run_paper

    papers = state.library.select(slugs)
    for paper in papers:  # every note must load before anything runs
        paper.note  # noqa: B018
    start = time.perf_counter()
    reports = []
    with _progress(not as_json) as progress:
        for paper in papers:
            reports.append(
                run_paper(
                    paper,
                    quick=not full,
                    device=device,
                    seed=seed,
                    claim_ids=tuple(claim_ids),
                    skip_benchmarks=skip_benchmarks,
                    progress=progress,
                    runs_dir=None if no_save else state.runs_dir,
                    threads=threads,
                )
            )
    if as_json:
        _emit_json([r.to_json() for r in reports])
    else:
        _results_table(reports)
        click.echo(_summary_line(reports, time.perf_counter() - start), err=True)
    sys.exit(0 if all(r.ok for r in reports) else 1)


# --- sheet / new / validate / schema ----------------------------------------------------------


@cli.command()
@click.argument("slugs", nargs=-1)
@click.option(
    "--format", "fmt", type=click.Choice(["md", "html", "anki"]), default="md", show_default=True
)
@click.option(
    "-o",
    "--output",
    type=click.Path(path_type=Path),
    help="A file (one paper, or anki) or a folder (several); default: stdout.",
)
@pass_state
def sheet(state: State, slugs: tuple[str, ...], fmt: str, output: Path | None) -> None:
    """Study sheets with the latest verdicts (Markdown, HTML, or an Anki deck)."""
    from repro.lab.runner import latest_results
    from repro.lab.sheets import default_output, render_cards, render_sheet

    papers = state.library.select(slugs)
    if fmt == "anki":
        texts = {"paperlab-deck": render_cards(papers)}
    else:
        texts = {
            p.slug: render_sheet(p, latest_results(state.runs_dir, p.slug), fmt) for p in papers
        }
    if output is None:
        click.echo("\n\n".join(texts.values()), nl=False)
        return
    if len(texts) == 1 and not output.is_dir():
        targets = {output: next(iter(texts.values()))}
    else:
        output.mkdir(parents=True, exist_ok=True)
        targets = {default_output(name, fmt, output): text for name, text in texts.items()}
    for path, text in targets.items():
        path.write_text(text, encoding="utf-8")
        click.echo(f"wrote {path}", err=True)


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
@click.argument("slugs", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="Plain JSON on stdout.")
@pass_state
def validate(state: State, slugs: tuple[str, ...], as_json: bool) -> None:
    """Lint notes and their claim wiring (without importing torch); exit 2 on any problem."""
    report: dict[str, list[str]] = {}
    for paper in state.library.select(slugs):
        try:
            paper.note  # noqa: B018
        except NoteError as exc:
            report[paper.slug] = exc.problems
            continue
        report[paper.slug] = paper.wiring_problems()
    bad = {slug: problems for slug, problems in report.items() if problems}
    if as_json:
        _emit_json({slug: {"ok": not p, "problems": p} for slug, p in report.items()})
    else:
        for problems in bad.values():
            for line in problems:
                click.echo(f"Error: {line}", err=True)
        click.echo(f"{len(report) - len(bad)}/{len(report)} notes valid", err=True)
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
        output.write_text(text, encoding="utf-8")
        click.echo(f"wrote {output}", err=True)


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
            f"{100 * r['flash_frac_peak']:.0f}%",
            f"{100 * r['sdpa_frac_peak']:.0f}%",
        )
    _console().print(table)
    if memory:
        mem = Table(title="peak extra memory of one forward", title_justify="left")
        for col in ("N", "impl", "extra MB", "(N, N) scores MB"):
            mem.add_column(col, justify="right")
        for m in memory:
            scores = 8 * m["n"] ** 2 * 4 / 2**20  # H = 8 fp32 score matrices
            mem.add_row(str(m["n"]), m["impl"], f"{m['extra_bytes'] / 2**20:.0f}", f"{scores:.0f}")
        _console().print(mem)


@bench.command("decode")
@click.option("--new-tokens", default=1024, show_default=True, type=click.IntRange(129))
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
