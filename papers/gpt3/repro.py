"""Language Models are Few-Shot Learners (GPT-3) — reproduction.

Brown et al., NeurIPS 2020, https://arxiv.org/abs/2005.14165

Glossary: B batch, T time (= 2K tokens per sequence), V vocabulary, K demonstrations per sequence,
X input symbols (|X| = n_inputs), Y output symbols (|Y| = n_outputs), N parameters, D training
tokens, k the number of demonstrations before a query ("shots").

Three things are re-computed here:
1. Table 2.1 -> parameter counts: every row is built on the `meta` device and its parameters are
   counted; the paper's precise counts are the "Params (M)" column of Table D.1.
2. Table D.1 -> training compute: C = 6·N·D with N counted from the built 175B model, D = 300B.
3. §1 / §2 "in-context learning", at toy scale: a tiny GPT is trained on sequences that each use a
   *new random mapping* X -> Y, shown only through demonstrations; on mappings held out from
   training, its query accuracy climbs from chance (0-shot) towards the best any learner can do.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

from repro.lab.claims import Context, Measured, claim
from repro.lab.counting import (
    build_preset,
    count_parameters,
    param_count,
    preset_config,
    training_flops,
)
from repro.lab.settings import check_head_split, setting
from repro.models.gpt import GPT, GPTConfig
from repro.study.plots import save_line_plot
from repro.train import lm_loss, train

# --- Table 2.1 / Table D.1: parameter counts ----------------------------------------------

# Two rows of Table 2.1 are not self-consistent (n_heads · d_head ≠ d_model); the reading that
# reproduces Table D.1's parameter count is built (see note.yaml, passes.third).
PRESETS_2_1 = (
    "gpt3-small",
    "gpt3-medium",
    "gpt3-large",
    "gpt3-xl",
    "gpt3-2.7b",
    "gpt3-6.7b",
    "gpt3-13b",
    "gpt3-175b",
)
READINGS: dict[str, dict[str, int]] = {
    "gpt3-xl": {"n_heads": 16},  # printed 24 heads × 128 = 3072 ≠ d_model 2048; 16 × 128 = 2048
    "gpt3-13b": {"d_model": 5120},  # printed 5140 ≠ 40 heads × 128 = 5120
}
TRAINING_TOKENS = 300e9  # Table 2.1 caption: every model saw 300B tokens
PF_DAY = 1e15 * 86400  # FLOPs in one petaflop/s-day (Table D.1's unit)


@cache
def n_params(preset: str, **overrides: int) -> int:
    """Exact parameter count of a Table 2.1 row, built on `meta` (no memory); asserted equal to
    the analytic count of `repro.lab.counting`."""
    built = count_parameters(build_preset(preset, **overrides))
    analytic = param_count(preset_config(preset, **overrides))
    assert built == analytic, f"{preset} {overrides}: built {built} != analytic {analytic}"
    return built


def closed_form_params(n_layers: int, d_model: int, vocab: int = 50257, n_ctx: int = 2048) -> int:
    """GPT-2/3 with d_attn = d_model and d_ff = 4·d_model, written from the architecture (§2.1):
    per layer 4d² + 4d (q, k, v, o with biases) + 8d² + 5d (the FFN) + 4d (two LayerNorms), then
    the tied token embedding V·d, the learned positions n_ctx·d and the final LayerNorm 2d."""
    return n_layers * (12 * d_model**2 + 13 * d_model) + (vocab + n_ctx) * d_model + 2 * d_model


def _row(preset: str) -> Measured:
    overrides = READINGS.get(preset, {})
    n = n_params(preset, **overrides)
    details: dict = {"built_with": overrides or "Table 2.1 as printed", "billions": n / 1e9}
    if overrides:
        details["count_as_printed"] = n_params(preset)
    if preset == "gpt3-13b":
        # 5140 everywhere: 20 heads of 257 give d_attn = 5140 (the count ignores the head split)
        details["count_d_model_5140_everywhere"] = n_params(preset, n_heads=20, head_dim=257)
    return Measured(n, details)


@claim("params-small")
def params_small(ctx: Context) -> Measured:
    return _row("gpt3-small")


@claim("params-medium")
def params_medium(ctx: Context) -> Measured:
    return _row("gpt3-medium")


@claim("params-large")
def params_large(ctx: Context) -> Measured:
    return _row("gpt3-large")


@claim("params-xl")
def params_xl(ctx: Context) -> Measured:
    return _row("gpt3-xl")


@claim("params-2-7b")
def params_2_7b(ctx: Context) -> Measured:
    return _row("gpt3-2.7b")


@claim("params-6-7b")
def params_6_7b(ctx: Context) -> Measured:
    return _row("gpt3-6.7b")


@claim("params-13b")
def params_13b(ctx: Context) -> Measured:
    return _row("gpt3-13b")


@claim("params-175b")
def params_175b(ctx: Context) -> Measured:
    return _row("gpt3-175b")


@claim("params-exact")
def params_exact(ctx: Context) -> Measured:
    """Largest |built − closed form| over the eight rows (XL with 16 heads, 13B with 5120)."""
    rows = {}
    for preset in PRESETS_2_1:
        cfg = preset_config(preset, **READINGS.get(preset, {}))
        rows[preset] = n_params(preset, **READINGS.get(preset, {})) - closed_form_params(
            cfg.n_layers, cfg.d_model
        )
    return Measured(max(abs(d) for d in rows.values()), {"built_minus_closed_form": rows})


@claim("residual-init-scaling")
def residual_init_scaling(ctx: Context) -> Measured:
    """§2.1 keeps GPT-2's modified initialisation: residual projections (attention output, FFN
    output) start with std 0.02/√(2L). Measured: their std over that of the other weight
    matrices, in a 12-layer model (GPT-3 Small's depth, narrower)."""
    torch.manual_seed(ctx.seed)
    model = GPT(GPTConfig(n_layers=12, d_model=256, n_heads=4, vocab_size=1024, max_seq_len=256))
    std_res, std_other = residual_init_stds(model)
    return Measured(
        std_res / std_other,
        {"std_residual": std_res, "std_other": std_other, "1/sqrt(2L)": 1 / math.sqrt(24)},
    )


def residual_init_stds(model: GPT) -> tuple[float, float]:
    """(std of the residual projections — attention output, FFN output —, std of the other
    block matrices) of `model`'s weights as they are."""
    residual, other = [], []
    for name, p in model.named_parameters():
        if p.dim() == 2 and name.startswith("blocks."):
            (residual if name.endswith(("attn.wo.weight", "mlp.w2.weight")) else other).append(p)
    std_res = float(torch.cat([p.detach().flatten() for p in residual]).std())
    std_other = float(torch.cat([p.detach().flatten() for p in other]).std())
    return std_res, std_other


@claim("compute-175b")
def compute_175b(ctx: Context) -> Measured:
    # Appendix D: C = (2 forward + 4 backward) FLOPs per parameter per token · N · D
    n = n_params("gpt3-175b")
    flops = training_flops(n, TRAINING_TOKENS)
    return Measured(flops, {"n_params": n, "tokens": TRAINING_TOKENS, "pf_days": flops / PF_DAY})


# --- In-context learning at toy scale --------------------------------------------------------


@dataclass(frozen=True)
class Config:
    n_inputs: int = setting(8, "inputs (|X|)", min=2)
    n_outputs: int = setting(8, "outputs (|Y|)", min=2)
    n_pairs: int = setting(16, "K demonstrations per sequence", min=1)
    n_layers: int = setting(2, "transformer layers", min=1)
    d_model: int = setting(64, "model width", min=1)
    n_heads: int = setting(4, "attention heads", min=1)
    steps: int = setting(1200, "training steps", min=1)
    batch: int = setting(64, "sequences per step", min=1)
    lr: float = setting(3e-3, "learning rate", min=0, min_exclusive=True)
    eval_sequences: int = setting(4000, "held-out sequences", min=1)
    holdout_buckets: int = setting(5, "1 in `holdout_buckets` mappings is never trained on", min=2)

    def __post_init__(self) -> None:
        check_head_split(self.d_model, self.n_heads)


PRESETS = {
    "quick": Config(n_inputs=4, n_pairs=8, n_layers=1, steps=300, eval_sequences=2000),
    "full": Config(),
}


class MappingTasks:
    """Sequences x_1 a_1 x_2 a_2 … x_K a_K, one random mapping f: X -> Y per sequence.

    Tokens 0..|X|-1 are inputs x; token |X| + x·|Y| + y is the answer "x -> y" (one token per
    demonstrated pair, the toy's "Q: x A: y"). A mapping is identified by its code
    Σ_x f(x)·|Y|^x; a hash of the code sends one mapping in `holdout_buckets` to evaluation only.
    """

    def __init__(self, cfg: Config) -> None:
        self.cfg = cfg
        self.vocab_size = cfg.n_inputs + cfg.n_inputs * cfg.n_outputs
        self.powers = cfg.n_outputs ** torch.arange(cfg.n_inputs)  # (|X|,)

    def _held_out(self, f: Tensor) -> Tensor:
        """f (B, |X|) -> (B,) bool: Knuth's multiplicative hash of the mapping's code."""
        code = (f * self.powers).sum(-1)
        return (code * 2654435761 % 2**32) % self.cfg.holdout_buckets == 0

    def mappings(self, batch: int, held_out: bool, g: torch.Generator) -> Tensor:
        """(batch, |X|) random mappings, all from the held-out set or all from the training set."""
        out = torch.empty(0, self.cfg.n_inputs, dtype=torch.long)
        while len(out) < batch:  # rejection sampling; ~1/buckets or ~(1 - 1/buckets) accepted
            f = torch.randint(0, self.cfg.n_outputs, (4 * batch, self.cfg.n_inputs), generator=g)
            out = torch.cat([out, f[self._held_out(f) == held_out]])
        return out[:batch]

    def sample(self, batch: int, held_out: bool, g: torch.Generator) -> tuple[Tensor, Tensor]:
        """Token ids (B, 2K) and next-token targets (B, 2K), -100 where nothing is scored."""
        cfg = self.cfg
        f = self.mappings(batch, held_out, g)  # (B, |X|)
        x = torch.randint(0, cfg.n_inputs, (batch, cfg.n_pairs), generator=g)  # (B, K)
        answer = cfg.n_inputs + x * cfg.n_outputs + f.gather(1, x)  # (B, K) token "x -> f(x)"
        seq = torch.stack([x, answer], dim=2).reshape(batch, 2 * cfg.n_pairs)  # (B, 2K)
        targets = torch.full_like(seq, -100)
        targets[:, 0::2] = answer  # after x_i the model must produce "x_i -> f(x_i)"
        return seq, targets


def ideal_learner_accuracy(x: Tensor, n_outputs: int) -> Tensor:
    """Expected accuracy of the Bayes-optimal learner at each query of x (B, K) -> (K,).

    A query whose input already appeared earlier in the sequence is answered from memory; an
    unseen input can only be guessed (1/|Y|), since f(x) is uniform and independent of the rest.
    """
    seen = (x[:, :, None] == x[:, None, :]).tril(diagonal=-1).any(-1).float()  # (B, K)
    return (seen + (1 - seen) / n_outputs).mean(0)


def query_accuracy(model: GPT, seq: Tensor, targets: Tensor, device: str) -> Tensor:
    """Greedy accuracy at each query position of seq (B, 2K) -> (K,), one value per shot count."""
    with torch.no_grad():
        pred = model(seq.to(device)).argmax(-1).cpu()  # (B, 2K)
    return (pred[:, 0::2] == targets[:, 0::2]).float().mean(0)  # (K,)


def experiment(cfg: Config, ctx: Context) -> dict:
    tasks = MappingTasks(cfg)
    g = torch.Generator().manual_seed(ctx.seed)
    model = GPT(
        GPTConfig(
            n_layers=cfg.n_layers,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            vocab_size=tasks.vocab_size,
            max_seq_len=2 * cfg.n_pairs,
            backend="ref",  # tiny sequences: the plain formula is the fastest path on CPU
        )
    ).to(ctx.device)

    # The control: the same model and held-out sequences before any training
    eval_g = torch.Generator().manual_seed(10_000 + ctx.seed)
    seq, targets = tasks.sample(cfg.eval_sequences, held_out=True, g=eval_g)
    untrained = query_accuracy(model, seq, targets, ctx.device)  # (K,)

    # Outer loop (§1, Fig. 1.1): plain next-token training over many random tasks
    def loss_fn(step: int) -> Tensor:
        seq, targets = tasks.sample(cfg.batch, held_out=False, g=g)
        return lm_loss(model(seq.to(ctx.device)), targets.to(ctx.device))

    losses = train(
        model, loss_fn, cfg.steps, lr=cfg.lr, progress=ctx.progress, description="gpt3: ICL"
    )

    # Inner loop (§2.4): no gradient step; the demonstrations before a query are the only
    # evidence about the held-out mapping, so query i is an i-shot problem
    accuracy = query_accuracy(model, seq, targets, ctx.device)  # (K,) by number of shots
    ideal = ideal_learner_accuracy(seq[:, 0::2], cfg.n_outputs)  # (K,)
    chance = 1 / cfg.n_outputs

    if ctx.out_dir is not None:
        shots = list(range(cfg.n_pairs))
        save_line_plot(
            ctx.out_dir / "icl_accuracy_vs_shots.svg",
            {
                "tiny GPT (held-out mappings)": (shots, accuracy.tolist()),
                "same GPT untrained": (shots, untrained.tolist()),
                "Bayes-optimal learner": (shots, ideal.tolist()),
                "chance 1/|Y|": (shots, [chance] * cfg.n_pairs),
            },
            xlabel="demonstrations before the query (shots)",
            ylabel="query accuracy",
            title=f"In-context learning of random maps |X|={cfg.n_inputs}, |Y|={cfg.n_outputs}",
        )
    return {
        "accuracy_by_shots": accuracy.tolist(),
        "untrained_accuracy_by_shots": untrained.tolist(),
        "ideal_by_shots": ideal.tolist(),
        "chance": chance,
        "final_train_loss": sum(losses[-20:]) / len(losses[-20:]),
        "n_params": count_parameters(model),
    }


@claim("icl-zero-shot-chance")
def icl_zero_shot_chance(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(
        m["accuracy_by_shots"][0] - m["chance"],
        {"zero_shot_accuracy": m["accuracy_by_shots"][0], "chance": m["chance"]},
    )


@claim("icl-few-shot-gain")
def icl_few_shot_gain(ctx: Context) -> Measured:
    m = ctx.experiment()
    acc = m["accuracy_by_shots"]
    return Measured(
        acc[-1] - acc[0],
        {"shots": len(acc) - 1, "k_shot_accuracy": acc[-1], "zero_shot_accuracy": acc[0]},
    )


@claim("icl-beats-untrained")
def icl_beats_untrained(ctx: Context) -> Measured:
    """Control: the same model before training, on the same held-out sequences. Its accuracy
    after K − 1 demonstrations is subtracted from the trained model's."""
    m = ctx.experiment()
    trained, untrained = m["accuracy_by_shots"], m["untrained_accuracy_by_shots"]
    return Measured(
        trained[-1] - untrained[-1],
        {"k_shot_trained": trained[-1], "k_shot_untrained": untrained[-1], "chance": m["chance"]},
    )


@claim("icl-matches-ideal-learner")
def icl_matches_ideal_learner(ctx: Context) -> Measured:
    m = ctx.experiment()
    gaps = [i - a for a, i in zip(m["accuracy_by_shots"], m["ideal_by_shots"], strict=True)]
    return Measured(
        max(abs(d) for d in gaps),
        {"accuracy_by_shots": m["accuracy_by_shots"], "ideal_by_shots": m["ideal_by_shots"]},
    )
