"""Shared by the RL tests: the tiny GPT of the instruction world, and one that stops early."""

from __future__ import annotations

import pytest
import torch

from repro.models.gpt import GPTConfig


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


@pytest.fixture
def world_gpt_config():
    """`world_gpt_config(world, dropout)`: one layer, width 16, two heads, the world's vocabulary
    and room for a prompt and a response."""

    def config(world, dropout: float = 0.0) -> GPTConfig:
        return GPTConfig(
            n_layers=1, d_model=16, n_heads=2, vocab_size=world.vocab_size,
            max_seq_len=2 * world.slot_len, dropout=dropout,
        )  # fmt: skip

    return config
