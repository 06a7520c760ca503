"""A plain MLP for the Zipf-facts source (repro/data/zipf_facts.py): code in, label logits out.

The facts source has no sequence, so a GPT would spend its parameters on positions and attention
that the task cannot use; an MLP makes the parameter count a clean knob (one width, one depth).

Glossary: B batch, d code dimension, W width, L hidden layers, V label vocabulary.

Parameter convention (Kaplan et al. 2020, §2.1, which drops the vocabulary- and position-indexed
matrices): the input projection d -> W and the output head W -> V play the role of the embedding
and de-embedding, so the *non-embedding* parameters are the L hidden W×W layers with biases.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor, nn


@dataclass
class MLPConfig:
    code_dim: int = 16  # d
    width: int = 32  # W
    n_hidden: int = 1  # L: hidden W×W layers
    vocab_size: int = 32  # V


class MLP(nn.Module):
    """d -> W, GELU, L × (W -> W, GELU), W -> V."""

    def __init__(self, cfg: MLPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Linear(cfg.code_dim, cfg.width)
        self.hidden = nn.ModuleList(nn.Linear(cfg.width, cfg.width) for _ in range(cfg.n_hidden))
        self.head = nn.Linear(cfg.width, cfg.vocab_size)
        self.act = nn.GELU()

    def forward(self, x: Tensor) -> Tensor:
        """x (B, d) -> logits (B, V)."""
        h = self.act(self.embed(x))  # (B, W)
        for layer in self.hidden:
            h = self.act(layer(h))  # (B, W)
        return self.head(h)  # (B, V)
