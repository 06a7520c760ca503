"""Sampling and scoring responses."""

from __future__ import annotations

import re

import pytest
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


def test_a_single_prompt_of_one_token_is_accepted() -> None:
    """N = 1 and P = 1 are valid edges of the guards, as is R = 1 with R ≠ N: each scores like
    the loop (the log-softmax of the next-token logits)."""
    model = _model()
    prompts = torch.tensor([[3]])
    resp = torch.tensor([[4]])
    logp, _ = token_logprobs(model, prompts, resp)
    assert torch.allclose(logp[0, 0], F.log_softmax(model(prompts)[0, -1], -1)[4], atol=1e-5)
    assert generate(model, prompts, 2, EOT, temperature=0).shape == (1, 2)
    prompts = torch.randint(1, 8, (2, 1), generator=torch.Generator().manual_seed(6))
    resp = torch.randint(1, 8, (2, 5), generator=torch.Generator().manual_seed(7))
    logp, _ = token_logprobs(model, prompts, resp)  # N = 2 prompts, R = 5 tokens
    ctx = torch.cat([prompts, resp[:, :4]], 1)
    ref = F.log_softmax(model(ctx)[:, -1], -1).gather(1, resp[:, 4:]).squeeze(1)
    assert torch.allclose(logp[:, 4], ref, atol=1e-5)


@pytest.mark.parametrize("shape", [(0, 3), (2, 0), (3,)])
def test_prompts_that_are_not_n_by_p_are_rejected(shape) -> None:
    """An empty batch, a zero-length prompt or a 1-D tensor: a ValueError naming the function
    and the shape, from both entry points."""
    model, prompts = _model(), torch.ones(shape, dtype=torch.long)
    text = re.escape(
        f"need prompts (N, P) with N >= 1 and P >= 1; got {shape} "
        "(an empty batch or a zero-length prompt)"
    )
    with pytest.raises(ValueError, match="^generate: " + text + "$"):
        generate(model, prompts, 3, EOT)
    with pytest.raises(ValueError, match="^token_logprobs: " + text + "$"):
        token_logprobs(model, prompts, torch.ones(3, 2, dtype=torch.long))


@pytest.mark.parametrize("shape", [(2, 4), (4, 4), (3, 0), (3,), (3, 4, 1)])
def test_responses_that_do_not_match_the_prompts_are_rejected(shape) -> None:
    model, prompts = _model(), torch.ones(3, 2, dtype=torch.long)
    text = re.escape(
        f"token_logprobs: need responses (N, R) with R >= 1 for 3 prompts; got {shape}"
    )
    with pytest.raises(ValueError, match="^" + text + "$"):
        token_logprobs(model, prompts, torch.ones(shape, dtype=torch.long))
