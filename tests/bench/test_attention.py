"""The attention benchmark's flash-attn column: when the package is used, how its layout is
adapted, and that a kernel answering wrongly shows in the row (the package itself needs CUDA, so
a stand-in written here in the package's (B, N, H, D) layout plays it)."""

from __future__ import annotations

import math
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from click.testing import CliRunner

import repro.bench.attention as bench
from paperlab import cli


@pytest.fixture(autouse=True)
def _no_peak_measurement(monkeypatch) -> None:
    """The matmul peak (seconds of 2048² matmuls) is not what these tests check."""
    monkeypatch.setattr(bench, "measure_matmul_peak", lambda device, dtype: 1.0)


def naive_bnhd(q, k, v, causal: bool = False, ignore_causal: bool = False):
    """softmax(q·kᵀ/√D)·v per batch row and head, on (B, N, H, D) inputs, with loops."""
    B, N, H, D = q.shape
    out = torch.empty_like(q)
    for b in range(B):
        for h in range(H):
            s = q[b, :, h] @ k[b, :, h].T / math.sqrt(D)
            if causal and not ignore_causal:
                s = s.masked_fill(torch.ones(N, N, dtype=torch.bool).triu(1), -math.inf)
            out[b, :, h] = torch.softmax(s, -1) @ v[b, :, h]
    return out


@pytest.mark.parametrize("causal", [False, True])
def test_the_layout_adapter_gives_sdpa_on_bhnd_inputs(causal: bool) -> None:
    """(B, H, N, D) in and out, with H ≠ N ≠ D so that a missing transpose mixes heads."""
    g = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, 3, 5, 4, generator=g, dtype=torch.float64) for _ in range(3))
    got = bench.in_bnhd_layout(naive_bnhd)(q, k, v, causal)
    want = F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want)


def test_the_package_is_used_only_on_cuda_in_half_precision_when_installed(monkeypatch) -> None:
    fake = types.ModuleType("flash_attn")
    fake.flash_attn_func = naive_bnhd
    monkeypatch.setitem(sys.modules, "flash_attn", fake)
    fn, why = bench.flash_attn_package("cuda", torch.bfloat16)
    assert why == "flash_attn.flash_attn_func"
    q, k, v = (torch.randn(1, 2, 6, 3, dtype=torch.float64) for _ in range(3))
    torch.testing.assert_close(
        fn(q, k, v, True), F.scaled_dot_product_attention(q, k, v, is_causal=True)
    )
    assert bench.flash_attn_package("cuda:1", torch.float16)[0] is not None
    assert bench.flash_attn_package("cpu", torch.bfloat16) == (
        None,
        "the flash-attn package runs on CUDA only",
    )
    assert bench.flash_attn_package("cuda", torch.float32) == (
        None,
        "the flash-attn package takes fp16 or bf16 only",
    )
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # as if not installed: import fails
    assert bench.flash_attn_package("cuda", torch.bfloat16) == (
        None,
        "the flash-attn package is not installed (pip install flash-attn)",
    )


def _with_package(monkeypatch, kernel) -> None:
    monkeypatch.setattr(
        bench, "flash_attn_package", lambda device, dtype: (bench.in_bnhd_layout(kernel), "fake")
    )


def test_rows_time_the_package_and_show_how_far_it_is_from_sdpa(monkeypatch) -> None:
    _with_package(monkeypatch, naive_bnhd)
    rows = bench.bench_attention(ns=(32,), causal=(False, True), repeats=1, H=2, D=8)
    for r in rows:
        assert r["flash_attn_ms"] > 0
        flops = bench.attention_flops(32, r["causal"], r["pass"] == "fwd+bwd", B=1, H=2, D=8)
        assert r["flash_attn_gflops"] == pytest.approx(flops / 1e9 / (r["flash_attn_ms"] / 1e3))
        assert r["flash_attn_max_abs_diff_vs_sdpa"] < 1e-5
    broken = lambda q, k, v, causal: naive_bnhd(q, k, v, causal, ignore_causal=True)  # noqa: E731
    _with_package(monkeypatch, broken)
    rows = bench.bench_attention(
        ns=(32,), causal=(False, True), backward=False, repeats=1, H=2, D=8
    )
    diffs = {r["causal"]: r["flash_attn_max_abs_diff_vs_sdpa"] for r in rows}
    assert diffs[False] < 1e-5 and diffs[True] > 0.1


def test_the_table_shows_the_package_or_says_why_not(monkeypatch) -> None:
    args = ["bench", "attention", "--n", "16", "--repeats", "1", "--no-backward"]
    out = CliRunner().invoke(cli, args).output
    assert "flash-attn package: not timed: the flash-attn package runs on CUDA only" in out
    assert "flash-attn ms" not in out
    _with_package(monkeypatch, naive_bnhd)
    out = CliRunner().invoke(cli, args).output
    assert "flash-attn ms" in out and "not timed" not in out
    data = CliRunner().invoke(cli, [*args, "--json"]).output
    assert '"flash_attn_ms"' in data
