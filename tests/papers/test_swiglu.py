"""Pieces of papers/swiglu/repro.py beyond its claims: equal-size variants sharing weights."""

from __future__ import annotations

import torch

from repro.lab.library import Library

SWIGLU = Library().get("swiglu").module()


def test_variants_have_equal_size_and_share_non_ffn_weights() -> None:
    cfg = SWIGLU.PRESETS["quick"]
    models = {v: SWIGLU.tiny_lm(cfg, v, seed=5, device="cpu") for v in SWIGLU.VARIANTS}
    sizes = {v: SWIGLU.n_params(m) for v, m in models.items()}
    assert len(set(sizes.values())) == 1, sizes
    shared = {k: t for k, t in models["relu"].state_dict().items() if "feed_forward" not in k}
    for variant, model in models.items():
        for k, t in model.state_dict().items():
            if "feed_forward" not in k:
                assert torch.equal(t, shared[k]), (variant, k)


def test_ffn_shapes_follow_the_two_thirds_rule() -> None:
    relu, swiglu = SWIGLU.ffn("relu", 768, 3072), SWIGLU.ffn("swiglu", 768, 3072)
    assert relu.w1.weight.shape == (3072, 768)
    assert swiglu.w1.weight.shape == swiglu.w3.weight.shape == (2048, 768)
    assert swiglu.w2.weight.shape == (768, 2048)
