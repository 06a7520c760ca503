from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repro.train import evaluate_lm, lm_loss, next_token_loss, train, train_lm, warmup_cosine


def test_warmup_cosine_shape() -> None:
    assert warmup_cosine(0, 100, 10) == pytest.approx(0.1)
    assert warmup_cosine(9, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(10, 100, 10) == pytest.approx(1.0)
    assert warmup_cosine(100, 100, 10) == pytest.approx(0.1)


def test_warmup_cosine_between_the_ends() -> None:
    # linear warm-up (s + 1) / w, then 0.1 + 0.45·(1 + cos(π·progress)) down to 10%
    for step in range(7):
        assert warmup_cosine(step, 40, 7) == pytest.approx((step + 1) / 7)
    for step in range(7, 41):
        progress = (step - 7) / 33
        expected = 0.1 + 0.9 * (1 + math.cos(math.pi * progress)) / 2
        assert warmup_cosine(step, 40, 7) == pytest.approx(expected, abs=1e-12)
    # halfway through the decay the multiplier is halfway between 1 and 0.1
    assert warmup_cosine(7 + 33 / 2, 40, 7) == pytest.approx(0.55)


def test_warmup_cosine_with_one_step_or_none_left_after_warmup() -> None:
    assert warmup_cosine(5, 5, 5) == pytest.approx(1.0)  # max(1, steps − warmup) avoids 0/0
    # one decay step: it goes from the peak straight to the 10% floor
    assert warmup_cosine(5, 6, 5) == pytest.approx(1.0)
    assert warmup_cosine(6, 6, 5) == pytest.approx(0.1)


def test_lm_loss_is_uniform_entropy_for_zero_logits() -> None:
    logits = torch.zeros(2, 5, 7)
    targets = torch.randint(0, 7, (2, 5))
    assert lm_loss(logits, targets).item() == pytest.approx(torch.log(torch.tensor(7.0)).item())


def _nll_loop(logits: torch.Tensor, targets: torch.Tensor, ignore: int) -> float:
    """Mean −log softmax(logits)[target] over the positions not ignored, one at a time."""
    total, count = 0.0, 0
    for b in range(targets.shape[0]):
        for t in range(targets.shape[1]):
            if targets[b, t].item() == ignore:
                continue
            row = logits[b, t].double()
            total -= (row[targets[b, t]] - torch.logsumexp(row, 0)).item()
            count += 1
    return total / count


@pytest.mark.parametrize("ignore", [-100, 3])
def test_lm_loss_against_a_loop_with_ignored_positions(ignore: int) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(3, 4, 6, generator=g) * 3
    targets = torch.randint(0, 6, (3, 4), generator=g)
    targets[0, 1] = targets[2, 3] = ignore
    targets[1, 0] = 3  # ignored only when ignore == 3
    got = lm_loss(logits, targets) if ignore == -100 else lm_loss(logits, targets, ignore)
    assert got.item() == pytest.approx(_nll_loop(logits, targets, ignore), rel=1e-6)


class _Bigram(nn.Module):
    """Logits of token t depend on token t alone (an embedding), and the model records its input."""

    def __init__(self, vocab: int) -> None:
        super().__init__()
        self.table = nn.Embedding(vocab, vocab)
        self.seen: list[torch.Tensor] = []

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        self.seen.append(tokens.clone())
        return self.table(tokens)


def test_next_token_loss_predicts_the_following_token() -> None:
    g = torch.Generator().manual_seed(1)
    model = _Bigram(5)
    tokens = torch.randint(0, 5, (2, 7), generator=g)
    got = next_token_loss(model, tokens).item()
    logits = model.table.weight.detach()[tokens[:, :-1]]
    assert got == pytest.approx(_nll_loop(logits, tokens[:, 1:], -100), rel=1e-6)
    assert torch.equal(model.seen[0], tokens[:, :-1])


def test_evaluate_lm_is_the_loss_in_eval_mode_without_gradients() -> None:
    g = torch.Generator().manual_seed(2)
    model = nn.Sequential(nn.Embedding(6, 6), nn.Dropout(0.9))
    model.train()
    tokens = torch.randint(0, 6, (4, 9), generator=g)
    got = evaluate_lm(model, tokens)
    logits = model[0].weight.detach()[tokens[:, :-1]]  # dropout off
    assert got == pytest.approx(_nll_loop(logits, tokens[:, 1:], -100), rel=1e-6)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())


def _adamw_by_hand(
    params: list[torch.Tensor],
    grads_at: list,
    lr: float,
    weight_decay: float,
    warmup: int,
    clip: float,
    steps: int,
) -> None:
    """AdamW (β = 0.9, 0.95, ε = 1e-8, decoupled decay) under the warm-up + cosine multiplier,
    with the gradients' global norm clipped to `clip` (0: no clipping), written out."""
    m = [torch.zeros_like(p) for p in params]
    v = [torch.zeros_like(p) for p in params]
    for step in range(steps):
        grads = grads_at(step)
        norm = math.sqrt(sum(float((gr**2).sum()) for gr in grads))
        if clip and norm > clip:
            grads = [gr * (clip / (norm + 1e-6)) for gr in grads]
        rate = lr * warmup_cosine(step, steps, warmup)
        t = step + 1
        with torch.no_grad():
            for p, gr, m_i, v_i in zip(params, grads, m, v, strict=True):
                p.mul_(1 - rate * weight_decay)
                m_i.mul_(0.9).add_(0.1 * gr)
                v_i.mul_(0.95).add_(0.05 * gr * gr)
                m_hat, v_hat = m_i / (1 - 0.9**t), v_i / (1 - 0.95**t)
                p.sub_(rate * m_hat / (v_hat.sqrt() + 1e-8))


def _regression(seed: int) -> tuple[nn.Linear, torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    model = nn.Linear(3, 2).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
    x = torch.randn(16, 3, generator=g, dtype=torch.float64)
    # gradient norms of about 1 to 5 over the weights below: a clip of 2 binds at some steps only
    y = torch.randn(16, 2, generator=g, dtype=torch.float64) * 5
    return model, x, y


@pytest.mark.parametrize(
    "options",
    [
        {},  # the defaults: lr 3e-3, no decay, warm-up max(1, steps // 20) = 2, clip 1
        {"steps": 19},  # the default warm-up of a short run: max(1, 19 // 20) = 1
        {"lr": 0.05, "weight_decay": 0.3, "warmup": 4, "clip": 2.0},
        {"lr": 0.02, "weight_decay": 0.0, "warmup": 1, "clip": 0.0},  # clip 0: never clipped
    ],
)
def test_train_is_adamw_with_the_schedule_and_clipping_written_out(options: dict) -> None:
    options = dict(options)
    steps = options.pop("steps", 41)
    model, x, y = _regression(3)
    # a loss that depends on the step, so that each step must read its own batch
    weights = torch.linspace(0.5, 2.0, steps, dtype=torch.float64)

    def loss_at(step: int, m: nn.Module) -> torch.Tensor:
        return weights[step] * ((m(x) - y) ** 2).mean()

    start = [p.detach().clone() for p in model.parameters()]
    losses = train(model, lambda s: loss_at(s, model), steps, **options)

    ref = nn.Linear(3, 2).double()
    with torch.no_grad():
        for p, s in zip(ref.parameters(), start, strict=True):
            p.copy_(s)
    params = list(ref.parameters())
    expected_losses = []

    def grads_at(step: int) -> list[torch.Tensor]:
        for p in params:
            p.grad = None
        loss = loss_at(step, ref)
        expected_losses.append(loss.item())
        loss.backward()
        return [p.grad.detach() for p in params]

    _adamw_by_hand(
        params,
        grads_at,
        options.get("lr", 3e-3),
        options.get("weight_decay", 0.0),
        options.get("warmup", max(1, steps // 20)),
        options.get("clip", 1.0),
        steps,
    )
    assert losses == pytest.approx(expected_losses, rel=1e-9)
    for got, want in zip(model.parameters(), params, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-9, atol=1e-12)
    assert not model.training


def test_train_steps_only_the_parameters_it_is_given() -> None:
    model, x, y = _regression(4)
    bias = model.bias.detach().clone()
    weight = model.weight.detach().clone()
    train(model, lambda s: ((model(x) - y) ** 2).mean(), 5, lr=0.1, params=[model.weight])
    assert torch.equal(model.bias, bias)
    assert not torch.equal(model.weight, weight)


def test_a_parameter_the_loss_does_not_reach_is_not_moved_by_momentum() -> None:
    # Adam skips a parameter without a gradient; a zeroed gradient would let its momentum keep
    # moving it (an expert that no token was routed to must stay where it is)
    first, later = nn.Parameter(torch.ones(3)), nn.Parameter(torch.ones(3))
    module = nn.ParameterList([first, later])
    snapshots = []

    def loss_at(step: int) -> torch.Tensor:
        snapshots.append(first.detach().clone())
        return (first * 2.0).sum() if step == 0 else (later * 3.0).sum()

    train(module, loss_at, 5, lr=0.1, warmup=1)
    assert not torch.equal(snapshots[1], snapshots[0])  # the one step that reached it
    assert all(torch.equal(s, snapshots[1]) for s in snapshots[2:])
    assert torch.equal(first.detach(), snapshots[1])


def test_train_skips_frozen_parameters_and_reports_progress() -> None:
    model, x, y = _regression(5)
    model.bias.requires_grad_(False)
    bias = model.bias.detach().clone()
    seen = []
    train(
        model,
        lambda s: ((model(x) - y) ** 2).mean(),
        23,
        progress=lambda d, i, n: seen.append((d, i, n)),
        description="fit",
    )
    assert torch.equal(model.bias, bias)
    # every tenth step and the last one
    assert seen == [("fit", 1, 23), ("fit", 11, 23), ("fit", 21, 23), ("fit", 23, 23)]


@pytest.mark.parametrize("run", ["train", "train_lm"])
def test_progress_says_training_when_no_description_is_given(run: str) -> None:
    model = _Bigram(4)
    data = torch.randint(0, 4, (2, 5))
    seen = []
    progress = lambda d, i, n: seen.append(d)  # noqa: E731
    if run == "train":
        train(model, lambda s: next_token_loss(model, data), 1, progress=progress)
    else:
        train_lm(model, data, 1, 0.01, progress=progress)
    assert seen == ["training"]


def test_train_fits_a_linear_map() -> None:
    torch.manual_seed(0)
    model = nn.Linear(4, 1)
    x = torch.randn(64, 4)
    y = x @ torch.tensor([[1.0], [-2.0], [0.5], [3.0]])
    seen = []
    losses = train(
        model,
        lambda step: ((model(x) - y) ** 2).mean(),
        steps=300,
        lr=0.05,
        progress=lambda d, i, n: seen.append(i),
    )
    assert losses[-1] < 1e-3 * losses[0]
    assert seen[-1] == 300 and not model.training


@pytest.mark.parametrize("layout", ["flat", "stacked"])
def test_train_lm_reads_one_fresh_batch_per_step(layout: str) -> None:
    steps, batch, length = 4, 3, 6
    g = torch.Generator().manual_seed(6)
    data = torch.randint(0, 7, (steps * batch, length + 1), generator=g)
    model = _Bigram(7)
    seen = []
    train_lm(
        model,
        data if layout == "flat" else data.view(steps, batch, length + 1),
        steps,
        0.01,
        progress=lambda d, i, n: seen.append((d, i, n)),
        description="lm",
    )
    for step, tokens in enumerate(model.seen):
        assert torch.equal(tokens, data[step * batch : (step + 1) * batch, :-1])
    assert len(model.seen) == steps
    assert seen == [("lm", 1, steps), ("lm", steps, steps)]


def test_train_lm_minimises_the_next_token_loss() -> None:
    # a deterministic cycle 0 → 1 → 2 → 3 → 0: a bigram table can learn it exactly
    steps = 60
    rows = torch.stack([(torch.arange(9) + s) % 4 for s in range(4 * steps)])
    model = _Bigram(4)
    losses = train_lm(model, rows, steps, 0.1)
    assert losses[0] > 1.0 and losses[-1] < 0.05
    assert F.softmax(model.table.weight, -1).argmax(-1).tolist() == [1, 2, 3, 0]
