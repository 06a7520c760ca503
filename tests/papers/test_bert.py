"""Pieces of papers/bert/repro.py beyond its claims: the masking function and the floors."""

from __future__ import annotations

import math

import pytest
import torch

from repro.lab.library import Library

BERT = Library().get("bert").module()


def _corrupt(n: int, T: int, V: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(BERT.FIRST_REGULAR, V, (n, T), generator=g)
    maskable = torch.ones_like(ids, dtype=torch.bool)
    maskable[:, 0] = maskable[:, -1] = False  # [CLS] ... [SEP]
    ids[:, 0], ids[:, -1] = BERT.CLS, BERT.SEP
    inputs, labels = BERT.mask_tokens(ids, maskable, V, g)
    return ids, maskable, inputs, labels


@pytest.mark.parametrize("T", [3, 9, 40, 130])
def test_each_sequence_gets_its_quota(T: int) -> None:
    ids, maskable, inputs, labels = _corrupt(500, T, 100)
    chosen = labels != BERT.IGNORE
    n = maskable.sum(1).double()
    k = chosen.sum(1)
    assert bool(((k == torch.floor(0.15 * n)) | (k == torch.ceil(0.15 * n))).all())
    assert not bool((chosen & ~maskable).any()), "[CLS]/[SEP] must never be chosen"


def test_labels_and_untouched_positions() -> None:
    ids, maskable, inputs, labels = _corrupt(300, 50, 1000)
    chosen = labels != BERT.IGNORE
    assert torch.equal(labels[chosen], ids[chosen])
    assert torch.equal(inputs[~chosen], ids[~chosen])
    changed = inputs[chosen][inputs[chosen] != ids[chosen]]
    assert bool((changed == BERT.MASK).any()) and bool((changed >= BERT.FIRST_REGULAR).any())
    assert bool(((changed == BERT.MASK) | (changed >= BERT.FIRST_REGULAR)).all())


def test_masking_is_reproducible_from_the_generator() -> None:
    a, b = _corrupt(20, 30, 500, seed=3), _corrupt(20, 30, 500, seed=3)
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))


def test_context_floors_are_ordered() -> None:
    source = BERT.markov_source(BERT.PRESETS["quick"])
    both = BERT.two_sided_entropy(source)
    assert 0 < both < source.entropy_rate() < source.unigram_entropy()


def test_two_sided_entropy_of_an_iid_source_is_its_entropy() -> None:
    # Rows all equal: the chain is i.i.d., so neighbours carry no information.
    source = BERT.markov_source(BERT.PRESETS["quick"])
    row = source.transition[0]
    source.transition = row.expand_as(source.transition).clone()
    h = float(-(row * row.log()).sum())
    assert BERT.two_sided_entropy(source) == pytest.approx(h, rel=1e-9)
    assert source.entropy_rate() == pytest.approx(h, rel=1e-9)


# --- the controls of the measured claims: each must fail its claim's tolerance -------------


def test_broken_maskers_fail_the_masking_claims(monkeypatch: pytest.MonkeyPatch) -> None:
    """The four masking claims (0.15 ± 0.001, 0.8 ± 0.003, 0.1 ± 0.0025, 0.1 ± 0.0025) read
    `masking_stats`; a masker choosing 20% of the tokens, and one that always writes [MASK]
    (Appendix C.2's MASK-only strategy), must fail them."""
    cfg = BERT.Config(mask_sequences=2000)
    good = BERT.masking_stats(cfg, 0)
    assert abs(good["chosen"] / good["maskable"] - 0.15) < 0.001
    assert abs(good["mask"] / good["chosen"] - 0.8) < 0.003
    real = BERT.mask_tokens

    def rate_20(ids, maskable, vocab_size, generator, rate=0.15):
        return real(ids, maskable, vocab_size, generator, rate=0.2)

    def mask_only(ids, maskable, vocab_size, generator, rate=0.15):
        inputs, labels = real(ids, maskable, vocab_size, generator, rate)
        return inputs.masked_fill(labels != BERT.IGNORE, BERT.MASK), labels

    monkeypatch.setattr(BERT, "mask_tokens", rate_20)
    st = BERT.masking_stats(BERT.Config(mask_sequences=2001), 0)
    assert abs(st["chosen"] / st["maskable"] - 0.15) > 0.001
    monkeypatch.setattr(BERT, "mask_tokens", mask_only)
    st = BERT.masking_stats(BERT.Config(mask_sequences=2002), 0)
    assert abs(st["mask"] / st["chosen"] - 0.8) > 0.003
    assert abs(st["random"] / st["chosen"] - 0.1) > 0.0025
    assert abs(st["unchanged"] / st["chosen"] - 0.1) > 0.0025


def test_untrained_models_fail_the_mlm_claims() -> None:
    """mlm-beats-unigram wants H(X) − loss ≥ 1.0 and bidirectional-beats-left-only a gap ≥ 0.2;
    after one training step both arms sit near log V and tie."""
    from repro.lab.claims import Context

    cfg = BERT.Config(steps=1)
    m = BERT.experiment(cfg, Context(config=cfg, seed=0))
    assert m["floors"]["unigram"] - m["bidirectional_loss"] < 1.0
    assert m["left_only_loss"] - m["bidirectional_loss"] < 0.2


# --- the masking, draw by draw -----------------------------------------------------------------


def _mask_by_hand(ids, maskable, V, g, rate):
    """The documented recipe one sequence at a time, drawing from g in mask_tokens' order:
    k = ⌊rate·n + u⌋ (u ~ U[0, 1) per sequence), the k maskable positions of smallest uniform
    key, then a uniform each: below 0.8 [MASK], below 0.9 a random ordinary token, else kept."""
    B, T = ids.shape
    u_k = torch.rand(B, generator=g, dtype=torch.float64)
    keys = torch.rand(B, T, generator=g)
    u = torch.rand(B, T, generator=g)
    inputs, labels, random_at = ids.clone(), torch.full_like(ids, BERT.IGNORE), []
    for b in range(B):
        n = int(maskable[b].sum())
        k = math.floor(rate * n + float(u_k[b]))
        order = sorted((float(keys[b, t]), t) for t in range(T) if maskable[b, t])
        for _, t in order[:k]:
            labels[b, t] = ids[b, t]
            if u[b, t] < 0.8:
                inputs[b, t] = BERT.MASK
            elif u[b, t] < 0.9:
                random_at.append((b, t))
    draws = torch.randint(BERT.FIRST_REGULAR, V, (len(random_at),), generator=g)
    for (b, t), r in zip(sorted(random_at), draws, strict=True):
        inputs[b, t] = r
    return inputs, labels


@pytest.mark.parametrize("rate", [None, 0.4])
def test_mask_tokens_draw_by_draw(rate) -> None:
    g = torch.Generator().manual_seed(11)
    ids = torch.randint(BERT.FIRST_REGULAR, 9, (6, 23), generator=g)
    maskable = torch.rand(6, 23, generator=g) < 0.8
    extra = {} if rate is None else {"rate": rate}
    got = BERT.mask_tokens(ids, maskable, 9, torch.Generator().manual_seed(5), **extra)
    want = _mask_by_hand(ids, maskable, 9, torch.Generator().manual_seed(5), rate or 0.15)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    chosen = want[1] != BERT.IGNORE
    changed = got[0][chosen] != ids[chosen]
    assert bool((got[0][chosen] == BERT.MASK).any()) and bool(
        (changed & (got[0][chosen] != BERT.MASK)).any()
    )


def test_sentence_pairs_draw_by_draw() -> None:
    cfg = BERT.Config(mask_vocab_size=50, mask_seq_len=9)
    ids, maskable = BERT.sentence_pairs(7, cfg, torch.Generator().manual_seed(2))
    g = torch.Generator().manual_seed(2)
    want = torch.randint(4, 50, (7, 9), generator=g)
    split = torch.randint(2, 7, (7,), generator=g)
    assert len(set(split.tolist())) > 2
    for b in range(7):
        want[b, 0], want[b, split[b]], want[b, 8] = 1, 2, 2  # [CLS] A [SEP] B [SEP]
    assert torch.equal(ids, want)
    assert torch.equal(maskable, want >= 4) and bool((want == 4).any())  # 4: the first ordinary


def test_masking_stats_count_each_outcome() -> None:
    # 3 ordinary tokens: a random draw often hits the original, and counts as unchanged
    cfg = BERT.Config(mask_vocab_size=7, mask_seq_len=12, mask_sequences=300)
    st = BERT.masking_stats(cfg, 3)
    g = torch.Generator().manual_seed(3)
    ids, maskable = BERT.sentence_pairs(300, cfg, g)
    inputs, labels = BERT.mask_tokens(ids, maskable, 7, g)
    chosen = labels != BERT.IGNORE
    kept = sum(int(inputs[b, t] == ids[b, t]) for b, t in chosen.nonzero().tolist())
    masked = sum(int(inputs[b, t] == BERT.MASK) for b, t in chosen.nonzero().tolist())
    assert st == {
        "maskable": int(maskable.sum()),
        "chosen": int(chosen.sum()),
        "special_chosen": 0,
        "mask": masked,
        "random": int(chosen.sum()) - masked - kept,
        "unchanged": kept,
    }


def test_masking_claims_read_their_counts(monkeypatch) -> None:
    from repro.lab.claims import Context

    seen = []
    st = {"maskable": 1000, "chosen": 160, "special_chosen": 2, "mask": 120, "random": 25,
          "unchanged": 15}  # fmt: skip
    monkeypatch.setattr(BERT, "masking_stats", lambda cfg, seed: seen.append((cfg, seed)) or st)
    cfg = BERT.Config(mask_sequences=9)
    ctx = Context(config=cfg, seed=4)
    rate = BERT.mask_selection_rate(ctx)
    assert rate.value == 0.16
    assert rate.details == {"count": 160, "of": 1000, "binomial_se": math.sqrt(0.15 * 0.85 / 1000),
                            "special_tokens_chosen": 2}  # fmt: skip
    for fn, count, p in ((BERT.mask_token_share, 120, 0.8), (BERT.random_token_share, 25, 0.1),
                         (BERT.unchanged_share, 15, 0.1)):  # fmt: skip
        got = fn(ctx)
        assert got.value == count / 160
        assert got.details == {
            "count": count,
            "of": 160,
            "binomial_se": math.sqrt(p * (1 - p) / 160),
        }
    assert seen == [(cfg, 4)] * 4


# --- the language and its floors ---------------------------------------------------------------


def test_markov_source_and_batches_follow_the_config() -> None:
    from repro.data.markov import MarkovConfig

    cfg = BERT.Config(markov_vocab=5, markov_concentration=0.3, markov_seed=8, seq_len=6)
    source = BERT.markov_source(cfg)
    assert source.cfg == MarkovConfig(vocab_size=5, order=1, concentration=0.3, seed=8)
    got = BERT.markov_batch(source, 4, cfg, torch.Generator().manual_seed(1))
    assert torch.equal(got, source.sample(4, 6, torch.Generator().manual_seed(1)) + 4)


def test_two_sided_entropy_by_enumeration_with_zero_transitions() -> None:
    """H(X_t | X_{t−1}, X_{t+1}) = −Σ p(a, b, c) log p(b | a, c) over a 3-state chain with
    impossible transitions (0·log 0 = 0), summed term by term."""
    from repro.data.markov import MarkovConfig, MarkovSource

    source = MarkovSource(MarkovConfig(vocab_size=3, order=1))
    P = torch.tensor([[0.0, 0.7, 0.3], [0.5, 0.0, 0.5], [0.2, 0.3, 0.5]], dtype=torch.float64)
    source.transition = P.to(source.transition.dtype)
    pi = source.stationary()
    P = source.transition
    h = 0.0
    for a in range(3):
        for c in range(3):
            p_ac = sum(float(pi[a] * P[a, b] * P[b, c]) for b in range(3))
            for b in range(3):
                p = float(pi[a] * P[a, b] * P[b, c])
                if p > 0:
                    h -= p * math.log(p / p_ac)
    assert BERT.two_sided_entropy(source) == pytest.approx(h, rel=1e-6)
    assert 0 < h < source.entropy_rate()


def test_two_sided_entropy_needs_an_order_one_chain() -> None:
    from repro.data.markov import MarkovConfig, MarkovSource

    with pytest.raises(AssertionError, match="needs an order-1 chain, got order 2"):
        BERT.two_sided_entropy(MarkovSource(MarkovConfig(vocab_size=3, order=2)))


# --- the size claims, by hand ------------------------------------------------------------------


def test_bert_sizes_against_the_published_counts() -> None:
    """Hugging Face's BertModel (encoder and pooler) has 109,482,240 parameters for
    bert-base-uncased and 335,141,888 for bert-large-uncased; the pre-training heads add the MLM
    transform H² + H, its LayerNorm 2H, the output bias V and NSP 2H + 2."""
    from repro.lab.claims import Context

    for fn, encoder, H in ((BERT.base_params, 109_482_240, 768),
                           (BERT.large_params, 335_141_888, 1024)):  # fmt: skip
        total = encoder + H * H + H + 2 * H + 30522 + 2 * H + 2
        got = fn(Context())
        assert got.value == total / 1e6
        assert got.details == {"parameters": total, "encoder_and_pooler": encoder,
                               "embeddings": (30522 + 512 + 2) * H, "vocab_size": 30522,
                               "with_30000_vocab": total - 522 * (H + 1)}  # fmt: skip
    assert BERT.closed_form_params(12, 768) == 109_482_240 + 768**2 + 5 * 768 + 30522 + 2


def test_params_exact_reports_the_largest_gap_with_its_sign(monkeypatch) -> None:
    from repro.lab.claims import Context

    exact = BERT.params_exact(Context())
    assert exact.value == 0
    assert exact.details == {"built_minus_closed_form": {"bert-base": 0, "bert-large": 0}}
    real = BERT.closed_form_params
    monkeypatch.setattr(
        BERT, "closed_form_params", lambda L, H: real(L, H) + (5 if L == 12 else -3)
    )
    off = BERT.params_exact(Context())
    assert off.value == 5
    assert off.details == {"built_minus_closed_form": {"bert-base": -5, "bert-large": 3}}


def test_bert_size_asserts_the_analytic_count(monkeypatch) -> None:
    real = BERT.param_count
    monkeypatch.setattr(BERT, "param_count", lambda cfg, **kw: real(cfg, **kw) + 1)
    with pytest.raises(AssertionError, match=r"built 110106428 != analytic 110106429"):
        BERT.base_params(__import__("repro.lab.claims", fromlist=["Context"]).Context())


class _Uniforms:
    """Stands for torch in papers/bert/repro.py: `rand` hands out the given tensors in turn,
    everything else is torch's."""

    def __init__(self, *draws: torch.Tensor) -> None:
        self.draws = list(draws)

    def __getattr__(self, name: str):
        return getattr(torch, name)

    def rand(self, *shape, generator=None, dtype=None):
        draw = self.draws.pop(0)
        assert draw.shape == shape and (dtype is None or draw.dtype == dtype)
        return draw


def test_mask_tokens_at_the_80_and_90_percent_boundaries(monkeypatch) -> None:
    """Uniforms exactly at 0.8 and 0.9 (float32): u < 0.8 → [MASK], 0.8 ≤ u < 0.9 → random,
    u ≥ 0.9 → unchanged; k = ⌊0.9·6 + 0.99⌋ = 6 positions chosen, the two specials never."""
    f32 = torch.float32
    keys = torch.tensor([[0.3, 0.1, 0.6, 0.2, 0.5, 0.4, 0.05, 0.7]], dtype=f32)
    u = torch.tensor([[0.8, 0.9, 0.7999999, 0.85, 0.95, 0.0, 0.1, 0.1]], dtype=f32)
    u_k = torch.tensor([0.99], dtype=torch.float64)
    monkeypatch.setattr(BERT, "torch", _Uniforms(u_k, keys, u))
    ids = torch.tensor([[9, 10, 11, 12, 13, 14, 1, 2]])
    maskable = torch.tensor([[True] * 6 + [False, False]])
    inputs, labels = BERT.mask_tokens(ids, maskable, 40, torch.Generator().manual_seed(8), rate=0.9)
    r = torch.randint(4, 40, (2,), generator=torch.Generator().manual_seed(8))
    M = BERT.MASK
    assert inputs.tolist() == [[int(r[0]), 10, M, int(r[1]), 13, M, 1, 2]]
    assert labels.tolist() == [[9, 10, 11, 12, 13, 14, -100, -100]]


def test_mask_tokens_rounds_the_quota_in_float64(monkeypatch) -> None:
    """k = ⌊0.15·n + u⌋ with n = 14: 0.15·14 is 2.1 in float64 (2.10000014 in float32), so
    u = 0.8999999 gives k = 2, as does u = 0.5."""
    u_k = torch.tensor([0.8999999, 0.5], dtype=torch.float64)
    keys = torch.linspace(0, 1, 29)[:28].view(2, 14).flip(1)
    u = torch.full((2, 14), 0.5)
    monkeypatch.setattr(BERT, "torch", _Uniforms(u_k, keys, u))
    ids = torch.arange(4, 32).view(2, 14)
    inputs, labels = BERT.mask_tokens(ids, torch.ones(2, 14, dtype=torch.bool), 50, None)
    chosen = labels != BERT.IGNORE
    assert chosen.sum(1).tolist() == [2, 2]
    assert chosen[:, 12:].all()  # the two smallest keys: the last two positions
    assert bool((inputs[chosen] == BERT.MASK).all())


# --- the experiment with training recorded -----------------------------------------------------


def _fake_curve(k: int, steps: int) -> list[float]:
    return [4.0 - k - i / 10 for i in range(steps)]


@pytest.mark.parametrize("out_dir", [None, "plots"])
def test_experiment_recipe_with_training_recorded(monkeypatch, line_plots, tmp_path, out_dir):
    """Two BERTs from the same seeded initial weights (bidirectional, then left-only), each
    trained on masked Markov batches from a generator seeded like the context, then scored on
    held-out sentences and masks from a generator seeded 10⁶ + s; the floors are the source's
    unigram entropy, entropy rate and two-sided entropy."""
    from repro.lab.claims import Context
    from repro.models.bert import Bert, BertConfig
    from repro.train import lm_loss

    runs, progress = [], []

    def report(*args) -> None:
        progress.append(args)

    def train(model, loss_fn, steps, lr, progress, description):
        assert progress is report and model.training
        start = {k: t.clone() for k, t in model.state_dict().items()}
        model.eval()  # no dropout: the step losses are reproducible here
        losses = [float(loss_fn(step).detach()) for step in range(2)]
        with torch.no_grad():
            model.mlm_bias.add_(
                torch.linspace(0, 1, 10) * (len(runs) + 1)
            )  # training moves the model
        runs.append((model, start, losses, steps, lr, description))
        return _fake_curve(len(runs), steps)

    moved = []

    class Recorded(Bert):
        def to(self, *args):
            moved.append(args)
            return super().to(*args)

    monkeypatch.setattr(BERT, "Bert", Recorded)
    monkeypatch.setattr(BERT, "train", train)
    drawn = line_plots(BERT)
    cfg = BERT.Config(markov_vocab=6, markov_concentration=0.2, markov_seed=3, seq_len=5,
                      n_layers=1, d_model=8, n_heads=2, dropout=0.25, steps=4, batch_size=3,
                      lr=2e-3, eval_sequences=7)  # fmt: skip
    s = 9
    ctx = Context(config=cfg, seed=s, progress=report,
                  out_dir=None if out_dir is None else tmp_path / out_dir)  # fmt: skip
    got = BERT.experiment(cfg, ctx)

    source = BERT.markov_source(cfg)
    floors = {"unigram": source.unigram_entropy(), "left_only": source.entropy_rate(),
              "bidirectional": BERT.two_sided_entropy(source)}  # fmt: skip
    ones = torch.ones(3, 5, dtype=torch.bool)
    want = {"floors": floors}
    for i, (name, causal) in enumerate((("bidirectional", False), ("left_only", True))):
        model, start, losses, steps, lr, description = runs[i]
        assert model.cfg == BertConfig(n_layers=1, d_model=8, n_heads=2, vocab_size=10,
                                       max_seq_len=5, dropout=0.25, causal=causal,
                                       backend="sdpa")  # fmt: skip
        assert (steps, lr, description) == (4, 2e-3, f"bert: {name}")
        torch.manual_seed(s)
        fresh = Bert(model.cfg)
        assert all(torch.equal(start[k], t) for k, t in fresh.state_dict().items())
        fresh.load_state_dict(start)
        fresh.eval()
        g = torch.Generator().manual_seed(s)
        for step in range(2):
            ids = source.sample(3, 5, g) + 4
            inputs, labels = BERT.mask_tokens(ids, ones, 10, g)
            with torch.no_grad():
                loss = lm_loss(fresh(inputs)[0], labels, ignore_index=-100)
            assert losses[step] == pytest.approx(float(loss), abs=1e-6)
        g_eval = torch.Generator().manual_seed(10**6 + s)
        ids = source.sample(7, 5, g_eval) + 4
        inputs, labels = BERT.mask_tokens(ids, torch.ones_like(ids, dtype=torch.bool), 10, g_eval)
        with torch.no_grad():
            want[f"{name}_loss"] = pytest.approx(float(lm_loss(model(inputs)[0], labels)))
    assert got == want
    assert moved == [("cpu",), ("cpu",)]  # each model to the context's device
    assert got["bidirectional_loss"] != pytest.approx(got["left_only_loss"])
    if out_dir is None:
        assert drawn == []
        return
    [(path, series, rest)] = drawn
    assert path == tmp_path / out_dir / "mlm_loss.svg"
    xs = [1, 2, 3, 4]
    assert list(series.items()) == [
        ("bidirectional (train)", (xs, _fake_curve(1, 4))),
        ("left_only (train)", (xs, _fake_curve(2, 4))),
        ("floor: unigram", (xs, [floors["unigram"]] * 4)),
        ("floor: left_only", (xs, [floors["left_only"]] * 4)),
        ("floor: bidirectional", (xs, [floors["bidirectional"]] * 4)),
    ]
    assert rest == {
        "xlabel": "step",
        "ylabel": "masked-token loss (nats)",
        "title": "Masked LM on a Markov language: bidirectional vs left-only",
    }


def test_mlm_claims_on_made_up_losses() -> None:
    from repro.lab.claims import Context

    m = {"floors": {"unigram": 3.2, "left_only": 1.9, "bidirectional": 1.2},
         "bidirectional_loss": 1.5, "left_only_loss": 2.25}  # fmt: skip
    ctx = Context(config=BERT.Config(), run_experiment=lambda c, x: m)
    beats = BERT.mlm_beats_unigram(ctx)
    assert beats.value == pytest.approx(3.2 - 1.5)
    assert beats.details == {"bidirectional_loss": 1.5, "floor_unigram": 3.2,
                             "floor_left_only": 1.9, "floor_bidirectional": 1.2}  # fmt: skip
    gap = BERT.bidirectional_beats_left_only(ctx)
    assert gap.value == pytest.approx(2.25 - 1.5)
    assert gap.details == {"bidirectional_loss": 1.5, "left_only_loss": 2.25,
                           "floor_gap": pytest.approx(1.9 - 1.2)}  # fmt: skip


def test_experiment_moves_models_inputs_and_labels_to_the_context_device(monkeypatch) -> None:
    """On the meta device (shapes only): every forward pass and loss sees tensors on the
    context's device, in training and in the held-out evaluation."""
    from repro.lab.claims import Context

    seen = []

    def lm_loss(logits, labels, ignore_index):
        seen.append((logits.device.type, labels.device.type, ignore_index))
        return torch.tensor(1.5)

    def train(model, loss_fn, steps, lr, progress, description):
        assert next(model.parameters()).device.type == "meta"
        loss_fn(0)
        return [1.0] * steps

    from repro.models.bert import Bert

    class Recorded(Bert):
        def forward(self, idx):
            seen.append(("forward", idx.device.type))
            return super().forward(idx)

    monkeypatch.setattr(BERT, "Bert", Recorded)
    monkeypatch.setattr(BERT, "lm_loss", lm_loss)
    monkeypatch.setattr(BERT, "train", train)
    cfg = BERT.Config(markov_vocab=6, seq_len=5, n_layers=1, d_model=8, n_heads=2, steps=2,
                      batch_size=3, eval_sequences=4)  # fmt: skip
    got = BERT.experiment(cfg, Context(config=cfg, device="meta"))
    # a step and the evaluation, for each model
    assert seen == [("forward", "meta"), ("meta", "meta", -100)] * 4
    assert got["bidirectional_loss"] == got["left_only_loss"] == 1.5
