"""RoFormer: Enhanced Transformer with Rotary Position Embedding (Su et al., 2021) — reproduction.

https://arxiv.org/abs/2104.09864

Glossary: B batch, H heads, T time, D head dim (the paper's d), m, n positions of a query and a
key, r = m − n their offset, θ_i = 10000^(−2(i−1)/D) the frequencies (Eq. 15), V vocabulary.

RoPE (Eq. 14-16, 34): rotate the i-th pair of q_m's coordinates by m·θ_i, and k_n's by n·θ_i;
then q_mᵀ k_n = qᵀ R_{n−m} k depends on the positions only through n − m.

What is checked here, claim by claim (see note.yaml):
1. relative position (measured): attention scores of rotated q, k do not change when both
   positions move by s, in fp32 with the library's `RotaryEmbedding` (and in fp64 with
   `apply_rope_ref`); an additive sinusoidal encoding, for contrast, does change;
2. norm preservation (measured): ‖R_m x‖ = ‖x‖ at every position;
3. long-term decay (derived, §3.4.3): the bound (1/(D/2)) Σ_j |S_j|, S_j = Σ_{k<j} e^{i r θ_k},
   evaluated at D = 128 for r = 0 … 4096; the curve is saved as a plot;
4. length generalisation (measured): a tiny RoPE decoder (`repro.models.llama`) trained on
   sequences of length L from a Markov source, evaluated on sequences of length 4L. The paper
   makes no claim about extrapolation; this measures what happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from repro.data.markov import MarkovConfig, MarkovSource
from repro.lab.claims import Context, Measured, claim
from repro.lab.settings import check_head_split, setting
from repro.models.llama import Llama, LlamaConfig
from repro.nn.positional import (
    RotaryEmbedding,
    apply_rope_ref,
    rope_frequencies,
    sinusoidal_encoding,
)
from repro.study.plots import save_line_plot
from repro.train import train_lm


@dataclass(frozen=True)
class Config:
    # the Markov source: order 2, so each prediction needs the previous token (offset 1)
    vocab_size: int = setting(16, "vocabulary size (V)", min=2)
    order: int = setting(2, "Markov order", min=1)
    # the tiny RoPE decoder
    d_model: int = setting(48, "model width", min=1)
    n_layers: int = setting(1, "transformer layers", min=1)
    n_heads: int = setting(4, "attention heads", min=1)
    d_ff: int = setting(128, "feed-forward width", min=1)
    train_len: int = setting(16, "L: every training sequence has this length", min=2)
    eval_factor: int = setting(4, "evaluate on sequences of length eval_factor · L", min=1)
    batch: int = setting(32, "sequences per step (B)", min=1)
    steps: int = setting(200, "training steps", min=1)
    lr: float = setting(1e-2, "learning rate", min=0, min_exclusive=True)
    seeds: int = setting(
        1, "models trained, seeded ctx.seed, ctx.seed + 1, …; metrics are averaged", min=1
    )
    eval_batch: int = setting(512, "held-out sequences", min=1)

    def __post_init__(self) -> None:
        check_head_split(self.d_model, self.n_heads, rotary=True)


PRESETS = {"quick": Config(), "full": Config(train_len=32, steps=1500, seeds=3)}


# --- 1. scores depend only on the offset ----------------------------------------------------

SHIFTS = (1, 7, 100, 1000, 4000)


def _unit(x: Tensor) -> Tensor:
    return x / x.norm(dim=-1, keepdim=True)


@claim("scores-depend-on-offset-only")
def scores_depend_on_offset_only(ctx: Context) -> Measured:
    """max |score(m + s, n + s) − score(m, n)| over all (m, n) pairs and shifts s, fp32."""
    g = torch.Generator().manual_seed(ctx.seed)
    B, H, T, D = 2, 4, 64, 64
    q = _unit(torch.randn(B, H, T, D, generator=g))  # (B, H, T, D), unit rows: |score| ≤ 1
    k = _unit(torch.randn(B, H, T, D, generator=g))  # (B, H, T, D)
    rope = RotaryEmbedding(D, max_seq_len=max(SHIFTS) + T)
    scores = rope(q, 0) @ rope(k, 0).transpose(-2, -1)  # (B, H, T, T): q_mᵀ k_n, Eq. 16
    fp32 = max(
        float((rope(q, s) @ rope(k, s).transpose(-2, -1) - scores).abs().max()) for s in SHIFTS
    )
    # the same in fp64 with the explicit block-diagonal rotation matrices R^D_{Θ,m} (Eq. 15)
    q64, k64 = q.double(), k.double()
    ref = apply_rope_ref(q64, 0) @ apply_rope_ref(k64, 0).transpose(-2, -1)
    fp64 = max(
        float((apply_rope_ref(q64, s) @ apply_rope_ref(k64, s).transpose(-2, -1) - ref).abs().max())
        for s in SHIFTS
    )
    # Eq. 16 directly: q_mᵀ k_n = qᵀ R_{n−m} k, here for m = 0 and every n
    direct = float((q[..., :1, :] @ rope(k, 0).transpose(-2, -1) - scores[..., :1, :]).abs().max())
    # contrast: absolute sinusoidal positions added to the vectors (Vaswani et al. §3.5)
    pe = sinusoidal_encoding(max(SHIFTS) + T, D)  # (T_max, D)
    add = (q + pe[:T]) @ (k + pe[:T]).transpose(-2, -1)  # (B, H, T, T)
    s = SHIFTS[2]
    add_shifted = (q + pe[s : s + T]) @ (k + pe[s : s + T]).transpose(-2, -1)
    return Measured(
        fp32,
        {
            "shifts": list(SHIFTS),
            "fp64_apply_rope_ref_max_diff": fp64,
            "eq16_relative_rotation_max_diff": direct,
            f"additive_sinusoidal_max_diff_shift_{s}": float((add_shifted - add).abs().max()),
        },
    )


# --- 2. rotations preserve norms -------------------------------------------------------------


@claim("rotation-preserves-norm")
def rotation_preserves_norm(ctx: Context) -> Measured:
    """max over positions 0 … 4095 of |‖R_m x‖ − ‖x‖| / ‖x‖, fp32."""
    g = torch.Generator().manual_seed(ctx.seed)
    B, H, T, D = 1, 2, 4096, 64
    x = torch.randn(B, H, T, D, generator=g)  # (B, H, T, D): position m = row index
    rotated = RotaryEmbedding(D, max_seq_len=T)(x, 0)
    rel = ((rotated.norm(dim=-1) - x.norm(dim=-1)).abs() / x.norm(dim=-1)).max()
    return Measured(float(rel), {"positions": T, "head_dim": D})


# --- 3. long-term decay of the relative upper bound (§3.4.3) ----------------------------------


def relative_upper_bound(distances: Tensor, head_dim: int, base: float = 10000.0) -> Tensor:
    """(1/(D/2)) Σ_{j=1}^{D/2} |S_j| with S_j = Σ_{k=0}^{j−1} e^{i r θ_k}, for each r; (R,)."""
    theta = rope_frequencies(head_dim, base)  # (D/2,) float64
    phases = torch.exp(1j * distances.double()[:, None] * theta[None, :])  # (R, D/2)
    S = torch.cumsum(phases, dim=1)  # (R, D/2): S_1 … S_{D/2}
    return S.abs().mean(dim=1)  # (R,)


DECAY_HEAD_DIM = 128


@claim("long-term-decay")
def long_term_decay(ctx: Context) -> Measured:
    """max over r ∈ [128, 256] of the bound, relative to its value at r = 0."""
    r = torch.arange(0, 4097)
    bound = relative_upper_bound(r, DECAY_HEAD_DIM)  # (4097,)
    if ctx.out_dir is not None:
        near = r[:1025]
        save_line_plot(
            ctx.out_dir / "long_term_decay.svg",
            {f"D = {DECAY_HEAD_DIM}": (near.tolist(), bound[:1025].tolist())},
            "relative distance r",
            "relative upper bound (1/(D/2)) Σ|S_j|",
            "RoPE long-term decay (RoFormer §3.4.3, Figure 2)",
        )
    window = float(bound[128:257].max() / bound[0])
    ups = int((bound[1:257] > bound[:256]).sum())
    return Measured(
        window,
        {
            "bound_at": {int(d): float(bound[d]) for d in (0, 16, 64, 128, 256, 1024, 2048, 4096)},
            "ratio_256_to_0": float(bound[256] / bound[0]),
            "increasing_steps_in_0_256": ups,
            "head_dim": DECAY_HEAD_DIM,
        },
    )


# --- 4. length generalisation of a tiny RoPE decoder ----------------------------------------


def experiment(cfg: Config, ctx: Context) -> dict:
    """Train on length L, evaluate per position on length eval_factor · L."""
    source = MarkovSource(MarkovConfig(vocab_size=cfg.vocab_size, order=cfg.order))
    L, T_eval = cfg.train_len, cfg.eval_factor * cfg.train_len
    per_position_loss, per_position_acc = [], []
    for s in range(cfg.seeds):
        seed = ctx.seed + s
        g = torch.Generator().manual_seed(10_000 + seed)
        data = source.sample(cfg.steps * cfg.batch, L + 1, g).to(ctx.device)  # (N, L + 1)
        held_out = source.sample(cfg.eval_batch, T_eval + 1, g).to(ctx.device)
        torch.manual_seed(seed)
        model = Llama(
            LlamaConfig(
                n_layers=cfg.n_layers,
                d_model=cfg.d_model,
                n_heads=cfg.n_heads,
                vocab_size=cfg.vocab_size,
                d_ff=cfg.d_ff,
                max_seq_len=T_eval,  # RoPE tables reach 4L; training only ever sees 0 … L − 1
                backend="sdpa",
            )
        ).to(ctx.device)

        description = f"rope: train on length {L}, seed {seed}"
        train_lm(model, data, cfg.steps, cfg.lr, ctx.progress, description)
        with torch.no_grad():
            logits = model(held_out[:, :-1])  # (B, 4L, V)
            targets = held_out[:, 1:]  # (B, 4L)
            loss = F.cross_entropy(logits.transpose(1, 2), targets, reduction="none")  # (B, 4L)
            per_position_loss.append(loss.mean(0))  # (4L,)
            per_position_acc.append((logits.argmax(-1) == targets).float().mean(0))  # (4L,)
    loss_t = torch.stack(per_position_loss).mean(0)  # (4L,) averaged over seeds
    acc_t = torch.stack(per_position_acc).mean(0)
    # position p predicts token p + 1; from p = order − 1 on, the Markov context is complete
    segments = {"inside": (cfg.order - 1, L), "L_to_2L": (L, 2 * L), "2L_to_4L": (2 * L, T_eval)}
    seg = {
        name: {"loss": float(loss_t[a:b].mean()), "accuracy": float(acc_t[a:b].mean())}
        for name, (a, b) in segments.items()
    }
    ratios_2L = [float(a[L : 2 * L].mean() / a[cfg.order - 1 : L].mean()) for a in per_position_acc]
    if ctx.out_dir is not None:
        xs = list(range(T_eval))
        save_line_plot(
            ctx.out_dir / "loss_by_position.svg",
            {
                f"RoPE, trained on L = {L}": (xs, loss_t.tolist()),
                "entropy floor": (xs, [source.entropy_rate()] * T_eval),
                "unigram entropy": (xs, [source.unigram_entropy()] * T_eval),
            },
            "position",
            "held-out loss (nats/token)",
            f"Loss by position: trained on {L} tokens, evaluated on {T_eval}",
        )
    return {
        "segments": seg,
        "accuracy_ratio_2L_per_seed": ratios_2L,
        "accuracy_ratio_2L": seg["L_to_2L"]["accuracy"] / seg["inside"]["accuracy"],
        "accuracy_ratio_4L": seg["2L_to_4L"]["accuracy"] / seg["inside"]["accuracy"],
        "entropy_floor": source.entropy_rate(),
        "unigram_entropy": source.unigram_entropy(),
        "train_len": L,
    }


@claim("accuracy-drops-beyond-training-length")
def accuracy_drops_beyond_training_length(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(
        m["accuracy_ratio_2L"],
        {
            "segments": m["segments"],
            "accuracy_ratio_2L_to_4L_vs_inside": m["accuracy_ratio_4L"],
            "per_seed_ratio_2L": m["accuracy_ratio_2L_per_seed"],
            "max_per_seed_ratio_2L": max(m["accuracy_ratio_2L_per_seed"]),
            "entropy_floor": m["entropy_floor"],
            "unigram_entropy": m["unigram_entropy"],
            "train_len": m["train_len"],
        },
    )


@claim("accuracy-inside-training-length")
def accuracy_inside_training_length(ctx: Context) -> Measured:
    """Positive control for the previous claim: at the lengths it was trained on, the same model
    predicts well (next-token accuracy at positions order − 1 … L − 1), so the drop beyond L is
    about length, not a model that never learned."""
    m = ctx.experiment()
    inside = m["segments"]["inside"]
    return Measured(
        inside["accuracy"],
        {
            "inside_loss": inside["loss"],
            "entropy_floor": m["entropy_floor"],
            "unigram_entropy": m["unigram_entropy"],
            "beyond_L_accuracy": m["segments"]["L_to_2L"]["accuracy"],
        },
    )
