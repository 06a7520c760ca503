"""paperlab's Mixtral, MoE balance loss and DeepSeek-V2 (MLA + DeepSeekMoE) against Hugging
Face `transformers` models built from tiny configs (nothing is downloaded).

The weight mapping is the test's: HF stores each layer's experts as fused (E, 2F, C) gate/up and
(E, C, F) down tensors and DeepSeek's shared experts as one FFN of width S·F; it fuses W^DKV with
W^KR and W^UK with W^UV; Mixtral's port uses the rotate-half RoPE layout (undone as for LLaMA).
HF computes router probabilities (and DeepSeek's RoPE) in fp32, so outputs agree to ~1e-6 here,
not to fp64 rounding.
"""

from __future__ import annotations

import types

import pytest
import torch

transformers = pytest.importorskip(
    "transformers", reason="needs the [conformance] extra: pip install -e '.[conformance]'"
)

from repro.models.deepseek_v2 import DeepSeekV2, DeepSeekV2Config  # noqa: E402
from repro.models.mixtral import Mixtral, MixtralConfig  # noqa: E402
from repro.nn.moe import Routing, topk_aux_loss  # noqa: E402

F64 = torch.float64
TOL = dict(atol=1e-5, rtol=1e-5)
NO_SPECIAL_TOKENS = dict(bos_token_id=None, eos_token_id=None, pad_token_id=None)


def _rms_in_input_precision(self, x: torch.Tensor) -> torch.Tensor:
    return self.weight * (x * torch.rsqrt(x.pow(2).mean(-1, keepdim=True) + self.variance_epsilon))


def _patch_norms(model: torch.nn.Module) -> None:
    for m in model.modules():
        if type(m).__name__.endswith("RMSNorm"):
            m.forward = types.MethodType(_rms_in_input_precision, m)


def _meta_layout(w: torch.Tensor, n_heads: int) -> torch.Tensor:
    """HF rotate-half rows -> Meta's interleaved pairs, per head."""
    out_features, C = w.shape
    D = out_features // n_heads
    return w.view(n_heads, 2, D // 2, C).transpose(1, 2).reshape(out_features, C)


def _experts(sd: dict, prefix: str, ours: str, F: int) -> dict:
    """Fused HF experts (E, 2F, C) / (E, C, F) -> our per-expert w1, w3, w2."""
    gate_up, down = sd[prefix + "gate_up_proj"], sd[prefix + "down_proj"]
    out = {}
    for e in range(gate_up.shape[0]):
        out[f"{ours}.{e}.w1.weight"] = gate_up[e, :F]
        out[f"{ours}.{e}.w3.weight"] = gate_up[e, F:]
        out[f"{ours}.{e}.w2.weight"] = down[e]
    return out


def test_mixtral_for_causal_lm(randomise):
    C, L, H, Hkv, V, T, F, N = 32, 2, 4, 2, 50, 11, 24, 6
    D = C // H
    hf_cfg = transformers.MixtralConfig(
        vocab_size=V, hidden_size=C, intermediate_size=F, num_hidden_layers=L,
        num_attention_heads=H, num_key_value_heads=Hkv, max_position_embeddings=16,
        num_local_experts=N, num_experts_per_tok=2, rms_norm_eps=1e-5, tie_word_embeddings=False,
        experts_implementation="eager",
        **NO_SPECIAL_TOKENS,
    )  # fmt: skip
    hf = randomise(transformers.MixtralForCausalLM(hf_cfg))
    _patch_norms(hf)
    ours = Mixtral(
        MixtralConfig(n_layers=L, d_model=C, n_heads=H, n_kv_heads=Hkv, d_ff=F, n_experts=N,
                      top_k=2, vocab_size=V, max_seq_len=16, backend="ref")
    ).double().eval()  # fmt: skip
    sd = {k.removeprefix("model."): v for k, v in hf.state_dict().items()}
    mapped = {
        "tok_embeddings.weight": sd["embed_tokens.weight"],
        "norm.weight": sd["norm.weight"],
        "output.weight": sd["lm_head.weight"],
    }
    for i in range(L):
        h = f"layers.{i}."
        mapped[h + "attention.wq.weight"] = _meta_layout(sd[h + "self_attn.q_proj.weight"], H)
        mapped[h + "attention.wk.weight"] = _meta_layout(sd[h + "self_attn.k_proj.weight"], Hkv)
        mapped[h + "attention.wv.weight"] = sd[h + "self_attn.v_proj.weight"]
        mapped[h + "attention.wo.weight"] = sd[h + "self_attn.o_proj.weight"]
        mapped[h + "attention_norm.weight"] = sd[h + "input_layernorm.weight"]
        mapped[h + "ffn_norm.weight"] = sd[h + "post_attention_layernorm.weight"]
        mapped[h + "moe.router.gate.weight"] = sd[h + "mlp.gate.weight"]
        mapped.update(_experts(sd, h + "mlp.experts.", h + "moe.experts", F))
    ours.load_state_dict(mapped, strict=True)
    positions = torch.arange(16)[None]
    cos, sin = hf.model.rotary_emb(torch.zeros(1, 16, D, dtype=F64), positions)
    # HF's Mixtral default rope_theta is 1e6, as in the released config: our table must agree
    # before HF's fp32 one replaces it (so that only the layouts are compared below)
    torch.testing.assert_close(cos[0, :, : D // 2], ours.rope.cos, atol=1e-6, rtol=0)
    ours.rope.cos.copy_(cos[0, :, : D // 2])
    ours.rope.sin.copy_(sin[0, :, : D // 2])
    idx = torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        got, want = ours(idx), hf(idx).logits
        torch.testing.assert_close(got, want, **TOL)
        # control: a permuted router (experts swapped) no longer matches
        w = ours.layers[0].moe.router.gate.weight
        w.copy_(w.roll(1, dims=0))
        assert (ours(idx) - want).abs().max() > 1e-3


def test_topk_aux_loss_equals_hf_load_balancing_loss():
    from transformers.models.mixtral.modeling_mixtral import load_balancing_loss_func

    torch.manual_seed(0)
    N, K = 6, 2
    logits = torch.randn(40, N) * torch.arange(1, N + 1)  # lopsided
    probs = logits.softmax(-1)
    experts = probs.topk(K, -1).indices
    ours = topk_aux_loss(Routing(logits, probs, experts, probs.gather(-1, experts)))
    hf = load_balancing_loss_func((logits,), N, K)
    torch.testing.assert_close(ours, hf, atol=1e-6, rtol=1e-6)


def test_deepseek_v2_for_causal_lm(randomise):
    C, L, H, D, Dr, Lc, Lq, V, T = 32, 3, 4, 8, 4, 12, 20, 50, 11
    Fd, Fe, Ns, Nr, K = 40, 12, 2, 6, 3
    hf_cfg = transformers.DeepseekV2Config(
        vocab_size=V, hidden_size=C, intermediate_size=Fd, num_hidden_layers=L,
        num_attention_heads=H, num_key_value_heads=H, kv_lora_rank=Lc, q_lora_rank=Lq,
        qk_nope_head_dim=D, qk_rope_head_dim=Dr, v_head_dim=D, head_dim=Dr,
        n_routed_experts=Nr, n_shared_experts=Ns, num_experts_per_tok=K,
        moe_intermediate_size=Fe, first_k_dense_replace=1, norm_topk_prob=False,
        routed_scaling_factor=1.0, topk_method="greedy", max_position_embeddings=16,
        rms_norm_eps=1e-6, tie_word_embeddings=False, experts_implementation="eager",
        **NO_SPECIAL_TOKENS,
    )  # fmt: skip
    hf = randomise(transformers.DeepseekV2ForCausalLM(hf_cfg))
    _patch_norms(hf)
    cfg = DeepSeekV2Config(
        n_layers=L, d_model=C, n_heads=H, head_dim=D, rope_dim=Dr, kv_rank=Lc, q_rank=Lq,
        d_ff=Fd, n_dense_layers=1, d_expert=Fe, n_shared=Ns, n_routed=Nr, top_k=K,
        vocab_size=V, max_seq_len=16,
    )  # fmt: skip
    ours = DeepSeekV2(cfg).double().eval()
    sd = {k.removeprefix("model."): v for k, v in hf.state_dict().items()}
    mapped = {
        "tok_embeddings.weight": sd["embed_tokens.weight"],
        "norm.weight": sd["norm.weight"],
        "output.weight": sd["lm_head.weight"],
    }
    for i in range(L):
        h, a = f"layers.{i}.", f"layers.{i}.attention."
        mapped[h + "attention_norm.weight"] = sd[h + "input_layernorm.weight"]
        mapped[h + "ffn_norm.weight"] = sd[h + "post_attention_layernorm.weight"]
        mapped[a + "wdq.weight"] = sd[h + "self_attn.q_a_proj.weight"]
        mapped[a + "q_norm.weight"] = sd[h + "self_attn.q_a_layernorm.weight"]
        qb = sd[h + "self_attn.q_b_proj.weight"].view(H, D + Dr, Lq)
        mapped[a + "wuq.weight"] = qb[:, :D].reshape(H * D, Lq)
        mapped[a + "wqr.weight"] = qb[:, D:].reshape(H * Dr, Lq)
        kva = sd[h + "self_attn.kv_a_proj_with_mqa.weight"]
        mapped[a + "wdkv.weight"], mapped[a + "wkr.weight"] = kva[:Lc], kva[Lc:]
        mapped[a + "kv_norm.weight"] = sd[h + "self_attn.kv_a_layernorm.weight"]
        kvb = sd[h + "self_attn.kv_b_proj.weight"].view(H, 2 * D, Lc)
        mapped[a + "wuk.weight"] = kvb[:, :D].reshape(H * D, Lc)
        mapped[a + "wuv.weight"] = kvb[:, D:].reshape(H * D, Lc)
        mapped[a + "wo.weight"] = sd[h + "self_attn.o_proj.weight"]
        if i == 0:
            for ours_name, hf_name in (("w1", "gate_proj"), ("w3", "up_proj"), ("w2", "down_proj")):
                mapped[h + f"ffn.{ours_name}.weight"] = sd[h + f"mlp.{hf_name}.weight"]
            continue
        mapped[h + "ffn.router.gate.weight"] = sd[h + "mlp.gate.weight"]
        mapped.update(_experts(sd, h + "mlp.experts.", h + "ffn.experts", Fe))
        for s in range(Ns):  # HF's one shared FFN of width Ns·Fe = our Ns experts side by side
            rows = slice(s * Fe, (s + 1) * Fe)
            mapped[h + f"ffn.shared.{s}.w1.weight"] = sd[h + "mlp.shared_experts.gate_proj.weight"][
                rows
            ]
            mapped[h + f"ffn.shared.{s}.w3.weight"] = sd[h + "mlp.shared_experts.up_proj.weight"][
                rows
            ]
            mapped[h + f"ffn.shared.{s}.w2.weight"] = sd[h + "mlp.shared_experts.down_proj.weight"][
                :, rows
            ]
    ours.load_state_dict(mapped, strict=False)
    missing = set(ours.state_dict()) - set(mapped)
    assert all(".rope" in k for k in missing), sorted(missing)  # only RoPE tables are buffers
    idx = torch.randint(0, V, (3, T), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = hf(idx).logits
        torch.testing.assert_close(ours(idx), want, **TOL)
        absorbed = [layer.attention.forward_absorbed for layer in ours.layers]
        for layer, fn in zip(ours.layers, absorbed, strict=True):
            layer.attention.forward = fn  # the absorbed path in the whole model
        torch.testing.assert_close(ours(idx), want, **TOL)
        # control: Mixtral-style renormalised gates no longer match
        for layer in ours.layers[1:]:
            layer.ffn.router.normalize = True
        assert (ours(idx) - want).abs().max() > 1e-3
