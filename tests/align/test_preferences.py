"""Preference data: sampled comparisons, labelled pairs, summed log-probabilities, win rates."""

from __future__ import annotations

import itertools
import math
import re

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


# --- indexing, swapping, the coin, the exact error messages --------------------------------------


def _numbered_pairs(n: int = 5) -> PreferencePairs:
    """n pairs whose every field is distinct per row (row i holds values made from i)."""
    rows = torch.arange(n)
    return PreferencePairs(
        rows[:, None] * 10 + torch.arange(4),  # prompts (n, 4)
        100 + rows[:, None] * 10 + torch.arange(3),  # chosen (n, 3)
        200 + rows[:, None] * 10 + torch.arange(3),  # rejected (n, 3)
        rows.double(),
        -rows.double() - 1,
        EOT,
    )


def _same(a: PreferencePairs, b: PreferencePairs) -> bool:
    return a.eot == b.eot and all(
        torch.equal(getattr(a, f), getattr(b, f))
        for f in ("prompts", "chosen", "rejected", "gold_chosen", "gold_rejected")
    )


def test_indexing_selects_the_same_rows_of_every_field_and_keeps_eot():
    pairs = _numbered_pairs()
    mask = torch.tensor([True, False, True, True, False])
    for idx in (torch.tensor([3, 0, 3]), slice(1, 4), mask):
        got = pairs[idx]
        rows = torch.arange(5)[idx].tolist()
        assert len(got) == len(rows) and got.eot == EOT
        for k, i in enumerate(rows):  # the reference: one row at a time
            assert torch.equal(got.prompts[k], pairs.prompts[i])
            assert torch.equal(got.chosen[k], pairs.chosen[i])
            assert torch.equal(got.rejected[k], pairs.rejected[i])
            assert got.gold_chosen[k] == pairs.gold_chosen[i]
            assert got.gold_rejected[k] == pairs.gold_rejected[i]


def test_swapped_exchanges_only_the_marked_rows_and_keeps_prompts_and_eot():
    pairs = _numbered_pairs()
    swap = torch.tensor([True, False, False, True, False])  # lopsided
    got = pairs.swapped(swap)
    assert got.eot == EOT and torch.equal(got.prompts, pairs.prompts)
    for i in range(5):
        s = bool(swap[i])
        assert torch.equal(got.chosen[i], pairs.rejected[i] if s else pairs.chosen[i])
        assert torch.equal(got.rejected[i], pairs.chosen[i] if s else pairs.rejected[i])
        assert got.gold_chosen[i] == (pairs.gold_rejected[i] if s else pairs.gold_chosen[i])
        assert got.gold_rejected[i] == (pairs.gold_chosen[i] if s else pairs.gold_rejected[i])


def test_the_label_coin_follows_its_generator_and_is_exactly_fair(monkeypatch):
    pairs = _numbered_pairs(64)
    a = pairs.shuffled_labels(torch.Generator().manual_seed(3))
    torch.manual_seed(0)  # the global generator is not the one used
    b = pairs.shuffled_labels(torch.Generator().manual_seed(3))
    c = pairs.shuffled_labels(torch.Generator().manual_seed(4))
    assert _same(a, b) and not _same(a, c)
    # torch.rand draws from a grid of [0, 1); u < ½ holds on exactly half of any fine grid
    grid = torch.arange(64) / 64
    monkeypatch.setattr(torch, "rand", lambda n, generator=None: grid[:n])
    flipped = (pairs.shuffled_labels(torch.Generator()).chosen != pairs.chosen).any(-1)
    assert int(flipped.sum()) == 32 and flipped[:32].all()


def test_preference_pairs_keep_the_end_of_turn_token():
    cmp = _hand_made()
    assert preference_pairs(cmp, torch.tensor([[2, 0, 1], [0, 1, 2]]), EOT + 1).eot == EOT + 1


def test_a_single_row_and_two_responses_are_enough():
    model = _model().float()
    cmp = sample_comparisons(model, WORLD, 1, 2, torch.Generator().manual_seed(0))
    assert cmp.responses.shape[:2] == (1, 2)
    inst = WORLD.sample_instances(1, torch.Generator().manual_seed(1))
    assert sampled_gold(model, WORLD, inst, torch.Generator().manual_seed(2)).shape == (1,)
    prompts, responses = _responses()
    one = sequence_logps(_model(), prompts[:1], responses[:1], EOT)
    ref = sequence_logps_ref(_model(), prompts[:1], responses[:1], EOT)
    torch.testing.assert_close(one, ref, atol=1e-12, rtol=0)
    assert win_rate(torch.tensor([2.0]), torch.tensor([1.0])) == 1.0


def _exactly(message: str) -> str:
    return "^" + re.escape(message) + "$"


def test_error_messages_name_the_function_and_the_problem():
    model, g = _model().float(), torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match=_exactly(EMPTY.format("sample_comparisons"))):
        sample_comparisons(model, WORLD, 0, 4, g)
    with pytest.raises(ValueError, match=_exactly(
        "sample_comparisons: K=1; a comparison needs K >= 2 responses"
    )):  # fmt: skip
        sample_comparisons(model, WORLD, 4, 1, g)
    with pytest.raises(ValueError, match=_exactly(EMPTY.format("sampled_gold"))):
        sampled_gold(model, WORLD, WORLD.sample_instances(0, g), g)
    with pytest.raises(ValueError, match=_exactly(EMPTY.format("win_rate"))):
        win_rate(torch.zeros(0), torch.zeros(0))
    with pytest.raises(ValueError, match=_exactly(
        "win_rate: paired rewards need one shape; got (3,) and (2, 2)"
    )):  # fmt: skip
        win_rate(torch.zeros(3), torch.zeros(2, 2))
    with pytest.raises(ValueError, match=_exactly(
        "ranking has shape (2, 2); the comparisons need (2, 3)"
    )):  # fmt: skip
        preference_pairs(_hand_made(), torch.tensor([[0, 1], [1, 0]]), EOT)
    long = torch.ones(2, 3, dtype=torch.long)
    named = {"sequence_logps": sequence_logps, "sequence_logps_ref": sequence_logps_ref}
    for name, fn in named.items():
        bad = [
            (long[:0], long[:0], EMPTY.format(name)),
            (long, long[:, :0], f"{name}: zero-length response; {NEED_TOKENS}"),
            (long[:, :0], long, f"{name}: zero-length prompt; {NEED_TOKENS}"),
            (long, long[:1], f"{name}: {NEED_SAME_N}; got (2, 3) and (1, 3)"),
            (long[0], long[0], f"{name}: {NEED_SAME_N}; got (3,) and (3,)"),
            (long[:, 0], long, f"{name}: {NEED_SAME_N}; got (2,) and (2, 3)"),
            (long, long[:, 0], f"{name}: {NEED_SAME_N}; got (2, 3) and (2,)"),
        ]
        for prompts, responses, message in bad:
            with pytest.raises(ValueError, match=_exactly(message)):
                fn(_model(), prompts, responses, EOT)


EMPTY = "{}: empty batch (0 rows); need at least one"
NEED_TOKENS = "log π(y|x) needs P >= 1 and R >= 1 tokens"
NEED_SAME_N = "need prompts (N, P) and responses (N, R) with the same N"


class _CoinPolicy(torch.nn.Module):
    """A stand-in policy: at every position `<eot>` with probability ½, else one of the ten
    digits uniformly (so responses of every length occur)."""

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        logits = torch.full((*idx.shape, WORLD.vocab_size), -math.inf)
        d = WORLD.vocab.digit0
        logits[..., d : d + 10] = 0.0
        logits[..., EOT] = math.log(10)
        return logits


def test_sample_comparisons_stop_at_eot_follow_their_generator_and_gap_by_a_loop():
    n, K, R = 6, 4, WORLD.response_len  # K != R: the stacking axis is visible in the shape
    assert K != R
    torch.manual_seed(0)
    cmp = sample_comparisons(_CoinPolicy(), WORLD, n, K, torch.Generator().manual_seed(7))
    assert cmp.responses.shape == (n, K, R) and cmp.gold.shape == (n, K)
    assert cmp.distinct.shape == (n, math.comb(K, 2))
    for c, (a, b) in enumerate(itertools.combinations(range(K), 2)):
        differ = (cmp.responses[:, a] != cmp.responses[:, b]).any(-1)
        assert torch.equal(cmp.distinct[:, c], differ)
    ended = 0
    for x in range(n):
        for k in range(K):
            resp = cmp.responses[x, k].tolist()
            if EOT in resp:
                ended += 1
                assert all(t == WORLD.vocab.pad for t in resp[resp.index(EOT) + 1 :])
    assert 0 < ended < n * K
    torch.manual_seed(1)  # the global generator is not the one used
    again = sample_comparisons(_CoinPolicy(), WORLD, n, K, torch.Generator().manual_seed(7))
    assert torch.equal(again.prompts, cmp.prompts) and torch.equal(again.responses, cmp.responses)
    other = sample_comparisons(_CoinPolicy(), WORLD, n, K, torch.Generator().manual_seed(8))
    assert not torch.equal(other.prompts, cmp.prompts)
    # the gaps r*(y_a) − r*(y_b) of distinct pairs, a before b, by a plain loop
    want = [
        float(cmp.gold[x, a] - cmp.gold[x, b])
        for x in range(n)
        for c, (a, b) in enumerate(itertools.combinations(range(K), 2))
        if cmp.distinct[x, c]
    ]
    assert cmp.gold_gaps().tolist() == pytest.approx(want)
    assert any(abs(w) > 0 for w in want)


def test_sequence_logps_of_a_half_precision_model_come_in_fp32():
    """The log-softmax runs in fp32 whatever the model's dtype (fp64 stays fp64): summing bf16
    log-probabilities would lose about three significant digits."""
    model = fresh_model(PCFG, seed=2).eval()
    prompts, responses = _responses()
    with torch.no_grad():
        half = sequence_logps(model.to(torch.bfloat16), prompts, responses, EOT)
    assert half.dtype == torch.float32
    want = sequence_logps_ref(model.double(), prompts, responses, EOT)  # same bf16-rounded weights
    assert float((half.double() - want).abs().max()) < 0.1
