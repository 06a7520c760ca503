"""Pretraining on the instruction world: the shared config, caching, held-out loss."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from repro.align.pretrain import PretrainConfig, fresh_model, heldout_loss, pretrained_model
from repro.data.instructions import InstructionWorld
from repro.train import train_lm

TINY = PretrainConfig(d_model=8, n_heads=2, n_layers=1, steps=3, batch=4)


def test_the_model_fits_the_world() -> None:
    cfg = PretrainConfig()
    world = InstructionWorld(cfg.world)
    gcfg = cfg.gpt_config()
    assert gcfg.vocab_size == world.vocab_size
    assert gcfg.max_seq_len == cfg.slots * world.slot_len
    # an exchange in the assistant format is exactly one slot, so a query fits after slots − 1 shots
    assert world.prompt_len + world.response_len == world.slot_len


def test_pretraining_is_cached_by_config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path))
    a = pretrained_model(TINY)
    b = pretrained_model(TINY)
    for (name, x), y in zip(a.state_dict().items(), b.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert len(list((tmp_path / "align-pretrain").glob("*/value.pt"))) == 1
    c = pretrained_model(PretrainConfig(**{**TINY.__dict__, "seed": 1}))
    assert len(list((tmp_path / "align-pretrain").glob("*/value.pt"))) == 2
    assert not torch.equal(a.wte.weight, c.wte.weight)
    # pretraining moved the weights away from the initialisation
    assert not torch.equal(a.wte.weight, fresh_model(TINY).wte.weight)


def test_heldout_loss_of_an_untrained_model_is_near_uniform() -> None:
    world = InstructionWorld(TINY.world)
    loss = heldout_loss(fresh_model(TINY), world, n=32)
    assert abs(loss - math.log(world.vocab_size)) < 0.1


def test_continued_pretraining_starts_from_the_cached_base(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path))
    more = pretrained_model(replace(TINY, steps=2, start=TINY))
    base = pretrained_model(TINY)  # cached on the way: the continuation computed it
    assert len(list((tmp_path / "align-pretrain").glob("*/value.pt"))) == 2
    # two more steps on fresh text by hand, from the base, give the same weights
    world = InstructionWorld(TINY.world)
    g = torch.Generator().manual_seed(TINY.seed + 2)
    train_lm(base, world.pretraining_batch(2 * TINY.batch, TINY.slots, g), 2, TINY.lr)
    for (name, x), y in zip(more.state_dict().items(), base.state_dict().values(), strict=True):
        assert torch.equal(x, y), name
    assert not torch.equal(more.wte.weight, pretrained_model(TINY).wte.weight)


def test_continuing_needs_the_same_architecture(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path))
    with pytest.raises(ValueError, match="architecture"):
        pretrained_model(replace(TINY, d_model=16, start=TINY))


def test_the_backend_changes_how_a_model_computes_not_what() -> None:
    tokens = InstructionWorld(TINY.world).heldout_text(4, TINY.slots)[:, :-1]
    tiled, fused = fresh_model(TINY, backend="flash"), fresh_model(TINY, backend="sdpa")
    assert tiled.cfg.backend == "flash" and fused.cfg.backend == "sdpa"
    torch.testing.assert_close(tiled(tokens), fused(tokens), rtol=1e-5, atol=1e-5)
