"""Cases for tests/nn/test_flash_triton_cpu.py, run in a subprocess with TRITON_INTERPRET=1.

Triton's interpreter must be on before Triton is first imported (its standard library is
decorated at import), so these run in a fresh interpreter; pytest does not collect this file.
fp32 and fp16, a few shapes (GQA, MQA with T < S, more than one tile), forward and backward
against the fp64 formula.
"""

from __future__ import annotations

import math
import os

import pytest
import torch

from repro.nn import flash_triton

assert os.environ.get("TRITON_INTERPRET") == "1", "run through tests/nn/test_flash_triton_cpu.py"
assert flash_triton.triton is not None

F64 = torch.float64


def _naive(q, k, v, causal):
    """softmax(q kᵀ/√D) v in fp64, head h reading kv head h // G; queries aligned to the end."""
    B, H, T, D = q.shape
    S, G = k.shape[2], H // k.shape[1]
    q, k, v = q.to(F64), k.to(F64), v.to(F64)
    out = torch.empty(B, H, T, D, dtype=F64)
    for h in range(H):
        s = q[:, h] @ k[:, h // G].transpose(-1, -2) / math.sqrt(D)  # (B, T, S)
        if causal:
            s = s.masked_fill(torch.ones(T, S, dtype=torch.bool).triu(S - T + 1), -math.inf)
        out[:, h] = torch.softmax(s, -1).nan_to_num(0.0) @ v[:, h // G]
    return out


@pytest.mark.parametrize("dtype,atol", [(torch.float32, 1e-5), (torch.float16, 4e-3)])
@pytest.mark.parametrize(
    "B,H,Hkv,T,S,D,causal",
    [
        (1, 4, 2, 33, 33, 16, True),  # GQA
        (1, 2, 1, 20, 45, 32, True),  # MQA, T < S: queries aligned to the end of the keys
        (1, 2, 2, 130, 70, 16, False),  # more than one query and key tile (128 / 64)
    ],
)
def test_forward_and_backward_match_the_formula(dtype, atol, B, H, Hkv, T, S, D, causal):
    g = torch.Generator().manual_seed(0)
    q = torch.randn(B, H, T, D, generator=g).to(dtype).requires_grad_()
    k = torch.randn(B, Hkv, S, D, generator=g).to(dtype).requires_grad_()
    v = torch.randn(B, Hkv, S, D, generator=g).to(dtype).requires_grad_()
    dout = torch.randn(B, H, T, D, generator=g).to(dtype)
    out = flash_triton.FlashAttentionTriton.apply(q, k, v, causal, D**-0.5)
    grads = torch.autograd.grad(out, (q, k, v), dout)
    ref = [t.detach().to(F64).requires_grad_() for t in (q, k, v)]
    want = _naive(*ref, causal)
    want_grads = torch.autograd.grad(want, ref, dout.to(F64))
    for name, got, exp in zip(
        ("out", "dq", "dk", "dv"), (out, *grads), (want, *want_grads), strict=True
    ):
        assert got.dtype == dtype, name
        torch.testing.assert_close(
            got.to(F64), exp, atol=atol * 10 if name != "out" else atol, rtol=atol, msg=name
        )
