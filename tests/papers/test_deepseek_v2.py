"""Pieces of papers/deepseek-v2/repro.py beyond its claims: the split of the 93.3%, the
two-layer parameter count, the cache-bytes table."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from torch import nn

from repro.lab.claims import Context
from repro.lab.counting import build_on_meta, count_parameters
from repro.lab.library import Library
from repro.models.deepseek_v2 import DeepSeekV2, DeepSeekV2Config, deepseek_v2_param_count
from repro.nn.ffn import GLUFeedForward
from repro.nn.mla import MultiHeadLatentAttention
from repro.nn.moe import MoEFeedForward, expert_load

DSV2 = Library().get("deepseek-v2").module()


def test_reduction_splits_into_elements_and_bits():
    r = DSV2.reduction_vs_67b()
    assert r["elements_67b"] == 2 * 8 * 128 * 95
    assert r["elements_v2"] == (512 + 64) * 60
    kept = (1 - r["reduction_elements_only"]) * DSV2.BITS_V2 / DSV2.BITS_67B
    assert 1 - r["reduction_with_6bit"] == pytest.approx(kept, rel=1e-12)
    shares = math.log(r["element_factor"]) + math.log(r["bit_factor"])
    assert math.log(r["element_factor"]) / shares == pytest.approx(
        r["share_of_log_reduction_from_elements"]
    )
    # at equal precision (bits 16 vs 16) nothing but the element count is left
    assert r["reduction_elements_only"] < r["reduction_with_6bit"]


def test_two_layer_shortcut_equals_a_full_build():
    """Lite builds in ~2 s on meta: the shortcut (two layers + copies) must give its count."""
    cfg = DeepSeekV2Config.from_name("deepseek-v2-lite")
    full = count_parameters(build_on_meta(lambda: DeepSeekV2(cfg)))
    c = DSV2.built_counts("deepseek-v2-lite")
    assert c["total"] == full == deepseek_v2_param_count(cfg)
    assert c["active"] == deepseek_v2_param_count(cfg, active=True)


@pytest.mark.parametrize("tokens", [1, 7, 4096])
def test_cache_bytes_follow_table_1(tokens):
    bf16 = 2
    assert DSV2.cache_bytes("MLA", tokens) == tokens * 60 * (512 + 64) * bf16
    assert DSV2.cache_bytes("MHA", tokens) == tokens * 60 * 2 * 128 * 128 * bf16
    assert DSV2.cache_bytes("GQA-8", tokens) == tokens * 60 * 2 * 8 * 128 * bf16
    assert DSV2.cache_bytes("MQA", tokens) == tokens * 60 * 2 * 128 * bf16
    with pytest.raises(KeyError):
        DSV2.cache_bytes("MLA-2", tokens)


# --- the pieces the claims build on ---------------------------------------------------------


def test_expert_params_sums_all_routed_experts_and_the_k_largest():
    """Experts of unequal size (one wider, one narrower than the rest): all of them, and the
    K = 2 largest; the shared experts count in neither."""
    moe = MoEFeedForward(8, 4, 5, 2, n_shared=1)
    moe.experts[3] = GLUFeedForward(8, 12)
    moe.experts[1] = GLUFeedForward(8, 6)
    layer = nn.Module()
    layer.ffn = moe
    sizes = [sum(p.numel() for p in e.parameters()) for e in moe.experts]
    assert sizes[3] > sizes[1] > sizes[0] == sizes[2] == sizes[4]
    assert DSV2._expert_params(layer) == (sum(sizes), sizes[3] + sizes[1])
    dense = nn.Module()
    dense.ffn = GLUFeedForward(8, 4)
    with pytest.raises(AssertionError):
        DSV2._expert_params(dense)


def test_reduction_against_mha_at_the_same_dims():
    r = DSV2.reduction_vs_67b()
    assert r["reduction_vs_mha_same_dims_elements"] == pytest.approx(1 - 576 / (2 * 128 * 128))
    assert r["element_factor"] == pytest.approx(2 * 8 * 128 * 95 / (576 * 60), rel=1e-12)
    assert r["bit_factor"] == pytest.approx(16 / 6, rel=1e-12)
    assert r["reduction_elements_only"] == pytest.approx(1 - 576 * 60 / (2 * 8 * 128 * 95))
    assert r["reduction_with_6bit"] == pytest.approx(1 - 576 * 60 * 6 / (2 * 8 * 128 * 95 * 16))


def test_deepseek_moe_case_is_the_documented_layer():
    """2 shared + 12 routed experts, K = 4, gates not renormalised, fp64, router rows scaled
    by 0.5..3 (so loads are unequal); x (2, 31, 24); seeded."""
    moe, x = DSV2.deepseek_moe_case(3)
    assert (len(moe.shared), len(moe.experts), moe.router.top_k) == (2, 12, 4)
    assert not moe.router.normalize
    assert x.shape == (2, 31, 24) and x.dtype == torch.float64
    assert all(p.dtype == torch.float64 for p in moe.parameters())
    assert moe.experts[0].w1.weight.shape[0] == 16
    torch.manual_seed(3)
    plain = MoEFeedForward(24, 16, 12, 4, normalize=False, n_shared=2).double()
    ratio = moe.router.gate.weight / plain.router.gate.weight
    want = torch.linspace(0.5, 3.0, 12, dtype=torch.float64)[:, None].expand(12, 24)
    torch.testing.assert_close(ratio, want, rtol=1e-12, atol=0)
    with torch.no_grad():
        moe(x)
    load = expert_load(moe.last_routing)
    assert load.max() > 2 * load.min()
    moe2, x2 = DSV2.deepseek_moe_case(3)
    assert torch.equal(x, x2) and not torch.equal(x, DSV2.deepseek_moe_case(4)[1])


def test_tiny_mla_weights_have_scale_one_over_root_fan_in():
    mla = DSV2.tiny_mla(2)
    assert mla.cfg == DSV2.TINY
    linears = [m for m in mla.modules() if isinstance(m, nn.Linear)]
    assert len(linears) == 8
    z = torch.cat([(m.weight * m.in_features**0.5).flatten() for m in linears])
    assert z.dtype == torch.float64
    assert abs(z.mean().item()) < 0.03 and z.std().item() == pytest.approx(1.0, rel=0.03)
    for m in linears:  # each layer at its own fan-in, not a pooled average
        assert (m.weight * m.in_features**0.5).std().item() == pytest.approx(1.0, rel=0.25)
    torch.testing.assert_close(mla.q_norm.weight, torch.ones_like(mla.q_norm.weight))
    again = DSV2.tiny_mla(2)
    assert torch.equal(mla.wuk.weight, again.wuk.weight)
    assert not torch.equal(mla.wuk.weight, DSV2.tiny_mla(3).wuk.weight)


def test_inputs_are_seeded_and_cover_prompt_and_decode():
    x = DSV2._inputs(4)
    assert x.shape == (2, DSV2.T_PROMPT + DSV2.T_DECODE, 48) and x.dtype == torch.float64
    assert torch.equal(x, DSV2._inputs(4)) and not torch.equal(x, DSV2._inputs(5))
    assert x.std().item() == pytest.approx(1.0, rel=0.1)


def test_experiment_tabulates_cache_bytes_by_formula_and_plots_them(monkeypatch, tmp_path):
    plots = {}
    monkeypatch.setattr(DSV2, "save_line_plot", lambda path, series, *a, **k: plots.update(
        {path.name: (path.parent, series, k)}))  # fmt: skip
    m = DSV2.experiment(DSV2.Config(tokens=(3, 10)), Context(out_dir=tmp_path))
    assert m["tokens"] == [3, 10]
    bf16 = 2
    per_token = {"MHA": 2 * 128 * 128, "GQA-8": 2 * 8 * 128, "MQA": 2 * 128, "MLA": 512 + 64}
    assert set(m["bytes"]) == set(per_token)
    for kind, elems in per_token.items():
        assert m["bytes"][kind] == [t * 60 * elems * bf16 for t in (3, 10)]
    assert set(plots) == {"kv_cache_bytes.svg", "absorption_error.svg"}
    folder, series, kwargs = plots["kv_cache_bytes.svg"]
    assert folder == tmp_path and kwargs == {"logx": True, "logy": True}
    assert series == {k: ([3, 10], [b / 2**30 for b in v]) for k, v in m["bytes"].items()}
    # per position: absorbed cached decoding is exact (rounding), RoPE on c^KV is not
    folder, series, kwargs = plots["absorption_error.svg"]
    assert folder == tmp_path and kwargs == {"logy": True}
    (xs, absorbed), (xs2, coupled) = series.values()
    T = DSV2.T_PROMPT + DSV2.T_DECODE
    assert xs == xs2 == list(range(T))
    assert max(absorbed) < 1e-12 and min(absorbed) >= 1e-18  # floored for the log axis
    assert min(coupled[1:]) > 1e-3 and coupled[0] < 1e-12  # position 0: no rotation yet


def test_decode_runs_the_path_it_names_over_every_position(monkeypatch):
    """`_decode(…, "absorbed")` steps forward_absorbed, "naive" forward_naive (a naive path
    shifted by 1 shows in the naive decode only); both cover all positions of x, here a longer
    x (T = 60 > d_model = 48), against the per-head reference of the whole sequence."""
    mla = DSV2.tiny_mla(1)
    x = torch.randn(2, 60, 48, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    with torch.no_grad():
        ref = DSV2.mla_per_head(mla, x)
        for path in ("absorbed", "naive"):
            got = DSV2._decode(mla, x, path)
            assert got.shape == ref.shape
            assert (got - ref).abs().max().item() < 1e-10 * ref.abs().max().item()
        real = mla.forward_naive
        monkeypatch.setattr(mla, "forward_naive", lambda *a, **k: real(*a, **k) + 1.0)
        assert (DSV2._decode(mla, x, "naive") - ref).abs().min().item() > 0.5
        assert (DSV2._decode(mla, x, "absorbed") - ref).abs().max().item() < 1e-10 * ref.abs().max()


def test_cache_bytes_are_counted_on_meta_beyond_any_memory():
    """2^30 tokens: terabytes if a cache were allocated; counted from the shapes on meta."""
    tokens = 2**30
    per_token = {"MHA": 2 * 128 * 128, "GQA-8": 2 * 8 * 128, "MQA": 2 * 128, "MLA": 512 + 64}
    for kind, elems in per_token.items():
        assert DSV2.cache_bytes(kind, tokens) == tokens * 60 * elems * 2


def test_per_head_reference_agrees_with_the_module_beyond_the_claims_case():
    """Non-unit RMSNorm gains and another RoPE base than the default (the claims' tiny MLA has
    gains 1 and base 10^4): the per-head reference and the module's two paths still agree."""
    cfg = dataclasses.replace(DSV2.TINY, rope_base=37.0)
    torch.manual_seed(4)
    mla = MultiHeadLatentAttention(cfg).double()
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for m in mla.modules():
            if isinstance(m, nn.Linear):
                m.weight.normal_(0, m.in_features**-0.5, generator=g)
        for gain in (mla.q_norm.weight, mla.kv_norm.weight):
            gain.copy_(0.3 + 2 * torch.rand(gain.shape, generator=g, dtype=torch.float64))
        x = torch.randn(2, 21, cfg.d_model, generator=g, dtype=torch.float64)
        ref = DSV2.mla_per_head(mla, x)
        scale = ref.abs().max().item()
        for path in (mla.forward_naive, mla.forward_absorbed):
            assert (path(x) - ref).abs().max().item() < 1e-10 * scale
        # the default base would be another function: the reference reads cfg.rope_base
        other = MultiHeadLatentAttention(DSV2.TINY).double()
        other.load_state_dict(mla.state_dict())
        assert (other.forward_naive(x) - ref).abs().max().item() > 1e-3 * scale
