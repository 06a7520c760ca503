"""The show cache: `paperlab show` and `list` print what they printed before when nothing they
show changed.

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
- the options (`--lang`), and what rich reads to set up its console, read without rich
  (`terminal_state`): standard output a terminal or not, its encoding, the terminal sizes, and
  the environment variables rich reads (TERM, COLORTERM, FORCE_COLOR, NO_COLOR, TTY_COMPATIBLE,
  TTY_INTERACTIVE, COLUMNS, LINES, UNICODE_VERSION for the width of characters …). A hit then
  imports no rich at all.

`list` is keyed the same way by the rows it shows (each paper's title, year, priority, tags and
claim counts, or the first problem of a note that does not load), the code and the console: its
rows cost little to read from the note cache, but rich's table, imported and laid out, was about
a third of the command's time.

The key is computed again after a render and the entry is written only if it did not change
meanwhile (an edit or a new run while rendering). Nothing is cached when the output cannot be
keyed safely: IPython (maybe a Jupyter notebook), Windows, an encoding other than UTF-8, or a
runs folder holding a FIFO or device where a run file is read.

An entry verifies as every cache entry does (regular files whose SHA-256 match `entry.json`);
its text must hold no control character but newline and tab, and no escape sequence but the
SGR colours (`ESC [ … m`) and the OSC 8 hyperlinks of rich's Markdown links, and these only
when rich would give the console colours (`colour_possible`). Anything else is one warning
line and a fresh render.
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
from typing import Any

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


def terminal_state(stream=None) -> dict | None:
    """What rich reads when it sets up a console on `stream` (default: standard output) and lays
    text out for it, read without importing rich (an import that was a fifth of a warm `list`):
    whether the stream is a terminal, its encoding, the terminal size of descriptors 0, 1 and 2
    (rich asks them in this order), the module of standard input (rich treats IDLE apart) and
    the environment variables of ENVIRONMENT. None where the output is not keyed: under IPython
    (rich may see a Jupyter notebook), on Windows (rich asks the console for its features) and
    for an encoding other than UTF-8."""
    import builtins

    stream = sys.stdout if stream is None else stream
    if hasattr(builtins, "get_ipython") or sys.platform == "win32":
        return None
    encoding = (getattr(stream, "encoding", "utf-8") or "utf-8").lower()
    if encoding.replace("-", "").replace("_", "") != "utf8":
        return None
    try:
        terminal = bool(stream.isatty())
    except (AttributeError, ValueError):  # as rich: no isatty, or a closed file
        terminal = False
    sizes: list[list[int] | None] = []
    for fd in (0, 1, 2):
        try:
            sizes.append(list(os.get_terminal_size(fd)))
        except (AttributeError, ValueError, OSError):
            sizes.append(None)
    return {
        "platform": sys.platform,
        "isatty": terminal,
        "encoding": encoding,
        "terminal_sizes": sizes,
        "stdin": str(getattr(sys.stdin, "__module__", "")),
        "environment": {name: os.environ.get(name) for name in ENVIRONMENT},
    }


def colour_possible(state: dict) -> bool:
    """Whether rich gives a console in `state` a colour system, as rich decides it on Linux and
    macOS (Console.is_terminal and not is_dumb_terminal): it bounds the escape sequences a stored
    text may hold (tests/cli/test_show_cache.py compares it with rich's own answer)."""
    env = state["environment"]
    compatible, force = env["TTY_COMPATIBLE"] or "", env["FORCE_COLOR"]
    if state["stdin"].startswith("idlelib"):
        terminal = False
    elif compatible in ("0", "1"):
        terminal = compatible == "1"
    elif force is not None:
        terminal = force != ""
    else:
        terminal = state["isatty"]
    return terminal and (env["TERM"] or "").lower() not in ("dumb", "unknown")


def show_key(paper: Paper, library: Library, runs_dir: Path, lang: str) -> dict | None:
    """Everything the text of `show` depends on, but the related papers (named in the note:
    kept in the entry and checked on use); None when it cannot be keyed."""
    terminal = terminal_state()
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
        "command": "show",
        "slug": paper.slug,
        "note": os.path.abspath(paper.note_path),
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
        "library": os.path.abspath(library.root),
        "runs_dir": os.path.abspath(runs_dir),
        "runs": runs,
        "lang": lang,
        "console": terminal,
    }


def list_key(rows: list[dict], library: Library, runs_dir: Path) -> dict | None:
    """Everything the text of `list` depends on (`rows`: what it shows, as `list --json` prints
    it); None when it cannot be keyed."""
    terminal = terminal_state()
    if terminal is None:
        return None
    return {
        "format": FORMAT,
        "code": code_version(),
        "command": "list",
        "library": os.path.abspath(library.root),
        "runs_dir": os.path.abspath(runs_dir),
        "rows": json.loads(json.dumps(rows)),  # as an entry reads back (tuples as lists)
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
    """One entry per command and what it shows (a note, or a library for `list`), runs folder,
    language and colour or not: a new key replaces it."""
    from repro.lab.cache import cache_root

    subject = f"{key['note']}\0{key['lang']}" if key["command"] == "show" else key["library"]
    env = key["console"]["environment"]  # what picks rich's colour system, when it colours
    colour = f"{env['TERM']} {env['COLORTERM']}" if colour_possible(key["console"]) else "plain"
    name = "\0".join([key["command"], subject, key["runs_dir"], colour])
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
    if not safe_text(text, colour_possible(key["console"])):
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
    if not safe_text(text, colour_possible(key["console"])):
        return
    record = {"key": key, "related": related, "output": text}
    if len(json.dumps(record, ensure_ascii=True)) <= MAX_ENTRY_BYTES:
        notecache._write_entry(entry_path(key), record, KIND, PAYLOAD)


# --- show -----------------------------------------------------------------------------------


def emit(text: str) -> None:
    """Write `text` to standard output; a closed pipe ends quietly, as rich's console ends."""
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
    except BrokenPipeError:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        raise SystemExit(1) from None


def print_cached(
    make_console: Callable[[], Any], library: Library, make_key: Callable[[], dict | None],
    render: Callable[[], tuple[object, Related]],
) -> None:  # fmt: skip
    """Print the stored text when its key (`make_key()`) matches, else `render()` (what rich
    prints, and the related papers it shows), printed on `make_console()` and stored."""
    key = make_key()
    if key is not None and (text := stored_text(key, library)) is not None:
        emit(text)
        return
    renderable, related = render()
    out = make_console()
    if key is None:
        out.print(renderable)
        return
    with out.capture() as captured:
        out.print(renderable)
    text = captured.get()
    store(key, related, text, library, make_key())
    emit(text)


def print_sheet(
    make_console: Callable[[], Any], paper: Paper, library: Library, runs_dir: Path, lang: str,
    render: Callable[[], tuple[object, Related]],
) -> None:  # fmt: skip
    """Print `paper`'s sheet: `render()` gives rich's Markdown and the related papers it shows."""
    print_cached(make_console, library, lambda: show_key(paper, library, runs_dir, lang), render)


def print_listing(
    make_console: Callable[[], Any], rows: list[dict], library: Library, runs_dir: Path,
    render: Callable[[], object],
) -> None:  # fmt: skip
    """Print the table of `list`: `render()` gives it, for `rows`, as a rich renderable."""
    print_cached(
        make_console, library, lambda: list_key(rows, library, runs_dir), lambda: (render(), [])
    )
