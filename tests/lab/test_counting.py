import dataclasses
import subprocess
import sys

import pytest
import torch
from torch import nn

from repro.lab.counting import (
    build_on_meta,
    build_preset,
    count_parameters,
    counted_flops,
    kaplan_attention_flops,
    kaplan_forward_flops,
    kaplan_param_count,
    kv_cache_bytes_per_token,
    param_count,
    preset_config,
    preset_names,
    ssm_state_bytes_per_layer,
    training_flops,
)
from repro.models.bert import Bert, BertConfig
from repro.models.gpt import GPT, GPTConfig
from repro.models.llama import Llama, LlamaConfig
from repro.models.transformer import Transformer, TransformerConfig
from repro.nn.kv_cache import caches_for


def test_import_does_not_load_torch():
    code = "import sys, repro.lab.counting; sys.exit('torch' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def test_every_family_has_presets():
    names = preset_names()
    for expected in ("transformer-base", "bert-large", "gpt3-175b", "llama-65b"):
        assert expected in names
    assert len(names) == len(set(names)) == 2 + 2 + 8 + 4


@pytest.mark.parametrize("name", preset_names())
def test_analytic_count_equals_built_count_on_meta(name: str):
    model = build_preset(name)
    assert next(model.parameters()).device.type == "meta"
    assert count_parameters(model) == param_count(preset_config(name))


TINY = {
    "gpt": (GPT, GPTConfig(n_layers=2, d_model=24, n_heads=4, vocab_size=37, max_seq_len=11)),
    "gpt-gqa-nobias-untied": (
        GPT,
        GPTConfig(
            n_layers=2, d_model=24, n_heads=4, n_kv_heads=2, bias=False, tie_embeddings=False
        ),
    ),
    "gpt-d_attn": (GPT, GPTConfig(n_layers=1, d_model=20, n_heads=3, head_dim=8, d_ff=50)),
    "llama": (Llama, LlamaConfig(n_layers=2, d_model=32, n_heads=4, n_kv_heads=1)),
    "transformer": (Transformer, TransformerConfig(n_layers=2, d_model=16, vocab_size=29)),
    "bert": (Bert, BertConfig(n_layers=2, d_model=16, vocab_size=29, max_seq_len=13)),
}


def _embedding_params(model: nn.Module) -> int:
    """Vocabulary/position-indexed matrices: embeddings and an untied output projection."""
    seen = {id(m.weight): m.weight.numel() for m in model.modules() if isinstance(m, nn.Embedding)}
    for head in ("lm_head", "output"):
        if hasattr(model, head):
            seen.setdefault(id(getattr(model, head).weight), getattr(model, head).weight.numel())
    return sum(seen.values())


@pytest.mark.parametrize("key", list(TINY))
def test_conventions_on_real_tiny_models(key: str):
    cls, cfg = TINY[key]
    model = cls(cfg)
    total = count_parameters(model)
    assert param_count(cfg) == total
    assert param_count(cfg, embeddings=False) == total - _embedding_params(model)


def test_bert_pooler_and_heads_flags():
    cls, cfg = TINY["bert"]
    model = cls(cfg)
    heads = [model.mlm_transform, model.mlm_norm, model.nsp]
    n_heads = sum(count_parameters(m) for m in heads) + model.mlm_bias.numel()
    n_pooler = count_parameters(model.pooler)
    total = count_parameters(model)
    assert param_count(cfg, pooler=True, heads=False) == total - n_heads
    assert param_count(cfg, pooler=False, heads=False) == total - n_heads - n_pooler


def test_gpt_count_is_kaplans_n_plus_biases_norms_and_embeddings():
    """12·L·C² (Kaplan) + 13·L·C (biases, norms) + 2C (final norm) + (V + P)·C."""
    for name in ("gpt3-small", "gpt3-175b"):
        cfg = preset_config(name)
        L, C = cfg.n_layers, cfg.d_model
        assert kaplan_param_count(L, C) == 12 * L * C * C
        expected = 12 * L * C * C + 13 * L * C + 2 * C + (cfg.vocab_size + cfg.max_seq_len) * C
        assert param_count(cfg) == expected


def test_bert_base_is_the_familiar_count():
    """BertModel: (V + P + S)·C + 2C + L·(12C² + 13C) + C² + C."""
    cfg = BertConfig.from_name("bert-base")
    V, P, S, L, C = 30522, 512, 2, 12, 768
    bert_model = (V + P + S) * C + 2 * C + L * (12 * C * C + 13 * C) + C * C + C
    assert param_count(cfg, heads=False) == bert_model


def test_transformer_base_and_big_near_table_3():
    assert param_count(TransformerConfig.from_name("transformer-base")) == pytest.approx(
        65e6, rel=0.05
    )
    assert param_count(TransformerConfig.from_name("transformer-big")) == pytest.approx(
        213e6, rel=0.02
    )


def test_llama_count_by_hand():
    cfg = LlamaConfig.from_name("llama-7b")
    C, F, L, V = 4096, 11008, 32, 32000
    assert param_count(cfg) == 2 * V * C + L * (4 * C * C + 3 * C * F + 2 * C) + C


def test_count_parameters_trainable_only_and_tied():
    model = GPT(TINY["gpt"][1])
    total = count_parameters(model)
    assert total == sum(p.numel() for p in set(model.parameters()))
    model.wte.weight.requires_grad_(False)  # also the tied head
    assert count_parameters(model, trainable_only=True) == total - 37 * 24
    assert count_parameters(model) == total  # by default frozen parameters count too


def test_build_on_meta_takes_no_memory():
    model = build_on_meta(lambda: nn.Linear(100_000, 100_000))
    assert model.weight.device.type == "meta" and count_parameters(model) == 10**10 + 10**5


def test_unknown_preset():
    with pytest.raises(ValueError, match="prefix"):
        preset_config("gpt4-1t")
    with pytest.raises(ValueError, match="unknown GPT preset"):
        build_preset("gpt3-1t")


def test_kaplan_count_takes_its_own_widths():
    """N = 2·d_model·n_layer·(2·d_attn + d_ff) = 2·8·3·(2·5 + 7) with both widths given, and
    d_attn = d_model, d_ff = 4·d_model when not."""
    assert kaplan_param_count(3, 8, d_attn=5, d_ff=7) == 816
    assert kaplan_param_count(3, 8) == 2 * 8 * 3 * (2 * 8 + 32)


def test_presets_take_overrides_and_their_family_from_the_first_hyphen():
    cfg = preset_config("llama-7b", n_layers=2)
    assert cfg.n_layers == 2
    small = build_preset("llama-7b", n_layers=2)
    assert count_parameters(small) == param_count(cfg) < param_count(preset_config("llama-7b"))
    with pytest.raises(ValueError, match="unknown GPT preset"):  # family gpt3, preset unknown
        preset_config("gpt3-175b-extra")


def test_initialisers_do_nothing_while_building_on_meta():
    """Every public in-place initialiser of torch.nn.init is a no-op inside the factory (shown on
    a CPU tensor, whose values could change), and works again afterwards."""
    from torch.nn import init

    def factory():
        t = torch.ones(3, device="cpu")
        init.zeros_(t)
        init.normal_(t)
        init.kaiming_uniform_(t.view(3, 1))
        return t

    assert torch.equal(build_on_meta(factory), torch.ones(3))
    t = torch.ones(3)
    init.zeros_(t)
    assert torch.equal(t, torch.zeros(3))


def test_counted_flops_names_ops_without_their_namespace():
    """A (3×4)·(4×5) matmul is 2·3·4·5 FLOPs, filed under `mm` (not `aten.mm`)."""
    a, b = torch.randn(3, 4), torch.randn(4, 5)
    assert counted_flops(lambda: a @ b)["Global"] == {"mm": 120}


def test_ssm_state_bytes_default_to_two_bytes_per_element():
    """B·(D·N + D·(K−1)) elements: 1·(4·3 + 4·3) = 24, in fp16 by default."""
    assert ssm_state_bytes_per_layer(1, 4, 3, 4) == 48
    assert ssm_state_bytes_per_layer(2, 4, 3, 4, bytes_per_elem=4) == 192


def test_flops():
    # GPT-3 175B on 300B tokens: the paper's Table D.1 gives 3.14e23 FLOPs.
    assert training_flops(174.6e9, 300e9) == pytest.approx(3.14e23, rel=0.01)
    assert training_flops(2, 3) == 36
    assert kaplan_attention_flops(n_layers=2, n_ctx=5, d_attn=7) == 140
    assert kaplan_forward_flops(n_params=10, n_layers=2, n_ctx=5, d_attn=7) == 160


def test_kv_cache_bytes_agree_with_the_cache_module():
    cfg = LlamaConfig(n_layers=3, d_model=32, n_heads=4, n_kv_heads=2)
    B, S = 2, 10
    allocated = sum(c.nbytes for c in caches_for(cfg, B, S, dtype=torch.float32))
    per_token = kv_cache_bytes_per_token(cfg.n_layers, cfg.n_kv_heads, cfg.head_dim, 4)
    assert allocated == B * S * per_token
    # LLaMA-7B in fp16: 2 · 32 layers · 32 heads · 128 · 2 bytes = 0.5 MiB per token.
    assert kv_cache_bytes_per_token(32, 32, 128) == 2**19


@pytest.mark.parametrize("name", preset_names())
def test_preset_configs_round_trip_through_their_fields(name: str):
    cfg = preset_config(name)
    assert type(cfg)(**dataclasses.asdict(cfg)) == cfg


def test_building_on_meta_skips_and_then_restores_the_initialisers():
    from torch.nn import init

    before = init.normal_
    model = build_preset("gpt3-small")
    assert init.normal_ is before
    assert all(p.is_meta for p in model.parameters())
    with pytest.raises(RuntimeError, match="boom"):
        build_on_meta(lambda: (_ for _ in ()).throw(RuntimeError("boom")))
    assert init.normal_ is before
    # a real model built afterwards is initialised as before (not all zeros)
    assert torch.nn.Linear(4, 4).weight.abs().sum() > 0
