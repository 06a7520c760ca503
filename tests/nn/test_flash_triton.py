"""Triton FlashAttention (repro.nn.flash_triton) against attention_ref: forward and backward.

Runs on CUDA with Triton installed. With TRITON_INTERPRET=1 and Triton installed it also runs on
the CPU through Triton's interpreter (slow; the kernels' logic, not their speed).
"""

from __future__ import annotations

import os

import pytest
import torch

from repro.nn import flash_triton
from repro.nn.attention import attention_ref

F64 = torch.float64
INTERPRET = os.environ.get("TRITON_INTERPRET") == "1"
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

pytestmark = [
    pytest.mark.gpu,  # without CUDA (and TRITON_INTERPRET=1): skipped by tests/conftest.py
    pytest.mark.skipif(
        flash_triton.triton is None,
        reason="needs the [triton] extra: pip install -e '.[triton]'",
    ),
]


def _fwd_bwd(fn, q, k, v, dout):
    out = fn(q, k, v)
    return (out, *torch.autograd.grad(out, (q, k, v), dout))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
@pytest.mark.parametrize(
    "B,H,Hkv,T,S,D,causal",
    [
        (2, 4, 4, 97, 97, 64, False),
        (2, 4, 4, 97, 97, 64, True),
        (1, 8, 2, 130, 130, 32, True),  # GQA
        (1, 4, 1, 1, 77, 128, True),  # MQA decode step
        (2, 4, 2, 40, 150, 16, True),  # causal, T < S
        (2, 4, 2, 150, 40, 64, True),  # causal, T > S: the first 110 rows see nothing
    ],
)
def test_matches_reference(dtype, B, H, Hkv, T, S, D, causal):
    """FlashAttention's rule: |triton - exact| <= 2 |ref in the same dtype - exact|."""
    if DEVICE == "cpu" and dtype == torch.bfloat16:
        pytest.skip("Triton's interpreter computes bf16 tl.dot wrongly; bf16 is checked on CUDA")
    g = torch.Generator().manual_seed(0)

    def randn(*shape):
        return torch.randn(*shape, generator=g).to(DEVICE, dtype).requires_grad_()

    q, k, v = randn(B, H, T, D), randn(B, Hkv, S, D), randn(B, Hkv, S, D)
    assert flash_triton.supports(q, k, v, None) == (DEVICE == "cuda")
    dout = torch.randn(B, H, T, D, generator=g).to(DEVICE, dtype)
    exact = _fwd_bwd(lambda q, k, v: attention_ref(q, k, v, causal, upcast=F64), q, k, v, dout)
    ref = _fwd_bwd(lambda q, k, v: attention_ref(q, k, v, causal, upcast=dtype), q, k, v, dout)
    got = _fwd_bwd(
        lambda q, k, v: flash_triton.FlashAttentionTriton.apply(q, k, v, causal, D**-0.5),
        q, k, v, dout,
    )  # fmt: skip
    for name, a, r, e in zip(("out", "dq", "dk", "dv"), got, ref, exact, strict=True):
        assert a.dtype == dtype and torch.isfinite(a).all(), name
        err = (a.to(F64) - e.to(F64)).abs().max().item()
        ref_err = (r.to(F64) - e.to(F64)).abs().max().item()
        assert err <= 2 * ref_err + 1e-5, f"{name}: triton error {err:.3g}, reference {ref_err:.3g}"


def test_supports_only_what_the_kernels_handle():
    q = torch.randn(1, 2, 8, 64, device=DEVICE, dtype=torch.float16)
    on_cuda = DEVICE == "cuda"
    assert flash_triton.supports(q, q, q, None) == on_cuda
    assert not flash_triton.supports(q, q, q, torch.ones(1, 8, dtype=torch.bool, device=DEVICE))
    assert not flash_triton.supports(q.float(), q.float(), q.float(), None)
    q40 = torch.randn(1, 2, 8, 40, device=DEVICE, dtype=torch.float16)
    assert not flash_triton.supports(q40, q40, q40, None)
