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
