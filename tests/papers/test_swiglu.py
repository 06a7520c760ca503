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


def test_untrained_glu_model_fails_the_not_worse_claim() -> None:
    """glu-variants-not-worse-than-relu wants (GLU loss − ReLU loss) ≤ 0.05 nats: a SwiGLU model
    left untrained, against ReLU trained on the quick preset's batches, must miss by far."""
    from repro.data.markov import MarkovConfig, MarkovSource
    from repro.train import evaluate_lm, train_lm

    cfg = SWIGLU.PRESETS["quick"]
    source = MarkovSource(MarkovConfig(vocab_size=cfg.vocab_size, order=cfg.order))
    g = torch.Generator().manual_seed(10_000)
    data = source.sample(cfg.steps * cfg.batch, cfg.seq_len + 1, g)
    held_out = source.sample(cfg.eval_batch, cfg.seq_len + 1, g)
    relu = SWIGLU.tiny_lm(cfg, "relu", seed=0, device="cpu")
    train_lm(relu, data, cfg.steps, cfg.lr)
    untrained = SWIGLU.tiny_lm(cfg, "swiglu", seed=0, device="cpu")
    assert evaluate_lm(untrained, held_out) - evaluate_lm(relu, held_out) > 0.05
