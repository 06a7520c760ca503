"""Power laws y = A·x^(−α), fitted in log space, with a bootstrap CI of α; and y = E + A·x^(−α).

Kaplan et al. 2020, https://arxiv.org/abs/2001.08361 (Eq. 1.1: L(N) = (N_c/N)^α_N). When the floor
E of a loss is known (an exact entropy), L − E is a pure power law and log-log least squares fits
it; when it is not, `fit_power_law_with_floor` estimates E too, by variable projection: for a fixed
α the model is linear in (E, A), so only α is searched.

Glossary: x the scale (parameters N, tokens D, compute C), y the quantity that falls (a loss or an
excess loss), α the exponent, n points, R² the coefficient of determination in log-log space.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor


def _f64(values: Sequence[float] | Tensor) -> Tensor:
    return torch.as_tensor(values, dtype=torch.float64).flatten()


@dataclass(frozen=True)
class PowerLawFit:
    alpha: float  # y ∝ x^(−alpha): positive for a falling law
    coef: float  # A
    r2: float  # of the straight line in log-log space
    decades: float  # log10(max x / min x), the span the fit covers

    def predict(self, x: float | Tensor) -> float | Tensor:
        return self.coef * x ** (-self.alpha)


def fit_power_law(x: Sequence[float] | Tensor, y: Sequence[float] | Tensor) -> PowerLawFit:
    """Least squares of log y = log A − α·log x over n ≥ 2 points with distinct x, all y > 0."""
    lx, ly = _f64(x).log(), _f64(y).log()
    if lx.numel() < 2 or float(lx.max() - lx.min()) == 0.0:
        raise ValueError("a power law needs at least two distinct x")
    if not torch.isfinite(ly).all():
        raise ValueError("a power law in log space needs every y > 0")
    design = torch.stack([torch.ones_like(lx), lx], dim=1)  # (n, 2)
    (log_a, slope) = torch.linalg.lstsq(design, ly.unsqueeze(1)).solution.squeeze(1).tolist()
    resid = ly - (log_a + slope * lx)
    total = float(((ly - ly.mean()) ** 2).sum())
    r2 = 1.0 - float((resid**2).sum()) / total if total > 0 else 0.0
    decades = float(lx.max() - lx.min()) / math.log(10)
    return PowerLawFit(alpha=-slope, coef=math.exp(log_a), r2=r2, decades=decades)


@dataclass(frozen=True)
class BootstrapCI:
    estimate: float  # the fit on all points
    low: float  # lower end of the central `level` interval
    high: float
    level: float
    samples: int  # resamples that could be fitted

    def excludes(self, value: float) -> bool:
        return not (self.low <= value <= self.high)


def bootstrap_exponent(
    x: Sequence[float] | Tensor,
    y: Sequence[float] | Tensor,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
) -> BootstrapCI:
    """Percentile CI of α from resampling the (x, y) points with replacement.

    Repeated runs (seeds) enter as separate points at the same x, so the resampling covers both
    the spread between seeds and the scatter around the line. Resamples with a single distinct x
    cannot be fitted and are dropped.
    """
    lx, ly = _f64(x).log(), _f64(y).log()
    n = lx.numel()
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(n, (n_boot, n), generator=g)  # (n_boot, n)
    bx, by = lx[idx], ly[idx]  # (n_boot, n)
    # closed-form slope of each resample: cov(x, y) / var(x), all resamples at once
    cx = bx - bx.mean(1, keepdim=True)
    var = (cx**2).sum(1)
    ok = var > 1e-12
    slopes = (cx * (by - by.mean(1, keepdim=True))).sum(1)[ok] / var[ok]
    alphas = (-slopes).sort().values
    tail = (1 - level) / 2
    low = float(torch.quantile(alphas, tail))
    high = float(torch.quantile(alphas, 1 - tail))
    return BootstrapCI(fit_power_law(x, y).alpha, low, high, level, int(ok.sum()))


@dataclass(frozen=True)
class FloorFit:
    floor: float  # E
    coef: float  # A
    alpha: float
    rmse_log: float  # root-mean-square error of log y


def _floor_lstsq(x: Tensor, y: Tensor, alpha: float) -> tuple[float, float, float]:
    """For fixed α: (E, A) minimising Σ((y − E − A·x^−α)/y)², with E ≥ 0; returns (E, A, loss)."""
    basis = x ** (-alpha)
    w = 1 / y  # relative residuals: the points span decades of excess loss
    design = torch.stack([torch.ones_like(x), basis], dim=1) * w.unsqueeze(1)  # (n, 2)
    e, a = torch.linalg.lstsq(design, (y * w).unsqueeze(1)).solution.squeeze(1).tolist()
    if e < 0:  # the floor is a loss: clamp at 0 and refit A alone
        e = 0.0
        a = float((basis * y * w**2).sum() / (basis**2 * w**2).sum())
    pred = e + a * basis
    return e, a, float((((y - pred) * w) ** 2).sum())


def fit_power_law_with_floor(
    x: Sequence[float] | Tensor,
    y: Sequence[float] | Tensor,
    alpha_range: tuple[float, float] = (0.01, 4.0),
) -> FloorFit:
    """y = E + A·x^(−α): a grid over α, then golden-section refinement around the best cell."""
    xs, ys = _f64(x), _f64(y)
    if xs.numel() < 4:
        raise ValueError("a power law with a floor has three parameters: give at least 4 points")
    grid = torch.linspace(*alpha_range, 400, dtype=torch.float64).tolist()
    losses = [_floor_lstsq(xs, ys, a)[2] for a in grid]
    i = min(range(len(grid)), key=losses.__getitem__)
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, len(grid) - 1)]
    ratio = (math.sqrt(5) - 1) / 2
    for _ in range(60):  # golden section on a unimodal bracket
        m1, m2 = hi - ratio * (hi - lo), lo + ratio * (hi - lo)
        if _floor_lstsq(xs, ys, m1)[2] < _floor_lstsq(xs, ys, m2)[2]:
            hi = m2
        else:
            lo = m1
    alpha = (lo + hi) / 2
    e, a, _ = _floor_lstsq(xs, ys, alpha)
    pred = e + a * xs ** (-alpha)
    rmse = float(((pred.log() - ys.log()) ** 2).mean().sqrt())
    return FloorFit(floor=e, coef=a, alpha=alpha, rmse_log=rmse)
