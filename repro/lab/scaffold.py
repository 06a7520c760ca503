"""`paperlab new`: a paper folder from the templates, never overwriting anything.

Whatever a user types must not break the files written: the slug, arXiv id and year are checked
against the note schema's own rules before anything is written, the title goes into the YAML as a
YAML-quoted scalar and into repro.py as a Python literal (`repr`), and a filesystem failure is
one ScaffoldError.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from pathlib import Path

import jinja2
import yaml

from repro.lab.errors import ScaffoldError, one_line
from repro.lab.library import REPO_ROOT
from repro.lab.note import SLUG_RE, YEAR_RANGE, Note

SLUG_MAX = 64
ARXIV_RE = Note.model_fields["arxiv"].metadata[0].pattern
TITLE_MAX = 500


def _environment() -> jinja2.Environment:
    """The scaffold's templates: plain text (YAML, Python), every value quoted by the caller."""
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(REPO_ROOT / "templates"),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )


def yaml_scalar(value: str) -> str:
    """`value` as one YAML scalar that reads back unchanged (quoted and escaped as needed)."""
    text = yaml.safe_dump(value, default_style='"', width=float("inf"), allow_unicode=True)
    return text.removesuffix("\n...\n").rstrip("\n")


def docstring_text(value: str) -> str:
    """`value` escaped for the inside of a triple-quoted docstring: it reads back unchanged and
    cannot close the string (every quote and backslash is escaped, control characters too)."""
    escaped = value.replace("\\", "\\\\").replace('"', '\\"')
    return escaped.translate({c: f"\\x{c:02x}" for c in range(32)})


def check_inputs(slug: str, title: str, arxiv: str, year: int | None) -> None:
    """Refuse what would write a folder or a note that does not validate."""
    if len(slug) > SLUG_MAX:
        raise ScaffoldError(f"invalid slug: {len(slug)} characters, at most {SLUG_MAX}")
    if not re.fullmatch(SLUG_RE.strip("^$"), slug):
        raise ScaffoldError(
            f"invalid slug {slug!r}: use lowercase letters, digits and dashes, "
            "starting with a letter or digit"
        )
    if not re.fullmatch(ARXIV_RE.strip("^$"), arxiv):
        raise ScaffoldError(f"invalid arXiv id {arxiv!r}: expected e.g. 2106.09685")
    lo, hi = YEAR_RANGE
    if year is not None and not lo <= year <= hi:
        raise ScaffoldError(f"invalid year {year}: expected {lo}–{hi}")
    if not title.strip():
        raise ScaffoldError("the title must not be empty")
    bad = next((ch for ch in title if _is_control(ch)), None)
    if bad is not None:  # the note loader refuses them: the scaffold must not write one
        raise ScaffoldError(f"the title contains the control character U+{ord(bad):04X}")
    if len(title) > TITLE_MAX:
        raise ScaffoldError(f"the title has {len(title):,} characters, at most {TITLE_MAX}")


TEMPLATES = ("derived", "experiment", "align")


def scaffold_paper(
    root: Path, slug: str, title: str, arxiv: str, year: int | None, *,
    template: str = "derived", authors: tuple[str, ...] = (), abstract: str = "",
) -> Path:  # fmt: skip
    """Create `root/slug/` with note.yaml and repro.py; refuse bad input and existing folders.

    `template` chooses the example claim the files start with, wired and valid: `derived`
    (a count on `meta`), `experiment` (a measured claim over seeds with its control and a plot)
    or `align` (a measured claim on the exact bandit). `year` None leaves it for the author."""
    if template not in TEMPLATES:
        raise ScaffoldError(f"unknown template {template!r}: choose {', '.join(TEMPLATES)}")
    check_inputs(slug, title, arxiv, year)
    folder = root / slug
    if os.path.lexists(folder):  # a dangling symlink counts: never write through it
        raise ScaffoldError(f"{folder} already exists; not overwriting it")
    title = title.strip()
    values = {
        "slug": slug,
        "arxiv": arxiv,
        "year": year,
        "title_yaml": yaml_scalar(title),
        "title_docstring": docstring_text(title),
        "title_comment": one_line(title),
        "template": template,
        "authors_yaml": [yaml_scalar(one_line(a)) for a in authors if a.strip()],
        "abstract_comment": _comment_text(abstract),
    }
    env = _environment()
    try:
        texts = {
            "note.yaml": env.get_template("note.yaml.j2").render(**values),
            "repro.py": env.get_template(f"new/{template}.py.j2").render(**values),
        }
    except (OSError, jinja2.TemplateNotFound) as exc:
        raise ScaffoldError(
            f"cannot read the templates ({exc}): paperlab runs from its checkout, "
            "installed with `pip install -e .`"
        ) from None
    try:
        return _write(root, folder, texts)
    except OSError as exc:
        where = exc.filename or root
        raise ScaffoldError(f"cannot write {where}: {exc.strerror or exc}") from None


def _is_control(ch: str) -> bool:
    """C0 controls but tab and newline, DEL and C1: what a terminal would act on."""
    code = ord(ch)
    return (code < 0x20 and ch not in "\t\n") or 0x7F <= code <= 0x9F


def _comment_text(text: str) -> str:
    """Text safe inside one YAML comment line: printable, one line, bounded."""
    flat = one_line("".join(ch if ch.isprintable() else " " for ch in text))
    return flat[:300]


def _write(root: Path, folder: Path, texts: dict[str, str]) -> Path:
    root.mkdir(exist_ok=True)  # the papers folder itself, not a typo's whole path
    # Build in a hidden sibling folder and rename: a failure leaves nothing half-written.
    tmp = Path(tempfile.mkdtemp(prefix=f".new-{folder.name}-", dir=root))
    try:
        for name, text in texts.items():
            (tmp / name).write_text(text, encoding="utf-8")
        try:
            os.mkdir(folder)  # atomically claims the name; fails if it appeared meanwhile
        except FileExistsError:
            raise ScaffoldError(f"{folder} already exists; not overwriting it") from None
        for name in texts:
            os.replace(tmp / name, folder / name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
