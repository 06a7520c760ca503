from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from repro.scaling.power_law import bootstrap_exponent, fit_power_law, fit_power_law_with_floor

X = [10 ** (1 + 3 * i / 11) for i in range(12)]  # 3 decades


def _noisy(values: list[float], rel: float, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    return [v * math.exp(rel * float(torch.randn(1, generator=g))) for v in values]


def test_exact_power_law_is_recovered() -> None:
    fit = fit_power_law(X, [3.0 * x**-0.7 for x in X])
    assert fit.alpha == pytest.approx(0.7, abs=1e-10)
    assert fit.coef == pytest.approx(3.0, rel=1e-9)
    assert fit.r2 == pytest.approx(1.0, abs=1e-12)
    assert fit.decades == pytest.approx(3.0, abs=1e-12)


def test_bootstrap_ci_covers_the_truth_and_excludes_zero() -> None:
    y = _noisy([2.0 * x**-0.5 for x in X], 0.05, seed=0)
    ci = bootstrap_exponent(X, y, n_boot=2000, level=0.95)
    assert ci.low < 0.5 < ci.high
    assert ci.excludes(0.0)
    assert ci.high - ci.low < 0.1


def test_bootstrap_ci_covers_zero_without_a_law() -> None:
    """Coverage, not one lucky seed: a 95% CI of a flat trend covers 0 in most repetitions."""
    covered = [
        not bootstrap_exponent(X, _noisy([1.0] * len(X), 0.3, seed=s), n_boot=500).excludes(0.0)
        for s in range(40)
    ]
    assert sum(covered) >= 32  # ≥ 80%: the percentile bootstrap under-covers a little at n = 12


def test_repeated_x_and_degenerate_inputs() -> None:
    with pytest.raises(ValueError, match="^a power law needs at least two distinct x$"):
        fit_power_law([5.0, 5.0], [1.0, 2.0])
    with pytest.raises(ValueError, match="^a power law needs at least two distinct x$"):
        fit_power_law([5.0], [1.0])
    with pytest.raises(ValueError, match="^a power law in log space needs every y > 0$"):
        fit_power_law([1.0, 2.0], [1.0, 0.0])
    two = fit_power_law([1.0, 10.0], [2.0, 0.2])  # two points are enough for a line
    assert two.alpha == pytest.approx(1.0) and two.coef == pytest.approx(2.0)


def test_bootstrap_defaults_are_1000_resamples_and_seed_0() -> None:
    y = _noisy([2.0 * v**-0.5 for v in X], 0.1, seed=1)
    ci = bootstrap_exponent(X, y)
    assert ci.samples == 1000 and ci.level == 0.95  # 12 distinct x: no resample is dropped
    same = bootstrap_exponent(X, y, n_boot=1000, level=0.95, seed=0)
    assert (ci.low, ci.high, ci.samples) == (same.low, same.high, same.samples)
    assert ci.estimate == pytest.approx(same.estimate, rel=1e-12)  # lstsq: last-bit noise


@pytest.mark.parametrize(
    ("E", "A", "alpha"), [(0.65, 2.0, 0.7), (1.7, 400.0, 0.34), (0.0, 1.0, 1.1)]
)
def test_floor_fit_recovers_a_known_surface(E: float, A: float, alpha: float) -> None:
    x = [10 ** (1 + 4 * i / 9) for i in range(10)]
    exact = fit_power_law_with_floor(x, [E + A * v**-alpha for v in x])
    assert exact.floor == pytest.approx(E, abs=1e-6)
    assert exact.alpha == pytest.approx(alpha, abs=1e-4)
    noisy = fit_power_law_with_floor(x, _noisy([E + A * v**-alpha for v in x], 0.002, seed=2))
    # with 0.2% noise a slow law (α = 0.34) trades E against A: a few percent is the limit
    assert noisy.floor == pytest.approx(E, abs=0.05 * max(E, 1.0))


def _resampled_alphas(x, y, n_boot: int, seed: int) -> list[float]:
    """The bootstrap's resamples drawn again from the same generator, each fitted by the
    library's least-squares `fit_power_law` (not the closed-form slope the bootstrap uses)."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(len(x), (n_boot, len(x)), generator=g)
    alphas = []
    for row in idx.tolist():
        xs, ys = [x[i] for i in row], [y[i] for i in row]
        if len(set(xs)) > 1:
            alphas.append(fit_power_law(xs, ys).alpha)
    return alphas


@pytest.mark.parametrize("level", [0.95, 0.8])
@pytest.mark.parametrize("x", [[10.0, 10.0, 10.0, 100.0, 1000.0], [1.0, 1.0, 1.0, 1.5, 2.0]])
def test_bootstrap_interval_ends_are_the_resamples_quantiles(level: float, x: list) -> None:
    """The level, not only coverage: the ends are the (1 ∓ level)/2 quantiles of the resampled
    exponents, so a 95% interval that silently became 90% (or one-sided) fails here. Repeated x:
    ~8% of resamples have a single x and are dropped; the second x spans less than one e-fold."""
    y = _noisy([2.0 * v**-0.5 for v in x], 0.2, seed=4)
    ci = bootstrap_exponent(x, y, n_boot=400, level=level, seed=7)
    alphas = _resampled_alphas(x, y, 400, seed=7)
    assert ci.samples == len(alphas) < 400
    tail = (1 - level) / 2
    low, high = np.quantile(alphas, [tail, 1 - tail])  # linear interpolation, like torch's
    assert ci.low == pytest.approx(float(low), abs=1e-9)
    assert ci.high == pytest.approx(float(high), abs=1e-9)
    assert ci.level == level
    assert ci.estimate == pytest.approx(fit_power_law(x, y).alpha, abs=1e-12)
    inside = sum(ci.low <= a <= ci.high for a in alphas) / len(alphas)
    assert inside == pytest.approx(level, abs=0.02)


def test_bootstrap_seed_and_interval_nesting() -> None:
    y = _noisy([2.0 * v**-0.5 for v in X], 0.1, seed=1)
    wide = bootstrap_exponent(X, y, n_boot=300, level=0.95, seed=3)
    narrow = bootstrap_exponent(X, y, n_boot=300, level=0.5, seed=3)
    assert wide.low < narrow.low < narrow.high < wide.high
    assert bootstrap_exponent(X, y, n_boot=300, seed=4) != bootstrap_exponent(X, y, n_boot=300)
    assert wide.excludes(wide.low - 1e-9) and wide.excludes(wide.high + 1e-9)
    assert not wide.excludes(wide.low) and not wide.excludes(wide.high)


def test_fit_statistics_on_noisy_points_against_numpy() -> None:
    """R² and the coefficient on scattered points, against numpy's polyfit in log space."""
    y = _noisy([3.0 * v**-0.4 for v in X], 0.3, seed=5)
    fit = fit_power_law(X, y)
    lx, ly = np.log(X), np.log(y)
    slope, intercept = np.polyfit(lx, ly, 1)
    r2 = 1 - ((ly - (intercept + slope * lx)) ** 2).sum() / ((ly - ly.mean()) ** 2).sum()
    assert fit.alpha == pytest.approx(-slope, rel=1e-10)
    assert fit.coef == pytest.approx(math.exp(intercept), rel=1e-10)
    assert fit.r2 == pytest.approx(r2, rel=1e-10) and 0.0 < fit.r2 < 0.99
    assert fit.predict(50.0) == pytest.approx(math.exp(intercept) * 50.0**slope, rel=1e-10)
    assert fit_power_law([1.0, 10.0, 100.0], [2.0, 2.0, 2.0]).r2 == 0.0  # flat: no variance
    # a shallow law whose log y varies by less than 1 in total: R² is still computed
    y = [v**-0.05 * (1 + 0.01 * (-1) ** i) for i, v in enumerate(X)]
    ly = np.log(y)
    assert ((ly - ly.mean()) ** 2).sum() < 1
    slope, intercept = np.polyfit(np.log(X), ly, 1)
    r2 = 1 - ((ly - (intercept + slope * np.log(X))) ** 2).sum() / ((ly - ly.mean()) ** 2).sum()
    assert fit_power_law(X, y).r2 == pytest.approx(r2, rel=1e-9) and 0.5 < r2 < 1


@pytest.mark.parametrize(("E", "noise"), [(0.0, 0.05), (0.5, 0.05), (0.5, 0.3)])
def test_floor_fit_scaled_values_and_rmse(E: float, noise: float) -> None:
    """Each returned factor on its own (E, A, α, RMSE), against a dense grid search of the
    weighted squared error, on near-exact and on scattered points (4 of them: the minimum)."""
    x = [10 ** (1 + 3 * i / 7) for i in range(8)]
    if noise > 0.1:
        x = x[::2]
    y = _noisy([E + 5.0 * v**-0.6 for v in x], noise, seed=6)
    fit = fit_power_law_with_floor(x, y, alpha_range=(0.05, 2.0))
    xs, ys = torch.tensor(x, dtype=torch.float64), torch.tensor(y, dtype=torch.float64)

    def best(alpha: float) -> tuple[float, float, float]:  # weighted LS with E ≥ 0, by hand
        basis = xs**-alpha
        w = 1 / ys
        M = torch.stack([w, basis * w], 1)
        sol = torch.linalg.lstsq(M, (ys * w)[:, None]).solution.flatten().tolist()
        e, a = sol
        if e < 0:
            e, a = 0.0, float((basis * ys * w**2).sum() / (basis**2 * w**2).sum())
        return float((((ys - e - a * basis) * w) ** 2).sum()), e, a

    coarse = torch.linspace(0.05, 2.0, 400, dtype=torch.float64).tolist()
    centre = min(coarse, key=lambda al: best(al)[0])
    fine = torch.linspace(centre - 0.005, centre + 0.005, 1001, dtype=torch.float64).tolist()
    alpha = min(fine, key=lambda al: best(al)[0])
    _, e, a = best(alpha)
    assert fit.alpha == pytest.approx(alpha, abs=2e-5)
    assert fit.floor == pytest.approx(e, abs=1e-3) and fit.floor >= 0.0
    assert fit.coef == pytest.approx(a, rel=1e-2)
    pred = fit.floor + fit.coef * xs**-fit.alpha
    assert fit.rmse_log == pytest.approx(float(((pred.log() - ys.log()) ** 2).mean().sqrt()))
    assert fit.rmse_log > 0.0
    with pytest.raises(ValueError, match="^a power law with a floor has three parameters"):
        fit_power_law_with_floor(x[:3], y[:3])


def test_floor_fit_clamps_a_negative_floor_to_zero() -> None:
    """Points that curve upward (best unconstrained E < 0): the floor is 0 and A is refitted."""
    x = [10.0, 30.0, 100.0, 300.0, 1000.0]
    y = [v**-0.5 - 0.02 for v in x]
    fit = fit_power_law_with_floor(x, y)
    assert fit.floor == 0.0
    pure = fit_power_law(x, y)  # with E = 0 the weighted fit is close to the log-log one
    assert fit.alpha == pytest.approx(pure.alpha, rel=0.1)
    assert fit.coef == pytest.approx(pure.coef, rel=0.2)


@pytest.mark.parametrize(("alpha_range", "edge"), [((0.5, 2.0), 0.5), ((0.05, 0.2), 0.2)])
def test_floor_fit_stops_at_the_edge_of_alpha_range(alpha_range: tuple, edge: float) -> None:
    """A true α (0.35) outside the searched range: the best α is the range's end
    itself, not the grid point next to it (the bracket's edge handling)."""
    x = [10 ** (1 + 3 * i / 7) for i in range(8)]
    y = [0.2 + 3.0 * v**-0.35 for v in x]
    assert fit_power_law_with_floor(x, y, alpha_range=alpha_range).alpha == pytest.approx(
        edge, abs=1e-9
    )
