"""Pieces of papers/transformer/repro.py beyond its claims: Eq. 3, label smoothing, M_k."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from repro.lab.library import Library
from repro.nn.positional import sinusoidal_encoding_ref

TRANSFORMER = Library().get("transformer").module()


def test_warmup_lr_rises_linearly_then_decays_as_inverse_sqrt() -> None:
    lr = TRANSFORMER.warmup_lr
    assert lr(4000, 512, 4000) == pytest.approx(512**-0.5 * 4000**-0.5)  # the peak, ≈ 7.0e-4
    assert lr(2000, 512, 4000) == pytest.approx(lr(4000, 512, 4000) / 2)
    assert lr(16000, 512, 4000) == pytest.approx(lr(4000, 512, 4000) / 2)
    assert max(range(1, 20000, 7), key=lambda s: lr(s, 512, 4000)) in range(3994, 4007)


@pytest.mark.parametrize("eps", [0.0, 0.1, 0.3])
def test_label_smoothed_loss_matches_torch(eps: float) -> None:
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(50, 11, generator=g)
    target = torch.randint(0, 11, (50,), generator=g)
    ours = TRANSFORMER.label_smoothed_loss(logits, target, eps)
    torch.testing.assert_close(ours, F.cross_entropy(logits, target, label_smoothing=eps))


def test_smoothing_floor_is_reached_by_predicting_the_smoothed_target() -> None:
    V, eps = 16, 0.1
    q = torch.full((1, V), eps / V)
    q[0, 3] += 1 - eps
    loss = TRANSFORMER.label_smoothed_loss(q.log(), torch.tensor([3]), eps)
    assert float(loss) == pytest.approx(TRANSFORMER.smoothed_target_entropy(V, eps), rel=1e-6)


@pytest.mark.parametrize(("k", "dim"), [(1, 8), (7, 64), (300, 512)])
def test_shift_matrix_is_orthogonal_and_shifts_every_position(k: int, dim: int) -> None:
    M = TRANSFORMER.shift_matrix(k, dim)
    torch.testing.assert_close(M @ M.T, torch.eye(dim, dtype=torch.float64))
    pe = sinusoidal_encoding_ref(40 + k, dim)
    torch.testing.assert_close(pe[k:], pe[:40] @ M.T)  # PE(pos + k) = M_k PE(pos)


def test_shift_matrix_composes() -> None:
    torch.testing.assert_close(
        TRANSFORMER.shift_matrix(3, 32) @ TRANSFORMER.shift_matrix(4, 32),
        TRANSFORMER.shift_matrix(7, 32),
    )


def test_softmax_jacobian_norm_matches_autograd() -> None:
    s = torch.randn(3, 5, dtype=torch.float64)
    norms = TRANSFORMER.softmax_jacobian_norm(s.softmax(-1))  # from the probabilities
    for row, norm in zip(s, norms, strict=True):
        J = torch.autograd.functional.jacobian(lambda x: x.softmax(-1), row)
        assert float(norm) == pytest.approx(float(J.norm()), rel=1e-12)


def test_uniform_softmax_jacobian_norm() -> None:
    K = 64  # equal logits: J = I/K − 11ᵀ/K², ‖J‖_F² = (K − 1)/K²
    norm = TRANSFORMER.softmax_jacobian_norm(torch.full((1, K), 1 / K, dtype=torch.float64))
    assert float(norm[0]) == pytest.approx(math.sqrt(K - 1) / K)


def test_reversal_batch_layout() -> None:
    cfg = TRANSFORMER.PRESETS["quick"]
    src, dec_in, dec_out = TRANSFORMER.reversal_batch(4, cfg, torch.Generator().manual_seed(0))
    assert src.shape == (4, cfg.seq_len) and dec_in.shape == dec_out.shape == (4, cfg.seq_len + 1)
    assert torch.equal(dec_out[:, :-1], src.flip(1))
    assert torch.equal(dec_in[:, 1:], dec_out[:, :-1])  # teacher forcing: shifted right


def test_attention_probabilities_are_the_librarys_softmax() -> None:
    """V = I read-out of repro.nn.attention: softmax(q kᵀ/√D) per row, and scale 1 when off."""
    g = torch.Generator().manual_seed(0)
    q = torch.randn(5, 1, 16, generator=g, dtype=torch.float64)
    k = torch.randn(5, 40, 16, generator=g, dtype=torch.float64)  # K = 40 > D: several V slices
    logits = (q @ k.transpose(1, 2))[:, 0]  # (R, K)
    for backend in ("ref", "flash"):
        p = TRANSFORMER.attention_probabilities(q, k, scaled=True, backend=backend)
        torch.testing.assert_close(p, (logits / 4).softmax(-1), atol=1e-12, rtol=1e-12)
    p_raw = TRANSFORMER.attention_probabilities(q, k, scaled=False)
    torch.testing.assert_close(p_raw, logits.softmax(-1), atol=1e-12, rtol=1e-12)
    # within-row variance of log p is that of the logits
    assert TRANSFORMER.logit_variance(p_raw) == pytest.approx(float(logits.var(1).mean()))


# --- the controls of the measured claims: each must fail its claim's tolerance -------------


def _slope(d_ks: tuple[int, ...], variances: list[float]) -> float:
    d = torch.tensor(d_ks, dtype=torch.float64)
    v = torch.tensor(variances, dtype=torch.float64)
    return float((d * v).sum() / (d * d).sum())  # through the origin, as the claim fits it


def test_controls_of_the_scaling_claims_lose() -> None:
    """dot-product-variance wants slope 1 ± 0.05, scaled-variance 1 ± 0.1, softmax-saturation
    a ratio < 0.01: the scaled path, the unscaled path and a small d_k must each miss."""
    d_ks = (16, 64, 256, 1024)
    st = TRANSFORMER.dot_product_stats(d_ks, 100, 64, 0)
    assert abs(_slope(d_ks, st["var"]) - 1) < 0.1  # the mechanism itself, at this small size
    assert abs(_slope(d_ks, st["var_scaled"]) - 1) > 0.05  # scale on: variance flat at 1
    assert max(abs(v - 1) for v in st["var"]) > 0.1  # scale off: variance d_k
    assert st["jac"][0] / st["jac_scaled"][0] > 0.01  # d_k = 16: no saturation yet
    assert st["jac"][-1] / st["jac_scaled"][-1] < 0.01  # d_k = 1024: saturated


def test_a_wrong_sinusoid_table_fails_the_shift_check() -> None:
    """sinusoid-shift wants max |PE(pos + k) − M_k PE(pos)| < 1e-4; a wrong base or sin/cos
    swapped in the table must miss by far."""
    k, dim = 5, 64
    M = TRANSFORMER.shift_matrix(k, dim)
    good = sinusoidal_encoding_ref(100 + k, dim).double()
    assert float((good[k:] - good[:100] @ M.T).abs().max()) < 1e-4
    swapped = good.view(-1, dim // 2, 2).flip(-1).reshape(-1, dim)  # cos where sin belongs
    wrong_base = TRANSFORMER.shift_matrix(k, dim, base=1000.0)
    assert float((swapped[k:] - swapped[:100] @ M.T).abs().max()) > 0.1
    assert float((good[k:] - good[:100] @ wrong_base.T).abs().max()) > 0.1


def test_untrained_encoder_decoder_fails_the_reversal_threshold() -> None:
    """reversal-exact-match wants ≥ 0.8; one training step leaves the model near chance."""
    from repro.lab.claims import Context

    cfg = TRANSFORMER.Config(steps=1, eval_size=200)
    m = TRANSFORMER.experiment(cfg, Context(config=cfg, seed=0))
    assert m["exact_match"] < 0.8
