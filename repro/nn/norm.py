"""Layer normalisation and its root-mean-square simplification.

Ba et al., "Layer Normalization", https://arxiv.org/abs/1607.06450 (Eq. 4);
Zhang & Sennrich, "Root Mean Square Layer Normalization", https://arxiv.org/abs/1910.07467
(Eq. 3-4).

Glossary: B batch, T time, C model width (the normalised dimension, the paper's n).
Statistics are computed in fp32 (fp64 stays fp64) and the result cast back with `.type_as(x)`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _upcast(x: Tensor) -> Tensor:
    """x in at least fp32."""
    return x.to(torch.promote_types(x.dtype, torch.float32))


def layer_norm_ref(
    x: Tensor, weight: Tensor | None = None, bias: Tensor | None = None, eps: float = 1e-5
) -> Tensor:
    """(a - μ) / √(σ² + eps) · g + b over the last dim, biased variance (Ba et al. Eq. 4)."""
    xf = _upcast(x)
    mu = xf.sum(-1, keepdim=True) / x.shape[-1]  # (..., 1)
    var = ((xf - mu) ** 2).sum(-1, keepdim=True) / x.shape[-1]  # (..., 1)
    y = (xf - mu) / torch.sqrt(var + eps)
    if weight is not None:
        y = y * weight.to(xf.dtype)
    if bias is not None:
        y = y + bias.to(xf.dtype)
    return y.type_as(x)


def rms_norm_ref(x: Tensor, weight: Tensor | None = None, eps: float = 1e-6) -> Tensor:
    """a_i / RMS(a) · g_i with RMS(a) = √(1/n Σ a_i² + eps) over the last dim (Eq. 4)."""
    xf = _upcast(x)
    rms = torch.sqrt((xf * xf).sum(-1, keepdim=True) / x.shape[-1] + eps)  # (..., 1)
    y = xf / rms
    if weight is not None:
        y = y * weight.to(xf.dtype)
    return y.type_as(x)


class RMSNorm(nn.Module):
    """RMSNorm with a learned gain g (Eq. 4, no re-centring, no bias); fp32 statistics.

    Normalises in fp32, casts back to x's dtype, then applies the gain (Meta's LLaMA order).
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: Tensor) -> Tensor:
        """x (..., C) -> (..., C)."""
        return F.rms_norm(_upcast(x), (x.shape[-1],), eps=self.eps).type_as(x) * self.weight
