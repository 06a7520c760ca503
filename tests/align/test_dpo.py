"""DPO: Eq. 7 against naive formulas, §4's gradient against autograd, the training loop, the
exact tabular minimiser against Eq. 4, and the ValueError guards."""

from __future__ import annotations

import copy
import math
import warnings

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


# --- the Newton iteration of the tabular minimiser, step by step ---------------------------------


def _newton_ref(logp_ref, prefer, pair_prob, beta, reference_free, iterations, max_step=2.0):
    """`iterations` steps of damped Newton on the expected DPO loss, written independently: the
    loss over the (X, Y, Y) grid by hand, the Hessian by autograd (not the closed-form
    Laplacian), its null direction handled by a pseudo-inverse (not pinned), then the per-prompt
    trust region and Armijo backtracking (c = 10⁻⁴, halving) that `tabular_dpo` documents."""
    X, Y = logp_ref.shape
    w = pair_prob * prefer * (1 - torch.eye(Y, dtype=F64))
    w = w / w.sum()
    ref = torch.zeros_like(logp_ref) if reference_free else logp_ref

    def loss(theta):
        h = beta * (theta - theta.logsumexp(-1, keepdim=True) - ref)
        return (w * -torch.nn.functional.logsigmoid(h[:, :, None] - h[:, None, :])).sum()

    theta = logp_ref.clone()
    for _ in range(iterations):
        point = theta.clone().requires_grad_(True)
        (grad,) = torch.autograd.grad(loss(point), point)
        hess = torch.autograd.functional.hessian(loss, theta)  # (X, Y, X, Y)
        step = torch.stack([-torch.linalg.pinv(hess[x, :, x, :]) @ grad[x] for x in range(X)])
        step = step / (step.abs().amax(-1, keepdim=True) / max_step).clamp(min=1)
        slope, t, f0 = float((grad * step).sum()), 1.0, float(loss(theta))
        while float(loss(theta + t * step)) > f0 + 1e-4 * t * slope:
            t /= 2
        theta = theta + t * step
    return torch.log_softmax(theta, -1)


@pytest.mark.parametrize(
    ("beta", "reference_free"),
    [
        (0.5, False),  # the trust region binds for one prompt of three in the first step
        (0.5, True),  # ... for all three, then for one (a per-prompt, not a global, bound)
        (5.0, True),  # backtracking: the second and the fourth step are halved
    ],
)
def test_each_tabular_iteration_is_a_damped_newton_step(beta, reference_free):
    logp_ref, _, prefer, pair_prob = _tabular(seed=0)
    for k in range(1, 5):
        got = tabular_dpo(logp_ref, prefer, pair_prob, beta, reference_free, max_iter=k)
        want = _newton_ref(logp_ref, prefer, pair_prob, beta, reference_free, k)
        torch.testing.assert_close(got, want, atol=1e-9, rtol=0)


def test_tabular_trust_region_and_iteration_cap_far_from_the_optimum():
    """Y = 2 and β tiny: the optimum is thousands of nats away, so every step is capped at
    `max_step` per logit, i.e. the log-odds move by 2·max_step per iteration: 2·2·100 with the
    defaults (at most 100 iterations of at most 2 nats), 2·0.5·3 with max_step=0.5, max_iter=3.
    Y = 2 is the smallest table allowed."""
    p = 0.99
    prefer = torch.tensor([[[0.5, p], [1 - p, 0.5]]], dtype=F64)
    logp_ref = torch.log(torch.tensor([[0.3, 0.7]], dtype=F64))
    beta = 1e-3
    assert math.log(p / (1 - p)) / beta > 1000  # the optimum's log-odds shift (Eq. 4)

    def moved(logp):
        return float((logp[0, 0] - logp[0, 1]) - (logp_ref[0, 0] - logp_ref[0, 1]))

    ones = torch.ones_like(prefer)
    assert moved(tabular_dpo(logp_ref, prefer, ones, beta)) == pytest.approx(2 * 2.0 * 100)
    short = tabular_dpo(logp_ref, prefer, ones, beta, max_iter=3, max_step=0.5)
    assert moved(short) == pytest.approx(2 * 0.5 * 3)


def test_tabular_dpo_with_two_responses_and_no_implicit_softmax_dimension():
    logp_ref, r, prefer, pair_prob = _tabular(X=4, Y=2, seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # e.g. log_softmax without its dim warns
        got = tabular_dpo(logp_ref, prefer, pair_prob, 0.5)
    torch.testing.assert_close(got, kl_optimum(logp_ref, r, 0.5), atol=1e-10, rtol=0)


def _bisect(fn, lo: float, hi: float) -> float:
    """The root of fn in [lo, hi] (fn changes sign there), to float precision."""
    assert fn(lo) * fn(hi) < 0
    for _ in range(200):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if fn(mid) * fn(lo) > 0 else (lo, mid)
    return (lo + hi) / 2


@pytest.mark.parametrize("case", ["full step ends level", "half step barely sufficient"])
def test_tabular_backtracking_uses_armijo_with_c_1e4_and_halves(case):
    """Y = 2, reference-free, one iteration. The expected loss is a function of the margin
    m = β·(log π(y_0) − log π(y_1)) alone, f(m) = −p·log σ(m) − (1 − p)·log σ(−m); starting at
    m_0 = −20 (far on the flat side) the Newton step is huge, so the trust region makes it
    Δ = 2β·max_step in m. max_step is chosen so that the full step lands where f(m_0 + Δ) = f(m_0)
    (rejected by Armijo, accepted if the test were `≤ f + c·|slope|`), or so that the half step
    lands where f = f(m_0) − 10⁻⁴·|f'(m_0)|·Δ (accepted with c·t = ½·10⁻⁴, rejected if c·t were
    10⁻⁴/t or t shrank by a third). Either way the accepted step is t = ½."""
    p, beta = 0.9, 1.0

    def f(m: float) -> float:
        return p * math.log1p(math.exp(-m)) + (1 - p) * (m + math.log1p(math.exp(-m)))

    m0 = -20.0
    slope = abs(-p + 1 / (1 + math.exp(-m0)))  # |f'(m_0)|
    if case == "full step ends level":
        delta = _bisect(lambda d: f(m0 + d) - f(m0), 30.0, 1000.0)
    else:
        delta = _bisect(lambda d: f(m0 + d / 2) - f(m0) + 1e-4 * slope * d, 60.0, 2000.0)
    logp_ref = torch.log_softmax(torch.tensor([[m0 / 2, -m0 / 2]], dtype=F64), -1)
    prefer = torch.tensor([[[0.5, p], [1 - p, 0.5]]], dtype=F64)
    got = tabular_dpo(
        logp_ref, prefer, torch.ones_like(prefer), beta, reference_free=True, max_iter=1,
        max_step=delta / (2 * beta),
    )  # fmt: skip
    moved = float((got[0, 0] - got[0, 1]) - (logp_ref[0, 0] - logp_ref[0, 1]))
    assert moved == pytest.approx(0.5 * delta / beta, rel=1e-9)


def test_dpo_order_follows_its_seed_and_on_step_sees_the_policy():
    """Every pair once per epoch in batches of `batch`, the last one partial (6 = 4 + 2), in an
    order fixed by the seed alone; on_step and progress see every step."""
    reference = fresh_model(PCFG, seed=6).eval()
    pairs = _pairs(6, 6)
    first = torch.cat([pairs.prompts, pairs.chosen], 1)[:, :-1]  # what y_w's forward pass reads
    runs = []
    for global_seed, seed in ((0, 0), (1, 0), (0, 1)):
        torch.manual_seed(global_seed)  # the global generator is not the one used
        policy, seen, batches, progress = copy.deepcopy(reference), [], [], []
        policy.register_forward_hook(lambda m, args, out, _b=batches: _b.append(args[0]))
        history = dpo(
            policy, reference, pairs, DPOConfig(beta=0.5, epochs=2, batch=4, seed=seed),
            progress=lambda *a, _p=progress: _p.append(a),
            on_step=lambda step, model, _p=policy, _s=seen: _s.append(model is _p),
        )  # fmt: skip
        assert seen == [True] * (len(history) + 1)
        assert progress[-1] == ("DPO", 4, 4)
        assert [len(x) for x in batches] == [2 * 4, 2 * 2, 2 * 4, 2 * 2]  # y_w and y_l rows
        for epoch in (batches[:2], batches[2:]):
            rows = torch.cat([x[: len(x) // 2] for x in epoch])  # the y_w half of each pass
            assert sorted(map(tuple, rows.tolist())) == sorted(map(tuple, first.tolist()))
        runs.append([h["loss"] for h in history])
    assert runs[0] == runs[1] and runs[0] != runs[2]


def test_dpo_uses_the_configured_lr_and_reference_free_and_ties_are_not_agreement():
    reference = fresh_model(PCFG, seed=7).eval()
    pairs = _pairs(6, 7)
    beta = 0.5
    # one batch of all pairs: the first loss is Eq. 7 at π = π_ref, with or without π_ref
    with torch.no_grad():
        lw, ll = reference_logps(reference, pairs)
    for free in (False, True):
        policy = copy.deepcopy(reference)
        cfg = DPOConfig(beta=beta, epochs=1, batch=6, lr=1e-12, reference_free=free)
        history = dpo(policy, reference, pairs, cfg)
        want = dpo_loss(lw, ll, lw, ll, beta, reference_free=free)
        assert history[0]["loss"] == pytest.approx(float(want), abs=1e-5)
        for p, q in zip(policy.parameters(), reference.parameters(), strict=True):
            assert (p - q).abs().max() < 1e-9  # lr ~ 0: nothing moved
    assert abs(float(dpo_loss(lw, ll, lw, ll, beta, reference_free=True)) - math.log(2)) > 0.01
    # y_w = y_l: every margin is exactly 0, a tie, which does not count as ordered right
    tied = PreferencePairs(
        pairs.prompts, pairs.chosen, pairs.chosen.clone(), pairs.gold_chosen,
        pairs.gold_rejected, pairs.eot,
    )  # fmt: skip
    history = dpo(copy.deepcopy(reference), reference, tied, DPOConfig(epochs=1, batch=3))
    assert [h["margin"] for h in history] == [0.0, 0.0]
    assert [h["reward_accuracy"] for h in history] == [0.0, 0.0]


def test_the_pair_by_pair_reference_pairs_strictly_and_is_stable_at_huge_margins():
    zero = torch.zeros(2, dtype=F64)
    with pytest.raises(ValueError):
        dpo_loss_ref(torch.zeros(3, dtype=F64), zero, zero, zero, 1.0)
    # margins of ±800 nats: exp(800) overflows a float, so each side needs its own branch
    assert dpo_loss_ref(torch.tensor([800.0, -800.0]), zero, zero, zero, 1.0) == pytest.approx(400)


def test_dpo_message_for_no_pairs():
    model = fresh_model(PCFG, seed=0)
    empty = _pairs(4, 0)[torch.zeros(4, dtype=torch.bool)]
    with pytest.raises(ValueError, match=r"^dpo: no preference pairs to train on$"):
        dpo(model, model, empty, DPOConfig())
    with pytest.raises(ValueError, match=r"^dpo_loss: empty batch \(0 pairs\); need at least one$"):
        dpo_loss(*[torch.zeros(0)] * 4, 0.1)
