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


def test_label_smoothed_loss_computes_in_fp32_from_bf16_logits() -> None:
    g = torch.Generator().manual_seed(1)
    logits = (4 * torch.randn(64, 37, generator=g)).bfloat16()
    target = torch.randint(0, 37, (64,), generator=g)
    ours = TRANSFORMER.label_smoothed_loss(logits, target, 0.1)
    assert ours.dtype == torch.float32
    reference = F.cross_entropy(logits.double(), target, label_smoothing=0.1)
    assert float(ours) == pytest.approx(float(reference), rel=1e-6)


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
    # the default backend is the reference one
    p_default = TRANSFORMER.attention_probabilities(q, k, scaled=True)
    torch.testing.assert_close(p_default, (logits / 4).softmax(-1), atol=1e-12, rtol=1e-12)
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


def test_config_checks_the_head_split() -> None:
    with pytest.raises(ValueError, match="d_model 30 is not a multiple of n_heads 4"):
        TRANSFORMER.Config(d_model=30, n_heads=4)


# --- Table 3 sizes by hand -----------------------------------------------------------------


def _encoder_decoder_params(L: int, C: int, F: int, V: int) -> tuple[int, int]:
    """(all, non-embedding) of the library's encoder-decoder: bias-free attention (4C²), a
    biased FFN (2CF + F + C) and LayerNorms of gain and bias (2C) after each sub-layer; L
    encoder layers (1 attention, 2 norms) and L decoder layers (2 attentions, 3 norms); one
    V × C embedding shared by both inputs and the output (§3.4)."""
    ffn = 2 * C * F + F + C
    encoder = 4 * C * C + ffn + 2 * 2 * C
    decoder = 2 * 4 * C * C + ffn + 3 * 2 * C
    body = L * (encoder + decoder)
    return body + V * C, body


@pytest.mark.parametrize(
    ("claim", "C", "F", "paper"),
    [("base_params", 512, 2048, 65e6), ("big_params", 1024, 4096, 213e6)],
)
def test_table3_sizes_by_hand(claim: str, C: int, F: int, paper: float) -> None:
    from repro.lab.claims import Context

    total, body = _encoder_decoder_params(6, C, F, 37000)  # Table 3: N = 6, a 37000 vocabulary
    got = getattr(TRANSFORMER, claim)(Context())
    assert got.value == pytest.approx(total / 1e6, rel=1e-12)
    assert got.details == {
        "parameters": total,
        "shared_embedding": 37000 * C,
        "non_embedding": body,
        "vocab_size": 37000,
        "vocab_matching_paper": round((paper - body) / C),
    }


def test_table3_size_checks_the_built_model_against_the_formula(monkeypatch) -> None:
    monkeypatch.setattr(TRANSFORMER, "count_parameters", lambda model: 5)
    with pytest.raises(AssertionError, match=r"^built 5 != analytic 63045632$"):
        TRANSFORMER._table3_size("transformer-base")


def test_attention_probabilities_use_the_requested_backend(monkeypatch) -> None:
    backends = []
    real = TRANSFORMER.attention

    def attention(q, k, v, **kwargs):
        backends.append(kwargs)
        return real(q, k, v, **kwargs)

    monkeypatch.setattr(TRANSFORMER, "attention", attention)
    q, k = torch.randn(2, 1, 8, dtype=torch.float64), torch.randn(2, 20, 8, dtype=torch.float64)
    TRANSFORMER.attention_probabilities(q, k, scaled=True, backend="flash")
    assert backends == [{"backend": "flash"}] * 3  # ⌈20 / 8⌉ slices of V = I


# --- the scaling claims on made-up statistics ----------------------------------------------

FAKE_STATS = {
    "var": [14.0, 35.0, 60.0],
    "var_scaled": [1.02, 0.97, 1.05],
    "var_scaled_flash": [0.99, 0.85, 1.1],
    "jac": [0.3, 0.06, 0.002],
    "jac_scaled": [0.5, 0.4, 0.25],
}


def _fake_stats(monkeypatch) -> list:
    calls = []

    def dot_product_stats(d_ks, n_rows, n_keys, seed):
        calls.append((d_ks, n_rows, n_keys, seed))
        return FAKE_STATS

    monkeypatch.setattr(TRANSFORMER, "dot_product_stats", dot_product_stats)
    return calls


def test_dot_product_variance_fits_the_slope_and_exponent(
    monkeypatch, line_plots, tmp_path
) -> None:
    from repro.lab.claims import Context

    calls = _fake_stats(monkeypatch)
    drawn = line_plots(TRANSFORMER)
    cfg = TRANSFORMER.Config(d_ks=(16, 32, 64), n_rows=30, n_keys=7)
    got = TRANSFORMER.dot_product_variance(Context(config=cfg, seed=3, out_dir=tmp_path))
    assert calls == [((16, 32, 64), 30, 7, 3)]
    # least squares through the origin: Σ d·v / Σ d²
    slope = (16 * 14.0 + 32 * 35.0 + 64 * 60.0) / (16**2 + 32**2 + 64**2)
    assert got.value == pytest.approx(slope, rel=1e-12)
    # slope of log v on log d: log 2 apart, so (y3 − y1) / (2 log 2)
    exponent = (math.log(60.0) - math.log(14.0)) / (2 * math.log(2))
    assert got.details == {
        "d_k": [16, 32, 64],
        "variance": [14.0, 35.0, 60.0],
        "log_log_exponent": pytest.approx(exponent, rel=1e-12),
    }
    [(path, series, rest)] = drawn
    assert path == tmp_path / "dot_product_variance.svg"
    assert series == {
        "Var(q·k)": ((16, 32, 64), [14.0, 35.0, 60.0]),
        "Var(q·k/√d_k)": ((16, 32, 64), [1.02, 0.97, 1.05]),
    }
    assert rest == {
        "xlabel": "d_k",
        "ylabel": "variance",
        "title": "Dot products of unit-variance q, k",
        "logx": True,
        "logy": True,
    }
    TRANSFORMER.dot_product_variance(Context(config=cfg, seed=3))  # no folder: no plot
    assert len(drawn) == 1


def test_scaled_variance_and_saturation_on_made_up_statistics(monkeypatch) -> None:
    from repro.lab.claims import Context

    calls = _fake_stats(monkeypatch)
    cfg = TRANSFORMER.Config(d_ks=(16, 32, 64), n_rows=30, n_keys=7)
    ctx = Context(config=cfg, seed=2)
    got = TRANSFORMER.scaled_variance(ctx)
    assert got.value == 0.85  # |0.85 − 1| is the largest distance from 1, in the flash list
    assert got.details == {
        "d_k": [16, 32, 64],
        "scaled_variance_ref": [1.02, 0.97, 1.05],
        "scaled_variance_flash": [0.99, 0.85, 1.1],
        "unscaled_variance_control": [14.0, 35.0, 60.0],
    }
    # the farthest from 1 above it this time (the largest value, not the smallest)
    monkeypatch.setitem(FAKE_STATS, "var_scaled_flash", [0.99, 0.88, 1.18])
    assert TRANSFORMER.scaled_variance(ctx).value == 1.18
    monkeypatch.setitem(FAKE_STATS, "var_scaled_flash", [0.99, 0.85, 1.1])
    sat = TRANSFORMER.softmax_saturation(ctx)
    assert sat.value == pytest.approx(0.002 / 0.25)  # the largest d_k
    assert sat.details == {
        "d_k": [16, 32, 64],
        "median_jacobian_unscaled": [0.3, 0.06, 0.002],
        "median_jacobian_scaled": [0.5, 0.4, 0.25],
        "ratio": pytest.approx([0.3 / 0.5, 0.06 / 0.4, 0.002 / 0.25]),
    }
    assert calls == [((16, 32, 64), 30, 7, 2)] * 3


def test_sinusoid_shift_reads_the_models_table(monkeypatch) -> None:
    """A model whose table is exact except one entry of its last row: only the largest
    offset reaches that row, and the error there is the entry's perturbation."""
    from repro.lab.claims import Context

    built = []

    class Table:
        def __init__(self, cfg):
            built.append(cfg)
            pos = torch.arange(cfg.max_seq_len, dtype=torch.float64)[:, None]
            i = torch.arange(0, cfg.d_model, 2, dtype=torch.float64)
            angle = pos / 10000 ** (i / cfg.d_model)  # pos / 10000^(2i/C)
            pe = torch.stack([angle.sin(), angle.cos()], -1).flatten(1)  # (P, C)
            pe[-1, 3] += 0.01
            self.pe = pe.float()

    monkeypatch.setattr(TRANSFORMER, "Transformer", Table)
    cfg = TRANSFORMER.Config(pe_dim=8, pe_positions=5, pe_offsets=(3, 1, 2))
    got = TRANSFORMER.sinusoid_shift(Context(config=cfg))
    [model_cfg] = built
    assert (model_cfg.d_model, model_cfg.max_seq_len) == (8, 8)  # positions 0 … 5 + 3 − 1
    assert got.value == pytest.approx(0.01, abs=1e-6)
    assert got.details["offsets"] == [3, 1, 2]
    assert got.details["max_error"] == pytest.approx([0.01, 0.0, 0.0], abs=1e-6)
    assert got.details["max_|M M^T - I|"] == pytest.approx([0.0] * 3, abs=1e-12)
    assert list(got.details) == ["offsets", "max_error", "max_|M M^T - I|"]


def test_reversal_claim_reports_the_experiment() -> None:
    from repro.lab.claims import Context

    m = {"exact_match": 0.85, "token_accuracy": 0.97, "final_loss": 0.9, "loss_floor": 0.72}
    cfg = TRANSFORMER.Config(steps=321)
    got = TRANSFORMER.reversal_exact_match(Context(config=cfg, run_experiment=lambda c, x: m))
    assert got.value == 0.85
    assert got.details == {
        "token_accuracy": 0.97,
        "final_loss": 0.9,
        "label_smoothing_floor": 0.72,
        "steps": 321,
    }


# --- the experiment with the model replaced by a small recorded one --------------------------


class _Bigram(torch.nn.Module):
    """Stands in for the encoder-decoder: logits = table[decoder input] + mean of a weight
    over the source symbols; records the config, every batch, modes and decode calls."""

    made: list = []

    def __init__(self, cfg) -> None:
        super().__init__()
        _Bigram.made.append(self)
        self.cfg, self.batches, self.modes, self.decoded, self.moved = cfg, [], [], [], []
        g = torch.Generator().manual_seed(0)
        V = cfg.vocab_size
        self.table = torch.nn.Parameter(torch.randn(V, V, generator=g))
        self.src_weight = torch.nn.Parameter(torch.randn(V, generator=g))

    def to(self, *args, **kwargs):
        self.moved.append((args, kwargs))
        return super().to(*args, **kwargs)

    def train(self, mode: bool = True):
        self.modes.append(mode)
        return super().train(mode)

    def forward(self, src, dec_in):
        self.batches.append((src.clone(), dec_in.clone()))
        return self.table[dec_in] + self.src_weight[src].mean(1)[:, None, None]  # (B, T+1, V)

    def greedy_decode(self, src, bos_id, eos_id, max_len):
        self.decoded.append((src.clone(), bos_id, eos_id, max_len))
        return self.answer


def _reversal_batch_by_hand(n, T, V, g):
    from repro.data.tasks import BOS, SEP, reverse_task

    src, y = reverse_task(n, T, V, g)
    dec_in = torch.cat([torch.full((n, 1), BOS), y], 1)
    dec_out = torch.cat([y, torch.full((n, 1), SEP)], 1)
    return src, dec_in, dec_out


def test_experiment_recipe_with_the_model_recorded(monkeypatch, line_plots, tmp_path) -> None:
    """§5.3's Adam (β = 0.9, 0.98, ε = 1e-9) under Eq. 3 and §5.4's smoothing, written out
    below as a reference loop on the same stand-in model; greedy decoding scored by hand."""
    from repro.data.tasks import BOS, SEP
    from repro.lab.claims import Context

    _Bigram.made = []
    monkeypatch.setattr(TRANSFORMER, "Transformer", _Bigram)
    moves = []

    class Tracked(torch.Tensor):  # records where the batches are sent
        def to(self, *args, **kwargs):
            moves.append((args, kwargs))
            return super().to(*args, **kwargs).as_subclass(torch.Tensor)

    real_batch = TRANSFORMER.reversal_batch
    monkeypatch.setattr(
        TRANSFORMER,
        "reversal_batch",
        lambda n, c, g: tuple(t.as_subclass(Tracked) for t in real_batch(n, c, g)),
    )
    drawn = line_plots(TRANSFORMER)
    progress = []
    cfg = TRANSFORMER.Config(seq_len=3, vocab_size=7, n_layers=3, d_model=12, n_heads=3, d_ff=20,
                             dropout=0.25, label_smoothing=0.2, warmup=4, steps=25, batch_size=2,
                             eval_size=5)  # fmt: skip
    T, V = 3, 7
    g_eval = torch.Generator().manual_seed(10**6 + 4)
    src_eval, _, out_eval = _reversal_batch_by_hand(5, T, V, g_eval)
    answer = torch.cat([torch.full((5, 1), BOS), out_eval], 1)  # (n, 1 + T + 1)
    answer[0, 2] = (answer[0, 2] + 1) % V  # one token wrong
    answer[3, 1:3] = SEP  # two tokens wrong
    monkeypatch.setattr(_Bigram, "answer", answer, raising=False)

    adams = []

    class RecordedAdam(torch.optim.Adam):  # ε = 1e-9 is too small to show in these losses
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            adams.append(self)

    monkeypatch.setattr(torch.optim, "Adam", RecordedAdam)
    ctx = Context(config=cfg, seed=4, out_dir=tmp_path, progress=lambda *a: progress.append(a))
    got = TRANSFORMER.experiment(cfg, ctx)
    [adam] = adams
    assert (adam.defaults["betas"], adam.defaults["eps"]) == ((0.9, 0.98), 1e-9)
    [model] = _Bigram.made
    c = model.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.d_ff, c.vocab_size) == (3, 12, 3, 20, 7)
    assert (c.max_seq_len, c.dropout, c.backend) == (T + 1, 0.25, "sdpa")
    assert model.modes == [True, False]  # dropout on while training, off to decode
    assert model.moved == [(("cpu",), {})]
    assert moves == [(("cpu",), {})] * 3 * 26  # every training batch and the held-out one
    # the reference: same stand-in, same batches, Adam by the paper's numbers, Eq. 3 per step
    g = torch.Generator().manual_seed(4)
    table, src_w = (torch.nn.Parameter(t.detach().clone()) for t in _Bigram(model.cfg).parameters())
    opt = torch.optim.Adam([table, src_w], lr=0.0, betas=(0.9, 0.98), eps=1e-9)
    losses = []
    for step in range(1, 26):
        src, dec_in, dec_out = _reversal_batch_by_hand(2, T, V, g)
        assert torch.equal(model.batches[step - 1][0], src)
        assert torch.equal(model.batches[step - 1][1], dec_in)
        opt.param_groups[0]["lr"] = 12**-0.5 * min(step**-0.5, step * 4**-1.5)
        logits = table[dec_in] + src_w[src].mean(1)[:, None, None]
        loss = F.cross_entropy(logits.flatten(0, 1), dec_out.flatten(), label_smoothing=0.2)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert len(model.batches) == 25
    assert got["losses"] == pytest.approx(losses, rel=1e-5)
    assert got["final_loss"] == pytest.approx(sum(losses[5:]) / 20, rel=1e-5)
    torch.testing.assert_close(model.table.detach(), table.detach())
    [(src, bos, eos, max_len)] = model.decoded
    assert torch.equal(src, src_eval) and (bos, eos, max_len) == (BOS, SEP, T + 1)
    assert got["exact_match"] == pytest.approx(3 / 5)
    assert got["token_accuracy"] == pytest.approx((5 * 4 - 3) / 20)
    top, rest = 1 - 0.2 + 0.2 / 7, 0.2 / 7  # H(q) of the smoothed target
    floor = -(top * math.log(top) + 6 * rest * math.log(rest))
    assert got["loss_floor"] == pytest.approx(floor)
    assert set(got) == {"exact_match", "token_accuracy", "final_loss", "loss_floor", "losses"}
    assert progress == [("transformer: reversal", s, 25) for s in (1, 11, 21, 25)]
    [(path, series, rest_args)] = drawn
    assert path == tmp_path / "loss.svg"
    steps = list(range(1, 26))
    assert series == {
        "training loss (ε_ls = 0.1)": (steps, pytest.approx(losses, rel=1e-5)),
        "H(q): smoothing floor": (steps, [pytest.approx(floor)] * 25),
    }
    assert rest_args == {
        "xlabel": "step",
        "ylabel": "loss (nats)",
        "title": "Reversing 3 symbols: encoder-decoder, Eq. 3 schedule",
    }
    _Bigram.made = []
    TRANSFORMER.experiment(cfg, Context(config=cfg, seed=4))  # no folder: no plot
    assert len(drawn) == 1
