"""paperlab's Mamba beside Hugging Face's, weights copied: same logits, forward time over L.

Gu & Dao, "Mamba", https://arxiv.org/abs/2312.00752. `transformers`' `MambaForCausalLM` runs,
on a CPU without the CUDA kernels, a pure-PyTorch path: Ā and B̄x for the whole sequence, then a
loop over time (`mamba_selective_scan`). It names its modules as the released `mamba_ssm` does,
and so does `repro.models.mamba`, so the weights copy name for name under `backbone.`.

Needs the [conformance] extra (transformers); nothing is downloaded: the HF model is built from a
config mirroring ours.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from repro.bench.scan import cpu_seconds
from repro.lab.threads import torch_threads
from repro.models.mamba import MambaConfig, MambaLM

SCANS = ("loop", "chunked")  # the Hillis–Steele scan is 2–5× slower than HF: see `bench scan`


def hf_config(cfg: MambaConfig):
    """The `transformers.MambaConfig` of the same architecture."""
    import transformers

    return transformers.MambaConfig(
        vocab_size=cfg.padded_vocab_size,
        hidden_size=cfg.d_model,
        state_size=cfg.d_state,
        num_hidden_layers=cfg.n_layers,
        layer_norm_epsilon=cfg.norm_eps,
        expand=cfg.expand,
        conv_kernel=cfg.d_conv,
        use_bias=cfg.bias,
        use_conv_bias=cfg.conv_bias,
        time_step_rank=cfg.dt_rank,
        residual_in_fp32=False,  # paperlab keeps the residual in the model's dtype
        use_mambapy=False,  # the sequential pure-PyTorch scan
        tie_word_embeddings=cfg.tie_embeddings,
        pad_token_id=None,
        bos_token_id=None,
        eos_token_id=None,
    )


def to_hf(model: MambaLM):
    """A `MambaForCausalLM` holding `model`'s weights (copied), in eval mode."""
    import transformers

    hf = transformers.MambaForCausalLM(hf_config(model.cfg)).to(next(model.parameters()).dtype)
    ours = model.state_dict()
    renamed = {"backbone.embeddings.weight": ours["embedding.weight"]}
    renamed |= {f"backbone.{k}": v for k, v in ours.items() if k.startswith(("layers.", "norm_f"))}
    renamed["lm_head.weight"] = ours["lm_head.weight"]
    missing, unexpected = hf.load_state_dict(renamed, strict=False)
    if unexpected or set(missing) - {"lm_head.weight"}:
        raise ValueError(f"HF Mamba mapping: missing {missing}, unexpected {unexpected}")
    return hf.eval()


def bench_vs_hf(
    lengths: tuple[int, ...] = (256, 1024, 2048),
    d_model: int = 256,
    n_layers: int = 4,
    repeats: int = 3,
    threads: int | None = 1,
    progress: Callable[[int, int], None] | None = None,
) -> dict:
    """Forward CPU seconds (fp32, batch 1) of paperlab's Mamba with each scan and of HF's,
    weights copied, and the largest logit difference of each scan from HF's."""
    torch.manual_seed(0)
    cfg = MambaConfig(d_model=d_model, n_layers=n_layers, vocab_size=256)
    model = MambaLM(cfg).eval()
    hf = to_hf(model)
    rows: list[dict] = []
    done, total = 0, len(lengths) * (len(SCANS) + 1)

    def tick() -> None:
        nonlocal done
        done += 1
        if progress is not None:
            progress(done, total)

    with torch_threads(threads), torch.no_grad():
        for L in lengths:
            idx = torch.randint(
                0, cfg.vocab_size, (1, L), generator=torch.Generator().manual_seed(L)
            )
            want = hf(idx).logits
            row: dict = {"L": L, "hf_ms": 1e3 * cpu_seconds(lambda idx=idx: hf(idx), repeats)}
            tick()
            for scan in SCANS:
                model.cfg.scan = scan
                row[f"{scan}_max_abs_diff"] = (model(idx) - want).abs().max().item()
                row[f"{scan}_ms"] = 1e3 * cpu_seconds(lambda idx=idx: model(idx), repeats)
                tick()
            rows.append(row)
    model.cfg.scan = "loop"
    return {
        "d_model": d_model,
        "n_layers": n_layers,
        "D": cfg.d_inner,
        "N": cfg.d_state,
        "threads": threads,
        "rows": rows,
    }
