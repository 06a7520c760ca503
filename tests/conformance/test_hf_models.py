"""paperlab's GPT, BERT and LLaMA against Hugging Face `transformers`, the code people use.

Tiny models are built from configs (nothing is downloaded), given random O(1) weights, mapped
into paperlab's modules here, and both run in fp64: outputs must agree to 1e-12. The mapping is
the test's: GPT-2's Conv1D stores (in, out), so its weights are transposed and c_attn split into
q, k, v; HF's LLaMA port permutes W_q and W_k for its rotate-half RoPE, which is undone here
because paperlab follows Meta's interleaved layout (see repro.nn.positional).
"""

from __future__ import annotations

import types

import pytest
import torch

transformers = pytest.importorskip(
    "transformers",
    reason="needs the [conformance] extra: pip install -e '.[conformance]'",
)

from repro.models.bert import Bert, BertConfig  # noqa: E402
from repro.models.gpt import GPT, GPTConfig  # noqa: E402
from repro.models.llama import Llama, LlamaConfig  # noqa: E402

F64 = torch.float64
TOL = dict(atol=1e-12, rtol=1e-12)
NO_SPECIAL_TOKENS = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)


def test_gpt2_lm_head_model(randomise):
    C, L, H, V, T = 32, 2, 4, 50, 11
    hf_cfg = transformers.GPT2Config(
        n_layer=L, n_embd=C, n_head=H, vocab_size=V, n_positions=16, activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, layer_norm_epsilon=1e-5,
        **NO_SPECIAL_TOKENS,
    )  # fmt: skip
    hf = randomise(transformers.GPT2LMHeadModel(hf_cfg))
    ours = GPT(GPTConfig(n_layers=L, d_model=C, n_heads=H, vocab_size=V, max_seq_len=16)).double()
    sd = {k.removeprefix("transformer."): v for k, v in hf.state_dict().items()}
    mapped = {"wte.weight": sd["wte.weight"], "wpe.weight": sd["wpe.weight"]}
    for i in range(L):
        h, b = f"h.{i}.", f"blocks.{i}."
        for ln in ("ln_1", "ln_2"):
            mapped[b + ln + ".weight"], mapped[b + ln + ".bias"] = (
                sd[h + ln + ".weight"],
                sd[h + ln + ".bias"],
            )
        w, bias = sd[h + "attn.c_attn.weight"], sd[h + "attn.c_attn.bias"]  # Conv1D: (C, 3C)
        for j, name in enumerate(("wq", "wk", "wv")):
            mapped[b + f"attn.{name}.weight"] = w[:, j * C : (j + 1) * C].T
            mapped[b + f"attn.{name}.bias"] = bias[j * C : (j + 1) * C]
        for hf_name, name in (
            ("attn.c_proj", "attn.wo"),
            ("mlp.c_fc", "mlp.w1"),
            ("mlp.c_proj", "mlp.w2"),
        ):
            mapped[b + name + ".weight"] = sd[h + hf_name + ".weight"].T
            mapped[b + name + ".bias"] = sd[h + hf_name + ".bias"]
    mapped["ln_f.weight"], mapped["ln_f.bias"] = sd["ln_f.weight"], sd["ln_f.bias"]
    mapped["lm_head.weight"] = sd["wte.weight"]  # tied in both
    ours.load_state_dict(mapped, strict=True)
    idx = torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(idx), hf(idx).logits, **TOL)


def test_bert_model_hidden_states_and_pooler(randomise):
    C, L, H, V, T = 32, 2, 4, 50, 10
    hf_cfg = transformers.BertConfig(
        vocab_size=V, hidden_size=C, num_hidden_layers=L, num_attention_heads=H,
        intermediate_size=4 * C, max_position_embeddings=16, type_vocab_size=2, hidden_act="gelu",
        layer_norm_eps=1e-12, hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
        **NO_SPECIAL_TOKENS,
    )  # fmt: skip
    hf = randomise(transformers.BertModel(hf_cfg, add_pooling_layer=True))
    ours = Bert(
        BertConfig(n_layers=L, d_model=C, n_heads=H, vocab_size=V, max_seq_len=16, dropout=0.0)
    )
    ours = ours.double().eval()
    sd = hf.state_dict()
    mapped = dict(ours.state_dict())  # the MLM / NSP heads have no counterpart in BertModel
    e = "embeddings."
    for name in ("word_embeddings", "position_embeddings", "token_type_embeddings"):
        mapped[e + name + ".weight"] = sd[e + name + ".weight"]
    mapped[e + "norm.weight"], mapped[e + "norm.bias"] = (
        sd[e + "LayerNorm.weight"],
        sd[e + "LayerNorm.bias"],
    )
    for i in range(L):
        h, b = f"encoder.layer.{i}.", f"layers.{i}."
        pairs = {
            "attention.self.query": "attention.wq", "attention.self.key": "attention.wk",
            "attention.self.value": "attention.wv", "attention.output.dense": "attention.wo",
            "attention.output.LayerNorm": "attention_norm", "intermediate.dense": "ffn.w1",
            "output.dense": "ffn.w2", "output.LayerNorm": "ffn_norm",
        }  # fmt: skip
        for hf_name, name in pairs.items():
            for t in ("weight", "bias"):
                mapped[f"{b}{name}.{t}"] = sd[f"{h}{hf_name}.{t}"]
    mapped["pooler.weight"], mapped["pooler.bias"] = (
        sd["pooler.dense.weight"],
        sd["pooler.dense.bias"],
    )
    ours.load_state_dict(mapped, strict=True)
    g = torch.Generator().manual_seed(1)
    ids, seg = torch.randint(0, V, (3, T), generator=g), torch.randint(0, 2, (3, T), generator=g)
    real = torch.ones(3, T, dtype=torch.bool)
    real[1, 7:] = False
    with torch.no_grad():
        want = hf(input_ids=ids, token_type_ids=seg, attention_mask=real.long())
        hidden, pooled = ours.encode(ids, seg, real)
    torch.testing.assert_close(hidden, want.last_hidden_state, **TOL)
    torch.testing.assert_close(pooled, want.pooler_output, **TOL)


def _meta_layout(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Undo HF's convert_llama_weights_to_hf permutation: per head, HF stores the D/2 'first
    halves' then the D/2 'second halves'; Meta interleaves them as pairs (2i, 2i+1)."""
    out_features, C = w.shape
    D = out_features // n_heads
    return w.view(n_heads, 2, D // 2, C).transpose(1, 2).reshape(out_features, C)


def _rms_norm_in_input_precision(self, x: torch.Tensor) -> torch.Tensor:
    """HF's LlamaRMSNorm.forward without its cast to fp32 (which would cap fp64 at ~1e-7)."""
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


@pytest.mark.parametrize("n_kv_heads", [4, 2, 1])
def test_llama_for_causal_lm(n_kv_heads: int, randomise):
    C, L, H, V, T, F = 32, 2, 4, 50, 11, 64
    D = C // H
    hf_cfg = transformers.LlamaConfig(
        vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
        num_attention_heads=H, num_key_value_heads=n_kv_heads, max_position_embeddings=16,
        rms_norm_eps=1e-6, attention_bias=False, mlp_bias=False, tie_word_embeddings=False,
        **NO_SPECIAL_TOKENS,
    )  # fmt: skip
    hf = randomise(transformers.LlamaForCausalLM(hf_cfg))
    for m in hf.modules():
        if type(m).__name__ == "LlamaRMSNorm":
            m.forward = types.MethodType(_rms_norm_in_input_precision, m)
    ours = Llama(
        LlamaConfig(n_layers=L, d_model=C, n_heads=H, n_kv_heads=n_kv_heads, vocab_size=V, d_ff=F,
                    max_seq_len=16)
    ).double().eval()  # fmt: skip
    sd = {k.removeprefix("model."): v for k, v in hf.state_dict().items()}
    mapped = {
        "tok_embeddings.weight": sd["embed_tokens.weight"],
        "norm.weight": sd["norm.weight"],
        "output.weight": sd["lm_head.weight"],
    }
    for i in range(L):
        h, b = f"layers.{i}.", f"layers.{i}."
        mapped[b + "attention.wq.weight"] = _meta_layout(sd[h + "self_attn.q_proj.weight"], H)
        mapped[b + "attention.wk.weight"] = _meta_layout(
            sd[h + "self_attn.k_proj.weight"], n_kv_heads
        )
        mapped[b + "attention.wv.weight"] = sd[h + "self_attn.v_proj.weight"]
        mapped[b + "attention.wo.weight"] = sd[h + "self_attn.o_proj.weight"]
        mapped[b + "feed_forward.w1.weight"] = sd[h + "mlp.gate_proj.weight"]
        mapped[b + "feed_forward.w3.weight"] = sd[h + "mlp.up_proj.weight"]
        mapped[b + "feed_forward.w2.weight"] = sd[h + "mlp.down_proj.weight"]
        mapped[b + "attention_norm.weight"] = sd[h + "input_layernorm.weight"]
        mapped[b + "ffn_norm.weight"] = sd[h + "post_attention_layernorm.weight"]
    ours.load_state_dict(mapped, strict=True)
    # HF computes its angles m·θ_i in fp32; use the very same table (same θ_i order: plane i of
    # Meta's layout is HF's pair (i, i + D/2)) so that only the layouts are compared.
    positions = torch.arange(16)[None]
    cos, sin = hf.model.rotary_emb(torch.zeros(1, 16, D, dtype=F64), positions)  # (1, 16, D)
    torch.testing.assert_close(cos[0, :, : D // 2], ours.rope.cos, atol=1e-6, rtol=0)
    ours.rope.cos.copy_(cos[0, :, : D // 2])
    ours.rope.sin.copy_(sin[0, :, : D // 2])
    idx = torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        torch.testing.assert_close(ours(idx), hf(idx).logits, **TOL)


@pytest.mark.parametrize("scan", ["loop", "chunked"])
def test_mamba_for_causal_lm(scan: str, randomise) -> None:
    """Mamba against `MambaForCausalLM`'s pure-PyTorch path, weights copied by
    `repro.bench.mamba_hf.to_hf`. fp32: HF casts A and B̄ to fp32 inside its scan whatever the
    model's dtype, so fp64 would not be compared like for like."""
    from repro.bench.mamba_hf import to_hf
    from repro.models.mamba import MambaConfig, MambaLM

    cfg = MambaConfig(d_model=16, n_layers=2, vocab_size=37, pad_vocab_size_multiple=8, scan=scan)
    model = randomise(MambaLM(cfg)).float()
    hf = to_hf(model)
    idx = torch.randint(0, 37, (2, 45), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want, got = hf(idx).logits, model(idx)
    assert want.shape == got.shape == (2, 45, 40)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5 * want.abs().max().item())


def test_mamba_initialisation_matches_hugging_face() -> None:
    """A freshly built Mamba starts where `MambaForCausalLM` does: S4D-real A = −(1, …, N) for
    every channel and D = 1 (§3.6). The two state dicts share their names (see `to_hf`)."""
    from repro.bench.mamba_hf import hf_config
    from repro.models.mamba import MambaConfig, MambaLM

    cfg = MambaConfig(d_model=16, n_layers=2, d_state=6, vocab_size=37, pad_vocab_size_multiple=8)
    ours = MambaLM(cfg).state_dict()
    theirs = {
        k.removeprefix("backbone."): v
        for k, v in transformers.MambaForCausalLM(hf_config(cfg)).state_dict().items()
    }
    names = [k for k in ours if k.endswith((".A_log", ".D"))]
    assert len(names) == 2 * cfg.n_layers
    for name in names:
        torch.testing.assert_close(ours[name], theirs[name], rtol=0, atol=0)
