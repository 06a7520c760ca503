"""Pieces of papers/bert/repro.py beyond its claims: the masking function and the floors."""

from __future__ import annotations

import pytest
import torch

from repro.lab.library import Library

BERT = Library().get("bert").module()


def _corrupt(n: int, T: int, V: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(BERT.FIRST_REGULAR, V, (n, T), generator=g)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS] ... [SEP]
    ids[:, 0], ids[:, -1] = BERT.CLS, BERT.SEP
    inputs, labels = BERT.mask_tokens(ids, maskable, V, g)
    return ids, maskable, inputs, labels


@pytest.mark.parametrize("T", [3, 9, 40, 130])
def test_each_sequence_gets_its_quota(T: int) -> None:
    ids, maskable, inputs, labels = _corrupt(500, T, 100)
    chosen = labels != BERT.IGNORE
    n = maskable.sum(1).double()
    k = chosen.sum(1)
    assert bool(((k == torch.floor(0.15 * n)) | (k == torch.ceil(0.15 * n))).all())
    assert not bool((chosen & ~maskable).any()), "[CLS]/[SEP] must never be chosen"


def test_labels_and_untouched_positions() -> None:
    ids, maskable, inputs, labels = _corrupt(300, 50, 1000)
    chosen = labels != BERT.IGNORE
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    changed = inputs[chosen][inputs[chosen] != ids[chosen]]
    assert bool((changed == BERT.MASK).any()) and bool((changed >= BERT.FIRST_REGULAR).any())
    assert bool(((changed == BERT.MASK) | (changed >= BERT.FIRST_REGULAR)).all())


def test_masking_is_reproducible_from_the_generator() -> None:
    a, b = _corrupt(20, 30, 500, seed=3), _corrupt(20, 30, 500, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_context_floors_are_ordered() -> None:
    source = BERT.markov_source(BERT.PRESETS["quick"])
    both = BERT.two_sided_entropy(source)
    assert 0 < both < source.entropy_rate() < source.unigram_entropy()


def test_two_sided_entropy_of_an_iid_source_is_its_entropy() -> None:
    # Rows all equal: the chain is i.i.d., so neighbours carry no information.
    source = BERT.markov_source(BERT.PRESETS["quick"])
    row = source.transition[0]
    source.transition = row.expand_as(source.transition).clone()
    h = float(-(row * row.log()).sum())
    assert BERT.two_sided_entropy(source) == pytest.approx(h, rel=1e-9)
    assert source.entropy_rate() == pytest.approx(h, rel=1e-9)


# --- the controls of the measured claims: each must fail its claim's tolerance -------------


def test_broken_maskers_fail_the_masking_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    """The four masking claims (0.15 ± 0.001, 0.8 ± 0.003, 0.1 ± 0.0025, 0.1 ± 0.0025) read
    `masking_stats`; a masker choosing 20% of the tokens, and one that always writes [MASK]
    (Appendix C.2's MASK-only strategy), must fail them."""
    cfg = BERT.Config(mask_sequences=2000)
    good = BERT.masking_stats(cfg, 0)
    assert abs(good["chosen"] / good["maskable"] - 0.15) < 0.001
    assert abs(good["mask"] / good["chosen"] - 0.8) < 0.003
    real = BERT.mask_tokens

    def rate_20(ids, maskable, vocab_size, generator, rate=0.15):
        return real(ids, maskable, vocab_size, generator, rate=0.2)

    def mask_only(ids, maskable, vocab_size, generator, rate=0.15):
        inputs, labels = real(ids, maskable, vocab_size, generator, rate)
        return inputs.masked_fill(labels != BERT.IGNORE, BERT.MASK), labels

    monkeypatch.setattr(BERT, "mask_tokens", rate_20)
    st = BERT.masking_stats(BERT.Config(mask_sequences=2001), 0)
    assert abs(st["chosen"] / st["maskable"] - 0.15) > 0.001
    monkeypatch.setattr(BERT, "mask_tokens", mask_only)
    st = BERT.masking_stats(BERT.Config(mask_sequences=2002), 0)
    assert abs(st["mask"] / st["chosen"] - 0.8) > 0.003
    assert abs(st["random"] / st["chosen"] - 0.1) > 0.0025
    assert abs(st["unchanged"] / st["chosen"] - 0.1) > 0.0025


def test_untrained_models_fail_the_mlm_claims() -> None:
    """mlm-beats-unigram wants H(X) − loss ≥ 1.0 and bidirectional-beats-left-only a gap ≥ 0.2;
    after one training step both arms sit near log V and tie."""
    from repro.lab.claims import Context

    cfg = BERT.Config(steps=1)
    m = BERT.experiment(cfg, Context(config=cfg, seed=0))
    assert m["floors"]["unigram"] - m["bidirectional_loss"] < 1.0
    assert m["left_only_loss"] - m["bidirectional_loss"] < 0.2
