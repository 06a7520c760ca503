from __future__ import annotations

import math

import pytest
import torch

from repro.data.zipf_facts import ZipfFacts, ZipfFactsConfig, entropy_floor, entropy_floor_ref


@pytest.mark.parametrize(("V", "eps"), [(32, 0.1), (2, 0.5), (7, 0.0), (32, 1.0), (100, 0.33)])
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
