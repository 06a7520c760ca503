"""Mamba: Linear-Time Sequence Modeling with Selective State Spaces — reproduction.

Gu & Dao (COLM 2024), https://arxiv.org/abs/2312.00752

Glossary: B batch, L length, C d_model, E expansion, D = E·C inner channels, N state size,
K conv width, V vocabulary; in the task, L noise slots, M data tokens to copy.

What is checked here, claim by claim (see note.yaml):
1. derived — Theorem 1 in fp64 (the selective SSM with N = 1, A = −1, B = 1 and ZOH is a gated
   RNN); mamba-130m built on the meta device and counted, against the analytic count; the share
   of a block's parameters in the 3ED² projections; a layer's decoding state against a
   Transformer layer's KV cache at the paper's 2,048-token context.
2. measured, exactness — both parallel scans (Hillis–Steele and chunked cumsum) equal the loop
   (fp64, with and without an initial state); the trained model's token-by-token `step()`
   equals its full forward, and cached generation equals recomputation.
3. measured, the mechanism — selective copying (the S4 generator's layout) learnt by a 2-layer
   Mamba LM, against the same LM whose blocks have input-independent Δ, B, C (the LTI control,
   "Mamba arch + S4" of Table 1), same budget and data; both evaluated at the training length
   and at 4× it.
4. measured, benchmarks — the scan's forward time grows linearly in L, naive attention's
   quadratically (fitted exponents over L = 512 … 8192).
"""

from __future__ import annotations

import dataclasses
import weakref
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

from repro import train as train_module
from repro.bench import scan as scan_bench
from repro.data import tasks
from repro.data.tasks import PAD, SEP, selective_copy
from repro.lab.cache import cached_state
from repro.lab.claims import Context, Measured, claim
from repro.lab.counting import (
    build_on_meta,
    count_parameters,
    mamba_param_count,
    mamba_projection_params,
    rms_norm_params,
)
from repro.lab.settings import setting
from repro.lab.threads import torch_threads
from repro.models import mamba as mamba_module
from repro.models.gpt import GPTConfig
from repro.models.mamba import MambaConfig, MambaLM
from repro.nn import ssm
from repro.nn.kv_cache import caches_for
from repro.nn.ssm import selective_scan, selective_scan_chunked, selective_scan_ref
from repro.study.plots import save_heatmap, save_line_plot
from repro.train import train

CONTEXT = 2048  # the pretrained models' training context (§4.2.2)


@dataclass(frozen=True)
class Config:
    # --device: this paper runs on the CPU (see repro.lab.settings)
    CPU_ONLY = (
        "the selective-copy models and their evaluation sets are built on the CPU and scanned "
        "step by step, one thread being fastest at these widths"
    )
    # the selective-copying task (App. E.1 uses L = 4096, M = 16, 16 tokens, D = 64, 2 layers)
    noise_len: int = setting(16, "noise slots L (the sequence is L + 2M long)", min=1)
    n_data: int = setting(2, "data tokens M to copy", min=1)
    # 32 symbols, not 8: with 8 the LTI control partly solved the short quick sequence at one
    # seed in three (0.79); with 32 it stays at most 0.58 over five seeds while the selective
    # model keeps ≥ 0.97 (note.yaml, third pass)
    n_symbols: int = setting(32, "distinct data symbols (chance = 1/n_symbols)", min=2)
    extrapolate: int = setting(4, "test length factor: also evaluate at this × noise_len", min=1)
    # the model: a Mamba LM of n_layers blocks (selective, or the LTI control)
    d_model: int = setting(16, "C, model width", min=1)
    n_layers: int = setting(2, "Mamba blocks", min=1)
    d_state: int = setting(8, "N, SSM state size", min=1)
    # training (same for both models)
    steps: int = setting(300, "AdamW steps", min=1)
    batch: int = setting(32, "sequences per step (fresh every step)", min=1)
    lr: float = setting(2e-2, "peak learning rate (warm-up + cosine)", min=0, min_exclusive=True)
    eval_every: int = setting(50, "steps between accuracy checkpoints for the curve", min=1)
    n_eval: int = setting(512, "held-out sequences per evaluation", min=1)
    # exactness checks and the timing benchmark
    scan_len: int = setting(97, "length of the fp64 scan-equivalence check", min=1)
    time_lengths: tuple[int, ...] = setting(
        (512, 1024, 2048, 4096, 8192), "lengths L of the timing fit", min=1
    )


PRESETS = {
    "quick": Config(),
    "full": Config(noise_len=64, steps=1000, lr=1e-2, eval_every=50, n_eval=1024),
}


# --- 1. derived ------------------------------------------------------------------------------


@claim("gating-theorem")
def gating_theorem(ctx: Context) -> Measured:
    """§3.5.1 Theorem 1: N = 1, A = −1, B = 1, Δ_t = softplus(z_t), ZOH ⇒ h_t = (1−g_t)h + g_t x_t
    with g_t = σ(z_t). Run the library's loop in fp64 against the gated recurrence."""
    g = torch.Generator().manual_seed(ctx.seed)
    L, D = 256, 8
    x = torch.randn(4, L, D, generator=g, dtype=torch.float64)
    z = 3 * torch.randn(4, L, D, generator=g, dtype=torch.float64)  # Linear(x_t), wide range
    one = torch.ones(D, 1, dtype=torch.float64)
    y, _ = selective_scan_ref(x, F.softplus(z), -one, one, one, discretization="zoh")
    gate = torch.sigmoid(z)
    h, rnn = torch.zeros(4, D, dtype=torch.float64), []
    for t in range(L):
        h = (1 - gate[:, t]) * h + gate[:, t] * x[:, t]  # Eq. 5
        rnn.append(h)
    err = (y - torch.stack(rnn, 1)).abs().max().item()
    # with the simplified B̄ = ΔB that the code uses, B̄ = softplus(z) ≠ σ(z): not a gated RNN
    y_simple, _ = selective_scan_ref(x, F.softplus(z), -one, one, one)
    return Measured(
        err, {"max_abs_err_simplified_b": (y_simple - torch.stack(rnn, 1)).abs().max().item()}
    )


def _mixer_params(cfg: MambaConfig) -> int:
    model = build_on_meta(lambda: mamba_module.MambaBlock(cfg))
    return count_parameters(model)


@claim("mamba-130m-params")
def mamba_130m_params(ctx: Context) -> Measured:
    """mamba-130m (d_model 768, 24 layers, vocabulary 50277 padded to 50280, tied) on meta."""
    cfg = MambaConfig.from_name("mamba-130m")
    built = count_parameters(build_on_meta(lambda: MambaLM(cfg)))
    analytic = mamba_param_count(cfg)
    if built != analytic:
        raise AssertionError(f"built {built:,} parameters, the analytic count says {analytic:,}")
    return Measured(
        built / 1e6,
        {
            "built": built,
            "analytic": analytic,
            "padded_vocab": cfg.padded_vocab_size,
            "dt_rank": cfg.dt_rank,
            "non_embedding": mamba_param_count(cfg, embeddings=False),
        },
    )


@claim("projection-share")
def projection_share(ctx: Context) -> Measured:
    """Share of one mamba-130m block (norm + mixer) held by in_proj and out_proj, the 3ED²."""
    cfg = MambaConfig.from_name("mamba-130m")
    block = _mixer_params(cfg) + rms_norm_params(cfg.d_model)
    proj = mamba_projection_params(cfg)
    assert proj == 3 * cfg.expand * cfg.d_model**2, f"{proj} != 3ED²"
    return Measured(
        proj / block,
        {
            "block_params": block,
            "projection_params_3ED2": proj,
            "two_blocks_over_12D2": 2 * block / (12 * cfg.d_model**2),  # §3.4: 2 blocks ≈ 12D²
        },
    )


@claim("state-vs-kv-cache")
def state_vs_kv_cache(ctx: Context) -> Measured:
    """KV cache of one Transformer layer of width 768 at 2,048 tokens over one mamba-130m
    layer's decoding state, both allocated by the library (meta device, fp32, batch 1)."""
    cfg = MambaConfig.from_name("mamba-130m")
    block = build_on_meta(lambda: mamba_module.MambaBlock(cfg))
    with torch.device("meta"):
        state = block.init_state(1)
        kv = caches_for(GPTConfig(n_layers=1, d_model=768, n_heads=12), 1, CONTEXT)
    state_bytes = sum(t.numel() * t.element_size() for t in state)
    kv_bytes = sum(c.k.numel() * c.k.element_size() * 2 for c in kv)
    return Measured(
        kv_bytes / state_bytes,
        {
            "state_bytes_per_layer": state_bytes,  # (D·N + D·(K−1)) · 4
            "kv_bytes_per_layer": kv_bytes,  # 2 · L · C · 4
            "context": CONTEXT,
            "state_elements_formula": cfg.d_inner * (cfg.d_state + cfg.d_conv - 1),
            "kv_elements_formula": 2 * CONTEXT * cfg.d_model,
        },
    )


# --- 2. exactness ------------------------------------------------------------------------------


@claim("scan-equivalence")
def scan_equivalence(ctx: Context) -> Measured:
    """max |loop − parallel scan| in fp64 over outputs and final states, for both parallel scans
    (Hillis–Steele `selective_scan`, chunked cumsum `selective_scan_chunked` with chunks of 8 so
    that L spans several, the last one partial), selective and LTI B/C, without and with an
    initial state."""
    g = torch.Generator().manual_seed(ctx.seed)
    L, D, N = ctx.config.scan_len, 8, 4

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=torch.float64)

    u, z, delta, Dskip = r(2, L, D), r(2, L, D), F.softplus(r(2, L, D)), r(D)
    A = -torch.exp(r(D, N))  # (D, N), negative
    parallel = {  # looked up at call time, so a test can swap in a broken scan
        "parallel": selective_scan,
        "chunked": lambda *a: selective_scan_chunked(*a, chunk=8),
    }
    worst: dict[str, float] = {}
    for bc in ("selective", "lti"):
        Bt, Ct = (r(2, L, N), r(2, L, N)) if bc == "selective" else (r(D, N), r(D, N))
        for h0 in (None, r(2, D, N)):
            y_ref, h_ref = selective_scan_ref(u, delta, A, Bt, Ct, Dskip, z, h0)
            for name, scan in parallel.items():
                y, h = scan(u, delta, A, Bt, Ct, Dskip, z, h0)
                key = f"{name}, {bc} B/C, {'with an' if h0 is not None else 'no'} initial state"
                worst[key] = max((y - y_ref).abs().max().item(), (h - h_ref).abs().max().item())
    return Measured(max(worst.values()), {"max_abs_err": worst, "L": L, "D": D, "N": N})


# --- 3. the selective-copying experiment -------------------------------------------------------


def _vocab(cfg: Config) -> int:
    return tasks.FIRST_SYMBOL + cfg.n_symbols


def _model_config(cfg: Config, selective: bool) -> MambaConfig:
    return MambaConfig(
        d_model=cfg.d_model,
        n_layers=cfg.n_layers,
        d_state=cfg.d_state,
        vocab_size=_vocab(cfg),
        selective=selective,
    )


@torch.no_grad()
def copy_accuracy(model: MambaLM, x: torch.Tensor, y: torch.Tensor) -> float:
    """Share of the M data tokens predicted at the M marker positions (the last M)."""
    M = y.shape[1]
    return (model(x)[:, -M:].argmax(-1) == y).float().mean().item()


def _eval_sets(cfg: Config) -> dict[int, tuple[torch.Tensor, torch.Tensor]]:
    """Fixed held-out sets at the training length and at `extrapolate` × it."""
    g = torch.Generator().manual_seed(1234)
    V = _vocab(cfg)
    lengths = (cfg.noise_len, cfg.extrapolate * cfg.noise_len)
    return {L: selective_copy(cfg.n_eval, L, cfg.n_data, V, g) for L in lengths}


def _train_copy(cfg: Config, selective: bool, seed: int, ctx: Context) -> dict:
    """Train one LM on fresh selective-copy batches; the loss is on the last M outputs."""
    torch.manual_seed(seed)
    model = MambaLM(_model_config(cfg, selective))
    g = torch.Generator().manual_seed(seed + 1)  # the same batches for both models
    V, M = _vocab(cfg), cfg.n_data
    curve_x, curve_y = selective_copy(256, cfg.noise_len, M, V, torch.Generator().manual_seed(99))
    curve: list[tuple[int, float]] = []

    def loss(step: int) -> torch.Tensor:
        if step % cfg.eval_every == 0:
            curve.append((step, copy_accuracy(model, curve_x, curve_y)))
            model.train()
        x, y = selective_copy(cfg.batch, cfg.noise_len, M, V, g)  # (B, L + 2M), (B, M)
        logits = model(x)[:, -M:]  # (B, M, V): the answers at the marker positions
        return F.cross_entropy(logits.reshape(-1, V), y.reshape(-1))

    name = "selective" if selective else "LTI control"
    train(model, loss, cfg.steps, lr=cfg.lr, progress=ctx.progress, description=name)
    curve.append((cfg.steps, copy_accuracy(model, curve_x, curve_y)))
    return {
        "state": model.state_dict(),
        "curve_steps": [s for s, _ in curve],
        "curve_acc": [a for _, a in curve],
    }


def trained(cfg: Config, selective: bool, seed: int, ctx: Context) -> tuple[MambaLM, dict]:
    """The trained model (cached on config, seed and the source of everything it depends on)."""
    key = {**dataclasses.asdict(cfg), "selective": selective, "seed": seed}
    key.pop("time_lengths"), key.pop("scan_len"), key.pop("n_eval")
    code = [ssm, mamba_module, tasks, train_module, _train_copy, copy_accuracy, _model_config]
    out = cached_state(
        "mamba-selective-copy", key, lambda: _train_copy(cfg, selective, seed, ctx), code=code
    )
    model = MambaLM(_model_config(cfg, selective))
    model.load_state_dict(out["state"])
    return model.eval(), out


def experiment(cfg: Config, ctx: Context) -> dict:
    """Both models on the same data and budget; accuracies at L and at `extrapolate`·L."""
    metrics: dict = {"chance": 1 / cfg.n_symbols}
    with torch_threads(1):  # tiny matrices: one thread is faster and immune to a busy machine
        evals = _eval_sets(cfg)
        models = {}
        for name, selective in (("selective", True), ("lti", False)):
            model, out = trained(cfg, selective, ctx.seed, ctx)
            models[name] = model
            metrics[name] = {
                "acc": copy_accuracy(model, *evals[cfg.noise_len]),
                "acc_extrapolated": copy_accuracy(model, *evals[cfg.extrapolate * cfg.noise_len]),
                "curve_steps": out["curve_steps"],
                "curve_acc": out["curve_acc"],
                "params": count_parameters(model),
            }
        metrics["delta"] = delta_on_tokens(models["selective"], *evals[cfg.noise_len])
        metrics["step"] = step_vs_forward(models["selective"], evals[cfg.noise_len][0][:16])
    if ctx.out_dir is not None:
        save_plots(cfg, metrics, models["selective"], evals[cfg.noise_len][0][0], ctx.out_dir)
    return metrics


@torch.no_grad()
def delta_on_tokens(model: MambaLM, x: torch.Tensor, y: torch.Tensor) -> dict:
    """Mean Δ (first block, over channels) on data tokens vs noise tokens of the held-out set."""
    delta = model.deltas(x)[0].mean(-1)  # (B, L + 2M)
    body = x[:, : -y.shape[1]]
    d_body = delta[:, : -y.shape[1]]
    data, noise = d_body[body != PAD].mean().item(), d_body[body == PAD].mean().item()
    return {"data": data, "noise": noise, "markers": delta[x == SEP].mean().item()}


@torch.no_grad()
def step_vs_forward(model: MambaLM, x: torch.Tensor) -> dict:
    """Recurrent decoding against the full forward on the same tokens, and generation."""
    full = model(x)  # (B, L, V)
    states, steps = model.init_state(x.shape[0]), []
    for t in range(x.shape[1]):
        logits, states = model.step(x[:, t], states)
        steps.append(logits)
    rel = ((torch.stack(steps, 1) - full).abs().max() / full.abs().max()).item()
    prompt = x[:, : x.shape[1] // 2]
    same = torch.equal(model.generate(prompt, 24), model.generate(prompt, 24, use_cache=False))
    return {"max_rel_err": rel, "generation_identical": same, "tokens": x.shape[1]}


def save_plots(
    cfg: Config, metrics: dict, model: MambaLM, sequence: torch.Tensor, out_dir: Path
) -> None:
    """Accuracy against steps for both models, and the Δ heat map over one sequence."""
    save_line_plot(
        out_dir / "accuracy_vs_steps.svg",
        {
            "selective (S6)": (
                metrics["selective"]["curve_steps"],
                metrics["selective"]["curve_acc"],
            ),
            "LTI control": (metrics["lti"]["curve_steps"], metrics["lti"]["curve_acc"]),
            "chance": ([0, cfg.steps], [metrics["chance"]] * 2),
        },
        xlabel="training step",
        ylabel="selective-copy accuracy",
        title=f"Selective copying, L = {cfg.noise_len}, M = {cfg.n_data}",
    )
    save_delta_heatmap(model, sequence, out_dir / "delta_heatmap.svg")


def save_delta_heatmap(model: MambaLM, sequence: torch.Tensor, path: Path) -> None:
    """Δ of the first block, channels × positions, with the tokens on the x axis."""
    with torch.no_grad():
        delta = model.deltas(sequence[None])[0][0].T  # (D, L)
    labels = [
        "·" if t == PAD else ("▶" if t == SEP else str(t - tasks.FIRST_SYMBOL))
        for t in sequence.tolist()
    ]
    save_heatmap(
        path,
        delta.log10().tolist(),
        xlabel="token (· noise, digits data, ▶ marker)",
        ylabel="channel",
        title="log10 Δ in the first Mamba block over one selective-copy sequence "
        "(look for: bright columns at the data tokens, dark at the noise)",
        xticklabels=labels,
        colorbar="log10 Δ",
    )


@claim("selective-copy")
def selective_copy_accuracy(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(
        m["selective"]["acc"],
        {
            "chance": m["chance"],
            "lti_acc": m["lti"]["acc"],
            "delta_data_over_noise": m["delta"]["data"] / m["delta"]["noise"],
            "delta": m["delta"],
            "params": m["selective"]["params"],
        },
    )


@claim("selection-is-the-mechanism")
def selection_is_the_mechanism(ctx: Context) -> Measured:
    """The smaller of the selective-minus-LTI accuracy gaps at L and at `extrapolate`·L."""
    m = ctx.experiment()
    gaps = [m["selective"][k] - m["lti"][k] for k in ("acc", "acc_extrapolated")]
    return Measured(
        min(gaps),
        {
            "gap_at_L": gaps[0],
            "gap_extrapolated": gaps[1],
            "selective": {k: m["selective"][k] for k in ("acc", "acc_extrapolated")},
            "lti": {k: m["lti"][k] for k in ("acc", "acc_extrapolated")},
            "lti_params": m["lti"]["params"],
        },
    )


@claim("length-extrapolation")
def length_extrapolation(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(
        m["selective"]["acc_extrapolated"],
        {"factor": ctx.config.extrapolate, "lti_acc_extrapolated": m["lti"]["acc_extrapolated"]},
    )


@claim("step-equals-forward")
def step_equals_forward(ctx: Context) -> Measured:
    s = ctx.experiment()["step"]
    return Measured(s["max_rel_err"], {"tokens": s["tokens"]})


@claim("cached-generation-identical")
def cached_generation_identical(ctx: Context) -> Measured:
    return Measured(ctx.experiment()["step"]["generation_identical"])


# --- 4. benchmarks -----------------------------------------------------------------------------


# id(ctx) -> (the context, its benchmark): one run serves both timing claims. The weak reference
# tells a context apart from a later one that Python gave the same id after the first was freed.
_TIMINGS: dict[int, tuple[weakref.ref, dict]] = {}


def _timing(ctx: Context) -> dict:
    ref, out = _TIMINGS.get(id(ctx), (None, None))
    if ref is None or ref() is not ctx:
        out = scan_bench.bench_scan(
            tuple(ctx.config.time_lengths), impls=("scan_loop", "scan_parallel", "naive")
        )
        _TIMINGS[id(ctx)] = (weakref.ref(ctx), out)
        if ctx.out_dir is not None:
            save_line_plot(
                ctx.out_dir / "time_vs_length.svg",
                {
                    impl: (
                        [r["L"] for r in out["rows"] if r["impl"] == impl],
                        [r["ms"] for r in out["rows"] if r["impl"] == impl],
                    )
                    for impl in ("scan_loop", "scan_parallel", "naive")
                },
                xlabel="sequence length L",
                ylabel="forward time (ms)",
                title="Selective scan vs naive attention, one thread",
                logx=True,
                logy=True,
            )
    return out


@claim("scan-linear-time", benchmark=True)
def scan_linear_time(ctx: Context) -> Measured:
    out = _timing(ctx)
    return Measured(
        out["exponents"]["scan_loop"],  # the CPU path; the parallel scan's is in the details
        {"exponents": out["exponents"], "rows": out["rows"], "flop_exponent": 1.0},
    )


@claim("attention-quadratic-time", benchmark=True)
def attention_quadratic_time(ctx: Context) -> Measured:
    out = _timing(ctx)
    L = max(ctx.config.time_lengths)
    ratio = scan_bench.attention_flops(L) / scan_bench.scan_flops(L)
    return Measured(
        out["exponents"]["naive"],
        {
            "exponents": out["exponents"],
            "flop_exponent": 2.0,
            f"attention_over_scan_flops_at_{L}": ratio,
        },
    )
