"""Shared by the RL tests: a tiny GPT that stops early."""

from __future__ import annotations

import pytest
import torch


class EotBias(torch.nn.Module):
    """A GPT whose `<eot>` logit is raised by 2, so that many sampled responses end early (a
    random tiny model would hardly ever stop, and padding after `<eot>` would go untested)."""

    def __init__(self, lm: torch.nn.Module, eot: int) -> None:
        super().__init__()
        self.lm = lm
        self.register_buffer(
            "bias", 2.0 * torch.nn.functional.one_hot(torch.tensor(eot), lm.cfg.vocab_size)
        )

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return self.lm(idx) + self.bias


@pytest.fixture
def eot_biased():
    """`eot_biased(lm, eot)`: `lm` wrapped so that it samples `<eot>` often."""
    return EotBias
