"""Pieces of papers/llama/repro.py that its claims rely on."""

import pytest
import torch

from repro.lab.counting import param_count
from repro.lab.library import Library


@pytest.fixture(scope="module")
def llama():
    return Library().get("llama").module()


@pytest.mark.parametrize("preset", ["quick", "full"])
def test_toy_stacks_have_matched_parameter_counts(llama, preset):
    cfg = llama.PRESETS[preset]
    gpt, matched = param_count(llama._gpt_config(cfg)), param_count(llama.matched_llama_config(cfg))
    assert abs(matched - gpt) / gpt < 0.005, (matched, gpt)


def test_table_2_counts_are_truncated_not_rounded(llama):
    printed = {"llama-7b": 6.7, "llama-13b": 13.0, "llama-33b": 32.5, "llama-65b": 65.2}
    for preset, shown in printed.items():
        n = llama.n_params(preset) / 1e9
        assert int(n * 10) / 10 == shown, (preset, n)
    assert round(llama.n_params("llama-65b") / 1e9, 1) == 65.3  # rounding would not match


def test_gpu_hours_table_matches_tokens_over_throughput(llama):
    implied = llama.TOKENS["llama-65b"] / llama.THROUGHPUT_65B / 3600
    assert abs(implied / llama.GPU_HOURS["llama-65b"] - 1) < 0.002


def test_llama_stack_that_cannot_learn_fails_the_block_claims(llama, monkeypatch):
    """block-final-loss (≤ +0.05), block-learning-speed (≤ −0.05) and block-early-learning
    (≤ −0.42) compare the LLaMA stack with the GPT stack; with the LLaMA stack's learning rate
    switched off (the GPT stack trained as usual, same data) every one of them must fail."""
    from repro.lab.claims import Context

    real = llama.train_lm

    def frozen_llama(model, data, steps, lr, progress=None, description="training"):
        return real(model, data, steps, 0.0 if "llama: llama" in description else lr)

    monkeypatch.setattr(llama, "train_lm", frozen_llama)
    cfg = llama.PRESETS["quick"]
    m = llama.experiment(cfg, Context(config=cfg, seed=0))
    ctx = Context(config=cfg, _metrics=m)
    assert llama.block_final_loss(ctx).value > 0.05
    assert llama.block_learning_speed(ctx).value > -0.05
    assert llama.block_early_learning(ctx).value > -0.42


# --- the counting claims, by hand ----------------------------------------------------------

TABLE_2 = {  # preset: (layers, dimension), Table 2; vocabulary 32,000, FFN width a multiple of 256
    "llama-7b": (32, 4096),
    "llama-13b": (40, 5120),
    "llama-33b": (60, 6656),
    "llama-65b": (80, 8192),
}
FFN = {"llama-7b": 11008, "llama-13b": 13824, "llama-33b": 17920, "llama-65b": 22016}


def _by_hand(preset: str) -> int:
    """q, k, v, o, three SwiGLU matrices and two RMSNorm gains per layer; untied embeddings."""
    L, d = TABLE_2[preset]
    return L * (4 * d * d + 3 * d * FFN[preset] + 2 * d) + 2 * 32000 * d + d


def test_closed_form_rounds_the_swiglu_width_up_to_the_multiple(llama):
    assert llama.closed_form_params(32, 4096) == 6_738_415_616  # the released 7B checkpoint
    for preset in TABLE_2:
        assert llama.closed_form_params(*TABLE_2[preset]) == _by_hand(preset)
    # d = 300: 2·4·300/3 = 800, rounded up to a multiple of 64 is 832
    assert llama.closed_form_params(2, 300, vocab=50, multiple_of=64) == (
        2 * (4 * 300**2 + 3 * 300 * 832 + 600) + 2 * 50 * 300 + 300
    )
    # d = 96: 2·4·96/3 = 256 exactly, kept as it is; d = 97: 258.67 -> 258 -> 320
    assert llama.closed_form_params(1, 96, vocab=3, multiple_of=64) == (
        4 * 96**2 + 3 * 96 * 256 + 192 + 2 * 3 * 96 + 96
    )
    assert llama.closed_form_params(1, 97, vocab=3, multiple_of=64) == (
        4 * 97**2 + 3 * 97 * 320 + 194 + 2 * 3 * 97 + 97
    )


def test_params_claims_by_hand(llama):
    from repro.lab.claims import Context

    exact = llama.params_exact(Context())
    assert exact.value == 0
    assert exact.details == {"built_minus_closed_form": dict.fromkeys(TABLE_2, 0)}
    claims = {
        "llama-7b": llama.params_7b,
        "llama-13b": llama.params_13b,
        "llama-33b": llama.params_33b,
        "llama-65b": llama.params_65b,
    }
    for preset, fn in claims.items():
        got, n = fn(Context()), _by_hand(preset)
        assert got.value == n / 1e9
        assert got.details == {"n_params": n, "rounded": round(n / 1e9, 1)}
    assert llama.params_65b(Context()).details["rounded"] == 65.3
    assert llama.params_33b(Context()).details["rounded"] == 32.5


def test_params_exact_reports_the_largest_gap_in_either_direction(llama, monkeypatch):
    from repro.lab.claims import Context

    real = llama.closed_form_params
    off = {32: 3, 40: -7, 60: 0, 80: 5}  # by layer count
    monkeypatch.setattr(llama, "closed_form_params", lambda L, d: real(L, d) + off[L])
    got = llama.params_exact(Context())
    assert got.value == 7
    assert got.details == {
        "built_minus_closed_form": {
            "llama-7b": -3,
            "llama-13b": 7,
            "llama-33b": 0,
            "llama-65b": -5,
        }
    }


def test_mfu_claims_by_hand(llama):
    from repro.lab.claims import Context

    table_15 = {"llama-7b": 82_432, "llama-13b": 135_168, "llama-33b": 530_432,
                "llama-65b": 1_022_362}  # fmt: skip
    tokens = {"llama-7b": 1.0e12, "llama-13b": 1.0e12, "llama-33b": 1.4e12, "llama-65b": 1.4e12}
    claims = {
        "llama-7b": llama.mfu_7b,
        "llama-13b": llama.mfu_13b,
        "llama-33b": llama.mfu_33b,
        "llama-65b": llama.mfu_65b,
    }
    for preset, fn in claims.items():
        got = fn(Context())
        L, d = TABLE_2[preset]
        flops = 6 * _by_hand(preset) * tokens[preset]
        available = table_15[preset] * 3600 * 312e12
        attention = 3 * (2 * L * 2048 * d) * tokens[preset]  # fwd + bwd of 2·L·T·d per token
        assert got.value == pytest.approx(flops / available, rel=1e-12)
        assert got.details == {
            "model_flops": pytest.approx(flops, rel=1e-12),
            "gpu_hours": table_15[preset],
            "mfu_with_attention": pytest.approx((flops + attention) / available, rel=1e-12),
            "tokens_per_s_per_gpu": pytest.approx(tokens[preset] / (table_15[preset] * 3600)),
        }
    assert 0.40 < llama.mfu_7b(Context()).value < 0.45  # 0.44 in the note


def test_wall_clock_tokens_and_kv_cache_claims_by_hand(llama):
    from repro.lab.claims import Context

    days = llama.days_65b(Context())
    assert days.value == pytest.approx(1.4e12 / (380 * 2048) / 86400)  # 20.8 days
    assert days.details == {
        "mfu_at_380_tokens_per_s": pytest.approx(6 * _by_hand("llama-65b") * 380 / 312e12)
    }
    assert llama.gpu_hours_65b(Context()).value == pytest.approx(1.4e12 / 380 / 3600)
    tpp = llama.tokens_per_param_7b(Context())
    assert tpp.value == pytest.approx(1e12 / 6_738_415_616)
    assert tpp.details == {
        "times_chinchilla": pytest.approx(1e12 / 6_738_415_616 / 20),
        "tokens_per_param_65b": pytest.approx(1.4e12 / _by_hand("llama-65b")),
    }
    kv = llama.kv_cache_7b(Context())
    per_token = 2 * 32 * 32 * 128 * 2  # k and v, 32 layers, 32 heads, 128 dims, fp16
    assert kv.value == per_token == 524_288
    assert kv.details == {"formula": per_token, "kib": 512.0, "gib_at_2048_tokens": 1.0}


# --- the toy experiment ----------------------------------------------------------------------


def test_config_wants_an_even_head_width(llama):
    assert llama.Config(d_model=12, n_heads=3).d_model == 12  # D = 4
    with pytest.raises(ValueError, match="RoPE rotates pairs"):
        llama.Config(d_model=12, n_heads=4)  # D = 3
    with pytest.raises(ValueError, match="not a multiple"):
        llama.Config(d_model=12, n_heads=5)


def test_toy_configs_copy_the_settings(llama):
    cfg = llama.Config(vocab_size=7, seq_len=9, n_layers=3, d_model=12, n_heads=3)
    gpt = llama._gpt_config(cfg)
    assert (gpt.n_layers, gpt.d_model, gpt.n_heads, gpt.vocab_size) == (3, 12, 3, 7)
    assert (gpt.max_seq_len, gpt.backend) == (9, "ref")
    lc = llama._llama_config(cfg, 17)
    assert (lc.n_layers, lc.d_model, lc.n_heads, lc.vocab_size) == (3, 12, 3, 7)
    assert (lc.max_seq_len, lc.d_ff, lc.backend) == (9, 17, "ref")


def _gpt_by_hand(C: int, L: int, V: int, T: int) -> int:
    # per layer: two LayerNorms 4C, qkv 3C² + 3C, out C² + C, MLP 4C² + 4C and 4C² + C; tied head
    return L * (12 * C * C + 13 * C) + V * C + T * C + 2 * C


def _llama_by_hand(C: int, L: int, V: int, F: int) -> int:
    # per layer: q, k, v, o 4C², SwiGLU 3CF, two RMSNorm gains 2C; untied head, final gain C
    return L * (4 * C * C + 3 * C * F + 2 * C) + 2 * V * C + C


@pytest.mark.parametrize(
    "settings, width",
    [
        ({}, 92),  # the quick/full stacks: 27,040 against 27,008 (91 would give 26,848)
        ({"d_model": 4, "n_heads": 2, "vocab_size": 200, "seq_len": 2, "n_layers": 1}, 1),
        ({"d_model": 2, "n_heads": 1, "vocab_size": 2, "seq_len": 40, "n_layers": 1}, 7),
    ],
)
def test_matched_width_is_the_closest_in_one_to_four_c(llama, settings, width):
    """F is searched over 1 ≤ F < 4C: a huge vocabulary pins it at 1, a long position table at
    4C − 1 (the closest widths lie outside the range)."""
    cfg = llama.Config(**settings)
    C, L, V, T = cfg.d_model, cfg.n_layers, cfg.vocab_size, cfg.seq_len
    target = _gpt_by_hand(C, L, V, T)
    assert param_count(llama._gpt_config(cfg)) == target
    gaps = {f: abs(_llama_by_hand(C, L, V, f) - target) for f in range(1, 4 * C)}
    assert min(gaps, key=gaps.get) == width
    matched = llama.matched_llama_config(cfg)
    assert matched.d_ff == width
    assert param_count(matched) == _llama_by_hand(C, L, V, width)
    assert (matched.n_layers, matched.d_model, matched.vocab_size) == (L, C, V)


def _curve(name: str, steps: int) -> list[float]:
    base = {"gpt": 3.0, "llama": 2.0}[name]
    return [base + (i % 11) / 5 + i / 1000 for i in range(steps)]


def test_experiment_recipe_with_training_recorded(llama, monkeypatch, line_plots, tmp_path):
    from repro.data.markov import MarkovConfig, MarkovSource
    from repro.lab.claims import Context
    from repro.models.gpt import GPT
    from repro.models.llama import Llama

    runs, held = [], []

    def report(*args) -> None:
        pass

    def train_lm(model, data, steps, lr, progress, description):
        runs.append((model, data.clone(), steps, lr, progress, description))
        model.held_out = {"llama: gpt": 1.7, "llama: llama": 1.4}[description]
        return _curve(description.split(" ")[1], steps)

    def evaluate_lm(model, tokens):
        held.append(tokens.clone())
        return model.held_out

    monkeypatch.setattr(llama, "train_lm", train_lm)
    monkeypatch.setattr(llama, "evaluate_lm", evaluate_lm)
    drawn = line_plots(llama)
    cfg = llama.Config(vocab_size=5, order=3, seq_len=6, d_model=8, n_heads=2, steps=230,
                       batch=2, lr=0.03, eval_sequences=3)  # fmt: skip
    got = llama.experiment(cfg, Context(config=cfg, seed=4, out_dir=tmp_path, progress=report))

    source = MarkovSource(MarkovConfig(vocab_size=5, order=3))
    g = torch.Generator().manual_seed(4)
    data = source.sample(230 * 2, 7, generator=g).view(230, 2, 7)
    test = source.sample(3, 7, generator=g)
    assert [r[5] for r in runs] == ["llama: gpt", "llama: llama"]
    for _model, batches, steps, lr, progress, _ in runs:
        assert torch.equal(batches, data)
        assert (steps, lr, progress) == (230, 0.03, report)
    assert all(torch.equal(t, test) for t in held) and len(held) == 2
    torch.manual_seed(4)
    gpt = GPT(llama._gpt_config(cfg))
    torch.manual_seed(4)
    lm = Llama(llama.matched_llama_config(cfg))
    for fresh, (model, *_) in zip((gpt, lm), runs, strict=True):
        assert type(model) is type(fresh) and model.cfg == fresh.cfg
        trained = model.state_dict()
        assert list(trained) == list(fresh.state_dict())
        for k, a in fresh.state_dict().items():
            assert torch.equal(a, trained[k]), k
    n = {"gpt": param_count(llama._gpt_config(cfg)), "llama": param_count(lm.cfg)}
    curves = {name: _curve(name, 230) for name in ("gpt", "llama")}
    assert got == {
        "entropy_floor": source.entropy_rate(),
        "unigram_entropy": source.unigram_entropy(),
        "gpt_params": n["gpt"],
        "gpt_test_loss": 1.7,
        "gpt_mean_train_loss": pytest.approx(sum(curves["gpt"]) / 230),
        "gpt_early_train_loss": pytest.approx(sum(curves["gpt"][:200]) / 200),
        "llama_params": n["llama"],
        "llama_test_loss": 1.4,
        "llama_mean_train_loss": pytest.approx(sum(curves["llama"]) / 230),
        "llama_early_train_loss": pytest.approx(sum(curves["llama"][:200]) / 200),
    }
    [(path, series, rest)] = drawn
    assert path == tmp_path / "llama_vs_gpt_block.svg"
    xs = list(range(1, 231))
    assert series == {
        "LLaMA block (RMSNorm, SwiGLU, RoPE)": (xs, curves["llama"]),
        "GPT block (LayerNorm, GELU, learned pos.)": (xs, curves["gpt"]),
        "entropy floor": (xs, [source.entropy_rate()] * 230),
    }
    assert rest == {
        "xlabel": "training step",
        "ylabel": "loss (nats/token)",
        "title": "Markov source V=5, order 3",
    }
    runs.clear()
    llama.experiment(cfg, Context(config=cfg, seed=4))  # no out_dir: nothing drawn
    assert len(drawn) == 1 and len(runs) == 2


def test_block_claims_read_the_right_metrics(llama):
    from repro.lab.claims import Context

    m = {
        "entropy_floor": 1.1,
        "unigram_entropy": 2.7,
        "gpt_params": 100,
        "gpt_test_loss": 1.9,
        "gpt_mean_train_loss": 2.6,
        "gpt_early_train_loss": 3.3,
        "llama_params": 103,
        "llama_test_loss": 1.5,
        "llama_mean_train_loss": 2.45,
        "llama_early_train_loss": 2.4,
    }
    ctx = Context(config=llama.PRESETS["quick"], run_experiment=lambda c, x: m)
    final = llama.block_final_loss(ctx)
    assert final.value == pytest.approx(1.5 - 1.9)
    assert final.details == {
        "llama_test_loss": 1.5,
        "gpt_test_loss": 1.9,
        "entropy_floor": 1.1,
        "llama_excess": pytest.approx(1.5 - 1.1),
        "gpt_excess": pytest.approx(1.9 - 1.1),
        "llama_params": 103,
        "gpt_params": 100,
    }
    speed = llama.block_learning_speed(ctx)
    assert speed.value == pytest.approx(2.45 - 2.6)
    assert speed.details == {"llama": 2.45, "gpt": 2.6}
    early = llama.block_early_learning(ctx)
    assert early.value == pytest.approx(2.4 - 3.3)
    assert early.details == {"llama": 2.4, "gpt": 3.3, "steps": 200, "entropy_floor": 1.1}


def test_billions_rounds_the_count_itself(llama, monkeypatch):
    """2,250,000,001 parameters: 2.250000001 billion, 2.3 to one decimal (a count a hair smaller
    would round down)."""
    monkeypatch.setattr(llama, "n_params", lambda preset: 2_250_000_001)
    got = llama._billions("llama-7b")
    assert got.value == 2.250000001
    assert got.details == {"n_params": 2_250_000_001, "rounded": 2.3}


def test_experiment_puts_data_and_models_on_the_contexts_device(llama, monkeypatch):
    """ctx.device = "meta" (the CPU-only suite's stand-in for a GPU): the batches, the held-out
    set and both stacks are moved there."""
    from repro.lab.claims import Context

    seen = []

    def train_lm(model, data, steps, lr, progress, description):
        seen.append((description, data.device.type, {p.device.type for p in model.parameters()}))
        return [1.0] * steps

    def evaluate_lm(model, tokens):
        seen.append(("held-out", tokens.device.type, tokens.shape))
        return 1.0

    monkeypatch.setattr(llama, "train_lm", train_lm)
    monkeypatch.setattr(llama, "evaluate_lm", evaluate_lm)
    cfg = llama.Config(vocab_size=5, seq_len=4, d_model=8, n_heads=2, steps=3, batch=2,
                       eval_sequences=3)  # fmt: skip
    llama.experiment(cfg, Context(config=cfg, device="meta"))
    assert seen == [
        ("llama: gpt", "meta", {"meta"}),
        ("held-out", "meta", (3, 5)),
        ("llama: llama", "meta", {"meta"}),
        ("held-out", "meta", (3, 5)),
    ]
