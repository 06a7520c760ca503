"""Batched L-BFGS against a naive one-start-at-a-time transcription of the algorithm."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest
import torch

from repro.scaling.lbfgs import batched_lbfgs

Vec = list[float]


def _dot(u: Vec, v: Vec) -> float:
    return sum(a * b for a, b in zip(u, v, strict=True))


def _lbfgs_ref(
    f: Callable[[Vec], float],
    grad: Callable[[Vec], Vec],
    x0: Vec,
    max_iter: int,
    history: int = 10,
    grad_tol: float = 1e-9,
    change_tol: float = 1e-15,
    max_halvings: int = 40,
    rejected: list | None = None,
) -> tuple[Vec, float]:
    """One start in plain Python: Nocedal & Wright Alg. 7.4 (two-loop recursion, γ = sᵀy/yᵀy,
    a unit-length first step), Armijo backtracking (c1 = 1e-4, halving), steepest descent when
    the direction points uphill, curvature pairs with sᵀy ≤ 1e-12 kept but given ρ = 0."""

    def value(x: Vec) -> float:
        v = f(x)
        return v if math.isfinite(v) else math.inf

    x, fx, g = list(x0), value(x0), grad(x0)
    pairs: list[tuple[Vec, Vec, float]] = []  # (s, y, ρ)
    if not math.isfinite(fx):
        return x, f(x0)  # never moves; its value as f gave it
    for _ in range(max_iter):
        q, alphas = list(g), []
        for s, y, rho in reversed(pairs):
            a = rho * _dot(s, q)
            q = [qi - a * yi for qi, yi in zip(q, y, strict=True)]
            alphas.append(a)
        if pairs:
            s, y, rho = pairs[-1]
            gamma = _dot(s, y) / _dot(y, y) if rho > 0 and _dot(y, y) > 0 else 1.0
        else:
            gamma = 1 / max(math.sqrt(_dot(g, g)), 1e-12)
        r = [gamma * qi for qi in q]
        for (s, y, rho), a in zip(pairs, reversed(alphas), strict=True):
            b = rho * _dot(y, r)
            r = [ri + si * (a - b) for ri, si in zip(r, s, strict=True)]
        d = [-ri for ri in r]
        slope = _dot(d, g)
        if slope >= 0:
            d, slope = [-gi for gi in g], -_dot(g, g)
        t, moved = 1.0, False
        for _ in range(max_halvings):
            if value([xi + t * di for xi, di in zip(x, d, strict=True)]) <= fx + 1e-4 * t * slope:
                moved = True
                break
            t /= 2
        if not moved:
            return x, fx  # the line search failed: the start stops where it is
        x_new = [xi + t * di for xi, di in zip(x, d, strict=True)]
        f_new, g_new = value(x_new), grad(x_new)
        s = [b - a for a, b in zip(x, x_new, strict=True)]
        y = [b - a for a, b in zip(g, g_new, strict=True)]
        sy = _dot(s, y)
        if rejected is not None and sy <= 1e-12 and _dot(y, y) > 0:
            rejected.append(sy)  # negative curvature: the next step starts from γ = 1
        pairs.append((s, y, 1 / sy if sy > 1e-12 else 0.0))
        pairs = pairs[-history:]
        small_change = abs(fx - f_new) <= change_tol * max(abs(fx), 1.0)
        x, fx, g = x_new, f_new, g_new
        if small_change or max(map(abs, g)) <= grad_tol:
            break
    return x, fx


def _one(f_batched: Callable[[torch.Tensor], torch.Tensor]):
    """f and its gradient at one point (lists), from the batched objective."""

    def f(x: Vec) -> float:
        return float(f_batched(torch.tensor([x], dtype=torch.float64))[0])

    def grad(x: Vec) -> Vec:
        t = torch.tensor([x], dtype=torch.float64, requires_grad=True)
        f_batched(t)[0].backward()
        return t.grad[0].tolist()

    return f, grad


# a lopsided convex quadratic (eigenvalues 0.12, 1.18, 4.5; no symmetry between coordinates)
H = torch.tensor([[4.0, 1.2, -0.7], [1.2, 0.9, 0.3], [-0.7, 0.3, 0.9]], dtype=torch.float64)
CENTER = torch.tensor([0.3, -1.7, 2.2], dtype=torch.float64)


def quadratic(x: torch.Tensor) -> torch.Tensor:
    u = x - CENTER
    return 0.5 * ((u @ H) * u).sum(-1) + 0.05


def rosenbrock(x: torch.Tensor) -> torch.Tensor:
    return (0.6 - x[:, 0]) ** 2 + 30 * (x[:, 1] - x[:, 0] ** 2) ** 2


def wavy(x: torch.Tensor) -> torch.Tensor:
    """Not convex: steps across a concave region give pairs with sᵀy < 0."""
    return (
        0.05 * (x**2).sum(-1) + torch.sin(1.7 * x[:, 0]) * torch.cos(1.3 * x[:, 1]) + 0.3 * x[:, 0]
    )


@pytest.mark.parametrize("max_iter", [1, 2, 3, 6, 14])
@pytest.mark.parametrize(
    ("f", "history"), [(quadratic, 10), (rosenbrock, 10), (rosenbrock, 3), (wavy, 10)]
)
def test_every_start_follows_the_one_start_reference(f, history: int, max_iter: int) -> None:
    starts = {
        quadratic: [[2.0, 1.0, -3.0], [-0.4, 0.8, 0.1], [0.31, -1.69, 2.2]],
        rosenbrock: [[-1.2, 1.0], [2.0, -0.5], [0.1, 0.3]],
        wavy: [[0.4, -0.9], [2.5, 1.0], [-1.0, 2.2], [0.1, 0.1]],
    }[f]
    kwargs = {} if history == 10 else {"history": history}  # 10: the default
    x, fx = batched_lbfgs(f, torch.tensor(starts, dtype=torch.float64), max_iter, **kwargs)
    one, grad = _one(f)
    rejected: list[float] = []
    for i, x0 in enumerate(starts):
        x_ref, f_ref = _lbfgs_ref(one, grad, x0, max_iter, history, rejected=rejected)
        assert x[i].tolist() == pytest.approx(x_ref, rel=1e-9, abs=1e-12)
        assert float(fx[i]) == pytest.approx(f_ref, rel=1e-9, abs=1e-15)
    if f is wavy and max_iter >= 6:
        assert rejected  # the case where γ falls back to 1 with a nonzero y


def walled(x: torch.Tensor) -> torch.Tensor:
    """The quadratic, not a number beyond x₀ = 0.35 (its minimum is at 0.3): steps into the wall
    are halved away."""
    return torch.where(x[:, 0] > 0.35, torch.nan, quadratic(x))


@pytest.mark.parametrize("f", [quadratic, rosenbrock, walled])
def test_runs_to_convergence_like_the_reference(f) -> None:
    """To the end: the same stopping point (gradient or change tolerance) as the reference; a
    start where f is not a number stays there."""
    starts = {
        quadratic: [[2.0, 1.0, -3.0], [-0.4, 0.8, 0.1]],
        rosenbrock: [[-1.2, 1.0], [2.0, -0.5], [0.1, 0.3]],
        walled: [[-0.5, -1.7, 2.2], [-0.4, 0.8, 0.1], [0.34, 3.0, 1.0], [0.5, 0.0, 0.0]],
    }[f]
    x, fx = batched_lbfgs(f, torch.tensor(starts, dtype=torch.float64), max_iter=300)
    one, grad = _one(f)
    for i, x0 in enumerate(starts):
        x_ref, f_ref = _lbfgs_ref(one, grad, x0, 300)
        assert x[i].tolist() == pytest.approx(x_ref, rel=1e-7, abs=1e-9)
        assert float(fx[i]) == pytest.approx(f_ref, rel=1e-7, abs=1e-15, nan_ok=True)


def test_a_linear_objective_takes_unit_then_gradient_steps_for_max_iter_iterations() -> None:
    """f = gᵀx has no curvature: every pair has sᵀy = 0 and is rejected, so after the first,
    unit-length step along −g each step is −g (γ = 1). Nothing converges, so x₀ moves by
    g·(1/|g| + max_iter − 1): by default max_iter = 500."""
    g = torch.tensor([3.0, -4.0], dtype=torch.float64)  # |g| = 5
    x0 = torch.tensor([[0.5, 2.0], [-1.0, 0.25]], dtype=torch.float64)
    for max_iter, kwargs in [(7, {"max_iter": 7}), (500, {})]:
        x, fx = batched_lbfgs(lambda x: x @ g, x0, **kwargs)
        want = x0 - g * (1 / 5 + max_iter - 1)
        assert torch.allclose(x, want, rtol=1e-12, atol=0)
        assert torch.allclose(fx, want @ g, rtol=1e-12, atol=0)


def test_a_line_search_fails_after_max_halvings_and_the_start_stops() -> None:
    """f is finite only within 1.4e-12 of x = 0 (and lower towards 5): the trial steps 1, 1/2,
    … reach 2^-40 ≈ 9.1e-13 at the 41st try. By default (40 halvings) the search fails and the
    start stays at 0, with its value; with 41 it moves there."""

    def f(x: torch.Tensor) -> torch.Tensor:
        return torch.where(x[:, 0].abs() <= 1.4e-12, (x[:, 0] - 5) ** 2, torch.nan)

    x0 = torch.tensor([[0.0]], dtype=torch.float64)
    x, fx = batched_lbfgs(f, x0)
    assert x.tolist() == [[0.0]] and fx.tolist() == [25.0]
    x, _ = batched_lbfgs(f, x0, max_iter=1, max_halvings=41)
    assert x.tolist() == [[2.0**-40]]


def test_armijo_rejects_a_step_that_does_not_lower_f() -> None:
    """f = 2(x − 0.3)² from x = 0.8: the first, unit-length step lands on −0.2, where f is as
    high as at the start, so it is halved, onto the minimum."""
    x, fx = batched_lbfgs(
        lambda x: 2 * (x[:, 0] - 0.3) ** 2, torch.tensor([[0.8]], dtype=torch.float64), max_iter=1
    )
    assert x.tolist() == [[pytest.approx(0.3, abs=1e-15)]]
    assert fx.item() == pytest.approx(0.0, abs=1e-28)


@pytest.mark.parametrize("offset", [0.0, 6.0])
def test_the_change_tolerance_is_relative_above_one(offset: float) -> None:
    """A loose `change_tol` stops each start early, after a step that changed f by less than
    change_tol·max(1, |f|), at the same iteration as the reference: with |f| < 1 (offset 0)
    and |f| ≈ 6 (offset 6), where the tolerance scales."""
    starts = [[-1.2, 1.0], [2.0, -0.5], [0.1, 0.3], [1.5, 2.5]]

    def f(x: torch.Tensor) -> torch.Tensor:
        return rosenbrock(x) + offset

    x, fx = batched_lbfgs(f, torch.tensor(starts, dtype=torch.float64), 300, change_tol=2e-3)
    one, grad = _one(f)
    for i, x0 in enumerate(starts):
        x_ref, f_ref = _lbfgs_ref(one, grad, x0, 300, change_tol=2e-3)
        assert x[i].tolist() == pytest.approx(x_ref, rel=1e-9, abs=1e-12)
        assert float(fx[i]) == pytest.approx(f_ref, rel=1e-9)
    assert (f(x) - offset > 1e-8).all()  # stopped early, before the minimum
