"""The exact bandit: the closed-form optimum, PPO reaching it, the β sweep."""

from __future__ import annotations

import functools
import math
import warnings

import pytest
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
from repro.align.reward import pairwise_loss, pairwise_loss_ref


@functools.cache
def _bandit() -> Bandit:
    """Built inside the tests, not at import (a mutation tester must see the construction)."""
    return Bandit(BanditConfig(n_prompts=16, n_responses=12))


def _objective(logp: torch.Tensor, reward: torch.Tensor, beta: float) -> float:
    s = exact_stats(logp, _bandit().logp_sft, reward, _bandit().gold)
    return s["proxy"] - beta * s["kl"]


def test_closed_form_optimum_beats_perturbations() -> None:
    reward = _bandit().gold
    for beta in (0.1, 1.0):
        best = kl_optimum(_bandit().logp_sft, reward, beta)
        g = torch.Generator().manual_seed(0)
        for _ in range(20):
            other = F.log_softmax(
                best + 0.3 * torch.randn(best.shape, generator=g, dtype=torch.float64), -1
            )
            assert _objective(other, reward, beta) < _objective(best, reward, beta)


def test_exact_stats_by_hand() -> None:
    logp = kl_optimum(_bandit().logp_sft, _bandit().gold, 0.5)
    s = exact_stats(logp, _bandit().logp_sft, _bandit().gold, _bandit().gold)
    p, q = logp[0].exp(), _bandit().logp_sft[0].exp()
    kl0 = sum(float(p[y] * (p[y] / q[y]).log()) for y in range(12))
    kls = [(logp[x].exp() * (logp[x] - _bandit().logp_sft[x])).sum() for x in range(16)]
    assert abs(float(kls[0]) - kl0) < 1e-12
    assert abs(s["kl"] - float(torch.stack(kls).mean())) < 1e-12
    assert s["kl"] > 0


def test_optimising_the_gold_reward_is_monotone() -> None:
    """E_πβ[r] can only rise as β falls (its derivative in 1/β is a variance)."""
    sweep = beta_sweep(_bandit(), _bandit().gold, [10.0, 3.0, 1.0, 0.3, 0.1, 0.03, 0.01])
    golds = [s["gold"] for s in sweep]
    kls = [s["kl"] for s in sweep]
    assert all(b >= a - 1e-12 for a, b in zip(golds, golds[1:], strict=False))
    assert all(b >= a - 1e-12 for a, b in zip(kls, kls[1:], strict=False))


def test_ppo_reaches_the_kl_optimum_and_needs_the_kl_term() -> None:
    reward = fit_reward_model(_bandit(), 500, 4, "quadratic", 200, seed=0)
    target = kl_optimum(_bandit().logp_sft, reward, 1.0)
    logp, history = rl(_bandit(), reward, 1.0, iterations=200, seed=0)
    assert total_variation(logp, target) < 0.05
    # the exact KL is never negative, the per-sample k1 estimate often is
    assert min(h["kl_exact"] for h in history) >= -1e-12
    assert max(h["k1_negative"] for h in history[5:]) > 0.05
    no_kl, _ = rl(_bandit(), reward, 0.0, iterations=200, seed=0)
    assert total_variation(no_kl, target) > 0.2


def test_reward_model_learns_the_ranking() -> None:
    """Eq. 1 on Plackett–Luce rankings recovers the gold order on most pairs."""
    reward = fit_reward_model(_bandit(), 500, 4, "quadratic", 200, seed=1)
    i, j = torch.triu_indices(12, 12, 1)
    gold = _bandit().gold
    agree = ((reward[:, i] - reward[:, j]) * (gold[:, i] - gold[:, j]) > 0).double()
    assert agree.mean() > 0.8


# --- the construction, the labels, the sweep ------------------------------------------------------


def test_the_bandit_is_built_as_documented():
    """r* = φ·u − c·(φ_0 − 1)² with u ≥ 0, |N(0,1)|/√F; π_SFT ∝ exp(r*/2 + σ·noise): replayed
    from the seed, and the weights u also recovered by least squares from (φ, r*)."""
    cfg = BanditConfig(
        n_prompts=5, n_responses=7, n_features=4, turn=0.6, sft_noise=0.8, seed=3
    )  # lopsided, nothing at its default
    torch.manual_seed(0)  # the global generator is not the one used
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. a softmax without its dim warns
        b = Bandit(cfg)
    assert b.cfg is cfg
    X, Y, Fn = 5, 7, 4
    assert b.phi.shape == (X, Y, Fn) and b.phi.dtype == torch.float64
    g = torch.Generator().manual_seed(3)
    phi = torch.randn(X, Y, Fn, generator=g, dtype=torch.float64)
    u = torch.randn(Fn, generator=g, dtype=torch.float64).abs() / math.sqrt(Fn)
    noise = torch.randn(X, Y, generator=g, dtype=torch.float64)
    torch.testing.assert_close(b.phi, phi, atol=0, rtol=0)
    linear = b.gold + 0.6 * (phi[..., 0] - 1) ** 2  # what is left is linear in φ, weights u
    fit = torch.linalg.lstsq(phi.reshape(-1, Fn), linear.reshape(-1, 1)).solution[:, 0]
    torch.testing.assert_close(fit, u, atol=1e-12, rtol=0)
    torch.testing.assert_close(b.gold, phi @ u - 0.6 * (phi[..., 0] - 1) ** 2)
    torch.testing.assert_close(b.logp_sft, torch.log_softmax(0.5 * b.gold + 0.8 * noise, -1))
    other = Bandit(BanditConfig(n_prompts=5, n_responses=7, n_features=4, seed=4))
    assert not torch.equal(other.phi, phi)


def test_labels_are_sft_samples_without_repeats_ranked_by_plackett_luce():
    """K distinct responses per prompt; the best one (by r*) is ranked first with probability
    softmax(r*/τ) at it (Plackett–Luce's first choice, K = 3); τ → 0 ranks by r* exactly."""
    b = Bandit(BanditConfig(n_prompts=6, n_responses=5, label_temperature=0.7, seed=1))
    x, y, ranking = b.rankings(3000, 3, torch.Generator().manual_seed(2))
    assert ((x >= 0) & (x < 6)).all() and len(set(x.tolist())) == 6
    assert all(len(set(row)) == 3 for row in y.tolist())  # without replacement
    gold = b.gold[x[:, None], y]  # (n, 3)
    first = gold.gather(1, ranking[:, :1])[:, 0]
    p_better_first = torch.softmax(gold / 0.7, 1).max(1).values  # P(the best is ranked first)
    observed = (first == gold.max(1).values).double()
    sd = math.sqrt(float((p_better_first * (1 - p_better_first)).sum())) / len(x)
    assert abs(float(observed.mean() - p_better_first.mean())) < 4 * sd
    assert observed.mean() < 0.99  # the noise is real
    sharp = Bandit(BanditConfig(n_prompts=6, n_responses=5, label_temperature=1e-6, seed=1))
    x, y, ranking = sharp.rankings(50, 4, torch.Generator().manual_seed(3))
    ranked = sharp.gold[x[:, None], y].gather(1, ranking)  # (n, K) r* in ranked order
    assert (ranked[:, :-1] >= ranked[:, 1:]).all()
    assert all(len(set(row)) == 4 for row in y.tolist())


def test_the_sweep_reports_each_beta_with_its_exact_optimum():
    bandit = _bandit()
    betas = [2.0, 0.3, 0.05]
    sweep = beta_sweep(bandit, bandit.gold, betas)
    for s, beta in zip(sweep, betas, strict=True):
        want = exact_stats(
            kl_optimum(bandit.logp_sft, bandit.gold, beta), bandit.logp_sft, bandit.gold,
            bandit.gold,
        )  # fmt: skip
        assert s == {"beta": beta, **want}


def test_exact_stats_and_total_variation_by_loops():
    """Proxy, gold and KL are per-prompt sums over responses averaged over prompts; TV is half
    the L1 distance, its maximum over prompts. X = 3 ≠ Y = 4, lopsided tables."""
    g = torch.Generator().manual_seed(5)
    logp = torch.log_softmax(2 * torch.randn(3, 4, generator=g, dtype=torch.float64), -1)
    logq = torch.log_softmax(torch.randn(3, 4, generator=g, dtype=torch.float64), -1)
    reward = torch.randn(3, 4, generator=g, dtype=torch.float64)
    gold = torch.randn(3, 4, generator=g, dtype=torch.float64) + 1.0
    s = exact_stats(logp, logq, reward, gold)
    p = logp.exp().tolist()
    for key, values in (("proxy", reward.tolist()), ("gold", gold.tolist())):
        want = sum(sum(p[x][y] * values[x][y] for y in range(4)) for x in range(3)) / 3
        assert abs(s[key] - want) < 1e-12, key
    tv = [0.5 * sum(abs(p[x][y] - math.exp(logq[x, y])) for y in range(4)) for x in range(3)]
    assert abs(total_variation(logp, logq) - max(tv)) < 1e-12
    assert max(tv) - min(tv) > 0.05  # the maximum is a real choice among prompts


def test_rl_follows_its_own_generator_and_names_the_softmax_dim():
    bandit = Bandit(BanditConfig(n_prompts=4, n_responses=5, seed=2))
    runs = []
    for global_seed, seed in ((0, 0), (1, 0), (0, 1)):
        torch.manual_seed(global_seed)  # the global generator is not the one used
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # e.g. a softmax without its dim warns
            logp, history = rl(bandit, bandit.gold, 0.5, iterations=3, samples=8, seed=seed)
        runs.append((logp, [h["kl_k1"] for h in history]))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert not torch.equal(runs[0][0], runs[2][0])


def _rl_by_hand(bandit, reward, beta, iterations, samples, epochs, lr, clip, seed):
    """PPO on the bandit written out: the clipped surrogate's gradient with respect to the
    logits by hand (d log π(y)/dθ_j = 1{j = y} − π_j), and Adam (Kingma & Ba, Alg. 1; β₁ = 0.9,
    β₂ = 0.999, ε = 1e-8) with the step size lr/√(1 + t/20) of iteration t. Only the sampling
    is shared with `rl` (torch.multinomial on a generator of the same seed)."""
    g = torch.Generator().manual_seed(seed)
    theta = bandit.logp_sft.clone()
    m, v, step = torch.zeros_like(theta), torch.zeros_like(theta), 0
    X = theta.shape[0]
    history = []
    for t in range(iterations):
        p = torch.exp(theta - torch.logsumexp(theta, -1, keepdim=True))
        y = torch.multinomial(p, samples, replacement=True, generator=g)
        logp_old = torch.log(p.gather(1, y))
        logp_ref = bandit.logp_sft.gather(1, y)
        r = reward.gather(1, y) - beta * (logp_old - logp_ref)
        adv = r - r.mean(1, keepdim=True)
        k1 = logp_old - logp_ref
        kl = (p * (torch.log(p) - bandit.logp_sft)).sum(-1).mean()
        history.append((float(kl), float(k1.mean()), float((k1 < 0).double().mean())))
        for _ in range(epochs):
            q = torch.exp(theta - torch.logsumexp(theta, -1, keepdim=True))
            rho = q.gather(1, y) / p.gather(1, y)
            in_range = (rho >= 1 - clip) & (rho <= 1 + clip)
            unclipped_smaller = rho * adv < rho.clamp(1 - clip, 1 + clip) * adv
            coef = -(adv * rho) * (in_range | unclipped_smaller) / (X * samples)  # dL/d log π
            grad = torch.zeros_like(theta).scatter_add(1, y, coef) - q * coef.sum(1, keepdim=True)
            step += 1
            m = 0.9 * m + 0.1 * grad
            v = 0.999 * v + 0.001 * grad**2
            size = lr / (1 + t / 20) ** 0.5
            theta = theta - size / (1 - 0.9**step) * m / (
                v.sqrt() / (1 - 0.999**step) ** 0.5 + 1e-8
            )
    return theta - torch.logsumexp(theta, -1, keepdim=True), history


def test_rl_is_ppo_with_adam_step_for_step():
    """Every argument set (β > 0, so the KL penalty acts from the second iteration on; a clip
    small enough to bind), then the defaults, against the written-out reference."""
    bandit = Bandit(BanditConfig(n_prompts=3, n_responses=5, seed=4))
    reward = bandit.gold + 0.3 * bandit.phi[..., 1]
    cases = [
        dict(beta=0.7, iterations=6, samples=7, epochs=3, lr=0.3, clip=0.05, seed=2),
        dict(beta=0.2, iterations=300, samples=64, epochs=2, lr=0.05, clip=0.2, seed=0),
    ]
    for case in cases:
        if case["iterations"] == 300:  # the documented defaults
            logp, history = rl(bandit, reward, case["beta"])
        else:
            logp, history = rl(bandit, reward, **case)
        want_logp, want_history = _rl_by_hand(bandit, reward, **case)
        torch.testing.assert_close(logp, want_logp, rtol=0, atol=1e-9)
        got = [(h["kl_exact"], h["kl_k1"], h["k1_negative"]) for h in history]
        assert len(got) == len(want_history)
        for a, b in zip(got, want_history, strict=True):
            assert all(abs(x - y) < 1e-9 for x, y in zip(a, b, strict=True)), (a, b)
    assert total_variation(logp, bandit.logp_sft) > 0.05  # the policy moved
    # The default clip, in steps large enough for it to bind (a wider clip gives another policy).
    binding = dict(beta=0.5, iterations=4, samples=16, epochs=4, lr=0.5, seed=1)
    logp, _ = rl(bandit, reward, **binding)
    torch.testing.assert_close(logp, _rl_by_hand(bandit, reward, **binding, clip=0.2)[0])
    assert total_variation(logp, rl(bandit, reward, **binding, clip=0.6)[0]) > 0.01


def _residual(target: torch.Tensor, basis: torch.Tensor) -> float:
    """Largest residual of `target` (X, Y) least-squares fitted by a constant and `basis`."""
    design = torch.cat([torch.ones(*target.shape, 1, dtype=torch.float64), basis], -1)
    design = design.reshape(-1, design.shape[-1])
    coef = torch.linalg.lstsq(design, target.reshape(-1, 1)).solution
    return float((design @ coef - target.reshape(-1, 1)).abs().max())


@pytest.mark.parametrize("features", ["linear", "quadratic"])
def test_fit_reward_model_is_the_minimiser_of_eq1_in_its_feature_space(features: str) -> None:
    """The fitted reward equals another optimiser's minimiser of Eq. 1 (L-BFGS on the same labels),
    is linear in φ (linear) or in φ and φ² but not φ alone (quadratic), and
    is centred so that SFT responses average 0."""
    # Noisy labelers (τ = 2) keep the optimum's weights small: Adam gets there in 300 steps.
    bandit = Bandit(BanditConfig(n_prompts=6, n_responses=5, n_features=3, seed=3,
                                 label_temperature=2.0))  # fmt: skip
    r = fit_reward_model(bandit, 60, 3, features, 300, seed=2)
    assert abs(float((bandit.logp_sft.exp() * r).sum(-1).mean())) < 1e-12
    phi = bandit.phi
    quadratic = torch.cat([phi, phi * phi], -1)
    assert _residual(r, phi if features == "linear" else quadratic) < 1e-9
    if features == "quadratic":
        assert _residual(r, phi) > 0.01
    x, y, ranking = bandit.rankings(60, 3, torch.Generator().manual_seed(2))
    basis = phi if features == "linear" else quadratic
    feats = basis[x[:, None], y]
    w = torch.zeros(basis.shape[-1], dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w], max_iter=200, tolerance_grad=1e-12, tolerance_change=1e-14)

    def closure():
        opt.zero_grad()
        loss = pairwise_loss(feats @ w, ranking)
        loss.backward()
        return loss

    opt.step(closure)
    with torch.no_grad():
        want = basis @ w
        want = want - (bandit.logp_sft.exp() * want).sum(-1).mean()
    torch.testing.assert_close(r, want, rtol=0, atol=1e-4)
    assert (want - want.mean()).abs().max() > 0.5  # a reward that says something


def test_rankings_follow_their_own_generator() -> None:
    bandit = Bandit(BanditConfig(n_prompts=5, n_responses=6, seed=1))
    drawn = []
    for global_seed, seed in ((0, 3), (1, 3), (0, 4)):
        torch.manual_seed(global_seed)  # the global generator is not the one used
        drawn.append(bandit.rankings(40, 4, torch.Generator().manual_seed(seed)))
    assert all(torch.equal(a, b) for a, b in zip(drawn[0], drawn[1], strict=True))
    assert not torch.equal(drawn[0][0], drawn[2][0]) and not torch.equal(drawn[0][1], drawn[2][1])


def test_rankings_follow_plackett_luce_over_all_orderings():
    """K = 3 responses out of 3: each of the 6 orderings appears with its Plackett–Luce
    probability Π_i exp(s_i)/Σ_{j≥i} exp(s_j), s = r*/τ (the first choice alone cannot tell a
    Gumbel from a reflected one; the later choices can)."""
    import itertools

    b = Bandit(BanditConfig(n_prompts=1, n_responses=3, label_temperature=0.7, seed=5))
    n = 20_000
    _, y, ranking = b.rankings(n, 3, torch.Generator().manual_seed(6))
    orders = [tuple(row) for row in y.gather(1, ranking).tolist()]  # response ids, best first
    s = (b.gold[0] / 0.7).tolist()
    assert max(s) - min(s) > 1.0  # orderings far from uniform
    for order in itertools.permutations(range(3)):
        p = 1.0
        for i in range(3):
            p *= math.exp(s[order[i]]) / sum(math.exp(s[j]) for j in order[i:])
        seen = orders.count(order) / n
        assert abs(seen - p) < 4 * math.sqrt(p * (1 - p) / n) + 1e-3, (order, seen, p)


def test_kl_optimum_names_its_softmax_dim():
    """An implicit softmax dimension warns (and picks the wrong one for other shapes)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        logp = kl_optimum(_bandit().logp_sft, _bandit().gold, 0.5)
    torch.testing.assert_close(logp.exp().sum(-1), torch.ones(16, dtype=torch.float64))


def test_fit_reward_model_takes_adams_first_step_of_its_learning_rate():
    """After one step from w = 0, Adam moves each weight by lr·g/(|g| + ε), lr = 0.05, ε = 1e-8,
    against its gradient g (m̂ = g, v̂ = g²), that of Eq. 1 (loops, `pairwise_loss_ref`)."""
    bandit = Bandit(BanditConfig(n_prompts=4, n_responses=5, n_features=3, seed=8))
    r = fit_reward_model(bandit, 30, 3, "linear", 1, seed=4)
    x, y, ranking = bandit.rankings(30, 3, torch.Generator().manual_seed(4))
    w = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    pairwise_loss_ref(bandit.phi[x[:, None], y] @ w, ranking).backward()
    want = bandit.phi @ (-0.05 * w.grad / (w.grad.abs() + 1e-8))
    want = want - (bandit.logp_sft.exp() * want).sum(-1).mean()
    torch.testing.assert_close(r, want, rtol=0, atol=1e-12)
