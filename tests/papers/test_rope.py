"""Pieces of papers/rope/repro.py beyond its claims: the §3.4.3 bound against a direct sum."""

from __future__ import annotations

import cmath

import pytest
import torch

from repro.lab.library import Library

ROPE = Library().get("rope").module()


@pytest.mark.parametrize("head_dim", [8, 64, 128])
def test_bound_at_zero_is_mean_of_1_to_half_d(head_dim: int) -> None:
    bound = ROPE.relative_upper_bound(torch.tensor([0]), head_dim)
    assert float(bound[0]) == pytest.approx((head_dim // 2 + 1) / 2, abs=1e-12)


@pytest.mark.parametrize("r", [1, 17, 300])
def test_bound_matches_direct_sum(r: int) -> None:
    D = 16
    theta = [10000 ** (-2 * k / D) for k in range(D // 2)]
    partial = [sum(cmath.exp(1j * r * t) for t in theta[:j]) for j in range(1, D // 2 + 1)]
    direct = sum(abs(s) for s in partial) / (D // 2)
    assert float(ROPE.relative_upper_bound(torch.tensor([r]), D)[0]) == pytest.approx(direct)


# --- the controls of the measured claims: each must fail its claim's tolerance -------------


def test_a_broken_rotation_fails_the_norm_check() -> None:
    """rotation-preserves-norm wants |‖R_m x‖ − ‖x‖| / ‖x‖ < 1e-6; a sin table one position
    ahead of the cos table is no longer a rotation and must miss by far."""
    from repro.nn.positional import RotaryEmbedding

    x = torch.randn(1, 2, 256, 64, generator=torch.Generator().manual_seed(0))
    rope = RotaryEmbedding(64, max_seq_len=257)

    def worst(r: RotaryEmbedding) -> float:
        y = r(x, 0)
        return float(((y.norm(dim=-1) - x.norm(dim=-1)).abs() / x.norm(dim=-1)).max())

    assert worst(rope) < 1e-6
    rope.sin = torch.roll(rope.sin, -1, dims=0)  # sin((m + 1)θ) beside cos(mθ)
    assert worst(rope) > 1e-3


def test_untrained_decoder_fails_both_length_claims() -> None:
    """accuracy-inside-training-length wants ≥ 0.35 and accuracy-drops-beyond-training-length a
    ratio ≤ 0.76: a decoder after one training step is flat over positions and near chance."""
    from repro.lab.claims import Context

    cfg = ROPE.Config(steps=1)
    m = ROPE.experiment(cfg, Context(config=cfg, seed=0))
    assert m["segments"]["inside"]["accuracy"] < 0.35
    assert m["accuracy_ratio_2L"] > 0.76


# --- the claims' own arithmetic --------------------------------------------------------------


def test_offset_claim_recomputed_from_its_documented_draws() -> None:
    """Unit q, k of (2, 4, 64, 64) from the context's seed: the fp32 score change under each
    shift, and the additive-sinusoid contrast at s = 100, recomputed here."""
    from repro.lab.claims import Context
    from repro.nn.positional import RotaryEmbedding, sinusoidal_encoding

    got = ROPE.scores_depend_on_offset_only(Context(seed=3))
    g = torch.Generator().manual_seed(3)
    q = torch.randn(2, 4, 64, 64, generator=g)
    k = torch.randn(2, 4, 64, 64, generator=g)
    q, k = q / q.norm(dim=-1, keepdim=True), k / k.norm(dim=-1, keepdim=True)
    rope = RotaryEmbedding(64, max_seq_len=4064)
    base = rope(q, 0) @ rope(k, 0).mT
    shifted = [(rope(q, s) @ rope(k, s).mT - base).abs().max() for s in (1, 7, 100, 1000, 4000)]
    assert got.value == float(max(shifted))
    pe = sinusoidal_encoding(164, 64)
    add = (q + pe[:64]) @ (k + pe[:64]).mT
    moved = (q + pe[100:164]) @ (k + pe[100:164]).mT
    want = float((moved - add).abs().max())
    assert got.details["additive_sinusoidal_max_diff_shift_100"] == pytest.approx(want, rel=1e-6)


def test_unit_rows_have_norm_one_along_the_last_axis() -> None:
    x = torch.tensor([[3.0, 4.0, 0.0], [1.0, 2.0, 2.0]])
    assert torch.allclose(ROPE._unit(x), x / torch.tensor([[5.0], [3.0]]))


def test_config_wants_an_even_head_width() -> None:
    with pytest.raises(ValueError, match="RoPE rotates pairs"):
        ROPE.Config(d_model=12, n_heads=4)  # heads of 3 channels


def test_bound_uses_the_base_it_is_given() -> None:
    D, r, base = 16, 37, 500.0
    theta = [base ** (-2 * k / D) for k in range(D // 2)]
    partial = [sum(cmath.exp(1j * r * t) for t in theta[:j]) for j in range(1, D // 2 + 1)]
    direct = sum(abs(s) for s in partial) / (D // 2)
    got = float(ROPE.relative_upper_bound(torch.tensor([r]), D, base=base)[0])
    assert got == pytest.approx(direct, rel=1e-12)


def test_offset_claim_reports_each_comparison_it_names() -> None:
    from repro.lab.claims import Context

    got = ROPE.scores_depend_on_offset_only(Context(seed=1))
    assert got.value < 1e-4  # the fp32 rounding of the angles, far below an O(1) change
    d = got.details
    assert d["shifts"] == [1, 7, 100, 1000, 4000]
    assert d["fp64_apply_rope_ref_max_diff"] < 1e-12
    assert d["eq16_relative_rotation_max_diff"] < 1e-5
    assert d["additive_sinusoidal_max_diff_shift_100"] > 0.5  # absolute positions do move
    assert set(d) == {
        "shifts",
        "fp64_apply_rope_ref_max_diff",
        "eq16_relative_rotation_max_diff",
        "additive_sinusoidal_max_diff_shift_100",
    }


def test_norm_claim_names_its_range(monkeypatch) -> None:
    from repro.lab.claims import Context
    from repro.nn.positional import RotaryEmbedding

    shapes = []

    class Recorded(RotaryEmbedding):
        def forward(self, x, start_pos=0):
            shapes.append((tuple(x.shape), start_pos))
            return super().forward(x, start_pos)

    monkeypatch.setattr(ROPE, "RotaryEmbedding", Recorded)
    got = ROPE.rotation_preserves_norm(Context(seed=2))
    assert shapes == [((1, 2, 4096, 64), 0)]
    assert got.value < 1e-6 and got.details == {"positions": 4096, "head_dim": 64}
    # the documented draw: x ~ N(0, 1) of (1, 2, 4096, 64) from the context's seed, positions 0…
    x = torch.randn(1, 2, 4096, 64, generator=torch.Generator().manual_seed(2))
    y = RotaryEmbedding(64, max_seq_len=4096)(x, 0)
    assert got.value == float(((y.norm(dim=-1) - x.norm(dim=-1)).abs() / x.norm(dim=-1)).max())


def _bound_by_direct_sum(r: int, D: int) -> float:
    theta = [10000 ** (-2 * k / D) for k in range(D // 2)]
    partial, s = [], 0j
    for t in theta:
        s += cmath.exp(1j * r * t)
        partial.append(abs(s))
    return sum(partial) / (D // 2)


def test_decay_claim_is_the_window_maximum_over_the_bound_at_zero(line_plots, tmp_path) -> None:
    from repro.lab.claims import Context

    drawn = line_plots(ROPE)
    got = ROPE.long_term_decay(Context(out_dir=tmp_path))
    bound = [_bound_by_direct_sum(r, 128) for r in range(0, 257)]
    assert got.value == pytest.approx(max(bound[128:257]) / bound[0], rel=1e-9)
    d = got.details
    assert d["ratio_256_to_0"] == pytest.approx(bound[256] / bound[0], rel=1e-9)
    ups = sum(bound[r + 1] > bound[r] for r in range(256))
    assert d["increasing_steps_in_0_256"] == ups and 0 < ups < 256
    far = {r: _bound_by_direct_sum(r, 128) for r in (0, 16, 64, 128, 256, 1024, 2048, 4096)}
    assert d["bound_at"] == pytest.approx(far, rel=1e-9)
    assert d["head_dim"] == 128
    [(path, series, rest)] = drawn
    assert path == tmp_path / "long_term_decay.svg"
    [(xs, ys)] = series.values()
    assert xs == list(range(1025)) and len(ys) == 1025
    assert ys[:257] == pytest.approx(bound, rel=1e-9)
    assert list(series) == ["D = 128"]
    assert rest == {
        "xlabel": "relative distance r",
        "ylabel": "relative upper bound (1/(D/2)) Σ|S_j|",
        "title": "RoPE long-term decay (RoFormer §3.4.3, Figure 2)",
    }


@pytest.mark.parametrize("peak", [128, 256, 257, 129])
def test_decay_window_is_128_to_256_inclusive(monkeypatch, peak: int) -> None:
    """A made-up bound, flat at 1 with one peak of 3 (and bound(0) = 2): the window sees the
    peak exactly when 128 ≤ r ≤ 256; plateaus are not counted as increasing steps."""
    from repro.lab.claims import Context

    def bound(r: torch.Tensor, head_dim: int) -> torch.Tensor:
        b = torch.ones(len(r), dtype=torch.float64)
        b[0], b[peak] = 2.0, 3.0
        return b

    monkeypatch.setattr(ROPE, "relative_upper_bound", bound)
    got = ROPE.long_term_decay(Context())
    assert got.value == (1.5 if 128 <= peak <= 256 else 0.5)
    assert got.details["increasing_steps_in_0_256"] == (1 if peak <= 256 else 0)


def test_length_claims_read_the_experiment() -> None:
    from repro.lab.claims import Context

    segments = {
        "inside": {"loss": 0.9, "accuracy": 0.8},
        "L_to_2L": {"loss": 2.0, "accuracy": 0.4},
        "2L_to_4L": {"loss": 2.5, "accuracy": 0.3},
    }
    metrics = {
        "segments": segments,
        "accuracy_ratio_2L_per_seed": [0.5, 0.45, 0.55],
        "accuracy_ratio_2L": 0.5,
        "accuracy_ratio_4L": 0.375,
        "entropy_floor": 0.7,
        "unigram_entropy": 2.7,
        "train_len": 16,
    }
    ctx = Context(run_experiment=lambda cfg, c: metrics)
    drops = ROPE.accuracy_drops_beyond_training_length(ctx)
    assert drops.value == 0.5
    assert drops.details == {
        "segments": segments,
        "accuracy_ratio_2L_to_4L_vs_inside": 0.375,
        "per_seed_ratio_2L": [0.5, 0.45, 0.55],
        "max_per_seed_ratio_2L": 0.55,
        "entropy_floor": 0.7,
        "unigram_entropy": 2.7,
        "train_len": 16,
    }
    inside = ROPE.accuracy_inside_training_length(ctx)
    assert inside.value == 0.8
    assert inside.details == {
        "inside_loss": 0.9,
        "entropy_floor": 0.7,
        "unigram_entropy": 2.7,
        "beyond_L_accuracy": 0.4,
    }


def test_experiment_recipe_and_per_position_metrics(monkeypatch, line_plots, tmp_path) -> None:
    """Training replaced by a recorder: the data, the model and the metrics by position are
    checked against the recipe written out (an untrained model is enough for the arithmetic)."""
    import math

    from repro.data.markov import MarkovConfig, MarkovSource
    from repro.lab.claims import Context

    trained = []

    def report(*args) -> None:
        pass

    def train_lm(model, data, steps, lr, progress, description):
        assert progress is report
        trained.append((model, data.clone(), steps, lr, description))
        return [0.0] * steps

    monkeypatch.setattr(ROPE, "train_lm", train_lm)
    drawn = line_plots(ROPE)
    cfg = ROPE.Config(vocab_size=5, order=3, n_heads=2, d_ff=40, train_len=4, eval_factor=3,
                      batch=2, steps=3, seeds=2, eval_batch=6)  # fmt: skip
    ctx = Context(config=cfg, seed=4, out_dir=tmp_path, progress=report)
    got = ROPE.experiment(cfg, ctx)
    source = MarkovSource(MarkovConfig(vocab_size=5, order=3))
    losses, accs = [], []
    for i, (model, data, steps, lr, description) in enumerate(trained):
        g = torch.Generator().manual_seed(10_000 + 4 + i)
        assert torch.equal(data, source.sample(3 * 2, 4 + 1, g))
        held_out = source.sample(6, 12 + 1, g)
        assert (steps, lr, description) == (3, cfg.lr, f"rope: train on length 4, seed {4 + i}")
        c = model.cfg
        assert (c.n_layers, c.d_model, c.n_heads, c.vocab_size, c.d_ff) == (1, 48, 2, 5, 40)
        assert (c.max_seq_len, c.backend) == (12, "sdpa")
        torch.manual_seed(4 + i)
        fresh = ROPE.Llama(c).parameters()
        assert all(torch.equal(a, b) for a, b in zip(model.parameters(), fresh, strict=True))
        with torch.no_grad():
            logits = model(held_out[:, :-1]).double()  # (6, 12, V)
        loss = [[0.0] * 12 for _ in range(6)]
        acc = [[0.0] * 12 for _ in range(6)]
        for b in range(6):
            for p in range(12):
                row, target = logits[b, p].tolist(), int(held_out[b, p + 1])
                log_z = math.log(sum(math.exp(v) for v in row))
                loss[b][p] = log_z - row[target]
                acc[b][p] = float(max(range(5), key=lambda v: row[v]) == target)
        losses.append([sum(loss[b][p] for b in range(6)) / 6 for p in range(12)])
        accs.append([sum(acc[b][p] for b in range(6)) / 6 for p in range(12)])
    assert len(trained) == 2
    loss_t = [(a + b) / 2 for a, b in zip(*losses, strict=True)]
    acc_t = [(a + b) / 2 for a, b in zip(*accs, strict=True)]

    def mean(xs: list[float]) -> float:
        return sum(xs) / len(xs)

    # position p predicts token p + 1: inside is p = order − 1 … L − 1
    for name, (a, b) in {"inside": (2, 4), "L_to_2L": (4, 8), "2L_to_4L": (8, 12)}.items():
        assert got["segments"][name]["loss"] == pytest.approx(mean(loss_t[a:b]), rel=1e-5)
        assert got["segments"][name]["accuracy"] == pytest.approx(mean(acc_t[a:b]), abs=1e-6)
    per_seed = [mean(a[4:8]) / mean(a[2:4]) for a in accs]
    assert got["accuracy_ratio_2L_per_seed"] == pytest.approx(per_seed, rel=1e-6)
    seg = got["segments"]
    assert got["accuracy_ratio_2L"] == seg["L_to_2L"]["accuracy"] / seg["inside"]["accuracy"]
    assert got["accuracy_ratio_4L"] == seg["2L_to_4L"]["accuracy"] / seg["inside"]["accuracy"]
    assert got["entropy_floor"] == source.entropy_rate()
    assert got["unigram_entropy"] == source.unigram_entropy()
    assert got["train_len"] == 4
    [(path, series, rest)] = drawn
    assert path == tmp_path / "loss_by_position.svg"
    assert series["RoPE, trained on L = 4"] == (list(range(12)), pytest.approx(loss_t, rel=1e-5))
    assert series["entropy floor"] == (list(range(12)), [source.entropy_rate()] * 12)
    assert series["unigram entropy"] == (list(range(12)), [source.unigram_entropy()] * 12)
    assert rest == {
        "xlabel": "position",
        "ylabel": "held-out loss (nats/token)",
        "title": "Loss by position: trained on 4 tokens, evaluated on 12",
    }
