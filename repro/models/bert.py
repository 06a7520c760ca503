"""BERT: a bidirectional post-LN Transformer encoder pre-trained with MLM and NSP.

Devlin et al., "BERT: Pre-training of Deep Bidirectional Transformers for Language
Understanding", https://arxiv.org/abs/1810.04805 (§3, Fig. 2 input embeddings, §3.1 MLM/NSP,
§5.1 the left-to-right ablation); layer details (GELU, LayerNorm eps 1e-12, the MLM transform,
the decoder tied to the word embeddings) follow the released google-research/bert code.

Glossary: B batch, T time, H heads (the paper's A), D head dim, C model width (the paper's H),
F FFN width (4H), V vocabulary (30522 WordPiece), L layers.

`causal=True` restricts every position to its left context on the same architecture (the
paper's "LTR" ablation); the pooler and NSP head then see only [CLS] itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.nn.attention import Attention, Backend
from repro.nn.ffn import FeedForward


def _bert(n_layers: int, d_model: int, n_heads: int) -> dict[str, Any]:
    """L, H, A of §3 with the shared settings: 30522 WordPiece tokens, 512 positions."""
    return dict(
        n_layers=n_layers,
        d_model=d_model,
        n_heads=n_heads,
        vocab_size=30522,
        max_seq_len=512,
        dropout=0.1,
    )


PRESETS: dict[str, dict[str, Any]] = {
    "bert-base": _bert(12, 768, 12),  # 110M
    "bert-large": _bert(24, 1024, 16),  # 340M
}


@dataclass
class BertConfig:
    """Defaults are a tiny CPU model; `from_name` gives BERT-Base and BERT-Large."""

    n_layers: int = 2
    d_model: int = 64
    n_heads: int = 4
    d_ff: int | None = None  # None -> 4 * d_model (§3)
    vocab_size: int = 256
    max_seq_len: int = 128  # learned positions
    n_segments: int = 2  # sentence A / B
    dropout: float = 0.1
    layer_norm_eps: float = 1e-12
    causal: bool = False  # left-only context (§5.1 LTR ablation)
    backend: Backend = "auto"

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model={self.d_model} is not divisible by n_heads={self.n_heads}")
        if self.d_ff is None:
            self.d_ff = 4 * self.d_model

    @property
    def head_dim(self) -> int:
        """D = d_model / n_heads."""
        return self.d_model // self.n_heads

    @classmethod
    def from_name(cls, name: str, **overrides: Any) -> BertConfig:
        """A §3 preset (see `PRESETS`), with field overrides."""
        if name not in PRESETS:
            raise ValueError(f"unknown BERT preset {name!r}; known: {', '.join(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})


class BertEmbeddings(nn.Module):
    """LayerNorm(token + position + segment embeddings), then dropout (Fig. 2)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(cfg.vocab_size, cfg.d_model)
        self.position_embeddings = nn.Embedding(cfg.max_seq_len, cfg.d_model)
        self.token_type_embeddings = nn.Embedding(cfg.n_segments, cfg.d_model)
        self.norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, input_ids: Tensor, token_type_ids: Tensor) -> Tensor:
        """input_ids, token_type_ids (B, T) -> (B, T, C)."""
        pos = torch.arange(input_ids.shape[1], device=input_ids.device)  # (T,)
        x = self.word_embeddings(input_ids) + self.position_embeddings(pos)
        return self.drop(self.norm(x + self.token_type_embeddings(token_type_ids)))


class BertLayer(nn.Module):
    """Post-LN encoder layer: LayerNorm(x + Dropout(Sublayer(x))) with a GELU FFN."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.attention = Attention(cfg.d_model, cfg.n_heads, causal=cfg.causal, backend=cfg.backend)
        self.attention_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.ffn = FeedForward(cfg.d_model, cfg.d_ff, "gelu")
        self.ffn_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.drop = nn.Dropout(cfg.dropout)

    def forward(self, x: Tensor, attention_mask: Tensor | None) -> Tensor:
        """x (B, T, C), attention_mask (B, T) True = real token -> (B, T, C)."""
        a = self.attention(x, key_padding_mask=attention_mask)
        x = self.attention_norm(x + self.drop(a))
        return self.ffn_norm(x + self.drop(self.ffn(x)))


class Bert(nn.Module):
    """Encoder, pooler (dense + tanh on [CLS]), MLM head and NSP head (§3.1, Fig. 1)."""

    def __init__(self, cfg: BertConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embeddings = BertEmbeddings(cfg)
        self.layers = nn.ModuleList(BertLayer(cfg) for _ in range(cfg.n_layers))
        self.pooler = nn.Linear(cfg.d_model, cfg.d_model)
        # MLM: dense + GELU + LayerNorm, then the word embeddings transposed and an output bias.
        self.mlm_transform = nn.Linear(cfg.d_model, cfg.d_model)
        self.mlm_norm = nn.LayerNorm(cfg.d_model, eps=cfg.layer_norm_eps)
        self.mlm_bias = nn.Parameter(torch.zeros(cfg.vocab_size))
        self.nsp = nn.Linear(cfg.d_model, 2)  # IsNext / NotNext from the pooled [CLS]
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # google-research/bert: truncated_normal_initializer(0.02), i.e. cut at two std
        if isinstance(module, nn.Linear | nn.Embedding):
            nn.init.trunc_normal_(module.weight, std=0.02, a=-0.04, b=0.04)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)

    def encode(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """input_ids (B, T) -> (hidden (B, T, C), pooled [CLS] (B, C)); mask True = real."""
        if input_ids.shape[1] > self.cfg.max_seq_len:
            raise ValueError(f"length {input_ids.shape[1]} exceeds {self.cfg.max_seq_len=}")
        if token_type_ids is None:
            token_type_ids = torch.zeros_like(input_ids)
        x = self.embeddings(input_ids, token_type_ids)  # (B, T, C)
        for layer in self.layers:
            x = layer(x, attention_mask)
        return x, torch.tanh(self.pooler(x[:, 0]))

    def forward(
        self,
        input_ids: Tensor,
        token_type_ids: Tensor | None = None,
        attention_mask: Tensor | None = None,
    ) -> tuple[Tensor, Tensor]:
        """input_ids (B, T) -> (MLM logits (B, T, V), NSP logits (B, 2))."""
        hidden, pooled = self.encode(input_ids, token_type_ids, attention_mask)
        h = self.mlm_norm(F.gelu(self.mlm_transform(hidden)))  # (B, T, C)
        mlm = F.linear(h, self.embeddings.word_embeddings.weight, self.mlm_bias)  # (B, T, V)
        return mlm, self.nsp(pooled)
