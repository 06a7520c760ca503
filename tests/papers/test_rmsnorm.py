"""Pieces of papers/rmsnorm/repro.py beyond its claims: Table 1 decisions and the norm swap."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from repro.lab.library import Library
from repro.nn.norm import RMSNorm

RMSNORM = Library().get("rmsnorm").module()


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("norm", ["RMSNorm", "LayerNorm"])
def test_every_table1_cell_is_decided(norm: str, seed: int) -> None:
    row, changes = RMSNORM.invariance_row(norm, seed)
    assert "unclear" not in row, changes
    assert len(row.split(",")) == len(RMSNORM.TRANSFORMS)


def test_swap_keeps_every_other_weight() -> None:
    cfg = RMSNORM.PRESETS["quick"]
    rms = RMSNORM.tiny_lm(cfg, "RMSNorm", seed=3, device="cpu")
    ln = RMSNORM.tiny_lm(cfg, "LayerNorm", seed=3, device="cpu")
    assert not any(isinstance(m, RMSNorm) for m in ln.modules())
    n_norms = sum(isinstance(m, RMSNorm) for m in rms.modules())
    assert sum(isinstance(m, nn.LayerNorm) for m in ln.modules()) == n_norms == 2 * cfg.n_layers + 1
    rms_weights = {k: v for k, v in rms.state_dict().items() if "norm" not in k}
    ln_weights = {k: v for k, v in ln.state_dict().items() if "norm" not in k}
    assert rms_weights.keys() == ln_weights.keys()
    for k, v in rms_weights.items():
        assert torch.equal(v, ln_weights[k]), k
