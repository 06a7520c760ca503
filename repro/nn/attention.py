"""Scaled dot-product attention: the reference, the kernel dispatcher and the MHA/GQA/MQA module.

Vaswani et al., "Attention Is All You Need", https://arxiv.org/abs/1706.03762 (Eq. 1);
Ainslie et al., "GQA", https://arxiv.org/abs/2305.13245 (grouped key/value heads).

Glossary: B batch, H query heads, Hkv key/value heads (H % Hkv == 0; Hkv == H is MHA,
Hkv == 1 is MQA), T query length, S key length, D head dim, C model width (H * D).

Masks: `causal` aligns the queries to the *end* of the keys (query i sees keys j <= i + S - T),
which is what decoding with a cache needs. `key_padding_mask` is (B, S) bool, True = a real token.
A query that sees no key at all gets a zero output (not NaN).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Literal, Protocol, get_args

import torch
import torch.nn.functional as F
from torch import Tensor, nn

Backend = Literal["auto", "flash", "sdpa", "ref"]
BACKENDS: tuple[str, ...] = get_args(Backend)


def repeat_kv(x: Tensor, n_rep: int) -> Tensor:
    """(B, Hkv, S, D) -> (B, Hkv * n_rep, S, D): each key/value head serves n_rep query heads."""
    if n_rep == 1:
        return x
    B, Hkv, S, D = x.shape
    return x[:, :, None].expand(B, Hkv, n_rep, S, D).reshape(B, Hkv * n_rep, S, D)


def attention_mask(
    T: int, S: int, causal: bool, key_padding_mask: Tensor | None, device: torch.device
) -> Tensor | None:
    """Bool mask broadcastable to (B, H, T, S), True = may attend; None if nothing is masked."""
    mask = None
    if causal:
        i = torch.arange(T, device=device)[:, None]
        j = torch.arange(S, device=device)[None, :]
        mask = j <= i + (S - T)  # (T, S)
    if key_padding_mask is not None:
        pad = key_padding_mask[:, None, None, :].bool()  # (B, 1, 1, S)
        mask = pad if mask is None else mask & pad
    return mask


def attention_ref(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    scale: float | None = None,
    upcast: torch.dtype | None = None,
) -> Tensor:
    """softmax(Q Kᵀ / √D) V, materialising the (T, S) score matrix, computed in `upcast`.

    `upcast` None means at least fp32 (fp64 stays fp64), as `repro.nn.norm` does.

    q (B, H, T, D), k/v (B, Hkv, S, D) -> (B, H, T, D) in q's dtype.
    """
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    assert H % Hkv == 0, f"H={H} is not a multiple of Hkv={Hkv}"
    scale = 1.0 / math.sqrt(D) if scale is None else scale
    if upcast is None:
        upcast = torch.promote_types(q.dtype, torch.float32)
    qf, kf, vf = q.to(upcast), repeat_kv(k.to(upcast), H // Hkv), repeat_kv(v.to(upcast), H // Hkv)
    scores = (qf @ kf.transpose(-2, -1)) * scale  # (B, H, T, S)
    mask = attention_mask(T, S, causal, key_padding_mask, q.device)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    probs = torch.softmax(scores, dim=-1)
    if mask is not None:
        probs = probs.nan_to_num(0.0)  # rows with no visible key: softmax of all -inf
    return (probs @ vf).to(q.dtype)  # (B, H, T, D)


def _attention_sdpa(
    q: Tensor, k: Tensor, v: Tensor, causal: bool, key_padding_mask: Tensor | None
) -> Tensor:
    T, S = q.shape[2], k.shape[2]
    causal = causal and T > 1  # one query at the end of the keys sees all of them
    k, v = repeat_kv(k, q.shape[1] // k.shape[1]), repeat_kv(v, q.shape[1] // v.shape[1])
    if key_padding_mask is None and (not causal or T == S):
        return F.scaled_dot_product_attention(q, k, v, is_causal=causal)
    mask = attention_mask(T, S, causal, key_padding_mask, q.device)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    return out.masked_fill(~mask.any(-1, keepdim=True), 0.0)  # no visible key -> 0, not NaN


def attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    causal: bool = False,
    key_padding_mask: Tensor | None = None,
    backend: Backend = "auto",
) -> Tensor:
    """Exact attention through the chosen kernel. q (B, H, T, D), k/v (B, Hkv, S, D).

    `auto` takes the Triton FlashAttention kernel on CUDA when Triton is installed and the tiled
    PyTorch FlashAttention elsewhere; `sdpa` is PyTorch's fused kernel, `ref` the plain formula.
    """
    if backend not in BACKENDS:  # a misspelt name would otherwise fall through to flash
        raise ValueError(f"unknown attention backend {backend!r}; one of {BACKENDS}")
    if backend == "ref":
        return attention_ref(q, k, v, causal, key_padding_mask)
    if backend == "sdpa":
        return _attention_sdpa(q, k, v, causal, key_padding_mask)
    from repro.nn import flash  # local: flash imports attention_ref from this module

    if backend == "auto" and q.is_cuda:
        from repro.nn import flash_triton

        if flash_triton.supports(q, k, v, key_padding_mask):
            return flash_triton.flash_attention_triton(q, k, v, causal=causal)
    return flash.flash_attention(q, k, v, causal=causal, key_padding_mask=key_padding_mask)


class KVCacheLike(Protocol):
    """What `Attention` needs from a cache (see repro.nn.kv_cache.KVCache)."""

    def update(self, pos: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """Store k/v (B, Hkv, T, D) at positions pos..pos+T-1; return the filled prefix."""
        ...


Rope = Callable[[Tensor, int], Tensor]  # (x (B, H, T, D), start_pos) -> rotated x


class Attention(nn.Module):
    """Multi-head attention with `n_kv_heads` key/value heads (MHA, GQA or MQA).

    Self-attention when `context` is None, cross-attention over `context` otherwise. `rope`
    rotates q and k after projection (RoFormer Eq. 34); `cache` turns it into incremental
    decoding, with `start_pos` the position of the first query token.
    """

    def __init__(
        self,
        d_model: int,
        n_heads: int,
        n_kv_heads: int | None = None,
        bias: bool = True,
        causal: bool = False,
        backend: Backend = "auto",
        head_dim: int | None = None,
    ) -> None:
        super().__init__()
        n_kv_heads = n_heads if n_kv_heads is None else n_kv_heads
        if head_dim is None:  # usual case: the heads split the model width
            assert d_model % n_heads == 0, f"d_model={d_model} not divisible by n_heads={n_heads}"
            head_dim = d_model // n_heads
        assert n_heads % n_kv_heads == 0, f"n_heads={n_heads} not a multiple of {n_kv_heads}"
        self.n_heads, self.n_kv_heads, self.head_dim = n_heads, n_kv_heads, head_dim
        self.causal, self.backend = causal, backend
        # H·D may differ from C (GPT-3's XL and 13B rows; Kaplan et al.'s d_attn)
        self.wq = nn.Linear(d_model, n_heads * head_dim, bias=bias)
        self.wk = nn.Linear(d_model, n_kv_heads * head_dim, bias=bias)
        self.wv = nn.Linear(d_model, n_kv_heads * head_dim, bias=bias)
        self.wo = nn.Linear(n_heads * head_dim, d_model, bias=bias)

    def _split(self, x: Tensor, n_heads: int) -> Tensor:
        B, T, _ = x.shape
        return x.view(B, T, n_heads, self.head_dim).transpose(1, 2)  # (B, h, T, D)

    def forward(
        self,
        x: Tensor,
        context: Tensor | None = None,
        key_padding_mask: Tensor | None = None,
        rope: Rope | None = None,
        cache: KVCacheLike | None = None,
        start_pos: int = 0,
    ) -> Tensor:
        """x (B, T, C), context (B, S, C) or None, key_padding_mask (B, S) -> (B, T, C)."""
        B, T, _ = x.shape
        kv_in = x if context is None else context
        q = self._split(self.wq(x), self.n_heads)  # (B, H, T, D)
        k = self._split(self.wk(kv_in), self.n_kv_heads)  # (B, Hkv, S, D)
        v = self._split(self.wv(kv_in), self.n_kv_heads)  # (B, Hkv, S, D)
        if rope is not None:
            q, k = rope(q, start_pos), rope(k, start_pos)
        if cache is not None:
            k, v = cache.update(start_pos, k, v)  # (B, Hkv, start_pos + T, D)
        y = attention(q, k, v, self.causal, key_padding_mask, self.backend)  # (B, H, T, D)
        return self.wo(y.transpose(1, 2).reshape(B, T, self.n_heads * self.head_dim))
