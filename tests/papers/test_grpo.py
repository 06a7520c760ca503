"""GRPO paper extras: every helper a claim compares with reports a difference when given
different things (a batch-normalised advantage, an unguarded one, a biased KL estimator, a GRPO
without the reference, a wrong gold reward)."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from repro.align.grpo import group_advantages, k1_kl, k3_kl
from repro.align.pretrain import PretrainConfig
from repro.align.reward import RewardModel
from repro.data.instructions import InstructionWorld
from repro.lab.claims import Context
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


def _right_and_wrong(n: int, seed: int):
    """n instances, their prompts, the gold responses, and the same with the first digit off
    by one (a wrong answer)."""
    inst = WORLD.sample_instances(n, torch.Generator().manual_seed(seed))
    prompts, right = WORLD.prompts(inst), WORLD.gold_responses(inst)
    wrong = right.clone()
    wrong[:, 0] = WORLD.vocab.digit0 + (right[:, 0] - WORLD.vocab.digit0 + 1) % 10
    return inst, prompts, right, wrong


def test_gold_from_tokens_matches_the_world_and_sees_a_wrong_answer():
    inst, prompts, right, wrong = _right_and_wrong(64, seed=0)
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


# --- the seeded numbers and the bookkeeping the claims rest on --------------------------------


def test_reward_groups_are_the_documented_mix():
    """64 groups of 5 in fp64: the first 8 flat (and only those), integer scores 0..3 with
    +25 outliers on about 10% of outputs, Gaussian noise of std 0.37 on odd groups only."""
    for seed in (0, 1):
        r = GRPO.reward_groups(seed)
        assert r.shape == (64, 5) and r.dtype == torch.float64
        flat = (r == r[:, :1]).all(1)
        assert flat[:8].all() and flat.sum() == 8
        outlier = r >= 24
        assert 0.05 < outlier.double().mean() < 0.15
        base = torch.where(outlier, r - 25, r)
        even, odd = base[8::2], base[9::2]
        assert torch.equal(even, even.round())
        assert set(even.flatten().tolist()) == {0.0, 1.0, 2.0, 3.0}
        noise = odd - odd.round()
        assert (noise != 0).all()
        assert odd.min() > -1.5 and odd.max() < 4.5  # 0..3 plus noise of std 0.37 (< 4σ)
        assert torch.equal(r, GRPO.reward_groups(seed))
    assert not torch.equal(GRPO.reward_groups(0), GRPO.reward_groups(1))


def test_categorical_pairs_cover_the_sizes_and_scales():
    """20 pairs over V ∈ {3, 4, 7, 16, 40}, logits scaled by 0.3, 1, 3, 6 in turn: the range of
    log π grows with the scale (range / scale of order 1–5 for a standard normal's range)."""
    pairs = GRPO.categorical_pairs(0)
    assert [len(a) for a, _ in pairs] == [3, 4, 7, 16, 40] * 4
    for logp, logp_ref in pairs:
        assert logp.dtype == torch.float64 and logp.shape == logp_ref.shape
        zero = torch.zeros((), dtype=torch.float64)
        torch.testing.assert_close(torch.logsumexp(logp, -1), zero)
        torch.testing.assert_close(torch.logsumexp(logp_ref, -1), zero)
        assert not torch.equal(logp, logp_ref)
    for i, scale in enumerate((0.3, 1.0, 3.0, 6.0)):
        ranges = [(a.max() - a.min()).item() / scale for a, _ in pairs[i::4]]
        assert 1.5 < sum(ranges) / len(ranges) < 5, (scale, ranges)
    assert GRPO.enumerate_estimators(0)["k1"]["pairs"] == 20


def test_counter_counts_calls_per_module_copies_and_gradients():
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(2, 4)
    counter = GRPO._Counter({"policy": a, "reference": b})
    twin = copy.deepcopy(a)  # made after the hooks: shares them, reported by its own id
    x = torch.randn(5, 3)
    a(x).sum().backward()
    a(x)
    with torch.no_grad():
        b(twin(x))
    report = counter.report()
    assert report["policy"] == {"forward_calls": 2, "parameters": 8, "trained": True}
    assert report["reference"] == {"forward_calls": 1, "parameters": 12, "trained": False}
    assert report["made inside the update"] == {"forward_calls": 1, "parameters": 8,
                                                "trained": False}  # fmt: skip
    a(x)  # the hooks are gone after the report
    assert counter.calls[id(a)] == 2


def test_gold_reward_model_scores_by_r_star_and_values_with_its_own_trunk():
    """Scores are r* (wrong answers score lower); per token it is the critic PPO copies: a
    value head on its own copy of the trunk (training the policy afterwards leaves it alone)."""
    from repro.models.gpt import GPT

    torch.manual_seed(0)
    lm = GPT(PretrainConfig().gpt_config()).eval()
    rm = GRPO.GoldRewardModel(lm, WORLD)
    inst, prompts, right, wrong = _right_and_wrong(16, seed=1)
    for resp in (right, wrong):
        torch.testing.assert_close(rm(torch.cat([prompts, resp], 1)), WORLD.gold_reward(inst, resp))
    tokens = torch.cat([prompts, right], 1)
    with torch.no_grad():
        rm.head.weight.normal_(generator=torch.Generator().manual_seed(2))
        before = rm(tokens, per_token=True)
        assert before.shape == tokens.shape
        peer = RewardModel(copy.deepcopy(rm.lm))
        peer.head.load_state_dict(rm.head.state_dict())
        torch.testing.assert_close(before, peer(tokens, per_token=True))
        lm.wte.weight.add_(1.0)  # the policy moves; the critic's trunk is a copy
        torch.testing.assert_close(rm(tokens, per_token=True), before)


def test_smooth_defaults_to_the_last_five_points():
    ys = [1.0, 4.0, 2.0, 8.0, 5.0, 7.0, 0.0, 3.0]
    want = [sum(ys[max(0, i - 4) : i + 1]) / len(ys[max(0, i - 4) : i + 1]) for i in range(8)]
    assert GRPO.smooth(ys) == pytest.approx(want)


def test_save_plots_draws_gold_by_sampled_responses(monkeypatch, tmp_path):
    hist = {
        "grpo": [{"gold": v} for v in (0.1, 0.3, 0.2)],
        "ppo": [{"gold": v} for v in (0.2, 0.1, 0.4)],
        "permuted": [{"gold": v} for v in (0.3, 0.3, 0.1)],
    }
    plots = []
    monkeypatch.setattr(GRPO, "save_line_plot", lambda path, series, *a, **k: plots.append(
        (path, series)))  # fmt: skip
    GRPO.save_plots({"lm": [{"responses_per_iteration": 64, "history": hist}]}, tmp_path)
    ((path, series),) = plots
    assert path == tmp_path / "gold_reward_vs_responses.svg"
    assert len(series) == 4
    lines = list(series.values())
    for (xs, ys), name in zip(lines[:3], ("grpo", "ppo", "permuted"), strict=True):
        assert xs == [64, 128, 192]
        assert ys == pytest.approx(GRPO.smooth([h["gold"] for h in hist[name]]))
    assert lines[3] == ([64, 128, 192], [pytest.approx(0.2)] * 3)  # mean of the first batches


def test_lm_reads_the_experiments_runs():
    runs = [{"eval": {}}, {"eval": {"sft": {}}}]
    ctx = Context(run_experiment=lambda cfg, ctx: {"lm": runs, "cpu_seconds": 1.0})
    assert GRPO._lm(ctx) == runs


def test_seeded_numbers_default_to_seed_0_and_repeat():
    assert torch.equal(GRPO.reward_groups(), GRPO.reward_groups(0))
    for (a, b), (c, d) in zip(GRPO.categorical_pairs(), GRPO.categorical_pairs(0), strict=True):
        assert torch.equal(a, c) and torch.equal(b, d)
    other = GRPO.categorical_pairs(1)
    assert not torch.equal(GRPO.categorical_pairs(0)[0][0], other[0][0])


def test_centring_error_sees_nonzero_advantages_in_flat_groups_and_groups_that_cancel():
    """Two wrong advantages with finite values: one centred in every group but giving flat
    groups ±1 (∞: the flat-group guard), one whose group sums are +1 and −1 in turn (1, not
    the batch sum 0)."""
    r = GRPO.reward_groups(0)
    flat = (r == r[:, :1]).all(1)

    def noisy_flat(x: torch.Tensor) -> torch.Tensor:
        adv = group_advantages(x).clone()
        adv[flat, 0], adv[flat, 1] = 1.0, -1.0
        return adv

    assert GRPO.centring_error(r, noisy_flat) == math.inf

    def cancelling(x: torch.Tensor) -> torch.Tensor:
        adv = group_advantages(x).clone()
        adv[~flat, 0] += torch.tensor([1.0, -1.0]).repeat(28).double()
        return adv

    assert GRPO.centring_error(r, cancelling) == pytest.approx(1.0)


def test_affine_error_is_the_change_under_a_times_r_plus_b():
    """For Â(x) = x the error is max |(a − 1)·r + b| over the maps (closed form)."""
    r = GRPO.reward_groups(2)
    for a, b in ((2.0, 3.0), (0.5, -7.0)):
        want = ((a - 1) * r + b).abs().max().item()
        assert GRPO.affine_error(r, [(a, b)], advantages=lambda x: x) == pytest.approx(want)
