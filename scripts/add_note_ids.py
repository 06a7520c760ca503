"""Give every question, contribution and formula of a note a stable `id` (re-runnable).

    python scripts/add_note_ids.py                  # every papers/*/note.yaml
    python scripts/add_note_ids.py papers/dpo/note.yaml --dry-run

Ids come from the item's text (a short slug of the question, the formula's name, the
contribution's first words), never from its position, and an item that already has an id keeps
it. A Chinese question takes the id of the English question at the same place when that id is
free (a one-off pairing: once written, the id stays whatever happens to the lists). The YAML text
is edited in place, line by line, so comments and formatting stay: a mapping item gets an
`id:` line before its first key; a contribution written as a plain string becomes
`{id, text}` with its text re-indented by two spaces.
"""

from __future__ import annotations

import argparse
import hashlib
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from repro.lab.note import parse_note  # noqa: E402
from repro.lab.strict_yaml import load_document  # noqa: E402

STOP = frozenset(
    re.findall(
        r"\w+",
        "a an the of and to in on for is are was were be been does do did why what how which "
        "when where who with it its this that these those by from as at or not than into "
        "their there can could would should will you your we our they them one two three paper",
    )
)
MAX_WORDS, MAX_LEN = 5, 40


def slugify(text: str, words: int = MAX_WORDS) -> str:
    """A short ASCII slug of `text`'s meaningful words ("" when nothing is left)."""
    text = re.sub(r"\$[^$]*\$", " ", text)  # math says little in a key
    text = re.sub(r"\([^)]*\)", " ", text)  # nor do "(Eq. 3)" and "(§4.1)"
    tokens = [t for t in re.findall(r"[a-z0-9]+", text.lower()) if t not in STOP]
    slug = ""
    for t in tokens[:words]:
        if len(slug) + len(t) + 1 > MAX_LEN:
            break
        slug = f"{slug}-{t}" if slug else t
    return slug


def _fresh(base: str, taken: set[str], fallback: str) -> str:
    base = base or "item-" + hashlib.sha1(fallback.encode()).hexdigest()[:6]
    name, n = base, 2
    while name in taken:
        name, n = f"{base}-{n}", n + 1
    taken.add(name)
    return name


def plan(text: str) -> list[tuple[tuple, str, str]]:
    """(path of the item, its new id, how to insert: 'key' | 'scalar') for each missing id."""
    note = parse_note(text, "note.yaml")
    out: list[tuple[tuple, str, str]] = []
    taken = {c.id for c in note.contributions if c.id}
    for i, c in enumerate(note.contributions):
        if c.id is None:
            new = _fresh(slugify(c.text, 4), taken, c.text)
            out.append((("contributions", i), new, "contribution"))
    taken = {q.id for q in note.interview.questions if q.id}
    en_ids = []
    for i, q in enumerate(note.interview.questions):
        qid = q.id or _fresh(slugify(q.question), taken, q.question)
        en_ids.append(qid)
        if q.id is None:
            out.append((("interview", "questions", i), qid, "key"))
    taken = {f.id for f in note.formulas if f.id}
    for i, f in enumerate(note.formulas):
        if f.id is None:
            out.append((("formulas", i), _fresh(slugify(f.name, 4), taken, f.name), "key"))
    zh = note.zh.interview if note.zh and note.zh.interview else None
    if zh and zh.questions:
        taken = {q.id for q in zh.questions if q.id}
        for i, q in enumerate(zh.questions):
            if q.id is None:
                paired = en_ids[i] if i < len(en_ids) and en_ids[i] not in taken else ""
                new = _fresh(paired, taken, q.question)
                out.append((("zh", "interview", "questions", i), new, "key"))
    return out


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def add_ids(text: str) -> tuple[str, int]:
    """`text` with ids added to every item that lacks one, and how many were added."""
    steps = plan(text)
    if not steps:
        return text, 0
    positions = load_document(text).positions
    lines = text.split("\n")
    # bottom-up, so earlier line numbers stay valid while lines are inserted
    for path, new, how in sorted(steps, key=lambda s: positions[s[0]], reverse=True):
        line, col = positions[path]
        i, c = line - 1, col - 1
        row = lines[i]
        pad = " " * c
        if how == "key":
            lines[i : i + 1] = [row[:c] + f"id: {new}", pad + row[c:]]
            continue
        # a contribution written as a string → {id, text}; its continuation lines move right
        j = i + 1
        while j < len(lines) and (not lines[j].strip() or _indent(lines[j]) >= c):
            j += 1
        while j > i + 1 and not lines[j - 1].strip():
            j -= 1  # trailing blank lines belong to what follows
        body = [("  " + x) if x.strip() else x for x in lines[i + 1 : j]]
        lines[i:j] = [row[:c] + f"id: {new}", pad + "text: " + row[c:], *body]
    result = "\n".join(lines)
    parse_note(result, "note.yaml")  # the edit must leave a valid note
    return result, len(steps)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notes", nargs="*", type=Path, help="default: papers/*/note.yaml")
    parser.add_argument("--dry-run", action="store_true", help="say what would change")
    args = parser.parse_args(argv)
    notes = args.notes or sorted((ROOT / "papers").glob("*/note.yaml"))
    total = 0
    for path in notes:
        text = path.read_text(encoding="utf-8")
        try:
            new, n = add_ids(text)
        except Exception as exc:  # a broken note: say so and go on with the others
            print(f"{path}: skipped ({str(exc).splitlines()[0]})", file=sys.stderr)
            continue
        if n and not args.dry_run:
            path.write_text(new, encoding="utf-8")
        if n:
            print(f"{path}: {n} id{'s' if n != 1 else ''} {'to add' if args.dry_run else 'added'}")
        total += n
    print(f"{total} ids {'to add' if args.dry_run else 'added'} in {len(notes)} notes")
    return 0


if __name__ == "__main__":
    sys.exit(main())
