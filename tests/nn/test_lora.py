"""LoRALinear against lora_ref (fp64), zero init, merge/unmerge, freezing, gradients, wrapping."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repro.nn.attention import Attention
from repro.nn.lora import (
    LoRALinear,
    apply_lora,
    lora_parameters,
    lora_ref,
    merge_lora,
    unmerge_lora,
)


def _randomised(layer: LoRALinear, seed: int = 0) -> LoRALinear:
    """Give B non-zero values, as after some training (B starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        layer.lora_B.copy_(torch.randn(layer.lora_B.shape, generator=g, dtype=layer.lora_B.dtype))
    return layer


@pytest.mark.parametrize("k,d,r", [(16, 24, 1), (40, 40, 4), (97, 33, 8)])
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("batch_shape", [(3,), (2, 5)])
def test_forward_matches_reference_fp64(k, d, r, bias, batch_shape):
    torch.manual_seed(0)
    layer = _randomised(LoRALinear(nn.Linear(k, d, bias=bias).double(), r, alpha=2 * r))
    x = torch.randn(*batch_shape, k, dtype=torch.float64)
    b = layer.base.bias
    want = lora_ref(x, layer.base.weight, b, layer.lora_A, layer.lora_B, 2 * r, r)
    got = layer(x)
    assert got.shape == (*batch_shape, d)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_gradients_match_reference_fp64():
    torch.manual_seed(0)
    layer = _randomised(LoRALinear(nn.Linear(12, 7).double(), r=3, alpha=6))
    x = torch.randn(5, 12, dtype=torch.float64)
    A_ref = layer.lora_A.detach().clone().requires_grad_(True)
    B_ref = layer.lora_B.detach().clone().requires_grad_(True)
    layer(x).square().sum().backward()
    lora_ref(x, layer.base.weight, layer.base.bias, A_ref, B_ref, 6, 3).square().sum().backward()
    torch.testing.assert_close(layer.lora_A.grad, A_ref.grad, atol=1e-12, rtol=1e-12)
    torch.testing.assert_close(layer.lora_B.grad, B_ref.grad, atol=1e-12, rtol=1e-12)


def test_zero_init_equals_base_layer():
    torch.manual_seed(0)
    base = nn.Linear(32, 16)
    x = torch.randn(4, 32)
    want = base(x)
    layer = LoRALinear(base, r=4, alpha=8)
    assert torch.count_nonzero(layer.lora_B) == 0
    assert torch.count_nonzero(layer.lora_A) > 0  # A random, so B gets a useful gradient
    assert torch.equal(layer(x), want)  # B = 0 makes the low-rank path exactly zero


def test_scaling_is_alpha_over_r_and_alpha_defaults_to_r():
    assert LoRALinear(nn.Linear(8, 8), r=4, alpha=16).scaling == 4.0
    layer = LoRALinear(nn.Linear(8, 8), r=4)
    assert layer.alpha == 4.0 and layer.scaling == 1.0


def test_merge_unmerge_round_trip_and_idempotence():
    torch.manual_seed(0)
    layer = _randomised(LoRALinear(nn.Linear(64, 48), r=8, alpha=16))
    W0 = layer.base.weight.detach().clone()
    x = torch.randn(10, 64)
    unmerged = layer(x)
    layer.merge()
    layer.merge()  # idempotent: merging twice adds ΔW once
    assert layer.merged
    want_W = W0 + (16 / 8) * layer.lora_B.detach() @ layer.lora_A.detach()  # §4.1: W0 + (α/r)·BA
    torch.testing.assert_close(layer.base.weight, want_W, atol=1e-6, rtol=0)
    torch.testing.assert_close(layer.delta_weight(), want_W - W0, atol=1e-6, rtol=0)
    torch.testing.assert_close(layer(x), unmerged, atol=1e-5, rtol=1e-5)
    layer.unmerge()
    layer.unmerge()
    assert not layer.merged
    torch.testing.assert_close(layer.base.weight, W0, atol=1e-6, rtol=0)
    torch.testing.assert_close(layer(x), unmerged, atol=1e-5, rtol=1e-5)


def test_merged_forward_is_a_plain_linear_layer():
    torch.manual_seed(0)
    layer = _randomised(LoRALinear(nn.Linear(20, 10).double(), r=2, alpha=4))
    x = torch.randn(3, 20, dtype=torch.float64)
    want = lora_ref(x, layer.base.weight, layer.base.bias, layer.lora_A, layer.lora_B, 4, 2)
    layer.merge()
    torch.testing.assert_close(layer(x), layer.base(x), atol=0, rtol=0)
    torch.testing.assert_close(layer(x), want, atol=1e-12, rtol=1e-12)


def test_dropout_acts_on_the_lora_path_only():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8), r=2, dropout=0.5)
    x = torch.randn(4, 16)
    # with B = 0 the low-rank path is zero whatever the dropout mask: the output is the base's
    assert torch.equal(layer.train()(x), layer.base(x))
    _randomised(layer)
    assert not torch.equal(layer.train()(x), layer.train()(x))  # two different masks
    layer.eval()
    want = lora_ref(x, layer.base.weight, layer.base.bias, layer.lora_A, layer.lora_B, 2, 2)
    torch.testing.assert_close(layer(x), want)


def test_only_A_and_B_receive_gradients():
    torch.manual_seed(0)
    layer = LoRALinear(nn.Linear(16, 8), r=2)
    assert [n for n, p in layer.named_parameters() if p.requires_grad] == ["lora_A", "lora_B"]
    x = torch.randn(5, 16)
    layer(x).sum().backward()
    assert layer.base.weight.grad is None and layer.base.bias.grad is None
    # at initialisation B = 0, so A's gradient Bᵀ(∂L/∂h)xᵀ is zero and only B moves first
    assert torch.count_nonzero(layer.lora_A.grad) == 0
    assert torch.count_nonzero(layer.lora_B.grad) > 0
    _randomised(layer)
    layer.zero_grad()
    layer(x).sum().backward()
    assert torch.count_nonzero(layer.lora_A.grad) > 0


def test_invalid_arguments():
    with pytest.raises(ValueError, match="rank"):
        LoRALinear(nn.Linear(4, 4), r=0)
    with pytest.raises(ValueError, match="dropout"):
        LoRALinear(nn.Linear(4, 4), r=1, dropout=1.0)


class TinyAttentionModel(nn.Module):
    """Two self-attention layers from repro.nn.attention with a LayerNorm and a read-out."""

    def __init__(self, d_model: int = 32, n_heads: int = 4) -> None:
        super().__init__()
        self.layers = nn.ModuleList(
            Attention(d_model, n_heads, causal=True, backend="ref") for _ in range(2)
        )
        self.norm = nn.LayerNorm(d_model)
        self.out = nn.Linear(d_model, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = x + layer(x)
        return self.out(self.norm(x))


def test_apply_lora_on_attention_wq_wv():
    torch.manual_seed(0)
    model = TinyAttentionModel()
    x = torch.randn(2, 7, 32)
    want = model(x)
    n_total = sum(p.numel() for p in model.parameters())
    assert apply_lora(model, {"wq", "wv"}, r=4, alpha=8) is model
    for layer in model.layers:
        assert isinstance(layer.wq, LoRALinear) and isinstance(layer.wv, LoRALinear)
        assert isinstance(layer.wk, nn.Linear) and isinstance(layer.wo, nn.Linear)
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable == {
        f"layers.{i}.{w}.lora_{m}" for i in range(2) for w in ("wq", "wv") for m in "AB"
    }
    assert {id(p) for p in lora_parameters(model)} == {
        id(p) for p in model.parameters() if p.requires_grad
    }
    # |Θ| = 2 × L̂_LoRA × d_model × r (§5.1) with L̂_LoRA = 4 adapted matrices
    assert sum(p.numel() for p in lora_parameters(model)) == 2 * 4 * 32 * 4
    assert sum(p.numel() for p in model.parameters()) == n_total + 2 * 4 * 32 * 4
    assert torch.equal(model(x), want)  # zero init: the adapted model is the base model

    for p in lora_parameters(model):  # as after training
        nn.init.normal_(p, std=0.3)
    model(x).square().mean().backward()
    for name, p in model.named_parameters():
        has_grad = p.grad is not None and torch.count_nonzero(p.grad) > 0
        assert has_grad == p.requires_grad, name

    unmerged = model(x)
    merge_lora(model)
    assert all(layer.wq.merged and layer.wv.merged for layer in model.layers)
    torch.testing.assert_close(model(x), unmerged, atol=1e-5, rtol=1e-5)
    unmerge_lora(model)
    torch.testing.assert_close(model(x), unmerged, atol=1e-5, rtol=1e-5)


def test_apply_lora_rejects_unknown_target():
    """The messages name every missing target (sorted, comma-separated) and the empty set."""
    with pytest.raises(ValueError, match="^no nn.Linear submodule named wz in the model$"):
        apply_lora(TinyAttentionModel(), {"wq", "wz"}, r=2)
    with pytest.raises(ValueError, match="^no nn.Linear submodule named wx, wz in the model$"):
        apply_lora(TinyAttentionModel(), {"wz", "wq", "wx"}, r=2)
    with pytest.raises(ValueError, match="^apply_lora needs at least one target module name$"):
        apply_lora(TinyAttentionModel(), set(), r=2)


def test_apply_lora_passes_alpha_and_dropout_to_every_layer():
    """alpha ≠ r and dropout > 0 reach each wrapped layer (scaling α/r = 6/4, Dropout(0.25))."""
    model = apply_lora(TinyAttentionModel(), {"wq", "wv"}, r=4, alpha=6, dropout=0.25)
    layers = [m for m in model.modules() if isinstance(m, LoRALinear)]
    assert len(layers) == 4
    for layer in layers:
        assert layer.r == 4 and layer.alpha == 6.0 and layer.scaling == 1.5
        assert isinstance(layer.dropout, nn.Dropout) and layer.dropout.p == 0.25
    assert "r=4, alpha=6, merged=False" in repr(layers[0])


def test_a_is_gaussian_with_std_one_over_sqrt_k():
    """A ~ N(0, 1/k) (the module's documented scale), k = 400 inputs: 8 · 400 draws."""
    torch.manual_seed(2)
    layer = LoRALinear(nn.Linear(400, 30), r=8)
    assert layer.lora_A.std().item() == pytest.approx(400**-0.5, rel=0.05)
    assert layer.lora_A.mean().abs().item() < 0.01


def test_bf16_delta_weight_is_computed_in_fp32_and_returned_in_bf16():
    """ΔW = (α/r)·BA for a bf16 layer: the fp32 product rounded once to bf16, bit for bit
    (a bf16 matmul rounds differently), in the base weight's dtype."""
    torch.manual_seed(3)
    layer = _randomised(LoRALinear(nn.Linear(64, 48).to(torch.bfloat16), r=8, alpha=12))
    B, A = layer.lora_B.detach(), layer.lora_A.detach()
    want = ((B.float() @ A.float()) * 1.5).to(torch.bfloat16)
    got = layer.delta_weight()
    assert got.dtype == torch.bfloat16 and torch.equal(got, want)
    assert not torch.equal(want, (B @ A) * 1.5)  # the bf16 product differs


def test_meta_device_counting_and_merge():
    with torch.device("meta"):
        layer = LoRALinear(nn.Linear(4096, 4096, bias=False), r=8)
    assert layer.lora_A.is_meta and layer.lora_B.is_meta
    assert layer.lora_A.shape == (8, 4096) and layer.lora_B.shape == (4096, 8)
    n_lora = sum(p.numel() for p in layer.parameters() if p.requires_grad)
    assert layer.base.weight.numel() // n_lora == 256
    layer.merge()  # shapes only, no memory
    assert layer.merged and layer.base.weight.is_meta


def test_dropout_masks_the_input_of_a_not_the_output():
    """In training, h = W0 x + (α/r)·B A dropout(x) (Eq. 3 with LoRA's dropout on x): the mask is
    drawn again from the same seed and applied by hand; α ≠ 2r so that the scale is visible."""
    torch.manual_seed(0)
    layer = _randomised(LoRALinear(nn.Linear(10, 6).double(), r=3, alpha=5, dropout=0.4))
    x = torch.randn(7, 10, dtype=torch.float64)
    torch.manual_seed(11)
    got = layer.train()(x)
    torch.manual_seed(11)
    dropped = torch.nn.functional.dropout(x, 0.4, training=True)
    want = layer.base(x) + dropped @ layer.lora_A.T @ layer.lora_B.T * (5 / 3)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)
