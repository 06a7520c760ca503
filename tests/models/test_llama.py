import math

import pytest
import torch

from repro.models.llama import PRESETS, Llama, LlamaConfig
from repro.nn.ffn import GLUFeedForward
from repro.nn.kv_cache import caches_for
from repro.nn.norm import RMSNorm

TINY = [
    dict(n_layers=2, d_model=32, n_heads=4, vocab_size=50, multiple_of=16, max_seq_len=32),
    dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, vocab_size=50, max_seq_len=32),
    dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=1, vocab_size=50, max_seq_len=32),
]


@pytest.fixture(params=TINY, ids=["mha", "gqa", "mqa"])
def model(request) -> Llama:
    torch.manual_seed(0)
    return Llama(LlamaConfig(**request.param)).eval()


def test_default_forward_shape_and_structure():
    cfg = LlamaConfig()
    model = Llama(cfg)
    idx = torch.randint(0, cfg.vocab_size, (3, 17))
    assert model(idx).shape == (3, 17, cfg.vocab_size)
    assert model.output.weight is not model.tok_embeddings.weight
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert isinstance(model.norm, RMSNorm)
    assert isinstance(model.layers[0].feed_forward, GLUFeedForward)
    assert all(m.bias is None for m in model.modules() if isinstance(m, torch.nn.Linear)), (
        "LLaMA has no biases"
    )


def test_no_future_leak(model: Llama):
    idx = torch.randint(0, 50, (2, 12))
    changed = idx.clone()
    changed[:, 7] = (idx[:, 7] + 1) % 50
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_cached_decoding_matches_full_forward(model: Llama):
    idx = torch.randint(0, 50, (3, 11))
    caches = caches_for(model.cfg, batch=3, max_seq_len=11)
    with torch.no_grad():
        full = model(idx)
        steps = [model(idx[:, :4], 0, caches)]
        for t in range(4, 11):
            steps.append(model(idx[:, t : t + 1], t, caches))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_rope_sees_only_relative_positions(model: Llama):
    """No absolute position enters the model: shifting every position leaves the logits alone
    (RoFormer Eq. 16)."""
    idx = torch.randint(0, 50, (2, 9))
    with torch.no_grad():
        torch.testing.assert_close(model(idx, start_pos=13), model(idx), atol=1e-5, rtol=1e-5)


def test_positions_beyond_context_are_rejected():
    model = Llama(LlamaConfig(n_layers=1, d_model=16, n_heads=2, max_seq_len=8))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 3, dtype=torch.long), start_pos=6)


def test_config_errors():
    with pytest.raises(ValueError, match="unknown LLaMA preset"):
        LlamaConfig.from_name("llama-8b")
    with pytest.raises(ValueError, match="divisible"):
        LlamaConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="multiple"):
        LlamaConfig(n_heads=4, n_kv_heads=3)


# Touvron et al. Table 2: params, dimension, n heads, n layers.
TABLE_2 = {
    "llama-7b": (6.7e9, 4096, 32, 32),
    "llama-13b": (13.0e9, 5120, 40, 40),
    "llama-33b": (32.5e9, 6656, 52, 60),
    "llama-65b": (65.2e9, 8192, 64, 80),
}
# The hidden sizes in Meta's released checkpoints (params.json + model.py).
RELEASED_FFN = {"llama-7b": 11008, "llama-13b": 13824, "llama-33b": 17920, "llama-65b": 22016}


@pytest.mark.parametrize("name", list(TABLE_2))
def test_presets_follow_table_2_and_the_released_code(name: str):
    params, dim, n_heads, n_layers = TABLE_2[name]
    cfg = LlamaConfig.from_name(name)
    assert (cfg.d_model, cfg.n_heads, cfg.n_layers, cfg.vocab_size) == (
        dim,
        n_heads,
        n_layers,
        32000,
    )
    assert cfg.head_dim == 128
    assert cfg.d_ff == math.ceil(int(8 * dim / 3) / 256) * 256 == RELEASED_FFN[name]
    with torch.device("meta"):
        built = sum(p.numel() for p in Llama(cfg).parameters())
    assert math.floor(built / 1e8) / 10 == params / 1e9  # the table truncates to 0.1B


def test_presets_are_all_listed():
    assert set(PRESETS) == set(TABLE_2)


# --- the paper's equations written out in fp64, independent of repro.nn ---------------------

F64 = torch.float64


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Weights far from the init (gains ≠ 1, O(1) activations), so every path shows in the
    output; in fp64."""
    g = torch.Generator().manual_seed(seed)
    model.double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=F64)
            if "norm" in name:
                p.copy_(1 + 0.3 * noise)
            elif "embeddings" in name:
                p.copy_(noise)
            else:
                p.copy_(noise / math.sqrt(p.shape[-1]))
    return model


def _rms_norm(x, g, eps):
    """Zhang & Sennrich Eq. 4: a_i / √(mean(a²) + eps) · g_i."""
    return x / torch.sqrt((x * x).mean(-1, keepdim=True) + eps) * g


def _rope(x, base=10000.0):
    """RoFormer Eq. 34, interleaved planes (2i, 2i+1) rotated by m·base^(−2i/D), one by one."""
    T, D = x.shape[-2:]
    out = torch.empty_like(x)
    for m in range(T):
        for i in range(D // 2):
            angle = m * math.pow(base, -2 * i / D)
            c, s = math.cos(angle), math.sin(angle)
            a, b = x[..., m, 2 * i], x[..., m, 2 * i + 1]
            out[..., m, 2 * i], out[..., m, 2 * i + 1] = a * c - b * s, a * s + b * c
    return out


def _causal_attention(q, k, v):
    """softmax(q kᵀ/√D + causal mask) v per query head; head h reads kv head h // (H / Hkv)."""
    B, H, T, D = q.shape
    group = H // k.shape[1]
    out = torch.empty_like(q)
    for h in range(H):
        scores = q[:, h] @ k[:, h // group].transpose(-1, -2) / math.sqrt(D)  # (B, T, T)
        future = torch.ones(T, T, dtype=torch.bool).triu(1)
        w = scores.masked_fill(future, -math.inf).exp()
        out[:, h] = (w / w.sum(-1, keepdim=True)) @ v[:, h // group]
    return out


def _llama_ref(model: Llama, idx: torch.Tensor, eps: float = 1e-6, base: float = 10000.0):
    """§2.2: h = x + attn(rmsnorm(x)); out = h + swiglu(rmsnorm(h)); final RMSNorm; output.
    eps and the RoPE base default to Meta's code; a test that sets others passes them here."""
    cfg, sd = model.cfg, model.state_dict()
    H, Hkv, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    B, T = idx.shape
    x = sd["tok_embeddings.weight"][idx]  # (B, T, C)
    for i in range(cfg.n_layers):
        p = {k[len(f"layers.{i}.") :]: v for k, v in sd.items() if k.startswith(f"layers.{i}.")}
        a = _rms_norm(x, p["attention_norm.weight"], eps)
        q = (a @ p["attention.wq.weight"].T).view(B, T, H, D).transpose(1, 2)
        k = (a @ p["attention.wk.weight"].T).view(B, T, Hkv, D).transpose(1, 2)
        v = (a @ p["attention.wv.weight"].T).view(B, T, Hkv, D).transpose(1, 2)
        y = _causal_attention(_rope(q, base), _rope(k, base), v).transpose(1, 2)
        y = y.reshape(B, T, H * D)
        h = x + y @ p["attention.wo.weight"].T
        f = _rms_norm(h, p["ffn_norm.weight"], eps)
        gate = f @ p["feed_forward.w1.weight"].T
        swish = gate / (1 + torch.exp(-gate))  # Swish_1(z) = z·σ(z) (Shazeer Eq. 6)
        x = h + (swish * (f @ p["feed_forward.w3.weight"].T)) @ p["feed_forward.w2.weight"].T
    return _rms_norm(x, sd["norm.weight"], eps) @ sd["output.weight"].T


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_forward_matches_the_papers_equations_in_fp64(n_kv_heads: int):
    torch.manual_seed(0)
    cfg = LlamaConfig(
        n_layers=2, d_model=32, n_heads=4, n_kv_heads=n_kv_heads, vocab_size=50, max_seq_len=16
    )
    model = _randomise(Llama(cfg)).eval()
    idx = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(model(idx), _llama_ref(model, idx), atol=1e-12, rtol=1e-12)


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_forward_honours_a_non_default_rope_base_and_norm_eps(n_kv_heads: int):
    """Mixtral (RoPE base 1e6, eps 1e-5) and LLaMA-3 (base 5e5) are this model with other
    constants: the config's rope_base and norm_eps must reach every layer. Here a base of 500
    and an eps of 0.05 (both far enough from the defaults to show), against the equations."""
    torch.manual_seed(0)
    cfg = LlamaConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=n_kv_heads, vocab_size=50,
                      max_seq_len=16, rope_base=500.0, norm_eps=0.05)  # fmt: skip
    model = _randomise(Llama(cfg)).eval()
    with torch.no_grad():  # small activations, so eps is not negligible beside mean(a²)
        model.tok_embeddings.weight.mul_(0.2)
    idx = torch.randint(0, 50, (2, 9))
    want = _llama_ref(model, idx, eps=0.05, base=500.0)
    torch.testing.assert_close(model(idx), want, atol=1e-12, rtol=1e-12)
    for eps, base in ((1e-6, 500.0), (0.05, 10000.0)):  # either constant dropped is seen
        assert (model(idx) - _llama_ref(model, idx, eps=eps, base=base)).abs().max() > 1e-4


@pytest.mark.parametrize("n_kv_heads", [4, 2])
def test_every_parameter_gets_a_nonzero_gradient(n_kv_heads: int):
    torch.manual_seed(0)
    model = Llama(LlamaConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=n_kv_heads))
    idx = torch.randint(0, 256, (2, 9))
    torch.nn.functional.cross_entropy(model(idx).flatten(0, 1), idx.flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", list(TABLE_2))
def test_presets_pin_the_papers_constants(name: str):
    cfg = LlamaConfig.from_name(name)
    assert cfg.rope_base == 10000.0  # RoFormer §3.3 θ_i = 10000^(−2(i−1)/d), Meta's code
    assert cfg.norm_eps == 1e-6  # Meta's params.json
    assert cfg.vocab_size == 32000  # Meta's SentencePiece tokenizer
    assert cfg.max_seq_len == 2048  # §2.2 / Table 2: context length 2048
    assert cfg.n_kv_heads == cfg.n_heads  # LLaMA-1 is multi-head (GQA came with LLaMA-2 70B)
    with torch.device("meta"):
        model = Llama(cfg)
    block = model.layers[0]
    assert isinstance(block.attention_norm, RMSNorm) and isinstance(block.ffn_norm, RMSNorm)
    assert block.attention_norm.eps == block.ffn_norm.eps == model.norm.eps == 1e-6
    assert isinstance(block.feed_forward, GLUFeedForward)  # §2.2 SwiGLU
    z = torch.linspace(-4, 4, 9)
    torch.testing.assert_close(block.feed_forward.gate(z), z * torch.sigmoid(z))


def test_norm_gains_start_at_one_and_weights_at_0_02():
    torch.manual_seed(0)
    model = Llama(LlamaConfig(n_layers=2, d_model=128, n_heads=4, vocab_size=512))
    for name, p in model.named_parameters():
        if "norm" in name:
            assert torch.equal(p, torch.ones_like(p)), name
        else:
            assert abs(p.std().item() - 0.02) < 0.002 and abs(p.mean().item()) < 0.002, name
