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


def _shifted(offset: float, flops: float) -> LossSurface:
    """A lopsided surface (α ≠ β) whose N_opt at `flops` lies `offset` decades from √(C/6):
    N_opt ∝ A^(1/(α+β)), so A is rescaled."""
    import math

    base = LossSurface(E=1.2, A=300.0, B=900.0, alpha=0.3, beta=0.42)
    shift = 10**offset * math.sqrt(flops / 6) / base.optimal(flops)[0]
    return LossSurface(E=1.2, A=300.0 * shift ** (0.3 + 0.42), B=900.0, alpha=0.3, beta=0.42)


@pytest.mark.parametrize(("offset", "flops"), [(-1.8, 3e19), (2.3, 2e23)])
def test_reference_searches_four_decades_either_side_of_the_square_root(
    offset: float, flops: float
) -> None:
    """With 5 points the reference's log grid is √(C/6)·10^{−4, −2, 0, 2, 4}: it returns the
    candidate of lowest loss (written out here; not the centre one) and D = C/(6N)."""
    import math

    surface = _shifted(offset, flops)
    center = math.sqrt(flops / 6)
    candidates = [center * 10.0**k for k in (-4, -2, 0, 2, 4)]
    want = min(candidates, key=lambda n: surface.loss(n, flops / (6 * n)))
    assert want != candidates[2]
    n, d = optimal_ref(surface, flops, points=5)
    assert n == pytest.approx(want, rel=1e-12)
    assert d == pytest.approx(flops / (6 * want), rel=1e-12)


@pytest.mark.parametrize("offset", [-3.97, -3.5, 3.97])
def test_reference_finds_a_minimum_near_either_end_of_its_window(offset: float) -> None:
    """N_opt `offset` decades from √(C/6), near the ends of the ±4-decade window: the
    reference still lands on the closed form."""
    import math

    flops = 1e21
    surface = _shifted(offset, flops)
    n, d = surface.optimal(flops)
    assert math.log10(n / math.sqrt(flops / 6)) == pytest.approx(offset, abs=1e-9)
    n_ref, d_ref = optimal_ref(surface, flops)
    assert n_ref == pytest.approx(n, rel=2e-3)
    assert d_ref == pytest.approx(d, rel=2e-3)
