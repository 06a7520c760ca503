"""The show cache: a hit prints what a fresh render prints; any change renders again; a damaged or
tampered entry is refused with one warning; a warm `show` imports none of the rendering."""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

import repro.study.sheets as sheets
from paperlab import cli
from repro.cli import show_cache
from repro.lab import cache
from repro.lab.claims import ClaimResult, Verdict
from repro.lab.library import Library

REPO = Path(__file__).resolve().parents[2]
COLOUR = {"FORCE_COLOR": "1", "TERM": "xterm-256color", "COLORTERM": None, "NO_COLOR": None}
PLAIN = {"FORCE_COLOR": None, "NO_COLOR": None, "TTY_COMPATIBLE": None}


@pytest.fixture
def cache_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("PAPERLAB_CACHE", str(folder))
    for name in show_cache.ENVIRONMENT:  # the shell's terminal is not the test's
        monkeypatch.delenv(name, raising=False)
    return folder


@pytest.fixture
def renders(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The slugs of the sheets rendered (a hit renders none)."""
    return counted_calls(monkeypatch, sheets, "render_sheet", lambda sheet, *rest: sheet.slug)


def counted_calls(monkeypatch: pytest.MonkeyPatch, owner, name: str, note) -> list:
    """`owner.name` still called, and `note(*args)` of each call listed."""
    calls: list = []
    real = getattr(owner, name)

    def counted(*args, **kwargs):
        calls.append(note(*args, **kwargs))
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)
    return calls


def paperlab(*args: str, env: dict | None = None) -> str:
    result = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def show(*args: str, env: dict | None = None) -> str:
    return paperlab("show", *args, env=env)


def uncached(monkeypatch: pytest.MonkeyPatch, *args: str, env: dict | None = None) -> str:
    """What `show` prints with the cache out of the way: rich printing the Markdown itself."""
    with monkeypatch.context() as m:
        m.setattr(show_cache, "show_key", lambda *a: None)
        return show(*args, env=env)


def same_links(text: str) -> str:
    """rich numbers each OSC 8 hyperlink from a random start: two renders differ there only."""
    return re.sub(r"\x1b\]8;id=[0-9-]*;", "\x1b]8;id=;", text)


def entries(cache_dir: Path) -> list[Path]:
    folder = cache_dir / show_cache.KIND
    return (
        sorted(p for p in folder.iterdir() if not p.name.startswith(".")) if folder.exists() else []
    )


@pytest.mark.parametrize("slug", ["lora", "deepseek-v2", "transformer"])
def test_a_hit_prints_what_a_fresh_render_prints(
    slug: str, cache_dir: Path, renders: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Real papers (deepseek-v2 has stored runs with plots), both languages, plain and colour."""
    monkeypatch.setenv("PAPERLAB_PAPERS", str(REPO / "papers"))
    monkeypatch.setenv("PAPERLAB_RUNS", str(REPO / "runs"))
    for lang in ("en", "zh"):
        for env in (PLAIN, COLOUR):
            first = show(slug, "--lang", lang, env=env)
            count = len(renders)
            again = show(slug, "--lang", lang, env=env)
            assert len(renders) == count  # a hit
            assert again == first
            assert same_links(again) == same_links(
                uncached(monkeypatch, slug, "--lang", lang, env=env)
            )
    assert len(entries(cache_dir)) == 4  # one entry per language and colour or not
    plain, colour = show(slug, env=PLAIN), show(slug, env=COLOUR)
    assert "\x1b" not in plain and "\x1b[" in colour and "\x1b]8;id=" in colour


@pytest.fixture
def related(library_dir: Path, toy_copy, cache_dir: Path) -> Path:
    """`toy` names `other` (in the library) and `ghost` (not yet) as related papers."""
    toy_copy(
        "other",
        {'title: "Toy:': 'title: "Other:', "aliases: [toy-alias]": "aliases: [other-alias]"},
    )
    toy = library_dir / "toy" / "note.yaml"
    toy.write_text(toy.read_text().replace("related: []", "related: [other-alias, ghost]"))
    return library_dir


def test_a_repeat_is_a_hit_and_equals_a_fresh_render(
    related: Path, renders: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    first = show("toy")
    assert "Other: a paper for tests" in first and "ghost (not in this library)" in first
    assert show("toy") == show("toy-alias") == first
    assert renders == ["toy"]
    assert uncached(monkeypatch, "toy") == first


def test_an_edit_of_the_same_size_and_mtime_renders_again(
    related: Path, renders: list[str]
) -> None:
    note = related / "toy" / "note.yaml"
    show("toy")
    before = os.stat(note)
    note.write_text(note.read_text().replace('title: "Toy:', 'title: "Tay:'))
    os.utime(note, ns=(before.st_atime_ns, before.st_mtime_ns))  # as if the clock did not tick
    assert os.stat(note).st_size == before.st_size
    assert "Tay: a paper for tests" in show("toy")
    assert renders == ["toy", "toy"]


def test_an_edit_of_a_related_note_renders_again(related: Path, renders: list[str]) -> None:
    show("toy")
    note = related / "other" / "note.yaml"
    note.write_text(note.read_text().replace('title: "Other:', 'title: "Renamed:'))
    assert "Renamed: a paper for tests" in show("toy")
    assert len(renders) == 2
    shutil.copytree(related / "other", related / "ghost")  # the missing paper arrives
    ghost = related / "ghost" / "note.yaml"
    ghost.write_text(ghost.read_text().replace("[other-alias]", "[ghost-alias]"))
    assert "ghost (not in this library)" not in show("toy")
    assert len(renders) == 3
    shutil.rmtree(related / "other")  # the alias no longer resolves
    assert "other-alias (not in this library)" in show("toy")
    assert len(renders) == 4
    show("toy")
    assert len(renders) == 4


def store_verified_run() -> Path:
    """A run of toy in which two-plus-two was verified; its folder."""
    run = Path(os.environ["PAPERLAB_RUNS"]) / "toy" / "20260101T000000000000Z"
    run.mkdir(parents=True)
    result = ClaimResult(
        paper="toy", id="two-plus-two", statement="Two plus two is four.", kind="derived",
        expected=4, tolerance="exact", verdict=Verdict.VERIFIED, measured=4,
        when="2026-01-01T00:00:00Z",
    )  # fmt: skip
    (run / "claims.json").write_text(json.dumps([result.to_json()]))
    return run


def test_a_new_run_renders_again(library_dir: Path, cache_dir: Path, renders: list[str]) -> None:
    assert "No stored run yet" in show("toy")
    run = store_verified_run()
    out = show("toy")
    assert "20260101T000000000000Z" in out and "2026-01-01T00:00:00Z" in out
    assert len(renders) == 2
    (run / "environment.json").write_text(json.dumps({"git_commit": "abcdef0123456789"}))
    assert "abcdef012345" in show("toy")
    (run / "plot.svg").write_text("<svg/>")
    assert "plot.svg" in show("toy")
    assert len(renders) == 4
    show("toy")
    assert len(renders) == 4


def test_width_colour_and_language_each_have_their_render(
    library_dir: Path, cache_dir: Path, renders: list[str]
) -> None:
    variants = [
        ((), None),
        ((), {"COLUMNS": "100"}),
        ((), COLOUR),
        ((), {**COLOUR, "TERM": "xterm"}),  # 8 colours instead of 256
        ((), {**COLOUR, "NO_COLOR": "1"}),
        ((), {"FORCE_COLOR": "1", "TERM": "dumb"}),
        (("--lang", "zh"), None),
        ((), {"UNICODE_VERSION": "9.0.0"}),  # rich's cell widths of another Unicode
    ]
    outputs = []
    for args, env in variants:
        outputs.append(show("toy", *args, env=env))
        assert len(renders) == len(outputs)  # each one rendered …
        assert same_links(show("toy", *args, env=env)) == same_links(outputs[-1])
        assert len(renders) == len(outputs)  # … then printed from its entry
    plain, narrow, colour, dumb, zh = (outputs[i] for i in (0, 1, 2, 5, 6))
    assert len({plain, narrow, same_links(colour), dumb, zh}) == 5
    # One entry per language and colour system: a render with other inputs replaces it.
    assert len(entries(cache_dir)) == 4  # en plain, en 256 colours, en 8 colours, zh plain


def test_other_code_renders_again(
    library_dir: Path, cache_dir: Path, renders: list[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    show("toy")
    code_version = show_cache.code_version
    records = show_cache._library_records()
    assert all(v != b"missing" for k, v in records.items() if k not in ("uc_micro_py",))
    monkeypatch.setattr(show_cache, "_library_records", lambda: {**records, "rich": b"other"})
    code_version.cache_clear()
    try:
        show("toy")
        assert len(renders) == 2
        monkeypatch.setattr(show_cache, "code_version", lambda: "0" * 64)
        show("toy")
        show("toy")
        assert len(renders) == 3
    finally:
        code_version.cache_clear()  # the next test hashes the real libraries again


def test_the_code_hash_covers_the_sources() -> None:
    relative = {
        p.relative_to(REPO).as_posix() for r in show_cache.CODE for p in show_cache._files(r)
    }
    expected = {
        "paperlab.py", "repro/cli/notes.py", "repro/cli/show_cache.py", "repro/lab/note.py",
        "repro/study/sheets.py", "repro/study/mathtext.py", "templates/sheet.md.j2",
    }  # fmt: skip
    assert expected <= relative
    assert re.fullmatch(r"[0-9a-f]{64}", show_cache.code_version())


def test_a_cold_show_imports_only_keyed_code(library_dir: Path, cache_dir: Path) -> None:
    """Every module of this repository a render imports is hashed, and every library it imports
    has its RECORD in the key."""
    script = """
import json, sys
before = set(sys.modules)
from paperlab import cli
cli.main(["show", "toy"], prog_name="paperlab", standalone_mode=False)
print(json.dumps(sorted({m.split(".")[0] for m in set(sys.modules) - before} | {
    m for m in sys.modules if m.startswith("repro")})))
"""
    out = run_python(script)
    assert out.returncode == 0, out.stderr
    modules = json.loads(out.stdout.strip().splitlines()[-1])
    keyed = {
        p.with_suffix("").relative_to(REPO).as_posix().replace("/", ".").removesuffix(".__init__")
        for r in show_cache.CODE
        for p in show_cache._files(r)
        if p.suffix == ".py"
    }
    repro = {m for m in modules if m.startswith("repro")}
    assert "repro.study.sheets" in repro and repro <= keyed, repro - keyed
    from importlib.metadata import packages_distributions

    owners = packages_distributions()
    wanted = {show_cache._normal(n) for n in show_cache.LIBRARIES}
    libraries = {show_cache._normal(d) for m in modules for d in owners.get(m, [])}
    assert libraries - {"paperlab"} <= wanted, libraries - wanted


def test_related_papers_are_resolved_as_the_sheet_resolves_them(cache_dir: Path) -> None:
    library = Library(REPO / "papers")
    for paper in library.papers.values():
        shown = sheets._related(paper, library, lambda other: other.summary.url)
        names = [r.slug for r in shown]
        assert show_cache.related_now(names, library) == [[r.slug, r.title, r.href] for r in shown]
    assert show_cache.related_now(["no-such-paper"], library) == [["no-such-paper", "", ""]]


# --- damaged, tampered, odd entries ---------------------------------------------------------


def only_entry(cache_dir: Path) -> Path:
    (entry,) = entries(cache_dir)
    return entry


def rewrite(entry: Path, data: bytes, *, sign: bool) -> None:
    """Replace the entry's payload; `sign`: record its new SHA-256, as a forger would."""
    (entry / show_cache.PAYLOAD).write_bytes(data)
    if sign:
        (entry / cache.MANIFEST).unlink()
        cache._write_manifest(entry, show_cache.KIND, entry.name)


def with_output(raw: bytes, change) -> bytes:
    record = json.loads(raw)
    record["output"] = change(record["output"])
    return json.dumps(record).encode()


INJECTED = {  # what is put in front of a stored text, and in a render of which colours
    "a window title (OSC 0)": ("\x1b]0;pwned\x07", COLOUR),
    "clear the screen (CSI)": ("\x1b[2J", COLOUR),
    "a cursor move": ("\x1b[10;10H", COLOUR),
    "a C1 CSI": ("\x9b31m", COLOUR),
    "a bell": ("\x07", PLAIN),
    "a carriage return": ("\rpaperlab: all claims verified", PLAIN),
    "a bidi override": ("\u202eevil", COLOUR),
    "a colour in a plain render": ("\x1b[31m", PLAIN),
    "a hyperlink in a plain render": ("\x1b]8;id=1;https://e.example\x1b\\x\x1b]8;;\x1b\\", PLAIN),
    "a hyperlink holding an escape": ("\x1b]8;;https://e.example/\x1b[2J\x1b\\", COLOUR),
    "a hyperlink ended by BEL": ("\x1b]8;;https://e.example/\x07x\x1b]8;;\x07", COLOUR),
}


@pytest.mark.parametrize("what", INJECTED)
def test_an_injected_escape_is_refused_even_when_re_signed(
    library_dir: Path, cache_dir: Path, renders: list[str], caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch, what: str,
) -> None:  # fmt: skip
    injected, env = INJECTED[what]
    good = same_links(show("toy", env=env))
    entry = only_entry(cache_dir)
    payload = (entry / show_cache.PAYLOAD).read_bytes()
    rewrite(entry, with_output(payload, lambda text: injected + text), sign=True)
    assert cache.entry_problem(entry, show_cache.KIND, entry.name) is None  # it verifies
    with caplog.at_level(logging.WARNING, logger="repro.cli.show_cache"):
        assert same_links(show("toy", env=env)) == good
    (warning,) = caplog.records
    assert warning.getMessage() == (
        f"show cache entry show/{entry.name} holds control characters or escape sequences; "
        "rendering it again"
    )
    assert len(renders) == 2
    assert same_links(uncached(monkeypatch, "toy", env=env)) == good
    stored = json.loads((entry / show_cache.PAYLOAD).read_bytes())["output"]
    assert same_links(stored) == good  # rendered and stored again


def test_a_colour_render_keeps_its_sgr_and_hyperlinks(library_dir: Path, cache_dir: Path) -> None:
    text = show("toy", env=COLOUR)
    assert show_cache.safe_text(text, colour=True) and not show_cache.safe_text(text, colour=False)
    assert show_cache.safe_text("\x1b[1;38;5;208mx\x1b[0m\tok\n", colour=True)
    assert not show_cache.safe_text("\x1b[1;38;5;208mx\x1b[0m", colour=False)


DAMAGE = {
    "truncated": lambda raw: raw[: len(raw) // 2],
    "not JSON": lambda raw: b"\x80\x81 not json",
    "empty": lambda raw: b"",
    "a list": lambda raw: b"[1, 2]",
    "no output": lambda raw: _without(raw, "output"),
    "output not text": lambda raw: with_output(raw, lambda text: [text]),
    "related not a list": lambda raw: _edit(raw, related={"other": "x"}),
    "a short related row": lambda raw: _edit(raw, related=[["other", "x"]]),
}


def _without(raw: bytes, field: str) -> bytes:
    return json.dumps({k: v for k, v in json.loads(raw).items() if k != field}).encode()


def _edit(raw: bytes, **changes) -> bytes:
    return json.dumps({**json.loads(raw), **changes}).encode()


@pytest.mark.parametrize("signed", [False, True], ids=["as damaged", "with a new record"])
@pytest.mark.parametrize("damage", DAMAGE)
def test_a_damaged_entry_is_ignored_with_one_warning(
    library_dir: Path, cache_dir: Path, renders: list[str], caplog: pytest.LogCaptureFixture,
    damage: str, signed: bool,
) -> None:  # fmt: skip
    good = show("toy")
    entry = only_entry(cache_dir)
    rewrite(entry, DAMAGE[damage]((entry / show_cache.PAYLOAD).read_bytes()), sign=signed)
    with caplog.at_level(logging.WARNING):
        assert show("toy") == good
    (warning,) = caplog.records
    assert warning.getMessage().startswith(f"show cache entry show/{entry.name} ")
    assert warning.getMessage().endswith("; rendering it again")
    assert ("SHA-256 differs" in warning.getMessage()) is not signed
    assert len(renders) == 2
    show("toy")
    assert len(renders) == 2  # the rebuilt entry is used


def test_an_entry_of_other_inputs_is_a_quiet_miss(
    related: Path, renders: list[str], caplog: pytest.LogCaptureFixture, cache_dir: Path
) -> None:
    good = show("toy")
    entry = only_entry(cache_dir)
    raw = (entry / show_cache.PAYLOAD).read_bytes()
    record = json.loads(raw)
    forged = {**record, "related": [["other-alias", "Forged title", "https://e.example/"],
                                    ["ghost", "", ""]]}  # fmt: skip
    rewrite(entry, json.dumps(forged).encode(), sign=True)
    with caplog.at_level(logging.WARNING):
        assert show("toy") == good
    assert caplog.records == [] and len(renders) == 2


@pytest.mark.parametrize("what", ["the entry", "its payload"])
def test_a_symlink_is_not_trusted(
    library_dir: Path, cache_dir: Path, renders: list[str], caplog: pytest.LogCaptureFixture,
    tmp_path: Path, what: str,
) -> None:  # fmt: skip
    good = show("toy")
    entry = only_entry(cache_dir)
    target = entry if what == "the entry" else entry / show_cache.PAYLOAD
    elsewhere = tmp_path / "planted"
    os.rename(target, elsewhere)
    target.symlink_to(elsewhere)
    with caplog.at_level(logging.WARNING):
        assert show("toy") == good
    assert re.search("is a symlink|not a regular file", caplog.records[0].getMessage())
    assert len(renders) == 2 and not entry.is_symlink() and elsewhere.exists()


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
@pytest.mark.parametrize("what", ["the entry", "its payload"])
def test_a_fifo_does_not_hang(
    library_dir: Path, cache_dir: Path, renders: list[str], caplog: pytest.LogCaptureFixture,
    what: str,
) -> None:  # fmt: skip
    good = show("toy")
    entry = only_entry(cache_dir)
    target = entry if what == "the entry" else entry / show_cache.PAYLOAD
    shutil.rmtree(target) if target.is_dir() else target.unlink()
    os.mkfifo(target)
    with caplog.at_level(logging.WARNING):
        assert show("toy") == good
    assert re.search("is not a folder|not a regular file", caplog.records[0].getMessage())
    assert len(renders) == 2


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs FIFOs")
def test_a_fifo_among_the_runs_is_not_keyed(library_dir: Path, cache_dir: Path) -> None:
    run = Path(os.environ["PAPERLAB_RUNS"]) / "toy" / "20260101T000000000000Z"
    run.mkdir(parents=True)
    os.mkfifo(run / "environment.json")
    assert show_cache.runs_state(Path(os.environ["PAPERLAB_RUNS"]), "toy") is None


def test_an_input_changed_while_rendering_is_not_stored(
    library_dir: Path, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    note = library_dir / "toy" / "note.yaml"
    real = sheets.paper_sheet

    def edited_meanwhile(*args, **kwargs):
        sheet = real(*args, **kwargs)  # the note as it was read …
        note.write_text(note.read_text().replace('title: "Toy:', 'title: "Tay:'))  # … is edited
        return sheet

    monkeypatch.setattr(sheets, "paper_sheet", edited_meanwhile)
    assert "Toy: a paper for tests" in show("toy")
    assert entries(cache_dir) == []


def test_a_broken_note_is_reported_every_time_and_not_cached(
    library_dir: Path, cache_dir: Path
) -> None:
    (library_dir / "toy" / "note.yaml").write_text("title: [unclosed\n")
    for _ in range(2):
        result = CliRunner().invoke(cli, ["show", "toy"])
        assert result.exit_code == 2 and "invalid YAML" in result.stderr
    assert entries(cache_dir) == []


def test_an_unwritable_cache_is_no_cache(
    library_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "a-file").write_text("")
    monkeypatch.setenv("PAPERLAB_CACHE", str(tmp_path / "a-file"))
    assert show("toy") == show("toy") == uncached(monkeypatch, "toy")


class Stream:
    """An output stream as rich sees one: a terminal or not, in an encoding."""

    def __init__(self, terminal: bool, encoding: str = "utf-8") -> None:
        self.terminal, self.encoding = terminal, encoding

    def isatty(self) -> bool:
        return self.terminal

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


def test_an_output_that_is_not_utf8_or_may_be_jupyter_is_not_keyed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    assert show_cache.terminal_state(Stream(False, "latin-1")) is None
    assert show_cache.terminal_state(Stream(False, "UTF_8")) is not None
    monkeypatch.setattr(builtins, "get_ipython", lambda: None, raising=False)
    assert show_cache.terminal_state(Stream(False)) is None


TERMINAL_ENVIRONMENTS = [
    {},
    {"TERM": "xterm-256color"},
    {"TERM": "xterm", "COLORTERM": "truecolor"},
    {"TERM": "dumb"},
    {"TERM": "UNKNOWN"},
    {"FORCE_COLOR": "1"},
    {"FORCE_COLOR": ""},
    {"FORCE_COLOR": "1", "TERM": "dumb"},
    {"FORCE_COLOR": "1", "TTY_COMPATIBLE": "0"},
    {"FORCE_COLOR": "", "TTY_COMPATIBLE": "1"},
    {"TTY_COMPATIBLE": "2", "TERM": "xterm-256color"},
    {"NO_COLOR": "1", "TERM": "xterm-256color"},
    {"COLUMNS": "100"},
    {"LINES": "40"},
    {"COLUMNS": "wide"},
    {"TTY_INTERACTIVE": "0", "TERM": "xterm-256color"},
]


@pytest.mark.parametrize("terminal", [False, True], ids=["piped", "a terminal"])
@pytest.mark.parametrize("env", TERMINAL_ENVIRONMENTS, ids=lambda e: repr(e) if e else "bare")
def test_the_key_is_what_rich_reads(
    env: dict, terminal: bool, cache_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`colour_possible` gives rich's own answer, and two outputs rich sets up differently (as
    console() sets it up) have different keys."""
    from rich.console import Console

    from repro.cli.common import console

    seen: dict[str, tuple] = {}
    for environment in ({}, env):  # the bare one, then this one: they must differ as rich does
        for name in show_cache.ENVIRONMENT:
            monkeypatch.delenv(name, raising=False)
        for name, value in environment.items():
            monkeypatch.setenv(name, value)
        stream = Stream(terminal)
        monkeypatch.setattr(sys, "stdout", stream)
        state = show_cache.terminal_state()
        assert state is not None and state == show_cache.terminal_state(stream)
        rich_console = console()
        assert rich_console.file is stream
        assert show_cache.colour_possible(state) is (Console(file=stream).color_system is not None)
        assert show_cache.colour_possible(state) is (rich_console.color_system is not None)
        size = rich_console.size
        made = (size.width, size.height, rich_console.color_system, rich_console.no_color,
                rich_console.is_terminal, rich_console.is_interactive)  # fmt: skip
        key = json.dumps(state, sort_keys=True)
        assert seen.setdefault(key, made) == made  # equal keys: equal consoles


# --- a warm show in a fresh process -----------------------------------------------------------


def run_python(script: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
    }
    return subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )


def test_a_warm_show_imports_none_of_the_rendering(library_dir: Path, cache_dir: Path) -> None:
    script = """
import sys
from paperlab import cli
try:
    cli.main(["show", "toy", "--lang", "zh"], prog_name="paperlab", standalone_mode=False)
except SystemExit:
    pass
heavy = ("pydantic", "yaml", "jinja2", "pylatexenc", "rich.markdown", "markdown_it", "torch")
print(sorted(m for m in heavy if m in sys.modules))
"""
    cold = run_python(script)
    assert cold.returncode == 0, cold.stderr
    *shown, imported = cold.stdout.splitlines()
    assert (
        imported == "['jinja2', 'markdown_it', 'pydantic', 'pylatexenc', 'rich.markdown', 'yaml']"
    )
    warm = run_python(script)
    assert warm.returncode == 0, warm.stderr
    *again, imported = warm.stdout.splitlines()
    assert imported == "[]"
    assert again == shown and "核心问题" in warm.stdout  # another process, the same text


# --- list -------------------------------------------------------------------------------------


@pytest.fixture
def tables(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of rows of each table `list` lays out (a hit lays out none)."""
    from repro.cli import notes

    return counted_calls(monkeypatch, notes, "listing_table", len)


def listing(*args: str, env: dict | None = None) -> str:
    return paperlab("list", *args, env=env)


def test_a_repeated_list_is_a_hit_that_equals_a_fresh_render(
    cache_dir: Path, tables: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PAPERLAB_PAPERS", str(REPO / "papers"))
    monkeypatch.setenv("PAPERLAB_RUNS", str(REPO / "runs"))
    for env in (PLAIN, COLOUR, {"COLUMNS": "90"}):
        first = listing(env=env)
        count = len(tables)
        assert listing(env=env) == first and len(tables) == count  # a hit
        with monkeypatch.context() as m:
            m.setattr(show_cache, "list_key", lambda *a: None)
            assert listing(env=env) == first  # what rich prints itself
    assert len(tables) == 6 and tables[0] == len(Library(REPO / "papers").papers)
    assert listing("--tag", "no-such-tag") != listing()  # other rows, another render
    plain, colour = listing(env=PLAIN), listing(env=COLOUR)
    assert "\x1b" not in plain and "\x1b[" in colour


def test_a_new_run_or_an_edited_title_lists_again(library_dir: Path, cache_dir: Path, tables):
    assert "5 not yet run" in listing() and "Toy: a paper for tests" in listing()
    store_verified_run()
    assert "4 not yet run, 1 verified" in listing() and len(tables) == 2
    note = library_dir / "toy" / "note.yaml"
    note.write_text(note.read_text().replace('title: "Toy:', 'title: "Tay:'))
    assert "Tay: a paper for tests" in listing() and len(tables) == 3
    listing()
    assert len(tables) == 3


def test_an_escape_injected_into_a_stored_list_is_refused(
    library_dir: Path, cache_dir: Path, tables: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    good = listing()
    entry = only_entry(cache_dir)
    payload = (entry / show_cache.PAYLOAD).read_bytes()
    rewrite(entry, with_output(payload, lambda text: "\x1b]0;pwned\x07" + text), sign=True)
    with caplog.at_level(logging.WARNING, logger="repro.cli.show_cache"):
        assert listing() == good
    assert "holds control characters or escape sequences" in caplog.records[0].getMessage()
    assert len(tables) == 2
