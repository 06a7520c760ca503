"""The scan benchmarks run and compare what they say (times are not asserted: benchmarks, not
timed tests)."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from paperlab import cli
from repro.bench import scan as scan_bench


def test_every_scan_impl_computes_the_same_forward() -> None:
    """The benchmark times the same computation for each scan: equal outputs on its inputs."""
    outs = {impl: scan_bench._inputs(impl, 70, 1, 8, 4)() for impl in scan_bench.SCANS}
    for impl, (y, h) in outs.items():
        torch.testing.assert_close(y, outs["scan_loop"][0], rtol=1e-5, atol=1e-5, msg=impl)
        torch.testing.assert_close(h, outs["scan_loop"][1], rtol=1e-5, atol=1e-5, msg=impl)


def test_bench_scan_rows_cover_every_impl_and_length() -> None:
    out = scan_bench.bench_scan((16, 32), impls=("scan_loop", "scan_chunked"), D=8, repeats=1)
    assert {(r["L"], r["impl"]) for r in out["rows"]} == {
        (L, impl) for L in (16, 32) for impl in ("scan_loop", "scan_chunked")
    }
    assert out["D"] == 8 and set(out["exponents"]) == {"scan_loop", "scan_chunked"}


def test_mamba_vs_hf_reports_equal_logits() -> None:
    pytest.importorskip("transformers", reason="needs the [conformance] extra")
    from repro.bench.mamba_hf import bench_vs_hf

    out = bench_vs_hf((9, 33), d_model=16, n_layers=2, repeats=1)
    assert [r["L"] for r in out["rows"]] == [9, 33]
    for r in out["rows"]:
        assert r["loop_max_abs_diff"] <= 1e-5 and r["chunked_max_abs_diff"] <= 1e-5
        assert min(r["hf_ms"], r["loop_ms"], r["chunked_ms"]) > 0


def test_mamba_vs_hf_reports_a_weight_that_was_not_copied(monkeypatch) -> None:
    """The reported difference is real: an HF model missing one copied weight (the skip D of
    the first layer left at HF's own initial value) shows up in both scans' rows."""
    pytest.importorskip("transformers", reason="needs the [conformance] extra")
    from repro.bench import mamba_hf

    right = mamba_hf.to_hf

    def one_weight_lost(model):
        hf = right(model)
        with torch.no_grad():
            hf.backbone.layers[0].mixer.D.add_(1.0)
        return hf

    monkeypatch.setattr(mamba_hf, "to_hf", one_weight_lost)
    out = mamba_hf.bench_vs_hf((9,), d_model=16, n_layers=2, repeats=1)
    assert out["rows"][0]["loop_max_abs_diff"] > 1e-3
    assert out["rows"][0]["chunked_max_abs_diff"] > 1e-3


@pytest.mark.slow
def test_bench_scan_command_prints_json_with_every_section() -> None:
    args = ["bench", "scan", "--l", "32,64", "--width-l", "32", "--repeats", "1"]
    result = CliRunner().invoke(
        cli, [*args, "--decode-tokens", "129", "--json"], catch_exceptions=False
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {r["impl"] for r in out["rows"]} == set(scan_bench.IMPLS)
    assert out["width"]["D"] == 512
    assert "decode" in out
