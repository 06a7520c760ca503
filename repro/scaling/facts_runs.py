"""The two kinds of training run that the scaling sweeps are made of, on the Zipf-facts source.

- `converged_run`: Kaplan's L(N) (https://arxiv.org/abs/2001.08361, §3.1) asks for the loss a
  model of size N reaches when data is not the limit. Here the model is trained full-batch on the
  *exact* population loss Σ_k p_k·CE_k, so there is no sampling noise and only N limits the loss.
- `budget_run`: one IsoFLOP point of Chinchilla's Approach 2 (https://arxiv.org/abs/2203.15556,
  §3.2): D = C/(6N) fresh samples seen once (noisy labels drawn per sample), with a warm-up +
  cosine schedule whose length is this run's own number of steps (App. A, Fig. A1: a cosine cycle
  longer than the run overestimates the loss of short runs). With `eval_every`, it also records
  the learning curve (Kaplan Fig. 2's sample efficiency).

Both evaluate the exact population loss and report it with the source's entropy floor. A point is
a plain dict so it can be cached (repro/scaling/sweep.py) and sent to a worker process.

Glossary: N parameters (`n_params` all, `n_nonembed` Kaplan's count), D samples (one key and its
label; the toy's "tokens"), C = 6·N·D training FLOPs, B batch, K keys, s Zipf exponent, ε noise.
"""

from __future__ import annotations

import math

import torch

from repro.data.zipf_facts import ZipfFacts, ZipfFactsConfig
from repro.lab.counting import mlp_param_count
from repro.models.mlp import MLP, MLPConfig
from repro.train import train

SOURCE_KEYS = ("n_keys", "zipf_s", "vocab_size", "noise", "code_dim")


def source_of(point: dict) -> ZipfFacts:
    return ZipfFacts(
        ZipfFactsConfig(**{k: point[k] for k in SOURCE_KEYS}, seed=point["source_seed"])
    )


def model_config(point: dict) -> MLPConfig:
    return MLPConfig(
        code_dim=point["code_dim"],
        width=point["width"],
        n_hidden=point["n_hidden"],
        vocab_size=point["vocab_size"],
    )


def _build(point: dict) -> MLP:
    torch.manual_seed(point["seed"])
    return MLP(model_config(point)).to(point["device"])


def _population_loss(model: MLP, source: ZipfFacts, device: str) -> float:
    with torch.no_grad():
        logits = model(source.codes.to(device)).double()  # (K, V)
        return float(source.population_loss(logits))


def _sizes(point: dict) -> dict:
    cfg = model_config(point)
    return {
        "n_params": mlp_param_count(cfg),
        "n_nonembed": mlp_param_count(cfg, embeddings=False),
    }


def converged_run(point: dict) -> dict:
    """Full-batch training on the exact population loss for `steps` steps; the final loss."""
    source, device = source_of(point), point["device"]
    model = _build(point)
    codes = source.codes.to(device)  # (K, d)
    train(
        model,
        lambda step: source.population_loss(model(codes)),
        point["steps"],
        lr=point["lr"],
        clip=0.0,
    )
    loss = _population_loss(model, source, device)
    return {"loss": loss, "floor": source.floor, **_sizes(point)}


def budget_run(point: dict) -> dict:
    """D = C/(6N) samples seen once in batches of B under a matched cosine; the final loss.

    `eval_every` > 0 also records (samples seen, population loss) every that many steps.
    """
    source, device = source_of(point), point["device"]
    model = _build(point)
    sizes = _sizes(point)
    samples = point["budget"] / (6 * sizes["n_params"])
    steps = max(1, math.ceil(samples / point["batch"]))
    g = torch.Generator().manual_seed(1_000_003 + point["seed"])
    curve: list[tuple[int, float]] = []

    def loss_fn(step: int) -> torch.Tensor:
        if point["eval_every"] and step % point["eval_every"] == 0:
            curve.append((step * point["batch"], _population_loss(model, source, device)))
            model.train()
        x, y = source.sample(point["batch"], g)  # (B, d), (B,)
        return torch.nn.functional.cross_entropy(model(x.to(device)), y.to(device))

    train(model, loss_fn, steps, lr=point["lr"], clip=1.0)
    loss = _population_loss(model, source, device)
    curve.append((steps * point["batch"], loss))
    return {
        "loss": loss,
        "floor": source.floor,
        "samples": steps * point["batch"],
        "steps": steps,
        "curve": curve,
        **sizes,
    }
