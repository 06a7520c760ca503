"""GRPO paper extras: every helper a claim compares with reports a difference when given
different things (a batch-normalised advantage, an unguarded one, a biased KL estimator, a GRPO
without the reference, a wrong gold reward)."""

from __future__ import annotations

import math

import pytest
import torch

from repro.align.grpo import group_advantages, k1_kl, k3_kl
from repro.align.pretrain import PretrainConfig
from repro.data.instructions import InstructionWorld
from repro.lab.library import Library

GRPO = Library().get("grpo").module()
WORLD = InstructionWorld(PretrainConfig().world)


def batch_normalised(r: torch.Tensor) -> torch.Tensor:
    """A wrong advantage: one mean and std over the whole batch, not per group."""
    return (r - r.mean()) / r.std(correction=0)


def unguarded(r: torch.Tensor) -> torch.Tensor:
    """A wrong advantage: no guard for flat groups (0/0 = NaN)."""
    return (r - r.mean(1, keepdim=True)) / r.std(1, correction=0, keepdim=True)


def test_centring_error_sees_a_batch_wide_baseline_and_a_missing_guard():
    r = GRPO.reward_groups(0)
    assert GRPO.centring_error(r) < 1e-12
    assert GRPO.centring_error(r, batch_normalised) > 0.1
    assert GRPO.centring_error(r, unguarded) == math.inf
    assert GRPO.reward_groups(0)[:8].eq(GRPO.reward_groups(0)[:8, :1]).all()  # flat groups fed


def test_affine_error_sees_a_negative_scale_and_an_unnormalised_advantage():
    r = GRPO.reward_groups(1)
    assert GRPO.affine_error(r) < 1e-9
    assert GRPO.affine_error(r, [(-1.0, 0.0)]) > 1
    assert GRPO.affine_error(r, advantages=lambda x: x - x.mean(1, keepdim=True)) > 1


def k2(logp: torch.Tensor, logp_ref: torch.Tensor) -> torch.Tensor:
    """½(log π/π_ref)²: Schulman's low-variance but biased estimator."""
    return 0.5 * (logp - logp_ref) ** 2


def test_estimator_stats_sees_a_biased_estimator_and_a_negative_one():
    pairs = GRPO.categorical_pairs(0)
    k3, k1 = GRPO.estimator_stats(k3_kl, pairs), GRPO.estimator_stats(k1_kl, pairs)
    assert k3["max_error"] < 1e-12 and k1["max_error"] < 1e-12
    assert GRPO.estimator_stats(k2, pairs)["max_error"] > 0.1
    # the k3 of the wrong direction, π/π_ref − log(π/π_ref) − 1, is biased for KL(π‖π_ref)
    assert GRPO.estimator_stats(lambda a, b: k3_kl(b, a), pairs)["max_error"] > 0.1
    assert k3["min"] >= 0 > k1["min"]


def test_models_dropped_reports_what_is_wrong():
    def m(trained: bool) -> dict:
        return {"forward_calls": 1, "parameters": 10, "trained": trained}

    ppo = {"policy": m(True), "reference": m(False), "reward model": m(False), "value": m(True)}
    grpo = {"policy": m(True), "reference": m(False), "reward model": m(False)}
    assert GRPO.models_dropped(ppo, grpo) == "4 → 3"
    no_ref = {k: v for k, v in grpo.items() if k != "reference"}
    assert GRPO.models_dropped(ppo, no_ref) == "GRPO runs no reference model"
    assert GRPO.models_dropped(ppo, ppo) == "GRPO drops no trained model"
    frozen_extra = ppo | {"value": m(False)}
    assert GRPO.models_dropped(frozen_extra, grpo) == "GRPO drops no trained model"


def test_one_update_finds_the_value_model_inside_ppo():
    ppo, grpo = GRPO.one_update("ppo", 0), GRPO.one_update("grpo", 0)
    assert set(grpo) == {"policy", "reference", "reward model"}
    assert set(ppo) == set(grpo) | {"made inside the update"}
    value = ppo["made inside the update"]
    assert value["trained"] and value["parameters"] == ppo["reward model"]["parameters"]
    assert not grpo["reference"]["trained"] and grpo["policy"]["trained"]


def test_gold_from_tokens_matches_the_world_and_sees_a_wrong_answer():
    g = torch.Generator().manual_seed(0)
    inst = WORLD.sample_instances(64, g)
    prompts, right = WORLD.prompts(inst), WORLD.gold_responses(inst)
    wrong = right.clone()
    wrong[:, 0] = WORLD.vocab.digit0 + (right[:, 0] - WORLD.vocab.digit0 + 1) % 10
    for resp in (right, wrong):
        got = GRPO.gold_from_tokens(WORLD, torch.cat([prompts, resp], 1))
        torch.testing.assert_close(got, WORLD.gold_reward(inst, resp))
    gold_right = GRPO.gold_from_tokens(WORLD, torch.cat([prompts, right], 1))
    gold_wrong = GRPO.gold_from_tokens(WORLD, torch.cat([prompts, wrong], 1))
    assert (gold_right > gold_wrong).all()


def test_gain_and_smooth():
    e = {"sft": {"gold": 1.0}, "a": {"gold": 1.5}, "b": {"gold": 0.75}}
    assert GRPO.gain(e, "a") == pytest.approx(0.5)
    assert GRPO.gain(e, "b") == pytest.approx(-0.25)
    assert GRPO.gain(e, "sft") == 0
    assert GRPO.smooth([1.0, 3.0, 5.0, 7.0], k=2) == [1.0, 2.0, 4.0, 6.0]


def test_permuted_rewards_lose_the_group_signal():
    """The control's advantage is uncorrelated with the response's own reward."""
    g = torch.Generator().manual_seed(0)
    r = torch.randint(0, 4, (256, 8), generator=g).double()
    own = group_advantages(r)
    shuffled = r.flatten()[torch.randperm(r.numel(), generator=g)].view_as(r)
    perm = group_advantages(shuffled)
    corr = lambda a, b: torch.corrcoef(torch.stack([a.flatten(), b.flatten()]))[0, 1].item()  # noqa: E731
    assert corr(own, r) > 0.7
    assert abs(corr(perm, r)) < 0.1
