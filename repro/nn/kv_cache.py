"""A static (preallocated) key/value cache and incremental decoding with it.

Pope et al., "Efficiently Scaling Transformer Inference", https://arxiv.org/abs/2211.05102
(§2: the KV cache as the memory cost of generation, §3.3: multiquery attention shrinks it);
Ainslie et al., "GQA", https://arxiv.org/abs/2305.13245 (§2.2: Hkv key/value heads).

Glossary: B batch, Hkv key/value heads (only these are cached: GQA/MQA keep H / Hkv times less),
S_max the cache length (max_seq_len), T new positions written in one step, D head dim, L layers,
V vocabulary.

Decoding is a prefill (the whole prompt in one forward, filling the cache at positions
0..T0-1) followed by one-token steps, each attending over the cached prefix instead of
recomputing it. `generate(..., use_cache=False)` is the reference: it recomputes the full prefix
every step, which costs O(T²) token-forwards over a generation instead of O(T).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch
from torch import Tensor, nn


class KVCache(nn.Module):
    """Preallocated k/v buffers (B, Hkv, S_max, D) for one attention layer.

    `update(pos, k, v)` writes T new positions at pos..pos+T-1 and returns the filled prefix
    (B, Hkv, pos+T, D), which is what `repro.nn.attention.Attention` attends over.
    """

    def __init__(
        self,
        batch: int,
        max_seq_len: int,
        n_kv_heads: int,
        head_dim: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str = "cpu",
    ) -> None:
        super().__init__()
        shape = (batch, n_kv_heads, max_seq_len, head_dim)  # (B, Hkv, S_max, D)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.batch, self.max_seq_len = batch, max_seq_len
        self.n_kv_heads, self.head_dim = n_kv_heads, head_dim

    def update(self, pos: int, k: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
        """k/v (B, Hkv, T, D) stored at positions pos..pos+T-1 -> prefixes (B, Hkv, pos+T, D)."""
        T = k.shape[2]
        if pos < 0 or pos + T > self.max_seq_len:
            raise ValueError(
                f"KVCache.update: positions {pos}..{pos + T - 1} are outside the cache "
                f"(0..{self.max_seq_len - 1}); allocate a longer cache"
            )
        expected = (self.batch, self.n_kv_heads, T, self.head_dim)
        if tuple(k.shape) != expected or tuple(v.shape) != expected:
            raise ValueError(
                f"KVCache.update: k {tuple(k.shape)} and v {tuple(v.shape)} should both be "
                f"(B, Hkv, T, D) = {expected}"
            )
        self.k[:, :, pos : pos + T] = k
        self.v[:, :, pos : pos + T] = v
        return self.k[:, :, : pos + T], self.v[:, :, : pos + T]  # (B, Hkv, pos+T, D) views

    @property
    def nbytes(self) -> int:
        """Bytes held by the k and v buffers: 2 · B · Hkv · S_max · D · bytes per element."""
        return self.k.nbytes + self.v.nbytes


class _DecoderConfig(Protocol):
    n_layers: int
    n_heads: int
    n_kv_heads: int | None
    d_model: int


def _head_dim(cfg: _DecoderConfig) -> int:
    head_dim = getattr(cfg, "head_dim", None)
    return head_dim if head_dim is not None else cfg.d_model // cfg.n_heads


def caches_for(
    model_config: _DecoderConfig,
    batch: int,
    max_seq_len: int,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
) -> list[KVCache]:
    """One KVCache per layer of a decoder config (n_layers, n_heads, n_kv_heads, d_model)."""
    n_kv_heads = model_config.n_kv_heads or model_config.n_heads
    return [
        KVCache(batch, max_seq_len, n_kv_heads, _head_dim(model_config), dtype, device)
        for _ in range(model_config.n_layers)
    ]


def sample_next(
    logits: Tensor,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """logits (B, V) -> next token ids (B,): argmax when temperature == 0, else top-k sampling."""
    if temperature == 0.0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None:
        kth = torch.topk(logits, min(top_k, logits.shape[-1]), dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)  # (B, V)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


@torch.inference_mode()
def generate(
    model: nn.Module,
    prompt: Tensor,
    max_new_tokens: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    generator: torch.Generator | None = None,
    use_cache: bool = True,
    on_token: Callable[[int], None] | None = None,
) -> Tensor:
    """prompt (B, T0) -> (B, T0 + max_new_tokens): greedy (temperature 0) or top-k sampling.

    `model` is a decoder as in repro.models.gpt / llama: `model.cfg` (n_layers, n_heads,
    n_kv_heads, d_model, max_seq_len) and `model(idx, start_pos, caches) -> logits (B, T, V)`.

    With `use_cache` the prompt is prefilled once and each new token is one forward of length 1
    over the cached prefix; without it every step re-runs the model on the whole sequence.
    `on_token(t)` is called once position t has been sampled (the decode benchmark times it).
    """
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    B, T0 = prompt.shape
    total = T0 + max_new_tokens
    if total > model.cfg.max_seq_len:
        raise ValueError(
            f"prompt ({T0}) + max_new_tokens ({max_new_tokens}) = {total} exceeds "
            f"max_seq_len={model.cfg.max_seq_len}"
        )
    tokens = torch.empty(B, total, dtype=prompt.dtype, device=prompt.device)  # (B, T0 + N)
    tokens[:, :T0] = prompt
    if max_new_tokens == 0:
        return tokens
    if use_cache:
        param = next(model.parameters())
        caches = caches_for(model.cfg, B, total, param.dtype, param.device)
        logits = model(prompt, 0, caches)[:, -1]  # prefill: (B, V)
    else:
        logits = model(prompt)[:, -1]  # (B, V)
    for t in range(T0, total):
        tokens[:, t] = sample_next(logits, temperature, top_k, generator)
        if on_token is not None:
            on_token(t)
        if t + 1 == total:
            break
        if use_cache:
            logits = model(tokens[:, t : t + 1], t, caches)[:, -1]  # one-token step: (B, V)
        else:
            logits = model(tokens[:, : t + 1])[:, -1]  # full recomputation: (B, V)
    return tokens
