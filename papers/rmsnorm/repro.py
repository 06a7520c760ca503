"""Root Mean Square Layer Normalization (Zhang & Sennrich, NeurIPS 2019) — reproduction.

https://arxiv.org/abs/1910.07467

Glossary: B batch, T time, C model width (the paper's n, the number of summed inputs a_i that
are normalised together), M input width of the linear layer (the paper's m), V vocabulary.

LayerNorm (Eq. 2):  ā_i = (a_i − μ) / σ · g_i,  μ = mean(a),  σ = sqrt(mean((a − μ)²))
RMSNorm   (Eq. 4):  ā_i = a_i / RMS(a) · g_i,  RMS(a) = sqrt(mean(a²))

What is checked here, claim by claim (see note.yaml):
1. Table 1 (measured): every column of the invariance table, for the LayerNorm and the RMSNorm
   rows, is decided numerically in fp64 with ε = 0: apply the transformation, compare outputs
   (the RMSNorm row runs the library's `RMSNorm` module);
2. re-scaling invariance in practice (measured): the library's fp32 `RMSNorm` module at its
   default ε, inputs and weight matrices scaled by δ ∈ {1/2 … 1000};
3. RMSNorm = LayerNorm without bias on zero-mean inputs, and ≠ LayerNorm on inputs whose mean is
   not zero (measured, fp32, the module);
4. speed (benchmark): forward + backward of the two norms written the same way (the library's
   composite `*_ref` functions), plus PyTorch's kernels for the record;
5. a tiny LM (measured): the same pre-norm decoder (`repro.models.llama`) with its RMSNorms, and
   with every RMSNorm swapped for a LayerNorm; same seeds, same data from a Markov source whose
   entropy rate is the loss floor.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.data.markov import MarkovConfig, MarkovSource
from repro.lab.claims import Context, Measured, claim
from repro.lab.settings import check_head_split, setting
from repro.lab.threads import torch_threads
from repro.models.llama import Llama, LlamaConfig
from repro.nn.norm import RMSNorm, layer_norm_ref, rms_norm_ref
from repro.study.plots import save_line_plot
from repro.train import evaluate_lm, train_lm


@dataclass(frozen=True)
class Config:
    # the Markov source (order 2: the next token depends on the last two, so attention matters)
    vocab_size: int = setting(16, "vocabulary size (V)", min=2)
    order: int = setting(2, "Markov order", min=1)
    # the tiny decoder: LLaMA's block (pre-norm, SwiGLU, RoPE) at toy size
    d_model: int = setting(48, "model width (C)", min=1)
    n_layers: int = setting(1, "transformer layers", min=1)
    n_heads: int = setting(4, "attention heads", min=1)
    d_ff: int = setting(128, "feed-forward width", min=1)
    seq_len: int = setting(16, "tokens per sequence (T)", min=2)
    batch: int = setting(32, "sequences per step (B)", min=1)
    steps: int = setting(200, "training steps", min=1)
    lr: float = setting(1e-2, "learning rate", min=0, min_exclusive=True)
    seeds: int = setting(
        1, "models per norm, seeded ctx.seed, ctx.seed + 1, …; the gap is averaged", min=1
    )
    eval_batch: int = setting(512, "held-out sequences for the final loss", min=1)

    def __post_init__(self) -> None:
        check_head_split(self.d_model, self.n_heads, rotary=True)


PRESETS = {"quick": Config(), "full": Config(steps=1500, seeds=3)}


# --- 1. Table 1: which transformations leave the normalised output unchanged ----------------

# Table 1's columns, in the paper's order. Each maps (x (B, M), W (C, M), generator) to the
# transformed pair; the summed inputs are a = x Wᵀ (B, C).
TRANSFORMS: dict[str, Callable[[Tensor, Tensor, torch.Generator], tuple[Tensor, Tensor]]] = {
    # W → δW: every summed input scales by δ
    "weight matrix re-scaling": lambda x, W, g: (x, 3.7 * W),
    # W → W + 1γᵀ: every neuron's summed input shifts by the same γᵀx
    "weight matrix re-centering": lambda x, W, g: (
        x,
        W + torch.randn(1, W.shape[1], generator=g, dtype=W.dtype),
    ),
    # one row w_i → δ w_i: a single neuron's input scales
    "weight vector re-scaling": lambda x, W, g: (x, torch.cat([3.7 * W[:1], W[1:]])),
    # every training case x → δx
    "dataset re-scaling": lambda x, W, g: (3.7 * x, W),
    # every training case x → x + c, the same c for all
    "dataset re-centering": lambda x, W, g: (
        x + torch.randn(1, x.shape[1], generator=g, dtype=x.dtype),
        W,
    ),
    # one training case x_0 → δ x_0
    "single training case re-scaling": lambda x, W, g: (torch.cat([3.7 * x[:1], x[1:]]), W),
}


def _rmsnorm_module(a: Tensor, gain: Tensor) -> Tensor:
    """The library's `RMSNorm` module (the one the models use), fp64, ε = 0, gain g."""
    norm = RMSNorm(a.shape[-1], eps=0.0).to(a.dtype)
    with torch.no_grad():
        norm.weight.copy_(gain)
        return norm(a)


NORMS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "LayerNorm": lambda a, gain: layer_norm_ref(a, gain, None, eps=0.0),  # Eq. 2
    "RMSNorm": _rmsnorm_module,  # Eq. 4
}

INVARIANT_BELOW = 1e-9  # fp64 round-off of unit-scale outputs is ~1e-15
CHANGED_ABOVE = 1e-3  # a transformation that breaks invariance moves outputs by O(0.1)


def invariance_row(norm: str, seed: int) -> tuple[str, dict[str, float]]:
    """Table 1 row for `norm`: 'yes'/'no' per column, from the max output change in fp64."""
    g = torch.Generator().manual_seed(seed)
    B, M, C = 8, 32, 64
    x = torch.randn(B, M, generator=g, dtype=torch.float64)  # (B, M)
    W = torch.randn(C, M, generator=g, dtype=torch.float64) / M**0.5  # (C, M)
    gain = 1 + 0.1 * torch.randn(C, generator=g, dtype=torch.float64)  # (C,)
    f = NORMS[norm]
    base = f(x @ W.T, gain)  # (B, C)
    verdicts, changes = [], {}
    for name, transform in TRANSFORMS.items():
        x2, W2 = transform(x, W, g)
        change = float((f(x2 @ W2.T, gain) - base).abs().max())
        changes[name] = change
        if change < INVARIANT_BELOW:
            verdicts.append("yes")
        elif change > CHANGED_ABOVE:
            verdicts.append("no")
        else:
            verdicts.append("unclear")
    return ",".join(verdicts), changes


@claim("table1-rmsnorm-row")
def table1_rmsnorm_row(ctx: Context) -> Measured:
    row, changes = invariance_row("RMSNorm", ctx.seed)
    return Measured(row, {"columns": list(TRANSFORMS), "max_output_change": changes})


@claim("table1-layernorm-row")
def table1_layernorm_row(ctx: Context) -> Measured:
    row, changes = invariance_row("LayerNorm", ctx.seed)
    return Measured(row, {"columns": list(TRANSFORMS), "max_output_change": changes})


# --- 2. re-scaling invariance of the fp32 module, at its default ε --------------------------

SCALES = (0.5, 2.0, 10.0, 100.0, 1000.0)  # δ; below ~1/2 the ε inside the sqrt starts to show


@claim("rescaling-invariance-fp32")
def rescaling_invariance_fp32(ctx: Context) -> Measured:
    g = torch.Generator().manual_seed(ctx.seed)
    B, M, C = 64, 256, 512
    x = torch.randn(B, M, generator=g)  # (B, M)
    W = torch.randn(C, M, generator=g) / M**0.5  # (C, M): summed inputs a have RMS ≈ 1
    norm = RMSNorm(C)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(C, generator=g))  # a non-trivial gain g
        base = norm(x @ W.T)  # (B, C)
        input_diff = max(float((norm(d * (x @ W.T)) - base).abs().max()) for d in SCALES)
        weight_diff = max(float((norm(x @ (d * W).T) - base).abs().max()) for d in SCALES)
    return Measured(
        max(input_diff, weight_diff),
        {
            "scales": list(SCALES),
            "input_rescaling_max_diff": input_diff,
            "weight_matrix_rescaling_max_diff": weight_diff,
            "eps": norm.eps,
            "max_abs_output": float(base.abs().max()),
        },
    )


# --- 3. RMSNorm is LayerNorm on zero-mean inputs ---------------------------------------------


@claim("equals-layernorm-on-zero-mean")
def equals_layernorm_on_zero_mean(ctx: Context) -> Measured:
    g = torch.Generator().manual_seed(ctx.seed)
    B, C = 256, 512
    a = 3.0 * torch.randn(B, C, generator=g) + 1.5  # (B, C), mean far from 0
    a0 = a - a.mean(-1, keepdim=True)  # μ = 0: the case where Eq. 2 and Eq. 4 coincide
    norm = RMSNorm(C)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(C, generator=g))
        ln = F.layer_norm(a0, (C,), norm.weight, None, eps=norm.eps)  # same gain, no bias
        diff = float((norm(a0) - ln).abs().max())
        # and the same pair on the raw inputs, where they must differ
        diff_raw = float((norm(a) - F.layer_norm(a, (C,), norm.weight, None, norm.eps)).abs().max())
    return Measured(diff, {"max_diff_nonzero_mean_inputs": diff_raw})


@claim("differs-from-layernorm-on-nonzero-mean")
def differs_from_layernorm_on_nonzero_mean(ctx: Context) -> Measured:
    """The other half of §4: RMSNorm does not re-centre. On summed inputs whose mean is not 0
    the module must differ from LayerNorm (same gain, no bias): mean |difference|, fp32."""
    g = torch.Generator().manual_seed(ctx.seed)
    B, C = 256, 512
    a = torch.randn(B, C, generator=g) + 0.5  # (B, C): μ = 0.5 and σ = 1, so RMS = √1.25
    norm = RMSNorm(C)
    with torch.no_grad():
        norm.weight.copy_(1 + 0.1 * torch.randn(C, generator=g))
        ln = F.layer_norm(a, (C,), norm.weight, None, eps=norm.eps)
        diff = float((norm(a) - ln).abs().mean())
        # what Eq. 2 and Eq. 4 predict: a/RMS(a) − (a − μ)/σ, from the per-row statistics
        mu, var = a.mean(-1, keepdim=True), a.var(-1, correction=0, keepdim=True)
        predicted = (a / (var + mu**2).sqrt() - (a - mu) / var.sqrt()) * norm.weight
    return Measured(diff, {"predicted_mean_abs_diff": float(predicted.abs().mean())})


# --- 4. speed --------------------------------------------------------------------------------


def _fwd_bwd_seconds(fn: Callable[[], Tensor], grad: Tensor, reps: int, inner: int) -> float:
    """Best-of-`reps` mean time of `inner` forward + backward calls."""
    best = float("inf")
    for _ in range(reps):
        start = time.perf_counter()
        for _ in range(inner):
            fn().backward(grad)
        best = min(best, (time.perf_counter() - start) / inner)
    return best


@claim("speed-like-for-like", benchmark=True)
def speed_like_for_like(ctx: Context) -> Measured:
    """1 − t_RMS / t_LN for forward + backward, both written as the same kind of tensor ops."""
    g = torch.Generator().manual_seed(ctx.seed)
    N, C = 2048, 512  # N = B·T rows of a (B, T, C) activation
    x = torch.randn(N, C, generator=g, device=ctx.device, requires_grad=True)
    gain = torch.ones(C, device=ctx.device, requires_grad=True)
    bias = torch.zeros(C, device=ctx.device, requires_grad=True)
    grad = torch.randn(N, C, generator=g).to(ctx.device)
    candidates = {
        "layer_norm_ref": lambda: layer_norm_ref(x, gain, bias, eps=1e-5),
        "rms_norm_ref": lambda: rms_norm_ref(x, gain, eps=1e-6),
        "torch_layer_norm": lambda: F.layer_norm(x, (C,), gain, bias, 1e-5),
        "torch_rms_norm": lambda: F.rms_norm(x, (C,), gain, 1e-6),
    }
    times: dict[str, list[float]] = {k: [] for k in candidates}
    with torch_threads(1):  # one core: compares the arithmetic, not a pool sharing a busy CPU
        for _ in range(3):  # interleave the candidates so a busy neighbour hits them alike
            for name, fn in candidates.items():
                times[name].append(_fwd_bwd_seconds(fn, grad, reps=3, inner=5))
    best = {k: min(v) for k, v in times.items()}
    reduction = 1 - best["rms_norm_ref"] / best["layer_norm_ref"]
    return Measured(
        reduction,
        {
            "seconds_fwd_bwd": best,
            "shape": [N, C],
            "torch_kernels_reduction": 1 - best["torch_rms_norm"] / best["torch_layer_norm"],
            "device": ctx.device,
            "threads": 1,
        },
    )


# --- 5. a tiny language model with either norm -----------------------------------------------


def swap_rmsnorm_for_layernorm(model: nn.Module) -> nn.Module:
    """Replace every RMSNorm (gain g) by a LayerNorm (gain g and bias b, Eq. 2), in place."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, RMSNorm):
                setattr(module, name, nn.LayerNorm(child.weight.shape[0]))
    return model


def tiny_lm(cfg: Config, norm: str, seed: int, device: str) -> nn.Module:
    """The same decoder for both norms: norms hold no random weights, so the seed makes every
    other weight identical across the pair."""
    torch.manual_seed(seed)
    model = Llama(
        LlamaConfig(
            n_layers=cfg.n_layers,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            vocab_size=cfg.vocab_size,
            d_ff=cfg.d_ff,
            max_seq_len=cfg.seq_len,
            backend="sdpa",
        )
    )
    if norm == "LayerNorm":
        swap_rmsnorm_for_layernorm(model)
    return model.to(device)


def experiment(cfg: Config, ctx: Context) -> dict:
    """Train the RMSNorm and the LayerNorm decoder on the same batches; held-out losses."""
    source = MarkovSource(MarkovConfig(vocab_size=cfg.vocab_size, order=cfg.order))
    floor = source.entropy_rate()
    results: dict[str, list[float]] = {"RMSNorm": [], "LayerNorm": []}
    curves: dict[str, list[list[float]]] = {"RMSNorm": [], "LayerNorm": []}
    for s in range(cfg.seeds):
        seed = ctx.seed + s
        g = torch.Generator().manual_seed(10_000 + seed)
        data = source.sample(cfg.steps * cfg.batch, cfg.seq_len + 1, g).to(ctx.device)
        held_out = source.sample(cfg.eval_batch, cfg.seq_len + 1, g).to(ctx.device)
        for norm in results:
            model = tiny_lm(cfg, norm, seed, ctx.device)

            description = f"rmsnorm: {norm} LM, seed {seed}"
            curves[norm].append(train_lm(model, data, cfg.steps, cfg.lr, ctx.progress, description))
            results[norm].append(evaluate_lm(model, held_out))
    if ctx.out_dir is not None:
        xs = list(range(1, cfg.steps + 1))
        save_line_plot(
            ctx.out_dir / "training_loss.svg",
            {
                f"{norm} (mean of {cfg.seeds} seeds)": (
                    xs,
                    [statistics.fmean(c[i] for c in runs) for i in range(cfg.steps)],
                )
                for norm, runs in curves.items()
            }
            | {"entropy floor": (xs, [floor] * cfg.steps)},
            "step",
            "training loss (nats/token)",
            "Tiny LM on a Markov source: RMSNorm vs LayerNorm",
        )
    gaps = [r - ln for r, ln in zip(results["RMSNorm"], results["LayerNorm"], strict=True)]
    return {
        "loss_rmsnorm": results["RMSNorm"],
        "loss_layernorm": results["LayerNorm"],
        "gap_rms_minus_ln": gaps,
        "mean_gap": statistics.fmean(gaps),
        "entropy_floor": floor,
        "unigram_entropy": source.unigram_entropy(),
    }


@claim("tiny-lm-comparable-loss")
def tiny_lm_comparable_loss(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(
        m["mean_gap"],
        {
            "loss_rmsnorm": m["loss_rmsnorm"],
            "loss_layernorm": m["loss_layernorm"],
            "entropy_floor": m["entropy_floor"],
            "unigram_entropy": m["unigram_entropy"],
            "seeds": ctx.config.seeds,
        },
    )


@claim("tiny-lm-learns-the-source")
def tiny_lm_learns_the_source(ctx: Context) -> Measured:
    """Share of the learnable information the RMSNorm LM captures: (H_unigram − loss) /
    (H_unigram − entropy floor). 0 is a unigram model; above 1 is impossible without seeing
    the future (a leaking causal mask), so the claim is bounded on both sides."""
    m = ctx.experiment()
    share = [
        (m["unigram_entropy"] - loss) / (m["unigram_entropy"] - m["entropy_floor"])
        for loss in m["loss_rmsnorm"]
    ]
    return Measured(
        min(share),
        {
            "share_per_seed": share,
            "share_layernorm": [
                (m["unigram_entropy"] - loss) / (m["unigram_entropy"] - m["entropy_floor"])
                for loss in m["loss_layernorm"]
            ],
            "loss_rmsnorm": m["loss_rmsnorm"],
            "entropy_floor": m["entropy_floor"],
            "unigram_entropy": m["unigram_entropy"],
        },
    )
