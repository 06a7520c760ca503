"""LLaMA: Open and Efficient Foundation Language Models — reproduction.

Touvron et al., 2023, https://arxiv.org/abs/2302.13971

Glossary: B batch, T time, V vocabulary, C model width (dim), L layers, H heads, D head dim,
F SwiGLU hidden width, N parameters, D_tok training tokens, MFU model-FLOPs utilisation.

Re-computed here:
1. Table 2 -> exact parameter counts of the 7B/13B/33B/65B models, built on the `meta` device.
2. Table 15 (A100-80GB GPU-hours) -> the model-FLOPs utilisation they imply under C = 6·N·D_tok,
   and §2.4's 65B throughput (380 tokens/s/GPU on 2048 GPUs) -> days and GPU-hours.
3. Tokens per parameter (Table 2) against Chinchilla's ~20, and the fp16 KV cache of LLaMA-7B.
4. §2.2's architecture at toy scale: a LLaMA block stack (pre-RMSNorm, SwiGLU, RoPE) against a
   GPT block stack (pre-LayerNorm, GELU, learned positions) with the same parameter count, trained
   identically on text from a Markov source whose entropy rate is the loss floor.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache

import torch

from repro.data.markov import MarkovConfig, MarkovSource
from repro.lab.claims import Context, Measured, claim
from repro.lab.counting import (
    build_preset,
    count_parameters,
    kaplan_attention_flops,
    param_count,
    preset_config,
    training_flops,
)
from repro.lab.settings import check_head_split, setting
from repro.models.gpt import GPT, GPTConfig
from repro.models.llama import Llama, LlamaConfig
from repro.nn.kv_cache import caches_for
from repro.study.plots import save_line_plot
from repro.train import evaluate_lm, train_lm

# --- Table 2: parameter counts --------------------------------------------------------------


@cache
def n_params(preset: str) -> int:
    """Exact parameter count of a Table 2 model, built on `meta` (no memory); asserted equal to
    the analytic count of `repro.lab.counting`."""
    built = count_parameters(build_preset(preset))
    analytic = param_count(preset_config(preset))
    assert built == analytic, f"{preset}: built {built} != analytic {analytic}"
    return built


def closed_form_params(n_layers: int, dim: int, vocab: int = 32000, multiple_of: int = 256) -> int:
    """LLaMA written from §2.2 and Meta's code: SwiGLU width F = 2/3·4d rounded up to a multiple
    of 256; per layer q, k, v, o 4d² (no biases), the SwiGLU FFN 3·d·F and two RMSNorm gains 2d;
    untied input and output embeddings 2·V·d and the final RMSNorm d."""
    F = multiple_of * -(-int(2 * 4 * dim / 3) // multiple_of)
    return n_layers * (4 * dim**2 + 3 * dim * F + 2 * dim) + 2 * vocab * dim + dim


@claim("params-exact")
def params_exact(ctx: Context) -> Measured:
    """Largest |built − closed form| over the four Table 2 models."""
    diffs = {}
    for preset in ("llama-7b", "llama-13b", "llama-33b", "llama-65b"):
        cfg = preset_config(preset)
        diffs[preset] = n_params(preset) - closed_form_params(cfg.n_layers, cfg.d_model)
    return Measured(max(abs(d) for d in diffs.values()), {"built_minus_closed_form": diffs})


def _billions(preset: str) -> Measured:
    n = n_params(preset)
    # Table 2 prints one decimal; 65.29B appears as 65.2B, so the figures are truncated
    return Measured(n / 1e9, {"n_params": n, "rounded": round(n / 1e9, 1)})


@claim("params-7b")
def params_7b(ctx: Context) -> Measured:
    return _billions("llama-7b")


@claim("params-13b")
def params_13b(ctx: Context) -> Measured:
    return _billions("llama-13b")


@claim("params-33b")
def params_33b(ctx: Context) -> Measured:
    return _billions("llama-33b")


@claim("params-65b")
def params_65b(ctx: Context) -> Measured:
    return _billions("llama-65b")


# --- Table 15 and §2.4: GPU-hours, utilisation, wall-clock ------------------------------------

A100_BF16_PEAK = 312e12  # FLOP/s, dense bf16/fp16 tensor-core peak of one A100
TOKENS = {"llama-7b": 1.0e12, "llama-13b": 1.0e12, "llama-33b": 1.4e12, "llama-65b": 1.4e12}
GPU_HOURS = {  # Table 15, A100-80GB
    "llama-7b": 82_432,
    "llama-13b": 135_168,
    "llama-33b": 530_432,
    "llama-65b": 1_022_362,
}
SEQ_LEN = 2048  # training context (§2.2)


def _mfu(preset: str) -> Measured:
    n, tokens = n_params(preset), TOKENS[preset]
    # model FLOPs C = 6·N·D_tok (Kaplan Table 1), available FLOPs = GPU-hours · 3600 · peak
    model_flops = training_flops(n, tokens)
    available = GPU_HOURS[preset] * 3600 * A100_BF16_PEAK
    # the attention scores add 3 · 2·L·T·d_attn per token (forward + backward), which 6N omits
    cfg = preset_config(preset)
    attn = 3 * kaplan_attention_flops(cfg.n_layers, SEQ_LEN, cfg.d_model) * tokens
    return Measured(
        model_flops / available,
        {
            "model_flops": model_flops,
            "gpu_hours": GPU_HOURS[preset],
            "mfu_with_attention": (model_flops + attn) / available,
            "tokens_per_s_per_gpu": tokens / (GPU_HOURS[preset] * 3600),
        },
    )


@claim("mfu-7b")
def mfu_7b(ctx: Context) -> Measured:
    return _mfu("llama-7b")


@claim("mfu-13b")
def mfu_13b(ctx: Context) -> Measured:
    return _mfu("llama-13b")


@claim("mfu-33b")
def mfu_33b(ctx: Context) -> Measured:
    return _mfu("llama-33b")


@claim("mfu-65b")
def mfu_65b(ctx: Context) -> Measured:
    return _mfu("llama-65b")


THROUGHPUT_65B = 380  # tokens/s/GPU (§2.4)
N_GPUS = 2048


@claim("days-65b")
def days_65b(ctx: Context) -> Measured:
    # wall-clock = D_tok / (tokens/s/GPU · GPUs)
    seconds = TOKENS["llama-65b"] / (THROUGHPUT_65B * N_GPUS)
    flops_per_s = training_flops(n_params("llama-65b"), THROUGHPUT_65B)  # 6N per token
    return Measured(seconds / 86400, {"mfu_at_380_tokens_per_s": flops_per_s / A100_BF16_PEAK})


@claim("gpu-hours-65b")
def gpu_hours_65b(ctx: Context) -> Measured:
    # GPU-hours = D_tok / (tokens/s/GPU) / 3600, independent of the number of GPUs
    return Measured(TOKENS["llama-65b"] / THROUGHPUT_65B / 3600)


CHINCHILLA_TOKENS_PER_PARAM = 20  # Hoffmann et al.: 10B parameters on 200B tokens (§1)


@claim("tokens-per-param-7b")
def tokens_per_param_7b(ctx: Context) -> Measured:
    ratio = TOKENS["llama-7b"] / n_params("llama-7b")
    return Measured(
        ratio,
        {
            "times_chinchilla": ratio / CHINCHILLA_TOKENS_PER_PARAM,
            "tokens_per_param_65b": TOKENS["llama-65b"] / n_params("llama-65b"),
        },
    )


@claim("kv-cache-7b")
def kv_cache_7b(ctx: Context) -> Measured:
    # one token of fp16 cache in every layer: k and v, each (B=1, Hkv=32, T=1, D=128)
    cfg = preset_config("llama-7b")
    caches = caches_for(cfg, batch=1, max_seq_len=1, dtype=torch.float16)
    allocated = sum(c.nbytes for c in caches)
    formula = 2 * cfg.n_layers * cfg.n_kv_heads * cfg.head_dim * 2  # 2 (k, v) · L · Hkv · D · 2 B
    return Measured(
        allocated,
        {
            "formula": formula,
            "kib": allocated / 1024,
            "gib_at_2048_tokens": allocated * 2048 / 2**30,
        },
    )


# --- §2.2 at toy scale: LLaMA block vs GPT block ----------------------------------------------


@dataclass(frozen=True)
class Config:
    vocab_size: int = setting(16, "vocabulary size; Markov source alphabet", min=2)
    order: int = setting(2, "tokens of context that determine the next one", min=1)
    seq_len: int = setting(32, "tokens per sequence", min=2)
    n_layers: int = setting(2, "transformer layers", min=1)
    d_model: int = setting(32, "model width", min=1)
    n_heads: int = setting(4, "attention heads", min=1)
    steps: int = setting(1000, "training steps", min=1)
    batch: int = setting(32, "sequences per step", min=1)
    lr: float = setting(1e-2, "learning rate", min=0, min_exclusive=True)
    eval_sequences: int = setting(512, "held-out sequences", min=1)

    def __post_init__(self) -> None:
        check_head_split(self.d_model, self.n_heads, rotary=True)


PRESETS = {"quick": Config(steps=200), "full": Config()}


def _gpt_config(cfg: Config) -> GPTConfig:
    return GPTConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        vocab_size=cfg.vocab_size,
        max_seq_len=cfg.seq_len,
        backend="ref",  # tiny sequences: the plain formula is the fastest path on CPU
    )


def _llama_config(cfg: Config, d_ff: int | None = None) -> LlamaConfig:
    return LlamaConfig(
        n_layers=cfg.n_layers,
        d_model=cfg.d_model,
        n_heads=cfg.n_heads,
        vocab_size=cfg.vocab_size,
        max_seq_len=cfg.seq_len,
        d_ff=d_ff,
        backend="ref",
    )


def matched_llama_config(cfg: Config) -> LlamaConfig:
    """The LLaMA stack whose SwiGLU width F makes its parameter count closest to the GPT stack's.

    LLaMA's 2/3·4C rule already equalises the FFN weights (3·C·F ≈ 2·C·4C); F is nudged to also
    absorb the GPT stack's position table, biases and LayerNorm shifts.
    """
    target = param_count(_gpt_config(cfg))
    best = min(
        range(1, 4 * cfg.d_model),
        key=lambda f: abs(param_count(_llama_config(cfg, f)) - target),
    )
    return _llama_config(cfg, best)


EARLY_STEPS = 200  # the quick preset's whole run; the first fifth of the full one


def experiment(cfg: Config, ctx: Context) -> dict:
    source = MarkovSource(MarkovConfig(vocab_size=cfg.vocab_size, order=cfg.order))
    floor = source.entropy_rate()  # nats/token: no model can do better on this source
    g = torch.Generator().manual_seed(ctx.seed)
    # the same token stream for both stacks: batch s of step s, then a held-out evaluation set
    data = source.sample(cfg.steps * cfg.batch, cfg.seq_len + 1, generator=g)
    data = data.view(cfg.steps, cfg.batch, cfg.seq_len + 1).to(ctx.device)  # (steps, B, T+1)
    test = source.sample(cfg.eval_sequences, cfg.seq_len + 1, generator=g).to(ctx.device)

    factories = {
        "gpt": lambda: GPT(_gpt_config(cfg)),
        "llama": lambda: Llama(matched_llama_config(cfg)),
    }
    results: dict = {"entropy_floor": floor, "unigram_entropy": source.unigram_entropy()}
    curves = {}
    for name, factory in factories.items():
        torch.manual_seed(ctx.seed)  # same initialisation stream for both stacks
        model = factory().to(ctx.device)

        # every batch is fresh text, so the training loss tracks the held-out loss
        losses = train_lm(model, data, cfg.steps, cfg.lr, ctx.progress, f"llama: {name}")
        test_loss = evaluate_lm(model, test)
        results[f"{name}_params"] = count_parameters(model)
        results[f"{name}_test_loss"] = test_loss
        results[f"{name}_mean_train_loss"] = sum(losses) / len(losses)
        early = losses[:EARLY_STEPS]
        results[f"{name}_early_train_loss"] = sum(early) / len(early)
        curves[name] = losses

    if ctx.out_dir is not None:
        steps = list(range(1, cfg.steps + 1))
        save_line_plot(
            ctx.out_dir / "llama_vs_gpt_block.svg",
            {
                "LLaMA block (RMSNorm, SwiGLU, RoPE)": (steps, curves["llama"]),
                "GPT block (LayerNorm, GELU, learned pos.)": (steps, curves["gpt"]),
                "entropy floor": (steps, [floor] * cfg.steps),
            },
            xlabel="training step",
            ylabel="loss (nats/token)",
            title=f"Markov source V={cfg.vocab_size}, order {cfg.order}",
        )
    return results


@claim("block-final-loss")
def block_final_loss(ctx: Context) -> Measured:
    m = ctx.experiment()
    floor = m["entropy_floor"]
    return Measured(
        m["llama_test_loss"] - m["gpt_test_loss"],
        {
            "llama_test_loss": m["llama_test_loss"],
            "gpt_test_loss": m["gpt_test_loss"],
            "entropy_floor": floor,
            "llama_excess": m["llama_test_loss"] - floor,
            "gpt_excess": m["gpt_test_loss"] - floor,
            "llama_params": m["llama_params"],
            "gpt_params": m["gpt_params"],
        },
    )


@claim("block-learning-speed")
def block_learning_speed(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(
        m["llama_mean_train_loss"] - m["gpt_mean_train_loss"],
        {"llama": m["llama_mean_train_loss"], "gpt": m["gpt_mean_train_loss"]},
    )


@claim("block-early-learning")
def block_early_learning(ctx: Context) -> Measured:
    """Mean training loss over the first 200 steps, LLaMA − GPT (fresh batches: held-out)."""
    m = ctx.experiment()
    return Measured(
        m["llama_early_train_loss"] - m["gpt_early_train_loss"],
        {
            "llama": m["llama_early_train_loss"],
            "gpt": m["gpt_early_train_loss"],
            "steps": EARLY_STEPS,
            "entropy_floor": m["entropy_floor"],
        },
    )
