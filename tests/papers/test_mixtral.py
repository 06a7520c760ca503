"""Pieces of papers/mixtral/repro.py beyond its claims: the constructed routings, the biased
start of the load-balancing experiment and the dispatch case."""

from __future__ import annotations

import pytest
import torch

from repro.lab.library import Library
from repro.nn.moe import expert_load

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
