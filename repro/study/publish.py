"""Where `paperlab sheet` puts its output: stdout, one file, a combined document, or a site.

The rules, so that nothing surprising appears on disk:
- one paper (or the must-know pack) → stdout, or the file `-o` names;
- several papers → `-o DIR/` gives a site (index + one page per paper, related links between the
  pages), `-o FILE.html|.md` one combined document with a table of contents; never concatenated
  documents on stdout, and never a folder named like a file;
- `anki` → an `.apkg` file (binary, so never stdout); `tsv` → one table, stdout or a file.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from repro.lab.errors import BadOption, PaperlabError
from repro.lab.library import Library, Paper
from repro.lab.textfile import Content, write_user_file
from repro.study.sheetlang import Lang
from repro.study.sheets import (
    SUFFIX,
    PackEntry,
    must_know_entries,
    paper_sheet,
    render_combined,
    render_index,
    render_must_know,
    render_sheet,
)

OutFormat = Literal["md", "html", "anki", "tsv", "cheatsheet"]
FORMAT_OF_SUFFIX = {".md": "md", ".html": "html", ".htm": "html", ".apkg": "anki", ".tsv": "tsv"}


@dataclass(frozen=True)
class Request:
    slugs: tuple[str, ...] = ()
    all_papers: bool = False
    must_know: bool = False
    fmt: OutFormat | None = None  # None: from the output's suffix, else md
    lang: Lang = "en"
    output: Path | str | None = None  # as typed: a trailing separator means a folder
    only_translated: bool = False  # anki/tsv in zh: leave out cards with no Chinese text


@dataclass
class Outcome:
    stdout: str = ""
    written: list[Path] | None = None
    missing: list[str] | None = None  # must-know papers without a note
    removed: list[str] | None = None  # anki: cards of the previous export that are gone


def is_folder(path: Path | str) -> bool:
    """A folder when it is one already, ends with a separator, or has no suffix. The separator
    is only seen in the text as typed: `Path("site.v2/")` has already dropped it."""
    if str(path).endswith(("/", os.sep)):
        return True
    path = Path(path)
    return path.is_dir() or (not path.exists() and not path.suffix)


def resolve_format(request: Request) -> OutFormat:
    suffix = Path(request.output).suffix.lower() if request.output is not None else ""
    guessed = FORMAT_OF_SUFFIX.get(suffix)
    if request.fmt is None:
        return guessed or "md"
    folder = request.output is not None and is_folder(request.output)
    if request.fmt == "cheatsheet" and guessed in (None, "html"):
        return request.fmt
    if guessed and guessed != request.fmt and not folder:
        raise BadOption(f"-o {request.output} looks like {guessed}, but --format is {request.fmt}")
    return request.fmt


def _papers(library: Library, request: Request) -> list[Paper]:
    if request.must_know and (request.slugs or request.all_papers):
        raise BadOption("--must-know picks its own five papers; give no paper names or --all")
    if request.all_papers and request.slugs:
        raise BadOption("give paper names or --all, not both")
    papers = library.select(request.slugs)
    for paper in papers:  # every note must load before anything is written
        paper.note  # noqa: B018
    return papers


def _write(path: Path, content: Content, written: list[Path]) -> None:
    """Write a file the user asked for (text, bytes, or a writer of a file) by the rules of
    `write_user_file`: atomic replacement of a regular file, a FIFO or device written to and
    never replaced, a folder refused; a missing folder or an unwritable place is one `Error:`
    line. Only a site folder (`-o DIR/`) is created, by `_make_folder`."""
    write_user_file(path, content)
    written.append(path)


def _make_folder(path: Path) -> None:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise BadOption(f"cannot create {path}: {exc.strerror or exc}") from None


def publish(library: Library, runs_dir: Path, request: Request) -> Outcome:
    """Render what `request` asks for; write files or return the text for stdout."""
    if request.output is not None and str(request.output) == "-":  # `-o -`: stdout
        request = dataclasses.replace(request, output=None)
    fmt = resolve_format(request)
    lang = request.lang
    output = Path(request.output) if request.output is not None else None
    written: list[Path] = []
    if request.must_know:
        _papers(library, request)
        entries = must_know_entries(library, runs_dir, lang)
        missing = [e.slug for e in entries if e.sheet is None]
        papers = [e.sheet.paper for e in entries if e.sheet is not None]
    else:
        papers, missing = _papers(library, request), None
    folder = request.output is not None and is_folder(request.output)
    if folder:
        _make_folder(output)

    if fmt in ("anki", "tsv"):
        from repro.study.anki import render_tsv, write_apkg

        if fmt == "tsv":
            text = render_tsv(papers, lang, request.only_translated)
            if output is None:
                return Outcome(stdout=text, missing=missing)
            _write(output / "paperlab.tsv" if folder else output, text, written)
            return Outcome(written=written, missing=missing)
        if output is None:
            raise BadOption("--format anki writes a binary .apkg: give -o FILE.apkg")
        from repro.study.anki import _manifest_path

        target = output / "paperlab.apkg" if folder else output
        report = []
        _write(
            target,
            lambda tmp: report.append(write_apkg(papers, tmp, lang, request.only_translated)),
            written,
        )
        # the cards the previous export to this file had: compared once the deck is in place
        regular = target.is_file()  # no manifest beside /dev/null or a FIFO
        removed = _compare_manifest(report[0].guids, _manifest_path(target)) if regular else []
        return Outcome(written=written, missing=missing, removed=removed)

    if fmt == "cheatsheet":
        from repro.study.sheets import render_cheatsheet

        if not request.must_know:
            entries = [PackEntry(p.slug, paper_sheet(p, runs_dir, lang, library)) for p in papers]
        text = render_cheatsheet(entries, lang)
        if output is None:
            return Outcome(stdout=text, missing=missing)
        _write(output / "cheatsheet.html" if folder else output, text, written)
        return Outcome(written=written, missing=missing)

    ext = SUFFIX[fmt]
    if request.must_know:
        text = render_must_know(entries, fmt, lang)
        if output is None:
            return Outcome(stdout=text, missing=missing)
        _write(output / f"must-know{ext}" if folder else output, text, written)
        return Outcome(written=written, missing=missing)

    if output is None:
        if len(papers) != 1:
            raise BadOption(
                f"{len(papers)} papers make {len(papers)} documents: give -o DIR/ for a site "
                f"(index + one page each) or -o FILE{ext} for one combined document"
            )
        sheet = paper_sheet(papers[0], runs_dir, lang, library, _external_link)
        return Outcome(stdout=render_sheet(sheet, fmt, lang))

    if folder and fmt == "html":
        from repro.study.site import write_site

        complete = not request.slugs  # --all: both languages, the pack, the deck
        write_site(
            library, runs_dir, papers, lang, output,
            lambda path, content: _write(path, content, written), complete,
        )  # fmt: skip
        return Outcome(written=written)

    if folder:
        inside = {p.slug for p in papers}

        def sibling(paper: Paper) -> str:
            return f"{paper.slug}{ext}" if paper.slug in inside else paper.note.url

        sheets = [paper_sheet(p, runs_dir, lang, library, sibling) for p in papers]
        for sheet in sheets:
            _write(output / f"{sheet.slug}{ext}", render_sheet(sheet, fmt, lang), written)
        _write(output / f"index{ext}", render_index(sheets, fmt, lang), written)
        return Outcome(written=written)

    if len(papers) == 1:
        sheet = paper_sheet(papers[0], runs_dir, lang, library, _external_link)
        _write(output, render_sheet(sheet, fmt, lang), written)
        return Outcome(written=written)

    inside = {p.slug for p in papers}

    def anchor(paper: Paper) -> str:
        return f"#{paper.slug}" if paper.slug in inside else paper.note.url

    sheets = [paper_sheet(p, runs_dir, lang, library, anchor) for p in papers]
    _write(output, render_combined(sheets, fmt, lang), written)
    return Outcome(written=written)


def _compare_manifest(guids: dict[str, str], manifest: Path) -> list[str]:
    """The fronts of the cards in `manifest` (the previous export) that `guids` lacks; then
    `manifest` is rewritten for the next export (losing it only loses that report)."""
    import json

    try:
        before = json.loads(manifest.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        before = {}
    if not isinstance(before, dict):
        before = {}
    removed = [str(v) for k, v in before.items() if k not in guids]
    with contextlib.suppress(PaperlabError):  # write_user_file reports OSErrors as BadOption
        write_user_file(manifest, json.dumps(guids, ensure_ascii=False, indent=0) + "\n")
    return removed


def _external_link(paper: Paper) -> str:
    """A page on its own links related papers to their arXiv pages: always resolvable."""
    return paper.note.url
