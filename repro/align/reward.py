"""The reward model: a GPT trunk with a scalar head, trained on K-wise rankings (Eq. 1).

InstructGPT §3.5 ("Reward modeling"): labelers rank K = 4…9 responses to a prompt, giving
C(K,2) comparisons. Eq. 1:

    loss(θ) = −1/C(K,2) · E_{(x, y_w, y_l) ~ D} [ log σ(r_θ(x, y_w) − r_θ(x, y_l)) ]

All C(K,2) comparisons of one prompt form *one* batch element: every response is scored once
per prompt and the prompt's pairs share the forward pass. Shuffling the comparisons into
independent pairs makes each response appear K − 1 times per epoch, and the paper found that
this overfits (§3.5). After training, a bias makes the labeler demonstrations score 0 on
average, before RL (§3.5, last sentence of "Reward modeling").

API:
    rm = RewardModel.from_lm(sft_model)                   # trunk copied, scalar head
    rm(tokens)                                            # (N, P + R) -> (N,) scores
    pairwise_loss(scores, ranking)                        # Eq. 1, scores and ranking (N, K)
    train_reward_model(rm, tokens, ranking, cfg)          # tokens (N, K, P + R)
    normalise_to_demonstrations(rm, demo_tokens)          # the §3.5 bias
    pair_agreement(scores, gold)                          # ranking accuracy on pairs

Glossary: N prompts, K responses per prompt, P prompt length, R response length, C width.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.lab.claims import ProgressFn
from repro.models.gpt import GPT
from repro.train import train


def all_pairs(K: int) -> tuple[Tensor, Tensor]:
    """Rank positions (i, j), i < j, of the C(K, 2) comparisons among K ranked responses."""
    i, j = zip(*itertools.combinations(range(K), 2), strict=True)
    return torch.tensor(i), torch.tensor(j)


def pairwise_loss(scores: Tensor, ranking: Tensor) -> Tensor:
    """Eq. 1 over whole prompts. scores (N, K) for responses 0..K-1; ranking (N, K) their indices
    best first. Each prompt contributes the mean over its C(K,2) pairs; prompts are averaged."""
    ranked = scores.gather(1, ranking)  # (N, K): ranked[:, 0] is the labeler's favourite
    i, j = all_pairs(scores.shape[1])
    return -F.logsigmoid(ranked[:, i] - ranked[:, j]).mean()  # (N, C(K,2)) -> scalar


def pairwise_loss_ref(scores: Tensor, ranking: Tensor) -> Tensor:
    """The same with explicit loops (the reference for tests)."""
    N, K = scores.shape
    total = scores.new_zeros(())
    for n in range(N):
        terms = [
            -F.logsigmoid(scores[n, ranking[n, a]] - scores[n, ranking[n, b]])
            for a in range(K)
            for b in range(a + 1, K)
        ]
        total = total + sum(terms) / math.comb(K, 2)
    return total / N


class RewardModel(nn.Module):
    """r_θ(x, y): the GPT trunk's final hidden state at the last position, times a vector, plus
    a bias. With `per_token=True` it returns one value per position (the PPO value head)."""

    def __init__(self, lm: GPT) -> None:
        super().__init__()
        self.lm = lm
        self.head = nn.Linear(lm.cfg.d_model, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    @classmethod
    def from_lm(cls, lm: GPT) -> RewardModel:
        return cls(copy.deepcopy(lm))

    def hidden(self, idx: Tensor) -> Tensor:
        """idx (B, T) -> the final-LayerNorm output (B, T, C): GPT.forward minus the LM head."""
        lm = self.lm
        pos = torch.arange(idx.shape[1], device=idx.device)  # (T,)
        x = lm.wte(idx) + lm.wpe(pos)  # (B, T, C)
        for block in lm.blocks:
            x = block(x)
        return lm.ln_f(x)

    def forward(self, idx: Tensor, per_token: bool = False) -> Tensor:
        """idx (B, T) -> scores (B,), or (B, T) with `per_token`."""
        values = self.head(self.hidden(idx)).squeeze(-1)  # (B, T)
        return values if per_token else values[:, -1]


@dataclass(frozen=True)
class RMConfig:
    epochs: int = 1  # App. C.2: one epoch; more overfit
    batch: int = 16  # prompts per step, each with all its K responses and C(K,2) pairs
    lr: float = 1e-3
    seed: int = 0
    whole_prompts: bool = True  # False: the ablation of §3.5, shuffled independent pairs


def train_reward_model(
    rm: RewardModel,
    tokens: Tensor,
    ranking: Tensor,
    cfg: RMConfig,
    progress: ProgressFn | None = None,
    on_step: Callable[[int, RewardModel], None] | None = None,
) -> list[float]:
    """Minimise Eq. 1. tokens (N, K, P + R) prompt + response; ranking (N, K) best first.

    A batch element is one prompt with all its K responses: the K scores come from one forward
    pass and all C(K, 2) comparisons enter the loss together (§3.5)."""
    N, K, S = tokens.shape
    g = torch.Generator().manual_seed(cfg.seed)
    if not cfg.whole_prompts:
        return _train_on_shuffled_pairs(rm, tokens, ranking, cfg, g, progress, on_step)
    per_epoch = math.ceil(N / cfg.batch)
    order = torch.cat([torch.randperm(N, generator=g) for _ in range(cfg.epochs)])

    def loss(step: int) -> Tensor:
        if on_step is not None:
            on_step(step, rm)
        epoch, i = divmod(step, per_epoch)  # the last batch of an epoch may be smaller
        start = epoch * N + i * cfg.batch
        idx = order[start : min(start + cfg.batch, (epoch + 1) * N)]  # (b,) prompts
        scores = rm(tokens[idx].reshape(-1, S)).view(len(idx), K)  # (b, K): one pass per response
        return pairwise_loss(scores, ranking[idx])

    steps = per_epoch * cfg.epochs
    return train(rm, loss, steps, lr=cfg.lr, progress=progress, description="reward model")


def _train_on_shuffled_pairs(
    rm: RewardModel,
    tokens: Tensor,
    ranking: Tensor,
    cfg: RMConfig,
    g: torch.Generator,
    progress: ProgressFn | None,
    on_step: Callable[[int, RewardModel], None] | None,
) -> list[float]:
    """What §3.5 warns against: every comparison an independent example, shuffled across prompts,
    so a response is scored once per pair it is in (K − 1 times per epoch). Same number of
    comparisons per step as the whole-prompt batches."""
    N, K, S = tokens.shape
    i, j = all_pairs(K)
    prompt = torch.arange(N).repeat_interleave(len(i))  # (N·C,)
    winner, loser = ranking[:, i].flatten(), ranking[:, j].flatten()  # (N·C,)
    per_step = cfg.batch * len(i)
    per_epoch = math.ceil(len(prompt) / per_step)
    order = torch.cat([torch.randperm(len(prompt), generator=g) for _ in range(cfg.epochs)])

    def loss(step: int) -> Tensor:
        if on_step is not None:
            on_step(step, rm)
        epoch, i = divmod(step, per_epoch)
        start = epoch * len(prompt) + i * per_step
        idx = order[start : min(start + per_step, (epoch + 1) * len(prompt))]
        n = prompt[idx]
        return -F.logsigmoid(rm(tokens[n, winner[idx]]) - rm(tokens[n, loser[idx]])).mean()

    steps = per_epoch * cfg.epochs
    return train(rm, loss, steps, lr=cfg.lr, progress=progress, description="reward model (pairs)")


@torch.no_grad()
def score(rm: RewardModel, tokens: Tensor, batch: int = 512) -> Tensor:
    """Scores of (N, S) sequences in chunks, eval mode: (N,)."""
    rm.eval()
    return torch.cat([rm(tokens[i : i + batch]) for i in range(0, tokens.shape[0], batch)])


@torch.no_grad()
def normalise_to_demonstrations(rm: RewardModel, demo_tokens: Tensor) -> float:
    """Shift the bias so that demonstrations (N, S) score 0 on average (§3.5); returns the shift."""
    shift = score(rm, demo_tokens).mean().item()
    rm.head.bias.sub_(shift)
    return shift


def pair_agreement(scores: Tensor, gold: Tensor) -> float:
    """Share of pairs (within a prompt) with different gold reward that the scores order like the
    gold. scores, gold (N, K). Signs are compared, not the product ds·dg, which underflows to 0
    for tiny gaps (and would count an agreeing pair as a tie)."""
    i, j = all_pairs(scores.shape[1])
    ds, dg = scores[:, i] - scores[:, j], gold[:, i] - gold[:, j]  # (N, C(K,2))
    decided = dg != 0
    agree = (ds.sign() == dg.sign()) & decided
    return agree.sum().item() / max(1, decided.sum().item())
