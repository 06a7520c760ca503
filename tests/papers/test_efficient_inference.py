"""Pieces of papers/efficient-inference/repro.py beyond its claims: byte accounting."""

from __future__ import annotations

import pytest

from repro.lab.counting import kv_cache_bytes_per_token
from repro.lab.library import Library
from repro.lab.threads import torch_threads

EI = Library().get("efficient-inference").module()


def test_palm_cache_bytes_scale_with_batch_context_and_heads() -> None:
    one = EI.palm_cache_bytes(1, 1, 1)
    assert one == kv_cache_bytes_per_token(118, 1, 256, 2) == 120_832
    assert EI.palm_cache_bytes(1, 3, 5) == 15 * one
    assert EI.palm_cache_bytes(48, 1, 1) == 48 * one


def test_bytes_read_per_token_counts_weights_once_and_the_cache() -> None:
    model = EI.tiny_decoder(1, 64, seed=0)
    weights = sum(p.numel() for p in model.parameters()) * 4 - model.wpe.weight.nbytes
    per_position = 2 * 4 * 1 * 64 * 4  # 2 · L · Hkv · D · fp32 bytes
    assert EI.bytes_read_per_token(model, 0) == weights
    assert EI.bytes_read_per_token(model, 10) == weights + 10 * per_position


def test_bandwidth_claim_rejects_a_bound_without_the_weights(monkeypatch) -> None:
    """The control of `decode-bandwidth-bound`: the same measured step against a memory model
    that forgets the weights (only the KV cache is streamed) must fall outside [0.7, 2.0]."""
    from repro.lab.claims import Context

    real = EI.bytes_read_per_token

    def kv_only(model, context):  # the bytes of the cache alone: real(model, 0) is the weights
        return real(model, context) - real(model, 0)

    monkeypatch.setattr(EI, "bytes_read_per_token", kv_only)
    cfg = EI.Config(big_d_model=512, big_layers=2, big_new_tokens=4, copy_bytes=1 << 24)
    assert EI.decode_bandwidth_bound(Context(config=cfg, seed=0)).value > 2.0


# --- the claims' arithmetic, with the experiment and the clocks replaced ---------------------


def test_cache_claims_are_the_palm_arithmetic() -> None:
    from repro.lab.claims import Context

    per_token = 2 * 118 * 1 * 256 * 2  # 2 · L · Hkv · D · bf16 bytes (multiquery)
    got = EI.kv_bytes_per_token(Context())
    assert got.value == per_token
    assert got.details == {
        "formula_2_L_Hkv_D_bytes": per_token,
        "batch_512_context_2048_GB": 512 * 2048 * per_token / 1e9,
    }
    got = EI.multiquery_kv_reduction(Context())
    assert got.value == 48
    assert got.details == {
        "mha_bytes_per_token": 48 * per_token,
        "mqa_bytes_per_token": per_token,
        "mha_batch_512_context_2048_TB": 512 * 48 * per_token * 2048 / 1e12,
    }


def test_tiny_decoder_is_the_benchmark_shape_from_its_seed() -> None:
    import torch

    model = EI.tiny_decoder(1, 64, seed=3)
    c = model.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.n_kv_heads) == (4, 256, 4, 1)
    assert (c.vocab_size, c.max_seq_len, c.backend) == (256, 64, "auto")
    torch.manual_seed(3)
    again = EI.GPT(c)
    assert all(
        torch.equal(a, b) for a, b in zip(model.parameters(), again.parameters(), strict=True)
    )
    assert not model.training


def test_experiment_runs_on_one_thread(monkeypatch) -> None:
    import torch

    seen = []
    monkeypatch.setattr(EI, "_exactness", lambda cfg, ctx: seen.append(torch.get_num_threads()))
    with torch_threads(2):
        EI.experiment(EI.Config(), None)
    assert seen == [1]


def test_palm_cache_is_allocated_on_the_meta_device(monkeypatch) -> None:
    real = EI.caches_for
    devices = []

    def caches_for(cfg, batch, context, dtype, device):
        devices.append(device)
        return real(cfg, batch, context, dtype, device)

    monkeypatch.setattr(EI, "caches_for", caches_for)
    EI.palm_cache_bytes(48, 2, 2048)  # 23 GiB if it were real memory
    assert devices == ["meta"]


def test_cached_equals_recomputed_needs_every_decoder_to_match() -> None:
    from repro.lab.claims import Context

    def ctx(mha: bool, mqa: bool) -> Context:
        metrics = {"mha": {"tokens_match": mha}, "mqa": {"tokens_match": mqa}}
        return Context(run_experiment=lambda cfg, c: metrics)

    assert EI.cached_equals_recomputed(ctx(True, True)).value is True
    assert EI.cached_equals_recomputed(ctx(True, True)).details == {
        "mha": {"tokens_match": True},
        "mqa": {"tokens_match": True},
    }
    assert EI.cached_equals_recomputed(ctx(True, False)).value is False
    assert EI.cached_equals_recomputed(ctx(False, True)).value is False


def test_exactness_runs_both_decoders_on_seeded_prompts_and_reports_margins(monkeypatch) -> None:
    import torch

    from repro.lab.claims import Context

    built, prompts, progress = [], [], []
    real_decoder, real_generate = EI.tiny_decoder, EI.generate

    def decoder(n_kv_heads, max_seq_len, seed, backend="auto"):
        built.append((n_kv_heads, max_seq_len, seed))
        return real_decoder(n_kv_heads, max_seq_len, seed, backend)

    def generate(model, prompt, new_tokens, **kwargs):
        prompts.append(prompt.clone())
        return real_generate(model, prompt, new_tokens, **kwargs)

    monkeypatch.setattr(EI, "tiny_decoder", decoder)
    monkeypatch.setattr(EI, "generate", generate)
    cfg = EI.Config(exact_batch=2, exact_prompt_len=3, exact_new_tokens=5)
    ctx = Context(config=cfg, seed=7, progress=lambda *a: progress.append(a))
    got = EI.experiment(cfg, ctx)
    assert built == [(4, 8, 7), (1, 8, 7)]  # multi-head, then multiquery
    want_prompt = torch.randint(0, 256, (2, 3), generator=torch.Generator().manual_seed(7))
    assert len(prompts) == 4 and all(torch.equal(p, want_prompt) for p in prompts)
    assert progress == [("efficient-inference: exactness", k, 2) for k in (1, 2)]
    for name, n_kv_heads in (("mha", 4), ("mqa", 1)):
        r = got[name]
        assert r["tokens_match"] is True
        assert 0 <= r["max_logit_diff"] < 1e-4
        # the margin of the logits that chose the 5 new tokens, recomputed by sorting
        model = real_decoder(n_kv_heads, 8, 7)
        tokens = real_generate(model, want_prompt, 5, use_cache=False)
        with torch.no_grad():
            logits = model(tokens[:, :-1])[:, 2:]  # (B, 5, V): positions that chose a token
        ranked = [row.sort(descending=True).values for row in logits.reshape(-1, 256)]
        margins = [top[0] - top[1] for top in ranked]
        assert r["min_top1_top2_margin"] == min(margins).item()


def test_the_step_logits_compared_with_the_full_forward_are_the_cached_ones(monkeypatch) -> None:
    """A cached step that read a wrong position would show in max_logit_diff, not in tokens."""
    from repro.lab.claims import Context
    from repro.models.gpt import GPT

    real_forward = GPT.forward

    def off_by_one(self, tokens, start_pos=0, caches=None):
        if caches is not None and tokens.shape[1] == 1:
            start_pos = start_pos + 1  # writes and reads one slot later
        return real_forward(self, tokens, start_pos, caches)

    cfg = EI.Config(exact_batch=2, exact_prompt_len=3, exact_new_tokens=5)
    clean = EI.experiment(cfg, Context(config=cfg))
    monkeypatch.setattr(GPT, "forward", off_by_one)
    broken = EI.experiment(cfg, Context(config=cfg))
    for name in ("mha", "mqa"):
        assert broken[name]["max_logit_diff"] > 1e3 * max(clean[name]["max_logit_diff"], 1e-7)


FAKE_BENCH = {
    "new_tokens": 300,
    "prompt_len": 16,
    "weights_MB": 12.0,
    "kv_MB_read_by_last_step": 3.0,
    "speedup_cpu": 21.5,
    "speedup_wall": 17.25,
    "cached_last_over_first_cpu": 1.25,
    "cached_last_over_first_wall": 1.5,
    "cached_step_ms_cpu": [1.0, 2.0, 3.0],
    "recompute_step_ms_cpu": [4.0, 5.0, 6.0],
}


def _fake_bench(monkeypatch) -> list:
    calls = []

    def bench(new_tokens, prompt_len, device, seed):
        calls.append((new_tokens, prompt_len, device, seed))
        return dict(FAKE_BENCH)

    EI._bench.cache_clear()
    monkeypatch.setattr(EI, "bench_decode", bench)
    return calls


def test_speedup_claims_read_the_benchmark_by_the_clock_of_the_device(monkeypatch) -> None:
    from repro.lab.claims import Context

    calls = _fake_bench(monkeypatch)
    cfg = EI.Config(bench_new_tokens=300, bench_prompt_len=16)
    summary = {k: v for k, v in FAKE_BENCH.items() if "step_ms" not in k}
    try:
        got = EI.decode_speedup(Context(config=cfg, seed=3))
        assert (got.value, got.details) == (21.5, summary)
        assert calls == [(300, 16, "cpu", 3)]
        got = EI.decode_speedup(Context(config=cfg, seed=3, device="cuda:1"))
        assert got.value == 17.25  # wall time on a GPU
        # flat per token: last / first, beside (weights + KV at the end) / (weights + KV at
        # the start), the KV read growing with the context: 3 MB · (16 + 64) / (16 + 300)
        kv_start = 3.0 * (16 + 64) / (16 + 300)
        got = EI.decode_flat_per_token(Context(config=cfg, seed=3))
        assert got.value == 1.25
        assert got.details == summary | {"memory_bound_ratio": (12 + 3) / (12 + kv_start)}
        wall = EI.decode_flat_per_token(Context(config=cfg, seed=3, device="cuda"))
        assert wall.value == 1.5
    finally:
        EI._bench.cache_clear()


def test_speedup_plot_shows_both_paths_per_token(monkeypatch, line_plots, tmp_path) -> None:
    from repro.lab.claims import Context

    _fake_bench(monkeypatch)
    drawn = line_plots(EI)
    cfg = EI.Config(bench_new_tokens=3, bench_prompt_len=16)
    try:
        EI.decode_speedup(Context(config=cfg, out_dir=tmp_path))
    finally:
        EI._bench.cache_clear()
    [(path, series, rest)] = drawn
    assert path == tmp_path / "per_token_ms.svg"
    assert series == {
        "KV cache": ([1, 2, 3], [1.0, 2.0, 3.0]),
        "recompute prefix": ([1, 2, 3], [4.0, 5.0, 6.0]),
    }
    assert rest == {
        "xlabel": "new token",
        "ylabel": "CPU ms per token",
        "title": "Greedy decoding, tiny GPT (first token includes the prefill)",
        "logy": True,
    }


def test_decode_step_seconds_is_the_median_gap_between_tokens(monkeypatch) -> None:
    import types

    import torch

    ticks = {"perf_counter": iter([0.0, 1.0, 3.0, 6.0, 10.0]), "process_time": iter([0, 5, 6])}
    fake_time = types.SimpleNamespace(
        perf_counter=lambda: next(ticks["perf_counter"]),
        process_time=lambda: next(ticks["process_time"]),
    )
    seen = []

    def generate(model, prompt, new_tokens, on_token):
        seen.append((prompt.clone(), new_tokens))
        for t in range(new_tokens):
            on_token(t)

    monkeypatch.setattr(EI, "time", fake_time)
    monkeypatch.setattr(EI, "generate", generate)
    # gaps 1, 2, 3, 4: median 2.5 by the wall clock; 5, 1: median 3 by the CPU clock
    assert EI.decode_step_seconds(None, 6, 5, "cpu", "wall") == 2.5
    assert EI.decode_step_seconds(None, 6, 3, "meta", "cpu") == 3
    assert torch.equal(seen[0][0], torch.zeros(1, 6, dtype=torch.long)) and seen[0][1] == 5
    assert seen[1][0].device.type == "meta"  # the prompt is made on the device timed


def test_bandwidth_claim_is_the_step_over_the_streaming_bound(monkeypatch) -> None:
    import torch

    from repro.lab.claims import Context

    steps = []

    def step_seconds(model, prompt_len, new_tokens, device, clock):
        assert torch.get_num_threads() == 1
        steps.append((model, prompt_len, new_tokens, device, clock))
        return 0.004 if len(steps) == 1 else 0.0005

    def bandwidth(n, device, threads):
        assert (n, device, threads, torch.get_num_threads()) == (4096, "cpu", 1, 1)
        return {"cpu": 2e9, "wall": 8e9}

    monkeypatch.setattr(EI, "memory_bandwidth", bandwidth)
    monkeypatch.setattr(EI, "decode_step_seconds", step_seconds)
    cfg = EI.Config(big_d_model=256, big_layers=2, big_new_tokens=5, copy_bytes=4096)
    with torch_threads(2):  # the claim must bring it down to one
        got = EI.decode_bandwidth_bound(Context(config=cfg, seed=5))
    (big, *big_args), (tiny, *tiny_args) = steps
    assert big_args == [16, 5, "cpu", "cpu"] and tiny_args == [16, 64, "cpu", "cpu"]
    c = big.cfg
    assert (c.n_layers, c.d_model, c.n_heads, c.vocab_size) == (2, 256, 2, 256)
    assert (c.max_seq_len, c.backend) == (16 + 5, "sdpa")
    weights = [p.detach() for p in big.parameters()]  # filled, not left as empty memory
    assert all(w.abs().max() <= 0.02 for w in weights)
    assert min(w.std().item() for w in weights if w.numel() > 1) > 0.005
    # bytes: every weight but the position table, and the K/V of 16 + ⌊5/2⌋ positions
    read = (
        sum(p.nbytes for p in big.parameters())
        - big.wpe.weight.nbytes
        + 2 * 2 * 2 * 128 * 4 * (16 + 2)
    )
    assert got.value == pytest.approx(0.004 / (read / 2e9), rel=1e-12)
    assert got.details["big_bytes_per_token_MB"] == pytest.approx(read / 1e6, rel=1e-12)
    assert got.details["big_step_ms"] == pytest.approx(4.0)
    assert got.details["big_bound_ms"] == pytest.approx(1e3 * read / 2e9)
    n = sum(p.numel() for p in big.parameters())
    assert got.details["big_flops_per_byte"] == pytest.approx(2 * n / read)
    assert got.details["bandwidth_GBps"] == 2.0 and got.details["clock"] == "cpu"
    # the tiny decoder: the benchmark's shape and seed, sized for 16 + 64 + 1 positions
    t = tiny.cfg
    assert (t.n_kv_heads, t.max_seq_len, t.backend) == (4, 81, "sdpa")
    same = EI.tiny_decoder(4, 81, 5)
    assert all(torch.equal(a, b) for a, b in zip(tiny.parameters(), same.parameters(), strict=True))
    tiny_read = EI.bytes_read_per_token(tiny, 48)
    assert got.details["tiny_bytes_per_token_MB"] == pytest.approx(tiny_read / 1e6, rel=1e-12)
    assert got.details["tiny_step_ms"] == pytest.approx(0.5)
    assert got.details["tiny_bound_ms"] == pytest.approx(1e3 * tiny_read / 2e9)
    assert got.details["tiny_step_over_bound"] == pytest.approx(0.0005 / (tiny_read / 2e9))
    assert got.details["threads"] == 1
