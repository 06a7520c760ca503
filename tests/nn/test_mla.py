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


def per_head_reference(
    m: MultiHeadLatentAttention, x: torch.Tensor, rope_content: bool = False
) -> torch.Tensor:
    """Appendix C (Eq. 37-47) written head by head and token by token, RoPE from the explicit
    rotation matrices of `apply_rope_ref`, causal softmax over j <= t. x (B, T, C).
    `rope_content`: the rejected design, the content query and key rotated too (§2.1.3)."""
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
        if rope_content:
            qc = apply_rope_ref(qc[:, None], 0, cfg.rope_base)[:, 0]
            kc = apply_rope_ref(kc[:, None], 0, cfg.rope_base)[:, 0]
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


@torch.no_grad()
def test_both_paths_use_the_configured_rope_base_and_norm_eps():
    """A base and an ε far from the defaults (the reference reads them from the config)."""
    m = mla(rope_base=50.0, norm_eps=0.3)
    x = torch.randn(2, 13, 40, dtype=F64)
    ref = per_head_reference(m, x)
    torch.testing.assert_close(m.forward_naive(x), ref, **TOL)
    torch.testing.assert_close(m.forward_absorbed(x), ref, **TOL)
    # both rotations' tables: θ_i = base^(−2i/d) at positions 0..max_seq_len−1
    pos = torch.arange(48, dtype=F64)[:, None]
    for rope, d in ((m.rope, 6), (m.rope_content, 10)):
        theta = 50.0 ** (-torch.arange(0, d, 2, dtype=F64) / d)
        torch.testing.assert_close(rope.cos, torch.cos(pos * theta), **TOL)
        torch.testing.assert_close(rope.sin, torch.sin(pos * theta), **TOL)


@torch.no_grad()
def test_a_call_without_start_pos_starts_at_position_zero():
    m = mla()
    x = torch.randn(2, 7, 40, dtype=F64)
    torch.testing.assert_close(m.forward_naive(x), m.forward_absorbed(x, None, 0), **TOL)
    torch.testing.assert_close(m.forward_absorbed(x), m.forward_naive(x, None, 0), **TOL)
    # without a cache RoPE's relative form hides a shifted start; a cache does not
    for path in (m.forward_naive, m.forward_absorbed):
        cache = LatentKVCache(2, 48, m.cfg.kv_rank, m.cfg.rope_dim, F64)
        path(x, cache)
        torch.testing.assert_close(cache.c[:, :7], m.latents(x, 0)[0], **TOL)
        assert cache.c[:, 7:].abs().max() == 0


@torch.no_grad()
def test_the_rejected_design_rotates_content_at_the_query_and_key_positions():
    """RoPE on the content query and key: equal to the reference with them rotated, and a
    cached decode rotates the new queries at their own positions, the cached keys from 0."""
    m = mla(rope_base=50.0)
    x = torch.randn(2, 11, 40, dtype=F64)
    full = m.forward_naive(x, rope_on_compressed=True)
    torch.testing.assert_close(full, per_head_reference(m, x, rope_content=True), **TOL)
    cache = LatentKVCache(2, 48, m.cfg.kv_rank, m.cfg.rope_dim, F64)
    for a, b in ((0, 6), (6, 7), (7, 11)):
        step = m.forward_naive(x[:, a:b], cache, a, rope_on_compressed=True)
        torch.testing.assert_close(step, full[:, a:b], **TOL)


def test_the_cache_fills_to_its_last_position_stays_out_of_state_dicts_and_honours_device():
    cache = LatentKVCache(2, 8, 4, 2, F64)
    c, kr = cache.update(5, torch.ones(2, 3, 4, dtype=F64), torch.ones(2, 3, 2, dtype=F64))
    assert c.shape == (2, 8, 4) and kr.shape == (2, 8, 2)  # positions 5..7: the last is 7
    with pytest.raises(ValueError) as err:
        cache.update(6, torch.zeros(2, 3, 4, dtype=F64), torch.zeros(2, 3, 2, dtype=F64))
    assert str(err.value) == (
        "LatentKVCache.update: positions 6..8 are outside the cache (0..7); allocate a longer cache"
    )
    # scratch buffers: not saved with a checkpoint, and made where they are asked for
    assert cache.state_dict() == {}
    meta = LatentKVCache(2, 8, 4, 2, torch.bfloat16, "meta")
    assert meta.c.device.type == meta.k_rope.device.type == "meta"


def test_an_odd_rope_dim_is_refused_by_name():
    with pytest.raises(ValueError, match=r"^rope_dim=5 must be even for RoPE$"):
        MLAConfig(rope_dim=5)


@torch.no_grad()
def test_both_paths_run_where_the_layer_lives():
    """The causal mask is built on the scores' device (meta here: shapes only, no CPU mask)."""
    m = mla().to("meta")
    x = torch.empty(2, 5, 40, dtype=F64, device="meta")
    for path in (m.forward_naive, m.forward_absorbed):
        y = path(x)
        assert y.device.type == "meta" and y.shape == (2, 5, 40)
