"""repro.nn.moe: sparse dispatch against the dense reference, gates, balance losses."""

from __future__ import annotations

import pytest
import torch

from repro.nn.moe import (
    MoEFeedForward,
    Routing,
    TopKRouter,
    deepseek_balance_loss,
    dense_gates_ref,
    expert_load,
    moe_ref,
    switch_aux_loss,
    topk_aux_loss,
)

F64 = torch.float64


def lopsided_moe(n_experts: int, top_k: int, normalize: bool, n_shared: int = 0, seed: int = 0):
    """fp64 MoE whose router rows have very different scales, so expert loads are unequal."""
    torch.manual_seed(seed)
    moe = MoEFeedForward(12, 20, n_experts, top_k, normalize, n_shared).double()
    with torch.no_grad():
        scales = torch.linspace(0.3, 4.0, n_experts, dtype=F64)[:, None]
        moe.router.gate.weight.mul_(scales)
    return moe


@pytest.mark.parametrize("n_shared", [0, 2])
@pytest.mark.parametrize("normalize", [True, False])
@pytest.mark.parametrize(("n_experts", "top_k"), [(4, 2), (8, 2), (6, 3), (5, 1), (4, 4)])
@pytest.mark.parametrize("shape", [(1, 1), (3, 17)])
def test_sparse_dispatch_equals_dense_reference(n_experts, top_k, normalize, n_shared, shape):
    moe = lopsided_moe(n_experts, top_k, normalize, n_shared)
    x = torch.randn(*shape, 12, dtype=F64, requires_grad=True)
    y = moe(x)
    ref = moe_ref(x, moe)
    torch.testing.assert_close(y, ref, atol=1e-13, rtol=1e-13)
    # gradients too: through the gates into the router, and into every used expert
    g = torch.randn_like(y)
    grads = torch.autograd.grad((y * g).sum(), [x, *moe.parameters()], allow_unused=True)
    grads_ref = torch.autograd.grad((ref * g).sum(), [x, *moe.parameters()], allow_unused=True)
    for a, b in zip(grads, grads_ref, strict=True):
        if a is None or b is None:  # an expert no token reached: zero gradient in the reference
            assert a is None or a.abs().max() == 0
            assert b is None or b.abs().max() < 1e-15
            continue
        torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12)


def test_loads_are_unequal_in_the_dispatch_case():
    moe = lopsided_moe(8, 2, True)
    moe(torch.randn(3, 40, 12, dtype=F64))
    load = expert_load(moe.last_routing)
    assert load.max() > 2 * load.min()  # the test above is not run on a balanced router


@pytest.mark.parametrize("normalize", [True, False])
def test_reference_with_the_other_gating_differs(normalize):
    """The helper must be able to tell Mixtral's gates from DeepSeek's on the same layer."""
    moe = lopsided_moe(8, 2, normalize)
    x = torch.randn(2, 9, 12, dtype=F64)
    with torch.no_grad():
        diff = (moe(x) - moe_ref(x, moe, normalize=not normalize)).abs().max()
    assert diff > 1e-3


def test_gates_sum_to_one_only_when_renormalised():
    torch.manual_seed(1)
    x = torch.randn(50, 10, dtype=F64)
    norm = TopKRouter(10, 6, 3, normalize=True).double()
    raw = TopKRouter(10, 6, 3, normalize=False).double()
    raw.load_state_dict(norm.state_dict())
    a, b = norm(x), raw(x)
    torch.testing.assert_close(a.gates.sum(-1), torch.ones(50, dtype=F64))
    assert (b.gates.sum(-1) < 1 - 1e-6).all()
    assert torch.equal(a.experts, b.experts)
    # Softmax(TopK(logits)) = full softmax renormalised over the top k
    torch.testing.assert_close(a.gates, b.gates / b.gates.sum(-1, keepdim=True))
    # both agree with the sort-free dense gate matrix
    for r, normalize in ((a, True), (b, False)):
        dense = dense_gates_ref(r.logits, 3, normalize)
        torch.testing.assert_close(dense.gather(-1, r.experts), r.gates)
        assert ((dense > 0).sum(-1) == 3).all()


def test_router_rejects_top_k_out_of_range():
    with pytest.raises(AssertionError, match="top_k"):
        TopKRouter(4, 3, 4)


def routing(logits: torch.Tensor, k: int) -> Routing:
    r = TopKRouter(logits.shape[-1], logits.shape[-1], k).double()
    with torch.no_grad():
        r.gate.weight.copy_(torch.eye(logits.shape[-1], dtype=F64))
    return r(logits)


def balanced_logits(M: int, N: int) -> torch.Tensor:
    t = torch.arange(M)
    logits = torch.zeros(M, N, dtype=F64)
    logits[t, t % N] = 3.0
    logits[t, (t + 1) % N] = 2.0
    return logits


@pytest.mark.parametrize("N", [4, 8])
def test_losses_at_uniform_routing(N):
    r1 = routing(balanced_logits(8 * N, N), 1)
    r2 = routing(balanced_logits(8 * N, N), 2)
    assert switch_aux_loss(r1, 0.01).item() == pytest.approx(0.01, rel=1e-12)
    assert topk_aux_loss(r2, 0.01).item() == pytest.approx(0.02, rel=1e-12)  # α·K
    assert topk_aux_loss(r1, 0.01).item() == pytest.approx(0.01, rel=1e-12)  # K = 1: Switch
    assert deepseek_balance_loss(r2, 0.003).item() == pytest.approx(0.003, rel=1e-12)
    torch.testing.assert_close(expert_load(r2), torch.full((N,), 1 / N, dtype=F64))


def test_losses_at_collapse_and_when_lopsided():
    N, M = 8, 40
    logits = torch.zeros(M, N, dtype=F64)
    logits[:, 0], logits[:, 1] = 40.0, 1.0
    r = routing(logits, 2)
    assert switch_aux_loss(r, 1.0).item() == pytest.approx(N, rel=1e-9)
    assert topk_aux_loss(r, 1.0).item() == pytest.approx(N, rel=1e-9)  # row 2's P_1 ≈ 0
    assert deepseek_balance_loss(r, 1.0).item() == pytest.approx(N / 2, rel=1e-9)  # N/K
    assert expert_load(r)[:2].tolist() == [0.5, 0.5]
    # a lopsided, non-degenerate case against the formulas written out
    torch.manual_seed(3)
    with torch.no_grad():
        r = routing(torch.randn(37, 5, dtype=F64) * torch.arange(1, 6), 2)
    f1 = torch.tensor([(r.experts[:, 0] == i).double().mean() for i in range(5)])
    P = r.probs.mean(0)
    assert switch_aux_loss(r, 0.1).item() == pytest.approx(0.1 * 5 * float((f1 * P).sum()))
    counts = torch.tensor([(r.experts == i).sum().item() for i in range(5)], dtype=F64)
    assert expert_load(r).tolist() == pytest.approx((counts / 74).tolist())
    fk = torch.stack(
        [torch.stack([(r.experts[:, j] == i).double().mean() for i in range(5)]) for j in range(2)]
    )
    assert topk_aux_loss(r).item() == pytest.approx(5 * float((fk * P).sum()))
    assert deepseek_balance_loss(r).item() == pytest.approx(
        float((5 / (2 * 37) * counts * P).sum())
    )


def test_switch_loss_gradient_flows_through_p_only():
    torch.manual_seed(4)
    logits = (torch.randn(30, 6, dtype=F64) * 2).requires_grad_()
    r = routing(logits, 1)
    (g,) = torch.autograd.grad(switch_aux_loss(r, 0.5), logits)
    f = torch.bincount(r.experts[:, 0], minlength=6).double() / 30
    (g_ref,) = torch.autograd.grad(0.5 * 6 * (f * logits.softmax(-1).mean(0)).sum(), logits)
    torch.testing.assert_close(g, g_ref)
    # the gradient lowers the logit of the most loaded expert on average
    busiest = int(f.argmax())
    assert g[:, busiest].mean() > 0


@pytest.mark.parametrize("loss_fn", [topk_aux_loss, deepseek_balance_loss])
def test_topk_losses_pull_probability_off_the_busiest_expert(loss_fn):
    """The top-k forms, like Switch's, differentiate through P only: the gradient equals that of
    the same sum with the counts held constant, and it is not zero."""
    torch.manual_seed(5)
    logits = (torch.randn(30, 6, dtype=F64) * torch.arange(1, 7)).requires_grad_()
    r = routing(logits, 2)
    (g,) = torch.autograd.grad(loss_fn(r, 0.5), logits)
    counts = torch.bincount(r.experts.reshape(-1), minlength=6).double()
    P = logits.softmax(-1).mean(0)
    scale = 6 / 30 if loss_fn is topk_aux_loss else 6 / (2 * 30)  # N/M, or N/(K·M)
    (g_ref,) = torch.autograd.grad(0.5 * scale * (counts * P).sum(), logits)
    torch.testing.assert_close(g, g_ref)
    assert g.abs().max() > 1e-3
    assert g[:, int(counts.argmax())].mean() > 0


def test_router_defaults_to_mixtral_gates_and_takes_a_bias():
    """TopKRouter without `normalize` is Mixtral's Softmax(TopK(x·W_g)); a router bias, when
    asked for, reaches the gate (DeepSeek's centroids have none, so it is off by default)."""
    torch.manual_seed(6)
    x = torch.randn(9, 6, dtype=F64)
    r = TopKRouter(6, 5, 3).double()
    out = r(x)
    top = (x @ r.gate.weight.T).topk(3, -1).values
    torch.testing.assert_close(out.gates, top.exp() / top.exp().sum(-1, keepdim=True))
    assert r.gate.bias is None
    biased = MoEFeedForward(6, 8, 5, 3, router_bias=True)
    assert biased.router.gate.bias is not None and biased.router.gate.bias.shape == (5,)
    assert MoEFeedForward(6, 8, 5, 3).router.gate.bias is None


def test_dense_gates_default_to_renormalised_in_the_logits_dtype():
    import math

    logits = torch.tensor([[0.5, 2.0, -1.0, 1.0], [3.0, -2.0, 0.0, 1.5]])
    G = dense_gates_ref(logits, 2)
    assert G.dtype == torch.float32
    a, b = math.exp(2.0), math.exp(1.0)
    c, d = math.exp(3.0), math.exp(1.5)
    want = [[0.0, a / (a + b), 0.0, b / (a + b)], [c / (c + d), 0.0, 0.0, d / (c + d)]]
    assert G.tolist() == [pytest.approx(row, rel=1e-6) for row in want]


def test_loss_statistics_are_exact_in_fp64_and_keep_an_unchosen_expert():
    """f and the counts are taken in the probabilities' dtype (fp64: sevenths to 1e-14, where
    fp32 would be off by ~1e-8), α defaults to 1, and expert 4, which no token chose, keeps
    its zero entry."""
    import math

    first, second = [0, 0, 0, 1, 1, 2, 3], [1, 2, 3, 0, 2, 3, 0]
    logits = torch.zeros(7, 5, dtype=F64)
    for t, (a, b) in enumerate(zip(first, second, strict=True)):
        logits[t, a], logits[t, b] = 2.0 + 0.1 * t, 1.0
    r = routing(logits, 2)
    assert r.experts.tolist() == [list(p) for p in zip(first, second, strict=True)]
    rows = [[math.exp(v) for v in row] for row in logits.tolist()]
    P = [sum(row[i] / sum(row) for row in rows) / 7 for i in range(5)]
    f1 = [first.count(i) / 7 for i in range(5)]
    switch = 5 * sum(f * p for f, p in zip(f1, P, strict=True))
    assert switch_aux_loss(r).item() == pytest.approx(switch, rel=1e-14, abs=0)
    counts = [(first + second).count(i) for i in range(5)]
    deepseek = sum(5 / (2 * 7) * c * p for c, p in zip(counts, P, strict=True))
    assert deepseek_balance_loss(r).item() == pytest.approx(deepseek, rel=1e-14, abs=0)
    assert expert_load(r).tolist() == [c / 14 for c in counts]
    assert counts[4] == 0
