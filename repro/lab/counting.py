"""Analytic parameter, FLOP and memory formulas, and exact counts from models built on `meta`.

Kaplan et al., "Scaling Laws for Neural Language Models", https://arxiv.org/abs/2001.08361
(Table 1: N ≈ 2·d_model·n_layer·(2·d_attn + d_ff), C_forward ≈ 2N + 2·n_layer·n_ctx·d_attn,
C ≈ 6N per training token); Pope et al., "Efficiently Scaling Transformer Inference",
https://arxiv.org/abs/2211.05102 (§2: KV-cache size).

Glossary: L layers, C model width (d_model), H heads, Hkv kv heads, D head dim, A = H·D attention
width (d_attn), K = Hkv·D, F FFN width (d_ff), V vocabulary, P positions (n_ctx).

The `*_param_count` functions take a model config and mirror the modules in repro.models
term by term; tests hold them equal to the built modules for every preset. `embeddings=False`
drops the vocabulary- and position-indexed matrices (token, position and segment embeddings and
an untied output projection), Kaplan's convention for N.

torch is imported only inside the functions that build or inspect modules.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

if TYPE_CHECKING:
    from torch import nn

    from repro.models.bert import BertConfig
    from repro.models.gpt import GPTConfig
    from repro.models.llama import LlamaConfig
    from repro.models.mamba import MambaConfig
    from repro.models.mlp import MLPConfig
    from repro.models.transformer import TransformerConfig

M = TypeVar("M")

# preset prefix -> (module, config class, model class)
_FAMILIES: dict[str, tuple[str, str, str]] = {
    "transformer": ("repro.models.transformer", "TransformerConfig", "Transformer"),
    "bert": ("repro.models.bert", "BertConfig", "Bert"),
    "gpt3": ("repro.models.gpt", "GPTConfig", "GPT"),
    "llama": ("repro.models.llama", "LlamaConfig", "Llama"),
}


# --- building blocks ---------------------------------------------------------------------


def attention_params(d_model: int, n_heads: int, n_kv_heads: int, head_dim: int, bias: bool) -> int:
    """W_q (C×A), W_k, W_v (C×K each), W_o (A×C), plus their biases."""
    A, K = n_heads * head_dim, n_kv_heads * head_dim
    return 2 * d_model * A + 2 * d_model * K + ((A + 2 * K + d_model) if bias else 0)


def ffn_params(d_model: int, d_ff: int, bias: bool) -> int:
    """Two matrices C×F and F×C (Vaswani Eq. 2), plus their biases."""
    return 2 * d_model * d_ff + ((d_ff + d_model) if bias else 0)


def glu_ffn_params(d_model: int, d_ff: int) -> int:
    """Three matrices W, V (C×F) and W_2 (F×C), no biases (Shazeer Eq. 6)."""
    return 3 * d_model * d_ff


def layer_norm_params(dim: int) -> int:
    """Gain and bias."""
    return 2 * dim


def rms_norm_params(dim: int) -> int:
    """Gain only."""
    return dim


# --- model families ----------------------------------------------------------------------


def gpt_param_count(cfg: GPTConfig, embeddings: bool = True) -> int:
    """Token + position embeddings, L pre-LN blocks, final LayerNorm, head (tied or not)."""
    C, V = cfg.d_model, cfg.vocab_size
    block = (
        layer_norm_params(C)
        + attention_params(C, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, cfg.bias)
        + layer_norm_params(C)
        + ffn_params(C, cfg.d_ff, cfg.bias)
    )
    vocab = V * C + cfg.max_seq_len * C + (0 if cfg.tie_embeddings else V * C)
    return cfg.n_layers * block + layer_norm_params(C) + (vocab if embeddings else 0)


def llama_param_count(cfg: LlamaConfig, embeddings: bool = True) -> int:
    """Token embedding, L blocks (2 RMSNorms, bias-free attention, SwiGLU), RMSNorm, output."""
    C = cfg.d_model
    block = (
        2 * rms_norm_params(C)
        + attention_params(C, cfg.n_heads, cfg.n_kv_heads, cfg.head_dim, bias=False)
        + glu_ffn_params(C, cfg.d_ff)
    )
    vocab = 2 * cfg.vocab_size * C  # tok_embeddings and the untied output
    return cfg.n_layers * block + rms_norm_params(C) + (vocab if embeddings else 0)


def transformer_param_count(cfg: TransformerConfig, embeddings: bool = True) -> int:
    """One shared V×C embedding; N encoder and N decoder post-LN layers; no final norm."""
    C, H, D = cfg.d_model, cfg.n_heads, cfg.head_dim
    attn = attention_params(C, H, H, D, bias=False)
    ffn = ffn_params(C, cfg.d_ff, bias=True)
    encoder = attn + ffn + 2 * layer_norm_params(C)
    decoder = 2 * attn + ffn + 3 * layer_norm_params(C)
    vocab = cfg.vocab_size * C
    return cfg.n_layers * (encoder + decoder) + (vocab if embeddings else 0)


def bert_param_count(
    cfg: BertConfig, embeddings: bool = True, pooler: bool = True, heads: bool = True
) -> int:
    """Embeddings (+ LayerNorm), L post-LN layers, optional pooler and MLM + NSP heads.

    With pooler=True and heads=False this is Hugging Face's `BertModel`; with both,
    `BertForPreTraining` (the MLM decoder matrix is tied to the word embeddings).
    """
    C = cfg.d_model
    layer = (
        attention_params(C, cfg.n_heads, cfg.n_heads, cfg.head_dim, bias=True)
        + ffn_params(C, cfg.d_ff, bias=True)
        + 2 * layer_norm_params(C)
    )
    vocab = (cfg.vocab_size + cfg.max_seq_len + cfg.n_segments) * C
    total = (vocab if embeddings else 0) + layer_norm_params(C) + cfg.n_layers * layer
    if pooler:
        total += C * C + C
    if heads:
        mlm = C * C + C + layer_norm_params(C) + cfg.vocab_size  # transform, norm, output bias
        total += mlm + 2 * C + 2  # NSP classifier
    return total


def mamba_mixer_params(cfg: MambaConfig) -> int:
    """One Mamba block (Gu & Dao §3.4, Figure 3) with D = E·C inner channels:
    in_proj C×2D, depthwise conv D×K (+D bias), then the SSM — selective: x_proj D×(R+2N),
    dt_proj R×D + D; LTI control: Δ bias D, B and C D×N each — A_log D×N, skip D, out_proj D×C.
    """
    D, N, R, K = cfg.d_inner, cfg.d_state, cfg.dt_rank, cfg.d_conv
    proj = mamba_projection_params(cfg)
    conv = D * K + (D if cfg.conv_bias else 0)
    ssm = (D * (R + 2 * N) + R * D + D) if cfg.selective else (D + 2 * D * N)
    return proj + conv + ssm + D * N + D


def mamba_projection_params(cfg: MambaConfig) -> int:
    """The paper's 3ED²: in_proj (2ED²) and out_proj (ED²), plus their biases if any."""
    C, D = cfg.d_model, cfg.d_inner
    return 3 * C * D + ((2 * D + C) if cfg.bias else 0)


def mamba_param_count(cfg: MambaConfig, embeddings: bool = True) -> int:
    """Embedding (V padded), NL × (RMSNorm + mixer), final RMSNorm, head (tied or not)."""
    C, V = cfg.d_model, cfg.padded_vocab_size
    body = cfg.n_layers * (rms_norm_params(C) + mamba_mixer_params(cfg)) + rms_norm_params(C)
    vocab = V * C * (1 if cfg.tie_embeddings else 2)
    return body + (vocab if embeddings else 0)


def mlp_param_count(cfg: MLPConfig, embeddings: bool = True) -> int:
    """L hidden W×W layers with biases; the input projection and head count as embeddings."""
    W = cfg.width
    vocab = (cfg.code_dim * W + W) + (W * cfg.vocab_size + cfg.vocab_size)
    return cfg.n_hidden * (W * W + W) + (vocab if embeddings else 0)


_COUNTERS: dict[str, Callable[..., int]] = {
    "GPTConfig": gpt_param_count,
    "LlamaConfig": llama_param_count,
    "TransformerConfig": transformer_param_count,
    "BertConfig": bert_param_count,
    "MambaConfig": mamba_param_count,
    "MLPConfig": mlp_param_count,
}


def param_count(cfg: Any, **conventions: bool) -> int:
    """The analytic count for any model config; `conventions` go to its `*_param_count`."""
    return _COUNTERS[type(cfg).__name__](cfg, **conventions)


def kaplan_param_count(
    n_layers: int, d_model: int, d_attn: int | None = None, d_ff: int | None = None
) -> int:
    """Kaplan's N = 2·d_model·n_layer·(2·d_attn + d_ff): non-embedding, no biases or norms."""
    d_attn = d_model if d_attn is None else d_attn
    d_ff = 4 * d_model if d_ff is None else d_ff
    return 2 * d_model * n_layers * (2 * d_attn + d_ff)


# --- presets and built modules -----------------------------------------------------------


def _family(name: str) -> tuple[Any, str, str]:
    prefix = name.split("-", 1)[0]
    if prefix not in _FAMILIES:
        raise ValueError(f"unknown preset {name!r}: the prefix must be one of {list(_FAMILIES)}")
    module, config_cls, model_cls = _FAMILIES[prefix]
    return importlib.import_module(module), config_cls, model_cls


def preset_names() -> list[str]:
    """Every named preset of every model family, e.g. 'gpt3-175b', 'llama-7b', 'bert-base'."""
    return [name for prefix in _FAMILIES for name in _family(prefix)[0].PRESETS]


def preset_config(name: str, **overrides: Any) -> Any:
    """The config of a named preset, with field overrides."""
    module, config_cls, _ = _family(name)
    return getattr(module, config_cls).from_name(name, **overrides)


def build_on_meta(factory: Callable[[], M]) -> M:
    """Run `factory` with torch's default device set to `meta`: shapes only, no memory.

    The in-place initialisers of `torch.nn.init` are skipped meanwhile: a meta tensor has no
    values to fill, and on meta they run through Python decompositions (seconds for GPT-3 175B).
    """
    import torch
    from torch.nn import init

    skipped = {
        name: fn
        for name, fn in vars(init).items()
        if name.endswith("_") and not name.startswith("_") and callable(fn)
    }
    try:
        for name in skipped:
            setattr(init, name, _keep)
        with torch.device("meta"):
            return factory()
    finally:
        for name, fn in skipped.items():
            setattr(init, name, fn)


def _keep(tensor: Any, *args: Any, **kwargs: Any) -> Any:
    return tensor


def build_preset(name: str, **overrides: Any) -> nn.Module:
    """The model of a named preset, built on the meta device (GPT-3 175B takes no memory)."""
    module, _, model_cls = _family(name)
    cfg = preset_config(name, **overrides)
    return build_on_meta(lambda: getattr(module, model_cls)(cfg))


def count_parameters(model: nn.Module, trainable_only: bool = False) -> int:
    """Elements of the distinct parameters (a tied matrix counts once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


# --- compute and memory ------------------------------------------------------------------


def training_flops(n_params: float, n_tokens: float) -> float:
    """C ≈ 6·N·D: 2N per token forward, 4N backward (Kaplan Table 1)."""
    return 6 * n_params * n_tokens


def kaplan_attention_flops(n_layers: int, n_ctx: int, d_attn: int) -> int:
    """2·n_layer·n_ctx·d_attn: the per-token forward cost of the attention scores and mixing."""
    return 2 * n_layers * n_ctx * d_attn


def kaplan_forward_flops(n_params: int, n_layers: int, n_ctx: int, d_attn: int) -> int:
    """C_forward ≈ 2N + 2·n_layer·n_ctx·d_attn per token (Kaplan Table 1)."""
    return 2 * n_params + kaplan_attention_flops(n_layers, n_ctx, d_attn)


def kv_cache_bytes_per_token(
    n_layers: int, n_kv_heads: int, head_dim: int, bytes_per_elem: int = 2
) -> int:
    """2 (k and v) · L · Hkv · D · bytes per element (Pope et al. §2)."""
    return 2 * n_layers * n_kv_heads * head_dim * bytes_per_elem


def ssm_state_bytes_per_layer(
    batch: int, d_inner: int, d_state: int, d_conv: int, bytes_per_elem: int = 2
) -> int:
    """A Mamba layer's decoding state, B·(D·N + D·(K−1)) elements: the SSM state and the last
    K−1 conv inputs. It does not depend on how many tokens have been processed."""
    return batch * (d_inner * d_state + d_inner * (d_conv - 1)) * bytes_per_elem


def counted_flops(fn: Callable[[], Any]) -> dict[str, dict[str, int]]:
    """The FLOPs torch's FlopCounterMode sees while `fn()` runs (matmuls and attention kernels).

    Returns {module path: {op name: FLOPs}}, with "Global" holding the whole run; a module's entry
    includes its children's. Element-wise ops (norms, activations, softmax) are not counted,
    matching Kaplan's Table 1, which counts only the multiply-adds of weights and attention.
    """
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return {
        module: {
            str(op).split(".")[1] if "." in str(op) else str(op): int(n) for op, n in ops.items()
        }
        for module, ops in counter.get_flop_counts().items()
    }
