"""Numbers and counts as a person reads them, the same way in every table.

- an integer, or a float with an integer value, gets thousands separators: 120,832 (not
  120,832.0) and 1,022,362 (not 1.023e+06);
- other floats keep four significant digits (28.4, 0.01234), with separators from 1,000 up;
  only tiny values (< 0.001) and huge ones (≥ 1e15) use an exponent;
- a unit is added once: a value already written with it (">= 1.0 nats") does not get it again;
- counts take the right plural: 1 paper, 2 papers;
- durations read `12.3 s`, `1 min 02 s`, `1 h 05 min` in every command (`format_seconds`);
- sizes read `12.0 MB` (`format_bytes`); a long statement is shortened at a word (`shorten`).
"""

from __future__ import annotations

import math
from typing import Any

_HUGE = 1e15  # beyond this, digits stop meaning anything to a reader: use an exponent


def format_number(x: float | int) -> str:
    if isinstance(x, bool):
        return "true" if x else "false"
    if isinstance(x, int):
        return f"{x:,}"
    if math.isnan(x):
        return "nan"
    if math.isinf(x):
        return "inf" if x > 0 else "-inf"
    size = abs(x)
    if size >= _HUGE:
        return f"{x:.4g}"
    if x.is_integer():
        return f"{int(x):,}"
    if size >= 1000:
        return f"{x:,.1f}"
    return f"{x:.4g}"


def format_value(value: Any) -> str:
    """A measured or expected value: a number as above, `—` for none, text as written."""
    if value is None:
        return "—"
    if isinstance(value, bool | int | float):
        return format_number(value)
    return str(value)


def with_unit(value: Any, unit: str) -> str:
    """`value unit`, unless there is no value or the text already ends with the unit."""
    text = format_value(value)
    if not unit or value is None or text.endswith(unit):
        return text
    return f"{text} {unit}"


def plural(count: int, noun: str, plural_form: str | None = None) -> str:
    """`1 paper`, `2 papers` (or the irregular `plural_form`)."""
    word = noun if count == 1 else (plural_form or f"{noun}s")
    return f"{count:,} {word}"


def format_seconds(seconds: float | None) -> str:
    """The one duration format of every command: `12.3 s`, `1 min 02 s`, `1 h 05 min`."""
    if seconds is None:
        return "—"
    if round(seconds, 1) < 60:
        return f"{seconds:.1f} s"
    minutes, rest = divmod(round(seconds), 60)
    if minutes < 60:
        return f"{minutes} min {rest:02d} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min"


def format_bytes(size: int | None) -> str:
    """`512 B`, `12.0 kB`, `3.4 MB`, `1.2 GB` (powers of 1000, as disk tools print them)."""
    if size is None:
        return "—"
    if size < 1000:
        return f"{size} B"
    value = float(size)
    for unit in ("kB", "MB", "GB", "TB"):
        value /= 1000
        if value < 999.95 or unit == "TB":
            return f"{value:.1f} {unit}"
    raise AssertionError("unreachable")


def shorten(text: str, width: int = 60) -> str:
    """The first line of `text`, cut at a word boundary to at most `width` characters with `…`."""
    line = " ".join(text.split())
    if len(line) <= width:
        return line
    cut = line[: width - 1]
    space = cut.rfind(" ")
    if space >= width // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:.") + "…"
