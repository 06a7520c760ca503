"""Pieces of papers/mixtral/repro.py beyond its claims: the constructed routings, the biased
start of the load-balancing experiment and the dispatch case."""

from __future__ import annotations

import math
import re

import pytest
import torch

from repro.lab.claims import Context
from repro.lab.library import Library
from repro.lab.threads import torch_threads
from repro.nn.moe import MoEFeedForward, expert_load

MIXTRAL = Library().get("mixtral").module()


def test_uniform_routing_is_uniform_in_loads_and_probabilities():
    for k in (1, 2):
        r = MIXTRAL.routing_of(MIXTRAL.uniform_logits(), k)
        n = MIXTRAL.N_EXPERTS
        torch.testing.assert_close(expert_load(r), torch.full((n,), 1 / n, dtype=torch.float64))
        torch.testing.assert_close(r.probs.mean(0), torch.full((n,), 1 / n, dtype=torch.float64))


def test_collapsed_routing_is_collapsed():
    r = MIXTRAL.routing_of(MIXTRAL.collapsed_logits(), 2)
    assert (r.experts[:, 0] == 0).all() and (r.experts[:, 1] == 1).all()
    assert r.probs[:, 0].min() > 1 - 1e-15
    assert expert_load(r)[2:].sum() == 0


def test_routing_of_uses_the_logits_it_is_given():
    logits = MIXTRAL.uniform_logits()
    r = MIXTRAL.routing_of(logits, 2)
    torch.testing.assert_close(r.logits, logits)
    torch.testing.assert_close(r.gates, logits.topk(2).values.softmax(-1))


@torch.no_grad()
def test_biased_start_sends_every_token_to_expert_zero_first():
    cfg = MIXTRAL.PRESETS["quick"]
    torch.manual_seed(0)
    model = MIXTRAL._model(cfg, cfg.router_bias)
    model(torch.randint(0, cfg.vocab_size, (4, cfg.seq_len)))
    for r in model.routings():
        assert (r.experts[:, 0] == 0).all()
    assert MIXTRAL.max_load(model) == pytest.approx(1 / cfg.top_k)
    torch.manual_seed(0)
    unbiased = MIXTRAL._model(cfg, 0.0)
    unbiased(torch.randint(0, cfg.vocab_size, (4, cfg.seq_len)))
    assert MIXTRAL.max_load(unbiased) < 0.45  # the bias, not the architecture, collapses it


def test_dispatch_case_has_unequal_loads():
    moe, x = MIXTRAL.dispatch_case(0)
    with torch.no_grad():
        moe(x)
    load = expert_load(moe.last_routing)
    assert load.max() > 2 * load.min()


def test_config_rejects_more_experts_per_token_than_experts():
    with pytest.raises(ValueError):
        MIXTRAL.Config(n_experts=2, top_k=3)


# --- the pieces the claims build on ---------------------------------------------------------


def test_uniform_logits_rank_expert_t_then_t_plus_1():
    """Token t's first choice is expert t mod N and its second t + 1 mod N, with the same two
    logits for every token (so the mean probability of every expert is 1/N)."""
    logits = MIXTRAL.uniform_logits()
    n, t = MIXTRAL.N_EXPERTS, torch.arange(MIXTRAL.TOKENS)
    assert logits.shape == (64, 8) and logits.dtype == torch.float64
    top = logits.topk(3, -1)
    assert torch.equal(top.indices[:, 0], t % n) and torch.equal(top.indices[:, 1], (t + 1) % n)
    assert (top.values[:, 0] > top.values[:, 1]).all() and (
        top.values[:, 1] > top.values[:, 2]
    ).all()
    assert torch.unique(logits.sort(-1).values, dim=0).shape[0] == 1  # one row up to order


def test_collapsed_logits_send_everything_to_expert_0_then_1():
    logits = MIXTRAL.collapsed_logits()
    assert logits.shape == (64, 8) and logits.dtype == torch.float64
    top = logits.topk(3, -1)
    assert (top.indices[:, 0] == 0).all() and (top.indices[:, 1] == 1).all()
    assert (top.values[:, 1] > top.values[:, 2]).all()
    p = logits.softmax(-1)
    assert p[:, 0].min() > 1 - 1e-15


def test_routing_of_takes_top_k_and_fp64():
    r = MIXTRAL.routing_of(MIXTRAL.collapsed_logits(), 3)
    assert r.experts.shape == (64, 3) and r.gates.dtype == torch.float64
    torch.testing.assert_close(r.probs, MIXTRAL.collapsed_logits().softmax(-1))


def test_dispatch_case_is_the_documented_layer():
    """N = 8, K = 2, renormalised gates, fp64, router rows scaled by 0.5..3; x (3, 29, 24)."""
    moe, x = MIXTRAL.dispatch_case(2)
    assert (len(moe.experts), moe.router.top_k, len(moe.shared)) == (8, 2, 0)
    assert moe.router.normalize and moe.experts[0].w1.weight.shape == (40, 24)
    assert x.shape == (3, 29, 24) and x.dtype == torch.float64
    torch.manual_seed(2)
    plain = MoEFeedForward(24, 40, 8, 2).double()
    ratio = moe.router.gate.weight / plain.router.gate.weight
    want = torch.linspace(0.5, 3.0, 8, dtype=torch.float64)[:, None].expand(8, 24)
    torch.testing.assert_close(ratio, want, rtol=1e-12, atol=0)
    assert torch.equal(x, MIXTRAL.dispatch_case(2)[1])
    assert not torch.equal(x, MIXTRAL.dispatch_case(3)[1])


def test_model_follows_the_config_and_biases_only_expert_0():
    cfg = MIXTRAL.Config(n_layers=3, d_model=16, n_heads=4, n_kv_heads=1, d_ff=24, n_experts=5,
                         top_k=3, vocab_size=11, seq_len=9)  # fmt: skip
    model = MIXTRAL._model(cfg, 1.5)
    c = model.cfg
    got = (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads, c.d_ff, c.n_experts, c.top_k)
    assert got == (3, 16, 4, 1, 24, 5, 3)
    assert (c.vocab_size, c.max_seq_len, c.router_bias, c.backend) == (11, 9, True, "ref")
    assert len(model.layers) == 3
    for layer in model.layers:
        torch.testing.assert_close(layer.moe.router.gate.bias, torch.tensor([1.5, 0, 0, 0, 0]))


@torch.no_grad()
def test_max_load_is_the_largest_over_layers_and_experts():
    cfg = MIXTRAL.Config(n_layers=2)
    torch.manual_seed(1)
    model = MIXTRAL._model(cfg, 0.0)
    model.layers[1].moe.router.gate.bias[3] = 50.0  # layer 1 sends every token to expert 3
    model(torch.randint(0, cfg.vocab_size, (2, cfg.seq_len)))
    loads = [expert_load(r) for r in model.routings()]
    assert loads[0].max() < 0.45
    assert MIXTRAL.max_load(model) == pytest.approx(max(v.max().item() for v in loads))
    assert MIXTRAL.max_load(model) == pytest.approx(1 / cfg.top_k)


def test_config_checks_the_rope_head_split_and_allows_top_k_equal_to_n_experts():
    with pytest.raises(ValueError):
        MIXTRAL.Config(d_model=30, n_heads=2)  # head dim 15: RoPE rotates pairs
    MIXTRAL.Config(n_experts=2, top_k=2)  # every expert on every token is allowed


def test_model_takes_the_head_counts_of_the_config():
    cfg = MIXTRAL.Config(n_heads=2, n_kv_heads=1)
    c = MIXTRAL._model(cfg, 0.0).cfg
    assert (c.n_heads, c.n_kv_heads) == (2, 1)


# --- the claim helpers: Table 1's counts, the loss values, the cache and the dispatch -----------

# Mixtral 8x7B (Table 1): C 4096, L 32, H 32 of D 128, Hkv 8, F 14336, N 8, K 2, V 32000
_ATTN = 2 * 4096 * 32 * 128 + 2 * 4096 * 8 * 128  # W_q, W_o; W_k, W_v
_EXPERT = 3 * 4096 * 14336  # SwiGLU w1, w2, w3
_EMBED = 32000 * 4096  # the input embedding; the output head is as large


def _table1_count(experts_run: int, router: int = 8) -> int:
    """Two RMSNorm gains, attention, router and the experts a token runs per layer; the final
    norm, the output head and the input embedding once."""
    return 32 * (2 * 4096 + _ATTN + 4096 * router + experts_run * _EXPERT) + 4096 + 2 * _EMBED


def test_params_claims_count_table_1_by_hand() -> None:
    total, active = _table1_count(8), _table1_count(2)
    assert (total, active) == (46_702_792_704, 12_879_925_248)  # 46.7B and 12.9B (§2)
    counts = {"total": total, "total_nonembedding": total - _EMBED, "active": active,
              "active_nonembedding": active - _EMBED}  # fmt: skip
    dense = _table1_count(1, router=1)  # one expert: the 7B dense model with a 1-wide router
    out = MIXTRAL.params_total(Context())
    assert out.value == total / 1e9
    assert out.details == counts | {
        "dense_same_shape": dense,
        "naive_8_times_dense": 8 * dense,
        "unused_experts_per_token": 32 * 6 * _EXPERT,
    }
    out = MIXTRAL.params_active(Context())
    assert out.value == active / 1e9
    assert out.details == counts | {
        "convention": "2 of 8 experts per layer; attention, router, norms, input embedding and "
        "output head included",
        "active_over_total": active / total,
    }


def test_counts_cross_check_the_built_model_against_the_formula(monkeypatch) -> None:
    """Each of the four counts of the meta-built model is asserted equal to the analytic one."""
    import repro.models.mixtral as mixtral_lib

    real = mixtral_lib.mixtral_param_count
    monkeypatch.setattr(MIXTRAL, "mixtral_param_count", lambda cfg, a, e: real(cfg, a, e) + a)
    with pytest.raises(AssertionError, match="active=True embeddings=True"):
        MIXTRAL.counts.__wrapped__()


def test_aux_claims_on_the_constructed_routings() -> None:
    """Uniform routing: α (top-1 form) and α·K (top-k form); collapse: N·P_0 with P_0 the
    softmax weight of the 40 logit, and N·(P_0 + P_1) for the top-k form — by hand."""
    top1 = MIXTRAL.aux_uniform_top1(Context())
    assert top1.value == pytest.approx(1.0, abs=1e-12)
    assert top1.details == {"alpha": 0.01, "N": 8, "loss": pytest.approx(0.01, abs=1e-14)}
    topk = MIXTRAL.aux_uniform_topk(Context())
    assert topk.value == pytest.approx(2.0, abs=1e-12)
    assert topk.details == {"K": 2, "switch_form_top1_choice": pytest.approx(1.0, abs=1e-12)}
    z = math.exp(40) + math.exp(1) + 6
    p0, p1 = math.exp(40) / z, math.exp(1) / z
    collapse = MIXTRAL.aux_collapse(Context())
    assert collapse.value == pytest.approx(8 * p0, rel=1e-12)
    assert collapse.details == {"N": 8, "topk_form_over_alpha": pytest.approx(8 * (p0 + p1))}


def test_aux_claims_divide_by_alpha(monkeypatch) -> None:
    """With α = 0.5 the losses are halved before the division: the values do not move."""
    monkeypatch.setattr(MIXTRAL, "ALPHA", 0.5)
    assert MIXTRAL.aux_uniform_top1(Context()).details["loss"] == pytest.approx(0.5)
    assert MIXTRAL.aux_uniform_top1(Context()).value == pytest.approx(1.0)
    assert MIXTRAL.aux_uniform_topk(Context()).value == pytest.approx(2.0)
    assert MIXTRAL.aux_collapse(Context()).value == pytest.approx(8.0)


def test_kv_cache_claim_is_two_fp16_vectors_per_kv_head_and_layer() -> None:
    out = MIXTRAL.kv_cache_per_token(Context())
    per_token = 2 * 32 * 8 * 128 * 2  # k and v, L, Hkv, D, 2 bytes
    assert out.value == per_token == 131072
    assert all(type(v) is int for k, v in out.details.items() if k != "gib_at_32k_tokens")
    assert out.details == {
        "elements": per_token // 2,
        "gib_at_32k_tokens": 4.0,
        "mha_equivalent_bytes": per_token * 32 // 8,
    }


def test_dispatch_claims_report_the_gap_the_scale_and_the_loads() -> None:
    """Loads by hand from the top-2 of x·W_gᵀ; the control's gap relative to the largest
    output; the dense reference's largest output."""
    from repro.nn.moe import moe_ref

    moe, x = MIXTRAL.dispatch_case(3)
    flat = x.reshape(-1, 24)
    top = (flat @ moe.router.gate.weight.T).topk(2).indices
    loads = torch.bincount(top.flatten(), minlength=8).double() / top.numel()
    with torch.no_grad():
        dense, wrong = moe_ref(x, moe), moe_ref(x, moe, normalize=False)
    out = MIXTRAL.dispatch_equals_dense(Context(seed=3))
    assert out.value < 1e-12
    assert out.details == {
        "max_abs_output": pytest.approx(dense.abs().max().item(), rel=1e-12),
        "expert_loads": [round(v, 4) for v in loads.tolist()],
        "N": 8,
        "K": 2,
    }
    control = MIXTRAL.no_renorm_differs(Context(seed=3))
    scale = dense.abs().max().item()
    assert control.value == pytest.approx((dense - wrong).abs().max().item() / scale, rel=1e-9)
    assert control.details == {"max_abs_output": pytest.approx(scale, rel=1e-12)}
    assert control.value > 0.1


# --- the load-balancing experiment's plumbing ---------------------------------------------------

_TINY = dict(vocab_size=6, seq_len=5, batch=2, n_layers=2, d_model=8, n_heads=2, n_kv_heads=1,
             d_ff=8, n_experts=4, top_k=2, steps=10, lr=1e-2, router_bias=3.0, alpha=0.3,
             eval_sequences=3)  # fmt: skip


@pytest.mark.parametrize("alpha", [0.3, 0.0])
def test_train_moe_adds_the_layer_mean_of_the_topk_loss_and_logs_the_load(monkeypatch, alpha):
    """loss(step) = cross-entropy of batch `step` + mean over layers of α·N·Σ f·P (top-k form;
    nothing at α = 0), its max expert load logged; the model seeded by the context and biased;
    the held-out loss and the max load of its routing reported."""
    from repro.models.mixtral import Mixtral
    from repro.nn.moe import topk_aux_loss
    from repro.train import lm_loss

    cfg = MIXTRAL.Config(**_TINY)
    g = torch.Generator().manual_seed(0)
    data = torch.randint(0, 6, (10, 2, 6), generator=g)
    test = torch.randint(0, 6, (3, 6), generator=g)
    seen = {}

    def fake_train(model, loss_fn, steps, lr, progress, description):
        seen.update(model=model, steps=steps, lr=lr, progress=progress, description=description)
        seen["losses"] = [loss_fn(s).item() for s in (0, 3)]
        return []

    monkeypatch.setattr(MIXTRAL, "train", fake_train)
    ctx = Context(seed=4, progress=lambda *a: None)
    out = MIXTRAL.train_moe(cfg, data, test, alpha, 3.0, ctx)
    model = seen["model"]
    torch.manual_seed(4)
    want = MIXTRAL._model(cfg, 3.0)
    pairs = zip(model.state_dict().values(), want.state_dict().values(), strict=True)
    assert isinstance(model, Mixtral) and all(torch.equal(a, b) for a, b in pairs)
    assert (seen["steps"], seen["lr"], seen["progress"]) == (10, 1e-2, ctx.progress)
    assert seen["description"] == f"mixtral: α={alpha:g}, bias 3"
    loads = []
    with torch.no_grad():
        for s, got in zip((0, 3), seen["losses"], strict=True):
            x = data[s]
            logits = want(x[:, :-1])
            routings = want.routings()
            aux = sum(topk_aux_loss(r, alpha) for r in routings) / 2
            assert got == pytest.approx((lm_loss(logits, x[:, 1:]) + aux).item(), rel=1e-5)
            loads.append(max(expert_load(r).max().item() for r in routings))
    assert out["curve"] == loads and loads[0] == 0.5  # expert 0 first everywhere: 1/K
    with torch.no_grad():
        test_loss = lm_loss(want(test[:, :-1]), test[:, 1:]).item()
    assert out["test_loss"] == pytest.approx(test_loss, rel=1e-5)
    assert out["final_max_load"] == MIXTRAL.max_load(want)  # the held-out tokens' routing
    assert set(out) == {"curve", "final_max_load", "test_loss"}


@pytest.mark.parametrize("unbiased", [False, True])
def test_experiment_trains_on_seeded_markov_text_with_and_without_the_loss(
    monkeypatch, line_plots, tmp_path, unbiased
) -> None:
    from repro.data.markov import MarkovConfig, MarkovSource

    plots = line_plots(MIXTRAL)
    cfg = MIXTRAL.Config(**_TINY, order=3, unbiased_control=unbiased)
    runs = []

    def fake_train_moe(c, data, test, alpha, bias, ctx):
        runs.append((c, data, test, alpha, bias, ctx))
        k = len(runs)
        return {"curve": [0.5 - 0.01 * k * s for s in range(10)], "final_max_load": 0.1 * k,
                "test_loss": 2.0 + k}  # fmt: skip

    monkeypatch.setattr(MIXTRAL, "train_moe", fake_train_moe)
    ctx = Context(seed=7, out_dir=tmp_path)
    m = MIXTRAL.experiment(cfg, ctx)
    source = MarkovSource(MarkovConfig(vocab_size=6, order=3))
    g = torch.Generator().manual_seed(7)
    data = source.sample(20, 6, g).view(10, 2, 6)
    test = source.sample(3, 6, g)
    want = [(0.3, 3.0), (0.0, 3.0)] + ([(0.0, 0.0)] if unbiased else [])
    assert [(r[3], r[4]) for r in runs] == want
    for c, d, t, _, _, run_ctx in runs:
        assert c is cfg and run_ctx is ctx and torch.equal(d, data) and torch.equal(t, test)
    names = ["with_aux", "without_aux"] + (["unbiased_without_aux"] if unbiased else [])
    assert m == {
        "uniform_load": 0.25,
        "collapsed_load": 0.5,
        "entropy_floor": source.entropy_rate(),
        **{n: {"final_max_load": 0.1 * (k + 1), "test_loss": 3.0 + k} for k, n in enumerate(names)},
        "start_max_load": 0.5,
    }
    ((path, series, _),) = plots
    xs = list(range(1, 11))
    assert path == tmp_path / "expert_load.svg"
    assert list(series.values()) == [
        *[(xs, [0.5 - 0.01 * (k + 1) * s for s in range(10)]) for k in range(len(names))],
        (xs, [0.25] * 10),
    ]
    assert list(series)[:2] == ["with aux", "without aux"]


def test_experiment_draws_no_plot_without_an_output_folder(monkeypatch, line_plots) -> None:
    plots = line_plots(MIXTRAL)
    threads = []

    def fake_train_moe(*args):
        threads.append(torch.get_num_threads())
        return {"curve": [0.5], "final_max_load": 0.3, "test_loss": 2.0}

    monkeypatch.setattr(MIXTRAL, "train_moe", fake_train_moe)
    with torch_threads(2):  # experiment sets one thread, whatever it found
        MIXTRAL.experiment(MIXTRAL.Config(**_TINY), Context())
    assert plots == [] and threads == [1, 1]


def test_load_claims_read_each_runs_final_max_load() -> None:
    m = {"with_aux": {"final_max_load": 0.16}, "without_aux": {"final_max_load": 0.49}}
    ctx = Context(_metrics=m)
    balanced, collapsed = MIXTRAL.aux_loss_balances(ctx), MIXTRAL.no_aux_stays_collapsed(ctx)
    assert (balanced.value, collapsed.value) == (0.16, 0.49)
    assert balanced.details == m == collapsed.details


def test_experiment_moves_data_and_test_to_the_contexts_device(monkeypatch) -> None:
    """On another device (meta here) the sampled sequences follow the model there."""
    devices = []

    def fake_train_moe(c, data, test, alpha, bias, ctx):
        devices.append((data.device.type, test.device.type, tuple(data.shape)))
        return {"curve": [0.5], "final_max_load": 0.3, "test_loss": 2.0}

    monkeypatch.setattr(MIXTRAL, "train_moe", fake_train_moe)
    MIXTRAL._experiment(MIXTRAL.Config(**_TINY), Context(device="meta"))
    assert devices == [("meta", "meta", (10, 2, 6))] * 2


def test_train_moe_builds_the_model_on_the_contexts_device(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(MIXTRAL, "train", lambda model, *a, **k: seen.append(model))
    monkeypatch.setattr(MIXTRAL, "evaluate_lm", lambda model, test: 2.5)
    monkeypatch.setattr(MIXTRAL, "max_load", lambda model: 0.25)
    cfg = MIXTRAL.Config(**_TINY)
    out = MIXTRAL.train_moe(cfg, None, None, 0.0, 3.0, Context(device="meta"))
    assert out == {"curve": [], "final_max_load": 0.25, "test_loss": 2.5}
    assert {p.device.type for p in seen[0].parameters()} == {"meta"}


def test_config_says_what_is_wrong_with_the_heads_or_experts() -> None:
    message = "n_heads must be a multiple of n_kv_heads and top_k <= n_experts"
    with pytest.raises(ValueError, match=f"^{re.escape(message)}$"):
        MIXTRAL.Config(n_heads=4, n_kv_heads=3)
