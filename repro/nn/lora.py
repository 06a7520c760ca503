"""LoRA: a frozen linear layer plus a trainable low-rank update, merge / unmerge, model wrapping.

Hu et al., "LoRA: Low-Rank Adaptation of Large Language Models", https://arxiv.org/abs/2106.09685
(§4.1 Eq. 3, §4.2). Official code: https://github.com/microsoft/LoRA (loralib).

Glossary (the paper's letters): W0 (d, k) the pre-trained weight of a layer with k input and
d output features, A (r, k) and B (d, r) the trainable factors of ΔW = BA, r the rank
(r ≪ min(d, k)), α the scaling constant, so the layer computes h = W0 x + (α/r)·B A x.
Leading dimensions of x are written "...".

Usage: `apply_lora(model, {"wq", "wv"}, r=4, alpha=4)` wraps the named nn.Linear submodules and
freezes everything else; train; `merge_lora(model)` folds (α/r)·BA into W0 for inference with no
extra latency, `unmerge_lora(model)` takes it out again (e.g. to swap in another task's A, B).
Everything works on the `meta` device, so huge configurations can be counted without memory.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def lora_ref(
    x: Tensor, W0: Tensor, b: Tensor | None, A: Tensor, B: Tensor, alpha: float, r: int
) -> Tensor:
    """Eq. 3 with the §4.1 scaling: h = x W0ᵀ + b + (α/r)·x Aᵀ Bᵀ.

    x (..., k), W0 (d, k), b (d,) or None, A (r, k), B (d, r) -> (..., d).
    """
    h = x @ W0.T  # (..., d)
    if b is not None:
        h = h + b
    return h + (alpha / r) * ((x @ A.T) @ B.T)  # (..., d)


class LoRALinear(nn.Module):
    """`base` (an nn.Linear, frozen) plus the trainable low-rank path (α/r)·B A x (§4.1).

    A starts Gaussian and B at zero, so ΔW = BA = 0 and the wrapped layer equals `base` at
    initialisation. `dropout` acts on the input of the low-rank path only (as in loralib).
    `merge()` writes W0 + (α/r)·BA into the base weight and sets `merged`; the forward pass is then
    the plain linear layer. Merged is an inference state: A and B receive no gradient while merged.
    """

    def __init__(
        self, base: nn.Linear, r: int, alpha: float | None = None, dropout: float = 0.0
    ) -> None:
        super().__init__()
        if r < 1:
            raise ValueError(f"LoRA rank r must be >= 1, got {r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {dropout}")
        self.base = base
        for p in base.parameters():
            p.requires_grad_(False)  # §4.1: W0 is frozen and receives no gradient
        d, k = base.out_features, base.in_features
        self.r = r
        self.alpha = float(r if alpha is None else alpha)  # §4.1: α is set to the first r tried
        self.scaling = self.alpha / r
        like = {"device": base.weight.device, "dtype": base.weight.dtype}
        self.lora_A = nn.Parameter(torch.empty(r, k, **like))  # (r, k)
        self.lora_B = nn.Parameter(torch.empty(d, r, **like))  # (d, r)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.merged = False
        self.reset_lora_parameters()

    def reset_lora_parameters(self) -> None:
        """§4.1: A random Gaussian, B zero, so ΔW = BA = 0 at the start of training.

        The paper gives no scale for A; std 1/√k keeps A x at the scale of x (loralib uses the
        nn.Linear Kaiming-uniform init, which differs only by a constant factor).
        """
        nn.init.normal_(self.lora_A, std=1.0 / math.sqrt(self.lora_A.shape[1]))
        nn.init.zeros_(self.lora_B)

    @property
    def in_features(self) -> int:
        return self.base.in_features

    @property
    def out_features(self) -> int:
        return self.base.out_features

    def delta_weight(self) -> Tensor:
        """ΔW = (α/r)·BA, (d, k), in the base weight's dtype (computed in at least fp32)."""
        dtype = torch.promote_types(self.lora_B.dtype, torch.float32)
        delta = (self.lora_B.to(dtype) @ self.lora_A.to(dtype)) * self.scaling  # (d, k)
        return delta.to(self.base.weight.dtype)

    @torch.no_grad()
    def merge(self) -> None:
        """W0 <- W0 + (α/r)·BA (§4.2: no inference latency). Idempotent."""
        if self.merged:
            return
        self.base.weight.add_(self.delta_weight())
        self.merged = True

    @torch.no_grad()
    def unmerge(self) -> None:
        """W0 <- W0 - (α/r)·BA, recovering W0 up to rounding (§4.1: task switching). Idempotent."""
        if not self.merged:
            return
        self.base.weight.sub_(self.delta_weight())
        self.merged = False

    def forward(self, x: Tensor) -> Tensor:
        """x (..., k) -> (..., d)."""
        if self.merged:
            return self.base(x)  # (..., d), W = W0 + (α/r)·BA already
        h = self.base(x)  # (..., d)
        z = F.linear(self.dropout(x), self.lora_A)  # (..., r)
        return h + F.linear(z, self.lora_B) * self.scaling  # Eq. 3: W0 x + (α/r)·B A x

    def extra_repr(self) -> str:
        return f"r={self.r}, alpha={self.alpha:g}, merged={self.merged}"


def apply_lora(
    model: nn.Module,
    target_names: Iterable[str],
    r: int,
    alpha: float | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """Wrap every nn.Linear whose attribute name is in `target_names` in a LoRALinear, in place.

    Every other parameter of `model` is frozen (§4.2: e.g. only W_q and W_v are adapted; the MLP,
    LayerNorms and biases stay fixed). Returns `model`. Raises ValueError for a target name that
    matches no nn.Linear, so a typo cannot silently leave the model unadapted.
    """
    targets = set(target_names)
    if not targets:
        raise ValueError("apply_lora needs at least one target module name")
    for p in model.parameters():
        p.requires_grad_(False)
    found = [
        (parent, name, child)
        for parent in model.modules()
        for name, child in parent.named_children()
        if name in targets and isinstance(child, nn.Linear)
    ]  # collected first: the model is modified below
    missing = targets - {name for _, name, _ in found}
    if missing:
        raise ValueError(f"no nn.Linear submodule named {', '.join(sorted(missing))} in the model")
    for parent, name, child in found:
        setattr(parent, name, LoRALinear(child, r, alpha, dropout))
    for p in lora_parameters(model):  # including layers wrapped by an earlier call
        p.requires_grad_(True)
    return model


def lora_layers(model: nn.Module) -> list[LoRALinear]:
    return [m for m in model.modules() if isinstance(m, LoRALinear)]


def lora_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The trainable A and B of every LoRA layer of `model` (what a task checkpoint stores)."""
    return [p for layer in lora_layers(model) for p in (layer.lora_A, layer.lora_B)]


def merge_lora(model: nn.Module) -> nn.Module:
    """Merge every LoRA layer (W0 <- W0 + (α/r)·BA); returns `model`."""
    for layer in lora_layers(model):
        layer.merge()
    return model


def unmerge_lora(model: nn.Module) -> nn.Module:
    """Unmerge every LoRA layer (W0 <- W0 - (α/r)·BA); returns `model`."""
    for layer in lora_layers(model):
        layer.unmerge()
    return model
