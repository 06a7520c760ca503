from __future__ import annotations

import math

import pytest

from repro.lab.claims import (
    CLAIM_ATTR,
    ClaimResult,
    ClaimSpec,
    Context,
    Verdict,
    claim,
    within,
)
from repro.lab.note import ToleranceSpec


@pytest.mark.parametrize(
    ("measured", "expected", "tolerance", "ok"),
    [
        (4, 4, "exact", True),
        (4.0000001, 4, "exact", False),
        (True, True, "exact", True),
        ("MQA", "MQA", "exact", True),
        (102, 100, ToleranceSpec(rel=0.02), True),
        (103, 100, ToleranceSpec(rel=0.02), False),
        (-0.99, -1, ToleranceSpec(rel=0.02), True),
        (-0.97, -1, ToleranceSpec(rel=0.02), False),
        (1e-6, 0, ToleranceSpec(abs=1e-5), True),
        (2e-5, 0, ToleranceSpec(abs=1e-5), False),
        (16, None, ToleranceSpec(range=(15, None)), True),
        (14.9, None, ToleranceSpec(range=(15, None)), False),
        (1.6, None, ToleranceSpec(range=(None, 1.5)), False),
        (0.9, None, ToleranceSpec(range=(0.5, 1.0)), True),
        (math.nan, 1.0, ToleranceSpec(range=(None, 1.5)), False),
        ("big", 1.0, ToleranceSpec(rel=0.1), False),
        (True, 1.0, ToleranceSpec(rel=0.1), False),
        # the edges belong to the tolerance (≤, not <), on both sides and for every kind
        (1.5, 1.0, ToleranceSpec(rel=0.5), True),
        (0.5, 1.0, ToleranceSpec(rel=0.5), True),
        (1.5000001, 1.0, ToleranceSpec(rel=0.5), False),
        (0.25, 0, ToleranceSpec(abs=0.25), True),
        (-0.25, 0, ToleranceSpec(abs=0.25), True),
        (-0.2500001, 0, ToleranceSpec(abs=0.25), False),
        (10.2, 10, ToleranceSpec(abs=0.25), True),  # expected ≠ 0: |m − e|, not |m + e|
        (-9.9, -10, ToleranceSpec(abs=0.25), True),
        (9.7, 10, ToleranceSpec(abs=0.25), False),
        (0.5, None, ToleranceSpec(range=(0.5, 1.0)), True),
        (1.0, None, ToleranceSpec(range=(0.5, 1.0)), True),
        (0.4999999, None, ToleranceSpec(range=(0.5, 1.0)), False),
        (1.0000001, None, ToleranceSpec(range=(0.5, 1.0)), False),
        (3, 3.0, "exact", True),
        (math.nan, math.nan, ToleranceSpec(abs=1.0), False),
        (math.inf, 1.0, ToleranceSpec(range=(0.0, None)), True),
    ],
)
def test_within(measured, expected, tolerance, ok) -> None:
    assert within(measured, expected, tolerance) is ok


def test_claim_decorator_marks_without_wrapping() -> None:
    def check(ctx):
        return 1

    marked = claim("some-id")(check)
    assert marked is check
    assert getattr(check, CLAIM_ATTR) == ClaimSpec("some-id", False)
    claim("timing", benchmark=True)(check)
    assert getattr(check, CLAIM_ATTR) == ClaimSpec("timing", True)


def test_context_runs_the_experiment_once_with_its_seed_and_replays_a_failure() -> None:
    import random

    calls = []

    def experiment(cfg, ctx):
        calls.append((cfg, ctx))
        return {"draw": random.random(), "cfg": cfg}

    ctx = Context(config="c", seed=11, run_experiment=experiment)
    first = ctx.experiment()
    assert ctx.experiment() is first and calls == [("c", ctx)]
    random.seed(11)
    assert first["draw"] == random.random()  # seeded with the context's seed before the run
    assert Context(seed=12, run_experiment=experiment).experiment()["draw"] != first["draw"]

    def broken(cfg, ctx):
        calls.append("broken")
        raise RuntimeError("boom")

    bad = Context(run_experiment=broken)
    for _ in range(2):  # every claim that needs it sees the same failure; run once only
        with pytest.raises(RuntimeError, match="boom"):
            bad.experiment()
    assert calls.count("broken") == 1
    with pytest.raises(AssertionError, match="^this paper defines no experiment"):
        Context().experiment()
    ctx.progress("x", 1, 2)  # the default progress accepts the three arguments


def test_claim_result_json_round_trip() -> None:
    result = ClaimResult(
        "p", "c", "s", "measured", 1.0, "rel 0.1", Verdict.FAILED, "x", 1.3, {"k": [1]}, "m", 0.5,
        "w",
    )  # fmt: skip
    data = result.to_json()
    assert data["verdict"] == "failed" and data["measured"] == 1.3 and data["unit"] == "x"
    assert ClaimResult.from_json(data) == result
    assert ClaimResult.from_json(data).verdict is Verdict.FAILED
