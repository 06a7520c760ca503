from __future__ import annotations

import pytest

from repro.scaling.closed_form import LossSurface, optimal_ref

SURFACES = [
    LossSurface(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    LossSurface(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658),
    LossSurface(E=0.5, A=10.0, B=50.0, alpha=0.6, beta=0.4),
]


@pytest.mark.parametrize("surface", SURFACES)
@pytest.mark.parametrize("flops", [1e18, 5.76e23, 1e26])
def test_closed_form_is_the_minimum_along_the_budget(surface: LossSurface, flops: float) -> None:
    n, d = surface.optimal(flops)
    n_ref, d_ref = optimal_ref(surface, flops)
    assert 6 * n * d == pytest.approx(flops, rel=1e-12)
    assert n == pytest.approx(n_ref, rel=2e-3)  # the reference grid has 2,500 points per decade
    assert d == pytest.approx(d_ref, rel=2e-3)


@pytest.mark.parametrize("surface", SURFACES)
def test_exponents(surface: LossSurface) -> None:
    assert surface.a + surface.b == pytest.approx(1.0)
    n1, _ = surface.optimal(1e20)
    n2, _ = surface.optimal(1e22)
    assert (n2 / n1) == pytest.approx(100**surface.a, rel=1e-9)
