"""Mamba's claim helpers against independent references: the parameter and byte counts by hand
from the paper's mamba-130m configuration, Theorem 1's simplified-B̄ detail by its own loop, the
accuracy and Δ statistics by loops, the claims that read the experiment on made-up metrics
(lopsided, so a swapped key or a max for a min shows), and the timing claims on a fake benchmark.

The trained models themselves are checked by tests/papers/test_claims.py; the comparison
helpers' negative cases (a broken scan, step or discretisation) are in
tests/papers/test_comparison_helpers.py.
"""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from repro.data.tasks import FIRST_SYMBOL, PAD, SEP, selective_copy
from repro.lab.claims import Context
from repro.lab.library import Library
from repro.lab.threads import torch_threads
from repro.models.mamba import MambaConfig, MambaLM
from repro.train import train

mamba = Library().get("mamba").module()

# mamba-130m as the paper releases it: C = 768, 24 layers, N = 16, E = 2, K = 4,
# R = ⌈768/16⌉ = 48, the GPT-NeoX vocabulary of 50,277 padded to a multiple of 8, tied head.
C, LAYERS, N, E, K = 768, 24, 16, 2, 4
D, R, V = E * C, math.ceil(C / 16), 50_280
MIXER = (
    C * 2 * D  # in_proj (x and z), no bias
    + D * K + D  # depthwise conv1d and its bias
    + D * (R + 2 * N)  # x_proj → (Δ, B, C), no bias
    + R * D + D  # dt_proj and its bias
    + D * N  # A_log
    + D  # the skip D
    + D * C  # out_proj, no bias
)  # fmt: skip
BLOCK = MIXER + C  # + the block's RMSNorm gain


def small_config(**overrides) -> mamba.Config:
    base = dict(noise_len=6, n_data=3, n_symbols=7, extrapolate=3, d_model=8, n_layers=2)
    return mamba.Config(**{**base, **overrides})


def recorder(real, calls: list, *first: str):
    """A stand-in for a plot function: binds the call to the real signature (a dropped
    required argument fails as it would there) and records (the `first` arguments..., the
    rest by name) instead of drawing."""
    signature = inspect.signature(real)

    def record(*args, **kwargs):
        bound = signature.bind(*args, **kwargs).arguments
        calls.append((*(bound.pop(k) for k in first), bound))

    return record


def tiny_lm(cfg: mamba.Config, selective: bool = True, seed: int = 0) -> MambaLM:
    torch.manual_seed(seed)
    return MambaLM(mamba._model_config(cfg, selective)).eval()


# --- 1. derived ------------------------------------------------------------------------------


def test_gating_theorem_and_the_simplified_b_detail_against_their_own_loops() -> None:
    """The value is ~0 (ZOH with N = 1, A = −1, B = 1 is the gated RNN); the detail is the
    distance from the gated RNN to the Euler B̄ = Δ recurrence h ← e^(−Δ)h + Δx, both written
    here as loops over the same draws (seed 3, not the default)."""
    out = mamba.gating_theorem(Context(config=mamba.Config(), seed=3))
    g = torch.Generator().manual_seed(3)
    x = torch.randn(4, 256, 8, generator=g, dtype=torch.float64)
    z = 3 * torch.randn(4, 256, 8, generator=g, dtype=torch.float64)
    delta, gate = F.softplus(z), torch.sigmoid(z)
    h_gate = h_euler = torch.zeros(4, 8, dtype=torch.float64)
    worst = 0.0
    for t in range(256):
        h_gate = (1 - gate[:, t]) * h_gate + gate[:, t] * x[:, t]
        h_euler = torch.exp(-delta[:, t]) * h_euler + delta[:, t] * x[:, t]
        worst = max(worst, (h_euler - h_gate).abs().max().item())
    assert out.value < 1e-12
    assert out.details["max_abs_err_simplified_b"] == pytest.approx(worst, rel=1e-9)
    assert worst > 0.1


def test_mamba_130m_params_against_the_count_by_hand() -> None:
    out = mamba.mamba_130m_params(Context())
    total = V * C + LAYERS * BLOCK + C  # tied embedding, blocks, final norm
    assert out.details == {
        "built": total,
        "analytic": total,
        "padded_vocab": V,
        "dt_rank": R,
        "non_embedding": total - V * C,
    }
    assert out.value == total / 1e6


def test_mamba_130m_params_reports_an_analytic_count_that_disagrees(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    count = mamba.mamba_param_count
    monkeypatch.setattr(mamba, "mamba_param_count", lambda cfg, **kw: count(cfg, **kw) + 1)
    total = V * C + LAYERS * BLOCK + C
    with pytest.raises(AssertionError) as info:
        mamba.mamba_130m_params(Context())
    assert str(info.value) == (f"built {total:,} parameters, the analytic count says {total + 1:,}")


def test_projection_share_against_the_count_by_hand() -> None:
    out = mamba.projection_share(Context())
    assert out.details == {
        "block_params": BLOCK,
        "projection_params_3ED2": 3 * E * C * C,
        "two_blocks_over_12D2": 2 * BLOCK / (12 * C * C),
    }
    assert out.value == 3 * E * C * C / BLOCK
    assert mamba._mixer_params(MambaConfig.from_name("mamba-130m")) == MIXER


def test_projection_share_reports_projections_that_are_not_3ed2(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(mamba, "mamba_projection_params", lambda cfg: 3 * E * C * C + 1)
    with pytest.raises(AssertionError, match=rf"^{3 * E * C * C + 1} != 3ED²$"):
        mamba.projection_share(Context())


def test_state_vs_kv_cache_against_the_bytes_by_hand() -> None:
    """One mamba-130m layer keeps D·N SSM and D·(K−1) conv values; one width-768 attention
    layer keeps K and V, 2,048 × 768 each; fp32 both."""
    out = mamba.state_vs_kv_cache(Context())
    state, kv = 4 * D * (N + K - 1), 4 * 2 * 2048 * C
    assert out.details == {
        "state_bytes_per_layer": state,
        "kv_bytes_per_layer": kv,
        "context": 2048,
        "state_elements_formula": state // 4,
        "kv_elements_formula": kv // 4,
    }
    assert out.value == kv / state


# --- 2. exactness ------------------------------------------------------------------------------


class ScanSpy:
    """Records every scan call (the reference and both parallel scans) and passes it on."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.calls: dict[str, list] = {"ref": [], "parallel": [], "chunked": []}
        for attr, key in (
            ("selective_scan_ref", "ref"),
            ("selective_scan", "parallel"),
            ("selective_scan_chunked", "chunked"),
        ):
            fn = getattr(mamba, attr)
            monkeypatch.setattr(mamba, attr, self.recorder(key, fn))

    def recorder(self, key, fn):
        def call(*args, **kwargs):
            self.calls[key].append((args, kwargs))
            return fn(*args, **kwargs)

        return call


def test_scan_equivalence_feeds_every_case_to_both_scans(monkeypatch: pytest.MonkeyPatch) -> None:
    """Four cases (selective and LTI B/C, with and without h0), each given to the loop and to
    both parallel scans with the same tensors; the chunked scan in chunks of 8 so that L = 21
    spans three, the last partial; Δ positive, A negative, fp64; a small error everywhere."""
    spy = ScanSpy(monkeypatch)
    L = 21
    out = mamba.scan_equivalence(Context(config=mamba.Config(scan_len=L), seed=2))
    assert out.value < 1e-10
    assert out.details["L"] == L and out.details["D"] == 8 and out.details["N"] == 4
    errs = out.details["max_abs_err"]
    assert sorted(errs) == sorted(
        f"{scan}, {bc} B/C, {h} initial state"
        for scan in ("parallel", "chunked")
        for bc in ("selective", "lti")
        for h in ("no", "with an")
    )
    assert max(errs.values()) == out.value
    refs = spy.calls["ref"]
    assert len(refs) == 4 and len(spy.calls["parallel"]) == 4 and len(spy.calls["chunked"]) == 4
    shapes = []
    for i, (args, kwargs) in enumerate(refs):
        u, delta, A, Bt, Ct, Dskip, z, h0 = args
        assert kwargs == {}
        assert u.shape == (2, L, 8) and z.shape == (2, L, 8) and Dskip.shape == (8,)
        assert u.dtype == torch.float64
        assert (delta > 0).all() and (A < 0).all() and A.shape == (8, 4)
        assert (h0 is None) == (i % 2 == 0)
        assert h0 is None or h0.shape == (2, 8, 4)
        shapes.append((tuple(Bt.shape), tuple(Ct.shape)))
        for key in ("parallel", "chunked"):
            p_args, p_kwargs = spy.calls[key][i]
            assert all(a is b for a, b in zip(p_args, args, strict=True))
            assert p_kwargs == ({"chunk": 8} if key == "chunked" else {})
    assert shapes == [((2, L, 4), (2, L, 4))] * 2 + [((8, 4), (8, 4))] * 2
    # the inputs come from the context's seed alone, not from the global generator
    torch.manual_seed(123)
    mamba.scan_equivalence(Context(config=mamba.Config(scan_len=L), seed=2))
    mamba.scan_equivalence(Context(config=mamba.Config(scan_len=L), seed=3))
    first, again, other = refs[0][0], refs[4][0], refs[8][0]
    assert all(torch.equal(a, b) for a, b in zip(first[:7], again[:7], strict=True))
    assert not torch.equal(first[0], other[0])


def test_scan_equivalence_reports_a_wrong_final_state_in_one_case_only(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Outputs right, the final state wrong, and only for LTI B/C with an initial state: the
    value is the worst case's state error, and that case carries it."""
    right = mamba.selective_scan

    def wrong_h(u, delta, A, Bt, Ct, Dskip, z, h0):
        y, h = right(u, delta, A, Bt, Ct, Dskip, z, h0)
        return y, (h + 0.5 if h0 is not None and Bt.dim() == 2 else h)

    monkeypatch.setattr(mamba, "selective_scan", wrong_h)
    out = mamba.scan_equivalence(Context(config=mamba.Config(scan_len=9), seed=0))
    assert out.value == pytest.approx(0.5, abs=1e-9)
    errs = out.details["max_abs_err"]
    assert errs["parallel, lti B/C, with an initial state"] == out.value
    assert max(v for k, v in errs.items() if "parallel, lti B/C, with" not in k) < 1e-10


# --- 3. the selective-copying experiment -------------------------------------------------------


def test_model_config_follows_the_settings() -> None:
    cfg = mamba.Config(d_model=12, n_layers=3, d_state=5, n_symbols=9)
    assert mamba._vocab(cfg) == FIRST_SYMBOL + 9
    for selective in (True, False):
        got = mamba._model_config(cfg, selective)
        want = MambaConfig(
            d_model=12, n_layers=3, d_state=5, vocab_size=FIRST_SYMBOL + 9, selective=selective
        )
        assert got == want


class FixedLogits:
    """A stand-in model that returns the logits it was built with."""

    def __init__(self, logits: torch.Tensor) -> None:
        self.logits = logits

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits


def test_copy_accuracy_against_a_loop_over_the_last_m_positions() -> None:
    g = torch.Generator().manual_seed(0)
    B, L, M, V = 5, 11, 3, 6
    logits = torch.randn(B, L, V, generator=g)
    y = logits[:, -M:].argmax(-1).clone()
    y[0, 0] = (y[0, 0] + 1) % V  # three predictions wrong, at different positions
    y[2, 1] = (y[2, 1] + 2) % V
    y[4, 2] = (y[4, 2] + 1) % V
    right = sum(int(logits[b, L - M + m].argmax() == y[b, m]) for b in range(B) for m in range(M))
    assert mamba.copy_accuracy(FixedLogits(logits), torch.zeros(B, L), y) == pytest.approx(
        right / (B * M), rel=1e-6
    )
    assert right == B * M - 3


def test_eval_sets_are_the_task_at_both_lengths_from_a_fixed_generator() -> None:
    """Two fixed sets, at L and at extrapolate × L, drawn in that order from one generator
    seeded 1234, whatever the global seed."""
    cfg = small_config(n_eval=7)
    torch.manual_seed(0)
    first = mamba._eval_sets(cfg)
    torch.manual_seed(1)
    again = mamba._eval_sets(cfg)
    g = torch.Generator().manual_seed(1234)
    V = FIRST_SYMBOL + 7
    want = {L: selective_copy(7, L, 3, V, g) for L in (6, 18)}
    assert list(first) == [6, 18]
    for L, (x, y) in want.items():
        for sets in (first, again):
            assert torch.equal(sets[L][0], x) and torch.equal(sets[L][1], y)
        assert x.shape == (7, L + 2 * 3)


class FixedDeltas:
    def __init__(self, first_block: torch.Tensor) -> None:
        self.first_block = first_block

    def deltas(self, x: torch.Tensor) -> list[torch.Tensor]:
        return [self.first_block, torch.full_like(self.first_block, 1e6)]


def test_delta_on_tokens_against_a_loop_by_token_kind() -> None:
    """Channel-mean Δ of the first block, averaged over data, noise and marker positions
    (each position one vote), on sequences with different numbers of data tokens."""
    cfg = small_config()
    x, y = selective_copy(4, cfg.noise_len, cfg.n_data, mamba._vocab(cfg), torch.Generator())
    g = torch.Generator().manual_seed(5)
    delta = torch.rand(*x.shape, 3, generator=g) + torch.arange(x.shape[1])[None, :, None]
    M, sums = y.shape[1], {"data": [], "noise": [], "markers": []}
    for b in range(x.shape[0]):
        for t in range(x.shape[1]):
            mean = delta[b, t].mean().item()
            if t >= x.shape[1] - M:
                assert x[b, t] == SEP
                sums["markers"].append(mean)
            else:
                sums["noise" if x[b, t] == PAD else "data"].append(mean)
    got = mamba.delta_on_tokens(FixedDeltas(delta), x, y)
    assert got.keys() == sums.keys()
    for kind, values in sums.items():
        assert got[kind] == pytest.approx(sum(values) / len(values), rel=1e-6)


def test_step_vs_forward_measures_the_relative_error_and_generates_from_half_the_tokens(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A step that is off by 0.25 everywhere gives 0.25 / max|forward|; generation is asked
    twice, cached and not, for the same prompt (the first half) and the same length."""
    cfg = small_config()
    model = tiny_lm(cfg)
    x = torch.randint(0, mamba._vocab(cfg), (3, 9), generator=torch.Generator().manual_seed(2))
    full = model(x)
    step, generate, calls = model.step, model.generate, []

    def off_step(idx, states):
        logits, states = step(idx, states)
        return logits + 0.25, states

    def spy_generate(prompt, n, **kwargs):
        calls.append((prompt, n, kwargs))
        return generate(prompt, n, **kwargs)

    monkeypatch.setattr(model, "step", off_step)
    monkeypatch.setattr(model, "generate", spy_generate)
    out = mamba.step_vs_forward(model, x)
    assert out["max_rel_err"] == pytest.approx(0.25 / full.abs().max().item(), rel=1e-4)
    assert out["tokens"] == 9
    (p1, n1, k1), (p2, n2, k2) = calls
    assert torch.equal(p1, x[:, :4]) and torch.equal(p2, x[:, :4])
    assert n1 == n2 >= 1
    assert k1.get("use_cache", True) is True and k2 == {"use_cache": False}


def test_claims_read_the_experiment_metrics() -> None:
    """The experiment's claims on made-up metrics: every number differs, the gap at L is the
    larger one, so a wrong key, a swapped side or a max for a min changes some value."""
    metrics = {
        "chance": 0.125,
        "selective": {"acc": 0.9, "acc_extrapolated": 0.7, "params": 111},
        "lti": {"acc": 0.2, "acc_extrapolated": 0.4, "params": 99},
        "delta": {"data": 0.6, "noise": 0.15, "markers": 0.3},
        "step": {"max_rel_err": 3e-7, "tokens": 17, "generation_identical": True},
    }
    ctx = Context(config=small_config(extrapolate=5), run_experiment=lambda cfg, ctx: metrics)
    sel = mamba.selective_copy_accuracy(ctx)
    assert sel.value == 0.9
    assert sel.details == {
        "chance": 0.125,
        "lti_acc": 0.2,
        "delta_data_over_noise": 0.6 / 0.15,
        "delta": metrics["delta"],
        "params": 111,
    }
    mech = mamba.selection_is_the_mechanism(ctx)
    assert mech.value == pytest.approx(0.7 - 0.4)
    assert mech.details == {
        "gap_at_L": pytest.approx(0.9 - 0.2),
        "gap_extrapolated": pytest.approx(0.7 - 0.4),
        "selective": {"acc": 0.9, "acc_extrapolated": 0.7},
        "lti": {"acc": 0.2, "acc_extrapolated": 0.4},
        "lti_params": 99,
    }
    ext = mamba.length_extrapolation(ctx)
    assert ext.value == 0.7 and ext.details == {"factor": 5, "lti_acc_extrapolated": 0.4}
    step = mamba.step_equals_forward(ctx)
    assert step.value == 3e-7 and step.details == {"tokens": 17}
    assert mamba.cached_generation_identical(ctx).value is True
    metrics["step"]["generation_identical"] = False
    assert mamba.cached_generation_identical(ctx).value is False


def test_experiment_measures_both_trained_models_on_the_eval_sets(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`trained` replaced by untrained tiny models (two different ones): the metrics are the
    helpers' numbers on the right model and eval set, the models are asked for on one torch
    thread with the run's seed and context, and the plots go to out_dir."""
    cfg = small_config(n_eval=20)
    asked, plots = [], []

    def fake_trained(cfg_, selective, seed, ctx_):
        asked.append((cfg_, selective, seed, ctx_, torch.get_num_threads()))
        out = {"curve_steps": [0, 5 + selective], "curve_acc": [0.1, 0.5 + selective / 4]}
        return tiny_lm(cfg, selective, seed=int(selective)), out

    monkeypatch.setattr(mamba, "trained", fake_trained)
    monkeypatch.setattr(mamba, "save_plots", lambda *a: plots.append(a))
    ctx = Context(config=cfg, seed=4, out_dir=tmp_path)
    with torch_threads(2):  # the experiment must go down to one whatever it is given
        got = mamba.experiment(cfg, ctx)
    assert asked == [(cfg, True, 4, ctx, 1), (cfg, False, 4, ctx, 1)]  # on one thread
    evals = mamba._eval_sets(cfg)
    (x, y), (x_long, y_long) = evals[6], evals[18]
    assert got["chance"] == 1 / 7
    for name, selective in (("selective", True), ("lti", False)):
        model = tiny_lm(cfg, selective, seed=int(selective))
        assert got[name] == {
            "acc": mamba.copy_accuracy(model, x, y),
            "acc_extrapolated": mamba.copy_accuracy(model, x_long, y_long),
            "curve_steps": [0, 5 + selective],
            "curve_acc": [0.1, 0.5 + selective / 4],
            "params": sum(p.numel() for p in model.parameters()),
        }
    selective = tiny_lm(cfg, True, seed=1)
    assert got["delta"] == pytest.approx(mamba.delta_on_tokens(selective, x, y), rel=1e-6)
    step = mamba.step_vs_forward(selective, x[:16])  # outside torch_threads(1): to rounding
    assert got["step"]["max_rel_err"] == pytest.approx(step["max_rel_err"], rel=1e-3, abs=1e-7)
    assert got["step"]["generation_identical"] is step["generation_identical"] is True
    assert got["step"]["tokens"] == x.shape[1]
    ((p_cfg, p_metrics, p_model, p_seq, p_dir),) = plots
    assert p_cfg is cfg and p_metrics is got and p_dir == tmp_path
    assert torch.equal(p_seq, x[0])
    assert all(
        torch.equal(a, b)
        for a, b in zip(p_model.state_dict().values(), selective.state_dict().values(), strict=True)
    )
    plots.clear()
    mamba.experiment(cfg, Context(config=cfg, seed=4))
    assert plots == []


def test_trained_caches_on_the_training_settings_and_returns_the_model_in_eval_mode(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    cfg = small_config(n_eval=33, scan_len=5, time_lengths=(8, 16))
    source = tiny_lm(cfg, selective=False, seed=7)
    seen, stored = {}, {"state": source.state_dict(), "curve_steps": [1]}

    def fake_cached_state(name, key, compute, code):
        seen.update(name=name, key=key, code=code, compute=compute)
        return stored

    monkeypatch.setattr(mamba, "cached_state", fake_cached_state)
    model, out = mamba.trained(cfg, False, 11, Context(config=cfg))
    assert seen["name"] == "mamba-selective-copy"
    settings = {
        f: getattr(cfg, f)
        for f in cfg.__dataclass_fields__
        if f not in ("n_eval", "scan_len", "time_lengths")
    }
    assert seen["key"] == {**settings, "selective": False, "seed": 11}
    assert mamba._train_copy in seen["code"] and mamba.copy_accuracy in seen["code"]
    assert not model.training and out is stored
    assert model.cfg.selective is False
    for a, b in zip(model.state_dict().values(), source.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_trained_computes_with_its_own_arguments(monkeypatch: pytest.MonkeyPatch) -> None:
    """On a cache miss the training is run with the config, side, seed and context given."""
    cfg, ctx, args = small_config(), Context(config=small_config()), []
    model = tiny_lm(cfg, selective=True)
    monkeypatch.setattr(mamba, "cached_state", lambda name, key, compute, code: compute())
    monkeypatch.setattr(
        mamba, "_train_copy", lambda *a: args.append(a) or {"state": model.state_dict()}
    )
    mamba.trained(cfg, True, 5, ctx)
    assert args == [(cfg, True, 5, ctx)]


@pytest.mark.parametrize("selective", [True, False])
def test_train_copy_against_a_reference_loop(selective: bool) -> None:
    """A few AdamW steps (library `train`, the config's lr) on fresh batches from a generator
    seeded seed + 1, the loss the cross-entropy of the last M outputs; the model initialised
    under `seed`. The accuracy curve: every eval_every steps from 0, and at the end, on 256
    sequences drawn from a generator seeded 99; progress named after the model."""
    cfg = small_config(steps=5, eval_every=2, batch=3, lr=5e-3)
    V, M, seen = mamba._vocab(cfg), cfg.n_data, []
    ctx = Context(config=cfg, progress=lambda *a: seen.append(a))
    got = mamba._train_copy(cfg, selective, 8, ctx)

    torch.manual_seed(8)
    ref = MambaLM(mamba._model_config(cfg, selective))
    curve_x, curve_y = selective_copy(256, cfg.noise_len, M, V, torch.Generator().manual_seed(99))
    at_start = mamba.copy_accuracy(ref, curve_x, curve_y)
    g = torch.Generator().manual_seed(9)

    def loss(step: int) -> torch.Tensor:
        x, y = selective_copy(cfg.batch, cfg.noise_len, M, V, g)
        return F.cross_entropy(ref(x)[:, -M:].reshape(-1, V), y.reshape(-1))

    train(ref, loss, 5, lr=5e-3)
    assert got["state"].keys() == ref.state_dict().keys()
    for name, value in ref.state_dict().items():
        assert torch.equal(got["state"][name], value), name
    assert got["curve_steps"] == [0, 2, 4, 5]
    assert len(got["curve_acc"]) == 4 and got["curve_acc"][0] == at_start
    assert got["curve_acc"][-1] == mamba.copy_accuracy(ref, curve_x, curve_y)
    assert seen[-1] == ("selective" if selective else "LTI control", 5, 5)


def test_save_plots_draws_both_curves_chance_and_the_delta_heatmap(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Plot data only (titles and axis labels are plot text): the two accuracy curves as
    measured, chance flat from step 0 to the last step, and the Δ heat map of one sequence."""
    cfg = small_config(steps=40, n_symbols=8)
    metrics = {
        "chance": 0.125,
        "selective": {"curve_steps": [0, 20, 40], "curve_acc": [0.1, 0.6, 0.95]},
        "lti": {"curve_steps": [0, 20, 40], "curve_acc": [0.12, 0.3, 0.4]},
    }
    lines, maps = [], []
    monkeypatch.setattr(
        mamba, "save_line_plot", recorder(mamba.save_line_plot, lines, "path", "series")
    )
    monkeypatch.setattr(mamba, "save_delta_heatmap", lambda *a: maps.append(a))
    model, seq = tiny_lm(cfg), torch.tensor([PAD, FIRST_SYMBOL + 2, PAD, SEP])
    mamba.save_plots(cfg, metrics, model, seq, tmp_path)
    ((path, series, kw),) = lines
    assert path == tmp_path / "accuracy_vs_steps.svg"
    assert series == {
        "selective (S6)": ([0, 20, 40], [0.1, 0.6, 0.95]),
        "LTI control": ([0, 20, 40], [0.12, 0.3, 0.4]),
        "chance": ([0, 40], [0.125, 0.125]),
    }
    assert {"xlabel", "ylabel", "title"} <= kw.keys()
    assert maps == [(model, seq, tmp_path / "delta_heatmap.svg")]


def test_save_delta_heatmap_is_log10_delta_of_the_first_block_with_token_labels(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    cfg = small_config()
    model, drawn = tiny_lm(cfg), []
    monkeypatch.setattr(
        mamba, "save_heatmap", recorder(mamba.save_heatmap, drawn, "path", "values")
    )
    seq = torch.tensor([PAD, FIRST_SYMBOL + 4, PAD, FIRST_SYMBOL, PAD, SEP, SEP])
    mamba.save_delta_heatmap(model, seq, tmp_path / "d.svg")
    ((path, values, kw),) = drawn
    with torch.no_grad():
        delta = model.deltas(seq[None])[0][0]  # (L, D), first block
    assert path == tmp_path / "d.svg"
    assert torch.tensor(values).shape == (cfg.d_model * 2, len(seq))  # channels × positions
    assert torch.allclose(torch.tensor(values), delta.T.log10())
    assert kw["xticklabels"] == ["·", "4", "·", "0", "·", "▶", "▶"]
    assert {"xlabel", "ylabel", "title", "colorbar"} <= kw.keys()


# --- 4. benchmarks -----------------------------------------------------------------------------


def test_timing_claims_share_one_benchmark_and_read_its_exponents(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """One bench_scan call per context for both claims, over the configured lengths (not
    sorted, so the largest is not the last), and the FLOP ratio at the largest length."""
    rows = [
        {"impl": impl, "L": L, "ms": ms * L}
        for impl, ms in (("scan_loop", 1.0), ("scan_parallel", 0.5), ("naive", 0.1))
        for L in (64, 16, 32)
    ]
    out = {"rows": rows, "exponents": {"scan_loop": 1.1, "scan_parallel": 0.9, "naive": 1.8}}
    calls, plots = [], []

    def fake_bench(lengths, impls):
        calls.append((lengths, impls))
        return out

    monkeypatch.setattr(mamba.scan_bench, "bench_scan", fake_bench)
    monkeypatch.setattr(
        mamba, "save_line_plot", recorder(mamba.save_line_plot, plots, "path", "series")
    )
    ctx = Context(config=mamba.Config(time_lengths=[64, 16, 32]), out_dir=tmp_path)
    lin = mamba.scan_linear_time(ctx)
    quad = mamba.attention_quadratic_time(ctx)
    assert calls == [((64, 16, 32), ("scan_loop", "scan_parallel", "naive"))]
    assert lin.value == 1.1
    assert lin.details == {"exponents": out["exponents"], "rows": rows, "flop_exponent": 1.0}
    assert quad.value == 1.8
    ratio = (2 * 64 * 64 * 64) / (mamba.scan_bench.SCAN_FLOPS_PER_ELEMENT * 64 * 64 * 16)
    assert quad.details == {
        "exponents": out["exponents"],
        "flop_exponent": 2.0,
        "attention_over_scan_flops_at_64": pytest.approx(ratio),
    }
    ((path, series, kw),) = plots
    assert path == tmp_path / "time_vs_length.svg"
    assert kw["logx"] is True and kw["logy"] is True
    assert series == {
        impl: ([64, 16, 32], [ms * 64, ms * 16, ms * 32])
        for impl, ms in (("scan_loop", 1.0), ("scan_parallel", 0.5), ("naive", 0.1))
    }
    other = Context(config=mamba.Config(time_lengths=(8, 16)))  # a new context measures again
    mamba.scan_linear_time(other)
    assert len(calls) == 2 and len(plots) == 1


def test_a_context_with_a_freed_contexts_id_measures_again(monkeypatch: pytest.MonkeyPatch):
    """Python reuses the id of a freed object: a new context must not get the old benchmark."""
    calls = []

    def fake_bench(lengths, impls):
        calls.append(lengths)
        return {"rows": [], "exponents": {"scan_loop": float(len(calls)), "naive": 2.0}}

    monkeypatch.setattr(mamba.scan_bench, "bench_scan", fake_bench)
    first = Context(config=mamba.Config(time_lengths=(8, 16)))
    assert mamba.scan_linear_time(first).value == 1.0
    stale = id(first)
    del first
    second = Context(config=mamba.Config(time_lengths=(32, 64)))
    monkeypatch.setitem(mamba._TIMINGS, id(second), mamba._TIMINGS[stale])  # as if id reused
    assert mamba.scan_linear_time(second).value == 2.0 and calls[-1] == (32, 64)
