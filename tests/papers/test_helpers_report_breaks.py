"""Claim helpers that compare the library with a reference must see the library break.

A comparison that read the same tensor twice, a reference that shared the code path it checks,
or a helper whose value cannot move would still verify its claim. Each test here breaks the
library side the helper checks (a subclass or a monkeypatched function, never the helper) and
asserts the helper's value moves far past the claim's tolerance; the real runs are in
tests/papers/test_claims.py. The companions of tests/papers/test_comparison_helpers.py.
"""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repro.lab.claims import Context
from repro.lab.library import Library

LIB = Library()


def paper(slug: str):
    return LIB.get(slug).module()


def tolerance(slug: str, claim_id: str):
    return next(c for c in LIB.get(slug).note.claims if c.id == claim_id).tolerance


# --- RoPE: the norm claim runs the library module, not its own rotation ----------------------


def test_rope_norm_claim_reports_a_rotation_that_is_not_one(monkeypatch: pytest.MonkeyPatch):
    rope = paper("rope")
    tol = tolerance("rope", "rotation-preserves-norm").abs
    assert rope.rotation_preserves_norm(Context(seed=0)).value < tol
    real = rope.RotaryEmbedding

    class Skewed(real):  # sin one position ahead of cos: a shear, not a rotation
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.sin = torch.roll(self.sin, -1, dims=0)

    monkeypatch.setattr(rope, "RotaryEmbedding", Skewed)
    assert rope.rotation_preserves_norm(Context(seed=0)).value > 1000 * tol


# --- GQA: the per-group claim and its control both move with the library's head map ---------


def test_gqa_group_claims_follow_the_librarys_head_to_group_map(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With the library's kv heads dealt round robin (h mod Hkv) instead of in consecutive
    groups (h // G), the per-group claim must fail and its control (the round-robin reference)
    must now match: both verdicts flip."""
    import repro.nn.attention as attention_module
    import repro.nn.flash as flash_module

    gqa = paper("gqa")
    ctx = Context(seed=0)
    assert gqa.gqa_groups_match_per_group_reference(ctx).value < 1e-10
    assert gqa.gqa_wrong_group_map_differs(ctx).value >= 0.01

    def round_robin(x: torch.Tensor, n_rep: int) -> torch.Tensor:
        return x if n_rep == 1 else x.repeat(1, n_rep, 1, 1)  # head h reads kv head h mod Hkv

    monkeypatch.setattr(attention_module, "repeat_kv", round_robin)
    if hasattr(flash_module, "repeat_kv"):
        monkeypatch.setattr(flash_module, "repeat_kv", round_robin)
    real_flash = gqa.flash_attention

    def flash_round_robin(q, k, v, causal=False, **kw):  # the tiled kernel's own grouping too
        n_rep = q.shape[1] // k.shape[1]
        return real_flash(q, round_robin(k, n_rep), round_robin(v, n_rep), causal=causal, **kw)

    monkeypatch.setattr(gqa, "flash_attention", flash_round_robin)
    monkeypatch.setattr(flash_module, "flash_attention", flash_round_robin)
    assert gqa.gqa_groups_match_per_group_reference(ctx).value > 1e-3
    assert gqa.gqa_wrong_group_map_differs(ctx).value < 1e-10


def test_gqa_group_claim_counts_every_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only the FlashAttention call with small tiles broken (its kv heads reversed): the claim
    takes the worst path, so one wrong path is enough to fail it."""
    gqa = paper("gqa")
    real = gqa.flash_attention

    def reversed_heads(q, k, v, causal=False, **kw):
        return real(q, k.flip(1), v.flip(1), causal=causal, **kw)

    monkeypatch.setattr(gqa, "flash_attention", reversed_heads)  # the module's direct call only
    m = gqa.gqa_groups_match_per_group_reference(Context(seed=0))
    assert m.value > 1e-3


def test_gqa_group_claim_counts_the_sdpa_backend(monkeypatch: pytest.MonkeyPatch) -> None:
    """Only PyTorch's fused-kernel backend broken (its kv heads reversed), every other path
    right: the worst path decides, so the claim still fails."""
    import repro.nn.attention as attention_module

    gqa = paper("gqa")
    real = attention_module._attention_sdpa

    def reversed_heads(q, k, v, causal, key_padding_mask):
        return real(q, k.flip(1), v.flip(1), causal, key_padding_mask)

    monkeypatch.setattr(attention_module, "_attention_sdpa", reversed_heads)
    assert gqa.gqa_groups_match_per_group_reference(Context(seed=0)).value > 1e-3


def test_gqa_random_conversion_draws_fresh_gpt_init() -> None:
    """The `random` method of Fig. 4: new key/value projections from GPT's N(0, 0.02²), zero
    biases, nothing of the checkpoint's heads left; its level and width are the init's."""
    from repro.models.gpt import GPT, GPTConfig

    gqa = paper("gqa")
    torch.manual_seed(0)
    mha = GPT(GPTConfig(n_layers=1, d_model=64, n_heads=8, vocab_size=20, max_seq_len=16))
    with torch.no_grad():
        for name, p in mha.named_parameters():
            if "attn.w" in name:
                p.normal_(0.0, 1.0)  # far from the init, so a copy cannot pass for a draw
    new = gqa.convert_kv_heads(mha, 2, "random", torch.Generator().manual_seed(1)).blocks[0].attn
    old = mha.blocks[0].attn
    for lin in (new.wk, new.wv):
        assert lin.weight.std().item() == pytest.approx(0.02, rel=0.15)
        assert abs(lin.weight.mean().item()) < 0.005
        assert torch.equal(lin.bias, torch.zeros_like(lin.bias))
    assert not torch.allclose(new.wk.weight, new.wv.weight)  # two draws, not one reused
    assert torch.equal(new.wq.weight, old.wq.weight)  # the queries are copied


# --- MoE: the dispatch claims of Mixtral and DeepSeek-V2 see a wrong sparse path ------------


def _wrong_experts(moe_cls):
    class WrongExperts(moe_cls):
        """The sparse path runs each token through the mirror-image expert."""

        def forward(self, x):
            experts = self.experts
            self.experts = nn.ModuleList(list(experts)[::-1])
            try:
                return super().forward(x)
            finally:
                self.experts = experts

    return WrongExperts


def _no_shared(moe_cls):
    class NoShared(moe_cls):
        """The sparse path forgets the shared experts (DeepSeekMoE Eq. 20's first sum)."""

        def forward(self, x):
            shared = self.shared
            self.shared = nn.ModuleList()
            try:
                return super().forward(x)
            finally:
                self.shared = shared

    return NoShared


def test_mixtral_dispatch_claim_reports_a_wrong_sparse_path(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    mixtral = paper("mixtral")
    ctx = Context(seed=0)
    assert mixtral.dispatch_equals_dense(ctx).value < 1e-12
    monkeypatch.setattr(mixtral, "MoEFeedForward", _wrong_experts(mixtral.MoEFeedForward))
    m = mixtral.dispatch_equals_dense(ctx)
    assert m.value > 1e-3 * m.details["max_abs_output"]


def _deepseekmoe_sees(break_, monkeypatch: pytest.MonkeyPatch) -> None:
    ds = paper("deepseek-v2")
    ctx = Context(seed=0)
    assert ds.deepseekmoe_dispatch_equals_dense(ctx).value < 1e-12
    monkeypatch.setattr(ds, "MoEFeedForward", break_(ds.MoEFeedForward))
    m = ds.deepseekmoe_dispatch_equals_dense(ctx)
    assert m.value > 1e-3 * m.details["max_abs_output"]


def test_deepseekmoe_dispatch_claim_reports_wrong_experts(monkeypatch: pytest.MonkeyPatch):
    _deepseekmoe_sees(_wrong_experts, monkeypatch)


def test_deepseekmoe_dispatch_claim_reports_dropped_shared_experts(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _deepseekmoe_sees(_no_shared, monkeypatch)


def test_mixtral_dispatch_claim_reports_gates_left_unnormalised(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sparse path gated by the raw softmax at the top 2 (DeepSeek's gates), the dense
    reference by Mixtral's renormalised ones: the claim must see the difference."""
    mixtral = paper("mixtral")
    real = mixtral.MoEFeedForward

    class RawGates(real):
        def forward(self, x):
            self.router.normalize = False
            try:
                return super().forward(x)
            finally:
                self.router.normalize = True

    monkeypatch.setattr(mixtral, "MoEFeedForward", RawGates)
    m = mixtral.dispatch_equals_dense(Context(seed=0))
    assert m.value > 1e-3 * m.details["max_abs_output"]


# --- MLA: the absorption claims see a wrong absorbed path and a forgetful latent cache --------


def test_mla_prefill_claim_reports_a_wrong_absorbed_path(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = paper("deepseek-v2")
    ctx = Context(seed=0)
    assert ds.naive_equals_absorbed_prefill(ctx).value < 1e-12
    real = ds.MultiHeadLatentAttention

    class UnscaledRope(real):  # the absorbed path forgets the decoupled RoPE part of the score
        def forward_absorbed(self, x, cache=None, start_pos=0):
            wqr = self.wqr.weight
            with torch.no_grad():
                saved = wqr.clone()
                wqr.zero_()
            try:
                return super().forward_absorbed(x, cache, start_pos)
            finally:
                with torch.no_grad():
                    wqr.copy_(saved)

    monkeypatch.setattr(ds, "MultiHeadLatentAttention", UnscaledRope)
    m = ds.naive_equals_absorbed_prefill(ctx)
    assert m.value > 1e-3
    assert m.details["absorbed_vs_per_head"] > 1e-3 and m.details["naive_vs_per_head"] < 1e-12


def test_mla_decode_claim_reports_a_cache_that_forgets(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = paper("deepseek-v2")
    ctx = Context(seed=0)
    assert ds.naive_equals_absorbed_decode(ctx).value < 1e-12
    real = ds.LatentKVCache

    class Unrotated(real):  # the cached rotary keys lose their positions (stored as zeros)
        def update(self, pos, c, k_rope):
            return super().update(pos, c, torch.zeros_like(k_rope))

    monkeypatch.setattr(ds, "LatentKVCache", Unrotated)
    m = ds.naive_equals_absorbed_decode(ctx)
    assert m.value > 1e-3 and m.details["naive_cached_vs_full"] > 1e-3


def test_mla_prefill_claim_reports_a_wrong_score_scale(monkeypatch: pytest.MonkeyPatch) -> None:
    ds = paper("deepseek-v2")
    real = ds.MultiHeadLatentAttention

    class HeadDimScale(real):  # 1/√D instead of Eq. 46's 1/√(D + Dr), absorbed path only
        def forward_absorbed(self, x, cache=None, start_pos=0):
            self.scale = self.cfg.head_dim**-0.5
            try:
                return super().forward_absorbed(x, cache, start_pos)
            finally:
                self.scale = (self.cfg.head_dim + self.cfg.rope_dim) ** -0.5

    monkeypatch.setattr(ds, "MultiHeadLatentAttention", HeadDimScale)
    assert ds.naive_equals_absorbed_prefill(Context(seed=0)).value > 1e-3


def test_mla_decode_claim_reports_corrupted_cached_latents(monkeypatch: pytest.MonkeyPatch):
    ds = paper("deepseek-v2")
    real = ds.LatentKVCache

    class HalfLatents(real):  # the cache stores c^KV at half its value
        def update(self, pos, c, k_rope):
            return super().update(pos, 0.5 * c, k_rope)

    monkeypatch.setattr(ds, "LatentKVCache", HalfLatents)
    assert ds.naive_equals_absorbed_decode(Context(seed=0)).value > 1e-3


# --- PagedAttention: the exactness claim sees a kernel that misreads the table ---------------


def test_paged_exactness_reports_a_kernel_that_drops_the_last_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pa = paper("pagedattention")
    from repro.serving.paged import BlockTable

    exactness = pa._exactness.__wrapped__  # the cached run is the unbroken one
    assert exactness(0)["max_abs_diff"] < 1e-12
    real = pa.paged_attention

    def short(q, cache, table, causal=True):  # the last token of the table is not read
        if table.num_tokens > q.shape[1]:
            table = BlockTable(list(table.blocks), table.num_tokens - 1)
        return real(q, cache, table, causal)

    monkeypatch.setattr(pa, "paged_attention", short)
    assert exactness(0)["max_abs_diff"] > 1e-3


def test_paged_exactness_reports_a_kernel_without_the_causal_mask(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    pa = paper("pagedattention")
    real = pa.paged_attention
    monkeypatch.setattr(pa, "paged_attention", lambda q, c, t, causal=True: real(q, c, t, False))
    assert pa._exactness.__wrapped__(0)["max_abs_diff"] > 1e-3


# --- second breaks of the comparisons in tests/papers/test_comparison_helpers.py -----------


def test_rope_norm_claim_reports_a_rotation_that_scales(monkeypatch: pytest.MonkeyPatch) -> None:
    rope = paper("rope")
    real = rope.RotaryEmbedding

    class Scaled(real):
        def forward(self, x, start_pos=0):
            return 1.01 * super().forward(x, start_pos)

    monkeypatch.setattr(rope, "RotaryEmbedding", Scaled)
    assert rope.rotation_preserves_norm(Context(seed=0)).value > 1e-3


def test_rope_offset_claim_reports_a_shear(monkeypatch: pytest.MonkeyPatch) -> None:
    rope = paper("rope")
    real = rope.RotaryEmbedding

    class Skewed(real):  # sin((m + 1)θ) beside cos(mθ): no longer R_m, no longer relative
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.sin = torch.roll(self.sin, -1, dims=0)

    monkeypatch.setattr(rope, "RotaryEmbedding", Skewed)
    assert rope.scores_depend_on_offset_only(Context(seed=0)).value > 1e-3


@pytest.mark.parametrize("n_kv_heads", [8, 1])
def test_gqa_reference_comparison_reports_a_layer_that_sees_the_future(
    n_kv_heads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    gqa = paper("gqa")
    real = gqa.Attention

    class NotCausal(real):
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.causal = False

    monkeypatch.setattr(gqa, "Attention", NotCausal)
    r = gqa.grouped_vs_reference(n_kv_heads, seed=0)
    assert r["max_abs_diff"] > 1e-3 * r["max_abs_output"]


def test_kv_cache_exactness_reports_a_cache_missing_its_newest_position(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ei = paper("efficient-inference")
    real = ei.caches_for

    def lagging(*args, **kwargs):  # each step attends over the prefix without its own key
        caches = real(*args, **kwargs)
        for c in caches:

            def update(pos, k, v, _update=c.update):
                pk, pv = _update(pos, k, v)
                return pk[:, :, :-1], pv[:, :, :-1]

            c.update = update
        return caches

    monkeypatch.setattr(ei, "caches_for", lagging)
    cfg = ei.Config(exact_batch=2, exact_prompt_len=4, exact_new_tokens=6)
    bad = ei._exactness(cfg, Context(seed=0))
    assert all(r["max_logit_diff"] > 1e-3 for r in bad.values())


def test_kv_cache_exactness_reports_tokens_from_a_lagging_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The token comparison of cached-equals-recomputed (the first break of it, an edited last
    token, is in test_comparison_helpers.py): `generate`'s own caches lag one position."""
    import repro.nn.kv_cache as kv_cache_module

    ei = paper("efficient-inference")
    real = kv_cache_module.caches_for

    def lagging(*args, **kwargs):
        caches = real(*args, **kwargs)
        for c in caches:

            def update(pos, k, v, _update=c.update):
                pk, pv = _update(pos, k, v)
                return pk[:, :, :-1], pv[:, :, :-1]

            c.update = update
        return caches

    monkeypatch.setattr(kv_cache_module, "caches_for", lagging)
    cfg = ei.Config(exact_batch=2, exact_prompt_len=4, exact_new_tokens=6)
    assert not any(r["tokens_match"] for r in ei._exactness(cfg, Context(seed=0)).values())


# --- RMSNorm: the "differs" claim measures what Eq. 2 and Eq. 4 predict ----------------------


def test_rmsnorm_differs_claim_matches_its_prediction_and_sees_recentring(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The measured mean |RMSNorm − LayerNorm| equals the one predicted from each row's μ and
    σ (so the value is the difference of these two norms, not of any two things), and a module
    that re-centres (a LayerNorm without bias) falls below the claim's 0.2."""
    rms = paper("rmsnorm")
    m = rms.differs_from_layernorm_on_nonzero_mean(Context(seed=0))
    assert m.value == pytest.approx(m.details["predicted_mean_abs_diff"], rel=1e-3)
    lo = tolerance("rmsnorm", "differs-from-layernorm-on-nonzero-mean").range[0]
    assert m.value > lo
    real = rms.RMSNorm

    class Recentring(real):
        def forward(self, x):
            return F.layer_norm(x, (x.shape[-1],), self.weight, None, self.eps)

    monkeypatch.setattr(rms, "RMSNorm", Recentring)
    assert rms.differs_from_layernorm_on_nonzero_mean(Context(seed=0)).value < 1e-3 * lo


def test_rmsnorm_equals_layernorm_claim_reports_a_wrong_gain(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A second break of equals-layernorm-on-zero-mean (the first, a dropped gain, is in
    test_comparison_helpers.py): the gain applied as √g, which equals g only where g = 1."""
    rms = paper("rmsnorm")
    real = rms.RMSNorm

    class HalfGain(real):
        def forward(self, x):
            return super().forward(x) / self.weight.sqrt()

    monkeypatch.setattr(rms, "RMSNorm", HalfGain)
    tol = tolerance("rmsnorm", "equals-layernorm-on-zero-mean").abs
    assert rms.equals_layernorm_on_zero_mean(Context(seed=0)).value > 100 * tol


# --- SwiGLU: every variant of the experiment is the FFN its name says ------------------------

ACTIVATIONS = {
    "relu": lambda h: h.clamp_min(0),
    "gelu": lambda h: 0.5 * h * (1 + torch.erf(h / math.sqrt(2))),
    "geglu": lambda h: 0.5 * h * (1 + torch.erf(h / math.sqrt(2))),
    "swiglu": lambda h: h / (1 + torch.exp(-h)),
}


@pytest.mark.parametrize("variant", list(ACTIVATIONS))
def test_swiglu_experiment_variants_compute_their_formulas(variant: str) -> None:
    """Eq. 2 (ReLU, GELU: two C×F matrices) and Eq. 6 (GEGLU, SwiGLU: gate ⊗ linear, F' = 2F/3)
    written out, against the FFN inside each variant's tiny LM."""
    sw = paper("swiglu")
    cfg = sw.PRESETS["quick"]
    model = sw.tiny_lm(cfg, variant, seed=0, device="cpu").double()
    ffn = model.layers[0].feed_forward
    x = torch.randn(2, 5, cfg.d_model, dtype=torch.float64)
    act = ACTIVATIONS[variant]
    W1, W2 = ffn.w1.weight, ffn.w2.weight
    if variant in ("relu", "gelu"):
        assert W1.shape == (cfg.d_ff, cfg.d_model) and not hasattr(ffn, "w3")
        want = act(x @ W1.T) @ W2.T
    else:
        assert W1.shape == ffn.w3.weight.shape == (2 * cfg.d_ff // 3, cfg.d_model)
        want = (act(x @ W1.T) * (x @ ffn.w3.weight.T)) @ W2.T
    with torch.no_grad():
        torch.testing.assert_close(ffn(x), want, atol=1e-12, rtol=1e-12)


# --- speculative decoding: α measured position by position ----------------------------------


def test_measured_alpha_is_the_mean_beta_over_the_sampled_positions() -> None:
    """α = mean over positions t ≥ start of Σ_x min(p_t, q_t), with p_t and q_t the next-token
    distributions after tokens[:t] — each from its own forward over that prefix — for a target
    and a draft that differ (β is neither 0 nor 1)."""
    sd = paper("speculative-decoding")
    target, draft = sd.random_tiny_gpt(6, 3, 32), sd.random_tiny_gpt(6, 4, 32)
    tokens = torch.randint(0, 6, (1, 21), generator=torch.Generator().manual_seed(0))
    start = 5
    betas = []
    with torch.no_grad():
        for t in range(start, tokens.shape[1]):
            p = torch.softmax(target(tokens[:, :t])[0, -1].double(), -1)
            q = torch.softmax(draft(tokens[:, :t])[0, -1].double(), -1)
            betas.append(torch.minimum(p, q).sum().item())
    want = sum(betas) / len(betas)
    assert 0.1 < want < 0.9
    assert sd.measured_alpha(target, draft, tokens, start) == pytest.approx(want, abs=1e-12)


def test_swiglu_variants_are_four_different_functions() -> None:
    """Given the same weights, the ReLU and GELU FFNs differ, and so do GEGLU and SwiGLU: an
    experiment whose variants collapsed to one activation would compare a model with itself."""
    sw = paper("swiglu")
    x = torch.randn(3, 4, 16, dtype=torch.float64)
    out = {}
    for v in sw.VARIANTS:
        torch.manual_seed(0)
        ffn = sw.ffn(v, 16, 24).double()
        with torch.no_grad():
            for p in ffn.parameters():
                p.copy_(torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
            out[v] = ffn(x)
    for a, b in (("relu", "gelu"), ("geglu", "swiglu"), ("gelu", "geglu")):
        assert (out[a] - out[b]).abs().max() > 1e-2, (a, b)


def test_swiglu_ffn_weights_are_drawn_at_the_models_init_scale() -> None:
    """Every variant's new FFN weights come from N(0, 0.02²) like the rest of the decoder (a
    variant started at another scale would learn at another speed, which the claims compare)."""
    sw = paper("swiglu")
    cfg = sw.PRESETS["quick"]
    for variant in sw.VARIANTS:
        model = sw.tiny_lm(cfg, variant, seed=3, device="cpu")
        w = torch.cat([p.flatten() for p in model.layers[0].feed_forward.parameters()])
        assert w.std().item() == pytest.approx(0.02, rel=0.05), variant
        assert abs(w.mean().item()) < 0.001, variant


def test_measured_alpha_covers_exactly_the_sampled_positions() -> None:
    """The boundaries of the average: a draft that differs from the target only where token
    `start` is predicted (output start − 1) lowers α; one that differs only past the last token
    (a prediction nothing was sampled from) leaves α at 1."""
    sd = paper("speculative-decoding")
    target = sd.random_tiny_gpt(6, 3, 32)
    tokens = torch.randint(0, 6, (1, 21), generator=torch.Generator().manual_seed(0))
    start = 5

    class Differs(nn.Module):
        def __init__(self, where: int) -> None:
            super().__init__()
            self.where = where

        def forward(self, idx: torch.Tensor) -> torch.Tensor:
            out = target(idx).clone()
            if self.where < out.shape[1]:
                out[:, self.where] = out[:, self.where].flip(-1)  # another distribution there
            return out

    first = sd.measured_alpha(target, Differs(start - 1), tokens, start)
    assert first < 1 - 1e-3
    n = tokens.shape[1] - start  # positions averaged over
    beyond = sd.measured_alpha(target, Differs(tokens.shape[1] - 1), tokens, start)
    assert beyond == pytest.approx(1.0, abs=1e-12)
    last = sd.measured_alpha(target, Differs(tokens.shape[1] - 2), tokens, start)
    assert 1 - last > 1e-3 / n  # the prediction of the last token is in the mean
