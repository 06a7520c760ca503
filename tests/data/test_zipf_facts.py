from __future__ import annotations

import math

import pytest
import torch

from repro.data.zipf_facts import ZipfFacts, ZipfFactsConfig, entropy_floor, entropy_floor_ref


@pytest.mark.parametrize(
    ("V", "eps"), [(32, 0.1), (2, 0.5), (7, 0.0), (32, 1.0), (100, 0.33), (1, 0.4)]
)
def test_floor_closed_form_matches_entropy_of_the_label_distribution(V: int, eps: float) -> None:
    assert entropy_floor(V, eps) == pytest.approx(entropy_floor_ref(V, eps), abs=1e-12)


def test_floor_known_values() -> None:
    assert entropy_floor(32, 0.1) == pytest.approx(0.6508294, abs=1e-7)  # the figure
    assert entropy_floor(32, 1.0) == pytest.approx(math.log(32), abs=1e-12)
    assert entropy_floor(32, 0.0) == 0.0


def test_population_loss_reaches_the_floor_only_at_the_true_distribution() -> None:
    src = ZipfFacts(ZipfFactsConfig(n_keys=64, zipf_s=1.3, noise=0.2, vocab_size=8))
    best = src.label_distribution().log()  # (K, V) float64 logits
    assert float(src.population_loss(best)) == pytest.approx(src.floor, abs=1e-12)
    other = best + 0.3 * torch.randn(
        best.shape, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    assert float(src.population_loss(other)) > src.floor + 1e-4


def test_population_loss_is_the_mean_cross_entropy_of_samples() -> None:
    src = ZipfFacts(ZipfFactsConfig(n_keys=50, zipf_s=1.5, noise=0.3, vocab_size=5, code_dim=4))
    logits = torch.randn(50, 5, dtype=torch.float64, generator=torch.Generator().manual_seed(1))
    keys, labels = src.sample_keys(200_000, torch.Generator().manual_seed(2))
    ce = torch.nn.functional.cross_entropy(logits[keys], labels)
    assert float(ce) == pytest.approx(float(src.population_loss(logits)), abs=0.03)


def test_samples_follow_zipf_and_the_noise_rate() -> None:
    src = ZipfFacts(ZipfFactsConfig(n_keys=16, zipf_s=2.0, noise=0.25, vocab_size=4, code_dim=3))
    keys, labels = src.sample_keys(100_000, torch.Generator().manual_seed(0))
    for k in (0, 1, 5):
        assert float((keys == k).float().mean()) == pytest.approx(float(src.probs[k]), abs=0.01)
    hit = keys == 0
    codes, _ = src.sample(10, torch.Generator().manual_seed(0))
    assert torch.equal(codes, src.codes[keys[:10]])  # same generator stream, same keys
    wrong = (labels[hit] != src.answers[0]).float().mean()
    assert float(wrong) == pytest.approx(0.25 * (1 - 1 / 4), abs=0.01)  # uniform noise can hit f(k)


def test_frequencies_are_zipf_and_the_draw_follows_the_seed() -> None:
    """p_k = k^(−s) / Σ_j j^(−s) with Python floats; codes (K, d) and answers in [0, V) are the
    seed's, the same for the same seed and different for another."""
    cfg = ZipfFactsConfig(n_keys=6, zipf_s=1.7, vocab_size=5, code_dim=3, seed=11)
    src = ZipfFacts(cfg)
    norm = sum(j**-1.7 for j in range(1, 7))
    assert src.probs.tolist() == pytest.approx([k**-1.7 / norm for k in range(1, 7)], rel=1e-12)
    assert src.codes.shape == (6, 3) and src.answers.shape == (6,)
    again, other = ZipfFacts(cfg), ZipfFacts(ZipfFactsConfig(n_keys=6, code_dim=3, seed=12))
    assert torch.equal(src.codes, again.codes) and torch.equal(src.answers, again.answers)
    assert not torch.equal(src.codes, other.codes)


def test_population_loss_keeps_the_logits_dtype_and_device() -> None:
    """fp32 logits give an fp32 loss (the cached tables are converted), and a second device
    (meta) after the first still gets tables on its own device."""
    src = ZipfFacts(ZipfFactsConfig(n_keys=8, vocab_size=4, code_dim=2))
    logits = torch.randn(8, 4, generator=torch.Generator().manual_seed(0))
    loss = src.population_loss(logits)
    assert loss.dtype == torch.float32
    assert float(loss) == pytest.approx(float(src.population_loss(logits.double())), rel=1e-5)
    on_meta = src.population_loss(logits.to("meta"))
    assert on_meta.device.type == "meta" and on_meta.dtype == torch.float32


def test_sample_keys_is_an_inverse_cdf_draw_from_the_generator() -> None:
    """Keys by inverse CDF of fp64 uniforms, labels replaced with probability ε by uniform ones,
    all from the given generator: a loop over the same stream gives the same pairs."""
    cfg = ZipfFactsConfig(n_keys=5, zipf_s=0.8, vocab_size=3, noise=0.5, code_dim=2)
    src = ZipfFacts(cfg)
    keys, labels = src.sample_keys(400, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    u = torch.rand(400, generator=g, dtype=torch.float64).tolist()
    cdf = [sum(src.probs[: k + 1].tolist()) for k in range(5)]
    want_keys = [min([k for k in range(5) if cdf[k] >= x] or [4]) for x in u]
    assert keys.tolist() == want_keys
    noisy = torch.rand(400, generator=g) < 0.5
    uniform = torch.randint(3, (int(noisy.sum()),), generator=g).tolist()
    want = [int(src.answers[k]) for k in want_keys]
    for i in noisy.nonzero().flatten().tolist():
        want[i] = uniform.pop(0)
    assert labels.tolist() == want
    assert set(keys.tolist()) == set(range(5))  # every key, the last one too, is drawn


def test_a_uniform_above_the_cdfs_rounded_end_draws_the_last_key() -> None:
    src = ZipfFacts(ZipfFactsConfig(n_keys=4, code_dim=2))
    src._cdf = src._cdf * 0.5  # as if rounding left the CDF's end below u
    keys, _ = src.sample_keys(200, torch.Generator().manual_seed(0))
    assert keys.max() == 3 and (keys == 3).float().mean() > 0.4
