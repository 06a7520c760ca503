"""Scaling Laws for Neural Language Models — reproduction.

Kaplan, McCandlish, Henighan, Brown, Chess, Child, Gray, Radford, Wu, Amodei, 2020,
https://arxiv.org/abs/2001.08361

Glossary: N non-embedding parameters (§2.1), D tokens (here: samples, one key and its label),
C = 6·N·D training FLOPs, L loss in nats, H the source's exact entropy floor, α_N the exponent of
L(N), s the Zipf exponent of the facts source, ε its label noise, W MLP width.

Re-computed here:
1. §2.1 / Table 1 arithmetic: N ≈ 12·n_layer·d_model² against the built GPT-3 175B, and 6N FLOPs
   per token and C_forward (Eq. 2.2) against torch's FLOP counter on a real GPT.
2. Table 6 and Eq. 1.7 / 4.4 arithmetic: p_N + p_D = 1, p_B + p_S = p_D, α_N/α_D, the split of
   10× more compute between N and D.
3. A toy L(N): MLPs of growing width trained to convergence on Zipf-distributed facts, whose
   entropy floor H is exact. L − H is a power law in N (bootstrap CI, R², decades), a fit of
   L = E + A·N^(−α) finds E ≈ H, the exponent follows the source's tail, larger models learn
   from fewer samples (Fig. 2), and labels independent of the keys (ε = 1) leave no law at all.
   The exponents belong to this toy source, not to text.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch

import repro.data.zipf_facts as zipf_facts
import repro.lab.counting as counting
import repro.models.mlp as mlp
import repro.scaling.facts_runs as facts_runs
import repro.train as train_module
from repro.lab.claims import Context, Measured, claim
from repro.lab.counting import (
    build_preset,
    count_parameters,
    counted_flops,
    gpt_param_count,
    kaplan_attention_flops,
    kaplan_forward_flops,
    kaplan_param_count,
)
from repro.lab.settings import setting
from repro.models.gpt import GPT, GPTConfig
from repro.scaling.power_law import bootstrap_exponent, fit_power_law, fit_power_law_with_floor
from repro.scaling.sweep import run_sweep
from repro.study.plots import save_line_plot
from repro.train import next_token_loss

# the modules whose source keys the cache of every sweep point
SWEEP_CODE = [zipf_facts, mlp, counting, train_module, facts_runs]


@dataclass(frozen=True)
class Config:
    # the facts source of the L(N) sweep (repro/data/zipf_facts.py)
    zipf_s: float = setting(2.0, "Zipf exponent s of the key frequencies", min=0.0)
    n_keys: int = setting(512, "number of keys K", min=2)
    noise: float = setting(0.1, "label noise ε", min=0.0, max=1.0)
    vocab_size: int = setting(32, "label vocabulary V", min=2)
    code_dim: int = setting(16, "dimension of each key's input code", min=1)
    # the models and their training (full batch on the exact population loss)
    widths: tuple[int, ...] = setting(
        (4, 8, 16, 32, 64), "MLP widths of the L(N) sweep", min=1, distinct=True
    )
    seeds: tuple[int, ...] = setting((0,), "model seeds, each a full sweep", min=0, distinct=True)
    steps: int = setting(300, "full-batch AdamW steps per model", min=1)
    lr: float = setting(3e-2, "peak learning rate (warm-up + cosine)", min=0, min_exclusive=True)
    # the exponent-vs-tail comparison: a heavier-tailed source on the same models
    tail_s: float = setting(1.3, "Zipf exponent of the heavy-tailed comparison", min=0.0)
    tail_n_keys: int = setting(2048, "keys of the heavy-tailed source", min=2)
    tail_widths: tuple[int, ...] = setting((4, 8, 16, 32), "widths of the tail sweep", min=1)
    # the control: labels independent of the keys
    control_noise: float = setting(1.0, "label noise of the control source", min=0.0, max=1.0)
    control_widths: tuple[int, ...] = setting((4, 16, 64), "widths of the control sweep", min=1)
    # sample efficiency (Fig. 2): one pass over fresh samples, learning curves
    efficiency_widths: tuple[int, ...] = setting((8, 32), "small and large width", min=1)
    efficiency_samples: int = setting(16384, "samples seen by each model", min=1)
    efficiency_batch: int = setting(64, "batch size of the learning-curve runs", min=1)
    efficiency_lr: float = setting(
        1e-2, "peak lr of the learning-curve runs", min=0, min_exclusive=True
    )
    eval_every: int = setting(8, "steps between population-loss evaluations", min=1)
    # fits
    n_boot: int = setting(2000, "bootstrap resamples of the exponent", min=10)
    level: float = setting(0.95, "confidence level of the bootstrap interval", min=0.5, max=0.999)
    jobs: int = setting(1, "sweep points trained in parallel (processes)", min=1, parallel=True)


PRESETS = {
    "quick": Config(),
    "full": Config(
        n_keys=1024,
        widths=(4, 6, 8, 11, 16, 23, 32, 45, 64, 90, 128),
        seeds=(0, 1, 2),
        steps=800,
        tail_n_keys=4096,
        tail_widths=(4, 6, 8, 11, 16, 23, 32),
        control_widths=(4, 8, 16, 32, 64, 128),
        efficiency_widths=(8, 64),
        efficiency_samples=131072,
        jobs=2,
    ),
}


# --- 1. §2.1, Table 1: parameters and FLOPs ------------------------------------------------------


@functools.cache
def gpt3_175b_nonembedding() -> int:
    """Non-embedding parameters of GPT-3 175B built on meta: all minus token and position tables."""
    model = build_preset("gpt3-175b")
    return count_parameters(model) - model.wte.weight.numel() - model.wpe.weight.numel()


@claim("n-12-layer-d2")
def n_12_layer_d2(ctx: Context) -> Measured:
    """12·n_layer·d_model² (Kaplan §2.1, d_attn = d_ff/4 = d_model) vs the built model's count."""
    approx = 12 * 96 * 12288**2
    built = gpt3_175b_nonembedding()
    return Measured(
        approx / built,
        {
            "12_n_layer_d_model_sq": approx,
            "built_nonembedding": built,
            "kaplan_count": kaplan_param_count(96, 12288),
            "biases_and_norms": built - kaplan_param_count(96, 12288),
        },
    )


FLOP_GPT = GPTConfig(
    n_layers=2, d_model=64, n_heads=4, vocab_size=96, max_seq_len=32, backend="ref"
)


def _gpt_flops() -> dict:
    """Counted FLOPs of one forward and one training step of a small GPT, per token."""
    torch.manual_seed(0)
    model = GPT(FLOP_GPT)
    B, T = 2, FLOP_GPT.max_seq_len
    tokens = torch.randint(FLOP_GPT.vocab_size, (B, T + 1))
    fwd = counted_flops(lambda: model(tokens[:, :-1]))
    step = counted_flops(lambda: next_token_loss(model, tokens).backward())
    n_tok = B * T

    def weights(counts: dict) -> float:
        """Forward matmuls with the blocks' weight matrices, per token (leaf Linear modules)."""
        total = 0
        for name, ops in counts.items():
            if ".blocks." in name and name.rsplit(".", 1)[-1] in (
                "wq",
                "wk",
                "wv",
                "wo",
                "w1",
                "w2",
            ):
                total += sum(ops.values())
        return total / n_tok

    forward_attention = sum(ops.get("bmm", 0) for n, ops in fwd.items() if n.endswith(".attn"))
    forward_head = fwd["GPT.lm_head"]["mm"]
    train_total = sum(step["Global"].values())
    # the counter's per-module attribution of backward ops is unreliable; the global total is not:
    # every matmul costs 2× its forward FLOPs backward, so attention and head take 3× their forward
    train_weights = train_total - 3 * (forward_attention + forward_head)
    return {
        "forward_weights": weights(fwd),
        "train_weights": train_weights / n_tok,
        "forward_attention": forward_attention / n_tok,
        "forward_head": forward_head / n_tok,
        "forward_total": sum(fwd["Global"].values()) / n_tok,
        "train_total": train_total / n_tok,
    }


@claim("six-n-per-token")
def six_n_per_token(ctx: Context) -> Measured:
    """Counted training FLOPs per token of the weight matmuls / (6·N) (Table 1: C ≈ 6N)."""
    f = _gpt_flops()
    cfg = FLOP_GPT
    n_weights = kaplan_param_count(cfg.n_layers, cfg.d_model)  # the weight matrices only
    return Measured(
        f["train_weights"] / (6 * n_weights),
        {
            "counted_train_per_token": f["train_weights"],
            "six_n": 6 * n_weights,
            "forward_over_2n": f["forward_weights"] / (2 * n_weights),
            "train_over_forward": f["train_total"] / f["forward_total"],
            "ratio_with_biases_and_norms_in_n": f["train_weights"]
            / (6 * gpt_param_count(cfg, embeddings=False)),
        },
    )


@claim("attention-flops-eq-2-2")
def attention_flops_eq_2_2(ctx: Context) -> Measured:
    """Counted attention FLOPs per token / Kaplan's 2·n_layer·n_ctx·d_attn (Eq. 2.2)."""
    f = _gpt_flops()
    cfg = FLOP_GPT
    kaplan = kaplan_attention_flops(cfg.n_layers, cfg.max_seq_len, cfg.d_attn)
    n_weights = kaplan_param_count(cfg.n_layers, cfg.d_model)
    return Measured(
        f["forward_attention"] / kaplan,
        {
            "counted_attention_per_token": f["forward_attention"],
            "kaplan_term": kaplan,
            "counted_forward_without_head": f["forward_weights"] + f["forward_attention"],
            "kaplan_c_forward": kaplan_forward_flops(
                n_weights, cfg.n_layers, cfg.max_seq_len, cfg.d_attn
            ),
            "head_per_token": f["forward_head"],
        },
    )


# --- 2. Table 6, Eq. 1.7 and Eq. 4.4: arithmetic on the paper's exponents ---------------------

P_N, P_B, P_S, P_D = 0.73, 0.24, 0.03, 0.27  # Table 6 (Eq. 1.7): N, B, S_min, D ∝ C_min^p
ALPHA_N_JOINT, ALPHA_D_JOINT = 0.076, 0.103  # Table 2: the L(N, D) fit of Eq. 1.5


@claim("table6-pn-plus-pd")
def table6_pn_plus_pd(ctx: Context) -> Measured:
    """C = 6·N·D, so N ∝ C^p_N and D ∝ C^p_D need p_N + p_D = 1."""
    return Measured(P_N + P_D)


@claim("table6-pb-plus-ps")
def table6_pb_plus_ps(ctx: Context) -> Measured:
    """D = B·S (tokens = batch × steps), so p_B + p_S = p_D; returns p_B + p_S − p_D."""
    return Measured(P_B + P_S - P_D, {"p_B + p_S": P_B + P_S, "p_D": P_D})


@claim("alpha-ratio")
def alpha_ratio(ctx: Context) -> Measured:
    """α_N/α_D of the joint fit: the exponent of D ∝ N^(α_N/α_D) in Eq. 4.4."""
    ratio = ALPHA_N_JOINT / ALPHA_D_JOINT
    return Measured(ratio, {"8x_model_needs_data_x": 8**ratio})


@claim("eight-x-model-data")
def eight_x_model_data(ctx: Context) -> Measured:
    """8× the model needs 8^(α_N/α_D) × the data to keep the same overfitting penalty (§4.2)."""
    return Measured(8 ** (ALPHA_N_JOINT / ALPHA_D_JOINT))


@claim("ten-x-compute-n")
def ten_x_compute_n(ctx: Context) -> Measured:
    """10× compute → N × 10^p_N (Eq. 1.7)."""
    return Measured(10**P_N)


@claim("ten-x-compute-d")
def ten_x_compute_d(ctx: Context) -> Measured:
    """10× compute → D × 10^p_D."""
    return Measured(10**P_D)


# --- 3. the toy L(N) on Zipf-distributed facts -------------------------------------------------


def _point(cfg: Config, ctx: Context, width: int, seed: int, **source: float) -> dict:
    return {
        "n_keys": cfg.n_keys,
        "zipf_s": cfg.zipf_s,
        "vocab_size": cfg.vocab_size,
        "noise": cfg.noise,
        "code_dim": cfg.code_dim,
        "source_seed": 1234,
        "width": width,
        "n_hidden": 1,
        "seed": seed,
        "steps": cfg.steps,
        "lr": cfg.lr,
        "device": ctx.device,
        **source,
    }


def _sweep(cfg: Config, ctx: Context, name: str, points: list[dict]) -> list[dict]:
    runs = run_sweep(
        "scaling-laws-converged",
        points,
        facts_runs.converged_run,
        SWEEP_CODE,
        jobs=cfg.jobs,
        progress=ctx.progress,
        description=name,
    )
    return [{**r, "seed": p["seed"]} for r, p in zip(runs, points, strict=True)]


def _law(runs: list[dict], cfg: Config) -> dict:
    """Excess-loss power law over every run (all seeds), its bootstrap CI and the floor fit."""
    n = [r["n_nonembed"] for r in runs]
    excess = [r["loss"] - r["floor"] for r in runs]
    fit = fit_power_law(n, excess)
    ci = bootstrap_exponent(n, excess, n_boot=cfg.n_boot, level=cfg.level)
    # the floor fit sees only L(N): mean over seeds per size, E unknown
    sizes = sorted(set(n))
    mean_loss = [sum(r["loss"] for r in runs if r["n_nonembed"] == s) / n.count(s) for s in sizes]
    floor_fit = fit_power_law_with_floor(sizes, mean_loss) if len(sizes) >= 4 else None
    per_seed_floor = []
    for seed in sorted({r["seed"] for r in runs}):
        rs = sorted((r for r in runs if r["seed"] == seed), key=lambda r: r["n_nonembed"])
        if len(rs) >= 4:
            per_seed_floor.append(
                fit_power_law_with_floor(
                    [r["n_nonembed"] for r in rs], [r["loss"] for r in rs]
                ).floor
            )
    return {
        "n_nonembed": n,
        "n_params": [r["n_params"] for r in runs],
        "loss": [r["loss"] for r in runs],
        "excess": excess,
        "seeds": [r["seed"] for r in runs],
        "floor": runs[0]["floor"],
        "alpha": fit.alpha,
        "coef": fit.coef,
        "r2": fit.r2,
        "decades": fit.decades,
        "ci": [ci.low, ci.high],
        "floor_fit": None
        if floor_fit is None
        else {"E": floor_fit.floor, "A": floor_fit.coef, "alpha": floor_fit.alpha},
        "floor_fit_per_seed": per_seed_floor,
    }


def samples_to(curve: list, target: float) -> float:
    """Samples seen when a curve [(samples, loss), …] first reaches `target` (inf if never)."""
    return next((s for s, loss in curve if loss <= target + 1e-12), math.inf)


def _efficiency(cfg: Config, ctx: Context) -> dict:
    """Learning curves of a small and a large model on the same fresh samples (Fig. 2)."""
    points = []
    for w in cfg.efficiency_widths:
        p = _point(cfg, ctx, w, cfg.seeds[0])
        del p["steps"]
        n = counting.mlp_param_count(facts_runs.model_config(p))
        p.update(
            budget=6 * n * cfg.efficiency_samples,
            batch=cfg.efficiency_batch,
            lr=cfg.efficiency_lr,
            eval_every=cfg.eval_every,
        )
        points.append(p)
    runs = run_sweep(
        "scaling-laws-curves",
        points,
        facts_runs.budget_run,
        SWEEP_CODE,
        jobs=cfg.jobs,
        progress=ctx.progress,
        description="learning curves",
    )
    small, large = runs[0], runs[-1]
    target = small["loss"]  # the loss the small model ends at: both curves reach it
    return {
        "target_loss": target,
        "samples_small": samples_to(small["curve"], target),
        "samples_large": samples_to(large["curve"], target),
        "curves": [r["curve"] for r in runs],
        "n_params": [r["n_params"] for r in runs],
    }


def experiment(cfg: Config, ctx: Context) -> dict:
    grid = [(w, s) for s in cfg.seeds for w in cfg.widths]
    main = _sweep(cfg, ctx, "L(N), s main", [_point(cfg, ctx, w, s) for w, s in grid])
    tail_grid = [(w, s) for s in cfg.seeds for w in cfg.tail_widths]
    heavy = _sweep(
        cfg,
        ctx,
        "L(N), heavy tail",
        [_point(cfg, ctx, w, s, zipf_s=cfg.tail_s, n_keys=cfg.tail_n_keys) for w, s in tail_grid],
    )
    light = [r for r, (w, s) in zip(main, grid, strict=True) if w in cfg.tail_widths]
    control = _sweep(
        cfg,
        ctx,
        "L(N), ε = 1 control",
        [
            _point(cfg, ctx, w, s, noise=cfg.control_noise)
            for s in cfg.seeds
            for w in cfg.control_widths
        ],
    )
    metrics = {
        "main": _law(main, cfg),
        "tail_light": _law(light, cfg),
        "tail_heavy": _law(heavy, cfg),
        "control": _law(control, cfg),
        "efficiency": _efficiency(cfg, ctx),
    }
    if ctx.out_dir is not None:
        _plots(metrics, cfg, ctx)
    return metrics


def _plots(m: dict, cfg: Config, ctx: Context) -> None:
    main = m["main"]
    sizes = sorted(set(main["n_nonembed"]))
    mean = [
        sum(l for n, l in zip(main["n_nonembed"], main["loss"], strict=True) if n == s)
        / main["n_nonembed"].count(s)
        for s in sizes
    ]
    ff = main["floor_fit"]
    series = {"measured L (mean over seeds)": (sizes, mean)}
    series[f"fit E + A·N^-α (α = {ff['alpha']:.2f})"] = (
        sizes,
        [ff["E"] + ff["A"] * s ** -ff["alpha"] for s in sizes],
    )
    series[f"fitted floor E = {ff['E']:.4f}"] = ([sizes[0], sizes[-1]], [ff["E"]] * 2)
    series[f"exact floor H = {main['floor']:.4f}"] = ([sizes[0], sizes[-1]], [main["floor"]] * 2)
    save_line_plot(
        ctx.out_dir / "loss_vs_n.svg",
        series,
        "non-embedding parameters N",
        "population loss L (nats)",
        f"L(N) on Zipf facts (s = {cfg.zipf_s}, ε = {cfg.noise})",
        logx=True,
    )
    excess = {}
    for key, label in (("main", f"s = {cfg.zipf_s}"), ("tail_heavy", f"s = {cfg.tail_s}")):
        law = m[key]
        excess[f"{label}: L − H"] = (law["n_nonembed"], law["excess"])
        excess[f"{label}: fit α = {law['alpha']:.2f}"] = (
            sizes,
            [law["coef"] * s ** -law["alpha"] for s in sizes],
        )
    save_line_plot(
        ctx.out_dir / "excess_vs_n.svg",
        excess,
        "non-embedding parameters N",
        "L − H (nats)",
        "excess loss: a straight line on log-log axes",
        logx=True,
        logy=True,
    )
    eff = m["efficiency"]
    save_line_plot(
        ctx.out_dir / "learning_curves.svg",
        {
            f"N = {n}": ([s for s, _ in c if s > 0], [loss for s, loss in c if s > 0])
            for n, c in zip(eff["n_params"], eff["curves"], strict=True)
        },
        "samples seen",
        "population loss (nats)",
        "sample efficiency: the larger model reaches a loss sooner",
        logx=True,
    )


@claim("excess-power-law")
def excess_power_law(ctx: Context) -> Measured:
    """Lower end of the bootstrap CI of α in L − H ∝ N^(−α); R² and decades in the details."""
    law = ctx.experiment()["main"]
    return Measured(law["ci"][0], _law_details(law, ctx.experiment()["control"]))


def _law_details(law: dict, control: dict) -> dict:
    return {
        "alpha": law["alpha"],
        "ci": law["ci"],
        "r2": law["r2"],
        "decades": law["decades"],
        "control_alpha": control["alpha"],
        "control_ci": control["ci"],
        "control_r2": control["r2"],
    }


@claim("excess-power-law-r2")
def excess_power_law_r2(ctx: Context) -> Measured:
    """R² of the log-log line, over a span of N that must cover at least 1.5 decades."""
    law = ctx.experiment()["main"]
    if law["decades"] < 1.5:
        raise ValueError(f"the widths span {law['decades']:.2f} decades of N; the claim needs 1.5")
    return Measured(law["r2"], _law_details(law, ctx.experiment()["control"]))


@claim("control-no-law")
def control_no_law(ctx: Context) -> Measured:
    """ε = 1: does the bootstrap CI of the control's exponent cover 0? (1 if it does)."""
    m = ctx.experiment()
    low, high = m["control"]["ci"]
    return Measured(
        int(low <= 0 <= high),
        {
            "control_alpha": m["control"]["alpha"],
            "control_ci": m["control"]["ci"],
            "control_r2": m["control"]["r2"],
            "control_excess": m["control"]["excess"],
        },
    )


@claim("floor-recovered")
def floor_recovered(ctx: Context) -> Measured:
    """E of L = E + A·N^(−α), fitted without knowing H, divided by the exact H."""
    law = ctx.experiment()["main"]
    e = law["floor_fit"]["E"]
    return Measured(
        e / law["floor"],
        {
            "E": e,
            "H": law["floor"],
            "alpha_of_floor_fit": law["floor_fit"]["alpha"],
            "E_over_H_per_seed": [f / law["floor"] for f in law["floor_fit_per_seed"]],
        },
    )


@claim("exponent-tracks-tail")
def exponent_tracks_tail(ctx: Context) -> Measured:
    """α(s = light tail) − α(s = heavy tail) over the same widths; CIs in the details."""
    m = ctx.experiment()
    light, heavy = m["tail_light"], m["tail_heavy"]
    return Measured(
        light["alpha"] - heavy["alpha"],
        {
            "alpha_light": light["alpha"],
            "ci_light": light["ci"],
            "alpha_heavy": heavy["alpha"],
            "ci_heavy": heavy["ci"],
            "r2_heavy": heavy["r2"],
        },
    )


@claim("sample-efficiency")
def sample_efficiency(ctx: Context) -> Measured:
    """Samples the small model needs to reach its final loss / samples the large model needs."""
    eff = ctx.experiment()["efficiency"]
    return Measured(
        eff["samples_small"] / eff["samples_large"],
        {k: eff[k] for k in ("target_loss", "samples_small", "samples_large", "n_params")},
    )
