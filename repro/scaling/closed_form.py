"""Compute-optimal allocation under L(N, D) = E + A/N^α + B/D^β and C = 6·N·D, in closed form.

Hoffmann et al. 2022, https://arxiv.org/abs/2203.15556, §3.3 Eq. 4: minimising L along C = 6ND
gives N_opt = G·(C/6)^a and D_opt = G⁻¹·(C/6)^b with a = β/(α+β), b = α/(α+β) and
G = (αA/(βB))^(1/(α+β)).

Glossary: N parameters, D training tokens, C training FLOPs, E irreducible loss, A, B, α, β the
fitted scales and exponents, a, b the allocation exponents (a + b = 1).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class LossSurface:
    """L(N, D) = E + A/N^α + B/D^β (Eq. 2)."""

    E: float
    A: float
    B: float
    alpha: float
    beta: float

    def loss(self, n: float, d: float) -> float:
        return self.E + self.A / n**self.alpha + self.B / d**self.beta

    @property
    def a(self) -> float:
        """N_opt ∝ C^a."""
        return self.beta / (self.alpha + self.beta)

    @property
    def b(self) -> float:
        """D_opt ∝ C^b."""
        return self.alpha / (self.alpha + self.beta)

    @property
    def G(self) -> float:
        return (self.alpha * self.A / (self.beta * self.B)) ** (1 / (self.alpha + self.beta))

    def optimal(self, flops: float) -> tuple[float, float]:
        """(N_opt, D_opt) at C = `flops`, with C = 6ND (Eq. 4)."""
        return self.G * (flops / 6) ** self.a, (flops / 6) ** self.b / self.G


def optimal_ref(surface: LossSurface, flops: float, points: int = 20001) -> tuple[float, float]:
    """(N_opt, D_opt) by brute force: the argmin of L on a fine log grid of N, D = C/(6N)."""
    import math

    center = math.sqrt(flops / 6)
    best = min(
        (surface.loss(n, flops / (6 * n)), n)
        for n in (center * 10 ** (8 * (i / (points - 1) - 0.5)) for i in range(points))
    )
    return best[1], flops / (6 * best[1])
