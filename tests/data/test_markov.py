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


def test_the_transition_table_follows_the_seed_and_rows_are_distributions() -> None:
    cfg = MarkovConfig(vocab_size=4, order=2, seed=5)
    a, b = MarkovSource(cfg), MarkovSource(cfg)
    assert torch.equal(a.transition, b.transition)
    assert not torch.equal(a.transition, MarkovSource(MarkovConfig(4, 2, seed=6)).transition)
    assert a.transition.shape == (16, 4)
    assert torch.allclose(a.transition.sum(-1), torch.ones(16, dtype=torch.float64))


def test_a_context_is_read_as_a_base_v_number_oldest_token_first() -> None:
    """(x₁, x₂) → x₁·V + x₂, the order `stationary` shifts contexts in."""
    source = MarkovSource(MarkovConfig(vocab_size=5, order=2))
    contexts = torch.tensor([[0, 0], [0, 3], [2, 1], [4, 4]])
    assert source._state(contexts).tolist() == [0, 3, 11, 24]
    order3 = MarkovSource(MarkovConfig(vocab_size=3, order=3))
    assert order3._state(torch.tensor([[1, 2, 0], [2, 0, 1]])).tolist() == [15, 19]


def test_the_first_tokens_are_uniform_over_the_whole_vocabulary() -> None:
    source = MarkovSource(MarkovConfig(vocab_size=4, order=2))
    start = source.sample(4000, 2, torch.Generator().manual_seed(0))
    for v in range(4):
        assert abs((start == v).float().mean().item() - 0.25) < 0.02


def test_unigram_entropy_is_the_entropy_of_the_token_marginal_at_order_two() -> None:
    """At order 2 the contexts (V²) and the tokens (V) differ: the marginal of the newest token
    of a stationary context is the token marginal."""
    V = 6
    source = MarkovSource(MarkovConfig(vocab_size=V, order=2, concentration=0.3))
    marginal = source.stationary().reshape(V, V).sum(0)
    want = -sum(p * math.log(p) for p in marginal.tolist())
    assert source.unigram_entropy() == pytest.approx(want, abs=1e-9)
    assert source.entropy_rate() < want < math.log(V)


def test_unigram_entropy_refuses_rows_that_are_not_distributions() -> None:
    source = MarkovSource(MarkovConfig(vocab_size=3, order=1))
    pi = source.stationary()
    source.stationary = lambda: pi  # the true π, with rows that sum to 1.1
    source.transition = source.transition * 1.1
    with pytest.raises(AssertionError, match=r"marginal sums to 1\.1"):
        source.unigram_entropy()


def test_uniform_entropy_is_log_v() -> None:
    from repro.data.markov import uniform_entropy

    assert uniform_entropy(7) == pytest.approx(-7 * (1 / 7) * math.log(1 / 7))
