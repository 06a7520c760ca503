from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from repro.lab.counting import (
    build_on_meta,
    count_parameters,
    mamba_param_count,
    mamba_projection_params,
    param_count,
    ssm_state_bytes_per_layer,
)
from repro.models.mamba import PRESETS, MambaBlock, MambaConfig, MambaLM


@pytest.mark.parametrize("name", list(PRESETS))
def test_presets_build_on_meta_and_match_the_analytic_count(name: str) -> None:
    cfg = MambaConfig.from_name(name)
    model = build_on_meta(lambda: MambaLM(cfg))
    assert next(model.parameters()).device.type == "meta"
    assert count_parameters(model) == mamba_param_count(cfg) == param_count(cfg)
    assert cfg.padded_vocab_size == 50280 and cfg.dt_rank == math.ceil(cfg.d_model / 16)


def test_130m_is_130m() -> None:
    n = mamba_param_count(MambaConfig.from_name("mamba-130m"))
    assert round(n / 1e6, -1) == 130


TINY = [
    MambaConfig(vocab_size=37, pad_vocab_size_multiple=8),
    MambaConfig(d_model=24, d_state=4, d_conv=3, bias=True, conv_bias=False, tie_embeddings=False),
    MambaConfig(selective=False, vocab_size=13),
]


@pytest.mark.parametrize("cfg", TINY)
def test_analytic_count_on_real_tiny_models(cfg: MambaConfig) -> None:
    model = MambaLM(cfg)
    assert count_parameters(model) == mamba_param_count(cfg)
    V = cfg.padded_vocab_size * cfg.d_model
    assert mamba_param_count(cfg, embeddings=False) == count_parameters(model) - V * (
        1 if cfg.tie_embeddings else 2
    )
    block = model.layers[0].mixer
    proj = block.in_proj.weight.numel() + block.out_proj.weight.numel()
    assert mamba_projection_params(cfg) == proj + (
        block.in_proj.bias.numel() + block.out_proj.bias.numel() if cfg.bias else 0
    )


def test_initialisation_follows_the_paper() -> None:
    torch.manual_seed(0)
    cfg = MambaConfig(d_model=64, d_state=8)
    block = MambaBlock(cfg)
    A = -torch.exp(block.A_log)
    S4D_real = -torch.arange(1, 9, dtype=torch.float32).repeat(128, 1)  # A = −(1, …, N)
    torch.testing.assert_close(A, S4D_real, rtol=1e-6, atol=0)
    assert torch.equal(block.D, torch.ones(128))
    dt = F.softplus(block.dt_proj.bias)  # §3.6: Δ's bias is τ_Δ⁻¹ of a draw in [1e-3, 1e-1]
    assert dt.min() >= 1e-3 * 0.99 and dt.max() <= 1e-1 * 1.01  # fp32 inverse softplus
    assert (dt < 1e-2).float().mean().item() == pytest.approx(0.5, abs=0.15)  # log-uniform


def _stepwise(model: MambaLM, idx: torch.Tensor) -> torch.Tensor:
    states, out = model.init_state(idx.shape[0]), []
    for t in range(idx.shape[1]):
        logits, states = model.step(idx[:, t], states)
        out.append(logits)
    return torch.stack(out, 1)


@pytest.mark.parametrize("selective", [True, False])
@pytest.mark.parametrize("scan", ["loop", "parallel"])
@pytest.mark.parametrize("L", [1, 3, 37])
def test_step_equals_forward(selective: bool, scan: str, L: int) -> None:
    torch.manual_seed(1)
    model = MambaLM(MambaConfig(vocab_size=19, d_state=4, selective=selective, scan=scan))
    with torch.no_grad():  # a trained-looking model: perturb every parameter
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    idx = torch.randint(0, 19, (3, L))
    with torch.no_grad():
        full, steps = model(idx), _stepwise(model, idx)
    assert ((steps - full).abs().max() / full.abs().max()).item() <= 1e-5


@pytest.mark.parametrize("scan", ["parallel", "chunked"])
def test_loop_and_parallel_forward_agree_in_fp64(scan: str) -> None:
    torch.manual_seed(2)
    loop = MambaLM(MambaConfig(vocab_size=11)).double()
    par = MambaLM(MambaConfig(vocab_size=11, scan=scan)).double()
    par.load_state_dict(loop.state_dict())
    with torch.no_grad():  # trained-looking Δ: the init's is small enough for one chunk
        for p in par.parameters():
            p.add_(0.3 * torch.randn_like(p))
    loop.load_state_dict(par.state_dict())
    idx = torch.randint(0, 11, (2, 70))
    torch.testing.assert_close(par(idx), loop(idx), rtol=0, atol=1e-10)


def test_unknown_scan_is_refused() -> None:
    with pytest.raises(ValueError, match="scan must be one of loop, parallel, chunked"):
        MambaConfig(scan="fast")


def test_generation_with_the_state_equals_recomputing() -> None:
    torch.manual_seed(3)
    model = MambaLM(MambaConfig(vocab_size=23, d_model=32))
    prompt = torch.randint(0, 23, (2, 5))
    cached = model.generate(prompt, 30)
    assert cached.shape == (2, 35) and torch.equal(cached[:, :5], prompt)
    assert torch.equal(cached, model.generate(prompt, 30, use_cache=False))


def test_forward_is_causal() -> None:
    torch.manual_seed(4)
    model = MambaLM(MambaConfig(vocab_size=11))
    idx = torch.randint(0, 11, (1, 20))
    changed = idx.clone()
    changed[0, 12:] = (changed[0, 12:] + 1) % 11
    with torch.no_grad():
        torch.testing.assert_close(model(changed)[:, :12], model(idx)[:, :12])


def test_decoding_state_has_constant_size() -> None:
    cfg = MambaConfig(vocab_size=11, d_model=24, d_state=8)
    model = MambaLM(cfg)
    states = model.init_state(3)
    sizes = [sum(t.nbytes for s in states for t in s)]
    with torch.no_grad():
        for t in range(50):
            _, states = model.step(torch.full((3,), t % 11), states)
    sizes.append(sum(t.nbytes for s in states for t in s))
    expected = cfg.n_layers * ssm_state_bytes_per_layer(3, cfg.d_inner, 8, cfg.d_conv, 4)
    assert sizes == [expected, expected]


def test_lti_control_is_input_independent() -> None:
    torch.manual_seed(5)
    block = MambaBlock(MambaConfig(selective=False))
    x1, x2 = torch.randn(2, 7, 32), torch.randn(2, 7, 32)
    for a, b in zip(block.ssm_params(x1), block.ssm_params(x2), strict=True):
        assert torch.equal(a, b)
    sel = MambaBlock(MambaConfig())
    assert not torch.equal(sel.ssm_params(x1)[0], sel.ssm_params(x2)[0])
