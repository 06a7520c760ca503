"""The exact check: RLHF on a contextual bandit small enough to sum over every response.

InstructGPT's RL environment is a bandit (§3.5): a prompt x, one response y, one reward. Here
there are X prompts with Y candidate responses each, described by feature vectors φ(x, y), so
every expectation is a finite sum and no number below is sampled:

- the hidden gold reward r*(x, y) = Σ_i u_i φ_i − c·(φ_0 − 1)²: more of feature 0 helps up to
  a point, then hurts (a misspecified proxy that is linear in φ cannot see the turn);
- the SFT policy π_SFT(y|x) ∝ exp(r*/2 + noise), an imperfect imitation of the gold;
- labelers rank K SFT samples by Plackett–Luce on r*/τ; a reward model is fitted with Eq. 1
  (`repro.align.reward.pairwise_loss`);
- the KL-regularised optimum of Eq. 2 (γ = 0) has the closed form π*(y|x) ∝ π_SFT(y|x)·exp(r(x,y)/β)
  (e.g. Korbak et al. 2022); `rl` must reach it with the library's PPO pieces
  (`repro.align.ppo`: KL-penalised rewards, clipped surrogate);
- sweeping β → 0 traces gold and proxy reward against the exact KL: with a weak RM the gold
  peaks and falls (overoptimisation, Gao et al. 2022), optimising r* itself never falls.

Glossary: X prompts, Y responses per prompt, F features, K responses ranked per prompt,
M samples per prompt per RL iteration, β KL coefficient, τ labeler temperature.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.align.ppo import kl_penalised_rewards, ppo_clip_loss
from repro.align.reward import pairwise_loss


@dataclass(frozen=True)
class BanditConfig:
    n_prompts: int = 64  # X
    n_responses: int = 32  # Y
    n_features: int = 8  # F
    turn: float = 0.75  # c in r*: the cost of overshooting feature 0
    sft_noise: float = 1.0  # std of the noise in π_SFT's logits
    label_temperature: float = 0.5  # τ
    seed: int = 0


class Bandit:
    """Features (X, Y, F), gold reward (X, Y) and the SFT policy's log-probabilities (X, Y)."""

    def __init__(self, cfg: BanditConfig) -> None:
        self.cfg = cfg
        g = torch.Generator().manual_seed(cfg.seed)
        X, Y, Fn = cfg.n_prompts, cfg.n_responses, cfg.n_features
        self.phi = torch.randn(X, Y, Fn, generator=g, dtype=torch.float64)  # (X, Y, F)
        u = torch.randn(Fn, generator=g, dtype=torch.float64).abs() / Fn**0.5
        phi0 = self.phi[..., 0]
        self.gold = self.phi @ u - cfg.turn * (phi0 - 1) ** 2  # (X, Y)
        noise = cfg.sft_noise * torch.randn(X, Y, generator=g, dtype=torch.float64)
        self.logp_sft = F.log_softmax(0.5 * self.gold + noise, dim=-1)  # (X, Y)

    def rankings(self, n_prompts: int, K: int, g: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
        """Labelled data: prompts (n,), K SFT samples per prompt (n, K), rankings (n, K)."""
        x = torch.randint(0, self.cfg.n_prompts, (n_prompts,), generator=g)
        y = torch.multinomial(self.logp_sft[x].exp(), K, replacement=False, generator=g)  # (n, K)
        gumbel = -torch.log(-torch.log(torch.rand(n_prompts, K, generator=g, dtype=torch.float64)))
        ranking = (self.gold[x[:, None], y] / self.cfg.label_temperature + gumbel).argsort(
            1, descending=True
        )
        return x, y, ranking


def kl_optimum(logp_ref: Tensor, reward: Tensor, beta: float) -> Tensor:
    """log π* with π* ∝ π_ref·exp(r/β), the maximiser of E_π[r] − β·KL(π‖π_ref). (X, Y)."""
    return F.log_softmax(logp_ref + reward / beta, dim=-1)


def exact_stats(logp: Tensor, logp_ref: Tensor, reward: Tensor, gold: Tensor) -> dict[str, float]:
    """Exact E_π[r], E_π[r*] and KL(π‖π_ref), averaged over prompts. All (X, Y)."""
    p = logp.exp()
    return {
        "proxy": float((p * reward).sum(-1).mean()),
        "gold": float((p * gold).sum(-1).mean()),
        "kl": float((p * (logp - logp_ref)).sum(-1).mean()),
    }


def total_variation(logp: Tensor, logq: Tensor) -> float:
    """max over prompts of ½·Σ_y |π(y|x) − q(y|x)|."""
    return float(0.5 * (logp.exp() - logq.exp()).abs().sum(-1).max())


def fit_reward_model(
    bandit: Bandit, n_prompts: int, K: int, features: str, steps: int, seed: int
) -> Tensor:
    """Fit r_θ on n_prompts K-wise rankings with Eq. 1; returns r_θ on every (x, y), (X, Y),
    normalised so that SFT responses score 0 on average (§3.5).

    features: "linear" (φ, a misspecified RM) or "quadratic" (φ and φ², able to represent r*)."""
    g = torch.Generator().manual_seed(seed)
    x, y, ranking = bandit.rankings(n_prompts, K, g)
    phi = bandit.phi if features == "linear" else torch.cat([bandit.phi, bandit.phi**2], dim=-1)
    feats = phi[x[:, None], y]  # (n, K, F'): the ranked responses' features, gathered once
    w = torch.zeros(phi.shape[-1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.Adam([w], lr=0.05)
    for _ in range(steps):
        scores = feats @ w  # (n, K)
        loss = pairwise_loss(scores, ranking)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        r = phi @ w  # (X, Y)
        return r - (bandit.logp_sft.exp() * r).sum(-1).mean()


def beta_sweep(bandit: Bandit, reward: Tensor, betas: list[float]) -> list[dict[str, float]]:
    """Exact proxy, gold and KL of π_β for every β (closed form, no RL)."""
    return [
        {
            "beta": b,
            **exact_stats(
                kl_optimum(bandit.logp_sft, reward, b), bandit.logp_sft, reward, bandit.gold
            ),
        }
        for b in betas
    ]


def rl(
    bandit: Bandit,
    reward: Tensor,
    beta: float,
    iterations: int = 300,
    samples: int = 64,
    epochs: int = 2,
    lr: float = 0.05,
    clip: float = 0.2,
    seed: int = 0,
) -> tuple[Tensor, list[dict[str, float]]]:
    """PPO on the bandit with the library's pieces; returns log π (X, Y) and per-iteration exact
    KL next to the mean and the negative share of the per-sample k1 estimator.

    Each iteration samples M responses per prompt; a response is a one-token episode whose reward
    is r(x, y) − β·log(π/π_SFT) (`kl_penalised_rewards`), its advantage that reward minus the
    prompt's mean (the value), and the policy (free logits per (x, y), starting at π_SFT) takes
    `epochs` Adam steps on the clipped surrogate (`ppo_clip_loss`). The step size decays as 1/√t
    so that sampling noise averages out near the optimum."""
    g = torch.Generator().manual_seed(seed)
    X = bandit.cfg.n_prompts
    logits = nn.Parameter(bandit.logp_sft.clone())
    opt = torch.optim.Adam([logits], lr=lr)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 / (1 + t / 20) ** 0.5)
    rows = torch.arange(X)[:, None]
    history = []
    for _ in range(iterations):
        with torch.no_grad():
            logp_all = F.log_softmax(logits, -1)
            y = torch.multinomial(logp_all.exp(), samples, replacement=True, generator=g)  # (X, M)
            logp_old = logp_all[rows, y]  # (X, M)
            logp_ref = bandit.logp_sft[rows, y]
            mask = torch.ones(X * samples, 1, dtype=torch.float64)
            r = kl_penalised_rewards(
                reward[rows, y].reshape(-1),
                logp_old.reshape(-1, 1),
                logp_ref.reshape(-1, 1),
                mask,
                beta,
            ).view(X, samples)
            adv = r - r.mean(1, keepdim=True)  # (X, M)
            k1 = logp_old - logp_ref
            history.append(
                {
                    "kl_exact": float(
                        (logp_all.exp() * (logp_all - bandit.logp_sft)).sum(-1).mean()
                    ),
                    "kl_k1": float(k1.mean()),
                    "k1_negative": float((k1 < 0).double().mean()),
                }
            )
        for _ in range(epochs):
            logp = F.log_softmax(logits, -1)[rows, y]
            loss = ppo_clip_loss(logp, logp_old, adv, torch.ones_like(adv), clip)
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    return F.log_softmax(logits.detach(), -1), history
