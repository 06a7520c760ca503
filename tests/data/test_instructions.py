"""The instruction world: answers, formats, the gold reward, labelers and their exact agreement."""

from __future__ import annotations

import math

import pytest
import torch

from repro.data.instructions import (
    FAMILIES,
    InstructionWorld,
    WorldConfig,
    answers_ref,
    bayes_ceiling,
    calibrate_temperature,
    labeler_agreement,
)

WORLD = InstructionWorld()


@pytest.mark.parametrize("n_args", [1, 2, 3])
def test_answers_match_the_reference(n_args: int) -> None:
    world = InstructionWorld(WorldConfig(n_args=n_args))
    inst = world.sample_instances(400, torch.Generator().manual_seed(0))
    for i in range(len(inst)):
        ref = answers_ref(int(inst.family[i]), inst.digits[i].tolist())
        n = int(inst.answer_len[i])
        assert inst.answer[i, :n].tolist() == ref
        assert (inst.answer[i, n:] == -1).all()


def test_families_are_chosen_and_checked() -> None:
    g = torch.Generator().manual_seed(1)
    inst = WORLD.sample_instances(200, g, families=("sort", "max"))
    assert {FAMILIES[int(f)] for f in inst.family} == {"sort", "max"}
    with pytest.raises(ValueError, match="unknown task families"):
        WORLD.sample_instances(5, g, families=("divide",))


def test_pretraining_text_has_no_assistant_format() -> None:
    text = WORLD.pretraining_batch(64, 4, torch.Generator().manual_seed(2))
    assert text.shape == (64, 4 * WORLD.slot_len + 1)
    v = WORLD.vocab
    for special in (v.user, v.assistant, v.eot):
        assert not (text == special).any()
    # every task segment starts on a slot boundary and ends with `;` inside its slot
    for row in text[:8]:
        for k in range(4):
            seg = row[k * WORLD.slot_len : (k + 1) * WORLD.slot_len].tolist()
            if seg[0] < v.first_filler:
                assert v.id[";"] in seg
    # filler includes the forbidden token, so a pretrained model can emit it
    assert (text == v.bad).any()


def test_heldout_text_is_fixed() -> None:
    assert torch.equal(WORLD.heldout_text(8, 2), WORLD.heldout_text(8, 2))


def test_gold_reward_orders_the_cases() -> None:
    g = torch.Generator().manual_seed(3)
    inst = WORLD.sample_instances(64, g, families=("copy",))
    v, c = WORLD.vocab, WORLD.cfg
    gold = WORLD.gold_responses(inst)
    r_gold = WORLD.gold_reward(inst, gold)
    top = c.w_correct + c.w_digits + c.w_stop
    assert torch.allclose(r_gold, torch.full((64,), top))
    no_stop = gold.clone()
    no_stop[no_stop == v.eot] = v.id[";"]
    wrong = gold.clone()
    wrong[:, 0] = v.digit0 + (gold[:, 0] - v.digit0 + 1) % 10
    bad = gold.clone()
    bad[:, 0] = v.bad
    j = WORLD.judge(inst, no_stop)
    assert not j["stops"].any() and not j["correct"].any()
    half = c.w_digits * (1 - 1 / WORLD.cfg.n_args)  # copy: one of n digits wrong
    assert torch.allclose(WORLD.gold_reward(inst, wrong), torch.full((64,), c.w_stop + half))
    expected_bad = c.w_stop + half - c.w_forbidden
    assert torch.allclose(WORLD.gold_reward(inst, bad), torch.full((64,), expected_bad))
    assert WORLD.judge(inst, bad)["forbidden"].all()


def test_demonstrations_and_their_mask() -> None:
    g = torch.Generator().manual_seed(4)
    inst = WORLD.sample_instances(300, g)
    tokens, mask = WORLD.demonstrations(inst)
    P = WORLD.prompt_len
    assert torch.equal(tokens[:, :P], WORLD.prompts(inst))
    assert not mask[:, :P].any()
    # the loss covers the answer and the <eot>, nothing after
    n_resp = mask[:, P:].sum(1)
    assert torch.equal(n_resp, inst.answer_len + 1)
    top = WORLD.cfg.w_correct + WORLD.cfg.w_digits + WORLD.cfg.w_stop
    assert (WORLD.gold_reward(inst, tokens[:, P:]) == top).all()
    noisy, _ = WORLD.demonstrations(inst, torch.Generator().manual_seed(5), corrupt=0.5)
    share_bad = (WORLD.gold_reward(inst, noisy[:, P:]) < top).float().mean().item()
    assert 0.4 < share_bad < 0.6


def test_plackett_luce_pair_is_bradley_terry() -> None:
    """For K = 2 the labeler prefers y1 with probability σ((r1 − r2)/τ)."""
    gold = torch.tensor([[1.0, 0.0]]).repeat(20_000, 1)
    ranks = WORLD.rank(gold, torch.Generator().manual_seed(6))
    p_hat = (ranks[:, 0] == 0).double().mean().item()
    p = WORLD.prefer_prob(torch.tensor(1.0), torch.tensor(0.0)).item()
    assert abs(p_hat - p) < 4 * math.sqrt(p * (1 - p) / 20_000)


def test_agreement_is_exact() -> None:
    """E[p² + (1 − p)²] against two simulated labelers on the same pairs."""
    g = torch.Generator().manual_seed(7)
    gold = torch.randint(0, 4, (50_000, 2), generator=g).double()
    a = WORLD.rank(gold, g)[:, 0]
    b = WORLD.rank(gold, g)[:, 0]
    p = WORLD.prefer_prob(gold[:, 0], gold[:, 1])
    simulated = (a == b).double().mean().item()
    assert abs(simulated - labeler_agreement(p)) < 0.01
    assert labeler_agreement(p) <= bayes_ceiling(p)


def test_calibrated_temperature_hits_the_target() -> None:
    delta = torch.tensor([0.25, 1.0, 2.0, 3.0])
    tau = calibrate_temperature(delta, 0.75)
    assert abs(labeler_agreement(torch.sigmoid(delta / tau)) - 0.75) < 1e-6


@pytest.mark.parametrize("n_args", [2, 3])
def test_raw_segments_match_the_reference(n_args: int) -> None:
    world = InstructionWorld(WorldConfig(n_args=n_args))
    g = torch.Generator().manual_seed(8)
    inst = world.sample_instances(90, g)
    fmt = torch.arange(90) % 3
    fast = world.raw_segments(inst, fmt)
    for i in range(90):
        ref = world.raw_segment(
            int(inst.family[i]),
            inst.digits[i].tolist(),
            inst.answer[i, : inst.answer_len[i]].tolist(),
            i % 3,
        )
        assert fast[i].tolist() == ref


def test_filler_follows_the_markov_source() -> None:
    f = WORLD.filler(100_000, 2, torch.Generator().manual_seed(9)) - WORLD.vocab.first_filler
    V = WORLD.cfg.n_filler
    counts = torch.zeros(V, V, dtype=torch.float64)
    counts.index_put_((f[:, 0], f[:, 1]), torch.ones(len(f), dtype=torch.float64), accumulate=True)
    empirical = counts / counts.sum(1, keepdim=True)
    assert (empirical - WORLD.markov.transition).abs().max() < 0.02


def _plackett_luce(s: list[float], order: tuple[int, ...]) -> float:
    """P(ranking = order) = Π_i exp(s_{order_i}) / Σ_{j ≥ i} exp(s_{order_j})."""
    p = 1.0
    for i in range(len(order)):
        p *= math.exp(s[order[i]]) / sum(math.exp(s[j]) for j in order[i:])
    return p


def test_plackett_luce_rankings_of_four_follow_the_model() -> None:
    """K = 4 as InstructGPT ranks, lopsided scores, every one of the 24 orders against its
    Plackett–Luce probability: a flipped Gumbel sign (invisible at K = 2) or a ranking read
    worst-first fails here."""
    import itertools

    tau = WORLD.cfg.label_temperature
    s = [2.0, -1.0, 0.5, 0.0]  # r*/τ: no symmetry between the top and the bottom
    n = 40_000
    gold = (torch.tensor(s, dtype=torch.float64) * tau).repeat(n, 1)
    ranks = WORLD.rank(gold, torch.Generator().manual_seed(8))
    assert ranks.shape == (n, 4)
    assert (ranks.sort(1).values == torch.arange(4)).all()  # each a permutation
    counts = {}
    for row in map(tuple, ranks.tolist()):
        counts[row] = counts.get(row, 0) + 1
    for order in itertools.permutations(range(4)):
        p = _plackett_luce(s, order)
        p_hat = counts.get(order, 0) / n
        assert abs(p_hat - p) < 4.5 * math.sqrt(p * (1 - p) / n) + 1e-4, order
    # the top choice is the softmax of the scores; the last is not the softmax of −scores
    top = torch.bincount(ranks[:, 0], minlength=4).double() / n
    torch.testing.assert_close(top, torch.tensor(s).double().softmax(0), atol=0.012, rtol=0)


def test_bayes_ceiling_and_agreement_on_lopsided_pairs() -> None:
    p = torch.tensor([0.9, 0.2, 0.5, 0.65], dtype=torch.float64)
    assert bayes_ceiling(p) == pytest.approx((0.9 + 0.8 + 0.5 + 0.65) / 4)
    assert labeler_agreement(p) == pytest.approx(
        (0.81 + 0.01 + 0.04 + 0.64 + 0.25 + 0.25 + 0.4225 + 0.1225) / 4
    )
    pa = WORLD.prefer_prob(torch.tensor(2.0), torch.tensor(0.5)).item()
    assert pa == pytest.approx(1 / (1 + math.exp(-1.5 / WORLD.cfg.label_temperature)))
    assert WORLD.prefer_prob(torch.tensor(0.5), torch.tensor(2.0)).item() == pytest.approx(1 - pa)


@pytest.mark.parametrize("target", [0.6, 0.9])
def test_calibrated_temperature_for_other_targets_and_brackets(target: float) -> None:
    delta = torch.tensor([0.5, 1.5, 4.0])
    tau = calibrate_temperature(delta, target, lo=1e-2, hi=1e2)
    assert abs(labeler_agreement(torch.sigmoid(delta.double() / tau)) - target) < 1e-6
    assert 1e-2 < tau < 1e2
