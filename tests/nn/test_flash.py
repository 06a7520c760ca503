"""Tiled FlashAttention (repro.nn.flash) against attention_ref in fp64: outputs and gradients."""

from __future__ import annotations

import pytest
import torch

from repro.nn.attention import attention_ref, repeat_kv
from repro.nn.flash import flash_attention

F64 = torch.float64


def _inputs(B, H, Hkv, T, S, D, dtype=torch.float32, pad=False, seed=0):
    g = torch.Generator().manual_seed(seed)
    q = torch.randn(B, H, T, D, generator=g).to(dtype).requires_grad_()
    k = torch.randn(B, Hkv, S, D, generator=g).to(dtype).requires_grad_()
    v = torch.randn(B, Hkv, S, D, generator=g).to(dtype).requires_grad_()
    kpm = None
    if pad:  # ragged lengths; the last batch element (when B > 1) has no key at all
        lengths = torch.randint(1, S + 1, (B,), generator=g)
        if B > 1:
            lengths[-1] = 0
        kpm = torch.arange(S)[None, :] < lengths[:, None]  # (B, S)
    return q, k, v, kpm


def _fwd_bwd(fn, q, k, v, dout):
    """Output and (dq, dk, dv) of fn for the upstream gradient dout."""
    out = fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), dout))


# (B, H, Hkv, T, S, D, causal, pad, block_q, block_k): awkward lengths, head dims, GQA/MQA,
# decoding T = 1, causal with T < S and T > S, batch 1 and 3, padding; tiles small enough that
# every case crosses several tile boundaries.
CASES = [
    (1, 2, 2, 1, 1, 64, False, False, 16, 32),
    (1, 2, 2, 97, 97, 40, False, False, 16, 32),
    (1, 2, 2, 97, 97, 80, True, False, 16, 32),
    (1, 2, 1, 1000, 1000, 64, True, False, 128, 256),
    (1, 1, 1, 1025, 1025, 128, False, False, 256, 256),
    (3, 2, 1, 257, 257, 64, True, True, 64, 128),
    (3, 4, 2, 1, 97, 64, True, False, 16, 32),  # decode step
    (1, 4, 1, 1, 97, 40, False, True, 16, 32),  # MQA decode
    (3, 4, 2, 37, 97, 64, True, False, 16, 32),  # causal, T < S
    (3, 4, 1, 97, 37, 80, True, False, 16, 32),  # causal, T > S: the first 60 rows see nothing
    (3, 6, 3, 97, 97, 40, False, True, 16, 32),
    (3, 6, 3, 97, 130, 128, True, True, 32, 16),
    (1, 2, 2, 300, 300, 64, True, False, None, None),  # default tiles
]


@pytest.mark.parametrize("B,H,Hkv,T,S,D,causal,pad,block_q,block_k", CASES)
def test_fp32_matches_fp64_reference(B, H, Hkv, T, S, D, causal, pad, block_q, block_k):
    q, k, v, kpm = _inputs(B, H, Hkv, T, S, D, pad=pad)
    dout = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(1))
    got = _fwd_bwd(
        lambda q, k, v: flash_attention(q, k, v, causal, kpm, block_q=block_q, block_k=block_k),
        q, k, v, dout,
    )  # fmt: skip
    want = _fwd_bwd(
        lambda q, k, v: attention_ref(q, k, v, causal, kpm, upcast=F64).to(F64), q, k, v, dout
    )
    for name, a, b in zip(("out", "dq", "dk", "dv"), got, want, strict=True):
        assert a.dtype == torch.float32, name
        torch.testing.assert_close(a.to(F64), b.to(F64), atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "B,H,Hkv,T,S,D,causal,pad",
    [(1, 2, 2, 97, 97, 64, True, False), (3, 4, 2, 65, 130, 40, True, True),
     (1, 4, 1, 130, 65, 80, False, False)],
)  # fmt: skip
def test_low_precision_error_at_most_twice_reference(dtype, B, H, Hkv, T, S, D, causal, pad):
    """FlashAttention's rule: |flash - exact| <= 2 |ref in the same dtype - exact|."""
    q, k, v, kpm = _inputs(B, H, Hkv, T, S, D, dtype=dtype, pad=pad)
    dout = torch.randn(B, H, T, D, generator=torch.Generator().manual_seed(1)).to(dtype)
    exact = _fwd_bwd(lambda q, k, v: attention_ref(q, k, v, causal, kpm, upcast=F64), q, k, v, dout)
    ref = _fwd_bwd(lambda q, k, v: attention_ref(q, k, v, causal, kpm, upcast=dtype), q, k, v, dout)
    got = _fwd_bwd(
        lambda q, k, v: flash_attention(q, k, v, causal, kpm, block_q=32, block_k=32),
        q, k, v, dout,
    )  # fmt: skip
    for name, a, r, e in zip(("out", "dq", "dk", "dv"), got, ref, exact, strict=True):
        assert a.dtype == dtype, name
        err = (a.to(F64) - e.to(F64)).abs().max().item()
        ref_err = (r.to(F64) - e.to(F64)).abs().max().item()
        assert err <= 2 * ref_err + 1e-6, f"{name}: flash error {err:.3g}, reference {ref_err:.3g}"


def test_gradcheck_fp64():
    q, k, v, kpm = _inputs(2, 2, 1, 5, 7, 4, dtype=F64, pad=True)
    kpm[0, 0] = False  # a hidden key inside a tile, not only at the end

    def fn(q, k, v):
        return flash_attention(q, k, v, causal=True, key_padding_mask=kpm, block_q=2, block_k=3)

    assert torch.autograd.gradcheck(fn, (q, k, v))


def test_rows_without_visible_keys_output_zero_with_zero_gradient():
    q, k, v, _ = _inputs(2, 2, 2, 8, 5, 16)
    kpm = torch.tensor([[True] * 5, [False] * 5])  # batch 1 has no key at all
    out = flash_attention(q, k, v, causal=True, key_padding_mask=kpm, block_q=2, block_k=2)
    # causal with T > S: query t sees keys j <= t - 3, so queries 0..2 see nothing
    assert torch.all(out[:, :, :3] == 0) and torch.all(out[1] == 0)
    assert out[0, :, 3:].abs().sum() > 0
    dq, dk, dv = torch.autograd.grad(out.sum(), (q, k, v))
    assert all(torch.isfinite(g).all() for g in (dq, dk, dv))
    assert torch.all(dq[1] == 0) and torch.all(dk[1] == 0) and torch.all(dv[1] == 0)


def test_empty_key_or_query_sequences():
    q, k, v, _ = _inputs(1, 4, 2, 3, 0, 8)  # S = 0: every query sees nothing
    out = flash_attention(q, k, v)
    assert out.shape == (1, 4, 3, 8) and torch.all(out == 0)
    (dq,) = torch.autograd.grad(out.sum(), q)
    assert torch.all(dq == 0)
    q, k, v, _ = _inputs(1, 4, 2, 0, 5, 8)  # T = 0
    assert flash_attention(q, k, v, causal=True).shape == (1, 4, 0, 8)


def test_gqa_equals_mha_with_repeated_heads():
    q, k, v, _ = _inputs(2, 6, 2, 50, 70, 32)
    gqa = flash_attention(q, k, v, causal=True, block_q=16, block_k=16)
    mha = flash_attention(q, repeat_kv(k, 3), repeat_kv(v, 3), causal=True, block_q=16, block_k=16)
    torch.testing.assert_close(gqa, mha, atol=1e-6, rtol=1e-6)


def test_tile_sizes_do_not_change_the_result():
    q, k, v, kpm = _inputs(3, 4, 2, 77, 91, 32, pad=True)
    outs = [
        flash_attention(q, k, v, True, kpm, block_q=bq, block_k=bk)
        for bq, bk in [(3, 5), (7, 13), (77, 91), (None, None)]
    ]
    for out in outs[1:]:
        torch.testing.assert_close(out, outs[0], atol=1e-6, rtol=1e-6)


def test_scale_and_non_contiguous_inputs():
    q, k, v, _ = _inputs(2, 4, 4, 33, 33, 16)
    qt = q.detach().transpose(1, 2).contiguous().transpose(1, 2)  # (B, H, T, D) strided view
    got = flash_attention(qt, k, v, scale=0.3, block_q=8, block_k=8)
    want = attention_ref(q, k, v, scale=0.3, upcast=F64)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_bad_head_counts_are_rejected():
    q, k, v, _ = _inputs(1, 4, 3, 5, 5, 8)
    with pytest.raises(ValueError, match="not a multiple"):
        flash_attention(q, k, v)


@pytest.mark.parametrize(
    ("q_shape", "k_shape", "named"),
    [
        ((0, 2, 4, 8), (0, 2, 5, 8), "B = 0"),
        ((1, 0, 4, 8), (1, 0, 5, 8), "H and Hkv = 0"),
        ((1, 2, 4, 8), (1, 0, 5, 8), "Hkv = 0"),
        ((1, 2, 4, 0), (1, 2, 5, 0), "D = 0"),
    ],
)
def test_an_empty_batch_or_head_is_a_value_error_not_a_zero_division(q_shape, k_shape, named):
    q, k = torch.randn(q_shape), torch.randn(k_shape)
    with pytest.raises(ValueError, match=named):
        flash_attention(q, k, k.clone())


def test_mismatched_batches_are_rejected_and_empty_lengths_still_work():
    q, k = torch.randn(2, 2, 4, 8), torch.randn(1, 2, 5, 8)
    with pytest.raises(ValueError, match="batch B=2 but k and v have B=1"):
        flash_attention(q, k, k.clone())
    k2 = k.expand(2, -1, -1, -1)
    assert flash_attention(q[:, :, :0], k2, k2).shape == (2, 2, 0, 8)  # no queries: empty output
    no_keys = torch.zeros(2, 2, 0, 8)
    assert flash_attention(q, no_keys, no_keys).abs().max() == 0  # a query that sees no key: 0


def test_bench_attention_rows():
    from repro.bench.attention import attention_flops, bench_attention

    rows = bench_attention(ns=(64,), causal=(False, True), repeats=1, H=2, D=16)
    assert [(r["causal"], r["pass"]) for r in rows] == [
        (False, "fwd"),
        (False, "fwd+bwd"),
        (True, "fwd"),
        (True, "fwd+bwd"),
    ]
    for r in rows:
        assert r["flash_ms"] > 0 and r["sdpa_ms"] > 0
        assert r["ratio"] == pytest.approx(r["flash_ms"] / r["sdpa_ms"])
        flops = attention_flops(64, r["causal"], r["pass"] == "fwd+bwd", B=1, H=2, D=16)
        assert r["flash_gflops"] == pytest.approx(flops / 1e9 / (r["flash_ms"] / 1e3))
    assert attention_flops(64, True, False) * 2 == attention_flops(64, False, False)


@pytest.mark.slow
def test_forward_memory_grows_linearly_not_quadratically():
    from repro.bench.attention import measure_peak_memory

    n = 4096
    scores = 8 * n * n * 4  # the (B, H, N, N) fp32 matrix the naive formula materialises
    assert measure_peak_memory(n, "naive") > scores
    assert measure_peak_memory(n, "flash") < scores / 8
