"""The FlashAttention HBM-access simulator: loop counts against closed forms and brute force."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from repro.lab.claims import Context
from repro.lab.library import Library


@pytest.fixture(scope="module")
def fa():
    return Library().get("flashattention").module()


@pytest.mark.parametrize("N", [1, 7, 64, 97, 300])
@pytest.mark.parametrize("d", [1, 3, 16, 64])
@pytest.mark.parametrize("M_over_4d", [1, 2, 5, 16, 100])
def test_simulated_counts_equal_closed_forms(fa, N: int, d: int, M_over_4d: int) -> None:
    M = 4 * d * M_over_4d
    assert fa.flash_io(N, d, M) == fa.flash_closed_form(N, d, M)
    assert fa.standard_io(N, d) == fa.standard_closed_form(N, d)


def test_block_sizes_follow_algorithm_1_line_1(fa) -> None:
    assert fa.block_sizes(16384, 64) == (64, 64)  # M = 4d²: Br = Bc = d
    assert fa.block_sizes(100_000, 64) == (64, 391)  # Br capped at d, Bc = ⌈M/4d⌉
    assert fa.block_sizes(1000, 64) == (4, 4)


@pytest.mark.parametrize("stride", [1, 2, 3, 8])
def test_block_sparse_visits_exactly_the_nonzero_blocks(fa, stride: int) -> None:
    """Brute force over the full block grid: the IO of a block-sparse pass, block by block."""
    N, d, M = 1000, 16, 4 * 16 * 16  # Br = Bc = 16, ragged last block
    br, bc = fa.block_sizes(M, d)
    io = 3 * N * d + 2 * N  # init O, ℓ, m; K and V read once
    for j in range(math.ceil(N / bc)):
        for i in range(math.ceil(N / br)):
            if (i - j) % stride == 0:
                rows = min(br, N - i * br)
                io += 3 * rows * d + 4 * rows  # Q_i, O_i, ℓ_i, m_i in; O_i, ℓ_i, m_i out
    assert fa.flash_io(N, d, M, stride) == io


def test_loglog_slope_recovers_a_power_law(fa) -> None:
    xs = [1.0, 2.0, 4.0, 8.0]
    assert fa.loglog_slope(xs, [3 * x**-1.5 for x in xs]) == pytest.approx(-1.5)
    with pytest.raises(ValueError):  # a point without its count is refused, not dropped
        fa.loglog_slope(xs, [3.0, 1.0, 0.5])


def test_flash_beats_standard_once_sram_exceeds_3d2(fa) -> None:
    """Standard/flash ≈ M / 3d² for N ≫ d: below M = 3d² the tiled loop moves more data."""
    N, d = 8192, 64
    assert fa.standard_io(N, d) < fa.flash_io(N, d, 2 * d * d)
    assert fa.standard_io(N, d) > 2 * fa.flash_io(N, d, 24 * d * d)


def test_speed_claim_rejects_a_kernel_with_tiny_tiles(fa, monkeypatch: pytest.MonkeyPatch) -> None:
    """The control of `speed-vs-sdpa`: the same tiled kernel with 8 × 8 tiles (a copy-heavy loop
    of thousands of small calls) is timed by the claim's own code path and must land outside the
    claim's ≤ 2× bound against SDPA."""
    import repro.bench.attention as bench
    from repro.lab.claims import Context

    real = bench.flash_attention

    def tiny_tiles(q, k, v, causal=False, **kw):
        return real(q, k, v, causal, block_q=8, block_k=8)

    monkeypatch.setattr(bench, "flash_attention", tiny_tiles)
    ctx = Context(config=fa.Config(speed_n=256), seed=0)
    assert fa.speed_vs_sdpa(ctx).value > 2.0


# --- the experiment's parts, with the kernel, the memory runs and the timers recorded ------


def _seeded(seed: int, shape: tuple[int, ...]) -> list:
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for _ in range(4)]  # q, k, v, dO


def test_exactness_measures_the_real_kernel_against_fp64(fa) -> None:
    cfg = fa.Config(exact_shape=(1, 2, 13, 5), exact_blocks=(4, 8))
    got = fa.exactness(cfg, seed=3)
    keys = [f"{n}_{tag}" for tag in ("full", "causal") for n in ("fwd", "dq", "dk", "dv")]
    assert sorted(got) == sorted(keys)
    assert all(0 <= e < 1e-5 for e in got.values()), got


def test_exactness_feeds_seeded_inputs_and_reports_each_gap(fa, monkeypatch) -> None:
    """A stand-in kernel: the fp32 reference with Q and V scaled by 1 + 1/8 (full) or 1 + 1/16
    (causal) and O shifted by 0.5 or 0.25, so that each of the eight entries has its own gap."""
    from repro.nn.attention import attention_ref

    calls = []

    class Shift(torch.autograd.Function):
        @staticmethod
        def forward(_, o, c):
            return o + c

        @staticmethod
        def backward(_, g):
            return g, None

    def kernel(q, k, v, causal, block_q, block_k):
        calls.append((q.detach().clone(), k.detach().clone(), v.detach().clone(), causal,
                      block_q, block_k))  # fmt: skip
        grow = 1 + (1 / 16 if causal else 1 / 8)
        o = attention_ref(q * grow, k, v * grow, causal=causal) / grow
        return Shift.apply(o, 0.25 if causal else 0.5)

    monkeypatch.setattr(fa, "flash_attention", kernel)
    shape = (2, 3, 11, 6)
    got = fa.exactness(fa.Config(exact_shape=shape, exact_blocks=(3, 5)), seed=4)
    q, k, v, do = _seeded(4, shape)
    assert [c[3:] for c in calls] == [(False, 3, 5), (True, 3, 5)]
    for c in calls:
        assert torch.equal(c[0], q) and torch.equal(c[1], k) and torch.equal(c[2], v)
    want = {}
    for causal, tag in ((False, "full"), (True, "causal")):
        grow = 1 + (1 / 16 if causal else 1 / 8)
        # naive fp64 attention and its gradients, by autograd on a hand-written softmax
        q64, k64, v64 = (x.double().requires_grad_() for x in (q, k, v))
        s = q64 @ k64.transpose(-2, -1) / math.sqrt(6)
        if causal:
            s = s.masked_fill(torch.ones(11, 11, dtype=torch.bool).triu(1), -math.inf)
        o64 = torch.softmax(s, -1) @ v64
        ref = torch.autograd.grad(o64, (q64, k64, v64), do.double())
        q2, k2, v2 = (x.double().requires_grad_() for x in (q, k, v))
        s2 = (q2 * grow) @ k2.transpose(-2, -1) / math.sqrt(6)
        if causal:
            s2 = s2.masked_fill(torch.ones(11, 11, dtype=torch.bool).triu(1), -math.inf)
        o2 = torch.softmax(s2, -1) @ (v2 * grow) / grow
        fake = torch.autograd.grad(o2, (q2, k2, v2), do.double())
        for name, a, b in zip(("dq", "dk", "dv"), fake, ref, strict=True):
            want[f"{name}_{tag}"] = (a - b).abs().max().item()
        # the stand-in's forward differs from the reference by the shift and the scaling
        want[f"fwd_{tag}"] = (o2 + (0.25 if causal else 0.5) - o64).abs().max().item()
    assert got == pytest.approx(want, rel=1e-4, abs=2e-6)
    assert min(want.values()) > 1e-3  # every entry is a real gap, not rounding


def test_memory_runs_and_their_growth(fa, monkeypatch) -> None:
    started = []

    def start(n, impl, B, H, d, block):
        started.append((impl, n, B, H, d, block))
        return f"{impl}@{n}"

    peak = {
        "flash@100": 3 * 2**20,
        "flash@200": 5 * 2**19,
        "naive@100": 2**21,
        "naive@200": 7 * 2**21,
    }
    monkeypatch.setattr(fa, "start_peak_memory", start)
    monkeypatch.setattr(fa, "read_peak_memory", lambda proc: peak[proc])
    cfg = fa.Config(memory_shape=(2, 3, 5), memory_n=100, memory_block=7)
    runs = fa.start_memory_runs(cfg)
    assert started == [("flash", 100, 2, 3, 5, 7), ("flash", 200, 2, 3, 5, 7),
                       ("naive", 100, 2, 3, 5, 7), ("naive", 200, 2, 3, 5, 7)]  # fmt: skip
    assert runs == {(i, n): f"{i}@{n}" for i in ("flash", "naive") for n in (100, 200)}
    got = fa.memory_growth(cfg, runs)
    assert got == {
        "flash_100_mib": 3.0,
        "flash_200_mib": 2.5,
        "naive_100_mib": 2.0,
        "naive_200_mib": 14.0,
        "flash_growth": 2.5 / 3.0,
        "naive_growth": 7.0,
        "output_mib": [4 * 2 * 3 * 100 * 5 / 2**20, 4 * 2 * 3 * 200 * 5 / 2**20],
        "scores_mib": [4 * 2 * 3 * 100 * 100 / 2**20, 4 * 2 * 3 * 200 * 200 / 2**20],
    }


def _slope(xs, ys) -> float:
    lx, ly = np.log(np.asarray(xs, float)), np.log(np.asarray(ys, float))
    return float(np.polyfit(lx, ly, 1)[0])


def _flash_by_hand(N: int, d: int, M: int, stride: int = 1) -> int:
    br = min(math.ceil(M / (4 * d)), d)
    bc = math.ceil(M / (4 * d))
    io = 3 * N * d + 2 * N  # O, ℓ, m written; K and V read once
    for j in range(math.ceil(N / bc)):
        for i in range(math.ceil(N / br)):
            if (i - j) % stride == 0:
                rows = min(br, N - i * br)
                io += 3 * rows * d + 4 * rows
    return io


_IO_CFG = dict(io_d=4, io_n_fixed=96, io_m_sweep=(64, 128, 192), io_m_fixed=48,
               io_n_sweep=(30, 50, 71), io_sparsity=(1.0, 0.5, 0.25))  # fmt: skip


def test_io_sweeps_against_hand_counts(fa) -> None:
    cfg = fa.Config(**_IO_CFG)
    seen = []
    got = fa.io_sweeps(cfg, Context(progress=lambda *a: seen.append(a)))
    d, std = 4, lambda N: 4 * N * 4 + 4 * N * N  # noqa: E731
    assert seen == [("flashattention: IO simulation", i, 9) for i in (*range(1, 7), 9)]
    points = [(96, 64), (96, 128), (96, 192), (30, 48), (50, 48), (71, 48)]
    assert got["io_rows"] == [
        {"N": N, "d": d, "M": M, "standard": std(N), "flash": _flash_by_hand(N, d, M),
         "closed_form_ok": True}
        for N, M in points
    ]  # fmt: skip
    assert got["io_closed_form_ok"] is True
    over_m = [_flash_by_hand(96, d, M) for M in (64, 128, 192)]
    over_n = [_flash_by_hand(N, d, 48) for N in (30, 50, 71)]
    assert got["io_flash_over_m"] == over_m and got["io_flash_over_n"] == over_n
    adv = [std(96) / f for f in over_m]
    assert got["io_advantage_over_m"] == pytest.approx(adv)
    assert got["io_flash_exponent_m"] == pytest.approx(_slope([64, 128, 192], over_m))
    assert got["io_flash_exponent_n"] == pytest.approx(_slope([30, 50, 71], over_n))
    assert got["io_standard_exponent_n"] == pytest.approx(
        _slope([30, 50, 71], [std(30), std(50), std(71)])
    )
    assert got["io_advantage_exponent_m"] == pytest.approx(_slope([64, 128, 192], adv))
    assert got["io_flash_constant"] == pytest.approx(
        [f * M / (96 * d) ** 2 for f, M in zip(over_m, (64, 128, 192), strict=True)]
    )
    sparse = [_flash_by_hand(71, d, 48, stride) for stride in (1, 2, 4)]
    assert got["io_sparse_counts"] == sparse
    assert got["io_sparse_over_dense"] == pytest.approx([c / sparse[0] for c in sparse])
    assert got["io_sparse_exponent_s"] == pytest.approx(_slope([1.0, 0.5, 0.25], sparse))


def test_io_sweeps_flag_a_closed_form_that_is_off(fa, monkeypatch) -> None:
    cfg = fa.Config(**_IO_CFG)
    real_flash, real_standard = fa.flash_closed_form, fa.standard_closed_form
    monkeypatch.setattr(fa, "flash_closed_form", lambda N, d, M: real_flash(N, d, M) + (N == 50))
    got = fa.io_sweeps(cfg, Context())
    assert [r["closed_form_ok"] for r in got["io_rows"]] == [True] * 4 + [False, True]
    assert got["io_closed_form_ok"] is False
    monkeypatch.setattr(fa, "flash_closed_form", real_flash)
    monkeypatch.setattr(fa, "standard_closed_form", lambda N, d: real_standard(N, d) - (N == 30))
    got = fa.io_sweeps(cfg, Context())
    assert [r["closed_form_ok"] for r in got["io_rows"]] == [True] * 3 + [False, True, True]


def _record_plots(line_plots) -> list:
    """save_plots imports save_line_plot when it runs: record it where it comes from."""
    import repro.study.plots as plots

    return line_plots(plots)


def test_plots_show_the_sweeps_and_the_closed_forms(fa, line_plots, tmp_path) -> None:
    drawn = _record_plots(line_plots)
    cfg = fa.Config(**_IO_CFG)
    metrics = {"io_flash_over_m": [9, 8, 7], "io_flash_over_n": [1, 2, 3]}
    fa.save_plots(cfg, metrics, Context(out_dir=tmp_path))
    std = lambda N: 4 * N * 4 + 4 * N * N  # noqa: E731
    assert drawn == [
        (
            tmp_path / "io_vs_sram.svg",
            {
                "FlashAttention (simulated)": ([64, 128, 192], [9, 8, 7]),
                "12 N²d²/M": ([64, 128, 192], [12 * (96 * 4) ** 2 / m for m in (64, 128, 192)]),
                "standard (simulated)": ([64, 128, 192], [std(96)] * 3),
            },
            {"xlabel": "SRAM size M (elements)", "ylabel": "HBM accesses (elements)",
             "title": "HBM accesses vs SRAM size (N=96, d=4)", "logx": True, "logy": True},
        ),
        (
            tmp_path / "io_vs_length.svg",
            {
                "FlashAttention (simulated)": ([30, 50, 71], [1, 2, 3]),
                "standard (simulated)": ([30, 50, 71], [std(30), std(50), std(71)]),
            },
            {"xlabel": "sequence length N", "ylabel": "HBM accesses (elements)",
             "title": "HBM accesses vs sequence length (d=4, M=48)", "logx": True, "logy": True},
        ),
    ]  # fmt: skip


def test_experiment_joins_its_parts(fa, monkeypatch, line_plots, tmp_path) -> None:
    monkeypatch.setattr(fa, "start_peak_memory", lambda n, impl, B, H, d, block: (impl, n))
    monkeypatch.setattr(
        fa, "read_peak_memory", lambda p: (1 if p[0] == "flash" else 3) * p[1] * 2**20
    )
    cfg = fa.Config(exact_shape=(1, 2, 9, 4), exact_blocks=(4, 4), memory_shape=(1, 1, 8),
                    memory_n=10, **_IO_CFG)  # fmt: skip
    drawn = _record_plots(line_plots)
    got = fa.experiment(cfg, Context(config=cfg, seed=5, out_dir=tmp_path))
    assert list(got) == ["exact", *fa.io_sweeps(cfg, Context()), "memory"]
    assert got["exact"] == fa.exactness(cfg, 5)
    assert got["exact"] != fa.exactness(cfg, 6)
    assert {k: got[k] for k in got if k.startswith("io")} == fa.io_sweeps(cfg, Context())
    assert got["memory"]["flash_growth"] == 2.0 and got["memory"]["naive_growth"] == 2.0
    assert got["memory"]["naive_20_mib"] == 60.0
    assert [p.name for p, _, _ in drawn] == ["io_vs_sram.svg", "io_vs_length.svg"]
    fa.experiment(cfg, Context(config=cfg, seed=5))
    assert len(drawn) == 2  # no folder, no plots


# --- the claims, on made-up metrics --------------------------------------------------------


def _metrics() -> dict:
    return {
        "exact": {"fwd_full": 1e-7, "dq_full": 3e-6, "dk_full": 2e-6, "dv_full": 1e-6,
                  "fwd_causal": 4e-7, "dq_causal": 5e-6, "dk_causal": 6e-6, "dv_causal": 9e-6},
        "memory": {"flash_512_mib": 9.0, "flash_1024_mib": 17.0, "naive_512_mib": 70.0,
                   "naive_1024_mib": 270.0, "flash_growth": 17 / 9, "naive_growth": 27 / 7,
                   "output_mib": [8.0, 16.0], "scores_mib": [64.0, 256.0]},
        "io_closed_form_ok": False,
        "io_rows": [{"N": 3}],
        "io_flash_over_m": [40, 20, 10],
        "io_flash_constant": [12.5, 12.4, 12.3],
        "io_flash_exponent_m": -0.98,
        "io_flash_over_n": [5, 20, 45],
        "io_flash_exponent_n": 1.97,
        "io_standard_exponent_n": 1.99,
        "io_advantage_over_m": [2.0, 4.0, 8.0],
        "io_advantage_exponent_m": 1.01,
        "io_sparse_over_dense": [1.0, 0.52, 0.27],
        "io_sparse_exponent_s": 0.95,
    }  # fmt: skip


def test_claims_read_their_metrics(fa) -> None:
    cfg = fa.Config(io_d=8, io_m_sweep=(96, 192, 384), io_n_sweep=(10, 20, 30),
                    io_sparsity=(1.0, 0.5, 0.25))  # fmt: skip
    m = _metrics()
    ctx = Context(config=cfg, run_experiment=lambda c, x: m)
    got = fa.exact_forward(ctx)
    assert got.value == 4e-7 and got.details == {"fwd_full": 1e-7, "fwd_causal": 4e-7}
    got = fa.exact_backward(ctx)
    assert got.value == 9e-6
    assert got.details == {k: v for k, v in m["exact"].items() if k[:3] in ("dq_", "dk_", "dv_")}
    got = fa.memory_flash_linear(ctx)
    assert got.value == 17 / 9
    assert got.details == {"flash_512_mib": 9.0, "flash_1024_mib": 17.0, "flash_growth": 17 / 9,
                           "output_mib": [8.0, 16.0]}  # fmt: skip
    got = fa.memory_naive_quadratic(ctx)
    assert got.value == 27 / 7
    assert got.details == {"naive_512_mib": 70.0, "naive_1024_mib": 270.0, "naive_growth": 27 / 7,
                           "scores_mib": [64.0, 256.0]}  # fmt: skip
    got = fa.io_counts_match_closed_form(ctx)
    assert got.value is False and got.details == {"points": [{"N": 3}]}
    got = fa.io_flash_exponent_m(ctx)
    assert got.value == -0.98
    assert got.details == {"M": [96, 192, 384], "flash": [40, 20, 10],
                           "count·M/(N²d²)": [12.5, 12.4, 12.3]}  # fmt: skip
    got = fa.io_flash_exponent_n(ctx)
    assert got.value == 1.97
    assert got.details == {"N": [10, 20, 30], "flash": [5, 20, 45], "standard_exponent_n": 1.99}
    got = fa.io_advantage_exponent_m(ctx)
    assert got.value == 1.01
    assert got.details == {"M": [96, 192, 384], "standard/flash": [2.0, 4.0, 8.0],
                           "M/(3d²)": [96 / 192, 192 / 192, 384 / 192]}  # fmt: skip
    got = fa.io_block_sparse_exponent_s(ctx)
    assert got.value == 0.95
    assert got.details == {"s": [1.0, 0.5, 0.25], "sparse/dense": [1.0, 0.52, 0.27]}


def test_speed_claim_times_flash_sdpa_and_the_naive_baseline(fa, monkeypatch) -> None:
    """bench_attention, the timer, the naive kernel and torch.randn recorded: on the CPU one
    thread; on another device (only named here, nothing runs there) the threads left alone and
    the naive kernel's inputs made on that device."""
    calls, made = [], []
    row = {"B": 2, "H": 3, "D": 5, "flash_ms": 6.0, "sdpa_ms": 2.0, "ratio": 3.0}

    def bench_attention(ns, causal, backward, device):
        calls.append(("bench", ns, causal, backward, device, torch.get_num_threads()))
        return [dict(row)]

    def median_seconds(fn, device):
        out = fn()
        calls.append(("naive", out, device, torch.is_grad_enabled(), torch.get_num_threads()))
        return 0.004

    def randn(*shape, **kw):
        made.append((shape, kw))
        return torch.zeros(*shape)

    monkeypatch.setattr(fa, "bench_attention", bench_attention)
    monkeypatch.setattr(fa, "median_seconds", median_seconds)
    monkeypatch.setattr(fa, "attention_ref", lambda q, k, v: tuple(q.shape))
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(torch, "randn", randn)
        got = fa.speed_vs_sdpa(Context(config=fa.Config(speed_n=7), device="cpu"))
        assert torch.get_num_threads() == 2
        fa.speed_vs_sdpa(Context(config=fa.Config(speed_n=7), device="cuda"))
    finally:
        monkeypatch.undo()
        torch.set_num_threads(before)
    assert calls == [("bench", (7,), (False,), False, "cpu", 1),
                     ("naive", (2, 3, 7, 5), "cpu", False, 1),
                     ("bench", (7,), (False,), False, "cuda", 2),
                     ("naive", (2, 3, 7, 5), "cuda", False, 2)]  # fmt: skip
    assert (
        made == [((2, 3, 7, 5), {"device": "cpu"})] * 3 + [((2, 3, 7, 5), {"device": "cuda"})] * 3
    )
    assert got.value == 3.0
    assert got.details == {**row, "naive_ms": pytest.approx(4.0),
                           "flash_over_naive": pytest.approx(6.0 / 4.0)}  # fmt: skip
