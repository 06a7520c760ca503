"""Fuzzing the note loader with the real notes, mutated: no traceback, no hang, every error located.

Each example takes one of the library's notes and damages it the ways a file gets damaged or
abused: keys deleted, retyped, inserted or duplicated; truncation at a random byte; bad bytes,
a BOM, CRLF line ends, deep nesting, anchors and aliases (an alias bomb among them). It is then
validated through the command line in this process. The run must end in exit 0 or exit 2, and
every `Error:` line must read `path:line:col: …`. No hang is possible by construction (the
loader refuses aliases and deep nesting while parsing), so no timeout is needed here.
"""

from __future__ import annotations

import json
import re
import shutil
import time
from html.parser import HTMLParser
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from paperlab import cli

REPO = Path(__file__).resolve().parents[2]
NOTES = sorted((REPO / "papers").glob("*/note.yaml"))

BOMB = (
    'lol: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]\n'
    + "".join(f"l{i}: &{chr(98 + i)} [{', '.join(['*' + chr(97 + i)] * 9)}]\n" for i in range(8))
).encode()


def _lines(data: bytes) -> list[bytes]:
    return data.split(b"\n")


@st.composite
def mutated_note(draw) -> tuple[Path, bytes]:
    """(the note's repro.py, the damaged note.yaml bytes)."""
    path = NOTES[draw(st.integers(0, len(NOTES) - 1))]
    data = path.read_bytes()
    for _ in range(draw(st.integers(1, 3))):
        data = draw(st.sampled_from(MUTATIONS))(draw, data)
    return path.with_name("repro.py"), data


def _delete_line(draw, data: bytes) -> bytes:
    lines = _lines(data)
    del lines[draw(st.integers(0, len(lines) - 1))]
    return b"\n".join(lines)


def _duplicate_line(draw, data: bytes) -> bytes:
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    lines.insert(draw(st.integers(0, len(lines))), lines[i])
    return b"\n".join(lines)


def _retype_value(draw, data: bytes) -> bytes:
    lines = _lines(data)
    i = draw(st.integers(0, len(lines) - 1))
    key, sep, _ = lines[i].partition(b": ")
    value = draw(
        st.sampled_from(
            [b"", b"null", b"[]", b"{}", b"- x", b".nan", b".inf", b"-.inf", b"1e999",
             b"9" * 5000, b"yes", b"2021-13-45", b"!!binary ===", b"!!python/object:os.system",
             b"!!set {a}", b"'unterminated", b'"\\x"', b"{range: [.inf, -.inf]}",
             b"{abs: .nan}", b"{rel: .inf}", b"[1, [2, [3]]]", b"|\n  block", b"*undefined",
             b"<<: {a: 1}", b"&anchor value", b"\t"]
        )
    )  # fmt: skip
    lines[i] = (key + b": " + value) if sep else value
    return b"\n".join(lines)


def _insert_key(draw, data: bytes) -> bytes:
    lines = _lines(data)
    indent = draw(st.sampled_from([b"", b"  ", b"    ", b"      "]))
    key = draw(st.sampled_from([b"title", b"claims", b"colour", b"1", b"? [a]", b"zh", b"<<"]))
    lines.insert(draw(st.integers(0, len(lines))), indent + key + b": x")
    return b"\n".join(lines)


def _truncate(draw, data: bytes) -> bytes:
    return data[: draw(st.integers(0, len(data)))]


def _bad_bytes(draw, data: bytes) -> bytes:
    at = draw(st.integers(0, len(data)))
    junk = draw(
        st.sampled_from([b"\xff", b"\xc3", b"\x00", b"\x1b[31m", b"\xed\xa0\x80", b"\xef\xbf\xbe"])
    )
    return data[:at] + junk + data[at:]


def _bom(draw, data: bytes) -> bytes:
    return draw(st.sampled_from([b"\xef\xbb\xbf", b"\xff\xfe", b"\xfe\xff"])) + data


def _utf16(draw, data: bytes) -> bytes:
    return data.decode("utf-8", "replace").encode("utf-16")


def _crlf(draw, data: bytes) -> bytes:
    return data.replace(b"\n", draw(st.sampled_from([b"\r\n", b"\r"])))


def _deep(draw, data: bytes) -> bytes:
    depth = draw(st.integers(50, 3000))
    flow = b"[" * depth + b"]" * depth
    return data + b"\ndeep: " + flow + b"\n"


def _deep_block(draw, data: bytes) -> bytes:
    depth = draw(st.integers(50, 400))
    return data + b"\ndeep:\n" + b"".join(b" " * (i + 1) + b"- \n" for i in range(depth))


def _aliases(draw, data: bytes) -> bytes:
    extra = draw(st.sampled_from([BOMB, b"rec: &r [1, *r]\n", b"a: &x 1\nb: *x\n"]))
    return data + b"\n" + extra


MUTATIONS = [
    _delete_line, _duplicate_line, _retype_value, _insert_key, _truncate, _bad_bytes, _bom,
    _utf16, _crlf, _deep, _deep_block, _aliases,
]  # fmt: skip


LOCATED = re.compile(r"^Error: \S*(note\.yaml|repro\.py):\d+:\d+: \S")


def check_one(root: Path, repro: Path, data: bytes) -> None:
    """`validate` and `list` on a library of one paper holding `data` as its note."""
    folder = root / "fuzzed"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(repro, folder / "repro.py")
    (folder / "note.yaml").write_bytes(data)
    runner = CliRunner()
    for command in (["validate"], ["list", "--json"]):
        result = runner.invoke(cli, ["--papers-dir", str(root), *command])
        assert isinstance(result.exception, SystemExit | None), result.exc_info
        assert result.exit_code in (0, 2), (command, result.output[-2000:])
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert all(LOCATED.match(line) for line in errors), errors
    # `list` kept going and showed the first problem, located
    (row,) = json.loads(result.stdout)
    assert "error" not in row or re.match(r"^\S*note\.yaml:\d+:\d+: ", row["error"]), row


FUZZ = settings(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    database=None,
)


@settings(FUZZ, max_examples=200)
@given(case=mutated_note())
def test_mutated_notes_end_in_exit_0_or_a_located_error(tmp_path: Path, case) -> None:
    check_one(tmp_path / "papers", *case)


@pytest.mark.slow
@settings(FUZZ, max_examples=2500)
@given(case=mutated_note())
def test_many_mutated_notes(tmp_path: Path, case) -> None:
    check_one(tmp_path / "papers", *case)


# --- hostile notes: issue 17's classes through every command that shows a note ---------------

TOY = Path(__file__).resolve().parents[1] / "fixtures" / "library" / "toy"
FIELDS = {  # a line of the toy note and how to put a value in its place
    "title": ('title: "Toy: a paper for tests"', "title: {}"),
    "what": ("  what: TODO the problem", "  what: {}"),
    "latex": ("    latex: 'TODO'", "    latex: {}"),
    "meaning": (
        "    meaning: TODO what each symbol is and why the formula matters",
        "    meaning: {}",
    ),
    "takeaway": ("takeaways:\n  - TODO", "takeaways:\n  - {}"),
}
CONTROLS = ["\x1b]0;OWNED\x07", "\x1b[2J", "\x9b31m", "\x07", "\x7f", "\x85", "\r", "\x00", "\x08"]
PAYLOADS = st.one_of(
    st.sampled_from(CONTROLS).map(lambda c: f"RoPE {c}x"),
    st.sampled_from(["\ue000", "\ue001", "\ue0000\ue001", "\ue0007\ue001", "$x$ \ue0001\ue001"]),
    st.tuples(st.sampled_from(["`", "$", "{", "}", "<b>", "$$", "\\", "*", "["]),
              st.integers(1, 20_000)).map(lambda t: t[0] * t[1]),
    st.sampled_from([
        '$\\text{<img/src=x/onerror="window.pwned=1">}$',
        "$\\text{<script>window.pwned=1</script>}$",
        "$\\text{<style>body{display:none}}$", "$\\href{javascript:alert(1)}{x}$",
        "$\\url{javascript:alert(1)}$", "$\\style{color:red}{x}$", "$\\class{c}{x}$",
        "$\\htmlId{i}{x}$", "$\\def\\x{y}$", "$\\input{/etc/passwd}$", "[a](javascript:alert(1))",
        '<img src=x onerror="window.pwned=1">', "$x$" * 2000, "$a$ `$b$` $$c$$",
    ]),
)  # fmt: skip
RELATED = st.sampled_from(
    ["[toy]", "[toy, toy]", "[nowhere]", "[toy-alias]", "[toy, nowhere, toy]", "[]"]
)
ESCAPES = re.compile("[\x00-\x08\x0b-\x1f\x7f-\x9f]")


class ActiveHtml(HTMLParser):
    """What in a page could run or restyle it: any script, event handler, `javascript:` URL,
    and (inside <body>, where only note text goes) any style, image, frame or object."""

    def __init__(self) -> None:
        super().__init__()
        self.body, self.found = False, []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        self.body = self.body or tag == "body"
        if tag == "script" or (self.body and tag in ("style", "img", "iframe", "object", "embed")):
            self.found.append(tag)
        for name, value in attrs:
            if name.startswith("on") or "javascript:" in (value or "").replace(" ", "").lower():
                self.found.append(f"{tag} {name}={value!r}")


def active_html(page: str) -> list[str]:
    parser = ActiveHtml()
    parser.feed(page)
    return parser.found


@st.composite
def hostile_note(draw) -> bytes:
    text = (TOY / "note.yaml").read_text(encoding="utf-8")
    field = draw(st.sampled_from(sorted(FIELDS)))
    payload = draw(PAYLOADS)
    written = draw(st.sampled_from(["escaped", "raw"]))
    old, new = FIELDS[field]
    if written == "escaped":  # a JSON string is a YAML double-quoted scalar: `"\u001b"`
        value = json.dumps(payload)
    else:  # a literal block: control characters stay raw bytes in the file
        indent = " " * (len(new) - len(new.lstrip()) + 2)
        value = "|\n" + indent + payload.replace("\n", " ")
    text = text.replace(old, new.format(value), 1)
    text = re.sub(r"(?m)^related: .*$", f"related: {draw(RELATED)}", text)
    return text.encode("utf-8")


COMMANDS = [
    ["validate"], ["list"], ["show", "toy"], ["sheet", "toy"],
    ["sheet", "toy", "--format", "html", "-o", "{out}/toy.html"],
    ["sheet", "toy", "--format", "anki", "-o", "{out}/toy.apkg"],
]  # fmt: skip


def check_hostile(root: Path, data: bytes, commands: list[list[str]] = COMMANDS) -> None:
    folder = root / "papers" / "toy"
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(TOY / "repro.py", folder / "repro.py")
    (folder / "note.yaml").write_bytes(data)
    out = root / "out"
    out.mkdir(exist_ok=True)
    runner = CliRunner()
    for command in commands:
        args = [a.format(out=out) for a in command]
        start = time.process_time()
        result = runner.invoke(cli, ["--papers-dir", str(root / "papers"), *args])
        took = time.process_time() - start
        assert took < 2.0, (command, f"{took:.2f} CPU s")
        assert isinstance(result.exception, SystemExit | None), result.exc_info
        assert result.exit_code in (0, 2), (command, result.output[-2000:])
        assert "Traceback" not in result.output
        errors = [line for line in result.stderr.splitlines() if line.startswith("Error:")]
        assert all(LOCATED.match(line) for line in errors), errors
        assert not ESCAPES.search(result.stdout), (command, "a control character reached stdout")
        assert not ESCAPES.search(result.stderr), (command, "a control character reached stderr")
    page = out / "toy.html"
    if page.exists():
        assert active_html(page.read_text(encoding="utf-8")) == []


@settings(FUZZ, max_examples=20)
@given(data=hostile_note())
def test_hostile_notes_cannot_run_code_hang_or_crash(tmp_path_factory, data: bytes) -> None:
    check_hostile(tmp_path_factory.mktemp("hostile"), data)


@pytest.mark.parametrize("control", CONTROLS)
def test_control_characters_are_a_located_error(tmp_path: Path, control: str) -> None:
    text = (TOY / "note.yaml").read_text(encoding="utf-8")
    text = text.replace(
        'title: "Toy: a paper for tests"', f"title: {json.dumps('RoPE ' + control)}"
    )
    folder = tmp_path / "papers" / "toy"
    folder.mkdir(parents=True)
    shutil.copy(TOY / "repro.py", folder / "repro.py")
    (folder / "note.yaml").write_text(text, encoding="utf-8")
    result = CliRunner().invoke(cli, ["--papers-dir", str(tmp_path / "papers"), "validate"])
    assert result.exit_code == 2
    (error, *_) = result.stderr.splitlines()
    code = f"U\\+{ord(control[0]):04X}"
    assert re.match(rf"^Error: \S*note\.yaml:5:8: control character {code} ", error), error


@pytest.mark.parametrize(
    "payload",
    ["<b>" * 340_000, "`" * 16_000, "$" * 500_000, "$x" * 250_000, "{" * 500_000],
    ids=["markup", "backticks", "dollars", "dollar-x", "braces"],
)
def test_pathological_notes_of_a_mebibyte_are_fast(tmp_path: Path, payload: str) -> None:
    text = (TOY / "note.yaml").read_text(encoding="utf-8")
    note = text.replace("  what: TODO the problem", "  what: |\n    " + payload, 1)
    assert len(note.encode()) <= 1 << 20
    check_hostile(tmp_path, note.encode("utf-8"), [COMMANDS[0], COMMANDS[2], COMMANDS[4]])
