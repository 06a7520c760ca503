"""Flashcards for Anki: a real `.apkg` (genanki) whose notes update on re-import, and a TSV.

Each paper is a deck `paperlab::<slug>`. Every card's GUID is derived from the slug and a key that
stays put when its text is edited (`contributions`, `question-2`, `formula:<name>` …), so
importing a newer export updates the cards instead of duplicating them. Math is written as
`\\(…\\)` and `\\[…\\]`, which Anki's built-in MathJax renders.
"""

from __future__ import annotations

import csv
import hashlib
import io
from dataclasses import dataclass
from html import escape
from pathlib import Path

from repro.lab.library import Paper
from repro.study.sheetlang import Lang, labels, localize
from repro.study.sheets import markdown_html


def _stable_id(name: str) -> int:
    """A positive 31-bit id from a name: the same deck or model id on every export."""
    return int(hashlib.sha1(name.encode()).hexdigest()[:8], 16) >> 1


FIELDS = ["Front", "Back", "Paper", "Source"]
MODEL_NAME = "paperlab card"
CSS = """.card { font-family: system-ui, "PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC",
  sans-serif; font-size: 18px; line-height: 1.5; text-align: left; max-width: 42rem; margin: auto; }
.meta { color: #888; font-size: 0.8em; margin-top: 1rem; }
code { font-size: 0.9em; }"""


def _model():
    import genanki

    return genanki.Model(
        _stable_id(MODEL_NAME),
        MODEL_NAME,
        fields=[{"name": f} for f in FIELDS],
        templates=[
            {
                "name": "Card 1",
                "qfmt": "{{Front}}",
                "afmt": '{{FrontSide}}<hr id="answer">{{Back}}'
                '<div class="meta">{{Paper}} · {{Source}}</div>',
            }
        ],
        css=CSS,
    )


def anki_math(latex: str, display: bool) -> str:
    """MathJax delimiters Anki understands, HTML-escaped like the rest of the field."""
    return escape(f"\\[{latex}\\]" if display else f"\\({latex}\\)", quote=False)


def _html(text: str, block: bool = False) -> str:
    return str(markdown_html(text, block, anki_math))


@dataclass(frozen=True)
class Card:
    key: str  # stable within the paper: the GUID comes from (slug, key)
    kind: str  # contributions | question | deep-dive | formula | outline
    front: str  # HTML
    back: str  # HTML
    source: str


def paper_cards(paper: Paper, lang: Lang = "en") -> list[Card]:
    """The cards of one paper, in the order they are studied."""
    note, L = paper.note, labels(lang)
    view = localize(note, lang)
    title = escape(note.title)
    sep = "：" if lang == "zh" else ": "
    cards = [
        Card(
            "contributions",
            "contributions",
            f"{title}{sep}{L['card_contributions']}",
            "<ol>" + "".join(f"<li>{_html(c)}</li>" for c in view.contributions) + "</ol>",
            L["contributions"],
        )
    ]
    for i, qa in enumerate(view.questions, 1):
        cards.append(
            Card(
                f"question-{i}",
                "question",
                f"[{title}] {_html(qa.question)}",
                _html(qa.answer, block=True),
                f"{L['questions']} Q{i}",
            )  # fmt: skip
        )
    dive = view.deep_dive
    cards.append(
        Card(
            "deep-dive",
            "deep-dive",
            f"[{title}] {L['deep_dive']}{sep}{_html(dive.topic)}",
            _html(dive.explanation, block=True),
            _html(dive.topic),
        )  # fmt: skip
    )
    o = view.answer_outline
    outline = [
        (L["background"], o.background),
        (L["innovation"], o.innovation),
        (L["outline_details"], o.details),
        (L["impact"], o.impact),
    ]
    back = "<ol>" + "".join(f"<li><b>{escape(k)}</b> {_html(v)}</li>" for k, v in outline)
    back += f"<li><b>{escape(L['follow_ups'])}</b><ul>"
    back += "".join(f"<li>{_html(q)}</li>" for q in o.follow_ups) + "</ul></li></ol>"
    cards.append(Card("outline", "outline", f"[{title}] {L['outline']}", back, L["outline"]))
    for f in note.formulas:
        cards.append(
            Card(f"formula:{f.name}", "formula", f"[{title}] {L['formulas']}{sep}{_html(f.name)}",
                 anki_math(f.latex.strip(), True) + _html(f.meaning, block=True), _html(f.name))
        )  # fmt: skip
    return cards


def card_guid(slug: str, key: str, lang: Lang = "en") -> str:
    """Anki's GUID for a card: from the slug and the card's stable key (and the language, so
    the English and Chinese decks can live side by side)."""
    import genanki

    return genanki.guid_for(slug, key) if lang == "en" else genanki.guid_for(slug, key, lang)


def deck_name(slug: str) -> str:
    return f"paperlab::{slug}"


def _tags(paper: Paper, card: Card) -> list[str]:
    return [paper.slug, paper.note.priority, card.kind]


def write_apkg(papers: list[Paper], path: Path, lang: Lang = "en") -> int:
    """Write one `.apkg` with a deck per paper; returns the number of notes."""
    import genanki

    model = _model()
    decks, count = [], 0
    for paper in papers:
        deck = genanki.Deck(_stable_id(deck_name(paper.slug)), deck_name(paper.slug))
        for card in paper_cards(paper, lang):
            deck.add_note(
                genanki.Note(
                    model=model,
                    fields=[card.front, card.back, escape(paper.note.title), card.source],
                    tags=_tags(paper, card),
                    guid=card_guid(paper.slug, card.key, lang),
                )
            )
            count += 1
        decks.append(deck)
    genanki.Package(decks).write_to_file(str(path))
    return count


def render_tsv(papers: list[Paper], lang: Lang = "en") -> str:
    """The same cards as tab-separated text (File → Import), GUIDs in the first column."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    out.write("#separator:tab\n#html:true\n#guid column:1\n#deck column:4\n#tags column:5\n")
    for paper in papers:
        for card in paper_cards(paper, lang):
            writer.writerow(
                [
                    card_guid(paper.slug, card.key, lang),
                    card.front,
                    card.back,
                    deck_name(paper.slug),
                    " ".join(_tags(paper, card)),
                ]
            )
    return out.getvalue()
