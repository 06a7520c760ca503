from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from repro.nn.ssm import discretize, linear_scan, selective_scan, selective_scan_ref

f64 = torch.float64


def _inputs(Bsz: int, L: int, D: int, N: int, selective: bool = True, seed: int = 0):
    g = torch.Generator().manual_seed(seed)

    def r(*shape):
        return torch.randn(*shape, generator=g, dtype=f64)

    u, z = r(Bsz, L, D), r(Bsz, L, D)
    delta = F.softplus(r(Bsz, L, D))  # (B, L, D), > 0
    A = -torch.rand(D, N, generator=g, dtype=f64) * 2 - 0.1  # (D, N), < 0
    Bt, Ct = (r(Bsz, L, N), r(Bsz, L, N)) if selective else (r(D, N), r(D, N))
    return u, delta, A, Bt, Ct, r(D), z, r(Bsz, D, N)


def _unrolled(u, delta, A, Bt, Ct, D, h0, zoh: bool = False, z=None):
    """y_t = (C_t·(∏_{r≤t} Ā_r h0 + Σ_{s≤t} (∏_{s<r≤t} Ā_r) B̄_s x_s) + D x_t)·SiLU(z_t), term by
    term with Python floats: independent of the library's discretisation, scan and gate."""
    Bsz, L, Dch = u.shape
    N = A.shape[1]
    y = torch.zeros(Bsz, L, Dch, dtype=f64)
    for b in range(Bsz):
        for d in range(Dch):
            for n in range(N):
                a = A[d, n].item()

                def bmat(m, t, b=b, d=d, n=n):
                    return (m[b, t, n] if m.dim() == 3 else m[d, n]).item()

                for t in range(L):
                    decay = math.prod(math.exp(delta[b, r, d].item() * a) for r in range(t + 1))
                    h = decay * h0[b, d, n].item()
                    for s in range(t + 1):
                        dt = delta[b, s, d].item()
                        bbar = (math.expm1(dt * a) / a if zoh else dt) * bmat(Bt, s)
                        carry = math.prod(
                            math.exp(delta[b, r, d].item() * a) for r in range(s + 1, t + 1)
                        )
                        h += carry * bbar * u[b, s, d].item()
                    y[b, t, d] += bmat(Ct, t) * h
    y = y + u * D  # the skip comes before the gate (official selective_scan_ref)
    if z is not None:
        for b, t, d in itertools.product(range(Bsz), range(L), range(Dch)):
            zv = z[b, t, d].item()
            y[b, t, d] *= zv / (1 + math.exp(-zv))  # SiLU(z) = z·σ(z)
    return y


@pytest.mark.parametrize("selective", [True, False])
@pytest.mark.parametrize("zoh", [False, True])
@pytest.mark.parametrize("gated", [True, False])
@pytest.mark.parametrize("scan", [selective_scan_ref, selective_scan])
def test_scans_equal_the_unrolled_sum(selective: bool, zoh: bool, gated: bool, scan) -> None:
    """Every argument Mamba's block passes (D, z, h0, both discretisations), against Python
    floats: a D·u skip moved after the SiLU(z) gate, or a gate on the wrong tensor, fails here."""
    u, delta, A, Bt, Ct, D, z, h0 = _inputs(2, 5, 3, 2, selective)
    z = z if gated else None
    y, h = scan(u, delta, A, Bt, Ct, D, z, h0, discretization="zoh" if zoh else "simplified")
    want = _unrolled(u, delta, A, Bt, Ct, D, h0, zoh, z)
    torch.testing.assert_close(y, want, rtol=0, atol=1e-12)
    # the last state read out with C_L alone (no skip, no gate) is y_L's SSM part
    C_last = Ct[:, -1] if Ct.dim() == 3 else Ct.expand(2, -1, -1)
    y_last = torch.einsum("bdn,bn->bd", h, C_last) if Ct.dim() == 3 else (h * C_last).sum(-1)
    ssm_part = _unrolled(u, delta, A, Bt, Ct, torch.zeros_like(D), h0, zoh)[:, -1]
    torch.testing.assert_close(y_last, ssm_part, rtol=0, atol=1e-12)


def test_discretize_matches_eq4_elementwise() -> None:
    u, delta, A, Bt, _, _, _, _ = _inputs(1, 3, 2, 2)
    A_bar, B_simple = discretize(delta, A, Bt)
    _, B_zoh = discretize(delta, A, Bt, "zoh")
    for t in range(3):
        for d in range(2):
            for n in range(2):
                dA = delta[0, t, d].item() * A[d, n].item()
                assert A_bar[0, t, d, n].item() == pytest.approx(math.exp(dA), rel=1e-14)
                b = Bt[0, t, n].item()
                assert B_simple[0, t, d, n].item() == pytest.approx(delta[0, t, d].item() * b)
                zoh = (math.exp(dA) - 1) / dA * delta[0, t, d].item() * b  # (ΔA)⁻¹(e^{ΔA}−1)ΔB
                assert B_zoh[0, t, d, n].item() == pytest.approx(zoh, rel=1e-12)


def test_simplified_b_exceeds_zoh_by_half_delta_a() -> None:
    """ΔB / B̄_ZOH = ΔA / (e^{ΔA} − 1) = 1 − ΔA/2 + O((ΔA)²): larger by ≈ Δ|A|/2 for A < 0."""
    delta = torch.tensor([[[1e-3, 1e-2, 1e-1]]], dtype=f64)  # (1, 1, 3)
    A = -torch.ones(3, 1, dtype=f64)
    Bt = torch.ones(1, 1, 1, dtype=f64)
    _, simple = discretize(delta, A, Bt)
    _, zoh = discretize(delta, A, Bt, "zoh")
    excess = (simple / zoh - 1).flatten()
    torch.testing.assert_close(excess, delta.flatten() / 2, rtol=0.05, atol=0)


@pytest.mark.parametrize("L", [1, 2, 7, 31, 32, 33, 97, 1025])
@pytest.mark.parametrize("with_h0", [False, True])
@pytest.mark.parametrize("selective", [True, False])
def test_parallel_scan_equals_loop_fp64(L: int, with_h0: bool, selective: bool) -> None:
    u, delta, A, Bt, Ct, D, z, h0 = _inputs(3 if L < 100 else 1, L, 4, 3, selective)
    h0 = h0 if with_h0 else None
    y_ref, h_ref = selective_scan_ref(u, delta, A, Bt, Ct, D, z, h0)
    for chunk in (2, 5, 32):
        y, h = selective_scan(u, delta, A, Bt, Ct, D, z, h0, chunk=chunk)
        torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-10)
        torch.testing.assert_close(h, h_ref, rtol=0, atol=1e-10)


def test_parallel_scan_gradients_equal_loop_gradients() -> None:
    inputs = [t.requires_grad_() for t in _inputs(2, 37, 3, 2)]
    u, delta, A, Bt, Ct, D, z, h0 = inputs
    w = torch.randn(2, 37, 3, dtype=f64)
    grads = []
    for scan in (selective_scan_ref, selective_scan):
        y, h = scan(u, delta, A, Bt, Ct, D, z, h0)
        grads.append(torch.autograd.grad((y * w).sum() + h.sum(), inputs))
    for g_ref, g_par in zip(*grads, strict=True):
        torch.testing.assert_close(g_par, g_ref, rtol=0, atol=1e-10)


def test_linear_scan_gradcheck() -> None:
    g = torch.Generator().manual_seed(3)
    a = torch.rand(2, 9, 2, generator=g, dtype=f64).requires_grad_()
    b = torch.randn(2, 9, 2, generator=g, dtype=f64).requires_grad_()
    h0 = torch.randn(2, 2, generator=g, dtype=f64).requires_grad_()
    assert torch.autograd.gradcheck(lambda a, b, h0: linear_scan(a, b, h0, chunk=2), (a, b, h0))


@pytest.mark.parametrize("scan", [selective_scan_ref, selective_scan])
def test_initial_state_continues_a_split_sequence(scan) -> None:
    """Scanning x₁‖x₂ equals scanning x₁, then x₂ from x₁'s final state: what decoding relies on."""
    u, delta, A, Bt, Ct, D, z, _ = _inputs(2, 40, 3, 4)
    y_full, h_full = scan(u, delta, A, Bt, Ct, D, z)
    cut = 23
    y1, h1 = scan(u[:, :cut], delta[:, :cut], A, Bt[:, :cut], Ct[:, :cut], D, z[:, :cut])
    y2, h2 = scan(u[:, cut:], delta[:, cut:], A, Bt[:, cut:], Ct[:, cut:], D, z[:, cut:], h1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y_full, rtol=0, atol=1e-12)
    torch.testing.assert_close(h2, h_full, rtol=0, atol=1e-12)


def test_theorem1_selective_ssm_is_a_gated_rnn() -> None:
    """§3.5.1: N = 1, A = −1, B = 1, Δ = softplus(z_t), ZOH -> h_t = (1 − g_t)h_{t−1} + g_t x_t."""
    g = torch.Generator().manual_seed(0)
    L = 50
    x = torch.randn(2, L, 3, generator=g, dtype=f64)
    pre = 3 * torch.randn(2, L, 3, generator=g, dtype=f64)  # Linear(x_t)
    A, Bt, Ct = (
        -torch.ones(3, 1, dtype=f64),
        torch.ones(3, 1, dtype=f64),
        torch.ones(3, 1, dtype=f64),
    )
    y, _ = selective_scan_ref(x, F.softplus(pre), A, Bt, Ct, discretization="zoh")
    gate = torch.sigmoid(pre)
    h, rnn = torch.zeros(2, 3, dtype=f64), []
    for t in range(L):
        h = (1 - gate[:, t]) * h + gate[:, t] * x[:, t]
        rnn.append(h)
    torch.testing.assert_close(y, torch.stack(rnn, 1), rtol=0, atol=1e-12)


def test_loop_is_usable_in_fp32_and_matches_fp64() -> None:
    u, delta, A, Bt, Ct, D, z, h0 = _inputs(2, 64, 8, 4)
    y64, _ = selective_scan_ref(u, delta, A, Bt, Ct, D, z, h0)
    y32, _ = selective_scan(*(t.float() for t in (u, delta, A, Bt, Ct, D, z, h0)))
    torch.testing.assert_close(y32.double(), y64, rtol=1e-4, atol=1e-4)
