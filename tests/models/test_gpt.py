import math

import pytest
import torch

from repro.models.gpt import GPT, PRESETS, GPTConfig
from repro.nn.attention import Attention
from repro.nn.kv_cache import caches_for

TINY = [
    dict(n_layers=2, d_model=32, n_heads=4, vocab_size=50, max_seq_len=32),
    dict(n_layers=2, d_model=32, n_heads=4, n_kv_heads=2, vocab_size=50, max_seq_len=32),
    dict(n_layers=2, d_model=36, n_heads=4, head_dim=8, vocab_size=50, max_seq_len=32),
]


@pytest.fixture(params=TINY, ids=["mha", "gqa", "d_attn!=d_model"])
def model(request) -> GPT:
    torch.manual_seed(0)
    return GPT(GPTConfig(**request.param)).eval()


def test_default_config_is_tiny_and_forward_shape():
    cfg = GPTConfig()
    assert cfg.n_kv_heads == cfg.n_heads and cfg.d_ff == 4 * cfg.d_model
    assert cfg.head_dim * cfg.n_heads == cfg.d_model == cfg.d_attn
    idx = torch.randint(0, cfg.vocab_size, (3, 17))
    assert GPT(cfg)(idx).shape == (3, 17, cfg.vocab_size)


def test_head_is_tied_to_token_embedding(model: GPT):
    assert model.lm_head.weight is model.wte.weight
    untied = GPT(GPTConfig(n_layers=1, d_model=16, n_heads=2, tie_embeddings=False))
    assert untied.lm_head.weight is not untied.wte.weight


def test_attention_width_can_differ_from_model_width():
    assert type(GPT(GPTConfig(**TINY[0])).blocks[0].attn) is Attention
    attn = GPT(GPTConfig(**TINY[2])).blocks[0].attn
    assert attn.wq.weight.shape == (32, 36) and attn.wo.weight.shape == (36, 32)


def test_no_future_leak(model: GPT):
    idx = torch.randint(0, 50, (2, 12))
    changed = idx.clone()
    changed[:, 7] = (idx[:, 7] + 1) % 50
    with torch.no_grad():
        a, b = model(idx), model(changed)
    torch.testing.assert_close(a[:, :7], b[:, :7])
    assert not torch.allclose(a[:, 7:], b[:, 7:])


def test_cached_decoding_matches_full_forward(model: GPT):
    idx = torch.randint(0, 50, (3, 11))
    caches = caches_for(model.cfg, batch=3, max_seq_len=11)
    with torch.no_grad():
        full = model(idx)
        steps = [model(idx[:, :5], 0, caches)]
        for t in range(5, 11):
            steps.append(model(idx[:, t : t + 1], t, caches))
    torch.testing.assert_close(torch.cat(steps, 1), full, atol=1e-5, rtol=1e-5)


def test_gradients_reach_every_parameter(model: GPT):
    idx = torch.randint(0, 50, (2, 9))
    model(idx).logsumexp(-1).mean().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())


def test_positions_beyond_context_are_rejected():
    model = GPT(GPTConfig(n_layers=1, d_model=16, n_heads=2, max_seq_len=8))
    with pytest.raises(ValueError, match="max_seq_len"):
        model(torch.zeros(1, 3, dtype=torch.long), start_pos=6)


def test_config_errors():
    with pytest.raises(ValueError, match="unknown GPT preset"):
        GPTConfig.from_name("gpt3-huge")
    with pytest.raises(ValueError, match="head_dim"):
        GPTConfig(d_model=30, n_heads=4)
    with pytest.raises(ValueError, match="multiple"):
        GPTConfig(n_heads=4, n_kv_heads=3)


# Table 2.1 of Brown et al.: (n_params, n_layers, d_model, n_heads, d_head).
TABLE_2_1 = {
    "gpt3-small": (125e6, 12, 768, 12, 64),
    "gpt3-medium": (350e6, 24, 1024, 16, 64),
    "gpt3-large": (760e6, 24, 1536, 16, 96),
    "gpt3-xl": (1.3e9, 24, 2048, 24, 128),
    "gpt3-2.7b": (2.7e9, 32, 2560, 32, 80),
    "gpt3-6.7b": (6.7e9, 32, 4096, 32, 128),
    "gpt3-13b": (13.0e9, 40, 5140, 40, 128),
    "gpt3-175b": (175.0e9, 96, 12288, 96, 128),
}


def _meta_count(cfg: GPTConfig) -> int:
    with torch.device("meta"):
        return sum(p.numel() for p in GPT(cfg).parameters())


@pytest.mark.parametrize("name", list(TABLE_2_1))
def test_presets_follow_table_2_1(name: str):
    _, n_layers, d_model, n_heads, d_head = TABLE_2_1[name]
    cfg = GPTConfig.from_name(name)
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.head_dim) == (
        n_layers,
        d_model,
        n_heads,
        d_head,
    )
    assert (cfg.vocab_size, cfg.max_seq_len, cfg.d_ff) == (50257, 2048, 4 * d_model)


@pytest.mark.parametrize("name", [n for n in TABLE_2_1 if n != "gpt3-xl"])
def test_built_counts_match_table_2_1(name: str):
    assert _meta_count(GPTConfig.from_name(name)) == pytest.approx(TABLE_2_1[name][0], rel=0.03)


def test_xl_row_as_printed_is_not_1_3b_but_16_heads_is():
    assert _meta_count(GPTConfig.from_name("gpt3-xl")) > 1.1 * 1.3e9
    assert _meta_count(GPTConfig.from_name("gpt3-xl", n_heads=16)) == pytest.approx(1.3e9, rel=0.03)


def test_presets_are_all_listed():
    assert set(PRESETS) == set(TABLE_2_1)


# --- GPT-2/3 written out in fp64, independent of repro.nn ------------------------------------

F64 = torch.float64


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """O(1) activations, LayerNorm gains ≠ 1 and biases ≠ 0, so every term shows; fp64."""
    g = torch.Generator().manual_seed(seed)
    model.double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=F64)
            if name.split(".")[-2].startswith("ln"):
                p.copy_((1 if name.endswith("weight") else 0) + 0.3 * noise)
            elif p.dim() == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / math.sqrt(p.shape[-1]))
    return model


def _layer_norm(x, g, b, eps=1e-5):
    """Ba et al. Eq. 4 with GPT-2's eps 1e-5: (x − μ)/√(σ² + eps)·g + b, biased variance."""
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps) * g + b


def _gelu_tanh(x):
    """GPT-2's GELU: 0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))."""
    return 0.5 * x * (1 + torch.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x**3)))


def _causal_attention(q, k, v):
    B, H, T, D = q.shape
    group = H // k.shape[1]
    out = torch.empty_like(q)
    for h in range(H):
        scores = q[:, h] @ k[:, h // group].transpose(-1, -2) / math.sqrt(D)  # (B, T, T)
        w = scores.masked_fill(torch.ones(T, T, dtype=torch.bool).triu(1), -math.inf).exp()
        out[:, h] = (w / w.sum(-1, keepdim=True)) @ v[:, h // group]
    return out


def _gpt_ref(model: GPT, idx: torch.Tensor) -> torch.Tensor:
    """GPT-2 §2.3: pre-LN blocks x + attn(LN(x)), x + mlp(LN(x)); a final LN; tied head."""
    cfg, sd = model.cfg, model.state_dict()
    H, Hkv, D = cfg.n_heads, cfg.n_kv_heads, cfg.head_dim
    B, T = idx.shape
    x = sd["wte.weight"][idx] + sd["wpe.weight"][:T]  # (B, T, C)
    for i in range(cfg.n_layers):
        p = {k[len(f"blocks.{i}.") :]: v for k, v in sd.items() if k.startswith(f"blocks.{i}.")}

        def lin(z, name, p=p):
            return z @ p[f"{name}.weight"].T + p[f"{name}.bias"]

        a = _layer_norm(x, p["ln_1.weight"], p["ln_1.bias"])
        q = lin(a, "attn.wq").view(B, T, H, D).transpose(1, 2)
        k = lin(a, "attn.wk").view(B, T, Hkv, D).transpose(1, 2)
        v = lin(a, "attn.wv").view(B, T, Hkv, D).transpose(1, 2)
        x = x + lin(_causal_attention(q, k, v).transpose(1, 2).reshape(B, T, H * D), "attn.wo")
        m = _layer_norm(x, p["ln_2.weight"], p["ln_2.bias"])
        x = x + lin(_gelu_tanh(lin(m, "mlp.w1")), "mlp.w2")
    x = _layer_norm(x, sd["ln_f.weight"], sd["ln_f.bias"])
    return x @ sd["wte.weight"].T


@pytest.mark.parametrize("cfg", TINY, ids=["mha", "gqa", "d_attn!=d_model"])
def test_forward_matches_the_papers_equations_in_fp64(cfg: dict):
    torch.manual_seed(0)
    model = _randomise(GPT(GPTConfig(**cfg))).eval()
    idx = torch.randint(0, 50, (2, 9))
    torch.testing.assert_close(model(idx), _gpt_ref(model, idx), atol=1e-12, rtol=1e-12)


def test_initialisation_follows_gpt2():
    """GPT-2 §2.3 (and its code): N(0, 0.02) weights, residual projections N(0, 0.02/√(2L)),
    zero biases, LayerNorm gains 1."""
    torch.manual_seed(0)
    L = 6
    model = GPT(GPTConfig(n_layers=L, d_model=192, n_heads=4, vocab_size=1000, max_seq_len=512))
    residual = {f"blocks.{i}.{w}.weight" for i in range(L) for w in ("attn.wo", "mlp.w2")}
    for name, p in model.named_parameters():
        if ".ln" in name or name.startswith("ln_f"):
            want = torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p)
            assert torch.equal(p, want), name
        elif p.dim() == 1:
            assert torch.count_nonzero(p) == 0, name
        else:
            std = 0.02 / math.sqrt(2 * L) if name in residual else 0.02
            assert abs(p.std().item() / std - 1) < 0.05, (name, p.std().item(), std)
            assert abs(p.mean().item()) < 0.1 * std, name


def test_gpt3_constants():
    for name in TABLE_2_1:
        cfg = GPTConfig.from_name(name)
        assert cfg.vocab_size == 50257  # GPT-2 §2.2 byte-level BPE, reused by GPT-3
        assert cfg.max_seq_len == 2048  # GPT-3 §2.1: n_ctx = 2048 for every model
        assert cfg.tie_embeddings and cfg.bias and cfg.n_kv_heads == cfg.n_heads
    model = GPT(GPTConfig(n_layers=1, d_model=16, n_heads=2))
    assert model.ln_f.eps == model.blocks[0].ln_1.eps == 1e-5  # GPT-2's code
    z = torch.linspace(-4, 4, 9)
    torch.testing.assert_close(model.blocks[0].mlp.act(z), _gelu_tanh(z))  # GPT-2's GELU
