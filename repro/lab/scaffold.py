"""`paperlab new`: a paper folder from the templates, never overwriting anything."""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path

from repro.lab.errors import ScaffoldError
from repro.lab.note import SLUG_RE
from repro.lab.sheets import environment

ARXIV_RE = r"^\d{4}\.\d{4,5}$"


def scaffold_paper(root: Path, slug: str, title: str, arxiv: str, year: int) -> Path:
    """Create `root/slug/` with note.yaml and repro.py; refuse bad slugs and existing folders."""
    if not re.match(SLUG_RE, slug):
        raise ScaffoldError(
            f"invalid slug '{slug}': use lowercase letters, digits and dashes, "
            "starting with a letter or digit"
        )
    if not re.match(ARXIV_RE, arxiv):
        raise ScaffoldError(f"invalid arXiv id '{arxiv}': expected e.g. 2106.09685")
    if not title.strip():
        raise ScaffoldError("the title must not be empty")
    folder = root / slug
    if folder.exists():
        raise ScaffoldError(f"{folder} already exists; not overwriting it")
    root.mkdir(parents=True, exist_ok=True)
    values = {"slug": slug, "title": title.strip(), "arxiv": arxiv, "year": year}
    env = environment()
    # Build in a hidden sibling folder and rename: a failure leaves nothing half-written.
    tmp = Path(tempfile.mkdtemp(prefix=f".new-{slug}-", dir=root))
    try:
        for name in ("note.yaml", "repro.py"):
            text = env.get_template(f"{name}.j2").render(**values)
            (tmp / name).write_text(text, encoding="utf-8")
        try:
            os.mkdir(folder)  # atomically claims the name; fails if it appeared meanwhile
        except FileExistsError:
            raise ScaffoldError(f"{folder} already exists; not overwriting it") from None
        for name in ("note.yaml", "repro.py"):
            os.replace(tmp / name, folder / name)
    finally:
        for leftover in tmp.iterdir():
            leftover.unlink()
        tmp.rmdir()
    return folder
