"""repro.models.mixtral: counts (built = analytic), routing state, cached decoding."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from repro.lab.counting import build_on_meta, count_parameters
from repro.models.mixtral import (
    MIXTRAL_8X7B,
    Mixtral,
    MixtralConfig,
    built_param_count,
    kv_cache_bytes_per_token,
    mixtral_param_count,
)
from repro.nn.kv_cache import caches_for, generate
from repro.nn.norm import RMSNorm

CONVENTIONS = [(a, e) for a in (False, True) for e in (True, False)]


@pytest.mark.parametrize(("active", "embeddings"), CONVENTIONS)
@pytest.mark.parametrize(
    "cfg",
    [MixtralConfig(), MixtralConfig(n_experts=5, top_k=3, n_kv_heads=1, d_ff=24)],
    ids=["tiny", "lopsided"],
)
def test_analytic_count_equals_built_tiny(cfg, active, embeddings):
    model = Mixtral(cfg)
    assert built_param_count(model, active, embeddings) == mixtral_param_count(
        cfg, active, embeddings
    )


def test_published_counts_built_on_meta():
    model = build_on_meta(lambda: Mixtral(MIXTRAL_8X7B))
    assert count_parameters(model) == mixtral_param_count(MIXTRAL_8X7B)
    for active, embeddings in CONVENTIONS:
        assert built_param_count(model, active, embeddings) == mixtral_param_count(
            MIXTRAL_8X7B, active, embeddings
        )
    # the "8 × 7B" reading: one Mistral-7B-sized dense model has 1 expert; Mixtral is not 8 of it
    dense = mixtral_param_count(dataclasses.replace(MIXTRAL_8X7B, n_experts=1, top_k=1))
    assert mixtral_param_count(MIXTRAL_8X7B) < 8 * dense - 2e9


def test_active_count_depends_on_k_not_on_n():
    base = MixtralConfig()
    more = dataclasses.replace(base, n_experts=16)
    k3 = dataclasses.replace(base, top_k=3)
    router_growth = base.n_layers * base.d_model * 8  # W_g grows with N
    assert mixtral_param_count(more, active=True) - mixtral_param_count(base, active=True) == (
        router_growth
    )
    assert mixtral_param_count(k3, active=True) != mixtral_param_count(base, active=True)
    assert mixtral_param_count(k3) == mixtral_param_count(base)


def test_kv_cache_bytes_formula_equals_allocated_buffers():
    for cfg in (MIXTRAL_8X7B, MixtralConfig()):
        caches = caches_for(cfg, 1, 1, torch.float16, "meta")
        assert sum(c.nbytes for c in caches) == kv_cache_bytes_per_token(cfg)


def test_config_errors():
    with pytest.raises(ValueError, match="unknown Mixtral preset"):
        MixtralConfig.from_name("mixtral-8x22b")
    with pytest.raises(ValueError, match="top_k"):
        MixtralConfig(n_experts=2, top_k=3)
    assert MIXTRAL_8X7B.head_dim == 128 and MIXTRAL_8X7B.n_kv_heads == 8


@torch.no_grad()
def test_forward_routes_every_layer_and_cached_decoding_matches():
    torch.manual_seed(0)
    model = Mixtral(MixtralConfig(vocab_size=40, max_seq_len=32, backend="ref")).eval()
    with pytest.raises(AssertionError, match="before any forward"):
        model.routings()
    idx = torch.randint(0, 40, (2, 13))
    full = model(idx)
    routings = model.routings()
    assert len(routings) == 2 and routings[0].experts.shape == (26, 2)
    caches = caches_for(model.cfg, 2, 32)
    for a, b in [(0, 7), (7, 8), (8, 13)]:
        torch.testing.assert_close(model(idx[:, a:b], a, caches), full[:, a:b])
    cached = generate(model, idx[:, :5], 10, use_cache=True)
    plain = generate(model, idx[:, :5], 10, use_cache=False)
    assert torch.equal(cached, plain)


@pytest.mark.parametrize(
    "cfg", [MixtralConfig(), MixtralConfig(rope_base=500.0, norm_eps=0.25)], ids=["tiny", "odd"]
)
def test_rope_base_and_norm_eps_reach_the_built_modules(cfg):
    """Mixtral's constants differ from LLaMA's (RoPE base 1e6, eps 1e-5): the shared RoPE table
    is cos/sin(m·base^(−2i/D)) written out with math.pow, and every RMSNorm has the config's
    eps (the two attention/FFN norms of each block and the final one)."""
    model = Mixtral(dataclasses.replace(cfg, max_seq_len=24))
    D = cfg.head_dim
    angles = torch.tensor(
        [[m * math.pow(cfg.rope_base, -2 * i / D) for i in range(D // 2)] for m in range(24)],
        dtype=torch.float64,
    )
    torch.testing.assert_close(model.rope.cos.double(), angles.cos(), atol=1e-9, rtol=0)
    torch.testing.assert_close(model.rope.sin.double(), angles.sin(), atol=1e-9, rtol=0)
    norms = [m for m in model.modules() if isinstance(m, RMSNorm)]
    assert len(norms) == 2 * cfg.n_layers + 1
    assert all(n.eps == cfg.norm_eps for n in norms)
    assert MIXTRAL_8X7B.rope_base == 1e6 and MIXTRAL_8X7B.norm_eps == 1e-5
