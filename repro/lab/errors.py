"""Errors the library raises for bad input; the CLI turns each into one `Error: …` line."""

from __future__ import annotations


def one_line(text: str) -> str:
    """Line breaks and control characters escaped: a message from user text stays one line."""
    return text.translate(_CONTROL_ESCAPES)


# C0, DEL and C1: an ESC or CSI (U+009B) that reached a terminal could retitle it or clear it
_CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(32), *range(0x7F, 0xA0))} | {
    10: "\\n",
    13: "\\r",
    9: "\\t",
}


class PaperlabError(Exception):
    """Base class: a problem with what the user asked for or wrote (exit code 2)."""


class UnknownPaper(PaperlabError):
    """A slug that is not in the library; the message carries the 'did you mean' suggestion."""


class MissingLibrary(PaperlabError):
    """The papers folder does not exist."""


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


class SaveError(PaperlabError):
    """Results computed but not stored (read-only or full disk, runs path is a file)."""
