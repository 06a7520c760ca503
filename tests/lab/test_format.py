from __future__ import annotations

import pytest

from repro.lab.format import format_number, format_seconds, format_value, plural, with_unit


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (120832.0, "120,832"),
        (1022362, "1,022,362"),
        (1022362.0, "1,022,362"),
        (1022362.5, "1,022,362.5"),
        (28.4, "28.4"),
        (0.01234, "0.01234"),
        (1.5e-5, "1.5e-05"),
        (3.14e23, "3.14e+23"),
        (-2.0, "-2"),
        (0.0, "0"),
        (float("nan"), "nan"),
        (float("-inf"), "-inf"),
        (True, "true"),
    ],
)
def test_numbers_read_like_a_person_writes_them(value, text: str) -> None:
    assert format_number(value) == text


def test_a_unit_is_written_once() -> None:
    assert with_unit(">= 1.0 nats", "nats") == ">= 1.0 nats"
    assert with_unit(1.5, "nats") == "1.5 nats"
    assert with_unit(None, "nats") == "—"
    assert with_unit(110, "") == "110"
    assert format_value("text") == "text"


def test_plurals() -> None:
    assert [plural(n, "paper") for n in (0, 1, 2, 1000)] == [
        "0 papers", "1 paper", "2 papers", "1,000 papers",
    ]  # fmt: skip


def test_seconds() -> None:
    assert [format_seconds(s) for s in (None, 2.345, 75, 3725)] == [
        "—", "2.3 s", "1 min 15 s", "1 h 02 min",
    ]  # fmt: skip
