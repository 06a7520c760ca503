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
    assert fit.ci is None  # no bootstrap unless asked for
    deep = fit_approach2(*_profiles(0.3, 0.0, seed=0), min_depth=1.0)  # valleys are shallower
    assert deep.a == pytest.approx(fit.a, rel=1e-12)  # lstsq is not bit-reproducible
    assert not any(m.interior for m in deep.minima)
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
        assert m.loss_opt == pytest.approx(c0 - c1 * c1 / (4 * c2), rel=1e-9)
        assert m.n_opt * m.d_opt * 6 == pytest.approx(m.budget, rel=1e-9)
    slope = np.polyfit(
        [math.log(m.budget) for m in fit.minima], [m.log_n_opt for m in fit.minima], 1
    )
    assert fit.a == pytest.approx(slope[0], rel=1e-9)
    with pytest.raises(ValueError, match="^Approach 2 needs at least two budgets$"):
        fit_approach2([1e18] * 3, n[:3], loss[:3])
    with pytest.raises(ValueError):  # one loss short
        fit_approach2(c, n, loss[:-1])


def test_two_budgets_are_enough() -> None:
    """a is then the slope through the two vertices."""
    c, n, loss = _profiles(0.5, 0.01, seed=6, sizes=5)
    two = [i for i, ci in enumerate(c) if ci in (BUDGETS[0], BUDGETS[2])]
    fit = fit_approach2([c[i] for i in two], [n[i] for i in two], [loss[i] for i in two])
    lo, hi = fit.minima
    slope = (hi.log_n_opt - lo.log_n_opt) / (math.log(BUDGETS[2]) - math.log(BUDGETS[0]))
    assert (lo.budget, hi.budget) == (BUDGETS[0], BUDGETS[2])
    assert fit.a == pytest.approx(slope, rel=1e-9)


def _residual_bootstrap_ref(budgets, n, loss, n_boot: int, seed: int) -> list[float]:
    """The residual bootstrap of `fit_approach2`, naively with numpy: per budget a parabola in
    ln N (np.polyfit), residuals pooled over budgets and scaled by √(n/(n − 3·budgets)), each
    run's loss redrawn as its fitted value plus a pooled residual (the same torch draws), the
    vertices refitted and a = slope of ln N_opt on ln C; a resample with a profile that has
    no valley is dropped."""
    import numpy as np

    groups = {}
    for c, ni, li in zip(budgets, n, loss, strict=True):
        groups.setdefault(c, ([], []))
        groups[c][0].append(ni)
        groups[c][1].append(li)
    groups = dict(sorted(groups.items()))
    fitted, residuals = {}, []
    for c, (ns, ls) in groups.items():
        x = np.log(ns)
        fitted[c] = np.polyval(np.polyfit(x, ls, 2), x)
        residuals += list(np.asarray(ls) - fitted[c])
    pool = np.asarray(residuals) * math.sqrt(len(residuals) / (len(residuals) - 3 * len(groups)))
    g = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(n_boot):
        vertices = []
        for c, (ns, _) in groups.items():
            draw = pool[torch.randint(len(pool), (len(ns),), generator=g).numpy()]
            c2, c1, _c0 = np.polyfit(np.log(ns), fitted[c] + draw, 2)
            if c2 <= 0:
                break
            vertices.append(-c1 / (2 * c2))
        else:
            samples.append(np.polyfit(np.log(list(groups)), vertices, 1)[0])
    return samples


@pytest.mark.parametrize("case", ["repeats", "one_dof"])
def test_bootstrap_samples_match_a_naive_residual_bootstrap(case: str, monkeypatch) -> None:
    """Every resampled exponent (recorded as the fit computes them) against the naive
    transcription: lopsided noisy profiles with a repeated size (two seeds), and two budgets of
    4 and 3 sizes (7 runs, 6 coefficients: one degree of freedom, residuals scaled by √7)."""
    from repro.scaling import isoflop

    c, n, loss = _profiles(0.7, 0.03, seed=5, sizes=6)
    if case == "repeats":
        c, n, loss = c + [BUDGETS[1]], n + [n[7]], loss + [loss[7] * 1.004]  # a second seed
    else:
        rows = [0, 1, 3, 5, 6, 8, 11]  # sizes 0, 1, 3, 5 of the first budget, 0, 2, 5 of the next
        c, n, loss = ([v[i] for i in rows] for v in (c, n, loss))
    seen: list[float] = []
    real = isoflop._exponent
    monkeypatch.setattr(isoflop, "_exponent", lambda m: seen.append(real(m)) or seen[-1])
    fit = fit_approach2(c, n, loss, n_boot=40, seed=11)
    ref = _residual_bootstrap_ref(c, n, loss, 40, 11)
    assert len(ref) < 40  # some resamples lost their valley and were dropped
    assert seen[1:] == pytest.approx(ref, rel=1e-7)
    assert fit.ci is not None and fit.ci.samples == len(ref)


def test_bootstrap_defaults_are_seed_0_and_an_80_percent_interval() -> None:
    """Without `seed` and `level`: the draws of seed 0 and the 10% and 90% quantiles."""
    import numpy as np

    c, n, loss = _profiles(0.6, 0.02, seed=7, sizes=6)
    fit = fit_approach2(c, n, loss, n_boot=30)
    ref = _residual_bootstrap_ref(c, n, loss, 30, 0)
    assert fit.ci is not None and fit.ci.level == 0.8 and fit.ci.samples == len(ref)
    low, high = np.quantile(ref, [0.1, 0.9])
    assert (fit.ci.low, fit.ci.high) == pytest.approx((low, high), rel=1e-7)


def test_parabola_needs_three_distinct_sizes() -> None:
    with pytest.raises(ValueError, match="at least three distinct x"):
        fit_parabola([1.0, 1.0, 2.0, 2.0], [3.0, 3.1, 2.0, 2.2])
    assert fit_parabola([1.0, 1.0, 2.0, 3.0], [3.0, 3.1, 2.0, 2.2])[2] > 0  # repeats are fine


@pytest.mark.parametrize("falling", [True, False])
def test_a_hill_reports_its_better_end(falling: bool) -> None:
    """A concave profile (c2 < 0, no valley): the vertex is the end where the parabola is lower,
    on either side, and the loss there is the parabola's (np.polyfit), not a measured one."""
    import numpy as np

    n = [100, 300, 400, 1000, 3000]
    loss = [2.0, 2.3, 2.32, 2.2, 1.7] if falling else [1.7, 2.2, 2.32, 2.3, 2.0]
    m = isoflop_minimum(5.0, n, loss)
    x = np.log(n)
    c2, c1, c0 = np.polyfit(x, loss, 2)
    end = x[-1] if falling else x[0]
    assert m.curvature == pytest.approx(c2, rel=1e-9) and c2 < 0
    assert m.log_n_opt == pytest.approx(end, rel=1e-12)
    assert m.loss_opt == pytest.approx(c0 + c1 * end + c2 * end**2, rel=1e-9)
    assert not m.interior


def test_depth_and_interior_with_repeated_sizes() -> None:
    """Several seeds per size: the depth is the lower end's mean loss minus the lowest size's
    mean (written out); a valley whose lowest measured size is an end is not interior even when
    the fitted vertex is inside."""
    n = [100, 100, 200, 400, 400, 800, 1600, 1600]
    loss = [2.4, 2.2, 1.95, 1.8, 1.9, 1.92, 2.1, 2.02]
    m = isoflop_minimum(1.0, n, loss, min_depth=0.2)
    means = {100: 2.3, 200: 1.95, 400: 1.85, 800: 1.92, 1600: 2.06}
    assert m.depth == pytest.approx(min(means[100], means[1600]) - min(means.values()), rel=1e-12)
    assert m.interior  # depth 0.21 ≥ 0.2
    assert isoflop_minimum(1.0, n, loss, min_depth=m.depth).interior  # "at least" as deep
    assert not isoflop_minimum(1.0, n, loss, min_depth=0.22).interior
    assert isoflop_minimum(1.0, n, loss).interior  # by default any depth
    for lopsided in (
        [2.4, 2.2, 1.95, 1.8, 1.9, 1.85, 1.79, 1.78],  # lowest at the upper end
        [1.78, 1.79, 1.85, 1.8, 1.9, 1.95, 2.2, 2.4],  # lowest at the lower end
    ):
        m = isoflop_minimum(1.0, n, lopsided)
        assert math.log(100) < m.log_n_opt < math.log(1600) and m.curvature > 0
        assert m.depth == 0.0 and not m.interior


def test_a_flat_profile_reports_its_smaller_size() -> None:
    """All losses equal: the fit has zero slope and curvature, no valley, both ends tie and the
    smaller size is reported. (A straight but sloped profile is left out: lstsq gives it a
    curvature of ±1e-16 that is not bit-reproducible.)"""
    n = [math.exp(k) for k in (4, 5, 6)]
    flat = isoflop_minimum(1.0, n, [2.0, 2.0, 2.0])
    assert flat.curvature == 0.0 and flat.loss_opt == 2.0
    assert flat.log_n_opt == pytest.approx(4.0, rel=1e-12) and not flat.interior
