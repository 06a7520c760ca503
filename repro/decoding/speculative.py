"""Speculative decoding: a cheap draft proposes γ tokens, the target checks them in one call.

Leviathan, Kalman, Matias, "Fast Inference from Transformers via Speculative Decoding", ICML 2023,
https://arxiv.org/abs/2211.17192 (§2.3 speculative sampling, Alg. 1, Eq. 1, Thm. 3.5, Thm. 3.8);
Chen et al., "Accelerating Large Language Model Decoding with Speculative Sampling",
https://arxiv.org/abs/2302.01318 (the same rule, found concurrently; there q is the target and
p the draft — the letters are swapped).

Glossary (Leviathan's letters): M_p the target, M_q the draft, p / q their next-token
distributions (V,), γ draft tokens per step, n accepted draft tokens, α the acceptance rate,
c the cost of a draft call over a target call, V vocabulary, T0 prompt length, N new tokens,
L tokens so far.

One step (Alg. 1): the draft samples x_1..x_γ autoregressively from q_1..q_γ; one target call
over the last token and the γ guesses gives p_1..p_{γ+1}; guess i is kept with probability
min(1, p_i(x_i) / q_i(x_i)); at the first rejection a token is drawn from
norm(max(0, p_i − q_i)), and if all γ are kept one more is drawn from p_{γ+1}. Every step emits
1..γ+1 tokens distributed exactly as the target would sample them.

Caches. Both models keep a static KV cache (`repro.nn.kv_cache.KVCache`) and the number of
positions in it that are valid. The target writes the γ guesses into its cache while checking
them; after a rejection the cache is rolled back to the accepted prefix (the rejected slots are
filled with NaN, so a read of one would poison every later distribution) and the next step
overwrites them. There is no separate prefill: a step feeds each model whatever tokens it has
not seen yet, so the first target call reads the whole prompt.

Randomness goes through `Randomness` (`categorical`, `bernoulli`), so the same loop can be driven
by a torch generator or by `exact_output_distribution`, which enumerates every random outcome
of the loop on a tiny vocabulary and returns the exact distribution of what it emits.
"""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
from torch import Tensor, nn

from repro.nn.kv_cache import KVCache, caches_for

Variant = Literal["exact", "accept_all", "resample_p"]
VARIANTS: tuple[str, ...] = ("exact", "accept_all", "resample_p")
# accept_all and resample_p are broken on purpose: the controls of the exactness claim.
#   accept_all: keep every guess (the draft's distribution leaks into the output)
#   resample_p: after a rejection draw from p instead of norm(max(0, p − q))


# --- the rule on one position -------------------------------------------------------------


def next_token_probs(logits: Tensor, temperature: float) -> Tensor:
    """logits (..., V) -> the distribution actually sampled (fp64): softmax(logits / T), or
    one-hot on the argmax when T == 0 (§2.2: every sampling method is sampling from some p)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    logits = logits.double()
    if temperature == 0:
        return nn.functional.one_hot(logits.argmax(-1), logits.shape[-1]).double()
    return torch.softmax(logits / temperature, dim=-1)


def acceptance_rate(p: Tensor, q: Tensor) -> Tensor:
    """β = Σ_x min(p(x), q(x)) (Thm. 3.5). p, q (..., V) -> (...)."""
    return torch.minimum(p, q).sum(-1)


def acceptance_rate_ref(p: Tensor, q: Tensor) -> Tensor:
    """β as the paper defines it (Def. 3.1): E_{x~q} of the probability of keeping x."""
    keep = torch.where(q > 0, torch.clamp(p / q.clamp_min(1e-300), max=1.0), 0.0)
    return (q * keep).sum(-1)


def tv_distance(p: Tensor, q: Tensor) -> Tensor:
    """Total variation ½ Σ |p − q| (the paper's D_LK, Lemma 3.3). (..., V) -> (...)."""
    return 0.5 * (p - q).abs().sum(-1)


def keep_probability(p: Tensor, q: Tensor, x: int) -> float:
    """min(1, p(x) / q(x)) for a guess x drawn from q (so q(x) > 0)."""
    return min(1.0, float(p[x]) / float(q[x]))


def residual(p: Tensor, q: Tensor) -> Tensor:
    """p' = norm(max(0, p − q)): where to draw from after a rejection (§2.3). (V,) -> (V,)."""
    r = (p - q).clamp_min(0.0)
    total = r.sum()
    # a rejection has probability 1 − Σ min(p, q) = Σ max(0, p − q); when that is 0 it never
    # happens, and p is as good an answer as any
    return p if float(total) <= 0.0 else r / total


def expected_tokens_per_call(alpha: float, gamma: int) -> float:
    """Eq. 1: (1 − α^{γ+1}) / (1 − α), the mean of a geometric capped at γ + 1 (i.i.d. β)."""
    if gamma < 0:
        raise ValueError(f"gamma must be >= 0, got {gamma}")
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    if alpha == 1.0:
        return float(gamma + 1)
    return (1.0 - alpha ** (gamma + 1)) / (1.0 - alpha)


def walltime_factor(alpha: float, gamma: int, c: float) -> float:
    """Thm. 3.8: speed-up over plain decoding, (1 − α^{γ+1}) / ((1 − α)(γc + 1))."""
    if c < 0:
        raise ValueError(f"cost ratio c must be >= 0, got {c}")
    return expected_tokens_per_call(alpha, gamma) / (gamma * c + 1.0)


def operations_factor(alpha: float, gamma: int, c_hat: float = 0.0) -> float:
    """Thm. 3.11: growth of total arithmetic, (1 − α)(γĉ + γ + 1) / (1 − α^{γ+1})."""
    return (gamma * c_hat + gamma + 1.0) / expected_tokens_per_call(alpha, gamma)


def best_gamma(alpha: float, c: float, max_gamma: int = 64) -> tuple[int, float]:
    """The integer γ in 1..max_gamma that maximises `walltime_factor` (§3.5), and its factor."""
    if max_gamma < 1:
        raise ValueError(f"max_gamma must be >= 1, got {max_gamma}")
    factors = {g: walltime_factor(alpha, g, c) for g in range(1, max_gamma + 1)}
    g = max(factors, key=lambda k: (factors[k], -k))
    return g, factors[g]


# --- randomness -----------------------------------------------------------------------------


class Randomness(Protocol):
    """Every random choice the loop makes."""

    def categorical(self, probs: Tensor) -> int:
        """A token drawn from probs (V,)."""
        ...

    def bernoulli(self, prob: float) -> bool:
        """True with probability prob."""
        ...


class TorchRandomness:
    """Draws from a torch generator (seeded for reproducibility)."""

    def __init__(self, generator: torch.Generator | None = None) -> None:
        self.generator = generator

    def categorical(self, probs: Tensor) -> int:
        return int(torch.multinomial(probs.float(), 1, generator=self.generator))

    def bernoulli(self, prob: float) -> bool:
        # Alg. 1: r ~ U(0, 1), reject when r > p/q; keep with probability min(1, p/q)
        return prob >= 1.0 or float(torch.rand((), generator=self.generator)) < prob


# --- the model side: a decoder, its cache and how much of it is valid ------------------------


class CachedDecoder:
    """A decoder with static KV caches and the count of valid cached positions.

    `extend(tokens, upto)` runs the model once on tokens[:, length:upto] (positions
    length..upto−1) and returns their logits (upto − length, V); `rollback(length)` forgets the
    positions from `length` on.
    """

    def __init__(self, model: nn.Module, max_len: int) -> None:
        param = next(model.parameters())
        self.model = model
        self.caches: list[KVCache] = caches_for(model.cfg, 1, max_len, param.dtype, param.device)
        self.length = 0
        self.calls = 0

    def extend(self, tokens: Tensor, upto: int) -> Tensor:
        assert upto > self.length, f"nothing to feed: upto={upto}, cached={self.length}"
        logits = self.model(tokens[:, self.length : upto], self.length, self.caches)  # (1, k, V)
        self.length = upto
        self.calls += 1
        return logits[0]  # (k, V)

    def rollback(self, length: int) -> None:
        assert 0 <= length <= self.length, f"rollback to {length} > cached {self.length}"
        if length < self.length:
            for cache in self.caches:  # rejected slots: NaN, so reading one cannot go unseen
                cache.k[:, :, length : self.length] = float("nan")
                cache.v[:, :, length : self.length] = float("nan")
        self.length = length


@dataclass
class SpeculativeResult:
    """tokens (1, T0 + N); per step the γ it used and how many guesses it kept."""

    tokens: Tensor
    target_calls: int
    draft_calls: int
    steps: list[tuple[int, int]] = field(default_factory=list)  # (γ used, n accepted)

    @property
    def new_tokens(self) -> int:
        return sum(n + 1 for _, n in self.steps)

    def tokens_per_call(self, gamma: int | None = None) -> float:
        """Mean tokens emitted per target call, over the steps that used `gamma` (all: None)."""
        steps = [n + 1 for g, n in self.steps if gamma is None or g == gamma]
        return sum(steps) / len(steps) if steps else float("nan")


def speculative_step(
    target: CachedDecoder,
    draft: CachedDecoder,
    tokens: Tensor,
    length: int,
    gamma: int,
    temperature: float,
    rng: Randomness,
    variant: Variant = "exact",
) -> int:
    """Alg. 1 on tokens[:, :length]; writes the 1..γ+1 new tokens after them, returns n kept.

    tokens (1, S) is the sequence buffer; both caches hold valid positions < length − 1 at most.
    """
    qs = []
    for i in range(gamma):  # the draft guesses autoregressively: γ calls
        q = next_token_probs(draft.extend(tokens, length + i)[-1], temperature)  # (V,)
        tokens[0, length + i] = rng.categorical(q)
        qs.append(q)
    # one target call: p_1..p_{γ+1} from the last token and the γ guesses
    ps = next_token_probs(target.extend(tokens, length + gamma)[-(gamma + 1) :], temperature)
    n = gamma
    for i in range(gamma):
        x = int(tokens[0, length + i])
        keep = 1.0 if variant == "accept_all" else keep_probability(ps[i], qs[i], x)
        if not rng.bernoulli(keep):
            n = i
            break
    if n < gamma:
        last = ps[n] if variant == "resample_p" else residual(ps[n], qs[n])
    else:
        last = ps[gamma]  # every guess kept: one more token from p_{γ+1}
    tokens[0, length + n] = rng.categorical(last)
    # keep what the accepted sequence needs: positions < length + n (the new last token is fed
    # next step); the draft never saw its last guess, so it may hold fewer
    target.rollback(length + n)
    draft.rollback(min(draft.length, length + n))
    return n


def _check_request(prompt: Tensor, new_tokens: int, gamma: int, models: list[nn.Module]) -> None:
    if prompt.dim() != 2 or prompt.shape[0] != 1:
        raise ValueError(f"prompt must be (1, T0) token ids, got shape {tuple(prompt.shape)}")
    if prompt.shape[1] == 0:
        raise ValueError("prompt is empty: speculative decoding needs at least one token")
    if gamma < 1:
        raise ValueError(f"gamma (draft tokens per step) must be >= 1, got {gamma}")
    if new_tokens < 1:
        raise ValueError(f"new_tokens must be >= 1, got {new_tokens}")
    total = prompt.shape[1] + new_tokens
    for m in models:
        if total > m.cfg.max_seq_len:
            raise ValueError(
                f"prompt ({prompt.shape[1]}) + new_tokens ({new_tokens}) = {total} exceeds "
                f"max_seq_len={m.cfg.max_seq_len}"
            )
    if models[0].cfg.vocab_size != models[1].cfg.vocab_size:
        raise ValueError(
            f"target and draft vocabularies differ: {models[0].cfg.vocab_size} vs "
            f"{models[1].cfg.vocab_size}"
        )


@torch.inference_mode()
def speculative_generate(
    target: nn.Module,
    draft: nn.Module,
    prompt: Tensor,
    new_tokens: int,
    gamma: int,
    temperature: float = 1.0,
    rng: Randomness | None = None,
    variant: Variant = "exact",
) -> SpeculativeResult:
    """prompt (1, T0) -> T0 + new_tokens tokens sampled as the target would, γ guesses a step.

    The last step uses fewer guesses when fewer tokens remain, so exactly `new_tokens` come out.
    """
    _check_request(prompt, new_tokens, gamma, [target, draft])
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; known: {', '.join(VARIANTS)}")
    rng = TorchRandomness() if rng is None else rng
    T0 = prompt.shape[1]
    total = T0 + new_tokens
    tokens = torch.zeros(1, total, dtype=torch.long, device=prompt.device)  # (1, T0 + N)
    tokens[:, :T0] = prompt
    M_p, M_q = CachedDecoder(target, total), CachedDecoder(draft, total)
    length, steps = T0, []
    while length < total:
        g = min(gamma, total - length - 1)  # at most the tokens still wanted
        n = speculative_step(M_p, M_q, tokens, length, g, temperature, rng, variant)
        steps.append((g, n))
        length += n + 1
    return SpeculativeResult(tokens, M_p.calls, M_q.calls, steps)


# --- exact distributions on tiny vocabularies ---------------------------------------------


@torch.inference_mode()
def sequence_distribution_ref(
    model: nn.Module, prompt: Tensor, new_tokens: int, temperature: float
) -> dict[tuple[int, ...], float]:
    """The model's own distribution over every continuation of length N: Π_t p(x_t | x_<t),
    from one full forward (no cache) over all V^N sequences. prompt (1, T0)."""
    V, T0 = model.cfg.vocab_size, prompt.shape[1]
    conts = torch.tensor(list(itertools.product(range(V), repeat=new_tokens)))  # (V^N, N)
    seqs = torch.cat([prompt.expand(len(conts), T0), conts], dim=1)  # (V^N, T0 + N)
    probs = next_token_probs(model(seqs[:, :-1])[:, T0 - 1 :], temperature)  # (V^N, N, V)
    picked = probs.gather(-1, conts[..., None])[..., 0].prod(-1)  # (V^N,)
    return {tuple(c): float(p) for c, p in zip(conts.tolist(), picked, strict=True) if p > 0}


class _Branch(Exception):
    def __init__(self, options: list[tuple[object, float]]) -> None:
        self.options = options


class _Replay:
    """Randomness that replays a script of choices and stops at the first choice beyond it."""

    def __init__(self, script: list[tuple[object, float]]) -> None:
        self.script, self.i, self.weight = script, 0, 1.0

    def _choose(self, options: list[tuple[object, float]]) -> object:
        if self.i == len(self.script):
            raise _Branch(options)
        value, prob = self.script[self.i]
        self.i += 1
        self.weight *= prob
        return value

    def categorical(self, probs: Tensor) -> int:
        return self._choose([(x, p) for x, p in enumerate(probs.tolist()) if p > 0])

    def bernoulli(self, prob: float) -> bool:
        options = [(True, prob), (False, 1.0 - prob)]
        return self._choose([(v, p) for v, p in options if p > 0])


def enumerate_outcomes(
    run: Callable[[Randomness], Tensor], max_runs: int = 200_000
) -> dict[tuple[int, ...], float]:
    """The exact distribution of run(rng)'s output over every sequence of random choices.

    `run` must be deterministic given its choices; it is re-run once per branch of the tree of
    choices (depth-first), so this is for tiny vocabularies and short outputs only.
    """
    out: dict[tuple[int, ...], float] = defaultdict(float)
    stack: list[list[tuple[object, float]]] = [[]]
    runs = 0
    while stack:
        script = stack.pop()
        runs += 1
        if runs > max_runs:
            raise ValueError(f"more than {max_runs} runs: the tree of outcomes is too large")
        rng = _Replay(script)
        try:
            result = run(rng)
        except _Branch as branch:
            stack.extend(script + [option] for option in branch.options)
            continue
        out[tuple(result.tolist())] += rng.weight
    return dict(out)


def exact_output_distribution(
    target: nn.Module,
    draft: nn.Module,
    prompt: Tensor,
    new_tokens: int,
    gamma: int,
    temperature: float,
    variant: Variant = "exact",
) -> dict[tuple[int, ...], float]:
    """The exact distribution of `speculative_generate`'s N new tokens, found by running the
    loop itself down every branch of its random choices (draft tokens, keep/reject, the last
    token), each branch weighted by the product of its choices' probabilities."""
    T0 = prompt.shape[1]

    def run(rng: Randomness) -> Tensor:
        result = speculative_generate(
            target, draft, prompt, new_tokens, gamma, temperature, rng, variant
        )
        return result.tokens[0, T0:]

    return enumerate_outcomes(run)


def distribution_gap(a: dict, b: dict) -> dict[str, float]:
    """max |a(x) − b(x)| and the total variation ½ Σ |a(x) − b(x)| over both supports."""
    keys = set(a) | set(b)
    diffs = [abs(a.get(k, 0.0) - b.get(k, 0.0)) for k in keys]
    return {"max_abs": max(diffs, default=0.0), "tv": 0.5 * math.fsum(diffs)}
