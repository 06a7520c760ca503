from __future__ import annotations

import pytest
import torch

from repro.lab.counting import count_parameters, counted_flops, mlp_param_count
from repro.models.mlp import MLP, MLPConfig
from repro.scaling.facts_runs import budget_run, converged_run

POINT = {
    "n_keys": 64, "zipf_s": 1.5, "vocab_size": 8, "noise": 0.1, "code_dim": 4, "source_seed": 1,
    "width": 8, "n_hidden": 1, "seed": 0, "device": "cpu",
}  # fmt: skip


@pytest.mark.parametrize(("width", "n_hidden"), [(4, 1), (9, 2), (16, 0)])
def test_mlp_count_matches_the_module(width: int, n_hidden: int) -> None:
    cfg = MLPConfig(code_dim=5, width=width, n_hidden=n_hidden, vocab_size=7)
    model = MLP(cfg)
    assert mlp_param_count(cfg) == count_parameters(model)
    hidden = sum(p.numel() for p in model.hidden.parameters())
    assert mlp_param_count(cfg, embeddings=False) == hidden


def test_mlp_training_costs_six_flops_per_weight_per_sample() -> None:
    cfg = MLPConfig(code_dim=16, width=32, n_hidden=2, vocab_size=32)
    model = MLP(cfg)
    x, y = torch.randn(10, 16), torch.randint(32, (10,))
    flops = counted_flops(lambda: torch.nn.functional.cross_entropy(model(x), y).backward())
    weights = sum(p.numel() for n, p in model.named_parameters() if n.endswith("weight"))
    total = sum(flops["Global"].values())
    # the first layer's input gradient is not needed, so 6N minus 2·(d·W) per sample
    assert total == 10 * (6 * weights - 2 * 16 * 32)


def test_converged_run_approaches_the_floor_from_above() -> None:
    out = converged_run({**POINT, "steps": 200, "lr": 3e-2})
    assert out["floor"] < out["loss"] < out["floor"] + 1.0
    assert out["n_params"] == mlp_param_count(MLPConfig(code_dim=4, width=8, vocab_size=8))


def test_budget_run_spends_its_budget() -> None:
    n = mlp_param_count(MLPConfig(code_dim=4, width=8, vocab_size=8))
    out = budget_run({**POINT, "budget": 6 * n * 640, "batch": 32, "lr": 1e-2, "eval_every": 5})
    assert out["samples"] == 640 and out["steps"] == 20
    samples = [s for s, _ in out["curve"]]
    assert samples == sorted(samples) and samples[-1] == 640
    assert out["curve"][-1][1] < out["curve"][0][1]  # it learned something
