"""Pieces of papers/gqa/repro.py beyond its claims: the checkpoint conversion."""

from __future__ import annotations

import pytest
import torch

from repro.lab.library import Library
from repro.models.gpt import GPT, GPTConfig

GQA = Library().get("gqa").module()


def mha_model() -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=2, d_model=32, n_heads=8, vocab_size=20, max_seq_len=16)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_()  # GPT starts biases at 0; make them distinguishable
    return model


@pytest.mark.parametrize("method", GQA.METHODS)
def test_conversion_shapes_and_copied_weights(method: str) -> None:
    mha = mha_model()
    gqa = GQA.convert_kv_heads(mha, 2, method, torch.Generator().manual_seed(0))
    assert gqa.cfg.n_kv_heads == 2 and mha.cfg.n_kv_heads == 8
    attn = gqa.blocks[0].attn
    assert attn.wk.weight.shape == attn.wv.weight.shape == (2 * 4, 32)  # (Hkv·D, C)
    assert torch.equal(attn.wq.weight, mha.blocks[0].attn.wq.weight)
    assert torch.equal(gqa.blocks[1].mlp.w2.weight, mha.blocks[1].mlp.w2.weight)


def test_mean_pool_averages_each_group_and_first_keeps_its_first_head() -> None:
    mha = mha_model()
    g = torch.Generator().manual_seed(0)
    mean = GQA.convert_kv_heads(mha, 2, "mean", g).blocks[0].attn
    first = GQA.convert_kv_heads(mha, 2, "first", g).blocks[0].attn
    wk = mha.blocks[0].attn.wk.weight.view(8, 4, 32)  # (H, D, C)
    torch.testing.assert_close(mean.wk.weight.view(2, 4, 32)[1], wk[4:8].mean(0))
    bv = mha.blocks[0].attn.wv.bias.view(8, 4)  # (H, D)
    torch.testing.assert_close(first.wv.bias.view(2, 4)[1], bv[4])
    torch.testing.assert_close(mean.wv.bias.view(2, 4)[0], bv[:4].mean(0))
    assert torch.equal(first.wk.weight.view(2, 4, 32)[0], wk[0])


def test_one_head_per_group_is_the_identity() -> None:
    mha = mha_model()
    same = GQA.convert_kv_heads(mha, 8, "mean", torch.Generator().manual_seed(0)).eval()
    idx = torch.randint(0, 20, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(same(idx), mha(idx))


def test_unknown_method_raises() -> None:
    with pytest.raises(ValueError, match="unknown conversion method 'median'"):
        GQA.convert_kv_heads(mha_model(), 2, "median", torch.Generator())
