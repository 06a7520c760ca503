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


def test_zoo_gives_the_released_vocabulary_and_the_asked_sizes() -> None:
    """`_zoo` runs at import time to build PRESETS; called here so its own body is checked:
    GPT-NeoX's 50277 tokens padded to a multiple of 8 (the README's checkpoints)."""
    from repro.models.mamba import _zoo

    assert _zoo(40, 3) == dict(d_model=40, n_layers=3, vocab_size=50277, pad_vocab_size_multiple=8)
    assert MambaConfig(**_zoo(40, 3)).padded_vocab_size == 50280  # ⌈50277 / 8⌉ · 8


def test_unknown_preset_is_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match="unknown Mamba preset 'mamba-7b'; known: mamba-130m, "):
        MambaConfig.from_name("mamba-7b")


def test_step_refuses_a_state_list_of_the_wrong_length() -> None:
    """One state per layer: zip(strict=True) must not silently drop the extra layers."""
    model = MambaLM(MambaConfig(vocab_size=11, n_layers=3))
    with pytest.raises(ValueError):
        model.step(torch.zeros(2, dtype=torch.long), model.init_state(2)[:2])


def test_forward_composes_norms_blocks_and_tied_head_with_the_configured_eps() -> None:
    """logits = RMSNorm_f(x_NL) Eᵀ with x_{l+1} = x_l + mixer(RMSNorm(x_l)), written out here with
    the fp64 reference norm; norm_eps = 0.3 (not the default) at activations of size ~0.02,
    so an ignored eps changes every logit."""
    from repro.nn.norm import rms_norm_ref

    torch.manual_seed(6)
    cfg = MambaConfig(vocab_size=13, n_layers=3, norm_eps=0.3)
    model = MambaLM(cfg).double()
    with torch.no_grad():
        for p in model.parameters():  # non-unit gains
            if p.dim() == 1:
                p.add_(0.5 * torch.randn_like(p))
    idx = torch.randint(0, 13, (2, 6))
    with torch.no_grad():
        x = model.embedding.weight[idx]
        for layer in model.layers:
            x = x + layer.mixer(rms_norm_ref(x, layer.norm.weight, eps=0.3))
        want = rms_norm_ref(x, model.norm_f.weight, eps=0.3) @ model.embedding.weight.T
        torch.testing.assert_close(model(idx), want, rtol=1e-10, atol=1e-12)
    assert model.lm_head.bias is None


def test_deltas_are_each_layers_softplus_projection_on_its_own_input() -> None:
    """deltas(idx)[l] is Δ of layer l's mixer on the residual stream entering layer l (so
    earlier layers must be applied), recomputed here from the block's parts."""
    torch.manual_seed(7)
    model = MambaLM(MambaConfig(vocab_size=11, n_layers=3, d_state=4))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.3 * torch.randn_like(p))
    idx = torch.randint(0, 11, (2, 5))
    with torch.no_grad():
        got = model.deltas(idx)
        assert len(got) == 3
        x = model.embedding(idx)
        for layer, delta in zip(model.layers, got, strict=True):
            m = layer.mixer
            u = layer.norm(x)
            xi = m.in_proj(u)[..., : m.cfg.d_inner]
            xi = F.silu(m.conv1d(xi.transpose(1, 2))[..., :5].transpose(1, 2))
            dt = m.x_proj(xi)[..., : m.cfg.dt_rank]
            torch.testing.assert_close(delta, F.softplus(m.dt_proj(dt)))
            x = layer(x)


def test_output_projections_and_embedding_are_initialised_as_released() -> None:
    """Embedding ~ N(0, 0.02²) (mixer_seq_simple's _init_weights); out_proj ~ kaiming_uniform
    with a = √5, i.e. U(±1/√fan_in), then divided by √n_layers: bound 1/√(D · NL)."""
    torch.manual_seed(8)
    cfg = MambaConfig(d_model=32, vocab_size=2000, n_layers=4)
    model = MambaLM(cfg)
    assert model.embedding.weight.std().item() == pytest.approx(0.02, rel=0.03)
    bound = 1 / math.sqrt(cfg.d_inner * cfg.n_layers)
    for layer in model.layers:
        w = layer.mixer.out_proj.weight
        assert w.abs().max().item() <= bound
        assert w.abs().max().item() >= 0.95 * bound  # 2048 uniform draws reach the bound
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)


def test_dt_proj_weight_and_lti_c_are_initialised_at_their_scales() -> None:
    """mamba_simple's dt_init="random": dt_proj.weight ~ U(±R^-½) (R = 3 here, so R^-½, R^-3/2
    and R^½ all differ); the LTI control's C ~ N(0, 1/N) with N = 16 (std N^-½ = 0.25)."""
    torch.manual_seed(9)
    block = MambaBlock(MambaConfig(d_model=48))  # R = ⌈48/16⌉ = 3, D = 96: 288 draws
    bound = 3**-0.5
    w = block.dt_proj.weight
    assert w.shape == (96, 3)
    assert -bound <= w.min().item() <= -0.9 * bound and 0.9 * bound <= w.max().item() <= bound
    lti = MambaBlock(MambaConfig(d_model=32, d_state=16, selective=False))
    assert lti.C.std().item() == pytest.approx(16**-0.5, rel=0.1)  # 64 · 16 draws
    assert lti.C.mean().abs().item() < 0.05
