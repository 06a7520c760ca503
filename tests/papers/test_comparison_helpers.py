"""Every claim helper that compares two things must report a difference when they differ.

A helper that compared cached generation with itself, or a merged model with itself, would
still verify its claim. Each test here breaks one side of the comparison (the library path the
paper checks, swapped for a wrong one with monkeypatch) and asserts the helper's number moves
far past the claim's tolerance; the unbroken run is the positive case that the claims already
check (tests/papers/test_claims.py).
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repro.lab.claims import Context
from repro.lab.library import Library

LIB = Library()


def paper(slug: str):
    return LIB.get(slug).module()


# --- Mamba -----------------------------------------------------------------------------------


def _tiny_mamba():
    from repro.models.mamba import MambaConfig, MambaLM

    torch.manual_seed(0)
    cfg = MambaConfig(d_model=16, n_layers=2, vocab_size=11, d_state=4)
    return MambaLM(cfg).eval()


def test_mamba_step_vs_forward_reports_a_broken_step(monkeypatch: pytest.MonkeyPatch) -> None:
    mamba = paper("mamba")
    model = _tiny_mamba()
    x = torch.randint(0, 11, (2, 12), generator=torch.Generator().manual_seed(1))
    good = mamba.step_vs_forward(model, x)
    assert good["generation_identical"] and good["max_rel_err"] < 1e-5
    step = model.step

    def broken(idx, states):  # the state carried between steps is forgotten
        return step(idx, model.init_state(idx.shape[0]))

    monkeypatch.setattr(model, "step", broken)
    bad = mamba.step_vs_forward(model, x)
    assert bad["max_rel_err"] > 1e-2
    assert not bad["generation_identical"]


@pytest.mark.parametrize("scan_name", ["selective_scan", "selective_scan_chunked"])
def test_mamba_scan_equivalence_reports_a_wrong_parallel_scan(
    scan_name: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    mamba = paper("mamba")
    ctx = Context(config=mamba.Config(), seed=0)
    assert mamba.scan_equivalence(ctx).value < 1e-9
    right = getattr(mamba, scan_name)

    def skip_after_gate(u, delta, A, Bt, Ct, D=None, z=None, h0=None, **kw):
        y, h = right(u, delta, A, Bt, Ct, None, z, h0, **kw)
        return y + u * D, h  # D·u added after the SiLU(z) gate instead of before

    monkeypatch.setattr(mamba, scan_name, skip_after_gate)
    assert mamba.scan_equivalence(ctx).value > 1e-2

    def lost_h0(u, delta, A, Bt, Ct, D=None, z=None, h0=None, **kw):
        return right(u, delta, A, Bt, Ct, D, z, None, **kw)

    monkeypatch.setattr(mamba, scan_name, lost_h0)
    assert mamba.scan_equivalence(ctx).value > 1e-2


def test_mamba_gating_theorem_reports_the_simplified_b(monkeypatch: pytest.MonkeyPatch) -> None:
    mamba = paper("mamba")
    ctx = Context(config=mamba.Config(), seed=0)
    good = mamba.gating_theorem(ctx)
    assert good.value < 1e-9 and good.details["max_abs_err_simplified_b"] > 1e-2
    ref = mamba.selective_scan_ref
    monkeypatch.setattr(
        mamba,
        "selective_scan_ref",
        lambda *a, discretization="simplified", **kw: ref(*a, **kw),  # ZOH ignored
    )
    assert mamba.gating_theorem(ctx).value > 1e-2


# --- efficient inference: KV cache -----------------------------------------------------------


def test_kv_cache_exactness_reports_a_broken_cache(monkeypatch: pytest.MonkeyPatch) -> None:
    ei = paper("efficient-inference")
    cfg = ei.Config(exact_batch=2, exact_prompt_len=4, exact_new_tokens=6)
    good = ei._exactness(cfg, Context(seed=0))
    assert all(r["tokens_match"] and r["max_logit_diff"] < 1e-4 for r in good.values())
    real = ei.caches_for

    def stale(*args, **kwargs):  # every cache forgets what was written to it
        caches = real(*args, **kwargs)
        for c in caches:
            update = c.update

            def forget(*a, _update=update, _c=c, **kw):
                out = _update(*a, **kw)
                for name in ("k", "v"):
                    buf = getattr(_c, name, None)
                    if isinstance(buf, torch.Tensor):
                        buf.mul_(0.5)
                return out

            c.update = forget
        return caches

    monkeypatch.setattr(ei, "caches_for", stale)
    bad = ei._exactness(cfg, Context(seed=0))
    assert all(r["max_logit_diff"] > 1e-3 for r in bad.values())
    generate = ei.generate

    def off_by_one(model, prompt, n, use_cache=True):
        out = generate(model, prompt, n, use_cache=use_cache)
        if use_cache:
            out = out.clone()
            out[:, -1] = (out[:, -1] + 1) % 256
        return out

    monkeypatch.setattr(ei, "caches_for", real)
    monkeypatch.setattr(ei, "generate", off_by_one)
    assert not any(r["tokens_match"] for r in ei._exactness(cfg, Context(seed=0)).values())


# --- LoRA ------------------------------------------------------------------------------------


def test_lora_merge_error_reports_a_wrong_merge(monkeypatch: pytest.MonkeyPatch) -> None:
    lora = paper("lora")
    from repro.nn.lora import LoRALinear, apply_lora

    torch.manual_seed(0)
    model = apply_lora(nn.Sequential(nn.Linear(6, 8), nn.ReLU(), nn.Linear(8, 3)), {"0", "2"}, r=2)
    for m in model.modules():
        if isinstance(m, LoRALinear):
            nn.init.normal_(m.lora_B)  # a trained-looking adapter: B ≠ 0
    x = torch.randn(5, 6)
    err, rel = lora.merge_error(model, x)
    assert err < 1e-5 and rel < 1e-5
    real = lora.merge_lora

    def half_merge(m):  # forgets the α/r scale: W0 + BA instead of W0 + (α/r)·BA
        for mod in m.modules():
            if isinstance(mod, LoRALinear):
                mod.scaling = mod.scaling * 0.5
        return real(m)

    monkeypatch.setattr(lora, "merge_lora", half_merge)
    err, rel = lora.merge_error(model, x)
    assert err > 1e-2 and rel > 1e-3


# --- GQA -------------------------------------------------------------------------------------


@pytest.mark.parametrize("n_kv_heads", [8, 1])
def test_gqa_reference_comparison_reports_wrong_sharing(
    n_kv_heads: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    gqa = paper("gqa")
    assert gqa.grouped_vs_reference(n_kv_heads, seed=0)["max_abs_diff"] < 1e-10
    real = gqa.Attention

    class Shuffled(real):  # keys and values of the wrong heads: a broken grouping
        def _split(self, t, n_heads):
            out = super()._split(t, n_heads)
            return out.flip(1) if n_heads == self.n_kv_heads and n_heads > 1 else out + 0.1

    monkeypatch.setattr(gqa, "Attention", Shuffled)
    r = gqa.grouped_vs_reference(n_kv_heads, seed=0)
    assert r["max_abs_diff"] > 1e-3 * r["max_abs_output"]


# --- RoPE ------------------------------------------------------------------------------------


def test_rope_offset_check_reports_absolute_positions(monkeypatch: pytest.MonkeyPatch) -> None:
    rope = paper("rope")
    assert rope.scores_depend_on_offset_only(Context(seed=0)).value < 1e-4
    real = rope.RotaryEmbedding

    class Absolute(real):  # rotation plus an absolute-position term: no longer relative
        def forward(self, x, start=0):
            return super().forward(x, start) + 0.01 * start

    monkeypatch.setattr(rope, "RotaryEmbedding", Absolute)
    assert rope.scores_depend_on_offset_only(Context(seed=0)).value > 1e-3


# --- Transformer -----------------------------------------------------------------------------


def test_sinusoid_shift_reports_a_wrong_rotation(monkeypatch: pytest.MonkeyPatch) -> None:
    tr = paper("transformer")
    ctx = Context(config=tr.Config(), seed=0)
    assert tr.sinusoid_shift(ctx).value < 1e-3  # the fp32 table
    real = tr.shift_matrix
    monkeypatch.setattr(tr, "shift_matrix", lambda k, d: real(k + 1, d))  # off by one position
    assert tr.sinusoid_shift(ctx).value > 0.05


# --- FlashAttention --------------------------------------------------------------------------


def test_flash_exactness_reports_a_wrong_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    fa = paper("flashattention")
    cfg = fa.Config(exact_shape=(1, 2, 37, 8), exact_blocks=(16, 8))
    good = fa.exactness(cfg, seed=0)
    assert max(good.values()) < 1e-4
    real = fa.flash_attention

    def unscaled(q, k, v, causal=False, **kw):  # softmax of QKᵀ without 1/√d
        return real(q * q.shape[-1] ** 0.5, k, v, causal=causal, **kw)

    monkeypatch.setattr(fa, "flash_attention", unscaled)
    bad = fa.exactness(cfg, seed=0)
    assert all(v > 1e-3 for k, v in bad.items() if k.startswith(("fwd", "dk", "dv")))


# --- RMSNorm ---------------------------------------------------------------------------------


def test_rmsnorm_helpers_report_a_norm_that_is_not_rmsnorm(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rms = paper("rmsnorm")
    ctx = Context(seed=0)
    assert rms.rescaling_invariance_fp32(ctx).value < 1e-4
    assert rms.equals_layernorm_on_zero_mean(ctx).value < 1e-4
    row, _ = rms.invariance_row("RMSNorm", 0)
    real = rms.RMSNorm

    class NoScaleInvariance(real):  # ε = 1 inside the root: small inputs are not rescaled
        def forward(self, x):
            return x / (x.pow(2).mean(-1, keepdim=True) + 1.0).sqrt() * self.weight

    class NoGain(real):  # the gain g is dropped
        def forward(self, x):
            return super().forward(x) / self.weight

    monkeypatch.setattr(rms, "RMSNorm", NoScaleInvariance)
    assert rms.rescaling_invariance_fp32(ctx).value > 1e-2
    assert rms.invariance_row("RMSNorm", 0)[0] != row
    monkeypatch.setattr(rms, "RMSNorm", NoGain)
    assert rms.equals_layernorm_on_zero_mean(ctx).value > 1e-2
    monkeypatch.setitem(rms.NORMS, "RMSNorm", rms.NORMS["LayerNorm"])
    assert rms.invariance_row("RMSNorm", 0)[0] != row
