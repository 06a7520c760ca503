"""LIMA: Less Is More for Alignment — reproduction.

Zhou, Liu, Xu, Iyer, Sun, Mao, Ma, Efrat, Yu, Yu, Zhang, Ghosh, Lewis, Zettlemoyer, Levy
(NeurIPS 2023), https://arxiv.org/abs/2305.11206

Glossary: N examples, P prompt length, R response length, V vocabulary; "compliance" = the
greedy answer is digits closed by `<eot>` (the assistant format), "accuracy" = it is exactly right.

What is checked here, claim by claim (see note.yaml):
1. derived — arithmetic on the paper's own tables: Table 1's 1,000 examples and ≈750 tokens per
   example, Alpaca's 52×, Fig. 1's win + tie rates, §5's 16-fold quantity range;
2. measured — the Superficial Alignment Hypothesis at tiny scale, on the instruction world of
   `repro.data.instructions`: one GPT pretrained on raw-format task text (`repro.align.pretrain`,
   cached: InstructGPT's 800-step base pretrained for 800 more steps, because the hypothesis
   needs a base model that knows the tasks) is fine-tuned (`repro.align.sft`) on assistant-format
   demonstrations, and every variant starts from that same model. A fixed quarter of the
   world's prompts never enters any SFT set; every variant is judged on those:
   - format from few examples (1,000 and 100 demonstrations);
   - knowledge from pretraining: accuracy after SFT against the pretrained model's raw-format
     accuracy, with a random-initialised model fine-tuned on the same 1,000 examples as control;
   - diversity (all task families vs one), quality (clean vs 30% corrupted), quantity (1k → 16k);
   - held-out perplexity and compliance over SFT epochs (App. B).
   These are analogues of the paper's findings, not a replication of its human preferences.
"""

from __future__ import annotations

import copy
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from repro.align.policy import response_mask, token_logprobs
from repro.align.pretrain import PretrainConfig, fresh_model, pretrained_model, raw_accuracy
from repro.align.sft import SFTConfig, evaluate, masked_lm_loss, sft
from repro.data.instructions import FAMILIES, Instances, InstructionWorld, answers
from repro.lab.claims import Context, Measured, claim
from repro.lab.settings import setting
from repro.lab.threads import torch_threads
from repro.study.plots import save_line_plot

# --- 1. the paper's own numbers: Table 1, §4.1, Fig. 1, §5 ------------------------------------

# Table 1, training rows: source -> (examples, mean input length, mean output length) in tokens
TABLE_1_TRAIN = {
    "Stack Exchange (STEM)": (200, 117, 523),
    "Stack Exchange (Other)": (200, 119, 530),
    "wikiHow": (200, 12, 1811),
    "Pushshift r/WritingPrompts": (150, 34, 274),
    "Natural Instructions": (50, 236, 92),
    "Paper Authors (Group A)": (200, 40, 334),
}
COMMUNITY_SOURCES = (  # §2.1: community Q&A; the other 250 were written or edited by the authors
    "Stack Exchange (STEM)",
    "Stack Exchange (Other)",
    "wikiHow",
    "Pushshift r/WritingPrompts",
)
TABLE_1_TOKENS = 750_000  # Table 1 caption: "roughly 750,000 tokens, split over exactly 1,000"
ALPACA_EXAMPLES = 52_000  # §4.1: Alpaca 65B is LLaMA 65B fine-tuned on Alpaca's 52,000 examples
# Fig. 1 (human preference): baseline -> (LIMA wins, tie, LIMA loses), in % of 300 test prompts
FIG_1 = {
    "GPT-4 (April)": (18, 25, 57),
    "Claude (April)": (24, 22, 54),
    "BARD (April)": (33, 25, 42),
    "DaVinci003": (44, 21, 35),
    "Alpaca 65B": (53, 21, 26),
}
FIG_6_SIZES = (2_000, 4_000, 8_000, 16_000, 32_000)  # §5 quantity ablation, 7B, Stack Exchange


@claim("training-set-composition")
def training_set_composition(ctx: Context) -> Measured:
    """Σ examples over Table 1's six training sources; the community share in the details."""
    total = sum(n for n, _, _ in TABLE_1_TRAIN.values())
    community = sum(TABLE_1_TRAIN[s][0] for s in COMMUNITY_SOURCES)
    return Measured(
        total,
        {
            "per_source": {s: n for s, (n, _, _) in TABLE_1_TRAIN.items()},
            "community": community,
            "authored_or_edited": total - community,
        },
    )


@claim("tokens-per-example")
def tokens_per_example(ctx: Context) -> Measured:
    """Mean (input + output) length over the 1,000 examples, weighted by Table 1's counts."""
    n = sum(k for k, _, _ in TABLE_1_TRAIN.values())
    tokens = sum(k * (x + y) for k, x, y in TABLE_1_TRAIN.values())  # Σ examples × mean length
    return Measured(
        tokens / n,
        {"table_1_tokens": tokens, "caption_tokens_per_example": TABLE_1_TOKENS / n},
    )


@claim("alpaca-data-ratio")
def alpaca_data_ratio(ctx: Context) -> Measured:
    n = sum(k for k, _, _ in TABLE_1_TRAIN.values())
    return Measured(ALPACA_EXAMPLES / n, {"alpaca": ALPACA_EXAMPLES, "lima": n})


@claim("win-or-tie-rates")
def win_or_tie_rates(ctx: Context) -> Measured:
    """LIMA wins + ties per baseline, strongest baseline first, as 'a/b/c/d/e' in %."""
    for name, bars in FIG_1.items():
        assert sum(bars) == 100, f"{name}: Fig. 1 bars {bars} do not add to 100%"
    rates = {name: win + tie for name, (win, tie, _) in FIG_1.items()}
    return Measured("/".join(str(r) for r in rates.values()), {"win_plus_tie": rates})


@claim("quantity-ablation-range")
def quantity_ablation_range(ctx: Context) -> Measured:
    """§5's "up to 16-fold increase": the largest over the smallest Fig. 6 training set."""
    return Measured(max(FIG_6_SIZES) / min(FIG_6_SIZES), {"sizes": list(FIG_6_SIZES)})


# --- 2. the tiny experiment ------------------------------------------------------------------

LIMA_SIZE = 1000  # §2: the 1,000 examples
FEW_SIZE = 100  # "a small fraction of that"
# rows of 8–16 tokens: PyTorch's fused attention kernel is the fastest exact one here; the tiled
# FlashAttention pays its per-tile Python work without a memory to save
BACKEND = "sdpa"


@dataclass(frozen=True)
class Config:
    # --device: this paper runs on the CPU (see repro.lab.settings)
    CPU_ONLY = (
        "SFT of a 2-layer model on (32, 11) sequences, built and sampled on the CPU, one "
        "thread being fastest at this size"
    )
    continued_pretraining: int = setting(
        800,
        "steps pretraining InstructGPT's 800-step base further (the hypothesis needs a base "
        "that knows the tasks; 0 keeps InstructGPT's base)",
        min=0,
    )
    sizes: tuple[int, ...] = setting(
        (FEW_SIZE, LIMA_SIZE, 4000),
        "numbers of SFT examples for the pretrained model (must include 100 and 1,000)",
        min=1,
    )
    random_init_sizes: tuple[int, ...] = setting(
        (LIMA_SIZE,),
        "numbers of SFT examples for the random-init control (must include 1,000)",
        min=1,
    )
    epochs: int = setting(
        10, "SFT epochs of every variant (LIMA §3: chosen between 5 and 10)", min=1
    )
    curve_epochs: int = setting(
        10, "SFT epochs of the perplexity-vs-compliance curve (LIMA §3: 15 epochs)", min=1
    )
    lr: float = setting(5e-3, "SFT peak learning rate", min=0, min_exclusive=True)
    batch: int = setting(64, "SFT batch size", min=1)
    homogeneous_family: str = setting(
        "copy",
        "the single task family of the homogeneous set (the wikiHow analogue)",
        choices=FAMILIES,
    )
    corrupt: float = setting(
        0.3, "share of corrupted demonstrations in the low-quality set", min=0, max=1
    )
    held_out: float = setting(
        0.25,
        "share of each family's prompts kept out of every SFT set, to judge on",
        min=0,
        max=1,
        min_exclusive=True,
    )
    repeats: int = setting(1, "independent SFT seeds, averaged", min=1)

    def __post_init__(self) -> None:
        for needed, name in (
            (FEW_SIZE, "sizes"),
            (LIMA_SIZE, "sizes"),
            (LIMA_SIZE, "random_init_sizes"),
        ):
            if needed not in getattr(self, name):
                raise ValueError(f"{name} must include {needed}: the claims judge it")


PRESETS = {
    "quick": Config(),
    "full": Config(
        sizes=(30, FEW_SIZE, 300, LIMA_SIZE, 4000, 16000),
        # the random-init curve stops at 4,000: its 16,000 point alone cost a third of the preset
        random_init_sizes=(FEW_SIZE, 300, LIMA_SIZE, 4000),
        curve_epochs=15,
        repeats=3,
    ),
}


def base_config(cfg: Config) -> PretrainConfig:
    """LIMA's base: InstructGPT's (`PretrainConfig()`, cached once for both) pretrained further."""
    if not cfg.continued_pretraining:
        return PretrainConfig()
    return PretrainConfig(steps=cfg.continued_pretraining, backend=BACKEND, start=PretrainConfig())


def every_instance(world: InstructionWorld) -> Instances:
    """All 8 · 10ⁿ prompts of the world: every family with every digit tuple."""
    n = world.cfg.n_args
    digits = torch.tensor(list(itertools.product(range(10), repeat=n)))  # (10ⁿ, n)
    family = torch.arange(len(FAMILIES)).repeat_interleave(len(digits))  # (8·10ⁿ,)
    digits = digits.repeat(len(FAMILIES), 1)  # (8·10ⁿ, n)
    return Instances(family, digits, *answers(family, digits))


def split(world: InstructionWorld, share: float) -> tuple[Instances, Instances]:
    """(SFT pool, held-out prompts): a fixed `share` of every family's prompts never appears in
    any SFT set, so accuracy on them cannot come from memorising the demonstrations."""
    every = every_instance(world)
    g = torch.Generator().manual_seed(2305_11206)  # fixed: every variant and seed shares it
    held = torch.zeros(len(every), dtype=torch.bool)
    for f in range(len(FAMILIES)):
        rows = (every.family == f).nonzero().squeeze(1)
        k = round(share * len(rows))
        held[rows[torch.randperm(len(rows), generator=g)[:k]]] = True
    return every[~held], every[held]


def draw_demonstrations(
    world: InstructionWorld,
    pool: Instances,
    n: int,
    seed: int,
    families: tuple[str, ...] | None = None,
    corrupt: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor]:
    """n demonstrations of prompts drawn uniformly (with replacement) from `pool`, restricted to
    `families`; a share `corrupt` made low quality (wrong answer or broken format)."""
    g = torch.Generator().manual_seed(seed)
    allowed = torch.isin(pool.family, torch.tensor(world.family_ids(families)))
    rows = allowed.nonzero().squeeze(1)
    pick = rows[torch.randint(0, len(rows), (n,), generator=g)]
    return world.demonstrations(pool[pick], g, corrupt=corrupt)


def trivial_accuracy(inst: Instances) -> float:
    """The best accuracy on `inst` without reading the digits: per family, always give the
    family's most frequent answer in `inst`."""
    hits = 0
    for f in inst.family.unique():
        rows = inst.family == f
        _, counts = inst.answer[rows].unique(dim=0, return_counts=True)
        hits += int(counts.max())
    return hits / len(inst)


@torch.no_grad()
def sampled_accuracy(model: nn.Module, world: InstructionWorld, inst: Instances) -> float:
    """P(a temperature-1 sample is exactly the gold response, `<eot>` included), averaged over
    prompts: Π_t π(y_t | x, y_<t) over the gold tokens, computed exactly (no sampling noise)."""
    model.eval()
    gold = world.gold_responses(inst)  # (N, R)
    logp, _ = token_logprobs(model, world.prompts(inst), gold)  # (N, R)
    mask = response_mask(gold, world.vocab.eot)  # answer tokens and the <eot>
    return (logp * mask).sum(1).exp().mean().item()


def assess(model: nn.Module, world: InstructionWorld, inst: Instances) -> dict[str, float]:
    """Greedy compliance and accuracy (repro.align.sft.evaluate) plus the sampled accuracy."""
    return {
        **evaluate(model, world, inst),
        "sampled_accuracy": sampled_accuracy(model, world, inst),
    }


@torch.no_grad()
def heldout_perplexity(model: nn.Module, tokens: torch.Tensor, mask: torch.Tensor) -> float:
    """exp(mean NLL) of held-out demonstrations' response tokens (App. B's held-out perplexity)."""
    model.eval()
    return math.exp(masked_lm_loss(model, tokens, mask).item())


def fine_tune(
    base: nn.Module,
    world: InstructionWorld,
    pool: Instances,
    cfg: Config,
    seed: int,
    ctx: Context,
    n: int,
    families: tuple[str, ...] | None = None,
    corrupt: float = 0.0,
    epochs: int | None = None,
    on_epoch: Callable[[int, nn.Module], None] | None = None,
) -> nn.Module:
    """A fine-tuned copy of `base`: SFT (LIMA §3) on n demonstrations drawn from `pool`."""
    model = copy.deepcopy(base)
    scfg = SFTConfig(
        n_examples=n,
        families=families,
        corrupt=corrupt,
        epochs=cfg.epochs if epochs is None else epochs,
        batch=cfg.batch,
        lr=cfg.lr,
        seed=seed,
    )
    demos = draw_demonstrations(world, pool, n, seed, families, corrupt)
    sft(model, world, scfg, progress=ctx.progress, on_epoch=on_epoch, demos=demos)
    return model


def run_once(cfg: Config, ctx: Context, seed: int) -> dict:
    """Every SFT variant of one seed, each from the same pretrained (or random-init) model, all
    judged on prompts that no SFT set contains."""
    pcfg = base_config(cfg)
    world = InstructionWorld(pcfg.world)
    base = pretrained_model(pcfg, BACKEND)  # the shared, cached "LLaMA" of the toy
    scratch = fresh_model(pcfg, seed + 17, BACKEND)  # the same architecture, not pretrained
    pool, test = split(world, cfg.held_out)
    held_tokens, held_mask = world.demonstrations(test)  # App. B's held-out responses

    def tuned(base: nn.Module, n: int, **kw) -> nn.Module:
        return fine_tune(base, world, pool, cfg, seed, ctx, n, **kw)

    out: dict = {"raw_accuracy": raw_accuracy(base, world, test)}
    out["before_sft"] = assess(base, world, test)  # the pretrained model does not answer yet

    # App. B: held-out perplexity, compliance and accuracy after every epoch of a 1,000-example run
    curve: dict[str, list[float]] = {
        "perplexity": [],
        "compliance": [],
        "accuracy": [],
        "sampled_accuracy": [],
    }

    def record(epoch: int, model: nn.Module) -> None:
        curve["perplexity"].append(heldout_perplexity(model, held_tokens, held_mask))
        for k, v in assess(model, world, test).items():
            if k in curve:
                curve[k].append(v)

    same = cfg.curve_epochs == cfg.epochs  # then the sweep's 1,000-example run draws the curve
    out["pretrained"] = {}
    for n in cfg.sizes:
        on_epoch = record if same and n == LIMA_SIZE else None
        out["pretrained"][n] = assess(tuned(base, n, on_epoch=on_epoch), world, test)
    if not same:
        tuned(base, LIMA_SIZE, epochs=cfg.curve_epochs, on_epoch=record)
    out["epochs"] = curve
    out["random_init"] = {n: assess(tuned(scratch, n), world, test) for n in cfg.random_init_sizes}
    # §5 ablations at 1,000 examples, judged on every family
    homogeneous = tuned(base, LIMA_SIZE, families=(cfg.homogeneous_family,))
    out["homogeneous"] = assess(homogeneous, world, test)
    out["corrupted"] = assess(tuned(base, LIMA_SIZE, corrupt=cfg.corrupt), world, test)
    return out


def _mean(runs: list) -> object:
    """Element-wise mean of nested dicts / lists of floats."""
    first = runs[0]
    if isinstance(first, dict):
        return {k: _mean([r[k] for r in runs]) for k in first}
    if isinstance(first, list):
        return [_mean(list(col)) for col in zip(*runs, strict=True)]
    return sum(runs) / len(runs)


def experiment(cfg: Config, ctx: Context) -> dict:
    """`repeats` SFT seeds on one pretrained model: means, plus every seed's numbers."""
    with torch_threads(1):  # (32, 11) sequences through a 2-layer model: one thread is fastest
        runs = [run_once(cfg, ctx, ctx.seed + 1000 * i) for i in range(cfg.repeats)]
        world = InstructionWorld(base_config(cfg).world)
        _, test = split(world, cfg.held_out)
        metrics = {
            "held_out_prompts": len(test),
            "trivial_accuracy": trivial_accuracy(test),
            **_mean(runs),
            "runs": runs,
        }
    if ctx.out_dir is not None:
        save_plots(cfg, metrics, ctx.out_dir)
    return metrics


# --- plots -------------------------------------------------------------------------------------


def save_bars(path: Path, groups: dict[str, dict[str, float]], ylabel: str, title: str) -> Path:
    """Grouped bar chart (matplotlib, SVG): groups = {bar group: {series: value}}."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(groups)
    series = list(groups[names[0]])
    width = 0.8 / len(series)
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    for i, s in enumerate(series):
        xs = [j + (i - (len(series) - 1) / 2) * width for j in range(len(names))]
        ax.bar(xs, [groups[g][s] for g in names], width, label=s)
    ax.set_xticks(range(len(names)), names)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="svg")
    plt.close(fig)
    return path


def save_plots(cfg: Config, m: dict, out: Path) -> None:
    pre, rnd = m["pretrained"], m["random_init"]
    series = {
        "compliance, pretrained": (list(pre), [v["compliance"] for v in pre.values()]),
        "accuracy, pretrained": (list(pre), [v["accuracy"] for v in pre.values()]),
        "compliance, random init": (list(rnd), [v["compliance"] for v in rnd.values()]),
        "accuracy, random init": (list(rnd), [v["accuracy"] for v in rnd.values()]),
        "raw-format accuracy before SFT": (list(pre), [m["raw_accuracy"]] * len(pre)),
    }
    save_line_plot(
        out / "format_and_accuracy_vs_examples.svg",
        series,
        xlabel="SFT examples",
        ylabel="share of held-out prompts",
        title="SFT teaches the format; the answers come from pretraining",
        logx=True,
    )
    one = pre[LIMA_SIZE]
    save_bars(
        out / "diversity_and_quality.svg",
        {
            "1,000 diverse, clean": {k: one[k] for k in ("compliance", "accuracy")},
            f"1,000 '{cfg.homogeneous_family}' only": {
                k: m["homogeneous"][k] for k in ("compliance", "accuracy")
            },
            f"1,000, {cfg.corrupt:.0%} corrupted": {
                k: m["corrupted"][k] for k in ("compliance", "accuracy")
            },
        },
        ylabel="share of held-out prompts (all families)",
        title="Diversity and quality of 1,000 SFT examples",
    )
    epochs = list(range(1, len(m["epochs"]["perplexity"]) + 1))
    save_line_plot(
        out / "perplexity_over_epochs.svg",
        {"held-out perplexity": (epochs, m["epochs"]["perplexity"])},
        xlabel="SFT epoch",
        ylabel="perplexity of held-out responses",
        title="Held-out perplexity over SFT epochs (1,000 examples)",
        logy=True,
    )
    save_line_plot(
        out / "compliance_over_epochs.svg",
        {k: (epochs, m["epochs"][k]) for k in ("compliance", "accuracy")},
        xlabel="SFT epoch",
        ylabel="share of held-out prompts",
        title="Compliance and accuracy over SFT epochs (1,000 examples)",
    )


# --- measured claims ---------------------------------------------------------------------------


@claim("format-from-1000")
def format_from_1000(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(
        m["pretrained"][LIMA_SIZE]["compliance"],
        {"before_sft": m["before_sft"]["compliance"], "per_seed": _per_seed(m, "compliance")},
    )


@claim("format-from-100")
def format_from_100(ctx: Context) -> Measured:
    m = ctx.experiment()
    return Measured(
        m["pretrained"][FEW_SIZE]["compliance"],
        {
            "at_1000": m["pretrained"][LIMA_SIZE]["compliance"],
            "accuracy_at_100": m["pretrained"][FEW_SIZE]["accuracy"],
        },
    )


def _per_seed(m: dict, key: str, size: int = LIMA_SIZE, variant: str = "pretrained") -> list[float]:
    return [run[variant][size][key] for run in m["runs"]]


def _per_seed_gap(m: dict, key: str, variant: str) -> list[float]:
    """Per seed: `key` of the 1,000-example pretrained model minus that of the `variant` one."""
    return [run["pretrained"][LIMA_SIZE][key] - run[variant][key] for run in m["runs"]]


@claim("knowledge-from-pretraining")
def knowledge_from_pretraining(ctx: Context) -> Measured:
    """Accuracy after SFT on 1,000 examples over the pretrained model's raw-format accuracy."""
    m = ctx.experiment()
    sft_acc, raw = m["pretrained"][LIMA_SIZE]["accuracy"], m["raw_accuracy"]
    return Measured(
        sft_acc / raw if raw > 0 else math.nan,
        {
            "accuracy_after_sft": sft_acc,
            "raw_format_accuracy": raw,
            "trivial_accuracy": m["trivial_accuracy"],
            "per_seed_accuracy": _per_seed(m, "accuracy"),
        },
    )


@claim("random-init-learns-format")
def random_init_learns_format(ctx: Context) -> Measured:
    """The control's compliance: without pretraining, the same 1,000 examples teach the format."""
    m = ctx.experiment()
    return Measured(
        m["random_init"][LIMA_SIZE]["compliance"],
        {"per_seed": _per_seed(m, "compliance", variant="random_init")},
    )


def _gain_share(m: dict, acc: float) -> float:
    """(acc − trivial) / (acc_pretrained+SFT − trivial): the share of the pretrained model's
    gain over the trivial baseline that `acc` reaches."""
    trivial = m["trivial_accuracy"]
    return (acc - trivial) / (m["pretrained"][LIMA_SIZE]["accuracy"] - trivial)


@claim("random-init-lacks-knowledge")
def random_init_lacks_knowledge(ctx: Context) -> Measured:
    """The control's accuracy, as its share of the pretrained model's gain over the trivial
    baseline: near 0 if the answers come from pretraining, near 1 if SFT taught them."""
    m = ctx.experiment()
    acc = m["random_init"][LIMA_SIZE]["accuracy"]
    return Measured(
        _gain_share(m, acc),
        {
            "random_init_accuracy": acc,
            "pretrained_accuracy": m["pretrained"][LIMA_SIZE]["accuracy"],
            "trivial_accuracy": m["trivial_accuracy"],
            "random_init_curve": {n: v["accuracy"] for n, v in m["random_init"].items()},
        },
    )


@claim("diversity-beats-homogeneity")
def diversity_beats_homogeneity(ctx: Context) -> Measured:
    """Accuracy on all families: 1,000 examples of every family minus 1,000 of one family."""
    m = ctx.experiment()
    diverse, homogeneous = m["pretrained"][LIMA_SIZE], m["homogeneous"]
    return Measured(
        diverse["accuracy"] - homogeneous["accuracy"],
        {
            "diverse": diverse,
            "homogeneous": homogeneous,
            "compliance_gap": diverse["compliance"] - homogeneous["compliance"],
            "per_seed_gap": _per_seed_gap(m, "accuracy", "homogeneous"),
        },
    )


@claim("quality-matters")
def quality_matters(ctx: Context) -> Measured:
    """Sampled accuracy (P(a temperature-1 sample is exactly right)) after 1,000 clean minus
    1,000 partly corrupted demonstrations; greedy accuracy in the details."""
    m = ctx.experiment()
    clean, noisy = m["pretrained"][LIMA_SIZE], m["corrupted"]
    return Measured(
        clean["sampled_accuracy"] - noisy["sampled_accuracy"],
        {
            "clean": clean,
            "corrupted": noisy,
            "greedy_accuracy_gap": clean["accuracy"] - noisy["accuracy"],
            "per_seed_gap": _per_seed_gap(m, "sampled_accuracy", "corrupted"),
        },
    )


@claim("quantity-plateau")
def quantity_plateau(ctx: Context) -> Measured:
    """Accuracy gain from 1,000 examples to the largest set (same recipe, same distribution)."""
    m = ctx.experiment()
    pre = m["pretrained"]
    largest = max(pre)
    return Measured(
        pre[largest]["accuracy"] - pre[LIMA_SIZE]["accuracy"],
        {
            "largest": largest,
            "accuracy": {n: v["accuracy"] for n, v in pre.items()},
            "compliance": {n: v["compliance"] for n, v in pre.items()},
            "random_init_accuracy": {n: v["accuracy"] for n, v in m["random_init"].items()},
        },
    )


@claim("perplexity-tracks-accuracy-here")
def perplexity_tracks_accuracy_here(ctx: Context) -> Measured:
    """Pearson correlation, across SFT epochs, of held-out perplexity with sampled accuracy.
    App. B reports the two rising together (> 0); a negative value means they move oppositely."""
    curve = ctx.experiment()["epochs"]
    ppl, acc = torch.tensor(curve["perplexity"]), torch.tensor(curve["sampled_accuracy"])
    r = torch.corrcoef(torch.stack([ppl, acc]))[0, 1].item()
    return Measured(
        r,
        {
            "perplexity": curve["perplexity"],
            "sampled_accuracy": curve["sampled_accuracy"],
            "accuracy": curve["accuracy"],
            "compliance": curve["compliance"],
        },
    )
