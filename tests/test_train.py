from __future__ import annotations

import pytest
import torch
from torch import nn

from repro.train import lm_loss, train, warmup_cosine


def test_warmup_cosine_shape() -> None:
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.1)


def test_lm_loss_is_uniform_entropy_for_zero_logits() -> None:
    logits = torch.zeros(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    assert lm_loss(logits, targets).item() == pytest.approx(torch.log(torch.tensor(7.0)).item())


def test_train_fits_a_linear_map() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    seen = []
    losses = train(
        model,
        lambda step: ((model(x) - y) ** 2).mean(),
        steps=300,
        lr=0.05,
        progress=lambda d, i, n: seen.append(i),
    )
    assert losses[-1] < 1e-3 * losses[0]
    assert seen[-1] == 300 and not model.training
