"""PPO pieces: KL-penalised rewards, GAE, the clipped surrogate, KL estimators."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repro.align.policy import generate, response_mask, token_logprobs
from repro.align.ppo import (
    PPOConfig,
    gae,
    kl_penalised_rewards,
    kl_stats,
    ppo,
    ppo_clip_loss,
    whiten,
)
from repro.align.reward import RewardModel
from repro.data.instructions import InstructionWorld, WorldConfig
from repro.models.gpt import GPT


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


# --- the training loop against a reference written out from §3.5 / App. C.4 ---------------------


def _ppo_models(cfg):
    """Policy, reference (another init, so the KL is not 0), an RM with a random head (its zero
    init would score everything 0); all with dropout and passed in train mode, so a model left in
    the wrong mode computes something else."""
    torch.manual_seed(0)
    policy, reference, rm = GPT(cfg), GPT(cfg), RewardModel(GPT(cfg))
    nn.init.normal_(rm.head.weight)
    nn.init.normal_(rm.head.bias)
    return policy.train(), reference.train(), rm.train()


def ppo_ref(policy, reference, rm, world, cfg, pool, text, gold_fn):
    """One PPO(-ptx) run as the paper describes it, the statistics from `kl_stats`."""
    g = torch.Generator().manual_seed(cfg.seed)
    value = copy.deepcopy(rm)  # the value function starts as the RM
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, foreach=True)
    vopt = torch.optim.Adam(value.parameters(), lr=cfg.vf_lr, foreach=True)
    reference.eval()
    rm.eval()
    eot, history = world.vocab.eot, []
    for _ in range(cfg.iterations):
        idx = torch.randint(0, len(pool), (cfg.batch,), generator=g)
        prompts = pool[idx]
        resp = generate(policy, prompts, world.response_len, eot, generator=g)
        mask = response_mask(resp, eot).float()
        seq, P = torch.cat([prompts, resp], 1), prompts.shape[1]
        with torch.no_grad():
            score = rm(seq)
            kl = kl_stats(policy, reference, prompts, resp, eot)
            logp_old, _ = token_logprobs(policy, prompts, resp)
            logp_ref, _ = token_logprobs(reference, prompts, resp)
            values = value(seq[:, :-1], per_token=True)[:, P - 1 :]
            rewards = kl_penalised_rewards(score, logp_old, logp_ref, mask, cfg.beta)
            adv, returns = gae(rewards, values, mask, cfg.lam, gamma=1.0)
            adv = whiten(adv, mask)
        history.append(
            {
                "score": score.mean().item(),
                "kl_k1": kl["k1"].mean().item(),
                "kl_full": kl["full"].mean().item(),
                "k1_negative": (kl["k1"] < 0).double().mean().item(),
                "gold": gold_fn(idx, resp).mean().item(),
            }
        )
        policy.train()
        value.train()
        for _ in range(cfg.epochs):
            order = torch.randperm(cfg.batch, generator=g)
            for mb in order.split(cfg.minibatch):
                logp, _ = token_logprobs(policy, prompts[mb], resp[mb])
                loss = ppo_clip_loss(logp, logp_old[mb], adv[mb], mask[mb], cfg.clip)
                if cfg.ptx_coef > 0 and text is not None:
                    rows = torch.randint(0, len(text), (cfg.ptx_batch,), generator=g)
                    x = text[rows]  # γ·(next-token loss of the pretraining text)
                    logits = policy(x[:, :-1])
                    nll = F.cross_entropy(logits.flatten(0, 1), x[:, 1:].flatten())
                    loss = loss + cfg.ptx_coef * nll
                opt.zero_grad()
                loss.backward()
                nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                opt.step()
                v = value(seq[mb, :-1], per_token=True)[:, P - 1 :]
                m = mask[mb]
                vloss = ((v - returns[mb]) ** 2 * m).sum() / m.sum()  # MSE over response tokens
                vopt.zero_grad()
                vloss.backward()
                vopt.step()
        policy.eval()
    return history


@pytest.mark.parametrize(
    "ptx_coef, with_text, same_start", [(0.5, True, False), (0.0, True, False), (0.5, False, True)]
)
def test_ppo_matches_the_reference_loop(
    ptx_coef, with_text, same_start, eot_biased, world_gpt_config
) -> None:
    """Two iterations (the second uses the value function the first trained), two epochs of
    minibatches: the policy's weights, the statistics and the progress calls agree with
    `ppo_ref`. γ = 0 with text given, or γ > 0 with none, must not touch the text. A policy
    that starts as the reference has k1 = 0 exactly at first: no sample counts as negative."""
    world = InstructionWorld(WorldConfig())
    policy, reference, rm = _ppo_models(world_gpt_config(world, dropout=0.2))
    eot = world.vocab.eot  # responses that stop early, so that padding is masked out
    models = [eot_biased(policy, eot).train(), eot_biased(reference, eot).train(), rm]
    if same_start:
        models[1].load_state_dict(models[0].state_dict())
    pool = world.prompts(world.sample_instances(12, torch.Generator().manual_seed(1)))
    text = world.pretraining_batch(20, 2, torch.Generator().manual_seed(2)) if with_text else None
    cfg = PPOConfig(
        beta=0.3, ptx_coef=ptx_coef, iterations=2, batch=10, epochs=2, minibatch=4,
        lr=3e-3, vf_lr=2e-2, clip=0.15, lam=0.8, ptx_batch=3, seed=7,
    )  # fmt: skip

    stopped = []

    def gold(idx, resp):  # any function of the prompt and the response
        stopped.append(int((resp == eot).any(1).sum()))
        return (idx[:, None] * (resp + 1)).double().sum(1)

    ref_models = copy.deepcopy(models)
    torch.manual_seed(11)  # dropout
    want = ppo_ref(*ref_models, world, cfg, pool, text, gold)
    calls = []
    torch.manual_seed(11)
    got = ppo(*models, world, cfg, pool, text, progress=lambda *a: calls.append(a), gold_fn=gold)
    assert len(got) == 2 and got[0].keys() == want[0].keys()
    for row_got, row_want in zip(got, want, strict=True):
        for key in row_want:
            assert row_got[key] == pytest.approx(row_want[key], rel=1e-5, abs=1e-6), key
    assert want[0]["score"] != 0
    assert 0 < stopped[0] < cfg.batch  # some responses end with <eot> and padding, some run on
    if same_start:
        assert want[0]["kl_k1"] == want[0]["kl_full"] == want[0]["k1_negative"] == 0
    else:
        assert want[0]["kl_full"] > 0.01 and 0 < want[0]["k1_negative"] < 1
    weights = zip(models[0].state_dict().items(), ref_models[0].state_dict().values(), strict=True)
    for (name, a), b in weights:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not models[0].training and not models[1].training and not models[2].training
    assert calls == [(f"PPO β=0.3 γ={ptx_coef:g}", 1, 2), (f"PPO β=0.3 γ={ptx_coef:g}", 2, 2)]


def test_kl_penalised_rewards_take_a_score_of_another_dtype() -> None:
    """An fp64 RM score on fp32 log-probabilities lands on the last token in the rewards' dtype."""
    logp, logp_ref = torch.tensor([[-1.0, -2.0, -0.5]]), torch.tensor([[-1.5, -1.0, -0.5]])
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    r = kl_penalised_rewards(torch.tensor([0.25], dtype=torch.float64), logp, logp_ref, mask, 0.5)
    assert r.dtype == torch.float32
    assert torch.allclose(r, torch.tensor([[-0.25, 0.5 + 0.25, 0.0]]))


def test_gae_of_one_token_responses_is_the_reward_minus_the_value() -> None:
    """R = 1: nothing follows, so A = r − V and the return is r."""
    rewards, values = torch.tensor([[2.0], [-1.0], [0.5]]), torch.tensor([[0.5], [0.25], [3.0]])
    adv, ret = gae(rewards, values, torch.ones(3, 1), lam=0.9)
    assert torch.allclose(adv, rewards - values) and torch.allclose(ret, rewards)


def test_clipped_surrogate_uses_the_ratio_to_the_old_policy() -> None:
    """ρ = π/π_old with π_old ≠ 1 (the other tests put log π_old at 0); one response token
    (the mean over one token), and none (loss 0, not a division by 0)."""
    logp_old = torch.tensor([[-1.0, -2.0, -0.3]])
    ratio = torch.tensor([[1.1, 0.6, 1.5]])
    adv = torch.tensor([[1.0, -2.0, 0.5]])
    logp = logp_old + ratio.log()
    # min(ρA, clip(ρ)A) per token: min(1.1, 1.1) = 1.1, min(0.6·(−2), 0.8·(−2)) = −1.6
    loss = ppo_clip_loss(logp, logp_old, adv, torch.tensor([[1.0, 1.0, 0.0]]), clip=0.2)
    assert loss.item() == pytest.approx(-(1.1 - 1.6) / 2, rel=1e-6)
    one = ppo_clip_loss(logp, logp_old, adv, torch.tensor([[0.0, 1.0, 0.0]]), clip=0.2)
    assert one.item() == pytest.approx(1.6, rel=1e-6)  # the mean over one token
    assert ppo_clip_loss(logp_old, logp_old, adv, torch.zeros(1, 3), clip=0.2).item() == 0


def test_whiten_of_equal_advantages_is_zero_not_nan() -> None:
    """No spread among the masked entries: zeros (the ε under the square root), never NaN."""
    x = torch.tensor([[0.7, 0.7, 5.0], [0.7, 0.7, 0.7]])
    mask = torch.tensor([[1.0, 1.0, 0.0], [1.0, 0.0, 1.0]])
    w = whiten(x, mask)
    assert torch.isfinite(w).all() and (w == 0).all()
