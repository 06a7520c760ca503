"""Chinchilla Approach 3: fit L(N, D) = E + A/N^α + B/D^β to (N, D, loss) runs with a Huber loss.

Hoffmann et al. 2022, https://arxiv.org/abs/2203.15556, §3.3 and App. D.2 (Eq. 3):
    min over (a, b, e, α, β) of Σ_i Huber_δ( LSE(a − α·log N_i, b − β·log D_i, e) − log L_i ),
with A = e^a, B = e^b, E = e^e, δ = 10⁻³, L-BFGS started from a grid:
α, β ∈ {0, 0.5, …, 2}, e ∈ {−1, −0.5, …, 1}, a, b ∈ {0, 5, …, 25}.

Gradients are exact (torch float64 autograd). All starts run at once in a batched L-BFGS
(repro/scaling/lbfgs.py): a 4,500-start L-BFGS run one start at a time with numeric gradients
took more than 13 CPU-minutes in a prototype. The objective is the *mean* Huber loss with tight
tolerances: Besiroglu et al. 2024 (https://arxiv.org/abs/2404.10102) trace the published fit to
an optimiser that stopped early because of the loss scale.

Glossary: N parameters, D tokens, L loss, θ = (a, b, e, α, β), δ the Huber threshold.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from repro.scaling.closed_form import LossSurface
from repro.scaling.lbfgs import batched_lbfgs

HUBER_DELTA = 1e-3  # App. D.2
GRID_ALPHA_BETA = (0.0, 0.5, 1.0, 1.5, 2.0)
GRID_E = (-1.0, -0.5, 0.0, 0.5, 1.0)
GRID_A_B = (0.0, 5.0, 10.0, 15.0, 20.0, 25.0)


def hoffmann_grid() -> Tensor:
    """(4500, 5) starting points θ = (a, b, e, α, β): the grid of App. D.2."""
    rows = itertools.product(GRID_A_B, GRID_A_B, GRID_E, GRID_ALPHA_BETA, GRID_ALPHA_BETA)
    return torch.tensor(list(rows), dtype=torch.float64)


def predicted_log_loss(theta: Tensor, log_n: Tensor, log_d: Tensor) -> Tensor:
    """log L̂ = LSE(a − α log N, b − β log D, e). theta (S, 5), log_n/log_d (n,) -> (S, n)."""
    a, b, e, alpha, beta = theta.unsqueeze(-1).unbind(-2)  # each (S, 1)
    terms = torch.stack(
        [a - alpha * log_n, b - beta * log_d, e.expand(-1, log_n.numel())], dim=0
    )  # (3, S, n)
    return torch.logsumexp(terms, dim=0)


def huber(r: Tensor, delta: float = HUBER_DELTA) -> Tensor:
    """Quadratic below |r| = δ, linear above (torch.nn.functional.huber_loss without the mean)."""
    return torch.where(r.abs() <= delta, 0.5 * r**2, delta * (r.abs() - 0.5 * delta))


def objective(theta: Tensor, log_n: Tensor, log_d: Tensor, log_loss: Tensor) -> Tensor:
    """Mean Huber loss of each row of theta (S, 5) -> (S,)."""
    return huber(predicted_log_loss(theta, log_n, log_d) - log_loss).mean(-1)


@dataclass(frozen=True)
class Approach3Fit:
    surface: LossSurface
    objective: float
    starts: int  # L-BFGS runs
    grid: int  # grid points evaluated

    @property
    def a(self) -> float:
        return self.surface.a


def fit_approach3(
    n: Sequence[float] | Tensor,
    d: Sequence[float] | Tensor,
    loss: Sequence[float] | Tensor,
    starts: int | None = None,
    grid: Tensor | None = None,
    max_iter: int = 500,
) -> Approach3Fit:
    """Huber-LSE fit of E + A/N^α + B/D^β by L-BFGS from every point of `grid` (default: the
    paper's 4,500), or from the `starts` points of the grid where the objective is lowest."""
    log_n = torch.as_tensor(n, dtype=torch.float64).log()
    log_d = torch.as_tensor(d, dtype=torch.float64).log()
    log_loss = torch.as_tensor(loss, dtype=torch.float64).log()
    grid = hoffmann_grid() if grid is None else grid.to(torch.float64)
    with torch.no_grad():
        values = objective(grid, log_n, log_d, log_loss)  # (S,)
    order = values.argsort()
    chosen = grid[order if starts is None else order[:starts]]  # (S, 5)
    theta, final = batched_lbfgs(
        lambda t: objective(t, log_n, log_d, log_loss), chosen, max_iter=max_iter
    )
    final = torch.where(torch.isfinite(final), final, torch.full_like(final, float("inf")))
    i = int(final.argmin())
    a, b, e, alpha, beta = theta[i].tolist()
    surface = LossSurface(E=math.exp(e), A=math.exp(a), B=math.exp(b), alpha=alpha, beta=beta)
    return Approach3Fit(surface, float(final[i]), len(chosen), len(grid))
