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


def test_selective_copy_follows_the_s4_layout() -> None:
    L, M = 30, 4
    seq, target = selective_copy(8, L, M, 20, torch.Generator().manual_seed(0))
    assert seq.shape == (8, L + 2 * M) and target.shape == (8, M)
    assert (seq[:, -M:] == SEP).all()  # M markers: the model answers at the last M positions
    body = seq[:, : L + M]
    assert ((body == PAD) | (body >= FIRST_SYMBOL)).all() and (body != SEP).all()
    for row, tgt in zip(body, target, strict=True):
        assert torch.equal(row[row != PAD], tgt)  # the data tokens, in order
    assert (target >= FIRST_SYMBOL).all() and (target < 20).all()


def test_selective_copy_positions_vary() -> None:
    seq, _ = selective_copy(256, 16, 2, 12, torch.Generator().manual_seed(1))
    first = (seq != PAD).float().argmax(1)  # position of the first data token
    assert len(set(first.tolist())) > 8  # random spacing, not a fixed layout
