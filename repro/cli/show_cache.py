"""The show cache: `paperlab show` prints what it printed before when nothing it shows changed.

Rendering a sheet for the terminal loads the note with pydantic, fills a Jinja template, turns
every formula into Unicode (pylatexenc) and lays the Markdown out with rich: most of a second.
The printed text of each render is kept in an entry of the verified cache (repro.lab.cache),
`<cache>/show/<name>/`, named by the note, the runs folder, the language and colour or not, and
a later `show` of the same paper prints it without importing any of those libraries.

The text is printed only when everything it was made from is unchanged (the key, compared whole):

- the note: its path and the SHA-256 of its text, read as a full load reads it (a note is
  rendered, so validated, before any entry of it is written);
- the papers it names under `related`: each name resolved again through the library (slug or
  alias), with the title and URL that the sheet shows of it (from the note cache);
- the stored runs of the paper, `runs/<slug>/`: the names in each run folder and the SHA-256 of
  every claims.json, environment.json, config.json and plot (verdicts, measured values, the
  latest run's stamp, commit and plots);
- the code: the source of repro/cli, repro/lab, repro/study and paperlab.py, every file under
  templates/, the note loader's version (repro.lab.notecache.loader_version), the Python
  version, and the RECORD of each installed library the render uses (read from its dist-info
  folder, not imported);
- the options (`--lang`), and the console that rich sets up: width and height, colour system,
  terminal or not, dumb terminal, NO_COLOR, encoding, and the environment variables rich reads
  (TERM, COLORTERM, FORCE_COLOR, NO_COLOR, TTY_COMPATIBLE, TTY_INTERACTIVE, COLUMNS, LINES,
  UNICODE_VERSION for the width of characters …).

The key is computed again after a render and the entry is written only if it did not change
meanwhile (an edit or a new run while rendering). Nothing is cached when the output cannot be
keyed safely: a Jupyter or legacy Windows console, an encoding other than UTF-8, or a runs folder
holding a FIFO or device where a run file is read.

An entry verifies as every cache entry does (regular files whose SHA-256 match `entry.json`);
its text must hold no control character but newline and tab, and no escape sequence but the
SGR colours (`ESC [ … m`) and the OSC 8 hyperlinks of rich's Markdown links, and the latter
only when the console has colours. Anything else is one warning line and a fresh render.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import sys
from collections.abc import Callable
from functools import cache
from pathlib import Path

from repro.lab import notecache
from repro.lab.errors import NoteError, UnknownPaper, one_line
from repro.lab.library import REPO_ROOT, Library, Paper
from repro.lab.textfile import TextFileError, read_text_file

FORMAT = 1
KIND = "show"
PAYLOAD = "show.json"
MAX_ENTRY_BYTES = 8 << 20  # the longest sheet prints ~0.2 MB, ~0.5 MB as escaped JSON
MAX_RUN_FILE_BYTES = 16 << 20
# What decides the text: the commands, the library, the sheets, the templates.
CODE = ("paperlab.py", "repro/__init__.py", "repro/cli", "repro/lab", "repro/study", "templates")
# The distributions a render imports (tests/cli/test_show_cache.py checks the list is complete).
LIBRARIES = (
    "rich", "markdown-it-py", "mdurl", "linkify-it-py", "uc-micro-py", "pygments", "jinja2",
    "markupsafe", "pylatexenc", "pydantic", "pydantic-core", "pyyaml", "typing-extensions",
    "annotated-types", "typing-inspection", "click",
)  # fmt: skip
ENVIRONMENT = (  # what rich reads: the terminal, and the Unicode version of its cell widths
    "TERM", "COLORTERM", "FORCE_COLOR", "NO_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE",
    "COLUMNS", "LINES", "JUPYTER_COLUMNS", "JUPYTER_LINES", "UNICODE_VERSION",
)  # fmt: skip
RUN_FILES = ("claims.json", "environment.json", "config.json")
Related = list[list[str]]  # [name as written in the note, title shown, href] per related paper

# What a stored text may hold besides printable text, newline and tab.
_SGR = r"\x1b\[[0-9;]*m"
_OSC8 = r"\x1b\]8;(?:id=[0-9-]*)?;[^\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]*\x1b\\"
_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069]")
_ESCAPES = {False: re.compile("(?!)"), True: re.compile(f"{_SGR}|{_OSC8}")}


def safe_text(text: str, colour: bool) -> bool:
    """Whether `text` holds no control character but newline, tab and, with `colour`, the SGR
    and OSC 8 sequences rich writes."""
    return _UNSAFE.search(_ESCAPES[colour].sub("", text)) is None


# --- the key --------------------------------------------------------------------------------


def _files(relative: str) -> list[Path]:
    path = REPO_ROOT / relative
    if relative.endswith(".py"):
        return [path]
    if relative == "templates":
        return sorted(Path(d) / f for d, _, names in os.walk(path) for f in names)
    return sorted(path.glob("*.py"))


@cache
def code_version() -> str:
    """SHA-256 over the source that renders a sheet (CODE), the note loader's version, the
    Python version and the RECORD of each of LIBRARIES."""
    h = hashlib.sha256(f"{KIND}/{FORMAT}\0{sys.version}\0{notecache.loader_version()}".encode())
    for relative in CODE:
        for path in _files(relative):
            h.update(f"\0{path.relative_to(REPO_ROOT).as_posix()}\0".encode())
            try:
                h.update(path.read_bytes())
            except OSError:  # removed since it was listed
                h.update(b"\0missing")
    for name, record in _library_records().items():
        h.update(f"\0{name}\0".encode() + record)
    return h.hexdigest()


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def _library_records() -> dict[str, bytes]:
    """Each of LIBRARIES: its dist-info folder and RECORD, the first found along sys.path
    (b"missing" when none is)."""
    wanted = {_normal(n) for n in LIBRARIES}
    found: dict[str, str] = {}
    for folder in sys.path:
        try:
            names = os.listdir(folder or ".")
        except OSError:
            continue
        for name in names:
            if name.endswith(".dist-info"):
                dist = _normal(name[: -len(".dist-info")].rsplit("-", 1)[0])
                if dist in wanted and dist not in found:
                    found[dist] = os.path.join(folder or ".", name)
    records = {}
    for dist in sorted(wanted):
        try:
            folder = found[dist]
            records[dist] = folder.encode() + b"\0" + Path(folder, "RECORD").read_bytes()
        except (KeyError, OSError):
            records[dist] = b"missing"
    return records


def _file_state(path: Path) -> str | None:
    """The SHA-256 of a run file as the runner's readers see it (links followed), `absent`,
    `folder` or `error`; None for a FIFO, a device or a huge file (not keyed)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except FileNotFoundError:
        return "absent"
    except OSError as exc:
        return f"error {exc.errno}"
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            return "folder"
        if not stat.S_ISREG(info.st_mode) or info.st_size > MAX_RUN_FILE_BYTES:
            return None
        with os.fdopen(fd, "rb", closefd=False) as f:
            return hashlib.sha256(f.read(MAX_RUN_FILE_BYTES + 1)).hexdigest()
    except OSError as exc:
        return f"error {exc.errno}"
    finally:
        os.close(fd)


def runs_state(runs_dir: Path, slug: str) -> str | None:
    """SHA-256 over what `runs/<slug>/` holds for a sheet: every name in it, and in each of its
    folders every name and the state of each run file and plot. None when it cannot be keyed."""
    h = hashlib.sha256()
    folder = runs_dir / slug
    try:
        names = sorted(os.listdir(folder))
    except (FileNotFoundError, NotADirectoryError):
        return "no runs"
    except OSError:
        return None
    for name in names:
        run = folder / name
        h.update(b"\0\0" + os.fsencode(name))
        try:
            is_dir = stat.S_ISDIR(os.stat(run).st_mode)
        except OSError:
            is_dir = False
        if not is_dir:
            h.update(b"\0-")
            continue
        try:
            children = sorted(os.listdir(run))
        except OSError:
            return None
        for child in children:
            h.update(b"\0" + os.fsencode(child))
            if child in RUN_FILES or child.endswith(".svg"):
                state = _file_state(run / child)
                if state is None:
                    return None
                h.update(b"\0" + state.encode())
    return h.hexdigest()


def console_state(out) -> dict | None:
    """What rich lays the Markdown out for; None for a console whose output is not plain text
    written to a file (Jupyter, legacy Windows) or not UTF-8."""
    if out.is_jupyter or out.legacy_windows or out.quiet or out.record:
        return None
    if out.encoding.replace("-", "").replace("_", "") != "utf8":
        return None
    size = out.size
    return {
        "width": size.width,
        "height": size.height,
        "color_system": out.color_system,
        "terminal": out.is_terminal,
        "dumb": out.is_dumb_terminal,
        "no_color": out.no_color,
        "encoding": out.encoding,
        "soft_wrap": out.soft_wrap,
        "tab_size": out.tab_size,
        "safe_box": out.safe_box,
        "environment": {name: os.environ.get(name) for name in ENVIRONMENT},
    }


def show_key(paper: Paper, library: Library, runs_dir: Path, lang: str, out) -> dict | None:
    """Everything the text of `show` depends on, but the related papers (named in the note:
    kept in the entry and checked on use); None when it cannot be keyed."""
    terminal = console_state(out)
    runs = runs_state(runs_dir, paper.slug)
    if terminal is None or runs is None:
        return None
    try:
        text = read_text_file(paper.note_path, paper.display(paper.note_path))
    except TextFileError:
        return None  # the render reports it
    return {
        "format": FORMAT,
        "code": code_version(),
        "slug": paper.slug,
        "note": os.path.abspath(paper.note_path),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "library": os.path.abspath(library.root),
        "runs_dir": os.path.abspath(runs_dir),
        "runs": runs,
        "lang": lang,
        "console": terminal,
    }


def related_now(names: list[str], library: Library) -> Related:
    """[name, title, href] of each related paper as repro.study.sheets shows it: the title and
    URL of the paper the name resolves to, "" for both when it resolves to none or to a note
    that does not load."""
    out = []
    for name in names:
        try:
            other = library.get(name)
            out.append([name, other.summary.title, other.summary.url])
        except (UnknownPaper, NoteError):
            out.append([name, "", ""])
    return out


# --- entries --------------------------------------------------------------------------------


def entry_path(key: dict) -> Path:
    """One entry per note, runs folder, language and colour or not: a new key replaces it."""
    from repro.lab.cache import cache_root

    name = "\0".join(
        [key["note"], key["runs_dir"], key["lang"], str(key["console"]["color_system"])]
    )
    return cache_root() / KIND / hashlib.sha256(name.encode()).hexdigest()[:16]


def _warn(entry: Path, why: str) -> None:
    import logging

    logging.getLogger(__name__).warning(
        "show cache entry %s/%s %s; rendering it again", KIND, one_line(entry.name), why
    )


def stored_text(key: dict, library: Library) -> str | None:
    """The text of the entry made with `key` whose related papers are unchanged; None if none
    is (warned when the entry is damaged or holds what may not reach a terminal)."""
    entry = entry_path(key)
    record = notecache._read_entry(entry, KIND, PAYLOAD, MAX_ENTRY_BYTES, _warn)
    if record is None or record.get("key") != key:
        return None  # none, or made from other inputs: not damage
    related, text = record.get("related"), record.get("output")
    if not (
        isinstance(related, list)
        and all(
            isinstance(r, list) and len(r) == 3 and all(isinstance(x, str) for x in r)
            for r in related
        )
        and isinstance(text, str)
    ):
        _warn(entry, "is damaged (not a show record)")
        return None
    if not safe_text(text, key["console"]["color_system"] is not None):
        _warn(entry, "holds control characters or escape sequences")
        return None
    if related_now([r[0] for r in related], library) != related:
        return None
    return text


def store(key: dict, related: Related, text: str, library: Library, key_after: dict | None) -> None:
    """Keep `text`, rendered with `key` (and `related`, as the sheet showed them), unless an
    input changed while it was rendered (`key_after`) or it holds what may not be printed."""
    if key_after != key or related_now([r[0] for r in related], library) != related:
        return
    if not safe_text(text, key["console"]["color_system"] is not None):
        return
    record = {"key": key, "related": related, "output": text}
    if len(json.dumps(record, ensure_ascii=True)) <= MAX_ENTRY_BYTES:
        notecache._write_entry(entry_path(key), record, KIND, PAYLOAD)


# --- show -----------------------------------------------------------------------------------


def emit(out, text: str) -> None:
    """Write `text` as `out.print` writes its rendered text (a closed pipe ends quietly)."""
    try:
        out.file.write(text)
        out.file.flush()
    except BrokenPipeError:
        out.on_broken_pipe()


def print_sheet(
    out, paper: Paper, library: Library, runs_dir: Path, lang: str,
    render: Callable[[], tuple[object, Related]],
) -> None:  # fmt: skip
    """Print `paper`'s sheet on the console `out`: the stored text when its key matches, else
    `render()` (rich's Markdown and the related papers the sheet shows), printed and stored."""
    key = show_key(paper, library, runs_dir, lang, out)
    if key is not None and (text := stored_text(key, library)) is not None:
        emit(out, text)
        return
    markdown, related = render()
    if key is None:
        out.print(markdown)
        return
    with out.capture() as captured:
        out.print(markdown)
    text = captured.get()
    store(key, related, text, library, show_key(paper, library, runs_dir, lang, out))
    emit(out, text)
