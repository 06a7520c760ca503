"""Pieces of papers/swiglu/repro.py beyond its claims: equal-size variants sharing weights."""

from __future__ import annotations

import pytest
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


# --- the counting claims, by hand ----------------------------------------------------------


def test_t5_base_counts_by_hand() -> None:
    from repro.lab.claims import Context

    got = SWIGLU.t5_base_ffn_params(Context())
    assert got.value == 3 * 768 * 2048  # three C × 2F/3 matrices, no biases
    two = 2 * 768 * 3072
    assert got.details == {
        "d_ff_glu": 2048,
        "params": {"relu": two, "gelu": two, "geglu": 3 * 768 * 2048, "swiglu": 3 * 768 * 2048},
    }


def test_two_thirds_rule_grid_and_rounding_by_hand() -> None:
    from repro.lab.claims import Context

    got = SWIGLU.two_thirds_rule_exact_when_divisible(Context())
    assert got.value is True
    grid = [(c, f) for c in (48, 256, 768, 1024, 4096) for f in (3 * c, 4 * c, 3072, 6144, 12288)]
    assert got.details["divisible_sizes_checked"] == sum((2 * f) % 3 == 0 for c, f in grid)
    odd = [(c, f) for c, f in grid if (2 * f) % 3][:3]
    assert len(odd) == 3
    assert got.details["non_divisible_examples"] == [
        {
            "d_model": c,
            "d_ff": f,
            "d_ff_glu": 2 * f // 3,
            "glu_over_relu": 3 * (2 * f // 3) / (2 * f),
        }
        for c, f in odd
    ]
    # LLaMA-7B: 2·4·4096/3 = 10922.67, rounded up to a multiple of 256 = 11008
    assert got.details["llama_7b_d_ff"] == 11008
    assert got.details["llama_7b_glu_over_relu"] == 3 * 11008 / (2 * 4 * 4096)


def test_two_thirds_claim_sees_a_glu_width_that_is_off(monkeypatch) -> None:
    from repro.lab.claims import Context

    monkeypatch.setattr(SWIGLU, "glu_hidden_dim", lambda d_ff: 2 * d_ff // 3 + 1)
    assert SWIGLU.two_thirds_rule_exact_when_divisible(Context()).value is False


def test_tiny_lm_draws_its_ffn_from_a_generator_seeded_like_the_model() -> None:
    from repro.nn import ffn as ffn_module

    cfg = SWIGLU.Config(d_model=12, d_ff=18, n_heads=2, n_layers=2, seq_len=5, vocab_size=7)
    model = SWIGLU.tiny_lm(cfg, "geglu", seed=9, device="cpu")
    c = model.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.vocab_size, c.d_ff) == (2, 12, 2, 7, 12)
    assert (c.max_seq_len, c.backend) == (5, "sdpa")
    g = torch.Generator().manual_seed(9)
    for layer in model.layers:
        assert layer.feed_forward.gate is ffn_module._GATES["geglu"]
        for p in layer.feed_forward.parameters():
            assert torch.equal(p, torch.empty_like(p).normal_(0.0, 0.02, generator=g))
    meta = SWIGLU.tiny_lm(cfg, "relu", seed=9, device="meta")
    assert all(p.device.type == "meta" for p in meta.parameters())


def _fake_curve(variant: str, seed: int, steps: int) -> list[float]:
    base = {"relu": 3.0, "gelu": 2.5, "geglu": 2.0, "swiglu": 1.0}[variant] + 0.1 * seed
    return [base + i / 7 for i in range(steps)]


def test_experiment_recipe_with_training_recorded(monkeypatch, line_plots, tmp_path) -> None:
    from repro.data.markov import MarkovConfig, MarkovSource
    from repro.lab.claims import Context

    runs = []

    def report(*args) -> None:
        pass

    def train_lm(model, data, steps, lr, progress, description):
        assert progress is report
        variant, seed = description.split(" ")[1], int(description.rsplit(" ", 1)[1])
        runs.append((variant, seed, data.clone(), steps, lr, description))
        model.held_out_loss = 5.0 + seed + {"relu": 0.5, "gelu": 0.4, "geglu": 0.3}.get(variant, 0)
        return _fake_curve(variant, seed, steps)

    held = []

    def evaluate_lm(model, tokens):
        held.append(tokens.clone())
        return model.held_out_loss

    monkeypatch.setattr(SWIGLU, "train_lm", train_lm)
    monkeypatch.setattr(SWIGLU, "evaluate_lm", evaluate_lm)
    drawn = line_plots(SWIGLU)
    cfg = SWIGLU.Config(d_model=12, d_ff=18, n_heads=2, seq_len=4, batch=2, steps=120, order=3,
                        seeds=2, eval_batch=3)  # fmt: skip
    got = SWIGLU.experiment(cfg, Context(config=cfg, seed=3, out_dir=tmp_path, progress=report))
    source = MarkovSource(MarkovConfig(vocab_size=16, order=3))
    order = [(v, s) for s in (3, 4) for v in ("relu", "gelu", "geglu", "swiglu")]
    assert [(v, s) for v, s, *_ in runs] == order
    for i, (variant, seed, data, steps, lr, description) in enumerate(runs):
        g = torch.Generator().manual_seed(10_000 + seed)
        assert torch.equal(data, source.sample(120 * 2, 5, g))  # the same batches for all
        assert torch.equal(held[i], source.sample(3, 5, g))
        assert (steps, lr, description) == (120, cfg.lr, f"swiglu: {variant} FFN, seed {seed}")
    losses = {
        v: [5.0 + s + {"relu": 0.5, "gelu": 0.4, "geglu": 0.3}.get(v, 0) for s in (3, 4)]
        for v in ("relu", "gelu", "geglu", "swiglu")
    }
    assert got["loss"] == losses
    assert got["mean_loss"] == {v: pytest.approx(sum(ls) / 2) for v, ls in losses.items()}
    # the first 100 steps of each curve, then the mean over seeds
    early = {
        v: sum(sum(_fake_curve(v, s, 120)[:100]) / 100 for s in (3, 4)) / 2
        for v in ("relu", "gelu", "geglu", "swiglu")
    }
    assert got["early_loss"] == pytest.approx(early)
    size = SWIGLU.n_params(SWIGLU.tiny_lm(cfg, "relu", 0, "cpu"))
    assert got["params"] == {v: size for v in ("relu", "gelu", "geglu", "swiglu")}
    assert got["entropy_floor"] == source.entropy_rate()
    assert got["unigram_entropy"] == source.unigram_entropy()
    [(path, series, rest)] = drawn
    assert path == tmp_path / "training_loss.svg"
    xs = list(range(1, 121))
    for v in ("relu", "gelu", "geglu", "swiglu"):
        mean_curve = [
            (a + b) / 2 for a, b in zip(_fake_curve(v, 3, 120), _fake_curve(v, 4, 120), strict=True)
        ]
        assert series[v] == (xs, pytest.approx(mean_curve))
    assert series["entropy floor"] == (xs, [source.entropy_rate()] * 120)
    assert rest == {
        "xlabel": "step",
        "ylabel": "training loss (nats/token)",
        "title": "FFN variants at equal parameters (mean of 2 seeds)",
    }


def test_claims_read_the_worst_glu_variant_and_the_early_losses() -> None:
    from repro.lab.claims import Context

    metrics = {
        "loss": {"relu": [2.0], "gelu": [1.9], "geglu": [1.8], "swiglu": [2.1]},
        "mean_loss": {"relu": 2.0, "gelu": 1.9, "geglu": 1.8, "swiglu": 2.1},
        "early_loss": {"relu": 3.0, "gelu": 2.9, "geglu": 2.7, "swiglu": 2.5},
        "params": {"relu": 10},
        "entropy_floor": 0.7,
        "unigram_entropy": 2.6,
    }
    cfg = SWIGLU.Config(seeds=3)
    ctx = Context(config=cfg, run_experiment=lambda c, x: metrics)
    gap = SWIGLU.glu_variants_not_worse_than_relu(ctx)
    assert gap.value == pytest.approx(0.1)  # the worse of GeGLU and SwiGLU (2.1) minus 2.0
    assert gap.details == {
        "mean_loss": metrics["mean_loss"],
        "loss_per_seed": metrics["loss"],
        "params": {"relu": 10},
        "entropy_floor": 0.7,
        "unigram_entropy": 2.6,
        "seeds": 3,
    }
    metrics["mean_loss"] = {"relu": 2.0, "gelu": 1.9, "geglu": 2.3, "swiglu": 1.5}
    assert SWIGLU.glu_variants_not_worse_than_relu(ctx).value == pytest.approx(0.3)
    fast = SWIGLU.swiglu_learns_faster_than_relu(ctx)
    assert fast.value == pytest.approx(-0.5)
    assert fast.details == {"early_loss": metrics["early_loss"], "steps": 100, "seeds": 3}
