"""Pieces of papers/mixtral/repro.py beyond its claims: the constructed routings, the biased
start of the load-balancing experiment and the dispatch case."""

from __future__ import annotations

import pytest
import torch

from repro.lab.library import Library
from repro.nn.moe import MoEFeedForward, expert_load

MIXTRAL = Library().get("mixtral").module()


def test_uniform_routing_is_uniform_in_loads_and_probabilities():
    for k in (1, 2):
        r = MIXTRAL.routing_of(MIXTRAL.uniform_logits(), k)
        n = MIXTRAL.N_EXPERTS
        torch.testing.assert_close(expert_load(r), torch.full((n,), 1 / n, dtype=torch.float64))
        torch.testing.assert_close(r.probs.mean(0), torch.full((n,), 1 / n, dtype=torch.float64))


def test_collapsed_routing_is_collapsed():
    r = MIXTRAL.routing_of(MIXTRAL.collapsed_logits(), 2)
    assert (r.experts[:, 0] == 0).all() and (r.experts[:, 1] == 1).all()
    assert r.probs[:, 0].min() > 1 - 1e-15
    assert expert_load(r)[2:].sum() == 0


def test_routing_of_uses_the_logits_it_is_given():
    logits = MIXTRAL.uniform_logits()
    r = MIXTRAL.routing_of(logits, 2)
    torch.testing.assert_close(r.logits, logits)
    torch.testing.assert_close(r.gates, logits.topk(2).values.softmax(-1))


@torch.no_grad()
def test_biased_start_sends_every_token_to_expert_zero_first():
    cfg = MIXTRAL.PRESETS["quick"]
    torch.manual_seed(0)
    model = MIXTRAL._model(cfg, cfg.router_bias)
    model(torch.randint(0, cfg.vocab_size, (4, cfg.seq_len)))
    for r in model.routings():
        assert (r.experts[:, 0] == 0).all()
    assert MIXTRAL.max_load(model) == pytest.approx(1 / cfg.top_k)
    torch.manual_seed(0)
    unbiased = MIXTRAL._model(cfg, 0.0)
    unbiased(torch.randint(0, cfg.vocab_size, (4, cfg.seq_len)))
    assert MIXTRAL.max_load(unbiased) < 0.45  # the bias, not the architecture, collapses it


def test_dispatch_case_has_unequal_loads():
    moe, x = MIXTRAL.dispatch_case(0)
    with torch.no_grad():
        moe(x)
    load = expert_load(moe.last_routing)
    assert load.max() > 2 * load.min()


def test_config_rejects_more_experts_per_token_than_experts():
    with pytest.raises(ValueError):
        MIXTRAL.Config(n_experts=2, top_k=3)


# --- the pieces the claims build on ---------------------------------------------------------


def test_uniform_logits_rank_expert_t_then_t_plus_1():
    """Token t's first choice is expert t mod N and its second t + 1 mod N, with the same two
    logits for every token (so the mean probability of every expert is 1/N)."""
    logits = MIXTRAL.uniform_logits()
    n, t = MIXTRAL.N_EXPERTS, torch.arange(MIXTRAL.TOKENS)
    assert logits.shape == (64, 8) and logits.dtype == torch.float64
    top = logits.topk(3, -1)
    assert torch.equal(top.indices[:, 0], t % n) and torch.equal(top.indices[:, 1], (t + 1) % n)
    assert (top.values[:, 0] > top.values[:, 1]).all() and (
        top.values[:, 1] > top.values[:, 2]
    ).all()
    assert torch.unique(logits.sort(-1).values, dim=0).shape[0] == 1  # one row up to order


def test_collapsed_logits_send_everything_to_expert_0_then_1():
    logits = MIXTRAL.collapsed_logits()
    assert logits.shape == (64, 8) and logits.dtype == torch.float64
    top = logits.topk(3, -1)
    assert (top.indices[:, 0] == 0).all() and (top.indices[:, 1] == 1).all()
    assert (top.values[:, 1] > top.values[:, 2]).all()
    p = logits.softmax(-1)
    assert p[:, 0].min() > 1 - 1e-15


def test_routing_of_takes_top_k_and_fp64():
    r = MIXTRAL.routing_of(MIXTRAL.collapsed_logits(), 3)
    assert r.experts.shape == (64, 3) and r.gates.dtype == torch.float64
    torch.testing.assert_close(r.probs, MIXTRAL.collapsed_logits().softmax(-1))


def test_dispatch_case_is_the_documented_layer():
    """N = 8, K = 2, renormalised gates, fp64, router rows scaled by 0.5..3; x (3, 29, 24)."""
    moe, x = MIXTRAL.dispatch_case(2)
    assert (len(moe.experts), moe.router.top_k, len(moe.shared)) == (8, 2, 0)
    assert moe.router.normalize and moe.experts[0].w1.weight.shape == (40, 24)
    assert x.shape == (3, 29, 24) and x.dtype == torch.float64
    torch.manual_seed(2)
    plain = MoEFeedForward(24, 40, 8, 2).double()
    ratio = moe.router.gate.weight / plain.router.gate.weight
    want = torch.linspace(0.5, 3.0, 8, dtype=torch.float64)[:, None].expand(8, 24)
    torch.testing.assert_close(ratio, want, rtol=1e-12, atol=0)
    assert torch.equal(x, MIXTRAL.dispatch_case(2)[1])
    assert not torch.equal(x, MIXTRAL.dispatch_case(3)[1])


def test_model_follows_the_config_and_biases_only_expert_0():
    cfg = MIXTRAL.Config(n_layers=3, d_model=16, n_heads=4, n_kv_heads=1, d_ff=24, n_experts=5,
                         top_k=3, vocab_size=11, seq_len=9)  # fmt: skip
    model = MIXTRAL._model(cfg, 1.5)
    c = model.cfg
    got = (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.n_experts, c.top_k)
    assert got == (3, 16, 4, 1, 24, 5, 3)
    assert (c.vocab_size, c.max_seq_len, c.router_bias, c.backend) == (11, 9, True, "ref")
    assert len(model.layers) == 3
    for layer in model.layers:
        torch.testing.assert_close(layer.moe.router.gate.bias, torch.tensor([1.5, 0, 0, 0, 0]))


@torch.no_grad()
def test_max_load_is_the_largest_over_layers_and_experts():
    cfg = MIXTRAL.Config(n_layers=2)
    torch.manual_seed(1)
    model = MIXTRAL._model(cfg, 0.0)
    model.layers[1].moe.router.gate.bias[3] = 50.0  # layer 1 sends every token to expert 3
    model(torch.randint(0, cfg.vocab_size, (2, cfg.seq_len)))
    loads = [expert_load(r) for r in model.routings()]
    assert loads[0].max() < 0.45
    assert MIXTRAL.max_load(model) == pytest.approx(max(v.max().item() for v in loads))
    assert MIXTRAL.max_load(model) == pytest.approx(1 / cfg.top_k)


def test_config_checks_the_rope_head_split_and_allows_top_k_equal_to_n_experts():
    with pytest.raises(ValueError):
        MIXTRAL.Config(d_model=30, n_heads=2)  # head dim 15: RoPE rotates pairs
    MIXTRAL.Config(n_experts=2, top_k=2)  # every expert on every token is allowed


def test_model_takes_the_head_counts_of_the_config():
    cfg = MIXTRAL.Config(n_heads=2, n_kv_heads=1)
    c = MIXTRAL._model(cfg, 0.0).cfg
    assert (c.n_heads, c.n_kv_heads) == (2, 1)
