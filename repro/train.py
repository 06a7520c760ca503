"""A small training loop shared by the tiny experiments: AdamW, warm-up + cosine, grad clipping.

Glossary: B batch, T time, V vocabulary size.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.lab.claims import ProgressFn


def lm_loss(logits: Tensor, targets: Tensor, ignore_index: int = -100) -> Tensor:
    """Mean next-token cross-entropy in nats. logits (B, T, V), targets (B, T)."""
    return F.cross_entropy(
        logits.reshape(-1, logits.shape[-1]).float(), targets.reshape(-1), ignore_index=ignore_index
    )


def warmup_cosine(step: int, steps: int, warmup: int) -> float:
    """Learning-rate multiplier: linear warm-up, then cosine decay to 10%."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def train(
    model: nn.Module,
    loss_fn: Callable[[int], Tensor],
    steps: int,
    lr: float = 3e-3,
    weight_decay: float = 0.0,
    warmup: int | None = None,
    clip: float = 1.0,
    progress: ProgressFn | None = None,
    description: str = "training",
    params: list[nn.Parameter] | None = None,
) -> list[float]:
    """Minimise `loss_fn(step)` for `steps` AdamW steps; returns the loss of every step."""
    params = [p for p in model.parameters() if p.requires_grad] if params is None else params
    # foreach: one kernel per step for all tensors; the same numbers as the default loop on the
    # CPU (which torch only picks for CUDA), and faster for the many small tensors of tiny models
    opt = torch.optim.AdamW(
        params, lr=lr, weight_decay=weight_decay, betas=(0.9, 0.95), foreach=True
    )
    warmup = max(1, steps // 20) if warmup is None else warmup
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: warmup_cosine(s, steps, warmup))
    model.train()
    losses = []
    for step in range(steps):
        loss = loss_fn(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        sched.step()
        losses.append(loss.item())
        if progress is not None and (step % 10 == 0 or step == steps - 1):
            progress(description, step + 1, steps)
    model.eval()
    return losses


def next_token_loss(model: nn.Module, tokens: Tensor) -> Tensor:
    """Predict tokens[:, 1:] from tokens[:, :-1]. tokens (B, T + 1) -> mean loss in nats."""
    return lm_loss(model(tokens[:, :-1]), tokens[:, 1:])


@torch.no_grad()
def evaluate_lm(model: nn.Module, tokens: Tensor) -> float:
    """Held-out next-token loss in nats (eval mode). tokens (B, T + 1)."""
    model.eval()
    return next_token_loss(model, tokens).item()


def train_lm(
    model: nn.Module,
    data: Tensor,
    steps: int,
    lr: float,
    progress: ProgressFn | None = None,
    description: str = "training",
) -> list[float]:
    """Next-token training, one fresh batch per step: data (steps·B, T + 1) or (steps, B, T + 1)."""
    batches = data.view(steps, -1, data.shape[-1])  # (steps, B, T + 1)
    return train(
        model,
        lambda step: next_token_loss(model, batches[step]),
        steps,
        lr=lr,
        progress=progress,
        description=description,
    )
