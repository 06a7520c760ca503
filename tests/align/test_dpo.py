"""DPO: Eq. 7 against naive formulas, §4's gradient against autograd, the training loop, the
exact tabular minimiser against Eq. 4, and the ValueError guards."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from repro.align.bandit import kl_optimum, total_variation
from repro.align.dpo import (
    DPOConfig,
    dpo,
    dpo_gradient_ref,
    dpo_loss,
    dpo_loss_ref,
    dpo_weights,
    implicit_reward,
    reference_logps,
    tabular_dpo,
)
from repro.align.preferences import PreferencePairs, sequence_logps
from repro.align.pretrain import PretrainConfig, fresh_model
from repro.data.instructions import InstructionWorld

F64 = torch.float64
PCFG = PretrainConfig()
WORLD = InstructionWorld(PCFG.world)


def _logps(n: int = 7, seed: int = 0, spread: float = 20.0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return [-spread * torch.rand(n, generator=g, dtype=F64) for _ in range(4)]


def _naive(lw, ll, rw, rl, beta, weight=None):
    z = beta * (lw - rw) - beta * (ll - rl)
    losses = -torch.log(1 / (1 + torch.exp(-z)))
    return losses.mean() if weight is None else (weight * losses).sum() / weight.sum()


@pytest.mark.parametrize("beta", [0.1, 0.5, 3.0])
def test_loss_matches_the_naive_formula_and_the_pair_by_pair_reference(beta):
    lw, ll, rw, rl = _logps()
    got = dpo_loss(lw, ll, rw, rl, beta)
    torch.testing.assert_close(got, _naive(lw, ll, rw, rl, beta), atol=1e-12, rtol=0)
    assert dpo_loss_ref(lw, ll, rw, rl, beta) == pytest.approx(float(got), abs=1e-12)


def test_weighted_loss_and_large_margins():
    lw, ll, rw, rl = _logps(seed=1)
    w = torch.tensor([0.1, 3.0, 0.0, 1.0, 2.0, 0.5, 7.0], dtype=F64)
    torch.testing.assert_close(
        dpo_loss(lw, ll, rw, rl, 0.3, weight=w), _naive(lw, ll, rw, rl, 0.3, w), atol=1e-12, rtol=0
    )
    # margins of ±400 nats: the naive formula over/underflows, the loss does not
    big = torch.tensor([0.0, 0.0], dtype=F64)
    loss = dpo_loss(torch.tensor([400.0, -400.0], dtype=F64), big, big, big, 1.0)
    assert math.isfinite(float(loss))
    assert float(loss) == pytest.approx(400 / 2, rel=1e-12)  # −log σ(−400) ≈ 400, −log σ(400) ≈ 0
    assert dpo_loss_ref(torch.tensor([400.0, -400.0]), big, big, big, 1.0) == pytest.approx(200)


def test_loss_is_log_2_where_the_policy_is_the_reference():
    lw, ll, _, _ = _logps(seed=2)
    assert float(dpo_loss(lw, ll, lw, ll, 0.7)) == pytest.approx(math.log(2), abs=1e-15)
    torch.testing.assert_close(dpo_weights(lw, ll, lw, ll, 0.7), torch.full_like(lw, 0.5))


def test_implicit_reward_and_weights_follow_section_4():
    lw, ll, rw, rl = _logps(seed=3)
    beta = 0.2
    torch.testing.assert_close(implicit_reward(lw, rw, beta), beta * (lw - rw))
    rhat_w, rhat_l = implicit_reward(lw, rw, beta), implicit_reward(ll, rl, beta)
    w = dpo_weights(lw, ll, rw, rl, beta)
    torch.testing.assert_close(w, torch.sigmoid(rhat_l - rhat_w))
    # the weight is large where the implicit reward orders the pair wrongly, and it is not the
    # mirror-image weight σ(r̂_w − r̂_l) (the two agree only at a zero margin)
    assert ((w > 0.5) == (rhat_l > rhat_w)).all()
    assert (w - torch.sigmoid(rhat_w - rhat_l)).abs().max() > 0.1


def test_reference_free_drops_the_reference_and_changes_the_loss():
    lw, ll, rw, rl = _logps(seed=4)
    zero = torch.zeros_like(rw)
    free = dpo_loss(lw, ll, rw, rl, 0.5, reference_free=True)
    torch.testing.assert_close(free, dpo_loss(lw, ll, zero, zero, 0.5))
    assert abs(float(free) - float(dpo_loss(lw, ll, rw, rl, 0.5))) > 1e-3


@pytest.mark.parametrize(
    ("args", "beta", "match"),
    [
        ([torch.zeros(0)] * 4, 0.1, "empty batch"),
        ([torch.zeros(3), torch.zeros(3), torch.zeros(3), torch.zeros(4)], 0.1, "one shape"),
        ([torch.zeros(3)] * 4, 0.0, "β > 0"),
        ([torch.zeros(3)] * 4, -1.0, "β > 0"),
        ([torch.zeros(3)] * 4, math.inf, "finite"),
    ],
)
def test_bad_input_is_a_value_error(args, beta, match):
    with pytest.raises(ValueError, match=match):
        dpo_loss(*args, beta)


# --- the gradient of §4 against autograd, through a real model -----------------------------------


def _pairs(n: int, seed: int) -> PreferencePairs:
    """n pairs of lopsided responses (different lengths, some ending at once) for real prompts."""
    g = torch.Generator().manual_seed(seed)
    inst = WORLD.sample_instances(n, g)
    prompts = WORLD.prompts(inst)
    vocab = WORLD.vocab
    chosen = vocab.digit0 + torch.randint(0, 10, (n, WORLD.response_len), generator=g)
    rejected = vocab.digit0 + torch.randint(0, 10, (n, WORLD.response_len), generator=g)
    chosen[::2, 1] = vocab.eot  # every other chosen response stops after one digit
    rejected[1::3, 0] = vocab.eot  # some rejected ones stop at once
    gold = torch.zeros(n)
    return PreferencePairs(prompts, chosen, rejected, gold + 1, gold, vocab.eot)


def _models(seed: int) -> tuple[torch.nn.Module, torch.nn.Module]:
    reference = fresh_model(PCFG, seed=seed).double().eval()
    policy = copy.deepcopy(reference)
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for p in policy.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g, dtype=F64))
    return policy, reference


def _flat(grads):
    return torch.cat([g.reshape(-1) for g in grads])


def test_autograd_equals_the_weighted_gradient_of_section_4_and_not_appendix_a4():
    policy, reference = _models(0)
    pairs = _pairs(5, 0)
    beta = 0.5
    ref_w, ref_l = reference_logps(reference, pairs)
    lw = sequence_logps(policy, pairs.prompts, pairs.chosen, pairs.eot)
    ll = sequence_logps(policy, pairs.prompts, pairs.rejected, pairs.eot)
    assert lw.dtype == F64
    loss = dpo_loss(lw, ll, ref_w, ref_l, beta)
    auto = _flat(torch.autograd.grad(loss, list(policy.parameters())))
    closed = _flat(dpo_gradient_ref(policy, pairs, ref_w, ref_l, beta))
    torch.testing.assert_close(closed, auto, atol=1e-12 * float(auto.abs().max()), rtol=0)
    w = dpo_weights(lw.detach(), ll.detach(), ref_w, ref_l, beta)
    assert w.max() - w.min() > 0.1  # the weights differ between pairs: a real test of them
    # the appendix's printed weight σ(r̂_w − r̂_l) = 1 − w gives another gradient
    wrong = _flat(dpo_gradient_ref(policy, pairs, ref_w, ref_l, beta, weights=1 - w))
    assert (wrong - auto).abs().max() > 0.1 * auto.abs().max()


# --- the training loop ---------------------------------------------------------------------------


def test_dpo_raises_the_margin_of_consistent_pairs_and_leaves_the_reference_alone():
    reference = fresh_model(PCFG, seed=5).eval()
    pairs = _pairs(48, 5)
    before = copy.deepcopy(reference.state_dict())
    policy = copy.deepcopy(reference)
    calls = []
    history = dpo(
        policy,
        reference,
        pairs,
        DPOConfig(beta=0.5, epochs=3, batch=16, lr=3e-3),
        on_step=lambda step, model: calls.append(step),
    )
    assert len(history) == 9 and calls == list(range(10))
    assert history[0]["loss"] == pytest.approx(math.log(2), abs=1e-5)  # starts at π_ref
    assert history[-1]["loss"] < history[0]["loss"] - 0.05
    assert history[-1]["margin"] > 0 and history[-1]["reward_accuracy"] > 0.5
    for k, v in reference.state_dict().items():
        assert torch.equal(v, before[k]), k
    with torch.no_grad():
        ref_w, ref_l = reference_logps(reference, pairs)
        lw = sequence_logps(policy, pairs.prompts, pairs.chosen, pairs.eot)
        ll = sequence_logps(policy, pairs.prompts, pairs.rejected, pairs.eot)
    assert ((lw - ref_w) - (ll - ref_l)).mean() > 0  # y_w gained on y_l relative to π_ref


def test_dpo_refuses_no_pairs_and_a_bad_beta():
    model = fresh_model(PCFG, seed=0)
    empty = _pairs(4, 0)[torch.zeros(4, dtype=torch.bool)]
    with pytest.raises(ValueError, match="no preference pairs"):
        dpo(model, model, empty, DPOConfig())
    with pytest.raises(ValueError, match="β > 0"):
        dpo(model, model, _pairs(4, 0), DPOConfig(beta=0.0))


# --- the exact minimiser of a tabular policy -----------------------------------------------------


def _tabular(X: int = 3, Y: int = 5, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    logp_ref = torch.log_softmax(2 * torch.randn(X, Y, generator=g, dtype=F64), -1)  # lopsided
    r = torch.randn(X, Y, generator=g, dtype=F64)
    prefer = torch.sigmoid(r[:, :, None] - r[:, None, :])  # Bradley–Terry on r
    p = logp_ref.exp()
    return logp_ref, r, prefer, p[:, :, None] * p[:, None, :]


@pytest.mark.parametrize("beta", [2.0, 0.5, 0.1])
def test_tabular_minimiser_is_the_kl_regularised_optimum(beta):
    logp_ref, r, prefer, pair_prob = _tabular()
    got = tabular_dpo(logp_ref, prefer, pair_prob, beta)
    want = torch.log_softmax(logp_ref + r / beta, -1)  # Eq. 4, written out here
    torch.testing.assert_close(got.exp(), want.exp(), atol=1e-10, rtol=0)
    assert total_variation(got, kl_optimum(logp_ref, r, beta)) < 1e-10
    # any full-support pair distribution has the same minimiser
    uniform = tabular_dpo(logp_ref, prefer, torch.ones_like(pair_prob), beta)
    torch.testing.assert_close(uniform.exp(), want.exp(), atol=1e-10, rtol=0)


def test_tabular_controls_land_elsewhere():
    logp_ref, r, prefer, pair_prob = _tabular(seed=1)
    beta = 0.5
    target = kl_optimum(logp_ref, r, beta)
    free = tabular_dpo(logp_ref, prefer, pair_prob, beta, reference_free=True)
    torch.testing.assert_close(free.exp(), torch.softmax(r / beta, -1), atol=1e-9, rtol=0)
    coin = tabular_dpo(logp_ref, torch.full_like(prefer, 0.5), pair_prob, beta)
    torch.testing.assert_close(coin.exp(), logp_ref.exp(), atol=1e-10, rtol=0)  # stays at π_ref
    assert total_variation(free, target) > 0.1 and total_variation(coin, target) > 0.1


def test_tabular_dpo_refuses_degenerate_tables():
    with pytest.raises(ValueError, match="Y >= 2"):
        tabular_dpo(torch.zeros(2, 1, dtype=F64), torch.zeros(2, 1, 1), torch.ones(2, 1, 1), 1.0)
    with pytest.raises(ValueError, match="X >= 1"):
        tabular_dpo(torch.zeros(0, 3, dtype=F64), torch.zeros(0, 3, 3), torch.ones(0, 3, 3), 1.0)
