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
