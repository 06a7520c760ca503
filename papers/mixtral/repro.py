"""Mixtral of Experts (Jiang et al. 2024) with the Switch Transformer load-balancing loss
(Fedus, Zoph, Shazeer, JMLR 2022) — reproduction.

https://arxiv.org/abs/2401.04088 · https://arxiv.org/abs/2101.03961

Glossary: B batch, T time, C model width, L layers, H heads, Hkv kv heads, D head dim, F expert
hidden width, N experts, K experts per token, M = B·T tokens, f_i fraction of tokens routed to
expert i, P_i mean router probability of expert i, α balance-loss coefficient.

A Mixtral layer replaces the FFN by N = 8 SwiGLU experts and a router W_g (§2.1):

    y = Σ_i Softmax(Top2(x·W_g))_i · SwiGLU_i(x),

and Switch's auxiliary loss α·N·Σ_i f_i·P_i (Eq. 4) pushes the routing towards uniform.

What is checked here, claim by claim (see note.yaml):
1. total and active parameters of Mixtral 8x7B (derived): the Table 1 model built on the meta
   device, held equal to the analytic count;
2. the balance loss at uniform routing (α for top-1, α·K for the top-k form) and at collapse
   (α·N) (derived: the library's loss functions on constructed routings);
3. the KV cache per token (derived: allocated cache buffers on meta);
4. sparse dispatch = the dense all-experts reference masked by the gates, fp64 (measured), with
   the control that dropping the top-k renormalisation differs;
5. load balancing (measured): a tiny Mixtral on Markov text, its routers biased toward expert 0,
   trained with and without the auxiliary loss.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import cache

import torch
from torch import Tensor

from repro.data.markov import MarkovConfig, MarkovSource
from repro.lab.claims import Context, Measured, claim
from repro.lab.counting import build_on_meta
from repro.lab.settings import check_head_split, setting
from repro.lab.threads import torch_threads
from repro.models.mixtral import (
    MIXTRAL_8X7B,
    Mixtral,
    MixtralConfig,
    built_param_count,
    kv_cache_bytes_per_token,
    mixtral_param_count,
)
from repro.nn.kv_cache import caches_for
from repro.nn.moe import (
    MoEFeedForward,
    Routing,
    TopKRouter,
    expert_load,
    moe_ref,
    switch_aux_loss,
    topk_aux_loss,
)
from repro.study.plots import save_line_plot
from repro.train import evaluate_lm, lm_loss, train

# --- 1. parameters: total vs active ----------------------------------------------------------


@cache
def counts() -> dict[str, int]:
    """Mixtral 8x7B built on meta, counted four ways; each asserted equal to the analytic count."""
    model = build_on_meta(lambda: Mixtral(MIXTRAL_8X7B))
    out = {}
    for active in (False, True):
        for embeddings in (True, False):
            built = built_param_count(model, active, embeddings)
            analytic = mixtral_param_count(MIXTRAL_8X7B, active, embeddings)
            assert built == analytic, f"{active=} {embeddings=}: built {built} != {analytic}"
            out[f"{'active' if active else 'total'}{'' if embeddings else '_nonembedding'}"] = built
    return out


@claim("params-total")
def params_total(ctx: Context) -> Measured:
    c = counts()
    # the "8 × 7B" reading: eight whole dense models of the same shape (one expert each)
    dense = mixtral_param_count(dataclasses.replace(MIXTRAL_8X7B, n_experts=1, top_k=1))
    expert_params = c["total"] - c["active"]  # (N − K) experts per layer
    return Measured(
        c["total"] / 1e9,
        {
            **c,
            "dense_same_shape": dense,
            "naive_8_times_dense": 8 * dense,
            "unused_experts_per_token": expert_params,
        },
    )


@claim("params-active")
def params_active(ctx: Context) -> Measured:
    c = counts()
    return Measured(
        c["active"] / 1e9,
        {
            **c,
            "convention": "2 of 8 experts per layer; attention, router, norms, input embedding "
            "and output head included",
            "active_over_total": c["active"] / c["total"],
        },
    )


# --- 2. the balance loss at uniform routing and at collapse -----------------------------------

N_EXPERTS, TOP_K, TOKENS = 8, 2, 64


def routing_of(logits: Tensor, top_k: int) -> Routing:
    """The library router applied to given logits (its W_g set to the identity)."""
    router = TopKRouter(logits.shape[-1], logits.shape[-1], top_k).double()
    with torch.no_grad():
        router.gate.weight.copy_(torch.eye(logits.shape[-1], dtype=torch.float64))
    return router(logits)


def uniform_logits() -> Tensor:
    """Token t prefers expert t mod N, then t+1 mod N: every expert is first and second choice
    equally often, and the mean probability of every expert is 1/N. (M, N)."""
    t = torch.arange(TOKENS)
    logits = torch.zeros(TOKENS, N_EXPERTS, dtype=torch.float64)
    logits[t, t % N_EXPERTS] = 3.0
    logits[t, (t + 1) % N_EXPERTS] = 2.0
    return logits


def collapsed_logits() -> Tensor:
    """Every token sends (almost) all its probability to expert 0, second choice expert 1."""
    logits = torch.zeros(TOKENS, N_EXPERTS, dtype=torch.float64)
    logits[:, 0], logits[:, 1] = 40.0, 1.0
    return logits


ALPHA = 0.01  # Switch's α (§2.2)


@claim("aux-uniform-top1")
def aux_uniform_top1(ctx: Context) -> Measured:
    """Switch loss / α at uniform top-1 routing (should be 1: the loss equals α)."""
    r = routing_of(uniform_logits(), 1)
    value = switch_aux_loss(r, ALPHA).item() / ALPHA
    return Measured(value, {"alpha": ALPHA, "N": N_EXPERTS, "loss": value * ALPHA})


@claim("aux-uniform-topk")
def aux_uniform_topk(ctx: Context) -> Measured:
    """Top-k form / α at uniform top-2 routing (K = 2, not 1)."""
    r = routing_of(uniform_logits(), TOP_K)
    value = topk_aux_loss(r, ALPHA).item() / ALPHA
    return Measured(value, {"K": TOP_K, "switch_form_top1_choice": switch_aux_loss(r).item()})


@claim("aux-collapse")
def aux_collapse(ctx: Context) -> Measured:
    """Switch loss / α when every token goes to expert 0 with probability → 1 (N = 8)."""
    r = routing_of(collapsed_logits(), TOP_K)
    value = switch_aux_loss(r, ALPHA).item() / ALPHA
    return Measured(
        value,
        {"N": N_EXPERTS, "topk_form_over_alpha": topk_aux_loss(r, ALPHA).item() / ALPHA},
    )


# --- 3. KV cache per token ----------------------------------------------------------------


@claim("kv-cache-per-token")
def kv_cache_per_token(ctx: Context) -> Measured:
    """Bytes of fp16 cache buffers for one token in all 32 layers (allocated on meta)."""
    caches = caches_for(MIXTRAL_8X7B, batch=1, max_seq_len=1, dtype=torch.float16, device="meta")
    allocated = sum(c.nbytes for c in caches)
    formula = kv_cache_bytes_per_token(MIXTRAL_8X7B)
    assert allocated == formula, f"allocated {allocated} != formula {formula}"
    return Measured(
        allocated,
        {
            "elements": allocated // 2,
            "gib_at_32k_tokens": allocated * 32768 / 2**30,
            "mha_equivalent_bytes": allocated * MIXTRAL_8X7B.n_heads // MIXTRAL_8X7B.n_kv_heads,
        },
    )


# --- 4. sparse dispatch = dense reference ----------------------------------------------------


def dispatch_case(seed: int) -> tuple[MoEFeedForward, Tensor]:
    """N = 8, K = 2 in fp64 with random-scale router weights, so loads are unequal."""
    torch.manual_seed(seed)
    moe = MoEFeedForward(24, 40, N_EXPERTS, TOP_K).double()
    with torch.no_grad():
        moe.router.gate.weight.mul_(
            torch.linspace(0.5, 3.0, N_EXPERTS, dtype=torch.float64)[:, None]
        )
    x = torch.randn(3, 29, 24, dtype=torch.float64)  # (B, T, C)
    return moe, x


@claim("dispatch-equals-dense")
def dispatch_equals_dense(ctx: Context) -> Measured:
    moe, x = dispatch_case(ctx.seed)
    with torch.no_grad():
        sparse, dense = moe(x), moe_ref(x, moe)
        load = expert_load(moe.last_routing)
    return Measured(
        (sparse - dense).abs().max().item(),
        {
            "max_abs_output": dense.abs().max().item(),
            "expert_loads": [round(v, 4) for v in load.tolist()],
            "N": N_EXPERTS,
            "K": TOP_K,
        },
    )


@claim("no-renorm-differs")
def no_renorm_differs(ctx: Context) -> Measured:
    """Control: gates = softmax over all N logits at the top-k (no renormalisation); the max
    |difference| relative to the largest output."""
    moe, x = dispatch_case(ctx.seed)
    with torch.no_grad():
        sparse, wrong = moe(x), moe_ref(x, moe, normalize=False)
    scale = sparse.abs().max().item()
    return Measured((sparse - wrong).abs().max().item() / scale, {"max_abs_output": scale})


# --- 5. load balancing from a collapsed start -----------------------------------------------


@dataclass(frozen=True)
class Config:
    vocab_size: int = setting(16, "Markov source vocabulary (V)", min=2)
    order: int = setting(1, "Markov order", min=1)
    seq_len: int = setting(32, "tokens per sequence (T)", min=2)
    batch: int = setting(16, "sequences per step (B)", min=1)
    n_layers: int = setting(2, "MoE blocks (L)", min=1)
    d_model: int = setting(32, "model width (C)", min=2)
    n_heads: int = setting(4, "attention heads (H)", min=1)
    n_kv_heads: int = setting(2, "key/value heads (Hkv)", min=1)
    d_ff: int = setting(32, "expert SwiGLU width (F)", min=1)
    n_experts: int = setting(8, "experts per layer (N)", min=2)
    top_k: int = setting(2, "experts per token (K)", min=1)
    steps: int = setting(150, "training steps", min=10)
    lr: float = setting(3e-3, "learning rate", min=0, min_exclusive=True)
    router_bias: float = setting(
        2.0, "initial router bias of expert 0 (the collapsed start)", min=0
    )
    alpha: float = setting(0.05, "auxiliary loss coefficient α (top-k form)", min=0)
    unbiased_control: bool = setting(
        False, "also train from an unbiased router without the loss (does collapse arise?)"
    )
    eval_sequences: int = setting(128, "held-out sequences", min=1)

    def __post_init__(self) -> None:
        check_head_split(self.d_model, self.n_heads, rotary=True)
        if self.n_heads % self.n_kv_heads or self.top_k > self.n_experts:
            raise ValueError("n_heads must be a multiple of n_kv_heads and top_k <= n_experts")


PRESETS = {"quick": Config(), "full": Config(steps=400, unbiased_control=True)}


def _model(cfg: Config, bias: float) -> Mixtral:
    model = Mixtral(
        MixtralConfig(
            n_layers=cfg.n_layers,
            d_model=cfg.d_model,
            n_heads=cfg.n_heads,
            n_kv_heads=cfg.n_kv_heads,
            d_ff=cfg.d_ff,
            n_experts=cfg.n_experts,
            top_k=cfg.top_k,
            vocab_size=cfg.vocab_size,
            max_seq_len=cfg.seq_len,
            router_bias=True,
            backend="ref",
        )
    )
    with torch.no_grad():
        for layer in model.layers:
            layer.moe.router.gate.bias.zero_()
            layer.moe.router.gate.bias[0] = bias  # every token's first choice is expert 0
    return model


def max_load(model: Mixtral) -> float:
    """Largest expert load over the experts of every layer, from the last forward."""
    return max(expert_load(r).max().item() for r in model.routings())


def train_moe(cfg: Config, data: Tensor, test: Tensor, alpha: float, bias: float, ctx: Context):
    torch.manual_seed(ctx.seed)  # the same initial weights for every run, on any device
    model = _model(cfg, bias).to(ctx.device)
    loads: list[float] = []

    def loss_fn(step: int) -> Tensor:
        x = data[step]  # (B, T + 1)
        loss = lm_loss(model(x[:, :-1]), x[:, 1:])
        routings = model.routings()
        loads.append(max(expert_load(r).max().item() for r in routings))
        if alpha:  # mean over layers of the top-k form α·N·Σ_{j,i} f_{j,i}·P_i
            loss = loss + sum(topk_aux_loss(r, alpha) for r in routings) / len(routings)
        return loss

    name = f"mixtral: α={alpha:g}, bias {bias:g}"
    train(model, loss_fn, cfg.steps, lr=cfg.lr, progress=ctx.progress, description=name)
    test_loss = evaluate_lm(model, test)  # also routes the held-out tokens
    return {"curve": loads, "final_max_load": max_load(model), "test_loss": test_loss}


def experiment(cfg: Config, ctx: Context) -> dict:
    with torch_threads(1):
        return _experiment(cfg, ctx)


def _experiment(cfg: Config, ctx: Context) -> dict:
    source = MarkovSource(MarkovConfig(vocab_size=cfg.vocab_size, order=cfg.order))
    g = torch.Generator().manual_seed(ctx.seed)
    data = source.sample(cfg.steps * cfg.batch, cfg.seq_len + 1, g)
    data = data.view(cfg.steps, cfg.batch, cfg.seq_len + 1).to(ctx.device)  # (steps, B, T + 1)
    test = source.sample(cfg.eval_sequences, cfg.seq_len + 1, g).to(ctx.device)  # (B_eval, T + 1)
    runs = {
        "with_aux": train_moe(cfg, data, test, cfg.alpha, cfg.router_bias, ctx),
        "without_aux": train_moe(cfg, data, test, 0.0, cfg.router_bias, ctx),
    }
    if cfg.unbiased_control:
        runs["unbiased_without_aux"] = train_moe(cfg, data, test, 0.0, 0.0, ctx)
    if ctx.out_dir is not None:
        xs = list(range(1, cfg.steps + 1))
        series = {f"{k.replace('_', ' ')}": (xs, r["curve"]) for k, r in runs.items()}
        series["uniform 1/N"] = (xs, [1 / cfg.n_experts] * cfg.steps)
        save_line_plot(
            ctx.out_dir / "expert_load.svg",
            series,
            "training step",
            "max expert load (share of routed slots)",
            f"Router biased to expert 0: load with vs without the aux loss (N={cfg.n_experts}, "
            f"K={cfg.top_k})",
        )
    return {
        "uniform_load": 1 / cfg.n_experts,
        "collapsed_load": 1 / cfg.top_k,
        "entropy_floor": source.entropy_rate(),
        **{
            k: {"final_max_load": r["final_max_load"], "test_loss": r["test_loss"]}
            for k, r in runs.items()
        },
        "start_max_load": runs["with_aux"]["curve"][0],
    }


@claim("aux-loss-balances")
def aux_loss_balances(ctx: Context) -> Measured:
    """Max expert load on held-out tokens after training with the auxiliary loss."""
    m = ctx.experiment()
    return Measured(m["with_aux"]["final_max_load"], m)


@claim("no-aux-stays-collapsed")
def no_aux_stays_collapsed(ctx: Context) -> Measured:
    """Control: the same run without the auxiliary loss."""
    m = ctx.experiment()
    return Measured(m["without_aux"]["final_max_load"], m)
