"""The reward model: Eq. 1 over whole prompts, training batches, the demonstration bias."""

from __future__ import annotations

import copy
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


def test_hidden_is_the_lm_without_its_head_and_scores_read_the_last_position() -> None:
    rm = _rm().eval()
    with torch.no_grad():
        rm.head.weight.normal_(generator=torch.Generator().manual_seed(4))
        rm.head.bias.fill_(0.3)
    idx = torch.randint(0, 12, (3, 7), generator=torch.Generator().manual_seed(5))
    with torch.no_grad():
        h = rm.hidden(idx)
        torch.testing.assert_close(rm.lm.lm_head(h), rm.lm(idx))
        per_token = rm(idx, per_token=True)
        torch.testing.assert_close(per_token, h @ rm.head.weight[0] + 0.3)
        torch.testing.assert_close(rm(idx), per_token[:, -1])
        torch.testing.assert_close(score(rm, idx, batch=2), per_token[:, -1])
    copy = RewardModel.from_lm(rm.lm)
    assert copy.lm is not rm.lm and (copy.head.weight == 0).all() and (copy.head.bias == 0).all()


def test_shuffled_pairs_step_is_eq1_over_all_pairs() -> None:
    """The §3.5 ablation: with a batch that holds every comparison, the first loss is the mean
    of −log σ(r_w − r_l) over all pairs, winner and loser as the ranking says."""
    g = torch.Generator().manual_seed(6)
    N, K, S = 3, 4, 6
    tokens = torch.randint(0, 12, (N, K, S), generator=g)
    ranking = torch.stack([torch.randperm(K, generator=g) for _ in range(N)])
    rm, ref = _rm(), _rm()
    with torch.no_grad():
        for m in (rm, ref):
            m.head.weight.normal_(generator=torch.Generator().manual_seed(7))
    losses = train_reward_model(rm, tokens, ranking, RMConfig(batch=N, whole_prompts=False))
    with torch.no_grad():
        scores = ref(tokens.reshape(-1, S)).view(N, K)
    assert len(losses) == 1
    assert losses[0] == pytest.approx(pairwise_loss_ref(scores, ranking).item(), abs=1e-6)
    reversed_ranking = ranking.flip(1)
    assert losses[0] != pytest.approx(pairwise_loss_ref(scores, reversed_ranking).item(), abs=1e-3)


def test_training_lowers_eq1_and_the_learning_rate_and_seed_are_used() -> None:
    g = torch.Generator().manual_seed(8)
    N, K, S = 8, 4, 6
    tokens = torch.randint(0, 12, (N, K, S), generator=g)
    ranking = torch.stack([torch.randperm(K, generator=g) for _ in range(N)])
    runs = {}
    for key, cfg in {
        "a": RMConfig(batch=2, epochs=3, lr=1e-2, seed=0),
        "b": RMConfig(batch=2, epochs=3, lr=1e-2, seed=1),
        "slow": RMConfig(batch=2, epochs=3, lr=1e-5, seed=0),
    }.items():
        rm = _rm()
        runs[key] = (train_reward_model(rm, tokens, ranking, cfg), rm)
    losses, rm = runs["a"]
    assert len(losses) == 12
    with torch.no_grad():
        final = pairwise_loss(rm(tokens.reshape(-1, S)).view(N, K), ranking).item()
    assert final < math.log(2) - 0.05  # zero head: every pair starts at log 2
    assert runs["b"][0] != losses  # another seed, another order of prompts
    assert abs(runs["slow"][0][-1] - math.log(2)) < abs(losses[-1] - math.log(2))


def test_normalise_returns_the_shift_and_pair_agreement_with_k4() -> None:
    rm = _rm()
    with torch.no_grad():
        rm.head.bias.fill_(1.25)
    demos = torch.randint(0, 12, (5, 6), generator=torch.Generator().manual_seed(9))
    assert normalise_to_demonstrations(rm, demos) == pytest.approx(1.25, abs=1e-6)
    assert rm.head.bias.item() == pytest.approx(0.0, abs=1e-6)
    # K = 4, lopsided: 5 decided pairs (one tie), 3 ordered like the gold
    gold = torch.tensor([[4.0, 2.0, 2.0, 1.0]])
    scores = torch.tensor([[1.0, 3.0, 0.0, -1.0]])
    # pairs (0,1) wrong, (0,2) right, (0,3) right, (1,2) tie, (1,3) right, (2,3) right
    assert pair_agreement(scores, gold) == pytest.approx(4 / 5)
    assert pair_agreement(scores, torch.zeros(1, 4)) == 0.0  # nothing decided
    assert [p.tolist() for p in all_pairs(4)] == [[0, 0, 0, 1, 1, 2], [1, 2, 3, 2, 3, 3]]


def test_pair_agreement_edge_cases_and_a_trunk_that_is_not_shared() -> None:
    assert pair_agreement(torch.tensor([[2.0, 1.0]]), torch.tensor([[1.0, 0.0]])) == 1.0  # 1 pair
    tied = torch.tensor([[1.0, 1.0, 0.0]])  # the RM ties a pair the gold decides: not agreement
    assert pair_agreement(tied, torch.tensor([[2.0, 1.0, 0.0]])) == pytest.approx(2 / 3)
    lm = _rm().lm
    rm = RewardModel.from_lm(lm)
    with torch.no_grad():
        rm.lm.wte.weight.add_(1.0)  # training the reward model must leave the SFT model alone
    assert not torch.equal(rm.lm.wte.weight, lm.wte.weight)


@pytest.mark.parametrize("whole", [True, False])
def test_on_step_sees_every_step_and_the_seed_fixes_the_order(whole: bool) -> None:
    g = torch.Generator().manual_seed(10)
    N, K, S = 4, 3, 6
    tokens = torch.randint(0, 12, (N, K, S), generator=g)
    ranking = torch.stack([torch.randperm(K, generator=g) for _ in range(N)])
    runs = []
    for seed in (0, 0, 1):
        rm, calls, progress = _rm(), [], []
        cfg = RMConfig(batch=1, epochs=2, seed=seed, whole_prompts=whole)
        losses = train_reward_model(
            rm, tokens, ranking, cfg,
            progress=lambda *a, _p=progress: _p.append(a),
            on_step=lambda step, model, _c=calls, _rm=rm: _c.append((step, model is _rm)),
        )  # fmt: skip
        assert calls == [(i, True) for i in range(len(losses))]
        assert progress[-1] == (
            "reward model" if whole else "reward model (pairs)",
            len(losses),
            len(losses),
        )
        runs.append(losses)
    assert runs[0] == runs[1] and runs[0] != runs[2]
    frozen = _rm()  # the configured learning rate is the one used: ~0 leaves the head at 0
    train_reward_model(frozen, tokens, ranking, RMConfig(batch=2, lr=1e-12, whole_prompts=whole))
    assert frozen.head.weight.abs().max() < 1e-9


def _pair_agreement_ref(scores: torch.Tensor, gold: torch.Tensor) -> float:
    """A plain loop over prompts and pairs, comparing orders, not products."""
    agree = decided = 0
    for s, r in zip(scores.tolist(), gold.tolist(), strict=True):
        for a in range(len(s)):
            for b in range(a + 1, len(s)):
                if r[a] != r[b]:
                    decided += 1
                    agree += (s[a] > s[b]) == (r[a] > r[b]) and s[a] != s[b]
    return agree / max(1, decided)


def test_pair_agreement_reads_only_the_orders_at_any_scale() -> None:
    """A positive rescaling of the scores or of the gold changes no order, so not the agreement:
    also where the gaps' product (tiny·tiny, tiny·huge) or quotient would under- or overflow."""
    g = torch.Generator().manual_seed(11)
    scores = torch.randn(6, 5, generator=g)
    gold = torch.randn(6, 5, generator=g).round()  # lopsided, with ties in the gold
    want = _pair_agreement_ref(scores, gold)
    assert 0.2 < want < 0.8  # neither all nor nothing: a real test
    assert pair_agreement(scores, gold) == pytest.approx(want)
    for a, b in [(1e-25, 1e-25), (1e-25, 1e25), (1e25, 1e-25), (1e-30, 1.0), (1.0, 1e30)]:
        assert pair_agreement(a * scores, b * gold) == pytest.approx(want), (a, b)


@pytest.mark.gpu
def test_scores_on_the_gpu_match_the_cpu() -> None:
    """The positions are made on the tokens' device (a CPU `arange` would not meet CUDA weights)."""
    rm = _rm().eval()
    with torch.no_grad():
        rm.head.weight.normal_(generator=torch.Generator().manual_seed(12))
    idx = torch.randint(0, 12, (3, 7), generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        want = rm(idx, per_token=True)
        got = copy.deepcopy(rm).cuda()(idx.cuda(), per_token=True).cpu()
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
