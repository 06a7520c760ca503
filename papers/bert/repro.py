"""BERT: Pre-training of Deep Bidirectional Transformers (Devlin et al., NAACL 2019) — reproduction.

https://arxiv.org/abs/1810.04805

What this file re-computes, claim by claim (the note's `claims`):
- §3 sizes: BERT-Base and BERT-Large are built on the meta device and counted;
- §3.1 Task #1 (and Appendix A.1): the masking procedure, written out in `mask_tokens` and
  measured over millions of tokens: 15% of the positions chosen, of those 80% → [MASK],
  10% → a random token, 10% left unchanged;
- §3.1 / §5.1: masked-LM pre-training of a tiny BERT on text from a Markov source whose
  entropies are known exactly, once with bidirectional attention and once left-only (the
  same model, data, masks and steps), against the unigram entropy.

Glossary: B batch, T time, V vocabulary, C model width (the paper's H), L layers.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import torch
from torch import Tensor

from repro.data.markov import MarkovConfig, MarkovSource
from repro.lab.claims import Context, Measured, claim
from repro.lab.counting import build_preset, count_parameters, param_count, preset_config
from repro.lab.settings import check_head_split, setting
from repro.models.bert import Bert, BertConfig
from repro.study.plots import save_line_plot
from repro.train import lm_loss, train

# Special tokens of our id space; every id from FIRST_REGULAR up is an ordinary token.
PAD, CLS, SEP, MASK = 0, 1, 2, 3
FIRST_REGULAR = 4
IGNORE = -100  # label of a position the MLM loss skips


@dataclass(frozen=True)
class Config:
    # §3.1 masking, measured on BERT-shaped inputs: [CLS] A [SEP] B [SEP], 30522-token vocabulary
    mask_vocab_size: int = setting(30522, "vocabulary size of the masking statistics", min=5)
    mask_seq_len: int = setting(
        128,
        "tokens per masked sequence; the length of 90% of BERT's pre-training steps (Appendix A.2)",
        min=5,
    )
    mask_sequences: int = setting(
        20_000, "sequences the masking statistics are counted over", min=1
    )
    # the synthetic language: an order-1 Markov chain (repro.data.markov)
    markov_vocab: int = setting(32, "tokens of the synthetic Markov language", min=2)
    markov_concentration: float = setting(
        0.05,
        "Dirichlet concentration of the Markov transitions (small: peaked)",
        min=0,
        min_exclusive=True,
    )
    markov_seed: int = setting(1234, "seed of the Markov source", min=0)
    seq_len: int = setting(8, "tokens per training sequence", min=2)
    # a tiny BERT, trained twice: bidirectional, then left-only
    n_layers: int = setting(2, "transformer layers", min=1)
    d_model: int = setting(64, "model width", min=1)
    n_heads: int = setting(4, "attention heads", min=1)
    dropout: float = setting(
        0.0, "0.1 in the paper (A.2); fresh text every step leaves nothing to overfit", min=0, max=1
    )
    steps: int = setting(250, "training steps", min=1)
    batch_size: int = setting(128, "sequences per step", min=1)
    lr: float = setting(8e-3, "learning rate", min=0, min_exclusive=True)
    eval_sequences: int = setting(2000, "held-out sequences", min=1)

    def __post_init__(self) -> None:
        check_head_split(self.d_model, self.n_heads)


PRESETS = {"quick": Config(), "full": Config(seq_len=16, steps=1500, lr=3e-3, eval_sequences=8000)}


# --- §3.1 Task #1: the masked LM's corruption ----------------------------------------------


def mask_tokens(
    ids: Tensor,
    maskable: Tensor,
    vocab_size: int,
    generator: torch.Generator,
    rate: float = 0.15,
) -> tuple[Tensor, Tensor]:
    """Corrupt ids (B, T) for the masked LM; maskable (B, T) bool excludes [CLS]/[SEP]/padding.

    Returns (inputs, labels), both (B, T): labels hold the original token at the chosen
    positions and IGNORE elsewhere.
    """
    B, T = ids.shape
    n = maskable.sum(1).double()  # maskable tokens per sequence, (B,)
    # How many: 15% of each sequence's tokens. The released generator rounds 0.15·n to the
    # nearest integer; we round up or down at random so that E[k] = 0.15·n exactly.
    k = torch.floor(rate * n + torch.rand(B, generator=generator, dtype=torch.float64)).long()
    # Which: a uniformly random k-subset of the maskable positions (shuffle, take the first k).
    order = torch.rand(B, T, generator=generator).masked_fill(~maskable, 2.0)  # specials last
    rank = order.argsort(1).argsort(1)  # (B, T) rank of each position in its shuffled order
    chosen = rank < k[:, None]  # (B, T)
    # What: each chosen token becomes [MASK] with p = 0.8, a random token with p = 0.1, and
    # stays itself with p = 0.1 — so [MASK] never appearing at fine-tuning time hurts less.
    u = torch.rand(B, T, generator=generator)
    to_mask = chosen & (u < 0.8)
    to_random = chosen & (u >= 0.8) & (u < 0.9)
    inputs = ids.masked_fill(to_mask, MASK)
    n_random = int(to_random.sum())
    random_ids = torch.randint(FIRST_REGULAR, vocab_size, (n_random,), generator=generator)
    inputs[to_random] = random_ids
    labels = ids.masked_fill(~chosen, IGNORE)  # the loss looks at the chosen positions only
    return inputs, labels


def sentence_pairs(n: int, cfg: Config, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """[CLS] A [SEP] B [SEP] of random ordinary tokens, random split; ids, maskable (B, T)."""
    T = cfg.mask_seq_len
    ids = torch.randint(FIRST_REGULAR, cfg.mask_vocab_size, (n, T), generator=g)  # (B, T)
    split = torch.randint(2, T - 2, (n,), generator=g)  # position of the middle [SEP]
    ids[:, 0] = CLS
    ids[torch.arange(n), split] = SEP
    ids[:, -1] = SEP
    return ids, ids >= FIRST_REGULAR


@functools.lru_cache(maxsize=4)
def masking_stats(cfg: Config, seed: int) -> dict:
    """Counts over cfg.mask_sequences corrupted sequences (each outcome read off the output)."""
    g = torch.Generator().manual_seed(seed)
    ids, maskable = sentence_pairs(cfg.mask_sequences, cfg, g)
    inputs, labels = mask_tokens(ids, maskable, cfg.mask_vocab_size, g)
    chosen = labels != IGNORE
    n_maskable, n_chosen = int(maskable.sum()), int(chosen.sum())
    as_mask = int((inputs[chosen] == MASK).sum())
    unchanged = int((inputs[chosen] == ids[chosen]).sum())
    return {
        "maskable": n_maskable,
        "chosen": n_chosen,
        "special_chosen": int((chosen & ~maskable).sum()),
        "mask": as_mask,
        # a random draw can hit the original token (p = 1/30518): it then counts as unchanged
        "random": n_chosen - as_mask - unchanged,
        "unchanged": unchanged,
    }


def _share(count: int, total: int, p: float) -> Measured:
    """count/total with its binomial standard error √(p(1−p)/total) under the paper's p."""
    return Measured(
        count / total, {"count": count, "of": total, "binomial_se": math.sqrt(p * (1 - p) / total)}
    )


# --- the synthetic language and its exact entropies ------------------------------------------


def markov_source(cfg: Config) -> MarkovSource:
    return MarkovSource(
        MarkovConfig(
            vocab_size=cfg.markov_vocab,
            order=1,
            concentration=cfg.markov_concentration,
            seed=cfg.markov_seed,
        )
    )


def two_sided_entropy(source: MarkovSource) -> float:
    """H(X_t | X_{t−1}, X_{t+1}) in nats for an order-1 chain: the floor with both neighbours.

    p(a, b, c) = π(a) P(b | a) P(c | b); H(B | A, C) = H(A, B, C) − H(A, C).
    """
    assert source.cfg.order == 1, f"needs an order-1 chain, got order {source.cfg.order}"
    P, pi = source.transition, source.stationary()  # (V, V), (V,)
    joint = pi[:, None, None] * P[:, :, None] * P[None, :, :]  # (V, V, V)

    def entropy(p: Tensor) -> float:
        p = p[p > 0]
        return float(-(p * p.log()).sum())

    return entropy(joint) - entropy(joint.sum(1))


def markov_batch(source: MarkovSource, n: int, cfg: Config, g: torch.Generator) -> Tensor:
    """(B, T) sentences of the Markov language, shifted past the special ids."""
    return source.sample(n, cfg.seq_len, g) + FIRST_REGULAR


# --- the experiment ----------------------------------------------------------------------------


def experiment(cfg: Config, ctx: Context) -> dict:
    """MLM pre-training, bidirectional vs left-only, on the same batches and masks."""
    source = markov_source(cfg)
    vocab = cfg.markov_vocab + FIRST_REGULAR
    floors = {
        "unigram": source.unigram_entropy(),  # H(X): no context at all
        "left_only": source.entropy_rate(),  # H(X_t | X_{t-1}): the whole left context
        "bidirectional": two_sided_entropy(source),  # H(X_t | X_{t-1}, X_{t+1})
    }
    metrics: dict = {"floors": floors}
    curves = {}
    for name, causal in (("bidirectional", False), ("left_only", True)):
        torch.manual_seed(ctx.seed)  # the same initial weights for both
        model = Bert(
            BertConfig(
                n_layers=cfg.n_layers,
                d_model=cfg.d_model,
                n_heads=cfg.n_heads,
                vocab_size=vocab,
                max_seq_len=cfg.seq_len,
                dropout=cfg.dropout,
                causal=causal,  # §5.1 "LTR": every position sees only its left
                backend="sdpa",
            )
        ).to(ctx.device)
        g = torch.Generator().manual_seed(ctx.seed)  # the same batches and masks for both

        def mlm_step(step: int, model: Bert = model, g: torch.Generator = g) -> Tensor:
            ids = markov_batch(source, cfg.batch_size, cfg, g)  # (B, T)
            inputs, labels = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), vocab, g)
            logits, _ = model(inputs.to(ctx.device))  # (B, T, V); NSP is not trained here
            return lm_loss(logits, labels.to(ctx.device), ignore_index=IGNORE)

        losses = train(
            model,
            mlm_step,
            cfg.steps,
            lr=cfg.lr,
            progress=ctx.progress,
            description=f"bert: {name}",
        )
        # Held-out sentences and masks, identical for both models.
        g_eval = torch.Generator().manual_seed(10**6 + ctx.seed)
        ids = markov_batch(source, cfg.eval_sequences, cfg, g_eval)
        inputs, labels = mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), vocab, g_eval)
        with torch.no_grad():
            logits, _ = model(inputs.to(ctx.device))
        metrics[f"{name}_loss"] = float(lm_loss(logits, labels.to(ctx.device), ignore_index=IGNORE))
        curves[name] = losses
    if ctx.out_dir is not None:
        steps = list(range(1, cfg.steps + 1))
        series = {f"{name} (train)": (steps, losses) for name, losses in curves.items()}
        for name, h in floors.items():
            series[f"floor: {name}"] = (steps, [h] * cfg.steps)
        save_line_plot(
            ctx.out_dir / "mlm_loss.svg",
            series,
            "step",
            "masked-token loss (nats)",
            "Masked LM on a Markov language: bidirectional vs left-only",
        )
    return metrics


# --- claims --------------------------------------------------------------------------------


def _bert_size(preset: str) -> Measured:
    """Build `preset` (encoder, pooler, MLM and NSP heads) on meta and count it."""
    cfg = preset_config(preset)
    total = count_parameters(build_preset(preset))
    assert total == param_count(cfg), f"built {total} != analytic {param_count(cfg)}"
    return Measured(
        total / 1e6,
        {
            "parameters": total,
            "encoder_and_pooler": param_count(cfg, heads=False),  # Hugging Face's BertModel
            "embeddings": total - param_count(cfg, embeddings=False),
            "vocab_size": cfg.vocab_size,
            "with_30000_vocab": param_count(cfg) - (cfg.vocab_size - 30000) * (cfg.d_model + 1),
        },
    )


def closed_form_params(L: int, H: int, V: int = 30522, P: int = 512) -> int:
    """BERT with its pre-training heads, written from §3 and Fig. 2 (F = 4H, 2 segments):
    embeddings (V + P + 2)·H and their LayerNorm 2H; per layer q, k, v, o with biases 4H² + 4H,
    the FFN 8H² + 5H and two LayerNorms 4H; the pooler H² + H; the MLM transform H² + H, its
    LayerNorm 2H and output bias V (decoder tied to the word embeddings); NSP 2H + 2."""
    layers = L * (12 * H**2 + 13 * H)
    return (V + P + 2) * H + 2 * H + layers + (H**2 + H) + (H**2 + H + 2 * H + V) + (2 * H + 2)


@claim("params-exact")
def params_exact(ctx: Context) -> Measured:
    """Largest |built − closed form| over BERT-Base and BERT-Large (analytic = built asserted)."""
    diffs = {}
    for preset in ("bert-base", "bert-large"):
        cfg = preset_config(preset)
        built = _bert_size(preset).details["parameters"]
        diffs[preset] = built - closed_form_params(cfg.n_layers, cfg.d_model)
    return Measured(max(abs(d) for d in diffs.values()), {"built_minus_closed_form": diffs})


@claim("base-params")
def base_params(ctx: Context) -> Measured:
    return _bert_size("bert-base")


@claim("large-params")
def large_params(ctx: Context) -> Measured:
    return _bert_size("bert-large")


@claim("mask-selection-rate")
def mask_selection_rate(ctx: Context) -> Measured:
    st = masking_stats(ctx.config, ctx.seed)
    out = _share(st["chosen"], st["maskable"], 0.15)
    return Measured(out.value, {**out.details, "special_tokens_chosen": st["special_chosen"]})


@claim("mask-token-share")
def mask_token_share(ctx: Context) -> Measured:
    st = masking_stats(ctx.config, ctx.seed)
    return _share(st["mask"], st["chosen"], 0.8)


@claim("random-token-share")
def random_token_share(ctx: Context) -> Measured:
    st = masking_stats(ctx.config, ctx.seed)
    return _share(st["random"], st["chosen"], 0.1)


@claim("unchanged-share")
def unchanged_share(ctx: Context) -> Measured:
    st = masking_stats(ctx.config, ctx.seed)
    return _share(st["unchanged"], st["chosen"], 0.1)


@claim("mlm-beats-unigram")
def mlm_beats_unigram(ctx: Context) -> Measured:
    """H(X) − masked-token loss of the bidirectional model, in nats."""
    m = ctx.experiment()
    return Measured(
        m["floors"]["unigram"] - m["bidirectional_loss"],
        {
            "bidirectional_loss": m["bidirectional_loss"],
            **{f"floor_{k}": v for k, v in m["floors"].items()},
        },
    )


@claim("bidirectional-beats-left-only")
def bidirectional_beats_left_only(ctx: Context) -> Measured:
    """Masked-token loss left-only − bidirectional, same model size, data, masks and steps."""
    m = ctx.experiment()
    f = m["floors"]
    return Measured(
        m["left_only_loss"] - m["bidirectional_loss"],
        {
            "bidirectional_loss": m["bidirectional_loss"],
            "left_only_loss": m["left_only_loss"],
            "floor_gap": f["left_only"] - f["bidirectional"],  # I(X_t; X_{t+1} | X_{t-1})
        },
    )
