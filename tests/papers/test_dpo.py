"""DPO paper extras: the claim helpers, each with a case where what it compares differs."""

from __future__ import annotations

import copy
import math
from dataclasses import replace
from types import SimpleNamespace

import pytest
import torch

from repro.align import bandit as bandit_lib
from repro.align.dpo import dpo_gradient_ref, dpo_loss
from repro.align.preferences import sequence_logps
from repro.lab.claims import Context
from repro.lab.library import Library
from repro.lab.threads import torch_threads

DPO = Library().get("dpo").module()


def _fake(metrics: dict) -> Context:
    return Context(run_experiment=lambda cfg, ctx: metrics)


def test_offset_spread_is_zero_only_for_the_optimum():
    b = bandit_lib.Bandit(bandit_lib.BanditConfig(seed=3))
    r = b.gold / b.cfg.label_temperature
    beta = 0.5
    optimum = bandit_lib.kl_optimum(b.logp_sft, r, beta)
    assert DPO.offset_spread(r, optimum, b.logp_sft, beta) < 1e-12
    # a reward shifted by any per-prompt constant is recovered just as well
    shifted = r + torch.randn(r.shape[0], 1, dtype=r.dtype)
    assert DPO.offset_spread(shifted, optimum, b.logp_sft, beta) < 1e-12
    # π_ref itself is not the optimum: r̂ = 0 and the spread is the range of r in a prompt
    spread = DPO.offset_spread(r, b.logp_sft, b.logp_sft, beta)
    assert spread == pytest.approx(float((r.max(-1).values - r.min(-1).values).max()))
    assert spread > 1


def test_toy_pairs_are_fp64_and_labelled_by_the_gold_reward():
    model, pairs = DPO._toy_pairs(0, n=12)
    assert next(model.parameters()).dtype == torch.float64
    assert len(pairs) == 12
    assert (pairs.gold_chosen >= pairs.gold_rejected).all()
    assert (pairs.chosen != pairs.rejected).any()


def test_gradient_claim_tells_the_paper_weight_from_the_mirror_one():
    m = DPO.gradient_closed_form(Context(seed=0))
    errors = m.details["relative_error"]
    assert m.value == errors["paper"] < 1e-10
    assert errors["appendix_a4"] > 0.1 and errors["unweighted"] > 0.1
    w = torch.tensor(m.details["weights"])
    assert w.max() - w.min() > 0.05  # the pairs' weights differ: the weighting is exercised
    # the weights σ(β(r̂_l − r̂_w)) at β = 0.5 for the 8 pairs, after a N(0, 0.3²) move of every
    # parameter drawn from a generator seeded s + 1 (the policy of the docstring)
    reference, pairs = DPO._toy_pairs(0, n=8)
    policy = copy.deepcopy(reference)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
        logp = {}
        for name, model in (("pi", policy), ("ref", reference)):
            for side in ("chosen", "rejected"):
                logp[name, side] = sequence_logps(model, pairs.prompts, getattr(pairs, side),
                                                  pairs.eot)  # fmt: skip
    rw = logp["pi", "chosen"] - logp["ref", "chosen"]
    rl = logp["pi", "rejected"] - logp["ref", "rejected"]
    w = torch.sigmoid(0.5 * (rl - rw))
    assert m.details["weights"] == pytest.approx(w.tolist(), rel=1e-9)
    # the errors: closed forms weighted by σ(r̂_w − r̂_l) = 1 − w and by 1, relative to autograd
    params = list(policy.parameters())
    lw = sequence_logps(policy, pairs.prompts, pairs.chosen, pairs.eot)
    ll = sequence_logps(policy, pairs.prompts, pairs.rejected, pairs.eot)
    ref_w, ref_l = logp["ref", "chosen"], logp["ref", "rejected"]
    auto = torch.cat([g.flatten() for g in torch.autograd.grad(
        dpo_loss(lw, ll, ref_w, ref_l, 0.5), params)])  # fmt: skip
    for name, weights in (("appendix_a4", 1 - w), ("unweighted", torch.ones_like(w))):
        closed = dpo_gradient_ref(policy, pairs, ref_w, ref_l, 0.5, weights=weights)
        closed = torch.cat([g.flatten() for g in closed])
        want = (closed - auto).abs().max().item() / auto.abs().max().item()
        assert errors[name] == pytest.approx(want, rel=1e-6)


def test_run_bandit_reaches_the_optimum_and_its_controls_do_not():
    cfg = replace(DPO.PRESETS["quick"], bandit_betas=(0.5,))
    (row,) = DPO.run_bandit(cfg, seed=7)["rows"]
    assert row["beta"] == 0.5
    assert row["tv_dpo"] < 1e-8
    assert row["tv_reference_free"] > 0.2 and row["tv_shuffled_labels"] > 0.2


def _bandit_metrics(*rows: dict) -> dict:
    return {"bandit": [{"rows": list(rows)}]}


def test_bandit_claims_take_the_worst_row():
    rows = [
        {
            "beta": 1.0,
            "tv_dpo": 1e-12,
            "tv_reference_free": 0.6,
            "tv_shuffled_labels": 0.9,
            "kl_dpo": 1,
        },
        {
            "beta": 0.3,
            "tv_dpo": 3e-7,
            "tv_reference_free": 0.8,
            "tv_shuffled_labels": 0.2,
            "kl_dpo": 2,
        },
    ]
    ctx = _fake(_bandit_metrics(*rows))
    assert DPO.bandit_dpo_reaches_kl_optimum(ctx).value == 3e-7
    assert DPO.bandit_controls_miss(ctx).value == 0.2  # the closer control of the worst row


def _evals(*rows: tuple[float, float, float]) -> dict:
    """One seed per row: win rates against SFT of DPO, shuffled labels, large β."""
    lm = []
    for dpo_win, shuffled, large in rows:
        e = {"sft": {"gold": 1.0}}
        for name, win in (("dpo", dpo_win), ("shuffled", shuffled), ("large_beta", large)):
            e[name] = {"win_vs_sft": win, "gold": 1.0 + win, "kl_full": 0.5}
        lm.append({"eval": e})
    return {"lm": lm}


def test_lm_claims_report_the_worst_seed_and_go_negative_when_a_control_wins():
    ctx = _fake(_evals((0.62, 0.45, 0.57), (0.60, 0.48, 0.55)))
    assert DPO.dpo_beats_sft(ctx).value == 0.60
    assert DPO.shuffled_labels_lose(ctx).value == pytest.approx(0.12)
    assert DPO.large_beta_loses(ctx).value == pytest.approx(0.05)
    # a seed where the control beats DPO makes the margin negative: the claim would fail
    ctx = _fake(_evals((0.62, 0.45, 0.57), (0.55, 0.58, 0.60)))
    assert DPO.shuffled_labels_lose(ctx).value == pytest.approx(-0.03)
    assert DPO.large_beta_loses(ctx).value == pytest.approx(-0.05)


def test_presets_and_settings():
    quick, full = DPO.PRESETS["quick"], DPO.PRESETS["full"]
    assert quick.repeats == 1 and full.repeats == 3
    assert quick.large_beta >= 1000 * quick.beta  # the β → ∞ control is far from DPO's β
    assert quick.curve_prompts <= quick.n_eval


def test_the_bandit_reward_is_on_the_labelers_bradley_terry_scale():
    """With two responses, Plackett–Luce labels prefer y to y' with probability σ(r − r') for
    the reward the claims use: measured on 20,000 labels, within 4 standard errors."""
    import math

    b = bandit_lib.Bandit(bandit_lib.BanditConfig(n_prompts=1, n_responses=2, seed=3))
    r = DPO._bandit_reward(b)[0]
    x, y, ranking = b.rankings(20_000, 2, torch.Generator().manual_seed(1))
    first_wins = (y.gather(1, ranking)[:, 0] == 0).double().mean().item()
    p = 1 / (1 + math.exp(-(r[0] - r[1]).item()))
    assert 0.6 < max(p, 1 - p) < 0.97  # neither a coin flip nor certain
    assert abs(first_wins - p) < 4 * math.sqrt(p * (1 - p) / 20_000)


def test_toy_pairs_follow_their_seed_and_stop_at_eot():
    """The pairs come from the seed alone (not the global generator), and a response that says
    `<eot>` is padded after it, as generation with the world's `<eot>` stops."""
    from repro.align.pretrain import PretrainConfig
    from repro.data.instructions import InstructionWorld

    vocab = InstructionWorld(PretrainConfig().world).vocab
    drawn = []
    for global_seed, seed in ((0, 0), (1, 0), (0, 1)):
        torch.manual_seed(global_seed)
        model, pairs = DPO._toy_pairs(seed, n=40)
        drawn.append((next(model.parameters()).detach().clone(), pairs))
    (w0, p0), (w1, p1), (w2, p2) = drawn
    assert torch.equal(w0, w1) and torch.equal(p0.prompts, p1.prompts)
    assert torch.equal(p0.chosen, p1.chosen) and torch.equal(p0.rejected, p1.rejected)
    assert not torch.equal(w0, w2) and not torch.equal(p0.prompts, p2.prompts)
    early = 0
    for resp in (p0.chosen, p0.rejected, p2.chosen, p2.rejected):
        for row in resp.tolist():
            if vocab.eot in row:
                stop = row.index(vocab.eot)
                early += stop < len(row) - 1
                assert all(t == vocab.pad for t in row[stop + 1 :]), row
    assert early > 0  # some response stops before its last position


# --- the claim helpers and the experiment's plumbing, against hand computations ---------------


def test_implicit_reward_claim_recovers_r_at_both_betas(monkeypatch) -> None:
    """At Eq. 4's optimum, r − r̂ is β·log Z(x) for every response (spread and error 0) and the
    Bradley–Terry probabilities are r's; π_ref's spread is the range of r in a prompt."""
    out = DPO.implicit_reward_recovers_reward(Context(seed=5))
    b = bandit_lib.Bandit(bandit_lib.BanditConfig(seed=5))
    r = b.gold / b.cfg.label_temperature
    assert out.value < 1e-12
    d = out.details
    assert set(d) == {"beta_log_z_error", "bradley_terry_error", "spread_at_pi_ref"}
    assert d["beta_log_z_error"] < 1e-12 and d["bradley_terry_error"] < 1e-12
    assert d["spread_at_pi_ref"] == pytest.approx((r.max(-1).values - r.min(-1).values).max())
    # an optimum taken at 2β when β = 0.1 (only): π_r ∝ π_ref·exp(r/0.2), so r − r̂ = r/2 + c
    real, betas = bandit_lib.kl_optimum, []

    def off_at_small_beta(logp_ref, reward, beta):
        betas.append(beta)
        return real(logp_ref, reward, 2 * beta if beta < 0.5 else beta)

    monkeypatch.setattr(bandit_lib, "kl_optimum", off_at_small_beta)
    bad = DPO.implicit_reward_recovers_reward(Context(seed=5))
    assert betas == [1.0, 0.1]
    half = ((r - r.mean(-1, keepdim=True)) / 2).amax(-1) - ((r - r.mean(-1, keepdim=True)) /
                                                              2).amin(-1)  # fmt: skip
    assert bad.value == pytest.approx(half.max().item(), rel=1e-9)
    assert bad.details["beta_log_z_error"] > 0.1 and bad.details["bradley_terry_error"] > 0.01


def test_loss_at_reference_is_log_2_with_half_weights_on_the_seeds_pairs() -> None:
    out = DPO.loss_at_reference(Context(seed=2))
    assert out.value == pytest.approx(math.log(2), abs=1e-12)
    model, pairs = DPO._toy_pairs(2)
    with torch.no_grad():
        lw = sequence_logps(model, pairs.prompts, pairs.chosen, pairs.eot)
    assert out.details == {
        "log_2": math.log(2),
        "weights": [pytest.approx(0.5, abs=1e-12)] * 6,
        "logp_chosen": pytest.approx(lw.tolist(), abs=1e-12),
    }


def test_run_bandit_feeds_tabular_dpo_the_bradley_terry_labels_and_pi_ref_pairs(
    monkeypatch,
) -> None:
    """Labels σ(r − r'), pairs drawn from π_SFT twice (p·p'), one fit per β for DPO, the
    reference-free loss and coin-flip labels; each fit's TV to Eq. 4's optimum and DPO's KL to
    π_SFT, written out."""
    b = bandit_lib.Bandit(bandit_lib.BanditConfig(seed=6))
    r = b.gold / b.cfg.label_temperature
    p = b.logp_sft.exp()
    fits = []

    def fake_fit(logp_ref, prefer, pair_prob, beta, reference_free=False):
        fits.append((logp_ref, prefer, pair_prob, beta, reference_free))
        shift = torch.linspace(-1, 1, r.shape[1], dtype=r.dtype) * len(fits)
        return torch.log_softmax(logp_ref + shift, -1)

    monkeypatch.setattr(DPO, "tabular_dpo", fake_fit)
    cfg = replace(DPO.PRESETS["quick"], bandit_betas=(0.7, 0.2))
    rows = DPO.run_bandit(cfg, 6)["rows"]
    assert [(f[3], f[4]) for f in fits] == [(0.7, False), (0.7, True), (0.7, False),
                                            (0.2, False), (0.2, True), (0.2, False)]  # fmt: skip
    for i, (logp_ref, prefer, pair_prob, _, _) in enumerate(fits):
        assert torch.equal(logp_ref, b.logp_sft)
        torch.testing.assert_close(pair_prob, p[:, :, None] * p[:, None, :])
        want = 0.5 if i % 3 == 2 else torch.sigmoid(r[:, :, None] - r[:, None, :])
        torch.testing.assert_close(prefer, torch.as_tensor(want, dtype=r.dtype).expand_as(prefer))
    for k, (row, beta) in enumerate(zip(rows, (0.7, 0.2), strict=True)):
        target = torch.softmax(b.logp_sft + r / beta, -1)
        fitted = [torch.log_softmax(b.logp_sft + torch.linspace(-1, 1, r.shape[1],
                  dtype=r.dtype) * (3 * k + j + 1), -1) for j in range(3)]  # fmt: skip
        tv = [(0.5 * (f.exp() - target).abs().sum(-1)).max().item() for f in fitted]
        kl = (fitted[0].exp() * (fitted[0] - b.logp_sft)).sum(-1).mean().item()
        assert row == {
            "beta": beta,
            "tv_dpo": pytest.approx(tv[0]),
            "tv_reference_free": pytest.approx(tv[1]),
            "tv_shuffled_labels": pytest.approx(tv[2]),
            "kl_dpo": pytest.approx(kl),
        }


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    pairs = zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    return all(torch.equal(x, y) for x, y in pairs)


def _same_pairs(a, b) -> bool:
    fields = ("prompts", "chosen", "rejected")
    return a.eot == b.eot and all(torch.equal(getattr(a, f), getattr(b, f)) for f in fields)


def test_run_lm_follows_the_documented_recipe(monkeypatch) -> None:
    """SFT of a copy of the base (π_ref) → K samples on fresh prompts from a generator seeded s,
    labelers calibrated to the configured agreement ranking them with the same generator →
    every pair, and a copy with coin-flip labels (seed s + 3) → DPO, shuffled labels and β → ∞,
    each from its own copy of π_ref; curve points every `curve_every` steps on the first
    `curve_prompts` held-out prompts (generators s + 11 and, for SFT, s); the final judgement
    on every held-out prompt (policies sample with s + 78, SFT with s + 77). By hand with the
    library's pieces on a fresh tiny model (the SFT and DPO steps recorded, not run)."""
    from repro.align.dpo import DPOConfig
    from repro.align.policy import generate
    from repro.align.ppo import kl_stats
    from repro.align.preferences import (
        preference_pairs,
        sample_comparisons,
        sampled_gold,
        win_rate,
    )
    from repro.align.pretrain import PretrainConfig, fresh_model
    from repro.align.sft import SFTConfig, eval_instances
    from repro.data.instructions import InstructionWorld, calibrate_temperature

    pcfg = PretrainConfig()
    world = InstructionWorld(pcfg.world)
    bases, tuned, runs, progress = [], [], [], []

    def fresh() -> torch.nn.Module:
        """A fresh tiny GPT whose <eot> logit is raised (final LayerNorm bias along its
        embedding): samples of varied length, hence varied r*."""
        model = fresh_model(pcfg, seed=0)
        with torch.no_grad():
            e = model.wte.weight[world.vocab.eot]
            model.ln_f.bias.copy_(2.5 * e / e.dot(e))
        return model

    def base(p):
        assert p == PretrainConfig()
        bases.append(fresh())
        return bases[-1]

    def fake_sft(model, w, cfg):
        assert w.cfg == world.cfg
        tuned.append((model, cfg))
        with torch.no_grad():
            model.wte.weight.mul_(1.5)  # SFT moves its copy
        model.train()

    def fake_dpo(policy, reference, data, cfg, progress, on_step):
        seen = []
        runs.append((policy, reference, data, cfg, progress, seen))
        for step in range(4):
            seen.append((step, copy.deepcopy(policy)))
            on_step(step, policy)
            with torch.no_grad():
                policy.wte.weight[:, :3].add_(0.3 * len(runs))  # each run its own way
        k = len(runs)
        return [{"loss": 0.7 + k, "reward_accuracy": 0.1}, {"loss": 0.3, "reward_accuracy": 0.2},
                {"loss": 0.2, "reward_accuracy": 0.5 + k}]  # fmt: skip

    worlds = []  # every world run_lm builds: the task's and the calibrated labelers'
    monkeypatch.setattr(DPO, "InstructionWorld", lambda c: worlds.append(c) or InstructionWorld(c))
    monkeypatch.setattr(DPO, "pretrained_model", base)
    monkeypatch.setattr(DPO, "sft", fake_sft)
    monkeypatch.setattr(DPO, "dpo", fake_dpo)
    clock = iter([1.0, 2.0, 4.0, 7.0, 11.0])
    monkeypatch.setattr(DPO, "time", SimpleNamespace(process_time=lambda: next(clock)))
    cfg = replace(DPO.PRESETS["quick"], sft_examples=7, sft_epochs=3, sft_lr=2e-3, pair_prompts=6,
                  K=3, labeler_agreement=0.8, beta=0.4, large_beta=900.0, dpo_epochs=3,
                  dpo_batch=5, dpo_lr=1e-2, n_eval=10, curve_every=2, curve_prompts=4)  # fmt: skip
    s = 3
    ctx = Context(progress=lambda *a: progress.append(a))
    out = DPO.run_lm(cfg, s, ctx)

    ((ref, sft_cfg),) = tuned
    assert ref is not bases[0] and sft_cfg == SFTConfig(n_examples=7, epochs=3, lr=2e-3, seed=s)
    assert _same_weights(bases[0], fresh())  # the cached base is left alone
    assert not ref.training
    g = torch.Generator().manual_seed(s)
    cmp = sample_comparisons(ref, world, 6, 3, g)
    tau = calibrate_temperature(cmp.gold_gaps(), 0.8)
    labelers = InstructionWorld(replace(pcfg.world, label_temperature=tau))
    pairs = preference_pairs(cmp, labelers.rank(cmp.gold, g), world.vocab.eot)
    shuffled = pairs.shuffled_labels(torch.Generator().manual_seed(s + 3))
    assert (out["pairs"], out["tau"]) == (len(pairs), tau)
    assert worlds == [pcfg.world, replace(pcfg.world, label_temperature=tau)]
    assert tau != pcfg.world.label_temperature
    assert out["label_gold_agreement"] == pairs.gold_agreement()
    assert out["shuffled_gold_agreement"] == shuffled.gold_agreement()
    assert not _same_pairs(pairs, shuffled)

    inst = eval_instances(world, 10, s)
    curve_inst = inst[:4]
    sft_curve = sampled_gold(ref, world, curve_inst, torch.Generator().manual_seed(s))
    data = {"dpo": (pairs, 0.4), "shuffled": (shuffled, 0.4), "large_beta": (pairs, 900.0)}
    assert out["betas"] == {"dpo": 0.4, "shuffled": 0.4, "large_beta": 900.0}
    gold_sft = sampled_gold(ref, world, inst, torch.Generator().manual_seed(s + 77))
    prompts = world.prompts(inst)
    assert out["eval"]["sft"] == {"gold": gold_sft.mean().item()}
    for i, (name, (want_pairs, beta)) in enumerate(data.items()):
        policy, reference, got_pairs, dcfg, prog, seen = runs[i]
        assert reference is ref and policy is not ref and _same_weights(seen[0][1], ref)
        assert _same_pairs(got_pairs, want_pairs) and prog is ctx.progress
        assert dcfg == DPOConfig(beta=beta, epochs=3, batch=5, lr=1e-2, seed=s)
        want_curve = []
        for step, model in seen[::2]:  # steps 0 and 2
            gold = sampled_gold(model, world, curve_inst, torch.Generator().manual_seed(s + 11))
            want_curve.append({"step": step, "gold": pytest.approx(gold.mean().item()),
                               "win_vs_sft": pytest.approx(win_rate(gold, sft_curve))})  # fmt: skip
        assert out["curves"][name] == want_curve
        resp = generate(policy, prompts, world.response_len, world.vocab.eot,
                        generator=torch.Generator().manual_seed(s + 78))  # fmt: skip
        gold = world.gold_reward(inst, resp)
        kl = kl_stats(policy, ref, prompts, resp, world.vocab.eot)["full"].mean().item()
        assert out["eval"][name] == {
            "gold": pytest.approx(gold.mean().item()),
            "win_vs_sft": pytest.approx(win_rate(gold, gold_sft)),
            "kl_full": pytest.approx(kl),
            "first_loss": 0.7 + i + 1,
            "last_reward_accuracy": 0.5 + i + 1,
        }
        assert kl > 1e-4
    assert out["cpu_seconds"] == {"sft": 1.0, "pairs": 2.0, "dpo": 3.0, "evaluation": 4.0}


@pytest.mark.parametrize("out_dir", [None, "plots"])
def test_experiment_runs_the_bandit_and_the_lm_per_seed_on_one_thread(
    monkeypatch, tmp_path, out_dir
) -> None:
    calls, plotted = [], []
    monkeypatch.setattr(DPO, "run_bandit", lambda cfg, s: calls.append(("bandit", cfg, s,
                        torch.get_num_threads())) or {"bandit": s})  # fmt: skip
    monkeypatch.setattr(DPO, "run_lm", lambda cfg, s, ctx: calls.append(("lm", cfg, s, ctx)) or
                        {"lm": s})  # fmt: skip
    monkeypatch.setattr(DPO, "save_plots", lambda m, out: plotted.append((m, out)))
    clock = iter([2.0, 9.5])
    monkeypatch.setattr(DPO, "time", SimpleNamespace(process_time=lambda: next(clock)))
    cfg = replace(DPO.PRESETS["quick"], repeats=2)
    ctx = Context(seed=5, out_dir=None if out_dir is None else tmp_path / out_dir)
    with torch_threads(2):  # experiment sets one thread, whatever it found
        m = DPO.experiment(cfg, ctx)
    assert m == {"seeds": [5, 1005], "bandit": [{"bandit": 5}, {"bandit": 1005}],
                 "lm": [{"lm": 5}, {"lm": 1005}], "cpu_seconds": 7.5}  # fmt: skip
    assert calls == [("bandit", cfg, 5, 1), ("bandit", cfg, 1005, 1), ("lm", cfg, 5, ctx),
                     ("lm", cfg, 1005, ctx)]  # fmt: skip
    assert plotted == ([] if out_dir is None else [(m, tmp_path / out_dir)])


def test_save_plots_draws_each_runs_win_rate_curve_and_the_half_line(line_plots, tmp_path):
    plots = line_plots(DPO)
    curves = {
        "dpo": [{"step": 0, "win_vs_sft": 0.5}, {"step": 5, "win_vs_sft": 0.61}],
        "shuffled": [{"step": 0, "win_vs_sft": 0.49}, {"step": 5, "win_vs_sft": 0.47}],
        "large_beta": [{"step": 0, "win_vs_sft": 0.52}, {"step": 5, "win_vs_sft": 0.5}],
    }
    lm = {"curves": curves, "betas": {"dpo": 0.3, "shuffled": 0.3, "large_beta": 1000.0}}
    DPO.save_plots({"lm": [lm, {"curves": {}}]}, tmp_path)
    ((path, series, _),) = plots
    assert path == tmp_path / "win_rate_vs_step.svg"
    assert list(series.values()) == [
        ([0, 5], [0.5, 0.61]),
        ([0, 5], [0.49, 0.47]),
        ([0, 5], [0.52, 0.5]),
        ([0, 5], [0.5, 0.5]),
    ]
    assert list(series)[0] == "DPO, β = 0.3" and list(series)[2] == "control: β = 1000 (β → ∞)"


def test_bandit_claims_list_every_row_of_every_seed() -> None:
    rows = [
        {"beta": 1.0, "tv_dpo": 1e-12, "tv_reference_free": 0.6, "tv_shuffled_labels": 0.9,
         "kl_dpo": 1.5},
        {"beta": 0.3, "tv_dpo": 3e-7, "tv_reference_free": 0.8, "tv_shuffled_labels": 0.2,
         "kl_dpo": 2.5},
    ]  # fmt: skip
    other = {"beta": 1.0, "tv_dpo": 2e-9, "tv_reference_free": 0.15, "tv_shuffled_labels": 0.7,
             "kl_dpo": 0.5}  # fmt: skip
    ctx = Context(_metrics={"bandit": [{"rows": rows}, {"rows": [other]}]})
    reach = DPO.bandit_dpo_reaches_kl_optimum(ctx)
    assert reach.value == 3e-7
    assert reach.details == {"per_beta": [{"beta": 1.0, "tv": 1e-12, "kl": 1.5},
                                          {"beta": 0.3, "tv": 3e-7, "kl": 2.5},
                                          {"beta": 1.0, "tv": 2e-9, "kl": 0.5}]}  # fmt: skip
    miss = DPO.bandit_controls_miss(ctx)
    assert miss.value == 0.15  # the reference-free fit of the second seed
    keys = ("beta", "tv_reference_free", "tv_shuffled_labels")
    assert miss.details == {"per_beta": [{k: r[k] for k in keys} for r in [*rows, other]]}


def test_lm_claims_details_are_per_seed() -> None:
    e1 = {"sft": {"gold": 1.0}, "dpo": {"win_vs_sft": 0.62, "gold": 1.3, "kl_full": 0.4},
          "shuffled": {"win_vs_sft": 0.45, "kl_full": 0.2},
          "large_beta": {"win_vs_sft": 0.51, "kl_full": 0.01}}  # fmt: skip
    e2 = {"sft": {"gold": 1.1}, "dpo": {"win_vs_sft": 0.58, "gold": 1.2, "kl_full": 0.6},
          "shuffled": {"win_vs_sft": 0.52, "kl_full": 0.3},
          "large_beta": {"win_vs_sft": 0.49, "kl_full": 0.02}}  # fmt: skip
    ctx = Context(_metrics={"lm": [{"eval": e1}, {"eval": e2}]})
    beats = DPO.dpo_beats_sft(ctx)
    assert beats.value == 0.58
    assert beats.details == {"per_seed_win": [0.62, 0.58], "gold_sft": [1.0, 1.1],
                             "gold_dpo": [1.3, 1.2], "kl_full": [0.4, 0.6]}  # fmt: skip
    shuffled = DPO.shuffled_labels_lose(ctx)
    assert shuffled.value == pytest.approx(0.06)
    assert shuffled.details == {
        "per_seed_gap": [pytest.approx(0.17), pytest.approx(0.06)],
        "shuffled_win_vs_sft": [0.45, 0.52],
        "shuffled_kl_full": [0.2, 0.3],
    }
    large = DPO.large_beta_loses(ctx)
    assert large.value == pytest.approx(0.09)
    assert large.details == {
        "per_seed_gap": [pytest.approx(0.11), pytest.approx(0.09)],
        "large_beta_win_vs_sft": [0.51, 0.49],
        "large_beta_kl_full": [0.01, 0.02],
    }


def test_curve_point_samples_with_its_seed_and_compares_with_sft() -> None:
    from repro.align.preferences import sampled_gold
    from repro.align.pretrain import PretrainConfig, fresh_model
    from repro.align.sft import eval_instances
    from repro.data.instructions import InstructionWorld

    world = InstructionWorld(PretrainConfig().world)
    model = fresh_model(PretrainConfig(), seed=1)
    inst = eval_instances(world, 16, 2)
    sft_gold = torch.linspace(-1, 1, 16)
    point = DPO._curve_point(model, world, inst, sft_gold, 9)
    gold = sampled_gold(model, world, inst, torch.Generator().manual_seed(9))
    wins = ((gold > sft_gold).double() + 0.5 * (gold == sft_gold).double()).mean().item()
    assert point == {"gold": pytest.approx(gold.mean().item()), "win_vs_sft": pytest.approx(wins)}
    assert 0 < wins < 1


def test_toy_pairs_are_drawn_from_their_seeds_generator_in_order() -> None:
    """Rebuilt draw by draw: the seed's fresh fp64 model, n instances and then two responses per
    prompt from one generator seeded s; the first response is y_w unless r* prefers the second
    (a tie keeps the order)."""
    from repro.align.policy import generate
    from repro.align.pretrain import PretrainConfig, fresh_model
    from repro.data.instructions import InstructionWorld

    world = InstructionWorld(PretrainConfig().world)
    n, seed = 24, 4
    model, pairs = DPO._toy_pairs(seed, n=n)
    want_model = fresh_model(PretrainConfig(), seed=seed).double()
    assert _same_weights(model, want_model)
    g = torch.Generator().manual_seed(seed)
    inst = world.sample_instances(n, g)
    prompts = world.prompts(inst)
    a = generate(want_model, prompts, world.response_len, world.vocab.eot, generator=g)
    c = generate(want_model, prompts, world.response_len, world.vocab.eot, generator=g)
    ga, gc = world.gold_reward(inst, a), world.gold_reward(inst, c)
    first = (ga >= gc)[:, None]
    assert torch.equal(pairs.prompts, prompts) and pairs.eot == world.vocab.eot
    assert torch.equal(pairs.chosen, torch.where(first, a, c))
    assert torch.equal(pairs.rejected, torch.where(first, c, a))
    tie = (ga == gc) & (a != c).any(1)
    assert tie.any() and (ga != gc).any()  # ties with different responses, and real labels
