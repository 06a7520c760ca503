from __future__ import annotations

import math

import pytest

from repro.lab.claims import within
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
    ],
)
def test_within(measured, expected, tolerance, ok) -> None:
    assert within(measured, expected, tolerance) is ok
