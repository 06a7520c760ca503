"""Position-wise feed-forward networks: the ReLU/GELU FFN and the GLU family.

Vaswani et al., "Attention Is All You Need", https://arxiv.org/abs/1706.03762 (§3.3, Eq. 2);
Shazeer, "GLU Variants Improve Transformer", https://arxiv.org/abs/2002.05202 (Eq. 5-6);
Touvron et al., "LLaMA", https://arxiv.org/abs/2302.13971 (§2.2, the 2/3·4d hidden size).

Glossary: B batch, T time, C model width (d_model), F hidden width (d_ff).

Weight names follow Meta's LLaMA code so checkpoints map one to one: w1 is Shazeer's W (the gated
branch), w3 his V (the linear branch), w2 his W_2 (the output projection).
"""

from __future__ import annotations

from typing import Literal

import torch.nn.functional as F
from torch import Tensor, nn

Activation = Literal["relu", "gelu", "gelu_tanh"]
GLUVariant = Literal["glu", "bilinear", "reglu", "geglu", "swiglu"]

_ACTIVATIONS = {
    "relu": F.relu,
    "gelu": F.gelu,  # exact (erf) GELU, as in BERT
    "gelu_tanh": lambda x: F.gelu(x, approximate="tanh"),  # GPT-2's approximation
}

# Shazeer Eq. 5-6: the nonlinearity applied to xW before the product with xV.
_GATES = {
    "glu": F.sigmoid,
    "bilinear": lambda x: x,
    "reglu": F.relu,
    "geglu": F.gelu,
    "swiglu": F.silu,  # Swish_1
}


def glu_hidden_dim(d_ff: int) -> int:
    """Hidden width of a GLU FFN with as many weights as a 2-matrix FFN of width d_ff.

    Three C×F' matrices against two C×F: F' = 2F/3 (Shazeer §2: 3072 -> 2048).
    """
    return 2 * d_ff // 3


def llama_hidden_dim(dim: int, multiple_of: int, ffn_dim_multiplier: float | None = None) -> int:
    """LLaMA's SwiGLU width: 2/3 of 4·dim, optionally scaled, rounded up to multiple_of."""
    hidden = glu_hidden_dim(4 * dim)
    if ffn_dim_multiplier is not None:
        hidden = int(ffn_dim_multiplier * hidden)
    return multiple_of * -(-hidden // multiple_of)


class FeedForward(nn.Module):
    """FFN(x) = act(x W_1 + b_1) W_2 + b_2 (Eq. 2 with act = ReLU; GELU in BERT and GPT)."""

    def __init__(
        self, d_model: int, d_ff: int, activation: Activation = "relu", bias: bool = True
    ) -> None:
        super().__init__()
        self.act = _ACTIVATIONS[activation]
        self.w1 = nn.Linear(d_model, d_ff, bias=bias)
        self.w2 = nn.Linear(d_ff, d_model, bias=bias)

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, C) -> (B, T, C)."""
        return self.w2(self.act(self.w1(x)))  # hidden (B, T, F)


class GLUFeedForward(nn.Module):
    """FFN_variant(x) = (gate(x W) ⊗ x V) W_2, no biases (Shazeer Eq. 5-6)."""

    def __init__(self, d_model: int, d_ff: int, variant: GLUVariant = "swiglu") -> None:
        super().__init__()
        self.gate = _GATES[variant]
        self.w1 = nn.Linear(d_model, d_ff, bias=False)  # W
        self.w3 = nn.Linear(d_model, d_ff, bias=False)  # V
        self.w2 = nn.Linear(d_ff, d_model, bias=False)  # W_2

    def forward(self, x: Tensor) -> Tensor:
        """x (B, T, C) -> (B, T, C)."""
        return self.w2(self.gate(self.w1(x)) * self.w3(x))  # hidden (B, T, F)
