"""Plant known bugs one at a time and report which checks catch them (run by hand, not in CI).

    python tests/mutants.py                    # every mutant in tests/mutants/*.yaml
    python tests/mutants.py --only llama-rope-base-1000 --only gpt-no-final-ln
    python tests/mutants.py --catalogue tests/mutants/models.yaml --json runs/mutants.json

Each catalogue entry is `{id, file, find, replace, why, tests: [pytest paths], papers: [slugs]}`;
`find` must occur exactly once in `file`. For each mutant the repository is copied to a temporary
folder (the working tree is never touched), the one substitution is made, its `tests` run with
pytest and its `papers` with `paperlab check --skip-benchmarks`, each in a fresh cache. A failing
test function (parametrisations count once) or a failing claim is a detector. Before the mutants,
the same tests and claims run on the unmodified copy; anything that fails there is not counted.

The report lists, per mutant, the test functions and claims that caught it, and the totals:
survived (no detector), caught by tests, caught by claims, and caught by a single detector (one
test function and no claim, or one claim and no test) — a bug that a single edit to a single
check would let through.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
CATALOGUE = REPO / "tests" / "mutants"
KEYS = {"id", "file", "find", "replace", "why", "tests", "papers"}
SKIP_COPY = shutil.ignore_patterns(
    ".git", "runs", "__pycache__", ".pytest_cache", ".ruff_cache", "*.egg-info"
)
FAILED_LINE = re.compile(r"^(FAILED|ERROR) (\S+?)(?:\[.*?\])?(?: - .*)?$")


class RunError(Exception):
    """pytest or check did not finish (timeout, killed): neither caught nor survived."""


@dataclass
class Mutant:
    id: str
    file: str
    find: str
    replace: str
    why: str
    tests: list[str]
    papers: list[str]
    source: str = ""  # the catalogue file


@dataclass
class Outcome:
    id: str
    caught_by_tests: list[str] = field(default_factory=list)
    caught_by_claims: list[str] = field(default_factory=list)
    seconds: float = 0.0
    error: str = ""

    @property
    def detectors(self) -> int:
        return len(self.caught_by_tests) + len(self.caught_by_claims)


def load_catalogue(paths: list[Path]) -> list[Mutant]:
    """Every entry of every YAML file, checked: known keys, unique ids, `find` once in `file`."""
    mutants, seen = [], set()
    for path in paths:
        entries = yaml.safe_load(path.read_text(encoding="utf-8")) or []
        for i, entry in enumerate(entries):
            where = f"{path.relative_to(REPO)}[{i}]"
            if set(entry) != KEYS:
                raise SystemExit(f"{where}: keys must be {sorted(KEYS)}, got {sorted(entry)}")
            if entry["id"] in seen:
                raise SystemExit(f"{where}: duplicate id {entry['id']!r}")
            seen.add(entry["id"])
            text = (REPO / entry["file"]).read_text(encoding="utf-8")
            if (n := text.count(entry["find"])) != 1:
                raise SystemExit(
                    f"{where} ({entry['id']}): `find` occurs {n} times in {entry['file']}"
                )
            if not entry["tests"] and not entry["papers"]:
                raise SystemExit(f"{where} ({entry['id']}): no tests and no papers to run")
            mutants.append(Mutant(**entry, source=str(path.relative_to(REPO))))
    return mutants


def _env(root: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PAPERLAB_RUNS": str(root / "runs"),
        "PAPERLAB_CACHE": str(root / "runs" / ".cache"),
        "PAPERLAB_PAPERS": str(root / "papers"),
        "OMP_NUM_THREADS": "1",
        "PYTHONDONTWRITEBYTECODE": "1",
    }


def failing_tests(root: Path, tests: list[str], timeout: float) -> set[str]:
    """Test functions (path::name, parameters dropped) that fail or error; a file that cannot
    be collected counts as one."""
    if not tests:
        return set()
    cmd = [sys.executable, "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *tests]
    for _ in range(2):  # a run killed from outside (a signal) is retried once
        try:
            done = subprocess.run(
                cmd, cwd=root, env=_env(root), capture_output=True, text=True, timeout=timeout
            )
        except subprocess.TimeoutExpired as e:
            raise RunError(f"pytest timed out after {timeout:.0f}s") from e
        if done.returncode >= 0:
            break
    else:
        raise RunError(f"pytest killed by signal {-done.returncode}")
    failed = {m.group(2) for line in done.stdout.splitlines() if (m := FAILED_LINE.match(line))}
    if done.returncode not in (0, 1) and not failed:  # import error at collection, usage error
        failed.add(f"<pytest exit {done.returncode}: {done.stdout.strip().splitlines()[-1:]}>")
    return failed


def failing_claims(root: Path, papers: list[str], timeout: float) -> set[str]:
    """`paper:claim` ids that are not verified (failed or raised); a crash counts as one."""
    if not papers:
        return set()
    cmd = [
        sys.executable,
        "paperlab.py",
        "check",
        *papers,
        "--skip-benchmarks",
        "--json",
        "--no-save",
    ]
    try:
        done = subprocess.run(
            cmd, cwd=root, env=_env(root), capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as e:
        raise RunError(f"check timed out after {timeout:.0f}s") from e
    if done.returncode < 0:
        raise RunError(f"check killed by signal {-done.returncode}")
    try:
        reports = json.loads(done.stdout)
    except json.JSONDecodeError:
        return {f"<check crashed: exit {done.returncode}>"}
    return {
        f"{r['paper']}:{c['id']}"
        for r in reports
        for c in r["claims"]
        if c["verdict"] in ("failed", "error")
    }


def _copy(base: Path, name: str) -> Path:
    root = base / name
    shutil.copytree(REPO, root, ignore=SKIP_COPY)
    return root


def run_mutant(
    m: Mutant, base: Path, baseline: tuple[set[str], set[str]], timeout: float
) -> Outcome:
    start = time.perf_counter()
    root = _copy(base, m.id)
    try:
        path = root / m.file
        path.write_text(
            path.read_text(encoding="utf-8").replace(m.find, m.replace), encoding="utf-8"
        )
        tests = failing_tests(root, m.tests, timeout) - baseline[0]
        claims = failing_claims(root, m.papers, timeout) - baseline[1]
        return Outcome(m.id, sorted(tests), sorted(claims), time.perf_counter() - start)
    except RunError as e:
        return Outcome(m.id, seconds=time.perf_counter() - start, error=str(e))
    finally:
        shutil.rmtree(root, ignore_errors=True)


def summary(outcomes: list[Outcome]) -> dict[str, float]:
    errors = [o for o in outcomes if o.error]
    outcomes = [o for o in outcomes if not o.error]
    n = len(outcomes)
    survived = [o for o in outcomes if o.detectors == 0]
    single = [o for o in outcomes if o.detectors == 1]
    one_test_fn = [o for o in outcomes if len(o.caught_by_tests) == 1]
    return {
        "mutants": n,
        "not_run": len(errors),
        "survived": len(survived),
        "caught_by_tests": sum(bool(o.caught_by_tests) for o in outcomes),
        "caught_by_claims": sum(bool(o.caught_by_claims) for o in outcomes),
        "caught_by_one_detector": len(single),
        "caught_by_one_test_function": len(one_test_fn),
        "survival_rate": len(survived) / n if n else 0.0,
        "one_detector_rate": len(single) / n if n else 0.0,
        "one_test_function_rate": len(one_test_fn) / n if n else 0.0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--catalogue", type=Path, action="append", help="YAML file(s); default: all"
    )
    parser.add_argument("--only", action="append", default=[], help="mutant id (repeatable)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds per pytest / check run")
    parser.add_argument("--json", type=Path, help="also write the outcomes here")
    parser.add_argument("--no-baseline", action="store_true", help="skip the unmodified run")
    parser.add_argument("--no-claims", action="store_true", help="run the tests only")
    parser.add_argument("--jobs", type=int, default=1, help="mutants run at once")
    args = parser.parse_args(argv)

    paths = (
        [p.resolve() for p in args.catalogue]
        if args.catalogue
        else sorted(CATALOGUE.glob("*.yaml"))
    )
    mutants = load_catalogue(paths)
    if args.only:
        unknown = set(args.only) - {m.id for m in mutants}
        if unknown:
            raise SystemExit(f"unknown mutant id(s): {', '.join(sorted(unknown))}")
        mutants = [m for m in mutants if m.id in args.only]
    if args.no_claims:
        for m in mutants:
            m.papers = []
    print(f"{len(mutants)} mutants from {len(paths)} catalogue file(s)", file=sys.stderr)

    with tempfile.TemporaryDirectory(prefix="paperlab-mutants-") as tmp:
        base = Path(tmp)
        baseline: tuple[set[str], set[str]] = (set(), set())
        if not args.no_baseline:  # RunError here stops the run: the baseline must finish
            root = _copy(base, "_baseline")
            tests = sorted({t for m in mutants for t in m.tests})
            papers = sorted({p for m in mutants for p in m.papers})
            baseline = (
                failing_tests(root, tests, args.timeout),
                failing_claims(root, papers, args.timeout),
            )
            shutil.rmtree(root, ignore_errors=True)
            for name in sorted(baseline[0] | baseline[1]):
                print(f"baseline already fails, not counted: {name}", file=sys.stderr)
        outcomes = []
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:  # the work is in subprocesses
            futures = [pool.submit(run_mutant, m, base, baseline, args.timeout) for m in mutants]
            done = [f.result() for f in futures]
        for i, (m, o) in enumerate(zip(mutants, done, strict=True), 1):
            outcomes.append(o)
            if o.error:
                verdict = f"NOT RUN ({o.error})"
            elif o.detectors == 0:
                verdict = "SURVIVED"
            else:
                verdict = f"{len(o.caught_by_tests)} tests, {len(o.caught_by_claims)} claims"
            print(
                f"[{i}/{len(mutants)}] {m.id:<40} {verdict:<22} {o.seconds:6.0f}s", file=sys.stderr
            )
            for name in o.caught_by_tests + o.caught_by_claims:
                print(f"      {name}", file=sys.stderr)

    totals = summary(outcomes)
    print(json.dumps(totals, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(
            json.dumps({"summary": totals, "outcomes": [asdict(o) for o in outcomes]}, indent=2)
        )
    return 1 if totals["survived"] or totals["not_run"] else 0


if __name__ == "__main__":
    sys.exit(main())
