"""InstructGPT paper extras: the big pretrained-only baseline's context holds its few shots."""

from __future__ import annotations

import pytest
import torch

from repro.align.pretrain import PretrainConfig
from repro.data.instructions import InstructionWorld
from repro.lab.counting import count_parameters
from repro.lab.errors import BadOption
from repro.lab.library import Library
from repro.lab.runner import make_config
from repro.models.gpt import GPT

INSTRUCTGPT = Library().get("instructgpt").module()


def test_the_big_baseline_fits_its_shots_and_is_at_least_8x_bigger():
    cfg = INSTRUCTGPT.PRESETS["quick"]
    pcfg = PretrainConfig()
    big = INSTRUCTGPT.big_config(cfg, pcfg)
    world = InstructionWorld(pcfg.world)
    assert cfg.shots > 1  # few-shot, not one-shot
    assert cfg.shots * world.slot_len + world.prompt_len <= big.gpt_config().max_seq_len
    # as many segments per step as the small model: the same amount of pretraining text
    assert big.batch * big.slots == pcfg.batch * pcfg.slots
    assert big.steps == pcfg.steps
    ratio = count_parameters(GPT(big.gpt_config())) / count_parameters(GPT(pcfg.gpt_config()))
    assert ratio >= 8


def test_too_many_shots_for_the_context_is_refused_before_any_work():
    module = INSTRUCTGPT
    cfg = module.PRESETS["quick"]
    with pytest.raises(BadOption, match="big_slots"):
        make_config(module, quick=True, overrides=(f"shots={cfg.big_slots}",))
    make_config(module, quick=True, overrides=(f"shots={cfg.big_slots - 1}",))  # fits


# --- the arithmetic claims, by hand ----------------------------------------------------------


def _gpt2_params(n_layers: int, d: int, vocab: int = 50257, n_ctx: int = 2048) -> int:
    """Per block 12·d² + 13·d (QKV and output projections with biases, a 4d MLP with biases,
    two LayerNorms), the token and position embeddings, the final LayerNorm; the head is tied."""
    return n_layers * (12 * d * d + 13 * d) + vocab * d + n_ctx * d + 2 * d


def test_params_ratio_is_175b_over_the_1_3b_model_counted_by_hand() -> None:
    from repro.lab.claims import Context

    big, small = _gpt2_params(96, 12288), _gpt2_params(24, 2048)
    assert small == 1_315_723_264
    got = INSTRUCTGPT.params_ratio(Context())
    assert got.value == big / small
    assert got.details == {"params_175b": big, "params_1.3b": small}


def test_comparisons_per_prompt_and_a_broken_pair_list(monkeypatch) -> None:
    from repro.lab.claims import Context

    got = INSTRUCTGPT.rm_comparisons(Context())
    assert got.value == "6..36"
    assert got.details == {"C(K,2)": {4: 6, 5: 10, 6: 15, 7: 21, 8: 28, 9: 36}}
    real = INSTRUCTGPT.all_pairs
    monkeypatch.setattr(INSTRUCTGPT, "all_pairs", lambda K: real(K - (K == 9)))
    with pytest.raises(AssertionError, match="^all_pairs disagrees$"):
        INSTRUCTGPT.rm_comparisons(Context())


def test_dataset_sizes_and_compute_share_by_hand() -> None:
    from repro.lab.claims import Context

    sizes = INSTRUCTGPT.dataset_sizes(Context())
    assert sizes.value == "13k/33k/31k"  # 12,725 / 33,207 / 31,144
    assert sizes.details == {"sft": 12_725, "rm": 33_207, "ppo": 31_144}
    share = INSTRUCTGPT.rlhf_compute_share(Context())
    assert share.value == pytest.approx(100 * 60 / 3640, rel=1e-12)  # 60 of 3,640 PF/s-days
    assert share.value == pytest.approx(1.648, abs=1e-3)
    assert share.details == {"sft_share_percent": pytest.approx(100 * 4.9 / 3640, rel=1e-12)}


def test_dataset_sizes_round_other_tables_to_thousands(monkeypatch) -> None:
    from repro.lab.claims import Context

    table = {"sft": (2_000_000, 0), "rm": (1_400, 99), "ppo": (0, 2_600)}
    monkeypatch.setattr(INSTRUCTGPT, "TABLE6_TRAIN", table)
    got = INSTRUCTGPT.dataset_sizes(Context())
    assert got.value == "2000k/1k/3k"  # 1,499 rounds down, 2,600 up
    assert got.details == {"sft": 2_000_000, "rm": 1_499, "ppo": 2_600}
    # just past the half: thousands exactly (1,501 / 1,001 would round down)
    table = {"sft": (1_501, 0), "rm": (1_400, 101), "ppo": (0, 2_501)}
    monkeypatch.setattr(INSTRUCTGPT, "TABLE6_TRAIN", table)
    assert INSTRUCTGPT.dataset_sizes(Context()).value == "2k/2k/3k"


def test_big_config_keeps_at_least_one_row_a_step() -> None:
    cfg = INSTRUCTGPT.Config(big_d_model=24, big_n_layers=3, big_slots=5, shots=2)
    pcfg = PretrainConfig(batch=2, slots=2)  # 4 segments a step: fewer than one big row
    big = INSTRUCTGPT.big_config(cfg, pcfg)
    assert (big.d_model, big.n_layers, big.slots, big.batch) == (24, 3, 5, 1)
    assert big.world == pcfg.world and big.steps == pcfg.steps and big.lr == pcfg.lr
    wide = INSTRUCTGPT.big_config(cfg, PretrainConfig(batch=12, slots=2))
    assert wide.batch == 4  # 24 segments in rows of 5


# --- the exact bandit: run_bandit's recipe ----------------------------------------------------


def test_run_bandit_fits_three_reward_models_and_runs_rl_per_beta(monkeypatch) -> None:
    """A small bandit (Y = bandit_responses) with a quadratic RM on good_rm_prompts rankings:
    RL at every β of the grid and at β = 0, the TV to the closed-form optimum; a big bandit
    (Y = sweep_responses, c = bandit_turn) with a weak linear RM and a good quadratic one, each
    swept over SWEEP_BETAS next to the gold reward itself."""
    from dataclasses import replace

    from repro.align import bandit as B

    fits, rls = [], []
    real_rl = B.rl

    def made_up_rm(bandit, n, features):
        """A reward (X, Y) of its own for each bandit and fit: no 300 Adam steps here."""
        g = torch.Generator().manual_seed(100 * n + len(features) + bandit.cfg.n_responses)
        return torch.randn(bandit.cfg.n_prompts, bandit.cfg.n_responses, generator=g,
                           dtype=torch.float64)  # fmt: skip

    def fit(bandit, n, K, features, steps, seed):
        fits.append((bandit.cfg, n, K, features, steps, seed))
        return made_up_rm(bandit, n, features)

    def rl(bandit, reward, beta, iterations, seed):
        rls.append((bandit.cfg, beta, iterations, seed))
        return real_rl(bandit, reward, beta, iterations=iterations, seed=seed)

    monkeypatch.setattr(B, "fit_reward_model", fit)
    monkeypatch.setattr(B, "rl", rl)
    cfg = replace(INSTRUCTGPT.PRESETS["quick"], bandit_responses=5, bandit_betas=(0.7, 0.2, 0.4),
                  bandit_rl_iterations=3, sweep_responses=6, weak_rm_prompts=7,
                  good_rm_prompts=9, bandit_turn=1.5)  # fmt: skip
    seed = 4
    out = INSTRUCTGPT.run_bandit(cfg, seed)

    small_cfg = B.BanditConfig(n_responses=5, seed=seed)
    big_cfg = B.BanditConfig(n_responses=6, turn=1.5, seed=seed)
    assert fits == [(small_cfg, 9, 4, "quadratic", 300, seed), (big_cfg, 7, 4, "linear", 300, seed),
                    (big_cfg, 9, 4, "quadratic", 300, seed)]  # fmt: skip
    assert rls == [(small_cfg, b, 3, seed) for b in (0.7, 0.2, 0.4, 0.0)]
    small, big = B.Bandit(small_cfg), B.Bandit(big_cfg)
    r = made_up_rm(small, 9, "quadratic")
    assert [row["beta"] for row in out["rl"]] == [0.7, 0.2, 0.4]
    for row, beta in zip(out["rl"], (0.7, 0.2, 0.4), strict=True):
        logp, history = real_rl(small, r, beta, iterations=3, seed=seed)
        target = B.kl_optimum(small.logp_sft, r, beta)
        assert row == {"beta": beta, "tv": B.total_variation(logp, target), "history": history,
                       **B.exact_stats(logp, small.logp_sft, r, small.gold)}  # fmt: skip
        assert len(history) == 3
    logp0, _ = real_rl(small, r, 0.0, iterations=3, seed=seed)
    assert out["rl_no_kl_tv"] == B.total_variation(logp0, B.kl_optimum(small.logp_sft, r, 0.7))
    assert out["rl_no_kl_tv"] != B.total_variation(logp0, B.kl_optimum(small.logp_sft, r, 0.2))
    weak = made_up_rm(big, 7, "linear")
    good = made_up_rm(big, 9, "quadratic")
    betas = [10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001]
    assert out["sweep"] == {
        "betas": betas,
        "weak": B.beta_sweep(big, weak, betas),
        "good": B.beta_sweep(big, good, betas),
        "gold": B.beta_sweep(big, big.gold, betas),
    }
    assert out["sweep"]["weak"] != out["sweep"]["good"] != out["sweep"]["gold"]


# --- the pipeline: run_lm's recipe with the training recorded ----------------------------------


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def test_run_lm_follows_the_recipe_with_training_recorded(monkeypatch) -> None:
    """Pretrained models (big first), SFT on a copy of the base, K-wise comparisons of SFT samples
    ranked by labelers at the calibrated τ, the RM trained from the SFT model (its agreement every
    5 steps) and normalised on demonstrations, PPO / PPO-ptx / β = 0 from copies of the SFT model,
    then every evaluation on held-out prompts; training is recorded, the evaluations are real."""
    from copy import deepcopy
    from dataclasses import replace
    from types import SimpleNamespace

    from repro.align.policy import generate
    from repro.align.ppo import PPOConfig, kl_stats
    from repro.align.preferences import Comparisons, sampled_gold, win_rate
    from repro.align.reward import RMConfig, all_pairs, score
    from repro.align.sft import SFTConfig, eval_instances, evaluate
    from repro.data.instructions import calibrate_temperature
    from repro.lab.claims import Context

    pcfg = PretrainConfig(slots=3, batch=10)  # not the default: slots and batch must be read
    world = InstructionWorld(pcfg.world)
    eot = world.vocab.eot
    loaded, tuned, rm_runs, ppo_runs, progress = [], [], [], [], []
    loaded_models = []  # the objects handed to run_lm (`loaded` keeps their first weights)

    def pretrained(p: PretrainConfig) -> GPT:
        """A fresh GPT of p's shape whose <eot> logit is raised: responses of varied r*."""
        torch.manual_seed(len(loaded))
        model = GPT(p.gpt_config())
        with torch.no_grad():
            e = model.wte.weight[eot]
            model.ln_f.bias.copy_(2.5 * e / e.dot(e))
        loaded.append((p, deepcopy(model)))
        loaded_models.append(model)
        return model.eval()

    def fake_sft(model, w, cfg):
        assert w.cfg == world.cfg
        tuned.append((model, cfg))
        with torch.no_grad():
            model.wte.weight.mul_(1.5)  # SFT moves its copy

    def fake_rm_training(rm, tokens, ranking, cfg, on_step):
        snapshots = []
        rm_runs.append((rm, tokens.clone(), ranking.clone(), cfg, snapshots))
        for step in range(12):
            snapshots.append(deepcopy(rm))
            on_step(step, rm)
            assert rm.training  # the tracker hands the model back in training mode
            with torch.no_grad():
                rm.head.weight.add_(torch.linspace(-1, 1, rm.head.weight.numel()) * (step - 4))
                rm.head.bias.add_(0.3)
        return [1.0]

    def fake_ppo(policy, reference, rm, w, cfg, pool, ptx, progress, gold_fn):
        assert w.cfg == world.cfg and _same_weights(policy, reference) and policy is not reference
        ppo_runs.append((policy, reference, rm, cfg, pool, ptx, progress, gold_fn))
        with torch.no_grad():
            # each run its own way; the β = 0 run (third) is left at the SFT weights, so its k1
            # estimates are exactly 0, which is not negative
            policy.wte.weight[:, :3].add_(0.3 * len(ppo_runs) * (len(ppo_runs) < 3))
        k = len(ppo_runs)
        return [{"score": k, "gold": -k, "kl_full": 0.1 * k, "kl_k1": 0.01 * k}]

    compared, losses = [], []

    def comparisons(model, w, n, K, g) -> Comparisons:
        """n instances, K gold responses each with 40% of tokens replaced (g draws it all)."""
        assert w.cfg == world.cfg
        compared.append((model, n, K))
        inst = w.sample_instances(n, g)
        resp = w.gold_responses(inst)[:, None].repeat(1, K, 1)  # (n, K, R)
        noise = torch.randint(1, eot + 1, resp.shape, generator=g)
        resp = torch.where(torch.rand(resp.shape, generator=g) < 0.4, noise, resp)
        gold = torch.stack([w.gold_reward(inst, resp[:, k]) for k in range(K)], 1)
        i, j = all_pairs(K)
        return Comparisons(inst, w.prompts(inst), resp, gold, (resp[:, i] != resp[:, j]).any(-1))

    def heldout(model, w, slots):
        assert w.cfg == world.cfg
        losses.append(slots)
        w = model.wte.weight.detach()
        return float(w.sum()) + 0.5 * float(w[1].sum())

    generated, evaluated, few_shots = [], [], []
    real_generate, real_evaluate = INSTRUCTGPT.generate, INSTRUCTGPT.evaluate
    real_few_shot = InstructionWorld.few_shot_prompts

    def spy_generate(model, prompts, length, eot_id, temperature=1.0, generator=None):
        generated.append((model, prompts.clone(), length, eot_id, temperature, generator))
        return real_generate(model, prompts, length, eot_id, temperature=temperature,
                             generator=generator)  # fmt: skip

    def spy_evaluate(model, w, inst, prompts=None):
        evaluated.append((model, prompts))
        return real_evaluate(model, w, inst, prompts=prompts)

    def spy_few_shot(self, inst, shots, g):
        few_shots.append((len(inst), shots, g.initial_seed()))
        return real_few_shot(self, inst, shots, g)

    monkeypatch.setattr(INSTRUCTGPT, "generate", spy_generate)
    monkeypatch.setattr(INSTRUCTGPT, "evaluate", spy_evaluate)
    monkeypatch.setattr(InstructionWorld, "few_shot_prompts", spy_few_shot)
    monkeypatch.setattr(INSTRUCTGPT, "sample_comparisons", comparisons)
    monkeypatch.setattr(INSTRUCTGPT, "heldout_loss", heldout)
    monkeypatch.setattr(INSTRUCTGPT, "PretrainConfig", lambda: pcfg)
    monkeypatch.setattr(INSTRUCTGPT, "pretrained_model", pretrained)
    monkeypatch.setattr(INSTRUCTGPT, "sft", fake_sft)
    monkeypatch.setattr(INSTRUCTGPT, "train_reward_model", fake_rm_training)
    monkeypatch.setattr(INSTRUCTGPT, "ppo", fake_ppo)
    clock = iter([1.0, 2.0, 4.0, 7.0, 11.0, 16.0])
    monkeypatch.setattr(INSTRUCTGPT, "time", SimpleNamespace(process_time=lambda: next(clock)))
    cfg = replace(INSTRUCTGPT.PRESETS["quick"], big_d_model=16, big_n_layers=1, big_slots=4,
                  shots=2, sft_examples=7, sft_epochs=3, sft_lr=2e-3, rm_prompts=6, K=3,
                  labeler_agreement=0.8, rm_epochs=3, rm_lr=5e-3, ppo_iterations=4,
                  ppo_batch=5, beta=0.4, ptx_coef=0.7, ppo_lr=2e-4, n_eval=10)  # fmt: skip
    s = 3
    ctx = Context(progress=lambda *a: progress.append(a))
    out = INSTRUCTGPT.run_lm(cfg, s, ctx)

    big_p = replace(pcfg, d_model=16, n_layers=1, slots=4, batch=7)  # 10·3 // 4 segments a row
    assert [p for p, _ in loaded] == [big_p, pcfg]
    (big0, base0) = (m for _, m in loaded)
    big_n = sum(p.numel() for p in big0.parameters())
    assert out["param_ratio"] == big_n / sum(p.numel() for p in base0.parameters())
    ((ref, sft_cfg),) = tuned
    assert sft_cfg == SFTConfig(n_examples=7, epochs=3, lr=2e-3, seed=s)
    assert not _same_weights(ref, base0)
    # the comparisons, the labelers, the RM's data
    g = torch.Generator().manual_seed(s)
    train_cmp = comparisons(ref, world, 6, 3, g)
    test_cmp = comparisons(ref, world, 256, 3, g)
    assert compared == [(ref, 6, 3), (ref, 256, 3)] * 2
    tau = calibrate_temperature(train_cmp.gold_gaps(), 0.8)
    assert tau != pcfg.world.label_temperature
    labelers = InstructionWorld(replace(pcfg.world, label_temperature=tau))
    ranking = labelers.rank(train_cmp.gold, g)
    ((rm, tokens, got_ranking, rm_cfg, snapshots),) = rm_runs
    assert torch.equal(tokens, train_cmp.tokens) and torch.equal(got_ranking, ranking)
    assert rm_cfg == RMConfig(epochs=3, lr=5e-3, seed=s)
    assert _same_weights(snapshots[0].lm, ref) and snapshots[0].lm is not ref
    test_tokens = test_cmp.tokens.flatten(0, 1)
    curve = []
    for step in (0, 5, 10):
        sc = score(snapshots[step], test_tokens).view(-1, 3)
        metrics = INSTRUCTGPT.rm_metrics(labelers, sc, test_cmp)
        curve.append((step, metrics["agreement_with_labelers"]))
    assert len({a for _, a in curve}) == 3  # the RM moved between the points
    demo, _ = world.demonstrations(world.sample_instances(256, g))
    last = deepcopy(snapshots[-1])
    with torch.no_grad():
        last.head.weight.add_(torch.linspace(-1, 1, last.head.weight.numel()) * 7)
        last.head.bias.add_(0.3)
    shift = score(last, demo).mean().item()
    assert out["rm_bias_shift"] == pytest.approx(shift)
    assert score(rm, demo).mean().item() == pytest.approx(0.0, abs=1e-5)
    test_scores = score(rm, test_tokens).view(-1, 3)
    assert out["rm"] == INSTRUCTGPT.rm_metrics(labelers, test_scores, test_cmp) | {
        "curve": curve,
        "tau": tau,
    }
    # PPO: three runs from copies of the SFT model against the RM, on 2,048 prompts and ptx text
    ppo_inst = world.sample_instances(2048, g)
    pool = world.prompts(ppo_inst)
    ptx = world.pretraining_batch(2048, 3, g)
    settings = [(0.4, 0.0), (0.4, 0.7), (0.0, 0.0)]
    for (_, reference, got_rm, pc, got_pool, got_ptx, prog, gold_fn), (beta, gamma) in zip(
        ppo_runs, settings, strict=True
    ):
        assert reference is ref and got_rm is rm and prog is ctx.progress
        assert pc == PPOConfig(beta=beta, ptx_coef=gamma, iterations=4, batch=5, lr=2e-4, seed=s)
        assert torch.equal(got_pool, pool) and torch.equal(got_ptx, ptx)
        idx = torch.tensor([5, 0, 2047, 9])
        resp = world.gold_responses(ppo_inst[idx])
        resp[1:3, 0] = eot
        torch.testing.assert_close(gold_fn(idx, resp), world.gold_reward(ppo_inst[idx], resp))
    assert out["ppo_history"] == {
        name: [{"score": k, "gold": -k, "kl_full": 0.1 * k, "kl_k1": 0.01 * k}]
        for k, name in enumerate(("ppo", "ppo_ptx", "beta0"), 1)
    }
    # the evaluations
    policies = dict(zip(("ppo", "ppo_ptx", "beta0"), (r[0] for r in ppo_runs), strict=True))
    inst = eval_instances(world, 10, s)
    prompts = world.prompts(inst)
    eg = torch.Generator().manual_seed(s + 77)
    gold_sft = sampled_gold(ref, world, inst, eg)
    ev = out["eval"]
    for name, policy in policies.items():
        resp = generate(policy, prompts, world.response_len, eot, generator=eg)
        gold = world.gold_reward(inst, resp)
        kl = kl_stats(policy, ref, prompts, resp, eot)
        assert (kl["full"].mean().item() > 1e-4) == (name != "beta0")
        assert ev[name] == {
            "gold_sampled": pytest.approx(gold.mean().item()),
            "proxy_sampled": pytest.approx(score(rm, torch.cat([prompts, resp], 1)).mean().item()),
            "win_vs_sft": pytest.approx(win_rate(gold, gold_sft)),
            "kl_full": pytest.approx(kl["full"].mean().item()),
            "kl_k1": pytest.approx(kl["k1"].mean().item()),
            "k1_negative": pytest.approx((kl["k1"] < 0).float().mean().item()),
            **evaluate(policy, world, inst),
            "pretrain_loss": heldout(policy, world, 3),
        }
    sft_resp = generate(ref, prompts, world.response_len, eot, generator=eg)
    assert ev["sft"] == {
        "gold_sampled": pytest.approx(gold_sft.mean().item()),
        **evaluate(ref, world, inst),
        "proxy_sampled": pytest.approx(score(rm, torch.cat([prompts, sft_resp], 1)).mean().item()),
        "pretrain_loss": heldout(ref, world, 3),
    }
    assert ev["pretrained"] == {
        "pretrain_loss": heldout(base0, world, 3),
        **evaluate(base0, world, inst),
    }
    assert losses == [3] * 5 + [3] * 5  # the five models in run_lm, then here
    few = world.few_shot_prompts(inst, 2, torch.Generator().manual_seed(s + 5))
    resp_big = generate(big0, few, world.response_len, eot, temperature=0)
    resp_small = generate(policies["ppo_ptx"], prompts, world.response_len, eot, temperature=0)
    win = win_rate(world.gold_reward(inst, resp_small), world.gold_reward(inst, resp_big))
    assert ev["big_few_shot"] == evaluate(big0, world, inst, prompts=few) | {
        "win_of_small_aligned": pytest.approx(win)
    }
    assert set(ev) == {"sft", "ppo", "ppo_ptx", "beta0", "pretrained", "big_few_shot"}
    # which model answered which prompts, sampled from the evaluation generator or greedy
    big_model, base_model = loaded_models
    R = world.response_len
    sampler = generated[0][5]
    assert sampler.initial_seed() == s + 77
    assert [(m, length, e, t, gen) for m, _, length, e, t, gen in generated] == [
        *((policies[n], R, eot, 1.0, sampler) for n in ("ppo", "ppo_ptx", "beta0")),
        (ref, R, eot, 1.0, sampler),
        (big_model, R, eot, 0, None),
        (policies["ppo_ptx"], R, eot, 0, None),
    ]
    assert all(torch.equal(p, prompts) for _, p, *_ in generated[:4] + generated[5:])
    assert torch.equal(generated[4][1], few)
    assert few_shots == [(10, 2, s + 5)] * 2  # run_lm's, then the one above
    assert [m for m, _ in evaluated] == [ref, *policies.values(), base_model, big_model]
    assert all(p is None for _, p in evaluated[:5]) and torch.equal(evaluated[5][1], few)
    assert out["cpu_seconds"] == {"pretraining": 1.0, "sft": 2.0, "reward_model": 3.0,
                                  "ppo": 4.0, "evaluation": 5.0}  # fmt: skip


@pytest.mark.parametrize("out_dir", [None, "plots"])
def test_experiment_runs_the_bandit_then_the_lm_per_seed_on_one_thread(
    monkeypatch, tmp_path, out_dir
) -> None:
    from dataclasses import replace
    from types import SimpleNamespace

    from repro.lab.claims import Context
    from repro.lab.threads import torch_threads

    calls, plotted = [], []
    monkeypatch.setattr(INSTRUCTGPT, "run_bandit", lambda cfg, s: calls.append(("bandit", cfg, s,
                        torch.get_num_threads())) or {"bandit": s})  # fmt: skip
    monkeypatch.setattr(INSTRUCTGPT, "run_lm", lambda cfg, s, ctx: calls.append(("lm", cfg, s, ctx,
                        torch.get_num_threads())) or {"lm": s})  # fmt: skip
    monkeypatch.setattr(INSTRUCTGPT, "save_plots", lambda m, out: plotted.append((m, out)))
    clock = iter([2.0, 9.5])
    monkeypatch.setattr(INSTRUCTGPT, "time", SimpleNamespace(process_time=lambda: next(clock)))
    cfg = replace(INSTRUCTGPT.PRESETS["quick"], repeats=3)
    ctx = Context(seed=5, out_dir=None if out_dir is None else tmp_path / out_dir)
    with torch_threads(2):  # experiment sets one thread, whatever it found
        m = INSTRUCTGPT.experiment(cfg, ctx)
        assert torch.get_num_threads() == 2
    seeds = [5, 1005, 2005]
    assert m == {"bandit": [{"bandit": s} for s in seeds], "lm": [{"lm": s} for s in seeds],
                 "cpu_seconds": 7.5}  # fmt: skip
    assert calls == [("bandit", cfg, s, 1) for s in seeds] + [("lm", cfg, s, ctx, 1) for s in seeds]
    assert plotted == ([] if out_dir is None else [(m, tmp_path / out_dir)])


def test_save_plots_draws_the_sweep_the_rm_curve_and_the_ppo_histories(line_plots, tmp_path):
    drawn = line_plots(INSTRUCTGPT)

    def rows(golds, proxies, kls):
        return [{"beta": 1.0, "gold": g, "proxy": p, "kl": k}
                for g, p, k in zip(golds, proxies, kls, strict=True)]  # fmt: skip

    sweep = {
        "weak": rows([0.1, 0.5, 0.2], [0.0, 0.6, 1.2], [-1e-4, 0.25, 4.0]),
        "good": rows([0.2, 0.7, 0.9], [0.1, 0.3, 0.8], [0.0, 0.09, 1.0]),
        "gold": rows([0.3, 0.8, 1.1], [9.0, 9.0, 9.0], [0.01, 0.16, 2.25]),
    }
    hist = {
        "ppo": [{"score": 0.1, "gold": 0.2, "kl_full": 0.3, "kl_k1": 0.4},
                {"score": 0.5, "gold": 0.6, "kl_full": 0.7, "kl_k1": 0.8}],
        "beta0": [{"score": 1.1, "gold": 1.2, "kl_full": 1.3, "kl_k1": 1.4},
                  {"score": 1.5, "gold": 1.6, "kl_full": 1.7, "kl_k1": 1.8},
                  {"score": 1.9, "gold": 2.0, "kl_full": 2.1, "kl_k1": 2.2}],
    }  # fmt: skip
    lm = {"rm": {"curve": [(0, 0.5), (5, 0.6), (10, 0.65)], "labeler_ceiling": 0.8},
          "ppo_history": hist}  # fmt: skip
    metrics = {"bandit": [{"sweep": sweep}, {"sweep": {}}], "lm": [lm, {}]}
    INSTRUCTGPT.save_plots(metrics, tmp_path)
    (p1, s1, r1), (p2, s2, r2), (p3, s3, r3) = drawn
    assert p1 == tmp_path / "bandit_gold_proxy_vs_kl.svg"
    assert list(s1.items()) == [
        ("gold reward, optimising the weak RM", ([0.0, 0.5, 2.0], [0.1, 0.5, 0.2])),
        ("proxy reward of the weak RM", ([0.0, 0.5, 2.0], [0.0, 0.6, 1.2])),
        ("gold reward, optimising the good RM", ([0.0, 0.3, 1.0], [0.2, 0.7, 0.9])),
        ("proxy reward of the good RM", ([0.0, 0.3, 1.0], [0.1, 0.3, 0.8])),
        ("gold reward, optimising the gold reward", ([0.1, 0.4, 1.5], [0.3, 0.8, 1.1])),
    ]
    assert r1 == {"xlabel": "√KL(π_β ‖ π_SFT) (nats^½)", "ylabel": "reward (exact)",
                  "title": "Overoptimisation in the exact bandit (β from 10 to 0.001)"}  # fmt: skip
    assert p2 == tmp_path / "rm_agreement_over_training.svg"
    assert s2 == {"RM agreement with held-out labelers": ([0, 5, 10], [0.5, 0.6, 0.65]),
                  "labeler ceiling": ([0, 5, 10], [0.8, 0.8, 0.8])}  # fmt: skip
    assert r2 == {"xlabel": "RM training step", "ylabel": "expected agreement",
                  "title": "Reward model accuracy over training"}  # fmt: skip
    assert p3 == tmp_path / "ppo_reward_and_kl.svg"
    assert list(s3.items()) == [
        ("ppo: RM score", ([1, 2], [0.1, 0.5])),
        ("ppo: gold r*", ([1, 2], [0.2, 0.6])),
        ("ppo: KL (full)", ([1, 2], [0.3, 0.7])),
        ("ppo: KL (k1 mean)", ([1, 2], [0.4, 0.8])),
        ("beta0: RM score", ([1, 2, 3], [1.1, 1.5, 1.9])),
        ("beta0: gold r*", ([1, 2, 3], [1.2, 1.6, 2.0])),
        ("beta0: KL (full)", ([1, 2, 3], [1.3, 1.7, 2.1])),
        ("beta0: KL (k1 mean)", ([1, 2, 3], [1.4, 1.8, 2.2])),
    ]
    assert r3 == {"xlabel": "PPO iteration", "ylabel": "reward / nats",
                  "title": "Reward and KL over PPO iterations"}  # fmt: skip
    # an RM curve whose rows are not (step, agreement) pairs is refused, not cut short
    lm["rm"]["curve"] = [(0, 0.5, 9.0), (5, 0.6)]
    with pytest.raises(ValueError):
        INSTRUCTGPT.save_plots(metrics, tmp_path)
