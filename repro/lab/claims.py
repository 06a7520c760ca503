"""Claims: the `@claim` decorator, the context a check receives, tolerances and verdicts.

A paper's `repro.py` marks one function per checkable claim of its note:

    @claim("param-reduction")
    def param_reduction(ctx: Context) -> Measured:
        ...count parameters...
        return Measured(ratio, {"full": full, "lora": lora})

The runner calls it, compares the returned value with the note's `expected` under its
`tolerance`, and records a `ClaimResult`. Nothing here imports torch.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Any

Value = float | int | bool | str
ProgressFn = Callable[[str, int, int], None]  # (description, completed, total)
CLAIM_ATTR = "__paperlab_claim__"


class Verdict(str, Enum):
    VERIFIED = "verified"  # computed here and within tolerance
    FAILED = "failed"  # computed here and outside tolerance
    ERROR = "error"  # the check raised
    CITED = "cited"  # taken from the paper; cannot be reproduced at tiny scale
    SKIPPED = "skipped"  # cannot run here (e.g. needs CUDA)


class SkipClaim(Exception):
    """Raised by a check that cannot run on this machine; the reason becomes the message."""


@dataclass(frozen=True)
class Measured:
    """A check's result: the value compared with the note, plus details for the report."""

    value: Value
    details: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ClaimSpec:
    """What `@claim` attaches to a function."""

    id: str
    benchmark: bool  # a timing measurement: run by `check`, kept out of the default test run


def claim(claim_id: str, *, benchmark: bool = False) -> Callable[[Callable], Callable]:
    """Mark `fn(ctx) -> Value | Measured` as the check of the note's claim `claim_id`."""

    def mark(fn: Callable) -> Callable:
        setattr(fn, CLAIM_ATTR, ClaimSpec(claim_id, benchmark))
        return fn

    return mark


def _no_progress(description: str, completed: int, total: int) -> None:
    pass


@dataclass
class Context:
    """Everything a check or an experiment may use. `experiment()` runs once and is cached."""

    config: Any = None
    device: str = "cpu"
    seed: int = 0
    quick: bool = True
    progress: ProgressFn = _no_progress
    out_dir: Path | None = None
    run_experiment: Callable[[Any, Context], dict] | None = None
    _metrics: dict | None = field(default=None, repr=False)
    _failure: BaseException | None = field(default=None, repr=False)

    def experiment(self) -> dict:
        """The paper's tiny experiment under this context's config (run at most once)."""
        if self._failure is not None:
            raise self._failure
        if self._metrics is None:
            assert self.run_experiment is not None, "this paper defines no experiment()"
            from repro.lab.seeding import seed_everything

            seed_everything(self.seed)
            try:
                self._metrics = self.run_experiment(self.config, self)
            except Exception as exc:  # every claim that needs it reports the same failure
                self._failure = exc
                raise
        return self._metrics


def within(measured: Value, expected: Value | None, tolerance: Any) -> bool:
    """Does `measured` satisfy the note's `tolerance` (already validated by the schema)?"""
    if tolerance == "exact":
        return measured == expected
    if isinstance(measured, bool) or not isinstance(measured, int | float):
        return False
    if math.isnan(measured):
        return False
    if tolerance.rel is not None:
        return abs(measured - expected) <= tolerance.rel * abs(expected)
    if tolerance.abs is not None:
        return abs(measured - expected) <= tolerance.abs
    lo, hi = tolerance.range
    return (lo is None or measured >= lo) and (hi is None or measured <= hi)


@dataclass
class ClaimResult:
    """One claim's outcome, as stored in runs/<slug>/<stamp>/claims.json and shown by check."""

    paper: str
    id: str
    statement: str
    kind: str
    expected: Value | None
    tolerance: str
    verdict: Verdict
    unit: str = ""
    measured: Value | None = None
    details: dict[str, Any] = field(default_factory=dict)
    message: str = ""
    seconds: float = 0.0
    when: str = ""

    def to_json(self) -> dict[str, Any]:
        return {**self.__dict__, "verdict": self.verdict.value}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ClaimResult:
        return cls(**{**data, "verdict": Verdict(data["verdict"])})
