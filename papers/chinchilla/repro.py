"""Training Compute-Optimal Large Language Models (Chinchilla) — reproduction.

Hoffmann, Borgeaud, Mensch, Buchatskaya, Cai, Rutherford, de Las Casas, Hendricks, Welbl, Clark,
Hennigan, Noland, Millican, van den Driessche, Damoc, Guy, Osindero, Simonyan, Elsen, Rae,
Vinyals, Sifre, 2022, https://arxiv.org/abs/2203.15556; and Besiroglu, Erdil, Barnett, You,
"Chinchilla Scaling: A replication attempt", 2024, https://arxiv.org/abs/2404.10102.

Glossary: N parameters, D training tokens (here: samples), C = 6·N·D training FLOPs,
L(N, D) = E + A/N^α + B/D^β (Eq. 2), a and b the exponents of N_opt ∝ C^a and D_opt ∝ C^b,
H the toy source's exact entropy floor.

Re-computed here:
1. Arithmetic on the paper's numbers: a = β/(α+β) from the Approach-3 constants (Table 2), tokens
   per parameter row by row (Table 3), 6ND for Chinchilla and Gopher, N_opt at Gopher's budget from
   the unrounded and the rounded constants, and from Epoch's refit.
2. A tiny IsoFLOP study (§3.2) on the Zipf-facts source: ≥ 3 budgets × ≥ 5 MLP sizes, each run on
   D = C/(6N) fresh samples under a cosine schedule matched to its own length, parabola minima,
   N_opt ∝ C^a with a bootstrap CI; Approach 3 (§3.3) fitted to the same runs; and a control
   source with no structure, whose profiles have no interior minimum.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import repro.data.zipf_facts as zipf_facts
import repro.lab.counting as counting
import repro.models.mlp as mlp
import repro.scaling.facts_runs as facts_runs
import repro.train as train_module
from repro.lab.claims import Context, Measured, claim
from repro.lab.settings import setting
from repro.scaling.approach3 import fit_approach3
from repro.scaling.closed_form import LossSurface
from repro.scaling.isoflop import fit_approach2, fit_parabola
from repro.scaling.sweep import run_sweep
from repro.study.plots import save_line_plot

SWEEP_CODE = [zipf_facts, mlp, counting, train_module, facts_runs]

# --- 1. the paper's numbers ----------------------------------------------------------------------

# Approach 3 as printed in §3.3 (Eq. 10) and unrounded in the arXiv TeX source (the values Epoch's
# notebook uses: log A, log B, log E, α, β)
HOFFMANN_ROUNDED = LossSurface(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
HOFFMANN_UNROUNDED = LossSurface(
    E=math.exp(0.5267228),
    A=math.exp(6.0073404),
    B=math.exp(6.0179186),
    alpha=0.33917084,
    beta=0.2849083,
)
EPOCH_REFIT = LossSurface(E=1.8172, A=482.01, B=2085.43, alpha=0.3478, beta=0.3658)  # Besiroglu §3
GOPHER_BUDGET = 5.76e23  # FLOPs, Table 3 ("1 Gopher unit")
TABLE3 = [  # Approach 1 projections: (parameters, FLOPs, tokens)
    (400e6, 1.92e19, 8.0e9),
    (1e9, 1.21e20, 20.2e9),
    (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12),
    (175e9, 3.85e24, 3.7e12),
    (280e9, 9.90e24, 5.9e12),
    (520e9, 3.43e25, 11.0e12),
    (1e12, 1.27e26, 21.2e12),
    (10e12, 1.30e28, 216.2e12),
]


@claim("table2-approach3-a")
def table2_approach3_a(ctx: Context) -> Measured:
    """a = β/(α+β) from the unrounded constants (Table 2 prints 0.46)."""
    return Measured(
        HOFFMANN_UNROUNDED.a,
        {"b": HOFFMANN_UNROUNDED.b, "a_from_rounded_constants": HOFFMANN_ROUNDED.a},
    )


@claim("table2-rounded-a")
def table2_rounded_a(ctx: Context) -> Measured:
    """a = 0.28/(0.34+0.28) from the rounded constants of Eq. 10 (Table 2: (0.454, 0.455))."""
    return Measured(HOFFMANN_ROUNDED.a)


def _tokens_per_param() -> list[float]:
    return [tokens / n for n, _, tokens in TABLE3]


def _table3_details() -> dict:
    return {
        "tokens_per_param": [round(r, 2) for r in _tokens_per_param()],
        "six_nd_over_flops": [round(6 * n * t / c, 3) for n, c, t in TABLE3],
    }


@claim("table3-tokens-per-param-min")
def table3_tokens_per_param_min(ctx: Context) -> Measured:
    """The smallest tokens/parameters over Table 3's rows."""
    return Measured(min(_tokens_per_param()), _table3_details())


@claim("table3-tokens-per-param-max")
def table3_tokens_per_param_max(ctx: Context) -> Measured:
    """The largest tokens/parameters over Table 3's rows."""
    return Measured(max(_tokens_per_param()), _table3_details())


@claim("six-nd-chinchilla")
def six_nd_chinchilla(ctx: Context) -> Measured:
    """6·70B·1.4T / 5.76e23."""
    return Measured(6 * 70e9 * 1.4e12 / GOPHER_BUDGET, {"six_nd": 6 * 70e9 * 1.4e12})


@claim("six-nd-gopher")
def six_nd_gopher(ctx: Context) -> Measured:
    """6·280B·300B / 5.76e23."""
    return Measured(6 * 280e9 * 300e9 / GOPHER_BUDGET, {"six_nd": 6 * 280e9 * 300e9})


# Table 4 shapes (layers, d_model, heads, key/value size); d_ff = 4·d_model, vocabulary 32,000 and
# a 2,048-token context as in Gopher
TABLE4 = {"chinchilla": (80, 8192, 64, 128), "gopher": (80, 16384, 128, 128)}
VOCAB, SEQ_LEN = 32_000, 2048


# [appendix-f]
def appendix_f_flops_per_token(
    n_layers: int, d_model: int, n_heads: int, kv_size: int, d_ff: int, vocab: int, seq_len: int
) -> float:
    """Training FLOPs per token counted op by op as App. F does (not 6N): embeddings, per layer
    the Q/K/V projections, the QK logits, the softmax (3 ops per score), the softmax-weighted
    values and the output projection, the two FFN matmuls, then the output logits; the backward
    pass costs twice the forward. Returns (forward + backward) / seq_len."""
    inner = n_heads * kv_size
    embed = 2 * seq_len * vocab * d_model
    attention = (
        2 * 3 * seq_len * d_model * inner  # Q, K, V projections
        + 2 * seq_len * seq_len * inner  # QK^T logits
        + 3 * n_heads * seq_len * seq_len  # softmax
        + 2 * seq_len * seq_len * inner  # softmax @ V
        + 2 * seq_len * inner * d_model  # output projection
    )
    ffn = 2 * seq_len * (d_model * d_ff + d_ff * d_model)
    logits = 2 * seq_len * d_model * vocab
    forward = embed + n_layers * (attention + ffn) + logits
    return 3 * forward / seq_len


# [/appendix-f]


def _appendix_f(model: str, tokens: float) -> Measured:
    layers, d, heads, kv = TABLE4[model]
    per_token = appendix_f_flops_per_token(layers, d, heads, kv, 4 * d, VOCAB, SEQ_LEN)
    total = per_token * tokens
    return Measured(
        total / GOPHER_BUDGET,
        {"flops": total, "per_token": per_token, "shape": TABLE4[model], "tokens": tokens},
    )


@claim("appendix-f-chinchilla")
def appendix_f_chinchilla(ctx: Context) -> Measured:
    """App. F's op-by-op count for Chinchilla's Table 4 shape on 1.4T tokens, over 5.76e23."""
    return _appendix_f("chinchilla", 1.4e12)


@claim("appendix-f-gopher")
def appendix_f_gopher(ctx: Context) -> Measured:
    """The same count for Gopher's Table 4 shape on 300B tokens, over 5.76e23."""
    return _appendix_f("gopher", 300e9)


def _at_gopher(surface: LossSurface) -> dict:
    n, d = surface.optimal(GOPHER_BUDGET)
    return {"n_opt": n, "d_opt": d, "tokens_per_param": d / n, "a": surface.a}


@claim("nopt-gopher-unrounded")
def nopt_gopher_unrounded(ctx: Context) -> Measured:
    """N_opt at C = 5.76e23 from the unrounded Approach-3 constants (Eq. 4), in billions."""
    r = _at_gopher(HOFFMANN_UNROUNDED)
    return Measured(r["n_opt"] / 1e9, r)


@claim("nopt-gopher-rounded")
def nopt_gopher_rounded(ctx: Context) -> Measured:
    """The same with the rounded constants printed in the paper's body, in billions."""
    r = _at_gopher(HOFFMANN_ROUNDED)
    return Measured(r["n_opt"] / 1e9, r)


@claim("epoch-nopt-gopher")
def epoch_nopt_gopher(ctx: Context) -> Measured:
    """N_opt at C = 5.76e23 from Epoch's refit, in billions."""
    r = _at_gopher(EPOCH_REFIT)
    return Measured(r["n_opt"] / 1e9, r)


@claim("epoch-tokens-per-param")
def epoch_tokens_per_param(ctx: Context) -> Measured:
    """D_opt/N_opt at C = 5.76e23 from Epoch's refit."""
    r = _at_gopher(EPOCH_REFIT)
    return Measured(r["tokens_per_param"], r)


# --- 2. the tiny IsoFLOP study --------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    # the facts source (repro/data/zipf_facts.py)
    zipf_s: float = setting(1.5, "Zipf exponent s of the key frequencies", min=0.0)
    n_keys: int = setting(4096, "number of keys K", min=2)
    noise: float = setting(0.1, "label noise ε", min=0.0, max=1.0)
    vocab_size: int = setting(32, "label vocabulary V", min=2)
    code_dim: int = setting(16, "dimension of each key's input code", min=1)
    # the IsoFLOP grid
    budgets: tuple[float, ...] = setting(
        (3e7, 1.2e8, 4.8e8), "compute budgets C (FLOPs)", min=1, distinct=True
    )
    ladder: tuple[int, ...] = setting(
        (3, 4, 6, 8, 11, 16, 23, 32, 45, 64, 90, 128), "MLP widths, √2 apart", min=1
    )
    sizes: int = setting(5, "model sizes per budget", min=3)
    rung_step: int = setting(2, "ladder rungs between neighbouring sizes of one budget", min=1)
    budget_shift: int = setting(1, "ladder rungs the window moves per budget", min=0)
    seeds: tuple[int, ...] = setting((0,), "seeds of every run", min=0, distinct=True)
    batch: int = setting(128, "samples per step", min=1)
    lr: float = setting(
        1e-2, "peak learning rate (warm-up + cosine to 10%)", min=0, min_exclusive=True
    )
    # the control and the fits
    control_noise: float = setting(1.0, "label noise of the no-structure control", min=0.0, max=1.0)
    control_budgets: int = setting(1, "how many of the budgets the control repeats", min=1)
    min_depth: float = setting(
        0.02, "how far (nats) an interior minimum must dip below both ends", min=0.0
    )
    n_boot: int = setting(500, "bootstrap resamples of a", min=10)
    # Table 2 reports 10th–90th percentiles; the same 80% interval here
    level: float = setting(0.8, "confidence level of the bootstrap interval", min=0.5, max=0.999)
    a3_starts: int = setting(32, "L-BFGS starts of Approach 3 (0: all 4,500 grid points)", min=0)
    jobs: int = setting(1, "sweep points trained in parallel (processes)", min=1, parallel=True)


PRESETS = {
    "quick": Config(),
    "full": Config(
        budgets=(3e7, 1.2e8, 4.8e8, 1.92e9),
        sizes=7,
        rung_step=1,
        seeds=(0, 1, 2),
        control_budgets=4,
        a3_starts=0,
        jobs=2,
    ),
}


def _widths(cfg: Config, i: int) -> list[int]:
    """The sizes of budget i: `sizes` rungs, `rung_step` apart, starting at i·budget_shift."""
    start = i * cfg.budget_shift
    picked = cfg.ladder[start : start + cfg.rung_step * (cfg.sizes - 1) + 1 : cfg.rung_step]
    if len(picked) < cfg.sizes:
        raise ValueError(f"the width ladder is too short for budget {i}: got {list(picked)}")
    return list(picked)


def _runs(cfg: Config, ctx: Context, noise: float, n_budgets: int, name: str) -> list[dict]:
    points = []
    for i, budget in enumerate(cfg.budgets[:n_budgets]):
        for seed in cfg.seeds:
            for w in _widths(cfg, i):
                points.append(
                    {
                        "n_keys": cfg.n_keys,
                        "zipf_s": cfg.zipf_s,
                        "vocab_size": cfg.vocab_size,
                        "noise": noise,
                        "code_dim": cfg.code_dim,
                        "source_seed": 1234,
                        "width": w,
                        "n_hidden": 1,
                        "seed": seed,
                        "budget": budget,
                        "batch": cfg.batch,
                        "lr": cfg.lr,
                        "eval_every": 0,
                        "device": ctx.device,
                    }
                )
    runs = run_sweep(
        "chinchilla-isoflop",
        points,
        facts_runs.budget_run,
        SWEEP_CODE,
        jobs=cfg.jobs,
        progress=ctx.progress,
        description=name,
    )
    return [
        {"budget": p["budget"], "seed": p["seed"], **{k: r[k] for k in r if k != "curve"}}
        for p, r in zip(points, runs, strict=True)
    ]


def _approach2(runs: list[dict], cfg: Config) -> dict:
    fit = fit_approach2(
        [r["budget"] for r in runs],
        [r["n_params"] for r in runs],
        [r["loss"] for r in runs],
        n_boot=cfg.n_boot,
        level=cfg.level,
        min_depth=cfg.min_depth,
    )
    return {
        "a": fit.a,
        "ci": None if fit.ci is None else [fit.ci.low, fit.ci.high],
        "boot_samples": None if fit.ci is None else fit.ci.samples,
        "minima": [
            {
                "budget": m.budget,
                "n_opt": m.n_opt,
                "d_opt": m.d_opt,
                "loss": m.loss_opt,
                "interior": m.interior,
                "curvature": m.curvature,
                "depth": m.depth,
            }
            for m in fit.minima
        ],  # fmt: skip
        "interior_fraction": sum(m.interior for m in fit.minima) / len(fit.minima),
    }


def experiment(cfg: Config, ctx: Context) -> dict:
    runs = _runs(cfg, ctx, cfg.noise, len(cfg.budgets), "IsoFLOP runs")
    control = _runs(cfg, ctx, cfg.control_noise, cfg.control_budgets, "control (ε = 1) runs")
    a2 = _approach2(runs, cfg)
    a3 = fit_approach3(
        [r["n_params"] for r in runs],
        [r["samples"] for r in runs],
        [r["loss"] for r in runs],
        starts=cfg.a3_starts or None,
    )
    s = a3.surface
    metrics = {
        "runs": runs,
        "floor": runs[0]["floor"],
        "approach2": a2,
        "approach3": {
            "E": s.E,
            "A": s.A,
            "B": s.B,
            "alpha": s.alpha,
            "beta": s.beta,
            "a": s.a,
            "objective": a3.objective,
            "starts": a3.starts,
        },  # fmt: skip
        "control": {
            "runs": control,
            "interior_fraction": _interior_fraction(control, cfg.min_depth),
        },
    }
    if ctx.out_dir is not None:
        _plots(metrics, ctx)
    return metrics


def _interior_fraction(runs: list[dict], min_depth: float) -> float:
    """Share of budgets whose profile has an interior minimum (works for a single budget too)."""
    from repro.scaling.isoflop import isoflop_minimum

    budgets = sorted({r["budget"] for r in runs})
    inside = [
        isoflop_minimum(
            c,
            [r["n_params"] for r in runs if r["budget"] == c],
            [r["loss"] for r in runs if r["budget"] == c],
            min_depth,
        ).interior
        for c in budgets
    ]
    return sum(inside) / len(inside)


def _plots(m: dict, ctx: Context) -> None:
    series = {}
    for minimum in m["approach2"]["minima"]:
        c = minimum["budget"]
        rs = [r for r in m["runs"] if r["budget"] == c]
        sizes = sorted({r["n_params"] for r in rs})
        mean = [
            sum(r["loss"] for r in rs if r["n_params"] == n) / sum(r["n_params"] == n for r in rs)
            for n in sizes
        ]
        series[f"C = {c:.2g}"] = (sizes, mean)
        c0, c1, c2 = fit_parabola([math.log(r["n_params"]) for r in rs], [r["loss"] for r in rs])
        xs = [sizes[0] * (sizes[-1] / sizes[0]) ** (k / 40) for k in range(41)]
        series[f"parabola, C = {c:.2g}"] = (
            xs,
            [c0 + c1 * math.log(x) + c2 * math.log(x) ** 2 for x in xs],
        )
    minima = m["approach2"]["minima"]
    series["parabola minima"] = ([p["n_opt"] for p in minima], [p["loss"] for p in minima])
    save_line_plot(ctx.out_dir / "isoflop_profiles.svg", series, "parameters N", "loss (nats)",
                   "IsoFLOP profiles (Approach 2)", logx=True)  # fmt: skip
    a2, a3 = m["approach2"], m["approach3"]
    budgets = [p["budget"] for p in minima]
    n_opt = [p["n_opt"] for p in minima]
    k = sum(math.log(n) - a2["a"] * math.log(c) for n, c in zip(n_opt, budgets, strict=True)) / len(
        budgets
    )
    surface = LossSurface(a3["E"], a3["A"], a3["B"], a3["alpha"], a3["beta"])
    save_line_plot(
        ctx.out_dir / "nopt_vs_c.svg",
        {
            "parabola minima": (budgets, n_opt),
            f"Approach 2 fit, a = {a2['a']:.2f}": (
                budgets,
                [math.exp(k) * c ** a2["a"] for c in budgets],
            ),
            f"Approach 3 closed form, a = {a3['a']:.2f}": (
                budgets,
                [surface.optimal(c)[0] for c in budgets],
            ),
        },
        "compute C (FLOPs)",
        "N_opt",
        "compute-optimal model size",
        logx=True,
        logy=True,
    )


@claim("isoflop-interior-minimum")
def isoflop_interior_minimum(ctx: Context) -> Measured:
    """Share of budgets whose IsoFLOP profile has an interior minimum (parabola and lowest run)."""
    m = ctx.experiment()
    return Measured(
        m["approach2"]["interior_fraction"],
        {"minima": m["approach2"]["minima"], "control_fraction": m["control"]["interior_fraction"]},
    )


@claim("control-no-interior-minimum")
def control_no_interior_minimum(ctx: Context) -> Measured:
    """The same share on a source whose labels ignore the keys (ε = 1)."""
    m = ctx.experiment()
    return Measured(
        m["control"]["interior_fraction"],
        {"control_losses": [(r["budget"], r["n_params"], r["loss"]) for r in m["control"]["runs"]]},
    )


@claim("nopt-grows-with-c")
def nopt_grows_with_c(ctx: Context) -> Measured:
    """Lower end of the bootstrap CI of a in N_opt ∝ C^a (Approach 2)."""
    a2 = ctx.experiment()["approach2"]
    if a2["ci"] is None:
        raise ValueError("no bootstrap resample could be fitted")
    return Measured(
        a2["ci"][0],
        {
            "a": a2["a"],
            "ci": a2["ci"],
            "resamples": a2["boot_samples"],
            "n_opt": [p["n_opt"] for p in a2["minima"]],
        },  # fmt: skip
    )


@claim("approach3-vs-approach2")
def approach3_vs_approach2(ctx: Context) -> Measured:
    """a from Approach 3 minus a from Approach 2, fitted to the same runs."""
    m = ctx.experiment()
    a2, a3 = m["approach2"], m["approach3"]
    return Measured(
        a3["a"] - a2["a"],
        {
            "a2": a2["a"],
            "a2_ci": a2["ci"],
            "a3": a3["a"],
            "E3": a3["E"],
            "H": m["floor"],
            "E3_over_H": a3["E"] / m["floor"],
            "alpha3": a3["alpha"],
            "beta3": a3["beta"],
        },  # fmt: skip
    )


@claim("approach3-floor")
def approach3_floor(ctx: Context) -> Measured:
    """E of the Approach-3 fit divided by the source's exact entropy floor H."""
    m = ctx.experiment()
    return Measured(m["approach3"]["E"] / m["floor"], {"E3": m["approach3"]["E"], "H": m["floor"]})
