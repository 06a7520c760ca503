"""The library of papers: find `papers/<slug>/note.yaml`, load notes, wire claims to checks.

Listing, loading and validating never import torch: the claim wiring of a `repro.py` is read
from its syntax tree. The module itself is imported only when a check has to run.
"""

from __future__ import annotations

import ast
import difflib
import importlib.util
import os
import sys
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from repro.lab.claims import CLAIM_ATTR, ClaimSpec
from repro.lab.errors import (
    BadOption,
    MissingLibrary,
    NoteError,
    PaperlabError,
    UnknownPaper,
    WiringError,
)
from repro.lab.textfile import TextFileError, read_text_file

if TYPE_CHECKING:  # the schema imports pydantic: loaded when a note is, not with the library
    from repro.lab.note import Note
    from repro.lab.notecache import NoteSummary

REPO_ROOT = Path(__file__).resolve().parents[2]
PAPERS_ENV = "PAPERLAB_PAPERS"


def check_checkout() -> None:
    """paperlab reads templates/ and papers/ from its checkout; a non-editable `pip install .`
    copies only the Python code, so it is refused here with the reason (see README)."""
    if not (REPO_ROOT / "templates").is_dir():
        raise PaperlabError(
            f"paperlab is not running from its checkout ({REPO_ROOT} has no templates/): "
            "install it from a clone with `pip install -e .`"
        )


def default_papers_dir() -> Path:
    """`$PAPERLAB_PAPERS`, else the `papers/` folder of this checkout."""
    env = os.environ.get(PAPERS_ENV)
    return Path(env) if env else REPO_ROOT / "papers"


@dataclass(frozen=True)
class Paper:
    """One paper folder."""

    slug: str
    folder: Path

    @property
    def note_path(self) -> Path:
        return self.folder / "note.yaml"

    @property
    def repro_path(self) -> Path:
        return self.folder / "repro.py"

    def display(self, path: Path) -> str:
        """A path as the user should read it in messages: relative to the working directory."""
        try:
            return os.path.relpath(path)
        except ValueError:  # another drive on Windows
            return str(path)

    @cached_property
    def note(self) -> Note:
        """The note, read and validated in full (NoteError listing every problem)."""
        from repro.lab.note import load_note

        return load_note(self.note_path, self.display(self.note_path))

    @cached_property
    def summary(self) -> NoteSummary:
        """What listings, aliases and links need of the note (title, year, tags, claim ids …),
        from the note cache when its entry was made from the note's current text, else from a
        full load (see repro.lab.notecache). NoteError like `note` for a note that does not load."""
        from repro.lab.notecache import note_summary

        return note_summary(self.note_path, self.display(self.note_path))

    def claim_ids_in_code(self) -> dict[str, int]:
        """`@claim("id")` decorations in repro.py, read without importing it: id -> line."""
        if not self.repro_path.exists():
            return {}
        shown = self.display(self.repro_path)
        try:
            tree = ast.parse(read_text_file(self.repro_path, shown), filename=shown)
        except TextFileError as exc:
            raise WiringError(str(exc)) from None
        except SyntaxError as exc:
            raise WiringError(f"{shown}:{exc.lineno or 1}:{exc.offset or 1}: {exc.msg}") from None
        except (ValueError, RecursionError, MemoryError) as exc:  # null bytes, absurd nesting
            raise WiringError(f"{shown}:1:1: cannot parse: {type(exc).__name__}") from None
        found: dict[str, int] = {}
        for node in ast.walk(tree):
            if not isinstance(node, ast.FunctionDef):
                continue
            for deco in node.decorator_list:
                if (
                    isinstance(deco, ast.Call)
                    and getattr(deco.func, "id", getattr(deco.func, "attr", None)) == "claim"
                    and deco.args
                    and isinstance(deco.args[0], ast.Constant)
                ):
                    if deco.args[0].value in found:
                        raise WiringError(
                            f"{shown}:{node.lineno}:1: claim {deco.args[0].value!r} is "
                            "checked by two functions"
                        )
                    found[deco.args[0].value] = node.lineno
        return found

    def wiring_problems(self) -> list[str]:
        """Claims without a check, checks without a claim, cited claims that have a check."""
        shown = self.display(self.repro_path)
        try:
            in_code = self.claim_ids_in_code()
        except WiringError as exc:
            return [str(exc)]
        problems = []
        for c in self.note.claims:
            if c.kind == "cited" and c.id in in_code:
                where = f"{shown}:{in_code[c.id]}:1"
                problems.append(f"{where}: claim {c.id!r} is cited in the note but has a check")
            elif c.kind != "cited" and c.id not in in_code:
                problems.append(f"{shown}:1:1: claim {c.id!r} ({c.kind}) has no @claim function")
        in_note = {c.id for c in self.note.claims}
        problems += [
            f"{shown}:{line}:1: @claim({cid!r}) has no claim in note.yaml"
            for cid, line in in_code.items()
            if cid not in in_note
        ]
        return problems

    def module(self) -> ModuleType:
        """Import repro.py (this is where torch gets imported)."""
        name = "paperlab_papers." + self.slug.replace("-", "_")
        loaded = sys.modules.get(name)
        if loaded is not None and Path(loaded.__file__) == self.repro_path:
            return loaded
        spec = importlib.util.spec_from_file_location(name, self.repro_path)
        assert spec is not None and spec.loader is not None, f"cannot import {self.repro_path}"
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[name]
            raise
        return module

    def checks(self) -> dict[str, tuple[ClaimSpec, object]]:
        """claim id -> (spec, function) from the imported module."""
        found = {}
        for fn in vars(self.module()).values():
            spec = getattr(fn, CLAIM_ATTR, None)
            if isinstance(spec, ClaimSpec):
                found[spec.id] = (spec, fn)
        return found


class Library:
    """The paper folders under one root."""

    def __init__(self, root: Path | None = None) -> None:
        self.root = Path(root) if root is not None else default_papers_dir()

    @cached_property
    def papers(self) -> dict[str, Paper]:
        if not self.root.is_dir():
            # A typo in --papers-dir must not pass as an empty library (a green CI job).
            what = "is not a folder" if self.root.exists() else "does not exist"
            raise MissingLibrary(
                f"papers folder {self.root} {what} (set --papers-dir or {PAPERS_ENV}; "
                "paperlab runs from its checkout: install it with `pip install -e .`)"
            )
        return {
            p.parent.name: Paper(p.parent.name, p.parent)
            for p in sorted(self.root.glob("*/note.yaml"))
        }

    def slugs(self) -> list[str]:
        return list(self.papers)

    def _aliases(self) -> dict[str, str]:
        aliases = {}
        for slug, paper in self.papers.items():
            try:
                aliases.update({a: slug for a in paper.summary.aliases})
            except NoteError:
                continue  # a broken note is reported when it is used, not when others are
        return aliases

    def get(self, name: str) -> Paper:
        """The paper called `name` (slug or alias, any case); UnknownPaper with a suggestion."""
        if name in self.papers:
            return self.papers[name]
        folded = name.lower()  # `LoRA` finds `lora`
        if folded in self.papers:
            return self.papers[folded]
        aliases = self._aliases()
        if folded in aliases:
            return self.papers[aliases[folded]]
        close = difflib.get_close_matches(folded, [*self.papers, *aliases], n=1, cutoff=0.5)
        hint = f"; did you mean '{aliases.get(close[0], close[0])}'?" if close else ""
        known = "" if close else f" (known: {', '.join(self.papers) or 'none'})"
        raise UnknownPaper(f"unknown paper '{name}'{hint}{known}")

    def select(self, names: tuple[str, ...] | list[str]) -> list[Paper]:
        """The named papers (each once, in order), or all of them when no name is given."""
        if not names:
            return list(self.papers.values())
        chosen = {p.slug: p for p in (self.get(n) for n in names)}
        return list(chosen.values())


def notes_or_error(papers: list[Paper]) -> None:
    """Load every note; one NoteError listing the problems of every broken note."""
    problems: list[str] = []
    for paper in papers:
        try:
            paper.note  # noqa: B018
        except NoteError as exc:
            problems += exc.problems
    if problems:
        raise NoteError(problems)


def check_claim_ids(papers: list[Paper], claim_ids: tuple[str, ...]) -> None:
    """Each `--claim` id must name a claim of the selected papers (with a suggestion if not)."""
    known = sorted({c.id for p in papers for c in p.note.claims})
    for cid in claim_ids:
        if cid not in known:
            close = difflib.get_close_matches(cid, known, n=1, cutoff=0.5)
            hint = f"; did you mean '{close[0]}'?" if close else f" (claims: {', '.join(known)})"
            where = papers[0].slug if len(papers) == 1 else "the selected papers"
            raise BadOption(f"--claim: {where} has no claim '{cid}'{hint}")
