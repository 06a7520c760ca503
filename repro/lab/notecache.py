"""The note cache: what listings show of each note, so `list` imports neither YAML nor pydantic.

Loading a note (strict YAML, then the pydantic schema) is most of what `paperlab list` costs: the
schema's import alone takes longer than everything else the command does. So each note that
loads is summarised (`NoteSummary`: title, year, priority, tags, aliases, URL, claim ids and
kinds) into an entry of the verified cache (repro.lab.cache), `<cache>/notes/<key>/`, the key
hashing the note's absolute path, and the next listing reads the summary.

An entry is used only when everything it was made from is unchanged:

- the entry verifies as every cache entry does: a real folder of regular files (no symlink, no
  FIFO) whose `entry.json` names this kind and key and holds the SHA-256 of `summary.json`;
- the note's path, size and `mtime_ns`, and the SHA-256 of its text (read with the same checks
  as a full load: a regular file of at most 1 MiB, UTF-8): an edit changes the hash even where
  it keeps the size and the file system's clock did not tick;
- the loader: a hash of the source of the modules that read and validate notes, so an edit of
  the schema or the YAML rules rebuilds every entry;
- the summary: JSON (reading it never runs code) of exactly the expected shape, every string
  checked again for the control characters the loader refuses.

An entry made from other inputs is rebuilt from a full load; one that fails verification or is
damaged (not JSON, the wrong shape) also gives one warning line (logger `repro.lab.notecache`),
like any cache entry. `validate`, `check`, `sheet` and a rendering `show` read the notes
themselves: only listing facts (and the titles and URLs of related papers) come from here. The
cache is a speed-up, never a requirement: a cache folder that cannot be written means no caching.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import stat
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from repro.lab.errors import NoteError, one_line
from repro.lab.textfile import TextFileError, read_text_file

FORMAT = 1  # the layout of a record; the loader hash covers everything else
KIND = "notes"  # the cache's folder of note entries
PAYLOAD = "summary.json"
MAX_ENTRY_BYTES = 256 * 1024  # a summary is a few kB
# The modules whose code decides what a note loads to (this one: what a summary holds).
LOADER_MODULES = ("note.py", "strict_yaml.py", "textfile.py", "notecache.py")
LOADER_LIBRARIES = ("pydantic", "yaml")

# What the schema (repro.lab.note) allows, restated for checking an entry without pydantic;
# tests/lab/test_notecache.py keeps the two equal.
SLUG_RE = re.compile(r"[a-z0-9][a-z0-9-]*")
YEAR_RANGE = (1950, 2100)
PRIORITIES = ("must-know", "core", "further")
CLAIM_KINDS = ("derived", "measured", "cited")
CONTROL = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")  # = strict_yaml.CONTROL


class DamagedEntry(ValueError):
    """An entry that is not what this module writes."""


@dataclass(frozen=True)
class ClaimSummary:
    id: str
    kind: str


@dataclass(frozen=True)
class NoteSummary:
    """The facts of a note that listings, aliases and links need."""

    title: str
    year: int | None
    priority: str
    tags: tuple[str, ...]
    aliases: tuple[str, ...]
    url: str
    claims: tuple[ClaimSummary, ...]

    @classmethod
    def of(cls, note) -> NoteSummary:
        """The summary of a loaded `repro.lab.note.Note`."""
        return cls(
            title=note.title,
            year=note.year,
            priority=note.priority,
            tags=tuple(note.tags),
            aliases=tuple(note.aliases),
            url=note.url,
            claims=tuple(ClaimSummary(c.id, c.kind) for c in note.claims),
        )

    def to_json(self) -> dict:
        return {
            "title": self.title,
            "year": self.year,
            "priority": self.priority,
            "tags": list(self.tags),
            "aliases": list(self.aliases),
            "url": self.url,
            "claims": [[c.id, c.kind] for c in self.claims],
        }

    @classmethod
    def from_json(cls, data: object) -> NoteSummary:
        """The summary `to_json` wrote; DamagedEntry for anything else."""
        if not isinstance(data, dict) or set(data) != set(_FIELDS):
            raise DamagedEntry("not a note summary")
        year = data["year"]
        if year is not None and (
            type(year) is not int or not YEAR_RANGE[0] <= year <= YEAR_RANGE[1]
        ):
            raise DamagedEntry("year")
        if data["priority"] not in PRIORITIES:
            raise DamagedEntry("priority")
        claims = _list(data["claims"], "claims")
        if not all(isinstance(c, list) and len(c) == 2 for c in claims):
            raise DamagedEntry("claims")
        ids = [_slug(c[0], "claim id") for c in claims]
        if len(set(ids)) != len(ids) or not all(c[1] in CLAIM_KINDS for c in claims):
            raise DamagedEntry("claims")
        url = _text(data["url"], "url")
        if not url.startswith(("http://", "https://")):
            raise DamagedEntry("url")
        return cls(
            title=_text(data["title"], "title"),
            year=year,
            priority=data["priority"],
            tags=tuple(_text(t, "tag") for t in _list(data["tags"], "tags", at_least=1)),
            aliases=tuple(_slug(a, "alias") for a in _list(data["aliases"], "aliases")),
            url=url,
            claims=tuple(ClaimSummary(cid, kind) for cid, kind in claims),
        )


_FIELDS = ("title", "year", "priority", "tags", "aliases", "url", "claims")


def _list(value: object, what: str, at_least: int = 0) -> list:
    if not isinstance(value, list) or len(value) < at_least:
        raise DamagedEntry(what)
    return value


def _text(value: object, what: str) -> str:
    if not isinstance(value, str) or not value or CONTROL.search(value):
        raise DamagedEntry(what)
    return value


def _slug(value: object, what: str) -> str:
    if not isinstance(value, str) or not SLUG_RE.fullmatch(value):
        raise DamagedEntry(what)
    return value


# --- where entries live and what they are checked against ----------------------------------


@cache
def loader_version() -> str:
    """SHA-256 over the source of LOADER_MODULES and the version files of the libraries they
    validate with: an edit of the loader, or another pydantic or PyYAML, rebuilds every entry.
    (The libraries are found, not imported: importing pydantic is what the cache saves.)"""
    h = hashlib.sha256(f"{KIND}/{FORMAT}".encode())
    here = Path(__file__).parent
    files = [here / name for name in LOADER_MODULES]
    for package in LOADER_LIBRARIES:
        spec = importlib.util.find_spec(package)
        folder = Path(spec.origin).parent if spec is not None and spec.origin else None
        files += [folder / "__init__.py", folder / "version.py"] if folder else []
    for path in files:
        try:
            h.update(str(path).encode() + b"\0" + path.read_bytes())
        except OSError:
            h.update(str(path).encode() + b"\0missing")
    return h.hexdigest()


def entry_path(note_path: Path) -> Path:
    """The cache entry (a folder) of the note at `note_path`, named by its absolute path."""
    from repro.lab.cache import cache_root

    absolute = os.path.abspath(note_path)
    return cache_root() / KIND / hashlib.sha256(absolute.encode()).hexdigest()[:16]


def _warn(entry: Path, why: str) -> None:
    import logging

    logging.getLogger(__name__).warning(
        "note cache entry %s/%s %s; rebuilding it", KIND, one_line(entry.name), why
    )


def _read_entry(
    entry: Path, kind: str = KIND, payload: str = PAYLOAD, max_bytes: int = MAX_ENTRY_BYTES,
    warn: Callable[[Path, str], None] = _warn,
) -> dict | None:  # fmt: skip
    """The record in `entry`; None when there is none, or it is damaged (`warn`ed). The keyword
    arguments serve other kinds of entry written by `_write_entry` (repro.cli.show_cache)."""
    from repro.lab.cache import entry_problem

    try:
        before = os.lstat(entry)
    except OSError:
        return None
    why = entry_problem(entry, kind, entry.name)  # regular files whose SHA-256 match its record
    if why is None:
        try:
            data = _read_regular(entry / payload, max_bytes)  # verified, but may be swapped since
            record = json.loads(data)
            if isinstance(record, dict):
                return record
            why = "is damaged (not a JSON object)"
        except (OSError, ValueError) as exc:  # DamagedEntry, JSONDecodeError, UnicodeDecodeError
            why = f"is damaged ({type(exc).__name__})"
    if _same_file(entry, before):  # not a rewrite by another process while this one read it
        warn(entry, why)
    return None


def _read_regular(path: Path, max_bytes: int = MAX_ENTRY_BYTES) -> bytes:
    """The bytes of the regular file at `path`, opened without following a link or waiting on
    a FIFO; DamagedEntry for anything else."""
    flags = os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
    fd = os.open(path, flags)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise DamagedEntry("not a regular file")
        with os.fdopen(fd, "rb", closefd=False) as f:
            data = f.read(max_bytes + 1)
    finally:
        os.close(fd)
    if len(data) > max_bytes:
        raise DamagedEntry("too large")
    return data


def _same_file(path: Path, before: os.stat_result) -> bool:
    try:
        return os.path.samestat(os.lstat(path), before)
    except OSError:
        return False


def _write_entry(entry: Path, record: dict, kind: str = KIND, payload: str = PAYLOAD) -> None:
    """Replace `entry` with one holding `record`, atomically: a reader sees the old entry, none,
    or the new one. Silently nothing when the cache folder cannot be written."""
    import shutil
    import tempfile

    from repro.lab import cache

    prefix = f".{entry.name}-{os.getpid()}-"  # what cache.remove_stale cleans after a kill
    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=entry.parent))
    except OSError:
        return
    old = None
    try:
        (tmp / payload).write_text(json.dumps(record, ensure_ascii=True), encoding="utf-8")
        cache._write_manifest(tmp, kind, entry.name)
        if os.path.lexists(entry):
            if os.path.islink(entry) or not os.path.isdir(entry):
                os.unlink(entry)  # a planted link or file goes, never what a link points at
            else:
                old = Path(tempfile.mkdtemp(prefix=prefix, dir=entry.parent))
                os.rename(entry, old / "entry")
        os.rename(tmp, entry)
    except OSError:  # a full disk, or another process wrote the entry first: fine either way
        shutil.rmtree(tmp, ignore_errors=True)
    finally:
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


# --- the summary of one note ----------------------------------------------------------------


def note_summary(note_path: Path, display_path: str) -> NoteSummary:
    """The summary of the note at `note_path`: from its entry when that was made from this very
    text by this loader, else from a full load (which writes the entry).

    Raises NoteError, with the positions a full load gives, for a note that does not load
    (those are not cached: a broken note is loaded, and reported, every time)."""
    try:
        info = os.stat(note_path)
        text = read_text_file(note_path, display_path)
    except OSError as exc:
        raise NoteError([f"{display_path}:1:1: cannot read: {exc.strerror or exc}"]) from None
    except TextFileError as exc:
        raise NoteError([one_line(str(exc))]) from None
    key = {
        "format": FORMAT,
        "kind": KIND,
        "loader": loader_version(),
        "path": os.path.abspath(note_path),
        "size": info.st_size,
        "mtime_ns": info.st_mtime_ns,
        "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
    }
    entry = entry_path(note_path)
    record = _read_entry(entry)
    if record is not None and all(record.get(k) == v for k, v in key.items()):
        try:
            return NoteSummary.from_json(record.get("summary"))
        except DamagedEntry as exc:
            _warn(entry, f"is damaged ({exc})")
    from repro.lab.note import parse_note

    summary = NoteSummary.of(parse_note(text, display_path))  # the text that was hashed
    _write_entry(entry, {**key, "summary": summary.to_json()})
    return summary
