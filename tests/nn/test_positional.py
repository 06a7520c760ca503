import math

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


def test_rope_fp64_is_exact_and_bf16_keeps_dtype():
    torch.manual_seed(0)
    x = torch.randn(2, 2, 33, 16, dtype=torch.float64)
    rope = RotaryEmbedding(16, max_seq_len=64)
    torch.testing.assert_close(rope(x, 5), apply_rope_ref(x, 5), atol=1e-12, rtol=0)
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
    # start_pos 2 + T 3: the message names the last position asked for and the table's length
    with pytest.raises(AssertionError, match="positions up to 5 exceed max_seq_len=4"):
        RotaryEmbedding(8, max_seq_len=4)(torch.randn(1, 1, 3, 8), 2)


@pytest.mark.parametrize("head_dim,base", [(8, 10000.0), (64, 10000.0), (16, 500.0)])
def test_rope_angles_follow_eq_15_written_out(head_dim: int, base: float):
    """θ_i = base^(−2(i−1)/D), i = 1..D/2 (RoFormer Eq. 15), evaluated here with math.pow,
    not with the module's own helper, so a frequency bug cannot cancel out."""
    rope = RotaryEmbedding(head_dim, max_seq_len=20, base=base)
    theta = [math.pow(base, -2 * (i - 1) / head_dim) for i in range(1, head_dim // 2 + 1)]
    angles = torch.tensor([[m * t for t in theta] for m in range(20)], dtype=torch.float64)
    torch.testing.assert_close(rope.cos.double(), angles.cos(), atol=1e-6, rtol=0)
    torch.testing.assert_close(rope.sin.double(), angles.sin(), atol=1e-6, rtol=0)
    # and on a tensor: plane i of position m is rotated by m·θ_i
    x = torch.zeros(1, 1, 20, head_dim, dtype=torch.float64)
    x[..., 0::2] = 1.0  # every plane starts at (1, 0)
    out = rope(x)
    torch.testing.assert_close(out[0, 0, :, 0::2], angles.cos(), atol=1e-6, rtol=0)
    torch.testing.assert_close(out[0, 0, :, 1::2], angles.sin(), atol=1e-6, rtol=0)
    torch.testing.assert_close(apply_rope_ref(x, base=base)[0, 0, :, 1::2], angles.sin())


def test_sinusoid_frequencies_follow_section_3_5_written_out():
    """PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(...), with math.sin here."""
    d = 10
    pe = sinusoidal_encoding(30, d).double()
    for pos in (0, 1, 7, 29):
        for i in range(d // 2):
            w = pos / math.pow(10000.0, 2 * i / d)
            assert abs(pe[pos, 2 * i].item() - math.sin(w)) < 1e-5
            assert abs(pe[pos, 2 * i + 1].item() - math.cos(w)) < 1e-5


def test_rope_ref_builds_its_tables_on_the_inputs_device():
    """Positions, angles and rotation matrices follow x's device (what a CUDA input needs),
    checked on CPU with a meta tensor: any table left on the CPU mixes devices and raises, or
    pulls the result off the meta device."""
    x = torch.empty(2, 3, 5, 8, device="meta")
    out = apply_rope_ref(x, start_pos=4, base=500.0)
    assert out.device.type == "meta" and out.shape == x.shape and out.dtype == x.dtype


def test_rope_frequencies_default_base_is_10000():
    """θ_i = 10000^(−2(i−1)/D) (RoFormer Eq. 15's base) when no base is given."""
    from repro.nn.positional import rope_frequencies

    want = torch.tensor([math.pow(10000.0, -2 * i / 6) for i in range(3)], dtype=torch.float64)
    torch.testing.assert_close(rope_frequencies(6), want, atol=0, rtol=1e-15)


def test_rope_rotates_fp32_inputs_in_fp32():
    """Eq. 34 in fp32 (tables rounded to fp32 first), bit for bit: the rotation must not run in
    the tables' fp64, which gives different roundings here and is slow on GPUs."""
    g = torch.Generator().manual_seed(3)
    x = torch.randn(2, 3, 9, 16, generator=g) * 100
    rope = RotaryEmbedding(16, max_seq_len=32)
    cos, sin = rope.cos[4:13].float(), rope.sin[4:13].float()  # (T, D/2) fp32
    x1, x2 = x[..., 0::2], x[..., 1::2]
    want = torch.stack((x1 * cos - x2 * sin, x1 * sin + x2 * cos), -1).flatten(-2)
    got = rope(x, 4)
    assert got.dtype == torch.float32 and torch.equal(got, want)
    x1d, x2d = x1.double(), x2.double()
    in_fp64 = (
        torch.stack(
            (
                x1d * rope.cos[4:13] - x2d * rope.sin[4:13],
                x1d * rope.sin[4:13] + x2d * rope.cos[4:13],
            ),
            -1,
        )
        .flatten(-2)
        .float()
    )
    assert not torch.equal(got, in_fp64)  # so the check above can tell the two apart
