"""Preference data: sampled comparisons, labelled pairs, summed log-probabilities, win rates."""

from __future__ import annotations

import itertools
import math

import pytest
import torch

from repro.align.policy import generate, token_logprobs
from repro.align.preferences import (
    Comparisons,
    PreferencePairs,
    preference_pairs,
    sample_comparisons,
    sampled_gold,
    sequence_logps,
    sequence_logps_ref,
    win_rate,
)
from repro.align.pretrain import PretrainConfig, fresh_model
from repro.data.instructions import InstructionWorld

PCFG = PretrainConfig()
WORLD = InstructionWorld(PCFG.world)
EOT = WORLD.vocab.eot


def _model(seed: int = 0) -> torch.nn.Module:
    return fresh_model(PCFG, seed=seed).double().eval()


def _responses() -> tuple[torch.Tensor, torch.Tensor]:
    """Three prompts and lopsided responses: `<eot>` first, `<eot>` in the middle then padding,
    and no `<eot>` at all."""
    g = torch.Generator().manual_seed(1)
    prompts = WORLD.prompts(WORLD.sample_instances(3, g))
    d = WORLD.vocab.digit0
    responses = torch.tensor([[EOT, d + 4, d + 5], [d + 3, EOT, 0], [d + 1, d + 2, d + 7]])
    return prompts, responses


# --- sequence log-probabilities ------------------------------------------------------------------


def test_sequence_logps_sum_the_response_tokens_up_to_eot_like_the_token_by_token_reference():
    model = _model()
    prompts, responses = _responses()
    got = sequence_logps(model, prompts, responses, EOT)
    want = sequence_logps_ref(model, prompts, responses, EOT)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    # summed, not averaged: the response that stops at once is one token's log-probability,
    # the full-length one is the sum of three (so it is the most negative of the three)
    one = torch.log_softmax(model(prompts[:1]).double()[0, -1], -1)[EOT]
    torch.testing.assert_close(got[0], one, atol=1e-12, rtol=0)
    assert got[2] < got[1] < 0 and got[2] < got[0]


def test_tokens_after_eot_carry_no_probability():
    model = _model(3)
    prompts, responses = _responses()
    changed = responses.clone()
    changed[0, 1:] = WORLD.vocab.bad  # after the first <eot>: ignored
    changed[2, 2] = WORLD.vocab.bad  # no <eot> in this row: counted
    a, b = (sequence_logps(model, prompts, r, EOT) for r in (responses, changed))
    assert a[0] == b[0] and a[1] == b[1]
    assert a[2] != b[2]


@pytest.mark.parametrize(
    ("prompts", "responses", "match"),
    [
        (torch.zeros(0, 5, dtype=torch.long), torch.zeros(0, 3, dtype=torch.long), "empty batch"),
        (torch.ones(2, 5, dtype=torch.long), torch.zeros(2, 0, dtype=torch.long), "zero-length"),
        (torch.ones(2, 0, dtype=torch.long), torch.ones(2, 3, dtype=torch.long), "zero-length"),
        (torch.ones(2, 5, dtype=torch.long), torch.ones(3, 3, dtype=torch.long), "same N"),
    ],
)
def test_sequence_logps_refuse_empty_input_with_a_value_error(prompts, responses, match):
    model = _model()
    for fn in (sequence_logps, sequence_logps_ref):
        with pytest.raises(ValueError, match=match):
            fn(model, prompts, responses, EOT)


# --- win rates -----------------------------------------------------------------------------------


def test_win_rate_counts_wins_and_half_ties_not_the_mean_reward():
    a = torch.tensor([10.0, 0.0, 0.0])
    b = torch.tensor([1.0, 1.0, 1.0])
    assert a.mean() > b.mean()  # a is better on average ...
    assert win_rate(a, b) == pytest.approx(1 / 3)  # ... but wins one row in three
    assert win_rate(b, a) == pytest.approx(2 / 3)
    assert win_rate(torch.tensor([1.0, 2.0, 0.0, 3.0]), torch.tensor([1.0, 1.0, 1.0, 3.0])) == (
        pytest.approx((0.5 + 1 + 0 + 0.5) / 4)
    )


def test_win_rate_refuses_empty_or_unpaired_rewards():
    with pytest.raises(ValueError, match="empty batch"):
        win_rate(torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match="one shape"):
        win_rate(torch.zeros(3), torch.zeros(4))


# --- comparisons and pairs -----------------------------------------------------------------------


def test_sample_comparisons_score_every_sample_with_the_gold_reward():
    g = torch.Generator().manual_seed(0)
    cmp = sample_comparisons(_model().float(), WORLD, 16, 3, g)
    n, K, R = cmp.responses.shape
    assert (n, K, R) == (16, 3, WORLD.response_len)
    assert cmp.tokens.shape == (16, 3, WORLD.prompt_len + R)
    for k in range(K):
        torch.testing.assert_close(cmp.gold[:, k], WORLD.gold_reward(cmp.inst, cmp.responses[:, k]))
        assert (cmp.tokens[:, k, : WORLD.prompt_len] == WORLD.prompts(cmp.inst)).all()
    for c, (i, j) in enumerate(itertools.combinations(range(K), 2)):
        same = (cmp.responses[:, i] == cmp.responses[:, j]).all(-1)
        assert (cmp.distinct[:, c] == ~same).all()
    gaps = cmp.gold_gaps()
    assert gaps.numel() == int(cmp.distinct.sum())


def test_sample_comparisons_refuse_empty_batches_and_single_responses():
    g = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="empty batch"):
        sample_comparisons(_model().float(), WORLD, 0, 4, g)
    with pytest.raises(ValueError, match="K >= 2"):
        sample_comparisons(_model().float(), WORLD, 4, 1, g)
    with pytest.raises(ValueError, match="empty batch"):
        inst = WORLD.sample_instances(0, g)
        sampled_gold(_model().float(), WORLD, inst, g)


def _hand_made() -> Comparisons:
    """Two prompts, K = 3: prompt 0 has three different responses, prompt 1 two identical ones."""
    inst = WORLD.sample_instances(2, torch.Generator().manual_seed(5))
    d = WORLD.vocab.digit0
    responses = torch.tensor(
        [
            [[d + 1, EOT, 0], [d + 2, EOT, 0], [d + 3, d + 4, EOT]],
            [[d + 5, EOT, 0], [d + 6, EOT, 0], [d + 5, EOT, 0]],
        ]
    )
    gold = torch.tensor([[0.5, 2.0, -1.0], [1.0, 3.0, 1.0]])
    distinct = torch.tensor([[True, True, True], [True, False, True]])
    return Comparisons(inst, WORLD.prompts(inst), responses, gold, distinct)


def test_preference_pairs_take_every_ranked_pair_of_distinct_responses():
    cmp = _hand_made()
    ranking = torch.tensor([[2, 0, 1], [0, 1, 2]])  # a labeler's orders, best first (lopsided)
    pairs = preference_pairs(cmp, ranking, EOT)
    want = []  # the reference: a plain loop over prompts and rank positions
    for x in range(2):
        for a, b in itertools.combinations(range(3), 2):
            w, lose = int(ranking[x, a]), int(ranking[x, b])
            if not torch.equal(cmp.responses[x, w], cmp.responses[x, lose]):
                want.append((x, w, lose))
    assert len(pairs) == len(want) == 5  # 3 + 2: prompt 1's identical responses 0 and 2 dropped
    for row, (x, w, lose) in enumerate(want):
        assert torch.equal(pairs.prompts[row], cmp.prompts[x])
        assert torch.equal(pairs.chosen[row], cmp.responses[x, w])
        assert torch.equal(pairs.rejected[row], cmp.responses[x, lose])
        assert pairs.gold_chosen[row] == cmp.gold[x, w]
        assert pairs.gold_rejected[row] == cmp.gold[x, lose]
    # labels against r*: prompt 0's labeler ranks the worst (−1) first; 1 pair of 5 agrees
    assert pairs.gold_agreement() == pytest.approx(1 / 5)
    with pytest.raises(ValueError, match="ranking has shape"):
        preference_pairs(cmp, ranking[:, :2], EOT)


def test_shuffled_labels_keep_the_pairs_and_flip_about_half():
    g = torch.Generator().manual_seed(0)
    n = 4000
    chosen = torch.randint(1, 9, (n, 3), generator=g)
    rejected = chosen + 10
    pairs = PreferencePairs(
        torch.zeros(n, 5, dtype=torch.long), chosen, rejected, torch.ones(n), torch.zeros(n), EOT
    )
    assert pairs.gold_agreement() == 1.0
    shuffled = pairs.shuffled_labels(g)
    flipped = (shuffled.chosen != chosen).any(-1)
    assert torch.equal(torch.where(flipped[:, None], shuffled.rejected, shuffled.chosen), chosen)
    assert torch.equal((shuffled.gold_chosen == 0), flipped)  # the gold travels with its response
    share = flipped.double().mean().item()
    assert abs(share - 0.5) < 4 * math.sqrt(0.25 / n)
    assert shuffled.gold_agreement() == pytest.approx(1 - share)


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda m: generate(m, torch.zeros(0, 5, dtype=torch.long), 3, EOT), "empty batch"),
        (lambda m: generate(m, torch.ones(2, 0, dtype=torch.long), 3, EOT), "zero-length prompt"),
        (lambda m: generate(m, torch.ones(2, 5, dtype=torch.long), 0, EOT), "length=0"),
        (
            lambda m: token_logprobs(
                m, torch.ones(2, 5, dtype=torch.long), torch.ones(2, 0, dtype=torch.long)
            ),
            "R >= 1",
        ),
        (
            lambda m: token_logprobs(
                m, torch.ones(2, 5, dtype=torch.long), torch.ones(3, 2, dtype=torch.long)
            ),
            "for 2 prompts",
        ),
    ],
)
def test_the_policy_entry_points_refuse_empty_input(call, match):
    with pytest.raises(ValueError, match=match):
        call(_model().float())
