"""Supervised fine-tuning (SFT) on demonstrations in the assistant format.

InstructGPT §3.5 ("Supervised fine-tuning") and LIMA §3: next-token cross-entropy on the
*response* tokens (answer and `<eot>`) of labeler demonstrations; the prompt is context only.

API:
    cfg = SFTConfig(n_examples=1000, families=None, corrupt=0.0, epochs=4)
    losses = sft(model, world, cfg)                       # fine-tunes `model` in place
    sft(model, world, cfg, on_epoch=lambda e, m: ...)     # e.g. held-out loss after each epoch
    evaluate(model, world, inst)                          # {"compliance", "accuracy", "gold", ...}
    eval_instances(world, n, seed, families)              # a fixed held-out evaluation set

Glossary: N examples, P prompt length, R response length, B batch, V vocabulary.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.align.policy import generate
from repro.data.instructions import Instances, InstructionWorld
from repro.lab.claims import ProgressFn
from repro.train import train


@dataclass(frozen=True)
class SFTConfig:
    n_examples: int = 1000  # N demonstrations
    families: tuple[str, ...] | None = None  # None: every task family
    corrupt: float = 0.0  # share of low-quality demonstrations (wrong answer or broken format)
    epochs: int = 4
    batch: int = 32  # B
    lr: float = 1e-3
    seed: int = 0


def masked_lm_loss(model: nn.Module, tokens: Tensor, mask: Tensor) -> Tensor:
    """Mean cross-entropy of tokens[:, t] where mask[:, t], predicted from tokens[:, :t].
    tokens, mask (B, P + R)."""
    logits = model(tokens[:, :-1]).float()  # (B, P + R - 1, V)
    target = tokens[:, 1:].masked_fill(~mask[:, 1:], -100)
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]), target.reshape(-1), ignore_index=-100
    )


def demonstration_set(world: InstructionWorld, cfg: SFTConfig) -> tuple[Tensor, Tensor]:
    """The N demonstrations of `cfg` (seeded): tokens and loss mask, (N, P + R) each."""
    g = torch.Generator().manual_seed(cfg.seed)
    inst = world.sample_instances(cfg.n_examples, g, cfg.families)
    return world.demonstrations(inst, g, corrupt=cfg.corrupt)


def sft(
    model: nn.Module,
    world: InstructionWorld,
    cfg: SFTConfig,
    progress: ProgressFn | None = None,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
    demos: tuple[Tensor, Tensor] | None = None,
) -> list[float]:
    """Fine-tune `model` in place for `cfg.epochs` epochs; returns every step's loss.
    `demos` (tokens, mask) replaces `demonstration_set(world, cfg)`, e.g. to hold prompts out."""
    tokens, mask = demonstration_set(world, cfg) if demos is None else demos
    g = torch.Generator().manual_seed(cfg.seed + 1)
    per_epoch = math.ceil(cfg.n_examples / cfg.batch)
    order = torch.cat([torch.randperm(cfg.n_examples, generator=g) for _ in range(cfg.epochs)])

    def loss(step: int) -> Tensor:
        if on_epoch is not None and step and step % per_epoch == 0:
            on_epoch(step // per_epoch, model)  # after every epoch but the last (below)
            model.train()
        epoch, i = divmod(step, per_epoch)
        start = epoch * cfg.n_examples + i * cfg.batch
        idx = order[start : min(start + cfg.batch, (epoch + 1) * cfg.n_examples)]
        return masked_lm_loss(model, tokens[idx], mask[idx])

    # one warm-up + cosine schedule over all epochs (InstructGPT App. C.1: cosine decay)
    losses = train(
        model, loss, per_epoch * cfg.epochs, lr=cfg.lr, progress=progress, description="SFT"
    )
    if on_epoch is not None:
        on_epoch(cfg.epochs, model)
    return losses


def eval_instances(
    world: InstructionWorld, n: int, seed: int = 99, families: tuple[str, ...] | None = None
) -> Instances:
    """A fixed evaluation set, drawn with its own seed (never the training seed)."""
    return world.sample_instances(n, torch.Generator().manual_seed(10_000 + seed), families)


@torch.no_grad()
def evaluate(
    model: nn.Module, world: InstructionWorld, inst: Instances, prompts: Tensor | None = None
) -> dict[str, float]:
    """Greedy responses in the assistant format: format compliance (digits then `<eot>`),
    accuracy (the answer is exactly right), the mean gold reward r* and the forbidden-token rate.
    `prompts` overrides the plain prompts (e.g. few-shot prompts ending in the same query)."""
    prompts = world.prompts(inst) if prompts is None else prompts
    resp = generate(model, prompts, world.response_len, world.vocab.eot, temperature=0)
    j = world.judge(inst, resp)
    return {
        "compliance": j["format_ok"].float().mean().item(),
        "accuracy": j["correct"].float().mean().item(),
        "gold": world.gold_reward(inst, resp).mean().item(),
        "forbidden": j["forbidden"].float().mean().item(),
    }
