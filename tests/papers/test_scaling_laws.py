"""Controls of papers/scaling-laws/repro.py's measured claims that the experiment does not run
itself: each feeds the claim's helper a variant that must fail the claim's tolerance."""

from __future__ import annotations

import math
import types

import pytest
import torch

from repro.data.zipf_facts import entropy_floor
from repro.lab.counting import mlp_param_count
from repro.lab.library import Library
from repro.scaling.facts_runs import budget_run, converged_run, model_config
from repro.scaling.power_law import bootstrap_exponent, fit_power_law, fit_power_law_with_floor

SL = Library().get("scaling-laws")
REPRO = SL.module()
CLAIMS = {c.id: c for c in SL.note.claims}


def _passes(claim_id: str, value: float) -> bool:
    spec = CLAIMS[claim_id].tolerance
    if spec.rel is not None:
        return abs(value - CLAIMS[claim_id].expected) <= spec.rel * abs(CLAIMS[claim_id].expected)
    lo, hi = spec.range
    return (lo is None or value >= lo) and (hi is None or value <= hi)


def _noisy(values: list[float], rel: float, seed: int) -> list[float]:
    g = torch.Generator().manual_seed(seed)
    noise = torch.randn(len(values), generator=g, dtype=torch.float64) * rel
    return [v * (1 + float(e)) for v, e in zip(values, noise, strict=True)]


def test_floor_of_another_source_is_rejected() -> None:
    """floor-recovered: E/H within ±3% for the right source, outside it for the ε = 0.2 floor."""
    h = entropy_floor(32, 0.1)
    other = entropy_floor(32, 0.2)
    n = [w * w + w for w in (4, 8, 16, 32, 64)]  # the quick preset's N
    for seed in (0, 1, 2):
        right = fit_power_law_with_floor(n, _noisy([h + 3.0 * x**-0.7 for x in n], 0.002, seed))
        wrong = fit_power_law_with_floor(n, _noisy([other + 3.0 * x**-0.7 for x in n], 0.002, seed))
        assert _passes("floor-recovered", right.floor / h)
        assert not _passes("floor-recovered", wrong.floor / h)


def test_same_tail_on_both_sides_fails_the_difference_bar() -> None:
    """exponent-tracks-tail: two sources with one exponent give a difference below 0.15."""
    n = [w * w + w for w in (4, 8, 16, 32)]
    for seed in (0, 1, 2):
        a = fit_power_law(n, _noisy([2.0 * x**-0.5 for x in n], 0.05, seed)).alpha
        b = fit_power_law(n, _noisy([2.0 * x**-0.5 for x in n], 0.05, seed + 10)).alpha
        assert not _passes("exponent-tracks-tail", a - b)
    # and a real difference of 0.3 passes the same check
    light = fit_power_law(n, [2.0 * x**-0.7 for x in n]).alpha
    heavy = fit_power_law(n, [2.0 * x**-0.4 for x in n]).alpha
    assert _passes("exponent-tracks-tail", light - heavy)


def test_twins_of_the_same_size_fail_the_bar() -> None:
    """sample-efficiency: the small width against twins of the same width (other seeds) on the
    same stream, with the claim's rule; every pair of seeds 0–2 must stay below the bar."""
    cfg = REPRO.PRESETS["quick"]
    ctx = types.SimpleNamespace(device="cpu")
    width = cfg.efficiency_widths[0]
    runs = []
    for seed in (0, 1, 2):
        p = REPRO._point(cfg, ctx, width, seed)
        del p["steps"]
        n = mlp_param_count(model_config(p))
        p.update(budget=6 * n * cfg.efficiency_samples, batch=cfg.efficiency_batch,
                 lr=cfg.efficiency_lr, eval_every=cfg.eval_every)  # fmt: skip
        runs.append(budget_run(p))
    ratios = []
    for a in runs:
        for b in runs:
            if a is not b:
                target = a["loss"]
                ratios.append(
                    REPRO.samples_to(a["curve"], target) / REPRO.samples_to(b["curve"], target)
                )
    assert max(ratios) > 1.0  # seed noise alone moves the ratio ...
    assert not any(_passes("sample-efficiency", r) for r in ratios)  # ... but not past the bar


# --- the claim helpers against hand counts, and the sweep plumbing on fakes -------------------


def test_n_12_layer_d2_against_gpt3_175b_by_hand() -> None:
    """GPT-3 175B: 96 layers of width 12,288; each layer has 12·d² weights plus 13·d biases and
    LayerNorm gains/biases (4d attention biases, 5d FFN biases, 2·2d norms), one final norm."""
    L, d = 96, 12288
    approx = 12 * L * d**2
    built = approx + L * 13 * d + 2 * d
    out = REPRO.n_12_layer_d2(None)
    assert out.details == {
        "12_n_layer_d_model_sq": approx,
        "built_nonembedding": built,
        "kaplan_count": approx,
        "biases_and_norms": built - approx,
    }
    assert out.value == approx / built


def test_flop_counts_of_the_small_gpt_by_hand() -> None:
    """Per token of the 2-layer, width-64, 32-token, 96-symbol GPT: 2 FLOPs per weight forward,
    6 in training (N = 12·L·d²); the QK and AV products 2·T·d each per layer; the head 2·d·V;
    a training step 3× the forward (only matmuls are counted)."""
    L, d, T, V = 2, 64, 32, 96
    n = 12 * L * d**2
    attention, head = L * 4 * T * d, 2 * d * V
    six = REPRO.six_n_per_token(None)
    assert six.value == 1.0  # integer counts: exact
    assert six.details == pytest.approx(rel=1e-15, expected={
        "counted_train_per_token": 6 * n,
        "six_n": 6 * n,
        "forward_over_2n": 1.0,
        "train_over_forward": 3.0,
        "ratio_with_biases_and_norms_in_n": 6 * n / (6 * (n + L * 13 * d + 2 * d)),
    })  # fmt: skip
    att = REPRO.attention_flops_eq_2_2(None)
    assert att.value == pytest.approx(attention / (2 * L * T * d))
    assert att.details == pytest.approx(rel=1e-15, expected={
        "counted_attention_per_token": attention,
        "kaplan_term": 2 * L * T * d,
        "counted_forward_without_head": 2 * n + attention,
        "kaplan_c_forward": 2 * n + 2 * L * T * d,
        "head_per_token": head,
    })  # fmt: skip


def test_table6_and_eq_4_4_arithmetic_on_the_printed_exponents() -> None:
    p_n, p_b, p_s, p_d, a_n, a_d = 0.73, 0.24, 0.03, 0.27, 0.076, 0.103
    assert REPRO.table6_pn_plus_pd(None).value == p_n + p_d
    out = REPRO.table6_pb_plus_ps(None)
    assert out.value == p_b + p_s - p_d and out.details == {"p_B + p_S": p_b + p_s, "p_D": p_d}
    out = REPRO.alpha_ratio(None)
    assert out.value == a_n / a_d and out.details == {"8x_model_needs_data_x": 8 ** (a_n / a_d)}
    assert REPRO.eight_x_model_data(None).value == 8 ** (a_n / a_d)
    assert REPRO.ten_x_compute_n(None).value == 10**p_n
    assert REPRO.ten_x_compute_d(None).value == 10**p_d


def test_point_carries_every_setting_and_the_source_overrides() -> None:
    cfg = REPRO.Config(zipf_s=1.7, n_keys=99, noise=0.3, vocab_size=11, code_dim=5, steps=7,
                       lr=0.5)  # fmt: skip
    ctx = types.SimpleNamespace(device="meta")
    assert REPRO._point(cfg, ctx, 6, 3, zipf_s=1.1, n_keys=5) == {
        "n_keys": 5, "zipf_s": 1.1, "vocab_size": 11, "noise": 0.3, "code_dim": 5,
        "source_seed": 1234, "width": 6, "n_hidden": 1, "seed": 3, "steps": 7, "lr": 0.5,
        "device": "meta",
    }  # fmt: skip


def test_samples_to_is_the_first_point_at_or_below_the_target() -> None:
    curve = [(0, 3.0), (10, 2.0), (20, 1.5), (30, 1.0), (40, 1.2), (50, 0.9)]
    assert REPRO.samples_to(curve, 1.5) == 20
    assert REPRO.samples_to(curve, 1.1) == 30  # the first, not a later one
    assert REPRO.samples_to(curve, 1.0 - 1e-13) == 30  # within 1e-12 counts as reached
    assert REPRO.samples_to(curve, 1.0 - 1e-12) == 30  # and 1e-12 itself
    assert REPRO.samples_to(curve, 0.5) == math.inf


def _fake_law_runs(seeds=(0, 1), widths=(4, 8, 16, 32, 64), floor=1.2) -> list[dict]:
    runs = []
    for seed in seeds:
        for w in widths:
            n = w * w + w
            loss = floor + 0.02 * seed + 3.0 * n**-0.6 * (1 + 0.003 * (w % 3))
            runs.append({"n_nonembed": n, "n_params": n + 100, "seed": seed, "floor": floor,
                         "loss": loss})  # fmt: skip
    return runs


def test_law_fits_every_run_and_the_floor_from_the_mean_losses() -> None:
    """Two seeds listed seed-major: the power law and its bootstrap over every run (n_boot and
    level from the config), the floor fit on the per-size mean loss, one floor fit per seed."""
    runs = _fake_law_runs()
    cfg = REPRO.Config(n_boot=50, level=0.8)
    got = REPRO._law(runs, cfg)
    n = [r["n_nonembed"] for r in runs]
    excess = [r["loss"] - r["floor"] for r in runs]
    fit = fit_power_law(n, excess)
    ci = bootstrap_exponent(n, excess, n_boot=50, level=0.8)
    sizes = sorted(set(n))
    mean = [(runs[i]["loss"] + runs[i + 5]["loss"]) / 2 for i in range(5)]
    floor = fit_power_law_with_floor(sizes, mean)
    per_seed = [fit_power_law_with_floor(sizes, [r["loss"] for r in runs if r["seed"] == s]).floor
                for s in (0, 1)]  # fmt: skip
    assert got["n_nonembed"] == n and got["n_params"] == [r["n_params"] for r in runs]
    assert got["loss"] == [r["loss"] for r in runs] and got["excess"] == excess
    assert got["seeds"] == [0] * 5 + [1] * 5 and got["floor"] == 1.2
    assert got["alpha"] == pytest.approx(fit.alpha, rel=1e-9)
    assert got["coef"] == pytest.approx(fit.coef, rel=1e-9)
    assert got["r2"] == pytest.approx(fit.r2, rel=1e-9)
    assert got["decades"] == pytest.approx(fit.decades, rel=1e-9)
    assert got["ci"] == pytest.approx([ci.low, ci.high], rel=1e-9)
    assert got["floor_fit"] == pytest.approx(
        {"E": floor.floor, "A": floor.coef, "alpha": floor.alpha}, rel=1e-9
    )
    assert got["floor_fit_per_seed"] == pytest.approx(per_seed, rel=1e-9)
    assert per_seed[0] != pytest.approx(per_seed[1], rel=1e-6)
    default_level = bootstrap_exponent(n, excess, n_boot=50)
    assert [default_level.low, default_level.high] != pytest.approx(got["ci"], rel=1e-6)


def test_law_skips_floor_fits_below_four_sizes() -> None:
    runs = _fake_law_runs(seeds=(0,), widths=(4, 8, 16))
    got = REPRO._law(runs, REPRO.Config(n_boot=20))
    assert got["floor_fit"] is None and got["floor_fit_per_seed"] == []
    runs = _fake_law_runs(seeds=(0,), widths=(4, 8, 16, 32))  # four: both fitted
    got = REPRO._law(runs, REPRO.Config(n_boot=20))
    assert got["floor_fit"] is not None and len(got["floor_fit_per_seed"]) == 1


def test_sweep_runs_converged_points_and_tags_their_seeds(monkeypatch) -> None:
    seen = {}

    def fake(kind, points, run_point, code, jobs, progress, description):
        seen.update(kind=kind, run_point=run_point, code=code, jobs=jobs, progress=progress,
                    description=description)  # fmt: skip
        return [{"loss": float(i)} for i in range(len(points))]

    def progress(*a):
        pass

    monkeypatch.setattr(REPRO, "run_sweep", fake)
    cfg = REPRO.Config(jobs=3)
    ctx = types.SimpleNamespace(progress=progress)
    points = [{"seed": 5}, {"seed": 9}]
    assert REPRO._sweep(cfg, ctx, "a name", points) == [
        {"loss": 0.0, "seed": 5}, {"loss": 1.0, "seed": 9}]  # fmt: skip
    assert seen == {"kind": "scaling-laws-converged", "run_point": converged_run,
                    "code": REPRO.SWEEP_CODE, "jobs": 3, "progress": progress,
                    "description": "a name"}  # fmt: skip
    monkeypatch.setattr(REPRO, "run_sweep", lambda *a, **kw: [{"loss": 0.0}])
    with pytest.raises(ValueError, match="zip"):
        REPRO._sweep(cfg, ctx, "a name", points)


def test_efficiency_runs_both_widths_on_the_same_stream(monkeypatch) -> None:
    """Budget points: C = 6·N·samples for each width, the curve settings, the first seed; the
    target is the small model's final loss and each curve's first point reaching it."""
    cfg = REPRO.Config(efficiency_widths=(8, 32), efficiency_samples=1000, efficiency_batch=10,
                       efficiency_lr=0.02, eval_every=3, seeds=(4, 6), jobs=2)  # fmt: skip
    seen = {}

    def fake(kind, points, run_point, code, jobs, progress, description):
        seen.update(kind=kind, points=points, run_point=run_point, code=code, jobs=jobs,
                    progress=progress, description=description)  # fmt: skip
        return [
            {"loss": 1.0, "n_params": 11, "curve": [(0, 3.0), (500, 1.5), (1000, 1.0)]},
            {"loss": 0.7, "n_params": 22, "curve": [(0, 3.0), (300, 1.0), (1000, 0.7)]},
        ]

    def progress(*a):
        pass

    monkeypatch.setattr(REPRO, "run_sweep", fake)
    ctx = types.SimpleNamespace(device="cpu", progress=progress)
    got = REPRO._efficiency(cfg, ctx)
    want = []
    for w in (8, 32):
        p = REPRO._point(cfg, ctx, w, 4)
        del p["steps"]
        n = mlp_param_count(model_config(p))
        want.append({**p, "budget": 6 * n * 1000, "batch": 10, "lr": 0.02, "eval_every": 3})
    assert seen == {"kind": "scaling-laws-curves", "points": want, "run_point": budget_run,
                    "code": REPRO.SWEEP_CODE, "jobs": 2, "progress": progress,
                    "description": "learning curves"}  # fmt: skip
    assert got == {"target_loss": 1.0, "samples_small": 1000, "samples_large": 300,
                   "curves": [[(0, 3.0), (500, 1.5), (1000, 1.0)],
                              [(0, 3.0), (300, 1.0), (1000, 0.7)]],
                   "n_params": [11, 22]}  # fmt: skip


def _claim(name: str, metrics: dict):
    from repro.lab.claims import Context

    return getattr(REPRO, name)(Context(run_experiment=lambda cfg, ctx: metrics))


def test_claims_read_the_experiment_metrics() -> None:
    main = {"alpha": 0.6, "ci": [0.5, 0.7], "r2": 0.99, "decades": 2.0, "floor": 2.0,
            "floor_fit": {"E": 2.1, "alpha": 0.55}, "floor_fit_per_seed": [1.9, 2.2]}  # fmt: skip
    control = {"alpha": 0.01, "ci": [-0.1, 0.2], "r2": 0.1, "excess": [0.5, 0.4]}
    metrics = {
        "main": main, "control": control,
        "tail_light": {"alpha": 0.8, "ci": [0.7, 0.9]},
        "tail_heavy": {"alpha": 0.3, "ci": [0.2, 0.4], "r2": 0.95},
        "efficiency": {"target_loss": 1.0, "samples_small": 900, "samples_large": 300,
                       "n_params": [1, 2], "curves": []},
    }  # fmt: skip
    details = {"alpha": 0.6, "ci": [0.5, 0.7], "r2": 0.99, "decades": 2.0,
               "control_alpha": 0.01, "control_ci": [-0.1, 0.2], "control_r2": 0.1}  # fmt: skip
    out = _claim("excess_power_law", metrics)
    assert out.value == 0.5 and out.details == details
    out = _claim("excess_power_law_r2", metrics)
    assert out.value == 0.99 and out.details == details
    out = _claim("control_no_law", metrics)
    assert out.value == 1
    assert out.details == {"control_alpha": 0.01, "control_ci": [-0.1, 0.2], "control_r2": 0.1,
                           "control_excess": [0.5, 0.4]}  # fmt: skip
    out = _claim("floor_recovered", metrics)
    assert out.value == 2.1 / 2.0
    assert out.details == {"E": 2.1, "H": 2.0, "alpha_of_floor_fit": 0.55,
                           "E_over_H_per_seed": [1.9 / 2.0, 2.2 / 2.0]}  # fmt: skip
    out = _claim("exponent_tracks_tail", metrics)
    assert out.value == pytest.approx(0.5)
    assert out.details == {"alpha_light": 0.8, "ci_light": [0.7, 0.9], "alpha_heavy": 0.3,
                           "ci_heavy": [0.2, 0.4], "r2_heavy": 0.95}  # fmt: skip
    out = _claim("sample_efficiency", metrics)
    assert out.value == 3.0
    assert out.details == {"target_loss": 1.0, "samples_small": 900, "samples_large": 300,
                           "n_params": [1, 2]}  # fmt: skip
    control["ci"] = [-0.2, 0.0]  # an interval ending at 0 covers it
    assert _claim("control_no_law", metrics).value == 1
    main["decades"] = 1.49
    with pytest.raises(ValueError) as info:
        _claim("excess_power_law_r2", metrics)
    assert str(info.value) == "the widths span 1.49 decades of N; the claim needs 1.5"
    main["decades"] = 1.5  # the bar itself passes
    assert _claim("excess_power_law_r2", metrics).value == 0.99


def test_experiment_sweeps_main_tail_and_control_and_fits_each(monkeypatch, tmp_path) -> None:
    """Fake sweeps tag each run with its point; the light-tail law is the main sweep's runs at
    the tail widths (every seed), the heavy tail and the control have their own sources."""
    from repro.lab.claims import Context

    cfg = REPRO.Config(widths=(4, 8, 16), tail_widths=(8, 16), control_widths=(4, 32),
                       seeds=(0, 2), tail_s=1.1, tail_n_keys=77, control_noise=0.9)  # fmt: skip
    ctx = Context(config=cfg, out_dir=tmp_path)
    sweeps, plotted = [], []

    def fake_sweep(cfg_, ctx_, name, points):
        assert cfg_ is cfg and ctx_ is ctx
        sweeps.append((name, points))
        return [{"point": p} for p in points]

    monkeypatch.setattr(REPRO, "_sweep", fake_sweep)
    monkeypatch.setattr(REPRO, "_law", lambda runs, cfg_: ("law", [r["point"] for r in runs], cfg_))
    monkeypatch.setattr(REPRO, "_efficiency", lambda cfg_, ctx_: ("efficiency", cfg_, ctx_))
    monkeypatch.setattr(REPRO, "_plots", lambda m, cfg_, ctx_: plotted.append((m, cfg_, ctx_)))
    m = REPRO.experiment(cfg, ctx)

    def point(w, s, **source):
        return REPRO._point(cfg, ctx, w, s, **source)

    main = [point(w, s) for s in (0, 2) for w in (4, 8, 16)]
    heavy = [point(w, s, zipf_s=1.1, n_keys=77) for s in (0, 2) for w in (8, 16)]
    control = [point(w, s, noise=0.9) for s in (0, 2) for w in (4, 32)]
    assert sweeps == [("L(N), s main", main), ("L(N), heavy tail", heavy),
                      ("L(N), ε = 1 control", control)]  # fmt: skip
    assert m == {
        "main": ("law", main, cfg),
        "tail_light": ("law", [p for p in main if p["width"] in (8, 16)], cfg),
        "tail_heavy": ("law", heavy, cfg),
        "control": ("law", control, cfg),
        "efficiency": ("efficiency", cfg, ctx),
    }
    assert plotted == [(m, cfg, ctx)]
    ctx = Context(config=cfg)  # no out_dir: no plots
    REPRO.experiment(cfg, ctx)
    assert len(plotted) == 1


def test_plots_draw_the_measured_law_the_fits_and_the_curves(line_plots, tmp_path) -> None:
    """Plot data (titles and axis labels are plot text): mean loss over seeds per size, the floor
    fit and both floors, the excess of both sources with their fitted lines over the main
    sizes, and the learning curves without their zero-sample point."""
    from repro.lab.claims import Context

    drawn = line_plots(REPRO)
    main = {"n_nonembed": [20, 72, 20, 72, 272], "loss": [2.0, 1.5, 2.2, 1.7, 1.3],
            "excess": [0.8, 0.3, 1.0, 0.5, 0.1], "floor": 1.2, "alpha": 0.6, "coef": 5.0,
            "floor_fit": {"E": 1.1, "A": 9.0, "alpha": 0.7}}  # fmt: skip
    heavy = {"n_nonembed": [20, 72], "excess": [0.9, 0.6], "alpha": 0.3, "coef": 2.0}
    eff = {"n_params": [11, 22], "curves": [[(0, 3.0), (1, 2.5), (8, 2.0), (16, 1.5)],
                                            [(0, 3.1), (8, 1.8), (16, 1.2)]]}  # fmt: skip
    cfg = REPRO.Config(zipf_s=2.0, tail_s=1.3)
    REPRO._plots({"main": main, "tail_heavy": heavy, "efficiency": eff}, cfg,
                 Context(out_dir=tmp_path))  # fmt: skip
    (p1, law, kw1), (p2, excess, kw2), (p3, curves, kw3) = drawn
    sizes = [20, 72, 272]
    assert p1 == tmp_path / "loss_vs_n.svg" and kw1["logx"] is True and not kw1.get("logy")
    assert list(law.values()) == [
        (sizes, [2.1, 1.6, 1.3]),
        (sizes, [1.1 + 9.0 * s**-0.7 for s in sizes]),
        ([20, 272], [1.1, 1.1]),
        ([20, 272], [1.2, 1.2]),
    ]
    assert list(law.values())[0][1] == pytest.approx([2.1, 1.6, 1.3])
    assert p2 == tmp_path / "excess_vs_n.svg" and kw2["logx"] is True and kw2["logy"] is True
    assert list(excess.values()) == [
        ([20, 72, 20, 72, 272], [0.8, 0.3, 1.0, 0.5, 0.1]),
        (sizes, [5.0 * s**-0.6 for s in sizes]),
        ([20, 72], [0.9, 0.6]),
        (sizes, [2.0 * s**-0.3 for s in sizes]),
    ]
    assert list(excess)[0].startswith("s = 2.0") and list(excess)[2].startswith("s = 1.3")
    assert p3 == tmp_path / "learning_curves.svg" and kw3["logx"] is True
    assert curves == {"N = 11": ([1, 8, 16], [2.5, 2.0, 1.5]), "N = 22": ([8, 16], [1.8, 1.2])}


def test_efficiency_compares_the_first_and_the_last_width(monkeypatch) -> None:
    """With three widths the large model is the last one, not the second."""
    cfg = REPRO.Config(efficiency_widths=(8, 16, 32))
    curves = [[(0, 3.0), (100, 1.0)], [(0, 3.0), (60, 1.0)], [(0, 3.0), (20, 1.0)]]
    monkeypatch.setattr(REPRO, "run_sweep", lambda *a, **kw: [
        {"loss": 1.0, "n_params": i, "curve": c} for i, c in enumerate(curves)])  # fmt: skip
    got = REPRO._efficiency(cfg, types.SimpleNamespace(device="cpu", progress=None))
    assert got["samples_small"] == 100 and got["samples_large"] == 20
