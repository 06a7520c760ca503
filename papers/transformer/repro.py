"""Attention Is All You Need (Vaswani et al., NIPS 2017) — reproduction.

https://arxiv.org/abs/1706.03762

What this file re-computes, claim by claim (the note's `claims`):
- Table 3 sizes: the base and big models are built on the meta device and counted;
- §3.2.1 and its footnote, read from the library's attention (`repro.nn.attention`, V = I so
  the output rows are the softmax probabilities): a dot product of d_k unit-variance components
  has variance d_k (the scale switched off), the 1/√d_k factor brings it back to 1, and without
  it the softmax saturates (its Jacobian vanishes);
- §3.5: for every offset k, PE(pos + k) is a fixed linear map of PE(pos) (a block rotation), on
  the table the model adds to its embeddings;
- §5.3-5.4: a tiny encoder-decoder trained with label smoothing ε_ls = 0.1 and the warm-up
  schedule of Eq. 3 learns to reverse sequences, decoded greedily.

Glossary: B batch, S source length, T target length, V vocabulary, C model width (d_model),
D key width (d_k), R query rows, K keys per row, P positions.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from repro.data.tasks import BOS, SEP, reverse_task
from repro.lab.claims import Context, Measured, claim
from repro.lab.counting import build_preset, count_parameters, param_count, preset_config
from repro.lab.settings import check_head_split, setting
from repro.models.transformer import Transformer, TransformerConfig
from repro.nn.attention import attention, attention_ref
from repro.study.plots import save_line_plot


@dataclass(frozen=True)
class Config:
    # §3.2.1: random queries and keys with unit-variance components
    d_ks: tuple[int, ...] = setting(
        (16, 32, 64, 128, 256, 512, 1024), "key dimensions d_k of the scaling check", min=1
    )
    n_rows: int = setting(500, "query rows per d_k", min=1)
    n_keys: int = setting(64, "keys per row (one softmax over K logits)", min=2)
    # §3.5: sinusoidal encoding of width pe_dim, positions 0..pe_positions-1 shifted by offsets
    pe_dim: int = setting(512, "width of the sinusoidal encoding (even)", min=2)
    pe_positions: int = setting(256, "positions encoded", min=1)
    pe_offsets: tuple[int, ...] = setting(
        (1, 2, 5, 17, 64, 255), "position offsets k of the linear-map check", min=1
    )
    # §5: the tiny translation stand-in (reverse a sequence of symbols)
    seq_len: int = setting(8, "symbols per sequence to reverse", min=1)
    vocab_size: int = setting(
        16, "vocabulary size; PAD, BOS, SEP and 13 symbols (repro.data.tasks)", min=4
    )
    n_layers: int = setting(2, "layers of encoder and decoder", min=1)
    d_model: int = setting(64, "model width", min=1)
    n_heads: int = setting(4, "attention heads", min=1)
    d_ff: int = setting(128, "feed-forward width", min=1)
    dropout: float = setting(0.1, "P_drop (§5.4)", min=0, max=1)
    label_smoothing: float = setting(0.1, "ε_ls (§5.4)", min=0, max=1, min_exclusive=False)
    warmup: int = setting(100, "warmup_steps of Eq. 3 (4000 in the paper, for 100K steps)", min=1)
    steps: int = setting(250, "training steps", min=1)
    batch_size: int = setting(64, "sequences per step", min=1)
    eval_size: int = setting(1000, "held-out sequences", min=1)

    def __post_init__(self) -> None:
        check_head_split(self.d_model, self.n_heads)


PRESETS = {
    "quick": Config(),
    "full": Config(n_rows=4000, seq_len=12, vocab_size=24, steps=1500, warmup=200, eval_size=2000),
}


# --- §3.2.1: why divide by √d_k ------------------------------------------------------------


def attention_probabilities(q: Tensor, k: Tensor, scaled: bool, backend: str = "ref") -> Tensor:
    """The library's softmax(q kᵀ · scale) read out by attending over an identity V.

    q (R, 1, D), k (R, K, D): each query row meets its own K keys (the batch dimension of
    `repro.nn.attention`). scaled=True is Eq. 1 as the library computes it (default scale) through
    `backend`; False switches the 1/√d_k off (scale = 1), the control. -> probabilities (R, K).
    """
    R, K, D = k.shape
    # V = I: output row = p. Kernels want V as wide as K's head dim, so I is fed D columns at a
    # time (zero-padded to a multiple of D).
    eye = torch.eye(K, math.ceil(K / D) * D, dtype=k.dtype)  # (K, ≥K)
    parts = []
    for v in eye.split(D, dim=1):  # (K, D) each
        v = v.expand(R, 1, K, D)
        if scaled:
            parts.append(attention(q[:, None], k[:, None], v, backend=backend)[:, 0, 0])
        else:
            parts.append(attention_ref(q[:, None], k[:, None], v, scale=1.0)[:, 0, 0])
    return torch.cat(parts, dim=1)[:, :K]  # (R, K)


def logit_variance(p: Tensor) -> float:
    """Var of the logits behind p: log p is the logit minus its row's log-sum-exp, so the
    within-row (unbiased) variance of log p is that of the logits (E[q·k | q] = 0)."""
    return float(p.log().var(dim=1).mean())


def softmax_jacobian_norm(p: Tensor) -> Tensor:
    """‖∂softmax(s)/∂s‖_F per row from the probabilities, J = diag(p) − p pᵀ. p (R, K) -> (R,)."""
    J = torch.diag_embed(p) - p[:, :, None] * p[:, None, :]  # (R, K, K)
    return J.flatten(1).norm(dim=1)


@functools.lru_cache(maxsize=4)
def dot_product_stats(d_ks: tuple[int, ...], n_rows: int, n_keys: int, seed: int) -> dict:
    """Var(q·k), Var(q·k/√d_k) and the median softmax-Jacobian norm with and without scaling,
    all read from the library's attention (`repro.nn.attention`) in fp64.

    For each d_k, R queries each meet K fresh keys; every component is N(0, 1) (footnote 4).
    """
    g = torch.Generator().manual_seed(seed)
    keys = ("var", "var_scaled", "var_scaled_flash", "jac", "jac_scaled")
    stats: dict[str, list[float]] = {key: [] for key in keys}
    for d in d_ks:
        probs: dict[str, list[Tensor]] = {"raw": [], "ref": [], "flash": []}
        for start in range(0, n_rows, 100):  # chunks keep the (R, K, D) keys small
            r = min(100, n_rows - start)
            q = torch.randn(r, 1, d, generator=g, dtype=torch.float64)  # (R, 1, D)
            k = torch.randn(r, n_keys, d, generator=g, dtype=torch.float64)  # (R, K, D)
            probs["raw"].append(attention_probabilities(q, k, scaled=False))
            probs["ref"].append(attention_probabilities(q, k, scaled=True, backend="ref"))
            probs["flash"].append(attention_probabilities(q, k, scaled=True, backend="flash"))
        p_raw, p_scaled = torch.cat(probs["raw"]), torch.cat(probs["ref"])  # (R, K)
        stats["var"].append(logit_variance(p_raw))
        stats["var_scaled"].append(logit_variance(p_scaled))
        stats["var_scaled_flash"].append(logit_variance(torch.cat(probs["flash"])))
        stats["jac"].append(float(softmax_jacobian_norm(p_raw).median()))
        stats["jac_scaled"].append(float(softmax_jacobian_norm(p_scaled).median()))
    return stats


# --- §3.5: relative positions are linear maps ---------------------------------------------


def shift_matrix(k: int, dim: int, base: float = 10000.0) -> Tensor:
    """M_k with PE(pos + k) = M_k PE(pos): one 2×2 rotation by k·ω_i per (sin, cos) pair; (C, C)."""
    assert dim % 2 == 0, f"sin/cos pairs need an even width, got {dim}"
    omega = base ** (-torch.arange(0, dim, 2, dtype=torch.float64) / dim)  # ω_i, (C/2,)
    c, s = torch.cos(k * omega), torch.sin(k * omega)  # (C/2,)
    i = torch.arange(0, dim, 2)  # row of each pair's sine
    M = torch.zeros(dim, dim, dtype=torch.float64)  # (C, C)
    M[i, i], M[i, i + 1] = c, s  # sin(a + b) = cos b · sin a + sin b · cos a
    M[i + 1, i], M[i + 1, i + 1] = -s, c  # cos(a + b) = −sin b · sin a + cos b · cos a
    return M


# --- §5: training recipe on a toy transduction task ---------------------------------------


def warmup_lr(step: int, d_model: int, warmup: int) -> float:
    """Eq. 3: lrate = d_model^-0.5 · min(step^-0.5, step · warmup^-1.5), step counted from 1."""
    return d_model**-0.5 * min(step**-0.5, step * warmup**-1.5)


def label_smoothed_loss(logits: Tensor, target: Tensor, eps: float) -> Tensor:
    """Cross-entropy against q = (1 − ε)·onehot + ε/V (§5.4). logits (N, V), target (N,)."""
    logp = logits.float().log_softmax(-1)  # (N, V)
    nll = -logp.gather(-1, target[:, None]).squeeze(-1)  # −log p(target), (N,)
    uniform = -logp.mean(-1)  # −(1/V) Σ_v log p(v), (N,)
    return ((1 - eps) * nll + eps * uniform).mean()


def smoothed_target_entropy(vocab_size: int, eps: float) -> float:
    """H(q): the lowest loss label smoothing allows (reached by predicting q itself)."""
    top, rest = 1 - eps + eps / vocab_size, eps / vocab_size
    return -(top * math.log(top) + (vocab_size - 1) * rest * math.log(rest))


def reversal_batch(n: int, cfg: Config, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """source (B, S), decoder input [BOS, y] and output [y, SEP] (B, T+1); y = reversed source."""
    src, y = reverse_task(n, cfg.seq_len, cfg.vocab_size, g)  # (B, S), (B, T)
    bos = torch.full((n, 1), BOS, dtype=torch.long)
    eos = torch.full((n, 1), SEP, dtype=torch.long)  # SEP ends the output sentence
    return src, torch.cat([bos, y], 1), torch.cat([y, eos], 1)


def experiment(cfg: Config, ctx: Context) -> dict:
    """Train the encoder-decoder on reversal with §5.3's Adam + Eq. 3 and §5.4's ε_ls; decode."""
    model_cfg = TransformerConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        d_ff=cfg.d_ff,
        vocab_size=cfg.vocab_size,
        max_seq_len=cfg.seq_len + 1,
        dropout=cfg.dropout,
        backend="sdpa",
    )
    model = Transformer(model_cfg).to(ctx.device)
    # §5.3: Adam with β1 = 0.9, β2 = 0.98, ε = 1e-9; the schedule supplies the whole rate.
    # foreach: as in repro.train, the same numbers, fewer kernel calls
    opt = torch.optim.Adam(model.parameters(), lr=1.0, betas=(0.9, 0.98), eps=1e-9, foreach=True)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: warmup_lr(s + 1, cfg.d_model, cfg.warmup)
    )
    g = torch.Generator().manual_seed(ctx.seed)
    losses = []
    model.train()
    for step in range(cfg.steps):
        src, dec_in, dec_out = (t.to(ctx.device) for t in reversal_batch(cfg.batch_size, cfg, g))
        logits = model(src, dec_in)  # teacher forcing: (B, T+1, V)
        # §5.4: cross-entropy against (1 − ε_ls)·onehot + ε_ls/V
        loss = label_smoothed_loss(logits.flatten(0, 1), dec_out.flatten(), cfg.label_smoothing)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()  # Eq. 3 for the next step
        losses.append(loss.item())
        if step % 10 == 0 or step == cfg.steps - 1:
            ctx.progress("transformer: reversal", step + 1, cfg.steps)
    model.eval()

    # Held-out problems (a generator the training never touched), greedy decoding (§6.1 uses
    # beam search; argmax is enough to read out a deterministic task).
    g_eval = torch.Generator().manual_seed(10**6 + ctx.seed)
    src, _, dec_out = (t.to(ctx.device) for t in reversal_batch(cfg.eval_size, cfg, g_eval))
    out = model.greedy_decode(src, BOS, SEP, max_len=cfg.seq_len + 1)[:, 1:]  # drop BOS
    floor = smoothed_target_entropy(cfg.vocab_size, cfg.label_smoothing)
    if ctx.out_dir is not None:
        steps = list(range(1, cfg.steps + 1))
        save_line_plot(
            ctx.out_dir / "loss.svg",
            {
                "training loss (ε_ls = 0.1)": (steps, losses),
                "H(q): smoothing floor": (steps, [floor] * cfg.steps),
            },
            "step",
            "loss (nats)",
            f"Reversing {cfg.seq_len} symbols: encoder-decoder, Eq. 3 schedule",
        )
    return {
        "exact_match": float((out == dec_out).all(1).float().mean()),
        "token_accuracy": float((out == dec_out).float().mean()),
        "final_loss": sum(losses[-20:]) / len(losses[-20:]),
        "loss_floor": floor,
        "losses": losses,
    }


# --- claims --------------------------------------------------------------------------------

# Table 3's figures, used only to report which vocabulary size would reproduce each of them.
TABLE3_PARAMS = {"transformer-base": 65e6, "transformer-big": 213e6}


def _table3_size(preset: str) -> Measured:
    """Build `preset` on the meta device, count its distinct parameters, explain the gap."""
    cfg = preset_config(preset)
    total = count_parameters(build_preset(preset))
    non_embedding = param_count(cfg, embeddings=False)
    assert total == param_count(cfg), f"built {total} != analytic {param_count(cfg)}"
    paper = TABLE3_PARAMS[preset]
    return Measured(
        total / 1e6,
        {
            "parameters": total,
            "shared_embedding": total - non_embedding,  # one V×C matrix (§3.4)
            "non_embedding": non_embedding,
            "vocab_size": cfg.vocab_size,
            # the vocabulary that would make the count equal the paper's figure exactly
            "vocab_matching_paper": round((paper - non_embedding) / cfg.d_model),
        },
    )


@claim("base-params")
def base_params(ctx: Context) -> Measured:
    return _table3_size("transformer-base")


@claim("big-params")
def big_params(ctx: Context) -> Measured:
    return _table3_size("transformer-big")


@claim("dot-product-variance")
def dot_product_variance(ctx: Context) -> Measured:
    """Least-squares slope a of Var(q·k) = a·d_k (footnote 4 predicts a = 1)."""
    cfg = ctx.config
    st = dot_product_stats(cfg.d_ks, cfg.n_rows, cfg.n_keys, ctx.seed)
    d = torch.tensor(cfg.d_ks, dtype=torch.float64)
    v = torch.tensor(st["var"], dtype=torch.float64)
    slope = float((d * v).sum() / (d * d).sum())  # through the origin
    x, y = d.log(), v.log()
    exponent = float(((x - x.mean()) * (y - y.mean())).sum() / ((x - x.mean()) ** 2).sum())
    if ctx.out_dir is not None:
        save_line_plot(
            ctx.out_dir / "dot_product_variance.svg",
            {"Var(q·k)": (cfg.d_ks, st["var"]), "Var(q·k/√d_k)": (cfg.d_ks, st["var_scaled"])},
            "d_k",
            "variance",
            "Dot products of unit-variance q, k",
            logx=True,
            logy=True,
        )
    return Measured(
        slope, {"d_k": list(cfg.d_ks), "variance": st["var"], "log_log_exponent": exponent}
    )


@claim("scaled-variance")
def scaled_variance(ctx: Context) -> Measured:
    """The variance of q·k/√d_k farthest from 1 over all d_k, in the reference and the
    FlashAttention backends of the library."""
    cfg = ctx.config
    st = dot_product_stats(cfg.d_ks, cfg.n_rows, cfg.n_keys, ctx.seed)
    worst = max(st["var_scaled"] + st["var_scaled_flash"], key=lambda v: abs(v - 1))
    return Measured(
        worst,
        {
            "d_k": list(cfg.d_ks),
            "scaled_variance_ref": st["var_scaled"],
            "scaled_variance_flash": st["var_scaled_flash"],
            "unscaled_variance_control": st["var"],
        },
    )


@claim("softmax-saturation")
def softmax_saturation(ctx: Context) -> Measured:
    """Median ‖softmax Jacobian‖ unscaled / scaled at the largest d_k."""
    cfg = ctx.config
    st = dot_product_stats(cfg.d_ks, cfg.n_rows, cfg.n_keys, ctx.seed)
    ratios = [a / b for a, b in zip(st["jac"], st["jac_scaled"], strict=True)]
    return Measured(
        ratios[-1],
        {
            "d_k": list(cfg.d_ks),
            "median_jacobian_unscaled": st["jac"],
            "median_jacobian_scaled": st["jac_scaled"],
            "ratio": ratios,
        },
    )


@claim("sinusoid-shift")
def sinusoid_shift(ctx: Context) -> Measured:
    """max |PE(pos + k) − M_k PE(pos)| over positions and offsets, on the table the model adds
    to its embeddings (`Transformer.pe`, fp32)."""
    cfg = ctx.config
    n = cfg.pe_positions + max(cfg.pe_offsets)
    model_cfg = TransformerConfig(
        n_layers=1, d_model=cfg.pe_dim, n_heads=8, d_ff=8, vocab_size=8, max_seq_len=n
    )
    pe = Transformer(model_cfg).pe.double()  # (P, C)
    base = pe[: cfg.pe_positions]  # PE(pos) for every pos, (P, C)
    errors, orthogonality = [], []
    for k in cfg.pe_offsets:
        M = shift_matrix(k, cfg.pe_dim)  # one matrix for every pos
        shifted = pe[k : k + cfg.pe_positions]  # PE(pos + k), (P, C)
        errors.append(float((shifted - base @ M.T).abs().max()))
        orthogonality.append(float((M @ M.T - torch.eye(cfg.pe_dim, dtype=M.dtype)).abs().max()))
    return Measured(
        max(errors),
        {"offsets": list(cfg.pe_offsets), "max_error": errors, "max_|M M^T - I|": orthogonality},
    )


@claim("reversal-exact-match")
def reversal_exact_match(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(
        m["exact_match"],
        {
            "token_accuracy": m["token_accuracy"],
            "final_loss": m["final_loss"],
            "label_smoothing_floor": m["loss_floor"],
            "steps": ctx.config.steps,
        },
    )
