"""Run a paper's experiment and checks, and keep the results.

Conventions a `repro.py` follows (see templates/repro.py.j2):
- `Config`, a dataclass of the experiment's settings, and `PRESETS = {"quick": …, "full": …}`;
- `experiment(cfg, ctx) -> dict` of metrics (optional for papers whose claims are arithmetic);
- one `@claim("id")` function per non-cited claim of the note, taking the `Context`.

Results go to `runs/<slug>/<UTC stamp>/` (config, metrics, claims, environment, log). The folder
is assembled under a hidden temporary name and renamed at the end, so an interrupted run leaves
no half-written result behind.
"""

from __future__ import annotations

import ast
import dataclasses
import difflib
import json
import math
import os
import platform
import shutil
import subprocess
import time
import traceback
import typing
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from repro.lab.claims import ClaimResult, Context, Measured, ProgressFn, SkipClaim, Verdict, within
from repro.lab.errors import BadOption
from repro.lab.format import format_number
from repro.lab.library import REPO_ROOT, Paper
from repro.lab.runs import new_stamp, partial_dir, publish, remove_stale_partials
from repro.lab.settings import config_problems, device_limit, is_parallel
from repro.lab.threads import torch_threads

# --- configuration -------------------------------------------------------------------------


def _coerce(text: str, annotation: Any, name: str) -> Any:
    """Turn the text of `--set name=text` into the field's type."""
    origin = typing.get_origin(annotation)
    if origin in (tuple, list):
        (inner, *_) = typing.get_args(annotation) or (str,)
        items = [_coerce(t.strip(), inner, name) for t in text.split(",") if t.strip()]
        return tuple(items) if origin is tuple else items
    if annotation is bool:
        lowered = text.lower()
        if lowered not in ("true", "false", "1", "0", "yes", "no"):
            raise BadOption(f"--set {name}: expected true or false, got '{text}'")
        return lowered in ("true", "1", "yes")
    if annotation in (int, float):
        try:
            value = annotation(text)
        except ValueError:
            raise BadOption(f"--set {name}: expected {annotation.__name__}, got '{text}'") from None
        if not math.isfinite(value):
            raise BadOption(f"--set {name}: expected a finite number, got '{text}'")
        return value
    return text


# An override this many times the full preset's work needs --yes: a typo (an extra 000) must not
# start a run of days without a word.
OVERSIZE_FACTOR = 100


def _size(value: Any) -> float | None:
    """How much work a setting stands for: an int, or the sum of an int tuple's items."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return float(value)
    if isinstance(value, tuple | list) and value and all(isinstance(v, int) for v in value):
        return float(sum(value))
    return None


def work_estimate(cfg: Any, full: Any) -> tuple[float, list[str]]:
    """How many times the full preset's work `cfg` asks for (the product of the growth of its
    integer settings: steps, widths, counts), and which settings grew."""
    factor, grown = 1.0, []
    for f in dataclasses.fields(cfg):
        if f.name == "seed" or f.name.endswith("_seed") or is_parallel(f):
            continue  # a seed is a label and a worker count a speed, not an amount of work
        new, old = _size(getattr(cfg, f.name)), _size(getattr(full, f.name))
        if new is not None and old and old > 0 and new > old:
            factor *= new / old
            grown.append(f"{f.name}={getattr(cfg, f.name)}, full preset {getattr(full, f.name)}")
    return factor, grown


def make_config(
    module: Any, quick: bool, overrides: tuple[str, ...] = (), *, confirmed: bool = True
) -> Any:
    """The paper's quick or full preset with `key=value` overrides checked against its fields
    and their declared ranges; an override of ≥ 100× the full preset's work needs `confirmed`."""
    presets = getattr(module, "PRESETS", None)
    if presets is None:
        if overrides:
            raise BadOption("this paper has no experiment settings to --set")
        return None
    cfg = presets["quick" if quick else "full"]
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for item in overrides:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep:
            raise BadOption(f"--set expects key=value, got '{item}'")
        if key not in names:
            raise BadOption(unknown_setting(key, names))
        changes[key] = _coerce(value.strip(), hints[key], key)
    try:
        cfg = dataclasses.replace(cfg, **changes)
    except (ValueError, TypeError, AssertionError) as exc:  # a Config's own __post_init__ check
        raise BadOption(f"--set: {exc}") from None
    problems = config_problems(cfg)
    if problems:
        raise BadOption("--set: " + "; ".join(problems))
    factor, grown = work_estimate(cfg, presets["full"])
    if factor >= OVERSIZE_FACTOR and not confirmed:
        raise BadOption(
            f"--set asks for about {format_number(factor)}× the work of the full preset "
            f"({', '.join(grown)}); add --yes to run it anyway"
        )
    return cfg


def unknown_setting(key: str, names: list[str]) -> str:
    """The message for an unknown `--set` key, with the closest setting when one is close."""
    close = difflib.get_close_matches(key, names, n=1, cutoff=0.6)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"--set: unknown setting '{key}'{hint} (settings: {', '.join(names)})"


def setting_names(path: Path) -> list[str] | None:
    """The fields of a repro.py's `class Config`, read from its syntax tree: no import, so no
    torch. None when they cannot be told that way (no such class, a base class, unparsable)."""
    try:
        tree = ast.parse(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, SyntaxError, ValueError, RecursionError, MemoryError):
        return None
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and node.name == "Config":
            if node.bases or node.keywords:
                return None  # inherited fields are not in this file
            return [
                n.target.id
                for n in node.body
                if isinstance(n, ast.AnnAssign)
                and isinstance(n.target, ast.Name)
                and "ClassVar" not in ast.unparse(n.annotation)
            ]
    return None


def check_setting_keys(paper: Paper, overrides: tuple[str, ...]) -> None:
    """Unknown `--set` keys, refused with a suggestion before the paper (and torch) is imported;
    values and everything else are checked by `make_config` after the import."""
    names = setting_names(paper.repro_path)
    if names is None:
        return
    for item in overrides:
        key, sep, _ = item.partition("=")
        if sep and key.strip() not in names:
            raise BadOption(unknown_setting(key.strip(), names))


def config_dict(cfg: Any) -> dict:
    return dataclasses.asdict(cfg) if dataclasses.is_dataclass(cfg) else {}


# --- running -------------------------------------------------------------------------------


def resolve_device(device: str) -> str:
    if device == "cpu":
        return device
    if device.startswith("cuda"):
        import torch

        if not torch.cuda.is_available():
            raise BadOption(f"--device {device}: CUDA is not available on this machine")
        index = device.partition(":")[2]
        if index and int(index) >= torch.cuda.device_count():
            raise BadOption(
                f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)"
            )
        return device
    if device == "mps":
        import torch

        if not torch.backends.mps.is_available():
            raise BadOption("--device mps: Apple's Metal (MPS) is not available on this machine")
        return device
    raise BadOption(f"--device: expected cpu, cuda, cuda:N or mps, got '{device}'")


def _now() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def check_claim(paper: Paper, claim_id: str, ctx: Context) -> ClaimResult:
    """Run one claim's check and judge it; never raises for a failing or crashing check."""
    c = next(c for c in paper.note.claims if c.id == claim_id)
    result = ClaimResult(
        paper=paper.slug,
        id=c.id,
        statement=c.statement,
        kind=c.kind,
        expected=c.expected,
        tolerance=c.tolerance_text,
        verdict=Verdict.CITED,
        unit=c.unit,
        when=_now(),
    )
    if c.kind == "cited":
        result.message = c.why or ""
        return result
    checks = paper.checks()
    if c.id not in checks:
        result.verdict, result.message = Verdict.ERROR, "no @claim function in repro.py"
        return result
    _, fn = checks[c.id]
    start = time.perf_counter()
    try:
        from repro.lab.seeding import seed_everything

        seed_everything(ctx.seed)
        out = fn(ctx)
    except SkipClaim as exc:
        result.verdict, result.message = Verdict.SKIPPED, str(exc)
    except Exception as exc:
        result.verdict, result.message = Verdict.ERROR, f"{type(exc).__name__}: {exc}"
        result.details = {"traceback": traceback.format_exc()}
    else:
        measured = out if isinstance(out, Measured) else Measured(out)
        result.measured = _plain(measured.value)
        result.details = {k: _plain(v) for k, v in measured.details.items()}
        ok = within(result.measured, c.expected, c.tolerance)
        result.verdict = Verdict.VERIFIED if ok else Verdict.FAILED
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def _plain(value: Any) -> Any:
    """Tensors and NumPy scalars → Python values, so results are JSON."""
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 0) == 0:
        return value.item()
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


@dataclass
class RunReport:
    paper: str
    config: dict
    metrics: dict | None
    results: list[ClaimResult]
    run_dir: Path | None = None
    seconds: float = 0.0
    cpu_seconds: float = 0.0
    environment: dict = field(default_factory=dict)
    save_error: str = ""  # why a run that was to be saved was not (the results are still here)

    @property
    def ok(self) -> bool:
        return all(r.verdict not in (Verdict.FAILED, Verdict.ERROR) for r in self.results)

    def to_json(self) -> dict:
        return {
            "paper": self.paper,
            "ok": self.ok,
            "config": self.config,
            "metrics": self.metrics,
            "claims": [r.to_json() for r in self.results],
            "run_dir": str(self.run_dir) if self.run_dir else None,
            "seconds": self.seconds,
            "cpu_seconds": self.cpu_seconds,
            "save_error": self.save_error or None,
        }


def run_paper(
    paper: Paper,
    *,
    quick: bool = True,
    experiment: bool = False,
    device: str = "cpu",
    seed: int = 0,
    overrides: tuple[str, ...] = (),
    claim_ids: tuple[str, ...] = (),
    skip_benchmarks: bool = False,
    progress: ProgressFn | None = None,
    runs_dir: Path | None = None,
    threads: int | None = 1,
    confirmed: bool = True,
) -> RunReport:
    """Check a paper's claims (and run its experiment first when `experiment`); save if asked.

    `threads` torch CPU threads (None: torch's default); see repro.lab.threads for why one.
    `confirmed=False` refuses overrides of ≥ 100× the full preset's work (see make_config).
    A run that cannot be saved still returns its results, with `save_error` saying why.
    """
    if seed < 0:
        raise BadOption(f"--seed must be ≥ 0, got {seed}")
    with torch_threads(threads):
        return _run_paper(
            paper, quick, experiment, device, seed, overrides, claim_ids, skip_benchmarks,
            progress, runs_dir, confirmed,
        )  # fmt: skip


def longest_first(papers: list[Paper], history: Path | None, preset: str = "quick") -> list[int]:
    """Indices of `papers` in the order to start them: longest latest stored `preset` run first.
    Papers without one go ahead of all (their time is unknown), the longest `repro.py` first: a
    crude guess at the biggest experiment, replaced by the real time after the paper's first run.
    Started this way, the workers tend to finish together, instead of one checking a slow paper
    while the other idles."""
    from repro.lab.runs import last_seconds

    def seconds(paper: Paper) -> float:
        found = last_seconds(history, paper.slug, preset) if history is not None else None
        return math.inf if found is None else found

    def source_size(paper: Paper) -> int:
        try:
            return paper.repro_path.stat().st_size
        except OSError:
            return 0

    keys = [(seconds(paper), source_size(paper)) for paper in papers]
    return sorted(range(len(papers)), key=lambda i: keys[i], reverse=True)


class Reporter:
    """What `run_papers` tells its caller while it works (the CLI prints it; the base class
    ignores everything). Calls come from the calling process and thread, in the order the
    events happened: `started` when a paper begins, `progress` for its claims and its
    experiment's own steps, `finished` with its report as soon as it is done."""

    def started(self, slug: str) -> None:
        pass

    def progress(self, slug: str, description: str, completed: int, total: int) -> None:
        pass

    def finished(self, report: RunReport) -> None:
        pass


def run_papers(
    papers: list[Paper],
    *,
    jobs: int = 1,
    progress: ProgressFn | None = None,
    history: Path | None = None,
    reporter: Reporter | None = None,
    exitfirst: bool = False,
    claims: dict[str, tuple[str, ...]] | None = None,
    **kwargs: Any,
) -> list[RunReport]:
    """`run_paper` over several papers, `jobs` worker processes at a time; reports keep the
    papers' order. The papers are independent, so two cores check them in about half the time;
    they start longest first, going by the stored runs under `history` (see `longest_first`).
    Workers are spawned, not forked: a forked torch can deadlock in its thread pools.

    `reporter` hears of each paper as it starts, progresses and finishes. `claims` maps a slug
    to the claim ids to check in it (instead of `claim_ids` for all). With `exitfirst`, the first
    paper with a failed or crashed claim stops the rest: no new paper starts, papers still
    running are stopped, and only the finished papers' reports are returned."""
    reporter = reporter or Reporter()

    def options(paper: Paper) -> dict[str, Any]:
        if claims is not None and paper.slug in claims:
            return {**kwargs, "claim_ids": claims[paper.slug]}
        return kwargs

    from repro import cluster

    executor = cluster.current()
    if executor is not None:
        return _run_on_executor(executor, papers, options, reporter, exitfirst)

    if jobs <= 1 or len(papers) <= 1:
        reports = []
        for paper in papers:

            def forward(description: str, completed: int, total: int, slug=paper.slug) -> None:
                if progress is not None:
                    progress(description, completed, total)
                reporter.progress(slug, description, completed, total)

            reporter.started(paper.slug)
            report = run_paper(paper, progress=forward, **options(paper))
            reporter.finished(report)
            reports.append(report)
            if exitfirst and not report.ok:
                break
        return reports
    import multiprocessing
    import queue as queue_module
    from concurrent.futures import ProcessPoolExecutor, wait

    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, ProcessPoolExecutor(jobs, mp_context=context) as pool:
        events = manager.Queue()  # the workers' reports of starts and progress, replayed here
        started = {
            i: pool.submit(
                _run_in_worker, papers[i].slug, papers[i].folder, events, options(papers[i])
            )
            for i in longest_first(
                papers, history, "quick" if kwargs.get("quick", True) else "full"
            )
        }
        futures = [started[i] for i in range(len(papers))]
        pending, finished = set(futures), set()
        stop = False
        while pending and not stop:
            done, pending = wait(pending, timeout=0.2)
            _replay(events, queue_module.Empty, progress, reporter)
            for future in [f for f in futures if f in done]:  # the papers' order
                report = future.result()
                finished.add(future)
                reporter.finished(report)
                if exitfirst and not report.ok:
                    stop = True
        if stop:
            _stop_pool(pool)
        return [f.result() for f in futures if f in finished]


def _run_on_executor(
    executor: Any, papers: list[Paper], options: Any, reporter: Reporter, exitfirst: bool
) -> list[RunReport]:
    """Papers on `--executor processes|dask://…`: the workers compute with no runs folder and
    the reports come back here, where they are stored (the plots stay on the workers)."""
    from concurrent.futures import as_completed

    from repro import cluster

    futures = {}
    for i, paper in enumerate(papers):
        kwargs = dict(options(paper))
        runs_dir = kwargs.pop("runs_dir", None)
        kwargs.pop("progress", None)
        reporter.started(paper.slug)
        future = cluster.submit(executor, cluster.run_paper_at, paper.slug, str(paper.folder),
                                kwargs)  # fmt: skip
        futures[future] = (i, runs_dir, kwargs)
    reports: dict[int, RunReport] = {}
    for future in as_completed(futures):
        i, runs_dir, kwargs = futures[future]
        report = cluster.result(future)
        if runs_dir is not None:
            store_report(report, runs_dir, kwargs.get("quick", True), kwargs.get("overrides", ()))
        reporter.finished(report)
        reports[i] = report
        if exitfirst and not report.ok:
            for other in futures:
                other.cancel()
            break
    return [reports[i] for i in sorted(reports)]


def store_report(report: RunReport, runs_dir: Path, quick: bool, overrides: tuple) -> None:
    """Store a report computed elsewhere (a cluster worker) under `runs_dir` like a local run."""
    tmp, error = _start_partial(runs_dir, report.paper)
    if tmp is None:
        report.save_error = error
        return
    try:
        report.run_dir = _save(report, tmp, quick, tuple(overrides))
    except OSError as exc:
        report.save_error = f"results not saved to {runs_dir}: {_why(exc)}"
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _replay(events: Any, empty: type, progress: ProgressFn | None, reporter: Reporter) -> None:
    while True:
        try:
            event = events.get_nowait()
        except empty:
            return
        if event[0] == "start":
            reporter.started(event[1])
        else:
            _, slug, description, completed, total = event
            if progress is not None:
                progress(description, completed, total)
            reporter.progress(slug, description, completed, total)


def _stop_pool(pool: Any) -> None:
    """Start no new paper and stop the running ones (`check -x` after a failure). Their
    half-assembled run folders are removed by the next run of those papers."""
    # shutdown() forgets the worker processes (`_processes = None`), so take them first
    processes = list((getattr(pool, "_processes", None) or {}).values())
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes:
        process.terminate()


def _run_in_worker(slug: str, folder: Path, events: Any, kwargs: dict) -> RunReport:
    events.put(("start", slug))
    return run_paper(
        Paper(slug, folder), progress=lambda *e: events.put(("progress", slug, *e)), **kwargs
    )


def _start_partial(runs_dir: Path, slug: str) -> tuple[Path | None, str]:
    """The hidden folder this run is assembled in (and stale ones removed), or why there is none."""
    try:
        remove_stale_partials(runs_dir, slug)
        tmp = partial_dir(runs_dir, slug)
        tmp.mkdir(parents=True)
        return tmp, ""
    except OSError as exc:
        return None, f"results not saved: cannot create a run folder in {runs_dir}: {_why(exc)}"


def _why(exc: OSError) -> str:
    return exc.strerror or str(exc)


def _run_paper(
    paper: Paper,
    quick: bool,
    experiment: bool,
    device: str,
    seed: int,
    overrides: tuple[str, ...],
    claim_ids: tuple[str, ...],
    skip_benchmarks: bool,
    progress: ProgressFn | None,
    runs_dir: Path | None,
    confirmed: bool,
) -> RunReport:
    start, cpu_start = time.perf_counter(), time.process_time()
    device = resolve_device(device)
    module = paper.module()
    cfg = make_config(module, quick, overrides, confirmed=confirmed)
    device, device_notes = _device_for(paper, module, cfg, device)
    tmp, save_error = _start_partial(runs_dir, paper.slug) if runs_dir is not None else (None, "")
    ctx = Context(
        config=cfg,
        device=device,
        seed=seed,
        quick=quick,
        progress=progress or (lambda *_: None),
        out_dir=tmp,
        run_experiment=getattr(module, "experiment", None),
    )
    try:
        metrics, failure = None, ""
        if experiment and ctx.run_experiment is not None:
            try:
                metrics = ctx.experiment()
            except Exception as exc:
                failure = f"experiment failed: {type(exc).__name__}: {exc}"
        checks = paper.checks()
        wanted = [
            c
            for c in paper.note.claims
            if (not claim_ids or c.id in claim_ids)
            and not (skip_benchmarks and c.id in checks and checks[c.id][0].benchmark)
        ]
        results = []
        for i, c in enumerate(wanted):
            ctx.progress(f"{paper.slug}: {c.id}", i, len(wanted))
            results.append(check_claim(paper, c.id, ctx))
        ctx.progress(f"{paper.slug}: done", len(wanted), len(wanted))
        if metrics is None and ctx._metrics is not None:
            metrics = ctx._metrics
        report = RunReport(
            paper=paper.slug,
            config=config_dict(cfg),
            metrics=_plain(metrics) if metrics is not None else None,
            results=results,
            seconds=round(time.perf_counter() - start, 3),
            cpu_seconds=round(time.process_time() - cpu_start, 3),
            environment=environment(device, seed),
            save_error=save_error,
        )
        if failure:
            report.environment["experiment_error"] = failure
        report.environment.update(device_notes)
        if tmp is not None:
            try:
                report.run_dir = _save(report, tmp, quick, overrides)
            except OSError as exc:  # full disk, read-only mount: the results are still returned
                report.save_error = f"results not saved to {tmp.parent}: {_why(exc)}"
        return report
    finally:
        if tmp is not None and tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _device_for(paper: Paper, module: Any, cfg: Any, device: str) -> tuple[str, dict]:
    """The device a paper runs on, and what to record and say when it is not the one asked
    for: a `CPU_ONLY` paper runs on the CPU; a `CPU_EXPERIMENT` one gets the device for its
    timing checks (see repro.lab.settings)."""
    limit = device_limit(cfg if cfg is not None else getattr(module, "Config", None))
    if limit is None or device == "cpu":
        return device, {}
    kind, why = limit
    if kind == "CPU_ONLY":
        note = f"{paper.slug} runs on the CPU only: {why} (--device {device} not used)"
        used = "cpu"
    else:
        note = (
            f"{paper.slug}: the experiment runs on the CPU ({why}); --device {device} reaches its "
            "timing checks"
        )
        used = device
    return used, {"device_requested": device, "device_limit": kind, "device_note": note}


def environment(device: str, seed: int) -> dict:
    """What produced a result: versions, machine, device, seed, git commit."""
    import torch

    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=REPO_ROOT, capture_output=True, text=True, timeout=5
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name(0) if device.startswith("cuda") else "cpu",
        "seed": seed,
        "git_commit": commit or None,
    }


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _save(report: RunReport, tmp: Path, quick: bool, overrides: tuple[str, ...]) -> Path:
    preset = "quick" if quick else "full"
    _write_json(tmp / "config.json", {**report.config, "_preset": preset})
    _write_json(tmp / "metrics.json", report.metrics or {})
    _write_json(tmp / "claims.json", [r.to_json() for r in report.results])
    _write_json(tmp / "environment.json", report.environment)
    _write_json(
        tmp / "run.json",
        {
            "paper": report.paper,
            "preset": preset,
            "overrides": list(overrides),
            "seed": report.environment.get("seed"),
            "ok": report.ok,
            "seconds": report.seconds,
            "cpu_seconds": report.cpu_seconds,
        },
    )
    log = [
        f"{r.when} {r.id}: {r.verdict.value} measured={r.measured!r} expected={r.expected!r} "
        f"tolerance={r.tolerance} ({r.seconds}s) {r.message}".rstrip()
        for r in report.results
    ]
    (tmp / "log.txt").write_text("\n".join(log) + "\n", encoding="utf-8")
    return publish(tmp, new_stamp())
