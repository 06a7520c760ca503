from __future__ import annotations

import math

import pytest
import torch

from repro.scaling.closed_form import LossSurface
from repro.scaling.isoflop import fit_approach2, fit_parabola, isoflop_minimum

SURFACE = LossSurface(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
BUDGETS = [1e18, 1e19, 1e20, 1e21]


def _profiles(
    half_width: float, noise: float, seed: int, sizes: int = 9
) -> tuple[list, list, list]:
    """Sizes over ±half_width decades around the true N_opt of each budget."""
    g = torch.Generator().manual_seed(seed)
    c_all, n_all, l_all = [], [], []
    for c in BUDGETS:
        center, _ = SURFACE.optimal(c)
        for j in range(sizes):
            n = center * 10 ** (half_width * (2 * j / (sizes - 1) - 1))
            loss = SURFACE.loss(n, c / (6 * n)) * math.exp(
                noise * float(torch.randn(1, generator=g))
            )
            c_all.append(c)
            n_all.append(n)
            l_all.append(loss)
    return c_all, n_all, l_all


def test_parabola_is_exact_on_a_parabola() -> None:
    x = [0.0, 1.0, 2.5, 4.0]
    c0, c1, c2 = fit_parabola(
        [v + 10 for v in x], [3 - 2 * (v + 10) + 0.5 * (v + 10) ** 2 for v in x]
    )
    assert (c0, c1, c2) == pytest.approx((3.0, -2.0, 0.5), abs=1e-8)


def test_narrow_profiles_recover_the_closed_form() -> None:
    fit = fit_approach2(*_profiles(0.3, 0.0, seed=0))
    assert fit.a == pytest.approx(SURFACE.a, abs=0.01)
    for m in fit.minima:
        assert m.interior
        assert m.n_opt == pytest.approx(SURFACE.optimal(m.budget)[0], rel=0.05)


def test_bootstrap_interval_covers_the_truth_with_noise() -> None:
    fit = fit_approach2(*_profiles(0.5, 0.005, seed=1), n_boot=300, level=0.9)
    assert fit.ci is not None
    assert fit.ci.low < SURFACE.a < fit.ci.high
    assert fit.ci.excludes(0.0)


def test_monotone_and_flat_profiles_have_no_interior_minimum() -> None:
    n = [100, 200, 400, 800, 1600]
    assert not isoflop_minimum(1.0, n, [2.0, 1.9, 1.8, 1.7, 1.6]).interior  # still falling
    flat = [3.466, 3.463, 3.468, 3.465, 3.467]  # noise around a constant
    assert not isoflop_minimum(1.0, n, flat, min_depth=0.02).interior
    assert isoflop_minimum(1.0, n, [2.0, 1.7, 1.6, 1.7, 2.0], min_depth=0.02).interior
