"""Helpers of papers/speculative-decoding/repro.py beyond its claims."""

from __future__ import annotations

import pytest
import torch

from repro.decoding.speculative import expected_tokens_per_call, speculative_generate
from repro.lab.claims import Context
from repro.lab.library import Library

SD = Library().get("speculative-decoding").module()


@pytest.mark.parametrize(("alpha", "gamma"), [(0.3, 1), (0.62, 7), (0.9, 10)])
def test_enumerated_tokens_per_call_is_eq1_and_not_the_uncapped_geometric(alpha, gamma) -> None:
    got = SD.tokens_per_call_enumerated(alpha, gamma)
    assert got == pytest.approx(expected_tokens_per_call(alpha, gamma), abs=1e-12)
    assert abs(got - 1 / (1 - alpha)) > 1e-3  # the cap at γ + 1 matters


def test_random_pairs_are_distributions_and_lopsided() -> None:
    p, q = SD.random_pairs(300, 0)
    assert torch.allclose(p.sum(-1), torch.ones(300, dtype=torch.float64))
    support = (p > 0).sum(-1)
    assert (p.max(-1).values * support > 3).float().mean() > 0.5  # peaked: max ≫ uniform
    beta = torch.minimum(p, q).sum(-1)
    assert beta.min() < 0.3 and beta.max() > 0.6


def test_measured_alpha_is_one_for_the_target_itself_and_low_for_a_uniform_draft() -> None:
    torch.manual_seed(0)
    target = SD.random_tiny_gpt(8, 3, 24)
    tokens = torch.randint(0, 8, (1, 20))
    assert SD.measured_alpha(target, target, tokens, 4) == pytest.approx(1.0, abs=1e-9)
    uniform = SD.uniform_draft(8, 24).double()
    alpha = SD.measured_alpha(target, uniform, tokens, 4)
    assert alpha < 0.9
    with torch.no_grad():
        probs = torch.softmax(uniform(tokens)[0], -1)
    assert torch.allclose(probs, torch.full_like(probs, 1 / 8))


def test_uniform_draft_is_rarely_accepted_by_a_peaked_target() -> None:
    target = SD.random_tiny_gpt(8, 5, 40)
    prompt = torch.tensor([[1, 2]])
    res = speculative_generate(target, SD.uniform_draft(8, 40).double(), prompt, 30, 4, 1.0)
    assert res.tokens_per_call(4) < 2.0


def test_exactness_controls_differ_and_the_exact_loop_does_not() -> None:
    m = SD._exactness(3, 2, 1, (1.0,), 7)
    row = m["T=1"]
    assert row["exact"]["max_abs"] < 1e-12
    assert row["accept_all"]["tv"] > 1e-3 and row["resample_p"]["tv"] > 1e-5


# --- the pieces the claims build on, against their docstrings and the paper's formulas --------


def test_random_pairs_are_seeded_and_both_sides_are_distributions() -> None:
    p, q = SD.random_pairs(50, 4)
    p2, q2 = SD.random_pairs(50, 4)
    assert torch.equal(p, p2) and torch.equal(q, q2)  # the seed alone fixes every draw
    p3, _ = SD.random_pairs(50, 5)
    assert not torch.equal(p, p3)
    assert p.shape == q.shape == (50, 64) and p.dtype == q.dtype == torch.float64
    ones = torch.ones(50, dtype=torch.float64)
    torch.testing.assert_close(q.sum(-1), ones, rtol=0, atol=1e-12)
    torch.testing.assert_close(p.sum(-1), ones, rtol=0, atol=1e-12)
    assert not torch.equal(p, q)


def test_random_pairs_support_is_uniform_on_3_to_64_and_shared_by_p_and_q() -> None:
    """Every support size 3..64 (the first `size` tokens) about equally often: n/62 each."""
    n = 12000
    p, q = SD.random_pairs(n, 0)
    size = (p > 0).sum(-1)
    assert torch.equal(size, (q > 0).sum(-1))
    live = torch.arange(64)[None, :] < size[:, None]
    assert torch.equal(p > 0, live)  # a prefix of the vocabulary, no holes
    counts = torch.bincount(size, minlength=65)
    assert counts[:3].sum() == 0
    expected = n / 62
    assert counts[3:].min() > 0.6 * expected and counts[3:].max() < 1.4 * expected


def test_random_pairs_concentration_is_drawn_per_pair_from_0_1_to_1() -> None:
    """Dirichlet(α·1_K): E[Σ p_i²] = (α + 1) / (Kα + 1); averaged over α ~ U(0.1, 1) and
    K ~ U{3..64} (numerical integration), against the sample mean. p and q of one pair share α:
    within one support size their peakedness is correlated (it is not for one global α)."""
    n = 20000
    p, q = SD.random_pairs(n, 1)
    a = torch.linspace(0.1, 1.0, 20001, dtype=torch.float64)
    K = torch.arange(3, 65, dtype=torch.float64)[:, None]
    want = ((a + 1) / (K * a + 1)).mean().item()
    sp, sq = (p**2).sum(-1), (q**2).sum(-1)
    assert sp.mean().item() == pytest.approx(want, rel=0.03)
    assert sq.mean().item() == pytest.approx(want, rel=0.03)
    size = (p > 0).sum(-1)
    rp, rq = sp.clone(), sq.clone()
    for k in range(3, 65):
        at = size == k
        rp[at] -= sp[at].mean()
        rq[at] -= sq[at].mean()
    assert torch.corrcoef(torch.stack([rp, rq]))[0, 1] > 0.2


def test_table1_rows_are_the_closed_forms_at_zero_cost() -> None:
    """Table 1 (c = ĉ = 0): speed (1 − α^{γ+1}) / (1 − α) (Eq. 1), operations
    (γ + 1)(1 − α) / (1 − α^{γ+1}) (Thm. 3.11), for each of its (α, γ) rows, to 3 decimals."""
    table = SD._table1()
    assert len(table) == len(SD.TABLE1_ROWS) == 6
    for a, g in SD.TABLE1_ROWS:
        row = table[f"alpha={a} gamma={g}"]
        speed = (1 - a ** (g + 1)) / (1 - a)
        assert row["speed"] == round(speed, 3)
        assert row["operations"] == round((g + 1) * (1 - a) / (1 - a ** (g + 1)), 3)
        assert row["speed"] > 1 and row["operations"] > 1


def test_random_tiny_gpt_is_the_documented_model() -> None:
    """A 1-layer, 16-wide, 2-head fp64 GPT with the plain attention formula, its matrices drawn
    from N(0, 0.6²) and its vectors (norm gains, biases) left at their init."""
    model = SD.random_tiny_gpt(5, 2, 300)
    cfg = model.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.vocab_size) == (1, 16, 2, 5)
    assert cfg.max_seq_len == 300 and cfg.backend == "ref" and len(model.blocks) == 1
    assert next(model.parameters()).dtype == torch.float64 and not model.training
    w = torch.cat([p.flatten() for p in model.parameters() if p.dim() > 1])
    assert abs(w.mean().item()) < 0.03 and w.std().item() == pytest.approx(0.6, rel=0.05)
    torch.testing.assert_close(model.blocks[0].ln_1.weight, torch.ones(16, dtype=torch.float64))
    torch.testing.assert_close(model.blocks[0].attn.wq.bias, torch.zeros(16, dtype=torch.float64))
    logits = model(torch.randint(0, 5, (1, 300)))  # every position the model was built for
    assert logits.shape == (1, 300, 5)
    same = SD.random_tiny_gpt(5, 2, 300)
    pairs = zip(model.parameters(), same.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_uniform_draft_is_small_and_covers_its_length() -> None:
    """The uniform draft is the cheapest GPT (1 layer, width 8, 2 heads) and takes max_len
    positions (past the 256 of GPTConfig's default)."""
    draft = SD.uniform_draft(7, 300)
    cfg = draft.cfg
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.vocab_size) == (1, 8, 2, 7)
    assert cfg.max_seq_len == 300
    with torch.no_grad():
        probs = torch.softmax(draft(torch.randint(0, 7, (1, 300)))[0], -1)
    torch.testing.assert_close(probs, torch.full_like(probs, 1 / 7))


def test_efficiency_models_differ_only_in_width() -> None:
    cfg = SD.Config()
    target, draft = SD._gpt(32, cfg, 3, 200), SD._gpt(16, cfg, 4, 200)
    for model, width in ((target, 32), (draft, 16)):
        c = model.cfg
        assert (c.n_layers, c.d_model, c.n_heads, c.vocab_size) == (1, width, 2, cfg.vocab_size)
        assert c.max_seq_len == 200 and c.backend == "sdpa"
    again = SD._gpt(32, cfg, 3, 200)
    pairs = zip(target.parameters(), again.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    other = SD._gpt(32, cfg, 5, 200)
    assert not torch.equal(target.wte.weight, other.wte.weight)


def test_exactness_ctx_reads_each_setting_of_the_config() -> None:
    """V = 2, N = 3 new tokens, γ = 1, T ∈ {1}: the exact loop's outcomes are the V^N
    sequences, and the result is `_exactness` called with those settings and the seed."""
    cfg = SD.Config(enum_vocab=2, enum_new_tokens=3, enum_gamma=1, enum_temperatures=(1.0,))
    m = SD._exactness_ctx(Context(config=cfg, seed=6))
    assert list(m) == ["T=1"]
    assert m["T=1"]["exact"]["outcomes"] == 2**3
    assert m == SD._exactness(2, 3, 1, (1.0,), 6)
    assert m != SD._exactness(2, 3, 1, (1.0,), 7)
