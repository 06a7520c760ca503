"""`paperlab bench speculative`: the library function and the command."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner

from paperlab import cli
from repro.bench.decode import tiny_gpt_config
from repro.bench.speculative import bench_speculative, truncated_draft
from repro.models.gpt import GPT


def test_truncated_draft_is_the_target_cut_after_its_first_blocks() -> None:
    torch.manual_seed(0)
    target = GPT(tiny_gpt_config(32)).eval()
    draft = truncated_draft(target, 1)
    assert draft.cfg.n_layers == 1 and len(draft.blocks) == 1 and target.cfg.n_layers == 4
    assert torch.equal(draft.blocks[0].attn.wq.weight, target.blocks[0].attn.wq.weight)
    x = torch.randint(0, 256, (1, 5))
    with torch.no_grad():
        h = target.wte(x) + target.wpe(torch.arange(5))
        want = target.lm_head(target.ln_f(target.blocks[0](h)))
        assert torch.allclose(draft(x), want, atol=1e-6)
    with pytest.raises(ValueError):
        truncated_draft(target, 5)


def test_bench_rows_count_fewer_target_calls_than_tokens() -> None:
    out = bench_speculative(new_tokens=24, gammas=(2, 4), prompt_len=4)
    plain, *spec = out["rows"]
    assert plain["target_calls_per_token"] == 1.0
    for row in spec:
        assert row["target_calls_per_token"] < 1.0
        assert row["target_calls_per_token"] >= 1 / (row["gamma"] + 1)
        assert 0.0 < row["alpha"] <= 1.0
    with pytest.raises(ValueError):
        bench_speculative(new_tokens=24, gammas=(0,))


def test_bench_speculative_command_json() -> None:
    result = CliRunner().invoke(
        cli, ["bench", "speculative", "--new-tokens", "12", "--gamma", "2", "--json"]
    )
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert [r["gamma"] for r in out["rows"]] == [0, 2]
    bad = CliRunner().invoke(cli, ["bench", "speculative", "--gamma", "0,x"])
    assert bad.exit_code == 2
