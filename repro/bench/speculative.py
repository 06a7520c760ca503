"""Speculative-decoding benchmark: target calls and time per token against plain cached decoding.

Leviathan et al., "Fast Inference from Transformers via Speculative Decoding",
https://arxiv.org/abs/2211.17192 (Eq. 1 tokens per call, Thm. 3.8 walltime). Glossary: γ draft
tokens per step, α acceptance rate, c draft cost / target cost, N new tokens, L layers.

The target is the decode benchmark's GPT (`repro.bench.decode.tiny_gpt_config`: 4 layers,
d_model 256, 4 heads, V = 256) with random weights. A random draft would share nothing with it,
so the draft is the target cut after its first `draft_layers` blocks (embeddings, those blocks,
final LayerNorm and head copied): an early-exit draft, cheap and close to the target because
random residual blocks change the stream little. Both decode by sampling at temperature 1; α is
measured on the generated text as the mean Σ min(p, q).

Returns plain dicts; `paperlab bench speculative` renders them. CPU time on the CPU (robust to
neighbours), wall time on a GPU.
"""

from __future__ import annotations

import copy
import dataclasses
import time
from collections.abc import Callable

import torch

from repro.bench.decode import tiny_gpt_config
from repro.bench.timing import sync
from repro.decoding.speculative import (
    TorchRandomness,
    acceptance_rate,
    expected_tokens_per_call,
    next_token_probs,
    speculative_generate,
)
from repro.lab.threads import torch_threads
from repro.models.gpt import GPT
from repro.nn.kv_cache import generate


def truncated_draft(target: GPT, n_layers: int) -> GPT:
    """The target's first n_layers blocks with its embeddings, final LayerNorm and head."""
    if not 1 <= n_layers <= target.cfg.n_layers:
        raise ValueError(f"draft_layers must be in 1..{target.cfg.n_layers}, got {n_layers}")
    draft = copy.deepcopy(target)
    draft.blocks = torch.nn.ModuleList(draft.blocks[:n_layers])
    draft.cfg = dataclasses.replace(target.cfg, n_layers=n_layers)
    return draft.eval()


def _clock(device: str) -> tuple[str, Callable[[], float]]:
    return ("wall", time.perf_counter) if device.startswith("cuda") else ("cpu", time.process_time)


def bench_speculative(
    new_tokens: int = 256,
    gammas: tuple[int, ...] = (1, 2, 4, 8),
    prompt_len: int = 16,
    draft_layers: int = 1,
    device: str = "cpu",
    seed: int = 0,
    threads: int = 1,
) -> dict:
    """Plain cached sampling vs speculative sampling at each γ: calls and time per token."""
    if new_tokens < 2:
        raise ValueError(f"new_tokens must be >= 2, got {new_tokens}")
    if not gammas or min(gammas) < 1:
        raise ValueError(f"gammas must be >= 1, got {gammas}")
    clock_name, now = _clock(device)
    with torch_threads(threads):
        torch.manual_seed(seed)
        target = GPT(tiny_gpt_config(prompt_len + new_tokens)).to(device).eval()
        draft = truncated_draft(target, draft_layers)
        g = torch.Generator(device=device).manual_seed(seed)
        prompt = torch.randint(
            0, target.cfg.vocab_size, (1, prompt_len), generator=g, device=device
        )
        sync(device)
        t0 = now()
        generate(target, prompt, new_tokens, temperature=1.0, generator=g)
        sync(device)
        plain_s = now() - t0
        rows = [{"method": "plain", "gamma": 0, "target_calls_per_token": 1.0,
                 "draft_calls_per_token": 0.0, "ms_per_token": 1e3 * plain_s / new_tokens,
                 "speedup": 1.0}]  # fmt: skip
        for gamma in gammas:
            rng = TorchRandomness(g)
            sync(device)
            t0 = now()
            res = speculative_generate(target, draft, prompt, new_tokens, gamma, 1.0, rng)
            sync(device)
            spec_s = now() - t0
            with torch.inference_mode():
                p = next_token_probs(target(res.tokens[:, :-1])[0, prompt_len - 1 :], 1.0)
                q = next_token_probs(draft(res.tokens[:, :-1])[0, prompt_len - 1 :], 1.0)
            alpha = acceptance_rate(p, q).mean().item()
            rows.append(
                {
                    "method": "speculative",
                    "gamma": gamma,
                    "alpha": alpha,
                    "tokens_per_call": res.tokens_per_call(gamma),
                    "eq1_tokens_per_call": expected_tokens_per_call(alpha, gamma),
                    "target_calls_per_token": res.target_calls / new_tokens,
                    "draft_calls_per_token": res.draft_calls / new_tokens,
                    "ms_per_token": 1e3 * spec_s / new_tokens,
                    "speedup": plain_s / spec_s,
                }
            )
    return {
        "new_tokens": new_tokens,
        "prompt_len": prompt_len,
        "target_layers": target.cfg.n_layers,
        "draft_layers": draft_layers,
        "device": device,
        "clock": clock_name,
        "threads": threads,
        "rows": rows,
    }
