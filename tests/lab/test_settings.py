from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import pytest

from repro.lab.settings import (
    config_problems,
    describe_settings,
    setting,
    setting_bounds,
    setting_help,
)


@dataclass(frozen=True)
class Cfg:
    width: int = setting(8, "hidden width", min=1)
    p: float = setting(0.5, "a probability", min=0, max=1)
    lr: float = setting(1e-3, "learning rate", min=0, min_exclusive=True)
    ranks: tuple[int, ...] = setting((1, 2), "ranks", min=1)
    mode: str = setting("a", "mode", choices=("a", "b"))
    free: int = 3


def test_defaults_are_valid() -> None:
    assert config_problems(Cfg()) == []


def test_each_bound_is_enforced() -> None:
    bad = Cfg(width=0, p=1.5, lr=0.0, ranks=(), mode="c")
    names = [p.split(":")[0] for p in config_problems(bad)]
    assert names == ["width", "p", "lr", "ranks", "mode"]
    assert config_problems(Cfg(ranks=(1, 0))) == ["ranks: 0 is out of range (expected ≥ 1)"]
    assert config_problems(Cfg(p=float("nan")))


def test_help_and_bounds_text() -> None:
    fields = {f.name: f for f in dataclasses.fields(Cfg)}
    assert setting_help(fields["width"]) == "hidden width"
    assert setting_bounds(fields["p"]) == "[0, 1]"
    assert setting_bounds(fields["lr"]) == "> 0"
    assert setting_bounds(fields["mode"]) == "one of a, b"
    assert setting_bounds(fields["free"]) == ""


def _papers():
    from repro.lab.library import REPO_ROOT, Library

    library = Library(REPO_ROOT / "papers")
    return [p for p in library.papers.values() if p.repro_path.exists()]


@pytest.mark.parametrize("paper", _papers(), ids=lambda p: p.slug)
def test_every_paper_declares_the_range_of_its_settings(paper) -> None:
    presets = getattr(paper.module(), "PRESETS", None)
    if presets is None:
        pytest.skip("no experiment settings")
    for name, cfg in presets.items():
        assert config_problems(cfg) == [], name
        undeclared = [f.name for f in dataclasses.fields(cfg) if not setting_help(f)]
        assert undeclared == [], f"fields without setting(...): {undeclared}"
    rows = describe_settings(presets)
    assert all(r["help"] and r["type"] for r in rows)


def test_describe_settings_rows() -> None:
    rows = describe_settings({"quick": Cfg(width=4), "full": Cfg()})
    width = next(r for r in rows if r["name"] == "width")
    assert width == {
        "name": "width", "type": "int", "quick": 4, "full": 8, "bounds": "≥ 1",
        "help": "hidden width",
    }  # fmt: skip
    assert next(r for r in rows if r["name"] == "ranks")["type"] == "tuple[int, ...]"


def test_head_split_rules() -> None:
    import pytest

    from repro.lab.settings import check_head_split

    check_head_split(48, 4, rotary=True)  # 12 channels a head, an even number
    with pytest.raises(ValueError, match="not a multiple"):
        check_head_split(50, 4)
    with pytest.raises(ValueError, match="pairs"):
        check_head_split(36, 4, rotary=True)  # 9 channels a head
    check_head_split(36, 4)  # without RoPE an odd head width is fine
