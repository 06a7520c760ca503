"""GRPO paper extras: every helper a claim compares with reports a difference when given
different things (a batch-normalised advantage, an unguarded one, a biased KL estimator, a GRPO
without the reference, a wrong gold reward)."""

from __future__ import annotations

import copy
import math
from types import SimpleNamespace

import pytest
import torch

from repro.align.grpo import group_advantages, k1_kl, k3_kl
from repro.align.pretrain import PretrainConfig
from repro.align.reward import RewardModel
from repro.data.instructions import InstructionWorld
from repro.lab.claims import Context
from repro.lab.library import Library
from repro.lab.threads import torch_threads

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


def test_save_plots_draws_gold_by_sampled_responses(line_plots, tmp_path):
    hist = {
        "grpo": [{"gold": v} for v in (0.1, 0.3, 0.2)],
        "ppo": [{"gold": v} for v in (0.2, 0.1, 0.4)],
        "permuted": [{"gold": v} for v in (0.3, 0.3, 0.1)],
    }
    plots = line_plots(GRPO)  # bound to save_line_plot's signature: a dropped label fails
    GRPO.save_plots({"lm": [{"responses_per_iteration": 64, "history": hist}]}, tmp_path)
    ((path, series, _),) = plots
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


# --- the derived claims: what each helper reports -----------------------------------------------


def _advantages_by_hand(r: torch.Tensor) -> torch.Tensor:
    """(r − mean) / population std in each row by Python loops; 0 for a row of equal values."""
    rows = []
    for row in r.tolist():
        mean = sum(row) / len(row)
        std = math.sqrt(sum((x - mean) ** 2 for x in row) / len(row))
        rows.append([0.0 if std == 0 else (x - mean) / std for x in row])
    return torch.tensor(rows, dtype=torch.float64)


def test_advantages_sum_zero_reports_the_centring_and_the_groups(monkeypatch) -> None:
    """Seeded by the context: 64 groups of 5, 8 flat, and the advantages of every group with a
    signal have a population std of 1 (a claim that measured the std with Bessel's correction
    or over the flat groups would report √(5/4) − 1 or 1)."""
    out = GRPO.advantages_sum_zero(Context(seed=3))
    r = GRPO.reward_groups(3)
    assert out.value == GRPO.centring_error(r) and out.value < 1e-12
    d = out.details
    assert (d["groups"], d["group_size"], d["equal_groups"]) == (64, 5, 8)
    assert d["std_of_advantages_max_error"] < 1e-12
    real = GRPO.group_advantages
    monkeypatch.setattr(GRPO, "group_advantages", lambda x: 1.5 * real(x))
    assert GRPO.advantages_sum_zero(Context(seed=3)).details[
        "std_of_advantages_max_error"
    ] == pytest.approx(0.5)
    # per group, not pooled: std √1.5 in odd groups and √0.5 in even ones pool to 1 over the
    # 28 + 28 groups with a signal, but the worst group is 1 − √0.5 off
    scale = torch.where(torch.arange(64) % 2 == 1, 1.5**0.5, 0.5**0.5).double()[:, None]
    monkeypatch.setattr(GRPO, "group_advantages", lambda x: scale * real(x))
    assert GRPO.advantages_sum_zero(Context(seed=3)).details[
        "std_of_advantages_max_error"
    ] == pytest.approx(1 - 0.5**0.5)
    monkeypatch.setattr(GRPO, "group_advantages", real)
    seeds = []
    monkeypatch.setattr(GRPO, "reward_groups", lambda s: seeds.append(s) or r[8:20, :3])
    d = GRPO.advantages_sum_zero(Context(seed=9)).details
    assert seeds == [9] and (d["groups"], d["group_size"], d["equal_groups"]) == (12, 3, 0)


def test_advantages_affine_invariant_reports_the_error_and_the_sign_flip(monkeypatch) -> None:
    """Under a = −1 every advantage flips sign: the detail is 2·max |Â| (by hand)."""
    out = GRPO.advantages_affine_invariant(Context(seed=4))
    r = GRPO.reward_groups(4)
    assert out.value == GRPO.affine_error(r) and out.value < 1e-9
    flip = 2 * _advantages_by_hand(r).abs().max().item()
    assert out.details == {"a=-1, b=0": pytest.approx(flip, rel=1e-9)}
    seeds = []
    monkeypatch.setattr(GRPO, "reward_groups", lambda s: seeds.append(s) or r)
    GRPO.advantages_affine_invariant(Context(seed=11))
    assert seeds == [11]


def test_estimator_claims_report_k3_and_k1_by_enumeration() -> None:
    """For each of the context's categorical pairs: Σ π·k3 − KL and the smallest k3 and k1 of
    any outcome, written out (k3 = ρ − log ρ − 1 with ρ = π_ref/π, k1 = log π/π_ref)."""
    pairs = GRPO.categorical_pairs(5)
    want = {}
    for name in ("k3", "k1"):
        errors, mins = [], []
        for logp, logp_ref in pairs:
            p, log_ratio = logp.exp(), logp_ref - logp
            f = log_ratio.exp() - log_ratio - 1 if name == "k3" else -log_ratio
            errors.append(abs((p * f).sum().item() - (p * -log_ratio).sum().item()))
            mins.append(f.min().item())
        want[name] = {"max_error": max(errors), "min": min(mins), "pairs": 20}
    ctx = Context(seed=5)
    k3u, k3n, k1n = GRPO.k3_unbiased(ctx), GRPO.k3_nonnegative(ctx), GRPO.k1_can_be_negative(ctx)
    for out in (k3u, k3n, k1n):
        assert set(out.details) == {"k3", "k1"}
        for name in ("k3", "k1"):
            got = out.details[name]
            assert got["pairs"] == 20 and got["max_error"] < 1e-12
            assert got["min"] == pytest.approx(want[name]["min"], abs=1e-12)
    assert k3u.value == k3u.details["k3"]["max_error"]
    assert k3n.value == pytest.approx(want["k3"]["min"], abs=1e-12) and k3n.value >= 0
    assert k1n.value == pytest.approx(want["k1"]["min"], abs=1e-12) and k1n.value < -1
    assert k1n.value != GRPO.k1_can_be_negative(Context(seed=6)).value


def _model(calls: int, params: int, trained: bool) -> dict:
    return {"forward_calls": calls, "parameters": params, "trained": trained}


def test_update_claims_count_the_models_of_one_update(monkeypatch) -> None:
    """On made-up reports: PPO runs a policy, a reference, a reward model and two trained extra
    models; GRPO the first three. Dropped models in sorted order; trained parameters 100 / 220;
    forward calls of every model but the policy."""
    ppo = {
        "policy": _model(3, 100, True),
        "reference": _model(2, 100, False),
        "reward model": _model(1, 120, False),
        "value": _model(4, 70, True),
        "made inside the update": _model(6, 50, True),
    }
    grpo = {
        "policy": _model(5, 100, True),
        "reference": _model(2, 100, False),
        "reward model": _model(1, 120, False),
    }
    asked = []
    monkeypatch.setattr(
        GRPO, "one_update", lambda algo, seed: asked.append((algo, seed)) or {"ppo": ppo,
                                                                              "grpo": grpo}[algo]
    )  # fmt: skip
    ctx = Context(seed=7)
    dropped = GRPO.drops_value_model(ctx)
    assert dropped.value == "5 → 3"
    assert dropped.details == {"ppo": ppo, "grpo": grpo,
                               "dropped": ["made inside the update", "value"]}  # fmt: skip
    ratio = GRPO.trained_parameters_ratio(ctx)
    assert asked == [("ppo", 7), ("grpo", 7)] * 2
    assert ratio.value == pytest.approx(100 / 220)
    assert ratio.details == {
        "trained_ppo": 220,
        "trained_grpo": 100,
        "forward_calls_other_than_policy_ppo": 2 + 1 + 4 + 6,
        "forward_calls_other_than_policy_grpo": 3,
    }


# --- the measured claims on made-up evaluations ----------------------------------------------


def _evals(sft: float, grpo: float, ppo: float, permuted: float, kl: dict | None = None) -> dict:
    """One seed's evaluations: gold rewards, and the KLs and other fields made distinct."""
    kl = {"grpo": 1.0, "ppo": 2.0, "permuted": 0.5, "beta0": 4.0} | (kl or {})
    return {
        "sft": {"gold": sft, "gold_t0.8": sft + 0.05, "gold_greedy": sft + 0.07, "accuracy": 0.1},
        "grpo": {"gold": grpo, "gold_greedy": grpo + 0.02, "accuracy": 0.4,
                 "kl_full": kl["grpo"]},
        "ppo": {"gold": ppo, "gold_greedy": ppo + 0.03, "kl_full": kl["ppo"]},
        "permuted": {"gold": permuted, "kl_full": kl["permuted"]},
        "grpo_beta0": {"kl_full": kl["beta0"]},
    }  # fmt: skip


def _lm_ctx(*evals: dict) -> Context:
    runs = [
        {"eval": e, "responses_per_iteration": 64, "history": {"grpo": [{}] * (3 + i)}}
        for i, e in enumerate(evals)
    ]
    return Context(_metrics={"lm": runs, "cpu_seconds": 1.0})


def test_grpo_beats_sft_is_the_smallest_gain_over_seeds() -> None:
    a = _evals(0.2, 0.5, 0.6, 0.2)
    b = _evals(0.3, 0.4, 0.45, 0.25)
    out = GRPO.grpo_beats_sft(_lm_ctx(a, b))
    assert out.value == pytest.approx(0.1)
    assert out.details == {
        "gold_sft": [0.2, 0.3],
        "gold_grpo": [0.5, 0.4],
        "gold_ppo": [0.6, 0.45],
        "accuracy_sft": [0.1, 0.1],
        "accuracy_grpo": [0.4, 0.4],
    }


def test_kl_claims_read_the_largest_kl_and_ratio_over_seeds() -> None:
    a = _evals(0.2, 0.5, 0.6, 0.2, {"grpo": 1.5, "ppo": 2.5, "permuted": 0.4, "beta0": 3.0})
    b = _evals(0.3, 0.4, 0.45, 0.25, {"grpo": 1.2, "ppo": 2.0, "permuted": 0.3, "beta0": 1.6})
    ctx = _lm_ctx(a, b)
    kl = GRPO.grpo_kl_bounded(ctx)
    assert kl.value == 1.5
    assert kl.details == {"kl_ppo": [2.5, 2.0], "kl_grpo_beta0": [3.0, 1.6],
                          "kl_permuted": [0.4, 0.3]}  # fmt: skip
    held = GRPO.kl_term_holds_policy(ctx)
    assert held.value == pytest.approx(0.75)  # max(1.5 / 3, 1.2 / 1.6)
    assert held.details == {"per_seed": [pytest.approx(0.5), pytest.approx(0.75)]}
    zero = _evals(0.2, 0.5, 0.6, 0.2, {"grpo": 3e-9, "beta0": 0.0})  # β = 0 did not move
    # the KL without the term is floored at 1e-9: 3e-9 / 1e-9
    assert GRPO.kl_term_holds_policy(_lm_ctx(zero)).value == pytest.approx(3.0)


def test_grpo_vs_ppo_is_the_smallest_share_of_ppos_gain() -> None:
    a = _evals(0.2, 0.5, 0.6, 0.2)  # 0.3 / 0.4
    b = _evals(0.3, 0.4, 0.45, 0.25)  # 0.1 / 0.15
    out = GRPO.grpo_vs_ppo(_lm_ctx(a, b))
    assert out.value == pytest.approx(2 / 3)
    assert out.details == {
        "per_seed": [pytest.approx(0.75), pytest.approx(2 / 3)],
        "gain_grpo": [pytest.approx(0.3), pytest.approx(0.1)],
        "gain_ppo": [pytest.approx(0.4), pytest.approx(0.15)],
        "responses_per_run": [64 * 3, 64 * 4],
    }
    no_ppo_gain = _evals(0.3, 0.4, 0.3, 0.25)  # PPO gains exactly 0: share 0, no division
    assert GRPO.grpo_vs_ppo(_lm_ctx(a, no_ppo_gain)).details["per_seed"][1] == 0.0
    ppo_loses = _evals(0.3, 0.4, 0.2, 0.25)
    assert GRPO.grpo_vs_ppo(_lm_ctx(a, ppo_loses)).value == 0.0


def test_permuted_and_temperature_claims() -> None:
    a = _evals(0.2, 0.5, 0.6, 0.23, {"permuted": 0.4})
    b = _evals(0.3, 0.4, 0.45, 0.25, {"permuted": 0.3})
    ctx = _lm_ctx(a, b)
    perm = GRPO.permuted_rewards_no_gain(ctx)
    assert perm.value == pytest.approx(0.03)  # max(0.03, −0.05)
    assert perm.details == {"per_seed": [pytest.approx(0.03), pytest.approx(-0.05)],
                            "kl_permuted": [0.4, 0.3]}  # fmt: skip
    temp = GRPO.grpo_beyond_temperature(ctx)
    assert temp.value == pytest.approx(0.05)  # min(0.5 − 0.25, 0.4 − 0.35)
    assert temp.details == {
        "gold_sft_t0.8": [pytest.approx(0.25), pytest.approx(0.35)],
        "gold_sft_greedy": [pytest.approx(0.27), pytest.approx(0.37)],
        "gold_grpo_greedy": [pytest.approx(0.52), pytest.approx(0.42)],
        "gold_ppo_greedy": [pytest.approx(0.63), pytest.approx(0.48)],
        "gold_permuted": [0.23, 0.25],
    }


@pytest.mark.parametrize("algorithm", ["grpo", "ppo"])
def test_one_update_is_one_iteration_of_four_groups_of_eight(monkeypatch, algorithm) -> None:
    """`one_update` hands the algorithm one iteration at β = 0.04 on Q·G = 4·8 responses in
    minibatches of 16, the seed's reference GPT (eval mode), a policy copied from it, a reward
    model on the same trunk and 64 seeded prompts; the report counts what the update ran."""
    from repro.align.grpo import GRPOConfig
    from repro.align.ppo import PPOConfig
    from repro.lab.counting import count_parameters
    from repro.models.gpt import GPT

    seed, seen = 13, {}

    def fake_grpo(policy, reference, reward_fn, world, cfg, pool):
        seen.update(policy=policy, reference=reference, cfg=cfg, pool=pool)
        idx, resp = torch.tensor([5, 2]), pool[:2, :3]
        seen["scores"] = (idx, resp, reward_fn(idx, resp))
        policy(pool[:2]).sum().backward()
        reference(pool[:2]), reference(pool[:1])

    def fake_ppo(policy, reference, rm, world, cfg, pool):
        seen.update(policy=policy, reference=reference, cfg=cfg, pool=pool, rm=rm)
        rm(pool[:2])
        value = copy.deepcopy(rm)  # the critic PPO makes: hooked through the copy
        value(pool[:2]).sum().backward()
        policy(pool[:2]).sum().backward()
        reference(pool[:2]), reference(pool[:1])

    monkeypatch.setattr(GRPO, "grpo", fake_grpo)
    monkeypatch.setattr(GRPO, "ppo", fake_ppo)
    report = GRPO.one_update.__wrapped__(algorithm, seed)
    pcfg = PretrainConfig()
    torch.manual_seed(seed)
    want_ref = GPT(pcfg.gpt_config())
    ref, policy = seen["reference"], seen["policy"]
    assert not ref.training and policy is not ref
    for model in (ref, policy):
        pairs = zip(model.state_dict().values(), want_ref.state_dict().values(), strict=True)
        assert all(torch.equal(a, b) for a, b in pairs)
    inst = WORLD.sample_instances(64, torch.Generator().manual_seed(seed))
    assert torch.equal(seen["pool"], WORLD.prompts(inst))
    n_rm = count_parameters(RewardModel.from_lm(want_ref))
    n_lm = count_parameters(want_ref)
    if algorithm == "grpo":
        assert seen["cfg"] == GRPOConfig(
            beta=0.04, iterations=1, questions=4, group_size=8, minibatch=16, seed=seed
        )
        idx, resp, scores = seen["scores"]
        rm = RewardModel.from_lm(want_ref).eval()
        with torch.no_grad():
            want = rm(torch.cat([seen["pool"][idx], resp], 1))
        torch.testing.assert_close(scores.detach(), want)
        assert set(report) == {"policy", "reference", "reward model"}
    else:
        assert seen["cfg"] == PPOConfig(beta=0.04, iterations=1, batch=32, minibatch=16, seed=seed)
        assert not seen["rm"].training
        assert report["made inside the update"] == {
            "forward_calls": 1, "parameters": n_rm, "trained": True
        }  # fmt: skip
    assert report["policy"] == {"forward_calls": 1, "parameters": n_lm, "trained": True}
    assert report["reference"] == {"forward_calls": 2, "parameters": n_lm, "trained": False}
    assert report["reward model"] == {"forward_calls": 1, "parameters": n_rm, "trained": False}


def _same_instances(a, b) -> bool:
    return all(torch.equal(getattr(a, f), getattr(b, f))
               for f in ("family", "digits", "answer", "answer_len"))  # fmt: skip


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def test_run_seed_fine_tunes_a_copy_then_trains_each_run_from_its_own_copy(monkeypatch) -> None:
    """SFT on a copy of the cached base with the config's recipe; then GRPO (β), GRPO with
    rewards permuted by a generator seeded s + 5, GRPO at β = 0 and PPO (a gold reward model,
    Q·G prompts a batch), each from a fresh copy of the SFT model with it as the reference, on
    2,048 prompts seeded s, rewarded and scored by r*; every policy evaluated on the seed's
    held-out instances against the SFT model."""
    from repro.align.grpo import GRPOConfig
    from repro.align.ppo import PPOConfig
    from repro.align.sft import SFTConfig, eval_instances
    from repro.models.gpt import GPT

    torch.manual_seed(0)
    base = GPT(PretrainConfig().gpt_config())
    base_before = copy.deepcopy(base)
    calls, evals, progress = [], [], []
    monkeypatch.setattr(GRPO, "pretrained_model", lambda p: calls.append(("base", p)) or base)

    def fake_sft(model, world, cfg):
        assert world.cfg == WORLD.cfg
        calls.append(("sft", model, cfg))
        with torch.no_grad():
            model.wte.weight.add_(1.0)  # SFT moves its copy
        model.train()

    def fake_rl(name):
        def run(policy, reference, reward, world, cfg, pool, gold_fn):
            assert world.cfg == WORLD.cfg
            calls.append((name, policy, reference, reward, cfg, pool, gold_fn))
            assert _same_weights(policy, reference) and policy is not reference
            with torch.no_grad():
                policy.wte.weight.add_(float(len(calls)))  # training moves this copy only
            return [{"history of call": len(calls)}]

        return run

    monkeypatch.setattr(GRPO, "sft", fake_sft)
    monkeypatch.setattr(GRPO, "grpo", fake_rl("grpo"))
    monkeypatch.setattr(GRPO, "ppo", fake_rl("ppo"))

    def fake_eval(policy, reference, world, inst, seed):
        assert world.cfg == WORLD.cfg
        evals.append((copy.deepcopy(policy), reference, inst, seed))
        return {"gold": float(len(evals))}

    monkeypatch.setattr(GRPO, "evaluate_policy", fake_eval)
    clock = iter([1.0, 3.0, 6.0, 10.0])  # process_time at the start of each phase and the end
    monkeypatch.setattr(GRPO, "time", SimpleNamespace(process_time=lambda: next(clock)))
    cfg = GRPO.Config(sft_examples=7, sft_epochs=3, sft_lr=2e-3, iterations=5, questions=3,
                      group_size=4, beta=0.3, lr=2e-4, epochs=3, n_eval=6)  # fmt: skip
    seed = 21
    out = GRPO.run_seed(cfg, seed, Context(progress=lambda *a: progress.append(a)))

    assert calls[0] == ("base", PretrainConfig())
    _, tuned, sft_cfg = calls[1]
    assert tuned is not base and _same_weights(base, base_before)
    assert sft_cfg == SFTConfig(7, epochs=3, lr=2e-3, seed=seed)
    assert not tuned.training
    train_inst = WORLD.sample_instances(2048, torch.Generator().manual_seed(seed))
    pool = WORLD.prompts(train_inst)
    idx = torch.tensor([4, 0, 9, 2, 7, 1])
    resp = WORLD.gold_responses(train_inst[idx])
    resp[1:4, 0] = WORLD.vocab.eot  # three empty answers: rewards differ within the batch
    gold = WORLD.gold_reward(train_inst[idx], resp)
    assert len(set(gold.tolist())) > 1
    names = [c[0] for c in calls[2:]]
    assert names == ["grpo"] * 3 + ["ppo"]
    betas = (0.3, 0.3, 0.0)
    for (_, _, ref, _, rl_cfg, rl_pool, gold_fn), beta in zip(calls[2:5], betas, strict=True):
        assert ref is tuned and torch.equal(rl_pool, pool)
        assert rl_cfg == GRPOConfig(beta=beta, group_size=4, questions=3, iterations=5, epochs=3,
                                    minibatch=32, lr=2e-4, seed=seed)  # fmt: skip
        torch.testing.assert_close(gold_fn(idx, resp), gold)
    torch.testing.assert_close(calls[2][3](idx, resp), gold)
    torch.testing.assert_close(calls[4][3](idx, resp), gold)
    order = torch.randperm(6, generator=torch.Generator().manual_seed(seed + 5))
    torch.testing.assert_close(calls[3][3](idx, resp), gold[order])
    _, _, ref, rm, ppo_cfg, ppo_pool, gold_fn = calls[5]
    assert ref is tuned and torch.equal(ppo_pool, pool)
    assert isinstance(rm, GRPO.GoldRewardModel) and rm.world.cfg == WORLD.cfg
    prompts = WORLD.prompts(train_inst[idx])
    torch.testing.assert_close(rm(torch.cat([prompts, resp], 1)), gold)
    assert ppo_cfg == PPOConfig(beta=0.3, iterations=5, batch=12, epochs=3, minibatch=32, lr=2e-4,
                                seed=seed)  # fmt: skip
    torch.testing.assert_close(gold_fn(idx, resp), gold)

    held_out = eval_instances(WORLD, 6, seed)
    assert len(evals) == 5
    assert evals[0][0] is not tuned and _same_weights(evals[0][0], tuned)
    for i, (policy, ref, inst, s) in enumerate(evals):
        assert ref is tuned and s == seed and _same_instances(inst, held_out)
        if i:  # the policy the run trained: the SFT weights moved by that run only
            moved = policy.wte.weight - tuned.wte.weight
            torch.testing.assert_close(moved, torch.full_like(moved, float(i + 2)))
    assert out["history"] == {name: [{"history of call": i + 3}] for i, name in
                              enumerate(("grpo", "permuted", "grpo_beta0", "ppo"))}  # fmt: skip
    assert out["eval"] == {name: {"gold": float(i + 1)} for i, name in
                           enumerate(("sft", "grpo", "permuted", "grpo_beta0", "ppo"))}  # fmt: skip
    assert progress == [("GRPO, PPO and controls", i, 4) for i in (1, 2, 3, 4)]
    assert out["cpu_seconds"] == {"pretraining (cached)": 2.0, "sft": 3.0, "rl": 4.0}
    assert out["responses_per_iteration"] == 12


@pytest.mark.parametrize("out_dir", [None, "plots"])
def test_experiment_runs_each_repeat_1000_seeds_apart_on_one_thread(
    monkeypatch, tmp_path, out_dir
) -> None:
    seen, plotted = [], []
    monkeypatch.setattr(
        GRPO,
        "run_seed",
        lambda cfg, seed, ctx: seen.append((cfg, ctx, torch.get_num_threads())) or {"seed": seed},
    )
    monkeypatch.setattr(GRPO, "save_plots", lambda m, out: plotted.append((m, out)))
    clock = iter([10.0, 17.5])
    monkeypatch.setattr(GRPO, "time", SimpleNamespace(process_time=lambda: next(clock)))
    cfg = GRPO.Config(repeats=3)
    ctx = Context(seed=4, out_dir=None if out_dir is None else tmp_path / out_dir)
    with torch_threads(2):  # experiment sets one thread, whatever it found
        m = GRPO.experiment(cfg, ctx)
    assert m == {"lm": [{"seed": 4}, {"seed": 1004}, {"seed": 2004}], "cpu_seconds": 7.5}
    assert seen == [(cfg, ctx, 1)] * 3
    assert plotted == ([] if out_dir is None else [(m, tmp_path / out_dir)])


def test_evaluate_policy_scores_sampled_greedy_and_cooler_responses(monkeypatch) -> None:
    """On 12 held-out prompts: r* and accuracy of responses sampled with a generator seeded
    s + 77, r* of greedy ones and of ones sampled at T = 0.8 (the same generator, next), and the
    KL to the reference summed over each response's tokens (up to <eot>) — the exact KL of the
    next-token distributions and k1 of the sampled tokens, by hand."""
    from repro.align.policy import generate, response_mask
    from repro.align.sft import eval_instances
    from repro.models.gpt import GPT

    torch.manual_seed(1)
    policy = GPT(PretrainConfig().gpt_config()).eval()
    reference = copy.deepcopy(policy)
    with torch.no_grad():
        for p in reference.parameters():
            p.add_(0.05 * torch.randn_like(p))
    inst = eval_instances(WORLD, 12, 3)
    calls = []

    def spy(model, prompts, length, eot, temperature=1.0, generator=None):
        calls.append((model, length, eot, temperature, generator))
        return generate(model, prompts, length, eot, temperature=temperature, generator=generator)

    monkeypatch.setattr(GRPO, "generate", spy)
    got = GRPO.evaluate_policy(policy, reference, WORLD, inst, 5)
    R, eot = WORLD.response_len, WORLD.vocab.eot
    sampler = calls[0][4]
    assert calls == [(policy, R, eot, 1.0, sampler), (policy, R, eot, 0, None),
                     (policy, R, eot, 0.8, sampler)]  # fmt: skip
    prompts = WORLD.prompts(inst)
    g = torch.Generator().manual_seed(82)
    resp = generate(policy, prompts, R, eot, generator=g)
    cooler = generate(policy, prompts, R, eot, temperature=0.8, generator=g)
    greedy = generate(policy, prompts, R, eot, temperature=0)
    with torch.no_grad():
        seqs, P = torch.cat([prompts, resp], 1), prompts.shape[1]
        lp = torch.log_softmax(policy(seqs)[:, P - 1 : -1].double(), -1)  # (N, R, V)
        lr = torch.log_softmax(reference(seqs)[:, P - 1 : -1].double(), -1)
    mask = response_mask(resp, eot).double()
    full = ((lp.exp() * (lp - lr)).sum(-1) * mask).sum(1).mean().item()
    k1 = (((lp - lr).gather(-1, resp[..., None])[..., 0]) * mask).sum(1).mean().item()
    assert got == {
        "gold": pytest.approx(WORLD.gold_reward(inst, resp).double().mean().item()),
        "gold_greedy": pytest.approx(WORLD.gold_reward(inst, greedy).double().mean().item()),
        "gold_t0.8": pytest.approx(WORLD.gold_reward(inst, cooler).double().mean().item()),
        "accuracy": pytest.approx(WORLD.judge(inst, resp)["correct"].double().mean().item()),
        "kl_full": pytest.approx(full, rel=1e-4),
        "kl_k1": pytest.approx(k1, rel=1e-4, abs=1e-6),
    }
    assert full > 1e-4 and not torch.equal(resp, greedy) and not torch.equal(resp, cooler)


def test_reward_groups_and_categorical_pairs_are_drawn_in_the_documented_order() -> None:
    """Rebuilt draw by draw from one generator: scores 0..3, +25 where U < 0.1, + 0.37·N(0, 1)
    on odd groups, the first 8 groups flattened to their first reward; pairs over V = 3, 4, 7,
    16, 40 (four times), logits scaled 0.3, 1, 3, 6 in turn, two rows each."""
    for seed in (0, 5):
        g = torch.Generator().manual_seed(seed)
        scores = torch.randint(0, 4, (64, 5), generator=g).double()
        outlier = torch.rand(64, 5, generator=g, dtype=torch.float64) < 0.1
        noise = torch.randn(64, 5, generator=g, dtype=torch.float64)
        want = scores + 25.0 * outlier + 0.37 * noise * (torch.arange(64) % 2)[:, None]
        want[:8] = want[:8, :1].clone()
        assert torch.equal(GRPO.reward_groups(seed), want)
        g = torch.Generator().manual_seed(seed)
        pairs = GRPO.categorical_pairs(seed)
        for i, V in enumerate((3, 4, 7, 16, 40) * 4):
            logits = (0.3, 1.0, 3.0, 6.0)[i % 4] * torch.randn(2, V, generator=g,
                                                                dtype=torch.float64)  # fmt: skip
            assert torch.equal(pairs[i][0], torch.log_softmax(logits[0], 0))
            assert torch.equal(pairs[i][1], torch.log_softmax(logits[1], 0))
    assert GRPO.enumerate_estimators() == GRPO.enumerate_estimators(0)
