"""A paper's metadata from the arXiv API, for `paperlab new SLUG --arxiv ID`.

One request to the Atom API (`export.arxiv.org/api/query?id_list=ID`) with a short timeout,
parsed by feedparser: title, authors in order, the year of the first version, and the abstract's
first sentence (a starting point for the note's first pass, to be rewritten in one's own words).
Offline, slow or unknown ids give `None` and a reason: the scaffold then has the URL alone.
"""

from __future__ import annotations

import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

API = "https://export.arxiv.org/api/query?id_list={id}"
TIMEOUT_S = 5.0
MAX_BYTES = 1 << 20

Fetch = Callable[[str, float], bytes]


@dataclass(frozen=True)
class ArxivMeta:
    arxiv: str
    title: str
    authors: list[str]
    year: int
    first_sentence: str


def _fetch(url: str, timeout: float) -> bytes:
    request = urllib.request.Request(url, headers={"User-Agent": "paperlab (paperlab new)"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read(MAX_BYTES)


def arxiv_metadata(arxiv: str, fetch: Fetch = _fetch) -> tuple[ArxivMeta | None, str]:
    """(metadata, "") when the API answers, else (None, why not) — never an exception."""
    try:
        body = fetch(API.format(id=arxiv), TIMEOUT_S)
    except (OSError, urllib.error.URLError, TimeoutError) as exc:
        reason = getattr(exc, "reason", None) or exc
        return None, f"arXiv could not be reached ({reason})"
    meta = parse_atom(body, arxiv)
    if meta is None:
        return None, f"arXiv has no paper {arxiv}"
    return meta, ""


def parse_atom(body: bytes, arxiv: str) -> ArxivMeta | None:
    """The one entry of an API answer, or None when it has none (an unknown id)."""
    import feedparser

    feed = feedparser.parse(body)
    entries = [e for e in feed.entries if arxiv in e.get("id", "")]
    if not entries:
        return None
    entry = entries[0]
    title = " ".join(entry.get("title", "").split())
    published = entry.get("published_parsed")
    if not title or published is None:
        return None
    authors = [" ".join(a.get("name", "").split()) for a in entry.get("authors", [])]
    return ArxivMeta(
        arxiv=arxiv,
        title=title,
        authors=[a for a in authors if a],
        year=published.tm_year,
        first_sentence=first_sentence(entry.get("summary", "")),
    )


def first_sentence(text: str) -> str:
    """Up to the first full stop that ends a sentence (not `e.g.`, `Fig. 2`, `3.5`)."""
    text = " ".join(text.split())
    for m in re.finditer(r"[.!?](?=\s+[A-Z(]|$)", text):
        before = text[: m.start()].rsplit(" ", 1)[-1]
        if before.lower() in ("e.g", "i.e", "fig", "eq", "et al", "al", "vs", "cf"):
            continue
        return text[: m.end()]
    return text
