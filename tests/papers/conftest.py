"""Fixtures shared by the paper tests."""

from __future__ import annotations

import inspect

import pytest


@pytest.fixture
def line_plots(monkeypatch: pytest.MonkeyPatch):
    """`line_plots(module)` replaces the module's `save_line_plot` with a recorder bound to its
    real signature (a dropped argument fails as it would there) and returns the list of calls,
    each (path, series, the other arguments by name)."""

    def record_in(module) -> list:
        drawn: list = []
        signature = inspect.signature(module.save_line_plot)

        def record(*args, **kwargs):
            bound = signature.bind(*args, **kwargs).arguments
            drawn.append((bound.pop("path"), bound.pop("series"), bound))

        monkeypatch.setattr(module, "save_line_plot", record)
        return drawn

    return record_in
