"""Experiment settings with their valid ranges, declared next to the field.

A paper's `Config` writes `hidden: int = setting(64, "hidden width", min=1)`. The runner checks
`--set` overrides (and the presets) against these bounds before any work starts, and
`paperlab settings SLUG` prints the help text. A tuple-valued field is checked item by item and
must not be empty; one declared `distinct` (sweep points: budgets, widths, seeds) may not list a
point twice. A `parallel` setting (worker processes) is not an amount of work: it is bounded by
`MAX_WORKERS` here and by the CPU count when it runs (`worker_count`), never by the work estimate.

`--device` reaches a paper's code as `ctx.device`. A paper whose code cannot use it says so, and
why, with a plain class attribute of its `Config` (not a field, so not a setting):
`CPU_ONLY = "why"`: the whole paper runs on the CPU (the runner gives it `ctx.device == "cpu"`
and says so in one line); `CPU_EXPERIMENT = "why"`: the experiment works on the CPU by design,
and `--device` reaches its timing checks. See `device_limit`.
"""

from __future__ import annotations

import builtins
import dataclasses
import os
import typing
from collections.abc import Sequence
from typing import Any

_META = "paperlab"
MAX_WORKERS = 64  # worker processes a `parallel` setting may ask for


def worker_count(jobs: int, tasks: int | None = None) -> int:
    """Worker processes to start for `jobs`: at most the CPU count (and the number of tasks)."""
    n = min(jobs, os.cpu_count() or 1, MAX_WORKERS)
    return max(1, min(n, tasks) if tasks is not None else n)


def setting(
    default: Any,
    help: str,
    *,
    min: float | None = None,
    max: float | None = None,
    min_exclusive: bool = False,
    choices: Sequence[Any] | None = None,
    distinct: bool = False,
    parallel: bool = False,
) -> Any:
    """A dataclass field with a help text and bounds: `min ≤ value ≤ max` (or `min < value`).

    `distinct`: a tuple of points where each may appear once. `parallel`: a count of worker
    processes, bounded by `MAX_WORKERS` (unless `max` is lower) and left out of work estimates."""
    if parallel:
        # `min` and `max` are this function's parameters here: the builtin is named in full
        max = MAX_WORKERS if max is None else builtins.min(max, MAX_WORKERS)
    meta = {
        "distinct": distinct,
        "parallel": parallel,
        "help": help,
        "min": min,
        "max": max,
        "min_exclusive": min_exclusive,
        "choices": tuple(choices) if choices is not None else None,
    }
    return dataclasses.field(default=default, metadata={_META: meta})


DEVICE_LIMITS = ("CPU_ONLY", "CPU_EXPERIMENT")


def device_limit(config: Any) -> tuple[str, str] | None:
    """(`CPU_ONLY` or `CPU_EXPERIMENT`, the reason) as a paper's `Config` (class or instance)
    declares it; None when `--device` reaches the whole paper (or it has no settings)."""
    for name in DEVICE_LIMITS:
        reason = getattr(config, name, None)
        if reason is not None:
            if not isinstance(reason, str) or not reason.strip():
                raise TypeError(f"Config.{name} must be the reason, as text")
            return name, reason
    return None


def setting_help(field: dataclasses.Field) -> str:
    return field.metadata.get(_META, {}).get("help", "")


def is_parallel(field: dataclasses.Field) -> bool:
    """Whether `field` counts worker processes (not an amount of work)."""
    return bool(field.metadata.get(_META, {}).get("parallel"))


def setting_bounds(field: dataclasses.Field) -> str:
    """The valid range as text: `≥ 1`, `> 0`, `[0, 1]`, `one of a, b`; '' if unconstrained."""
    m = field.metadata.get(_META)
    if not m:
        return ""
    if m["choices"] is not None:
        return "one of " + ", ".join(map(str, m["choices"]))
    lo, hi = m["min"], m["max"]
    if lo is not None and hi is not None:
        return f"{'(' if m['min_exclusive'] else '['}{lo:g}, {hi:g}]"
    if lo is not None:
        return f"{'>' if m['min_exclusive'] else '≥'} {lo:g}"
    if hi is not None:
        return f"≤ {hi:g}"
    return ""


def config_problems(cfg: Any) -> list[str]:
    """Every field of `cfg` outside its declared range, as `name: why` lines."""
    problems = []
    for f in dataclasses.fields(cfg):
        m = f.metadata.get(_META)
        if not m:
            continue
        value = getattr(cfg, f.name)
        items = value if isinstance(value, tuple | list) else (value,)
        if isinstance(value, tuple | list) and not value:
            problems.append(f"{f.name}: must not be empty")
        if m.get("distinct") and isinstance(value, tuple | list):
            twice = next((v for i, v in enumerate(value) if v in value[:i]), None)
            if twice is not None:
                problems.append(f"{f.name}: {twice!r} is listed twice (each point once)")
        for v in items:
            if _out_of_range(v, m):
                problems.append(f"{f.name}: {v!r} is out of range (expected {setting_bounds(f)})")
                break
    return problems


def _out_of_range(v: Any, m: dict) -> bool:
    if m["choices"] is not None:
        return v not in m["choices"]
    if not isinstance(v, int | float) or isinstance(v, bool):
        return False
    if v != v:  # NaN
        return True
    lo, hi = m["min"], m["max"]
    if lo is not None and (v < lo or (m["min_exclusive"] and v == lo)):
        return True
    return hi is not None and v > hi


def type_name(annotation: Any) -> str:
    """`int`, `float`, `tuple[int, ...]` as a reader writes them."""
    if isinstance(annotation, type) and not typing.get_args(annotation):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


def describe_settings(presets: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per `Config` field: name, type, quick and full values, bounds, help."""
    quick, full = presets["quick"], presets["full"]
    hints = typing.get_type_hints(type(full))
    return [
        {
            "name": f.name,
            "type": type_name(hints.get(f.name, f.type)),
            "quick": getattr(quick, f.name),
            "full": getattr(full, f.name),
            "bounds": setting_bounds(f),
            "help": setting_help(f),
        }
        for f in dataclasses.fields(full)
    ]


def as_set_value(value: Any) -> str:
    """A value written the way `--set key=value` reads it back (tuples comma-separated)."""
    if isinstance(value, tuple | list):
        return ",".join(as_set_value(v) for v in value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def check_head_split(d_model: int, n_heads: int, *, rotary: bool = False) -> None:
    """The one cross-field rule of the attention configs: heads split the width evenly, and with
    RoPE each head's width is even (it rotates pairs of channels). `n_heads < 1` is left to the
    field's own range check, which reports it with the other settings."""
    if n_heads >= 1 and d_model % n_heads:
        raise ValueError(f"d_model {d_model} is not a multiple of n_heads {n_heads}")
    if rotary and n_heads >= 1 and (d_model // n_heads) % 2:
        raise ValueError("RoPE rotates pairs: d_model / n_heads must be even")
