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


def test_gae_with_a_discount_against_the_definition() -> None:
    """γ < 1 as well (the paper uses γ = 1, the function takes both): δ_t = r_t + γV_{t+1} − V_t,
    A_t = Σ_k (γλ)^k δ_{t+k}, with a padded response."""
    g = torch.Generator().manual_seed(2)
    rewards, values = torch.randn(2, 6, generator=g), torch.randn(2, 6, generator=g)
    mask = torch.tensor([[1, 1, 1, 1, 0, 0], [1, 1, 1, 1, 1, 1]], dtype=torch.float)
    lam, gamma = 0.8, 0.7
    adv, ret = gae(rewards, values, mask, lam, gamma=gamma)
    for n in range(2):
        T = int(mask[n].sum())
        v = [float(values[n, t]) for t in range(T)] + [0.0]
        delta = [float(rewards[n, t]) + gamma * v[t + 1] - v[t] for t in range(T)]
        for t in range(T):
            expected = sum((gamma * lam) ** k * delta[t + k] for k in range(T - t))
            assert abs(float(adv[n, t]) - expected) < 1e-5
            assert abs(float(ret[n, t]) - (expected + v[t])) < 1e-5


def test_clipped_surrogate_with_another_epsilon_and_a_mask() -> None:
    """ε = 0.1 and a masked token whose huge ratio must not count; the mean is over the mask."""
    adv = torch.tensor([[2.0, -1.0, 0.5, -3.0, 7.0]])
    ratio = torch.tensor([[1.3, 0.8, 0.95, 1.05, 50.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 1.0, 0.0]])
    loss = ppo_clip_loss(ratio.log(), torch.zeros(1, 5), adv, mask, clip=0.1)
    # min(ρA, clip(ρ, 0.9, 1.1)A) per token: 2.2, −0.9, 0.475, −3.15
    expected = -(2.2 - 0.9 + 0.475 - 3.15) / 4
    assert abs(loss.item() - expected) < 1e-6


def test_whiten_has_unit_variance_over_the_mask() -> None:
    x = torch.tensor([[1.0, 2.0, 4.0, 100.0], [7.0, -50.0, 3.0, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 1.0, 1.0]])
    w = whiten(x, mask)
    kept = x[mask.bool()]
    want = (kept - kept.mean()) / kept.var(unbiased=False).sqrt()
    assert torch.allclose(w[mask.bool()], want, atol=1e-5)
    assert (w[~mask.bool()] == 0).all()
