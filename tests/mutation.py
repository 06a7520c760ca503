"""Mutation testing with mutmut on one module, against the tests that concern it (run by hand).

    pip install -e '.[mutation]'
    python tests/mutation.py repro/scaling/power_law.py            # score + surviving diffs
    python tests/mutation.py repro/nn/ssm.py --jobs 2 --json runs/mutation/ssm.json
    python tests/mutation.py papers/lora/repro.py --tests tests/papers/test_lora_paper.py
    python tests/mutation.py repro/align/reward.py --workdir /tmp/mm-reward   # keep, then
        cd /tmp/mm-reward && python -m mutmut show 'repro.align.reward.x_fit__mutmut_3'

`tests/mutants.py` plants the bugs we chose; this plants the ones mutmut generates (operators,
constants, keywords, arguments dropped or set to None, …), so they do not share our blind spots.
The repository is copied to a work folder (a temporary one unless `--workdir`), the module is
made the only `only_mutate` target of a `[tool.mutmut]` section written into the copy's
pyproject.toml, and `mutmut run` executes there: it records which tests call which function and
runs, for each mutant, only those tests (pytest in a fork server, one torch thread, xdist off).
The working tree is never touched. mutmut 3 leaves decorated functions alone, so in the copy a
module's `@claim(...)` and `@torch.no_grad()` functions are undecorated first (the decorator is
applied below the function instead: the same object under the same name) and get mutated too.

Tests used: `--tests` if given, else `RELEVANT[module]`, else the mirror file
`tests/<dir>/test_<name>.py` (for a paper: `tests/papers/test_<slug>.py`, its `_claim_logic`
companion if any, and the tests that break the library under every paper's claim helpers).
A mutant whose function no selected test calls is reported as "no tests" and counts as not
killed (a decorator body that runs only at import time is one: call it inside a test).

The score printed is killed / generated; survivors judged equivalent (no input can tell them
apart) are to be listed, with the reason, in the closing note of the work that ran the tool.
Not part of the default suite or CI: a module takes minutes to tens of minutes on two cores.
"""

from __future__ import annotations

import argparse
import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP_COPY = shutil.ignore_patterns(
    ".git", "runs", "mutants", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info"
)
# Tests that break the library under every paper's claim helpers (they call helpers of many
# papers; mutmut runs, for each mutant, only the tests that reached its function).
PAPER_HELPER_TESTS = [
    "tests/papers/test_comparison_helpers.py",
    "tests/papers/test_difference_claims.py",
    "tests/papers/test_helpers_report_breaks.py",
]
# Modules whose tests are not (only) the mirror file. Claims (tests/papers/test_claims.py) are
# left out: they train models and would make a module take hours.
RELEVANT: dict[str, list[str]] = {
    "repro/nn/ssm.py": ["tests/nn/test_ssm.py", "tests/models/test_mamba.py"],
    "repro/scaling/lbfgs.py": ["tests/scaling/test_lbfgs.py", "tests/scaling/test_approach3.py"],
    "repro/scaling/closed_form.py": ["tests/scaling/test_closed_form.py"],
    "repro/align/policy.py": ["tests/align/test_policy.py", "tests/align/test_ppo.py"],
    "papers/lora/repro.py": ["tests/papers/test_lora_paper.py", *PAPER_HELPER_TESTS],
    "repro/lab/settings.py": ["tests/lab/test_settings.py", "tests/lab/test_device_limits.py"],
    # the Mamba and MLP counts are checked against the built models in their own mirrors
    "repro/lab/counting.py": [
        "tests/lab/test_counting.py",
        "tests/models/test_mamba.py",
        "tests/scaling/test_facts_runs.py",
    ],
}
# Tests that run the mutated code in worker processes: mutmut's trampolines cannot work there
# (they read its configuration from the current folder), so they would fail on every mutant.
DESELECT = [
    "tests/lab/test_runner.py::test_papers_checked_in_parallel_give_the_same_reports",
    "tests/scaling/test_sweep.py::test_parallel_points_match_serial_ones",
]
PYTEST_ARGS = [
    "-p", "no:xdist", "-p", "no:cacheprovider", "-o", "addopts=", "--strict-markers",
    "--import-mode=importlib", "-m", "not slow", "-q",
    *(arg for test in DESELECT for arg in ("--deselect", test)),
]  # fmt: skip
RESULT_LINE = re.compile(r"^\s*(\S+): (.+)$")


def relevant_tests(module: str) -> list[str]:
    if module in RELEVANT:
        return RELEVANT[module]
    path = Path(module)
    if path.parts[0] == "papers":
        mirror = f"tests/papers/test_{path.parts[1].replace('-', '_')}"
        own = [f"{mirror}.py", *(p for p in [f"{mirror}_claim_logic.py"] if (REPO / p).exists())]
        return own + PAPER_HELPER_TESTS
    return [str(Path("tests", *path.parts[1:-1], f"test_{path.stem}.py"))]


def mutmut_section(module: str, tests: list[str]) -> str:
    def toml_list(items: list[str]) -> str:
        return "[" + ", ".join(json.dumps(i) for i in items) + "]"

    return (
        "\n[tool.mutmut]\n"
        f'source_paths = ["repro", "papers"]\n'
        f"only_mutate = {toml_list([module])}\n"
        f'also_copy = ["paperlab.py", "templates", "docs"]\n'
        f"pytest_add_cli_args = {toml_list(PYTEST_ARGS)}\n"
        f"pytest_add_cli_args_test_selection = {toml_list(tests)}\n"
        'process_isolation = "forkserver"\n'  # torch is not fork-safe after pytest ran
        "use_git_change_detection = false\n"
        "timeout_constant = 30.0\n"  # CPU seconds: a worker re-collects its tests first
        "timeout_multiplier = 10.0\n"
    )


def name_module_as_mutmut_does(path: Path) -> None:
    """A paper's repro.py is imported by the library under its own name (`paperlab_papers.<slug>`),
    but mutmut names its mutants after the file path (`papers.<slug>.repro.…`) and activates a
    mutant only in functions whose `__module__` is that name. Setting `__name__` at the top of
    the copy (after `from __future__`), and registering the module under it too (dataclasses
    look their module up), makes the two agree; the working tree is not touched."""
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    name = ".".join(path.relative_to(path.parents[2]).with_suffix("").parts)
    at = next(i for i, ln in enumerate(lines) if ln.startswith("from __future__")) + 1
    lines.insert(
        at,
        f"import sys as _sys; _sys.modules[{name!r}] = _sys.modules[__name__]; "
        f"__name__ = {name!r}  # tests/mutation.py: mutmut's module name\n",
    )
    path.write_text("".join(lines), encoding="utf-8")


# mutmut 3 does not mutate decorated functions (only @staticmethod/@classmethod ones), so a
# paper's @claim helpers and @torch.no_grad() functions would never be mutated.
UNDECORATE = ("claim(", "torch.no_grad(")


def undecorate(path: Path) -> None:
    """In the copy, move each module-level `@claim(...)` / `@torch.no_grad()` decorator below its
    function as `name = decorator(name)`: the same object under the same name, and mutmut
    mutates the function (the working tree is not touched)."""
    src = path.read_text(encoding="utf-8")
    lines = src.splitlines(keepends=True)
    edits = []
    for node in ast.parse(src).body:
        if isinstance(node, ast.FunctionDef) and node.decorator_list:
            texts = [ast.get_source_segment(src, d) or "" for d in node.decorator_list]
            if all(t.startswith(UNDECORATE) for t in texts):
                first = min(d.lineno for d in node.decorator_list)
                edits.append((first, node.lineno, node.end_lineno, node.name, texts))
    for first, def_line, end, name, texts in sorted(edits, reverse=True):
        applied = name
        for text in reversed(texts):  # the decorator nearest the def applies first
            applied = f"{text}({applied})"
        lines.insert(end, f"{name} = {applied}  # tests/mutation.py: undecorated for mutmut\n")
        del lines[first - 1 : def_line - 1]
    path.write_text("".join(lines), encoding="utf-8")


def results(work: Path) -> dict[str, str]:
    """mutant name → status (killed, survived, no tests, timeout, …)."""
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "results", "--all", "true"],
        cwd=work, capture_output=True, text=True, check=True,
    )  # fmt: skip
    return {
        m.group(1): m.group(2)
        for line in done.stdout.splitlines()
        if (m := RESULT_LINE.match(line))
    }


def show(work: Path, name: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "mutmut", "show", name], cwd=work, capture_output=True, text=True
    )
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith(("+", "-", "@@", "#"))]
    return "\n".join(ln for ln in lines if not ln.startswith(("+++", "---")))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("module", help="a .py file, relative to the repository root")
    parser.add_argument("--tests", action="append", help="test path(s) instead of the default")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once (default 1)")
    parser.add_argument("--workdir", type=Path, help="keep the copy here (default: temporary)")
    parser.add_argument("--json", type=Path, help="also write the statuses and survivors here")
    args = parser.parse_args(argv)

    module = Path(args.module).as_posix()
    if not (REPO / module).is_file():
        raise SystemExit(f"no such module: {module}")
    tests = args.tests or relevant_tests(module)
    missing = [t for t in tests if not (REPO / t.split("::")[0]).exists()]
    if missing:
        raise SystemExit(f"no such test path(s): {', '.join(missing)}; pass --tests")

    tmp = None
    if args.workdir:
        work = args.workdir.resolve()
        shutil.rmtree(work, ignore_errors=True)
    else:
        tmp = tempfile.TemporaryDirectory(prefix="paperlab-mutmut-")
        work = Path(tmp.name) / "repo"
    try:
        shutil.copytree(REPO, work, ignore=SKIP_COPY)
        undecorate(work / module)
        if module.startswith("papers/"):
            name_module_as_mutmut_does(work / module)
        pyproject = work / "pyproject.toml"
        pyproject.write_text(pyproject.read_text(encoding="utf-8") + mutmut_section(module, tests))
        env = {
            **os.environ,
            "OMP_NUM_THREADS": "1",
            "PAPERLAB_RUNS": str(work / "runs"),
            "PAPERLAB_CACHE": str(work / "runs" / ".cache"),
        }
        env.pop("PAPERLAB_PAPERS", None)
        print(f"mutating {module} against {' '.join(tests)} in {work}", file=sys.stderr)
        start = time.perf_counter()
        run = subprocess.run(
            [sys.executable, "-m", "mutmut", "run", "--max-children", str(args.jobs)],
            cwd=work, env=env, capture_output=True, text=True,
        )  # fmt: skip
        seconds = time.perf_counter() - start
        if run.returncode != 0:
            print(run.stdout[-4000:], run.stderr[-4000:], sep="\n", file=sys.stderr)
            raise SystemExit(f"mutmut run failed (exit {run.returncode})")
        status = results(work)
        counts = Counter(status.values())
        survivors = {n: show(work, n) for n, s in status.items() if s != "killed"}
        for name, diff in survivors.items():
            print(f"\n{status[name].upper()}: {name}\n{diff}")
        total = len(status)
        killed = counts.get("killed", 0)
        summary = {
            "module": module,
            "tests": tests,
            "generated": total,
            **{k.replace(" ", "_"): v for k, v in sorted(counts.items())},
            "score": round(killed / total, 4) if total else None,
            "seconds": round(seconds),
        }
        print(json.dumps(summary, indent=2))
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(
                json.dumps({"summary": summary, "status": status, "survivors": survivors}, indent=2)
            )
        return 0 if killed == total else 1
    finally:
        if tmp is not None:
            tmp.cleanup()


if __name__ == "__main__":
    sys.exit(main())
