"""Claims that report one measurement minus another (model A − model B, trained − untrained,
Approach 3 − Approach 2) must move with each side: fed made-up metrics, the value is the
difference in the right order, and swapping the two sides flips its sign. A claim that
compared a model with itself (always 0) or subtracted the wrong way round fails here. No
experiment runs; the real runs are in tests/papers/test_claims.py."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from repro.lab.claims import Context
from repro.lab.library import Library

LIB = Library()


def _run(slug: str, claim: str, metrics: dict) -> float:
    module = LIB.get(slug).module()
    ctx = Context(config=SimpleNamespace(seeds=(0, 1)), _metrics=metrics)
    return getattr(module, claim)(ctx).value


# (slug, claim function, metrics from (first, second) → the claim is first − second)
CASES = [
    ("llama", "block_final_loss",
     lambda a, b: {"llama_test_loss": a, "gpt_test_loss": b, "entropy_floor": 0.5,
                   "llama_params": 1, "gpt_params": 1}),
    ("llama", "block_learning_speed",
     lambda a, b: {"llama_mean_train_loss": a, "gpt_mean_train_loss": b}),
    ("llama", "block_early_learning",
     lambda a, b: {"llama_early_train_loss": a, "gpt_early_train_loss": b, "entropy_floor": 0.5}),
    ("swiglu", "swiglu_learns_faster_than_relu",
     lambda a, b: {"early_loss": {"swiglu": a, "relu": b, "geglu": 0.0}}),
    ("swiglu", "glu_variants_not_worse_than_relu",
     lambda a, b: {"mean_loss": {"geglu": a - 0.5, "swiglu": a, "relu": b}, "loss": {},
                   "params": {}, "entropy_floor": 0.0, "unigram_entropy": 0.0}),
    ("bert", "bidirectional_beats_left_only",
     lambda a, b: {"left_only_loss": a, "bidirectional_loss": b,
                   "floors": {"left_only": 1.0, "bidirectional": 0.5, "unigram": 2.0}}),
    ("bert", "mlm_beats_unigram",
     lambda a, b: {"floors": {"unigram": a, "left_only": 1.0, "bidirectional": 0.5},
                   "bidirectional_loss": b}),
    ("gpt3", "icl_beats_untrained",
     lambda a, b: {"accuracy_by_shots": [0.1, a], "untrained_accuracy_by_shots": [0.1, b],
                   "chance": 0.1}),
    ("gpt3", "icl_few_shot_gain", lambda a, b: {"accuracy_by_shots": [b, 0.2, a]}),
    ("scaling-laws", "exponent_tracks_tail",
     lambda a, b: {"tail_light": {"alpha": a, "ci": None}, "tail_heavy": {"alpha": b, "ci": None,
                                                                           "r2": 0.9}}),
    ("chinchilla", "approach3_vs_approach2",
     lambda a, b: {"approach3": {"a": a, "E": 1.0, "alpha": 0.3, "beta": 0.3},
                   "approach2": {"a": b, "ci": None}, "floor": 1.0}),
]  # fmt: skip


@pytest.mark.parametrize(("slug", "claim", "metrics"), CASES, ids=[c[1] for c in CASES])
def test_difference_claims_subtract_in_order(slug: str, claim: str, metrics) -> None:
    assert _run(slug, claim, metrics(1.0, 3.5)) == pytest.approx(-2.5)
    assert _run(slug, claim, metrics(3.5, 1.0)) == pytest.approx(2.5)


def test_icl_ideal_learner_gap_is_the_largest_in_either_direction() -> None:
    m = {"accuracy_by_shots": [0.1, 0.5, 0.9], "ideal_by_shots": [0.1, 0.7, 0.85]}
    assert _run("gpt3", "icl_matches_ideal_learner", m) == pytest.approx(0.2)
    m = {"accuracy_by_shots": [0.1, 0.5, 0.9], "ideal_by_shots": [0.1, 0.45, 0.6]}
    assert _run("gpt3", "icl_matches_ideal_learner", m) == pytest.approx(0.3)


def test_scaling_laws_control_coverage_and_ratios() -> None:
    """The control verifies only when its interval covers 0; ratios divide in order."""

    def control(low: float, high: float) -> dict:
        return {"control": {"ci": [low, high], "alpha": 0.0, "r2": 0.0, "excess": []}}

    assert _run("scaling-laws", "control_no_law", control(-0.1, 0.2)) == 1
    assert _run("scaling-laws", "control_no_law", control(0.05, 0.2)) == 0
    assert _run("scaling-laws", "control_no_law", control(-0.3, -0.1)) == 0
    assert _run("scaling-laws", "control_no_law", control(0.0, 0.2)) == 1  # the ends count
    eff = {"samples_small": 600, "samples_large": 200, "target_loss": 1.0, "n_params": []}
    assert _run("scaling-laws", "sample_efficiency", {"efficiency": eff}) == pytest.approx(3.0)
    law = {"floor_fit": {"E": 1.5, "alpha": 0.3}, "floor": 2.0, "floor_fit_per_seed": [1.5]}
    assert _run("scaling-laws", "floor_recovered", {"main": law}) == pytest.approx(0.75)
