"""LIMA's claims compare trained variants (diverse vs homogeneous, clean vs corrupted, 1,000 vs
the largest set, pretrained vs random init): fed made-up metrics, each reports the difference in
the right order and the ratio against the right baseline. No experiment runs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from repro.lab.claims import Context
from repro.lab.library import Library

LIMA = Library().get("lima").module()


def _m(diverse=0.8, homogeneous=0.3, clean=0.6, corrupted=0.2, largest=0.85, random_acc=0.25):
    big, few = LIMA.LIMA_SIZE, LIMA.FEW_SIZE
    pre = {
        few: {"accuracy": 0.5, "compliance": 0.7, "sampled_accuracy": 0.3},
        big: {"accuracy": diverse, "compliance": 0.95, "sampled_accuracy": clean},
        4 * big: {"accuracy": largest, "compliance": 0.97, "sampled_accuracy": 0.7},
    }
    run = {"pretrained": pre, "homogeneous": {"accuracy": homogeneous, "compliance": 0.9},
           "corrupted": {"accuracy": 0.5, "sampled_accuracy": corrupted},
           "random_init": {big: {"accuracy": random_acc, "compliance": 0.9}}}  # fmt: skip
    return {
        **run,
        "runs": [run],
        "trivial_accuracy": 0.2,
        "raw_accuracy": 0.4,
        "before_sft": {"compliance": 0.0},
    }


def _v(claim: str, metrics: dict) -> float:
    return getattr(LIMA, claim)(Context(_metrics=metrics)).value


def test_variant_gaps_subtract_in_order() -> None:
    assert _v("diversity_beats_homogeneity", _m()) == pytest.approx(0.5)
    assert _v("diversity_beats_homogeneity", _m(diverse=0.3, homogeneous=0.8)) == pytest.approx(
        -0.5
    )
    assert _v("quality_matters", _m()) == pytest.approx(0.4)
    assert _v("quality_matters", _m(clean=0.1, corrupted=0.3)) == pytest.approx(-0.2)
    assert _v("quantity_plateau", _m()) == pytest.approx(0.05)
    assert _v("quantity_plateau", _m(largest=0.6)) == pytest.approx(-0.2)


def test_ratios_against_their_baselines() -> None:
    assert _v("knowledge_from_pretraining", _m()) == pytest.approx(0.8 / 0.4)
    assert math.isnan(_v("knowledge_from_pretraining", {**_m(), "raw_accuracy": 0.0}))
    # (0.25 − 0.2) / (0.8 − 0.2): the control's share of the pretrained model's gain
    assert _v("random_init_lacks_knowledge", _m()) == pytest.approx(0.05 / 0.6)
    assert _v("random_init_lacks_knowledge", _m(random_acc=0.8)) == pytest.approx(1.0)
    assert _v("format_from_100", _m()) == 0.7
    assert _v("format_from_1000", _m()) == 0.95


def test_perplexity_correlation_has_its_sign() -> None:
    ppl, acc = [9.0, 5.0, 4.0, 4.5], [0.1, 0.3, 0.35, 0.2]
    curve = {"perplexity": ppl, "sampled_accuracy": acc, "accuracy": acc, "compliance": acc}
    r = _v("perplexity_tracks_accuracy_here", {"epochs": curve})
    assert r == pytest.approx(np.corrcoef(ppl, acc)[0, 1]) and r < 0
    curve = {**curve, "perplexity": [-p for p in ppl]}
    assert _v("perplexity_tracks_accuracy_here", {"epochs": curve}) == pytest.approx(-r)


# --- the paper's own numbers, by hand ------------------------------------------------------


def test_table_1_arithmetic_by_hand() -> None:
    got = LIMA.training_set_composition(Context())
    assert got.value == 200 + 200 + 200 + 150 + 50 + 200
    assert got.details == {
        "per_source": {
            "Stack Exchange (STEM)": 200,
            "Stack Exchange (Other)": 200,
            "wikiHow": 200,
            "Pushshift r/WritingPrompts": 150,
            "Natural Instructions": 50,
            "Paper Authors (Group A)": 200,
        },
        "community": 200 + 200 + 200 + 150,  # Stack Exchange ×2, wikiHow, WritingPrompts
        "authored_or_edited": 50 + 200,
    }
    # Σ count × (input + output) over Table 1's rows
    tokens = (
        200 * (117 + 523)
        + 200 * (119 + 530)
        + 200 * (12 + 1811)
        + 150 * (34 + 274)
        + 50 * (236 + 92)
        + 200 * (40 + 334)
    )
    got = LIMA.tokens_per_example(Context())
    assert got.value == pytest.approx(tokens / 1000) and tokens == 759_800
    assert got.details == {"table_1_tokens": tokens, "caption_tokens_per_example": 750.0}
    got = LIMA.alpaca_data_ratio(Context())
    assert got.value == 52.0 and got.details == {"alpaca": 52_000, "lima": 1000}


def test_fig_1_and_section_5_arithmetic_by_hand() -> None:
    got = LIMA.win_or_tie_rates(Context())
    rates = {"GPT-4 (April)": 18 + 25, "Claude (April)": 24 + 22, "BARD (April)": 33 + 25,
             "DaVinci003": 44 + 21, "Alpaca 65B": 53 + 21}  # fmt: skip
    assert got.value == "43/46/58/65/74"
    assert got.details == {"win_plus_tie": rates}
    got = LIMA.quantity_ablation_range(Context())
    assert got.value == 32_000 / 2_000 == 16.0
    assert got.details == {"sizes": [2_000, 4_000, 8_000, 16_000, 32_000]}


def test_fig_1_bars_that_miss_100_are_refused(monkeypatch) -> None:
    monkeypatch.setattr(LIMA, "FIG_1", {**LIMA.FIG_1, "Odd": (50, 30, 21)})
    with pytest.raises(
        AssertionError, match=r"^Odd: Fig. 1 bars \(50, 30, 21\) do not add to 100%$"
    ):
        LIMA.win_or_tie_rates(Context())
    monkeypatch.setattr(LIMA, "FIG_1", {"Short": (50, 30, 19)})
    with pytest.raises(AssertionError, match="Short"):
        LIMA.win_or_tie_rates(Context())


# --- the measured claims' details, over two seeds ------------------------------------------


def _two_seeds() -> dict:
    """Two seeds with lopsided numbers; the top level holds their means, as experiment() does."""
    big, few, top = LIMA.LIMA_SIZE, LIMA.FEW_SIZE, 3 * LIMA.LIMA_SIZE

    def run(a: float) -> dict:
        return {
            "pretrained": {
                few: {"accuracy": 0.41 + a, "compliance": 0.72 + a, "sampled_accuracy": 0.3},
                big: {"accuracy": 0.83 + a, "compliance": 0.96 - a, "sampled_accuracy": 0.61 + a},
                top: {"accuracy": 0.87 - a, "compliance": 0.98, "sampled_accuracy": 0.7},
            },
            "homogeneous": {"accuracy": 0.37 - a, "compliance": 0.91 + a, "sampled_accuracy": 0.2},
            "corrupted": {"accuracy": 0.55 + a, "compliance": 0.8, "sampled_accuracy": 0.23 - a},
            "random_init": {
                big: {"accuracy": 0.26 + a, "compliance": 0.93 - a},
                few: {"accuracy": 0.22, "compliance": 0.5 + a},
            },
        }

    runs = [run(0.0), run(0.04)]

    def mean(x, y):
        return {k: mean(x[k], y[k]) for k in x} if isinstance(x, dict) else (x + y) / 2

    return {
        **mean(*runs),
        "runs": runs,
        "trivial_accuracy": 0.21,
        "raw_accuracy": 0.43,
        "before_sft": {"compliance": 0.02},
    }


def _got(claim: str, metrics: dict):
    return getattr(LIMA, claim)(Context(run_experiment=lambda c, x: metrics))


def test_format_and_knowledge_claims_report_their_details() -> None:
    m = _two_seeds()
    got = _got("format_from_1000", m)
    assert got.value == pytest.approx(0.96 - 0.02)
    assert got.details == {"before_sft": 0.02, "per_seed": [0.96, 0.96 - 0.04]}
    got = _got("format_from_100", m)
    assert got.value == pytest.approx(0.72 + 0.02)
    assert got.details == {
        "at_1000": pytest.approx(0.96 - 0.02),
        "accuracy_at_100": pytest.approx(0.41 + 0.02),
    }
    got = _got("knowledge_from_pretraining", m)
    assert got.value == pytest.approx(0.85 / 0.43)
    assert got.details == {
        "accuracy_after_sft": pytest.approx(0.85),
        "raw_format_accuracy": 0.43,
        "trivial_accuracy": 0.21,
        "per_seed_accuracy": [0.83, 0.83 + 0.04],
    }
    assert math.isnan(_got("knowledge_from_pretraining", {**m, "raw_accuracy": -0.1}).value)
    got = _got("random_init_learns_format", m)
    assert got.value == pytest.approx(0.93 - 0.02)
    assert got.details == {"per_seed": [0.93, 0.93 - 0.04]}
    got = _got("random_init_lacks_knowledge", m)
    assert got.value == pytest.approx((0.28 - 0.21) / (0.85 - 0.21))
    assert got.details == {
        "random_init_accuracy": pytest.approx(0.28),
        "pretrained_accuracy": pytest.approx(0.85),
        "trivial_accuracy": 0.21,
        "random_init_curve": {1000: pytest.approx(0.28), 100: pytest.approx(0.22)},
    }


def test_ablation_claims_report_per_seed_gaps() -> None:
    m = _two_seeds()
    got = _got("diversity_beats_homogeneity", m)
    assert got.value == pytest.approx(0.85 - 0.35)
    assert got.details == {
        "diverse": m["pretrained"][1000],
        "homogeneous": m["homogeneous"],
        "compliance_gap": pytest.approx(0.94 - 0.93),
        "per_seed_gap": [pytest.approx(0.83 - 0.37), pytest.approx(0.87 - 0.33)],
    }
    got = _got("quality_matters", m)
    assert got.value == pytest.approx(0.63 - 0.21)
    assert got.details == {
        "clean": m["pretrained"][1000],
        "corrupted": m["corrupted"],
        "greedy_accuracy_gap": pytest.approx(0.85 - 0.57),
        "per_seed_gap": [pytest.approx(0.61 - 0.23), pytest.approx(0.65 - 0.19)],
    }
    got = _got("quantity_plateau", m)
    assert got.value == pytest.approx(0.85 - 0.85)
    assert got.details == {
        "largest": 3000,
        "accuracy": {
            100: pytest.approx(0.43),
            1000: pytest.approx(0.85),
            3000: pytest.approx(0.85),
        },
        "compliance": {100: pytest.approx(0.74), 1000: pytest.approx(0.94), 3000: 0.98},
        "random_init_accuracy": {1000: pytest.approx(0.28), 100: 0.22},
    }
    m["pretrained"][3000]["accuracy"] = 0.9  # the largest set is not the last key read
    assert _got("quantity_plateau", m).value == pytest.approx(0.9 - 0.85)


def test_perplexity_claim_reports_the_whole_curve() -> None:
    curve = {"perplexity": [4.0, 2.5, 2.0], "sampled_accuracy": [0.1, 0.5, 0.4],
             "accuracy": [0.2, 0.6, 0.7], "compliance": [0.3, 0.9, 1.0]}  # fmt: skip
    got = _got("perplexity_tracks_accuracy_here", {"epochs": curve})
    # Pearson r by hand: ppl − mean = (1.17, −0.33, −0.83), acc − mean = (−0.23, 0.17, 0.07)
    dp = [x - 8.5 / 3 for x in curve["perplexity"]]
    da = [x - 1.0 / 3 for x in curve["sampled_accuracy"]]
    r = sum(p * a for p, a in zip(dp, da, strict=True)) / math.sqrt(
        sum(p * p for p in dp) * sum(a * a for a in da)
    )
    assert got.value == pytest.approx(r, rel=1e-5)
    assert got.details == curve
