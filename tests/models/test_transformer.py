import math

import pytest
import torch

from repro.models.transformer import PRESETS, Transformer, TransformerConfig
from repro.nn.positional import sinusoidal_encoding

V = 20


@pytest.fixture
def model() -> Transformer:
    torch.manual_seed(0)
    cfg = TransformerConfig(n_layers=2, d_model=32, n_heads=4, d_ff=64, vocab_size=V, dropout=0.0)
    return Transformer(cfg).eval()


def test_default_config():
    cfg = TransformerConfig()
    assert cfg.vocab_size == 37000 and cfg.head_dim * cfg.n_heads == cfg.d_model


def test_presets_follow_table_3():
    base, big = (
        TransformerConfig.from_name("transformer-base"),
        TransformerConfig.from_name("transformer-big"),
    )
    assert (base.n_layers, base.d_model, base.d_ff, base.n_heads, base.head_dim) == (
        6,
        512,
        2048,
        8,
        64,
    )
    assert (big.n_layers, big.d_model, big.d_ff, big.n_heads, big.head_dim) == (
        6,
        1024,
        4096,
        16,
        64,
    )
    assert (base.dropout, big.dropout) == (0.1, 0.3)
    assert set(PRESETS) == {"transformer-base", "transformer-big"}
    with pytest.raises(ValueError, match="unknown Transformer preset"):
        TransformerConfig.from_name("transformer-huge")


def test_forward_shape_and_shared_embedding(model: Transformer):
    src, tgt = torch.randint(0, V, (3, 7)), torch.randint(0, V, (3, 5))
    logits = model(src, tgt)
    assert logits.shape == (3, 5, V)
    names = [n for n, _ in model.named_parameters()]
    assert sum("embed" in n for n in names) == 1, "one matrix for source, target and output"
    y = model.encode(src)
    assert y.shape == (3, 7, 32)


def test_embedding_is_scaled_and_gets_sinusoids(model: Transformer):
    ids = torch.randint(0, V, (2, 6))
    expected = model.embed(ids) * math.sqrt(32) + sinusoidal_encoding(6, 32)
    torch.testing.assert_close(model._embed(ids), expected)


def test_decoder_does_not_see_future_targets(model: Transformer):
    src, tgt = torch.randint(0, V, (2, 7)), torch.randint(0, V, (2, 8))
    changed = tgt.clone()
    changed[:, 5] = (tgt[:, 5] + 1) % V
    with torch.no_grad():
        a, b = model(src, tgt), model(src, changed)
    torch.testing.assert_close(a[:, :5], b[:, :5])
    assert not torch.allclose(a[:, 5:], b[:, 5:])


def test_padded_source_tokens_are_ignored(model: Transformer):
    src, tgt = torch.randint(0, V, (2, 7)), torch.randint(0, V, (2, 4))
    src_mask = torch.ones(2, 7, dtype=torch.bool)
    src_mask[0, 5:] = False
    changed = src.clone()
    changed[0, 5:] = (src[0, 5:] + 3) % V
    with torch.no_grad():
        a, b = model(src, tgt, src_mask), model(changed, tgt, src_mask)
        unmasked = model(changed, tgt)
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a[0], unmasked[0])


def test_padded_target_keys_are_ignored(model: Transformer):
    src, tgt = torch.randint(0, V, (2, 6)), torch.randint(0, V, (2, 6))
    tgt_mask = torch.ones(2, 6, dtype=torch.bool)
    tgt_mask[1, 4:] = False
    with torch.no_grad():
        full = model(src, tgt, tgt_pad_mask=tgt_mask)
        short = model(src[1:], tgt[1:, :4])
    torch.testing.assert_close(full[1, :4], short[0], atol=1e-5, rtol=1e-5)


def test_greedy_decode_is_argmax_of_the_forward_pass(model: Transformer):
    src = torch.randint(3, V, (3, 6))
    out = model.greedy_decode(src, bos_id=1, eos_id=2, max_len=7)
    assert out[:, 0].eq(1).all() and out.shape == (3, 8)
    with torch.no_grad():
        for t in range(1, out.shape[1]):
            step = model(src, out[:, :t])[:, -1].argmax(-1)
            alive = ~(out[:, 1:t] == 2).any(1)
            torch.testing.assert_close(out[alive, t], step[alive])


def test_greedy_decode_stops_at_eos(model: Transformer):
    src = torch.randint(3, V, (3, 6))
    with torch.no_grad():
        first = model(src[:1], torch.ones(1, 1, dtype=torch.long))[0, -1].argmax().item()
    out = model.greedy_decode(src, bos_id=1, eos_id=first, max_len=9)
    assert out.shape == (3, 10)
    assert out[0, 1:].eq(first).all(), "after EOS every step repeats EOS"


def test_learns_to_copy_one_batch():
    torch.manual_seed(0)
    cfg = TransformerConfig(n_layers=1, d_model=32, n_heads=4, d_ff=64, vocab_size=12, dropout=0)
    model = Transformer(cfg)
    src = torch.randint(3, 12, (8, 5))
    tgt = torch.cat([torch.ones(8, 1, dtype=torch.long), src, torch.full((8, 1), 2)], 1)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(80):
        logits = model(src, tgt[:, :-1])
        loss = torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten())
        opt.zero_grad()
        loss.backward()
        opt.step()
    out = model.eval().greedy_decode(src, bos_id=1, eos_id=2, max_len=8)  # 2 steps past EOS
    assert torch.equal(out, torch.cat([tgt, torch.full((8, 2), 2)], 1))
