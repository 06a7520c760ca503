"""The exact bandit: the closed-form optimum, PPO reaching it, the β sweep."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from repro.align.bandit import (
    Bandit,
    BanditConfig,
    beta_sweep,
    exact_stats,
    fit_reward_model,
    kl_optimum,
    rl,
    total_variation,
)

BANDIT = Bandit(BanditConfig(n_prompts=16, n_responses=12))


def _objective(logp: torch.Tensor, reward: torch.Tensor, beta: float) -> float:
    s = exact_stats(logp, BANDIT.logp_sft, reward, BANDIT.gold)
    return s["proxy"] - beta * s["kl"]


def test_closed_form_optimum_beats_perturbations() -> None:
    reward = BANDIT.gold
    for beta in (0.1, 1.0):
        best = kl_optimum(BANDIT.logp_sft, reward, beta)
        g = torch.Generator().manual_seed(0)
        for _ in range(20):
            other = F.log_softmax(
                best + 0.3 * torch.randn(best.shape, generator=g, dtype=torch.float64), -1
            )
            assert _objective(other, reward, beta) < _objective(best, reward, beta)


def test_exact_stats_by_hand() -> None:
    logp = kl_optimum(BANDIT.logp_sft, BANDIT.gold, 0.5)
    s = exact_stats(logp, BANDIT.logp_sft, BANDIT.gold, BANDIT.gold)
    p, q = logp[0].exp(), BANDIT.logp_sft[0].exp()
    kl0 = sum(float(p[y] * (p[y] / q[y]).log()) for y in range(12))
    kls = [(logp[x].exp() * (logp[x] - BANDIT.logp_sft[x])).sum() for x in range(16)]
    assert abs(float(kls[0]) - kl0) < 1e-12
    assert abs(s["kl"] - float(torch.stack(kls).mean())) < 1e-12
    assert s["kl"] > 0


def test_optimising_the_gold_reward_is_monotone() -> None:
    """E_πβ[r] can only rise as β falls (its derivative in 1/β is a variance)."""
    sweep = beta_sweep(BANDIT, BANDIT.gold, [10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01])
    golds = [s["gold"] for s in sweep]
    kls = [s["kl"] for s in sweep]
    assert all(b >= a - 1e-12 for a, b in zip(golds, golds[1:], strict=False))
    assert all(b >= a - 1e-12 for a, b in zip(kls, kls[1:], strict=False))


def test_ppo_reaches_the_kl_optimum_and_needs_the_kl_term() -> None:
    reward = fit_reward_model(BANDIT, 500, 4, "quadratic", 200, seed=0)
    target = kl_optimum(BANDIT.logp_sft, reward, 1.0)
    logp, history = rl(BANDIT, reward, 1.0, iterations=200, seed=0)
    assert total_variation(logp, target) < 0.05
    # the exact KL is never negative, the per-sample k1 estimate often is
    assert min(h["kl_exact"] for h in history) >= -1e-12
    assert max(h["k1_negative"] for h in history[5:]) > 0.05
    no_kl, _ = rl(BANDIT, reward, 0.0, iterations=200, seed=0)
    assert total_variation(no_kl, target) > 0.2


def test_reward_model_learns_the_ranking() -> None:
    """Eq. 1 on Plackett–Luce rankings recovers the gold order on most pairs."""
    reward = fit_reward_model(BANDIT, 500, 4, "quadratic", 200, seed=1)
    i, j = torch.triu_indices(12, 12, 1)
    agree = ((reward[:, i] - reward[:, j]) * (BANDIT.gold[:, i] - BANDIT.gold[:, j]) > 0).double()
    assert agree.mean() > 0.8
