"""L-BFGS run on many independent starting points at once (one batched tensor per iteration).

Nocedal & Wright, *Numerical Optimization* (2006), Alg. 7.4 (two-loop recursion) and Alg. 3.1
(backtracking line search with the Armijo condition). Chinchilla's Approach 3 starts L-BFGS from
a grid of 4,500 points (Hoffmann et al. 2022, App. D.2); running them one by one is what made a
prototype take more than 13 CPU-minutes. Here every start keeps its own history, step and
convergence flag, and one evaluation of `f` serves all of them.

Glossary: S starts, P parameters per start, m history length.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor

Objective = Callable[[Tensor], Tensor]  # (S, P) -> (S,)


def _value_and_grad(f: Objective, x: Tensor) -> tuple[Tensor, Tensor]:
    x = x.detach().requires_grad_(True)
    value = f(x)  # (S,)
    (grad,) = torch.autograd.grad(value.sum(), x)  # starts are independent: ∂Σf/∂x_s = ∂f_s/∂x_s
    return value.detach(), grad


def batched_lbfgs(
    f: Objective,
    x0: Tensor,
    max_iter: int = 500,
    history: int = 10,
    grad_tol: float = 1e-9,
    change_tol: float = 1e-15,
    max_halvings: int = 40,
) -> tuple[Tensor, Tensor]:
    """Minimise every row of x0 (S, P) independently; returns (x (S, P), f(x) (S,)).

    A start stops when its gradient's max-norm is below `grad_tol` or one step changes its value
    by less than `change_tol`·max(1, |f|). Non-finite values are treated as +inf, so a step into
    overflow is halved away.
    """
    x = x0.detach().clone()
    fx, g = _value_and_grad(f, x)
    active = torch.isfinite(fx)
    s_hist: list[Tensor] = []  # (S, P) each
    y_hist: list[Tensor] = []
    rho_hist: list[Tensor] = []  # (S,) each; 0 where the curvature pair was rejected
    for _ in range(max_iter):
        if not active.any():
            break
        # two-loop recursion: d = −H·g with H the L-BFGS inverse-Hessian estimate
        q = g.clone()
        alphas = []
        for s, y, rho in zip(reversed(s_hist), reversed(y_hist), reversed(rho_hist), strict=True):
            a = rho * (s * q).sum(-1)  # (S,)
            q -= a.unsqueeze(-1) * y
            alphas.append(a)
        if s_hist:
            sy, yy = (s_hist[-1] * y_hist[-1]).sum(-1), (y_hist[-1] ** 2).sum(-1)
            gamma = torch.where((rho_hist[-1] > 0) & (yy > 0), sy / yy, torch.ones_like(sy))
        else:  # first step: a unit-length move along −g
            gamma = 1 / g.norm(dim=-1).clamp_min(1e-12)
        r = gamma.unsqueeze(-1) * q
        for s, y, rho, a in zip(s_hist, y_hist, rho_hist, reversed(alphas), strict=True):
            b = rho * (y * r).sum(-1)
            r += s * (a - b).unsqueeze(-1)
        d = -r
        slope = (d * g).sum(-1)  # (S,)
        uphill = slope >= 0  # a stale history can point uphill: fall back to steepest descent
        d[uphill] = -g[uphill]
        slope = torch.where(uphill, -(g * g).sum(-1), slope)
        d[~active] = 0
        # backtracking line search (Armijo, c1 = 1e-4), each start with its own step t
        t = torch.ones_like(fx)
        pending = active.clone()
        with torch.no_grad():
            for _ in range(max_halvings):
                trial = f(x + t.unsqueeze(-1) * d)
                trial = torch.where(
                    torch.isfinite(trial), trial, torch.full_like(trial, float("inf"))
                )
                ok = trial <= fx + 1e-4 * t * slope
                pending = pending & ~ok
                if not pending.any():
                    break
                t = torch.where(pending, t / 2, t)
        moved = active & ~pending  # starts whose line search failed stop where they are
        x_new = torch.where(moved.unsqueeze(-1), x + t.unsqueeze(-1) * d, x)
        f_new, g_new = _value_and_grad(f, x_new)
        s, y = x_new - x, g_new - g
        sy = (s * y).sum(-1)
        rho = torch.where(moved & (sy > 1e-12), 1 / sy.clamp_min(1e-12), torch.zeros_like(sy))
        s_hist.append(s)
        y_hist.append(y)
        rho_hist.append(rho)
        if len(s_hist) > history:
            s_hist.pop(0), y_hist.pop(0), rho_hist.pop(0)
        small_change = (fx - f_new).abs() <= change_tol * fx.abs().clamp_min(1.0)
        x, fx, g = x_new, torch.where(moved, f_new, fx), torch.where(moved.unsqueeze(-1), g_new, g)
        active = moved & ~small_change & (g.abs().amax(-1) > grad_tol)
    return x, fx
