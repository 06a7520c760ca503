"""Errors the library raises for bad input; the CLI turns each into one `Error: …` line."""

from __future__ import annotations


class PaperlabError(Exception):
    """Base class: a problem with what the user asked for or wrote (exit code 2)."""


class UnknownPaper(PaperlabError):
    """A slug that is not in the library; the message carries the 'did you mean' suggestion."""


class NoteError(PaperlabError):
    """A note that does not load; `problems` holds every `path:line:col: field: message`."""

    def __init__(self, problems: list[str]) -> None:
        self.problems = problems
        super().__init__("\n".join(problems))


class WiringError(PaperlabError):
    """A note's claims and its repro.py's @claim functions do not match."""


class BadOption(PaperlabError):
    """A command-line value that is not acceptable (unknown --set key, bad slug, …)."""


class ScaffoldError(PaperlabError):
    """`paperlab new` refuses: the folder exists or the slug is not valid."""
