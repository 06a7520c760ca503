"""What the conformance tests share: Hugging Face models with weights that make every one show."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """fp64, O(1) activations, norm gains ≠ 1 and biases ≠ 0, so every weight shows.

    A matrix (or a stack of them, as HF's fused experts) is scaled by 1/√(fan-in), its last
    dimension; embeddings stay O(1)."""
    g = torch.Generator().manual_seed(seed)
    model.double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=torch.float64)
            if "norm" in name.lower() or ".ln_" in name:
                p.copy_((1 if name.endswith("weight") else 0) + 0.3 * noise)
            elif "embed" in name or name.startswith(("transformer.wte", "transformer.wpe")):
                p.copy_(noise)
            elif p.dim() == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / p.shape[-1] ** 0.5)
    return model.eval()


@pytest.fixture
def randomise() -> Callable[..., torch.nn.Module]:
    return _randomise
