"""The Transformer: the original post-LN encoder-decoder for sequence transduction.

Vaswani et al., "Attention Is All You Need", https://arxiv.org/abs/1706.03762 (§3, Fig. 1,
Table 3 for the base and big sizes).

Glossary: B batch, S source length, T target length, H heads (h), D head dim (d_k = d_v),
C model width (d_model), F FFN width (d_ff), V the shared source/target vocabulary, N layers.

Masks: `src_pad_mask` (B, S) and `tgt_pad_mask` (B, T) are bool with True = a real token (the
`Attention` convention), so a padded key is never attended to.
Conventions the paper leaves open: attention projections have no biases (the paper's W^Q, W^K,
W^V, W^O; tensor2tensor's default), embeddings are initialised N(0, 1/d_model) so that the
√d_model scaling of §3.4 gives unit variance (tensor2tensor), other weights Xavier-uniform.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.nn.attention import Attention, Backend
from repro.nn.ffn import FeedForward
from repro.nn.positional import sinusoidal_encoding

PRESETS: dict[str, dict[str, Any]] = {
    # Table 3: N, d_model, d_ff, h, d_k = d_v, P_drop (EN-DE); "about 37000" BPE tokens (§5.1).
    "transformer-base": dict(n_layers=6, d_model=512, d_ff=2048, n_heads=8, dropout=0.1),
    "transformer-big": dict(n_layers=6, d_model=1024, d_ff=4096, n_heads=16, dropout=0.3),
}


@dataclass
class TransformerConfig:
    """Defaults are a tiny CPU model; `from_name` gives the Table 3 sizes."""

    n_layers: int = 2  # N, for the encoder and the decoder each
    d_model: int = 64
    n_heads: int = 4
    d_ff: int = 256
    vocab_size: int = 37000  # shared source/target BPE vocabulary for EN-DE (§5.1)
    max_seq_len: int = 512  # length of the sinusoid table; the encoding itself has no limit
    dropout: float = 0.1  # P_drop (§5.4)
    backend: Backend = "auto"

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")

    @property
    def head_dim(self) -> int:
        """D = d_model / n_heads."""
        return self.d_model // self.n_heads

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> TransformerConfig:
        """A Table 3 preset (see `PRESETS`), with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown Transformer preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


class EncoderLayer(nn.Module):
    """LayerNorm(x + Dropout(Sublayer(x))) around self-attention, then the FFN (§3.1, §5.4)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.self_attn = Attention(cfg.d_model, cfg.n_heads, bias=False, backend=cfg.backend)
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, "relu")
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, src_pad_mask: Tensor | None) -> Tensor:
        """x (B, S, C) -> (B, S, C)."""
        x = self.norm1(x + self.drop(self.self_attn(x, key_padding_mask=src_pad_mask)))
        return self.norm2(x + self.drop(self.ffn(x)))


class DecoderLayer(nn.Module):
    """Masked self-attention, attention over the encoder output, FFN; each post-LN (§3.1)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.self_attn = Attention(
            cfg.d_model, cfg.n_heads, bias=False, causal=True, backend=cfg.backend
        )
        self.norm1 = nn.LayerNorm(cfg.d_model)
        self.cross_attn = Attention(cfg.d_model, cfg.n_heads, bias=False, backend=cfg.backend)
        self.norm2 = nn.LayerNorm(cfg.d_model)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, "relu")
        self.norm3 = nn.LayerNorm(cfg.d_model)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(
        self, y: Tensor, memory: Tensor, src_pad_mask: Tensor | None, tgt_pad_mask: Tensor | None
    ) -> Tensor:
        """y (B, T, C), memory (B, S, C) -> (B, T, C)."""
        y = self.norm1(y + self.drop(self.self_attn(y, key_padding_mask=tgt_pad_mask)))
        cross = self.cross_attn(y, context=memory, key_padding_mask=src_pad_mask)
        y = self.norm2(y + self.drop(cross))
        return self.norm3(y + self.drop(self.ffn(y)))


class Transformer(nn.Module):
    """Encoder-decoder with one embedding matrix shared by both inputs and the output (§3.4)."""

    def __init__(self, cfg: TransformerConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.register_buffer(
            "pe", sinusoidal_encoding(cfg.max_seq_len, cfg.d_model), persistent=False
        )  # (T_max, C)
        self.drop = nn.Dropout(cfg.dropout)
        self.encoder = nn.ModuleList(EncoderLayer(cfg) for _ in range(cfg.n_layers))
        self.decoder = nn.ModuleList(DecoderLayer(cfg) for _ in range(cfg.n_layers))
        for name, p in self.named_parameters():
            if name == "embed.weight":
                nn.init.normal_(p, std=cfg.d_model**-0.5)
            elif p.dim() > 1:
                nn.init.xavier_uniform_(p)

    def _embed(self, ids: Tensor) -> Tensor:
        """ids (B, T) -> Dropout(E[ids]·√d_model + PE) (§3.4, §3.5, §5.4); (B, T, C)."""
        if ids.shape[1] > self.cfg.max_seq_len:
            raise ValueError(f"sequence length {ids.shape[1]} exceeds {self.cfg.max_seq_len=}")
        pe = self.pe[: ids.shape[1]]  # (T, C)
        return self.drop(self.embed(ids) * math.sqrt(self.cfg.d_model) + pe)

    def encode(self, src: Tensor, src_pad_mask: Tensor | None = None) -> Tensor:
        """src (B, S) -> memory (B, S, C)."""
        x = self._embed(src)
        for layer in self.encoder:
            x = layer(x, src_pad_mask)
        return x

    def decode(
        self,
        tgt: Tensor,
        memory: Tensor,
        src_pad_mask: Tensor | None = None,
        tgt_pad_mask: Tensor | None = None,
    ) -> Tensor:
        """tgt (B, T), memory (B, S, C) -> logits (B, T, V) from the shared embedding (§3.4)."""
        y = self._embed(tgt)
        for layer in self.decoder:
            y = layer(y, memory, src_pad_mask, tgt_pad_mask)
        return F.linear(y, self.embed.weight)  # (B, T, V)

    def forward(
        self,
        src: Tensor,
        tgt: Tensor,
        src_pad_mask: Tensor | None = None,
        tgt_pad_mask: Tensor | None = None,
    ) -> Tensor:
        """src (B, S), tgt (B, T) (shifted right: starts with BOS) -> logits (B, T, V)."""
        return self.decode(tgt, self.encode(src, src_pad_mask), src_pad_mask, tgt_pad_mask)

    @torch.no_grad()
    def greedy_decode(
        self,
        src: Tensor,
        bos_id: int,
        eos_id: int,
        max_len: int,
        src_pad_mask: Tensor | None = None,
    ) -> Tensor:
        """Argmax decoding (recomputing the prefix each step); (B, S) -> (B, 1 + max_len).

        Starts from BOS; a sequence that has produced EOS repeats it, and once every sequence
        has, the rest is filled with EOS without running the decoder.
        """
        memory = self.encode(src, src_pad_mask)  # (B, S, C)
        out = torch.full((src.shape[0], 1), bos_id, dtype=torch.long, device=src.device)
        done = torch.zeros(src.shape[0], dtype=torch.bool, device=src.device)
        for _ in range(max_len):
            nxt = self.decode(out, memory, src_pad_mask)[:, -1].argmax(-1)  # (B,)
            nxt = nxt.masked_fill(done, eos_id)
            out = torch.cat([out, nxt[:, None]], dim=1)  # (B, t + 1)
            done |= nxt == eos_id
            if done.all():
                break
        return F.pad(out, (0, 1 + max_len - out.shape[1]), value=eos_id)  # (B, 1 + max_len)
