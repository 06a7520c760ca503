"""Controls of papers/scaling-laws/repro.py's measured claims that the experiment does not run
itself: each feeds the claim's helper a variant that must fail the claim's tolerance."""

from __future__ import annotations

import types

import torch

from repro.data.zipf_facts import entropy_floor
from repro.lab.counting import mlp_param_count
from repro.lab.library import Library
from repro.scaling.facts_runs import budget_run, model_config
from repro.scaling.power_law import fit_power_law, fit_power_law_with_floor

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
