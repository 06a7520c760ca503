"""The reward model: Eq. 1 over whole prompts, training batches, the demonstration bias."""

from __future__ import annotations

import math

import pytest
import torch

from repro.align.reward import (
    RewardModel,
    RMConfig,
    all_pairs,
    normalise_to_demonstrations,
    pair_agreement,
    pairwise_loss,
    pairwise_loss_ref,
    score,
    train_reward_model,
)
from repro.models.gpt import GPT, GPTConfig


@pytest.mark.parametrize("K", [2, 4, 9])
def test_every_pair_once(K: int) -> None:
    i, j = all_pairs(K)
    assert len(i) == math.comb(K, 2)
    assert (i < j).all()


@pytest.mark.parametrize("K", [2, 4, 7])
def test_pairwise_loss_matches_the_reference(K: int) -> None:
    g = torch.Generator().manual_seed(K)
    scores = torch.randn(5, K, generator=g, dtype=torch.float64, requires_grad=True)
    ranking = torch.stack([torch.randperm(K, generator=g) for _ in range(5)])
    fast, ref = pairwise_loss(scores, ranking), pairwise_loss_ref(scores, ranking)
    assert torch.allclose(fast, ref, atol=1e-12)
    (g_fast,) = torch.autograd.grad(fast, scores)
    (g_ref,) = torch.autograd.grad(pairwise_loss_ref(scores, ranking), scores)
    assert torch.allclose(g_fast, g_ref, atol=1e-12)


def test_pairwise_loss_rewards_the_labelers_order() -> None:
    """Scores that agree with the ranking give a lower loss; the gradient raises the winner."""
    ranking = torch.tensor([[2, 0, 1]])
    agree = torch.tensor([[1.0, 0.0, 2.0]])  # item 2 best, then 0, then 1
    assert pairwise_loss(agree, ranking) < pairwise_loss(-agree, ranking)
    s = torch.zeros(1, 3, requires_grad=True)
    pairwise_loss(s, ranking).backward()
    assert s.grad[0, 2] < 0 < s.grad[0, 1]  # descent raises the winner, lowers the loser


def _rm() -> RewardModel:
    torch.manual_seed(0)
    return RewardModel(
        GPT(GPTConfig(n_layers=1, d_model=16, n_heads=2, vocab_size=12, max_seq_len=8))
    )


def test_training_batches_are_whole_prompts() -> None:
    """One step of `train_reward_model` equals one Adam step on Eq. 1 over whole prompts (all
    C(K,2) pairs of each prompt in the same batch element, §3.5)."""
    g = torch.Generator().manual_seed(1)
    N, K, S = 4, 4, 6
    tokens = torch.randint(0, 12, (N, K, S), generator=g)
    ranking = torch.stack([torch.randperm(K, generator=g) for _ in range(N)])
    rm, ref = _rm(), _rm()
    with torch.no_grad():  # a non-zero head so that the first step moves the trunk too
        for m in (rm, ref):
            m.head.weight.fill_(0.1)
    seen: list[torch.Tensor] = []
    forward = rm.forward
    rm.forward = lambda idx, per_token=False: (seen.append(idx), forward(idx))[1]
    cfg = RMConfig(batch=N, lr=1e-2)
    losses = train_reward_model(rm, tokens, ranking, cfg)
    assert len(losses) == 1
    # one forward pass over the N·K responses, each scored once (not once per pair)
    assert [x.shape[0] for x in seen] == [N * K]
    expected = pairwise_loss(ref(tokens.reshape(-1, S)).view(N, K), ranking)
    assert abs(losses[0] - expected.item()) < 1e-6


def test_normalised_demonstrations_score_zero() -> None:
    rm = _rm()
    with torch.no_grad():
        rm.head.weight.normal_()
        rm.head.bias.fill_(3.0)
    demos = torch.randint(0, 12, (20, 6), generator=torch.Generator().manual_seed(2))
    normalise_to_demonstrations(rm, demos)
    assert abs(score(rm, demos).mean().item()) < 1e-5


def test_pair_agreement_counts_decided_pairs() -> None:
    gold = torch.tensor([[3.0, 1.0, 1.0]])
    assert pair_agreement(torch.tensor([[2.0, 1.0, 0.0]]), gold) == 1.0
    assert pair_agreement(torch.tensor([[0.0, 1.0, 2.0]]), gold) == 0.0


def test_every_prompt_once_per_epoch_with_a_partial_last_batch() -> None:
    g = torch.Generator().manual_seed(3)
    N, K, S = 5, 3, 6
    tokens = torch.randint(0, 12, (N, K, S), generator=g)
    ranking = torch.stack([torch.randperm(K, generator=g) for _ in range(N)])
    for whole in (True, False):
        seen = []
        rm = _rm()
        rm.forward = lambda idx, per_token=False, _f=rm.forward, _s=seen: (_s.append(idx), _f(idx))[
            1
        ]
        cfg = RMConfig(batch=2, epochs=2, whole_prompts=whole)
        losses = train_reward_model(rm, tokens, ranking, cfg)
        assert all(math.isfinite(v) for v in losses)
        n_scored = sum(x.shape[0] for x in seen)
        # whole prompts: K responses per prompt; pairs: two responses per comparison
        assert n_scored == 2 * N * (K if whole else 2 * math.comb(K, 2))
