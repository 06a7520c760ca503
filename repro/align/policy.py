"""A language model as a policy: sampling responses and scoring their log-probabilities.

Every prompt of the instruction world has the same length P, so a batch needs no padding: the
policy reads (N, P) prompts and writes (N, R) responses. Tokens after the first `<eot>` are
replaced by `<pad>` and carry no probability (the episode has ended). Glossary: N prompts,
P prompt length, R response length, V vocabulary.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def _check_prompts(name: str, prompts: Tensor) -> None:
    if prompts.dim() != 2 or prompts.shape[0] == 0 or prompts.shape[1] == 0:
        raise ValueError(
            f"{name}: need prompts (N, P) with N >= 1 and P >= 1; got {tuple(prompts.shape)} "
            "(an empty batch or a zero-length prompt)"
        )


@torch.no_grad()
def generate(
    model: nn.Module,
    prompts: Tensor,
    length: int,
    eot: int,
    pad: int = 0,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Sample (temperature > 0) or decode greedily (temperature 0): prompts (N, P) -> (N, R)."""
    _check_prompts("generate", prompts)
    if length < 1:
        raise ValueError(f"generate: length={length}; need at least one response token")
    model.eval()
    seq = prompts
    done = torch.zeros(prompts.shape[0], dtype=torch.bool)
    out = []
    for _ in range(length):
        logits = model(seq)[:, -1].float()  # (N, V)
        if temperature > 0:
            probs = F.softmax(logits / temperature, dim=-1)
            nxt = torch.multinomial(probs, 1, generator=generator).squeeze(1)  # (N,)
        else:
            nxt = logits.argmax(-1)
        nxt = torch.where(done, torch.full_like(nxt, pad), nxt)
        out.append(nxt)
        done |= nxt == eot
        seq = torch.cat([seq, nxt[:, None]], dim=1)
        if done.all():
            break
    resp = torch.stack(out, dim=1)  # (N, r <= R)
    return F.pad(resp, (0, length - resp.shape[1]), value=pad)


def response_mask(responses: Tensor, eot: int) -> Tensor:
    """True for the tokens the policy chose: up to and including the first `<eot>`. (N, R)."""
    after = (responses == eot).int().cumsum(1) - (responses == eot).int()  # eot's seen before t
    return after == 0


def token_logprobs(model: nn.Module, prompts: Tensor, responses: Tensor) -> tuple[Tensor, Tensor]:
    """log π(y_t | x, y_<t) (N, R) and the full next-token log-distributions (N, R, V)."""
    _check_prompts("token_logprobs", prompts)
    if responses.dim() != 2 or responses.shape[0] != prompts.shape[0] or responses.shape[1] == 0:
        raise ValueError(
            f"token_logprobs: need responses (N, R) with R >= 1 for {prompts.shape[0]} prompts; "
            f"got {tuple(responses.shape)}"
        )
    P = prompts.shape[1]
    seq = torch.cat([prompts, responses], dim=1)  # (N, P + R)
    logits = model(seq[:, :-1])[:, P - 1 :].float()  # (N, R, V): the positions predicting y
    logp = F.log_softmax(logits, dim=-1)
    return logp.gather(-1, responses[..., None]).squeeze(-1), logp
