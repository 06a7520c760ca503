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
    # every architecture field is the config's, not GPTConfig's default
    other = replace(cfg, n_layers=3, d_model=24, n_heads=6)
    arch = other.gpt_config()
    assert (arch.n_layers, arch.d_model, arch.n_heads) == (3, 24, 6)
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
    with pytest.raises(
        ValueError, match="^pretraining further needs the start model's architecture and world$"
    ):
        pretrained_model(replace(TINY, d_model=16, start=TINY))
    # the attention kernel is not the architecture: either side may have trained with another
    sdpa = replace(TINY, backend="sdpa")
    assert pretrained_model(replace(TINY, steps=1, start=sdpa)).cfg.backend == "auto"
    assert pretrained_model(replace(sdpa, steps=1, start=TINY)).cfg.backend == "sdpa"


def test_the_backend_changes_how_a_model_computes_not_what() -> None:
    tokens = InstructionWorld(TINY.world).heldout_text(4, TINY.slots)[:, :-1]
    tiled, fused = fresh_model(TINY, backend="flash"), fresh_model(TINY, backend="sdpa")
    assert tiled.cfg.backend == "flash" and fused.cfg.backend == "sdpa"
    torch.testing.assert_close(tiled(tokens), fused(tokens), rtol=1e-5, atol=1e-5)


def test_the_base_is_its_fresh_model_trained_on_its_own_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """By hand: the seeded fresh model, `steps` steps on text drawn with seed + 1 (the base's
    text; a continuation's, seed + 2, must differ from it); the model comes back in eval mode
    and computes with the backend asked for."""
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path))
    cfg = replace(TINY, seed=3, lr=3e-3)
    world = InstructionWorld(cfg.world)
    model = pretrained_model(cfg)
    assert not model.training and model.cfg.backend == cfg.backend
    assert pretrained_model(cfg, backend="sdpa").cfg.backend == "sdpa"
    by_hand = fresh_model(cfg)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    train_lm(
        by_hand, world.pretraining_batch(cfg.steps * cfg.batch, cfg.slots, g), cfg.steps, cfg.lr
    )
    for (name, x), y in zip(model.state_dict().items(), by_hand.state_dict().values(), strict=True):
        assert torch.equal(x, y), name


def test_fresh_model_seeds_its_initialisation() -> None:
    """`seed` overrides cfg.seed: the same weights as a config with that seed, other weights
    than cfg.seed's."""
    a = fresh_model(TINY, seed=5)
    b = fresh_model(replace(TINY, seed=5))
    assert torch.equal(a.wte.weight, b.wte.weight)
    assert not torch.equal(a.wte.weight, fresh_model(TINY).wte.weight)
    torch.manual_seed(123)
    assert torch.equal(fresh_model(TINY).wte.weight, fresh_model(TINY, seed=0).wte.weight)


def test_a_continuation_trains_with_its_own_backend(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LIMA's case: the base trained with `auto`, its continuation with `sdpa` — the base is
    loaded computing with sdpa for the extra steps (flash and sdpa differ in rounding)."""
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path))
    more = pretrained_model(replace(TINY, steps=2, start=TINY, backend="sdpa"))
    world = InstructionWorld(TINY.world)
    for backend, same in (("sdpa", True), ("flash", False)):
        base = pretrained_model(TINY, backend=backend)
        g = torch.Generator().manual_seed(TINY.seed + 2)
        train_lm(base, world.pretraining_batch(2 * TINY.batch, TINY.slots, g), 2, TINY.lr)
        equal = [
            torch.equal(x, y) for x, y in zip(more.parameters(), base.parameters(), strict=True)
        ]
        assert all(equal) if same else not all(equal)


def test_the_cache_key_covers_the_code_the_weights_depend_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The world (instructions, its Markov filler), the model (gpt, attention, ffn), the trainer
    and this module's pretraining functions: an edit to any of them must retrain."""
    import repro.align.pretrain as pretrain_module

    seen = {}

    def fake_cached_state(kind, config, compute, *, code=()):
        seen.update(kind=kind, config=config, code=list(code))
        return fresh_model(TINY).state_dict()

    monkeypatch.setattr(pretrain_module, "cached_state", fake_cached_state)
    pretrained_model(TINY)
    names = {getattr(c, "__name__", None) for c in seen["code"]}
    assert names == {
        "repro.data.instructions",
        "repro.data.markov",
        "repro.models.gpt",
        "repro.nn.attention",
        "repro.nn.ffn",
        "repro.train",
        "_pretrain",
        "fresh_model",
    }
    assert seen["kind"] == "align-pretrain" and seen["config"]["d_model"] == TINY.d_model
