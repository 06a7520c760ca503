"""`run --seeds`: parsing seeds, spreads over seeds, and the suggested tolerance."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from paperlab import cli
from repro.lab.claims import ClaimResult, Verdict, within
from repro.lab.errors import BadOption
from repro.lab.note import Claim, ToleranceSpec
from repro.lab.seeds import parse_seeds, seed_spreads, suggest


def _claim(tolerance, expected=1.0, kind="measured") -> Claim:
    return Claim(id="c", statement="s", source="T1", kind=kind, expected=expected,
                 tolerance=tolerance)  # fmt: skip


def test_parse_seeds() -> None:
    assert parse_seeds("3") == [0, 1000, 2000]
    assert parse_seeds("0, 7,42") == [0, 7, 42]
    for bad in ("1", "a,b", "1,1", "-1,2", "101"):
        with pytest.raises(BadOption):
            parse_seeds(bad)


@pytest.mark.parametrize(
    ("tolerance", "expected", "values"),
    [
        ({"range": [0.5, None]}, 1.0, [0.8, 0.95, 0.9]),  # a lower bound
        ({"range": [None, 0.2]}, 0.0, [0.05, 0.12, 0.08]),  # an upper bound
        ({"range": [0.1, 0.9]}, 0.5, [0.4, 0.6, 0.45]),  # both
        ({"abs": 0.01}, 2.0, [1.97, 2.05, 2.01]),
        ({"rel": 0.01}, 10.0, [9.0, 10.5, 11.2]),
    ],
)
def test_the_suggested_tolerance_passes_every_seed_with_a_margin(tolerance, expected, values):
    claim = _claim(tolerance, expected)
    text = suggest(claim, values)
    spec = ToleranceSpec.model_validate(_parse(text))
    assert all(within(v, expected, spec) for v in values)
    spread = max(values) - min(values)
    # the margin: a value one spread beyond the worst seed still passes...
    if spec.range is not None:
        lo, hi = spec.range
        assert lo is None or lo <= min(values) - spread + 1e-12
        assert hi is None or hi >= max(values) + spread - 1e-12
    else:
        worst = max(abs(v - expected) for v in values)
        bound = spec.abs if spec.abs is not None else spec.rel * abs(expected)
        assert bound >= worst + spread - 1e-12
    # ...and the original bound's side is kept (a lower bound stays a lower bound)
    if spec.range is not None:
        assert (spec.range[0] is None) == (claim.tolerance.range[0] is None)
        assert (spec.range[1] is None) == (claim.tolerance.range[1] is None)


def test_no_suggestion_for_derived_claims_or_a_value_that_moves_under_exact() -> None:
    assert suggest(_claim("exact", 4, "derived"), [4, 4, 4]) is None
    assert suggest(_claim("exact", 4), [4, 4, 4]) == "exact"
    assert suggest(_claim("exact", 4), [4, 5, 4]) is None


def _parse(text: str) -> dict:
    """`{range: [0.5, null]}` → a dict (the suggestion is YAML flow style)."""
    import yaml

    return yaml.safe_load(text)


def _result(value, verdict="verified") -> ClaimResult:
    return ClaimResult(paper="p", id="c", statement="s", kind="measured", expected=1.0,
                       tolerance="≥ 0.5", verdict=Verdict(verdict), measured=value)  # fmt: skip


def test_seed_spreads_collects_each_seeds_value() -> None:
    claim = _claim({"range": [0.5, None]})
    cited = Claim(id="x", statement="s", source="T1", kind="cited", why="big")
    values = {0: 0.9, 1000: 0.4, 2000: 0.7}
    verdicts = {0: "verified", 1000: "failed", 2000: "verified"}
    spreads = seed_spreads(
        [claim, cited], [0, 1000, 2000], lambda s: [_result(values[s], verdicts[s])]
    )
    assert len(spreads) == 1  # cited claims have nothing to spread
    (sp,) = spreads
    assert sp.values == values
    assert sp.passes == {0: True, 1000: False, 2000: True}
    assert sp.summary()["min"] == 0.4 and sp.summary()["max"] == 0.9


def test_run_seeds_on_the_cli(library_dir) -> None:
    result = CliRunner().invoke(cli, ["run", "toy", "--quick", "--seeds", "0,5", "--json"])
    assert result.exit_code == 1  # the toy library has a failing claim on purpose
    data = json.loads(result.stdout)
    assert data["seeds"] == [0, 5]
    by_id = {c["claim"]: c for c in data["claims"]}
    assert by_id["two-plus-two"]["values"] == {"0": 4, "5": 4}
    assert by_id["wrong-sum"]["passes"] == {"0": False, "5": False}
