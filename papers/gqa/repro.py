"""GQA: Training Generalized Multi-Query Transformer Models from Multi-Head Checkpoints
(Ainslie, Lee-Thorp, de Jong, Zemlyanskiy, Lebrón, Sanghai, EMNLP 2023) — reproduction.

https://arxiv.org/abs/2305.13245

Glossary: B batch, T time, H query heads, Hkv key/value heads (the paper's G groups), G = H / Hkv
query heads per key/value head, D head dim, C model width, L layers, V vocabulary.

Grouped-query attention (§2.2): the H query heads are split into Hkv groups and every head of a
group attends with the group's single key/value head,

    head_h = softmax(Q_h K_{g(h)}ᵀ / √D) V_{g(h)},   g(h) = ⌊h / G⌋,

so Hkv = H is multi-head attention (MHA) and Hkv = 1 is multi-query attention (MQA). Uptraining
(§2.1): convert an MHA checkpoint by mean-pooling the key and value projection matrices of each
group into one (Fig. 1), then continue pre-training for a fraction α of the original steps
(α = 0.05 in the paper).

What is checked here, claim by claim (see note.yaml):
1. GQA with Hkv = H is MHA and with Hkv = 1 is MQA, on the same weights (measured, fp64): the
   library's grouped `Attention` against a per-head MHA loop and a shared-key MQA einsum; and
   with 1 < Hkv < H, where the head-to-group map matters, every path of the library (each
   backend, FlashAttention with small tiles) against a group-by-group loop, with the control
   that the wrong map (h mod Hkv) does not match;
2. the KV cache shrinks by H / Hkv (derived): cache buffers allocated on the meta device for
   T5-XXL's decoder (64 heads) as MHA and as GQA-8;
3. uptraining (measured): a tiny MHA decoder trained on a Markov source, converted to GQA
   (H = 8 → Hkv = 2) and to MQA by mean-pooling, by keeping the first head of each group, or with
   freshly initialised key/value projections (Fig. 4's three methods), then trained for 5% of
   the original steps.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from repro.data.markov import MarkovConfig, MarkovSource
from repro.lab.claims import Context, Measured, claim
from repro.lab.settings import check_head_split, setting
from repro.lab.threads import torch_threads
from repro.models.gpt import GPT, GPTConfig
from repro.nn.attention import Attention, attention_mask
from repro.nn.flash import flash_attention
from repro.nn.kv_cache import caches_for
from repro.study.plots import save_line_plot
from repro.train import evaluate_lm, next_token_loss, train

# --- 1. GQA interpolates between MHA and MQA --------------------------------------------------


def mha_per_head(x: Tensor, attn: Attention) -> Tensor:
    """Multi-head attention written head by head (Vaswani et al. Eq. 1), causal. x (B, T, C)."""
    B, T, C = x.shape
    H, D = attn.n_heads, attn.head_dim
    q = attn.wq(x).view(B, T, H, D)  # (B, T, H, D)
    k = attn.wk(x).view(B, T, H, D)  # (B, T, H, D): one key head per query head
    v = attn.wv(x).view(B, T, H, D)
    mask = attention_mask(T, T, True, None, x.device)  # (T, T)
    heads = []
    for h in range(H):
        scores = q[:, :, h] @ k[:, :, h].transpose(1, 2) / math.sqrt(D)  # (B, T, T)
        probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        heads.append(probs @ v[:, :, h])  # (B, T, D)
    return attn.wo(torch.cat(heads, dim=-1))  # concat(head_1..head_H) W_O: (B, T, C)


def mqa_shared(x: Tensor, attn: Attention) -> Tensor:
    """Multi-query attention (Shazeer 2019): H query heads, one key and one value. x (B, T, C)."""
    B, T, C = x.shape
    H, D = attn.n_heads, attn.head_dim
    q = attn.wq(x).view(B, T, H, D)  # (B, T, H, D)
    k, v = attn.wk(x), attn.wv(x)  # (B, T, D) each: shared by every head
    scores = torch.einsum("bthd,bsd->bhts", q, k) / math.sqrt(D)  # (B, H, T, T)
    mask = attention_mask(T, T, True, None, x.device)  # (T, T)
    probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
    y = torch.einsum("bhts,bsd->bthd", probs, v)  # (B, T, H, D)
    return attn.wo(y.reshape(B, T, H * D))


def grouped_vs_reference(n_kv_heads: int, seed: int) -> dict[str, float]:
    """Max |GQA − reference| in fp64 for a causal attention layer with H = 8."""
    torch.manual_seed(seed)
    C, H = 64, 8
    gqa = Attention(C, H, n_kv_heads, causal=True).double()  # the library's grouped path
    x = torch.randn(3, 17, C, dtype=torch.float64)  # (B, T, C)
    reference = mha_per_head if n_kv_heads == H else mqa_shared
    with torch.no_grad():
        diff = (gqa(x) - reference(x, gqa)).abs().max().item()
        scale = reference(x, gqa).abs().max().item()
    return {"max_abs_diff": diff, "max_abs_output": scale}


@claim("gqa-hkv-h-is-mha")
def gqa_hkv_h_is_mha(ctx: Context) -> Measured:
    r = grouped_vs_reference(n_kv_heads=8, seed=ctx.seed)
    return Measured(r["max_abs_diff"], r | {"H": 8, "Hkv": 8, "dtype": "float64"})


@claim("gqa-hkv-1-is-mqa")
def gqa_hkv_1_is_mqa(ctx: Context) -> Measured:
    r = grouped_vs_reference(n_kv_heads=1, seed=ctx.seed)
    return Measured(r["max_abs_diff"], r | {"H": 8, "Hkv": 1, "dtype": "float64"})


def gqa_per_group(x: Tensor, attn: Attention, group_of: Callable[[int], int]) -> Tensor:
    """Grouped-query attention written group by group (§2.2): query head h attends with key/value
    head group_of(h). x (B, T, C), causal."""
    B, T, C = x.shape
    H, Hkv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = attn.wq(x).view(B, T, H, D)  # (B, T, H, D)
    k = attn.wk(x).view(B, T, Hkv, D)  # (B, T, Hkv, D)
    v = attn.wv(x).view(B, T, Hkv, D)
    mask = attention_mask(T, T, True, None, x.device)  # (T, T)
    heads = []
    for h in range(H):
        g = group_of(h)
        scores = q[:, :, h] @ k[:, :, g].transpose(1, 2) / math.sqrt(D)  # (B, T, T)
        probs = scores.masked_fill(~mask, float("-inf")).softmax(-1)
        heads.append(probs @ v[:, :, g])  # (B, T, D)
    return attn.wo(torch.cat(heads, dim=-1))  # (B, T, C)


GROUPED = (2, 4)  # 1 < Hkv < H = 8: the only layouts where the head-to-group map matters
SMALL_TILES = 8  # Br = Bc = 8 over T = 40: several query and key tiles, partial last tiles


def grouped_paths(n_kv_heads: int, seed: int) -> dict[str, Tensor]:
    """The library's GQA on one layer (H = 8, T = 40, fp64) through every path: the `Attention`
    module with each backend, and FlashAttention with explicit small tiles; plus x and layer."""
    torch.manual_seed(seed)
    C, H, T = 64, 8, 40
    attn = Attention(C, H, n_kv_heads, causal=True).double()
    x = torch.randn(3, T, C, dtype=torch.float64)  # (B, T, C)
    out = {}
    with torch.no_grad():
        for backend in ("ref", "sdpa", "flash"):
            attn.backend = backend
            out[backend] = attn(x)
        q = attn._split(attn.wq(x), H)  # (B, H, T, D)
        k, v = attn._split(attn.wk(x), n_kv_heads), attn._split(attn.wv(x), n_kv_heads)
        y = flash_attention(q, k, v, causal=True, block_q=SMALL_TILES, block_k=SMALL_TILES)
        out["flash_small_tiles"] = attn.wo(y.transpose(1, 2).reshape(3, T, C))
    return {"x": x, "attn": attn, "paths": out}


def _worst_diff(n_kv_heads: int, seed: int, group_of: Callable[[int, int], int]) -> float:
    r = grouped_paths(n_kv_heads, seed)
    G = 8 // n_kv_heads
    with torch.no_grad():
        ref = gqa_per_group(r["x"], r["attn"], lambda h: group_of(h, G))
        return max(float((y - ref).abs().max()) for y in r["paths"].values())


@claim("gqa-groups-match-per-group-reference")
def gqa_groups_match_per_group_reference(ctx: Context) -> Measured:
    """Max |library − per-group reference| over Hkv ∈ {2, 4} and every path, fp64."""
    diffs = {f"Hkv={n}": _worst_diff(n, ctx.seed, lambda h, G: h // G) for n in GROUPED}
    return Measured(max(diffs.values()), diffs | {"H": 8, "T": 40, "small_tiles": SMALL_TILES})


@claim("gqa-wrong-group-map-differs")
def gqa_wrong_group_map_differs(ctx: Context) -> Measured:
    """Control: the same reference with query head h on kv head h mod Hkv (heads dealt round
    robin instead of in consecutive groups) must not match the library: min over Hkv of the
    max |difference|."""
    diffs = {f"Hkv={n}": _worst_diff(n, ctx.seed, lambda h, G: h % (8 // G)) for n in GROUPED}
    return Measured(min(diffs.values()), diffs | {"H": 8, "T": 40})


# --- 2. the KV cache shrinks by H / Hkv -------------------------------------------------------

# T5.1.1-XXL's decoder (the paper's base model): 24 layers, 64 heads of 64 dims, d_model 4096.
T5_XXL_DECODER = dict(n_layers=24, d_model=4096, n_heads=64, head_dim=64, vocab_size=32128)


@claim("kv-cache-shrinks-by-h-over-hkv")
def kv_cache_shrinks(ctx: Context) -> Measured:
    """Bytes of the allocated (meta-device) caches for 1 sequence of 2048 tokens in bf16."""

    def cache_bytes(n_kv_heads: int) -> int:
        cfg = GPTConfig(**T5_XXL_DECODER, n_kv_heads=n_kv_heads, max_seq_len=2048)
        return sum(c.nbytes for c in caches_for(cfg, 1, 2048, torch.bfloat16, "meta"))

    mha, gqa8, mqa = cache_bytes(64), cache_bytes(8), cache_bytes(1)
    return Measured(
        mha / gqa8,
        {"bytes_mha": mha, "bytes_gqa8": gqa8, "bytes_mqa": mqa, "mha_over_mqa": mha / mqa},
    )


# --- 3. uptraining: convert an MHA checkpoint, then train for α of the original steps --------


@dataclass(frozen=True)
class Config:
    # --device: this paper runs on the CPU (see repro.lab.settings)
    CPU_ONLY = (
        "the MHA checkpoint, its conversion (random initialisation from a CPU generator) and "
        "uptraining use CPU tensors, one thread being fastest at this width"
    )
    # the Markov source: order 2, so the next token depends on the previous one through attention
    vocab_size: int = setting(16, "vocabulary size (V)", min=2)
    order: int = setting(2, "Markov order: tokens of context that set the next", min=1)
    # the MHA decoder (GPT block) that gets converted
    d_model: int = setting(64, "model width (C)", min=1)
    n_layers: int = setting(2, "layers (L)", min=1)
    n_heads: int = setting(8, "attention heads (H (D = 8))", min=1)
    seq_len: int = setting(32, "tokens per sequence (T)", min=2)
    batch: int = setting(32, "sequences per step (B)", min=1)
    steps: int = setting(300, "pre-training steps of the MHA checkpoint", min=1)
    lr: float = setting(3e-3, "learning rate", min=0, min_exclusive=True)
    uptrain_fraction: float = setting(
        0.05, "uptraining steps as a fraction of pre-training (α (§3.1))", min=0, max=1
    )
    kv_heads: tuple[int, ...] = setting(
        (2, 1), "key/value heads of the converted models; GQA-2 and MQA", min=1
    )
    eval_batch: int = setting(256, "held-out sequences", min=1)

    def __post_init__(self) -> None:
        check_head_split(self.d_model, self.n_heads)


PRESETS = {"quick": Config(), "full": Config(steps=1000)}
METHODS = ("mean", "first", "random")


def convert_kv_heads(mha: GPT, n_kv_heads: int, method: str, generator: torch.Generator) -> GPT:
    """An MHA checkpoint → a GQA/MQA model with `n_kv_heads` key/value heads (§2.1, Fig. 1).

    `mean` averages the key and value projections of the G heads of each group, `first` keeps
    the group's first head, `random` initialises new projections (GPT's N(0, 0.02), zero bias).
    Every other weight is copied.
    """
    cfg = dataclasses.replace(mha.cfg, n_kv_heads=n_kv_heads)
    gqa = GPT(cfg)
    H, D = cfg.n_heads, cfg.head_dim
    G = H // n_kv_heads
    state = mha.state_dict()
    new = gqa.state_dict()
    for name, target in new.items():
        if not name.endswith(("attn.wk.weight", "attn.wk.bias", "attn.wv.weight", "attn.wv.bias")):
            new[name] = state[name]
            continue
        heads = state[name].reshape(n_kv_heads, G, D, *state[name].shape[1:])  # (Hkv, G, D, ...)
        if method == "mean":  # Fig. 1: W_K^(g) = (1/G) Σ_{h ∈ g} W_K^(h), the same for W_V
            new[name] = heads.mean(1).reshape(target.shape)  # (Hkv·D, ...)
        elif method == "first":  # W_K^(g) = W_K^(first head of g)
            new[name] = heads[:, 0].reshape(target.shape)
        elif method == "random":  # a fresh projection: the group's heads are forgotten
            is_weight = name.endswith("weight")
            new[name] = (
                0.02 * torch.randn(target.shape, generator=generator)
                if is_weight
                else torch.zeros_like(target)
            )
        else:
            raise ValueError(f"unknown conversion method {method!r}; expected one of {METHODS}")
    gqa.load_state_dict(new)
    return gqa


def experiment(cfg: Config, ctx: Context) -> dict:
    """Train MHA; convert to each Hkv with each method; loss at conversion and after uptraining.

    One thread: at this width a second one only adds synchronisation (and on a busy 2-core
    machine, waiting)."""
    with torch_threads(1):
        return _experiment(cfg, ctx)


def _experiment(cfg: Config, ctx: Context) -> dict:
    torch.manual_seed(ctx.seed)
    source = MarkovSource(MarkovConfig(vocab_size=cfg.vocab_size, order=cfg.order))
    g = torch.Generator().manual_seed(10_000 + ctx.seed)
    pool = source.sample(4096, cfg.seq_len + 1, g)  # (N, T + 1) training sequences
    held_out = source.sample(cfg.eval_batch, cfg.seq_len + 1, g)  # (B_eval, T + 1)

    def batches(model: GPT, seed: int):
        order = torch.Generator().manual_seed(seed)

        def loss_fn(step: int) -> Tensor:
            x = pool[torch.randint(0, len(pool), (cfg.batch,), generator=order)]  # (B, T + 1)
            return next_token_loss(model, x)

        return loss_fn

    def held_out_loss(model: GPT) -> float:
        return evaluate_lm(model, held_out)

    # the MHA checkpoint: L(θ_MHA) after `steps` steps
    mha = GPT(
        GPTConfig(
            n_layers=cfg.n_layers,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            vocab_size=cfg.vocab_size,
            max_seq_len=cfg.seq_len,
            backend="sdpa",
        )
    )
    curve = train(
        mha,
        batches(mha, ctx.seed),
        cfg.steps,
        lr=cfg.lr,
        progress=ctx.progress,
        description="gqa: MHA checkpoint",
    )
    up_steps = max(1, round(cfg.uptrain_fraction * cfg.steps))  # α · steps
    losses: dict[str, dict[str, dict[str, float]]] = {}
    up_curves: dict[str, list[float]] = {}
    for n_kv in cfg.kv_heads:
        name = "mqa" if n_kv == 1 else f"gqa{n_kv}"
        losses[name] = {}
        for method in METHODS:
            model = convert_kv_heads(mha, n_kv, method, torch.Generator().manual_seed(ctx.seed))
            at_conversion = held_out_loss(model)
            # uptraining: the same recipe (optimizer, peak lr, warm-up + cosine) for α · steps,
            # on the same batch order for every method
            up_curves[f"{name} {method}"] = train(
                model,
                batches(model, 20_000 + ctx.seed),
                up_steps,
                lr=cfg.lr,
                progress=ctx.progress,
                description=f"gqa: uptrain {name} ({method})",
            )
            losses[name][method] = {
                "conversion": at_conversion,
                "uptrained": held_out_loss(model),
            }
    if ctx.out_dir is not None:
        xs = list(range(1, up_steps + 1))
        save_line_plot(
            ctx.out_dir / "uptraining_loss.svg",
            {k: (xs, v) for k, v in up_curves.items()},
            "uptraining step",
            "training loss (nats/token)",
            f"Uptraining after conversion (α = {cfg.uptrain_fraction}, {up_steps} steps)",
        )
    return {
        "loss_mha": held_out_loss(mha),
        "mha_final_train_loss": curve[-1],
        "entropy_floor": source.entropy_rate(),
        "unigram_entropy": source.unigram_entropy(),
        "uptrain_steps": up_steps,
        "losses": losses,
    }


@claim("uptrain-random-init-worst")
def uptrain_random_init_worst(ctx: Context) -> Measured:
    """min over Hkv of L(random) − min(L(mean), L(first)) after uptraining (nats/token)."""
    m = ctx.experiment()
    gaps = {
        name: r["random"]["uptrained"] - min(r["mean"]["uptrained"], r["first"]["uptrained"])
        for name, r in m["losses"].items()
    }
    mean_minus_first = {
        name: r["mean"]["uptrained"] - r["first"]["uptrained"] for name, r in m["losses"].items()
    }
    return Measured(
        min(gaps.values()),
        {
            "gap_random_vs_best": gaps,
            "uptrained_mean_minus_first": mean_minus_first,
            "losses": m["losses"],
            "loss_mha": m["loss_mha"],
            "entropy_floor": m["entropy_floor"],
            "uptrain_steps": m["uptrain_steps"],
        },
    )


@claim("gqa-closer-to-mha-than-mqa")
def gqa_closer_to_mha_than_mqa(ctx: Context) -> Measured:
    """L(MQA) − L(GQA-2), both mean-pooled and uptrained (nats/token)."""
    m = ctx.experiment()
    gqa_name = next(name for name in m["losses"] if name != "mqa")  # gqa2 in both presets
    gqa, mqa = m["losses"][gqa_name]["mean"], m["losses"]["mqa"]["mean"]
    return Measured(
        mqa["uptrained"] - gqa["uptrained"],
        {
            "loss_mha": m["loss_mha"],
            f"{gqa_name}_mean": gqa,
            "mqa_mean": mqa,
            "conversion_gap_mqa_minus_gqa2": mqa["conversion"] - gqa["conversion"],
        },
    )
