"""Shared fixtures: every test that touches a library works on a temporary copy of it."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
GPU_SKIP = "no CUDA device (runs on GPU machines; see scripts/gpu-check)"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Tests marked `gpu` skip without a CUDA device, saying where they do run; Triton's
    interpreter (TRITON_INTERPRET=1) runs the kernel tests on the CPU instead."""
    gpu = [item for item in items if item.get_closest_marker("gpu")]
    if not gpu or os.environ.get("TRITON_INTERPRET") == "1":
        return
    import torch

    if not torch.cuda.is_available():
        for item in gpu:
            item.add_marker(pytest.mark.skip(reason=GPU_SKIP))


@pytest.fixture
def library_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary copy of the toy library; runs are stored beside it, under tmp_path."""
    root = tmp_path / "papers"
    shutil.copytree(FIXTURES / "library", root)
    monkeypatch.setenv("PAPERLAB_PAPERS", str(root))
    monkeypatch.setenv("PAPERLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.chdir(tmp_path)
    return root


@pytest.fixture
def toy_copy(library_dir: Path):
    """`toy_copy(slug, {old: new, ...})`: the toy paper copied as `slug` into the temporary
    library, its note edited text for text. An edit whose old text is not in the note fails,
    so a fixture note that changes cannot leave a test checking nothing."""

    def copy(slug: str, edits: dict[str, str]) -> Path:
        folder = library_dir / slug
        shutil.copytree(library_dir / "toy", folder)
        note = folder / "note.yaml"
        text = note.read_text(encoding="utf-8")
        for old, new in edits.items():
            assert old in text, f"{old!r} is not in the toy note"
            text = text.replace(old, new)
        note.write_text(text, encoding="utf-8")
        return folder

    return copy


@pytest.fixture
def valid_note_text() -> str:
    return (FIXTURES / "notes" / "valid.yaml").read_text(encoding="utf-8")


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """The tests use tiny tensors: one thread is faster than two and immune to a busy CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _no_terminal_size(monkeypatch: pytest.MonkeyPatch) -> None:
    """CLI output is tested as piped output: a COLUMNS inherited from the shell or set by a test
    runner's worker would make rich fold the tables differently."""
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("LINES", raising=False)
