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
