"""A synthetic language: an order-k Markov source over a small vocabulary, with a known entropy.

Language-modelling experiments train on text this source generates. Its entropy rate is the
lowest cross-entropy any model can reach (nats/token), so every loss has a floor to compare with,
and nothing written elsewhere is shipped. Glossary: V vocabulary size, k order (context length),
B batch, T time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class MarkovConfig:
    vocab_size: int = 64
    order: int = 2  # tokens of context that determine the next-token distribution
    concentration: float = 0.1  # Dirichlet α: small α = peaked rows = a low-entropy language
    seed: int = 1234


class MarkovSource:
    """Next-token distributions P(x_t | x_{t-k..t-1}) drawn once from a Dirichlet."""

    def __init__(self, cfg: MarkovConfig = MarkovConfig()) -> None:
        self.cfg = cfg
        V, k = cfg.vocab_size, cfg.order
        g = torch.Generator().manual_seed(cfg.seed)
        alpha = torch.full((V**k, V), cfg.concentration, dtype=torch.float64)
        gamma = torch._standard_gamma(alpha, generator=g)  # Dirichlet via normalised Gammas
        self.transition = gamma / gamma.sum(-1, keepdim=True)  # (V^k, V)

    def _state(self, context: Tensor) -> Tensor:
        """(B, k) tokens -> (B,) row index into `transition`."""
        V = self.cfg.vocab_size
        index = torch.zeros(context.shape[0], dtype=torch.long)
        for j in range(self.cfg.order):
            index = index * V + context[:, j]
        return index

    def sample(self, batch: int, length: int, generator: torch.Generator | None = None) -> Tensor:
        """(batch, length) token ids; the first k tokens are uniform."""
        V, k = self.cfg.vocab_size, self.cfg.order
        out = torch.empty(batch, length, dtype=torch.long)
        out[:, :k] = torch.randint(0, V, (batch, min(k, length)), generator=generator)
        probs = self.transition.float()
        for t in range(k, length):
            rows = probs[self._state(out[:, t - k : t])]  # (B, V)
            out[:, t] = torch.multinomial(rows, 1, generator=generator).squeeze(1)
        return out

    def stationary(self, iters: int = 500) -> Tensor:
        """Stationary distribution over the V^k contexts, by power iteration."""
        V, k = self.cfg.vocab_size, self.cfg.order
        n = V**k
        pi = torch.full((n,), 1.0 / n, dtype=torch.float64)
        # context c = (x1..xk) moves to (x2..xk, y) with probability transition[c, y]
        nxt = (torch.arange(n)[:, None] % (V ** (k - 1))) * V + torch.arange(V)[None, :]  # (n, V)
        for _ in range(iters):
            new = torch.zeros(n, dtype=torch.float64)
            new.index_add_(0, nxt.reshape(-1), (pi[:, None] * self.transition).reshape(-1))
            pi = new
        return pi

    def entropy_rate(self) -> float:
        """H = Σ_c π(c) H(P(· | c)) in nats/token: the cross-entropy floor of a perfect model."""
        p = self.transition
        row_entropy = -(p * p.clamp_min(1e-300).log()).sum(-1)
        return float((self.stationary() * row_entropy).sum())

    def unigram_entropy(self) -> float:
        """Entropy of the marginal token distribution: the floor of a context-free model."""
        marginal = (self.stationary()[:, None] * self.transition).sum(0)  # (V,)
        assert abs(float(marginal.sum()) - 1) < 1e-9, f"marginal sums to {float(marginal.sum())}"
        return float(-(marginal * marginal.clamp_min(1e-300).log()).sum())


def uniform_entropy(vocab_size: int) -> float:
    return math.log(vocab_size)
