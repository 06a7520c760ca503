"""LoRA: Low-Rank Adaptation of Large Language Models — reproduction.

Hu, Shen, Wallis, Allen-Zhu, Li, Wang, Wang, Chen (ICLR 2022), https://arxiv.org/abs/2106.09685

Glossary: W0 (d, k) a frozen pre-trained weight, A (r, k) and B (d, r) its LoRA factors, r the
rank, α the scaling constant (the update is (α/r)·BA); L layers, C model width (d_model).
Toy task: X input dimension, K classes, N batch.

What is checked here, claim by claim (see note.yaml):
1. counting (derived) — every count comes from modules built on the `meta` device: one 4096×4096
   matrix at r = 8 (256×), and GPT-3 175B (`repro.models.gpt`) with r = 4 on W_q and W_v in all
   96 layers (≈10,000× fewer trainable parameters, a ≈35 MB checkpoint), plus Table 4's 4.7M
   budget (r_q = r_v = 1);
2. the tiny experiment (measured) — a teacher–student transfer task: pre-train a small MLP on
   task A, then adapt it to task B, whose teacher differs from A's by a rank-2 change of one
   weight matrix (the paper's hypothesis made literal: the needed update has low intrinsic rank).
   Adapt with full fine-tuning and with LoRA at r ∈ {1, 2, 4, 8}; report accuracy on B, the
   trainable fraction, and two exactness checks on the trained models: a LoRA model equals its
   base model at initialisation, and merged == unmerged forward passes.
"""

from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from repro.lab.claims import Context, Measured, claim
from repro.lab.plots import save_line_plot
from repro.models.gpt import GPT, GPTConfig
from repro.nn.lora import LoRALinear, apply_lora, lora_parameters, merge_lora
from repro.train import train

CLAIM_RANK = 4  # the rank whose accuracy the `lora-recovers-full-ft` claim judges


@dataclass(frozen=True)
class Config:
    # the teacher–student task (inputs x ~ N(0, I_X))
    d_in: int = 32  # X
    teacher_hidden: int = 16
    n_classes: int = 8  # K
    shift_rank: int = 2  # rank of the change from teacher A to teacher B
    shift_scale: float = 1.0
    # the student ("pre-trained model") and training
    hidden: int = 64
    batch: int = 256  # N
    pretrain_steps: int = 600
    lr_pretrain: float = 1e-2
    adapt_steps: int = 200
    lrs_full: tuple[float, ...] = (1e-2,)  # learning rates tried for full fine-tuning
    lrs_lora: tuple[float, ...] = (1e-2,)  # ... and for LoRA (the best on validation is kept)
    ranks: tuple[int, ...] = (1, 2, 4, 8)
    alpha: float = 8.0  # §4.1: α is a constant, not re-tuned when r changes
    n_eval: int = 4096  # validation and test examples of task B, each
    repeats: int = 1  # independent runs (teachers, student init, batches), averaged


PRESETS = {
    "quick": Config(),
    "full": Config(
        pretrain_steps=2000,
        adapt_steps=600,
        lrs_full=(3e-3, 1e-2, 3e-2),
        lrs_lora=(3e-3, 1e-2, 3e-2),
        repeats=3,
    ),
}


# --- 1. counting on the meta device ------------------------------------------------------------


def _n(params) -> int:
    return sum(p.numel() for p in params)


@claim("param-reduction-4096")
def param_reduction_4096(ctx: Context) -> Measured:
    """One d = k = 4096 matrix at r = 8: full fine-tuning trains d·k, LoRA r·(d + k)."""
    with torch.device("meta"):
        layer = LoRALinear(nn.Linear(4096, 4096, bias=False), r=8)
    full = layer.base.weight.numel()  # d·k = 16,777,216
    lora = _n(p for p in layer.parameters() if p.requires_grad)  # r·(d + k) = 65,536
    return Measured(full / lora, {"full": full, "lora": lora})


@functools.cache
def gpt3_175b_counts(r: int) -> tuple[int, int]:
    """(all parameters, trainable parameters) of GPT-3 175B with LoRA rank r on W_q and W_v."""
    with torch.device("meta"):
        model = GPT(GPTConfig.from_name("gpt3-175b"))  # Table 2.1: L 96, C 12288, 96 heads
    total = _n(model.parameters())  # what full fine-tuning trains (Table 4's FT row)
    apply_lora(model, {"wq", "wv"}, r=r)  # §4.2 / §7.1: adapt W_q and W_v only
    return total, _n(lora_parameters(model))  # 2 matrices × 96 layers × r·(C + C)


@claim("gpt3-param-reduction")
def gpt3_param_reduction(ctx: Context) -> Measured:
    total, lora = gpt3_175b_counts(4)
    return Measured(total / lora, {"full_finetune_params": total, "lora_params": lora, "r": 4})


@claim("gpt3-checkpoint-size")
def gpt3_checkpoint_size(ctx: Context) -> Measured:
    """A task checkpoint stores only A and B: 2 bytes each in FP16 (§4.2), in MB (10^6 bytes)."""
    total, lora = gpt3_175b_counts(4)
    mb = lora * 2 / 1e6
    return Measured(
        mb,
        {
            "lora_params": lora,
            "mib": lora * 2 / 2**20,
            "full_checkpoint_gb": total * 2 / 1e9,  # the 350GB of §4.2
            "size_ratio": total / lora,
        },
    )


@claim("gpt3-lora-budget-4.7m")
def gpt3_lora_budget(ctx: Context) -> Measured:
    """Table 4's smaller LoRA budget (r_q = r_v = 1) in millions; the larger one is r_q = r_v = 8."""
    _, lora_r1 = gpt3_175b_counts(1)
    _, lora_r8 = gpt3_175b_counts(8)
    return Measured(lora_r1 / 1e6, {"params_r1": lora_r1, "params_r8_millions": lora_r8 / 1e6})


# --- 2. the tiny experiment ------------------------------------------------------------------


class Student(nn.Module):
    """The "pre-trained model": a 2-hidden-layer MLP whose three nn.Linear layers LoRA adapts."""

    def __init__(self, cfg: Config) -> None:
        super().__init__()
        self.fc1 = nn.Linear(cfg.d_in, cfg.hidden)
        self.fc2 = nn.Linear(cfg.hidden, cfg.hidden)
        self.head = nn.Linear(cfg.hidden, cfg.n_classes)

    def forward(self, x: Tensor) -> Tensor:
        """x (N, X) -> logits (N, K)."""
        return self.head(F.gelu(self.fc2(F.gelu(self.fc1(x)))))


@dataclass(frozen=True)
class Teacher:
    """Labels y = argmax W2 tanh(W1 x): W1 (teacher_hidden, X), W2 (K, teacher_hidden)."""

    W1: Tensor
    W2: Tensor

    def labels(self, x: Tensor) -> Tensor:
        """x (N, X) -> y (N,)."""
        return (torch.tanh(x @ self.W1.T) @ self.W2.T).argmax(-1)


def make_teachers(cfg: Config, g: torch.Generator) -> tuple[Teacher, Teacher]:
    """Task A's teacher and task B's: W1_B = W1_A + s·U V, a rank-`shift_rank` change."""
    h, X, K, s = cfg.teacher_hidden, cfg.d_in, cfg.n_classes, cfg.shift_rank
    W1 = torch.randn(h, X, generator=g) / math.sqrt(X)  # (h, X): pre-activations ~ N(0, 1)
    W2 = 3.0 * torch.randn(K, h, generator=g) / math.sqrt(h)  # (K, h): confident teacher
    U = torch.randn(h, s, generator=g) / math.sqrt(s)  # (h, s)
    V = torch.randn(s, X, generator=g) / math.sqrt(X)  # (s, X)
    return Teacher(W1, W2), Teacher(W1 + cfg.shift_scale * U @ V, W2)


@torch.no_grad()
def accuracy(model: nn.Module, x: Tensor, y: Tensor) -> float:
    return (model(x).argmax(-1) == y).float().mean().item()


def fit(
    model: nn.Module, teacher: Teacher, steps: int, lr: float, seed: int, cfg: Config, ctx: Context,
    what: str,
) -> None:
    """Cross-entropy on fresh batches x ~ N(0, I) labelled by `teacher` (the same batches for
    every method that uses the same seed, so methods are compared on identical data)."""
    g = torch.Generator().manual_seed(seed)

    def loss(step: int) -> Tensor:
        x = torch.randn(cfg.batch, cfg.d_in, generator=g)  # (N, X)
        return F.cross_entropy(model(x), teacher.labels(x))

    train(model, loss, steps, lr=lr, progress=ctx.progress, description=what)


def adapt(
    base: Student, teacher_b: Teacher, rank: int | None, cfg: Config, seed: int, ctx: Context,
    x_val: Tensor, y_val: Tensor,
) -> tuple[nn.Module, float, float]:
    """Adapt a copy of `base` to task B by full fine-tuning (rank None) or LoRA at `rank`.

    Every learning rate of the method's grid is tried; the model best on validation is returned
    with its learning rate and, for LoRA, max |f_LoRA(x) - f_base(x)| before training.
    """
    best: tuple[nn.Module, float, float] | None = None
    best_acc = -1.0
    for lr in cfg.lrs_full if rank is None else cfg.lrs_lora:
        model = copy.deepcopy(base)
        zero_init_diff = 0.0
        if rank is not None:
            # §4.1/§4.2: W0 frozen, ΔW = BA with A Gaussian, B = 0, on every linear layer
            apply_lora(model, {"fc1", "fc2", "head"}, r=rank, alpha=cfg.alpha)
            with torch.no_grad():
                zero_init_diff = (model(x_val) - base(x_val)).abs().max().item()
        what = "full fine-tuning" if rank is None else f"LoRA r={rank}"
        fit(model, teacher_b, cfg.adapt_steps, lr, seed, cfg, ctx, f"{what}, lr {lr:g}")
        acc = accuracy(model, x_val, y_val)
        if acc > best_acc:
            best, best_acc = (model, lr, zero_init_diff), acc
    assert best is not None, "empty learning-rate grid"
    return best


def run_once(cfg: Config, ctx: Context, seed: int) -> dict:
    """One independent repeat: teachers, pre-training on A, adaptation to B by every method."""
    g = torch.Generator().manual_seed(seed)
    teacher_a, teacher_b = make_teachers(cfg, g)
    x_val, x_test = (torch.randn(cfg.n_eval, cfg.d_in, generator=g) for _ in range(2))  # (n, X)
    y_val, y_test = teacher_b.labels(x_val), teacher_b.labels(x_test)
    torch.manual_seed(seed)
    base = Student(cfg)
    # pre-training: maximise log p(y | x) on task A (the analogue of Eq. 1 before adaptation)
    fit(base, teacher_a, cfg.pretrain_steps, cfg.lr_pretrain, seed + 1, cfg, ctx, "pre-train A")
    n_total = _n(base.parameters())
    out = {
        "labels_changed": (teacher_a.labels(x_test) != y_test).float().mean().item(),
        "acc_a_pretrained": accuracy(base, x_test, teacher_a.labels(x_test)),
        "acc_b_base": accuracy(base, x_test, y_test),  # before adaptation: why adapt at all
    }
    full, out["lr_full"], _ = adapt(base, teacher_b, None, cfg, seed + 2, ctx, x_val, y_val)
    out["acc_b_full"] = accuracy(full, x_test, y_test)
    out["acc_b_lora"], out["lr_lora"], out["trainable_fraction_lora"] = [], [], []
    out["zero_init_max_abs_diff"], out["merge_max_abs_err"], out["logit_max_abs"] = 0.0, 0.0, 0.0
    for r in cfg.ranks:
        model, lr, zero_diff = adapt(base, teacher_b, r, cfg, seed + 2, ctx, x_val, y_val)
        out["acc_b_lora"].append(accuracy(model, x_test, y_test))
        out["lr_lora"].append(lr)
        out["trainable_fraction_lora"].append(_n(lora_parameters(model)) / n_total)
        # §4.2: merging W = W0 + (α/r)·BA must not change the function
        with torch.no_grad():
            unmerged = model(x_test)  # (n, K)
            merged = merge_lora(model)(x_test)  # (n, K)
        out["zero_init_max_abs_diff"] = max(out["zero_init_max_abs_diff"], zero_diff)
        out["merge_max_abs_err"] = max(
            out["merge_max_abs_err"], (merged - unmerged).abs().max().item()
        )
        out["logit_max_abs"] = max(out["logit_max_abs"], unmerged.abs().max().item())
    # share of full fine-tuning's gain over the base model that LoRA recovers
    gain_full = out["acc_b_full"] - out["acc_b_base"]
    out["gain_recovered_lora"] = [(a - out["acc_b_base"]) / gain_full for a in out["acc_b_lora"]]
    return out


def experiment(cfg: Config, ctx: Context) -> dict:
    """`repeats` independent runs; means over runs plus every run's numbers under `runs`."""
    runs = [run_once(cfg, ctx, ctx.seed + 1000 * i) for i in range(cfg.repeats)]

    def mean(key: str) -> float | list[float]:
        values = [run[key] for run in runs]
        if isinstance(values[0], list):
            return [sum(col) / len(col) for col in zip(*values, strict=True)]
        return sum(values) / len(values)

    metrics = {
        "ranks": list(cfg.ranks),
        **{
            k: mean(k)
            for k in (
                "labels_changed",
                "acc_a_pretrained",
                "acc_b_base",
                "acc_b_full",
                "acc_b_lora",
                "gain_recovered_lora",
                "trainable_fraction_lora",
            )
        },
        "zero_init_max_abs_diff": max(run["zero_init_max_abs_diff"] for run in runs),
        "merge_max_abs_err": max(run["merge_max_abs_err"] for run in runs),
        "logit_max_abs": max(run["logit_max_abs"] for run in runs),
        "runs": runs,
    }
    if ctx.out_dir is not None:
        ranks = list(cfg.ranks)
        save_line_plot(
            ctx.out_dir / "accuracy_vs_rank.svg",
            {
                "LoRA": (ranks, metrics["acc_b_lora"]),
                "full fine-tuning": (ranks, [metrics["acc_b_full"]] * len(ranks)),
                "base model (no adaptation)": (ranks, [metrics["acc_b_base"]] * len(ranks)),
            },
            xlabel="LoRA rank r",
            ylabel="test accuracy on task B",
            title=f"Adapting to a rank-{cfg.shift_rank} shift: LoRA vs full fine-tuning",
            logx=True,
        )
    return metrics


@claim("lora-recovers-full-ft")
def lora_recovers_full_ft(ctx: Context) -> Measured:
    """(acc_LoRA(r=4) − acc_base) / (acc_full − acc_base) on task B, mean over repeats."""
    m = ctx.experiment()
    if CLAIM_RANK not in m["ranks"]:
        raise ValueError(f"the claim judges r={CLAIM_RANK}; ranks {m['ranks']} leave it out")
    i = m["ranks"].index(CLAIM_RANK)
    return Measured(
        m["gain_recovered_lora"][i],
        {
            "ranks": m["ranks"],
            "acc_b_lora": m["acc_b_lora"],
            "acc_b_full": m["acc_b_full"],
            "acc_b_base": m["acc_b_base"],
            "acc_a_pretrained": m["acc_a_pretrained"],
            "gain_recovered_lora": m["gain_recovered_lora"],
            "acc_ratio_to_full": [a / m["acc_b_full"] for a in m["acc_b_lora"]],
            "trainable_fraction_lora": m["trainable_fraction_lora"],
            "per_run_gain_recovered": [run["gain_recovered_lora"][i] for run in m["runs"]],
        },
    )


@claim("zero-init-equivalence")
def zero_init_equivalence(ctx: Context) -> Measured:
    """max |f_LoRA(x) − f_base(x)| right after wrapping (B = 0), over every rank and run."""
    m = ctx.experiment()
    return Measured(m["zero_init_max_abs_diff"], {"logit_max_abs": m["logit_max_abs"]})


@claim("merge-equivalence")
def merge_equivalence(ctx: Context) -> Measured:
    """max |f_merged(x) − f_unmerged(x)| of the trained LoRA models, fp32, over every rank and run."""
    m = ctx.experiment()
    return Measured(m["merge_max_abs_err"], {"logit_max_abs": m["logit_max_abs"]})
