"""Fast Inference from Transformers via Speculative Decoding (Leviathan, Kalman, Matias;
ICML 2023) — reproduction. Concurrent work: Chen et al., arXiv 2302.01318.

https://arxiv.org/abs/2211.17192

Glossary (the paper's letters): M_p target, M_q draft, p / q their next-token distributions,
γ guesses per step, n guesses kept, β = Σ_x min(p(x), q(x)) the acceptance rate at one prefix,
α = E(β), c = cost of a draft call / cost of a target call, V vocabulary, N new tokens.

The loop, the rule and the formulas are `repro/decoding/speculative.py`. One step (Alg. 1):

    x_i ~ q_i (i = 1..γ),  keep x_i with prob. min(1, p_i(x_i) / q_i(x_i)),
    at the first rejection draw from norm(max(0, p_i − q_i)); if all are kept, from p_{γ+1}.

What is checked here, claim by claim (see note.yaml):
1. β = Σ min(p, q) = 1 − TV(p, q) = E_{x~q} min(1, p/q) (Lemma 3.3, Thm. 3.5), on random pairs;
2. E(tokens per target call) = (1 − α^{γ+1}) / (1 − α) (Eq. 1) against the capped geometric
   counted outcome by outcome, and Table 1's speed and operations at α = 0.8, γ = 5;
3. the best γ of Thm. 3.8's walltime factor for α = 0.8, c = 0.05;
4. exactness (measured): every random outcome of the library's loop — draft tokens, keep or
   reject, the last token — enumerated on two tiny GPTs (V = 3), with their KV caches rolled back
   after each rejection: the loop's output distribution equals the target's own to fp64
   rounding, at temperature 1 (sampling) and 0 (greedy); controls: keep every guess, or redraw
   from p after a rejection — both must differ;
5. efficiency (measured): a target and a smaller draft GPT trained on a Markov source; target
   calls per token against Eq. 1 at the α measured on the same text; control: a uniform draft.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
from torch import Tensor

from repro.data.markov import MarkovConfig, MarkovSource
from repro.decoding.speculative import (
    TorchRandomness,
    acceptance_rate,
    acceptance_rate_ref,
    best_gamma,
    distribution_gap,
    exact_output_distribution,
    expected_tokens_per_call,
    next_token_probs,
    operations_factor,
    sequence_distribution_ref,
    speculative_generate,
    tv_distance,
    walltime_factor,
)
from repro.lab.claims import Context, Measured, claim
from repro.lab.settings import setting
from repro.lab.threads import torch_threads
from repro.models.gpt import GPT, GPTConfig
from repro.study.plots import save_line_plot
from repro.train import evaluate_lm, train_lm


@dataclass(frozen=True)
class Config:
    # --device: this paper runs on the CPU (see repro.lab.settings)
    CPU_ONLY = (
        "token-by-token sampling from a CPU generator; the claims count target calls, which "
        "no device changes"
    )
    # exactness: two random tiny GPTs, every outcome of the loop enumerated
    enum_vocab: int = setting(3, "vocabulary of the enumerated GPTs (V^N outcomes)", min=2, max=6)
    enum_new_tokens: int = setting(3, "tokens generated in the enumeration", min=2, max=5)
    enum_gamma: int = setting(2, "draft tokens per step in the enumeration", min=1, max=4)
    enum_temperatures: tuple[float, ...] = setting(
        (1.0, 0.0), "temperatures enumerated (0 = greedy)", min=0.0
    )
    # efficiency: target and draft trained on an order-1 Markov source
    vocab_size: int = setting(32, "Markov vocabulary", min=4)
    concentration: float = setting(
        0.05, "Dirichlet α of the Markov rows (small = peaked)", min=0.001
    )
    seq_len: int = setting(24, "training sequence length", min=4)
    batch: int = setting(16, "training batch", min=1)
    target_steps: int = setting(150, "target training steps (1 layer, d_model 32)", min=1)
    draft_steps: int = setting(80, "draft training steps (1 layer, d_model 16)", min=1)
    gammas: tuple[int, ...] = setting((1, 2, 3, 4, 6), "γ values swept", min=1)
    gamma: int = setting(4, "γ of the headline comparison and of the uniform control", min=1)
    gen_tokens: int = setting(150, "tokens sampled per γ (temperature 1)", min=8)


PRESETS = {
    "quick": Config(),
    "full": Config(
        enum_vocab=4,
        enum_temperatures=(1.0, 0.6, 0.0),
        target_steps=300,
        draft_steps=160,
        gen_tokens=600,
    ),
}


# --- 1–3. the arithmetic of the paper ------------------------------------------------------


def random_pairs(n: int, seed: int) -> tuple[Tensor, Tensor]:
    """n pairs of lopsided distributions over 3..64 tokens (Dirichlet 0.1–1), fp64, padded."""
    g = torch.Generator().manual_seed(seed)
    V = 64
    sizes = torch.randint(3, V + 1, (n,), generator=g)
    conc = 0.1 + 0.9 * torch.rand(n, 1, generator=g, dtype=torch.float64)
    gam_p = torch._standard_gamma(conc.expand(n, V).contiguous(), generator=g)
    gam_q = torch._standard_gamma(conc.expand(n, V).contiguous(), generator=g)
    live = torch.arange(V)[None, :] < sizes[:, None]  # (n, V): only the first `size` tokens
    p, q = gam_p * live, gam_q * live
    return p / p.sum(-1, keepdim=True), q / q.sum(-1, keepdim=True)


@claim("alpha-is-one-minus-tv")
def alpha_is_one_minus_tv(ctx: Context) -> Measured:
    """max over 2,000 random pairs of |Σ min(p,q) − (1 − TV)| and |Σ min − E_q min(1, p/q)|."""
    p, q = random_pairs(2000, ctx.seed)
    beta = acceptance_rate(p, q)
    gap_tv = (beta - (1.0 - tv_distance(p, q))).abs().max().item()
    gap_def = (beta - acceptance_rate_ref(p, q)).abs().max().item()
    return Measured(
        max(gap_tv, gap_def),
        {"pairs": 2000, "gap_to_1_minus_tv": gap_tv, "gap_to_definition": gap_def,
         "beta_range": [beta.min().item(), beta.max().item()]},
    )  # fmt: skip


def tokens_per_call_enumerated(alpha: float, gamma: int) -> float:
    """E(n + 1) by listing the outcomes of one step when each guess is kept with prob. α:
    n = k < γ (k kept, then a rejection) with prob. α^k (1 − α), n = γ with prob. α^γ."""
    outcomes = [(k + 1, alpha**k * (1 - alpha)) for k in range(gamma)]
    outcomes.append((gamma + 1, alpha**gamma))
    total = sum(w for _, w in outcomes)
    assert abs(total - 1) < 1e-12, f"outcome probabilities sum to {total}"
    return sum(tokens * w for tokens, w in outcomes)


@claim("expected-tokens-formula")
def expected_tokens_formula(ctx: Context) -> Measured:
    """max |Eq. 1 − outcome-by-outcome expectation| over α ∈ {0.05..0.95}, γ ∈ 1..12."""
    gaps = [
        abs(expected_tokens_per_call(a / 20, g) - tokens_per_call_enumerated(a / 20, g))
        for a in range(1, 20)
        for g in range(1, 13)
    ]
    return Measured(
        max(gaps),
        {"limit_gamma_to_infinity_alpha_0.8": 1 / (1 - 0.8),
         "alpha_0.8_gamma_5": expected_tokens_per_call(0.8, 5)},
    )  # fmt: skip


TABLE1_ROWS = ((0.6, 2), (0.7, 3), (0.8, 2), (0.8, 5), (0.9, 2), (0.9, 10))  # Table 1's (α, γ)


def _table1() -> dict:
    return {
        f"alpha={a} gamma={g}": {
            "speed": round(walltime_factor(a, g, 0.0), 3),
            "operations": round(operations_factor(a, g, 0.0), 3),
        }
        for a, g in TABLE1_ROWS
    }


@claim("table1-speed")
def table1_speed(ctx: Context) -> Measured:
    """Table 1 (c = ĉ = 0): the speed-up at α = 0.8, γ = 5 is Eq. 1's tokens per call."""
    return Measured(walltime_factor(0.8, 5, 0.0), {"table_1": _table1()})


@claim("table1-operations")
def table1_operations(ctx: Context) -> Measured:
    """Thm. 3.11 with ĉ = 0 at α = 0.8, γ = 5: (γ + 1)(1 − α) / (1 − α^{γ+1})."""
    return Measured(operations_factor(0.8, 5, 0.0), {"table_1": _table1()})


@claim("best-gamma")
def best_gamma_claim(ctx: Context) -> Measured:
    """argmax over integer γ of Thm. 3.8's factor at α = 0.8, c = 0.05."""
    g, factor = best_gamma(0.8, 0.05)
    return Measured(
        g,
        {"factor_at_best": factor,
         "factor_by_gamma": {k: round(walltime_factor(0.8, k, 0.05), 3) for k in (1, 3, 8, 11)},
         "corollary_3_9_lower_bound": (1 + 0.8) / (1 + 0.05)},
    )  # fmt: skip


# --- 4. exactness by enumeration -----------------------------------------------------------


def random_tiny_gpt(vocab: int, seed: int, max_len: int) -> GPT:
    """A 1-layer GPT in fp64 with large random weights: peaked, context-dependent outputs."""
    torch.manual_seed(seed)
    cfg = GPTConfig(
        n_layers=1, d_model=16, n_heads=2, vocab_size=vocab, max_seq_len=max_len, backend="ref"
    )
    model = GPT(cfg).double().eval()
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.6)
    return model


@functools.lru_cache(maxsize=4)
def _exactness(vocab: int, new_tokens: int, gamma: int, temps: tuple, seed: int) -> dict:
    with torch_threads(1):
        target = random_tiny_gpt(vocab, 2 * seed + 1, 16)
        draft = random_tiny_gpt(vocab, 2 * seed + 2, 16)
        prompt = torch.tensor([[seed % vocab, (seed + 1) % vocab]])  # (1, T0 = 2)
        out = {}
        for T in temps:
            ref = sequence_distribution_ref(target, prompt, new_tokens, T)
            row = {}
            for variant in ("exact", "accept_all", "resample_p"):
                if T == 0 and variant != "exact":
                    continue  # one-hot p and q: the controls only differ when sampling
                got = exact_output_distribution(
                    target, draft, prompt, new_tokens, gamma, T, variant
                )
                row[variant] = distribution_gap(got, ref) | {"outcomes": len(got)}
            with torch.inference_mode():
                p = next_token_probs(target(prompt)[0, -1], T)
                q = next_token_probs(draft(prompt)[0, -1], T)
            row["alpha_first_token"] = acceptance_rate(p, q).item()
            out[f"T={T:g}"] = row
    return out


def _exactness_ctx(ctx: Context) -> dict:
    cfg = ctx.config
    return _exactness(
        cfg.enum_vocab, cfg.enum_new_tokens, cfg.enum_gamma, cfg.enum_temperatures, ctx.seed
    )


@claim("exact-output-distribution")
def exact_output_distribution_claim(ctx: Context) -> Measured:
    """max over sequences and temperatures of |P_speculative(x) − P_target(x)|, fp64."""
    m = _exactness_ctx(ctx)
    return Measured(max(row["exact"]["max_abs"] for row in m.values()), m)


@claim("accept-all-differs")
def accept_all_differs(ctx: Context) -> Measured:
    """Control: keeping every guess — TV to the target's distribution (sampling temperatures)."""
    m = _exactness_ctx(ctx)
    return Measured(min(row["accept_all"]["tv"] for row in m.values() if "accept_all" in row), m)


@claim("resample-p-differs")
def resample_p_differs(ctx: Context) -> Measured:
    """Control: after a rejection draw from p, not norm(max(0, p − q)) — TV to the target."""
    m = _exactness_ctx(ctx)
    return Measured(min(row["resample_p"]["tv"] for row in m.values() if "resample_p" in row), m)


# --- 5. efficiency on a trained pair ---------------------------------------------------------


def _gpt(width: int, cfg: Config, seed: int, max_len: int) -> GPT:
    torch.manual_seed(seed)
    return GPT(
        GPTConfig(
            n_layers=1,
            d_model=width,
            n_heads=2,
            vocab_size=cfg.vocab_size,
            max_seq_len=max_len,
            backend="sdpa",
        )
    )


def uniform_draft(vocab: int, max_len: int) -> GPT:
    """A draft whose every distribution is uniform (all weights zero: logits 0)."""
    model = GPT(GPTConfig(n_layers=1, d_model=8, n_heads=2, vocab_size=vocab, max_seq_len=max_len))
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    return model.eval()


def measured_alpha(target: GPT, draft: GPT, tokens: Tensor, start: int) -> float:
    """Mean β over the sampled positions start..end of tokens (1, S) (Cor. 3.6: α = E(β))."""
    with torch.inference_mode():
        p = next_token_probs(target(tokens[:, :-1])[0, start - 1 :], 1.0)  # (S − start, V)
        q = next_token_probs(draft(tokens[:, :-1])[0, start - 1 :], 1.0)
    return acceptance_rate(p, q).mean().item()


def experiment(cfg: Config, ctx: Context) -> dict:
    with torch_threads(1):  # widths 16–32: one thread is fastest
        return _efficiency(cfg, ctx)


def _efficiency(cfg: Config, ctx: Context) -> dict:
    source = MarkovSource(
        MarkovConfig(vocab_size=cfg.vocab_size, order=1, concentration=cfg.concentration)
    )
    g = torch.Generator().manual_seed(ctx.seed)
    max_len = 4 + cfg.gen_tokens
    target = _gpt(32, cfg, 2 * ctx.seed + 1, max(max_len, cfg.seq_len))
    draft = _gpt(16, cfg, 2 * ctx.seed + 2, max(max_len, cfg.seq_len))
    data = source.sample(cfg.target_steps * cfg.batch, cfg.seq_len + 1, g)  # (steps·B, T + 1)
    ctx.progress("speculative-decoding: training", 0, 2)
    train_lm(target, data, cfg.target_steps, 1e-2)
    ctx.progress("speculative-decoding: training", 1, 2)
    train_lm(draft, data[: cfg.draft_steps * cfg.batch], cfg.draft_steps, 1e-2)
    ctx.progress("speculative-decoding: training", 2, 2)
    held_out = source.sample(64, cfg.seq_len + 1, g)
    rng = TorchRandomness(g)
    sweep = {}
    for gamma in sorted(set(cfg.gammas) | {cfg.gamma}):
        prompt = source.sample(1, 4, g)  # (1, T0 = 4)
        res = speculative_generate(target, draft, prompt, cfg.gen_tokens, gamma, 1.0, rng)
        alpha = measured_alpha(target, draft, res.tokens, 4)
        full = [n + 1 for used, n in res.steps if used == gamma]  # steps with all γ guesses
        sweep[gamma] = {
            "alpha": alpha,
            "tokens_per_call": sum(full) / len(full),
            "formula": expected_tokens_per_call(alpha, gamma),
            "steps": len(full),
            "target_calls_per_token": res.target_calls / cfg.gen_tokens,
            "draft_calls": res.draft_calls,
        }
    prompt = source.sample(1, 4, g)
    unif = speculative_generate(
        target, uniform_draft(cfg.vocab_size, max_len), prompt, cfg.gen_tokens, cfg.gamma, 1.0, rng
    )
    unif_alpha = measured_alpha(target, uniform_draft(cfg.vocab_size, max_len), unif.tokens, 4)
    metrics = {
        "loss_target": evaluate_lm(target, held_out),
        "loss_draft": evaluate_lm(draft, held_out),
        "loss_floor": source.entropy_rate(),
        "sweep": sweep,
        "uniform": {
            "alpha": unif_alpha,
            "tokens_per_call": unif.tokens_per_call(cfg.gamma),
            "formula": expected_tokens_per_call(unif_alpha, cfg.gamma),
            "target_calls_per_token": unif.target_calls / cfg.gen_tokens,
        },
    }
    if ctx.out_dir is not None:
        gs = sorted(sweep)
        save_line_plot(
            ctx.out_dir / "tokens_per_call.svg",
            {
                "measured (trained draft)": (gs, [sweep[k]["tokens_per_call"] for k in gs]),
                "Eq. 1 at measured α": (gs, [sweep[k]["formula"] for k in gs]),
                "γ + 1 (every guess kept)": (gs, [k + 1 for k in gs]),
            },
            "γ (draft tokens per step)",
            "tokens per target call",
            "Speculative sampling (T = 1): measured vs (1 − α^(γ+1)) / (1 − α)",
        )
    return metrics


@claim("tokens-per-call-matches-formula")
def tokens_per_call_matches_formula(ctx: Context) -> Measured:
    """Σ tokens over full-γ steps / Σ of Eq. 1 at each γ's measured α, pooled over the sweep."""
    m = ctx.experiment()
    sweep = m["sweep"]
    measured = sum(r["tokens_per_call"] * r["steps"] for r in sweep.values())
    predicted = sum(r["formula"] * r["steps"] for r in sweep.values())
    return Measured(measured / predicted, {k: v for k, v in m.items() if k != "uniform"})


@claim("trained-draft-speedup")
def trained_draft_speedup(ctx: Context) -> Measured:
    """Tokens per target call at the headline γ with the trained draft."""
    m = ctx.experiment()
    return Measured(m["sweep"][ctx.config.gamma]["tokens_per_call"], m["sweep"][ctx.config.gamma])


@claim("uniform-draft-control")
def uniform_draft_control(ctx: Context) -> Measured:
    """Control: tokens per target call at the same γ when the draft is uniform."""
    m = ctx.experiment()
    return Measured(m["uniform"]["tokens_per_call"], m["uniform"])
