"""Direct Preference Optimization: the KL-regularised RLHF problem solved as a classification.

Rafailov, Sharma, Mitchell, Ermon, Manning, Finn, NeurIPS 2023, https://arxiv.org/abs/2305.18290

    Eq. 4   π_r(y|x) = π_ref(y|x)·exp(r(x, y)/β) / Z(x)      the optimum of E_π[r] − β·KL(π‖π_ref)
    Eq. 5   r(x, y) = β·log π_r(y|x)/π_ref(y|x) + β·log Z(x)  (Z cancels in Bradley–Terry)
    Eq. 7   L_DPO = −E_(x, y_w, y_l) log σ(β·log π_θ(y_w|x)/π_ref(y_w|x)
                                           − β·log π_θ(y_l|x)/π_ref(y_l|x))
    §4      ∇L_DPO = −β·E[σ(r̂_l − r̂_w)·(∇log π_θ(y_w|x) − ∇log π_θ(y_l|x))],  r̂ = β·log π_θ/π_ref

No reward model and no sampling while training: the policy is fitted to the pairs directly, and
its implicit reward r̂ is the reward model. log π(y|x) is summed over the response's tokens
(`repro.align.preferences.sequence_logps`).

API:
    implicit_reward(logp, logp_ref, beta)                 # r̂ (N,)
    dpo_loss(logp_w, logp_l, ref_w, ref_l, beta)          # Eq. 7, mean over pairs (or weighted)
    dpo_loss_ref(...)                                     # the same, pair by pair in Python floats
    dpo_weights(logp_w, logp_l, ref_w, ref_l, beta)       # σ(r̂_l − r̂_w), the §4 weight
    dpo_gradient_ref(policy, pairs, ref_w, ref_l, beta)   # §4's gradient, pair by pair
    history = dpo(policy, reference, pairs, DPOConfig())  # trains `policy` in place
    logp = tabular_dpo(logp_ref, prefer, pair_prob, beta) # the exact minimiser for a tabular policy

Glossary: N pairs, X prompts and Y responses of a tabular policy, β the KL coefficient,
r̂ the implicit reward, y_w / y_l the preferred / dispreferred response.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.align.preferences import PreferencePairs, sequence_logps
from repro.lab.claims import ProgressFn
from repro.train import train


def _check_beta(beta: float) -> None:
    if not (beta > 0 and math.isfinite(beta)):
        raise ValueError(f"β = {beta}; DPO needs a finite β > 0")


def _check_pairs(logp_w: Tensor, logp_l: Tensor, ref_w: Tensor, ref_l: Tensor) -> None:
    shapes = {tuple(t.shape) for t in (logp_w, logp_l, ref_w, ref_l)}
    if len(shapes) != 1 or logp_w.dim() != 1:
        raise ValueError(f"dpo_loss: need four (N,) tensors of one shape; got {sorted(shapes)}")
    if logp_w.shape[0] == 0:
        raise ValueError("dpo_loss: empty batch (0 pairs); need at least one")


def implicit_reward(logp: Tensor, logp_ref: Tensor, beta: float) -> Tensor:
    """r̂(x, y) = β·log π_θ(y|x)/π_ref(y|x) (§4, §5)."""
    return beta * (logp - logp_ref)


def dpo_loss(
    logp_w: Tensor,
    logp_l: Tensor,
    ref_w: Tensor,
    ref_l: Tensor,
    beta: float,
    weight: Tensor | None = None,
    reference_free: bool = False,
) -> Tensor:
    """Eq. 7: −log σ(r̂_w − r̂_l) averaged over pairs, or Σ w·ℓ / Σ w with `weight` (N,).
    All inputs (N,) sequence log-probabilities. `reference_free` drops π_ref (an ablation: the
    policy is then pulled towards exp(r/β) alone, not π_ref·exp(r/β))."""
    _check_pairs(logp_w, logp_l, ref_w, ref_l)
    _check_beta(beta)
    if reference_free:
        ref_w, ref_l = torch.zeros_like(ref_w), torch.zeros_like(ref_l)
    margin = implicit_reward(logp_w, ref_w, beta) - implicit_reward(logp_l, ref_l, beta)  # (N,)
    losses = -F.logsigmoid(margin)
    if weight is None:
        return losses.mean()
    return (weight * losses).sum() / weight.sum()


def dpo_loss_ref(
    logp_w: Tensor, logp_l: Tensor, ref_w: Tensor, ref_l: Tensor, beta: float
) -> float:
    """Eq. 7 written out pair by pair in Python floats (the reference for tests)."""
    total = 0.0
    rows = list(zip(logp_w.tolist(), logp_l.tolist(), ref_w.tolist(), ref_l.tolist(), strict=True))
    for lw, ll, rw, rl in rows:
        z = beta * (lw - rw) - beta * (ll - rl)
        total += math.log1p(math.exp(-z)) if z > 0 else -z + math.log1p(math.exp(z))
    return total / len(rows)


def dpo_weights(
    logp_w: Tensor, logp_l: Tensor, ref_w: Tensor, ref_l: Tensor, beta: float
) -> Tensor:
    """σ(r̂_l − r̂_w) (§4): large where the implicit reward orders the pair wrongly. (N,)."""
    _check_pairs(logp_w, logp_l, ref_w, ref_l)
    return torch.sigmoid(
        implicit_reward(logp_l, ref_l, beta) - implicit_reward(logp_w, ref_w, beta)
    )


def dpo_gradient_ref(
    policy: nn.Module,
    pairs: PreferencePairs,
    ref_w: Tensor,
    ref_l: Tensor,
    beta: float,
    weights: Tensor | None = None,
) -> list[Tensor]:
    """§4's gradient of the mean loss, −β/N·Σ σ(r̂_l − r̂_w)·(∇log π(y_w) − ∇log π(y_l)), one pair
    at a time: the weight from the formula, each ∇log π(y) by autograd of that one sequence.
    Returns one tensor per parameter of `policy` (for comparison with autograd of `dpo_loss`).
    `weights` (N,) replaces σ(r̂_l − r̂_w), e.g. to show what another weighting would give."""
    params = [p for p in policy.parameters() if p.requires_grad]
    total = [torch.zeros_like(p) for p in params]
    N = len(pairs)
    for i in range(N):
        one = pairs[i : i + 1]
        lw = sequence_logps(policy, one.prompts, one.chosen, pairs.eot)
        ll = sequence_logps(policy, one.prompts, one.rejected, pairs.eot)
        if weights is None:
            w = dpo_weights(lw.detach(), ll.detach(), ref_w[i : i + 1], ref_l[i : i + 1], beta)
        else:
            w = weights[i]
        grads = torch.autograd.grad((lw - ll).sum(), params)
        for t, gr in zip(total, grads, strict=True):
            t -= beta / N * float(w) * gr
    return total


# --- training a policy on preference pairs -------------------------------------------------------


@dataclass(frozen=True)
class DPOConfig:
    beta: float = 0.1  # β (App. B: 0.1 by default, 0.5 for TL;DR)
    epochs: int = 2
    batch: int = 64  # pairs per step (App. B: 64)
    lr: float = 1e-3
    reference_free: bool = False  # the ablation: no π_ref in the loss
    seed: int = 0


@torch.no_grad()
def reference_logps(reference: nn.Module, pairs: PreferencePairs) -> tuple[Tensor, Tensor]:
    """log π_ref(y_w|x), log π_ref(y_l|x), (N,) each: computed once, before training."""
    reference.eval()
    w = sequence_logps(reference, pairs.prompts, pairs.chosen, pairs.eot)
    return w, sequence_logps(reference, pairs.prompts, pairs.rejected, pairs.eot)


def dpo(
    policy: nn.Module,
    reference: nn.Module,
    pairs: PreferencePairs,
    cfg: DPOConfig,
    progress: ProgressFn | None = None,
    on_step: Callable[[int, nn.Module], None] | None = None,
) -> list[dict[str, float]]:
    """Fine-tune `policy` in place on Eq. 7 for `cfg.epochs` passes over the pairs (warm-up +
    cosine AdamW, `repro.train.train`); `reference` stays frozen. Returns per step the loss,
    the share of pairs in the batch that r̂ orders like the labels, and the mean margin
    r̂_w − r̂_l. `on_step(step, policy)` runs before every step and once after the last."""
    if len(pairs) == 0:
        raise ValueError("dpo: no preference pairs to train on")
    _check_beta(cfg.beta)
    ref_w, ref_l = reference_logps(reference, pairs)
    g = torch.Generator().manual_seed(cfg.seed)
    N = len(pairs)
    per_epoch = math.ceil(N / cfg.batch)
    order = torch.cat([torch.randperm(N, generator=g) for _ in range(cfg.epochs)])
    history: list[dict[str, float]] = []

    def loss(step: int) -> Tensor:
        if on_step is not None:
            on_step(step, policy)
            policy.train()
        epoch, i = divmod(step, per_epoch)
        start = epoch * N + i * cfg.batch
        idx = order[start : min(start + cfg.batch, (epoch + 1) * N)]
        b = pairs[idx]
        # chosen and rejected through one forward pass: (2B, P) prompts, (2B, R) responses
        logp = sequence_logps(
            policy, b.prompts.repeat(2, 1), torch.cat([b.chosen, b.rejected]), pairs.eot
        )
        lw, ll = logp[: len(idx)], logp[len(idx) :]
        out = dpo_loss(lw, ll, ref_w[idx], ref_l[idx], cfg.beta, reference_free=cfg.reference_free)
        with torch.no_grad():
            margin = implicit_reward(lw, ref_w[idx], cfg.beta) - implicit_reward(
                ll, ref_l[idx], cfg.beta
            )
            history.append(
                {
                    "loss": out.item(),
                    "reward_accuracy": (margin > 0).float().mean().item(),
                    "margin": margin.mean().item(),
                }
            )
        return out

    steps = per_epoch * cfg.epochs
    train(policy, loss, steps, lr=cfg.lr, progress=progress, description="DPO")
    if on_step is not None:
        on_step(steps, policy)
    return history


# --- the exact minimiser for a tabular policy ----------------------------------------------------


def tabular_dpo(
    logp_ref: Tensor,
    prefer: Tensor,
    pair_prob: Tensor,
    beta: float,
    reference_free: bool = False,
    max_iter: int = 100,
    tol: float = 1e-13,
    max_step: float = 2.0,
) -> Tensor:
    """Minimise the *expected* DPO loss over a tabular policy (free logits θ per (x, y)),
    starting at π_ref: every ordered pair (x, y, y') is a datum (y_w = y, y_l = y') of weight
    pair_prob(x, y, y')·prefer(x, y, y'). logp_ref (X, Y); prefer (X, Y, Y) the labelers'
    P(y ≻ y' | x); pair_prob (X, Y, Y) how often (x, {y, y'}) is shown. Returns log π (X, Y).

    The loss is convex in θ (the log-normaliser cancels in r̂_w − r̂_l). The gradient is autograd's
    through `dpo_loss`; the step is Newton's, with the loss's Hessian in θ, per prompt a weighted
    graph Laplacian β²·(diag(Q·1) − Q), Q_ab = σ(m_ab)σ(−m_ab)·(W_ab + W_ba), whose null
    direction (a constant added to a prompt's logits) is pinned; a backtracking line search
    keeps every step downhill. Stops when the largest gradient entry is below `tol`."""
    _check_beta(beta)
    X, Y = logp_ref.shape
    if X == 0 or Y < 2:
        raise ValueError(f"tabular_dpo: need X >= 1 prompts and Y >= 2 responses; got ({X}, {Y})")
    # every ordered pair (x, y_w, y_l) as a dense (X, Y, Y) grid, flattened for `dpo_loss`
    weight = pair_prob * prefer * (1 - torch.eye(Y, dtype=prefer.dtype))  # no y against itself
    W = weight / weight.sum()

    def grid(t: Tensor) -> tuple[Tensor, Tensor]:  # (X, Y) -> y_w and y_l of every pair
        return t[:, :, None].expand(X, Y, Y).reshape(-1), t[:, None, :].expand(X, Y, Y).reshape(-1)

    ref = torch.zeros_like(logp_ref) if reference_free else logp_ref
    ref_w, ref_l = grid(logp_ref)

    def loss_of(theta: Tensor) -> Tensor:
        logp = F.log_softmax(theta, -1)  # (X, Y)
        return dpo_loss(
            *grid(logp), ref_w, ref_l, beta, weight.reshape(-1), reference_free=reference_free
        )

    theta = logp_ref.clone()
    for _ in range(max_iter):
        theta.requires_grad_(True)
        loss = loss_of(theta)
        (grad,) = torch.autograd.grad(loss, theta)  # (X, Y)
        theta = theta.detach()
        if grad.abs().max() < tol:
            break
        with torch.no_grad():
            h = beta * (theta - ref)  # r̂ up to a per-prompt constant, (X, Y)
            m = h[:, :, None] - h[:, None, :]  # (X, Y, Y)
            Q = torch.sigmoid(m) * torch.sigmoid(-m) * (W + W.transpose(1, 2))
            H = beta**2 * (torch.diag_embed(Q.sum(-1)) - Q)  # (X, Y, Y)
            H = H + H.diagonal(dim1=1, dim2=2).mean(-1)[:, None, None] / Y  # pin the constant
            step = -torch.linalg.solve(H, grad[..., None])[..., 0]  # (X, Y)
            # a trust region: at most `max_step` nats per logit and iteration, per prompt (pairs
            # of tiny weight make H nearly singular, and a full step there would overshoot)
            step = step / (step.abs().amax(-1, keepdim=True) / max_step).clamp(min=1)
            slope, t = float((grad * step).sum()), 1.0
            while t > 1e-8 and loss_of(theta + t * step) > loss + 1e-4 * t * slope:
                t /= 2
            theta = theta + t * step
    return F.log_softmax(theta.detach(), -1)
