"""`code:` references: which lines a symbol, a marker pair or a range names, and what is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from repro.study.excerpts import CodeRefError, parse_ref, resolve

SOURCE = '''import functools


class Outer:
    """Doc."""

    @staticmethod
    @functools.cache
    def method(x):
        y = x
        # [core]
        z = y * 2
        w = z + 1
        # [/core]
        return w

    class Inner:
        def deep(self):
            return 1


def method(x):
    return -x
'''


@pytest.fixture
def root(tmp_path: Path) -> Path:
    folder = tmp_path / "root"
    (folder / "pkg").mkdir(parents=True)
    (folder / "pkg" / "m.py").write_text(SOURCE, encoding="utf-8")
    return folder


def test_a_method_starts_at_its_first_decorator_and_is_dedented(root: Path) -> None:
    ex = resolve(root, "pkg/m.py::Outer.method")
    assert (ex.path, ex.first, ex.last) == ("pkg/m.py", 7, 15)
    assert ex.lines[:4] == ("@staticmethod", "@functools.cache", "def method(x):", "    y = x")
    assert ex.lines[-1] == "    return w"
    top = resolve(root, "pkg/m.py::method")  # the module's own `method`, not Outer's
    assert (top.first, top.lines) == (22, ("def method(x):", "    return -x"))
    deep = resolve(root, "pkg/m.py::Outer.Inner.deep")
    assert (deep.first, deep.last, deep.lines) == (18, 19, ("def deep(self):", "    return 1"))


def test_markers_and_ranges_inside_a_symbol(root: Path) -> None:
    core = resolve(root, "pkg/m.py::Outer.method#core")
    assert (core.first, core.last, core.lines) == (12, 13, ("z = y * 2", "w = z + 1"))
    lines = resolve(root, "pkg/m.py::Outer.method#L10-L12")
    assert (lines.first, lines.lines) == (10, ("y = x", "# [core]", "z = y * 2"))
    whole = resolve(root, "pkg/m.py#L22-L23")
    assert whole.lines == ("def method(x):", "    return -x")
    one = resolve(root, "pkg/m.py#L5")
    assert (one.first, one.last, one.lines) == (5, 5, ('"""Doc."""',))


@pytest.mark.parametrize(
    ("ref", "why"),
    [
        ("pkg/m.py::Outer.method#L5-L9", "outside Outer.method (lines 7–15)"),
        ("pkg/m.py#L20-L30", "outside 23 lines"),
        ("pkg/m.py::Outer.Inner#core", "inside Outer.Inner"),
        ("pkg/m.py::Outer.missing", "no function or class 'Outer.missing'"),
        ("pkg/m.py::Inner", "no function or class 'Inner'"),
        ("pkg/m.py#L3-L2", "bad line range"),
        ("pkg/m.py#L0", "bad line range"),
        ("pkg/m.txt", "is not path.py"),
        ("/etc/m.py", "inside the checkout"),
        ("pkg/../pkg/m.py", "without .."),
        ("pkg/none.py", "no such file"),
        ("link.py", "no such file in the checkout"),
    ],
)
def test_what_does_not_resolve_says_why(root: Path, ref: str, why: str) -> None:
    outside = root.parent / "outside.py"
    outside.write_text("def f():\n    pass\n", encoding="utf-8")
    (root / "link.py").symlink_to(outside)  # a link out of the checkout
    with pytest.raises(CodeRefError) as caught:
        resolve(root, ref)
    assert why in str(caught.value)


def test_a_marker_must_be_one_pair_in_order(root: Path) -> None:
    text = "def f():\n    # [/a]\n    x = 1\n    # [a]\n    # [b]\n    # [b]\n    # [/b]\n"
    (root / "n.py").write_text(text, encoding="utf-8")
    for ref in ("n.py::f#a", "n.py::f#b", "n.py#c"):
        with pytest.raises(CodeRefError, match="needs one"):
            resolve(root, ref)


def test_the_target_a_formula_and_a_claim_share() -> None:
    assert parse_ref("a/b.py::C.f#L1-L2").target == "a/b.py::C.f"
    assert parse_ref(" a/b.py::C.f#core ").target == "a/b.py::C.f"
    assert parse_ref("a/b.py#L3").target == "a/b.py"
    ref = parse_ref("a/b.py#L3-L9")
    assert (ref.start, ref.end, ref.symbol, ref.marker) == (3, 9, None, None)
