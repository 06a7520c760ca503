"""Pieces of papers/gpt3/repro.py that its claims rely on: the toy task and the ideal learner."""

import pytest
import torch

from repro.lab.library import Library


@pytest.fixture(scope="module")
def gpt3():
    return Library().get("gpt3").module()


@pytest.fixture(params=["quick", "full"])
def tasks(request, gpt3):
    return gpt3.MappingTasks(gpt3.PRESETS[request.param])


def test_sequences_alternate_inputs_and_consistent_answers(tasks):
    cfg = tasks.cfg
    seq, targets = tasks.sample(64, held_out=False, g=torch.Generator().manual_seed(0))
    assert seq.shape == targets.shape == (64, 2 * cfg.n_pairs)
    x, answer = seq[:, 0::2], seq[:, 1::2]  # (B, K) each
    assert bool((x < cfg.n_inputs).all()) and bool((answer >= cfg.n_inputs).all())
    assert torch.equal(targets[:, 0::2], answer) and bool((targets[:, 1::2] == -100).all())
    assert torch.equal((answer - cfg.n_inputs) // cfg.n_outputs, x)  # the answer names its input
    y = (answer - cfg.n_inputs) % cfg.n_outputs
    same_x = x[:, :, None] == x[:, None, :]  # (B, K, K)
    assert bool(((y[:, :, None] == y[:, None, :]) | ~same_x).all()), "one mapping per sequence"
    assert int(seq.max()) < tasks.vocab_size


def test_held_out_mappings_are_never_trained_on(tasks):
    g = torch.Generator().manual_seed(1)
    train_f = tasks.mappings(500, held_out=False, g=g)
    test_f = tasks.mappings(500, held_out=True, g=g)
    assert not bool(tasks._held_out(train_f).any())
    assert bool(tasks._held_out(test_f).all())
    codes = lambda f: set(((f * tasks.powers).sum(-1)).tolist())  # noqa: E731
    assert not codes(train_f) & codes(test_f)


def test_ideal_learner_accuracy_by_hand(gpt3):
    x = torch.tensor([[0, 0, 1, 0], [2, 1, 2, 1]])  # seen before: [F,T,F,T] and [F,F,T,T]
    acc = gpt3.ideal_learner_accuracy(x, n_outputs=4)
    torch.testing.assert_close(acc, torch.tensor([0.25, 0.625, 0.625, 1.0]))


def test_table_2_1_readings(gpt3):
    # XL and 13B are built with the reading that makes the row self-consistent (note.yaml)
    assert gpt3.n_params("gpt3-xl", n_heads=16) == 1_315_723_264
    assert gpt3.n_params("gpt3-13b", d_model=5120) == 12_853_386_240
    assert gpt3.n_params("gpt3-13b") == 12_936_488_380  # 5140 residual, 40 × 128 attention


def test_unscaled_residual_init_fails_the_scaling_claim(gpt3):
    """residual-init-scaling wants std(residual) / std(other) = 1/√24 ± 2% in a 12-layer GPT;
    with the GPT-2 scaling undone (every matrix N(0, 0.02²)) the ratio is ≈ 1 and must fail."""
    import math

    from torch import nn

    from repro.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layers=12, d_model=256, n_heads=4, vocab_size=1024, max_seq_len=256))
    res, other = gpt3.residual_init_stds(model)
    assert res / other == pytest.approx(1 / math.sqrt(24), rel=0.02)
    for block in model.blocks:
        for proj in (block.attn.wo, block.mlp.w2):
            nn.init.normal_(proj.weight, std=0.02)  # the scaling switched off
    res, other = gpt3.residual_init_stds(model)
    assert abs(res / other / (1 / math.sqrt(24)) - 1) > 0.02
    assert res / other == pytest.approx(1.0, rel=0.05)
