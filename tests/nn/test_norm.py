import pytest
import torch
import torch.nn.functional as F

from repro.nn.norm import RMSNorm, layer_norm_ref, rms_norm_ref


@pytest.mark.parametrize("shape", [(1, 1, 8), (3, 17, 40), (2, 5, 1)])
def test_layer_norm_ref_matches_torch(shape: tuple[int, ...]):
    torch.manual_seed(0)
    x = torch.randn(shape) * 3 + 1
    w, b = torch.randn(shape[-1]), torch.randn(shape[-1])
    torch.testing.assert_close(
        layer_norm_ref(x, w, b, eps=1e-5), F.layer_norm(x, shape[-1:], w, b, eps=1e-5)
    )


@pytest.mark.parametrize("shape", [(1, 1, 8), (3, 17, 40), (2, 5, 1)])
def test_rms_norm_matches_ref(shape: tuple[int, ...]):
    torch.manual_seed(0)
    norm = RMSNorm(shape[-1], eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_()
    x = torch.randn(shape) * 5
    torch.testing.assert_close(norm(x), rms_norm_ref(x, norm.weight, eps=1e-6))


def test_rms_norm_grads_match_ref():
    torch.manual_seed(0)
    norm = RMSNorm(24)
    x = torch.randn(4, 7, 24, dtype=torch.float64, requires_grad=True)
    g = torch.randn_like(x)
    (gx,) = torch.autograd.grad((norm(x) * g).sum(), x)
    (gx_ref,) = torch.autograd.grad((rms_norm_ref(x, norm.weight) * g).sum(), x)
    torch.testing.assert_close(gx, gx_ref)


def test_rms_norm_is_layer_norm_on_zero_mean_inputs():
    torch.manual_seed(0)
    x = torch.randn(3, 9, 32)
    x = x - x.mean(-1, keepdim=True)
    w = torch.randn(32)
    torch.testing.assert_close(rms_norm_ref(x, w, eps=1e-5), layer_norm_ref(x, w, eps=1e-5))


def test_rms_norm_is_invariant_to_rescaling_inputs():
    """Zhang & Sennrich §4: re-scaling invariance (not re-centring)."""
    x = torch.randn(2, 5, 16, dtype=torch.float64)
    norm = RMSNorm(16, eps=0.0)
    torch.testing.assert_close(norm(7.5 * x), norm(x))
    assert not torch.allclose(norm(x + 1.0), norm(x))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_low_precision_error_is_at_most_twice_the_refs(dtype: torch.dtype):
    torch.manual_seed(0)
    x = torch.randn(4, 33, 64) * 10
    norm = RMSNorm(64)
    with torch.no_grad():
        norm.weight.uniform_(0.5, 1.5)
    exact = rms_norm_ref(x.double(), norm.weight.double())
    out = norm.to(dtype)(x.to(dtype))
    assert out.dtype == dtype
    ref = rms_norm_ref(x.to(dtype), norm.weight)
    err, ref_err = (out.double() - exact).abs().max(), (ref.double() - exact).abs().max()
    assert err <= 2 * ref_err


@pytest.mark.parametrize("eps", [1e-6, 0.5])
def test_rms_norm_module_follows_eq_4_written_out_in_fp64(eps: float):
    """ā_i = a_i / √(mean(a²) + eps) · g_i, no re-centring; a large eps makes eps visible."""
    torch.manual_seed(0)
    a = torch.randn(3, 5, 16, dtype=torch.float64) * 0.7 + 0.4
    norm = RMSNorm(16, eps=eps).double()
    with torch.no_grad():
        norm.weight.copy_(1 + 0.3 * torch.randn(16, dtype=torch.float64))
    want = a / torch.sqrt((a**2).mean(-1, keepdim=True) + eps) * norm.weight
    torch.testing.assert_close(norm(a), want, atol=1e-12, rtol=1e-12)
    layer_norm = (a - a.mean(-1, keepdim=True)) / a.std(-1, correction=0, keepdim=True)
    assert (norm(a) - layer_norm * norm.weight).abs().max() > 0.1, "must not re-centre"


def test_default_eps_values_written_out():
    """Defaults: 1e-5 for layer norm (torch's and Ba et al.'s implementations), 1e-6 for
    RMSNorm (Meta's LLaMA code), for both references and the module. Inputs of size ~1e-3 make
    mean(a²) ≈ eps, so another default changes the outputs by far more than the tolerance."""
    g = torch.Generator().manual_seed(4)
    a = (torch.randn(3, 16, generator=g, dtype=torch.float64) + 0.5) * 1e-3
    mu = a.mean(-1, keepdim=True)
    var = ((a - mu) ** 2).mean(-1, keepdim=True)
    torch.testing.assert_close(layer_norm_ref(a), (a - mu) / torch.sqrt(var + 1e-5))
    rms = a / torch.sqrt((a**2).mean(-1, keepdim=True) + 1e-6)
    torch.testing.assert_close(rms_norm_ref(a), rms)
    torch.testing.assert_close(RMSNorm(16).double()(a), rms)


def test_layer_norm_ref_applies_gain_and_bias_each_on_its_own():
    """Gain only, bias only, both: (a − μ)/σ · g + b with the missing one left out."""
    g = torch.Generator().manual_seed(5)
    a = torch.randn(2, 3, 8, generator=g, dtype=torch.float64) * 2 + 1
    w = torch.randn(8, generator=g, dtype=torch.float64)
    b = torch.randn(8, generator=g, dtype=torch.float64)
    n = (a - a.mean(-1, keepdim=True)) / torch.sqrt(a.var(-1, correction=0, keepdim=True) + 0.1)
    torch.testing.assert_close(layer_norm_ref(a, w, eps=0.1), n * w)
    torch.testing.assert_close(layer_norm_ref(a, bias=b, eps=0.1), n + b)
    torch.testing.assert_close(layer_norm_ref(a, w, b, eps=0.1), n * w + b)
    torch.testing.assert_close(
        rms_norm_ref(a, eps=0.1), a / torch.sqrt((a**2).mean(-1, True) + 0.1)
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_references_compute_half_inputs_in_fp32(dtype: torch.dtype):
    """Statistics in fp32 for half inputs (the module docstring): bit for bit the fp32
    computation rounded once, with fp16/bf16 gain and bias cast up too."""
    g = torch.Generator().manual_seed(6)
    x = (torch.randn(4, 64, generator=g) * 10 + 3).to(dtype)
    w, b = torch.randn(64, generator=g).to(dtype), torch.randn(64, generator=g).to(dtype)
    ln = layer_norm_ref(x.float(), w.float(), b.float()).to(dtype)
    assert layer_norm_ref(x, w, b).dtype == dtype
    assert torch.equal(layer_norm_ref(x, w, b), ln)
    assert torch.equal(rms_norm_ref(x, w), rms_norm_ref(x.float(), w.float()).to(dtype))


def test_gain_and_bias_are_cast_to_the_computation_dtype():
    """fp32 input with fp64 gain and bias: the references compute in fp32 (the input's
    promotion with fp32), so the result is bit for bit that of fp32 gain and bias, not the
    (differently rounded) fp64 product."""
    g = torch.Generator().manual_seed(7)
    x = torch.randn(8, 32, generator=g) * 3 + 1
    w = torch.randn(32, generator=g, dtype=torch.float64) * 1.7
    b = torch.randn(32, generator=g, dtype=torch.float64)
    assert torch.equal(layer_norm_ref(x, w, b), layer_norm_ref(x, w.float(), b.float()))
    assert torch.equal(rms_norm_ref(x, w), rms_norm_ref(x, w.float()))
    in_fp64 = (rms_norm_ref(x) * w).float()
    assert not torch.equal(rms_norm_ref(x, w), in_fp64)  # the two can be told apart
