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
