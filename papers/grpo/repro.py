"""DeepSeekMath: Pushing the Limits of Mathematical Reasoning in Open Language Models — GRPO.

Shao, Wang, Zhu, Xu, Song, Bi, Zhang, Zhang, Li, Wu, Guo (2024), https://arxiv.org/abs/2402.03300

Glossary: q a question (prompt), o_i one of the G outputs sampled for it (a group), r_i its
reward, Â_i = (r_i − mean r)/std r the group-normalised advantage, π_old the policy that
sampled, π_ref the reference (the SFT model), β the KL coefficient, k1 = log π/π_ref and
k3 = π_ref/π − log(π_ref/π) − 1 the per-token KL estimators, r* the hidden gold reward of the
instruction world.

What is checked here (see note.yaml):
1. derived — `repro.align.grpo` on seeded numbers in fp64: group advantages sum to 0 in every
   group, are unchanged by r → a·r + b (a > 0), and are 0 (not NaN) for a group of equal
   rewards; k3 averaged over an enumerated categorical equals KL(π‖π_ref), k3 is never negative
   while k1 is; one update of PPO and one of GRPO on the tiny models, with every forward pass
   counted: what GRPO drops is the value model, and it keeps the reference;
2. measured — on InstructGPT's instruction world and its cached pretrained base
   (`repro.align.pretrain`), SFT as in InstructGPT, then GRPO, PPO (with a value model, the
   same reward and the same number of sampled responses and gradient steps) and two controls:
   GRPO with the rewards permuted across groups, and GRPO with β = 0. The reward is the world's
   rule-based gold reward r* (a verifier, as in DeepSeek-R1; DeepSeekMath trained a reward model).
"""

from __future__ import annotations

import copy
import functools
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from repro.align.grpo import GRPOConfig, group_advantages, grpo, k1_kl, k3_kl
from repro.align.policy import generate
from repro.align.ppo import PPOConfig, kl_stats, ppo
from repro.align.pretrain import PretrainConfig, pretrained_model
from repro.align.reward import RewardModel
from repro.align.sft import SFTConfig, eval_instances, sft
from repro.data.instructions import Instances, InstructionWorld, answers
from repro.lab.claims import Context, Measured, claim
from repro.lab.counting import count_parameters
from repro.lab.settings import setting
from repro.lab.threads import torch_threads
from repro.study.plots import save_line_plot


@dataclass(frozen=True)
class Config:
    # --device: this paper runs on the CPU (see repro.lab.settings)
    CPU_ONLY = (
        "tiny policies and value models that repro.align builds and samples on the CPU, one "
        "thread being fastest at these widths"
    )
    # SFT: InstructGPT's quick recipe on the shared cached base (PretrainConfig())
    sft_examples: int = setting(1000, "demonstrations for SFT", min=1)
    sft_epochs: int = setting(2, "SFT epochs", min=1)
    sft_lr: float = setting(1e-3, "SFT learning rate", min=0, min_exclusive=True)
    # RL: the same budget for GRPO and PPO
    iterations: int = setting(40, "RL iterations (GRPO and PPO)", min=1)
    questions: int = setting(8, "questions per GRPO iteration (Q)", min=1)
    group_size: int = setting(8, "outputs per question (G); PPO samples Q·G prompts", min=2)
    # the paper: β = 0.04; here 0.2 (InstructGPT's toy value), at which the KL term binds within
    # the run (at 0.04 the KL with β was 64–86% of the KL without it, seeds 0–1)
    beta: float = setting(0.2, "KL coefficient β (GRPO: in the loss; PPO: in the reward)", min=0)
    lr: float = setting(3e-4, "policy learning rate", min=0, min_exclusive=True)
    epochs: int = setting(2, "policy passes over each sampled batch", min=1)
    n_eval: int = setting(1024, "held-out evaluation prompts", min=1)
    repeats: int = setting(1, "independent seeds of SFT and RL (pretraining is shared)", min=1)


PRESETS = {
    "quick": Config(),
    "full": Config(iterations=100, repeats=3),  # seeds 0, 1000, 2000
}

MINIBATCH = 32  # responses per gradient step, for both algorithms


# --- 1. derived: the estimators and the advantage, on seeded numbers ----------------------------


def reward_groups(seed: int = 0) -> Tensor:
    """Lopsided rewards (Q = 64, G = 5) in fp64: a few outliers, ties, and 8 equal groups."""
    g = torch.Generator().manual_seed(seed)
    r = torch.randint(0, 4, (64, 5), generator=g).double()  # ties, like a verifier's scores
    r += torch.where(torch.rand(64, 5, generator=g, dtype=torch.float64) < 0.1, 25.0, 0.0)
    r += (
        0.37
        * torch.randn(64, 5, generator=g, dtype=torch.float64)
        * (torch.arange(64) % 2)[:, None]
    )
    r[:8] = r[:8, :1]  # equal-reward groups
    return r


def centring_error(r: Tensor, advantages=group_advantages) -> float:
    """max over groups of |Σ_i Â_i|; ∞ if any advantage is not finite or a group of equal
    rewards gets a non-zero advantage."""
    adv = advantages(r)
    equal = (r == r[:, :1]).all(1)
    if not (bool(torch.isfinite(adv).all()) and bool((adv[equal] == 0).all())):
        return float("inf")
    return adv.sum(1).abs().max().item()


AFFINE = [(a, b) for a in (0.01, 3.0, 250.0) for b in (-7.0, 0.0, 1000.0)]  # a > 0


def affine_error(r: Tensor, maps=AFFINE, advantages=group_advantages) -> float:
    """max over (a, b) in `maps` of max |Â(a·r + b) − Â(r)|."""
    adv = advantages(r)
    return max((advantages(a * r + b) - adv).abs().max().item() for a, b in maps)


@claim("advantages-sum-zero")
def advantages_sum_zero(ctx: Context) -> Measured:
    """max over 64 lopsided groups (8 of them flat) of |Σ_i Â_i| (fp64); ∞ if a flat group
    gives NaN or a non-zero advantage."""
    r = reward_groups(ctx.seed)
    equal = (r == r[:, :1]).all(1)
    spread = group_advantages(r)[~equal].std(1, correction=0)  # 1 in every group with a signal
    return Measured(
        centring_error(r),
        {
            "groups": r.shape[0],
            "group_size": r.shape[1],
            "equal_groups": int(equal.sum()),
            "std_of_advantages_max_error": (spread - 1).abs().max().item(),
        },
    )


@claim("advantages-affine-invariant")
def advantages_affine_invariant(ctx: Context) -> Measured:
    """max |Â(a·r + b) − Â(r)| over a ∈ {0.01, 3, 250}, b ∈ {−7, 0, 1000} (fp64); the details
    show a < 0 flipping every sign, so the check would see a change."""
    r = reward_groups(ctx.seed)
    return Measured(affine_error(r), {"a=-1, b=0": affine_error(r, [(-1.0, 0.0)])})


def categorical_pairs(seed: int = 0) -> list[tuple[Tensor, Tensor]]:
    """Seeded pairs (log π, log π_ref) over V = 3…40 outcomes in fp64, some far apart."""
    g = torch.Generator().manual_seed(seed)
    pairs = []
    for i, V in enumerate((3, 4, 7, 16, 40) * 4):
        scale = (0.3, 1.0, 3.0, 6.0)[i % 4]
        logits = scale * torch.randn(2, V, generator=g, dtype=torch.float64)
        logp = torch.log_softmax(logits, -1)
        pairs.append((logp[0], logp[1]))
    return pairs


def estimator_stats(estimator, pairs: list[tuple[Tensor, Tensor]]) -> dict[str, float]:
    """For a per-sample estimator f(log π, log π_ref) -> (V,): max over pairs of
    |Σ_y π(y) f(y) − KL(π‖π_ref)| by enumeration, and the smallest f(y) of any outcome."""
    errors, smallest = [], []
    for logp, logp_ref in pairs:
        p = logp.exp()
        exact = (p * (logp - logp_ref)).sum().item()
        f = estimator(logp, logp_ref)  # (V,) one value per outcome
        errors.append(abs((p * f).sum().item() - exact))
        smallest.append(f.min().item())
    return {"max_error": max(errors), "min": min(smallest), "pairs": len(pairs)}


def enumerate_estimators(seed: int = 0) -> dict[str, dict[str, float]]:
    pairs = categorical_pairs(seed)
    return {"k3": estimator_stats(k3_kl, pairs), "k1": estimator_stats(k1_kl, pairs)}


@claim("k3-unbiased")
def k3_unbiased(ctx: Context) -> Measured:
    """max over 20 categorical pairs of |Σ_y π(y)·k3(y) − KL(π‖π_ref)| (fp64)."""
    e = enumerate_estimators(ctx.seed)
    return Measured(e["k3"]["max_error"], e)


@claim("k3-nonnegative")
def k3_nonnegative(ctx: Context) -> Measured:
    """The smallest k3 of any outcome of any pair (x − log x − 1 ≥ 0 for x = π_ref/π)."""
    e = enumerate_estimators(ctx.seed)
    return Measured(e["k3"]["min"], e)


@claim("k1-can-be-negative")
def k1_can_be_negative(ctx: Context) -> Measured:
    """The smallest per-sample k1 = log π/π_ref of any outcome of any pair: negative wherever
    π_ref > π, although its mean is the KL (≥ 0)."""
    e = enumerate_estimators(ctx.seed)
    return Measured(e["k1"]["min"], e)


class _Counter:
    """Forward hooks counting calls per distinct module, and which modules got gradients."""

    def __init__(self, roles: dict[str, nn.Module]) -> None:
        self.roles = {id(m): name for name, m in roles.items()}
        self.calls: dict[int, int] = {}
        self.modules: dict[int, nn.Module] = {}
        calls, modules = self.calls, self.modules

        def hook(module: nn.Module, args, output) -> None:
            # a plain function: a deepcopy of a hooked module (PPO's value model) shares it
            calls[id(module)] = calls.get(id(module), 0) + 1
            modules[id(module)] = module

        self.handles = [m.register_forward_hook(hook) for m in roles.values()]

    def report(self) -> dict[str, dict]:
        out = {}
        for key, module in self.modules.items():
            name = self.roles.get(key, "made inside the update")
            trained = any(p.grad is not None for p in module.parameters())
            out[name] = {
                "forward_calls": self.calls[key],
                "parameters": count_parameters(module),
                "trained": trained,
            }
        for handle in self.handles:
            handle.remove()
        return out


@functools.lru_cache(maxsize=4)
def one_update(algorithm: str, seed: int) -> dict[str, dict]:
    """One iteration of `algorithm` on the tiny models with a reward model from the SFT trunk;
    every model that runs a forward pass is reported with its calls and parameters."""
    pcfg = PretrainConfig()
    world = InstructionWorld(pcfg.world)
    torch.manual_seed(seed)
    from repro.models.gpt import GPT

    reference = GPT(pcfg.gpt_config()).eval()  # weights do not matter for counting
    policy = copy.deepcopy(reference)
    rm = RewardModel.from_lm(reference).eval()
    g = torch.Generator().manual_seed(seed)
    pool = world.prompts(world.sample_instances(64, g))
    counter = _Counter({"policy": policy, "reference": reference, "reward model": rm})
    Q, G = 4, 8
    if algorithm == "ppo":
        cfg = PPOConfig(beta=0.04, iterations=1, batch=Q * G, minibatch=MINIBATCH // 2, seed=seed)
        ppo(policy, reference, rm, world, cfg, pool)
    else:
        gcfg = GRPOConfig(
            beta=0.04, iterations=1, questions=Q, group_size=G, minibatch=MINIBATCH // 2, seed=seed
        )
        grpo(
            policy,
            reference,
            lambda idx, resp: rm(torch.cat([pool[idx], resp], 1)),
            world,
            gcfg,
            pool,
        )
    return counter.report()


def models_dropped(ppo_models: dict[str, dict], grpo_models: dict[str, dict]) -> str:
    """`n_ppo → n_grpo` models run per update, if GRPO runs the reference and each model PPO
    runs that GRPO does not is one PPO trains (a critic); otherwise what went wrong."""
    dropped = set(ppo_models) - set(grpo_models)
    if "reference" not in grpo_models:
        return "GRPO runs no reference model"
    if not dropped or not all(ppo_models[d]["trained"] for d in dropped):
        return "GRPO drops no trained model"
    return f"{len(ppo_models)} → {len(grpo_models)}"


@claim("drops-value-model")
def drops_value_model(ctx: Context) -> Measured:
    """Models that run in one update, PPO → GRPO, as `n_ppo → n_grpo`; the reference must run
    in both and every PPO model missing from GRPO must be trained (a critic), else "no"."""
    ppo_models, grpo_models = one_update("ppo", ctx.seed), one_update("grpo", ctx.seed)
    dropped = sorted(set(ppo_models) - set(grpo_models))
    return Measured(
        models_dropped(ppo_models, grpo_models),
        {"ppo": ppo_models, "grpo": grpo_models, "dropped": dropped},
    )


@claim("trained-parameters-ratio")
def trained_parameters_ratio(ctx: Context) -> Measured:
    """Parameters that receive gradients in one GRPO update over those in one PPO update."""
    ppo_models, grpo_models = one_update("ppo", ctx.seed), one_update("grpo", ctx.seed)

    def trained(models: dict) -> int:
        return sum(m["parameters"] for m in models.values() if m["trained"])

    def non_policy_calls(models: dict) -> int:
        return sum(m["forward_calls"] for k, m in models.items() if k != "policy")

    return Measured(
        trained(grpo_models) / trained(ppo_models),
        {
            "trained_ppo": trained(ppo_models),
            "trained_grpo": trained(grpo_models),
            "forward_calls_other_than_policy_ppo": non_policy_calls(ppo_models),
            "forward_calls_other_than_policy_grpo": non_policy_calls(grpo_models),
        },
    )


# --- 2. measured: GRPO, PPO and the controls on the tiny LM ------------------------------------


def gold_from_tokens(world: InstructionWorld, tokens: Tensor) -> Tensor:
    """r*(x, y) read off prompt + response tokens (N, P + R): the task and digits are in the
    prompt, so the answer is recomputed here."""
    v, P = world.vocab, world.prompt_len
    family, digits = tokens[:, 1] - v.task0, tokens[:, 2 : P - 1] - v.digit0
    return world.gold_reward(Instances(family, digits, *answers(family, digits)), tokens[:, P:])


class GoldRewardModel(RewardModel):
    """PPO's reward-model slot holding r* (so both algorithms optimise the same reward); its trunk
    and zero head are what PPO copies into the value model (a critic starting from SFT)."""

    def __init__(self, lm: nn.Module, world: InstructionWorld) -> None:
        super().__init__(copy.deepcopy(lm))
        self.world = world

    def forward(self, idx: Tensor, per_token: bool = False) -> Tensor:
        if per_token:  # the value model
            return super().forward(idx, per_token=True)
        return gold_from_tokens(self.world, idx)


@torch.no_grad()
def evaluate_policy(policy, reference, world: InstructionWorld, inst, seed: int) -> dict:
    """Sampled responses on held-out prompts: mean gold reward and KL to the reference (the exact
    per-token KL summed over the response, and k1); the gold reward of greedy decoding and of
    sampling at temperature 0.8 too, which sharpen the policy without any training."""
    prompts = world.prompts(inst)
    g = torch.Generator().manual_seed(seed + 77)  # the same sampling noise for every policy
    resp = generate(policy, prompts, world.response_len, world.vocab.eot, generator=g)
    kl = kl_stats(policy, reference, prompts, resp, world.vocab.eot)
    greedy = generate(policy, prompts, world.response_len, world.vocab.eot, temperature=0)
    cooler = generate(
        policy, prompts, world.response_len, world.vocab.eot, temperature=0.8, generator=g
    )
    return {
        "gold": world.gold_reward(inst, resp).double().mean().item(),
        "gold_greedy": world.gold_reward(inst, greedy).double().mean().item(),
        "gold_t0.8": world.gold_reward(inst, cooler).double().mean().item(),
        "accuracy": world.judge(inst, resp)["correct"].double().mean().item(),
        "kl_full": kl["full"].mean().item(),
        "kl_k1": kl["k1"].mean().item(),
    }


def run_seed(cfg: Config, seed: int, ctx: Context) -> dict:
    pcfg = PretrainConfig()
    world = InstructionWorld(pcfg.world)
    cpu = {"pretraining (cached)": time.process_time()}
    base = pretrained_model(pcfg)  # InstructGPT's base: pretrained once, cached for both papers
    cpu["sft"] = time.process_time()
    policy_sft = copy.deepcopy(base)
    sft(
        policy_sft,
        world,
        SFTConfig(cfg.sft_examples, epochs=cfg.sft_epochs, lr=cfg.sft_lr, seed=seed),
    )
    policy_sft.eval()
    cpu["rl"] = time.process_time()
    g = torch.Generator().manual_seed(seed)
    train_inst = world.sample_instances(2048, g)
    pool = world.prompts(train_inst)

    def gold(idx: Tensor, responses: Tensor) -> Tensor:
        return world.gold_reward(train_inst[idx], responses)

    perm_g = torch.Generator().manual_seed(seed + 5)

    def permuted(idx: Tensor, responses: Tensor) -> Tensor:
        """The control: the batch's rewards shuffled across all groups."""
        r = gold(idx, responses)
        return r[torch.randperm(r.shape[0], generator=perm_g)]

    def gcfg(beta: float) -> GRPOConfig:
        return GRPOConfig(
            beta=beta,
            group_size=cfg.group_size,
            questions=cfg.questions,
            iterations=cfg.iterations,
            epochs=cfg.epochs,
            minibatch=MINIBATCH,
            lr=cfg.lr,
            seed=seed,
        )

    runs = {
        "grpo": lambda p: grpo(p, policy_sft, gold, world, gcfg(cfg.beta), pool, gold_fn=gold),
        "permuted": lambda p: grpo(
            p, policy_sft, permuted, world, gcfg(cfg.beta), pool, gold_fn=gold
        ),
        "grpo_beta0": lambda p: grpo(p, policy_sft, gold, world, gcfg(0.0), pool, gold_fn=gold),
        "ppo": lambda p: ppo(
            p,
            policy_sft,
            GoldRewardModel(policy_sft, world),
            world,
            PPOConfig(
                beta=cfg.beta,
                iterations=cfg.iterations,
                batch=cfg.questions * cfg.group_size,  # as many sampled responses as GRPO
                epochs=cfg.epochs,
                minibatch=MINIBATCH,
                lr=cfg.lr,
                seed=seed,
            ),
            pool,
            gold_fn=gold,
        ),
    }
    inst = eval_instances(world, cfg.n_eval, seed)
    out: dict = {
        "history": {},
        "eval": {"sft": evaluate_policy(policy_sft, policy_sft, world, inst, seed)},
    }
    for name, run in runs.items():
        policy = copy.deepcopy(policy_sft)
        out["history"][name] = run(policy)
        out["eval"][name] = evaluate_policy(policy, policy_sft, world, inst, seed)
        ctx.progress("GRPO, PPO and controls", len(out["history"]), len(runs))
    stamps = [*cpu.values(), time.process_time()]
    out["cpu_seconds"] = {k: stamps[i + 1] - stamps[i] for i, k in enumerate(cpu)}
    out["responses_per_iteration"] = cfg.questions * cfg.group_size
    return out


def experiment(cfg: Config, ctx: Context) -> dict:
    start = time.process_time()
    with torch_threads(1):
        runs = [run_seed(cfg, ctx.seed + 1000 * i, ctx) for i in range(cfg.repeats)]
    metrics = {"lm": runs, "cpu_seconds": time.process_time() - start}
    if ctx.out_dir is not None:
        save_plots(metrics, ctx.out_dir)
    return metrics


def smooth(ys: list[float], k: int = 5) -> list[float]:
    """Trailing mean over the last k points (the batch means of 64 samples are noisy)."""
    return [
        sum(ys[max(0, i - k + 1) : i + 1]) / len(ys[max(0, i - k + 1) : i + 1])
        for i in range(len(ys))
    ]


def save_plots(metrics: dict, out: Path) -> None:
    lm = metrics["lm"][0]
    n = lm["responses_per_iteration"]
    labels = {
        "grpo": "GRPO (group baseline, no value model)",
        "ppo": "PPO (value model), same responses",
        "permuted": "control: GRPO, rewards permuted across groups",
    }
    series = {}
    for name, label in labels.items():
        hist = lm["history"][name]
        xs = [n * (i + 1) for i in range(len(hist))]
        series[label] = (xs, smooth([h["gold"] for h in hist]))
    xs = series[labels["grpo"]][0]
    first = [lm["history"][name][0]["gold"] for name in labels]  # batches sampled from SFT
    series["SFT (its first batches)"] = (xs, [sum(first) / len(first)] * len(xs))
    save_line_plot(
        out / "gold_reward_vs_responses.svg",
        series,
        "sampled responses",
        "gold reward r* (mean of the last 5 batches)",
        "GRPO and PPO climb at equal samples; permuted rewards do not",
    )


def _lm(ctx: Context) -> list[dict]:
    return ctx.experiment()["lm"]


def gain(e: dict, name: str) -> float:
    """Mean held-out gold reward of `name` minus the SFT model's."""
    return e[name]["gold"] - e["sft"]["gold"]


@claim("grpo-beats-sft")
def grpo_beats_sft(ctx: Context) -> Measured:
    """Gold reward of GRPO's samples minus SFT's on held-out prompts (min over seeds)."""
    evals = [lm["eval"] for lm in _lm(ctx)]
    return Measured(
        min(gain(e, "grpo") for e in evals),
        {
            "gold_sft": [e["sft"]["gold"] for e in evals],
            "gold_grpo": [e["grpo"]["gold"] for e in evals],
            "gold_ppo": [e["ppo"]["gold"] for e in evals],
            "accuracy_sft": [e["sft"]["accuracy"] for e in evals],
            "accuracy_grpo": [e["grpo"]["accuracy"] for e in evals],
        },
    )


@claim("grpo-kl-bounded")
def grpo_kl_bounded(ctx: Context) -> Measured:
    """KL(π_GRPO ‖ π_SFT) in nats per response (exact per token, max over seeds)."""
    evals = [lm["eval"] for lm in _lm(ctx)]
    return Measured(
        max(e["grpo"]["kl_full"] for e in evals),
        {
            "kl_ppo": [e["ppo"]["kl_full"] for e in evals],
            "kl_grpo_beta0": [e["grpo_beta0"]["kl_full"] for e in evals],
            "kl_permuted": [e["permuted"]["kl_full"] for e in evals],
        },
    )


@claim("kl-term-holds-policy")
def kl_term_holds_policy(ctx: Context) -> Measured:
    """KL(π_GRPO ‖ π_SFT) with β over the same without the KL term (β = 0): max over seeds."""
    evals = [lm["eval"] for lm in _lm(ctx)]
    ratios = [e["grpo"]["kl_full"] / max(e["grpo_beta0"]["kl_full"], 1e-9) for e in evals]
    return Measured(max(ratios), {"per_seed": ratios})


@claim("grpo-vs-ppo")
def grpo_vs_ppo(ctx: Context) -> Measured:
    """GRPO's gold gain over SFT as a share of PPO's, at equal sampled responses and gradient
    steps (min over seeds; 0 for a seed where PPO does not gain)."""
    evals = [lm["eval"] for lm in _lm(ctx)]
    shares = [gain(e, "grpo") / gain(e, "ppo") if gain(e, "ppo") > 0 else 0.0 for e in evals]
    return Measured(
        min(shares),
        {
            "per_seed": shares,
            "gain_grpo": [gain(e, "grpo") for e in evals],
            "gain_ppo": [gain(e, "ppo") for e in evals],
            "responses_per_run": [
                lm["responses_per_iteration"] * len(lm["history"]["grpo"]) for lm in _lm(ctx)
            ],
        },
    )


@claim("permuted-rewards-no-gain")
def permuted_rewards_no_gain(ctx: Context) -> Measured:
    """The control: GRPO with the rewards permuted across groups; its gold gain over SFT (max
    over seeds)."""
    evals = [lm["eval"] for lm in _lm(ctx)]
    return Measured(
        max(gain(e, "permuted") for e in evals),
        {
            "per_seed": [gain(e, "permuted") for e in evals],
            "kl_permuted": [e["permuted"]["kl_full"] for e in evals],
        },
    )


@claim("grpo-beyond-temperature")
def grpo_beyond_temperature(ctx: Context) -> Measured:
    """GRPO's sampled gold reward minus that of the SFT model sampled at temperature 0.8, which
    sharpens the policy with no training (min over seeds)."""
    evals = [lm["eval"] for lm in _lm(ctx)]
    return Measured(
        min(e["grpo"]["gold"] - e["sft"]["gold_t0.8"] for e in evals),
        {
            "gold_sft_t0.8": [e["sft"]["gold_t0.8"] for e in evals],
            "gold_sft_greedy": [e["sft"]["gold_greedy"] for e in evals],
            "gold_grpo_greedy": [e["grpo"]["gold_greedy"] for e in evals],
            "gold_ppo_greedy": [e["ppo"]["gold_greedy"] for e in evals],
            "gold_permuted": [e["permuted"]["gold"] for e in evals],
        },
    )
