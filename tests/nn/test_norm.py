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
