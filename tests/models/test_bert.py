import math

import pytest
import torch
import torch.nn.functional as F

from repro.models.bert import PRESETS, Bert, BertConfig

V = 30


def tiny(**kw) -> Bert:
    torch.manual_seed(0)
    cfg = BertConfig(n_layers=2, d_model=32, n_heads=4, vocab_size=V, max_seq_len=16, **kw)
    return Bert(cfg).eval()


def test_forward_shapes():
    model = tiny()
    ids, seg = torch.randint(0, V, (3, 9)), torch.randint(0, 2, (3, 9))
    mlm, nsp = model(ids, seg)
    assert mlm.shape == (3, 9, V) and nsp.shape == (3, 2)
    hidden, pooled = model.encode(ids, seg)
    assert hidden.shape == (3, 9, 32) and pooled.shape == (3, 32)
    assert pooled.abs().max() <= 1, "pooler ends in tanh"


def test_mlm_decoder_is_tied_to_word_embeddings():
    model = tiny()
    ids = torch.randint(0, V, (2, 5))
    mlm, _ = model(ids)
    hidden, _ = model.encode(ids)
    h = model.mlm_norm(F.gelu(model.mlm_transform(hidden)))
    expected = h @ model.embeddings.word_embeddings.weight.T + model.mlm_bias
    torch.testing.assert_close(mlm, expected)
    assert not any(p.shape == (V, 32) for n, p in model.named_parameters() if "word" not in n)


def test_segments_matter():
    model = tiny()
    ids = torch.randint(0, V, (1, 6))
    a, _ = model.encode(ids, torch.zeros_like(ids))
    b, _ = model.encode(ids, torch.ones_like(ids))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("causal", [False, True])
def test_context_direction(causal: bool):
    model = tiny(causal=causal)
    ids = torch.randint(0, V, (2, 10))
    changed = ids.clone()
    changed[:, 6] = (ids[:, 6] + 1) % V
    with torch.no_grad():
        a, b = model.encode(ids)[0], model.encode(changed)[0]
    assert torch.allclose(a[:, :6], b[:, :6]) == causal, "left-only iff the past is unchanged"
    assert not torch.allclose(a[:, 6:], b[:, 6:])


def test_padding_is_ignored():
    model = tiny()
    ids = torch.randint(0, V, (2, 8))
    mask = torch.ones(2, 8, dtype=torch.bool)
    mask[1, 5:] = False
    changed = ids.clone()
    changed[1, 5:] = (ids[1, 5:] + 1) % V
    with torch.no_grad():
        a, b = (
            model.encode(ids, attention_mask=mask)[0],
            model.encode(changed, attention_mask=mask)[0],
        )
        short = model.encode(ids[1:, :5])[0]
    torch.testing.assert_close(a[1, :5], b[1, :5])
    torch.testing.assert_close(a[1, :5], short[0], atol=1e-5, rtol=1e-5)


def test_too_long_input_is_rejected():
    with pytest.raises(ValueError, match="max_seq_len"):
        tiny()(torch.zeros(1, 17, dtype=torch.long))


@pytest.mark.parametrize(
    "name,L,H,A,params",
    [("bert-base", 12, 768, 12, 110e6), ("bert-large", 24, 1024, 16, 340e6)],
)
def test_presets_follow_section_3(name: str, L: int, H: int, A: int, params: float):
    cfg = BertConfig.from_name(name)
    assert (cfg.n_layers, cfg.d_model, cfg.n_heads, cfg.d_ff) == (L, H, A, 4 * H)
    assert (cfg.vocab_size, cfg.max_seq_len, cfg.n_segments) == (30522, 512, 2)
    with torch.device("meta"):
        built = sum(p.numel() for p in Bert(cfg).parameters())
    assert built == pytest.approx(params, rel=0.02)


def test_unknown_preset():
    with pytest.raises(ValueError, match="unknown BERT preset"):
        BertConfig.from_name("bert-huge")
    assert set(PRESETS) == {"bert-base", "bert-large"}


# --- BERT written out in fp64, independent of repro.nn ---------------------------------------

F64 = torch.float64
EPS = 1e-12  # google-research/bert's LayerNorm epsilon


def _randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """O(1) activations, LayerNorm gains ≠ 1 and biases ≠ 0, so every term shows; fp64."""
    g = torch.Generator().manual_seed(seed)
    model.double()
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=g, dtype=F64)
            if "norm" in name:
                p.copy_((1 if name.endswith("weight") else 0) + 0.3 * noise)
            elif "embeddings" in name:
                p.copy_(noise)
            elif p.dim() == 1:
                p.copy_(0.1 * noise)
            else:
                p.copy_(noise / math.sqrt(p.shape[-1]))
    return model


def _layer_norm(x, g, b):
    mu = x.mean(-1, keepdim=True)
    return (x - mu) / torch.sqrt(((x - mu) ** 2).mean(-1, keepdim=True) + EPS) * g + b


def _gelu(x):
    """Exact GELU x·Φ(x) (BERT App. A.2 follows GPT in using GELU)."""
    return 0.5 * x * (1 + torch.erf(x / math.sqrt(2)))


def _bert_ref(model: Bert, ids, seg, real):
    """Fig. 2 embeddings, post-LN layers LN(x + sublayer(x)), pooler tanh(W·h_CLS + b), MLM
    head (dense, GELU, LN, tied decoder + bias), NSP head. `real` (B, T) True = a real token."""
    cfg, sd = model.cfg, model.state_dict()
    H, D = cfg.n_heads, cfg.head_dim
    B, T = ids.shape

    def lin(z, name):
        return z @ sd[f"{name}.weight"].T + sd[f"{name}.bias"]

    e = "embeddings."
    x = sd[e + "word_embeddings.weight"][ids] + sd[e + "position_embeddings.weight"][:T]
    x = _layer_norm(x + sd[e + "token_type_embeddings.weight"][seg], *_norm(sd, e + "norm"))
    for i in range(cfg.n_layers):
        n = f"layers.{i}."
        q, k, v = (
            lin(x, n + f"attention.{w}").view(B, T, H, D).transpose(1, 2)
            for w in ("wq", "wk", "wv")
        )
        scores = q @ k.transpose(-1, -2) / math.sqrt(D)  # (B, H, T, T)
        w = scores.masked_fill(~real[:, None, None, :], -math.inf).exp()
        a = ((w / w.sum(-1, keepdim=True)) @ v).transpose(1, 2).reshape(B, T, H * D)
        x = _layer_norm(x + lin(a, n + "attention.wo"), *_norm(sd, n + "attention_norm"))
        f = lin(_gelu(lin(x, n + "ffn.w1")), n + "ffn.w2")
        x = _layer_norm(x + f, *_norm(sd, n + "ffn_norm"))
    pooled = torch.tanh(lin(x[:, 0], "pooler"))
    h = _layer_norm(_gelu(lin(x, "mlm_transform")), *_norm(sd, "mlm_norm"))
    mlm = h @ sd[e + "word_embeddings.weight"].T + sd["mlm_bias"]
    return x, pooled, mlm, lin(pooled, "nsp")


def _norm(sd, name):
    return sd[f"{name}.weight"], sd[f"{name}.bias"]


def test_forward_matches_the_papers_equations_in_fp64():
    model = _randomise(tiny()).eval()
    g = torch.Generator().manual_seed(1)
    ids, seg = torch.randint(0, V, (3, 9), generator=g), torch.randint(0, 2, (3, 9), generator=g)
    real = torch.ones(3, 9, dtype=torch.bool)
    real[1, 6:] = False  # padded keys
    hidden, pooled, mlm, nsp = _bert_ref(model, ids, seg, real)
    got_hidden, got_pooled = model.encode(ids, seg, real)
    got_mlm, got_nsp = model(ids, seg, real)
    for got, want in ((got_hidden, hidden), (got_pooled, pooled), (got_mlm, mlm), (got_nsp, nsp)):
        torch.testing.assert_close(got, want, atol=1e-12, rtol=1e-12)


def test_every_parameter_gets_a_nonzero_gradient():
    model = tiny().train()
    ids, seg = torch.randint(0, V, (4, 9)), torch.randint(0, 2, (4, 9))
    mlm, nsp = model(ids, seg)
    loss = F.cross_entropy(mlm.flatten(0, 1), ids.flatten()) + F.cross_entropy(
        nsp, torch.tensor([0, 1, 0, 1])
    )
    loss.backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name


def test_initialisation_is_bert_truncated_normal():
    """google-research/bert: truncated_normal(stddev=0.02) (cut at ±2σ, so the sample std is
    0.02·0.8796), zero biases, LayerNorm gains 1."""
    torch.manual_seed(0)
    model = Bert(BertConfig(n_layers=2, d_model=128, n_heads=4, vocab_size=2000))
    trunc_std = 0.02 * math.sqrt(
        1 - 2 * 2 * math.exp(-2) / math.sqrt(2 * math.pi) / math.erf(2 / math.sqrt(2))
    )
    for name, p in model.named_parameters():
        if "norm" in name:
            want = torch.ones_like(p) if name.endswith("weight") else torch.zeros_like(p)
            assert torch.equal(p, want), name
        elif p.dim() == 1:
            assert torch.count_nonzero(p) == 0, name
        else:
            assert p.abs().max() <= 0.04, name
            assert abs(p.std().item() / trunc_std - 1) < 0.05, (name, p.std().item())


def test_bert_constants():
    for name in PRESETS:
        cfg = BertConfig.from_name(name)
        assert cfg.vocab_size == 30522  # §3: WordPiece, 30,000 tokens (30,522 as released)
        assert cfg.max_seq_len == 512  # App. A.2: sequences of up to 512 tokens
        assert cfg.layer_norm_eps == 1e-12  # google-research/bert modeling.py
        assert cfg.d_ff == 4 * cfg.d_model  # §3: feed-forward size 4H
    layer = tiny().layers[0]
    z = torch.linspace(-4, 4, 9)
    torch.testing.assert_close(layer.ffn.act(z), _gelu(z))  # App. A.2: GELU, not ReLU
