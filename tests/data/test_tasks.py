from __future__ import annotations

import torch

from repro.data.tasks import (
    FIRST_SYMBOL,
    PAD,
    SEP,
    associative_recall,
    copy_task,
    reverse_task,
    selective_copy,
)


def test_copy_and_reverse() -> None:
    src, tgt = copy_task(3, 7, 20)
    assert torch.equal(src, tgt) and src.min() >= FIRST_SYMBOL
    src, tgt = reverse_task(3, 7, 20)
    assert torch.equal(tgt, src.flip(1))


def test_associative_recall_answer_follows_its_key() -> None:
    seq, answer = associative_recall(16, 5, 20, torch.Generator().manual_seed(0))
    assert seq.shape == (16, 12) and (seq[:, 10] == SEP).all()
    for row, a in zip(seq, answer, strict=True):
        keys, values = row[:10:2], row[1:10:2]
        assert len(set(keys.tolist())) == 5
        assert values[(keys == row[11]).nonzero().item()] == a


def test_selective_copy_keeps_order() -> None:
    seq, target = selective_copy(8, 30, 4, 20, torch.Generator().manual_seed(0))
    assert seq.shape == (8, 31) and (seq[:, -1] == SEP).all()
    for row, tgt in zip(seq, target, strict=True):
        assert torch.equal(row[:-1][row[:-1] != PAD], tgt)
