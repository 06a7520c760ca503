"""Reference attention, masks, backends and the MHA / GQA / MQA module (repro.nn.attention)."""

from __future__ import annotations

import math

import pytest
import torch

from repro.nn.attention import Attention, attention, attention_mask, attention_ref, repeat_kv

F64 = torch.float64


def _naive(q, k, v, causal=False, kpm=None):
    """Eq. 1 written out in fp64 with explicit loops over heads: the test's own formula."""
    B, H, T, D = q.shape
    Hkv, S = k.shape[1], k.shape[2]
    out = torch.zeros(B, H, T, D, dtype=F64)
    for h in range(H):
        kh, vh = k[:, h // (H // Hkv)].to(F64), v[:, h // (H // Hkv)].to(F64)  # (B, S, D)
        scores = torch.einsum("btd,bsd->bts", q[:, h].to(F64), kh) / math.sqrt(D)
        visible = torch.ones(B, T, S, dtype=torch.bool)
        if causal:
            for t in range(T):
                visible[:, t, max(0, t + S - T + 1) :] = False  # query t sees j <= t + S - T
        if kpm is not None:
            visible &= kpm[:, None, :]
        weights = torch.where(visible, scores.exp(), 0.0)
        total = weights.sum(-1, keepdim=True)
        out[:, h] = torch.where(total > 0, weights / total, 0.0) @ vh
    return out


def _qkv(B=2, H=4, Hkv=2, T=7, S=11, D=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (
        torch.randn(B, H, T, D, generator=g),
        torch.randn(B, Hkv, S, D, generator=g),
        torch.randn(B, Hkv, S, D, generator=g),
    )


MASKS = [(False, False), (True, False), (False, True), (True, True)]


@pytest.mark.parametrize("T,S", [(7, 11), (11, 7), (1, 9), (9, 9)])
@pytest.mark.parametrize("causal,pad", MASKS)
def test_ref_matches_naive_formula(T, S, causal, pad):
    q, k, v = (x.to(F64) for x in _qkv(T=T, S=S))
    kpm = torch.rand(2, S, generator=torch.Generator().manual_seed(1)) > 0.4 if pad else None
    got = attention_ref(q, k, v, causal, kpm, upcast=F64)
    torch.testing.assert_close(got, _naive(q, k, v, causal, kpm), atol=1e-12, rtol=1e-12)


def test_ref_computes_in_upcast_and_returns_input_dtype():
    q, k, v = (x.half() for x in _qkv())
    assert attention_ref(q, k, v).dtype == torch.float16
    torch.testing.assert_close(
        attention_ref(q, k, v, upcast=F64), _naive(q, k, v).half(), atol=1e-3, rtol=1e-3
    )


def test_attention_mask_aligns_queries_to_the_end_of_the_keys():
    mask = attention_mask(2, 4, causal=True, key_padding_mask=None, device=torch.device("cpu"))
    assert mask.tolist() == [[True, True, True, False], [True, True, True, True]]
    kpm = torch.tensor([[True, True, False, False]])
    both = attention_mask(2, 4, True, kpm, torch.device("cpu"))  # (1, 1, 2, 4)
    assert both.shape == (1, 1, 2, 4)
    assert both[0, 0].tolist() == [[True, True, False, False], [True, True, False, False]]
    assert attention_mask(3, 3, False, None, torch.device("cpu")) is None


def test_repeat_kv_serves_consecutive_query_heads():
    k = torch.arange(2.0).view(1, 2, 1, 1).expand(1, 2, 3, 4)  # head index as value
    r = repeat_kv(k, 3)  # (1, 6, 3, 4)
    assert r.shape == (1, 6, 3, 4)
    assert r[0, :, 0, 0].tolist() == [0, 0, 0, 1, 1, 1]
    assert repeat_kv(k, 1) is k


@pytest.mark.parametrize("backend", ["ref", "sdpa", "flash", "auto"])
@pytest.mark.parametrize("causal,pad", MASKS)
def test_gqa_matches_per_group_reference(backend, causal, pad):
    """1 < Hkv < H: query head h must read key/value head h // (H / Hkv), checked against the
    test's own loop over heads (not against repeat_kv, which every backend shares)."""
    q, k, v = (x.to(F64) for x in _qkv(H=6, Hkv=2))
    kpm = torch.tensor([[True] * 11, [True] * 6 + [False] * 5]) if pad else None
    got = attention(q, k, v, causal, kpm, backend=backend)
    torch.testing.assert_close(got, _naive(q, k, v, causal, kpm), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend", ["ref", "sdpa", "flash"])
def test_fp64_inputs_are_computed_in_fp64(backend):
    """No silent fp32 step: fp64 attention is exact to 1e-12 against the fp64 formula."""
    q, k, v = (x.to(F64) for x in _qkv(T=13, S=13))
    got = attention(q, k, v, causal=True, backend=backend)
    assert got.dtype == F64
    torch.testing.assert_close(got, _naive(q, k, v, causal=True), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("backend", ["sdpa", "flash"])
@pytest.mark.parametrize("T,S", [(7, 11), (11, 7), (9, 9)])
@pytest.mark.parametrize("causal,pad", MASKS)
def test_backends_equal_ref(backend, T, S, causal, pad):
    q, k, v = _qkv(T=T, S=S)
    kpm = torch.tensor([[True] * S, [True] * 3 + [False] * (S - 3)]) if pad else None
    want = attention_ref(q, k, v, causal, kpm)
    torch.testing.assert_close(attention(q, k, v, causal, kpm, backend), want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["ref", "sdpa", "flash"])
def test_rows_with_no_visible_key_output_zero(backend):
    q, k, v = _qkv(T=9, S=5)
    kpm = torch.tensor([[True] * 5, [False] * 5])  # batch 1 sees nothing
    out = attention(q, k, v, causal=True, key_padding_mask=kpm, backend=backend)
    assert torch.isfinite(out).all()
    assert torch.all(out[1] == 0)
    assert torch.all(out[0, :, : 9 - 5] == 0)  # causal with T > S: queries 0..3 see no key
    assert out[0, :, 9 - 5 :].abs().sum() > 0


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])  # MHA, GQA, MQA
def test_module_matches_manual_computation(n_kv_heads):
    torch.manual_seed(0)
    attn = Attention(d_model=32, n_heads=4, n_kv_heads=n_kv_heads, causal=True, backend="ref")
    assert attn.wk.weight.shape == (n_kv_heads * 8, 32)
    x = torch.randn(2, 5, 32)
    q = attn.wq(x).view(2, 5, 4, 8).transpose(1, 2)  # (B, H, T, D)
    k = attn.wk(x).view(2, 5, n_kv_heads, 8).transpose(1, 2)  # (B, Hkv, T, D)
    v = attn.wv(x).view(2, 5, n_kv_heads, 8).transpose(1, 2)
    y = _naive(q, k, v, causal=True).float().transpose(1, 2).reshape(2, 5, 32)
    torch.testing.assert_close(attn(x), attn.wo(y), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["sdpa", "flash", "auto"])
def test_module_backends_agree_with_ref_in_cross_attention(backend):
    torch.manual_seed(0)
    attn = Attention(d_model=32, n_heads=4, n_kv_heads=2, backend="ref")
    x, ctx = torch.randn(3, 5, 32), torch.randn(3, 9, 32)
    kpm = torch.arange(9)[None, :] < torch.tensor([[9], [4], [1]])  # (B, S)
    want = attn(x, context=ctx, key_padding_mask=kpm)
    attn.backend = backend
    got = attn(x, context=ctx, key_padding_mask=kpm)
    assert got.shape == (3, 5, 32)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("backend", ["ref", "sdpa", "flash"])
def test_module_gradients_match_the_naive_formula(backend):
    """Gradients of x and of every projection against autograd through the test's fp64 loop."""
    torch.manual_seed(0)
    attn = Attention(d_model=16, n_heads=4, n_kv_heads=2, causal=True, backend=backend).double()
    x = torch.randn(2, 6, 16, dtype=F64, requires_grad=True)
    attn(x).square().sum().backward()
    got = [x.grad, *(p.grad for p in attn.parameters())]

    x_ref = x.detach().clone().requires_grad_()
    params = [p.detach().clone().requires_grad_() for p in attn.parameters()]
    wq, bq, wk, bk, wv, bv, wo, bo = params

    def heads(y, n):
        return y.view(2, 6, n, 4).transpose(1, 2)  # (B, n, T, D)

    q = heads(x_ref @ wq.T + bq, 4)
    k, v = heads(x_ref @ wk.T + bk, 2), heads(x_ref @ wv.T + bv, 2)
    y = _naive(q, k, v, causal=True).transpose(1, 2).reshape(2, 6, 16)
    (y @ wo.T + bo).square().sum().backward()
    want = [x_ref.grad, *(p.grad for p in params)]
    for g, w in zip(got, want, strict=True):
        assert g.abs().sum() > 0
        torch.testing.assert_close(g, w, atol=1e-10, rtol=1e-10)


@pytest.mark.parametrize("causal,pad", MASKS)
def test_ref_scale_argument_against_the_naive_formula(causal, pad):
    """`scale` is used in place of 1/√D: against the naive formula with q pre-multiplied by
    scale·√D (every other argument set as well: causal with S > T, padding, GQA)."""
    q, k, v = (x.to(F64) for x in _qkv(T=5, S=9, D=8))
    kpm = torch.rand(2, 9, generator=torch.Generator().manual_seed(2)) > 0.3 if pad else None
    got = attention_ref(q, k, v, causal, kpm, scale=0.3, upcast=F64)
    want = _naive(q * 0.3 * math.sqrt(8), k, v, causal, kpm)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
    assert not torch.allclose(got, attention_ref(q, k, v, causal, kpm, upcast=F64))


def _kernel_spy(name, calls):
    """A stand-in kernel that records which one ran and the mask arguments it was given."""

    def kernel(q, k, v, causal=False, key_padding_mask=None):
        calls.append((name, causal, key_padding_mask))
        return torch.zeros_like(q)

    return kernel


def test_backend_names_pick_their_kernel_with_every_argument(monkeypatch):
    """Each backend name reaches its own kernel with `causal` and the padding mask passed on;
    no name given means 'auto' and non-causal; 'auto' takes Triton only for CUDA tensors (a CPU
    tensor here, with Triton's own check patched to say yes)."""
    import repro.nn.attention as A
    from repro.nn import flash, flash_triton

    calls = []
    monkeypatch.setattr(A, "attention_ref", _kernel_spy("ref", calls))
    monkeypatch.setattr(A, "_attention_sdpa", _kernel_spy("sdpa", calls))
    monkeypatch.setattr(flash, "flash_attention", _kernel_spy("flash", calls))
    monkeypatch.setattr(flash_triton, "flash_attention_triton", _kernel_spy("triton", calls))
    monkeypatch.setattr(flash_triton, "supports", lambda *args: True)
    q, k, v = _qkv()
    kpm = torch.ones(2, 11, dtype=torch.bool)
    for backend in ["ref", "sdpa", "flash", "auto"]:
        attention(q, k, v, True, kpm, backend=backend)
    attention(q, k, v)
    assert [c[0] for c in calls] == ["ref", "sdpa", "flash", "flash", "flash"]
    assert all(c[1] is True and c[2] is kpm for c in calls[:4])
    assert calls[4][1:] == (False, None)
    # a misspelt name is refused, not sent to the flash kernel
    for wrong in ["REF", "Flash", "triton", ""]:
        with pytest.raises(ValueError, match=f"unknown attention backend '{wrong}'"):
            attention(q, k, v, backend=wrong)
    assert len(calls) == 5


def test_module_passes_its_backend_mask_and_position_zero(monkeypatch):
    """Attention.forward hands the kernel its own backend, causal flag and the padding mask, and
    rotates q and k at position 0 unless told otherwise (then at start_pos)."""
    import repro.nn.attention as A

    seen = []

    def kernel(q, k, v, causal, key_padding_mask, backend):
        seen.append((causal, key_padding_mask, backend))
        return torch.zeros_like(q)

    monkeypatch.setattr(A, "attention", kernel)
    positions = []

    def rope(x, start_pos):
        positions.append(start_pos)
        return x

    attn = Attention(d_model=16, n_heads=4, n_kv_heads=2, causal=True, backend="sdpa")
    kpm = torch.tensor([[True, True, False], [True, False, False]])
    attn(torch.randn(2, 3, 16), key_padding_mask=kpm, rope=rope)
    attn(torch.randn(2, 3, 16), rope=rope, start_pos=5)
    assert seen[0][0] is True and seen[0][1] is kpm and seen[0][2] == "sdpa"
    assert positions == [0, 0, 5, 5]  # q then k
    plain = Attention(d_model=16, n_heads=4)  # defaults: MHA, non-causal, 'auto'
    assert plain.n_kv_heads == 4 and plain.wk.weight.shape == (16, 16)
    plain(torch.randn(1, 3, 16))
    assert seen[-1] == (False, None, "auto")


@pytest.mark.parametrize("T", [1, 2, 3])
def test_sdpa_causal_with_fewer_queries_than_keys(T):
    """No padding, causal, T < S: only T = 1 may drop the mask (its one query sees every key);
    T = 2 and 3 must keep it. Against the test's own loop."""
    q, k, v = (x.to(F64) for x in _qkv(T=T, S=6))
    got = attention(q, k, v, causal=True, backend="sdpa")
    torch.testing.assert_close(got, _naive(q, k, v, causal=True), atol=1e-12, rtol=1e-12)
    if T > 1:
        assert not torch.allclose(got, _naive(q, k, v))


@pytest.mark.parametrize("backend", ["ref", "sdpa"])
def test_masks_are_built_on_the_inputs_device(backend):
    """Causal + padding masks follow q's device (what CUDA inputs need), checked on CPU with
    meta tensors: a mask left on the CPU raises against meta q/k/v."""
    q = torch.empty(2, 4, 3, 8, device="meta")
    k = torch.empty(2, 2, 5, 8, device="meta")
    kpm = torch.ones(2, 5, dtype=torch.bool, device="meta")
    out = attention(q, k, k, True, kpm, backend=backend)
    assert out.device.type == "meta" and out.shape == q.shape


def test_ref_default_upcast_is_fp32_for_half_inputs():
    """upcast=None means 'at least fp32': on fp16 inputs the default is the fp32 computation,
    bit for bit, and not the fp16 one (which rounds differently on these inputs)."""
    q, k, v = (x.half() * 3 for x in _qkv(T=6, S=6))
    got = attention_ref(q, k, v, causal=True)
    assert torch.equal(got, attention_ref(q, k, v, causal=True, upcast=torch.float32))
    assert not torch.equal(got, attention_ref(q, k, v, causal=True, upcast=torch.float16))


def test_module_without_bias_has_no_bias_anywhere():
    attn = Attention(d_model=16, n_heads=4, n_kv_heads=2, bias=False)
    assert [attn.wq.bias, attn.wk.bias, attn.wv.bias, attn.wo.bias] == [None] * 4
    biased = Attention(d_model=16, n_heads=4, n_kv_heads=2)  # bias=True by default
    assert all(lin.bias is not None for lin in (biased.wq, biased.wk, biased.wv, biased.wo))
