"""Output paths the user names: only regular files are replaced, nothing else is clobbered.

A FIFO and a character device are written to and keep their type; a symlink is followed to its
regular file, which is replaced while the link stays; a planted temporary-name symlink is never
followed; a folder is one `Error:` line; a failed write leaves no temporary file. The device node
is made with os.mknod in a temporary folder (never the real /dev), so that part needs root.
"""

from __future__ import annotations

import os
import stat
import threading
from pathlib import Path

import pytest
from click.testing import CliRunner

from paperlab import cli
from repro.lab.errors import BadOption
from repro.lab.textfile import write_user_file


def _sheet(out: Path, *extra: str):
    return CliRunner().invoke(cli, ["sheet", "toy", "-o", str(out), *extra])


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(".tmp"))


def test_a_new_file_and_a_regular_file_are_replaced_atomically(tmp_path: Path) -> None:
    target = tmp_path / "out.md"
    write_user_file(target, "one")
    target.chmod(0o640)
    write_user_file(target, "two")
    assert target.read_text() == "two" and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert _leftovers(tmp_path) == []


def test_a_fifo_is_written_to_and_stays_a_fifo(tmp_path: Path, library_dir: Path) -> None:
    fifo = tmp_path / "pipe.md"
    os.mkfifo(fifo)
    no_reader = _sheet(fifo)
    assert no_reader.exit_code == 2, no_reader.output
    assert no_reader.stderr == f"Error: cannot write {fifo}: no process is reading this FIFO\n"
    reader = os.open(fifo, os.O_RDONLY | os.O_NONBLOCK)  # a reader (the sheet fits the buffer)
    try:
        result = _sheet(fifo)
        got = os.read(reader, 1 << 20)
    finally:
        os.close(reader)
    assert result.exit_code == 0, result.output
    assert stat.S_ISFIFO(os.lstat(fifo).st_mode)
    assert got.startswith(b"# Toy: a paper for tests")


def test_a_symlink_is_followed_to_its_regular_file(tmp_path: Path, library_dir: Path) -> None:
    target = tmp_path / "real.md"
    target.write_text("old")
    link = tmp_path / "link.md"
    link.symlink_to(target)
    assert _sheet(link).exit_code == 0
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert target.read_text().startswith("# Toy: a paper for tests")
    dangling = tmp_path / "dangling.md"
    dangling.symlink_to(tmp_path / "nowhere" / "x.md")
    result = _sheet(dangling)
    assert result.exit_code == 2 and "a symlink to nothing" in result.stderr
    assert not (tmp_path / "nowhere").exists()


def test_a_planted_temporary_symlink_is_never_followed(tmp_path: Path, library_dir: Path) -> None:
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    for name in (".out.md.tmp", ".out.md.tmp.tmp", ".out.md.aaaaaaaa.tmp"):
        (tmp_path / name).symlink_to(victim)  # the old fixed name, and look-alikes
    assert _sheet(tmp_path / "out.md").exit_code == 0
    assert victim.read_text() == "keep me"
    assert (tmp_path / "out.md").read_text().startswith("# Toy")
    assert all((tmp_path / n).is_symlink() for n in (".out.md.tmp", ".out.md.aaaaaaaa.tmp"))


def test_a_character_device_is_written_to_not_replaced(tmp_path: Path, library_dir: Path) -> None:
    null = tmp_path / "null"
    try:
        os.mknod(null, 0o666 | stat.S_IFCHR, os.makedev(1, 3))  # what /dev/null is
    except PermissionError:
        pytest.skip("making a device node needs root")
    for fmt in ("md", "html", "anki"):
        result = _sheet(null, "--format", fmt)
        assert result.exit_code == 0, result.output
        assert stat.S_ISCHR(os.lstat(null).st_mode), f"{fmt}: the device was replaced"
    full = tmp_path / "full"
    os.mknod(full, 0o666 | stat.S_IFCHR, os.makedev(1, 7))  # what /dev/full is
    result = _sheet(full)
    assert result.exit_code == 2 and result.stderr.startswith(f"Error: cannot write {full}: ")
    assert stat.S_ISCHR(os.lstat(full).st_mode)
    assert _leftovers(tmp_path) == []


def test_a_folder_where_a_file_goes_is_an_error(tmp_path: Path, library_dir: Path) -> None:
    site = tmp_path / "site"
    (site / "toy.html").mkdir(parents=True)  # the page's name is taken by a folder
    result = CliRunner().invoke(cli, ["sheet", "--all", "--format", "html", "-o", f"{site}/"])
    assert result.exit_code == 2
    assert (
        result.stderr
        == f"Error: cannot write {site / 'toy.html'}: it is a folder (give a file name)\n"
    )
    schema = CliRunner().invoke(cli, ["schema", "-o", str(site)])
    assert schema.exit_code == 2 and "Traceback" not in schema.output


def test_dash_is_stdout(library_dir: Path) -> None:
    result = CliRunner().invoke(cli, ["sheet", "toy", "-o", "-"])
    assert result.exit_code == 0 and result.stdout.startswith("# Toy: a paper for tests")
    assert not Path("-").exists()
    schema = CliRunner().invoke(cli, ["schema", "-o", "-"])
    assert schema.exit_code == 0 and schema.stdout.lstrip().startswith("{")


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    def writer(path: Path) -> None:
        path.write_bytes(b"half")
        raise OSError(28, "No space left on device")

    target = tmp_path / "deck.apkg"
    target.write_bytes(b"previous")
    with pytest.raises(BadOption, match="cannot write .*No space left on device"):
        write_user_file(target, writer)
    assert target.read_bytes() == b"previous" and _leftovers(tmp_path) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deck.apkg"]


def test_two_writers_never_share_a_temporary_file(tmp_path: Path) -> None:
    target = tmp_path / "out.md"
    errors: list[BaseException] = []

    def write(n: int) -> None:
        try:
            for _ in range(20):
                write_user_file(target, f"writer {n}\n" * 2000)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    text = target.read_text()
    assert len(set(text.splitlines())) == 1  # one writer's whole content, never a mix
    assert _leftovers(tmp_path) == []
