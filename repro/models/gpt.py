"""GPT-3: a decoder-only Transformer language model (the GPT-2 architecture, scaled up).

Brown et al., "Language Models are Few-Shot Learners", https://arxiv.org/abs/2005.14165
(§2.1, Table 2.1); Radford et al., "Language Models are Unsupervised Multitask Learners" (GPT-2,
§2.3: pre-LN blocks, a final LayerNorm, residual projections initialised with 1/√N).

Glossary: B batch, T time, H heads, Hkv kv heads, D head dim (Table 2.1's d_head), C model width
(d_model), V vocabulary, L layers (n_layers), F FFN width (d_ff = 4·d_model).

Deviations: GPT-3 alternates dense and locally banded sparse attention layers (§2.1); every layer
here is dense (the parameter count is the same).

Table 2.1 as printed is not self-consistent in two rows, and the presets keep it as printed:
- XL: d_model 2048 with 24 heads of d_head 128, i.e. 3072 attention channels (2048 is not a
  multiple of 24). Built this way it has ~1.5B parameters, not the 1.3B the row states; 16 heads
  of 128 (2048 channels) give 1.3B: `GPTConfig.from_name("gpt3-xl", n_heads=16)`.
- 13B: d_model 5140 is not a multiple of its 40 heads; 40 × 128 = 5120, the likely intent.
Both are built with d_attn = n_heads · head_dim ≠ d_model: q/k/v project C -> d_attn and the
output projection d_attn -> C (`Attention(head_dim=…)`; Kaplan et al. 2020 also separate d_attn).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from repro.nn.attention import Attention, Backend, KVCacheLike
from repro.nn.ffn import FeedForward


def _gpt3(n_layers: int, d_model: int, n_heads: int, head_dim: int) -> dict[str, Any]:
    """One row of Table 2.1: n_layers, d_model, n_heads, d_head; vocabulary 50257, n_ctx 2048."""
    return dict(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        head_dim=head_dim,
        vocab_size=50257,
        max_seq_len=2048,
    )


PRESETS: dict[str, dict[str, Any]] = {
    "gpt3-small": _gpt3(12, 768, 12, 64),  # 125M
    "gpt3-medium": _gpt3(24, 1024, 16, 64),  # 350M
    "gpt3-large": _gpt3(24, 1536, 16, 96),  # 760M
    "gpt3-xl": _gpt3(24, 2048, 24, 128),  # 1.3B (row inconsistent, see module docstring)
    "gpt3-2.7b": _gpt3(32, 2560, 32, 80),
    "gpt3-6.7b": _gpt3(32, 4096, 32, 128),
    "gpt3-13b": _gpt3(40, 5140, 40, 128),  # d_model as printed (see module docstring)
    "gpt3-175b": _gpt3(96, 12288, 96, 128),
}


@dataclass
class GPTConfig:
    """Defaults are a tiny CPU model; `from_name` gives the Table 2.1 rows."""

    n_layers: int = 4
    d_model: int = 256
    n_heads: int = 4
    n_kv_heads: int | None = None  # None -> n_heads (GPT-3 uses MHA)
    head_dim: int | None = None  # None -> d_model // n_heads
    d_ff: int | None = None  # None -> 4 * d_model
    vocab_size: int = 256
    max_seq_len: int = 256
    dropout: float = 0.0
    bias: bool = True  # biases in every Linear but the head (GPT-2)
    tie_embeddings: bool = True  # output head shares the token embedding (GPT-2/3)
    backend: Backend = "auto"

    def __post_init__(self) -> None:
        if self.n_kv_heads is None:
            self.n_kv_heads = self.n_heads
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads={self.n_heads} is not a multiple of {self.n_kv_heads=}")
        if self.head_dim is None:
            if self.d_model % self.n_heads:
                raise ValueError(
                    f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}; "
                    "give head_dim explicitly"
                )
            self.head_dim = self.d_model // self.n_heads
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model

    @property
    def d_attn(self) -> int:
        """Attention width H·D (Kaplan's d_attn); differs from d_model in two Table 2.1 rows."""
        return self.n_heads * self.head_dim

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> GPTConfig:
        """A Table 2.1 preset (see `PRESETS`), with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown GPT preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


class Block(nn.Module):
    """Pre-LN decoder block: x + Attn(LN(x)), then x + FFN(LN(x)) (GPT-2 §2.3)."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.ln_1 = nn.LayerNorm(cfg.d_model)
        self.attn = Attention(
            cfg.d_model,
            cfg.n_heads,
            cfg.n_kv_heads,
            cfg.bias,
            causal=True,
            backend=cfg.backend,
            head_dim=cfg.head_dim,
        )
        self.ln_2 = nn.LayerNorm(cfg.d_model)
        self.mlp = FeedForward(cfg.d_model, cfg.d_ff, "gelu_tanh", bias=cfg.bias)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, cache: KVCacheLike | None = None, start_pos: int = 0) -> Tensor:
        """x (B, T, C) -> (B, T, C)."""
        x = x + self.drop(self.attn(self.ln_1(x), cache=cache, start_pos=start_pos))
        return x + self.drop(self.mlp(self.ln_2(x)))


class GPT(nn.Module):
    """Token + learned position embeddings, L pre-LN blocks, final LayerNorm, (tied) LM head."""

    def __init__(self, cfg: GPTConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.wte = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.wpe = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, cfg.vocab_size, bias=False)
        if cfg.tie_embeddings:
            self.lm_head.weight = self.wte.weight
        self.apply(self._init_weights)
        for block in self.blocks:  # GPT-2 §2.3: residual projections scaled by 1/√N, N = 2L
            for proj in (block.attn.wo, block.mlp.w2):
                nn.init.normal_(proj.weight, std=0.02 / math.sqrt(2 * cfg.n_layers))

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.normal_(module.weight, std=0.02)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def forward(
        self, idx: Tensor, start_pos: int = 0, caches: list[KVCacheLike] | None = None
    ) -> Tensor:
        """idx (B, T) token ids at positions start_pos..start_pos+T-1 -> logits (B, T, V)."""
        T = idx.shape[1]
        if start_pos + T > self.cfg.max_seq_len:
            raise ValueError(f"positions up to {start_pos + T} exceed {self.cfg.max_seq_len=}")
        pos = torch.arange(start_pos, start_pos + T, device=idx.device)  # (T,)
        x = self.drop(self.wte(idx) + self.wpe(pos))  # (B, T, C)
        for i, block in enumerate(self.blocks):
            x = block(x, None if caches is None else caches[i], start_pos)
        return self.lm_head(self.ln_f(x))  # (B, T, V)
