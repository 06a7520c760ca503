"""GLU Variants Improve Transformer (Shazeer, 2020) — reproduction.

https://arxiv.org/abs/2002.05202

Glossary: B batch, T time, C model width (d_model), F hidden width of the FFN (d_ff), V
vocabulary. Weight names follow `repro.nn.ffn`: w1 = Shazeer's W (or W_1), w3 = V, w2 = W_2.

FFN_ReLU(x)   = max(xW_1, 0) W_2                      (Eq. 2, no biases as in T5)
FFN_GEGLU(x)  = (GELU(xW) ⊗ xV) W_2                   (Eq. 6)
FFN_SwiGLU(x) = (Swish_1(xW) ⊗ xV) W_2                (Eq. 6)

What is checked here, claim by claim (see note.yaml):
1. the 2/3 rule (derived): FFNs built on the `meta` device and counted — three C×F' matrices
   with F' = 2F/3 hold exactly as many weights as two C×F ones whenever 3 divides 2F (T5-base:
   F = 3072 → 2048);
2. a tiny LM (measured): the same decoder (`repro.models.llama`, attention and embeddings drawn
   from the same seed) with four FFNs of equal parameter count — ReLU and GELU at width F,
   GEGLU and SwiGLU at 2F/3 — trained on the same batches from a Markov source whose entropy
   rate is the loss floor.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch
from torch import nn

from repro.data.markov import MarkovConfig, MarkovSource
from repro.lab.claims import Context, Measured, claim
from repro.lab.settings import check_head_split, setting
from repro.models.llama import Llama, LlamaConfig
from repro.nn.ffn import FeedForward, GLUFeedForward, glu_hidden_dim, llama_hidden_dim
from repro.study.plots import save_line_plot
from repro.train import evaluate_lm, train_lm

VARIANTS = ("relu", "gelu", "geglu", "swiglu")


@dataclass(frozen=True)
class Config:
    # the Markov source (order 2: each prediction needs the previous token)
    vocab_size: int = setting(16, "vocabulary size (V)", min=2)
    order: int = setting(2, "Markov order", min=1)
    # the tiny decoder; ReLU/GELU FFNs have width d_ff, GLU FFNs 2·d_ff/3
    d_model: int = setting(48, "model width (C)", min=1)
    d_ff: int = setting(192, "feed-forward width (F = 4C)", min=3)
    n_layers: int = setting(1, "transformer layers", min=1)
    n_heads: int = setting(4, "attention heads", min=1)
    seq_len: int = setting(16, "tokens per sequence (T)", min=2)
    batch: int = setting(32, "sequences per step (B)", min=1)
    steps: int = setting(100, "training steps", min=1)
    lr: float = setting(1e-2, "learning rate", min=0, min_exclusive=True)
    seeds: int = setting(
        1, "models per variant, seeded ctx.seed, ctx.seed + 1, …; losses are averaged", min=1
    )
    eval_batch: int = setting(512, "held-out sequences", min=1)

    def __post_init__(self) -> None:
        check_head_split(self.d_model, self.n_heads)


PRESETS = {"quick": Config(), "full": Config(steps=1500, seeds=3)}


# --- 1. the 2/3 rule, by counting built modules ------------------------------------------------


def ffn(variant: str, d_model: int, d_ff: int) -> nn.Module:
    """The FFN of `variant` at the parameter budget of a 2-matrix FFN of width d_ff."""
    if variant in ("relu", "gelu"):
        return FeedForward(d_model, d_ff, variant, bias=False)  # Eq. 2: two C×F matrices
    return GLUFeedForward(d_model, glu_hidden_dim(d_ff), variant)  # Eq. 6: three C×(2F/3)


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def count_on_meta(variant: str, d_model: int, d_ff: int) -> int:
    with torch.device("meta"):
        return n_params(ffn(variant, d_model, d_ff))


@claim("t5-base-ffn-params")
def t5_base_ffn_params(ctx: Context) -> Measured:
    """Weights of one SwiGLU FFN at T5-base (d_model 768, d_ff 3072 → 2048), counted."""
    d, f = 768, 3072  # §3.1: the T5 base model
    glu = count_on_meta("swiglu", d, f)
    return Measured(
        glu,
        {
            "d_ff_glu": glu_hidden_dim(f),
            "params": {v: count_on_meta(v, d, f) for v in VARIANTS},
        },
    )


@claim("two-thirds-rule-exact-when-divisible")
def two_thirds_rule_exact_when_divisible(ctx: Context) -> Measured:
    """Equal counts for every (C, F) with 3 | 2F on a grid; the rounding error otherwise."""
    grid = [(c, f) for c in (48, 256, 768, 1024, 4096) for f in (3 * c, 4 * c, 3072, 6144, 12288)]
    divisible = [(c, f) for c, f in grid if (2 * f) % 3 == 0]
    equal = all(count_on_meta("swiglu", c, f) == count_on_meta("relu", c, f) for c, f in divisible)
    # LLaMA-7B (C = 4096, F = 4C): 2F/3 = 10922.67 is rounded up to a multiple of 256 (§2.2)
    c = 4096
    llama_f = llama_hidden_dim(c, multiple_of=256)
    with torch.device("meta"):
        llama = n_params(GLUFeedForward(c, llama_f, "swiglu"))
    not_divisible = [(c, f) for c, f in grid if (2 * f) % 3]
    return Measured(
        equal,
        {
            "divisible_sizes_checked": len(divisible),
            "non_divisible_examples": [
                {
                    "d_model": c,
                    "d_ff": f,
                    "d_ff_glu": glu_hidden_dim(f),
                    "glu_over_relu": count_on_meta("swiglu", c, f) / count_on_meta("relu", c, f),
                }
                for c, f in not_divisible[:3]
            ],
            "llama_7b_d_ff": llama_f,
            "llama_7b_glu_over_relu": llama / count_on_meta("relu", c, 4 * c),
        },
    )


# --- 2. a tiny LM with each FFN ------------------------------------------------------------

EARLY_STEPS = 100  # the quick preset's whole run; the first 1/15 of the full one


def tiny_lm(cfg: Config, variant: str, seed: int, device: str) -> Llama:
    """LLaMA's decoder at toy size with its FFNs replaced by `variant`'s.

    The model is built under the same seed for every variant (same embeddings and attention);
    the new FFN weights are drawn from N(0, 0.02²) like the rest, from a generator seeded alike.
    """
    torch.manual_seed(seed)
    model = Llama(
        LlamaConfig(
            n_layers=cfg.n_layers,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            vocab_size=cfg.vocab_size,
            d_ff=glu_hidden_dim(cfg.d_ff),
            max_seq_len=cfg.seq_len,
            backend="sdpa",
        )
    )
    g = torch.Generator().manual_seed(seed)
    for layer in model.layers:
        layer.feed_forward = ffn(variant, cfg.d_model, cfg.d_ff)
        for p in layer.feed_forward.parameters():
            nn.init.normal_(p, std=0.02, generator=g)
    return model.to(device)


def experiment(cfg: Config, ctx: Context) -> dict:
    """Train every variant on the same batches; held-out loss of each, per seed."""
    source = MarkovSource(MarkovConfig(vocab_size=cfg.vocab_size, order=cfg.order))
    floor = source.entropy_rate()
    losses: dict[str, list[float]] = {v: [] for v in VARIANTS}
    curves: dict[str, list[list[float]]] = {v: [] for v in VARIANTS}
    params: dict[str, int] = {}
    for s in range(cfg.seeds):
        seed = ctx.seed + s
        g = torch.Generator().manual_seed(10_000 + seed)
        data = source.sample(cfg.steps * cfg.batch, cfg.seq_len + 1, g).to(ctx.device)
        held_out = source.sample(cfg.eval_batch, cfg.seq_len + 1, g).to(ctx.device)
        for variant in VARIANTS:
            model = tiny_lm(cfg, variant, seed, ctx.device)
            params[variant] = n_params(model)

            description = f"swiglu: {variant} FFN, seed {seed}"
            curves[variant].append(
                train_lm(model, data, cfg.steps, cfg.lr, ctx.progress, description)
            )
            losses[variant].append(evaluate_lm(model, held_out))
    assert len(set(params.values())) == 1, f"variants differ in size: {params}"
    if ctx.out_dir is not None:
        xs = list(range(1, cfg.steps + 1))
        save_line_plot(
            ctx.out_dir / "training_loss.svg",
            {
                v: (xs, [statistics.fmean(c[i] for c in runs) for i in range(cfg.steps)])
                for v, runs in curves.items()
            }
            | {"entropy floor": (xs, [floor] * cfg.steps)},
            "step",
            "training loss (nats/token)",
            f"FFN variants at equal parameters (mean of {cfg.seeds} seeds)",
        )
    mean = {v: statistics.fmean(ls) for v, ls in losses.items()}
    # every batch is fresh text, so the training loss over the first EARLY_STEPS steps is an
    # unbiased held-out estimate of how fast each variant learns
    early = {
        v: statistics.fmean(statistics.fmean(c[:EARLY_STEPS]) for c in runs)
        for v, runs in curves.items()
    }
    return {
        "loss": losses,
        "mean_loss": mean,
        "early_loss": early,
        "params": params,
        "entropy_floor": floor,
        "unigram_entropy": source.unigram_entropy(),
    }


@claim("glu-variants-not-worse-than-relu")
def glu_variants_not_worse_than_relu(ctx: Context) -> Measured:
    """Worst GLU variant's held-out loss minus ReLU's (nats/token; < 0 means GLU is better)."""
    m = ctx.experiment()
    gap = max(m["mean_loss"]["geglu"], m["mean_loss"]["swiglu"]) - m["mean_loss"]["relu"]
    return Measured(
        gap,
        {
            "mean_loss": m["mean_loss"],
            "loss_per_seed": m["loss"],
            "params": m["params"],
            "entropy_floor": m["entropy_floor"],
            "unigram_entropy": m["unigram_entropy"],
            "seeds": ctx.config.seeds,
        },
    )


@claim("swiglu-learns-faster-than-relu")
def swiglu_learns_faster_than_relu(ctx: Context) -> Measured:
    """SwiGLU's mean training loss over the first 100 steps minus ReLU's (seed mean, nats)."""
    m = ctx.experiment()
    early = m["early_loss"]
    return Measured(
        early["swiglu"] - early["relu"],
        {"early_loss": early, "steps": EARLY_STEPS, "seeds": ctx.config.seeds},
    )
