"""A user's files: reading a note or a repro.py, writing an output the user named.

Reading: without hanging, tracebacks or unbounded memory. Only regular files are read: a FIFO or
a device would block or never end. The file is opened non-blocking and checked with `fstat` on
the open descriptor, so a file swapped for a FIFO after a `stat` cannot slip through. Text must
be UTF-8; a bad byte is reported at its line and column.

Writing (`write_user_file`): atomic replacement only where a file is or will be; a FIFO or a
device is written to, never replaced (see the function for the rules).
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from repro.lab.errors import BadOption, PaperlabError

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


# --- writing a file the user named (`sheet -o`, `schema -o`, `drill --export`) -------------

Content = str | bytes | Callable[[Path], None]  # text, bytes, or a writer of a file at a path


def write_user_file(path: Path, content: Content) -> None:
    """Write `content` where the user asked, without ever replacing what the path points at.

    - `-` is stdout.
    - A path that does not exist, or a regular file, is replaced atomically: the content goes to
      a fresh temporary file beside it (unique name, O_EXCL, so never through a planted
      symlink), which is renamed over the target; it is removed if anything fails.
    - A symlink is followed: to a regular file (which is replaced, the link kept), or to a FIFO
      or character device (written to, like below); a dangling link is refused.
    - A FIFO or a character device (`/dev/null`, `/dev/stdout`) is written to directly and never
      replaced; a FIFO nobody reads is an error, not a hang.
    - A folder, a block device or a socket is refused.
    Every failure is one BadOption `cannot write PATH: why`."""
    if str(path) == "-":
        sys.stdout.flush()
        sys.stdout.buffer.write(_as_bytes(content))
        sys.stdout.flush()
        return
    try:
        _write_user_file(path, content)
    except OSError as exc:
        raise BadOption(f"cannot write {path}: {exc.strerror or exc}") from None


def _write_user_file(path: Path, content: Content) -> None:
    try:
        info = os.stat(path)  # follows a symlink: the type of what is finally there
    except FileNotFoundError:
        if os.path.islink(path):
            raise BadOption(f"cannot write {path}: a symlink to nothing") from None
        _replace_atomically(path, content)
        return
    if stat.S_ISREG(info.st_mode):
        _replace_atomically(Path(os.path.realpath(path)), content, info.st_mode)
    elif stat.S_ISFIFO(info.st_mode) or stat.S_ISCHR(info.st_mode):
        _write_through(path, _as_bytes(content))
    elif stat.S_ISDIR(info.st_mode):
        raise BadOption(f"cannot write {path}: it is a folder (give a file name)")
    else:
        raise BadOption(f"cannot write {path}: not a regular file, FIFO or character device")


def _as_bytes(content: Content) -> bytes:
    if isinstance(content, bytes):
        return content
    if isinstance(content, str):
        return content.encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="paperlab-") as folder:
        out = Path(folder) / "out"
        content(out)
        return out.read_bytes()


def _write_through(path: Path, data: bytes) -> None:
    """Write into an existing FIFO or character device (opened non-blocking: a FIFO with no
    reader fails at once with ENXIO instead of waiting forever)."""
    try:
        fd = os.open(path, os.O_WRONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        if exc.errno == errno.ENXIO:
            raise BadOption(f"cannot write {path}: no process is reading this FIFO") from None
        raise
    try:
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


def _replace_atomically(path: Path, content: Content, mode: int | None = None) -> None:
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(name)
    try:
        if callable(content):
            os.close(fd)
            fd = -1
            content(tmp)
        else:
            with os.fdopen(fd, "wb") as f:
                fd = -1
                f.write(content.encode("utf-8") if isinstance(content, str) else content)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, stat.S_IMODE(mode) if mode is not None else 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if fd >= 0:
            os.close(fd)
        tmp.unlink(missing_ok=True)
        raise
