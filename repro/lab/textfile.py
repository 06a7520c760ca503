"""Reading a user's text file (a note, a repro.py) without hanging, tracebacks or unbounded memory.

Only regular files are read: a FIFO or a device would block or never end. The file is opened
non-blocking and checked with `fstat` on the open descriptor, so a file swapped for a FIFO after
a `stat` cannot slip through. Text must be UTF-8; a bad byte is reported at its line and column.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from repro.lab.errors import PaperlabError

MAX_BYTES = 1 << 20  # 1 MiB: the longest note is ~20 kB; anything larger is not a note


class TextFileError(PaperlabError):
    """A file that cannot be read as text; the message reads `path:line:col: why`."""


def read_text_file(path: Path, display: str, max_bytes: int = MAX_BYTES) -> str:
    """The UTF-8 text of the regular file `path` (a UTF-8 BOM is dropped)."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        raise TextFileError(f"{display}:1:1: cannot read: {exc.strerror or exc}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise TextFileError(f"{display}:1:1: cannot read: not a regular file")
        if info.st_size > max_bytes:
            raise TextFileError(
                f"{display}:1:1: cannot read: {info.st_size:,} bytes is more than the "
                f"{max_bytes:,} a text file here may have"
            )
        with os.fdopen(fd, "rb", closefd=False) as stream:
            data = stream.read(max_bytes + 1)
    except OSError as exc:
        raise TextFileError(f"{display}:1:1: cannot read: {exc.strerror or exc}") from None
    finally:
        os.close(fd)
    if len(data) > max_bytes:  # it grew since fstat
        raise TextFileError(f"{display}:1:1: cannot read: more than {max_bytes:,} bytes")
    return decode_utf8(data, display)


def decode_utf8(data: bytes, display: str) -> str:
    """`data` as text, or a TextFileError at the line and column of the first bad byte."""
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        before = data[: exc.start].decode("utf-8-sig")
        line = before.count("\n") + 1
        col = len(before) - (before.rfind("\n") + 1) + 1
        hint = (
            " (a UTF-16 file? save it as UTF-8)" if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ""
        )
        raise TextFileError(
            f"{display}:{line}:{col}: not UTF-8: byte 0x{data[exc.start]:02x} "
            f"cannot be decoded{hint}"
        ) from None
