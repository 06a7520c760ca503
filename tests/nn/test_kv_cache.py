import pytest
import torch

from repro.models.gpt import GPT, GPTConfig
from repro.models.llama import Llama, LlamaConfig
from repro.nn.kv_cache import KVCache, caches_for, generate, sample_next

V, S_MAX = 50, 40


LAYOUTS = {"mha": 4, "gqa": 2, "mqa": 1}  # n_kv_heads with n_heads = 4


def tiny(n_kv_heads: int, backend: str = "auto") -> GPT:
    torch.manual_seed(0)
    cfg = GPTConfig(
        n_layers=2,
        d_model=32,
        n_heads=4,
        n_kv_heads=n_kv_heads,
        vocab_size=V,
        max_seq_len=S_MAX,
        backend=backend,
    )
    return GPT(cfg).eval()


@pytest.mark.parametrize("backend", ["auto", "sdpa", "ref"])
@pytest.mark.parametrize("n_kv_heads", LAYOUTS.values(), ids=LAYOUTS.keys())
@torch.no_grad()
def test_cached_logits_equal_full_forward(n_kv_heads: int, backend: str):
    model = tiny(n_kv_heads, backend)
    idx = torch.randint(0, V, (3, 23))
    full = model(idx)  # (B, T, V)
    caches = caches_for(model.cfg, 3, S_MAX)
    chunks = [(0, 9), (9, 10), (10, 16), *[(t, t + 1) for t in range(16, 23)]]
    for a, b in chunks:  # prefill, a single token, a chunk, then token by token
        step = model(idx[:, a:b], a, caches)
        torch.testing.assert_close(step, full[:, a:b], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("n_kv_heads", [4, 2], ids=["mha", "gqa"])
@torch.no_grad()
def test_cached_logits_equal_full_forward_with_rope(n_kv_heads: int):
    torch.manual_seed(0)
    cfg = LlamaConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=n_kv_heads, vocab_size=V)
    model = Llama(cfg).eval()
    idx = torch.randint(0, V, (2, 15))
    full = model(idx)  # (B, T, V)
    caches = caches_for(cfg, 2, 15)
    torch.testing.assert_close(model(idx[:, :6], 0, caches), full[:, :6], atol=1e-5, rtol=1e-5)
    for t in range(6, 15):  # RoPE rotates each new key by its absolute position start_pos + t
        torch.testing.assert_close(
            model(idx[:, t : t + 1], t, caches), full[:, t : t + 1], atol=1e-5, rtol=1e-5
        )
    assert generate(model, idx[:, :4], 11).equal(generate(model, idx[:, :4], 11, use_cache=False))


@pytest.mark.parametrize("n_kv_heads", LAYOUTS.values(), ids=LAYOUTS.keys())
def test_generate_cached_tokens_equal_recomputed(n_kv_heads: int):
    model = tiny(n_kv_heads)
    prompt = torch.randint(0, V, (3, 5))
    cached = generate(model, prompt, 30)
    full = generate(model, prompt, 30, use_cache=False)
    assert cached.shape == (3, 35) and torch.equal(cached[:, :5], prompt)
    assert torch.equal(cached, full)


def test_generate_top_k_sampling_is_seeded_and_cache_independent():
    model = tiny(2)
    prompt = torch.randint(0, V, (2, 4))

    def run(use_cache: bool) -> torch.Tensor:
        g = torch.Generator().manual_seed(7)
        return generate(
            model, prompt, 20, temperature=0.8, top_k=5, generator=g, use_cache=use_cache
        )

    assert torch.equal(run(True), run(True))
    assert torch.equal(run(True), run(False))


def test_top_k_keeps_only_the_k_largest():
    logits = torch.tensor([[0.0, 5.0, 1.0, 4.0, -2.0]])
    g = torch.Generator().manual_seed(0)
    draws = {int(sample_next(logits, 1.0, top_k=2, generator=g)) for _ in range(200)}
    assert draws == {1, 3}
    assert int(sample_next(logits)) == 1  # temperature 0: argmax


@pytest.mark.parametrize("temperature,top_k", [(0.5, None), (2.0, None), (0.7, 3)])
def test_sampling_frequencies_follow_softmax_of_logits_over_temperature(temperature, top_k):
    """sample_next draws from softmax(logits / T) restricted to the top k, at T ≠ 1 (T = 1
    cannot tell logits / T from logits · T), counted over many draws of one batch of rows."""
    logits = torch.tensor([[1.0, 0.2, -0.5, 0.9, -2.0], [0.0, 0.3, 0.6, -0.4, 0.1]])
    n = 20_000
    g = torch.Generator().manual_seed(0)
    draws = sample_next(logits.repeat(n, 1), temperature, top_k, generator=g).view(n, 2)
    for row in range(2):
        kept = logits[row].clone().double()
        if top_k is not None:
            kept[kept.argsort(descending=True)[top_k:]] = float("-inf")
        want = torch.softmax(kept / temperature, -1)
        freq = torch.bincount(draws[:, row], minlength=5).double() / n
        assert (freq - want).abs().max() < 0.015, (row, freq, want)


@torch.no_grad()
def test_generate_samples_the_first_token_from_softmax_over_temperature():
    """`generate` passes its temperature and top-k to the sampler: the first new token of many
    copies of one prompt follows softmax(logits / 0.5) over the top 4 of the model's logits."""
    model = tiny(2)
    with torch.no_grad():
        model.lm_head.weight.mul_(3.0)  # spread logits, so T = 0.5 and T = 2 differ clearly
    prompt = torch.randint(0, V, (1, 4), generator=torch.Generator().manual_seed(3))
    logits = model(prompt)[0, -1].double()  # (V,)
    kept = torch.full_like(logits, float("-inf"))
    top = logits.topk(4).indices
    kept[top] = logits[top]
    want = torch.softmax(kept / 0.5, -1)
    assert 0.1 < want.max() < 0.9  # not one-hot: the temperature shapes the draws
    assert (torch.softmax(kept * 0.5, -1) - want).abs().max() > 0.1  # logits · T: far off
    n = 8000
    out = generate(
        model, prompt.repeat(n, 1), 1, temperature=0.5, top_k=4,
        generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    freq = torch.bincount(out[:, -1], minlength=V).double() / n
    assert (freq - want).abs().max() < 0.02


def test_cache_stores_only_kv_heads():
    model = tiny(1)
    caches = caches_for(model.cfg, batch=3, max_seq_len=S_MAX)
    assert len(caches) == model.cfg.n_layers
    c = caches[0]
    assert c.k.shape == c.v.shape == (3, 1, S_MAX, 8)  # (B, Hkv, S_max, D), D = 32 / 4
    assert c.nbytes == 2 * 3 * 1 * S_MAX * 8 * 4
    mha = caches_for(tiny(4).cfg, batch=3, max_seq_len=S_MAX)[0]
    assert mha.nbytes == 4 * c.nbytes  # H / Hkv
    half = KVCache(1, 16, 2, 8, torch.bfloat16)
    assert half.nbytes == 2 * 16 * 2 * 8 * 2


def test_update_writes_positions_and_returns_prefix():
    cache = KVCache(2, 10, 2, 4)
    k, v = torch.randn(2, 2, 3, 4), torch.randn(2, 2, 3, 4)
    pk, pv = cache.update(0, k, v)
    assert pk.shape == (2, 2, 3, 4) and torch.equal(pk, k) and torch.equal(pv, v)
    k1, v1 = torch.randn(2, 2, 1, 4), torch.randn(2, 2, 1, 4)
    pk, pv = cache.update(3, k1, v1)
    assert pk.shape == (2, 2, 4, 4)
    assert torch.equal(pk[:, :, :3], k) and torch.equal(pk[:, :, 3:], k1)
    assert torch.equal(pv[:, :, 3:], v1)
    assert cache.k[:, :, 4:].abs().sum() == 0  # nothing written past pos + T


@pytest.mark.parametrize("pos, T, span", [(-1, 1, "-1..-1"), (10, 1, "10..10"), (8, 3, "8..10")])
def test_update_out_of_range_raises(pos: int, T: int, span: str):
    """The message names the positions asked for, pos..pos+T-1, and the cache's range."""
    cache = KVCache(1, 10, 2, 4)
    x = torch.zeros(1, 2, T, 4)
    with pytest.raises(ValueError, match=rf"positions {span} are outside the cache \(0\.\.9\)"):
        cache.update(pos, x, x)


def test_update_wrong_shape_raises():
    cache = KVCache(1, 10, 2, 4)
    x = torch.zeros(1, 4, 1, 4)  # H heads instead of Hkv
    with pytest.raises(ValueError, match=r"\(B, Hkv, T, D\) = \(1, 2, 1, 4\)"):
        cache.update(0, x, x)
    good = torch.zeros(1, 2, 1, 4)
    for k, v in [(good, x), (x, good)]:  # either one of the two wrong is enough
        with pytest.raises(ValueError, match=r"\(B, Hkv, T, D\) = \(1, 2, 1, 4\)"):
            cache.update(0, k, v)


def test_generate_rejects_too_long_and_negative_temperature():
    model = tiny(4)
    prompt = torch.zeros(1, 30, dtype=torch.long)
    with pytest.raises(ValueError, match="exceeds max_seq_len=40"):
        generate(model, prompt, 11)
    with pytest.raises(ValueError, match="temperature"):
        generate(model, prompt, 1, temperature=-1.0)
    assert torch.equal(generate(model, prompt, 0), prompt)


def test_sample_next_is_greedy_by_default():
    """No temperature given means argmax, even where sampling would rarely pick the argmax:
    50 near-equal logits (the top one has ≈ 2.2% of the softmax mass at temperature 1)."""
    logits = torch.zeros(20, 50)
    best = torch.arange(20) * 2 + 3  # a different argmax in every row
    logits[torch.arange(20), best] = 0.1
    g = torch.Generator().manual_seed(0)
    assert torch.equal(sample_next(logits, generator=g), best)


def test_caches_for_any_config_with_the_asked_dtype_and_device():
    """caches_for needs only n_layers, n_heads, n_kv_heads, d_model (head_dim optional): without
    head_dim, D = d_model // n_heads; n_kv_heads None means MHA; dtype and device are passed on
    (meta: nothing allocated)."""
    from types import SimpleNamespace

    cfg = SimpleNamespace(n_layers=3, n_heads=4, n_kv_heads=None, d_model=40)
    caches = caches_for(cfg, 2, 7, torch.bfloat16, "meta")
    assert len(caches) == 3
    for c in caches:
        assert c.k.shape == c.v.shape == (2, 4, 7, 10)  # (B, Hkv = H, S_max, 40 // 4)
        assert c.k.dtype == c.v.dtype == torch.bfloat16
        assert c.k.device.type == c.v.device.type == "meta"
    gqa = SimpleNamespace(n_layers=1, n_heads=4, n_kv_heads=2, d_model=40, head_dim=6)
    assert caches_for(gqa, 2, 7)[0].k.shape == (2, 2, 7, 6)  # an explicit head_dim wins
    assert caches_for(gqa, 2, 7)[0].k.dtype == torch.float32


def test_cache_buffers_are_not_saved_with_the_model():
    """k and v are scratch space: non-persistent, so a module holding caches saves and loads
    checkpoints without them (and without their S_max-sized memory)."""
    cache = KVCache(1, 8, 2, 4)
    assert dict(cache.named_buffers()).keys() == {"k", "v"}
    assert cache.state_dict() == {}
