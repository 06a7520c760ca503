"""How long the reading commands take, as a user sees them: each in a fresh interpreter.

`paperlab list` and `paperlab show SLUG` are run as subprocesses (the way a shell runs them:
interpreter start, imports, work, exit), `repeats` times each, with the note cache cold (an
empty cache folder for every run) and warm (a folder filled by one unmeasured run first). The
cache folders are temporary (`$PAPERLAB_CACHE`), so the user's own cache is never touched.
`python -c pass` with the same interpreter is the floor no command can go below.

Wall time is what the user waits; CPU time (user + sys of the child) is what the command costs
and varies much less on a busy machine. Medians of `repeats`. Torch-free.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from repro.lab.errors import PaperlabError, one_line

CACHE_ENV = "PAPERLAB_CACHE"


def run_once(command: list[str], env: dict[str, str]) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the child) of one run of `command`; PaperlabError if it
    fails."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run(
        command, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE, text=True, timeout=120,
    )  # fmt: skip
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise PaperlabError(f"`{' '.join(command[1:])}` exited {done.returncode}: {one_line(last)}")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def _row(command: str, cache: str, times: list[tuple[float, float]]) -> dict:
    walls, cpus = [w for w, _ in times], [c for _, c in times]
    return {
        "command": command,
        "note_cache": cache,
        "wall_s": statistics.median(walls),
        "cpu_s": statistics.median(cpus),
        "wall_min_s": min(walls),
        "runs": len(times),
    }


def bench_cli(
    papers_dir: Path,
    slug: str,
    repeats: int = 5,
    progress: Callable[[int, int], None] = lambda done, total: None,
) -> dict:
    """Median wall and CPU seconds of `list` and `show SLUG`, cold and warm, and of the bare
    interpreter, each over `repeats` fresh processes."""
    script = str(Path(__file__).resolve().parents[2] / "paperlab.py")
    base = [sys.executable, script, "--papers-dir", str(papers_dir)]
    commands = {"list": [*base, "list"], f"show {slug}": [*base, "show", slug]}
    env = {k: v for k, v in os.environ.items() if k not in ("COLUMNS", "LINES")}
    total = repeats * (1 + 2 * len(commands))
    done = 0

    def measure(command: list[str], cache_dir: str) -> tuple[float, float]:
        nonlocal done
        result = run_once(command, {**env, CACHE_ENV: cache_dir})
        done += 1
        progress(done, total)
        return result

    rows = []
    with tempfile.TemporaryDirectory(prefix="paperlab-bench-") as tmp:
        floor = [measure([sys.executable, "-c", "pass"], tmp) for _ in range(repeats)]
        rows.append(_row("python -c pass", "", floor))
        for name, command in commands.items():
            cold = []
            for i in range(repeats):
                cold.append(measure(command, tempfile.mkdtemp(prefix=f"cold-{i}-", dir=tmp)))
            rows.append(_row(name, "cold", cold))
            warm_dir = tempfile.mkdtemp(prefix="warm-", dir=tmp)
            run_once(command, {**env, CACHE_ENV: warm_dir})  # fills the cache, not measured
            rows.append(_row(name, "warm", [measure(command, warm_dir) for _ in range(repeats)]))
    return {"python": sys.version.split()[0], "repeats": repeats, "rows": rows}
