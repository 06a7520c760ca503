"""Helpers of papers/speculative-decoding/repro.py beyond its claims."""

from __future__ import annotations

import math

import pytest
import torch

from repro.data.markov import MarkovConfig, MarkovSource
from repro.decoding.speculative import (
    SpeculativeResult,
    TorchRandomness,
    distribution_gap,
    exact_output_distribution,
    expected_tokens_per_call,
    sequence_distribution_ref,
    speculative_generate,
)
from repro.lab.claims import Context
from repro.lab.library import Library
from repro.lab.threads import torch_threads

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


# --- the claim helpers: what each reports, on hand-made inputs ---------------------------------


def _hand_pairs() -> tuple[torch.Tensor, torch.Tensor]:
    """Three pairs whose β = Σ min(p, q) is 0.5, 0.4 and 1 by hand."""
    p = torch.tensor([[0.7, 0.2, 0.1], [0.6, 0.4, 0.0], [0.1, 0.3, 0.6]], dtype=torch.float64)
    q = torch.tensor([[0.2, 0.2, 0.6], [0.3, 0.1, 0.6], [0.1, 0.3, 0.6]], dtype=torch.float64)
    return p, q


@pytest.mark.parametrize(
    ("tv_shift", "ref_shift", "want"),
    [(0.0, 0.0, 0.0), (0.02, 0.0, 0.02), (0.0, 0.05, 0.05), (0.03, 0.01, 0.03)],
)
def test_alpha_is_one_minus_tv_reports_the_larger_gap_of_any_pair(
    monkeypatch: pytest.MonkeyPatch, tv_shift: float, ref_shift: float, want: float
) -> None:
    """The claim draws 2,000 pairs with the context's seed and reports the larger of
    max |β − (1 − TV)| and max |β − E_q min(1, p/q)|: a TV or a definition that is off by
    `shift` (downwards, at one pair) shows as that shift, and β's range is read off the pairs."""
    drawn = []

    def pairs(n: int, seed: int):
        drawn.append((n, seed))
        return _hand_pairs()

    real_tv, real_ref = SD.tv_distance, SD.acceptance_rate_ref
    tv_off = torch.tensor([0.0, -tv_shift, 0.0], dtype=torch.float64)
    ref_off = torch.tensor([0.0, 0.0, ref_shift], dtype=torch.float64)
    monkeypatch.setattr(SD, "random_pairs", pairs)
    monkeypatch.setattr(SD, "tv_distance", lambda p, q: real_tv(p, q) + tv_off)
    monkeypatch.setattr(SD, "acceptance_rate_ref", lambda p, q: real_ref(p, q) + ref_off)
    out = SD.alpha_is_one_minus_tv(Context(seed=7))
    assert drawn == [(2000, 7)]
    assert out.value == pytest.approx(want, abs=1e-15)
    d = out.details
    assert set(d) == {"pairs", "gap_to_1_minus_tv", "gap_to_definition", "beta_range"}
    assert d["pairs"] == 2000
    assert d["gap_to_1_minus_tv"] == pytest.approx(tv_shift, abs=1e-15)
    assert d["gap_to_definition"] == pytest.approx(ref_shift, abs=1e-15)
    assert d["beta_range"] == pytest.approx([0.4, 1.0], abs=1e-15)


@pytest.mark.parametrize(("alpha", "gamma", "bump"), [(0.05, 1, 0.3), (0.95, 12, -0.2),
                                                       (0.05, 12, -0.1), (0.95, 1, 0.4),
                                                       (0.35, 7, 0.25)])  # fmt: skip
def test_expected_tokens_formula_scans_every_alpha_and_gamma_of_its_grid(
    monkeypatch: pytest.MonkeyPatch, alpha: float, gamma: int, bump: float
) -> None:
    """α ∈ {0.05, 0.10, …, 0.95} × γ ∈ 1..12: an Eq. 1 off by `bump` at one corner (or inside)
    of the grid shows as |bump|."""
    real = SD.expected_tokens_per_call

    def off(a: float, g: int) -> float:
        return real(a, g) + (bump if math.isclose(a, alpha) and g == gamma else 0.0)

    monkeypatch.setattr(SD, "expected_tokens_per_call", off)
    assert SD.expected_tokens_formula(Context()).value == pytest.approx(abs(bump), abs=1e-12)


def test_expected_tokens_formula_details_are_the_limit_and_the_headline_row() -> None:
    out = SD.expected_tokens_formula(Context())
    assert out.value < 1e-12
    assert out.details == {
        "limit_gamma_to_infinity_alpha_0.8": pytest.approx(5.0, abs=1e-12),
        "alpha_0.8_gamma_5": pytest.approx((1 - 0.8**6) / 0.2, abs=1e-12),
    }


def test_table1_claims_are_the_closed_forms_at_alpha_0_8_gamma_5() -> None:
    speed = SD.table1_speed(Context())
    assert speed.value == pytest.approx((1 - 0.8**6) / (1 - 0.8), rel=1e-12)  # 3.689
    ops = SD.table1_operations(Context())
    assert ops.value == pytest.approx(6 * (1 - 0.8) / (1 - 0.8**6), rel=1e-12)  # 1.626
    assert speed.details == ops.details == {"table_1": SD._table1()}


def test_best_gamma_claim_is_the_argmax_of_theorem_3_8_over_integers() -> None:
    """(1 − α^{γ+1}) / ((1 − α)(γc + 1)) at α = 0.8, c = 0.05, maximised over γ = 1..64 by a
    loop; Cor. 3.9's lower bound (1 + α) / (1 + c)."""

    def factor(g: int) -> float:
        return (1 - 0.8 ** (g + 1)) / ((1 - 0.8) * (g * 0.05 + 1))

    best = max(range(1, 65), key=factor)
    out = SD.best_gamma_claim(Context())
    assert out.value == best
    assert out.details == {
        "factor_at_best": pytest.approx(factor(best), rel=1e-12),
        "factor_by_gamma": {k: round(factor(k), 3) for k in (1, 3, 8, 11)},
        "corollary_3_9_lower_bound": pytest.approx(1.8 / 1.05, rel=1e-12),
    }


def test_exactness_runs_the_documented_models_prompt_and_temperatures() -> None:
    """Target and draft are the tiny GPTs of seeds 2s + 1 and 2s + 2 (16 positions), the
    prompt (s mod V, s + 1 mod V); each temperature's row holds the three variants' gaps to the
    target's own distribution (only the exact loop at T = 0) and β at the first new token."""
    V, N, gamma, s = 3, 2, 1, 5
    m = SD._exactness(V, N, gamma, (1.0, 0.0), s)
    assert list(m) == ["T=1", "T=0"]
    target = SD.random_tiny_gpt(V, 2 * s + 1, 16)
    draft = SD.random_tiny_gpt(V, 2 * s + 2, 16)
    prompt = torch.tensor([[s % V, (s + 1) % V]])
    with torch.no_grad():
        logit_p, logit_q = target(prompt)[0, -1], draft(prompt)[0, -1]
    for T, key, variants in ((1.0, "T=1", ("exact", "accept_all", "resample_p")),
                             (0.0, "T=0", ("exact",))):  # fmt: skip
        row = m[key]
        assert set(row) == {*variants, "alpha_first_token"}
        ref = sequence_distribution_ref(target, prompt, N, T)
        for variant in variants:
            got = exact_output_distribution(target, draft, prompt, N, gamma, T, variant)
            assert row[variant] == distribution_gap(got, ref) | {"outcomes": len(got)}
        if T == 0:
            p = torch.zeros(V).index_fill_(0, logit_p.argmax(), 1.0)
            q = torch.zeros(V).index_fill_(0, logit_q.argmax(), 1.0)
        else:
            p, q = torch.softmax(logit_p, -1), torch.softmax(logit_q, -1)
        assert row["alpha_first_token"] == pytest.approx(torch.minimum(p, q).sum().item())
    assert m["T=1"]["exact"]["outcomes"] == V**N and m["T=0"]["exact"]["outcomes"] == 1
    assert 0.05 < m["T=1"]["alpha_first_token"] < 0.95  # target and draft differ


def test_exactness_claims_read_the_worst_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """The exact loop's gap is the largest over temperatures; each control's TV the smallest
    over the temperatures it was run at (not T = 0)."""
    m = {
        "T=1": {"exact": {"max_abs": 2e-16}, "accept_all": {"tv": 0.3}, "resample_p": {"tv": 0.05}},
        "T=0.6": {"exact": {"max_abs": 7e-16}, "accept_all": {"tv": 0.2},
                  "resample_p": {"tv": 0.08}},
        "T=0": {"exact": {"max_abs": 1e-16}},
    }  # fmt: skip
    seen = []
    monkeypatch.setattr(SD, "_exactness_ctx", lambda ctx: seen.append(ctx) or m)
    ctx = Context(seed=3)
    exact = SD.exact_output_distribution_claim(ctx)
    accept = SD.accept_all_differs(ctx)
    resample = SD.resample_p_differs(ctx)
    assert seen == [ctx] * 3
    assert (exact.value, accept.value, resample.value) == (7e-16, 0.2, 0.05)
    assert exact.details == accept.details == resample.details == m


def test_experiment_claims_pool_the_sweep_and_read_the_headline_gamma() -> None:
    """Eq. 1's check pools the sweep weighted by each γ's full steps: Σ measured·steps /
    Σ formula·steps; the speed-up is the headline γ's row, the control the uniform draft's."""
    sweep = {
        1: {"tokens_per_call": 1.5, "formula": 1.6, "steps": 10},
        4: {"tokens_per_call": 3.0, "formula": 2.5, "steps": 3},
        6: {"tokens_per_call": 2.0, "formula": 2.2, "steps": 5},
    }
    uniform = {"tokens_per_call": 1.1, "alpha": 0.1}
    m = {"sweep": sweep, "uniform": uniform, "loss_target": 2.0}
    ctx = Context(config=SD.Config(gamma=4), _metrics=m)
    pooled = SD.tokens_per_call_matches_formula(ctx)
    assert pooled.value == pytest.approx((15 + 9 + 10) / (16 + 7.5 + 11), rel=1e-12)
    assert pooled.details == {"sweep": sweep, "loss_target": 2.0}
    speedup = SD.trained_draft_speedup(ctx)
    assert speedup.value == 3.0 and speedup.details == sweep[4]
    control = SD.uniform_draft_control(ctx)
    assert control.value == 1.1 and control.details == uniform


def _tiny_efficiency(monkeypatch: pytest.MonkeyPatch, out_dir) -> tuple:
    """`_efficiency` on a 6-token source with training and evaluation recorded (not run), and
    each generation's steps replaced by lopsided ones: full steps (γ, γ), (γ, 0), (γ, 1) and a
    short one (γ − 1, 0) that the tokens-per-call average must leave out."""
    cfg = SD.Config(vocab_size=6, concentration=0.3, seq_len=16, batch=2, target_steps=3,
                    draft_steps=2, gammas=(3, 1), gamma=2, gen_tokens=8)  # fmt: skip
    trained, evaluated, generated, progress = [], [], [], []
    monkeypatch.setattr(SD, "train_lm", lambda *args: trained.append(args))
    monkeypatch.setattr(
        SD, "evaluate_lm", lambda model, data: evaluated.append((model, data)) or model.cfg.d_model
    )
    real = SD.speculative_generate

    def generate(target, draft, prompt, new_tokens, gamma, temperature, rng):
        # its own randomness: the experiment's generator then serves the data and prompts only
        res = real(target, draft, prompt, new_tokens, gamma, temperature, TorchRandomness())
        steps = [(gamma, gamma), (gamma, 0), (gamma - 1, 0), (gamma, 1)]
        out = SpeculativeResult(res.tokens, 5 + gamma, 11 * gamma, steps)
        generated.append((target, draft, prompt, new_tokens, gamma, temperature, rng, out))
        return out

    monkeypatch.setattr(SD, "speculative_generate", generate)
    ctx = Context(config=cfg, seed=2, progress=lambda *a: progress.append(a), out_dir=out_dir)
    m = SD._efficiency(cfg, ctx)
    return cfg, m, trained, evaluated, generated, progress


def _alpha_by_hand(target, tokens: torch.Tensor, draft=None) -> float:
    """mean over the sampled positions 4.. of Σ min(p, q): p the target's next-token softmax
    after each prefix, q the draft's (or 1/V)."""
    with torch.no_grad():
        p = torch.softmax(target(tokens[:, :-1])[0, 3:].double(), -1)
        q = (
            p.new_full(p.shape, 1 / p.shape[-1])
            if draft is None
            else torch.softmax(draft(tokens[:, :-1])[0, 3:].double(), -1)
        )
    return torch.minimum(p, q).sum(-1).mean().item()


def test_efficiency_trains_sweeps_and_reports_by_the_documented_recipe(
    monkeypatch: pytest.MonkeyPatch, line_plots, tmp_path
) -> None:
    plots = line_plots(SD)
    cfg, m, trained, evaluated, generated, progress = _tiny_efficiency(monkeypatch, tmp_path)
    label = "speculative-decoding: training"
    assert progress == [(label, 0, 2), (label, 1, 2), (label, 2, 2)]
    # the target (width 32) on steps·B sequences of T + 1 tokens, the draft (16) on the first
    # draft_steps·B of them, both at lr 1e-2, from the seeds 2s + 1 and 2s + 2
    (target, data, t_steps, t_lr), (draft, d_data, d_steps, d_lr) = trained
    assert data.shape == (3 * 2, 17) and int(data.max()) < 6
    assert torch.equal(d_data, data[:4]) and (t_steps, d_steps, t_lr, d_lr) == (3, 2, 1e-2, 1e-2)
    for model, width, seed in ((target, 32, 5), (draft, 16, 6)):
        want = SD._gpt(width, cfg, seed, 16)  # max(4 + 8 generated, 16 trained) positions
        pairs = zip(model.parameters(), want.parameters(), strict=True)
        assert model.cfg == want.cfg and all(torch.equal(a, b) for a, b in pairs)
    assert [(e[0], e[1].shape) for e in evaluated] == [(target, (64, 17)), (draft, (64, 17))]
    assert evaluated[0][1] is evaluated[1][1]
    # one generator seeded by the context draws, in turn, the training data, the held-out
    # sequences and each run's prompt; the sampling shares it
    source = MarkovSource(MarkovConfig(vocab_size=6, order=1, concentration=0.3))
    g = torch.Generator().manual_seed(2)
    assert torch.equal(data, source.sample(6, 17, g))
    assert torch.equal(evaluated[0][1], source.sample(64, 17, g))
    for run in generated:
        assert torch.equal(run[2], source.sample(1, 4, g))
    assert torch.equal(generated[0][6].generator.get_state(), g.get_state())
    assert (m["loss_target"], m["loss_draft"]) == (32, 16)
    assert m["loss_floor"] == source.entropy_rate()
    # γ = 1, 2, 3 (the sweep and the headline γ, once each, in order), then the uniform control
    assert [g[4] for g in generated] == [1, 2, 3, 2]
    rng = generated[0][6]
    assert isinstance(rng, TorchRandomness) and isinstance(rng.generator, torch.Generator)
    for t, _, prompt, new, _, temperature, r, _ in generated:
        assert t is target and prompt.shape == (1, 4) and int(prompt.max()) < 6
        assert (new, temperature, r) == (8, 1.0, rng)
    assert all(g[1] is draft for g in generated[:3])
    unif = generated[3][1]
    assert unif.cfg.max_seq_len == 12 and unif.cfg.vocab_size == 6
    assert all(not p.any() for p in unif.parameters())
    assert list(m["sweep"]) == [1, 2, 3]
    for _, _, _, _, g, _, _, res in generated[:3]:
        alpha = _alpha_by_hand(target, res.tokens, draft)
        assert m["sweep"][g] == {
            "alpha": pytest.approx(alpha, abs=1e-6),
            "tokens_per_call": pytest.approx((g + 1 + 1 + 2) / 3),
            "formula": pytest.approx((1 - alpha ** (g + 1)) / (1 - alpha), abs=1e-5),
            "steps": 3,
            "target_calls_per_token": (5 + g) / 8,
            "draft_calls": 11 * g,
        }
    res = generated[3][7]
    alpha = _alpha_by_hand(target, res.tokens)
    assert m["uniform"] == {
        "alpha": pytest.approx(alpha, abs=1e-6),
        "tokens_per_call": pytest.approx(2.0),  # (3 + 1 + 2) / 3: the short step left out
        "formula": pytest.approx((1 - alpha**3) / (1 - alpha), abs=1e-5),
        "target_calls_per_token": 7 / 8,
    }
    assert 0.05 < alpha < 0.95
    ((path, series, _),) = plots
    assert path == tmp_path / "tokens_per_call.svg"
    assert list(series.values()) == [
        ([1, 2, 3], [m["sweep"][g]["tokens_per_call"] for g in (1, 2, 3)]),
        ([1, 2, 3], [m["sweep"][g]["formula"] for g in (1, 2, 3)]),
        ([1, 2, 3], [2, 3, 4]),
    ]


def test_efficiency_draws_no_plot_without_an_output_folder(
    monkeypatch: pytest.MonkeyPatch, line_plots
) -> None:
    plots = line_plots(SD)
    m = _tiny_efficiency(monkeypatch, None)[1]
    assert plots == [] and set(m) == {"loss_target", "loss_draft", "loss_floor", "sweep", "uniform"}


def test_experiment_is_the_efficiency_run_on_one_thread(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(SD, "_efficiency", lambda cfg, ctx: (cfg, ctx, torch.get_num_threads()))
    cfg, ctx = SD.Config(), Context()
    with torch_threads(2):
        assert SD.experiment(cfg, ctx) == (cfg, ctx, 1)


def test_expected_tokens_formula_covers_exactly_its_grid(monkeypatch: pytest.MonkeyPatch) -> None:
    """Eq. 1 and the enumeration are each called at every (α, γ) of {0.05, …, 0.95} × 1..12
    and nowhere else (the details add Eq. 1 at α = 0.8, γ = 5)."""
    calls: dict[str, list] = {}

    def record(name: str) -> None:
        real, seen = getattr(SD, name), calls.setdefault(name, [])
        monkeypatch.setattr(SD, name, lambda a, g: seen.append((a, g)) or real(a, g))

    record("expected_tokens_per_call")
    record("tokens_per_call_enumerated")
    SD.expected_tokens_formula(Context())
    grid = [(pytest.approx(k / 20, abs=1e-12), g) for k in range(1, 20) for g in range(1, 13)]
    assert calls["tokens_per_call_enumerated"] == grid
    assert calls["expected_tokens_per_call"] == [*grid, (0.8, 5)]
