"""Pieces of papers/efficient-inference/repro.py beyond its claims: byte accounting."""

from __future__ import annotations

from repro.lab.counting import kv_cache_bytes_per_token
from repro.lab.library import Library

EI = Library().get("efficient-inference").module()


def test_palm_cache_bytes_scale_with_batch_context_and_heads() -> None:
    one = EI.palm_cache_bytes(1, 1, 1)
    assert one == kv_cache_bytes_per_token(118, 1, 256, 2) == 120_832
    assert EI.palm_cache_bytes(1, 3, 5) == 15 * one
    assert EI.palm_cache_bytes(48, 1, 1) == 48 * one


def test_bytes_read_per_token_counts_weights_once_and_the_cache() -> None:
    model = EI.tiny_decoder(1, 64, seed=0)
    weights = sum(p.numel() for p in model.parameters()) * 4 - model.wpe.weight.nbytes
    per_position = 2 * 4 * 1 * 64 * 4  # 2 · L · Hkv · D · fp32 bytes
    assert EI.bytes_read_per_token(model, 0) == weights
    assert EI.bytes_read_per_token(model, 10) == weights + 10 * per_position


def test_bandwidth_claim_rejects_a_bound_without_the_weights(monkeypatch) -> None:
    """The control of `decode-bandwidth-bound`: the same measured step against a memory model
    that forgets the weights (only the KV cache is streamed) must fall outside [0.7, 2.0]."""
    from repro.lab.claims import Context

    real = EI.bytes_read_per_token

    def kv_only(model, context):  # the bytes of the cache alone: real(model, 0) is the weights
        return real(model, context) - real(model, 0)

    monkeypatch.setattr(EI, "bytes_read_per_token", kv_only)
    cfg = EI.Config(big_d_model=1024, big_layers=2, big_new_tokens=4, copy_bytes=1 << 26)
    assert EI.decode_bandwidth_bound(Context(config=cfg, seed=0)).value > 2.0
