"""InstructGPT: Training language models to follow instructions with human feedback — reproduction.

Ouyang et al., NeurIPS 2022, https://arxiv.org/abs/2203.02155

Glossary: x prompt, y response, r* the hidden gold reward (the "human" preference), r_θ the
reward model, π^SFT the supervised policy, π^RL the PPO policy, β the KL coefficient, γ the
pretraining coefficient of PPO-ptx, K responses ranked per prompt, τ labeler noise temperature,
TV total variation, k1 the per-sample KL estimator log π(y)/π^SFT(y).

What is checked here (see note.yaml):
1. arithmetic on the paper's numbers (derived): 175B / 1.3B parameters, built on the meta
   device; C(K, 2) comparisons for K = 4…9; Table 6's dataset sizes; RLHF compute against GPT-3
   pretraining compute;
2. the exact bandit (`repro.align.bandit`, measured, no sampling in the evaluation): PPO with
   the KL penalty reaches π* ∝ π^SFT·exp(r/β); with a weak reward model the gold reward peaks
   and falls as β → 0 (overoptimisation), while optimising r* itself never falls;
3. the whole pipeline on a tiny LM of the instruction world (`repro.data.instructions`):
   pretraining (raw formats only) → SFT on gold demonstrations → a reward model trained with
   Eq. 1 on K-wise rankings by simulated labelers → PPO with a per-token KL penalty, with and
   without the pretraining mix; each measured claim has a control that must lose.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from pathlib import Path

import torch

from repro.align import bandit as bandit_lib
from repro.align.policy import generate
from repro.align.ppo import PPOConfig, kl_stats, ppo
from repro.align.preferences import Comparisons, sample_comparisons, sampled_gold, win_rate
from repro.align.pretrain import PretrainConfig, heldout_loss, pretrained_model
from repro.align.reward import (
    RewardModel,
    RMConfig,
    all_pairs,
    normalise_to_demonstrations,
    pair_agreement,
    score,
    train_reward_model,
)
from repro.align.sft import SFTConfig, eval_instances, evaluate, sft
from repro.data.instructions import (
    InstructionWorld,
    bayes_ceiling,
    calibrate_temperature,
    labeler_agreement,
)
from repro.lab.claims import Context, Measured, claim
from repro.lab.counting import build_preset, count_parameters
from repro.lab.settings import setting
from repro.lab.threads import torch_threads
from repro.study.plots import save_line_plot


@dataclass(frozen=True)
class Config:
    # --device: this paper runs on the CPU (see repro.lab.settings)
    CPU_ONLY = (
        "exact bandit sums and tiny reward models and policies that repro.align builds and "
        "samples on the CPU, one thread being fastest at these widths"
    )
    # the small model is the shared pretrained model of `repro.align.pretrain` (PretrainConfig());
    # the big one is wider, and pretrained for the same steps on as many segments of the same
    # text, in longer rows: its context holds `shots` solved exchanges and the query
    big_d_model: int = setting(96, "width of the big pretrained-only model", min=1)
    big_n_layers: int = setting(2, "layers of the big pretrained-only model", min=1)
    big_slots: int = setting(
        4, "context of the big model in exchanges (S tokens each); must exceed shots", min=2
    )
    shots: int = setting(3, "solved exchanges shown to the big model before the query", min=0)
    sft_examples: int = setting(1000, "demonstrations for SFT", min=1)
    sft_epochs: int = setting(2, "SFT epochs", min=1)
    sft_lr: float = setting(1e-3, "SFT learning rate", min=0, min_exclusive=True)
    rm_prompts: int = setting(1000, "prompts ranked by the labelers", min=1)
    K: int = setting(4, "responses ranked per prompt (the paper: 4 to 9)", min=2, max=9)
    labeler_agreement: float = setting(0.75, "agreement of two simulated labelers", min=0.5, max=1)
    rm_epochs: int = setting(2, "reward-model epochs", min=1)
    rm_lr: float = setting(3e-3, "reward-model learning rate", min=0, min_exclusive=True)
    ppo_iterations: int = setting(20, "PPO iterations", min=1)
    ppo_batch: int = setting(64, "episodes per PPO iteration", min=1)
    beta: float = setting(0.2, "KL coefficient β", min=0)
    ptx_coef: float = setting(1.0, "pretraining coefficient γ of PPO-ptx", min=0)
    ppo_lr: float = setting(3e-4, "policy learning rate", min=0, min_exclusive=True)
    n_eval: int = setting(512, "evaluation prompts", min=1)
    repeats: int = setting(1, "independent seeds of SFT, RM and PPO (pretraining is shared)", min=1)
    # the exact bandit
    bandit_responses: int = setting(32, "responses per prompt in the RL check", min=2)
    bandit_betas: tuple[float, ...] = setting(
        (1.0, 0.3), "β values the RL check visits", min=0, min_exclusive=True
    )
    bandit_rl_iterations: int = setting(300, "PPO iterations on the bandit", min=1)
    sweep_responses: int = setting(256, "responses per prompt in the β sweep", min=2)
    weak_rm_prompts: int = setting(50, "ranked prompts the weak (linear) reward model sees", min=1)
    good_rm_prompts: int = setting(
        2000, "ranked prompts the good (quadratic) reward model sees", min=1
    )
    bandit_turn: float = setting(3.0, "c in r* = u·φ − c·(φ₀ − 1)²", min=0)

    def __post_init__(self) -> None:
        if self.shots >= self.big_slots:  # the query needs a slot after the solved exchanges
            raise ValueError(f"{self.shots} shots and the query need big_slots > {self.shots}")


PRESETS = {
    "quick": Config(),
    "full": Config(repeats=3),  # seeds 0, 1000, 2000: the spreads quoted in the note
}

PTX_ROWS = 2048  # rows of pretraining text available to the ptx term
SWEEP_BETAS = [10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01, 0.003, 0.001]


# --- 1. arithmetic on the paper's numbers -------------------------------------------------------


@claim("params-ratio")
def params_ratio(ctx: Context) -> Measured:
    """GPT-3 175B over the 1.3B InstructGPT, both built on the meta device (Table 2.1 of GPT-3;
    the XL row with 16 heads of 128, the consistent reading, see repro.models.gpt)."""
    big = count_parameters(build_preset("gpt3-175b"))
    small = count_parameters(build_preset("gpt3-xl", n_heads=16))
    return Measured(big / small, {"params_175b": big, "params_1.3b": small})


@claim("rm-comparisons-per-prompt")
def rm_comparisons(ctx: Context) -> Measured:
    """K = 4…9 ranked responses give C(K, 2) comparisons per prompt (§3.5)."""
    counts = {K: math.comb(K, 2) for K in range(4, 10)}
    assert all(len(all_pairs(K)[0]) == c for K, c in counts.items()), "all_pairs disagrees"
    return Measured(f"{min(counts.values())}..{max(counts.values())}", {"C(K,2)": counts})


# Table 6 (App. A.3): prompts per split and source, (labeler, customer)
TABLE6_TRAIN = {"sft": (11_295, 1_430), "rm": (6_623, 26_584), "ppo": (0, 31_144)}


@claim("dataset-sizes")
def dataset_sizes(ctx: Context) -> Measured:
    """Training prompts of the three datasets, in thousands: SFT ~13k, RM ~33k, PPO ~31k."""
    totals = {k: sum(v) for k, v in TABLE6_TRAIN.items()}
    return Measured(
        f"{round(totals['sft'] / 1e3)}k/{round(totals['rm'] / 1e3)}k/{round(totals['ppo'] / 1e3)}k",
        totals,
    )


@claim("rlhf-compute-share")
def rlhf_compute_share(ctx: Context) -> Measured:
    """PPO-ptx 175B (60 PF/s-days) over GPT-3 175B pretraining (3,640), in percent (§5.1)."""
    return Measured(100 * 60 / 3640, {"sft_share_percent": 100 * 4.9 / 3640})


# --- 2. the exact bandit -----------------------------------------------------------------------


def run_bandit(cfg: Config, seed: int) -> dict:
    """RL against a reward model, checked against the closed form; the β sweep with a weak RM,
    a good RM and the gold reward itself."""
    out: dict = {}
    small = bandit_lib.Bandit(bandit_lib.BanditConfig(n_responses=cfg.bandit_responses, seed=seed))
    r = bandit_lib.fit_reward_model(small, cfg.good_rm_prompts, 4, "quadratic", 300, seed)
    out["rl"] = []
    for beta in cfg.bandit_betas:
        logp, history = bandit_lib.rl(
            small, r, beta, iterations=cfg.bandit_rl_iterations, seed=seed
        )
        target = bandit_lib.kl_optimum(small.logp_sft, r, beta)
        out["rl"].append(
            {
                "beta": beta,
                "tv": bandit_lib.total_variation(logp, target),
                "history": history,
                **bandit_lib.exact_stats(logp, small.logp_sft, r, small.gold),
            }
        )
    # the control: RL with the KL term removed (β → 0) lands far from the β-optimum
    logp, _ = bandit_lib.rl(small, r, 0.0, iterations=cfg.bandit_rl_iterations, seed=seed)
    beta0 = cfg.bandit_betas[0]
    out["rl_no_kl_tv"] = bandit_lib.total_variation(
        logp, bandit_lib.kl_optimum(small.logp_sft, r, beta0)
    )
    big = bandit_lib.Bandit(
        bandit_lib.BanditConfig(n_responses=cfg.sweep_responses, turn=cfg.bandit_turn, seed=seed)
    )
    weak = bandit_lib.fit_reward_model(big, cfg.weak_rm_prompts, 4, "linear", 300, seed)
    good = bandit_lib.fit_reward_model(big, cfg.good_rm_prompts, 4, "quadratic", 300, seed)
    out["sweep"] = {
        "betas": SWEEP_BETAS,
        "weak": bandit_lib.beta_sweep(big, weak, SWEEP_BETAS),
        "good": bandit_lib.beta_sweep(big, good, SWEEP_BETAS),
        "gold": bandit_lib.beta_sweep(big, big.gold, SWEEP_BETAS),
    }
    return out


# --- 3. the pipeline on a tiny LM ----------------------------------------------------------------


def rm_metrics(
    labelers: InstructionWorld, scores: torch.Tensor, cmp: Comparisons
) -> dict[str, float]:
    """Agreement of r_θ with a labeler on the held-out pairs of different responses, in
    expectation over the labeler's noise (exact): the RM picks a, the labeler agrees with
    probability p(a ≻ b). Identical responses are not compared (labelers rank distinct outputs)."""
    gold, distinct = cmp.gold, cmp.distinct
    i, j = all_pairs(scores.shape[1])
    p = labelers.prefer_prob(gold[:, i], gold[:, j])[distinct]
    ds = (scores[:, i] - scores[:, j])[distinct].double()
    agree = torch.where(ds > 0, p, torch.where(ds < 0, 1 - p, torch.full_like(p, 0.5)))
    return {
        "agreement_with_labelers": float(agree.mean()),
        "labeler_ceiling": bayes_ceiling(p),
        "inter_labeler_agreement": labeler_agreement(p),
        "gold_pair_accuracy": pair_agreement(scores, gold),
        "tied_gold_pairs": float((gold[:, i] == gold[:, j])[distinct].double().mean()),
        "distinct_pairs": float(distinct.double().mean()),
    }


def big_config(cfg: Config, pcfg: PretrainConfig) -> PretrainConfig:
    """The big model: wider, rows of `big_slots` segments, the same segments per step."""
    return replace(
        pcfg,
        d_model=cfg.big_d_model,
        n_layers=cfg.big_n_layers,
        slots=cfg.big_slots,
        batch=max(1, pcfg.batch * pcfg.slots // cfg.big_slots),
    )


def run_lm(cfg: Config, seed: int, ctx: Context) -> dict:
    """Pretrain (cached) → SFT → RM → PPO / PPO-ptx / β = 0, and every evaluation."""
    pcfg = PretrainConfig()
    world = InstructionWorld(pcfg.world)
    g = torch.Generator().manual_seed(seed)
    cpu = {"pretraining": time.process_time()}
    big = pretrained_model(big_config(cfg, pcfg))  # first: LIMA may be pretraining the base now
    base = pretrained_model(pcfg)
    out: dict = {"param_ratio": count_parameters(big) / count_parameters(base)}
    # step 1: SFT on gold demonstrations
    policy_sft = copy.deepcopy(base)
    sft_cfg = SFTConfig(
        n_examples=cfg.sft_examples, epochs=cfg.sft_epochs, lr=cfg.sft_lr, seed=seed
    )
    cpu["sft"] = time.process_time()
    sft(policy_sft, world, sft_cfg)
    cpu["reward_model"] = time.process_time()
    # step 2: labelers rank K samples of the SFT policy; the RM learns Eq. 1
    train_cmp = sample_comparisons(policy_sft, world, cfg.rm_prompts, cfg.K, g)
    test_cmp = sample_comparisons(policy_sft, world, 256, cfg.K, g)
    # the labelers' noise τ is chosen so that two labelers agree `labeler_agreement` of the time
    # on these pairs (the paper: 72.6–77.3%, §3.4); the ceiling below is then exact
    tau = calibrate_temperature(train_cmp.gold_gaps(), cfg.labeler_agreement)
    labelers = InstructionWorld(replace(pcfg.world, label_temperature=tau))
    ranking = labelers.rank(train_cmp.gold, g)
    rm = RewardModel.from_lm(policy_sft)
    curve = []

    def track(step: int, model: RewardModel) -> None:
        if step % 5 == 0:
            s = score(model, test_cmp.tokens.flatten(0, 1)).view(-1, cfg.K)
            curve.append((step, rm_metrics(labelers, s, test_cmp)["agreement_with_labelers"]))
            model.train()

    rm_cfg = RMConfig(epochs=cfg.rm_epochs, lr=cfg.rm_lr, seed=seed)
    train_reward_model(rm, train_cmp.tokens, ranking, rm_cfg, on_step=track)
    demo, _ = world.demonstrations(world.sample_instances(256, g))
    out["rm_bias_shift"] = normalise_to_demonstrations(rm, demo)
    test_scores = score(rm, test_cmp.tokens.flatten(0, 1)).view(-1, cfg.K)
    out["rm"] = rm_metrics(labelers, test_scores, test_cmp) | {"curve": curve, "tau": tau}
    # step 3: PPO against the RM from the SFT policy
    cpu["ppo"] = time.process_time()
    ppo_inst = world.sample_instances(2048, g)
    pool = world.prompts(ppo_inst)
    ptx_text = world.pretraining_batch(PTX_ROWS, pcfg.slots, g)

    def gold_of(idx: torch.Tensor, responses: torch.Tensor) -> torch.Tensor:
        return world.gold_reward(ppo_inst[idx], responses)

    runs = {"ppo": (cfg.beta, 0.0), "ppo_ptx": (cfg.beta, cfg.ptx_coef), "beta0": (0.0, 0.0)}
    policies, histories = {}, {}
    for name, (beta, gamma) in runs.items():
        policy = copy.deepcopy(policy_sft)
        pc = PPOConfig(
            beta=beta,
            ptx_coef=gamma,
            iterations=cfg.ppo_iterations,
            batch=cfg.ppo_batch,
            lr=cfg.ppo_lr,
            seed=seed,
        )
        histories[name] = ppo(
            policy,
            policy_sft,
            rm,
            world,
            pc,
            pool,
            ptx_text,
            progress=ctx.progress,
            gold_fn=gold_of,
        )
        policies[name] = policy
    out["ppo_history"] = histories
    # evaluation on held-out prompts
    cpu["evaluation"] = time.process_time()
    inst = eval_instances(world, cfg.n_eval, seed)
    eg = torch.Generator().manual_seed(seed + 77)
    prompts = world.prompts(inst)
    gold_sft = sampled_gold(policy_sft, world, inst, eg)
    evals = {"sft": {"gold_sampled": gold_sft.mean().item(), **evaluate(policy_sft, world, inst)}}
    for name, policy in policies.items():
        resp = generate(policy, prompts, world.response_len, world.vocab.eot, generator=eg)
        gold = world.gold_reward(inst, resp)
        kl = kl_stats(policy, policy_sft, prompts, resp, world.vocab.eot)
        evals[name] = {
            "gold_sampled": gold.mean().item(),
            "proxy_sampled": score(rm, torch.cat([prompts, resp], 1)).mean().item(),
            "win_vs_sft": win_rate(gold, gold_sft),
            "kl_full": kl["full"].mean().item(),
            "kl_k1": kl["k1"].mean().item(),
            "k1_negative": (kl["k1"] < 0).float().mean().item(),
            **evaluate(policy, world, inst),
        }
    sft_resp = generate(policy_sft, prompts, world.response_len, world.vocab.eot, generator=eg)
    evals["sft"]["proxy_sampled"] = score(rm, torch.cat([prompts, sft_resp], 1)).mean().item()
    # the alignment tax: held-out pretraining loss of each model
    for name, model in {"pretrained": base, "sft": policy_sft, **policies}.items():
        evals.setdefault(name, {})["pretrain_loss"] = heldout_loss(model, world, slots=pcfg.slots)
    # the pretrained-only models, zero-shot and few-shot (greedy: their best guess)
    evals["pretrained"] |= evaluate(base, world, inst)
    few = world.few_shot_prompts(inst, cfg.shots, torch.Generator().manual_seed(seed + 5))
    big_eval = evaluate(big, world, inst, prompts=few)
    resp_big = generate(big, few, world.response_len, world.vocab.eot, temperature=0)
    resp_small = generate(
        policies["ppo_ptx"], prompts, world.response_len, world.vocab.eot, temperature=0
    )
    evals["big_few_shot"] = big_eval | {
        "win_of_small_aligned": win_rate(
            world.gold_reward(inst, resp_small), world.gold_reward(inst, resp_big)
        )
    }
    out["eval"] = evals
    stamps = [*cpu.values(), time.process_time()]
    out["cpu_seconds"] = {k: stamps[i + 1] - stamps[i] for i, k in enumerate(cpu)}
    return out


def experiment(cfg: Config, ctx: Context) -> dict:
    start = time.process_time()
    with torch_threads(1):
        seeds = [ctx.seed + 1000 * i for i in range(cfg.repeats)]
        bandits = [run_bandit(cfg, s) for s in seeds]
        lms = [run_lm(cfg, s, ctx) for s in seeds]
    metrics = {"bandit": bandits, "lm": lms, "cpu_seconds": time.process_time() - start}
    if ctx.out_dir is not None:
        save_plots(metrics, ctx.out_dir)
    return metrics


def save_plots(metrics: dict, out: Path) -> None:
    sweep = metrics["bandit"][0]["sweep"]
    series = {}
    for name in ("weak", "good", "gold"):
        rows = sweep[name]
        kl = [math.sqrt(max(r["kl"], 0)) for r in rows]
        series[f"gold reward, optimising the {name} {'RM' if name != 'gold' else 'reward'}"] = (
            kl,
            [r["gold"] for r in rows],
        )
        if name != "gold":
            series[f"proxy reward of the {name} RM"] = (kl, [r["proxy"] for r in rows])
    save_line_plot(
        out / "bandit_gold_proxy_vs_kl.svg",
        series,
        "√KL(π_β ‖ π_SFT) (nats^½)",
        "reward (exact)",
        "Overoptimisation in the exact bandit (β from 10 to 0.001)",
    )
    lm = metrics["lm"][0]
    steps, acc = zip(*lm["rm"]["curve"], strict=True)
    save_line_plot(
        out / "rm_agreement_over_training.svg",
        {
            "RM agreement with held-out labelers": (list(steps), list(acc)),
            "labeler ceiling": (list(steps), [lm["rm"]["labeler_ceiling"]] * len(steps)),
        },
        "RM training step",
        "expected agreement",
        "Reward model accuracy over training",
    )
    series = {}
    for name, hist in lm["ppo_history"].items():
        its = list(range(1, len(hist) + 1))
        series[f"{name}: RM score"] = (its, [h["score"] for h in hist])
        series[f"{name}: gold r*"] = (its, [h["gold"] for h in hist])
        series[f"{name}: KL (full)"] = (its, [h["kl_full"] for h in hist])
        series[f"{name}: KL (k1 mean)"] = (its, [h["kl_k1"] for h in hist])
    save_line_plot(
        out / "ppo_reward_and_kl.svg",
        series,
        "PPO iteration",
        "reward / nats",
        "Reward and KL over PPO iterations",
    )


# --- claims: the exact bandit -----------------------------------------------------------------


@claim("bandit-reaches-kl-optimum")
def bandit_reaches_kl_optimum(ctx: Context) -> Measured:
    """max over β (and seeds) of TV(π_PPO, π*), π* ∝ π_SFT·exp(r_θ/β) in closed form."""
    runs = ctx.experiment()["bandit"]
    tvs = [[r["tv"] for r in b["rl"]] for b in runs]
    return Measured(
        max(max(t) for t in tvs),
        {"betas": [r["beta"] for r in runs[0]["rl"]], "tv_per_seed": tvs},
    )


@claim("bandit-kl-term-needed")
def bandit_kl_term_needed(ctx: Context) -> Measured:
    """The control: the same PPO with β = 0 ends far from π*(β = first β of the grid)."""
    runs = ctx.experiment()["bandit"]
    return Measured(
        min(b["rl_no_kl_tv"] for b in runs), {"per_seed": [b["rl_no_kl_tv"] for b in runs]}
    )


def _drop(golds: list[float]) -> float:
    """How far the last point of a sweep sits below the sweep's maximum."""
    return max(golds) - golds[-1]


@claim("overoptimisation")
def overoptimisation(ctx: Context) -> Measured:
    """Weak RM: gold at β → 0 below its maximum over the sweep (min over seeds), the maximum
    strictly inside the sweep, the proxy rising all the way."""
    runs = ctx.experiment()["bandit"]
    drops, details = [], []
    for b in runs:
        weak = b["sweep"]["weak"]
        golds, proxies = [r["gold"] for r in weak], [r["proxy"] for r in weak]
        peak = golds.index(max(golds))
        rising = all(q >= p - 1e-9 for p, q in zip(proxies, proxies[1:], strict=False))
        interior = 0 < peak < len(golds) - 1
        drops.append(_drop(golds) if rising and interior else 0.0)
        details.append(
            {
                "gold": golds,
                "proxy": proxies,
                "kl": [r["kl"] for r in weak],
                "peak_beta": weak[peak]["beta"],
                "gold_sft_level": golds[0],
                "good_rm_gold": [r["gold"] for r in b["sweep"]["good"]],
            }
        )
    return Measured(min(drops), {"betas": SWEEP_BETAS, "per_seed": details})


@claim("overoptimisation-control")
def overoptimisation_control(ctx: Context) -> Measured:
    """Optimising r* itself: the largest fall of gold between consecutive β (max over seeds)."""
    runs = ctx.experiment()["bandit"]
    falls = []
    for b in runs:
        golds = [r["gold"] for r in b["sweep"]["gold"]]
        falls.append(max(0.0, *(a - c for a, c in zip(golds, golds[1:], strict=False))))
    return Measured(max(falls), {"per_seed": falls})


@claim("bandit-k1-negative")
def bandit_k1_negative(ctx: Context) -> Measured:
    """Share of negative per-sample k1 = log π(y)/π_SFT(y) in the last PPO iteration at the
    largest β, while the exact KL of every iteration is ≥ 0 (min over seeds)."""
    runs = ctx.experiment()["bandit"]
    shares, rows = [], []
    for b in runs:
        hist = b["rl"][0]["history"]
        exact_ok = min(h["kl_exact"] for h in hist) >= -1e-12  # 0 up to rounding at the start
        shares.append(hist[-1]["k1_negative"] if exact_ok else -1.0)
        rows.append({"kl_exact": hist[-1]["kl_exact"], "kl_k1_mean": hist[-1]["kl_k1"]})
    return Measured(min(shares), {"last_iteration": rows})


# --- claims: the tiny LM ------------------------------------------------------------------------


def _lm(ctx: Context) -> list[dict]:
    return ctx.experiment()["lm"]


@claim("rm-agreement")
def rm_agreement(ctx: Context) -> Measured:
    """(agreement − ½) / (ceiling − ½): the RM's share of the agreement with held-out labelers
    that any model could gain over chance (min over seeds; 1 = the Bayes ceiling)."""
    rows = [lm["rm"] for lm in _lm(ctx)]
    shares = [(r["agreement_with_labelers"] - 0.5) / (r["labeler_ceiling"] - 0.5) for r in rows]
    keys = ("agreement_with_labelers", "labeler_ceiling", "inter_labeler_agreement", "tau")
    return Measured(min(shares), {"per_seed": [{k: r[k] for k in keys} for r in rows]})


@claim("ppo-beats-sft")
def ppo_beats_sft(ctx: Context) -> Measured:
    """Gold-judged win rate of PPO (β > 0) samples against SFT samples on held-out prompts
    (ties count half; min over seeds), with the KL to SFT in the details."""
    evals = [lm["eval"] for lm in _lm(ctx)]
    return Measured(
        min(e["ppo"]["win_vs_sft"] for e in evals),
        {
            "per_seed_win": [e["ppo"]["win_vs_sft"] for e in evals],
            "per_seed_kl_full": [e["ppo"]["kl_full"] for e in evals],
            "gold_sft": [e["sft"]["gold_sampled"] for e in evals],
            "gold_ppo": [e["ppo"]["gold_sampled"] for e in evals],
        },
    )


@claim("ppo-kl-bounded")
def ppo_kl_bounded(ctx: Context) -> Measured:
    """KL(π_PPO ‖ π_SFT) in nats per response (full per-token estimate; max over seeds)."""
    evals = [lm["eval"] for lm in _lm(ctx)]
    return Measured(
        max(e["ppo"]["kl_full"] for e in evals),
        {"beta0_kl_full": [e["beta0"]["kl_full"] for e in evals]},
    )


@claim("beta-zero-drifts-further")
def beta_zero_drifts_further(ctx: Context) -> Measured:
    """The control: PPO with β = 0 (no KL penalty) drifts further from SFT than PPO with β > 0:
    KL(β = 0)/KL(β), min over seeds. Whether the β = 0 run also trades gold for RM score (the
    overoptimisation itself, which the bandit shows exactly) is reported per seed."""
    ratios, rows = [], []
    for lm in _lm(ctx):
        e = lm["eval"]
        ratios.append(e["beta0"]["kl_full"] / max(e["ppo"]["kl_full"], 1e-9))
        diverged = e["beta0"]["gold_sampled"] < e["ppo"]["gold_sampled"]
        diverged &= e["beta0"]["proxy_sampled"] >= e["ppo"]["proxy_sampled"]
        rows.append(
            {
                "proxy_up_gold_down": bool(diverged),
                **{
                    k: {m: e[k][m] for m in ("gold_sampled", "proxy_sampled", "kl_full")}
                    for k in ("ppo", "beta0")
                },
            }
        )
    return Measured(min(ratios), {"per_seed": rows})


@claim("small-aligned-beats-big")
def small_aligned_beats_big(ctx: Context) -> Measured:
    """Gold-judged win rate of the small SFT + PPO-ptx model (greedy) against the ≥ 8× larger
    pretrained-only model prompted with `shots` solved exchanges (greedy); 0 if it is < 8×."""
    wins, rows = [], []
    for lm in _lm(ctx):
        e = lm["eval"]["big_few_shot"]
        wins.append(e["win_of_small_aligned"] if lm["param_ratio"] >= 8 else 0.0)
        rows.append({"param_ratio": lm["param_ratio"], **e})
    return Measured(min(wins), {"per_seed": rows})


@claim("pretrained-fails-format")
def pretrained_fails_format(ctx: Context) -> Measured:
    """Format compliance (digits, then `<eot>`) of the pretrained-only models: the small one
    zero-shot and the big one few-shot (max over both and seeds)."""
    evals = [lm["eval"] for lm in _lm(ctx)]
    values = [max(e["pretrained"]["compliance"], e["big_few_shot"]["compliance"]) for e in evals]
    return Measured(max(values), {"sft_compliance": [e["sft"]["compliance"] for e in evals]})


def _tax(e: dict, name: str) -> float:
    return e[name]["pretrain_loss"] - e["sft"]["pretrain_loss"]


@claim("alignment-tax")
def alignment_tax(ctx: Context) -> Measured:
    """PPO raises the held-out pretraining loss above the SFT model's (nats; min over seeds)."""
    evals = [lm["eval"] for lm in _lm(ctx)]
    return Measured(
        min(_tax(e, "ppo") for e in evals),
        {
            k: [e[k]["pretrain_loss"] for e in evals]
            for k in ("pretrained", "sft", "ppo", "ppo_ptx")
        },
    )


@claim("ptx-reduces-tax")
def ptx_reduces_tax(ctx: Context) -> Measured:
    """Rise of the pretraining loss under PPO-ptx as a share of the rise under PPO (max over
    seeds; below 0 means PPO-ptx ends below the SFT model's loss)."""
    evals = [lm["eval"] for lm in _lm(ctx)]
    shares = [
        _tax(e, "ppo_ptx") / _tax(e, "ppo") if _tax(e, "ppo") > 0 else math.inf for e in evals
    ]
    return Measured(
        max(shares),
        {"win_vs_sft_ptx": [e["ppo_ptx"]["win_vs_sft"] for e in evals]},
    )


@claim("lm-k1-negative")
def lm_k1_negative(ctx: Context) -> Measured:
    """Share of PPO samples whose per-sample k1 KL estimate is negative (min over seeds), next to
    the mean k1 and the mean full per-token KL, which is never negative."""
    evals = [lm["eval"] for lm in _lm(ctx)]
    return Measured(
        min(e["ppo"]["k1_negative"] for e in evals),
        {
            "kl_k1_mean": [e["ppo"]["kl_k1"] for e in evals],
            "kl_full_mean": [e["ppo"]["kl_full"] for e in evals],
        },
    )
