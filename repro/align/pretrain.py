"""Pretraining a tiny GPT on the raw text of the instruction world (cached).

The model learns the task families from raw formats and never sees `<user>`, `<assistant>` or
`<eot>`: the "GPT-3" of the toy. Results are cached by `repro.lab.cache.cached_state`, keyed on
the config and the source of the world, the model and this module, so every paper and every test
that asks for the same `PretrainConfig` shares one pretraining run.

A pretrained model can be pretrained further: `PretrainConfig(start=other)` is a second warm-up +
cosine run of `steps` on fresh text that starts from the cached `other` model. InstructGPT uses
the 800-step base; LIMA, whose hypothesis needs a base that already knows the tasks, continues
that same base, so a check of both papers pretrains the small model once and only adds the
continuation.

`backend` is the attention kernel a run trains with; it is part of the config because the
weights depend on it at the level of float rounding. The base trains through the tiled
FlashAttention (`auto` on the CPU), which InstructGPT's thresholds were set on; LIMA's stages
use PyTorch's fused kernel, faster for these 8–32-token rows. A model is returned computing with
any backend asked for: the same function.

API:
    cfg = PretrainConfig()                                   # InstructGPT's base
    cfg = PretrainConfig(start=PretrainConfig(), backend="sdpa")  # LIMA's: pretrained further
    model = pretrained_model(cfg, backend="sdpa")  # a GPT, eval mode, from the cache or trained now
    model = fresh_model(cfg)                    # the same architecture, random init (a control)
    raw_accuracy(model, world, inst)            # answers in raw format 0 (`TASK a b c =`)
    heldout_loss(model, world, n=256)           # next-token loss on held-out pretraining text

Glossary: B batch, T sequence length, V vocabulary, L layers, C model width.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import torch
from torch import nn

import repro.data.instructions as instructions_module
import repro.data.markov as markov_module
import repro.models.gpt as gpt_module
import repro.nn.attention as attention_module
import repro.nn.ffn as ffn_module
import repro.train as train_module
from repro.align.policy import generate
from repro.data.instructions import Instances, InstructionWorld, WorldConfig
from repro.lab.cache import cached_state
from repro.models.gpt import GPT, GPTConfig
from repro.nn.attention import Backend
from repro.train import evaluate_lm, train_lm


@dataclass(frozen=True)
class PretrainConfig:
    world: WorldConfig = field(default_factory=WorldConfig)
    n_layers: int = 2  # L
    d_model: int = 32  # C
    n_heads: int = 4
    slots: int = 2  # T = slots·S tokens: one solved exchange and a query fit in the context
    batch: int = 64  # B
    steps: int = 800
    lr: float = 1e-2
    seed: int = 0
    backend: Backend = "auto"  # the attention kernel while training (see the module docstring)
    start: PretrainConfig | None = None  # pretrain this model further (same architecture)

    def gpt_config(self, backend: Backend | None = None) -> GPTConfig:
        """The architecture, computing attention with `backend` (None: the training one)."""
        return GPTConfig(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            vocab_size=InstructionWorld(self.world).vocab_size,
            max_seq_len=self.slots * InstructionWorld(self.world).slot_len,
            backend=backend or self.backend,
        )


def fresh_model(
    cfg: PretrainConfig, seed: int | None = None, backend: Backend | None = None
) -> GPT:
    """The architecture of `cfg` with GPT-2 initialisation (seeded by `seed`, else cfg.seed)."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return GPT(cfg.gpt_config(backend))


def _pretrain(cfg: PretrainConfig) -> dict[str, torch.Tensor]:
    world = InstructionWorld(cfg.world)
    if cfg.start is None:
        model, text_seed, what = fresh_model(cfg), cfg.seed + 1, "pretraining"
    else:
        if cfg.gpt_config("auto") != cfg.start.gpt_config("auto"):
            raise ValueError("pretraining further needs the start model's architecture and world")
        # fresh text: a continuation of a model with the same seed must not see its text again
        model, text_seed = pretrained_model(cfg.start, cfg.backend), cfg.seed + 2
        what = "pretraining further"
    g = torch.Generator().manual_seed(text_seed)
    data = world.pretraining_batch(cfg.steps * cfg.batch, cfg.slots, g)  # (steps·B, T + 1)
    train_lm(model, data, cfg.steps, cfg.lr, description=what)
    return model.state_dict()


def pretrained_model(cfg: PretrainConfig = PretrainConfig(), backend: Backend | None = None) -> GPT:
    """The model pretrained under `cfg` (cached on disk), in eval mode, computing attention with
    `backend` (None: the one it was trained with)."""
    code = [
        instructions_module,
        markov_module,
        gpt_module,
        attention_module,
        ffn_module,
        train_module,
        _pretrain,
        fresh_model,
    ]
    state = cached_state(
        "align-pretrain", dataclasses.asdict(cfg), lambda: _pretrain(cfg), code=code
    )
    model = GPT(cfg.gpt_config(backend))
    model.load_state_dict(state)
    return model.eval()


@torch.no_grad()
def raw_accuracy(model: nn.Module, world: InstructionWorld, inst: Instances) -> float:
    """Greedy answers to `TASK a b c =` up to `;`: the share that is exactly right."""
    resp = generate(
        model, world.raw_prompts(inst), world.response_len, eot=world.vocab.id[";"], temperature=0
    )
    return world.judge(inst, resp, stop=world.vocab.id[";"])["correct"].float().mean().item()


@torch.no_grad()
def heldout_loss(model: nn.Module, world: InstructionWorld, n: int = 256, slots: int = 2) -> float:
    """Next-token loss (nats) on a fixed held-out sample of pretraining text."""
    return evaluate_lm(model, world.heldout_text(n, slots))
