"""`run --seeds`: parsing seeds, spreads over seeds, and the suggested tolerance."""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from paperlab import cli
from repro.lab.claims import ClaimResult, Verdict, within
from repro.lab.errors import BadOption
from repro.lab.note import Claim, ToleranceSpec
from repro.lab.seeds import MAX_SEEDS, Spread, _round_up, parse_seeds, seed_spreads, suggest


def _claim(tolerance, expected=1.0, kind="measured", id="c") -> Claim:
    return Claim(id=id, statement="s", source="T1", kind=kind, expected=expected,
                 tolerance=tolerance)  # fmt: skip


def test_parse_seeds() -> None:
    assert parse_seeds("3") == [0, 1000, 2000]
    assert parse_seeds("0, 7,42") == [0, 7, 42]
    for bad in ("1", "a,b", "1,1", "-1,2", "101"):
        with pytest.raises(BadOption):
            parse_seeds(bad)


def test_parse_seeds_at_its_limits_and_its_messages() -> None:
    """Both ends of each range are inclusive or exclusive as the messages say."""
    assert parse_seeds("2") == [0, 1000]
    assert parse_seeds(str(MAX_SEEDS)) == [1000 * i for i in range(MAX_SEEDS)]
    assert parse_seeds(f"0,{2**32 - 1}") == [0, 2**32 - 1]
    many = ",".join(str(i) for i in range(MAX_SEEDS))
    assert parse_seeds(many) == list(range(MAX_SEEDS))
    cases = {
        "x": "--seeds takes a count or comma-separated seeds, got 'x'",
        "1": f"--seeds N needs 2 ≤ N ≤ {MAX_SEEDS}, got 1",
        str(MAX_SEEDS + 1): f"--seeds N needs 2 ≤ N ≤ {MAX_SEEDS}, got {MAX_SEEDS + 1}",
        f"0,{2**32}": f"--seeds must be distinct seeds from 0 to 2^32 - 1, got '0,{2**32}'",
        "3,3": "--seeds must be distinct seeds from 0 to 2^32 - 1, got '3,3'",
        f"{many},{MAX_SEEDS}": f"--seeds takes at most {MAX_SEEDS} seeds",
    }
    for text, message in cases.items():
        with pytest.raises(BadOption) as caught:
            parse_seeds(text)
        assert str(caught.value) == message


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


@pytest.mark.parametrize(
    ("tolerance", "expected", "values", "text"),
    [
        # spread 0.15 beats 5% of 0.95: the lower bound moves one spread below the worst seed
        ({"range": [0.5, None]}, 1.0, [0.8, 0.95, 0.9], "{range: [0.65, null]}"),
        # spread 0.1 loses to 5% of |−3| = 0.15 (sizes, not signed values): −2.9 + 0.15
        ({"range": [None, -1.0]}, -2.0, [-3.0, -2.9, -2.95], "{range: [null, -2.75]}"),
        # worst |v − 2| = 0.05, margin max(0.08, 5% of 2.05 = 0.1025): 0.1525 → two digits, up
        ({"abs": 0.01}, 2.0, [1.97, 2.05, 2.01], "{abs: 0.16}"),
        # worst 1.25, margin = spread 2.25: (1.25 + 2.25) / 8 = 0.4375 → 0.44
        ({"rel": 0.01}, 8.0, [7.0, 8.5, 9.25], "{rel: 0.44}"),
    ],
)
def test_the_suggested_tolerance_by_hand(tolerance, expected, values, text) -> None:
    assert suggest(_claim(tolerance, expected), values) == text


def test_no_relative_tolerance_around_zero() -> None:
    assert suggest(_claim({"rel": 0.1}, 0.0), [0.1, 0.2, 0.3]) is None
    assert suggest(_claim({"rel": 0.1}, 1.0), [0.9, 1.0, 1.1]) is not None


def test_round_up_keeps_two_significant_digits_and_never_rounds_down() -> None:
    assert _round_up(0) == "0"
    assert _round_up(1.0) == "1"
    assert _round_up(0.1525) == "0.16"
    assert _round_up(0.0123) == "0.013"
    assert _round_up(123) == "130"
    assert _round_up(0.47) == "0.47"


def test_no_suggestion_for_derived_claims_or_a_value_that_moves_under_exact() -> None:
    assert suggest(_claim("exact", 4, "derived"), [4, 4, 4]) is None
    assert suggest(_claim("exact", 4), [4, 4, 4]) == "exact"
    assert suggest(_claim("exact", 4), [4, 5, 4]) is None


def _parse(text: str) -> dict:
    """`{range: [0.5, null]}` → a dict (the suggestion is YAML flow style)."""
    import yaml

    return yaml.safe_load(text)


def _result(value, verdict="verified", id="c") -> ClaimResult:
    return ClaimResult(paper="p", id=id, statement="s", kind="measured", expected=1.0,
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
    assert (sp.claim, sp.kind, sp.tolerance) == ("c", "measured", claim.tolerance_text)
    assert sp.suggested == suggest(claim, [0.9, 0.4, 0.7]) is not None


def test_seed_spreads_go_past_a_cited_claim_and_take_only_numbers() -> None:
    """A cited claim first must not end the list; a claim a seed did not report counts as not
    passing there; a text value is kept but not spread."""
    cited = Claim(id="x", statement="s", source="T1", kind="cited", why="big")
    a, c = _claim({"abs": 0.5}, 1.0, id="a"), _claim({"abs": 1.0}, 4.0)

    def run_one(seed: int) -> list[ClaimResult]:
        ra = _result({0: 1.2, 7: 0.9, 9: "n/a"}[seed], id="a")
        return [ra] if seed == 9 else [ra, _result(4 if seed == 0 else 4.5)]

    sa, sc = seed_spreads([cited, a, c], [0, 7, 9], run_one)
    assert sa.values == {0: 1.2, 7: 0.9, 9: "n/a"}
    assert sa.numbers == [1.2, 0.9]
    assert sa.suggested == suggest(a, [1.2, 0.9]) is not None
    assert sc.values == {0: 4, 7: 4.5}
    assert sc.passes == {0: True, 7: True, 9: False}
    assert sc.suggested == suggest(c, [4.0, 4.5]) is not None


def test_summary_and_json_of_a_spread() -> None:
    """Sample standard deviation (n − 1): for 1, 2, 4 the mean is 7/3 and the variance
    ((4/3)² + (1/3)² + (5/3)²) / 2 = 7/3; one number has no spread; none gives no summary."""
    sp = Spread("c", "measured", "±0.1", {0: 1, 1: 2.0, 2: 4, 3: True, 4: float("nan")},
                {0: True, 1: True, 2: False, 3: True, 4: False}, "{abs: 3}")  # fmt: skip
    assert sp.numbers == [1.0, 2.0, 4.0]  # bools and non-finite values are not numbers
    assert sp.summary() == pytest.approx(
        {"min": 1.0, "max": 4.0, "mean": 7 / 3, "std": (7 / 3) ** 0.5}
    )
    two = Spread("c", "measured", "", {0: 1.0, 1: 3.0}, {}, None).summary()
    assert two["std"] == pytest.approx(2**0.5)
    assert Spread("c", "measured", "", {0: 5.0, 1: "x"}, {}, None).summary() == {
        "min": 5.0, "max": 5.0, "mean": 5.0, "std": 0.0,
    }  # fmt: skip
    assert Spread("c", "measured", "", {0: "x"}, {}, None).summary() is None
    assert json.loads(json.dumps(sp.to_json(), allow_nan=True)) | {"values": None} == {
        "claim": "c", "kind": "measured", "tolerance": "±0.1", "values": None,
        "passes": {"0": True, "1": True, "2": False, "3": True, "4": False},
        "spread": sp.summary(), "suggested": "{abs: 3}",
    }  # fmt: skip
    assert list(sp.to_json()["values"]) == ["0", "1", "2", "3", "4"]


def test_run_seeds_on_the_cli(library_dir) -> None:
    result = CliRunner().invoke(cli, ["run", "toy", "--quick", "--seeds", "0,5", "--json"])
    assert result.exit_code == 1  # the toy library has a failing claim on purpose
    data = json.loads(result.stdout)
    assert data["seeds"] == [0, 5]
    by_id = {c["claim"]: c for c in data["claims"]}
    assert by_id["two-plus-two"]["values"] == {"0": 4, "5": 4}
    assert by_id["wrong-sum"]["passes"] == {"0": False, "5": False}
