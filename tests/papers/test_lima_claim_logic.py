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
