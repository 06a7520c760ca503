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


@pytest.mark.parametrize("level", [0.8, 0.95])
def test_bootstrap_interval_ends_are_the_samples_quantiles(
    level: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interval's level, not only that it covers: its ends are the (1 ∓ level)/2 quantiles
    of the resampled exponents (recorded as the fit computes them)."""
    import numpy as np

    from repro.scaling import isoflop

    seen: list[float] = []
    real = isoflop._exponent
    monkeypatch.setattr(isoflop, "_exponent", lambda m: seen.append(real(m)) or seen[-1])
    fit = fit_approach2(*_profiles(0.8, 0.01, seed=3), n_boot=120, level=level, seed=2)
    assert fit.ci is not None and seen[0] == fit.a
    samples = seen[1:]
    assert fit.ci.samples == len(samples) > 100
    tail = (1 - level) / 2
    low, high = np.quantile(samples, [tail, 1 - tail])
    assert (fit.ci.low, fit.ci.high) == pytest.approx((low, high), abs=1e-12)
    assert fit.ci.level == level and fit.ci.estimate == fit.a
    assert fit.b == pytest.approx(1 - fit.a)


def test_exponent_and_minima_against_numpy() -> None:
    """a from the minima's own least squares (np.polyfit), and each minimum's N_opt and D_opt
    from its parabola's vertex, on noisy, lopsided profiles."""
    import numpy as np

    c, n, loss = _profiles(0.6, 0.01, seed=4, sizes=7)
    fit = fit_approach2(c, n, loss)
    for m in fit.minima:
        rows = [i for i, ci in enumerate(c) if ci == m.budget]
        c2, c1, c0 = np.polyfit([math.log(n[i]) for i in rows], [loss[i] for i in rows], 2)
        assert m.log_n_opt == pytest.approx(-c1 / (2 * c2), rel=1e-9)
        assert m.n_opt * m.d_opt * 6 == pytest.approx(m.budget, rel=1e-9)
    slope = np.polyfit(
        [math.log(m.budget) for m in fit.minima], [m.log_n_opt for m in fit.minima], 1
    )
    assert fit.a == pytest.approx(slope[0], rel=1e-9)
    with pytest.raises(ValueError):
        fit_approach2([1e18] * 3, n[:3], loss[:3])
