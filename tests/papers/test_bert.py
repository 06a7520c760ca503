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
