"""PPO against a reward model with a per-token KL penalty and the pretraining mix (PPO-ptx).

InstructGPT §3.5 ("Reinforcement learning (RL)"), Eq. 2:

    objective(φ) = E_{(x,y) ~ π_φ^RL} [ r_θ(x, y) − β · log(π_φ^RL(y|x) / π^SFT(y|x)) ]
                   + γ · E_{x ~ D_pretrain} [ log π_φ^RL(x) ]

The environment is a bandit: one prompt, one response, one reward, episode over. The KL term is
paid per token (App. C.4); γ = 0 is "PPO", γ > 0 is "PPO-ptx". The value function starts from
the reward model (§3.5); advantages come from GAE with no discount; the ratio is clipped at 0.2.

Two KL numbers are reported: the per-sample estimator k1 = Σ_t log π(y_t)/π_SFT(y_t), which is
what the reward pays and which can be negative for a sample, and the per-token *full* KL
Σ_t KL(π(·|x, y_<t) ‖ π_SFT(·|x, y_<t)), exact at every step (summed over the vocabulary, so
never negative) and sampled only over prefixes. Both estimate the sequence KL without bias.

API:
    kl_penalised_rewards(score, logp, logp_ref, mask, beta)   # (N, R) per-token rewards
    gae(rewards, values, mask, lam, gamma)                     # (N, R) advantages and returns
    ppo_clip_loss(logp, logp_old, adv, mask, clip)            # the clipped surrogate
    history = ppo(policy, reference, rm, world, cfg)            # trains `policy` in place

Glossary: N prompts per iteration, R response length, V vocabulary, β KL coefficient,
γ pretraining coefficient (`ptx_coef`), λ GAE parameter.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from repro.align.policy import generate, response_mask, token_logprobs
from repro.align.reward import RewardModel
from repro.data.instructions import InstructionWorld
from repro.lab.claims import ProgressFn
from repro.train import next_token_loss


def kl_penalised_rewards(
    score: Tensor, logp: Tensor, logp_ref: Tensor, mask: Tensor, beta: float
) -> Tensor:
    """r_t = −β·(log π(y_t) − log π_SFT(y_t)) on every response token, plus the RM score on the
    last one (Eq. 2 paid per token). score (N,); logp, logp_ref, mask (N, R)."""
    rewards = -beta * (logp - logp_ref) * mask  # (N, R)
    last = mask.long().cumsum(1).argmax(1)  # (N,) index of the last response token
    return rewards.scatter_add(1, last[:, None], score[:, None].to(rewards.dtype))


def gae(
    rewards: Tensor, values: Tensor, mask: Tensor, lam: float, gamma: float = 1.0
) -> tuple[Tensor, Tensor]:
    """Generalised advantage estimation over response tokens: δ_t = r_t + γV_{t+1} − V_t,
    A_t = Σ_k (γλ)^k δ_{t+k}; returns (advantages, returns = A + V), each (N, R)."""
    R = rewards.shape[1]
    values = values * mask
    adv = torch.zeros_like(rewards)
    running = torch.zeros_like(rewards[:, 0])
    for t in reversed(range(R)):
        nxt = values[:, t + 1] if t + 1 < R else torch.zeros_like(running)
        delta = rewards[:, t] + gamma * nxt - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        adv[:, t] = running
    return adv, adv + values


def ppo_clip_loss(logp: Tensor, logp_old: Tensor, adv: Tensor, mask: Tensor, clip: float) -> Tensor:
    """−E[min(ρA, clip(ρ, 1−ε, 1+ε)A)] over response tokens, ρ = π/π_old. All (N, R)."""
    ratio = torch.exp(logp - logp_old)
    surrogate = torch.minimum(ratio * adv, ratio.clamp(1 - clip, 1 + clip) * adv)
    return -(surrogate * mask).sum() / mask.sum().clamp(min=1)


def whiten(x: Tensor, mask: Tensor) -> Tensor:
    """Zero mean, unit variance over the masked entries (advantage normalisation)."""
    mean = (x * mask).sum() / mask.sum()
    var = (((x - mean) * mask) ** 2).sum() / mask.sum()
    return (x - mean) * torch.rsqrt(var + 1e-8) * mask


@dataclass(frozen=True)
class PPOConfig:
    beta: float = 0.05  # β, the KL coefficient (the paper: 0.02)
    ptx_coef: float = 0.0  # γ: 0 is PPO, > 0 is PPO-ptx
    iterations: int = 30
    batch: int = 64  # prompts (= episodes) per iteration
    epochs: int = 2  # PPO passes over each batch
    minibatch: int = 32
    lr: float = 1e-4
    vf_lr: float = 1e-3
    clip: float = 0.2  # App. C.4
    lam: float = 0.95  # GAE λ; γ = 1 (no discount, App. C.4)
    ptx_batch: int = 16  # rows of pretraining text per minibatch
    seed: int = 0


@torch.no_grad()
def kl_stats(
    policy: nn.Module, reference: nn.Module, prompts: Tensor, responses: Tensor, eot: int
) -> dict[str, Tensor]:
    """Per-sample KL estimates of responses (N, R) sampled from `policy`: k1 and full, (N,) each."""
    mask = response_mask(responses, eot).float()
    logp, dist = token_logprobs(policy, prompts, responses)
    logp_ref, dist_ref = token_logprobs(reference, prompts, responses)
    full = (dist.exp() * (dist - dist_ref)).sum(-1)  # (N, R): KL of the next-token distributions
    return {"k1": ((logp - logp_ref) * mask).sum(1), "full": (full * mask).sum(1)}


def ppo(
    policy: nn.Module,
    reference: nn.Module,
    rm: RewardModel,
    world: InstructionWorld,
    cfg: PPOConfig,
    prompt_pool: Tensor,
    pretrain_text: Tensor | None = None,
    progress: ProgressFn | None = None,
    gold_fn=None,
) -> list[dict[str, float]]:
    """Train `policy` in place on prompts drawn from `prompt_pool` (M, P); returns per-iteration
    means of the RM score, the KL estimates (and the gold reward if `gold_fn(idx, responses)`
    is given). `pretrain_text` (M', T + 1) feeds the ptx term when `cfg.ptx_coef > 0`."""
    g = torch.Generator().manual_seed(cfg.seed)
    value = copy.deepcopy(rm)  # §3.5: the value function is initialised from the RM
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, foreach=True)  # as repro.train
    vopt = torch.optim.Adam(value.parameters(), lr=cfg.vf_lr, foreach=True)
    reference.eval()
    rm.eval()
    eot = world.vocab.eot
    history = []
    for it in range(cfg.iterations):
        idx = torch.randint(0, prompt_pool.shape[0], (cfg.batch,), generator=g)
        prompts = prompt_pool[idx]  # (N, P)
        responses = generate(policy, prompts, world.response_len, eot, generator=g)  # (N, R)
        mask = response_mask(responses, eot).float()
        seq = torch.cat([prompts, responses], dim=1)  # (N, P + R)
        P = prompts.shape[1]
        with torch.no_grad():
            score = rm(seq)  # (N,)
            logp_old, dist = token_logprobs(policy, prompts, responses)
            logp_ref, dist_ref = token_logprobs(reference, prompts, responses)
            values = value(seq[:, :-1], per_token=True)[:, P - 1 :]  # (N, R): V before each y_t
            rewards = kl_penalised_rewards(score, logp_old, logp_ref, mask, cfg.beta)
            adv, returns = gae(rewards, values, mask, cfg.lam)
            adv = whiten(adv, mask)
        k1 = ((logp_old - logp_ref) * mask).sum(1)
        full = ((dist.exp() * (dist - dist_ref)).sum(-1) * mask).sum(1)
        row = {
            "score": score.mean().item(),
            "kl_k1": k1.mean().item(),
            "kl_full": full.mean().item(),
            "k1_negative": (k1 < 0).float().mean().item(),
        }
        if gold_fn is not None:
            row["gold"] = gold_fn(idx, responses).mean().item()
        history.append(row)
        policy.train()
        value.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(cfg.batch, generator=g)
            for start in range(0, cfg.batch, cfg.minibatch):
                mb = order[start : start + cfg.minibatch]
                logp, _ = token_logprobs(policy, prompts[mb], responses[mb])
                loss = ppo_clip_loss(logp, logp_old[mb], adv[mb], mask[mb], cfg.clip)
                if cfg.ptx_coef > 0 and pretrain_text is not None:
                    rows = torch.randint(0, pretrain_text.shape[0], (cfg.ptx_batch,), generator=g)
                    # Eq. 2's γ·E[log π(x)] on pretraining text, i.e. + γ·(next-token loss)
                    loss = loss + cfg.ptx_coef * next_token_loss(policy, pretrain_text[rows])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                opt.step()
                v = value(seq[mb, :-1], per_token=True)[:, P - 1 :]
                vloss = (((v - returns[mb]) ** 2) * mask[mb]).sum() / mask[mb].sum()
                vopt.zero_grad(set_to_none=True)
                vloss.backward()
                vopt.step()
        policy.eval()
        if progress is not None:
            progress(f"PPO β={cfg.beta:g} γ={cfg.ptx_coef:g}", it + 1, cfg.iterations)
    return history
