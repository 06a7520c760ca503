"""Pieces of papers/chinchilla/repro.py beyond its claims: App. F's FLOP count."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

import repro.data.zipf_facts as zipf_facts
import repro.lab.counting as counting
import repro.models.mlp as mlp
import repro.scaling.facts_runs as facts_runs
import repro.train as train_module
from repro.lab.claims import Context
from repro.lab.library import Library
from repro.scaling.closed_form import LossSurface

CH = Library().get("chinchilla").module()


@pytest.mark.parametrize(("layers", "d", "heads", "kv", "d_ff", "vocab"), [(3, 48, 4, 12, 200, 97)])
def test_appendix_f_is_six_flops_per_matmul_weight_without_attention_scores(
    layers: int, d: int, heads: int, kv: int, d_ff: int, vocab: int
) -> None:
    """With a one-token context the QK and softmax terms are per-token constants; subtracting
    them leaves 6 FLOPs per weight of every matmul (Q, K, V, O, FFN, embedding and logits)."""
    per_token = CH.appendix_f_flops_per_token(layers, d, heads, kv, d_ff, vocab, seq_len=1)
    inner = heads * kv
    weights = layers * (3 * d * inner + inner * d + 2 * d * d_ff) + 2 * vocab * d
    scores = layers * 3 * (2 * inner + 3 * heads + 2 * inner)  # fwd + bwd of logits, softmax, AV
    assert per_token == 6 * weights + scores


def test_attention_scores_grow_with_the_context() -> None:
    """Doubling the context adds exactly 3·layers·(4·inner + 3·heads) FLOPs per token per
    extra position: the T×T terms, counted per token, grow linearly in T."""
    args = (2, 32, 4, 8, 128, 50)
    a = CH.appendix_f_flops_per_token(*args, seq_len=64)
    b = CH.appendix_f_flops_per_token(*args, seq_len=128)
    assert b - a == pytest.approx(3 * 2 * (4 * 4 * 8 + 3 * 4) * 64)


def test_minima_that_do_not_move_with_compute_fail_nopt_grows_with_c() -> None:
    """Control of nopt-grows-with-c: valleys whose vertex sits at the same N for every budget
    (the toy's three budgets, five sizes, 0.5% noise) give an 80% interval of a near 0 — its lower
    end is above 0 for 2 seeds in 6, so the bar is 0.2, not 0 — which the claim's bar rejects;
    vertices moving as C^0.5 pass it."""
    import math

    import torch

    from repro.scaling.isoflop import fit_approach2

    note = Library().get("chinchilla").note
    lo, hi = next(c for c in note.claims if c.id == "nopt-grows-with-c").tolerance.range
    budgets = [3e7, 1.2e8, 4.8e8]

    def profiles(slope: float, seed: int) -> tuple[list, list, list]:
        g = torch.Generator().manual_seed(seed)
        cs, ns, ls = [], [], []
        for c in budgets:
            center = math.log(300.0) + slope * math.log(c / budgets[0])
            for j in range(5):
                x = center + 0.8 * (j - 2)
                ls.append(
                    (1.0 + 0.05 * (x - center) ** 2)
                    * (1 + 0.005 * float(torch.randn(1, generator=g)))
                )
                cs.append(c)
                ns.append(math.exp(x))
        return cs, ns, ls

    for seed in range(6):
        still = fit_approach2(*profiles(0.0, seed), n_boot=300, level=0.8, seed=seed)
        moving = fit_approach2(*profiles(0.5, seed), n_boot=300, level=0.8, seed=seed)
        assert still.ci is not None and moving.ci is not None
        assert still.ci.low < lo  # the control loses
        assert moving.ci.low >= lo  # the mechanism passes the same bar


# --- the paper's numbers, by hand from the printed constants ---------------------------------

# Table 3 (Approach 1 projections) as printed: parameters, FLOPs, tokens
PAPER_TABLE3 = [
    (400e6, 1.92e19, 8.0e9), (1e9, 1.21e20, 20.2e9), (10e9, 1.23e22, 205.1e9),
    (67e9, 5.76e23, 1.5e12), (175e9, 3.85e24, 3.7e12), (280e9, 9.90e24, 5.9e12),
    (520e9, 3.43e25, 11.0e12), (1e12, 1.27e26, 21.2e12), (10e12, 1.30e28, 216.2e12),
]  # fmt: skip
# Eq. 10 unrounded (arXiv source: log A, log B, log E, α, β), rounded, and Epoch's refit (§3)
UNROUNDED = (math.exp(6.0073404), math.exp(6.0179186), math.exp(0.5267228), 0.33917084, 0.2849083)
ROUNDED = (406.4, 410.7, 1.69, 0.34, 0.28)
EPOCH = (482.01, 2085.43, 1.8172, 0.3478, 0.3658)
GOPHER_C = 5.76e23


def test_table2_a_and_b_from_the_printed_exponents() -> None:
    """a = β/(α+β), b = α/(α+β) (Eq. 4), from the unrounded and the rounded constants."""
    *_, alpha, beta = UNROUNDED
    out = CH.table2_approach3_a(None)
    assert out.value == pytest.approx(beta / (alpha + beta), rel=1e-12)
    assert out.details == {
        "b": pytest.approx(alpha / (alpha + beta), rel=1e-12),
        "a_from_rounded_constants": pytest.approx(0.28 / 0.62, rel=1e-12),
    }
    assert CH.table2_rounded_a(None).value == pytest.approx(0.28 / 0.62, rel=1e-12)


def test_table3_tokens_per_parameter_and_six_nd_row_by_row() -> None:
    ratios = [t / n for n, _, t in PAPER_TABLE3]
    details = {
        "tokens_per_param": [round(r, 2) for r in ratios],
        "six_nd_over_flops": [round(6 * n * t / c, 3) for n, c, t in PAPER_TABLE3],
    }
    low, high = CH.table3_tokens_per_param_min(None), CH.table3_tokens_per_param_max(None)
    assert low.value == pytest.approx(min(ratios)) and high.value == pytest.approx(max(ratios))
    assert low.details == details and high.details == details
    assert min(ratios) < max(ratios)  # the rows differ: min and max are not the same row


def test_six_nd_over_the_gopher_budget() -> None:
    chin, goph = CH.six_nd_chinchilla(None), CH.six_nd_gopher(None)
    assert chin.details == {"six_nd": 6 * 70e9 * 1.4e12}  # the same float operations
    assert chin.value == 6 * 70e9 * 1.4e12 / GOPHER_C
    assert goph.details == {"six_nd": 6 * 280e9 * 300e9}
    assert goph.value == 6 * 280e9 * 300e9 / GOPHER_C


@pytest.mark.parametrize(
    ("claim", "shape", "tokens"),
    [("appendix_f_chinchilla", (80, 8192, 64, 128), 1.4e12),
     ("appendix_f_gopher", (80, 16384, 128, 128), 300e9)],
)  # fmt: skip
def test_appendix_f_claims_count_table4_shapes(claim: str, shape: tuple, tokens: float) -> None:
    """Table 4's shapes (layers, d_model, heads, key/value size), d_ff = 4·d_model, a 32,000
    vocabulary and 2,048-token context; the count is the tested op-by-op one above."""
    layers, d, heads, kv = shape
    per_token = CH.appendix_f_flops_per_token(layers, d, heads, kv, 4 * d, 32_000, 2048)
    out = getattr(CH, claim)(None)
    assert out.details == {
        "flops": pytest.approx(per_token * tokens),
        "per_token": pytest.approx(per_token),
        "shape": shape,
        "tokens": tokens,
    }
    assert out.value == pytest.approx(per_token * tokens / GOPHER_C)


@pytest.mark.parametrize(
    ("claim", "constants"),
    [("nopt_gopher_unrounded", UNROUNDED), ("nopt_gopher_rounded", ROUNDED),
     ("epoch_nopt_gopher", EPOCH), ("epoch_tokens_per_param", EPOCH)],
)  # fmt: skip
def test_compute_optimal_split_at_gophers_budget_against_a_numerical_minimum(
    claim: str, constants: tuple
) -> None:
    """N_opt minimises E + A/N^α + B/D^β along C = 6ND (scipy, over log N); D_opt = C/(6N)."""
    from scipy.optimize import minimize_scalar

    A, B, E, alpha, beta = constants

    def loss(log_n: float) -> float:
        n = math.exp(log_n)
        return E + A / n**alpha + B / (GOPHER_C / (6 * n)) ** beta

    best = minimize_scalar(loss, bounds=(math.log(1e8), math.log(1e13)), method="bounded",
                           options={"xatol": 1e-10})  # fmt: skip
    n_opt = math.exp(best.x)
    out = getattr(CH, claim)(None)
    assert out.details["n_opt"] == pytest.approx(n_opt, rel=1e-5)
    assert out.details["d_opt"] == pytest.approx(GOPHER_C / (6 * n_opt), rel=1e-5)
    assert out.details["tokens_per_param"] == pytest.approx(GOPHER_C / (6 * n_opt**2), rel=1e-5)
    assert out.details["a"] == pytest.approx(beta / (alpha + beta), rel=1e-12)
    if claim == "epoch_tokens_per_param":
        assert out.value == out.details["tokens_per_param"]
    else:  # in billions
        assert out.value == out.details["n_opt"] / 1e9


# --- the IsoFLOP study's plumbing, on a fake sweep -------------------------------------------


def test_widths_slide_along_the_ladder_and_the_error_names_the_budget() -> None:
    cfg = CH.Config(ladder=tuple(range(10, 30)), sizes=4, rung_step=3, budget_shift=2)
    assert CH._widths(cfg, 0) == [10, 13, 16, 19]
    assert CH._widths(cfg, 3) == [16, 19, 22, 25]
    assert CH._widths(cfg, 4) == [18, 21, 24, 27]
    assert CH._widths(cfg, 5) == [20, 23, 26, 29]  # the last that fits
    adjacent = CH.Config(ladder=tuple(range(10, 30)), sizes=4, rung_step=1, budget_shift=5)
    assert CH._widths(adjacent, 2) == [20, 21, 22, 23]
    with pytest.raises(ValueError) as info:
        CH._widths(cfg, 6)
    assert str(info.value) == "the width ladder is too short for budget 6: got [22, 25, 28]"


def _valley(budget: float, sizes: list[float], centre: float, depth: float = 0.3) -> list[float]:
    """Losses of a parabola in ln N with its vertex at ln centre (depth 0: a straight slope)."""
    return [2.0 + depth * (math.log(n) - math.log(centre)) ** 2 - (depth == 0) * 0.1 * math.log(n)
            for n in sizes]  # fmt: skip


def _fake_runs() -> list[dict]:
    """Two seeds at three budgets, five sizes each, vertices moving with C (listed out of
    budget order); every run has its own floor."""
    runs = []
    for budget, centre in ((1.2e8, 400.0), (3e7, 200.0), (4.8e8, 800.0)):
        sizes = [centre * 2.0**k for k in (-2, -1, 0, 1, 2)]
        for seed in (0, 1):
            losses = _valley(budget, sizes, centre * (1 + 0.05 * seed))
            for n, loss in zip(sizes, losses, strict=True):
                floor = 1.5 + len(runs) / 100
                runs.append({"budget": budget, "seed": seed, "n_params": n, "loss": loss,
                             "samples": budget / (6 * n), "floor": floor})  # fmt: skip
    return runs


def test_runs_sweep_every_budget_seed_and_width_of_the_settings(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Non-default settings throughout; the sweep's results come back with budget and seed and
    without the learning curve, in the points' order."""
    cfg = CH.Config(zipf_s=1.2, n_keys=300, vocab_size=9, code_dim=5, budgets=(1e6, 2e6, 4e6),
                    ladder=(3, 4, 5, 6, 7, 8), sizes=3, rung_step=2, budget_shift=1,
                    seeds=(4, 7), batch=16, lr=3e-3, jobs=2)  # fmt: skip
    seen = {}

    def fake_sweep(kind, points, run_point, code, jobs, progress, description):
        seen.update(kind=kind, points=points, run_point=run_point, code=code, jobs=jobs,
                    progress=progress, description=description)  # fmt: skip
        return [{"loss": i / 10, "n_params": p["width"], "curve": [1]} for i, p in
                enumerate(points)]  # fmt: skip

    def progress(*a):
        pass

    monkeypatch.setattr(CH, "run_sweep", fake_sweep)
    ctx = Context(config=cfg, device="meta", progress=progress)
    runs = CH._runs(cfg, ctx, 0.25, 2, "some runs")
    source = {"n_keys": 300, "zipf_s": 1.2, "vocab_size": 9, "noise": 0.25, "code_dim": 5,
              "source_seed": 1234}  # fmt: skip
    want = [
        {**source, "width": w, "n_hidden": 1, "seed": seed, "budget": budget, "batch": 16,
         "lr": 3e-3, "eval_every": 0, "device": "meta"}
        for budget, widths in ((1e6, (3, 5, 7)), (2e6, (4, 6, 8)))
        for seed in (4, 7)
        for w in widths
    ]  # fmt: skip
    assert seen["points"] == want
    assert seen["kind"] == "chinchilla-isoflop" and seen["run_point"] is facts_runs.budget_run
    assert seen["code"] == CH.SWEEP_CODE and seen["jobs"] == 2
    assert seen["progress"] is progress and seen["description"] == "some runs"
    assert runs == [
        {"budget": p["budget"], "seed": p["seed"], "loss": i / 10, "n_params": p["width"]}
        for i, p in enumerate(want)
    ]
    assert [zipf_facts, mlp, counting, train_module, facts_runs] == CH.SWEEP_CODE
    monkeypatch.setattr(CH, "run_sweep", lambda kind, points, *a, **kw: [{"loss": 1.0}])
    with pytest.raises(ValueError, match="zip"):  # a result per point, or an error
        CH._runs(cfg, ctx, 0.25, 2, "some runs")


def test_approach2_reports_the_fit_with_the_settings_given() -> None:
    """The dict is the library fit's, field by field, with n_boot, level and min_depth taken
    from the config (not defaults), and the share of interior minima."""
    from repro.scaling.isoflop import fit_approach2

    runs = _fake_runs()
    runs += [
        {**r, "budget": 1.92e9, "loss": 2 + 0.01 * math.log(r["n_params"] / 200) ** 2}
        for r in runs
        if r["budget"] == 3e7
    ]  # a fourth budget: a valley too shallow for min_depth
    cfg = CH.Config(n_boot=40, level=0.6, min_depth=0.05)
    got = CH._approach2(runs, cfg)
    columns = [r["budget"] for r in runs], [r["n_params"] for r in runs], [r["loss"] for r in runs]
    fit = fit_approach2(*columns, n_boot=40, level=0.6, min_depth=0.05)
    assert fit.ci is not None
    assert got["a"] == pytest.approx(fit.a, rel=1e-9)  # refits agree to rounding
    assert got["ci"] == pytest.approx([fit.ci.low, fit.ci.high], rel=1e-9)
    assert got["boot_samples"] == fit.ci.samples
    assert len(got["minima"]) == len(fit.minima) == 4
    for row, m in zip(got["minima"], fit.minima, strict=True):  # fits agree to rounding
        assert row.pop("interior") is m.interior
        assert row == pytest.approx({"budget": m.budget, "n_opt": m.n_opt, "d_opt": m.d_opt,
                                     "loss": m.loss_opt, "curvature": m.curvature,
                                     "depth": m.depth}, rel=1e-9)  # fmt: skip
        row["interior"] = m.interior
    assert [m["interior"] for m in got["minima"]].count(True) == 3
    assert got["interior_fraction"] == 3 / 4
    default = fit_approach2(*columns, n_boot=40)
    assert default.ci.low != fit.ci.low  # the level matters here


def test_approach2_without_resamples_has_no_interval() -> None:
    cfg = CH.Config(n_boot=10)
    runs = _fake_runs()
    flat = [{**r, "loss": 2.0 - 0.05 * math.log(r["n_params"]) ** 2} for r in runs]  # hills
    got = CH._approach2(flat, cfg)
    assert got["ci"] is None and got["boot_samples"] is None
    assert got["interior_fraction"] == 0


def test_interior_fraction_counts_budgets_not_runs() -> None:
    """Three budgets (listed out of order), one without a valley; a budget counts once however
    many seeds it has, and min_depth is passed on (a deeper bar rejects the shallow valley)."""
    from repro.scaling.isoflop import isoflop_minimum

    runs = _fake_runs()
    runs = [r if r["budget"] != 4.8e8 else {**r, "loss": 3 - 0.05 * math.log(r["n_params"]) ** 2}
            for r in runs]  # fmt: skip
    assert CH._interior_fraction(runs, 0.0) == pytest.approx(2 / 3)
    depth = isoflop_minimum(3e7, [r["n_params"] for r in runs if r["budget"] == 3e7],
                            [r["loss"] for r in runs if r["budget"] == 3e7]).depth  # fmt: skip
    assert CH._interior_fraction(runs, depth * 2) == 0
    assert CH._interior_fraction([r for r in runs if r["budget"] == 3e7], 0.0) == 1


def test_experiment_fits_both_approaches_to_the_same_runs(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`_runs` faked: the study at the config's noise over every budget, the control at its
    noise over `control_budgets`; Approach 3 gets the runs' N, D and loss and `a3_starts`
    (0 meaning every grid point); the floor is the first run's; plots go to out_dir."""
    runs = _fake_runs()
    control = [{**r, "loss": 3.0} for r in runs if r["budget"] != 4.8e8]
    asked, a3_args, plotted = [], [], []

    def fake_runs(cfg, ctx, noise, n_budgets, name):
        asked.append((noise, n_budgets, name, ctx))
        return runs if noise == cfg.noise else control

    class Surface:
        E, A, B, alpha, beta, a = 1.1, 2.2, 3.3, 0.4, 0.6, 0.6

    class Fit:
        surface, objective, starts = Surface(), 0.01, 7

    def fake_a3(n, d, loss, starts):
        a3_args.append((n, d, loss, starts))
        return Fit()

    monkeypatch.setattr(CH, "_runs", fake_runs)
    monkeypatch.setattr(CH, "fit_approach3", fake_a3)
    monkeypatch.setattr(CH, "_plots", lambda m, ctx: plotted.append((m, ctx)))
    monkeypatch.setattr(CH, "_approach2", lambda runs, cfg: {"fit of": runs, "cfg": cfg})
    monkeypatch.setattr(CH, "_interior_fraction", lambda runs, depth: (runs, depth))
    cfg = CH.Config(noise=0.2, control_noise=0.9, control_budgets=2, a3_starts=5, n_boot=20,
                    min_depth=0.01)  # fmt: skip
    ctx = Context(config=cfg, out_dir=tmp_path)
    m = CH.experiment(cfg, ctx)
    assert asked == [(0.2, 3, "IsoFLOP runs", ctx), (0.9, 2, "control (ε = 1) runs", ctx)]
    assert a3_args == [([r["n_params"] for r in runs], [r["samples"] for r in runs],
                        [r["loss"] for r in runs], 5)]  # fmt: skip
    assert m["runs"] is runs and m["floor"] == runs[0]["floor"] == 1.5
    assert m["approach2"] == {"fit of": runs, "cfg": cfg}
    assert m["approach3"] == {"E": 1.1, "A": 2.2, "B": 3.3, "alpha": 0.4, "beta": 0.6, "a": 0.6,
                              "objective": 0.01, "starts": 7}  # fmt: skip
    assert m["control"] == {"runs": control, "interior_fraction": (control, 0.01)}
    assert plotted == [(m, ctx)]
    a3_args.clear()
    CH.experiment(CH.Config(a3_starts=0, n_boot=10), Context())
    assert a3_args[0][3] is None and len(plotted) == 1


def test_plots_draw_mean_profiles_parabolas_and_both_fits(line_plots, tmp_path: Path) -> None:
    """Plot data (titles and labels are plot text): per budget the mean loss over seeds at each
    size and the least-squares parabola in ln N (numpy's polyfit) on 41 log-spaced points;
    the minima; N_opt against C with the Approach-2 line through the minima's mean intercept
    and Approach 3's closed form."""
    import numpy as np

    runs = _fake_runs()
    cfg = CH.Config(n_boot=20)
    a2 = CH._approach2(runs, cfg)
    a3 = {"E": 1.1, "A": 300.0, "B": 500.0, "alpha": 0.3, "beta": 0.5, "a": 0.5 / 0.8}
    drawn = line_plots(CH)
    CH._plots({"runs": runs, "approach2": a2, "approach3": a3}, Context(out_dir=tmp_path))
    (p1, profiles, kw1), (p2, nopt, kw2) = drawn
    assert p1 == tmp_path / "isoflop_profiles.svg"
    assert kw1["logx"] is True and kw1.get("logy", False) is False
    assert p2 == tmp_path / "nopt_vs_c.svg" and kw2["logx"] is True and kw2["logy"] is True
    minima = a2["minima"]
    for m in minima:
        c = m["budget"]
        rs = [r for r in runs if r["budget"] == c]
        sizes = sorted({r["n_params"] for r in rs})
        means = [np.mean([r["loss"] for r in rs if r["n_params"] == n]) for n in sizes]
        xs, ys = profiles[f"C = {c:.2g}"]
        assert xs == sizes and ys == pytest.approx(means)
        c2, c1, c0 = np.polyfit([math.log(r["n_params"]) for r in rs], [r["loss"] for r in rs], 2)
        xs, ys = profiles[f"parabola, C = {c:.2g}"]
        assert xs == pytest.approx(np.geomspace(sizes[0], sizes[-1], 41))
        assert ys == pytest.approx([c0 + c1 * math.log(x) + c2 * math.log(x) ** 2 for x in xs])
    assert profiles["parabola minima"] == ([m["n_opt"] for m in minima],
                                           [m["loss"] for m in minima])  # fmt: skip
    assert len(profiles) == 2 * len(minima) + 1
    budgets, n_opt = [m["budget"] for m in minima], [m["n_opt"] for m in minima]
    k = np.mean([math.log(n) - a2["a"] * math.log(c) for n, c in zip(n_opt, budgets, strict=True)])
    surface = LossSurface(1.1, 300.0, 500.0, 0.3, 0.5)
    assert list(nopt.values()) == [
        (budgets, n_opt),
        (budgets, pytest.approx([math.exp(k) * c ** a2["a"] for c in budgets])),
        (budgets, pytest.approx([surface.optimal(c)[0] for c in budgets])),
    ]
    assert list(nopt) == ["parabola minima", f"Approach 2 fit, a = {a2['a']:.2f}",
                          f"Approach 3 closed form, a = {a3['a']:.2f}"]  # fmt: skip


def _claim(name: str, metrics: dict):
    return getattr(CH, name)(Context(run_experiment=lambda cfg, ctx: metrics))


def test_claims_read_the_experiment_metrics() -> None:
    minima = [{"budget": 1.0, "n_opt": 10.0}, {"budget": 2.0, "n_opt": 30.0}]
    control = [{"budget": 1.0, "n_params": 5, "loss": 2.5, "seed": 0}]
    metrics = {
        "floor": 2.0,
        "approach2": {
            "interior_fraction": 0.75,
            "minima": minima,
            "a": 0.55,
            "ci": [0.3, 0.8],
            "boot_samples": 17,
        },  # fmt: skip
        "approach3": {"E": 2.5, "a": 0.4, "alpha": 0.31, "beta": 0.29},
        "control": {"interior_fraction": 0.25, "runs": control},
    }
    out = _claim("isoflop_interior_minimum", metrics)
    assert out.value == 0.75 and out.details == {"minima": minima, "control_fraction": 0.25}
    out = _claim("control_no_interior_minimum", metrics)
    assert out.value == 0.25 and out.details == {"control_losses": [(1.0, 5, 2.5)]}
    out = _claim("nopt_grows_with_c", metrics)
    assert out.value == 0.3
    assert out.details == {"a": 0.55, "ci": [0.3, 0.8], "resamples": 17, "n_opt": [10.0, 30.0]}
    out = _claim("approach3_vs_approach2", metrics)
    assert out.value == pytest.approx(0.4 - 0.55)
    assert out.details == {"a2": 0.55, "a2_ci": [0.3, 0.8], "a3": 0.4, "E3": 2.5, "H": 2.0,
                           "E3_over_H": 1.25, "alpha3": 0.31, "beta3": 0.29}  # fmt: skip
    out = _claim("approach3_floor", metrics)
    assert out.value == 1.25 and out.details == {"E3": 2.5, "H": 2.0}
    metrics["approach2"]["ci"] = None
    with pytest.raises(ValueError, match="^no bootstrap resample could be fitted$"):
        _claim("nopt_grows_with_c", metrics)
