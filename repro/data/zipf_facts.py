"""Zipf-distributed facts: a source with difficulty spread over many scales and an exact floor.

A power law in model size needs data with structure at every scale (Kaplan et al. 2020,
https://arxiv.org/abs/2001.08361): here K keys ("facts") are asked with frequencies p_k ∝ k^(−s),
so each extra unit of capacity can store rarer and rarer facts (the quantization model of scaling,
Michaud et al. 2023, https://arxiv.org/abs/2303.13506). Key k arrives as a fixed random code
x_k ∈ R^d; its answer is a fixed value f(k) ∈ {0..V−1}, replaced by a uniform label with
probability ε. Every key has the same noisy label distribution up to a permutation, so the
lowest cross-entropy any model can reach is one closed-form number, whatever K and s.

Glossary: K keys, V label vocabulary, s Zipf exponent, ε label noise, d code dimension,
n samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class ZipfFactsConfig:
    n_keys: int = 4096  # K
    zipf_s: float = 1.5  # p_k ∝ k^(−s)
    vocab_size: int = 32  # V
    noise: float = 0.1  # ε: probability that the label is uniform instead of f(k)
    code_dim: int = 16  # d
    seed: int = 1234  # draws the codes and the answers, not the training samples


def entropy_floor(vocab_size: int, noise: float) -> float:
    """H = −q·ln q − (V−1)·(ε/V)·ln(ε/V) with q = 1 − ε + ε/V: the entropy of one key's labels."""
    V, eps = vocab_size, noise
    q = 1 - eps + eps / V  # ≥ 1/V > 0 for 0 ≤ ε ≤ 1
    other = eps / V
    h = -q * math.log(q)
    if other > 0:
        h -= (V - 1) * other * math.log(other)
    return h


def entropy_floor_ref(vocab_size: int, noise: float) -> float:
    """The same floor, the slow way: −Σ_v P(v) ln P(v) over the label distribution of one key."""
    probs = torch.full((vocab_size,), noise / vocab_size, dtype=torch.float64)
    probs[0] += 1 - noise
    probs = probs[probs > 0]
    return float(-(probs * probs.log()).sum())


class ZipfFacts:
    """K keys with Zipf frequencies, Gaussian codes and random answers, drawn once from `seed`."""

    def __init__(self, cfg: ZipfFactsConfig = ZipfFactsConfig()) -> None:
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        ranks = torch.arange(1, cfg.n_keys + 1, dtype=torch.float64)
        weights = ranks ** (-cfg.zipf_s)
        self.probs = weights / weights.sum()  # (K,) p_k
        self._cdf = self.probs.cumsum(0)  # (K,) inverse-CDF sampling: cheaper than multinomial
        self.codes = torch.randn(cfg.n_keys, cfg.code_dim, generator=g)  # (K, d)
        self.answers = torch.randint(cfg.vocab_size, (cfg.n_keys,), generator=g)  # (K,) f(k)
        self._typed: dict[torch.dtype, tuple[Tensor, Tensor]] = {}  # dtype -> (probs, dist)

    @property
    def floor(self) -> float:
        return entropy_floor(self.cfg.vocab_size, self.cfg.noise)

    def label_distribution(self) -> Tensor:
        """(K, V) P(label | key): 1 − ε + ε/V on f(k), ε/V elsewhere."""
        V, eps = self.cfg.vocab_size, self.cfg.noise
        dist = torch.full((self.cfg.n_keys, V), eps / V, dtype=torch.float64)
        dist[torch.arange(self.cfg.n_keys), self.answers] += 1 - eps
        return dist

    def population_loss(self, logits: Tensor) -> Tensor:
        """Exact expected loss Σ_k p_k Σ_v P(v|k)·(−log softmax(logits_k)_v). logits (K, V).

        Differentiable, in the dtype of `logits`; it equals `floor` at logits = log P(v|k).
        """
        logp = torch.log_softmax(logits, dim=-1)  # (K, V)
        if logp.dtype not in self._typed:  # converted once: this runs at every training step
            self._typed[logp.dtype] = (self.probs.to(logp), self.label_distribution().to(logp))
        probs, dist = self._typed[logp.dtype]
        per_key = -(dist.to(logp.device) * logp).sum(-1)  # (K,)
        return (probs.to(logp.device) * per_key).sum()

    def sample_keys(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n fresh (key, label) pairs: keys ~ p, labels f(k) or uniform with probability ε."""
        u = torch.rand(n, generator=generator, dtype=torch.float64)
        keys = torch.searchsorted(self._cdf, u).clamp_max(self.cfg.n_keys - 1)  # (n,) k ~ p
        labels = self.answers[keys].clone()
        noisy = torch.rand(n, generator=generator) < self.cfg.noise
        labels[noisy] = torch.randint(self.cfg.vocab_size, (int(noisy.sum()),), generator=generator)
        return keys, labels  # (n,), (n,)

    def sample(self, n: int, generator: torch.Generator) -> tuple[Tensor, Tensor]:
        """n fresh (code, label) pairs, the model's view of `sample_keys`."""
        keys, labels = self.sample_keys(n, generator)
        return self.codes[keys], labels  # (n, d), (n,)
