"""Pretraining a tiny GPT on the raw text of the instruction world (cached).

The model learns the task families from raw formats and never sees `<user>`, `<assistant>` or
`<eot>`: the "GPT-3" of the toy. Results are cached by `repro.lab.cache.cached_state`, keyed on
the config and the source of the world, the model and this module, so every paper and every test
that asks for the same `PretrainConfig` shares one pretraining run.

A base can be pretrained further (`continued_steps`): a second warm-up + cosine run on fresh text
that starts from the cached `steps` model. InstructGPT uses the 800-step base; LIMA, whose
hypothesis needs a base that already knows the tasks, continues that same base, so a check of
both papers pretrains the small model once and only adds the continuation.

API:
    cfg = PretrainConfig()                      # InstructGPT's base
    cfg = PretrainConfig(continued_steps=800)   # LIMA's: the same base, pretrained further
    model = pretrained_model(cfg)               # a GPT, eval mode, from the cache or trained now
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
    continued_steps: int = 0  # further pretraining of the `steps` model (0: none)
    lr: float = 1e-2
    seed: int = 0

    def gpt_config(self) -> GPTConfig:
        return GPTConfig(
            n_layers=self.n_layers,
            d_model=self.d_model,
            n_heads=self.n_heads,
            vocab_size=InstructionWorld(self.world).vocab_size,
            max_seq_len=self.slots * InstructionWorld(self.world).slot_len,
        )


def fresh_model(cfg: PretrainConfig, seed: int | None = None) -> GPT:
    """The architecture of `cfg` with GPT-2 initialisation (seeded by `seed`, else cfg.seed)."""
    torch.manual_seed(cfg.seed if seed is None else seed)
    return GPT(cfg.gpt_config())


def _pretrain(cfg: PretrainConfig) -> dict[str, torch.Tensor]:
    world = InstructionWorld(cfg.world)
    model = fresh_model(cfg)
    g = torch.Generator().manual_seed(cfg.seed + 1)
    data = world.pretraining_batch(cfg.steps * cfg.batch, cfg.slots, g)  # (steps·B, T + 1)
    train_lm(model, data, cfg.steps, cfg.lr, description="pretraining")
    return model.state_dict()


def _continue(start: GPT, cfg: PretrainConfig) -> dict[str, torch.Tensor]:
    world = InstructionWorld(cfg.world)
    g = torch.Generator().manual_seed(cfg.seed + 2)  # fresh text, not the first run's again
    data = world.pretraining_batch(cfg.continued_steps * cfg.batch, cfg.slots, g)
    train_lm(start, data, cfg.continued_steps, cfg.lr, description="pretraining further")
    return start.state_dict()


def pretrained_model(cfg: PretrainConfig = PretrainConfig()) -> GPT:
    """The model pretrained under `cfg` (cached on disk), in eval mode."""
    code = [
        instructions_module,
        markov_module,
        gpt_module,
        attention_module,
        ffn_module,
        train_module,
        _pretrain,
        _continue,
        fresh_model,
    ]
    if cfg.continued_steps:
        base = dataclasses.replace(cfg, continued_steps=0)
        compute = lambda: _continue(pretrained_model(base), cfg)  # noqa: E731
    else:
        compute = lambda: _pretrain(cfg)  # noqa: E731
    state = cached_state("align-pretrain", dataclasses.asdict(cfg), compute, code=code)
    model = GPT(cfg.gpt_config())
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
