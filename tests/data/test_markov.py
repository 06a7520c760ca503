from __future__ import annotations

import math

import pytest
import torch

from repro.data.markov import MarkovConfig, MarkovSource


@pytest.mark.parametrize("order", [1, 2])
def test_entropy_rate_matches_the_empirical_log_loss(order: int) -> None:
    """The true model's average −log p on a long sample converges to the entropy rate."""
    source = MarkovSource(MarkovConfig(vocab_size=8, order=order, concentration=0.3, seed=3))
    tokens = source.sample(64, 512, torch.Generator().manual_seed(0))
    k = order
    nll = []
    for t in range(k + 64, tokens.shape[1]):  # skip the burn-in from the uniform start
        rows = source.transition[source._state(tokens[:, t - k : t])]
        nll.append(-rows.gather(1, tokens[:, t : t + 1]).log())
    nll = torch.cat(nll)
    stderr = nll.std().item() / math.sqrt(nll.numel())
    assert abs(nll.mean().item() - source.entropy_rate()) < 5 * stderr + 0.02


def test_stationary_is_a_fixed_point_and_a_distribution() -> None:
    source = MarkovSource(MarkovConfig(vocab_size=5, order=2))
    pi = source.stationary()
    assert pi.min() >= 0 and abs(pi.sum().item() - 1) < 1e-12
    V = 5
    nxt = (torch.arange(V * V)[:, None] % V) * V + torch.arange(V)[None, :]
    stepped = torch.zeros_like(pi).index_add_(
        0, nxt.reshape(-1), (pi[:, None] * source.transition).reshape(-1)
    )
    assert torch.allclose(stepped, pi, atol=1e-10)


def test_entropy_ordering() -> None:
    source = MarkovSource(MarkovConfig(vocab_size=16, order=1, concentration=0.1))
    assert 0 < source.entropy_rate() < source.unigram_entropy() <= math.log(16) + 1e-9


def test_sampling_is_reproducible_and_in_range() -> None:
    source = MarkovSource()
    a = source.sample(4, 32, torch.Generator().manual_seed(1))
    b = source.sample(4, 32, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.min() >= 0 and a.max() < source.cfg.vocab_size
