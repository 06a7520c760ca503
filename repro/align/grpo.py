"""GRPO: group relative policy optimisation, PPO's clipped surrogate without a value model.

DeepSeekMath (Shao et al. 2024), https://arxiv.org/abs/2402.03300, §4.1, Eq. 3:

    J(θ) = E_{q, {o_i}_{i=1..G} ~ π_old} 1/G Σ_i 1/|o_i| Σ_t
           { min(ρ_{i,t} Â_{i,t}, clip(ρ_{i,t}, 1−ε, 1+ε) Â_{i,t}) − β · D_KL[π_θ ‖ π_ref] }

with ρ = π_θ(o_{i,t} | q, o_{i,<t}) / π_old(o_{i,t} | q, o_{i,<t}). For each question q, G
outputs are sampled; with outcome supervision every token of o_i gets the same advantage, the
reward normalised inside its group, Â_i = (r_i − mean(r)) / std(r) (§4.1.2). There is no value
model: the group mean is the baseline. The KL to the reference sits in the loss, not in the
reward, estimated per token with k3 (Eq. 4):

    k3 = π_ref/π_θ − log(π_ref/π_θ) − 1    ≥ 0,   E_{π_θ}[k3] = KL(π_θ ‖ π_ref).

A group whose rewards are all equal carries no signal about which output is better: its std is 0
and its advantages are defined as 0 here (no NaN, no division by a rounding error). std is the
population std (ddof 0); the paper does not say which, and the sign and ranking of Â do not
depend on it.

API:
    group_advantages(rewards)                                  # (Q, G) -> (Q, G)
    group_advantages_ref(rewards)                              # the same with Python loops
    k3_kl(logp, logp_ref), k1_kl(logp, logp_ref)                # per-token estimators
    grpo_loss(logp, logp_old, logp_ref, adv, mask, clip, beta)  # Eq. 3, negated
    history = grpo(policy, reference, reward_fn, world, cfg, prompt_pool)  # trains in place

Glossary: Q questions (prompts) per iteration, G outputs per question (the group), N = Q·G
responses, P prompt length, R response length, V vocabulary, β KL coefficient, ε clip range.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repro.align.policy import generate, response_mask, token_logprobs
from repro.data.instructions import InstructionWorld
from repro.lab.claims import ProgressFn

RewardFn = Callable[[Tensor, Tensor], Tensor]  # (prompt indices (N,), responses (N, R)) -> (N,)


def _check_groups(rewards: Tensor) -> None:
    if rewards.ndim != 2:
        raise ValueError(
            f"rewards must be (questions, group size), got shape {tuple(rewards.shape)}"
        )
    if rewards.shape[0] == 0:
        raise ValueError("empty batch: no groups of rewards")
    if rewards.shape[1] < 2:
        raise ValueError(f"group size must be at least 2, got {rewards.shape[1]}")


def group_advantages(rewards: Tensor) -> Tensor:
    """Â_i = (r_i − mean r) / std r inside each group (row); equal-reward rows give 0. (Q, G)."""
    _check_groups(rewards)
    mean = rewards.mean(1, keepdim=True)  # (Q, 1)
    std = rewards.std(1, correction=0, keepdim=True)  # (Q, 1)
    equal = (rewards == rewards[:, :1]).all(1, keepdim=True)  # (Q, 1) no signal in this group
    return torch.where(equal, torch.zeros_like(rewards), (rewards - mean) / std.where(~equal, 1))


def group_advantages_ref(rewards: Tensor) -> Tensor:
    """The same, one group at a time in plain Python floats (the reference for tests)."""
    _check_groups(rewards)
    out = []
    for row in rewards.tolist():
        if all(r == row[0] for r in row):
            out.append([0.0] * len(row))
            continue
        mean = sum(row) / len(row)
        std = math.sqrt(sum((r - mean) ** 2 for r in row) / len(row))
        out.append([(r - mean) / std for r in row])
    return torch.tensor(out, dtype=rewards.dtype)


def k3_kl(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """k3 = π_ref/π − log(π_ref/π) − 1 per sampled token (Eq. 4): ≥ 0, unbiased for KL(π‖π_ref)."""
    log_ratio = logp_ref - logp
    return torch.exp(log_ratio) - log_ratio - 1


def k1_kl(logp: Tensor, logp_ref: Tensor) -> Tensor:
    """k1 = log π/π_ref per sampled token: unbiased too, but negative whenever π < π_ref."""
    return logp - logp_ref


def clipped_surrogate(logp: Tensor, logp_old: Tensor, adv: Tensor, clip: float) -> Tensor:
    """min(ρA, clip(ρ, 1−ε, 1+ε)A) per token, ρ = π/π_old; all (N, R), adv broadcast."""
    ratio = torch.exp(logp - logp_old)
    return torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)


def grpo_loss(
    logp: Tensor,
    logp_old: Tensor,
    logp_ref: Tensor,
    adv: Tensor,
    mask: Tensor,
    clip: float,
    beta: float,
) -> Tensor:
    """−J of Eq. 3: per token surrogate − β·k3, averaged over each response's own tokens
    (1/|o_i|), then over responses. logp, logp_old, logp_ref, mask (N, R); adv (N,)."""
    if logp.shape[0] == 0:
        raise ValueError("empty batch: no responses")
    per_token = clipped_surrogate(logp, logp_old, adv[:, None], clip) - beta * k3_kl(
        logp, logp_ref
    )  # (N, R)
    lengths = mask.sum(1).clamp(min=1)  # (N,) |o_i|
    return -((per_token * mask).sum(1) / lengths).mean()


@dataclass(frozen=True)
class GRPOConfig:
    beta: float = 0.04  # β, the KL coefficient in the loss
    group_size: int = 8  # G outputs per question
    questions: int = 8  # Q questions per iteration: N = Q·G sampled responses
    iterations: int = 20
    epochs: int = 2  # μ: policy updates per sampled batch (π_old fixed meanwhile)
    minibatch: int = 32  # responses per gradient step
    lr: float = 3e-4
    clip: float = 0.2  # ε
    seed: int = 0

    def __post_init__(self) -> None:
        if self.group_size < 2:
            raise ValueError(
                f"group_size must be at least 2 (a group needs a baseline), got {self.group_size}"
            )
        if self.questions < 1:
            raise ValueError(f"questions must be at least 1, got {self.questions}")
        if self.minibatch < 1 or self.epochs < 1 or self.iterations < 0:
            raise ValueError("minibatch and epochs must be at least 1, iterations at least 0")


def grpo(
    policy: nn.Module,
    reference: nn.Module,
    reward_fn: RewardFn,
    world: InstructionWorld,
    cfg: GRPOConfig,
    prompt_pool: Tensor,
    progress: ProgressFn | None = None,
    gold_fn: RewardFn | None = None,
) -> list[dict[str, float]]:
    """Train `policy` in place on questions drawn from `prompt_pool` (M, P); `reward_fn(idx,
    responses)` scores responses to prompt_pool[idx]. Returns per-iteration means of the reward,
    the k3 and k1 KL estimates (per response, summed over tokens), the share of groups with equal
    rewards, and the gold reward if `gold_fn` is given."""
    if prompt_pool.ndim != 2 or prompt_pool.shape[0] == 0:
        raise ValueError("prompt_pool must be a non-empty (M, P) tensor of prompts")
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, foreach=True)  # as repro.train
    reference.eval()
    eot, Q, G = world.vocab.eot, cfg.questions, cfg.group_size
    N = Q * G
    history = []
    for it in range(cfg.iterations):
        q = torch.randint(0, prompt_pool.shape[0], (Q,), generator=g)
        idx = q.repeat_interleave(G)  # (N,): the G outputs of a question are neighbours
        prompts = prompt_pool[idx]  # (N, P)
        responses = generate(policy, prompts, world.response_len, eot, generator=g)  # (N, R)
        mask = response_mask(responses, eot).float()
        with torch.no_grad():
            rewards = reward_fn(idx, responses).double().view(Q, G)  # (Q, G)
            adv = group_advantages(rewards).view(N).float()  # (N,)
            logp_old, _ = token_logprobs(policy, prompts, responses)
            logp_ref, _ = token_logprobs(reference, prompts, responses)
        row = {
            "reward": rewards.mean().item(),
            "kl_k3": (k3_kl(logp_old, logp_ref) * mask).sum(1).mean().item(),
            "kl_k1": (k1_kl(logp_old, logp_ref) * mask).sum(1).mean().item(),
            "equal_groups": (rewards == rewards[:, :1]).all(1).double().mean().item(),
        }
        if gold_fn is not None:
            row["gold"] = gold_fn(idx, responses).double().mean().item()
        history.append(row)
        policy.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(N, generator=g)
            for start in range(0, N, cfg.minibatch):
                mb = order[start : start + cfg.minibatch]
                logp, _ = token_logprobs(policy, prompts[mb], responses[mb])
                loss = grpo_loss(
                    logp, logp_old[mb], logp_ref[mb], adv[mb], mask[mb], cfg.clip, cfg.beta
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                opt.step()
        policy.eval()
        if progress is not None:
            progress(f"GRPO G={G} β={cfg.beta:g}", it + 1, cfg.iterations)
    return history
