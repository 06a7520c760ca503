from __future__ import annotations

import pytest
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


def test_every_task_is_drawn_from_its_generator_alone() -> None:
    """The same seed gives the same data, whatever the global generator did in between."""
    tasks = {
        "copy": lambda g: copy_task(4, 6, 12, g),
        "reverse": lambda g: reverse_task(4, 6, 12, g),
        "recall": lambda g: associative_recall(4, 5, 12, g),
        "selective": lambda g: selective_copy(4, 10, 3, 12, g),
    }
    for name, make in tasks.items():
        a = make(torch.Generator().manual_seed(7))
        torch.rand(5)  # move the global generator
        b = make(torch.Generator().manual_seed(7))
        assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True)), name
        assert all(x.dtype == torch.long for x in a), name


def test_symbols_cover_exactly_first_symbol_to_v_minus_one() -> None:
    src, _ = copy_task(64, 64, 9)
    assert set(src.unique().tolist()) == set(range(FIRST_SYMBOL, 9))


def test_associative_recall_keys_are_data_symbols_and_every_pair_is_queried() -> None:
    """Keys distinct and in FIRST_SYMBOL..V−1 (never PAD, BOS or SEP); with as many pairs as data
    symbols every symbol is a key; the query is each pair, the first and last too."""
    V = 9
    n_sym = V - FIRST_SYMBOL
    seq, answer = associative_recall(300, n_sym, V, torch.Generator().manual_seed(1))
    keys, values = seq[:, : 2 * n_sym : 2], seq[:, 1 : 2 * n_sym : 2]
    assert (keys.sort(-1).values == torch.arange(FIRST_SYMBOL, V)).all()
    assert (values >= FIRST_SYMBOL).all() and (values < V).all()
    queried = (keys == seq[:, -1:]).float().argmax(1)
    assert set(queried.tolist()) == set(range(n_sym))
    assert torch.equal(answer, values.gather(1, queried[:, None]).squeeze(1))
    with pytest.raises(AssertionError, match=r"n_pairs=7 needs at least that many symbols \(6\)"):
        associative_recall(2, n_sym + 1, V)
