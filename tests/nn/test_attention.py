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
