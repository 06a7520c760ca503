"""`check` reports like pytest: a line per paper, a heartbeat when piped, failures only, one
summary line; -x, --lf, -k, --durations, -q, -v/--show, --claim without a paper."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest

from repro.cli import report
from repro.lab.errors import BadOption
from repro.lab.library import Library
from repro.lab.runner import Reporter, run_papers
from repro.lab.selection import keyword_matcher

PASSING = ("-k", "two or mean-loss")  # the claims of toy and slow that pass


def test_piped_check_prints_a_line_per_paper_and_a_heartbeat(
    invoke, two_papers: Path, monkeypatch
) -> None:
    monkeypatch.setattr(report, "HEARTBEAT_S", 0.3)
    result = invoke("check", "toy", "slow", "--jobs", "1", *PASSING)
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert lines[0] == "checking 2 papers (quick preset, 1 at a time)"
    assert re.fullmatch(r"toy \.{4} 2 verified  \d+\.\d s", lines[1]), lines
    beats = [i for i, line in enumerate(lines) if "still running: slow (" in line]
    assert beats, lines
    assert "slow-two 1/2" in lines[beats[0]]  # the claim it is in, from the runner's progress
    slow_line = next(i for i, line in enumerate(lines) if line.startswith("slow "))
    assert beats[0] < slow_line
    assert re.fullmatch(r"slow \.{3} 2 verified  \d+\.\d s", lines[slow_line])
    assert re.fullmatch(r"2 papers: 4 verified in \d+\.\d s", lines[-1])
    assert len(lines) <= 25


def test_no_heartbeat_when_papers_finish_in_time(invoke, two_papers: Path) -> None:
    result = invoke("check", "toy", "slow", "--jobs", "1", *PASSING)
    assert "still running" not in result.stdout


def test_failures_are_detailed_and_cited_claims_only_counted(invoke) -> None:
    result = invoke("check", "toy")
    assert result.exit_code == 1
    lines = result.stdout.splitlines()
    assert re.fullmatch(
        r"toy \.{3} 2 verified, 1 failed, 1 error, 1 cited, 1 skipped  \d+\.\d s", lines[1]
    )
    assert lines[2:4] == [
        "failed   toy::wrong-sum  Two plus three is four.  expected 4 (±0.5), measured 5",
        "error    toy::crashes  A check that raises.  RuntimeError: boom",
    ]
    assert "bleu" not in result.stdout and "two-plus-two" not in result.stdout
    assert lines[-1].startswith("1 paper: 2 verified, 1 failed, 1 error, 1 cited, 1 skipped in")


def test_show_cited_and_verbose_list_claims_under_their_paper(invoke) -> None:
    cited = invoke("check", "toy", "--show", "cited").stdout
    assert (
        "    cited    toy::bleu  The paper reports a BLEU of 28.4.  "
        "(Needs the full WMT training run.)" in cited.splitlines()
    )
    assert "toy::two-plus-two" not in cited
    verbose = invoke("check", "toy", "-v").stdout
    for cid in ("two-plus-two", "wrong-sum", "crashes", "needs-gpu", "mean-loss", "bleu"):
        assert f"toy::{cid}" in verbose


def test_quiet_prints_only_failures_and_the_summary(invoke) -> None:
    ok = invoke("check", "toy", "-q", "-k", "two")
    assert ok.exit_code == 0
    assert ok.stdout.splitlines()[0].startswith("1 paper: 1 verified in")
    assert len(ok.stdout.splitlines()) == 1
    bad = invoke("check", "toy", "-q").stdout.splitlines()
    assert bad[0].startswith("toy ...") and "failed   toy::wrong-sum" in bad[1]


def test_exitfirst_stops_after_the_first_failing_paper(invoke, two_papers: Path) -> None:
    result = invoke("check", "toy", "slow", "--jobs", "1", "-x")
    assert result.exit_code == 1
    assert not any(line.startswith("slow ") for line in result.stdout.splitlines())
    assert result.stdout.splitlines()[-1].endswith("(stopped after the first failure: -x)")
    reports = json.loads(invoke("check", "toy", "slow", "--jobs", "1", "-x", "--json").stdout)
    assert [r["paper"] for r in reports] == ["toy"]


def test_exitfirst_stops_running_workers(two_papers: Path, monkeypatch) -> None:
    monkeypatch.setenv("SLOW_SECONDS", "300")
    library = Library(two_papers)
    papers = [library.get("toy"), library.get("slow")]
    start = time.monotonic()
    reports = run_papers(
        papers, jobs=2, exitfirst=True, claims={"toy": ("wrong-sum",), "slow": ("slow-two",)}
    )
    assert [r.paper for r in reports] == ["toy"]
    assert time.monotonic() - start < 200  # slow's 300 s check was stopped, not waited for


def test_reporter_hears_each_paper_start_progress_and_finish(two_papers: Path) -> None:
    events: list[tuple] = []

    class Recorder(Reporter):
        def started(self, slug):
            events.append(("started", slug))

        def progress(self, slug, description, completed, total):
            events.append(("progress", slug, description))

        def finished(self, report):
            events.append(("finished", report.paper, report.ok))

    library = Library(two_papers)
    papers = [library.get("toy"), library.get("slow")]
    claims = {"toy": ("wrong-sum",), "slow": ("slow-two",)}
    run_papers(papers, reporter=Recorder(), claims=claims)
    assert events == [
        ("started", "toy"), ("progress", "toy", "toy: wrong-sum"),
        ("progress", "toy", "toy: done"), ("finished", "toy", False),
        ("started", "slow"), ("progress", "slow", "slow: slow-two"),
        ("progress", "slow", "slow: done"), ("finished", "slow", True),
    ]  # fmt: skip
    events.clear()
    reports = run_papers(papers, reporter=Recorder(), claims=claims, exitfirst=True)
    assert [r.paper for r in reports] == ["toy"] and events[-1] == ("finished", "toy", False)


def test_last_failed_reruns_only_what_failed(invoke) -> None:
    first = invoke("check", "--lf", "toy", "--json")
    assert "--lf: no failed claims on record; checking all selected claims" in first.stderr
    assert len(json.loads(first.stdout)[0]["claims"]) == 6
    again = invoke("check", "--lf", "--json")
    assert again.stderr == "--lf: rerunning 2 claims that failed last time\n"
    (paper,) = json.loads(again.stdout)
    assert sorted(c["id"] for c in paper["claims"]) == ["crashes", "wrong-sum"]


def test_k_selects_claims_by_id_words(invoke) -> None:
    result = invoke("check", "-k", "two or loss and not mean", "--json")
    (paper,) = json.loads(result.stdout)
    assert [c["id"] for c in paper["claims"]] == ["two-plus-two"]
    assert result.exit_code == 0


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("zzz", "Error: -k 'zzz' matches no claim of the selected papers\n"),
        ("(", "Error: -k: expected a word or '(' in '('\n"),
        ("two and", "Error: -k: expected a word or '(' in 'two and'\n"),
        ("(two", "Error: -k: missing ')' in '(two'\n"),
        ("two )", "Error: -k: unexpected ')' in 'two )'\n"),
    ],
)
def test_k_errors_are_one_line_exit_2(invoke, expr: str, error: str) -> None:
    result = invoke("check", "-k", expr)
    assert result.exit_code == 2
    assert result.stderr == error


def test_keyword_expressions() -> None:
    ids = ["flops-per-token", "memory-flops", "kv-memory", "Rank-Reduction"]

    def pick(expr: str) -> list[str]:
        match = keyword_matcher(expr)
        return [i for i in ids if match(i)]

    assert pick("flops") == ["flops-per-token", "memory-flops"]
    assert pick("flops and not memory") == ["flops-per-token"]
    assert pick("not flops") == ["kv-memory", "Rank-Reduction"]
    assert pick("(kv or rank) and not reduction") == ["kv-memory"]
    assert pick("kv or rank and not reduction") == ["kv-memory"]  # and binds tighter
    assert pick("RANK") == ["Rank-Reduction"]
    with pytest.raises(BadOption):
        keyword_matcher("   ")


def test_claim_without_a_paper_runs_only_the_papers_that_have_it(invoke, two_papers) -> None:
    result = invoke("check", "--claim", "two-plus-two", "--json", "--jobs", "1")
    assert result.exit_code == 0
    assert result.stderr == "--claim two-plus-two: 1 paper (toy)\n"
    assert [r["paper"] for r in json.loads(result.stdout)] == ["toy"]
    both = invoke(
        "check", "--claim", "two-plus-two", "--claim", "slow-two", "--json", "--jobs", "1"
    )
    assert both.stderr == "--claim two-plus-two, slow-two: 2 papers (slow, toy)\n"
    assert [[c["id"] for c in r["claims"]] for r in json.loads(both.stdout)] == [
        ["slow-two"], ["two-plus-two"],
    ]  # fmt: skip


def test_durations_lists_the_slowest_papers(invoke, two_papers: Path) -> None:
    result = invoke("check", "--jobs", "1", "--durations", "1", *PASSING)
    lines = result.stdout.splitlines()
    at = lines.index("slowest 1 paper:")
    assert re.fullmatch(r"  slow  +\d+\.\d s", lines[at + 1])
    assert lines[at + 2].startswith("2 papers:")
    assert invoke("check", "--durations", "-1").exit_code == 2


def test_summary_and_run_use_the_one_duration_format(invoke) -> None:
    result = invoke("run", "toy", "--quick", "--no-save")
    assert re.search(r" in \d+\.\d s\n", result.stderr), result.stderr
    assert not re.search(r"\d\.\ds", result.stderr)  # not "1714.7s"


def test_run_table_shows_a_short_statement(invoke) -> None:
    table = invoke("run", "toy", "--quick", "--no-save").stdout
    assert "statement" in table and "Two plus three is four." in table


def test_heartbeat_before_and_while_a_paper_runs(capsys, monkeypatch) -> None:
    monkeypatch.setattr(report, "HEARTBEAT_S", 0.2)
    reporter = report.CheckReporter(["alpha", "beta"])
    time.sleep(0.8)  # no worker has started yet (spawning, importing torch)
    reporter.started("alpha")
    reporter.progress("alpha", "alpha: rank-sweep", 2, 5)
    time.sleep(0.8)
    reporter.close()
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "  … starting: 2 papers to check"
    assert re.fullmatch(r"  … still running: alpha \(\d+\.\d s, rank-sweep 3/5\)", lines[-1])
