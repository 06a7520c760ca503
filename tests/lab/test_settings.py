from __future__ import annotations

import dataclasses
import os
import typing
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


# --- parallelism is not work; sweep points are listed once ------------------------------------


@dataclass(frozen=True)
class Sweep:
    steps: int = setting(100, "steps", min=1)
    budgets: tuple[float, ...] = setting((3e7, 1.2e8), "budgets", min=1, distinct=True)
    shape: tuple[int, ...] = setting((8, 8, 64), "a shape: repeats are fine", min=1)
    jobs: int = setting(1, "worker processes", min=1, parallel=True)


def test_a_repeated_sweep_point_is_refused_but_a_shape_may_repeat() -> None:
    assert config_problems(Sweep()) == []
    assert config_problems(Sweep(budgets=(3e7, 3e7))) == [
        "budgets: 30000000.0 is listed twice (each point once)"
    ]
    assert config_problems(Sweep(budgets=(1.0, 2.0, 1.0, 2.0)))[0].startswith("budgets: 1.0 ")


def test_parallelism_is_bounded_by_a_maximum_and_the_cpus_not_by_work() -> None:
    from repro.lab.runner import work_estimate
    from repro.lab.settings import MAX_WORKERS, worker_count

    assert config_problems(Sweep(jobs=MAX_WORKERS)) == []
    assert config_problems(Sweep(jobs=1000)) == [
        f"jobs: 1000 is out of range (expected [1, {MAX_WORKERS}])"
    ]
    full = Sweep()
    assert work_estimate(Sweep(jobs=64), full) == (1.0, [])  # 64 workers: the same work
    factor, grown = work_estimate(Sweep(jobs=64, steps=1000), full)
    assert factor == 10.0 and grown == ["steps=1000, full preset 100"]
    cpus = os.cpu_count() or 1
    assert worker_count(1000) == min(cpus, MAX_WORKERS)
    assert worker_count(8, tasks=3) == min(3, cpus) and worker_count(0) == 1


def test_jobs_of_the_sweep_papers_are_parallel_settings() -> None:
    from pathlib import Path

    from repro.lab.errors import BadOption
    from repro.lab.library import Library
    from repro.lab.runner import make_config

    library = Library(Path(__file__).resolve().parents[2] / "papers")
    for slug in ("chinchilla", "scaling-laws"):
        module = library.get(slug).module()
        assert make_config(module, True, ("jobs=8",), confirmed=False).jobs == 8
        with pytest.raises(BadOption, match=r"jobs: 1000 is out of range"):
            make_config(module, True, ("jobs=1000",), confirmed=False)
    with pytest.raises(BadOption, match=r"budgets: 30000000\.0 is listed twice"):
        make_config(library.get("chinchilla").module(), True, ("budgets=3e7,3e7",))


# --- the helpers one by one (classes built inside the tests, so `setting` runs in them) ---------


def test_worker_count_takes_the_least_of_jobs_cpus_maximum_and_tasks(monkeypatch) -> None:
    import repro.lab.settings as settings

    monkeypatch.setattr(settings.os, "cpu_count", lambda: 200)
    assert settings.worker_count(1000) == settings.MAX_WORKERS
    assert settings.worker_count(10, tasks=4) == 4
    monkeypatch.setattr(settings.os, "cpu_count", lambda: None)  # unknown: one worker
    assert settings.worker_count(8) == 1


def test_setting_metadata_bounds_and_help() -> None:
    from repro.lab.settings import MAX_WORKERS, is_parallel

    @dataclass(frozen=True)
    class P:
        free: int = 3
        a: int = setting(1, "workers", min=1, parallel=True)
        b: int = setting(1, "workers", min=1, max=8, parallel=True)
        c: int = setting(1, "workers", min=1, max=1000, parallel=True)
        frac: float = setting(0.5, "a fraction", min=0, max=1, min_exclusive=True)
        mode: str = setting("x", "mode", choices=["x", "y"])
        any_: int = setting(1, "anything")
        pts: tuple[int, ...] = setting((1, 2), "points", distinct=True)

    f = {x.name: x for x in dataclasses.fields(P)}
    assert setting_bounds(f["a"]) == f"[1, {MAX_WORKERS}]"
    assert setting_bounds(f["b"]) == "[1, 8]"
    assert setting_bounds(f["c"]) == f"[1, {MAX_WORKERS}]"
    assert setting_bounds(f["frac"]) == "(0, 1]"
    assert setting_bounds(f["mode"]) == "one of x, y"
    assert setting_bounds(f["any_"]) == "" and setting_bounds(f["free"]) == ""
    assert is_parallel(f["a"]) and not is_parallel(f["any_"]) and not is_parallel(f["free"])
    assert setting_help(f["free"]) == "" and setting_help(f["a"]) == "workers"
    assert config_problems(P(pts=(2, 2))) == ["pts: 2 is listed twice (each point once)"]
    assert config_problems(P(mode="z")) == ["mode: 'z' is out of range (expected one of x, y)"]


def test_every_field_is_checked_past_an_unbounded_one_and_text_is_not_ranged() -> None:
    @dataclass(frozen=True)
    class Q:
        free: int = 3
        n: int = setting(1, "n", min=1)
        name: str = setting("abc", "a name", min=1)

    assert config_problems(Q(n=0)) == ["n: 0 is out of range (expected ≥ 1)"]
    assert config_problems(Q(name="zzz")) == []


def test_type_names_as_a_reader_writes_them() -> None:
    import typing

    from repro.lab.settings import type_name

    assert type_name(int) == "int"
    assert type_name(typing.Optional[int]) == "Optional[int]"  # noqa: UP045
    assert type_name("int | None") == "int | None"  # a postponed annotation stays text


def test_head_split_messages() -> None:
    import pytest

    from repro.lab.settings import check_head_split

    with pytest.raises(ValueError) as caught:
        check_head_split(50, 4)
    assert str(caught.value) == "d_model 50 is not a multiple of n_heads 4"
    with pytest.raises(ValueError) as caught:
        check_head_split(36, 4, rotary=True)
    assert str(caught.value) == "RoPE rotates pairs: d_model / n_heads must be even"
    check_head_split(36, 0, rotary=True)  # n_heads < 1 is left to the field's range check


Mode = typing.Literal["a", "b"]


def test_describe_settings_resolves_postponed_annotations_and_as_set_value_reads_back() -> None:
    """With `from __future__ import annotations` a field's type is the text `Mode`; the row shows
    what it names. `--set` values: tuples comma-separated, booleans lower-case."""
    from repro.lab.settings import as_set_value

    @dataclass(frozen=True)
    class M:
        mode: Mode = setting("a", "mode", choices=("a", "b"))
        n: int = 2

    (mode, n) = describe_settings({"quick": M(), "full": M(mode="b")})
    assert mode["type"] == "Literal['a', 'b']" and n["type"] == "int"
    assert (mode["quick"], mode["full"]) == ("a", "b")
    assert as_set_value((1, 2.5, True, False, "x")) == "1,2.5,true,false,x"
    assert as_set_value(3) == "3" and as_set_value(False) == "false"


def test_rope_needs_an_even_head_width_with_one_head_too() -> None:
    import pytest

    from repro.lab.settings import check_head_split

    with pytest.raises(ValueError, match="pairs"):
        check_head_split(5, 1, rotary=True)
