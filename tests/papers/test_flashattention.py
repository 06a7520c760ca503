"""The FlashAttention HBM-access simulator: loop counts against closed forms and brute force."""

from __future__ import annotations

import math

import pytest

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
