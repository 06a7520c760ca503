"""`--device` reaches every paper's experiment, or the paper says in its settings why not.

No GPU needed: a context whose `device` cannot be read shows that an experiment (or a timing
check) asks for the device before it does any work; a CPU-only paper must not read it at all.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.lab.claims import Context
from repro.lab.library import Library
from repro.lab.settings import device_limit

REPO = Path(__file__).resolve().parents[2]
LIBRARY = Library(REPO / "papers")
PAPERS = LIBRARY.slugs()

# What the runner does with `--device cuda`, by declaration (see repro.lab.settings).
CPU_ONLY = {
    "deepseek-v2", "dpo", "gqa", "grpo", "instructgpt", "lima", "lora", "mamba",
    "pagedattention", "speculative-decoding",
}  # fmt: skip
CPU_EXPERIMENT = {"efficient-inference", "flashattention"}


class DeviceRead(Exception):
    """Raised where code reads `ctx.device`."""


class DeviceProbe(Context):
    """A context whose device cannot be read: the first read stops the experiment."""

    @property
    def device(self) -> str:
        raise DeviceRead

    @device.setter
    def device(self, value: str) -> None:
        pass


def test_the_declared_papers_exist() -> None:
    assert set(PAPERS) >= CPU_ONLY | CPU_EXPERIMENT


@pytest.mark.parametrize("slug", PAPERS)
def test_every_paper_uses_the_device_or_says_why_not(slug: str) -> None:
    paper = LIBRARY.get(slug)
    module = paper.module()
    quick = module.PRESETS["quick"]
    limit = device_limit(quick)
    expected = (
        "CPU_ONLY" if slug in CPU_ONLY else "CPU_EXPERIMENT" if slug in CPU_EXPERIMENT else None
    )
    assert (limit[0] if limit else None) == expected
    assert not all(hasattr(module.Config, name) for name in ("CPU_ONLY", "CPU_EXPERIMENT"))
    probe = DeviceProbe(config=quick, seed=0, quick=True)
    if limit is None:  # the experiment asks for the device before any work
        with pytest.raises(DeviceRead):
            module.experiment(quick, probe)
    elif limit[0] == "CPU_EXPERIMENT":  # its timing checks do
        timing = [fn for spec, fn in paper.checks().values() if spec.benchmark]
        assert timing
        for fn in timing:
            with pytest.raises(DeviceRead):
                fn(probe)
    else:  # a CPU-only paper never looks at the device it would not use
        assert "ctx.device" not in paper.repro_path.read_text(encoding="utf-8")
        assert len(limit[1]) > 20  # the reason, as `paperlab settings` shows it


# The sweeps hand the device to their worker processes (repro.scaling), tested there.
ON_META = sorted(set(PAPERS) - CPU_ONLY - CPU_EXPERIMENT - {"chinchilla", "scaling-laws"})


@pytest.mark.parametrize("slug", ON_META)
def test_the_model_and_its_data_go_to_the_device_together(slug: str) -> None:
    """On the meta device a tensor has a shape and no data: an experiment that moves its model
    and its batches there fails at the first value it reads (`.item()`, a data-dependent op),
    never with a mix of devices (`Expected all tensors to be on the same device`)."""
    module = LIBRARY.get(slug).module()
    quick = module.PRESETS["quick"]
    with pytest.raises((RuntimeError, NotImplementedError), match="meta") as info:
        module.experiment(quick, Context(config=quick, device="meta", seed=0, quick=True))
    assert "same device" not in str(info.value)
