"""SFT: the masked loss, and fine-tuning that teaches the assistant format."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from repro.align.sft import (
    SFTConfig,
    demonstration_set,
    eval_instances,
    evaluate,
    masked_lm_loss,
    sft,
)
from repro.data.instructions import InstructionWorld
from repro.models.gpt import GPT, GPTConfig

WORLD = InstructionWorld()


def _model() -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=1, d_model=32, n_heads=2, vocab_size=WORLD.vocab_size, max_seq_len=16)
    return GPT(cfg)


def test_masked_loss_counts_only_response_tokens() -> None:
    model = _model()
    tokens, mask = demonstration_set(WORLD, SFTConfig(n_examples=6))
    logp = F.log_softmax(model(tokens[:, :-1]), -1)
    terms = [
        -logp[n, t - 1, tokens[n, t]]
        for n in range(6)
        for t in range(1, tokens.shape[1])
        if mask[n, t]
    ]
    ref = torch.stack(terms).mean()
    assert torch.allclose(masked_lm_loss(model, tokens, mask), ref, atol=1e-5)


def test_sft_teaches_the_format_to_a_blank_model() -> None:
    """A random-init model learns `digits <eot>` from demonstrations (not the answers)."""
    model = _model()
    inst = eval_instances(WORLD, 200)
    before = evaluate(model, WORLD, inst)
    losses = sft(model, WORLD, SFTConfig(n_examples=512, epochs=3, lr=3e-3))
    after = evaluate(model, WORLD, inst)
    assert losses[-1] < losses[0]
    assert before["compliance"] < 0.1 < 0.9 < after["compliance"]


def test_on_epoch_sees_every_epoch() -> None:
    model, seen = _model(), []
    cfg = SFTConfig(n_examples=70, epochs=3, batch=32)
    losses = sft(model, WORLD, cfg, on_epoch=lambda e, m: seen.append((e, m.training)))
    assert [e for e, _ in seen] == [1, 2, 3]
    assert len(losses) == 3 * 3  # ceil(70 / 32) steps per epoch
