"""Seeded request traces and the serving-memory simulation."""

from __future__ import annotations

import pytest
import torch

from repro.serving.trace import Request, lognormal_lengths, make_trace, simulate


def test_trace_is_seeded_clipped_and_has_the_asked_mean() -> None:
    a, b = make_trace(3000, 7), make_trace(3000, 7)
    assert a == b and a != make_trace(3000, 8)
    assert all(r.prompt_len >= 1 and r.output_len >= 1 and r.total <= 2048 for r in a)
    g = torch.Generator().manual_seed(0)
    x = lognormal_lengths(20000, 300.0, 0.8, 10**6, g)
    assert abs(sum(x) / len(x) - 300) < 10
    with pytest.raises(ValueError):
        make_trace(0, 1)


def test_preallocation_fits_budget_over_max_len_sequences() -> None:
    trace = [Request(10, 10)] * 20
    s = simulate(trace, 8192, None, max_len=2048)
    assert s.running <= 4 + 1e-9 and s.waste == pytest.approx(1 - 15 / 2048, abs=0.01)


def test_paged_waste_below_one_block_and_more_sequences_than_preallocation() -> None:
    trace = make_trace(60, 3)
    paged = simulate(trace, 15728, 16)
    pre = simulate(trace, 15728, None)
    assert paged.waste < pre.waste
    assert paged.running > 2 * pre.running
    small, large = simulate(trace, 15728, 8), simulate(trace, 15728, 128)
    assert small.waste < paged.waste < large.waste


def test_paged_simulation_counts_exactly_on_a_hand_example() -> None:
    # two requests of 3 + 2 tokens, B = 2, plenty of memory: waste is the odd slot of each
    stats = simulate([Request(3, 2), Request(3, 2)], 64, 2, max_len=16)
    # iterations: tokens 4 then 5 for both; stored 8 then 10, allocated 8 then 12 slots
    assert stats.iterations == 2 and stats.running == 2
    assert stats.waste == pytest.approx((0 + 2) / (8 + 12))


def test_preemption_under_pressure_and_refusal_of_impossible_requests() -> None:
    trace = [Request(5, 20) for _ in range(6)]
    s = simulate(trace, 48, 4, max_len=64)
    assert s.preemptions > 0
    with pytest.raises(ValueError, match="never fit"):
        simulate([Request(60, 10)], 48, 4, max_len=128)


@pytest.mark.parametrize("sigma", [0.5, 1.2])
def test_lognormal_lengths_have_the_asked_width(sigma: float) -> None:
    """The spread is σ of log-length (the waste and batching claims depend on how often long
    requests come), with the mean held at the asked value whatever σ is."""
    g = torch.Generator().manual_seed(1)
    x = torch.tensor(lognormal_lengths(40000, 500.0, sigma, 10**7, g), dtype=torch.float64)
    assert x.log().std().item() == pytest.approx(sigma, rel=0.03)
    assert x.mean().item() == pytest.approx(500.0, rel=0.04)


def test_default_trace_has_the_papers_sharegpt_means() -> None:
    """make_trace's defaults are the ShareGPT means of Fig. 11a: 161 prompt and 338 output
    tokens (the 2048 clip removes a little of the tail)."""
    trace = make_trace(20000, 0)
    prompt = sum(r.prompt_len for r in trace) / len(trace)
    output = sum(r.output_len for r in trace) / len(trace)
    assert prompt == pytest.approx(161, rel=0.05) and output == pytest.approx(338, rel=0.06)
