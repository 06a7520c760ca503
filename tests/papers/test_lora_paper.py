"""LoRA paper extras: the task shift really has the configured rank, and LoRA on a GPT model
(W_q, W_v) follows §5.1's parameter count, starts at the base model and merges exactly."""

from __future__ import annotations

import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from repro.lab.library import Library
from repro.lab.threads import torch_threads
from repro.models.gpt import GPT, GPTConfig
from repro.nn.lora import apply_lora, lora_parameters, merge_lora, unmerge_lora

LORA = Library().get("lora").module()


def test_task_b_differs_from_task_a_by_the_configured_rank():
    cfg = LORA.Config()
    g = torch.Generator().manual_seed(0)
    teacher_a = LORA.make_teacher(cfg, g)
    for rank in (1, cfg.shift_rank, 5):
        teacher_b = LORA.shifted(teacher_a, rank, cfg, g)
        assert torch.linalg.matrix_rank(teacher_b.W1 - teacher_a.W1).item() == rank
        assert torch.equal(teacher_b.W2, teacher_a.W2)


def test_gpt_lora_count_follows_section_5_1():
    cfg = GPTConfig(n_layers=3, d_model=48, n_heads=4, vocab_size=50, max_seq_len=16)
    with torch.device("meta"):
        model = apply_lora(GPT(cfg), {"wq", "wv"}, r=2)
    n_lora = sum(p.numel() for p in lora_parameters(model))
    assert n_lora == 2 * (2 * cfg.n_layers) * cfg.d_model * 2  # |Θ| = 2 · L̂ · d_model · r
    assert n_lora == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_gpt_with_lora_starts_at_base_model_and_merges():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=2, d_model=32, n_heads=4, vocab_size=40, max_seq_len=16)
    model = GPT(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        base_logits = model(idx)
        apply_lora(model, {"wq", "wv"}, r=4, alpha=8)
        assert torch.equal(model(idx), base_logits)  # B = 0
        for p in lora_parameters(model):  # stand-in for trained factors
            nn.init.normal_(p, std=0.2)
        unmerged = model(idx)
        assert (unmerged - base_logits).abs().max() > 1e-3  # the adapter changes the model
        torch.testing.assert_close(merge_lora(model)(idx), unmerged, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(unmerge_lora(model)(idx), unmerged, atol=1e-5, rtol=1e-5)


# --- the counting claims, by hand ----------------------------------------------------------

# GPT-3 175B (GPT-3 Table 2.1 and §2.1): L 96 layers, C 12288, 50257 tokens, 2048 positions
L, C, VOCAB, POSITIONS = 96, 12288, 50257, 2048
# per layer: W_q, W_k, W_v, W_o (4C²) and the 4C-wide MLP (8C²); biases 3C + C + 4C + C and
# two LayerNorms (4C); plus the token and position embeddings and the final LayerNorm (2C)
GPT3_TOTAL = L * (12 * C * C + 13 * C) + 2 * C + VOCAB * C + POSITIONS * C


def gpt3_lora(r: int) -> int:
    """W_q and W_v (C × C each) in every layer: r·(C + C) per matrix (§5.1)."""
    return L * 2 * r * (C + C)


def test_param_reduction_4096_by_hand() -> None:
    from repro.lab.claims import Context

    got = LORA.param_reduction_4096(Context())
    full, lora = 4096 * 4096, 8 * (4096 + 4096)
    assert got.value == full / lora == 256
    assert got.details == {"full": full, "lora": lora}


def test_gpt3_counting_claims_by_hand() -> None:
    from repro.lab.claims import Context

    lora = gpt3_lora(4)
    got = LORA.gpt3_param_reduction(Context())
    assert got.value == pytest.approx(GPT3_TOTAL / lora, rel=1e-12)
    assert got.details == {
        "full_finetune_params": GPT3_TOTAL,
        "lora_params": lora,
        "r": 4,
        "relative_gap_to_paper_10000x": pytest.approx(GPT3_TOTAL / lora / 10_000 - 1, rel=1e-12),
    }
    exact = LORA.gpt3_lora_params_exact(Context())
    assert exact.value == 0
    assert exact.details == {"lora_params": lora, "closed_form": 2 * (2 * 96) * 12288 * 4}
    size = LORA.gpt3_checkpoint_size(Context())
    assert size.value == pytest.approx(lora * 2 / 1e6, rel=1e-12)  # 37.7 MB
    assert size.details == pytest.approx(
        {
            "lora_params": lora,
            "mib": 36.0,  # 18,874,368 × 2 bytes = 36 × 2^20
            "full_checkpoint_gb": GPT3_TOTAL * 2 / 1e9,
            "size_ratio": GPT3_TOTAL / lora,
            "relative_gap_to_paper_35mb": lora * 2 / 1e6 / 35 - 1,
        },
        rel=1e-12,
    )
    budget = LORA.gpt3_lora_budget(Context())
    assert budget.value == pytest.approx(gpt3_lora(1) / 1e6, rel=1e-12)  # 4.72M
    assert budget.details == {
        "params_r1": gpt3_lora(1),
        "params_r8_millions": pytest.approx(gpt3_lora(8) / 1e6, rel=1e-12),
    }


# --- the pieces of the tiny experiment ------------------------------------------------------

SMALL = dict(d_in=5, teacher_hidden=4, n_classes=3, hidden=6, batch=7, n_eval=9)


def labels_by_hand(W1: torch.Tensor, W2: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """y_n = argmax_k Σ_j W2[k, j] tanh(Σ_i W1[j, i] x[n, i]), one example at a time."""
    out = []
    for row in x.tolist():
        hidden = [math.tanh(sum(w * v for w, v in zip(wj, row, strict=True))) for wj in W1.tolist()]
        logits = [sum(w * h for w, h in zip(wk, hidden, strict=True)) for wk in W2.tolist()]
        out.append(max(range(len(logits)), key=logits.__getitem__))
    return torch.tensor(out)


def test_teachers_are_drawn_from_the_generator_as_documented() -> None:
    cfg = LORA.Config(**SMALL, shift_scale=0.5)
    teacher = LORA.make_teacher(cfg, torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    W1 = torch.randn(4, 5, generator=g) / math.sqrt(5)
    W2 = 3.0 * torch.randn(3, 4, generator=g) / math.sqrt(4)
    torch.testing.assert_close(teacher.W1, W1)
    torch.testing.assert_close(teacher.W2, W2)
    b = LORA.shifted(teacher, 3, cfg, torch.Generator().manual_seed(8))
    g = torch.Generator().manual_seed(8)
    U = torch.randn(4, 3, generator=g) / math.sqrt(3)
    V = torch.randn(3, 5, generator=g) / math.sqrt(5)
    torch.testing.assert_close(b.W1, W1 + 0.5 * U @ V)
    assert b.W2 is teacher.W2
    x = torch.randn(40, 5, generator=g)
    y = teacher.labels(x)
    assert torch.equal(y, labels_by_hand(W1, W2, x))
    assert len(set(y.tolist())) == 3  # every class occurs: the argmax is over classes


def test_student_is_the_documented_mlp() -> None:
    cfg = LORA.Config(**SMALL)
    torch.manual_seed(0)
    student = LORA.Student(cfg)
    assert [tuple(p.shape) for p in student.parameters()] == [
        (6, 5), (6,), (6, 6), (6,), (3, 6), (3,),
    ]  # fmt: skip
    x = torch.randn(4, 5)

    def gelu(h):
        return 0.5 * h * (1 + torch.erf(h / math.sqrt(2)))

    h = gelu(x @ student.fc1.weight.T + student.fc1.bias)
    h = gelu(h @ student.fc2.weight.T + student.fc2.bias)
    with torch.no_grad():
        torch.testing.assert_close(student(x), h @ student.head.weight.T + student.head.bias)


def test_accuracy_counts_argmax_hits_over_classes() -> None:
    logits = torch.tensor(
        [[0.1, 0.9, 0.0], [2.0, -1.0, 0.5], [0.0, 0.2, 0.3], [-3.0, -1.0, -2.0], [1.0, 0.0, 4.0]]
    )  # argmax per row: 1, 0, 2, 1, 2
    y = torch.tensor([1, 0, 1, 1, 0])
    assert LORA.accuracy(nn.Identity(), logits, y) == pytest.approx(3 / 5)


def test_merge_error_compares_a_merged_copy_with_the_unmerged_model(monkeypatch) -> None:
    unmerged = torch.tensor([[1.0, -4.0, 2.0], [0.5, 3.0, -1.0]])
    merged = torch.tensor([[1.25, -4.0, 2.0], [0.5, 2.5, -1.0]])

    class Fixed(nn.Module):
        def __init__(self, out):
            super().__init__()
            self.out = out

        def forward(self, x):
            return self.out

    model = Fixed(unmerged)
    seen = []

    def merge_lora(m):
        seen.append(m)
        return Fixed(merged)

    monkeypatch.setattr(LORA, "merge_lora", merge_lora)
    err, rel = LORA.merge_error(model, torch.zeros(2, 5))
    assert err == 0.5  # |2.5 − 3.0|
    assert rel == 0.5 / 4.0  # over the largest |unmerged| logit, a negative one
    assert seen[0] is not model  # merges a copy: the trained model stays unmerged


def _loss_by_hand(model, teacher, x):
    return F.cross_entropy(model(x), labels_by_hand(teacher.W1, teacher.W2, x))


def test_fit_trains_on_fresh_batches_from_the_seed(monkeypatch) -> None:
    from repro.lab.claims import Context

    cfg = LORA.Config(**SMALL)
    teacher = LORA.make_teacher(cfg, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    model = LORA.Student(cfg)
    calls = []

    def train(m, loss_fn, steps, **kwargs):
        calls.append((m, steps, kwargs, [loss_fn(0).item(), loss_fn(1).item()]))

    def report(*args):
        pass

    monkeypatch.setattr(LORA, "train", train)
    LORA.fit(model, teacher, 13, 0.07, 11, cfg, Context(progress=report), "what")
    [(m, steps, kwargs, losses)] = calls
    assert m is model and steps == 13
    assert kwargs == {"lr": 0.07, "progress": report, "description": "what"}
    g = torch.Generator().manual_seed(11)
    x1, x2 = torch.randn(7, 5, generator=g), torch.randn(7, 5, generator=g)
    with torch.no_grad():
        expected = [_loss_by_hand(model, teacher, x).item() for x in (x1, x2)]
    assert losses == pytest.approx(expected, rel=1e-6)


def _recording_train(monkeypatch, calls):
    """`train` replaced by a recorder that tags the model with its learning rate."""

    def train(m, loss_fn, steps, lr, progress, description):
        m.trained_lr = lr
        calls.append((m, steps, lr, progress, description, loss_fn(0).item()))

    monkeypatch.setattr(LORA, "train", train)


@pytest.mark.parametrize("rank", [None, 2])
def test_adapt_keeps_the_first_best_learning_rate_on_validation(monkeypatch, rank) -> None:
    from repro.lab.claims import Context
    from repro.nn.lora import LoRALinear

    cfg = LORA.Config(**SMALL, lrs_full=(0.4, 0.5, 0.6), lrs_lora=(0.1, 0.2, 0.3, 0.05),
                      adapt_steps=17, alpha=6.0, targets=("fc2",))  # fmt: skip
    teacher = LORA.make_teacher(cfg, torch.Generator().manual_seed(1))
    torch.manual_seed(0)
    base = LORA.Student(cfg)
    before = {k: v.clone() for k, v in base.state_dict().items()}
    x_val = torch.randn(9, 5)
    y_val = teacher.labels(x_val)
    calls = []
    _recording_train(monkeypatch, calls)
    acc = {0.4: 0.5, 0.5: 0.75, 0.6: 0.75, 0.1: 0.25, 0.2: 0.625, 0.3: 0.625, 0.05: 0.125}

    def accuracy(model, x, y):
        assert x is x_val and y is y_val
        return acc[model.trained_lr]

    monkeypatch.setattr(LORA, "accuracy", accuracy)
    wrapped = []
    real_apply = LORA.apply_lora

    def apply_lora(model, targets, r, alpha):
        out = real_apply(model, targets, r=r, alpha=alpha)
        with torch.no_grad():  # a wrap that does not start at the base model (B ≠ 0)
            for layer in out.modules():
                if isinstance(layer, LoRALinear):
                    layer.lora_B.fill_(0.3)
        wrapped.append((targets, r, alpha))
        return out

    monkeypatch.setattr(LORA, "apply_lora", apply_lora)

    def report(*args):
        pass

    model, lr, diff = LORA.adapt(
        base, teacher, rank, cfg, 21, Context(progress=report), x_val, y_val
    )
    lrs = cfg.lrs_full if rank is None else cfg.lrs_lora
    what = "full fine-tuning" if rank is None else "LoRA r=2"
    assert [c[1:5] for c in calls] == [(17, lr_, report, f"{what}, lr {lr_:g}") for lr_ in lrs]
    assert lr == (0.5 if rank is None else 0.2) and model.trained_lr == lr  # ties: the first
    assert model is calls[lrs.index(lr)][0] and model is not base
    assert len({id(c[0]) for c in calls}) == len(lrs)  # a fresh copy per learning rate
    for k, v in base.state_dict().items():  # the pre-trained model is left as it was
        assert torch.equal(v, before[k]), k
    assert not any(isinstance(m, LoRALinear) for m in base.modules())
    # every learning rate sees the same batches, drawn from the given seed
    x = torch.randn(7, 5, generator=torch.Generator().manual_seed(21))
    with torch.no_grad():
        for m, *_, loss in calls:
            assert loss == pytest.approx(_loss_by_hand(m, teacher, x).item(), rel=1e-6)
    if rank is None:
        assert wrapped == [] and diff == 0.0
        assert all(p.requires_grad for p in model.parameters())
        return
    assert wrapped == [(("fc2",), 2, 6.0)] * 4
    assert isinstance(model.fc2, LoRALinear) and not isinstance(model.fc1, LoRALinear)
    with torch.no_grad():  # max |f_LoRA − f_base| right after the wrap, element by element
        gaps = (model(x_val) - base(x_val)).flatten().tolist()
    assert diff == pytest.approx(max(abs(d) for d in gaps), rel=1e-6) and diff > 0.01


def test_adapt_all_collects_every_method_on_the_test_set(monkeypatch) -> None:
    from repro.lab.claims import Context

    cfg = LORA.Config(**SMALL, ranks=(1, 3, 2), alpha=4.0)
    teacher_a = LORA.make_teacher(cfg, torch.Generator().manual_seed(1))
    teacher = LORA.shifted(teacher_a, 2, cfg, torch.Generator().manual_seed(2))
    torch.manual_seed(0)
    base = LORA.Student(cfg)
    ctx = Context(seed=4)
    g = torch.Generator().manual_seed(30)
    x_val, x_test = torch.randn(9, 5, generator=g), torch.randn(9, 5, generator=g)
    y_val, y_test = (labels_by_hand(teacher.W1, teacher.W2, x) for x in (x_val, x_test))
    lrs = {None: 0.03, 1: 0.1, 3: 0.3, 2: 0.2}
    diffs = {None: 5.0, 1: 1e-7, 3: 4e-7, 2: 2e-7}
    calls, models = [], []

    def adapt(b, t, rank, c, seed, cx, xv, yv):
        assert b is base and t is teacher and c is cfg and cx is ctx and seed == 31
        assert torch.equal(xv, x_val) and torch.equal(yv, y_val)
        calls.append(rank)
        model = copy.deepcopy(b)
        if rank is not None:
            apply_lora(model, cfg.targets, r=rank)
        model.tag = rank
        models.append(model)
        return model, lrs[rank], diffs[rank]

    acc = {"base": 0.25, None: 0.75, 1: 0.5, 3: 0.625, 2: 0.375}

    def accuracy(model, x, y):
        assert torch.equal(x, x_test) and torch.equal(y, y_test)
        return acc["base" if model is base else model.tag]

    errors = {1: (1e-6, 2e-7, 3e-15), 3: (4e-6, 5e-7, 1e-15), 2: (3e-6, 1e-7, 2e-15)}

    def merge_error(model, x):
        assert torch.equal(x, x_test.to(x.dtype))
        abs_err, rel, rel64 = errors[model.tag]
        if x.dtype == torch.float64:
            assert all(p.dtype == torch.float64 for p in model.parameters())
            return 1.0, rel64
        return abs_err, rel

    monkeypatch.setattr(LORA, "adapt", adapt)
    monkeypatch.setattr(LORA, "accuracy", accuracy)
    monkeypatch.setattr(LORA, "merge_error", merge_error)
    got = LORA.adapt_all(base, teacher_a, teacher, cfg, ctx, 30)
    assert calls == [None, 1, 3, 2]
    # the fp64 check runs on a deep copy: the adapted models stay in fp32
    assert all(p.dtype == torch.float32 for m in models for p in m.parameters())
    a_test = labels_by_hand(teacher_a.W1, teacher_a.W2, x_test)
    n_base = 5 * 6 + 6 + 6 * 6 + 6 + 6 * 3 + 3
    assert got == {
        "labels_changed": pytest.approx(sum(a_test != y_test).item() / 9),
        "acc_base": 0.25,
        "lr_full": 0.03,
        "acc_full": 0.75,
        "acc_lora": [0.5, 0.625, 0.375],
        "lr_lora": [0.1, 0.3, 0.2],
        # A (r, k) and B (d, r) on fc1 (6 × 5) and fc2 (6 × 6)
        "trainable_fraction_lora": [r * (5 + 6 + 6 + 6) / n_base for r in (1, 3, 2)],
        "zero_init_max_abs_diff": 4e-7,
        "merge_max_abs_err": 4e-6,
        "merge_max_rel_err": 5e-7,
        "merge_max_rel_err_fp64": 3e-15,
        "gain_recovered_lora": pytest.approx([0.25 / 0.5, 0.375 / 0.5, 0.125 / 0.5]),
    }
    assert 0 < got["labels_changed"] < 1
    acc[None] = 0.25  # full fine-tuning no better than the base model: refused
    with pytest.raises(AssertionError, match="full fine-tuning did not improve"):
        LORA.adapt_all(base, teacher_a, teacher, cfg, ctx, 30)


def test_run_once_recipe_with_training_recorded(monkeypatch) -> None:
    from repro.lab.claims import Context

    cfg = LORA.Config(**SMALL, shift_rank=2, shift_scale=0.5, control_shift_rank=3,
                      pretrain_steps=19, lr_pretrain=0.04)  # fmt: skip
    ctx = Context(seed=0)
    fits, adapted, scored = [], [], []
    current = {"cfg": cfg, "ctx": ctx}

    def fit(model, teacher, steps, lr, seed, c, cx, what):
        assert c is current["cfg"] and cx is current["ctx"]
        fits.append((model, teacher, steps, lr, seed, what))

    def adapt_all(base, teacher_a, teacher, c, cx, seed):
        assert c is current["cfg"] and cx is current["ctx"]
        adapted.append((base, teacher_a, teacher, seed))
        return {"task": len(adapted)}

    def accuracy(model, x, y):
        scored.append((model, x, y))
        return 0.375

    monkeypatch.setattr(LORA, "fit", fit)
    monkeypatch.setattr(LORA, "adapt_all", adapt_all)
    monkeypatch.setattr(LORA, "accuracy", accuracy)
    got = LORA.run_once(cfg, ctx, 6)
    assert got == {"acc_a_pretrained": 0.375, "task_b": {"task": 1}, "control": {"task": 2}}
    # one generator, in this order: teacher A, B's shift, the test inputs, the control's shift
    g = torch.Generator().manual_seed(6)
    W1 = torch.randn(4, 5, generator=g) / math.sqrt(5)
    W2 = 3.0 * torch.randn(3, 4, generator=g) / math.sqrt(4)
    W1_b = W1 + 0.5 * (torch.randn(4, 2, generator=g) / math.sqrt(2)) @ (
        torch.randn(2, 5, generator=g) / math.sqrt(5)
    )
    x_test = torch.randn(9, 5, generator=g)
    W1_c = W1 + 0.5 * (torch.randn(4, 3, generator=g) / math.sqrt(3)) @ (
        torch.randn(3, 5, generator=g) / math.sqrt(5)
    )
    [(base, teacher_a, steps, lr, seed, what)] = fits
    assert (steps, lr, seed, what) == (19, 0.04, 7, "pre-train A")
    torch.testing.assert_close(teacher_a.W1, W1)
    torch.testing.assert_close(teacher_a.W2, W2)
    torch.manual_seed(6)  # the student's initialisation follows the seed
    layers = [nn.Linear(5, 6), nn.Linear(6, 6), nn.Linear(6, 3)]
    for mine, theirs in zip(layers, (base.fc1, base.fc2, base.head), strict=True):
        assert torch.equal(mine.weight, theirs.weight) and torch.equal(mine.bias, theirs.bias)
    [(model, x, y)] = scored
    assert model is base
    torch.testing.assert_close(x, x_test)
    assert torch.equal(y, labels_by_hand(W1, W2, x_test))
    (b1, a1, t_b, s_b), (b2, a2, t_c, s_c) = adapted
    assert b1 is base and b2 is base and a1 is teacher_a and a2 is teacher_a
    assert (s_b, s_c) == (8, 10)
    torch.testing.assert_close(t_b.W1, W1_b)
    torch.testing.assert_close(t_c.W1, W1_c)
    assert t_b.W2 is teacher_a.W2 and t_c.W2 is teacher_a.W2
    current.update(cfg=LORA.Config(**SMALL), ctx=Context(seed=0))
    assert "control" not in LORA.run_once(current["cfg"], current["ctx"], 6)


def _fake_task(i: int) -> dict:
    """One run's numbers for a task, lopsided so that a mean, a max and a pick differ."""
    return {
        "labels_changed": [0.3, 0.6, 0.9][i],
        "acc_base": [0.2, 0.1, 0.3][i],
        "lr_full": [0.01, 0.03, 0.1][i],
        "acc_full": [0.9, 0.6, 0.9][i],
        "acc_lora": [[0.5, 0.8], [0.2, 0.5], [0.8, 0.2]][i],
        "lr_lora": [[0.01, 0.03], [0.1, 0.1], [0.03, 0.01]][i],
        "trainable_fraction_lora": [[0.01, 0.04], [0.01, 0.04], [0.01, 0.04]][i],
        "zero_init_max_abs_diff": [0.0, 3e-7, 1e-7][i],
        "merge_max_abs_err": [2e-6, 5e-6, 1e-6][i],
        "merge_max_rel_err": [4e-7, 1e-7, 2e-7][i],
        "merge_max_rel_err_fp64": [1e-15, 2e-15, 6e-15][i],
        "gain_recovered_lora": [[0.25, 1.0], [0.2, 0.8], [0.5, 0.0]][i],
    }


SUMMARY = {  # means over the three runs, the worst run for the exactness checks
    "labels_changed": pytest.approx(0.6),
    "acc_base": pytest.approx(0.2),
    "acc_full": pytest.approx(0.8),
    "acc_lora": pytest.approx([0.5, 0.5]),
    "trainable_fraction_lora": pytest.approx([0.01, 0.04]),
    "zero_init_max_abs_diff": 3e-7,
    "merge_max_abs_err": 5e-6,
    "merge_max_rel_err": 4e-7,
    "merge_max_rel_err_fp64": 6e-15,
    "gain_recovered_lora": pytest.approx([0.95 / 3, 0.6]),
}


@pytest.mark.parametrize("control", [0, 16])
def test_experiment_averages_the_repeats_and_plots_accuracy_vs_rank(
    monkeypatch, line_plots, tmp_path, control
) -> None:
    from repro.lab.claims import Context

    cfg = LORA.Config(**SMALL, ranks=(2, 8), repeats=3, shift_rank=3, control_shift_rank=control)
    ctx = Context(config=cfg, seed=5, out_dir=tmp_path)
    seeds = []

    def run_once(c, cx, seed):
        assert c is cfg and cx.seed == 5 and torch.get_num_threads() == 1
        seeds.append(seed)
        i = len(seeds) - 1
        run = {"acc_a_pretrained": [0.9, 0.7, 0.95][i], "task_b": _fake_task(i)}
        if control:
            run["control"] = _fake_task(2 - i)
        return run

    monkeypatch.setattr(LORA, "run_once", run_once)
    drawn = line_plots(LORA)
    with torch_threads(2):  # the experiment sets one thread itself
        got = LORA.experiment(cfg, ctx)
    assert seeds == [5, 1005, 2005]
    assert got["ranks"] == [2, 8]
    assert got["acc_a_pretrained"] == pytest.approx(0.85)
    assert got["task_b"] == SUMMARY
    assert [r["task_b"]["lr_full"] for r in got["runs"]] == [0.01, 0.03, 0.1]  # kept per run
    assert ("control" in got) == bool(control)
    if control:
        assert got["control"] == SUMMARY  # the same runs in the other order
    [(path, series, rest)] = drawn
    assert path == tmp_path / "accuracy_vs_rank.svg"
    expected = {
        "LoRA, rank-3 shift": ([2, 8], pytest.approx([0.5, 0.5])),
        "full fine-tuning, rank-3 shift": ([2, 8], pytest.approx([0.8, 0.8])),
        "base model, rank-3 shift": ([2, 8], pytest.approx([0.2, 0.2])),
    }
    if control:
        expected |= {
            "LoRA, rank-16 shift": ([2, 8], pytest.approx([0.5, 0.5])),
            "full fine-tuning, rank-16 shift": ([2, 8], pytest.approx([0.8, 0.8])),
            "base model, rank-16 shift": ([2, 8], pytest.approx([0.2, 0.2])),
        }
    assert series == expected
    assert list(series) == list(expected)
    assert rest == {
        "xlabel": "LoRA rank r",
        "ylabel": "test accuracy on the new task",
        "title": "LoRA vs full fine-tuning on a shifted teacher",
        "logx": True,
    }
    seeds.clear()
    LORA.experiment(cfg, Context(config=cfg, seed=5))  # no folder: no plot
    assert len(drawn) == 1


def _claim_metrics(control: bool) -> dict:
    runs = [{"task_b": {"gain_recovered_lora": [0.1, 0.7, 0.9]}},
            {"task_b": {"gain_recovered_lora": [0.3, 0.95, 1.0]}}]  # fmt: skip
    m = {
        "ranks": [1, 4, 16],
        "acc_a_pretrained": 0.93,
        "task_b": {
            "acc_lora": [0.6, 0.78, 0.8],
            "acc_full": 0.8,
            "acc_base": 0.2,
            "gain_recovered_lora": [0.2, 0.825, 0.95],
            "trainable_fraction_lora": [0.01, 0.04, 0.16],
            "zero_init_max_abs_diff": 2.5e-8,
            "merge_max_rel_err": 3e-7,
            "merge_max_abs_err": 4e-6,
            "merge_max_rel_err_fp64": 5e-16,
        },
        "runs": runs,
    }
    if control:
        m["control"] = {"gain_recovered_lora": [0.1, 0.4, 0.9]}
    return m


@pytest.mark.parametrize("control", [False, True])
def test_claims_on_made_up_metrics(control: bool) -> None:
    from repro.lab.claims import Context

    m = _claim_metrics(control)
    ctx = Context(run_experiment=lambda c, x: m)
    got = LORA.lora_recovers_full_ft(ctx)
    assert got.value == 0.825  # r = 4, the second rank
    expected = {
        "ranks": [1, 4, 16],
        "acc_b_lora": [0.6, 0.78, 0.8],
        "acc_b_full": 0.8,
        "acc_b_base": 0.2,
        "acc_a_pretrained": 0.93,
        "gain_recovered_lora": [0.2, 0.825, 0.95],
        "acc_ratio_to_full": pytest.approx([0.6 / 0.8, 0.78 / 0.8, 1.0]),
        "trainable_fraction_lora": [0.01, 0.04, 0.16],
        "per_run_gain_recovered": [0.7, 0.95],
    }
    if control:
        expected["control_gain_recovered_lora"] = [0.1, 0.4, 0.9]
    assert got.details == expected
    zero = LORA.zero_init_equivalence(ctx)
    assert (zero.value, zero.details) == (2.5e-8, {})
    merge = LORA.merge_equivalence(ctx)
    assert merge.value == 3e-7
    assert merge.details == {"max_abs_err": 4e-6, "fp32_epsilon": 2**-23, "same_in_fp64": 5e-16}


def test_recovery_claim_refuses_ranks_without_r4() -> None:
    from repro.lab.claims import Context

    m = _claim_metrics(False) | {"ranks": [1, 2, 8]}
    with pytest.raises(ValueError, match=r"^the claim judges r=4; ranks \[1, 2, 8\] leave it out$"):
        LORA.lora_recovers_full_ft(Context(run_experiment=lambda c, x: m))


def test_adapt_refuses_an_empty_learning_rate_grid() -> None:
    from repro.lab.claims import Context

    cfg = LORA.Config(**SMALL, lrs_lora=())
    torch.manual_seed(0)
    base = LORA.Student(cfg)
    x = torch.randn(9, 5)
    with pytest.raises(AssertionError, match="^empty learning-rate grid$"):
        LORA.adapt(base, None, 2, cfg, 0, Context(), x, x[:, 0].long())


def test_mean_of_repeats_by_column_and_of_one_run() -> None:
    assert LORA._mean([[1.0, 4.0], [2.0, 8.0]]) == [1.5, 6.0]
    assert LORA._mean([[1.0, 4.0]]) == [1.0, 4.0]
    assert LORA._mean([0.25]) == 0.25
    with pytest.raises(ValueError):  # runs with different numbers of ranks do not average
        LORA._mean([[1.0, 4.0], [2.0]])


def test_summary_of_a_single_run_is_that_run_without_learning_rates() -> None:
    run = _fake_task(1)
    expected = {k: v for k, v in run.items() if k not in ("lr_full", "lr_lora")}
    assert LORA._summary([run]) == pytest.approx(expected)
