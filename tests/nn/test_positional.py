import pytest
import torch

from repro.nn.positional import (
    RotaryEmbedding,
    apply_rope_ref,
    sinusoidal_encoding,
    sinusoidal_encoding_ref,
)


@pytest.mark.parametrize("n_positions,dim", [(1, 2), (50, 64), (13, 7)])
def test_sinusoidal_matches_the_formula(n_positions: int, dim: int):
    pe = sinusoidal_encoding(n_positions, dim)
    assert pe.shape == (n_positions, dim)
    torch.testing.assert_close(
        pe.double(), sinusoidal_encoding_ref(n_positions, dim), atol=1e-5, rtol=0
    )


def test_sinusoidal_offset_is_a_linear_map():
    """§3.5: PE[pos + k] is linear in PE[pos]: a rotation by k·ω_i per (sin, cos) pair."""
    dim, k = 16, 3
    pe = sinusoidal_encoding(40, dim).double()
    M = torch.zeros(dim, dim, dtype=torch.float64)
    for i in range(dim // 2):
        b = torch.tensor(k / 10000 ** (2 * i / dim), dtype=torch.float64)
        M[2 * i : 2 * i + 2, 2 * i : 2 * i + 2] = torch.stack(
            [torch.stack([b.cos(), -b.sin()]), torch.stack([b.sin(), b.cos()])]
        )
    torch.testing.assert_close(pe[: 40 - k] @ M, pe[k:], atol=1e-5, rtol=0)


@pytest.mark.parametrize("shape", [(1, 1, 1, 2), (2, 3, 17, 8), (3, 2, 5, 40), (1, 4, 9, 80)])
@pytest.mark.parametrize("start_pos", [0, 11])
def test_rope_matches_block_rotation_ref(shape: tuple[int, ...], start_pos: int):
    torch.manual_seed(0)
    x = torch.randn(shape)
    rope = RotaryEmbedding(shape[-1], max_seq_len=64)
    torch.testing.assert_close(
        rope(x, start_pos), apply_rope_ref(x, start_pos), atol=1e-5, rtol=1e-5
    )


def test_rope_fp64_agrees_to_fp32_precision_and_bf16_keeps_dtype():
    torch.manual_seed(0)
    x = torch.randn(2, 2, 33, 16, dtype=torch.float64)
    rope = RotaryEmbedding(16, max_seq_len=64)
    torch.testing.assert_close(rope(x, 5), apply_rope_ref(x, 5), atol=1e-5, rtol=0)
    xb = x.bfloat16()
    out = rope(xb, 5)
    assert out.dtype == torch.bfloat16
    err = (out.double() - apply_rope_ref(x, 5)).abs().max()
    ref_err = (apply_rope_ref(xb, 5).double() - apply_rope_ref(x, 5)).abs().max()
    assert err <= 2 * ref_err


def test_rope_preserves_norms():
    x = torch.randn(2, 2, 10, 32)
    torch.testing.assert_close(RotaryEmbedding(32, 16)(x).norm(dim=-1), x.norm(dim=-1))


def test_rope_scores_depend_only_on_relative_position():
    """RoFormer Eq. 16: <R_m q, R_n k> = q^T R_{n-m} k."""
    torch.manual_seed(0)
    q, k = torch.randn(1, 1, 1, 64), torch.randn(1, 1, 1, 64)
    rope = RotaryEmbedding(64, max_seq_len=100)

    def score(m: int, n: int) -> torch.Tensor:
        return (rope(q, m) * rope(k, n)).sum()

    torch.testing.assert_close(score(3, 10), score(50, 57), atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(score(0, 0), (q * k).sum(), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(score(3, 10), score(3, 11))


def test_rope_rejects_positions_past_the_table():
    with pytest.raises(AssertionError, match="max_seq_len"):
        RotaryEmbedding(8, max_seq_len=4)(torch.randn(1, 1, 3, 8), 2)
