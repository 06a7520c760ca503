"""The Triton FlashAttention kernels on the CPU, through Triton's interpreter.

A small, fast subset of tests/nn/test_flash_triton.py for CPU CI
(tests/nn/triton_interpret_cases.py), run in a fresh interpreter with TRITON_INTERPRET=1,
which Triton reads when it is first imported.
Skipped when Triton is not installed (its wheels exist for Linux x86-64 only).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton", reason="needs the [triton] extra: pip install -e '.[triton]'")

CASES = Path(__file__).with_name("triton_interpret_cases.py")


def test_interpreted_kernels_match_the_formula():
    env = {**os.environ, "TRITON_INTERPRET": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(CASES)]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
    assert " passed" in done.stdout and "skipped" not in done.stdout, done.stdout[-2000:]
