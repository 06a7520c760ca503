"""GRPO (repro.align.grpo): advantages, the k3 estimator, the clipped loss and the guards."""

from __future__ import annotations

import copy
import math

import pytest
import torch

from repro.align.grpo import (
    GRPOConfig,
    clipped_surrogate,
    group_advantages,
    group_advantages_ref,
    grpo,
    grpo_loss,
    k1_kl,
    k3_kl,
)
from repro.align.policy import generate, response_mask, token_logprobs
from repro.data.instructions import InstructionWorld, WorldConfig
from repro.models.gpt import GPT, GPTConfig


def naive_advantages(rows: list[list[float]]) -> list[list[float]]:
    """Written out from §4.1.2: (r_i − mean) / std, population std, 0 for a flat group."""
    out = []
    for row in rows:
        m = sum(row) / len(row)
        s = math.sqrt(sum((x - m) ** 2 for x in row) / len(row))
        out.append([0.0 if s == 0 else (x - m) / s for x in row])
    return out


LOPSIDED = [
    [0.0, 0.0, 0.0, 4.0],  # one winner
    [3.0, 3.0, 3.0, -1.0],  # one loser
    [1.0, 2.0, 7.0, 7.5],
    [0.25, 0.25, 0.25, 0.25],  # no signal
    [-3.0, 10.0, 0.5, 0.5],
]


def test_advantages_match_the_naive_formula_on_unequal_groups():
    r = torch.tensor(LOPSIDED, dtype=torch.float64)
    expected = torch.tensor(naive_advantages(LOPSIDED), dtype=torch.float64)
    torch.testing.assert_close(group_advantages(r), expected, rtol=0, atol=1e-12)
    torch.testing.assert_close(group_advantages_ref(r), expected, rtol=0, atol=1e-12)
    # a lone winner gets +√3 and each of the three losers −1/√3 (G = 4)
    assert group_advantages(r)[0, 3].item() == pytest.approx(math.sqrt(3))
    assert group_advantages(r)[0, 0].item() == pytest.approx(-1 / math.sqrt(3))


@pytest.mark.parametrize("G", [2, 3, 7])
def test_advantages_random_groups_against_the_loop_reference(G):
    g = torch.Generator().manual_seed(G)
    r = (
        torch.randint(0, 4, (40, G), generator=g).double()
        + 3 * torch.rand(40, G, generator=g).double() * (torch.arange(40) % 3 == 0)[:, None]
    )
    r[::5] = 1.5  # some flat groups
    a = group_advantages(r)
    torch.testing.assert_close(a, group_advantages_ref(r), rtol=0, atol=1e-12)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a.sum(1), torch.zeros(40, dtype=torch.float64), rtol=0, atol=1e-12)


def test_advantages_are_per_group_not_per_batch():
    # two groups at different reward levels: a batch-wide normalisation would make the low
    # group's best output negative
    r = torch.tensor([[0.0, 1.0, 2.0], [10.0, 11.0, 12.0]], dtype=torch.float64)
    a = group_advantages(r)
    torch.testing.assert_close(a[0], a[1])
    assert a[0, 2] > 0


def test_advantages_affine_invariance_and_sign_flip():
    r = torch.tensor(LOPSIDED, dtype=torch.float64)
    a = group_advantages(r)
    torch.testing.assert_close(group_advantages(7.5 * r - 3.0), a, rtol=0, atol=1e-12)
    flipped = group_advantages(-2.0 * r + 1.0)
    torch.testing.assert_close(flipped, -a, rtol=0, atol=1e-12)
    assert (flipped - a).abs().max() > 1  # a < 0 is not invariant: the check can see it


def test_equal_groups_give_zero_not_nan_even_with_rounding():
    r = torch.full((3, 5), 0.1, dtype=torch.float32)  # mean of 0.1s is not exactly 0.1
    assert (group_advantages(r) == 0).all()


@pytest.mark.parametrize(
    "bad, message",
    [
        (torch.zeros(0, 4), "empty batch"),
        (torch.zeros(3, 1), "at least 2"),
        (torch.zeros(6), "shape"),
    ],
)
def test_advantage_guards(bad, message):
    with pytest.raises(ValueError, match=message):
        group_advantages(bad)
    with pytest.raises(ValueError, match=message):
        group_advantages_ref(bad)


def test_config_guards():
    with pytest.raises(ValueError, match="group_size"):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match="questions"):
        GRPOConfig(questions=0)


def exact_kl(logp: torch.Tensor, logp_ref: torch.Tensor) -> float:
    """KL(π ‖ π_ref) summed over the outcomes with plain floats."""
    return sum(math.exp(a) * (a - b) for a, b in zip(logp.tolist(), logp_ref.tolist(), strict=True))


@pytest.mark.parametrize("V, scale", [(3, 0.5), (5, 2.0), (11, 4.0), (40, 1.0)])
def test_k3_is_unbiased_by_enumeration_and_never_negative(V, scale):
    g = torch.Generator().manual_seed(V)
    logits = scale * torch.randn(2, V, generator=g, dtype=torch.float64)
    logp, logp_ref = torch.log_softmax(logits, -1)
    p = logp.exp()
    k3, k1 = k3_kl(logp, logp_ref), k1_kl(logp, logp_ref)
    kl = exact_kl(logp, logp_ref)
    assert kl > 0
    assert (p * k3).sum().item() == pytest.approx(kl, rel=0, abs=1e-12)
    assert (p * k1).sum().item() == pytest.approx(kl, rel=0, abs=1e-12)
    assert (k3 >= 0).all()
    assert (k1 < 0).any()  # k1 is negative on every outcome π_ref favours
    # the closed form per outcome: x − log x − 1 with x = π_ref/π
    x = (logp_ref - logp).exp()
    torch.testing.assert_close(k3, x - x.log() - 1)


def test_k3_is_zero_only_where_the_policies_agree():
    logp = torch.log(torch.tensor([0.2, 0.3, 0.5], dtype=torch.float64))
    assert k3_kl(logp, logp).abs().max() == 0
    assert (k3_kl(logp, logp.flip(0))[[0, 2]] > 0).all()


def surrogate_ref(ratio: float, adv: float, eps: float) -> float:
    return min(ratio * adv, min(max(ratio, 1 - eps), 1 + eps) * adv)


def test_clipping_on_both_sides_of_the_range():
    eps = 0.2
    ratios = [0.5, 0.9, 1.0, 1.1, 1.6]  # below, inside, at 1, inside, above the clip range
    for adv in (2.0, -3.0):
        logp_old = torch.zeros(1, len(ratios))
        logp = torch.log(torch.tensor([ratios]))
        got = clipped_surrogate(logp, logp_old, torch.full((1, 1), adv), eps)[0].tolist()
        want = [surrogate_ref(r, adv, eps) for r in ratios]
        assert got == pytest.approx(want, rel=1e-6)
    # A > 0: the gain stops at 1 + ε (ratio 1.6 gives 1.2·A), a low ratio is not clipped up
    up = clipped_surrogate(
        torch.log(torch.tensor([[1.6, 0.5]])), torch.zeros(1, 2), torch.ones(1, 1), eps
    )
    assert up[0].tolist() == pytest.approx([1.2, 0.5])
    # A < 0: the loss-side stops at 1 − ε (ratio 0.5 gives 0.8·A), a high ratio is not clipped
    down = clipped_surrogate(
        torch.log(torch.tensor([[1.6, 0.5]])), torch.zeros(1, 2), -torch.ones(1, 1), eps
    )
    assert down[0].tolist() == pytest.approx([-1.6, -0.8])


def test_clipped_tokens_get_no_gradient():
    logp = torch.log(torch.tensor([[1.6, 0.5, 1.05]])).requires_grad_()
    clipped_surrogate(logp, torch.zeros(1, 3), torch.ones(1, 1), 0.2).sum().backward()
    assert logp.grad[0, 0] == 0  # above 1 + ε with A > 0
    assert logp.grad[0, 1] != 0 and logp.grad[0, 2] != 0


def grpo_loss_ref(logp, logp_old, logp_ref, adv, mask, eps, beta) -> float:
    """Eq. 3 with loops: per response the mean over its own tokens, then over responses."""
    total = 0.0
    for i in range(logp.shape[0]):
        terms = []
        for t in range(logp.shape[1]):
            if mask[i, t]:
                ratio = math.exp(logp[i, t] - logp_old[i, t])
                x = math.exp(logp_ref[i, t] - logp[i, t])
                kl = x - math.log(x) - 1
                terms.append(surrogate_ref(ratio, adv[i], eps) - beta * kl)
        total += sum(terms) / len(terms)
    return -total / logp.shape[0]


def test_grpo_loss_against_a_loop_reference():
    g = torch.Generator().manual_seed(3)
    N, R = 5, 4
    logp = -torch.rand(N, R, generator=g, dtype=torch.float64) * 2
    logp_old = logp + 0.4 * torch.randn(N, R, generator=g, dtype=torch.float64)  # some clipped
    logp_ref = logp + 0.7 * torch.randn(N, R, generator=g, dtype=torch.float64)
    adv = torch.tensor([1.3, -0.2, 0.0, -1.9, 0.8], dtype=torch.float64)
    mask = torch.tensor(
        [[1, 1, 1, 1], [1, 1, 0, 0], [1, 0, 0, 0], [1, 1, 1, 0], [1, 1, 1, 1]]
    ).double()
    got = grpo_loss(logp, logp_old, logp_ref, adv, mask, 0.2, 0.04).item()
    assert got == pytest.approx(
        grpo_loss_ref(logp, logp_old, logp_ref, adv.tolist(), mask, 0.2, 0.04), abs=1e-12
    )
    # lengths matter: a token-mean over the whole batch is a different number
    flat = -(clipped_surrogate(logp, logp_old, adv[:, None], 0.2) - 0.04 * k3_kl(logp, logp_ref))
    assert abs((flat * mask).sum().item() / mask.sum().item() - got) > 1e-3
    with pytest.raises(ValueError, match="empty batch"):
        grpo_loss(logp[:0], logp_old[:0], logp_ref[:0], adv[:0], mask[:0], 0.2, 0.04)


def test_grpo_runs_groups_and_rejects_an_empty_pool(world_gpt_config):
    world = InstructionWorld(WorldConfig())
    torch.manual_seed(0)
    cfg = world_gpt_config(world)
    policy, reference = GPT(cfg), GPT(cfg)
    reference.load_state_dict(policy.state_dict())
    pool = world.prompts(world.sample_instances(16, torch.Generator().manual_seed(1)))
    seen = []

    def reward(idx, responses):
        seen.append(idx.clone())
        return (responses == world.vocab.eot).any(1).double()

    gcfg = GRPOConfig(group_size=3, questions=2, iterations=2, minibatch=4, seed=0)
    history = grpo(policy, reference, reward, world, gcfg, pool)
    assert len(history) == 2 and all(h["kl_k3"] >= 0 for h in history)
    assert history[0]["kl_k3"] == pytest.approx(0, abs=1e-6)  # π = π_ref before any update
    for idx in seen:  # every question appears G times, in neighbouring slots
        assert idx.view(2, 3).eq(idx.view(2, 3)[:, :1]).all()
    with pytest.raises(ValueError, match="prompt_pool"):
        grpo(policy, reference, reward, world, gcfg, pool[:0])


def test_config_guards_accept_the_smallest_valid_values_and_name_the_bad_ones():
    GRPOConfig(group_size=2, questions=1, minibatch=1, epochs=1, iterations=0)
    with pytest.raises(
        ValueError, match=r"^group_size must be at least 2 \(a group needs a baseline\), got 1$"
    ):
        GRPOConfig(group_size=1)
    with pytest.raises(ValueError, match=r"^questions must be at least 1, got 0$"):
        GRPOConfig(questions=0)
    message = "^minibatch and epochs must be at least 1, iterations at least 0$"
    for bad in ({"minibatch": 0}, {"epochs": 0}, {"iterations": -1}):
        with pytest.raises(ValueError, match=message):
            GRPOConfig(**bad)


def grpo_ref(policy, reference, reward_fn, world, cfg, pool, gold_fn):
    """§4.1 written out: G samples per question, group-normalised outcome advantages (the loop
    reference), μ epochs of clipped updates with the k3 penalty, per-response token means."""
    g = torch.Generator().manual_seed(cfg.seed)
    opt = torch.optim.Adam(policy.parameters(), lr=cfg.lr, foreach=True)
    reference.eval()
    eot, Q, G = world.vocab.eot, cfg.questions, cfg.group_size
    history = []
    for _ in range(cfg.iterations):
        q = torch.randint(0, len(pool), (Q,), generator=g)
        idx = torch.tensor([int(i) for i in q for _ in range(G)])  # each question G times
        prompts = pool[idx]
        resp = generate(policy, prompts, world.response_len, eot, generator=g)
        mask = response_mask(resp, eot).float()
        with torch.no_grad():
            rewards = reward_fn(idx, resp).double().reshape(Q, G)
            adv = group_advantages_ref(rewards).flatten().float()
            logp_old, _ = token_logprobs(policy, prompts, resp)
            logp_ref, _ = token_logprobs(reference, prompts, resp)
        k3 = k1 = 0.0
        for i in range(Q * G):
            for t in range(resp.shape[1]):
                if mask[i, t]:
                    a, b = float(logp_old[i, t]), float(logp_ref[i, t])
                    k3 += math.exp(b - a) - (b - a) - 1
                    k1 += a - b
        rows = rewards.tolist()
        history.append(
            {
                "reward": sum(map(sum, rows)) / (Q * G),
                "kl_k3": k3 / (Q * G),
                "kl_k1": k1 / (Q * G),
                "equal_groups": sum(len(set(r)) == 1 for r in rows) / Q,
                "gold": gold_fn(idx, resp).double().mean().item(),
            }
        )
        policy.train()
        for _ in range(cfg.epochs):
            for mb in torch.randperm(Q * G, generator=g).split(cfg.minibatch):
                logp, _ = token_logprobs(policy, prompts[mb], resp[mb])
                loss = grpo_loss(
                    logp, logp_old[mb], logp_ref[mb], adv[mb], mask[mb], cfg.clip, cfg.beta
                )
                opt.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(policy.parameters(), 1.0)
                opt.step()
        policy.eval()
    return history


def test_grpo_matches_the_reference_loop(eot_biased, world_gpt_config):
    """Two iterations, two epochs of minibatches that do not divide N = 12 (the last is short),
    a reference of another init (KL ≠ 0) passed in train mode, dropout in the policy: the
    weights, the statistics and the progress calls agree with `grpo_ref`."""
    world = InstructionWorld(WorldConfig())
    torch.manual_seed(0)
    cfg = world_gpt_config(world, dropout=0.2)
    eot = world.vocab.eot
    policy, reference = eot_biased(GPT(cfg), eot).train(), eot_biased(GPT(cfg), eot).train()
    pool = world.prompts(world.sample_instances(9, torch.Generator().manual_seed(1)))

    stopped = []

    def reward(idx, resp):  # a function of the response (and of the question)
        stopped.append(int((resp == eot).any(1).sum()))
        return (resp[:, 0] % 3 + (resp == eot).any(1) * (idx % 2)).float()

    def gold(idx, resp):
        return (idx[:, None] * (resp + 1)).sum(1).float()

    gcfg = GRPOConfig(
        beta=0.3, group_size=3, questions=4, iterations=2, epochs=2, minibatch=5, lr=3e-3,
        clip=0.15, seed=4,
    )  # fmt: skip
    ref_models = copy.deepcopy((policy, reference))
    torch.manual_seed(11)
    want = grpo_ref(*ref_models, reward, world, gcfg, pool, gold)
    calls = []
    torch.manual_seed(11)
    got = grpo(
        policy, reference, reward, world, gcfg, pool, lambda *a: calls.append(a), gold_fn=gold
    )
    assert len(got) == 2
    for row_got, row_want in zip(got, want, strict=True):
        assert row_got.keys() == row_want.keys()
        for key in row_want:
            assert row_got[key] == pytest.approx(row_want[key], rel=1e-5, abs=1e-6), key
    assert want[0]["kl_k3"] > 0.01 and want[0]["reward"] > 0 and want[0]["equal_groups"] < 1
    assert 0 < stopped[0] < 12  # some responses end with <eot> and padding, some run to R
    weights = zip(policy.state_dict().items(), ref_models[0].state_dict().values(), strict=True)
    for (name, a), b in weights:
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert not policy.training and not reference.training
    assert calls == [("GRPO G=3 β=0.3", 1, 2), ("GRPO G=3 β=0.3", 2, 2)]


def test_grpo_rejects_a_pool_that_is_not_prompts_by_length():
    world = InstructionWorld(WorldConfig())
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=1, d_model=8, n_heads=2, vocab_size=world.vocab_size, max_seq_len=16)
    policy = GPT(cfg)
    pool = world.prompts(world.sample_instances(4, torch.Generator().manual_seed(1)))
    for bad in (pool[0], pool[:0]):
        with pytest.raises(
            ValueError, match=r"^prompt_pool must be a non-empty \(M, P\) tensor of prompts$"
        ):
            grpo(policy, policy, lambda i, r: r[:, 0].float(), world, GRPOConfig(), bad)


@pytest.mark.parametrize(
    "shape, message",
    [
        ((0, 4), r"^empty batch: no groups of rewards$"),
        ((3, 1), r"^group size must be at least 2, got 1$"),
        ((6,), r"^rewards must be \(questions, group size\), got shape \(6,\)$"),
        ((2, 3, 1), r"^rewards must be \(questions, group size\), got shape \(2, 3, 1\)$"),
    ],
)
def test_advantage_guards_say_what_is_wrong(shape, message):
    """The whole message (the shape, the group size); the smallest valid batch, one group of
    two, is accepted by both implementations."""
    for fn in (group_advantages, group_advantages_ref):
        with pytest.raises(ValueError, match=message):
            fn(torch.zeros(shape))
        assert fn(torch.tensor([[1.0, 3.0]])).tolist() == [[-1.0, 1.0]]


def test_grpo_loss_of_a_single_response():
    """N = 1 is a batch (only N = 0 is rejected, with its message): the mean over its tokens."""
    logp = torch.tensor([[-0.5, -1.0, -2.0]], dtype=torch.float64)
    logp_old = torch.tensor([[-0.7, -1.0, -1.0]], dtype=torch.float64)
    logp_ref = torch.tensor([[-1.0, -0.2, -2.0]], dtype=torch.float64)
    mask = torch.tensor([[1.0, 1.0, 0.0]], dtype=torch.float64)
    adv = torch.tensor([0.6], dtype=torch.float64)
    got = grpo_loss(logp, logp_old, logp_ref, adv, mask, 0.2, 0.1).item()
    assert got == pytest.approx(grpo_loss_ref(logp, logp_old, logp_ref, [0.6], mask, 0.2, 0.1))
    with pytest.raises(ValueError, match=r"^empty batch: no responses$"):
        grpo_loss(logp[:0], logp_old[:0], logp_ref[:0], adv[:0], mask[:0], 0.2, 0.1)
