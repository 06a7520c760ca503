from __future__ import annotations

import math

import pytest
import torch

from repro.data.zipf_facts import ZipfFacts, ZipfFactsConfig
from repro.lab.counting import count_parameters, counted_flops, mlp_param_count
from repro.models.mlp import MLP, MLPConfig
from repro.scaling.facts_runs import budget_run, converged_run
from repro.train import train

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


# --- both runs against the recipe written out: model, source, schedule, budget, curve ----------


def _reference_source(point: dict) -> ZipfFacts:
    return ZipfFacts(
        ZipfFactsConfig(
            n_keys=point["n_keys"], zipf_s=point["zipf_s"], vocab_size=point["vocab_size"],
            noise=point["noise"], code_dim=point["code_dim"], seed=point["source_seed"],
        )
    )  # fmt: skip


def _reference_model(point: dict) -> MLP:
    torch.manual_seed(point["seed"])
    return MLP(
        MLPConfig(
            code_dim=point["code_dim"], width=point["width"], n_hidden=point["n_hidden"],
            vocab_size=point["vocab_size"],
        )
    )  # fmt: skip


def _exact_loss(model: MLP, source: ZipfFacts) -> float:
    """Σ_k p_k Σ_v P(v|k)·(−log softmax_v), in float64, with P written out."""
    with torch.no_grad():
        logp = torch.log_softmax(model(source.codes).double(), dim=-1)  # (K, V)
    eps, V = source.cfg.noise, source.cfg.vocab_size
    total = 0.0
    for k in range(source.cfg.n_keys):
        right = int(source.answers[k])
        per_key = sum(-((1 - eps) * (v == right) + eps / V) * float(logp[k, v]) for v in range(V))
        total += float(source.probs[k]) * per_key
    return total


def _floor(V: int, eps: float) -> float:
    q = 1 - eps + eps / V
    return -q * math.log(q) - (V - 1) * (eps / V) * math.log(eps / V)


def _reference_converged(point: dict, clip: float = 0.0) -> float:
    source, model = _reference_source(point), _reference_model(point)
    train(
        model, lambda step: source.population_loss(model(source.codes)), point["steps"],
        lr=point["lr"], clip=clip,
    )  # fmt: skip
    return _exact_loss(model, source)


SMALL = {**POINT, "n_keys": 24, "vocab_size": 5, "code_dim": 3, "width": 6, "n_hidden": 2}
SMALL_CFG = MLPConfig(code_dim=3, width=6, n_hidden=2, vocab_size=5)


def test_converged_run_is_full_batch_training_on_the_exact_loss_without_clipping() -> None:
    point = {**SMALL, "seed": 3, "source_seed": 7, "steps": 12, "lr": 0.2}
    out = converged_run(point)
    want = _reference_converged(point)
    assert out["loss"] == pytest.approx(want, rel=1e-9)
    assert abs(_reference_converged(point, clip=1.0) - want) > 1e-4  # clipping would show
    assert abs(_reference_converged({**point, "seed": 4}) - want) > 1e-4  # so would the seed
    assert out["floor"] == pytest.approx(_floor(5, 0.1), rel=1e-12)
    model = _reference_model(point)
    assert out["n_params"] == sum(p.numel() for p in model.parameters())
    assert out["n_nonembed"] == sum(p.numel() for p in model.hidden.parameters())


def _reference_budget(point: dict, clip: float = 1.0) -> dict:
    source, model = _reference_source(point), _reference_model(point)
    n = sum(p.numel() for p in model.parameters())
    steps = max(1, math.ceil(point["budget"] / (6 * n) / point["batch"]))
    g = torch.Generator().manual_seed(1_000_003 + point["seed"])
    curve = []

    def loss_fn(step: int) -> torch.Tensor:
        if point["eval_every"] and step % point["eval_every"] == 0:
            curve.append((step * point["batch"], _exact_loss(model, source)))
        keys, labels = source.sample_keys(point["batch"], g)
        return torch.nn.functional.cross_entropy(model(source.codes[keys]), labels)

    train(model, loss_fn, steps, lr=point["lr"], clip=clip)
    loss = _exact_loss(model, source)
    curve.append((steps * point["batch"], loss))
    return {"loss": loss, "steps": steps, "samples": steps * point["batch"], "curve": curve}


def _close(out: dict, want: dict) -> bool:
    if [s for s, _ in out["curve"]] != [s for s, _ in want["curve"]]:
        return False
    pairs = zip(out["curve"], want["curve"], strict=True)
    same_curve = all(abs(a - b) < 1e-9 for (_, a), (_, b) in pairs)
    return same_curve and abs(out["loss"] - want["loss"]) < 1e-9


def test_budget_run_draws_its_samples_and_records_its_curve_as_the_recipe_says() -> None:
    n = mlp_param_count(SMALL_CFG)
    # 7 steps of 4: the budget buys 26 samples, rounded up to whole batches
    point = {**SMALL, "seed": 3, "budget": 6 * n * 26, "batch": 4, "lr": 0.3, "eval_every": 3}
    out = budget_run(point)
    want = _reference_budget(point)
    assert (out["steps"], out["samples"]) == (want["steps"], want["samples"]) == (7, 28)
    assert [s for s, _ in out["curve"]] == [0, 12, 24, 28]
    assert _close(out, want)
    assert out["floor"] == pytest.approx(_floor(5, 0.1), rel=1e-12)
    assert (out["n_params"], out["n_nonembed"]) == (n, mlp_param_count(SMALL_CFG, False))
    # the reference can tell a clip of 2, another sampling seed or another init apart
    assert not _close(out, _reference_budget(point, clip=2.0))
    assert not _close(out, _reference_budget({**point, "seed": -3}))


def test_a_budget_below_one_batch_is_one_step_and_no_curve_without_eval_every() -> None:
    point = {**SMALL, "budget": 1.0, "batch": 8, "lr": 0.1, "eval_every": 0}
    out = budget_run(point)
    want = _reference_budget(point)
    assert (out["steps"], out["samples"]) == (1, 8)
    assert [s for s, _ in out["curve"]] == [8] and _close(out, want)


class _Placed:
    """A tensor whose `.to(device)` is logged (the run must move everything to its device)."""

    def __init__(self, tensor: torch.Tensor, log: list) -> None:
        self.tensor, self.log = tensor, log

    def to(self, device):
        self.log.append(device)
        return self.tensor


class _SpiedSource:
    def __init__(self, real: ZipfFacts, log: list) -> None:
        self.real, self.log = real, log

    def __getattr__(self, name: str):
        return getattr(self.real, name)

    @property
    def codes(self) -> _Placed:
        return _Placed(self.real.codes, self.log)

    def sample(self, n: int, g: torch.Generator) -> tuple[_Placed, _Placed]:
        x, y = self.real.sample(n, g)
        return _Placed(x, self.log), _Placed(y, self.log)


def test_both_runs_put_the_model_and_every_input_on_the_points_device(monkeypatch) -> None:
    import repro.scaling.facts_runs as facts_runs

    log: list = []

    class LoggedMLP(MLP):
        def to(self, *args, **kwargs):
            log.append(args[0] if args else kwargs.get("device"))
            return super().to(*args, **kwargs)

    real_source_of = facts_runs.source_of
    monkeypatch.setattr(facts_runs, "source_of", lambda p: _SpiedSource(real_source_of(p), log))
    monkeypatch.setattr(facts_runs, "MLP", LoggedMLP)
    point = {**SMALL, "steps": 2, "lr": 0.1}
    assert converged_run(point)["loss"] == pytest.approx(_reference_converged(point), rel=1e-9)
    assert log == ["cpu"] * 3  # the model, the training codes, the evaluation codes
    log.clear()
    point = {**SMALL, "budget": 6 * mlp_param_count(SMALL_CFG) * 12, "batch": 4, "lr": 0.1,
             "eval_every": 2}  # fmt: skip
    assert _close(budget_run(point), _reference_budget(point))
    assert log == ["cpu"] * (1 + 2 * 3 + 2 + 1)  # model, 3 batches, 2 evaluations, the last
