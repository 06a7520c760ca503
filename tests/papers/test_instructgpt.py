"""InstructGPT paper extras: the big pretrained-only baseline's context holds its few shots."""

from __future__ import annotations

import pytest

from repro.align.pretrain import PretrainConfig
from repro.data.instructions import InstructionWorld
from repro.lab.counting import count_parameters
from repro.lab.errors import BadOption
from repro.lab.library import Library
from repro.lab.runner import make_config
from repro.models.gpt import GPT

INSTRUCTGPT = Library().get("instructgpt").module()


def test_the_big_baseline_fits_its_shots_and_is_at_least_8x_bigger():
    cfg = INSTRUCTGPT.PRESETS["quick"]
    pcfg = PretrainConfig()
    big = INSTRUCTGPT.big_config(cfg, pcfg)
    world = InstructionWorld(pcfg.world)
    assert cfg.shots > 1  # few-shot, not one-shot
    assert cfg.shots * world.slot_len + world.prompt_len <= big.gpt_config().max_seq_len
    # as many segments per step as the small model: the same amount of pretraining text
    assert big.batch * big.slots == pcfg.batch * pcfg.slots
    assert big.steps == pcfg.steps
    ratio = count_parameters(GPT(big.gpt_config())) / count_parameters(GPT(pcfg.gpt_config()))
    assert ratio >= 8


def test_too_many_shots_for_the_context_is_refused_before_any_work():
    module = INSTRUCTGPT
    cfg = module.PRESETS["quick"]
    with pytest.raises(BadOption, match="big_slots"):
        make_config(module, quick=True, overrides=(f"shots={cfg.big_slots}",))
    make_config(module, quick=True, overrides=(f"shots={cfg.big_slots - 1}",))  # fits
