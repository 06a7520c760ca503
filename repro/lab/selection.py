"""Which papers and claims `check` runs: `--claim`, `-k EXPR`, `--lf` (torch-free).

- `--claim ID` (repeatable) without a paper selects the papers that have one of those claims;
- `-k EXPR` selects claims whose id contains a word of the expression, as pytest's `-k` does:
  `attention`, `flops and not memory`, `(rank or lora) and not cited`; words are substrings of
  the claim id, matched without regard to case;
- `--lf` selects the claims whose newest stored result failed or errored; with none on record
  it selects everything and says so.

A paper with no selected claim is left out of the check altogether.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from repro.lab.errors import BadOption
from repro.lab.format import plural
from repro.lab.library import Paper, check_claim_ids

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


def keyword_matcher(expr: str) -> Callable[[str], bool]:
    """A predicate over claim ids for a `-k` expression (`and`, `or`, `not`, parentheses)."""
    tokens = _TOKEN.findall(expr)
    if not tokens or "".join(tokens) != re.sub(r"\s+", "", expr):
        raise BadOption(f"-k: empty or unreadable expression '{expr}'")
    pos = 0

    def peek() -> str | None:
        return tokens[pos] if pos < len(tokens) else None

    def take() -> str:
        nonlocal pos
        pos += 1
        return tokens[pos - 1]

    def parse_or() -> Callable[[str], bool]:
        left = parse_and()
        while peek() == "or":
            take()
            a, b = left, parse_and()
            left = lambda s, a=a, b=b: a(s) or b(s)  # noqa: E731
        return left

    def parse_and() -> Callable[[str], bool]:
        left = parse_not()
        while peek() == "and":
            take()
            a, b = left, parse_not()
            left = lambda s, a=a, b=b: a(s) and b(s)  # noqa: E731
        return left

    def parse_not() -> Callable[[str], bool]:
        if peek() == "not":
            take()
            inner = parse_not()
            return lambda s: not inner(s)
        return parse_atom()

    def parse_atom() -> Callable[[str], bool]:
        token = peek()
        if token is None or token in ("and", "or", ")"):
            raise BadOption(f"-k: expected a word or '(' in '{expr}'")
        take()
        if token == "(":
            inner = parse_or()
            if peek() != ")":
                raise BadOption(f"-k: missing ')' in '{expr}'")
            take()
            return inner
        word = token.lower()
        return lambda s: word in s.lower()

    matcher = parse_or()
    if peek() is not None:
        raise BadOption(f"-k: unexpected '{peek()}' in '{expr}'")
    return matcher


def last_failures(runs_dir: Path, papers: list[Paper]) -> dict[str, tuple[str, ...]]:
    """slug -> ids of the claims (still in the note) whose newest stored result failed or
    errored; papers without such a claim are absent."""
    from repro.lab.runs import latest_results

    found = {}
    for paper in papers:
        latest = latest_results(runs_dir, paper.slug)
        ids = tuple(
            c.id
            for c in paper.note.claims
            if c.id in latest and latest[c.id].verdict.value in ("failed", "error")
        )
        if ids:
            found[paper.slug] = ids
    return found


@dataclass
class Selection:
    """The papers to check, the claims of each (None: all of them), and what to tell the user
    about how they were chosen."""

    papers: list[Paper]
    claims: dict[str, tuple[str, ...]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def claim_ids(self, paper: Paper) -> tuple[str, ...] | None:
        return self.claims.get(paper.slug)


def select_claims(
    papers: list[Paper],
    *,
    named: bool,
    claim_ids: tuple[str, ...] = (),
    keyword: str | None = None,
    failed_first: Path | None = None,
) -> Selection:
    """Narrow `papers` (all of the library when `named` is false) by `--claim`, `-k` and `--lf`
    (`failed_first`: the runs folder to read the last results from). Every note must load."""
    check_claim_ids(papers, claim_ids)
    notes: list[str] = []
    wanted: dict[str, list[str]] = {p.slug: [c.id for c in p.note.claims] for p in papers}
    if claim_ids:
        wanted = {s: [i for i in ids if i in claim_ids] for s, ids in wanted.items()}
        if not named:
            having = [s for s, ids in wanted.items() if ids]
            notes.append(f"--claim {', '.join(claim_ids)}: {plural(len(having), 'paper')} "
                         f"({', '.join(having)})")  # fmt: skip
    if keyword is not None:
        match = keyword_matcher(keyword)
        wanted = {s: [i for i in ids if match(i)] for s, ids in wanted.items()}
        if not any(wanted.values()):
            raise BadOption(f"-k '{keyword}' matches no claim of the selected papers")
    if failed_first is not None:
        failures = last_failures(failed_first, papers)
        narrowed = {s: [i for i in ids if i in failures.get(s, ())] for s, ids in wanted.items()}
        if any(narrowed.values()):
            wanted = narrowed
            count = sum(len(ids) for ids in narrowed.values())
            notes.append(f"--lf: rerunning {plural(count, 'claim')} that failed last time")
        else:
            notes.append("--lf: no failed claims on record; checking all selected claims")
    chosen = [p for p in papers if wanted[p.slug]]
    everything = {p.slug: len(p.note.claims) for p in papers}
    claims = {s: tuple(ids) for s, ids in wanted.items() if ids and len(ids) < everything[s]}
    return Selection(chosen, claims, notes)
