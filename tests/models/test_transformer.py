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


# --- the Transformer written out in fp64, independent of repro.nn ----------------------------

F64 = torch.float64


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """LayerNorm gains ≠ 1, biases ≠ 0, O(1) activations, so every term shows; fp64."""
    g = torch.Generator().manual_seed(seed)
    model.double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=F64)
            if "norm" in name:
                p.copy_((1 if name.endswith("weight") else 0) + 0.3 * noise)
            elif name == "embed.weight":
                p.copy_(noise / math.sqrt(p.shape[-1]))  # N(0, 1/d_model), as initialised
            elif p.dim() == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / math.sqrt(p.shape[-1]))
    return model


def _sinusoids(T: int, d: int) -> torch.Tensor:
    """§3.5: PE(pos, 2i) = sin(pos / 10000^(2i/d)), PE(pos, 2i+1) = cos(pos / 10000^(2i/d))."""
    return torch.tensor(
        [
            [
                (math.sin if j % 2 == 0 else math.cos)(pos / 10000 ** (2 * (j // 2) / d))
                for j in range(d)
            ]
            for pos in range(T)
        ],
        dtype=F64,
    )


def _layer_norm(x, g, b, eps=1e-5):
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + eps) * g + b


def _mha(sd, name, x, ctx, H, visible):
    """§3.2.2 MultiHead(Q, K, V) = Concat(head_1..h) W^O, Eq. 1 per head; no biases.
    visible (B or 1, T, S) True = may attend."""
    B, T, C = x.shape
    S, D = ctx.shape[1], C // H
    q = (x @ sd[f"{name}.wq.weight"].T).view(B, T, H, D).transpose(1, 2)
    k = (ctx @ sd[f"{name}.wk.weight"].T).view(B, S, H, D).transpose(1, 2)
    v = (ctx @ sd[f"{name}.wv.weight"].T).view(B, S, H, D).transpose(1, 2)
    w = (q @ k.transpose(-1, -2) / math.sqrt(D)).masked_fill(~visible[:, None], -math.inf).exp()
    heads = ((w / w.sum(-1, keepdim=True)) @ v).transpose(1, 2).reshape(B, T, C)
    return heads @ sd[f"{name}.wo.weight"].T


def _transformer_ref(model: Transformer, src, tgt, src_real):
    """Fig. 1: post-LN sublayers LN(x + Sublayer(x)) (§3.1), ReLU FFN (Eq. 2), embeddings
    × √d_model plus sinusoids (§3.4-3.5), the output sharing the embedding matrix (§3.4)."""
    cfg, sd = model.cfg, model.state_dict()
    H, C = cfg.n_heads, cfg.d_model
    (B, S), T = src.shape, tgt.shape[1]

    def ffn(x, n):
        h = torch.clamp(x @ sd[f"{n}.w1.weight"].T + sd[f"{n}.w1.bias"], min=0)
        return h @ sd[f"{n}.w2.weight"].T + sd[f"{n}.w2.bias"]

    def ln(x, n):
        return _layer_norm(x, sd[f"{n}.weight"], sd[f"{n}.bias"])

    E = sd["embed.weight"]
    x = E[src] * math.sqrt(C) + _sinusoids(S, C)
    src_visible = src_real[:, None, :].expand(B, S, S)
    for i in range(cfg.n_layers):
        n = f"encoder.{i}."
        x = ln(x + _mha(sd, n + "self_attn", x, x, H, src_visible), n + "norm1")
        x = ln(x + ffn(x, n + "ffn"), n + "norm2")
    y = E[tgt] * math.sqrt(C) + _sinusoids(T, C)
    causal = torch.ones(T, T, dtype=torch.bool).tril()[None]
    cross_visible = src_real[:, None, :].expand(B, T, S)
    for i in range(cfg.n_layers):
        n = f"decoder.{i}."
        y = ln(y + _mha(sd, n + "self_attn", y, y, H, causal), n + "norm1")
        y = ln(y + _mha(sd, n + "cross_attn", y, x, H, cross_visible), n + "norm2")
        y = ln(y + ffn(y, n + "ffn"), n + "norm3")
    return y @ E.T


def test_forward_matches_the_papers_equations_in_fp64(model: Transformer):
    """fp32 sinusoid table in the model (1e-7), everything else fp64."""
    model = _randomise(model).eval()
    g = torch.Generator().manual_seed(1)
    src, tgt = torch.randint(0, V, (3, 7), generator=g), torch.randint(0, V, (3, 5), generator=g)
    src_real = torch.ones(3, 7, dtype=torch.bool)
    src_real[2, 4:] = False
    want = _transformer_ref(model, src, tgt, src_real)
    torch.testing.assert_close(model(src, tgt, src_real), want, atol=1e-5, rtol=1e-5)


def test_every_parameter_gets_a_nonzero_gradient(model: Transformer):
    src, tgt = torch.randint(0, V, (3, 7)), torch.randint(0, V, (3, 6))
    logits = model.train()(src, tgt[:, :-1])
    torch.nn.functional.cross_entropy(logits.flatten(0, 1), tgt[:, 1:].flatten()).backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_initialisation():
    """Embedding N(0, 1/d_model), so that ×√d_model gives unit scale (§3.4); matrices
    Xavier-uniform, bound √(6 / (fan_in + fan_out)); LayerNorm gains 1, biases 0."""
    torch.manual_seed(0)
    cfg = TransformerConfig(n_layers=1, d_model=128, n_heads=4, d_ff=512, vocab_size=3000)
    model = Transformer(cfg)
    for name, p in model.named_parameters():
        if name == "embed.weight":
            assert abs(p.std().item() * math.sqrt(128) - 1) < 0.02
        elif p.dim() == 2:
            bound = math.sqrt(6 / sum(p.shape))
            assert p.abs().max() <= bound and p.abs().max() > 0.95 * bound, name
            assert abs(p.std().item() / (bound / math.sqrt(3)) - 1) < 0.05, name
    assert model.encoder[0].ffn.act(torch.tensor([-1.0, 2.0])).tolist() == [0.0, 2.0]  # Eq. 2
