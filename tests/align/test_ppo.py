"""PPO pieces: KL-penalised rewards, GAE, the clipped surrogate, KL estimators."""

from __future__ import annotations

import torch

from repro.align.ppo import gae, kl_penalised_rewards, ppo_clip_loss, whiten


def test_kl_penalised_rewards_match_eq2_per_token() -> None:
    g = torch.Generator().manual_seed(0)
    logp, logp_ref = torch.randn(3, 4, generator=g), torch.randn(3, 4, generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 1], [1, 0, 0, 0]], dtype=torch.float)
    score = torch.tensor([1.0, -2.0, 0.5])
    r = kl_penalised_rewards(score, logp, logp_ref, mask, beta=0.3)
    for n in range(3):
        last = int(mask[n].sum()) - 1
        for t in range(4):
            expected = -0.3 * (logp[n, t] - logp_ref[n, t]) if mask[n, t] else 0.0
            expected = expected + (score[n] if t == last else 0.0)
            assert abs(float(r[n, t]) - float(expected)) < 1e-6
    # summed over a response: score − β·k1 (the per-sample KL estimate)
    k1 = ((logp - logp_ref) * mask).sum(1)
    assert torch.allclose(r.sum(1), score - 0.3 * k1, atol=1e-6)


def test_gae_matches_the_definition() -> None:
    g = torch.Generator().manual_seed(1)
    rewards, values = torch.randn(2, 5, generator=g), torch.randn(2, 5, generator=g)
    mask = torch.tensor([[1, 1, 1, 0, 0], [1, 1, 1, 1, 1]], dtype=torch.float)
    lam = 0.9
    adv, ret = gae(rewards, values, mask, lam)
    for n in range(2):
        T = int(mask[n].sum())
        v = [float(values[n, t]) for t in range(T)] + [0.0]
        delta = [float(rewards[n, t]) + v[t + 1] - v[t] for t in range(T)]
        for t in range(T):
            expected = sum(lam**k * delta[t + k] for k in range(T - t))
            assert abs(float(adv[n, t]) - expected) < 1e-5
        assert (adv[n, T:] == 0).all()
    assert torch.allclose(ret, (adv + values) * mask + adv * (1 - mask), atol=1e-6)


def test_gae_with_lambda_one_is_the_return_minus_value() -> None:
    rewards = torch.tensor([[0.0, 0.0, 2.0]])
    values = torch.tensor([[0.5, 1.0, 1.5]])
    adv, _ = gae(rewards, values, torch.ones(1, 3), lam=1.0)
    assert torch.allclose(adv, torch.tensor([[1.5, 1.0, 0.5]]))


def test_clipped_surrogate() -> None:
    adv = torch.tensor([[1.0, -1.0, 1.0, -1.0]])
    logp_old = torch.zeros(1, 4)
    ratio = torch.tensor([[1.5, 1.5, 0.5, 0.5]])
    loss = ppo_clip_loss(ratio.log(), logp_old, adv, torch.ones(1, 4), clip=0.2)
    # min(ρA, clip(ρ)A): 1.2, −1.5, 0.5, −0.8
    assert abs(loss.item() - (-(1.2 - 1.5 + 0.5 - 0.8) / 4)) < 1e-6


def test_whiten() -> None:
    x = torch.tensor([[1.0, 2.0, 3.0, 100.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0]])
    w = whiten(x, mask)
    assert abs(w[0, :3].mean().item()) < 1e-6 and w[0, 3] == 0
