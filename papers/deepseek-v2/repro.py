"""DeepSeek-V2: multi-head latent attention and DeepSeekMoE (DeepSeek-AI 2024) — reproduction.

https://arxiv.org/abs/2405.04434

Glossary: B batch, T time, C model width, L layers (l), H heads (n_h), D head dim (d_h), Dr
decoupled RoPE dim (d_h^R), Lc KV latent dim (d_c), Lq query latent dim (d_c'), G kv groups
(n_g), N routed experts, K routed experts per token.

MLA caches one latent c^KV (Lc numbers) and one shared rotary key k^R (Dr numbers) per token
and layer (§2.1.3), instead of 2·H·D keys and values. Keys and values are linear in c^KV, so
W^UK can be folded into the query and W^UV into the output (§2.1.2, Appendix C); RoPE is kept
on a separate, decoupled part so that the folding stays valid.

What is checked here, claim by claim (see note.yaml):
1. Table 1 at DeepSeek-V2's dimensions (derived): MLA's (d_c + d_h^R) per token and layer
   against MHA's 2·n_h·d_h, and the "GQA with 2.25 groups" equivalence; Table 9's 34.6K;
2. the published parameter totals (derived): DeepSeek-V2 and V2-Lite built on the meta device
   (two layers built, the 59 identical MoE layers counted from one), held equal to the analytic
   count; active parameters with the convention stated;
3. the 93.3% KV-cache reduction (derived): against DeepSeek 67B's GQA cache, split into the
   element count and the 6-bit cache quantization of §3.2.3;
4. naive = absorbed MLA (measured, fp64) in prefill and in cached decoding, with the control
   that RoPE on the compressed key breaks the absorption;
5. the latent cache's allocated bytes against the library's KVCache for MHA, GQA and MQA.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from functools import cache

import torch
from torch import nn

from repro.lab.claims import Context, Measured, claim
from repro.lab.counting import build_on_meta, count_parameters
from repro.lab.settings import setting
from repro.models.deepseek_v2 import (
    DEEPSEEK_V2,
    DeepSeekV2,
    DeepSeekV2Config,
    deepseek_v2_param_count,
    latent_caches_for,
)
from repro.nn.kv_cache import KVCache
from repro.nn.mla import (
    LatentKVCache,
    MLAConfig,
    MultiHeadLatentAttention,
    mha_cache_elems_per_token,
    mla_cache_elems_per_token,
)
from repro.nn.moe import MoEFeedForward, moe_ref
from repro.nn.positional import apply_rope_ref
from repro.study.plots import save_line_plot

# --- 1. Table 1: KV cache per token -----------------------------------------------------------

V2 = DEEPSEEK_V2  # n_h = d_h = 128, d_c = 512 = 4·d_h, d_h^R = 64 = d_h / 2, l = 60


@claim("mla-cache-per-token-layer")
def mla_cache_per_token_layer(ctx: Context) -> Measured:
    """Elements held by a one-token LatentKVCache of one layer (allocated on meta)."""
    c = LatentKVCache(1, 1, V2.kv_rank, V2.rope_dim, torch.bfloat16, "meta")
    elems = c.nbytes // 2
    mha = mha_cache_elems_per_token(V2.n_heads, V2.head_dim, 1)
    return Measured(
        elems,
        {
            "formula_dc_plus_dhR": V2.kv_rank + V2.rope_dim,
            "mha_per_layer": mha,
            "mla_over_mha": elems / mha,
            "nine_halves_dh": 9 * V2.head_dim // 2,
        },
    )


@claim("mla-equals-gqa-groups")
def mla_equals_gqa_groups(ctx: Context) -> Measured:
    """n_g at which GQA's 2·n_g·d_h·l equals MLA's (d_c + d_h^R)·l (Table 1)."""
    mla = mla_cache_elems_per_token(V2.kv_rank, V2.rope_dim, V2.n_layers)
    one_group = mha_cache_elems_per_token(1, V2.head_dim, V2.n_layers)  # MQA
    return Measured(mla / one_group, {"mla_elements": mla, "mqa_elements": one_group})


@claim("mla-vs-mha-same-dims")
def mla_vs_mha_same_dims(ctx: Context) -> Measured:
    """MHA's cache over MLA's at n_h = d_h = 128 (Table 1, both over l = 60 layers)."""
    mla = mla_cache_elems_per_token(V2.kv_rank, V2.rope_dim, V2.n_layers)
    mha = mha_cache_elems_per_token(V2.n_heads, V2.head_dim, V2.n_layers)
    return Measured(mha / mla, {"mha_elements": mha, "mla_elements": mla, "mla_share": mla / mha})


@claim("table9-mla-elements")
def table9_mla_elements(ctx: Context) -> Measured:
    """(d_c + d_h^R)·l for DeepSeek-V2, to compare with Table 9's large MLA model (34.6K)."""
    return Measured(mla_cache_elems_per_token(V2.kv_rank, V2.rope_dim, V2.n_layers))


# --- 2. parameters ----------------------------------------------------------------------------


def _expert_params(layer: nn.Module) -> tuple[int, int]:
    """(parameters of all routed experts, of the K largest) of a built MoE block."""
    moe = layer.ffn
    assert isinstance(moe, MoEFeedForward), f"layer has a {type(moe).__name__}, not an MoE FFN"
    sizes = sorted((count_parameters(e) for e in moe.experts), reverse=True)
    return sum(sizes), sum(sizes[: moe.top_k])


@cache
def built_counts(preset: str) -> dict[str, int]:
    """Build the embedding, head, the dense first layer and one MoE layer on meta; the other
    L − 2 layers are identical to that MoE layer. Each count is held equal to the analytic one."""
    cfg = DeepSeekV2Config.from_name(preset)
    assert cfg.n_dense_layers == 1, "the shortcut builds exactly one dense layer"
    small = build_on_meta(lambda: DeepSeekV2(dataclasses.replace(cfg, n_layers=2)))
    moe_layer = count_parameters(small.layers[1])
    total = count_parameters(small) + (cfg.n_layers - 2) * moe_layer
    routed, kept = _expert_params(small.layers[1])
    active = total - (cfg.n_layers - 1) * (routed - kept)
    embedding = small.tok_embeddings.weight.numel()
    out = {
        "total": total,
        "active": active,
        "active_nonembedding": active - embedding,
        "total_nonembedding": total - embedding,
    }
    for key, value in out.items():
        analytic = deepseek_v2_param_count(
            cfg, active=key.startswith("active"), embeddings="nonembedding" not in key
        )
        assert value == analytic, f"{preset} {key}: built {value} != analytic {analytic}"
    return out


@claim("params-total")
def params_total(ctx: Context) -> Measured:
    c = built_counts("deepseek-v2")
    return Measured(c["total"] / 1e9, c)


@claim("params-active")
def params_active(ctx: Context) -> Measured:
    """Active parameters without the input embedding (a lookup), output head included."""
    c = built_counts("deepseek-v2")
    return Measured(
        c["active_nonembedding"] / 1e9,
        {**c, "convention": "2 shared + 6 of 160 routed experts per MoE layer; input embedding "
         "excluded, output head included", "with_input_embedding": c["active"] / 1e9},
    )  # fmt: skip


@claim("lite-params-total")
def lite_params_total(ctx: Context) -> Measured:
    c = built_counts("deepseek-v2-lite")
    return Measured(
        c["total"] / 1e9, {**c, "active_nonembedding_b": c["active_nonembedding"] / 1e9}
    )


# --- 3. the 93.3% -------------------------------------------------------------------------

# DeepSeek 67B (DeepSeek LLM, arXiv 2401.02954, Table 2 and its released config): 95 layers,
# 64 query heads of 128 dims, 8 key/value heads (GQA).
DEEPSEEK_67B = dict(n_layers=95, n_kv_heads=8, head_dim=128)
BITS_67B = 16  # assumption: the 67B service cached keys/values in 16-bit (BF16/FP16)
BITS_V2 = 6  # §3.2.3: "each element in its KV cache into 6 bits on average"


def reduction_vs_67b() -> dict[str, float]:
    e67 = mha_cache_elems_per_token(DEEPSEEK_67B["n_kv_heads"], DEEPSEEK_67B["head_dim"], 95)
    ev2 = mla_cache_elems_per_token(V2.kv_rank, V2.rope_dim, V2.n_layers)
    element_factor = e67 / ev2  # MLA's architecture alone
    bit_factor = BITS_67B / BITS_V2  # the cache quantization alone
    total_factor = element_factor * bit_factor
    return {
        "elements_67b": e67,
        "elements_v2": ev2,
        "reduction_elements_only": 1 - 1 / element_factor,
        "reduction_with_6bit": 1 - 1 / total_factor,
        "element_factor": element_factor,
        "bit_factor": bit_factor,
        "share_of_log_reduction_from_elements": math.log(element_factor) / math.log(total_factor),
        "reduction_vs_mha_same_dims_elements": 1
        - ev2 / mha_cache_elems_per_token(V2.n_heads, V2.head_dim, V2.n_layers),
    }


@claim("kv-reduction-vs-67b")
def kv_reduction_933(ctx: Context) -> Measured:
    """1 − (34,560 · 6 bits) / (194,560 · 16 bits): MLA's elements and the 6-bit cache together."""
    r = reduction_vs_67b()
    return Measured(r["reduction_with_6bit"], r)


@claim("kv-reduction-elements-only")
def kv_reduction_elements_only(ctx: Context) -> Measured:
    """1 − 34,560 / 194,560: the element count alone, at equal precision."""
    r = reduction_vs_67b()
    return Measured(r["reduction_elements_only"], r)


# §3.2.3: H800 GPU hours per trillion training tokens
GPU_HOURS_PER_T = {"deepseek-67b": 300.6e3, "deepseek-v2": 172.8e3}


@claim("training-cost-saving")
def training_cost_saving(ctx: Context) -> Measured:
    """1 − 172.8K / 300.6K GPU hours per trillion tokens."""
    saving = 1 - GPU_HOURS_PER_T["deepseek-v2"] / GPU_HOURS_PER_T["deepseek-67b"]
    return Measured(saving, GPU_HOURS_PER_T)


# --- DeepSeekMoE: shared + routed experts, un-renormalised gates -----------------------------


def deepseek_moe_case(seed: int) -> tuple[MoEFeedForward, torch.Tensor]:
    """2 shared + 12 routed experts, K = 4, fp64, router rows scaled so loads are unequal."""
    torch.manual_seed(seed)
    moe = MoEFeedForward(24, 16, 12, 4, normalize=False, n_shared=2).double()
    with torch.no_grad():
        moe.router.gate.weight.mul_(torch.linspace(0.5, 3.0, 12, dtype=torch.float64)[:, None])
    x = torch.randn(2, 31, 24, dtype=torch.float64)  # (B, T, C)
    return moe, x


@claim("deepseekmoe-dispatch-equals-dense")
def deepseekmoe_dispatch_equals_dense(ctx: Context) -> Measured:
    """Eq. 20–22 sparse (shared experts on every token + top-K routed experts gated by the
    un-renormalised softmax) against the dense all-experts reference, fp64."""
    moe, x = deepseek_moe_case(ctx.seed)
    with torch.no_grad():
        sparse, dense = moe(x), moe_ref(x, moe)
        renormalised = moe_ref(x, moe, normalize=True)  # Mixtral-style gates: a different layer
    scale = dense.abs().max().item()
    return Measured(
        (sparse - dense).abs().max().item(),
        {
            "max_abs_output": scale,
            "renormalised_gates_diff": (sparse - renormalised).abs().max().item() / scale,
        },
    )


@claim("deepseekmoe-renormalised-differs")
def deepseekmoe_renormalised_differs(ctx: Context) -> Measured:
    """Control: the same layer with top-K gates renormalised to sum to 1 (Mixtral's gating) —
    max |difference| relative to the largest output."""
    moe, x = deepseek_moe_case(ctx.seed)
    with torch.no_grad():
        sparse, renormalised = moe(x), moe_ref(x, moe, normalize=True)
    return Measured((sparse - renormalised).abs().max().item() / sparse.abs().max().item())


# --- 4. naive = absorbed ----------------------------------------------------------------------

TINY = MLAConfig(
    d_model=48, n_heads=4, head_dim=12, rope_dim=8, kv_rank=20, q_rank=28, max_seq_len=64
)
T_PROMPT, T_DECODE = 19, 6  # prefill 19 positions, then 6 one-token steps


def tiny_mla(seed: int) -> MultiHeadLatentAttention:
    """fp64 MLA with weights of scale 1/√fan_in, so outputs are of order 1."""
    torch.manual_seed(seed)
    mla = MultiHeadLatentAttention(TINY).double()
    with torch.no_grad():
        for m in mla.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, m.in_features**-0.5)
    return mla


def _inputs(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(1000 + seed)
    return torch.randn(2, T_PROMPT + T_DECODE, TINY.d_model, generator=g, dtype=torch.float64)


def mla_per_head(mla: MultiHeadLatentAttention, x: torch.Tensor) -> torch.Tensor:
    """Appendix C written out head by head from the module's weights (Eq. 37-47), RoPE from the
    explicit rotation matrices of `apply_rope_ref`; shares no code path with the module's
    forward methods. x (B, T, C) -> (B, T, C), causal."""
    cfg = mla.cfg
    assert cfg.q_rank is not None, "the reference is written for compressed queries"
    B, T, _ = x.shape
    H, D, Dr = cfg.n_heads, cfg.head_dim, cfg.rope_dim

    def rms(v: torch.Tensor, gain: torch.Tensor) -> torch.Tensor:
        return v * torch.rsqrt(v.pow(2).mean(-1, keepdim=True) + cfg.norm_eps) * gain

    def rope(v: torch.Tensor) -> torch.Tensor:  # (B, T, Dr), positions 0..T-1
        return apply_rope_ref(v[:, None], 0, cfg.rope_base)[:, 0]

    cq = rms(x @ mla.wdq.weight.T, mla.q_norm.weight)  # c^Q (Eq. 37)
    ckv = rms(x @ mla.wdkv.weight.T, mla.kv_norm.weight)  # c^KV (Eq. 41)
    k_rope = rope(x @ mla.wkr.weight.T)  # k^R, shared by the heads (Eq. 43)
    mask = torch.ones(T, T, dtype=torch.bool).tril()  # key j <= query t
    heads = []
    for i in range(H):
        rows, rrows = slice(i * D, (i + 1) * D), slice(i * Dr, (i + 1) * Dr)
        q = torch.cat([cq @ mla.wuq.weight[rows].T, rope(cq @ mla.wqr.weight[rrows].T)], -1)
        k = torch.cat([ckv @ mla.wuk.weight[rows].T, k_rope], -1)  # Eq. 44
        v = ckv @ mla.wuv.weight[rows].T  # Eq. 45
        scores = q @ k.transpose(1, 2) / math.sqrt(D + Dr)  # Eq. 46: (B, T, T)
        heads.append(scores.masked_fill(~mask, float("-inf")).softmax(-1) @ v)  # (B, T, D)
    return torch.cat(heads, -1) @ mla.wo.weight.T  # Eq. 47


@claim("naive-equals-absorbed-prefill")
def naive_equals_absorbed_prefill(ctx: Context) -> Measured:
    """Max over {naive, absorbed} of |path − per-head reference|, and |naive − absorbed|,
    relative to the largest output."""
    mla, x = tiny_mla(ctx.seed), _inputs(ctx.seed)
    with torch.no_grad():
        naive, absorbed, ref = mla.forward_naive(x), mla.forward_absorbed(x), mla_per_head(mla, x)
    scale = ref.abs().max().item()
    diffs = {
        "naive_vs_absorbed": (naive - absorbed).abs().max().item() / scale,
        "naive_vs_per_head": (naive - ref).abs().max().item() / scale,
        "absorbed_vs_per_head": (absorbed - ref).abs().max().item() / scale,
    }
    return Measured(max(diffs.values()), diffs | {"max_abs_output": scale})


def _decode(mla: MultiHeadLatentAttention, x: torch.Tensor, path: str) -> torch.Tensor:
    """Prefill T_PROMPT positions into a LatentKVCache, then one token at a time."""
    step = mla.forward_absorbed if path == "absorbed" else mla.forward_naive
    cache_ = LatentKVCache(x.shape[0], TINY.max_seq_len, TINY.kv_rank, TINY.rope_dim, x.dtype)
    outs = [step(x[:, :T_PROMPT], cache_, 0)]
    for t in range(T_PROMPT, x.shape[1]):
        outs.append(step(x[:, t : t + 1], cache_, t))  # (B, 1, C), start_pos = t
    return torch.cat(outs, dim=1)  # (B, T, C)


@claim("naive-equals-absorbed-decode")
def naive_equals_absorbed_decode(ctx: Context) -> Measured:
    """The one-token steps of absorbed cached decoding against the per-head reference over the
    whole sequence (and the naive path's cached steps), relative to the largest output."""
    mla, x = tiny_mla(ctx.seed), _inputs(ctx.seed)
    with torch.no_grad():
        full = mla_per_head(mla, x)
        absorbed = _decode(mla, x, "absorbed")
        naive_cached = _decode(mla, x, "naive")
    scale = full.abs().max().item()
    steps = slice(T_PROMPT, None)  # the one-token steps that read the cache
    return Measured(
        (absorbed - full)[:, steps].abs().max().item() / scale,
        {
            "naive_cached_vs_full": (naive_cached - full)[:, steps].abs().max().item() / scale,
            "absorbed_prefill_part": (absorbed - full)[:, :T_PROMPT].abs().max().item() / scale,
            "decode_steps": x.shape[1] - T_PROMPT,
        },
    )


@claim("rope-on-compressed-breaks-absorption")
def rope_on_compressed_breaks_absorption(ctx: Context) -> Measured:
    """Control: the model with RoPE on q^C and k^C too, against the absorbed path (which folds a
    position-free W^UK into the query): max |difference| / max |output|."""
    mla, x = tiny_mla(ctx.seed), _inputs(ctx.seed)
    with torch.no_grad():
        coupled = mla.forward_naive(x, rope_on_compressed=True)
        absorbed = mla.forward_absorbed(x)
    scale = coupled.abs().max().item()
    return Measured((coupled - absorbed).abs().max().item() / scale, {"max_abs_output": scale})


# --- 5. allocated cache bytes over T tokens -------------------------------------------------


@dataclass(frozen=True)
class Config:
    # --device: this paper runs on the CPU (see repro.lab.settings)
    CPU_ONLY = (
        "the experiment counts KV-cache bytes from the dimensions and plots a tiny fp64 MLA; "
        "nothing in it is worth a GPU"
    )
    tokens: tuple[int, ...] = setting(
        (1024, 4096, 16384, 131072), "context lengths T for the cache table and plot", min=1
    )


PRESETS = {"quick": Config(), "full": Config(tokens=(1024, 2048, 4096, 8192, 16384, 32768, 131072))}


def cache_bytes(kind: str, tokens: int) -> int:
    """Bytes of bf16 cache buffers for one sequence of `tokens` positions over 60 layers, at
    DeepSeek-V2's dimensions, allocated on meta: the latent cache or the library's KVCache."""
    if kind == "MLA":
        caches = latent_caches_for(V2, 1, tokens, torch.bfloat16, "meta")
        return sum(c.nbytes for c in caches)
    n_kv = {"MHA": V2.n_heads, "GQA-8": 8, "MQA": 1}[kind]
    return V2.n_layers * KVCache(1, tokens, n_kv, V2.head_dim, torch.bfloat16, "meta").nbytes


KINDS = ("MHA", "GQA-8", "MQA", "MLA")


def experiment(cfg: Config, ctx: Context) -> dict:
    table = {kind: [cache_bytes(kind, t) for t in cfg.tokens] for kind in KINDS}
    if ctx.out_dir is not None:
        _plot_absorption(ctx)
        gib = {k: (list(cfg.tokens), [b / 2**30 for b in v]) for k, v in table.items()}
        save_line_plot(
            ctx.out_dir / "kv_cache_bytes.svg",
            gib,
            "context length T (tokens)",
            "KV cache per sequence (GiB, bf16, 60 layers)",
            "DeepSeek-V2 dims: MLA caches 576 numbers per token and layer",
            logx=True,
            logy=True,
        )
    return {"tokens": list(cfg.tokens), "bytes": table}


def _plot_absorption(ctx: Context) -> None:
    """Per-position relative error against the head-by-head reference: absorbed cached decoding
    (rounding) and the RoPE-on-compressed design (order 1)."""
    mla, x = tiny_mla(ctx.seed), _inputs(ctx.seed)
    with torch.no_grad():
        ref = mla_per_head(mla, x)
        absorbed = _decode(mla, x, "absorbed")
        coupled = mla.forward_naive(x, rope_on_compressed=True)
    scale = ref.abs().max()
    positions = list(range(x.shape[1]))

    def per_position(y: torch.Tensor) -> list[float]:
        return [max(float(v), 1e-18) for v in ((y - ref).abs().amax(dim=(0, 2)) / scale)]

    save_line_plot(
        ctx.out_dir / "absorption_error.svg",
        {
            "absorbed, latent cache (prefill 0–18, then decode)": (
                positions,
                per_position(absorbed),
            ),
            "RoPE on the compressed key (rejected design)": (positions, per_position(coupled)),
        },
        "position",
        "max |difference| / max |output| (fp64)",
        "MLA: absorption is exact only with decoupled RoPE",
        logy=True,
    )


@claim("latent-cache-bytes-vs-mha")
def latent_cache_bytes_vs_mha(ctx: Context) -> Measured:
    """Allocated MHA KVCache bytes / LatentKVCache bytes, at the largest T of the table."""
    m = ctx.experiment()
    b = {k: v[-1] for k, v in m["bytes"].items()}
    return Measured(
        b["MHA"] / b["MLA"],
        {
            "tokens": m["tokens"][-1],
            "bytes": b,
            "gqa8_over_mla": b["GQA-8"] / b["MLA"],
            "mla_over_mqa": b["MLA"] / b["MQA"],
        },
    )
