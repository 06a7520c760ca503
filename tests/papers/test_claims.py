"""Every claim of every paper in the library is a test: adding a paper adds its coverage.

Each non-cited claim runs in its paper's quick preset and must be verified (or skipped with a
reason, e.g. needs CUDA). Wall-clock timing claims (`@claim(..., benchmark=True)`) are marked
slow: on a shared CI machine they measure the neighbours, so `paperlab check` runs them instead.
"""

from __future__ import annotations

import pytest

from repro.lab.claims import Context, Verdict
from repro.lab.library import Library
from repro.lab.runner import check_claim, make_config

LIBRARY = Library()


def _cases():
    for slug, paper in LIBRARY.papers.items():
        benchmarks = {cid for cid, (spec, _) in paper.checks().items() if spec.benchmark}
        for c in paper.note.claims:
            if c.kind == "cited":
                continue
            # one xdist worker per paper: its experiment then runs once for all its claims
            marks = [pytest.mark.xdist_group(slug)]
            if c.id in benchmarks:
                marks.append(pytest.mark.slow)
            yield pytest.param(slug, c.id, id=f"{slug}:{c.id}", marks=marks)


_CONTEXTS: dict[str, Context] = {}


def _context(slug: str) -> Context:
    """One context per paper, so its experiment runs once for all its claims."""
    if slug not in _CONTEXTS:
        module = LIBRARY.papers[slug].module()
        _CONTEXTS[slug] = Context(
            config=make_config(module, quick=True),
            run_experiment=getattr(module, "experiment", None),
        )
    return _CONTEXTS[slug]


def test_every_note_is_valid_and_wired() -> None:
    for slug, paper in LIBRARY.papers.items():
        assert paper.wiring_problems() == [], slug


@pytest.mark.parametrize(("slug", "claim_id"), list(_cases()))
def test_claim(slug: str, claim_id: str) -> None:
    result = check_claim(LIBRARY.papers[slug], claim_id, _context(slug))
    detail = result.details.get("traceback", "") or result.message
    if result.verdict == Verdict.SKIPPED:
        pytest.skip(result.message)
    assert result.verdict == Verdict.VERIFIED, (
        f"{slug}:{claim_id} measured {result.measured!r}, expected {result.expected!r} "
        f"({result.tolerance}): {result.verdict.value} {detail}"
    )
