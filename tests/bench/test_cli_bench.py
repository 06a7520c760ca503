"""`paperlab bench cli` runs (numbers are not asserted: it is a benchmark, not a timed test)."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from paperlab import cli


def test_bench_cli_times_list_and_show_cold_and_warm(library_dir: Path, tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli, ["bench", "cli", "--repeats", "1", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    rows = {(r["command"], r["note_cache"]): r for r in out["rows"]}
    assert set(rows) == {
        ("python -c pass", ""),
        ("list", "cold"),
        ("list", "warm"),
        ("show toy", "cold"),
        ("show toy", "warm"),
    }
    assert all(r["runs"] == 1 and r["wall_s"] > 0 and r["cpu_s"] >= 0 for r in rows.values())
    assert out["papers"] == 1
    assert not (tmp_path / "runs" / ".cache").exists()  # its caches are temporary folders


def test_bench_cli_refuses_an_unknown_paper_before_running(library_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["bench", "cli", "--slug", "tyo"])
    assert result.exit_code == 2
    assert result.stderr == "Error: unknown paper 'tyo'; did you mean 'toy'?\n"
