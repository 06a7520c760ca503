"""Chinchilla Approach 2: IsoFLOP profiles, a parabola in log N per budget, then N_opt ∝ C^a.

Hoffmann et al. 2022, https://arxiv.org/abs/2203.15556, §3.2: for each compute budget C, train
several model sizes N on D = C/(6N) tokens, fit a parabola to the final loss against log N, take
its minimum as N_opt(C), and fit a power law N_opt ∝ C^a (and D_opt = C/(6·N_opt) ∝ C^b).

Glossary: C training FLOPs (a budget), N parameters, D tokens, x = ln N, a the exponent of N_opt.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from repro.scaling.power_law import BootstrapCI


@dataclass(frozen=True)
class IsoFLOPMinimum:
    budget: float  # C
    log_n_opt: float  # the parabola's vertex in x = ln N
    loss_opt: float  # the parabola at its vertex
    curvature: float  # c2 of L = c0 + c1·x + c2·x²; > 0 for a valley
    depth: float  # lower end's mean loss minus the lowest size's mean loss
    interior: bool  # a valley ≥ min_depth deep, vertex and lowest size strictly inside

    @property
    def n_opt(self) -> float:
        return math.exp(min(self.log_n_opt, 700.0))  # a flat resample can put the vertex far out

    @property
    def d_opt(self) -> float:
        return self.budget / (6 * self.n_opt)


def fit_parabola(x: Sequence[float], y: Sequence[float]) -> tuple[float, float, float]:
    """(c0, c1, c2) of the least-squares y = c0 + c1·x + c2·x² over ≥ 3 distinct x."""
    xs = torch.as_tensor(x, dtype=torch.float64)
    ys = torch.as_tensor(y, dtype=torch.float64)
    if torch.unique(xs).numel() < 3:
        raise ValueError("a parabola needs at least three distinct x")
    mean = xs.mean()  # centred for conditioning; shifted back below
    u = xs - mean
    design = torch.stack([torch.ones_like(u), u, u**2], dim=1)  # (n, 3)
    k0, k1, k2 = torch.linalg.lstsq(design, ys.unsqueeze(1)).solution.squeeze(1).tolist()
    m = float(mean)
    return k0 - k1 * m + k2 * m * m, k1 - 2 * k2 * m, k2


def isoflop_minimum(
    budget: float, n: Sequence[float], loss: Sequence[float], min_depth: float = 0.0
) -> IsoFLOPMinimum:
    """The parabola minimum of one IsoFLOP profile; runs may repeat a size (several seeds).

    The minimum counts as interior only if the lowest size is at least `min_depth` below both
    ends: on a flat profile the lowest of five noisy losses falls inside by chance 3 times in 5.
    """
    x = [math.log(v) for v in n]
    c0, c1, c2 = fit_parabola(x, loss)
    lo, hi = min(x), max(x)
    if c2 > 0:
        vertex = -c1 / (2 * c2)
    else:  # no valley: report the better end
        vertex = lo if c0 + c1 * lo + c2 * lo * lo <= c0 + c1 * hi + c2 * hi * hi else hi
    # the lowest measured size (mean over repeats) must be inside too, not only the fitted vertex
    sizes = sorted(set(x))
    means = [sum(l for xi, l in zip(x, loss, strict=True) if xi == s) / x.count(s) for s in sizes]
    best = sizes[means.index(min(means))]
    depth = min(means[0], means[-1]) - min(means)
    interior = c2 > 0 and lo < vertex < hi and lo < best < hi and depth >= min_depth
    return IsoFLOPMinimum(
        budget=budget,
        log_n_opt=vertex,
        loss_opt=c0 + c1 * vertex + c2 * vertex * vertex,
        curvature=c2,
        depth=depth,
        interior=interior,
    )


@dataclass(frozen=True)
class Approach2Fit:
    minima: list[IsoFLOPMinimum]
    a: float  # N_opt ∝ C^a
    b: float  # D_opt ∝ C^b (= 1 − a since D = C/(6N))
    ci: BootstrapCI | None  # of a


def _group(budgets: Sequence[float], n: Sequence[float], loss: Sequence[float]) -> dict:
    groups: dict[float, tuple[list[float], list[float]]] = {}
    for c, ni, li in zip(budgets, n, loss, strict=True):
        groups.setdefault(c, ([], []))
        groups[c][0].append(ni)
        groups[c][1].append(li)
    return dict(sorted(groups.items()))


def _exponent(minima: list[IsoFLOPMinimum]) -> float:
    """Least-squares slope of ln N_opt against ln C."""
    x = torch.tensor([math.log(m.budget) for m in minima], dtype=torch.float64)
    y = torch.tensor([m.log_n_opt for m in minima], dtype=torch.float64)
    x = x - x.mean()
    return float((x * (y - y.mean())).sum() / (x * x).sum())


def fit_approach2(
    budgets: Sequence[float],
    n: Sequence[float],
    loss: Sequence[float],
    n_boot: int = 0,
    level: float = 0.8,
    seed: int = 0,
    min_depth: float = 0.0,
) -> Approach2Fit:
    """Parabola minima per budget and a = d log N_opt / d log C, with a bootstrap CI of a.

    One run per row: (budget C, size N, final loss); repeated seeds are extra rows. The bootstrap
    is a residual bootstrap: every run's loss is its parabola's value plus a residual drawn with
    replacement from all budgets' residuals (scaled by √(n/(n−3)) for the three fitted
    coefficients), and the parabolas and the exponent are refitted. Resampling whole runs instead
    breaks down with five sizes per budget: a resample that loses an end of the profile moves
    the vertex anywhere. Resamples in which a profile has no valley are dropped.
    """
    groups = _group(budgets, n, loss)
    if len(groups) < 2:
        raise ValueError("Approach 2 needs at least two budgets")
    minima = [isoflop_minimum(c, ns, ls, min_depth) for c, (ns, ls) in groups.items()]
    a = _exponent(minima)
    ci = None
    if n_boot:
        fitted, residuals = {}, []
        for c, (ns, ls) in groups.items():
            c0, c1, c2 = fit_parabola([math.log(v) for v in ns], ls)
            fitted[c] = [c0 + c1 * math.log(v) + c2 * math.log(v) ** 2 for v in ns]
            residuals += [li - fi for li, fi in zip(ls, fitted[c], strict=True)]
        scale = math.sqrt(len(residuals) / max(1, len(residuals) - 3 * len(groups)))
        pool = torch.tensor(residuals, dtype=torch.float64) * scale
        g = torch.Generator().manual_seed(seed)
        samples = []
        for _ in range(n_boot):
            resampled = []
            for c, (ns, _) in groups.items():
                draw = pool[torch.randint(len(pool), (len(ns),), generator=g)].tolist()
                m = isoflop_minimum(c, ns, [f + r for f, r in zip(fitted[c], draw, strict=True)])
                if m.curvature <= 0:
                    break
                resampled.append(m)
            else:
                samples.append(_exponent(resampled))
        if samples:
            t = torch.tensor(samples, dtype=torch.float64)
            tail = (1 - level) / 2
            ci = BootstrapCI(
                a, float(t.quantile(tail)), float(t.quantile(1 - tail)), level, len(samples)
            )
    return Approach2Fit(minima, a, 1 - a, ci)
