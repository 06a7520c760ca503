"""Pieces of papers/gqa/repro.py beyond its claims: the checkpoint conversion."""

from __future__ import annotations

import pytest
import torch

from repro.lab.library import Library
from repro.models.gpt import GPT, GPTConfig

GQA = Library().get("gqa").module()


def mha_model() -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=2, d_model=32, n_heads=8, vocab_size=20, max_seq_len=16)
    model = GPT(cfg).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_()  # GPT starts biases at 0; make them distinguishable
    return model


@pytest.mark.parametrize("method", GQA.METHODS)
def test_conversion_shapes_and_copied_weights(method: str) -> None:
    mha = mha_model()
    gqa = GQA.convert_kv_heads(mha, 2, method, torch.Generator().manual_seed(0))
    assert gqa.cfg.n_kv_heads == 2 and mha.cfg.n_kv_heads == 8
    attn = gqa.blocks[0].attn
    assert attn.wk.weight.shape == attn.wv.weight.shape == (2 * 4, 32)  # (Hkv·D, C)
    assert torch.equal(attn.wq.weight, mha.blocks[0].attn.wq.weight)
    assert torch.equal(gqa.blocks[1].mlp.w2.weight, mha.blocks[1].mlp.w2.weight)


def test_mean_pool_averages_each_group_and_first_keeps_its_first_head() -> None:
    mha = mha_model()
    g = torch.Generator().manual_seed(0)
    mean = GQA.convert_kv_heads(mha, 2, "mean", g).blocks[0].attn
    first = GQA.convert_kv_heads(mha, 2, "first", g).blocks[0].attn
    wk = mha.blocks[0].attn.wk.weight.view(8, 4, 32)  # (H, D, C)
    torch.testing.assert_close(mean.wk.weight.view(2, 4, 32)[1], wk[4:8].mean(0))
    bv = mha.blocks[0].attn.wv.bias.view(8, 4)  # (H, D)
    torch.testing.assert_close(first.wv.bias.view(2, 4)[1], bv[4])
    torch.testing.assert_close(mean.wv.bias.view(2, 4)[0], bv[:4].mean(0))
    assert torch.equal(first.wk.weight.view(2, 4, 32)[0], wk[0])


def test_one_head_per_group_is_the_identity() -> None:
    mha = mha_model()
    same = GQA.convert_kv_heads(mha, 8, "mean", torch.Generator().manual_seed(0)).eval()
    idx = torch.randint(0, 20, (2, 16))
    with torch.no_grad():
        torch.testing.assert_close(same(idx), mha(idx))


def test_unknown_method_raises() -> None:
    with pytest.raises(ValueError, match="unknown conversion method 'median'"):
        GQA.convert_kv_heads(mha_model(), 2, "median", torch.Generator())


def test_unknown_method_names_the_methods() -> None:
    with pytest.raises(ValueError) as err:
        GQA.convert_kv_heads(mha_model(), 2, "median", torch.Generator())
    assert str(err.value) == (
        "unknown conversion method 'median'; expected one of ('mean', 'first', 'random')"
    )


def test_random_conversion_draws_fresh_projections_layer_by_layer() -> None:
    """`random`: N(0, 0.02²) key and value weights drawn from the generator in state-dict order
    (wk then wv, layer by layer), zero biases; every other weight copied."""
    mha = mha_model()
    gqa = GQA.convert_kv_heads(mha, 2, "random", torch.Generator().manual_seed(3))
    g = torch.Generator().manual_seed(3)
    for block, old in zip(gqa.blocks, mha.blocks, strict=True):
        for proj in (block.attn.wk, block.attn.wv):
            assert torch.equal(proj.weight, 0.02 * torch.randn((8, 32), generator=g))
            assert torch.equal(proj.bias, torch.zeros(8))
        assert torch.equal(block.attn.wo.bias, old.attn.wo.bias)
    assert torch.equal(gqa.wte.weight, mha.wte.weight)


# --- the reference attentions against a naive one written here -------------------------------


def naive_attention(x: torch.Tensor, attn, group_of) -> torch.Tensor:
    """Causal attention with query head h on key/value head group_of(h), one query at a time."""
    B, T, _ = x.shape
    H, Hkv, D = attn.n_heads, attn.n_kv_heads, attn.head_dim
    q = attn.wq(x).view(B, T, H, D)
    k, v = attn.wk(x).view(B, T, Hkv, D), attn.wv(x).view(B, T, Hkv, D)
    out = torch.zeros(B, T, H, D, dtype=x.dtype)
    for h in range(H):
        g = group_of(h)
        for t in range(T):
            w = torch.einsum("bd,bsd->bs", q[:, t, h], k[:, : t + 1, g]) / D**0.5
            out[:, t, h] = torch.einsum("bs,bsd->bd", w.softmax(-1), v[:, : t + 1, g])
    return attn.wo(out.reshape(B, T, H * D))


def _layer(H: int, Hkv: int, seed: int = 0):
    from repro.nn.attention import Attention

    torch.manual_seed(seed)
    attn = Attention(24, H, Hkv, causal=True).double()
    with torch.no_grad():
        for p in attn.parameters():
            p.normal_()  # biases too
    return attn, torch.randn(2, 5, 24, dtype=torch.float64)


def test_mha_per_head_mqa_shared_and_per_group_against_a_naive_loop() -> None:
    with torch.no_grad():
        attn, x = _layer(4, 4)
        torch.testing.assert_close(GQA.mha_per_head(x, attn), naive_attention(x, attn, lambda h: h))
        attn, x = _layer(4, 1, seed=1)
        torch.testing.assert_close(GQA.mqa_shared(x, attn), naive_attention(x, attn, lambda h: 0))
        attn, x = _layer(6, 2, seed=2)
        for group_of in (lambda h: h // 3, lambda h: h % 2):
            torch.testing.assert_close(
                GQA.gqa_per_group(x, attn, group_of), naive_attention(x, attn, group_of)
            )


def test_grouped_vs_reference_measures_a_broken_library(monkeypatch) -> None:
    """A library layer off by 0.25 at one output element: the claim's difference is 0.25, and
    the output scale is the reference's largest |value|."""
    from repro.nn.attention import Attention

    shapes = []

    class OffByOne(Attention):
        def forward(self, x):
            shapes.append(tuple(x.shape))
            y = super().forward(x).clone()
            y[1, 5, 7] += 0.25
            y[2, 3, 1] -= 0.1
            return y

    monkeypatch.setattr(GQA, "Attention", OffByOne)
    for n_kv, group_of in ((8, lambda h: h), (1, lambda h: 0)):
        got = GQA.grouped_vs_reference(n_kv, seed=4)
        torch.manual_seed(4)
        attn = Attention(64, 8, n_kv, causal=True).double()
        x = torch.randn(3, 17, 64, dtype=torch.float64)
        with torch.no_grad():
            ref = naive_attention(x, attn, group_of)
        assert got == {"max_abs_diff": pytest.approx(0.25, abs=1e-9),
                       "max_abs_output": pytest.approx(float(ref.abs().max()))}  # fmt: skip
    assert shapes == [(3, 17, 64)] * 2  # three sequences of 17 tokens, each layout


def test_the_two_identity_claims_on_the_real_library() -> None:
    from repro.lab.claims import Context

    for fn, n_kv in ((GQA.gqa_hkv_h_is_mha, 8), (GQA.gqa_hkv_1_is_mqa, 1)):
        got = fn(Context(seed=2))
        assert got.value < 1e-12
        assert got.details == GQA.grouped_vs_reference(n_kv, 2) | {
            "H": 8,
            "Hkv": n_kv,
            "dtype": "float64",
        }
        assert got.details["max_abs_output"] > 0.1


def test_grouped_paths_runs_every_backend_and_small_flash_tiles(monkeypatch) -> None:
    tiles, real = [], GQA.flash_attention

    def spy(q, k, v, causal, block_q, block_k):
        tiles.append((q.shape, k.shape, causal, block_q, block_k))
        return real(q, k, v, causal=causal, block_q=block_q, block_k=block_k)

    monkeypatch.setattr(GQA, "flash_attention", spy)
    r = GQA.grouped_paths(2, seed=5)
    assert tiles == [((3, 8, 40, 8), (3, 2, 40, 8), True, 8, 8)]
    assert r["attn"].n_kv_heads == 2 and r["x"].shape == (3, 40, 64)
    assert r["x"].dtype == torch.float64
    assert list(r["paths"]) == ["ref", "sdpa", "flash", "flash_small_tiles"]
    with torch.no_grad():
        want = naive_attention(r["x"], r["attn"], lambda h: h // 4)
    for y in r["paths"].values():
        torch.testing.assert_close(y, want)


def test_worst_diff_takes_the_worst_path_and_the_group_size(monkeypatch) -> None:
    attn, x = _layer(8, 4, seed=3)
    with torch.no_grad():
        ref = naive_attention(x, attn, lambda h: h // 2)
    a, b = ref.clone(), ref.clone()
    a[0, 1, 2] += 0.1
    b[1, 4, 0] -= 0.3
    seen = []

    def paths(n_kv, seed):
        seen.append((n_kv, seed))
        return {"x": x, "attn": attn, "paths": {"a": a, "ok": ref, "b": b}}

    monkeypatch.setattr(GQA, "grouped_paths", paths)
    groups = []
    got = GQA._worst_diff(4, 7, lambda h, G: groups.append(G) or h // G)
    assert got == pytest.approx(0.3) and seen == [(4, 7)] and set(groups) == {2}
    groups.clear()
    GQA._worst_diff(1, 7, lambda h, G: groups.append(G) or 0)  # MQA: one group of all 8 heads
    assert set(groups) == {8}


def test_group_claims_pass_their_maps_and_report_each_hkv(monkeypatch) -> None:
    from repro.lab.claims import Context

    calls = []

    def worst(n, seed, group_of):
        G = 8 // n
        calls.append((n, seed, [group_of(h, G) for h in range(8)]))
        return {2: 0.3, 4: 0.2}[n]

    monkeypatch.setattr(GQA, "_worst_diff", worst)
    match = GQA.gqa_groups_match_per_group_reference(Context(seed=6))
    assert match.value == 0.3
    assert match.details == {"Hkv=2": 0.3, "Hkv=4": 0.2, "H": 8, "T": 40, "small_tiles": 8}
    assert calls == [(2, 6, [0, 0, 0, 0, 1, 1, 1, 1]), (4, 6, [0, 0, 1, 1, 2, 2, 3, 3])]
    calls.clear()
    wrong = GQA.gqa_wrong_group_map_differs(Context(seed=6))
    assert wrong.value == 0.2
    assert wrong.details == {"Hkv=2": 0.3, "Hkv=4": 0.2, "H": 8, "T": 40}
    assert calls == [(2, 6, [0, 1, 0, 1, 0, 1, 0, 1]), (4, 6, [0, 1, 2, 3, 0, 1, 2, 3])]


def test_group_claims_on_the_real_library() -> None:
    from repro.lab.claims import Context

    assert GQA.gqa_groups_match_per_group_reference(Context(seed=1)).value < 1e-12
    assert GQA.gqa_wrong_group_map_differs(Context(seed=1)).value > 0.01


def test_kv_cache_bytes_by_hand(monkeypatch) -> None:
    """24 layers × (K and V) × 2,048 positions × Hkv heads × 64 dims × 2 bytes (bf16)."""
    from repro.lab.claims import Context

    def bytes_(n_kv: int) -> int:
        return 24 * 2 * 2048 * n_kv * 64 * 2

    devices, real = [], GQA.caches_for

    def caches_for(cfg, batch, max_seq_len, dtype, device):
        devices.append((cfg.n_kv_heads, batch, max_seq_len, dtype, device))
        return real(cfg, batch, max_seq_len, dtype, device)

    monkeypatch.setattr(GQA, "caches_for", caches_for)
    got = GQA.kv_cache_shrinks(Context())
    # allocated on the meta device: 0.8 GB of MHA cache is never made
    assert devices == [(n, 1, 2048, torch.bfloat16, "meta") for n in (64, 8, 1)]
    assert got.value == 8.0
    assert got.details == {"bytes_mha": bytes_(64), "bytes_gqa8": bytes_(8), "bytes_mqa": bytes_(1),
                           "mha_over_mqa": 64.0}  # fmt: skip
    assert bytes_(64) == 805_306_368


def test_config_refuses_heads_that_do_not_split_the_width() -> None:
    with pytest.raises(ValueError, match="d_model 64 is not a multiple of n_heads 6"):
        GQA.Config(n_heads=6)


# --- the uptraining experiment with training recorded -------------------------------------------


def _fake_curve(k: int, steps: int) -> list[float]:
    return [3.0 + k - i / 10 for i in range(steps)]


@pytest.mark.parametrize(("fraction", "up_steps"), [(0.09, 3), (0.01, 1)])
def test_experiment_recipe_with_training_recorded(
    monkeypatch, line_plots, tmp_path, fraction, up_steps
) -> None:
    """An MHA GPT (seeded like the context, sdpa) trained on batches drawn from a 4,096-sequence
    pool by a generator seeded s; each (Hkv, method) converted with a generator seeded s, scored,
    uptrained round(α·steps) (at least 1) steps on batches seeded 20,000 + s, scored again; the
    held-out loss of the MHA model last. Losses here are made up, one per evaluation in order."""
    from repro.data.markov import MarkovConfig, MarkovSource
    from repro.lab.claims import Context
    from repro.lab.threads import torch_threads

    runs, batches, evals, converted, progress = [], [], [], [], []

    def report(*args) -> None:
        progress.append(args)

    def train(model, loss_fn, steps, lr, progress, description):
        assert progress is report and torch.get_num_threads() == 1
        runs.append((model, {k: t.clone() for k, t in model.state_dict().items()}, steps, lr,
                     description))  # fmt: skip
        for step in range(2):
            loss_fn(step)
        with torch.no_grad():
            model.wte.weight.add_(1.0)  # training moves the model
        return _fake_curve(len(runs), steps)

    def next_token_loss(model, x):
        batches.append((model, x.clone()))
        return torch.tensor(0.0)

    def evaluate_lm(model, tokens):
        evals.append((model, tokens.clone()))
        return 10.0 + len(evals)

    real_convert = GQA.convert_kv_heads

    def convert(mha, n_kv, method, generator):
        converted.append((mha, n_kv, method, generator.initial_seed()))
        return real_convert(mha, n_kv, method, generator)

    monkeypatch.setattr(GQA, "train", train)
    monkeypatch.setattr(GQA, "next_token_loss", next_token_loss)
    monkeypatch.setattr(GQA, "evaluate_lm", evaluate_lm)
    monkeypatch.setattr(GQA, "convert_kv_heads", convert)
    drawn = line_plots(GQA)
    cfg = GQA.Config(vocab_size=6, order=1, d_model=12, n_layers=1, n_heads=6, seq_len=5,
                     batch=3, steps=30, lr=2e-3, uptrain_fraction=fraction, kv_heads=(2, 1),
                     eval_batch=4)  # fmt: skip
    s = 7
    with torch_threads(2):  # experiment trains on one thread, whatever it found
        got = GQA.experiment(cfg, Context(seed=s, out_dir=tmp_path, progress=report))
        assert torch.get_num_threads() == 2

    source = MarkovSource(MarkovConfig(vocab_size=6, order=1))
    g = torch.Generator().manual_seed(10_000 + s)
    pool = source.sample(4096, 6, g)
    held_out = source.sample(4, 6, g)
    from repro.models.gpt import GPT, GPTConfig

    mha_cfg = GPTConfig(n_layers=1, d_model=12, n_heads=6, vocab_size=6, max_seq_len=5,
                        backend="sdpa")  # fmt: skip
    torch.manual_seed(s)
    fresh = GPT(mha_cfg)
    mha, mha_start, steps, lr, description = runs[0]
    assert mha.cfg == mha_cfg and (steps, lr, description) == (30, 2e-3, "gqa: MHA checkpoint")
    assert all(torch.equal(mha_start[k], t) for k, t in fresh.state_dict().items())
    names = [(n, m) for n in ("gqa2", "mqa") for m in ("mean", "first", "random")]
    assert converted == [(mha, 2 if n == "gqa2" else 1, m, s) for n, m in names]
    for i, (name, method) in enumerate(names, start=1):
        model, start, steps, lr, description = runs[i]
        assert model.cfg.n_kv_heads == (2 if name == "gqa2" else 1)
        assert (steps, lr, description) == (up_steps, 2e-3, f"gqa: uptrain {name} ({method})")
        # converted from the trained MHA checkpoint
        assert torch.equal(start["wte.weight"], fresh.wte.weight + 1.0)
        assert evals[2 * i - 2][0] is model and evals[2 * i - 1][0] is model
    assert evals[-1][0] is mha and len(evals) == 13
    assert all(torch.equal(t, held_out) for _, t in evals)
    order = torch.Generator().manual_seed(s)
    up_order = [torch.Generator().manual_seed(20_000 + s) for _ in names]
    for i, (model, x) in enumerate(batches):
        assert model is runs[i // 2][0]
        gen = order if i < 2 else up_order[i // 2 - 1]
        assert torch.equal(x, pool[torch.randint(0, 4096, (3,), generator=gen)])
    assert got == {
        "loss_mha": 23.0,
        "mha_final_train_loss": _fake_curve(1, 30)[-1],
        "entropy_floor": source.entropy_rate(),
        "unigram_entropy": source.unigram_entropy(),
        "uptrain_steps": up_steps,
        "losses": {
            name: {m: {"conversion": 10.0 + 2 * i - 1, "uptrained": 10.0 + 2 * i}
                   for i, (n, m) in enumerate(names, start=1) if n == name}
            for name in ("gqa2", "mqa")
        },
    }  # fmt: skip
    [(path, series, rest)] = drawn
    assert path == tmp_path / "uptraining_loss.svg"
    xs = list(range(1, up_steps + 1))
    assert series == {f"{n} {m}": (xs, _fake_curve(i, up_steps))
                      for i, (n, m) in enumerate(names, start=2)}  # fmt: skip
    assert rest == {
        "xlabel": "uptraining step",
        "ylabel": "training loss (nats/token)",
        "title": f"Uptraining after conversion (α = {fraction}, {up_steps} steps)",
    }


def test_experiment_without_out_dir_draws_nothing(monkeypatch, line_plots) -> None:
    from repro.lab.claims import Context

    drawn = line_plots(GQA)
    monkeypatch.setattr(GQA, "train", lambda model, loss_fn, steps, **kw: [1.0] * steps)
    monkeypatch.setattr(GQA, "evaluate_lm", lambda model, tokens: 2.0)
    cfg = GQA.Config(vocab_size=6, order=1, d_model=8, n_heads=4, seq_len=5, steps=10,
                     kv_heads=(2,), eval_batch=4)  # fmt: skip
    got = GQA.experiment(cfg, Context(seed=1))
    assert drawn == [] and list(got["losses"]) == ["gqa2"]


def _losses(**over) -> dict:
    base = {
        "gqa2": {"mean": {"conversion": 3.0, "uptrained": 2.2}, "first": {"conversion": 3.4,
                 "uptrained": 2.3}, "random": {"conversion": 4.0, "uptrained": 2.9}},
        "mqa": {"mean": {"conversion": 3.5, "uptrained": 2.5}, "first": {"conversion": 3.6,
                "uptrained": 2.45}, "random": {"conversion": 4.1, "uptrained": 2.7}},
    }  # fmt: skip
    for path, value in over.items():
        name, method = path.split("__")
        base[name][method] = {**base[name][method], "uptrained": value}
    return {"losses": base, "loss_mha": 2.0, "entropy_floor": 1.5, "uptrain_steps": 15,
            "mha_final_train_loss": 2.1, "unigram_entropy": 2.5}  # fmt: skip


def test_uptraining_claims_on_made_up_losses() -> None:
    from repro.lab.claims import Context

    m = _losses()
    ctx = Context(config=GQA.Config(), run_experiment=lambda c, x: m)
    worst = GQA.uptrain_random_init_worst(ctx)
    # gqa2: 2.9 − min(2.2, 2.3) = 0.7; mqa: 2.7 − min(2.5, 2.45) = 0.25
    assert worst.value == pytest.approx(0.25)
    assert worst.details == {
        "gap_random_vs_best": {"gqa2": pytest.approx(0.7), "mqa": pytest.approx(0.25)},
        "uptrained_mean_minus_first": {"gqa2": pytest.approx(-0.1), "mqa": pytest.approx(0.05)},
        "losses": m["losses"],
        "loss_mha": 2.0,
        "entropy_floor": 1.5,
        "uptrain_steps": 15,
    }
    closer = GQA.gqa_closer_to_mha_than_mqa(ctx)
    assert closer.value == pytest.approx(2.5 - 2.2)
    assert closer.details == {
        "loss_mha": 2.0,
        "gqa2_mean": m["losses"]["gqa2"]["mean"],
        "mqa_mean": m["losses"]["mqa"]["mean"],
        "conversion_gap_mqa_minus_gqa2": pytest.approx(0.5),
    }
    # random init no worse than the best conversion: the gap goes negative
    flipped = _losses(mqa__random=2.3)
    ctx = Context(config=GQA.Config(), run_experiment=lambda c, x: flipped)
    assert GQA.uptrain_random_init_worst(ctx).value == pytest.approx(2.3 - 2.45)


def test_closer_claim_finds_the_gqa_entry_whatever_its_order() -> None:
    from repro.lab.claims import Context

    m = _losses()
    m["losses"] = {"mqa": m["losses"]["mqa"], "gqa4": m["losses"]["gqa2"]}
    closer = GQA.gqa_closer_to_mha_than_mqa(Context(run_experiment=lambda c, x: m))
    assert closer.value == pytest.approx(0.3) and "gqa4_mean" in closer.details


def test_reference_attentions_build_their_mask_on_the_input_device() -> None:
    """On the meta device (shapes only) each reference runs end to end: its causal mask is made
    where x lives, not on the default device."""
    from repro.nn.attention import Attention

    for H, Hkv, run in (
        (4, 4, GQA.mha_per_head),
        (4, 1, GQA.mqa_shared),
        (4, 2, lambda x, attn: GQA.gqa_per_group(x, attn, lambda h: h // 2)),
    ):
        attn = Attention(24, H, Hkv, causal=True).to("meta")
        y = run(torch.empty(2, 5, 24, device="meta"), attn)
        assert y.device.type == "meta" and y.shape == (2, 5, 24)
