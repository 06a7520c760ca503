import pytest
import torch
import torch.nn.functional as F

from repro.nn.ffn import FeedForward, GLUFeedForward, glu_hidden_dim, llama_hidden_dim


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


@pytest.mark.parametrize("activation", ["relu", "gelu", "gelu_tanh"])
def test_feed_forward_is_eq_2(activation: str):
    torch.manual_seed(0)
    ffn = FeedForward(16, 64, activation)
    x = torch.randn(2, 5, 16)
    act = {
        "relu": lambda h: h.clamp_min(0),
        "gelu": lambda h: 0.5 * h * (1 + torch.erf(h / 2**0.5)),
        "gelu_tanh": lambda h: (
            0.5 * h * (1 + torch.tanh((2 / torch.pi) ** 0.5 * (h + 0.044715 * h**3)))
        ),
    }[activation]
    expected = act(x @ ffn.w1.weight.T + ffn.w1.bias) @ ffn.w2.weight.T + ffn.w2.bias
    torch.testing.assert_close(ffn(x), expected)
    assert n_params(ffn) == 2 * 16 * 64 + 64 + 16


GATES = {
    "glu": torch.sigmoid,
    "bilinear": lambda h: h,
    "reglu": lambda h: h.clamp_min(0),
    "geglu": lambda h: 0.5 * h * (1 + torch.erf(h / 2**0.5)),
    "swiglu": lambda h: h * torch.sigmoid(h),
}


@pytest.mark.parametrize("variant", list(GATES))
def test_glu_variants_are_eq_5_6(variant: str):
    torch.manual_seed(0)
    ffn = GLUFeedForward(16, 40, variant)
    x = torch.randn(3, 4, 16)
    W, V, W2 = ffn.w1.weight.T, ffn.w3.weight.T, ffn.w2.weight.T
    torch.testing.assert_close(ffn(x), (GATES[variant](x @ W) * (x @ V)) @ W2)
    assert all(m.bias is None for m in (ffn.w1, ffn.w2, ffn.w3))


@pytest.mark.parametrize("d_model,d_ff", [(768, 3072), (64, 192), (30, 90)])
def test_two_thirds_rule_keeps_parameters_equal(d_model: int, d_ff: int):
    dense = FeedForward(d_model, d_ff, bias=False)
    glu = GLUFeedForward(d_model, glu_hidden_dim(d_ff))
    assert n_params(glu) == n_params(dense)
    assert glu_hidden_dim(3072) == 2048  # Shazeer §2


@pytest.mark.parametrize("d_ff", [256, 257])
def test_two_thirds_rule_rounds_down_when_not_divisible(d_ff: int):
    dense, glu = FeedForward(64, d_ff, bias=False), GLUFeedForward(64, glu_hidden_dim(d_ff))
    assert 0 < n_params(dense) - n_params(glu) < 3 * 64


def test_llama_hidden_dim():
    for dim in (4096, 5120, 6656, 8192, 64, 100):
        hidden = llama_hidden_dim(dim, 256)
        assert hidden % 256 == 0 and 0 <= hidden - 8 * dim / 3 < 256
    assert llama_hidden_dim(4096, 256) == 11008  # Meta's released 7B
    assert llama_hidden_dim(4096, 1024, ffn_dim_multiplier=1.3) == 14336  # Llama-3-8B convention
    assert llama_hidden_dim(48, 1) == 128


def test_glu_backward():
    ffn = GLUFeedForward(8, 12).double()
    x = torch.randn(2, 3, 8, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ffn, (x,))
    assert F.mse_loss(ffn(x), torch.zeros_like(x)).requires_grad
