"""Helpers of papers/speculative-decoding/repro.py beyond its claims."""

from __future__ import annotations

import pytest
import torch

from repro.decoding.speculative import expected_tokens_per_call, speculative_generate
from repro.lab.library import Library

SD = Library().get("speculative-decoding").module()


@pytest.mark.parametrize(("alpha", "gamma"), [(0.3, 1), (0.62, 7), (0.9, 10)])
def test_enumerated_tokens_per_call_is_eq1_and_not_the_uncapped_geometric(alpha, gamma) -> None:
    got = SD.tokens_per_call_enumerated(alpha, gamma)
    assert got == pytest.approx(expected_tokens_per_call(alpha, gamma), abs=1e-12)
    assert abs(got - 1 / (1 - alpha)) > 1e-3  # the cap at γ + 1 matters


def test_random_pairs_are_distributions_and_lopsided() -> None:
    p, q = SD.random_pairs(300, 0)
    assert torch.allclose(p.sum(-1), torch.ones(300, dtype=torch.float64))
    support = (p > 0).sum(-1)
    assert (p.max(-1).values * support > 3).float().mean() > 0.5  # peaked: max ≫ uniform
    beta = torch.minimum(p, q).sum(-1)
    assert beta.min() < 0.3 and beta.max() > 0.6


def test_measured_alpha_is_one_for_the_target_itself_and_low_for_a_uniform_draft() -> None:
    torch.manual_seed(0)
    target = SD.random_tiny_gpt(8, 3, 24)
    tokens = torch.randint(0, 8, (1, 20))
    assert SD.measured_alpha(target, target, tokens, 4) == pytest.approx(1.0, abs=1e-9)
    uniform = SD.uniform_draft(8, 24).double()
    alpha = SD.measured_alpha(target, uniform, tokens, 4)
    assert alpha < 0.9
    with torch.no_grad():
        probs = torch.softmax(uniform(tokens)[0], -1)
    assert torch.allclose(probs, torch.full_like(probs, 1 / 8))


def test_uniform_draft_is_rarely_accepted_by_a_peaked_target() -> None:
    target = SD.random_tiny_gpt(8, 5, 40)
    prompt = torch.tensor([[1, 2]])
    res = speculative_generate(target, SD.uniform_draft(8, 40).double(), prompt, 30, 4, 1.0)
    assert res.tokens_per_call(4) < 2.0


def test_exactness_controls_differ_and_the_exact_loop_does_not() -> None:
    m = SD._exactness(3, 2, 1, (1.0,), 7)
    row = m["T=1"]
    assert row["exact"]["max_abs"] < 1e-12
    assert row["accept_all"]["tv"] > 1e-3 and row["resample_p"]["tv"] > 1e-5
