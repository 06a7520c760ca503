"""LoRA paper extras: the task shift really has the configured rank, and LoRA on a GPT model
(W_q, W_v) follows §5.1's parameter count, starts at the base model and merges exactly."""

from __future__ import annotations

import torch
from torch import nn

from repro.lab.library import Library
from repro.models.gpt import GPT, GPTConfig
from repro.nn.lora import apply_lora, lora_parameters, merge_lora, unmerge_lora

LORA = Library().get("lora").module()


def test_task_b_differs_from_task_a_by_the_configured_rank():
    cfg = LORA.Config()
    g = torch.Generator().manual_seed(0)
    teacher_a = LORA.make_teacher(cfg, g)
    for rank in (1, cfg.shift_rank, 5):
        teacher_b = LORA.shifted(teacher_a, rank, cfg, g)
        assert torch.linalg.matrix_rank(teacher_b.W1 - teacher_a.W1).item() == rank
        assert torch.equal(teacher_b.W2, teacher_a.W2)


def test_gpt_lora_count_follows_section_5_1():
    cfg = GPTConfig(n_layers=3, d_model=48, n_heads=4, vocab_size=50, max_seq_len=16)
    with torch.device("meta"):
        model = apply_lora(GPT(cfg), {"wq", "wv"}, r=2)
    n_lora = sum(p.numel() for p in lora_parameters(model))
    assert n_lora == 2 * (2 * cfg.n_layers) * cfg.d_model * 2  # |Θ| = 2 · L̂ · d_model · r
    assert n_lora == sum(p.numel() for p in model.parameters() if p.requires_grad)


def test_gpt_with_lora_starts_at_base_model_and_merges():
    torch.manual_seed(0)
    cfg = GPTConfig(n_layers=2, d_model=32, n_heads=4, vocab_size=40, max_seq_len=16)
    model = GPT(cfg).eval()
    idx = torch.randint(0, cfg.vocab_size, (2, 9))
    with torch.no_grad():
        base_logits = model(idx)
        apply_lora(model, {"wq", "wv"}, r=4, alpha=8)
        assert torch.equal(model(idx), base_logits)  # B = 0
        for p in lora_parameters(model):  # stand-in for trained factors
            nn.init.normal_(p, std=0.2)
        unmerged = model(idx)
        assert (unmerged - base_logits).abs().max() > 1e-3  # the adapter changes the model
        torch.testing.assert_close(merge_lora(model)(idx), unmerged, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(unmerge_lora(model)(idx), unmerged, atol=1e-5, rtol=1e-5)
