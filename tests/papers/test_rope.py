"""Pieces of papers/rope/repro.py beyond its claims: the §3.4.3 bound against a direct sum."""

from __future__ import annotations

import cmath

import pytest
import torch

from repro.lab.library import Library

ROPE = Library().get("rope").module()


@pytest.mark.parametrize("head_dim", [8, 64, 128])
def test_bound_at_zero_is_mean_of_1_to_half_d(head_dim: int) -> None:
    bound = ROPE.relative_upper_bound(torch.tensor([0]), head_dim)
    assert float(bound[0]) == pytest.approx((head_dim // 2 + 1) / 2, abs=1e-12)


@pytest.mark.parametrize("r", [1, 17, 300])
def test_bound_matches_direct_sum(r: int) -> None:
    D = 16
    theta = [10000 ** (-2 * k / D) for k in range(D // 2)]
    partial = [sum(cmath.exp(1j * r * t) for t in theta[:j]) for j in range(1, D // 2 + 1)]
    direct = sum(abs(s) for s in partial) / (D // 2)
    assert float(ROPE.relative_upper_bound(torch.tensor([r]), D)[0]) == pytest.approx(direct)


# --- the controls of the measured claims: each must fail its claim's tolerance -------------


def test_a_broken_rotation_fails_the_norm_check() -> None:
    """rotation-preserves-norm wants |‖R_m x‖ − ‖x‖| / ‖x‖ < 1e-6; a sin table one position
    ahead of the cos table is no longer a rotation and must miss by far."""
    from repro.nn.positional import RotaryEmbedding

    x = torch.randn(1, 2, 256, 64, generator=torch.Generator().manual_seed(0))
    rope = RotaryEmbedding(64, max_seq_len=257)

    def worst(r: RotaryEmbedding) -> float:
        y = r(x, 0)
        return float(((y.norm(dim=-1) - x.norm(dim=-1)).abs() / x.norm(dim=-1)).max())

    assert worst(rope) < 1e-6
    rope.sin = torch.roll(rope.sin, -1, dims=0)  # sin((m + 1)θ) beside cos(mθ)
    assert worst(rope) > 1e-3


def test_untrained_decoder_fails_both_length_claims() -> None:
    """accuracy-inside-training-length wants ≥ 0.35 and accuracy-drops-beyond-training-length a
    ratio ≤ 0.76: a decoder after one training step is flat over positions and near chance."""
    from repro.lab.claims import Context

    cfg = ROPE.Config(steps=1)
    m = ROPE.experiment(cfg, Context(config=cfg, seed=0))
    assert m["segments"]["inside"]["accuracy"] < 0.35
    assert m["accuracy_ratio_2L"] > 0.76
