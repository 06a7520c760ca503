"""Speculative decoding: the rule, the loop with its cache rollbacks, and the enumerator."""

from __future__ import annotations

import math

import pytest
import torch

from repro.decoding.speculative import (
    CachedDecoder,
    TorchRandomness,
    acceptance_rate,
    acceptance_rate_ref,
    best_gamma,
    distribution_gap,
    enumerate_outcomes,
    exact_output_distribution,
    expected_tokens_per_call,
    next_token_probs,
    residual,
    sequence_distribution_ref,
    speculative_generate,
    tv_distance,
    walltime_factor,
)
from repro.models.gpt import GPT, GPTConfig
from repro.nn.kv_cache import generate


def tiny(vocab: int, seed: int, std: float = 0.6, max_len: int = 16) -> GPT:
    torch.manual_seed(seed)
    cfg = GPTConfig(
        n_layers=1, d_model=16, n_heads=2, vocab_size=vocab, max_seq_len=max_len, backend="ref"
    )
    model = GPT(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, std)
    return model


def test_acceptance_rate_is_one_minus_tv_and_the_definition_on_lopsided_pairs() -> None:
    g = torch.Generator().manual_seed(0)
    p = torch.softmax(3 * torch.randn(50, 7, generator=g, dtype=torch.float64), -1)
    q = torch.softmax(3 * torch.randn(50, 7, generator=g, dtype=torch.float64), -1)
    beta = acceptance_rate(p, q)
    assert torch.allclose(beta, 1 - tv_distance(p, q), atol=1e-14)
    assert torch.allclose(beta, acceptance_rate_ref(p, q), atol=1e-14)
    assert 0.05 < beta.mean() < 0.95  # not a degenerate case


def test_speculative_sampling_of_one_token_is_p_and_the_residual_matters() -> None:
    p = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    q = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    keep = torch.minimum(p, q)  # q(x) · min(1, p/q)
    out = keep + (1 - keep.sum()) * residual(p, q)
    assert torch.allclose(out, p, atol=1e-15)
    wrong = keep + (1 - keep.sum()) * p  # resampling from p after a rejection
    assert (wrong - p).abs().max() > 0.05


def test_expected_tokens_formula_against_simulation_and_limits() -> None:
    g = torch.Generator().manual_seed(1)
    alpha, gamma = 0.7, 4
    kept = torch.rand(200_000, gamma, generator=g) < alpha  # i.i.d. acceptances
    n = torch.cumprod(kept.int(), dim=1).sum(1)  # guesses kept before the first rejection
    assert abs((n + 1).double().mean().item() - expected_tokens_per_call(alpha, gamma)) < 0.01
    assert expected_tokens_per_call(0.0, 5) == 1.0
    assert expected_tokens_per_call(1.0, 5) == 6.0
    assert walltime_factor(0.8, 1, 0.05) == pytest.approx(1.8 / 1.05)  # Corollary 3.9
    g8, f8 = best_gamma(0.8, 0.05)
    assert g8 == 8 and f8 > walltime_factor(0.8, 7, 0.05) and f8 > walltime_factor(0.8, 9, 0.05)


def test_greedy_speculative_equals_greedy_target_tokens() -> None:
    target, draft = tiny(5, 1, max_len=40), tiny(5, 2, max_len=40)
    prompt = torch.tensor([[1, 4, 2]])
    want = generate(target, prompt, 30)  # plain cached greedy decoding
    for gamma in (1, 3, 5):
        got = speculative_generate(target, draft, prompt, 30, gamma, temperature=0.0)
        assert torch.equal(got.tokens, want)
        assert got.new_tokens == 30 and got.target_calls == len(got.steps)


def test_caches_after_generation_equal_a_fresh_prefill() -> None:
    """After rollbacks the valid part of the target's cache is what a prefill would write."""
    target, draft = tiny(4, 3, max_len=40), tiny(4, 4, max_len=40)
    prompt = torch.tensor([[0, 1]])
    rng = TorchRandomness(torch.Generator().manual_seed(0))
    res = speculative_generate(target, draft, prompt, 25, 3, 1.0, rng)
    assert any(n < g for g, n in res.steps), "no rejection happened: the test proves nothing"
    fresh = CachedDecoder(target, 40)
    with torch.no_grad():
        fresh.extend(res.tokens, 26)
    # replay the loop's caches by running it again with the same seed
    M_p = CachedDecoder(target, 27)
    from repro.decoding.speculative import speculative_step

    rng = TorchRandomness(torch.Generator().manual_seed(0))
    M_q = CachedDecoder(draft, 27)
    tokens = torch.zeros(1, 27, dtype=torch.long)
    tokens[:, :2] = prompt
    length = 2
    with torch.no_grad():
        while length < 27:
            n = speculative_step(M_p, M_q, tokens, length, min(3, 27 - length - 1), 1.0, rng)
            length += n + 1
    assert torch.equal(tokens, res.tokens)
    L = M_p.length
    for a, b in zip(M_p.caches, fresh.caches, strict=True):
        assert torch.allclose(a.k[:, :, :L], b.k[:, :, :L], atol=1e-12)
        assert torch.allclose(a.v[:, :, :L], b.v[:, :, :L], atol=1e-12)


@pytest.mark.parametrize("temperature", [0.7, 0.0])
def test_exact_distribution_matches_target_and_controls_differ(temperature: float) -> None:
    target, draft = tiny(3, 11), tiny(3, 12)
    prompt = torch.tensor([[2, 0]])
    ref = sequence_distribution_ref(target, prompt, 3, temperature)
    got = exact_output_distribution(target, draft, prompt, 3, 1, temperature)
    assert distribution_gap(got, ref)["max_abs"] < 1e-12
    assert abs(sum(got.values()) - 1) < 1e-12
    if temperature > 0:
        for variant in ("accept_all", "resample_p"):
            bad = exact_output_distribution(target, draft, prompt, 3, 1, temperature, variant)
            assert distribution_gap(bad, ref)["tv"] > 1e-3, variant


def test_exact_distribution_catches_a_cache_that_is_not_rolled_back() -> None:
    """If the rejected slots stayed valid, later distributions would read them."""
    target, draft = tiny(3, 21), tiny(3, 22)
    prompt = torch.tensor([[1, 2]])
    original = CachedDecoder.rollback

    def no_rollback(self: CachedDecoder, length: int) -> None:
        pass  # keep the length: the next step feeds nothing new and reads stale keys

    CachedDecoder.rollback = no_rollback
    try:
        with pytest.raises(AssertionError):
            exact_output_distribution(target, draft, prompt, 3, 2, 1.0)
    finally:
        CachedDecoder.rollback = original
    got = exact_output_distribution(target, draft, prompt, 2, 1, 1.0)
    assert (
        distribution_gap(got, sequence_distribution_ref(target, prompt, 2, 1.0))["max_abs"] < 1e-12
    )


def test_distribution_gap_reports_differences() -> None:
    a = {(0,): 0.5, (1,): 0.5}
    assert distribution_gap(a, a) == {"max_abs": 0.0, "tv": 0.0}
    gap = distribution_gap(a, {(0,): 0.2, (2,): 0.8})
    assert gap["max_abs"] == pytest.approx(0.8) and gap["tv"] == pytest.approx(0.8)


def test_enumerate_outcomes_of_a_known_process() -> None:
    def run(rng):  # two fair-ish coin flips, the second only after heads
        first = rng.bernoulli(0.3)
        second = rng.categorical(torch.tensor([0.25, 0.75], dtype=torch.float64)) if first else 9
        return torch.tensor([int(first), second])

    out = enumerate_outcomes(run)
    assert out == pytest.approx({(1, 0): 0.075, (1, 1): 0.225, (0, 9): 0.7})


def test_sampled_frequencies_follow_the_target() -> None:
    target, draft = tiny(3, 31), tiny(3, 32)
    prompt = torch.tensor([[0, 2]])
    ref = sequence_distribution_ref(target, prompt, 1, 1.0)
    rng = TorchRandomness(torch.Generator().manual_seed(5))
    counts = torch.zeros(3)
    for _ in range(600):
        res = speculative_generate(target, draft, prompt, 1, 1, 1.0, rng)
        counts[res.tokens[0, -1]] += 1
    freq = counts / counts.sum()
    for x in range(3):
        assert abs(freq[x] - ref.get((x,), 0.0)) < 0.06


def test_next_token_probs_greedy_is_one_hot() -> None:
    logits = torch.tensor([[0.1, 2.0, -1.0]])
    assert torch.equal(next_token_probs(logits, 0.0), torch.tensor([[0.0, 1.0, 0.0]]).double())
    assert torch.allclose(next_token_probs(logits, 1.0).sum(-1), torch.ones(1, dtype=torch.float64))


@pytest.mark.parametrize(
    ("prompt", "gamma", "new", "match"),
    [
        (torch.zeros(1, 0, dtype=torch.long), 2, 3, "empty"),
        (torch.zeros(1, 2, dtype=torch.long), 0, 3, "gamma"),
        (torch.zeros(1, 2, dtype=torch.long), 2, 0, "new_tokens"),
        (torch.zeros(2, 2, dtype=torch.long), 2, 3, r"\(1, T0\)"),
        (torch.zeros(1, 2, dtype=torch.long), 2, 30, "max_seq_len"),
    ],
)
def test_bad_input_is_a_clear_value_error(prompt, gamma, new, match) -> None:
    target, draft = tiny(3, 1), tiny(3, 2)
    with pytest.raises(ValueError, match=match):
        speculative_generate(target, draft, prompt, new, gamma)


def test_vocabulary_mismatch_and_unknown_variant_are_refused() -> None:
    prompt = torch.zeros(1, 2, dtype=torch.long)
    with pytest.raises(ValueError, match="vocabularies"):
        speculative_generate(tiny(3, 1), tiny(4, 2), prompt, 2, 1)
    with pytest.raises(ValueError, match="variant"):
        speculative_generate(tiny(3, 1), tiny(3, 2), prompt, 2, 1, variant="nope")


@pytest.mark.parametrize(("alpha", "gamma", "c"), [(0.6, 3, 0.1), (0.85, 7, 0.02), (0.3, 2, 0.5)])
def test_walltime_and_operations_factors_are_theorems_3_8_and_3_11(alpha, gamma, c) -> None:
    """γ > 1 and c, ĉ > 0 (Table 1 has c = ĉ = 0, Corollary 3.9 γ = 1: both hide a lost γ):
    speed (1 − α^{γ+1}) / ((1 − α)(γc + 1)), operations (1 − α)(γĉ + γ + 1) / (1 − α^{γ+1})."""
    from repro.decoding.speculative import operations_factor

    tokens = (1 - alpha ** (gamma + 1)) / (1 - alpha)
    assert walltime_factor(alpha, gamma, c) == pytest.approx(tokens / (gamma * c + 1), rel=1e-12)
    want_ops = (1 - alpha) * (gamma * c + gamma + 1) / (1 - alpha ** (gamma + 1))
    assert operations_factor(alpha, gamma, c) == pytest.approx(want_ops, rel=1e-12)


def test_result_counts_tokens_per_call_over_the_steps_of_one_gamma() -> None:
    from repro.decoding.speculative import SpeculativeResult

    res = SpeculativeResult(torch.zeros(1, 10), 3, 10, steps=[(4, 4), (4, 1), (2, 0)])
    assert res.new_tokens == 5 + 2 + 1
    assert res.tokens_per_call(4) == pytest.approx(3.5)  # (5 + 2) / 2 steps that used γ = 4
    assert res.tokens_per_call() == pytest.approx(8 / 3)
    assert res.tokens_per_call(3) != res.tokens_per_call(3)  # no step used γ = 3: NaN


def test_next_token_probs_divides_by_the_temperature() -> None:
    logits = torch.tensor([[1.0, -0.5, 2.5, 0.0], [0.3, 0.2, -2.0, 1.0]])
    for temperature in (0.5, 2.0):
        want = [
            [math.exp(v / temperature) / sum(math.exp(u / temperature) for u in row) for v in row]
            for row in logits.tolist()
        ]
        got = next_token_probs(logits, temperature)
        assert got.dtype == torch.float64
        assert got.flatten().tolist() == pytest.approx(sum(want, []), rel=1e-12)
    with pytest.raises(ValueError, match=r"^temperature must be >= 0, got -0\.1$"):
        next_token_probs(logits, -0.1)


def _rates_by_loop(p: list[float], q: list[float]) -> tuple[float, float, float]:
    """β = Σ min(p, q), β as E_{x~q} min(1, p/q), and TV = ½ Σ |p − q|, one token at a time."""
    beta = sum(min(a, b) for a, b in zip(p, q, strict=True))
    beta_def = sum(b * min(1.0, a / b) for a, b in zip(p, q, strict=True) if b > 0)
    tv = 0.5 * sum(abs(a - b) for a, b in zip(p, q, strict=True))
    return beta, beta_def, tv


def test_rates_reduce_over_the_vocabulary_only() -> None:
    # (2, 3, V): a sum over any axis but the last gives another shape and other numbers
    g = torch.Generator().manual_seed(7)
    p = torch.softmax(2 * torch.randn(2, 3, 5, generator=g, dtype=torch.float64), -1)
    q = torch.softmax(2 * torch.randn(2, 3, 5, generator=g, dtype=torch.float64), -1)
    q[1, 2, 3] = 0.0  # a token the draft never proposes
    q[1, 2] /= q[1, 2].sum()
    for fn, which in ((acceptance_rate, 0), (acceptance_rate_ref, 1), (tv_distance, 2)):
        got = fn(p, q)
        assert got.shape == (2, 3)
        for i in range(2):
            for j in range(3):
                want = _rates_by_loop(p[i, j].tolist(), q[i, j].tolist())[which]
                assert got[i, j].item() == pytest.approx(want, rel=1e-12), fn.__name__


def test_residual_of_equal_distributions_is_p() -> None:
    # p == q: a rejection never happens (Σ max(0, p − q) = 0), and 0/0 must not come out
    p = torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64)
    assert torch.equal(residual(p, p.clone()), p)
    q = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    want = torch.tensor([0.3, 0.0, 0.0], dtype=torch.float64) / 0.3
    assert torch.allclose(residual(p, q), want, atol=1e-15)


def test_formulas_at_their_edges_and_their_refusals() -> None:
    from repro.decoding.speculative import operations_factor

    assert expected_tokens_per_call(0.6, 0) == 1.0  # γ = 0: plain decoding
    assert walltime_factor(0.6, 3, 0.0) == pytest.approx((1 - 0.6**4) / 0.4)  # a free draft
    # ĉ defaults to 0: the operations factor is then (γ + 1) / E[tokens]
    assert operations_factor(0.6, 3) == pytest.approx(4 / ((1 - 0.6**4) / 0.4), rel=1e-12)
    for call, message in (
        (lambda: expected_tokens_per_call(0.5, -1), r"^gamma must be >= 0, got -1$"),
        (lambda: expected_tokens_per_call(1.5, 2), r"^alpha must be in \[0, 1\], got 1\.5$"),
        (lambda: walltime_factor(0.5, 2, -0.1), r"^cost ratio c must be >= 0, got -0\.1$"),
        (lambda: best_gamma(0.5, 0.1, 0), r"^max_gamma must be >= 1, got 0$"),
    ):
        with pytest.raises(ValueError, match=message):
            call()


def _best_gamma_by_search(alpha: float, c: float, max_gamma: int) -> tuple[int, float]:
    best = (1, walltime_factor(alpha, 1, c))
    for g in range(2, max_gamma + 1):
        f = walltime_factor(alpha, g, c)
        if f > best[1]:  # strictly better: the smallest γ wins a tie
            best = (g, f)
    return best


@pytest.mark.parametrize(
    ("alpha", "c", "max_gamma"),
    [
        (0.8, 0.05, 64),  # an interior optimum (γ = 8)
        (0.9999, 1e-6, 64),  # the optimum is past the cap: the cap is chosen
        (0.1, 1.0, 64),  # speculation loses (factor < 1), yet γ ≥ 1 is returned
        (0.0, 0.0, 5),  # every γ ties at 1: the smallest wins
        (0.7, 0.2, 1),
    ],
)
def test_best_gamma_is_a_search_over_1_to_max_gamma(alpha, c, max_gamma) -> None:
    want = _best_gamma_by_search(alpha, c, max_gamma)
    got = best_gamma(alpha, c) if max_gamma == 64 else best_gamma(alpha, c, max_gamma)
    assert got[0] == want[0] and got[1] == pytest.approx(want[1], rel=1e-15)


def test_torch_randomness_keeps_with_probability_from_its_own_stream() -> None:
    rng = TorchRandomness(torch.Generator().manual_seed(3))
    draws = torch.rand(200, generator=torch.Generator().manual_seed(3)).tolist()
    probs = [0.1, 0.5, 0.9, 0.35] * 50
    assert [rng.bernoulli(p) for p in probs] == [u < p for u, p in zip(draws, probs, strict=True)]
    # a certain keep draws nothing, so the stream is where it was
    rng = TorchRandomness(torch.Generator().manual_seed(3))
    assert rng.bernoulli(1.0) and rng.bernoulli(1.0)
    assert rng.bernoulli(draws[0] + 1e-6) and not rng.bernoulli(draws[1] - 1e-6)


def test_exact_distributions_of_the_controls_are_distributions() -> None:
    # a broken variant must still weight its branches by probabilities (they sum to 1)
    target, draft = tiny(3, 11), tiny(3, 12)
    prompt = torch.tensor([[2, 0]])
    for variant in ("accept_all", "resample_p"):
        bad = exact_output_distribution(target, draft, prompt, 2, 2, 0.7, variant)
        assert abs(sum(bad.values()) - 1) < 1e-12, variant
        assert all(w > 0 for w in bad.values())


def test_refusals_say_exactly_what_is_wrong() -> None:
    target, draft = tiny(3, 1), tiny(3, 2)
    with pytest.raises(ValueError, match=r"^prompt is empty: speculative decoding needs at least"):
        speculative_generate(target, draft, torch.zeros(1, 0, dtype=torch.long), 3, 2)
    with pytest.raises(
        ValueError, match=r"^prompt \(2\) \+ new_tokens \(15\) = 17 exceeds max_seq_len=16$"
    ):
        speculative_generate(target, draft, torch.zeros(1, 2, dtype=torch.long), 15, 2)
    # up to max_seq_len exactly is allowed
    res = speculative_generate(target, draft, torch.zeros(1, 2, dtype=torch.long), 14, 2)
    assert res.tokens.shape == (1, 16)
    with pytest.raises(ValueError, match=r"^target and draft vocabularies differ: 3 vs 4$"):
        speculative_generate(target, tiny(4, 2), torch.zeros(1, 2, dtype=torch.long), 2, 1)


def test_enumerate_outcomes_skips_impossible_branches_and_counts_its_runs() -> None:
    def run(rng):
        certain = rng.bernoulli(1.0)  # its False branch has probability 0: never run
        second = rng.categorical(torch.tensor([0.25, 0.0, 0.75], dtype=torch.float64))
        return torch.tensor([int(certain), second])

    # runs: the empty script, [True], then [True, 0] and [True, 2]: 4 in all
    assert enumerate_outcomes(run, max_runs=4) == {(1, 0): 0.25, (1, 2): 0.75}
    with pytest.raises(ValueError, match=r"^more than 3 runs: the tree of outcomes is too large$"):
        enumerate_outcomes(run, max_runs=3)


def test_distribution_gap_counts_a_missing_outcome_as_probability_zero() -> None:
    a = {(0,): 0.7, (1,): 0.3}
    b = {(0,): 0.6, (2,): 0.4}
    assert distribution_gap(a, b) == pytest.approx({"max_abs": 0.4, "tv": 0.4})
    assert distribution_gap(b, a) == pytest.approx({"max_abs": 0.4, "tv": 0.4})
    assert distribution_gap({}, {}) == {"max_abs": 0.0, "tv": 0.0}


def test_caches_are_made_on_the_device_and_in_the_dtype_of_the_weights() -> None:
    # the meta device stands in for a GPU: caches made on the default device would be on the CPU
    model = tiny(3, 1).to(device="meta", dtype=torch.float16)
    decoder = CachedDecoder(model, 8)
    assert all(c.k.device.type == "meta" and c.v.dtype == torch.float16 for c in decoder.caches)
