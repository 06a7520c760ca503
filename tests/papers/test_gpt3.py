"""Pieces of papers/gpt3/repro.py that its claims rely on: the toy task and the ideal learner."""

import pytest
import torch

from repro.lab.library import Library


@pytest.fixture(scope="module")
def gpt3():
    return Library().get("gpt3").module()


@pytest.fixture(params=["quick", "full"])
def tasks(request, gpt3):
    return gpt3.MappingTasks(gpt3.PRESETS[request.param])


def test_sequences_alternate_inputs_and_consistent_answers(tasks):
    cfg = tasks.cfg
    seq, targets = tasks.sample(64, held_out=False, g=torch.Generator().manual_seed(0))
    assert seq.shape == targets.shape == (64, 2 * cfg.n_pairs)
    x, answer = seq[:, 0::2], seq[:, 1::2]  # (B, K) each
    assert bool((x < cfg.n_inputs).all()) and bool((answer >= cfg.n_inputs).all())
    assert torch.equal(targets[:, 0::2], answer) and bool((targets[:, 1::2] == -100).all())
    assert torch.equal((answer - cfg.n_inputs) // cfg.n_outputs, x)  # the answer names its input
    y = (answer - cfg.n_inputs) % cfg.n_outputs
    same_x = x[:, :, None] == x[:, None, :]  # (B, K, K)
    assert bool(((y[:, :, None] == y[:, None, :]) | ~same_x).all()), "one mapping per sequence"
    assert int(seq.max()) < tasks.vocab_size


def test_held_out_mappings_are_never_trained_on(tasks):
    g = torch.Generator().manual_seed(1)
    train_f = tasks.mappings(500, held_out=False, g=g)
    test_f = tasks.mappings(500, held_out=True, g=g)
    assert not bool(tasks._held_out(train_f).any())
    assert bool(tasks._held_out(test_f).all())
    codes = lambda f: set(((f * tasks.powers).sum(-1)).tolist())  # noqa: E731
    assert not codes(train_f) & codes(test_f)


def test_ideal_learner_accuracy_by_hand(gpt3):
    x = torch.tensor([[0, 0, 1, 0], [2, 1, 2, 1]])  # seen before: [F,T,F,T] and [F,F,T,T]
    acc = gpt3.ideal_learner_accuracy(x, n_outputs=4)
    torch.testing.assert_close(acc, torch.tensor([0.25, 0.625, 0.625, 1.0]))


def test_table_2_1_readings(gpt3):
    # XL and 13B are built with the reading that makes the row self-consistent (note.yaml)
    assert gpt3.n_params("gpt3-xl", n_heads=16) == 1_315_723_264
    assert gpt3.n_params("gpt3-13b", d_model=5120) == 12_853_386_240
    assert gpt3.n_params("gpt3-13b") == 12_936_488_380  # 5140 residual, 40 × 128 attention


def test_unscaled_residual_init_fails_the_scaling_claim(gpt3):
    """residual-init-scaling wants std(residual) / std(other) = 1/√24 ± 2% in a 12-layer GPT;
    with the GPT-2 scaling undone (every matrix N(0, 0.02²)) the ratio is ≈ 1 and must fail."""
    import math

    from torch import nn

    from repro.models.gpt import GPT, GPTConfig

    torch.manual_seed(0)
    model = GPT(GPTConfig(n_layers=12, d_model=256, n_heads=4, vocab_size=1024, max_seq_len=256))
    res, other = gpt3.residual_init_stds(model)
    assert res / other == pytest.approx(1 / math.sqrt(24), rel=0.02)
    for block in model.blocks:
        for proj in (block.attn.wo, block.mlp.w2):
            nn.init.normal_(proj.weight, std=0.02)  # the scaling switched off
    res, other = gpt3.residual_init_stds(model)
    assert abs(res / other / (1 / math.sqrt(24)) - 1) > 0.02
    assert res / other == pytest.approx(1.0, rel=0.05)


# --- Table 2.1 and Table D.1, by hand ------------------------------------------------------

# (n_layers, d_model, n_heads, d_head) as Table 2.1 prints them
TABLE_2_1 = {
    "gpt3-small": (12, 768, 12, 64),
    "gpt3-medium": (24, 1024, 16, 64),
    "gpt3-large": (24, 1536, 16, 96),
    "gpt3-xl": (24, 2048, 24, 128),
    "gpt3-2.7b": (32, 2560, 32, 80),
    "gpt3-6.7b": (32, 4096, 32, 128),
    "gpt3-13b": (40, 5140, 40, 128),
    "gpt3-175b": (96, 12288, 96, 128),
}


def _by_hand(n_layers: int, d: int, d_attn: int) -> int:
    """GPT-3 written out: q, k, v (d -> d_attn, biases), o (d_attn -> d, bias), the 4d FFN with
    biases, two LayerNorms a layer; tied embedding (50257 tokens), 2048 positions, final LN."""
    attn = 3 * (d * d_attn + d_attn) + d_attn * d + d
    ffn = d * 4 * d + 4 * d + 4 * d * d + d
    return n_layers * (attn + ffn + 4 * d) + (50257 + 2048) * d + 2 * d


def test_every_table_2_1_row_counted_by_hand(gpt3) -> None:
    from repro.lab.claims import Context

    for preset, (n_layers, d, heads, d_head) in TABLE_2_1.items():
        got = getattr(gpt3, "params_" + preset[5:].replace(".", "_"))(Context())
        if preset == "gpt3-xl":  # 16 heads of 128 = 2048: the reading that is built
            want = _by_hand(n_layers, d, 16 * d_head)
            details = {"built_with": {"n_heads": 16}, "count_as_printed": _by_hand(24, d, 3072)}
        elif preset == "gpt3-13b":  # d_model 5120 = 40 × 128
            want = _by_hand(n_layers, 5120, 5120)
            details = {
                "built_with": {"d_model": 5120},
                "count_as_printed": _by_hand(40, 5140, 5120),
                "count_d_model_5140_everywhere": _by_hand(40, 5140, 5140),
            }
        else:
            assert heads * d_head == d
            want, details = _by_hand(n_layers, d, d), {"built_with": "Table 2.1 as printed"}
        assert got.value == want, preset
        assert got.details == {**details, "billions": want / 1e9}, preset


def test_closed_form_and_the_claim_that_compares_it(gpt3, monkeypatch) -> None:
    from repro.lab.claims import Context

    # 2 layers of width 3, vocabulary 5, 7 positions: 2·(12·9 + 13·3) + (5 + 7)·3 + 2·3
    assert gpt3.closed_form_params(2, 3, vocab=5, n_ctx=7) == 2 * 147 + 36 + 6
    for n_layers, d, _, _ in TABLE_2_1.values():
        assert gpt3.closed_form_params(n_layers, d) == _by_hand(n_layers, d, d)
    got = gpt3.params_exact(Context())
    assert got.value == 0 and got.details == {
        "built_minus_closed_form": dict.fromkeys(TABLE_2_1, 0)
    }
    # a closed form off by (30 − L): the largest |difference| is the 96-layer row's 66
    real = gpt3.closed_form_params
    monkeypatch.setattr(gpt3, "closed_form_params", lambda L, d: real(L, d) + L - 30)
    got = gpt3.params_exact(Context())
    rows = {p: 30 - L for p, (L, *_) in TABLE_2_1.items()}
    assert got.value == 66 and got.details == {"built_minus_closed_form": rows}


def test_training_compute_by_hand(gpt3) -> None:
    from repro.lab.claims import Context

    n = _by_hand(96, 12288, 12288)
    got = gpt3.compute_175b(Context())
    assert got.value == pytest.approx(6 * n * 300e9, rel=1e-12)
    assert got.details == {
        "n_params": n,
        "tokens": 300e9,
        "pf_days": pytest.approx(6 * n * 300e9 / (1e15 * 24 * 3600), rel=1e-12),
    }


def test_residual_init_claim_reads_a_seeded_12_layer_model(gpt3, monkeypatch) -> None:
    """The claim's GPT replaced by a narrow one (same seeding): its value is the std ratio of
    the wo/w2 matrices to the other block matrices, computed here by hand."""
    import math

    from repro.lab.claims import Context
    from repro.models.gpt import GPT, GPTConfig

    asked = []

    def narrow(cfg):
        asked.append(cfg)
        return GPT(GPTConfig(n_layers=3, d_model=16, n_heads=2, vocab_size=11, max_seq_len=5))

    monkeypatch.setattr(gpt3, "GPT", narrow)
    got = gpt3.residual_init_scaling(Context(seed=5))
    assert asked == [
        GPTConfig(n_layers=12, d_model=256, n_heads=4, vocab_size=1024, max_seq_len=256)
    ]
    torch.manual_seed(5)
    model = narrow(None)
    res = [w for b in model.blocks for w in (b.attn.wo.weight, b.mlp.w2.weight)]
    other = [w for b in model.blocks for w in (b.attn.wq.weight, b.attn.wk.weight,
                                                  b.attn.wv.weight, b.mlp.w1.weight)]  # fmt: skip
    std_res = torch.cat([w.detach().flatten() for w in res]).double().std().item()
    std_other = torch.cat([w.detach().flatten() for w in other]).double().std().item()
    assert got.value == pytest.approx(std_res / std_other, rel=1e-5)
    assert got.details == {
        "std_residual": pytest.approx(std_res, rel=1e-5),
        "std_other": pytest.approx(std_other, rel=1e-5),
        "1/sqrt(2L)": 1 / math.sqrt(24),
    }
    assert gpt3.residual_init_stds(model) == (pytest.approx(std_res, rel=1e-5),
                                              pytest.approx(std_other, rel=1e-5))  # fmt: skip


# --- the toy task, by hand -----------------------------------------------------------------


def test_held_out_mappings_follow_knuths_hash(gpt3) -> None:
    import itertools

    tasks = gpt3.MappingTasks(gpt3.Config(n_inputs=3, n_outputs=4, holdout_buckets=5))
    assert tasks.vocab_size == 3 + 3 * 4
    every = list(itertools.product(range(4), repeat=3))  # f(0), f(1), f(2)
    code = [f[0] + 4 * f[1] + 16 * f[2] for f in every]
    want = [(c * 2654435761 % 2**32) % 5 == 0 for c in code]
    assert tasks._held_out(torch.tensor(every)).tolist() == want
    assert 0 < sum(want) < len(want)


def test_sample_reproduced_from_its_seed(gpt3) -> None:
    cfg = gpt3.Config(n_inputs=3, n_outputs=5, n_pairs=6, holdout_buckets=3)
    tasks = gpt3.MappingTasks(cfg)

    def held(row: list[int]) -> bool:
        c = row[0] + 5 * row[1] + 25 * row[2]
        return (c * 2654435761 % 2**32) % 3 == 0

    # seed 37: the first draw of 28 holds exactly 7 held-out mappings, so no second draw
    for seed, held_out in ((4, True), (4, False), (37, True)):
        seq, targets = tasks.sample(7, held_out=held_out, g=torch.Generator().manual_seed(seed))
        assert seq.dtype == targets.dtype == torch.long
        g = torch.Generator().manual_seed(seed)
        kept: list = []
        draws = 0
        while len(kept) < 7:  # draws of 4·B mappings, the wrong kind thrown away
            draw = torch.randint(0, 5, (28, 3), generator=g).tolist()
            kept += [row for row in draw if held(row) == held_out]
            draws += 1
        assert seed != 37 or (draws, len(kept)) == (1, 7)
        x = torch.randint(0, 3, (7, 6), generator=g)
        for b in range(7):
            for i in range(6):
                xi = int(x[b, i])
                answer = 3 + xi * 5 + kept[b][xi]
                assert seq[b, 2 * i] == xi and seq[b, 2 * i + 1] == answer
                assert targets[b, 2 * i] == answer and targets[b, 2 * i + 1] == -100


def test_an_empty_batch_keeps_its_mapping_width(gpt3) -> None:
    tasks = gpt3.MappingTasks(gpt3.Config(n_inputs=3, n_outputs=5))
    f = tasks.mappings(0, held_out=True, g=torch.Generator().manual_seed(0))
    assert f.shape == (0, 3) and f.dtype == torch.long


def test_query_accuracy_scores_the_query_positions(gpt3) -> None:
    class Fixed(torch.nn.Module):
        def forward(self, seq):
            assert not torch.is_grad_enabled()
            return torch.nn.functional.one_hot(seq + 1, 12).float()  # predicts token + 1

    seq = torch.tensor([[0, 1, 2, 3, 4, 5], [5, 6, 3, 4, 1, 9]])
    targets = torch.tensor([[1, -100, 9, -100, 5, -100], [6, -100, 4, -100, 0, -100]])
    got = gpt3.query_accuracy(Fixed(), seq, targets, "cpu")
    assert got.tolist() == [1.0, 0.5, 0.5]

    class OnMeta(torch.nn.Module):  # the sequences must reach the model's device
        def forward(self, x):
            assert x.device.type == "meta"
            return Fixed()(seq)

    assert gpt3.query_accuracy(OnMeta(), seq, targets, "meta").tolist() == [1.0, 0.5, 0.5]


# --- the experiment, with the model and its training recorded ------------------------------


def test_experiment_recipe_with_training_recorded(gpt3, monkeypatch, line_plots, tmp_path) -> None:
    import torch.nn.functional as F

    from repro.lab.claims import Context

    cfg = gpt3.Config(n_inputs=3, n_outputs=4, n_pairs=5, n_layers=2, d_model=12, n_heads=3,
                      steps=30, batch=6, lr=0.02, eval_sequences=40, holdout_buckets=4)  # fmt: skip
    built, seen, trained = [], [], []

    class Model(torch.nn.Module):
        """Untrained: predicts token 0 (never an answer); trained: answers f(x) = x mod |Y|."""

        def __init__(self, gcfg) -> None:
            super().__init__()
            built.append(gcfg)
            self.w = torch.nn.Parameter(torch.zeros(7, 2))
            self.trained = False

        def forward(self, seq):
            seen.append(seq.clone())
            guess = 3 + seq * 4 + seq % 4 if self.trained else torch.zeros_like(seq)
            return F.one_hot(guess.clamp(max=14), 15).float() + 0 * self.w.sum()

    def train(model, loss_fn, steps, lr, progress, description):
        trained.append((steps, lr, progress, description))
        losses = [loss_fn(i) for i in range(2)]
        model.trained = True
        return [float(v.detach()) for v in losses] + [float(i) for i in range(2, 32)]

    def report(*args) -> None:
        pass

    monkeypatch.setattr(gpt3, "GPT", Model)
    monkeypatch.setattr(gpt3, "train", train)
    drawn = line_plots(gpt3)
    got = gpt3.experiment(cfg, Context(config=cfg, seed=3, progress=report, out_dir=tmp_path))
    from repro.models.gpt import GPTConfig

    assert built == [GPTConfig(n_layers=2, d_model=12, n_heads=3, vocab_size=15, max_seq_len=10,
                               backend="ref")]  # fmt: skip
    assert trained == [(30, 0.02, report, "gpt3: ICL")]
    tasks = gpt3.MappingTasks(cfg)
    seq, targets = tasks.sample(40, held_out=True, g=torch.Generator().manual_seed(10_003))
    g = torch.Generator().manual_seed(3)
    batches = [tasks.sample(6, held_out=False, g=g) for _ in range(2)]
    assert len(seen) == 4
    assert torch.equal(seen[0], seq) and torch.equal(seen[3], seq)
    assert torch.equal(seen[1], batches[0][0]) and torch.equal(seen[2], batches[1][0])
    # the two recorded losses: cross-entropy of the untrained guesses at the scored positions
    x = seq[:, 0::2]
    right = (targets[:, 0::2] == 3 + x * 4 + x % 4).double().mean(0).tolist()
    ideal = []
    for i in range(5):
        p = [1.0 if int(x[b, i]) in x[b, :i].tolist() else 0.25 for b in range(40)]
        ideal.append(sum(p) / 40)
    assert got["accuracy_by_shots"] == pytest.approx(right)
    assert got["untrained_accuracy_by_shots"] == [0.0] * 5
    assert got["ideal_by_shots"] == pytest.approx(ideal)
    assert got["chance"] == 0.25 and got["n_params"] == 14
    # the last 20 of 32 losses are 12 … 31
    assert got["final_train_loss"] == pytest.approx(sum(range(12, 32)) / 20)
    [(path, series, rest)] = drawn
    assert path == tmp_path / "icl_accuracy_vs_shots.svg"
    shots = [0, 1, 2, 3, 4]
    assert series == {
        "tiny GPT (held-out mappings)": (shots, pytest.approx(right)),
        "same GPT untrained": (shots, [0.0] * 5),
        "Bayes-optimal learner": (shots, pytest.approx(ideal)),
        "chance 1/|Y|": (shots, [0.25] * 5),
    }
    assert rest == {
        "xlabel": "demonstrations before the query (shots)",
        "ylabel": "query accuracy",
        "title": "In-context learning of random maps |X|=3, |Y|=4",
    }


def test_experiment_sends_model_and_batches_to_the_device(gpt3, monkeypatch) -> None:
    """ctx.device = "meta": the model is moved there, and so is every sequence it reads and
    every target its loss compares with (the stand-in answers from CPU copies)."""
    from repro.lab.claims import Context

    cfg = gpt3.Config(n_inputs=3, n_outputs=4, n_pairs=4, n_layers=1, d_model=8, n_heads=2,
                      steps=3, batch=5, eval_sequences=6)  # fmt: skip
    moved, losses = [], []

    class Model(torch.nn.Module):
        def __init__(self, gcfg) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))

        def to(self, device):
            moved.append(device)
            return self

        def forward(self, seq):
            assert seq.device.type == "meta"
            return torch.zeros(*seq.shape, 15)

    def lm_loss(logits, targets):
        losses.append(targets.device.type)
        return torch.zeros(())

    def train(model, loss_fn, steps, lr, progress, description):
        loss_fn(0)
        return [1.0]

    for name, fn in (("GPT", Model), ("train", train), ("lm_loss", lm_loss)):
        monkeypatch.setattr(gpt3, name, fn)
    got = gpt3.experiment(cfg, Context(config=cfg, seed=1, device="meta"))
    assert moved == ["meta"] and losses == ["meta"]
    assert got["accuracy_by_shots"] == got["untrained_accuracy_by_shots"] == [0.0] * 4


def test_experiment_loss_is_the_lm_loss_of_a_training_batch(gpt3, monkeypatch) -> None:
    import torch.nn.functional as F

    from repro.lab.claims import Context

    cfg = gpt3.Config(n_inputs=3, n_outputs=4, n_pairs=4, n_layers=1, d_model=8, n_heads=2,
                      steps=3, batch=5, eval_sequences=6)  # fmt: skip
    torch.manual_seed(0)
    logits = torch.randn(5, 8, 15)
    seen_loss = []

    class Model(torch.nn.Module):
        def __init__(self, gcfg) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.ones(()))

        def forward(self, seq):
            return logits[: len(seq)] * self.w if len(seq) == 5 else torch.zeros(len(seq), 8, 15)

    def train(model, loss_fn, steps, lr, progress, description):
        seen_loss.append(loss_fn(0))
        return [1.0]

    monkeypatch.setattr(gpt3, "GPT", Model)
    monkeypatch.setattr(gpt3, "train", train)
    got = gpt3.experiment(cfg, Context(config=cfg, seed=1))
    g = torch.Generator().manual_seed(1)
    _, targets = gpt3.MappingTasks(cfg).sample(5, held_out=False, g=g)
    want = F.cross_entropy(logits.reshape(-1, 15), targets.reshape(-1), ignore_index=-100)
    assert seen_loss[0].item() == pytest.approx(want.item(), rel=1e-6)
    assert got["final_train_loss"] == 1.0


# --- the in-context-learning claims, on made-up metrics ------------------------------------


def test_icl_claims_on_made_up_metrics(gpt3) -> None:
    from repro.lab.claims import Context

    m = {
        "accuracy_by_shots": [0.3, 0.5, 0.62, 0.7],
        "untrained_accuracy_by_shots": [0.2, 0.21, 0.19, 0.24],
        "ideal_by_shots": [0.25, 0.6, 0.66, 0.95],
        "chance": 0.25,
    }
    ctx = Context(run_experiment=lambda c, x: m)
    got = gpt3.icl_zero_shot_chance(ctx)
    assert got.value == pytest.approx(0.3 - 0.25)
    assert got.details == {"zero_shot_accuracy": 0.3, "chance": 0.25}
    got = gpt3.icl_few_shot_gain(ctx)
    assert got.value == pytest.approx(0.7 - 0.3)
    assert got.details == {"shots": 3, "k_shot_accuracy": 0.7, "zero_shot_accuracy": 0.3}
    got = gpt3.icl_beats_untrained(ctx)
    assert got.value == pytest.approx(0.7 - 0.24)
    assert got.details == {"k_shot_trained": 0.7, "k_shot_untrained": 0.24, "chance": 0.25}
    got = gpt3.icl_matches_ideal_learner(ctx)
    assert got.value == pytest.approx(0.95 - 0.7)  # the largest |gap|, at the last query
    assert got.details == {"accuracy_by_shots": m["accuracy_by_shots"],
                           "ideal_by_shots": m["ideal_by_shots"]}  # fmt: skip
    m["ideal_by_shots"] = [0.25, 0.6, 0.66]  # curves of unequal length are refused
    with pytest.raises(ValueError):
        gpt3.icl_matches_ideal_learner(Context(run_experiment=lambda c, x: m))
    m["ideal_by_shots"] = [0.25, 0.6, 0.66, 0.6]  # the model above the ideal: |−0.1| counts
    got = gpt3.icl_matches_ideal_learner(Context(run_experiment=lambda c, x: m))
    assert got.value == pytest.approx(0.1)


def test_config_refuses_an_uneven_head_split(gpt3) -> None:
    with pytest.raises(ValueError, match="^d_model 10 is not a multiple of n_heads 4$"):
        gpt3.Config(d_model=10, n_heads=4)
