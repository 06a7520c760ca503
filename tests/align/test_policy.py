"""Sampling and scoring responses."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from repro.align.policy import generate, response_mask, token_logprobs
from repro.models.gpt import GPT, GPTConfig

EOT, PAD = 5, 0


def _model() -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(n_layers=1, d_model=16, n_heads=2, vocab_size=8, max_seq_len=16)).eval()


def test_generation_stops_at_eot_and_pads() -> None:
    model = _model()
    prompts = torch.randint(1, 8, (64, 3), generator=torch.Generator().manual_seed(1))
    out = generate(model, prompts, 6, EOT, generator=torch.Generator().manual_seed(2))
    assert out.shape == (64, 6)
    for row in out.tolist():
        if EOT in row:
            assert all(t == PAD for t in row[row.index(EOT) + 1 :])


def test_greedy_is_the_argmax_continuation() -> None:
    model = _model()
    prompts = torch.randint(1, 8, (4, 3), generator=torch.Generator().manual_seed(3))
    out = generate(model, prompts, 4, eot=-1, temperature=0)
    seq = prompts
    for t in range(4):
        nxt = model(seq)[:, -1].argmax(-1)
        assert torch.equal(out[:, t], nxt)
        seq = torch.cat([seq, nxt[:, None]], 1)


def test_response_mask_includes_the_first_eot_only() -> None:
    resp = torch.tensor([[1, 2, EOT, 0], [EOT, 0, 0, 0], [1, 2, 3, 4]])
    expected = torch.tensor([[1, 1, 1, 0], [1, 0, 0, 0], [1, 1, 1, 1]], dtype=torch.bool)
    assert torch.equal(response_mask(resp, EOT), expected)


def test_token_logprobs_match_a_loop() -> None:
    model = _model()
    prompts = torch.randint(1, 8, (3, 4), generator=torch.Generator().manual_seed(4))
    resp = torch.randint(1, 8, (3, 3), generator=torch.Generator().manual_seed(5))
    logp, dist = token_logprobs(model, prompts, resp)
    for t in range(3):
        ctx = torch.cat([prompts, resp[:, :t]], 1)
        ref = F.log_softmax(model(ctx)[:, -1], -1)
        assert torch.allclose(dist[:, t], ref, atol=1e-5)
        assert torch.allclose(logp[:, t], ref.gather(1, resp[:, t : t + 1]).squeeze(1), atol=1e-5)
