"""Pieces of papers/deepseek-v2/repro.py beyond its claims: the split of the 93.3%, the
two-layer parameter count, the cache-bytes table."""

from __future__ import annotations

import math

import pytest

from repro.lab.counting import build_on_meta, count_parameters
from repro.lab.library import Library
from repro.models.deepseek_v2 import DeepSeekV2, DeepSeekV2Config, deepseek_v2_param_count

DSV2 = Library().get("deepseek-v2").module()


def test_reduction_splits_into_elements_and_bits():
    r = DSV2.reduction_vs_67b()
    assert r["elements_67b"] == 2 * 8 * 128 * 95
    assert r["elements_v2"] == (512 + 64) * 60
    kept = (1 - r["reduction_elements_only"]) * DSV2.BITS_V2 / DSV2.BITS_67B
    assert 1 - r["reduction_with_6bit"] == pytest.approx(kept, rel=1e-12)
    shares = math.log(r["element_factor"]) + math.log(r["bit_factor"])
    assert math.log(r["element_factor"]) / shares == pytest.approx(
        r["share_of_log_reduction_from_elements"]
    )
    # at equal precision (bits 16 vs 16) nothing but the element count is left
    assert r["reduction_elements_only"] < r["reduction_with_6bit"]


def test_two_layer_shortcut_equals_a_full_build():
    """Lite builds in ~2 s on meta: the shortcut (two layers + copies) must give its count."""
    cfg = DeepSeekV2Config.from_name("deepseek-v2-lite")
    full = count_parameters(build_on_meta(lambda: DeepSeekV2(cfg)))
    c = DSV2.built_counts("deepseek-v2-lite")
    assert c["total"] == full == deepseek_v2_param_count(cfg)
    assert c["active"] == deepseek_v2_param_count(cfg, active=True)


@pytest.mark.parametrize("tokens", [1, 7, 4096])
def test_cache_bytes_follow_table_1(tokens):
    bf16 = 2
    assert DSV2.cache_bytes("MLA", tokens) == tokens * 60 * (512 + 64) * bf16
    assert DSV2.cache_bytes("MHA", tokens) == tokens * 60 * 2 * 128 * 128 * bf16
    assert DSV2.cache_bytes("GQA-8", tokens) == tokens * 60 * 2 * 8 * 128 * bf16
    assert DSV2.cache_bytes("MQA", tokens) == tokens * 60 * 2 * 128 * bf16
    with pytest.raises(KeyError):
        DSV2.cache_bytes("MLA-2", tokens)
