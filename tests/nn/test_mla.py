"""repro.nn.mla: naive vs absorbed MLA, an independent per-head reference, the latent cache."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from repro.nn.kv_cache import KVCache
from repro.nn.mla import (
    LatentKVCache,
    MLAConfig,
    MultiHeadLatentAttention,
    mha_cache_elems_per_token,
    mla_cache_elems_per_token,
)
from repro.nn.positional import apply_rope_ref

F64 = torch.float64
TOL = dict(atol=1e-12, rtol=1e-12)


def mla(q_rank: int | None = 28, seed: int = 0, **kw) -> MultiHeadLatentAttention:
    torch.manual_seed(seed)
    cfg = MLAConfig(d_model=40, n_heads=4, head_dim=10, rope_dim=6, kv_rank=18, q_rank=q_rank,
                    max_seq_len=48, **kw)  # fmt: skip
    m = MultiHeadLatentAttention(cfg).double()
    with torch.no_grad():
        for mod in m.modules():
            if isinstance(mod, nn.Linear):
                mod.weight.normal_(0, mod.in_features**-0.5)
            elif hasattr(mod, "weight"):  # RMSNorm gains away from 1
                mod.weight.copy_(1 + 0.3 * torch.randn_like(mod.weight))
    return m.eval()


def per_head_reference(m: MultiHeadLatentAttention, x: torch.Tensor) -> torch.Tensor:
    """Appendix C (Eq. 37-47) written head by head and token by token, RoPE from the explicit
    rotation matrices of `apply_rope_ref`, causal softmax over j <= t. x (B, T, C)."""
    cfg = m.cfg
    B, T, _ = x.shape
    H, D, Dr = cfg.n_heads, cfg.head_dim, cfg.rope_dim
    rms = lambda v, norm: v / v.pow(2).mean(-1, keepdim=True).add(cfg.norm_eps).sqrt() * norm.weight  # noqa: E731
    if cfg.q_rank is None:
        qc_all, qr_all = x @ m.wq.weight.T, x @ m.wqr.weight.T
    else:
        cq = rms(x @ m.wdq.weight.T, m.q_norm)
        qc_all, qr_all = cq @ m.wuq.weight.T, cq @ m.wqr.weight.T
    ckv = rms(x @ m.wdkv.weight.T, m.kv_norm)  # (B, T, Lc)
    kr = apply_rope_ref((x @ m.wkr.weight.T)[:, None], 0, cfg.rope_base)[:, 0]  # (B, T, Dr)
    out = torch.zeros(B, T, H * D, dtype=x.dtype)
    for i in range(H):
        qc = qc_all[..., i * D : (i + 1) * D]
        qr = apply_rope_ref(qr_all[..., i * Dr : (i + 1) * Dr][:, None], 0, cfg.rope_base)[:, 0]
        kc = ckv @ m.wuk.weight[i * D : (i + 1) * D].T  # (B, T, D)
        vc = ckv @ m.wuv.weight[i * D : (i + 1) * D].T
        q = torch.cat([qc, qr], -1)  # Eq. 40
        k = torch.cat([kc, kr], -1)  # Eq. 44
        for t in range(T):
            s = (k[:, : t + 1] @ q[:, t, :, None])[..., 0] / math.sqrt(D + Dr)  # (B, t+1)
            out[:, t, i * D : (i + 1) * D] = (s.softmax(-1)[..., None] * vc[:, : t + 1]).sum(1)
    return out @ m.wo.weight.T  # Eq. 47


@pytest.mark.parametrize("q_rank", [28, None])
@pytest.mark.parametrize(("B", "T"), [(1, 1), (3, 13)])
@torch.no_grad()
def test_both_paths_equal_the_per_head_reference(q_rank, B, T):
    m = mla(q_rank)
    x = torch.randn(B, T, 40, dtype=F64)
    ref = per_head_reference(m, x)
    torch.testing.assert_close(m.forward_naive(x), ref, **TOL)
    torch.testing.assert_close(m.forward_absorbed(x), ref, **TOL)


@torch.no_grad()
def test_reference_sees_a_wrong_scale():
    """The reference is sensitive: scaling by 1/√D instead of 1/√(D + Dr) is caught."""
    m = mla()
    x = torch.randn(2, 9, 40, dtype=F64)
    ref = per_head_reference(m, x)
    m.scale = 1 / math.sqrt(m.cfg.head_dim)
    assert (m.forward_absorbed(x) - ref).abs().max() > 1e-3


@pytest.mark.parametrize("path", ["naive", "absorbed"])
@pytest.mark.parametrize("q_rank", [28, None])
@torch.no_grad()
def test_cached_decoding_equals_full_forward(path, q_rank):
    m = mla(q_rank)
    x = torch.randn(2, 23, 40, dtype=F64)
    full = m.forward_naive(x)
    step = m.forward_absorbed if path == "absorbed" else m.forward_naive
    cache = LatentKVCache(2, 48, m.cfg.kv_rank, m.cfg.rope_dim, F64)
    chunks = [(0, 9), (9, 10), (10, 16), *[(t, t + 1) for t in range(16, 23)]]
    for a, b in chunks:  # prefill, one token, a chunk, then token by token (start_pos = a)
        torch.testing.assert_close(step(x[:, a:b], cache, a), full[:, a:b], **TOL)


@torch.no_grad()
def test_cache_holds_the_latents_at_their_positions():
    m = mla()
    x = torch.randn(1, 7, 40, dtype=F64)
    cache = LatentKVCache(1, 48, m.cfg.kv_rank, m.cfg.rope_dim, F64)
    m.forward_absorbed(x[:, :4], cache, 0)
    m.forward_absorbed(x[:, 4:], cache, 4)
    c, kr = m.latents(x, 0)
    torch.testing.assert_close(cache.c[:, :7], c, **TOL)
    torch.testing.assert_close(cache.k_rope[:, :7], kr, **TOL)
    assert cache.c[:, 7:].abs().max() == 0


def test_cache_rejects_positions_outside_it():
    cache = LatentKVCache(1, 8, 4, 2)
    with pytest.raises(ValueError, match="outside the cache"):
        cache.update(6, torch.zeros(1, 3, 4), torch.zeros(1, 3, 2))


def test_absorbed_gradients_equal_naive():
    m = mla()
    x = torch.randn(2, 11, 40, dtype=F64)
    g = torch.randn(2, 11, 40, dtype=F64)
    ga = torch.autograd.grad(
        (m.forward_absorbed(x) * g).sum(), list(m.parameters()), allow_unused=True
    )
    gn = torch.autograd.grad(
        (m.forward_naive(x) * g).sum(), list(m.parameters()), allow_unused=True
    )
    for (name, _), a, n in zip(m.named_parameters(), ga, gn, strict=True):
        if name.startswith("rope_content"):
            continue
        torch.testing.assert_close(a, n, **TOL, msg=name)


@torch.no_grad()
def test_rope_on_the_compressed_key_breaks_absorption():
    m = mla()
    x = torch.randn(2, 12, 40, dtype=F64)
    coupled = m.forward_naive(x, rope_on_compressed=True)
    assert (coupled - m.forward_absorbed(x)).abs().max() > 0.05 * coupled.abs().max()
    # at a single position 0 the rotation is the identity: the two coincide
    torch.testing.assert_close(
        m.forward_naive(x[:, :1], rope_on_compressed=True), m.forward_absorbed(x[:, :1]), **TOL
    )


def test_cache_sizes_match_the_library_buffers():
    cfg = MLAConfig(d_model=64, n_heads=8, head_dim=16, rope_dim=8, kv_rank=64)
    lat = LatentKVCache(3, 20, cfg.kv_rank, cfg.rope_dim, torch.bfloat16, "meta")
    assert lat.nbytes == 3 * 20 * mla_cache_elems_per_token(64, 8, 1) * 2
    assert cfg.cache_elems_per_token == 72
    for n_kv in (8, 2, 1):
        kv = KVCache(3, 20, n_kv, 16, torch.bfloat16, "meta")
        assert kv.nbytes == 3 * 20 * mha_cache_elems_per_token(n_kv, 16, 1) * 2
    assert mla_cache_elems_per_token(512, 64, 60) / mha_cache_elems_per_token(1, 128, 60) == 2.25
