"""SFT: the masked loss, and fine-tuning that teaches the assistant format."""

from __future__ import annotations

import copy
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repro.align.sft import (
    SFTConfig,
    demonstration_set,
    eval_instances,
    evaluate,
    masked_lm_loss,
    sft,
)
from repro.data.instructions import FAMILIES, InstructionWorld
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


class Recorder(nn.Module):
    """A GPT that remembers the first token of every row it reads and whether it was training."""

    def __init__(self, lm: nn.Module) -> None:
        super().__init__()
        self.lm, self.calls = lm, []

    def forward(self, idx):
        self.calls.append((idx[:, 0].tolist(), self.training))
        return self.lm(idx)


def _numbered_demos(n: int):
    """n rows whose first token is the row's number; a lopsided random loss mask."""
    g = torch.Generator().manual_seed(5)
    tokens = torch.randint(0, WORLD.vocab_size, (n, 9), generator=g)
    tokens[:, 0] = torch.arange(n)
    mask = torch.rand(n, 9, generator=g) < 0.6
    mask[:, -1] = True  # every row has a target
    return tokens, mask


def test_sft_visits_every_given_demonstration_once_per_epoch_in_batches() -> None:
    """`demos` replaces the world's demonstrations; each epoch is a fresh shuffle of all N rows
    in batches of B (the last one short), reproducible whatever the global RNG; a model that
    `on_epoch` put in eval mode trains again; the first loss is the masked CE of batch one."""
    n, cfg = 10, SFTConfig(n_examples=10, epochs=3, batch=4, seed=3)
    demos = _numbered_demos(n)
    runs = []
    for global_seed in (0, 1):
        model = Recorder(_model())
        first = copy.deepcopy(model.lm)
        torch.manual_seed(global_seed)
        losses = sft(model, WORLD, cfg, on_epoch=lambda e, m: m.eval(), demos=demos)
        runs.append([rows for rows, _ in model.calls])
        assert all(training for _, training in model.calls)
    assert runs[0] == runs[1]
    batches = runs[0]
    assert [len(b) for b in batches] == [4, 4, 2] * 3
    epochs = [sum(batches[3 * e : 3 * e + 3], []) for e in range(3)]
    assert all(sorted(e) == list(range(n)) for e in epochs)
    assert len({tuple(e) for e in epochs}) == 3  # shuffled anew each epoch
    tokens, mask = demos[0][batches[0]], demos[1][batches[0]]
    logp = F.log_softmax(first(tokens[:, :-1]), -1)
    terms = [-logp[i, t - 1, tokens[i, t]] for i in range(4) for t in range(1, 9) if mask[i, t]]
    assert losses[0] == pytest.approx(torch.stack(terms).mean().item(), rel=1e-5)


def test_on_epoch_gets_integer_epochs() -> None:
    seen = []
    sft(
        _model(),
        WORLD,
        SFTConfig(n_examples=8, epochs=3, batch=3),
        on_epoch=lambda e, m: seen.append(e),
    )
    assert seen == [1, 2, 3] and all(type(e) is int for e in seen)


def test_eval_instances_are_fixed_by_their_seed_and_keep_to_the_families() -> None:
    """The default seed is 99 (the signature); the set does not depend on the global RNG; a
    `families` restriction holds; another seed gives another set."""
    torch.manual_seed(0)
    a = eval_instances(WORLD, 40)
    torch.manual_seed(1)
    b = eval_instances(WORLD, 40, seed=99)
    assert torch.equal(a.family, b.family) and torch.equal(a.digits, b.digits)
    assert not torch.equal(eval_instances(WORLD, 40, seed=98).digits, a.digits)
    few = eval_instances(WORLD, 40, families=("sort", "max"))
    assert set(few.family.tolist()) == {FAMILIES.index("sort"), FAMILIES.index("max")}
    assert len(set(a.family.tolist())) > 2


def test_one_step_moves_the_weights_by_the_configured_lr_and_reports_progress() -> None:
    """A single batch (one step, warm-up factor 1): Adam's first step moves every parameter
    with a gradient by lr·g/(|g| + ε) ≈ ±lr, so the largest move is cfg.lr (not train's
    default); the progress callback sees the "SFT" label."""
    model, calls = _model(), []
    before = [p.detach().clone() for p in model.parameters()]
    cfg = SFTConfig(n_examples=4, epochs=1, batch=4, lr=0.0123)
    sft(model, WORLD, cfg, progress=lambda *a: calls.append(a))
    move = max(
        (p.detach() - b).abs().max().item() for p, b in zip(model.parameters(), before, strict=True)
    )
    assert move == pytest.approx(0.0123, rel=1e-3)
    assert calls == [("SFT", 1, 1)]


def test_demonstration_set_is_seeded_keeps_to_the_families_and_corrupts_its_share() -> None:
    """The same config gives the same set whatever the global RNG; `families` restricts the task
    token; `corrupt` changes about that share of the responses and never the prompts."""
    cfg = SFTConfig(n_examples=400, families=("sort", "sum", "copy"), corrupt=0.5, seed=2)
    torch.manual_seed(0)
    tokens, mask = demonstration_set(WORLD, cfg)
    torch.manual_seed(1)
    again, _ = demonstration_set(WORLD, cfg)
    assert torch.equal(tokens, again)
    clean, clean_mask = demonstration_set(WORLD, replace(cfg, corrupt=0.0))
    tasks = {WORLD.vocab.task0 + FAMILIES.index(f) for f in cfg.families}
    assert set(tokens[:, 1].tolist()) == tasks
    P = WORLD.prompt_len
    assert torch.equal(tokens[:, :P], clean[:, :P])
    changed = (tokens[:, P:] != clean[:, P:]).any(1).float().mean().item()
    assert 0.4 < changed < 0.6
    assert not (clean_mask[:, :P].any() or mask[:, :P].any())  # loss on responses only
