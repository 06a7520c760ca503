"""Preference data: sampled comparisons, labelled pairs, sequence log-probabilities, win rates.

What every paper that learns from comparisons needs, whatever it does with them: InstructGPT
(Ouyang et al. 2022, arXiv 2203.02155) fits a reward model to K-wise rankings; DPO (Rafailov et
al. 2023, arXiv 2305.18290) trains the policy on the same pairs directly. The "human" is the
instruction world's hidden gold reward r* and its simulated labelers (`repro.data.instructions`).

API:
    cmp = sample_comparisons(policy, world, n, K, g)    # K samples for each of n prompts, with r*
    ranking = labelers.rank(cmp.gold, g)                # a labeler's ranking, best first (n, K)
    pairs = preference_pairs(cmp, ranking, eot)         # every pair of distinct responses, y_w/y_l
    pairs.shuffled_labels(g)                            # control: a coin decides which one won
    sequence_logps(model, prompts, responses, eot)      # (N,) Σ_t log π(y_t | x, y_<t)
    sampled_gold(model, world, inst, g)                 # r* of one sampled response per prompt
    win_rate(gold_a, gold_b)                            # how often r* prefers a to b (ties half)

Glossary: n prompts, K responses per prompt, N pairs (or sequences), P prompt length,
R response length, y_w / y_l the preferred / dispreferred response.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.align.policy import generate, response_mask
from repro.align.reward import all_pairs
from repro.data.instructions import Instances, InstructionWorld


def _need_batch(name: str, n: int) -> None:
    if n < 1:
        raise ValueError(f"{name}: empty batch (0 rows); need at least one")


# --- sampled comparisons -------------------------------------------------------------------------


@dataclass(frozen=True)
class Comparisons:
    """K sampled responses for each of n prompts and their gold reward.

    inst (n instances), prompts (n, P), responses (n, K, R), gold (n, K) r*, distinct
    (n, C(K, 2)) True where the pair `all_pairs(K)` of response indices holds two different
    responses (labelers rank distinct outputs)."""

    inst: Instances
    prompts: Tensor
    responses: Tensor
    gold: Tensor
    distinct: Tensor

    @property
    def tokens(self) -> Tensor:
        """Prompt and response of every sample, (n, K, P + R)."""
        K = self.responses.shape[1]
        return torch.cat([self.prompts[:, None].expand(-1, K, -1), self.responses], dim=2)

    def gold_gaps(self) -> Tensor:
        """r*(y_a) − r*(y_b) over the pairs of two different responses, (M,)."""
        i, j = all_pairs(self.gold.shape[1])
        return (self.gold[:, i] - self.gold[:, j])[self.distinct]


def sample_comparisons(
    model: nn.Module, world: InstructionWorld, n: int, K: int, g: torch.Generator
) -> Comparisons:
    """n fresh prompts, K responses each sampled from `model` (temperature 1), and their r*."""
    _need_batch("sample_comparisons", n)
    if K < 2:
        raise ValueError(f"sample_comparisons: K={K}; a comparison needs K >= 2 responses")
    inst = world.sample_instances(n, g)
    prompts = world.prompts(inst)
    resp = torch.stack(
        [
            generate(model, prompts, world.response_len, world.vocab.eot, generator=g)
            for _ in range(K)
        ],
        1,
    )  # (n, K, R)
    gold = torch.stack([world.gold_reward(inst, resp[:, k]) for k in range(K)], 1)  # (n, K)
    i, j = all_pairs(K)
    distinct = (resp[:, i] != resp[:, j]).any(-1)  # (n, C(K, 2))
    return Comparisons(inst, prompts, resp, gold, distinct)


# --- labelled pairs ------------------------------------------------------------------------------


@dataclass(frozen=True)
class PreferencePairs:
    """N labelled comparisons (x, y_w, y_l): prompts (N, P), chosen y_w and rejected y_l (N, R),
    and the gold reward of each response (N,), kept for diagnostics only (a learner never sees
    it). `eot` ends a response: tokens after it carry no probability."""

    prompts: Tensor
    chosen: Tensor
    rejected: Tensor
    gold_chosen: Tensor
    gold_rejected: Tensor
    eot: int

    def __len__(self) -> int:
        return self.prompts.shape[0]

    def __getitem__(self, idx: Tensor | slice) -> PreferencePairs:
        return PreferencePairs(
            self.prompts[idx],
            self.chosen[idx],
            self.rejected[idx],
            self.gold_chosen[idx],
            self.gold_rejected[idx],
            self.eot,
        )

    def swapped(self, swap: Tensor) -> PreferencePairs:
        """The same pairs with y_w and y_l exchanged where `swap` (N,) is True."""
        s = swap[:, None]
        return PreferencePairs(
            self.prompts,
            torch.where(s, self.rejected, self.chosen),
            torch.where(s, self.chosen, self.rejected),
            torch.where(swap, self.gold_rejected, self.gold_chosen),
            torch.where(swap, self.gold_chosen, self.gold_rejected),
            self.eot,
        )

    def shuffled_labels(self, g: torch.Generator) -> PreferencePairs:
        """The control: each label replaced by a fair coin (the pair kept, its order random), so
        the data say nothing about which response is better."""
        return self.swapped(torch.rand(len(self), generator=g) < 0.5)

    def gold_agreement(self) -> float:
        """Share of pairs whose label agrees with r* (ties half): the labels' quality."""
        return win_rate(self.gold_chosen, self.gold_rejected)


def preference_pairs(cmp: Comparisons, ranking: Tensor, eot: int) -> PreferencePairs:
    """Every pair of a ranking (C(K, 2) per prompt), the better-ranked response as y_w; pairs
    of two identical responses are left out (no preference, and no gradient in DPO).
    ranking (n, K): response indices, best first (`InstructionWorld.rank`)."""
    n, K = cmp.gold.shape
    if ranking.shape != (n, K):
        raise ValueError(f"ranking has shape {tuple(ranking.shape)}; the comparisons need {n, K}")
    resp = cmp.responses
    a, b = all_pairs(K)  # rank positions, a better than b
    win, lose = ranking[:, a], ranking[:, b]  # (n, C(K, 2)) response indices
    rows = torch.arange(n)[:, None]
    chosen, rejected = resp[rows, win], resp[rows, lose]  # (n, C(K, 2), R)
    keep = (chosen != rejected).any(-1)  # (n, C(K, 2))
    prompts = cmp.prompts[:, None].expand(-1, len(a), -1)  # (n, C(K, 2), P)
    return PreferencePairs(
        prompts[keep],
        chosen[keep],
        rejected[keep],
        cmp.gold[rows, win][keep],
        cmp.gold[rows, lose][keep],
        eot,
    )


# --- log-probabilities of whole responses --------------------------------------------------------


def _check_sequences(name: str, prompts: Tensor, responses: Tensor) -> None:
    if prompts.dim() != 2 or responses.dim() != 2 or prompts.shape[0] != responses.shape[0]:
        raise ValueError(
            f"{name}: need prompts (N, P) and responses (N, R) with the same N; got "
            f"{tuple(prompts.shape)} and {tuple(responses.shape)}"
        )
    _need_batch(name, prompts.shape[0])
    if prompts.shape[1] == 0 or responses.shape[1] == 0:
        raise ValueError(
            f"{name}: zero-length {'prompt' if prompts.shape[1] == 0 else 'response'}; "
            "log π(y|x) needs P >= 1 and R >= 1 tokens"
        )


def sequence_logps(model: nn.Module, prompts: Tensor, responses: Tensor, eot: int) -> Tensor:
    """log π(y|x) = Σ_t log π(y_t | x, y_<t), summed (not averaged) over the response's tokens up
    to and including the first `eot`. prompts (N, P), responses (N, R) -> (N,) in fp32 or fp64."""
    _check_sequences("sequence_logps", prompts, responses)
    P = prompts.shape[1]
    logits = model(torch.cat([prompts, responses], dim=1)[:, :-1])[:, P - 1 :]  # (N, R, V)
    logits = logits if logits.dtype == torch.float64 else logits.float()  # fp64 stays fp64
    logp = F.log_softmax(logits, -1).gather(-1, responses[..., None]).squeeze(-1)  # (N, R)
    return (logp * response_mask(responses, eot)).sum(1)


@torch.no_grad()
def sequence_logps_ref(model: nn.Module, prompts: Tensor, responses: Tensor, eot: int) -> Tensor:
    """The same, one sequence and one token at a time (the reference for tests)."""
    _check_sequences("sequence_logps_ref", prompts, responses)
    out = []
    for x, y in zip(prompts, responses, strict=True):
        total, seq = 0.0, x
        for token in y.tolist():
            logits = model(seq[None])[0, -1].double()  # (V,)
            total += float(torch.log_softmax(logits, -1)[token])
            if token == eot:
                break
            seq = torch.cat([seq, torch.tensor([token])])
        out.append(total)
    return torch.tensor(out, dtype=torch.float64)


# --- judging with the gold reward ----------------------------------------------------------------


@torch.no_grad()
def sampled_gold(
    model: nn.Module,
    world: InstructionWorld,
    inst: Instances,
    g: torch.Generator,
    prompts: Tensor | None = None,
) -> Tensor:
    """r* of one response sampled from `model` (temperature 1) for each instance, (N,)."""
    prompts = world.prompts(inst) if prompts is None else prompts
    _need_batch("sampled_gold", prompts.shape[0])
    resp = generate(model, prompts, world.response_len, world.vocab.eot, generator=g)
    return world.gold_reward(inst, resp)


def win_rate(gold_a: Tensor, gold_b: Tensor) -> float:
    """How often the gold reward prefers a to b, over paired rows; a tie counts half.
    gold_a, gold_b (N,)."""
    if gold_a.shape != gold_b.shape:
        raise ValueError(
            f"win_rate: paired rewards need one shape; got {tuple(gold_a.shape)} and "
            f"{tuple(gold_b.shape)}"
        )
    _need_batch("win_rate", gold_a.numel())
    return ((gold_a > gold_b).float() + 0.5 * (gold_a == gold_b).float()).mean().item()
