"""Helpers of papers/pagedattention/repro.py beyond its claims."""

from __future__ import annotations

import math

import pytest
import torch

from repro.lab.claims import Context
from repro.lab.library import Library
from repro.lab.threads import torch_threads
from repro.serving.trace import Request, make_trace, simulate

PA = Library().get("pagedattention").module()


def test_sharing_saving_on_hand_examples() -> None:
    # prompt 20 tokens (one full block of 16 + 4), two samples of 5 more tokens each:
    # unshared 2 · ⌈25/16⌉ = 4 blocks; shared: the full block once, the partial one copied → 3
    got = PA.parallel_sampling_saving([Request(20, 5)], 2, 16)
    assert got["blocks_unshared"] == 4 and got["blocks_shared"] == 3
    assert got["saving"] == pytest.approx(0.25)
    # a prompt shorter than one block: the only shared block is copied on the first write
    none = PA.parallel_sampling_saving([Request(10, 3)], 2, 16)
    assert none["saving"] == 0.0


def test_sharing_saving_refuses_a_cache_that_leaks_blocks(monkeypatch) -> None:
    monkeypatch.setattr(PA.PagedKVCache, "free", lambda self, seq: None)
    with pytest.raises(AssertionError, match="^blocks leaked$"):
        PA.parallel_sampling_saving([Request(20, 5)], 2, 16)


def test_opt13b_block_bytes_and_scattered_allocation() -> None:
    cache = PA.opt13b_layer_cache(16)
    assert cache.bytes_per_block == 2 * 16 * 40 * 128 * 2
    scattered = PA.scattered_cache(4, 1, 2, seed=0)
    blocks = [scattered.allocator.allocate() for _ in range(6)]
    assert blocks != list(range(blocks[0], blocks[0] + 6))


def test_exactness_and_its_controls() -> None:
    m = PA._exactness(5)
    assert m["max_abs_diff"] < 1e-12
    assert m["shuffled_table_min_diff"] > 0.05
    assert m["no_copy_on_write_diff"] > 0.05
    assert m["copies"] >= 1  # the forks really exercised copy-on-write


# --- the pieces the claims build on, against counts by hand and the library's own calls --------


def shared_blocks_by_formula(prompt: int, output: int, n: int, block_size: int) -> int:
    """The full prompt blocks once; every sample owns the rest of its blocks, the partial prompt
    block included (each writer but the last copies it on its first write)."""
    if output == 0:
        return math.ceil(prompt / block_size)
    full = prompt // block_size
    return full + n * (math.ceil((prompt + output) / block_size) - full)


@pytest.mark.parametrize(("n", "block_size"), [(3, 8), (4, 16), (6, 5)])
def test_sharing_saving_counts_every_request_by_formula(n: int, block_size: int) -> None:
    requests = [Request(20, 5), Request(33, 40), Request(64, 1), Request(7, 0), Request(1, 90)]
    requests += make_trace(12, 3)
    got = PA.parallel_sampling_saving(requests, n, block_size)
    shared = sum(
        shared_blocks_by_formula(r.prompt_len, r.output_len, n, block_size) for r in requests
    )
    unshared = sum(n * math.ceil(r.total / block_size) for r in requests)
    assert got["blocks_shared"] == shared and got["blocks_unshared"] == unshared
    assert got["saving"] == pytest.approx(1 - shared / unshared, rel=1e-12)
    assert 0 < got["saving"] < 1


def test_opt13b_layer_cache_at_every_block_size() -> None:
    for B in (8, 32, 128):
        cache = PA.opt13b_layer_cache(B)
        assert cache.block_size == B and cache.k.device.type == "meta"
        assert cache.k.dtype == torch.float16
        assert cache.k.shape == (1, 40, B, 128) and cache.v.shape == cache.k.shape  # one block
        assert cache.bytes_per_block == 2 * B * 40 * 128 * 2


def test_scattered_cache_hands_out_every_block_in_a_seeded_random_order() -> None:
    cache = PA.scattered_cache(4, 3, 5, seed=1)
    assert cache.k.shape == cache.v.shape == (64, 3, 4, 5) and cache.k.dtype == torch.float64
    order = [cache.allocator.allocate() for _ in range(64)]
    assert sorted(order) == list(range(64))
    again = PA.scattered_cache(4, 3, 5, seed=1)
    assert [again.allocator.allocate() for _ in range(64)] == order
    other = PA.scattered_cache(4, 3, 5, seed=2)
    assert [other.allocator.allocate() for _ in range(64)] != order
    steps = [b - a for a, b in zip(order, order[1:], strict=False)]
    assert sum(s == 1 for s in steps) < 10  # not the allocator's own 0, 1, 2, … order


def test_experiment_reports_the_librarys_simulation_of_its_settings() -> None:
    cfg = PA.Config(requests=12, block_sizes=(8, 32), budget_slots=4096, samples=(2, 3),
                    cow_requests=4)  # fmt: skip
    m = PA.experiment(cfg, Context(seed=5))
    trace = make_trace(12, 5)
    assert m["mean_request_tokens"] == pytest.approx(sum(r.total for r in trace) / 12)
    for B in (8, 32):
        s = simulate(trace, 4096, B)
        assert (m["waste"][B], m["running"][B], m["preemptions"][B]) == (
            s.waste, s.running, s.preemptions,
        )  # fmt: skip
    pre = simulate(trace, 4096, None)
    assert (m["prealloc_waste"], m["prealloc_running"]) == (pre.waste, pre.running)
    assert m["prealloc_waste"] > m["waste"][32] > m["waste"][8]
    cow_trace = make_trace(4, 6)
    for n in (2, 3):
        shared = sum(shared_blocks_by_formula(r.prompt_len, r.output_len, n, 16) for r in cow_trace)
        unshared = sum(n * math.ceil(r.total / 16) for r in cow_trace)
        assert m["cow"][n]["saving"] == pytest.approx(1 - shared / unshared, rel=1e-12)
    assert set(m["cow"]) == {2, 3}


def test_experiment_plots_waste_in_percent_by_block_size(line_plots, tmp_path) -> None:
    cfg = PA.Config(requests=12, block_sizes=(32, 8), budget_slots=4096, samples=(2,),
                    cow_requests=2)  # fmt: skip
    plots = line_plots(PA)  # bound to save_line_plot's signature: a dropped label fails
    m = PA.experiment(cfg, Context(seed=5, out_dir=tmp_path))
    ((path, series, other),) = plots
    assert path == tmp_path / "waste_by_block_size.svg"
    assert other == {
        "xlabel": "block size B (tokens)",
        "ylabel": "KV slots wasted (%)",
        "title": "Waste by block size (seeded ShareGPT-like trace, OPT-13B budget)",
        "logx": True,
    }
    assert list(series) == ["paged (blocks of B)", "max-length preallocation"]
    paged, prealloc = series.values()
    assert paged == ([8, 32], [100 * m["waste"][8], 100 * m["waste"][32]])
    assert prealloc == ([8, 32], [100 * m["prealloc_waste"]] * 2)


# --- the claim helpers: OPT-13B's sizes, the waste bound, exactness and the trace's claims ------

_OPT13B_PER_TOKEN = 2 * 40 * 5120 * 2  # k and v, 40 layers, d_model 5120, fp16: 800 KiB


def test_size_claims_are_opt13b_by_hand() -> None:
    per_token = PA.kv_bytes_per_token(Context())
    assert per_token.value == _OPT13B_PER_TOKEN == 819_200
    assert type(per_token.value) is int  # a byte count, not 819200.0
    assert per_token.details == {
        "bytes_2048_tokens": 2048 * 819_200,
        "GiB_2048_tokens": 2048 * 819_200 / 2**30,  # 1.5625
        "GB_2048_tokens": pytest.approx(2048 * 819_200 / 1e9, rel=1e-12),
    }
    slots = PA.kv_slots_12gb(Context())
    assert slots.value == pytest.approx(12 * 2**30 / 819_200, rel=1e-12)  # 15,728.64 (Table 1)
    assert slots.details == {"decimal_12e9_bytes": pytest.approx(12e9 / 819_200, rel=1e-12)}


def test_internal_waste_is_at_most_one_block_minus_one_slot() -> None:
    """S = 1 wastes B − 1 slots (the value, 1); the mean waste of S = 1..2048 is
    Σ_S (⌈S/B⌉·B − S) / 2048, by hand."""
    out = PA.internal_waste_below_one_block(Context())
    assert out.value == 1.0
    want = {}
    for B in (8, 16, 32, 64, 128):
        wastes = [math.ceil(S / B) * B - S for S in range(1, 2049)]
        want[f"B={B}"] = {"max_waste_slots": B - 1, "mean_waste_slots": sum(wastes) / 2048}
    assert out.details == want


def test_internal_waste_sees_an_allocator_that_over_allocates(monkeypatch) -> None:
    """One extra slot counted for B = 128 only: that block size's worst becomes 128/127."""
    real = PA.PagedKVCache.slots_allocated

    def one_more(self):
        return real(self) + (self.block_size == 128)

    monkeypatch.setattr(PA.PagedKVCache, "slots_allocated", one_more)
    assert PA.internal_waste_below_one_block(Context()).value == pytest.approx(128 / 127)


def test_internal_waste_of_an_allocator_without_waste_is_zero(monkeypatch) -> None:
    """Slots allocated = tokens stored for every B: the worst waste is 0 (not a floor of 1)."""
    monkeypatch.setattr(PA.PagedKVCache, "slots_allocated", PA.PagedKVCache.tokens_stored)
    out = PA.internal_waste_below_one_block(Context())
    assert out.value == 0.0
    assert out.details["B=128"] == {"max_waste_slots": 0, "mean_waste_slots": 0.0}


def test_exactness_claims_read_one_measurement() -> None:
    """12 cases (2 queries for each of 4 sequences and 2 forks), two copy-on-write copies (each
    child's first write copies the block it shares with the parent)."""
    ctx = Context(seed=3)
    exact, shuffled, nocow = (PA.paged_equals_contiguous(ctx), PA.shuffled_table_differs(ctx),
                              PA.no_copy_on_write_corrupts(ctx))  # fmt: skip
    m = exact.details
    assert shuffled.details == nocow.details == m
    assert set(m) == {"max_abs_diff", "shuffled_table_min_diff", "no_copy_on_write_diff",
                      "copies", "cases"}  # fmt: skip
    assert (m["copies"], m["cases"]) == (2, 12)
    assert exact.value == m["max_abs_diff"] < 1e-12
    assert shuffled.value == m["shuffled_table_min_diff"] > 0.05
    assert nocow.value == m["no_copy_on_write_diff"] > 0.05
    assert m == PA._exactness(3) and m != PA._exactness(4)


def test_trace_claims_read_the_block_16_row_and_the_largest_n() -> None:
    m = {
        "waste": {32: 0.08, 8: 0.02, 16: 0.04},
        "running": {8: 30, 16: 28, 32: 25},
        "preemptions": {8: 1, 16: 2, 32: 3},
        "prealloc_waste": 0.6,
        "prealloc_running": 8,
        "cow": {2: {"saving": 0.1}, 6: {"saving": 0.3}, 4: {"saving": 0.2}},
    }
    ctx = Context(_metrics=m)
    waste = PA.waste_block_16(ctx)
    assert waste.value == 4.0 and waste.details == {"waste_by_block_size": m["waste"]}
    grows = PA.waste_grows_with_block_size(ctx)
    assert grows.value is True and grows.details == {"waste_by_block_size": m["waste"]}
    flat = Context(_metrics=m | {"waste": {8: 0.02, 16: 0.04, 32: 0.04}})
    assert PA.waste_grows_with_block_size(flat).value is False  # strictly growing only
    pre = PA.prealloc_waste_control(ctx)
    assert pre.value == 60.0 and pre.details == {"paged_waste_B16": 0.04}
    batched = PA.batched_sequences_ratio(ctx)
    assert batched.value == 3.5
    assert batched.details == {"paged_B16_running": 28, "prealloc_running": 8,
                               "preemptions_B16": 2}  # fmt: skip
    cow = PA.cow_parallel_sampling_saving(ctx)
    assert cow.value == pytest.approx(30.0) and cow.details == {"by_samples": m["cow"]}


def test_exactness_claims_measure_on_one_thread(monkeypatch) -> None:
    seen = []
    monkeypatch.setattr(PA, "_exactness", lambda seed: seen.append((seed, torch.get_num_threads()))
                        or {"max_abs_diff": 1.0, "shuffled_table_min_diff": 2.0,
                            "no_copy_on_write_diff": 3.0})  # fmt: skip
    with torch_threads(2):
        ctx = Context(seed=8)
        values = [f(ctx).value for f in (PA.paged_equals_contiguous, PA.shuffled_table_differs,
                                         PA.no_copy_on_write_corrupts)]  # fmt: skip
    assert values == [1.0, 2.0, 3.0] and seen == [(8, 1)] * 3
