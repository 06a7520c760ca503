"""Pieces of papers/rmsnorm/repro.py beyond its claims: Table 1 decisions and the norm swap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repro.lab.library import Library
from repro.lab.threads import torch_threads
from repro.nn.norm import RMSNorm

RMSNORM = Library().get("rmsnorm").module()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("norm", ["RMSNorm", "LayerNorm"])
def test_every_table1_cell_is_decided(norm: str, seed: int) -> None:
    row, changes = RMSNORM.invariance_row(norm, seed)
    assert "unclear" not in row, changes
    assert len(row.split(",")) == len(RMSNORM.TRANSFORMS)


def test_swap_keeps_every_other_weight() -> None:
    cfg = RMSNORM.PRESETS["quick"]
    rms = RMSNORM.tiny_lm(cfg, "RMSNorm", seed=3, device="cpu")
    ln = RMSNORM.tiny_lm(cfg, "LayerNorm", seed=3, device="cpu")
    assert not any(isinstance(m, RMSNorm) for m in ln.modules())
    n_norms = sum(isinstance(m, RMSNorm) for m in rms.modules())
    assert sum(isinstance(m, nn.LayerNorm) for m in ln.modules()) == n_norms == 2 * cfg.n_layers + 1
    rms_weights = {k: v for k, v in rms.state_dict().items() if "norm" not in k}
    ln_weights = {k: v for k, v in ln.state_dict().items() if "norm" not in k}
    assert rms_weights.keys() == ln_weights.keys()
    for k, v in rms_weights.items():
        assert torch.equal(v, ln_weights[k]), k


def _claim_bounds(claim_id: str):
    claim = next(c for c in Library().get("rmsnorm").note.claims if c.id == claim_id)
    return claim.tolerance


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_norm_that_is_not_scale_invariant_fails_the_rescaling_claim(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Control of rescaling-invariance-fp32: the claim's own measurement, with the module's ε
    raised to 1 (the root then mixes a constant into the statistic, so δ·a no longer cancels),
    moves the output by far more than the 2e-5 tolerance; the real module stays inside it."""
    from repro.lab.claims import Context

    tol = _claim_bounds("rescaling-invariance-fp32").abs
    real = RMSNORM.rescaling_invariance_fp32(Context(seed=seed)).value
    monkeypatch.setattr(RMSNORM, "RMSNorm", lambda c: RMSNorm(c, eps=1.0))
    broken = RMSNORM.rescaling_invariance_fp32(Context(seed=seed)).value
    assert real <= tol < 1000 * tol < broken


def test_unigram_and_leaking_models_fail_the_learns_the_source_claim() -> None:
    """Control of tiny-lm-learns-the-source: fed held-out losses of a model that learnt only
    unigram statistics (loss = unigram entropy) or of one whose causal mask leaks (loss below
    the entropy rate), the claim's value falls outside [0.4, 1.0]."""
    from types import SimpleNamespace

    from repro.lab.claims import Context

    lo, hi = _claim_bounds("tiny-lm-learns-the-source").range
    floor, unigram = 1.164, 2.751

    def share(loss: float) -> float:
        metrics = {
            "loss_rmsnorm": [loss], "loss_layernorm": [loss],
            "entropy_floor": floor, "unigram_entropy": unigram,
        }  # fmt: skip
        ctx = Context(config=SimpleNamespace(seeds=(0,)), _metrics=metrics)
        return RMSNORM.tiny_lm_learns_the_source(ctx).value

    assert lo <= share(1.65) <= hi  # a loss in the measured range passes
    assert not lo <= share(unigram) <= hi  # unigram-only: 0
    assert not lo <= share(floor - 0.3) <= hi  # below the entropy rate: > 1


def test_config_wants_even_head_widths_for_rope() -> None:
    with pytest.raises(ValueError, match="RoPE rotates pairs"):
        RMSNORM.Config(d_model=12, n_heads=4)


# --- Table 1 ----------------------------------------------------------------------------------

# Table 1 of the paper, columns in its order (see TRANSFORMS): weight matrix re-scaling and
# re-centering, weight vector re-scaling, dataset re-scaling and re-centering, single case
# re-scaling.
TABLE1 = {"LayerNorm": "yes,yes,no,yes,no,yes", "RMSNorm": "yes,no,no,yes,no,yes"}


@pytest.mark.parametrize("norm", ["RMSNorm", "LayerNorm"])
def test_table1_claims_give_the_papers_rows(norm: str) -> None:
    from repro.lab.claims import Context

    fn = RMSNORM.table1_rmsnorm_row if norm == "RMSNorm" else RMSNORM.table1_layernorm_row
    got = fn(Context(seed=1))
    assert got.value == TABLE1[norm]
    assert got.details["columns"] == list(RMSNORM.TRANSFORMS)
    changes = got.details["max_output_change"]
    assert list(changes) == list(RMSNORM.TRANSFORMS)
    for verdict, change in zip(TABLE1[norm].split(","), changes.values(), strict=True):
        assert change < 1e-12 if verdict == "yes" else change > 1e-2


def test_rmsnorm_module_of_table1_is_eq4_without_epsilon() -> None:
    g = torch.Generator().manual_seed(0)
    a = 1e-4 * torch.randn(3, 10, generator=g, dtype=torch.float64)  # tiny: ε would show
    gain = 1 + 0.1 * torch.randn(10, generator=g, dtype=torch.float64)
    out = RMSNORM._rmsnorm_module(a, gain)
    assert out.dtype == torch.float64
    rms = (a**2).mean(-1, keepdim=True).sqrt()
    torch.testing.assert_close(out, a / rms * gain, rtol=1e-12, atol=0)


def test_invariance_row_thresholds_and_draws(monkeypatch) -> None:
    """A norm that reports pre-set output changes: below 1e-9 is 'yes', above 1e-3 'no', and
    the band between them, its ends included, 'unclear'."""
    seen = []
    outputs = iter([0.0, 0.5e-9, 1e-9, 5e-6, 1e-3, 2e-3, -0.5])

    def norm(a, gain):
        seen.append((a, gain))
        return torch.full((2,), next(outputs), dtype=torch.float64)

    transformed = []

    def transform(x, W, g):
        transformed.append((x, W, g.initial_seed()))
        return 2 * x, W

    monkeypatch.setitem(RMSNORM.NORMS, "fake", norm)
    names = ["t1", "t2", "t3", "t4", "t5", "t6"]
    monkeypatch.setattr(RMSNORM, "TRANSFORMS", dict.fromkeys(names, transform))
    row, changes = RMSNORM.invariance_row("fake", 7)
    assert row == "yes,unclear,unclear,unclear,no,no"
    assert changes == dict(zip(names, [0.5e-9, 1e-9, 5e-6, 1e-3, 2e-3, 0.5], strict=True))
    g = torch.Generator().manual_seed(7)
    x = torch.randn(8, 32, generator=g, dtype=torch.float64)
    W = torch.randn(64, 32, generator=g, dtype=torch.float64) / 32**0.5
    gain = 1 + 0.1 * torch.randn(64, generator=g, dtype=torch.float64)
    torch.testing.assert_close(seen[0][0], x @ W.T)
    for _, g_ in seen:
        assert torch.equal(g_, gain)
    for a, _ in seen[1:]:
        torch.testing.assert_close(a, 2 * x @ W.T)
    assert all(torch.equal(x_, x) and torch.equal(W_, W) for x_, W_, _ in transformed)
    assert [s for *_, s in transformed] == [7] * 6  # the row's own generator


# --- the fp32 module claims, on a norm that reports pre-set outputs ---------------------------


class _Scripted(torch.nn.Module):
    """An RMSNorm stand-in: output = `reference(x)` + the next pre-set offset; records inputs."""

    inputs: list = []
    offsets: list = []
    made: list = []

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.eps = 0.25
        self.weight = torch.nn.Parameter(torch.ones(dim))
        _Scripted.made.append(self)

    def reference(self, x):
        return torch.zeros_like(x)

    def forward(self, x):
        _Scripted.inputs.append(x.clone())
        return self.reference(x) + _Scripted.offsets[len(_Scripted.inputs) - 1]


def _script(monkeypatch, offsets, reference=None) -> type:
    _Scripted.inputs, _Scripted.offsets, _Scripted.made = [], offsets, []
    cls = _Scripted
    if reference is not None:
        cls = type("Scripted", (_Scripted,), {"reference": reference})
    monkeypatch.setattr(RMSNORM, "RMSNorm", cls)
    return cls


def test_rescaling_claim_takes_the_worst_of_inputs_and_weights(monkeypatch) -> None:
    from repro.lab.claims import Context

    base = torch.zeros(64, 512)
    base[3, 7] = -6.0
    # calls: the base output, then δ·a for δ in SCALES, then x (δW)ᵀ for δ in SCALES
    deltas = [0, 1, 3, -8, 2, 0, 4, -5, 1, 0, 2]  # in units of 2^-20, exact next to 6.0 in fp32
    _script(monkeypatch, [base + d * 2**-20 for d in deltas])
    got = RMSNORM.rescaling_invariance_fp32(Context(seed=5))
    assert got.value == 8 * 2**-20
    assert got.details == {
        "scales": [0.5, 2.0, 10.0, 100.0, 1000.0],
        "input_rescaling_max_diff": 8 * 2**-20,
        "weight_matrix_rescaling_max_diff": 5 * 2**-20,
        "eps": 0.25,
        "max_abs_output": 6.0,
    }
    g = torch.Generator().manual_seed(5)
    x = torch.randn(64, 256, generator=g)
    W = torch.randn(512, 256, generator=g) / 16
    [norm] = _Scripted.made
    torch.testing.assert_close(norm.weight.detach(), 1 + 0.1 * torch.randn(512, generator=g))
    a = _Scripted.inputs
    torch.testing.assert_close(a[0], x @ W.T)
    for i, d in enumerate((0.5, 2.0, 10.0, 100.0, 1000.0)):
        torch.testing.assert_close(a[1 + i], d * (x @ W.T))
        torch.testing.assert_close(a[6 + i], x @ (d * W).T)
    assert len(a) == 11


def _layer_norm_by_hand(x, gain, eps):
    mu = x.mean(-1, keepdim=True)
    var = ((x - mu) ** 2).mean(-1, keepdim=True)
    return (x - mu) / (var + eps).sqrt() * gain


def test_equals_layernorm_claim_compares_with_the_same_gain_and_epsilon(monkeypatch) -> None:
    """A stand-in that is LayerNorm (its gain, its ε) plus an offset per call: the claim reports
    the first call's offset (zero-mean inputs), the details the second's (raw inputs)."""
    from repro.lab.claims import Context

    def reference(self, x):
        return _layer_norm_by_hand(x, self.weight, self.eps)

    o1, o2 = torch.zeros(256, 512), torch.zeros(256, 512)
    o1[10, 20], o2[200, 3] = -3e-3, 0.7
    _script(monkeypatch, [o1, o2], reference)
    got = RMSNORM.equals_layernorm_on_zero_mean(Context(seed=2))
    assert got.value == pytest.approx(3e-3, rel=1e-3, abs=2e-6)
    assert got.details == {"max_diff_nonzero_mean_inputs": pytest.approx(0.7, rel=1e-5)}
    g = torch.Generator().manual_seed(2)
    a = 3.0 * torch.randn(256, 512, generator=g) + 1.5
    [norm] = _Scripted.made
    torch.testing.assert_close(norm.weight.detach(), 1 + 0.1 * torch.randn(512, generator=g))
    zero_mean, raw = _Scripted.inputs
    torch.testing.assert_close(raw, a)
    torch.testing.assert_close(zero_mean, a - a.mean(-1, keepdim=True))


def test_differs_claim_is_the_mean_difference_and_its_prediction(monkeypatch) -> None:
    from repro.lab.claims import Context

    def reference(self, x):
        return _layer_norm_by_hand(x, self.weight, self.eps)

    offset = torch.zeros(256, 512)
    offset[:, :128] = -0.4  # mean |offset| = 0.1
    _script(monkeypatch, [offset], reference)
    got = RMSNORM.differs_from_layernorm_on_nonzero_mean(Context(seed=3))
    assert got.value == pytest.approx(0.1, rel=1e-4)
    g = torch.Generator().manual_seed(3)
    a = (torch.randn(256, 512, generator=g) + 0.5).double()
    gain = (1 + 0.1 * torch.randn(512, generator=g)).double()
    [(x,)] = [tuple(_Scripted.inputs)]
    torch.testing.assert_close(x, a.float())
    # Eq. 4 − Eq. 2 at ε = 0: a / sqrt(mean a²) − (a − μ) / σ, times the gain
    rms = (a**2).mean(-1, keepdim=True).sqrt()
    predicted = a / rms * gain - _layer_norm_by_hand(a, gain, 0.0)
    assert got.details == {
        "predicted_mean_abs_diff": pytest.approx(float(predicted.abs().mean()), rel=1e-4)
    }


# --- speed, by a fake clock -------------------------------------------------------------------


def test_fwd_bwd_seconds_is_the_best_mean_of_the_repeats(monkeypatch) -> None:
    ticks = iter([0.0, 3.0, 10.0, 12.0, 20.0, 29.0])
    monkeypatch.setattr(RMSNORM.time, "perf_counter", lambda: next(ticks))
    grads = []

    class Out:
        def backward(self, grad):
            grads.append(grad)

    grad = torch.ones(2)
    assert RMSNORM._fwd_bwd_seconds(lambda: Out(), grad, reps=3, inner=4) == 2.0 / 4
    assert len(grads) == 12 and all(g is grad for g in grads)


def test_speed_claim_times_the_four_candidates_alike(monkeypatch) -> None:
    from repro.lab.claims import Context

    # 3 rounds × (layer_norm_ref, rms_norm_ref, torch_layer_norm, torch_rms_norm)
    times = [5.0, 4.0, 2.0, 1.5, 4.5, 4.2, 2.2, 1.4, 4.8, 3.6, 2.1, 1.2]
    calls = []

    def fwd_bwd(fn, grad, reps, inner):
        assert (reps, inner) == (3, 5) and torch.get_num_threads() == 1
        calls.append((fn(), grad))
        return times[(len(calls) - 1) % 12]

    monkeypatch.setattr(RMSNORM, "_fwd_bwd_seconds", fwd_bwd)
    with torch_threads(2):  # the claim times on one thread itself
        got = RMSNORM.speed_like_for_like(Context(seed=4))
    assert len(calls) == 12  # three rounds, no more (a fourth would repeat the first's times)
    assert got.value == pytest.approx(1 - 3.6 / 4.5)
    assert got.details == {
        "seconds_fwd_bwd": {
            "layer_norm_ref": 4.5,
            "rms_norm_ref": 3.6,
            "torch_layer_norm": 2.0,
            "torch_rms_norm": 1.2,
        },
        "shape": [2048, 512],
        "torch_kernels_reduction": pytest.approx(1 - 1.2 / 2.0),
        "device": "cpu",
        "threads": 1,
    }
    g = torch.Generator().manual_seed(4)
    x = torch.randn(2048, 512, generator=g)
    grad = torch.randn(2048, 512, generator=g)
    ln = _layer_norm_by_hand(x, 1.0, 1e-5)
    rms = x / ((x**2).mean(-1, keepdim=True) + 1e-6).sqrt()
    for i, (out, grad_) in enumerate(calls):
        assert torch.equal(grad_, grad)
        torch.testing.assert_close(out, (ln, rms)[i % 2], atol=1e-5, rtol=1e-5)
        # backward reaches x and the gain, and LayerNorm's bias
        assert [tuple(t.shape) for t in _leaves(out)] == [(2048, 512), (512,), (512,)][: 3 - i % 2]
    calls.clear()
    on_meta = RMSNORM.speed_like_for_like(Context(seed=4, device="meta"))
    assert on_meta.details["device"] == "meta"
    for out, grad_ in calls:
        assert out.device.type == grad_.device.type == "meta"
        assert all(t.device.type == "meta" for t in _leaves(out))


def _leaves(out: torch.Tensor) -> list[torch.Tensor]:
    """The tensors a backward pass from `out` accumulates gradients into, largest first."""
    found, todo, seen = [], [out.grad_fn], set()
    while todo:
        node = todo.pop()
        if node is None or node in seen:
            continue
        seen.add(node)
        if hasattr(node, "variable"):
            found.append(node.variable)
        todo.extend(n for n, _ in node.next_functions)
    return sorted(found, key=lambda t: -t.numel())


# --- the tiny LM ------------------------------------------------------------------------------


def test_tiny_lm_is_the_configured_llama_on_the_device() -> None:
    cfg = RMSNORM.Config(vocab_size=11, d_model=24, n_layers=2, n_heads=3, d_ff=40, seq_len=9)
    model = RMSNORM.tiny_lm(cfg, "RMSNorm", seed=1, device="meta")
    c = model.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.vocab_size, c.d_ff) == (2, 24, 3, 11, 40)
    assert (c.max_seq_len, c.backend) == (9, "sdpa")
    assert all(p.device.type == "meta" for p in model.parameters())
    ln = RMSNORM.tiny_lm(cfg, "LayerNorm", seed=1, device="cpu")
    norms = [m for m in ln.modules() if isinstance(m, nn.LayerNorm)]
    assert [m.normalized_shape for m in norms] == [(24,)] * 5
    from repro.models.llama import Llama

    torch.manual_seed(1)  # the seed alone decides every weight
    by_hand = Llama(c)
    again = RMSNORM.tiny_lm(cfg, "RMSNorm", seed=1, device="cpu")
    pairs = zip(by_hand.parameters(), again.parameters(), strict=True)
    assert all(torch.equal(p, q) for p, q in pairs)
    other = RMSNORM.tiny_lm(cfg, "RMSNorm", seed=2, device="cpu")
    assert not torch.equal(next(other.parameters()), next(again.parameters()))


def test_experiment_recipe_with_training_recorded(monkeypatch, line_plots, tmp_path) -> None:
    from repro.data.markov import MarkovConfig, MarkovSource
    from repro.lab.claims import Context

    runs, held = [], []

    def report(*args):
        pass

    def train_lm(model, data, steps, lr, progress, description):
        assert progress is report
        norm, seed = description.split(" ")[1], int(description.rsplit(" ", 1)[1])
        has_ln = any(isinstance(m, nn.LayerNorm) for m in model.modules())
        assert has_ln == (norm == "LayerNorm")
        runs.append((norm, seed, data.clone(), steps, lr, description))
        model.held_out_loss = 2.0 + 0.1 * seed + (0.5 if norm == "LayerNorm" else 0.0)
        return [10.0 * seed + i + (0.25 if norm == "LayerNorm" else 0.0) for i in range(steps)]

    def evaluate_lm(model, tokens):
        held.append(tokens.clone())
        return model.held_out_loss

    monkeypatch.setattr(RMSNORM, "train_lm", train_lm)
    monkeypatch.setattr(RMSNORM, "evaluate_lm", evaluate_lm)
    drawn = line_plots(RMSNORM)
    cfg = RMSNORM.Config(vocab_size=9, order=3, d_model=8, n_heads=2, d_ff=16, seq_len=4, batch=2,
                         steps=6, lr=0.02, seeds=2, eval_batch=3)  # fmt: skip
    got = RMSNORM.experiment(cfg, Context(config=cfg, seed=3, out_dir=tmp_path, progress=report))
    source = MarkovSource(MarkovConfig(vocab_size=9, order=3))
    assert [(n, s) for n, s, *_ in runs] == [
        ("RMSNorm", 3), ("LayerNorm", 3), ("RMSNorm", 4), ("LayerNorm", 4),
    ]  # fmt: skip
    for i, (norm, seed, data, steps, lr, description) in enumerate(runs):
        g = torch.Generator().manual_seed(10_000 + seed)
        assert torch.equal(data, source.sample(6 * 2, 5, g))  # the same batches for both
        assert torch.equal(held[i], source.sample(3, 5, g))
        assert (steps, lr, description) == (6, 0.02, f"rmsnorm: {norm} LM, seed {seed}")
    assert got == {
        "loss_rmsnorm": pytest.approx([2.3, 2.4]),
        "loss_layernorm": pytest.approx([2.8, 2.9]),
        "gap_rms_minus_ln": pytest.approx([-0.5, -0.5]),
        "mean_gap": pytest.approx(-0.5),
        "entropy_floor": source.entropy_rate(),
        "unigram_entropy": source.unigram_entropy(),
    }
    [(path, series, rest)] = drawn
    assert path == tmp_path / "training_loss.svg"
    xs = [1, 2, 3, 4, 5, 6]
    assert series == {
        "RMSNorm (mean of 2 seeds)": (xs, pytest.approx([35.0 + i for i in range(6)])),
        "LayerNorm (mean of 2 seeds)": (xs, pytest.approx([35.25 + i for i in range(6)])),
        "entropy floor": (xs, [source.entropy_rate()] * 6),
    }
    assert rest == {
        "xlabel": "step",
        "ylabel": "training loss (nats/token)",
        "title": "Tiny LM on a Markov source: RMSNorm vs LayerNorm",
    }
    RMSNORM.experiment(cfg, Context(config=cfg, seed=3, progress=report))  # no folder: no plot
    assert len(drawn) == 1
    devices = []

    def train_on(model, data, steps, *args):
        devices.append((next(model.parameters()).device, data.device))
        return [1.0] * steps

    def evaluate_on(model, tokens):
        devices.append(tokens.device)
        return 1.0

    monkeypatch.setattr(RMSNORM, "train_lm", train_on)
    monkeypatch.setattr(RMSNORM, "evaluate_lm", evaluate_on)
    cfg = RMSNORM.Config(steps=3, batch=2, seq_len=4, eval_batch=3, d_model=8, n_heads=2, d_ff=8)
    RMSNORM.experiment(cfg, Context(config=cfg, device="meta"))
    meta = torch.device("meta")
    assert devices == [(meta, meta), meta] * 2


def test_lm_claims_on_made_up_metrics() -> None:
    from repro.lab.claims import Context

    m = {
        "loss_rmsnorm": [1.6, 2.0, 1.4],
        "loss_layernorm": [1.5, 1.9, 1.8],
        "mean_gap": 0.0667,
        "entropy_floor": 1.0,
        "unigram_entropy": 3.0,
    }
    ctx = Context(config=RMSNORM.Config(seeds=3), run_experiment=lambda c, x: m)
    got = RMSNORM.tiny_lm_comparable_loss(ctx)
    assert got.value == 0.0667
    assert got.details == {
        "loss_rmsnorm": [1.6, 2.0, 1.4],
        "loss_layernorm": [1.5, 1.9, 1.8],
        "entropy_floor": 1.0,
        "unigram_entropy": 3.0,
        "seeds": 3,
    }
    share = RMSNORM.tiny_lm_learns_the_source(ctx)
    assert share.value == pytest.approx((3.0 - 2.0) / 2.0)  # the worst seed
    assert share.details == {
        "share_per_seed": pytest.approx([0.7, 0.5, 0.8]),
        "share_layernorm": pytest.approx([0.75, 0.55, 0.6]),
        "loss_rmsnorm": [1.6, 2.0, 1.4],
        "entropy_floor": 1.0,
        "unigram_entropy": 3.0,
    }
