from __future__ import annotations

import math

import pytest
import torch

from repro.scaling.approach3 import fit_approach3, huber, predicted_log_loss
from repro.scaling.closed_form import LossSurface
from repro.scaling.lbfgs import batched_lbfgs

PUBLISHED = LossSurface(  # Hoffmann et al. App. D.2, unrounded (arXiv TeX source)
    E=math.exp(0.5267228), A=math.exp(6.0073404), B=math.exp(6.0179186),
    alpha=0.33917084, beta=0.2849083,
)  # fmt: skip


def _isoflop_points(surface: LossSurface, noise: float, seed: int) -> tuple[list, list, list]:
    """6 budgets 1e18–1e21 × 10 sizes over ±1 decade around √(C/6); loss × exp(N(0, noise²))."""
    g = torch.Generator().manual_seed(seed)
    n, d, loss = [], [], []
    for c in [10 ** (18 + 3 * i / 5) for i in range(6)]:
        for j in range(10):
            size = math.sqrt(c / 6) * 10 ** (-1 + 2 * j / 9)
            n.append(size)
            d.append(c / (6 * size))
            loss.append(
                surface.loss(size, c / (6 * size))
                * math.exp(noise * float(torch.randn(1, generator=g)))
            )
    return n, d, loss


def test_prediction_is_log_of_the_surface() -> None:
    theta = torch.tensor(
        [[math.log(406.4), math.log(410.7), math.log(1.69), 0.34, 0.28]], dtype=torch.float64
    )
    n = torch.tensor([1e8, 1e10], dtype=torch.float64)
    d = torch.tensor([1e9, 1e12], dtype=torch.float64)
    want = [
        math.log(1.69 + 406.4 / ni**0.34 + 410.7 / di**0.28)
        for ni, di in zip(n.tolist(), d.tolist(), strict=True)
    ]
    got = predicted_log_loss(theta, n.log(), d.log())[0].tolist()
    assert got == pytest.approx(want, rel=1e-12)


def test_huber_matches_torch() -> None:
    r = torch.linspace(-0.01, 0.01, 101, dtype=torch.float64)
    ref = torch.nn.functional.huber_loss(r, torch.zeros_like(r), reduction="none", delta=1e-3)
    assert torch.allclose(huber(r, 1e-3), ref, atol=1e-15)


def test_recovers_the_published_surface_with_one_percent_noise() -> None:
    """The issue's bar: a within 0.05 on points drawn from the published surface with 1% noise."""
    fit = fit_approach3(*_isoflop_points(PUBLISHED, 0.01, seed=0), starts=64)
    assert fit.a == pytest.approx(PUBLISHED.a, abs=0.05)
    assert pytest.approx(PUBLISHED.E, rel=0.05) == fit.surface.E


def test_recovers_every_constant_without_noise() -> None:
    fit = fit_approach3(*_isoflop_points(PUBLISHED, 0.0, seed=0), starts=16)
    s = fit.surface
    assert s.alpha == pytest.approx(PUBLISHED.alpha, abs=1e-3)
    assert s.beta == pytest.approx(PUBLISHED.beta, abs=1e-3)
    assert pytest.approx(PUBLISHED.E, rel=1e-3) == s.E
    assert pytest.approx(PUBLISHED.A, rel=2e-2) == s.A  # every scale on its own, not only a
    assert pytest.approx(PUBLISHED.B, rel=2e-2) == s.B
    assert fit.objective < 1e-10
    assert (fit.starts, fit.grid) == (16, 4500)


def test_fit_from_a_given_grid_keeps_the_best_start() -> None:
    """A custom grid (the `grid` argument the papers may pass) and a start that diverges: the
    returned surface is the lowest finite objective, with its own A, B, E, α, β."""
    other = LossSurface(E=0.8, A=5000.0, B=300.0, alpha=0.35, beta=0.3)  # both terms matter
    n, d, loss = _isoflop_points(other, 0.0, seed=1)
    grid = torch.tensor(
        [
            [math.log(4000.0), math.log(250.0), math.log(0.7), 0.33, 0.32],  # near the truth
            [8.0, 8.0, -0.5, 0.1, 0.1],  # far
            [math.log(6000.0), math.log(400.0), math.log(0.9), 0.37, 0.28],
        ],
        dtype=torch.float64,
    )
    fit = fit_approach3(n, d, loss, grid=grid)
    s = fit.surface
    assert (fit.starts, fit.grid) == (3, 3)
    for got, want in [(s.E, 0.8), (s.A, 5000.0), (s.B, 300.0), (s.alpha, 0.35), (s.beta, 0.3)]:
        assert got == pytest.approx(want, rel=2e-2)
    only_far = fit_approach3(n, d, loss, grid=grid, starts=1)  # the lowest initial objective
    assert only_far.starts == 1
    assert only_far.objective >= fit.objective - 1e-15


def test_batched_lbfgs_solves_independent_problems() -> None:
    """Rosenbrock with a different minimum per start: (c, c²) for c = 1, 2, −1."""
    c = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)

    def f(x: torch.Tensor) -> torch.Tensor:
        return (c - x[:, 0]) ** 2 + 100 * (x[:, 1] - x[:, 0] ** 2) ** 2

    x0 = torch.tensor([[-1.2, 1.0], [0.0, 0.0], [2.0, 2.0]], dtype=torch.float64)
    x, fx = batched_lbfgs(f, x0, max_iter=500)
    assert torch.allclose(x[:, 0], c, atol=1e-5)
    assert torch.allclose(x[:, 1], c**2, atol=1e-4)
    assert (fx < 1e-10).all()
