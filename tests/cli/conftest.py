"""A second paper beside the toy: `slow`, whose `slow-two` claim sleeps $SLOW_SECONDS (1.5 s)."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from paperlab import cli

SLOW_CHECK = """@claim("slow-two")
def two_plus_two(ctx: Context) -> int:
    import os
    import time

    time.sleep(float(os.environ.get("SLOW_SECONDS", "1.5")))
    return 2 + 2
"""


@pytest.fixture
def two_papers(library_dir: Path, toy_copy) -> Path:
    slow = toy_copy("slow", {"id: two-plus-two": "id: slow-two"})
    repro = slow / "repro.py"
    old = '@claim("two-plus-two")\ndef two_plus_two(ctx: Context) -> int:\n    return 2 + 2\n'
    assert old in repro.read_text()
    repro.write_text(repro.read_text().replace(old, SLOW_CHECK))
    return library_dir


@pytest.fixture
def invoke(library_dir: Path):
    runner = CliRunner()

    def go(*args: str, **kwargs):
        return runner.invoke(cli, list(args), catch_exceptions=False, **kwargs)

    return go
