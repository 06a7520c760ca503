"""`paperlab run SLUG --seeds 0,1000,2000`: a claim's spread over seeds, and a threshold from it.

The project's rule for a measured claim: run at least three seeds, write the spread in the note,
and set the threshold with a margin beyond the worst seed, so that the check passes on any seed
like those and fails when the mechanism is removed. This module runs the seeds and does that
arithmetic; choosing and writing the threshold stays the author's decision.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from repro.lab.claims import ClaimResult
from repro.lab.errors import BadOption
from repro.lab.note import Claim, ToleranceSpec

SEED_STEP = 1000  # `--seeds 3` means 0, 1000, 2000: seeds far apart, as in the notes
MAX_SEEDS = 100
# A suggested bound stands this far beyond the worst seed: the larger of the seeds' own spread
# and 5% of the worst value (a single seed's luck is not the mechanism's).
RELATIVE_MARGIN = 0.05


def parse_seeds(text: str) -> list[int]:
    """`3` → [0, 1000, 2000]; `0,7,42` → [0, 7, 42]."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    try:
        values = [int(p) for p in parts]
    except ValueError:
        raise BadOption(f"--seeds takes a count or comma-separated seeds, got {text!r}") from None
    if len(values) == 1:
        if not 2 <= values[0] <= MAX_SEEDS:
            raise BadOption(f"--seeds N needs 2 ≤ N ≤ {MAX_SEEDS}, got {values[0]}")
        return [SEED_STEP * i for i in range(values[0])]
    if any(not 0 <= v < 2**32 for v in values) or len(set(values)) != len(values):
        raise BadOption(f"--seeds must be distinct seeds from 0 to 2^32 - 1, got {text!r}")
    if len(values) > MAX_SEEDS:
        raise BadOption(f"--seeds takes at most {MAX_SEEDS} seeds")
    return values


@dataclass
class Spread:
    """One claim's values over the seeds."""

    claim: str
    kind: str
    tolerance: str
    values: dict[int, Any]
    passes: dict[int, bool]
    suggested: str | None  # a tolerance that every seed meets, with a margin

    @property
    def numbers(self) -> list[float]:
        return [float(v) for v in self.values.values() if _is_number(v)]

    def summary(self) -> dict[str, float] | None:
        xs = self.numbers
        if not xs:
            return None
        return {
            "min": min(xs),
            "max": max(xs),
            "mean": statistics.fmean(xs),
            "std": statistics.stdev(xs) if len(xs) > 1 else 0.0,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "claim": self.claim, "kind": self.kind, "tolerance": self.tolerance,
            "values": {str(k): v for k, v in self.values.items()},
            "passes": {str(k): v for k, v in self.passes.items()},
            "spread": self.summary(), "suggested": self.suggested,
        }  # fmt: skip


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def suggest(claim: Claim, values: list[float]) -> str | None:
    """A tolerance of the claim's own kind that every value meets, with a margin (measured
    claims only: a derived value does not depend on the seed)."""
    if not values or claim.tolerance is None or claim.kind != "measured":
        return None
    lo, hi = min(values), max(values)
    margin = max(hi - lo, RELATIVE_MARGIN * max(abs(lo), abs(hi)))
    tol = claim.tolerance
    if tol == "exact":
        return "exact" if lo == hi == claim.expected else None
    assert isinstance(tol, ToleranceSpec)
    if tol.range is not None:
        low, high = tol.range
        return _range(
            None if low is None else lo - margin,
            None if high is None else hi + margin,
        )
    expected = float(claim.expected)
    worst = max(abs(v - expected) for v in values)
    if tol.abs is not None:
        return f"{{abs: {_round_up(worst + margin)}}}"
    if expected == 0:
        return None
    return f"{{rel: {_round_up((worst + margin) / abs(expected))}}}"


def _range(lo: float | None, hi: float | None) -> str:
    show = lambda x: "null" if x is None else f"{x:.3g}"  # noqa: E731
    return f"{{range: [{show(lo)}, {show(hi)}]}}"


def _round_up(x: float) -> str:
    """Two significant digits, rounded away from zero: a tolerance never shrinks in print."""
    if x == 0:
        return "0"
    exponent = math.floor(math.log10(abs(x))) - 1
    return f"{math.ceil(x / 10**exponent) * 10**exponent:.3g}"


RunOne = Callable[[int], list[ClaimResult]]


def seed_spreads(claims: list[Claim], seeds: list[int], run_one: RunOne) -> list[Spread]:
    """Run `run_one(seed)` for every seed and gather each non-cited claim's values."""
    by_seed = {seed: {r.id: r for r in run_one(seed)} for seed in seeds}
    out = []
    for claim in claims:
        if claim.kind == "cited":
            continue
        results = {s: by_seed[s].get(claim.id) for s in seeds}
        values = {s: r.measured for s, r in results.items() if r is not None}
        passes = {s: r is not None and r.verdict.value == "verified" for s, r in results.items()}
        numbers = [float(v) for v in values.values() if _is_number(v)]
        out.append(
            Spread(claim.id, claim.kind, claim.tolerance_text, values, passes,
                   suggest(claim, numbers))
        )  # fmt: skip
    return out
