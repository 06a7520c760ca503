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
    with pytest.raises(AssertionError, match="^layer has a GLUFeedForward, not an MoE FFN$"):
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
    g = torch.Generator().manual_seed(1004)  # seed 1000 + 4: away from the models' seeds
    assert torch.equal(x, torch.randn(2, 25, 48, generator=g, dtype=torch.float64))


def test_per_head_reference_refuses_uncompressed_queries():
    mla = MultiHeadLatentAttention(dataclasses.replace(DSV2.TINY, q_rank=None)).double()
    with pytest.raises(AssertionError, match="^the reference is written for compressed queries$"):
        DSV2.mla_per_head(mla, DSV2._inputs(0))


def test_experiment_tabulates_cache_bytes_by_formula_and_plots_them(line_plots, tmp_path):
    drawn = line_plots(DSV2)  # bound to save_line_plot's signature: a dropped label fails
    m = DSV2.experiment(DSV2.Config(tokens=(3, 10)), Context(out_dir=tmp_path))
    plots = {path.name: (path.parent, series, other) for path, series, other in drawn}
    labels = {
        name: tuple(other.pop(label) for label in ("xlabel", "ylabel", "title"))
        for name, (_, _, other) in plots.items()
    }
    assert labels == {
        "kv_cache_bytes.svg": (
            "context length T (tokens)",
            "KV cache per sequence (GiB, bf16, 60 layers)",
            "DeepSeek-V2 dims: MLA caches 576 numbers per token and layer",
        ),
        "absorption_error.svg": (
            "position",
            "max |difference| / max |output| (fp64)",
            "MLA: absorption is exact only with decoupled RoPE",
        ),
    }
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
    assert list(series) == [
        "absorbed, latent cache (prefill 0–18, then decode)",
        "RoPE on the compressed key (rejected design)",
    ]
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


# --- the claim helpers: Table 1's arithmetic, the counts, the 93.3%, the dispatch, MLA ---------

_MLA = 512 + 64  # d_c + d_h^R per token and layer
_MHA = 2 * 128 * 128  # 2·n_h·d_h


def test_table1_claims_by_hand() -> None:
    per_layer = DSV2.mla_cache_per_token_layer(Context())
    assert per_layer.value == _MLA and type(per_layer.value) is int
    assert type(per_layer.details["nine_halves_dh"]) is int
    assert per_layer.details == {"formula_dc_plus_dhR": _MLA, "mha_per_layer": _MHA,
                                 "mla_over_mha": _MLA / _MHA, "nine_halves_dh": 576}  # fmt: skip
    groups = DSV2.mla_equals_gqa_groups(Context())
    assert groups.value == 2.25
    assert groups.details == {"mla_elements": _MLA * 60, "mqa_elements": 2 * 128 * 60}
    ratio = DSV2.mla_vs_mha_same_dims(Context())
    assert ratio.value == pytest.approx(_MHA / _MLA)
    assert ratio.details == {"mha_elements": _MHA * 60, "mla_elements": _MLA * 60,
                             "mla_share": pytest.approx(_MLA / _MHA)}  # fmt: skip
    table9 = DSV2.table9_mla_elements(Context())
    assert table9.value == 34_560 and table9.details == {}


def _analytic(preset: str) -> dict[str, int]:
    cfg = DeepSeekV2Config.from_name(preset)
    embedding = cfg.vocab_size * cfg.d_model
    total, active = deepseek_v2_param_count(cfg), deepseek_v2_param_count(cfg, active=True)
    return {"total": total, "active": active, "active_nonembedding": active - embedding,
            "total_nonembedding": total - embedding}  # fmt: skip


def test_params_claims_report_the_analytic_counts() -> None:
    """The published 236B total, 21B active (input embedding excluded) and 15.7B for Lite."""
    v2, lite = _analytic("deepseek-v2"), _analytic("deepseek-v2-lite")
    total = DSV2.params_total(Context())
    assert total.value == v2["total"] / 1e9 and total.details == v2
    assert round(total.value) == 236
    active = DSV2.params_active(Context())
    assert active.value == v2["active_nonembedding"] / 1e9 and round(active.value) == 21
    assert active.details == v2 | {
        "convention": "2 shared + 6 of 160 routed experts per MoE layer; input embedding "
        "excluded, output head included",
        "with_input_embedding": v2["active"] / 1e9,
    }
    small = DSV2.lite_params_total(Context())
    assert small.value == lite["total"] / 1e9 and round(small.value, 1) == 15.7
    assert small.details == lite | {"active_nonembedding_b": lite["active_nonembedding"] / 1e9}


def test_built_counts_check_each_count_against_the_formula(monkeypatch) -> None:
    real = DSV2.deepseek_v2_param_count
    monkeypatch.setattr(
        DSV2, "deepseek_v2_param_count", lambda cfg, active, embeddings: real(cfg, active,
                                                                              embeddings) + active
    )  # fmt: skip
    with pytest.raises(AssertionError, match="deepseek-v2-lite active: built .* != analytic"):
        DSV2.built_counts.__wrapped__("deepseek-v2-lite")
    monkeypatch.setattr(
        DSV2, "deepseek_v2_param_count", lambda cfg, active, embeddings: real(cfg, active,
                                                                              embeddings) + 1 -
        embeddings
    )  # fmt: skip
    with pytest.raises(AssertionError, match="active_nonembedding: built"):
        DSV2.built_counts.__wrapped__("deepseek-v2-lite")


def test_reduction_claims_are_the_93_3_percent_and_its_element_part() -> None:
    e67, ev2 = 2 * 8 * 128 * 95, _MLA * 60  # 194,560 and 34,560
    want = {
        "elements_67b": e67,
        "elements_v2": ev2,
        "reduction_elements_only": pytest.approx(1 - ev2 / e67),
        "reduction_with_6bit": pytest.approx(1 - ev2 * 6 / (e67 * 16)),
        "element_factor": pytest.approx(e67 / ev2),
        "bit_factor": pytest.approx(16 / 6),
        "share_of_log_reduction_from_elements": pytest.approx(
            math.log(e67 / ev2) / math.log(e67 * 16 / (ev2 * 6))
        ),
        "reduction_vs_mha_same_dims_elements": pytest.approx(1 - _MLA / _MHA),
    }
    with_bits = DSV2.kv_reduction_933(Context())
    assert with_bits.value == pytest.approx(0.9334, abs=1e-4) and with_bits.details == want
    elements = DSV2.kv_reduction_elements_only(Context())
    assert elements.value == pytest.approx(1 - ev2 / e67) and elements.details == want
    saving = DSV2.training_cost_saving(Context())
    assert saving.value == pytest.approx(1 - 172.8 / 300.6)  # 42.5%
    assert saving.details == {"deepseek-67b": 300.6e3, "deepseek-v2": 172.8e3}


def test_deepseekmoe_claims_report_the_gap_and_the_renormalised_control() -> None:
    from repro.nn.moe import moe_ref

    moe, x = DSV2.deepseek_moe_case(2)
    with torch.no_grad():
        dense, renorm = moe_ref(x, moe), moe_ref(x, moe, normalize=True)
    scale = dense.abs().max().item()
    control = (dense - renorm).abs().max().item() / scale
    out = DSV2.deepseekmoe_dispatch_equals_dense(Context(seed=2))
    assert out.value < 1e-12
    assert out.details == {"max_abs_output": pytest.approx(scale, rel=1e-12),
                           "renormalised_gates_diff": pytest.approx(control, rel=1e-9)}  # fmt: skip
    assert control > 0.01
    differs = DSV2.deepseekmoe_renormalised_differs(Context(seed=2))
    assert differs.value == pytest.approx(control, rel=1e-9) and differs.details == {}


def _off_by(monkeypatch, method: str, amount: float, when=lambda x, start: True) -> None:
    """Make one of the module's paths add `amount` to its output where `when(x, start_pos)`."""
    real = getattr(MultiHeadLatentAttention, method)

    def shifted(self, x, cache=None, start_pos=0, **kw):
        out = real(self, x, cache, start_pos, **kw)
        return out + amount if when(x, start_pos) else out

    monkeypatch.setattr(MultiHeadLatentAttention, method, shifted)


def test_prefill_claim_is_the_largest_of_the_three_gaps(monkeypatch) -> None:
    mla, x = DSV2.tiny_mla(3), DSV2._inputs(3)
    with torch.no_grad():
        scale = DSV2.mla_per_head(mla, x).abs().max().item()
    out = DSV2.naive_equals_absorbed_prefill(Context(seed=3))
    assert out.value < 1e-12
    assert set(out.details) == {"naive_vs_absorbed", "naive_vs_per_head", "absorbed_vs_per_head",
                                "max_abs_output"}  # fmt: skip
    assert out.details["max_abs_output"] == pytest.approx(scale, rel=1e-12)
    _off_by(monkeypatch, "forward_naive", 0.01)
    out = DSV2.naive_equals_absorbed_prefill(Context(seed=3))
    assert out.value == pytest.approx(0.01 / scale, rel=1e-6)
    assert out.details["naive_vs_per_head"] == pytest.approx(0.01 / scale, rel=1e-6)
    assert out.details["absorbed_vs_per_head"] < 1e-12


def test_prefill_claim_sees_an_absorbed_path_that_is_off(monkeypatch) -> None:
    mla, x = DSV2.tiny_mla(3), DSV2._inputs(3)
    with torch.no_grad():
        scale = DSV2.mla_per_head(mla, x).abs().max().item()
    _off_by(monkeypatch, "forward_absorbed", 0.01)
    out = DSV2.naive_equals_absorbed_prefill(Context(seed=3))
    assert out.value == pytest.approx(0.01 / scale, rel=1e-6)
    assert out.details["absorbed_vs_per_head"] == pytest.approx(0.01 / scale, rel=1e-6)
    assert out.details["naive_vs_absorbed"] == pytest.approx(0.01 / scale, rel=1e-6)
    assert out.details["naive_vs_per_head"] < 1e-12


def test_decode_claim_reads_the_one_token_steps_of_the_absorbed_path(monkeypatch) -> None:
    """An absorbed path off at the first decode step only (position 19) moves the value; one
    off in the prefill only moves the prefill detail; a naive path off in its steps moves its
    detail only."""
    mla, x = DSV2.tiny_mla(1), DSV2._inputs(1)
    with torch.no_grad():
        scale = DSV2.mla_per_head(mla, x).abs().max().item()
    out = DSV2.naive_equals_absorbed_decode(Context(seed=1))
    assert out.value < 1e-12 and out.details["decode_steps"] == 6
    assert out.details["naive_cached_vs_full"] < 1e-12
    assert out.details["absorbed_prefill_part"] < 1e-12
    with monkeypatch.context() as m:
        _off_by(m, "forward_absorbed", 0.02, lambda x, start: start == 19)
        out = DSV2.naive_equals_absorbed_decode(Context(seed=1))
        assert out.value == pytest.approx(0.02 / scale, rel=1e-6)
        assert out.details["absorbed_prefill_part"] < 1e-12
    with monkeypatch.context() as m:
        _off_by(m, "forward_absorbed", 0.03, lambda x, start: start == 0)
        out = DSV2.naive_equals_absorbed_decode(Context(seed=1))
        assert out.value < 1e-12
        assert out.details["absorbed_prefill_part"] == pytest.approx(0.03 / scale, rel=1e-6)
    with monkeypatch.context() as m:
        _off_by(m, "forward_naive", 0.04, lambda x, start: start == 24)  # the last step
        out = DSV2.naive_equals_absorbed_decode(Context(seed=1))
        assert out.value < 1e-12
        assert out.details["naive_cached_vs_full"] == pytest.approx(0.04 / scale, rel=1e-6)


def test_rope_on_compressed_claim_compares_the_coupled_model_with_the_absorbed_path() -> None:
    mla, x = DSV2.tiny_mla(2), DSV2._inputs(2)
    with torch.no_grad():
        coupled = mla.forward_naive(x, rope_on_compressed=True)
        ref = DSV2.mla_per_head(mla, x)  # what the absorbed path computes
    scale = coupled.abs().max().item()
    out = DSV2.rope_on_compressed_breaks_absorption(Context(seed=2))
    assert out.value == pytest.approx((coupled - ref).abs().max().item() / scale, rel=1e-9)
    assert out.details == {"max_abs_output": pytest.approx(scale, rel=1e-12)}
    assert out.value > 0.01


def test_latent_cache_claim_reads_the_largest_context() -> None:
    m = {"tokens": [10, 20, 40], "bytes": {"MHA": [1, 2, 6400], "GQA-8": [1, 2, 400],
                                           "MQA": [1, 2, 50], "MLA": [1, 3, 100]}}  # fmt: skip
    out = DSV2.latent_cache_bytes_vs_mha(Context(_metrics=m))
    assert out.value == 64.0
    assert out.details == {"tokens": 40, "bytes": {"MHA": 6400, "GQA-8": 400, "MQA": 50,
                           "MLA": 100}, "gqa8_over_mla": 4.0, "mla_over_mqa": 2.0}  # fmt: skip


def test_absorption_plot_is_the_absorbed_decode_and_the_coupled_model_per_position(
    line_plots, tmp_path
) -> None:
    """Per position: max over batch and width of |path − per-head reference| / max |reference|,
    floored at 1e-18 — for absorbed cached decoding and for RoPE on the compressed key."""
    plots = line_plots(DSV2)
    DSV2._plot_absorption(Context(seed=2, out_dir=tmp_path))
    mla, x = DSV2.tiny_mla(2), DSV2._inputs(2)
    with torch.no_grad():
        ref = DSV2.mla_per_head(mla, x)
        absorbed = DSV2._decode(mla, x, "absorbed")
        coupled = mla.forward_naive(x, rope_on_compressed=True)
    scale = ref.abs().max()

    def by_hand(y: torch.Tensor) -> list[float]:
        return [max(float((y - ref)[:, t].abs().max() / scale), 1e-18) for t in range(25)]

    ((path, series, _),) = plots
    assert path == tmp_path / "absorption_error.svg"
    (xs, got_absorbed), (xs2, got_coupled) = series.values()
    assert xs == xs2 == list(range(25))
    # abs=0: the errors are rounding (< 1e-12, pytest's default absolute tolerance), and the
    # naive path's cached decoding rounds differently
    assert got_absorbed == pytest.approx(by_hand(absorbed), rel=1e-9, abs=0)
    assert got_coupled == pytest.approx(by_hand(coupled), rel=1e-9)
