"""repro.models.deepseek_v2: counts (built = analytic), cached decoding with latent caches."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from repro.lab.counting import build_on_meta, count_parameters
from repro.models.deepseek_v2 import (
    DEEPSEEK_V2,
    DeepSeekV2,
    DeepSeekV2Config,
    deepseek_v2_param_count,
    latent_caches_for,
)
from repro.nn.moe import MoEFeedForward


def built_active(model: DeepSeekV2, embeddings: bool = True) -> int:
    total = count_parameters(model)
    for layer in model.layers:
        if isinstance(layer.ffn, MoEFeedForward):
            sizes = sorted(count_parameters(e) for e in layer.ffn.experts)
            total -= sum(sizes[: len(sizes) - layer.ffn.top_k])
    return total - (0 if embeddings else model.tok_embeddings.weight.numel())


@pytest.mark.parametrize(
    "cfg",
    [
        DeepSeekV2Config(),
        DeepSeekV2Config(q_rank=None, n_layers=3, n_dense_layers=2, n_routed=5, top_k=3),
    ],
    ids=["tiny", "no-q-compression"],
)
def test_analytic_count_equals_built(cfg):
    model = DeepSeekV2(cfg)
    assert count_parameters(model) == deepseek_v2_param_count(cfg)
    assert built_active(model) == deepseek_v2_param_count(cfg, active=True)
    assert built_active(model, False) == deepseek_v2_param_count(cfg, True, embeddings=False)


def test_lite_preset_built_on_meta():
    cfg = DeepSeekV2Config.from_name("deepseek-v2-lite")
    model = build_on_meta(lambda: DeepSeekV2(cfg))
    assert count_parameters(model) == deepseek_v2_param_count(cfg)
    assert built_active(model) == deepseek_v2_param_count(cfg, active=True)
    assert round(count_parameters(model) / 1e9, 1) == 15.7  # Appendix B.1


def test_published_config_two_layers_on_meta():
    """The full model takes ~20 s to build on meta; two layers check every term of the formula
    (the dense first layer and one MoE layer), the rest is the same MoE layer repeated."""
    two = dataclasses.replace(DEEPSEEK_V2, n_layers=2)
    model = build_on_meta(lambda: DeepSeekV2(two))
    assert count_parameters(model) == deepseek_v2_param_count(two)
    moe_layer = deepseek_v2_param_count(
        dataclasses.replace(DEEPSEEK_V2, n_layers=3)
    ) - deepseek_v2_param_count(two)
    assert moe_layer == count_parameters(model.layers[1])
    assert DEEPSEEK_V2.n_layers == 60 and DEEPSEEK_V2.kv_rank + DEEPSEEK_V2.rope_dim == 576


def test_config_errors():
    with pytest.raises(ValueError, match="unknown DeepSeek-V2 preset"):
        DeepSeekV2Config.from_name("deepseek-v3")
    with pytest.raises(ValueError, match="top_k"):
        DeepSeekV2Config(n_routed=4, top_k=5)


@torch.no_grad()
def test_cached_decoding_equals_full_forward():
    torch.manual_seed(0)
    cfg = DeepSeekV2Config(vocab_size=30, max_seq_len=32)
    model = DeepSeekV2(cfg).double().eval()
    idx = torch.randint(0, 30, (2, 15))
    full = model(idx)
    caches = latent_caches_for(cfg, 2, 32, torch.float64)
    for a, b in [(0, 6), (6, 7), (7, 11), *[(t, t + 1) for t in range(11, 15)]]:
        torch.testing.assert_close(model(idx[:, a:b], a, caches), full[:, a:b], atol=1e-12, rtol=0)
    # a cache written at the wrong offset is caught
    caches = latent_caches_for(cfg, 2, 32, torch.float64)
    model(idx[:, :6], 0, caches)
    assert (model(idx[:, 6:7], 7, caches) - full[:, 6:7]).abs().max() > 1e-6
