"""Flashcards for Anki: a real `.apkg` (genanki) whose notes keep their review history, and a TSV.

- **Stable GUIDs.** A card's GUID comes from the paper's slug, the language, the card's kind and
  the `id` its item carries in the note (`interview.questions[].id`, `contributions[].id`,
  `formulas[].id`) — never from its position. Inserting, deleting or reordering questions leaves
  every other card's GUID and content alone; an edited answer updates its card in place. (An
  item without an id, which `validate` reports, is keyed by its text until it gets one.)
- **One deck per paper and language**: `paperlab::en::lora`, `paperlab::zh::lora`, tagged
  `lang::en` / `lang::zh`, so the English and Chinese decks never mix. A zh card whose text
  has no Chinese (the overlay does not cover it) is marked 【英文原文】 and tagged `untranslated`,
  or left out with `only_translated`.
- **Small cards**: one per contribution, one per question, the deep dive, the answer
  framework, one per formula, and a cloze card (`{{c1::…}}`) for each key formula (a formula
  with `code:`, else the note's first). An answer above ~60 words starts with its first
  sentence as the short answer; the full answer follows, nothing cut.
- Must-know papers carry the tag `paperlab::must-know`.

Math is written as `\\(…\\)` and `\\[…\\]`, which Anki's built-in MathJax renders.
"""

from __future__ import annotations

import csv
import hashlib
import io
import re
from dataclasses import dataclass
from functools import lru_cache
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
CLOZE_MODEL_NAME = "paperlab cloze"
CSS = """.card { font-family: system-ui, "PingFang SC", "Microsoft YaHei", "Noto Sans CJK SC",
  sans-serif; font-size: 18px; line-height: 1.5; text-align: left; max-width: 42rem; margin: auto; }
.meta { color: #888; font-size: 0.8em; margin-top: 1rem; }
.short { font-weight: 600; margin-bottom: 0.6rem; }
.full { border-top: 1px dashed #aaa; padding-top: 0.4rem; }
.untranslated { color: #9a6700; font-size: 0.8em; }
code { font-size: 0.9em; }"""
LONG_ANSWER_WORDS = 60
SHORT_ANSWER_WORDS = 40


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


def _cloze_model():
    import genanki

    return genanki.Model(
        _stable_id(CLOZE_MODEL_NAME),
        CLOZE_MODEL_NAME,
        fields=[{"name": "Text"}, {"name": "Back Extra"}, {"name": "Paper"}, {"name": "Source"}],
        templates=[
            {
                "name": "Cloze",
                "qfmt": "{{cloze:Text}}",
                "afmt": "{{cloze:Text}}<br>{{Back Extra}}"
                '<div class="meta">{{Paper}} · {{Source}}</div>',
            }
        ],
        css=CSS,
        model_type=genanki.Model.CLOZE,
    )


def anki_math(latex: str, display: bool) -> str:
    """MathJax delimiters Anki understands, HTML-escaped like the rest of the field."""
    return escape(f"\\[{latex}\\]" if display else f"\\({latex}\\)", quote=False)


def _html(text: object, block: bool = False) -> str:
    return _card_html(str(text), block)


@lru_cache(maxsize=16384)
def _card_html(text: str, block: bool) -> str:
    return str(markdown_html(text, block, anki_math))


# --- answer length ---------------------------------------------------------------------------

_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff]")
_SENTENCE_END = re.compile(r"(?<=[。！？])|(?<=[.!?])\s+(?=[A-Z$(`*\"'])")


def word_count(text: str) -> int:
    """Words of English, plus Chinese characters counted two to a word."""
    cjk = len(_CJK.findall(text))
    return len(_CJK.sub(" ", text).split()) + (cjk + 1) // 2


def _outside_math(text: str, cut: int) -> bool:
    return text[:cut].count("$") % 2 == 0


def short_answer(text: str) -> str:
    """The first sentence of `text` (at most ~40 words, cut only between words, never inside
    `$…$`), or "" when `text` is short enough to read whole."""
    text = text.strip()
    if word_count(text) <= LONG_ANSWER_WORDS:
        return ""
    for m in _SENTENCE_END.finditer(text):
        if m.start() > 0 and _outside_math(text, m.start()):
            first = text[: m.start()].strip()
            break
    else:
        first = text
    if word_count(first) <= SHORT_ANSWER_WORDS:
        return first
    # too long a sentence: stop after ~SHORT words, at a space outside math
    words, out = 0, len(first)
    for m in re.finditer(r"\s+", first):
        words = word_count(first[: m.start()])
        if words >= SHORT_ANSWER_WORDS and _outside_math(first, m.start()):
            out = m.start()
            break
    return first[:out].rstrip(",;:—-– ") + " …"


def answer_html(text: str) -> str:
    """An answer as card HTML: short answer first when it is long, then the whole of it."""
    short = short_answer(text)
    full = _html(text, block=True)
    if not short:
        return full
    return f'<div class="short">{_html(short)}</div><div class="full">{full}</div>'


# --- cards -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Card:
    key: str  # stable within the paper and language: the GUID comes from (slug, lang, key)
    kind: str  # contribution | question | deep-dive | outline | formula | cloze
    front: str  # HTML (for a cloze card: the text with {{c1::…}})
    back: str  # HTML
    source: str
    translated: bool = True  # False: a zh card showing English text


def _key(kind: str, item_id: str | None, text: str) -> str:
    if item_id:
        return f"{kind}:{item_id}"
    return f"{kind}:text-{hashlib.sha1(text.encode()).hexdigest()[:10]}"


def _cue(text: str) -> str:
    """The opening words of a contribution, to say which one a card asks for."""
    head = re.split(r"[:：—]| - ", text.strip(), maxsplit=1)[0].strip()
    if word_count(head) > 8 or "$" in head:
        head = " ".join(re.sub(r"\$[^$]*\$", "…", text).split()[:5])
    return head


def _top_level_equals(latex: str) -> int:
    """Index of the first `=` not inside braces (-1 when none)."""
    depth = 0
    for i, ch in enumerate(latex):
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        elif ch == "=" and depth == 0 and latex[i - 1 : i] not in ("\\", "<", ">", "!"):
            return i
    return -1


def cloze_text(latex: str) -> str:
    """`lhs = rhs` with the right-hand side as a cloze, inside MathJax (`}}` spaced out, as
    Anki's cloze parser needs)."""
    latex = " ".join(latex.split())
    eq = _top_level_equals(latex)
    lhs, rhs = (latex[: eq + 1], latex[eq + 1 :]) if eq > 0 else ("", latex)
    rhs = rhs.strip().replace("}}", "} }").replace("::", ": :")
    return escape(f"\\[{lhs} {{{{c1::{rhs}}}}}\\]", quote=False)


def key_formulas(paper: Paper) -> list:
    """The formulas a cloze card is made for: those that name their code, else the first."""
    linked = [f for f in paper.note.formulas if f.code]
    return linked or paper.note.formulas[:1]


def paper_cards(paper: Paper, lang: Lang = "en", only_translated: bool = False) -> list[Card]:
    """The cards of one paper, in the order they are studied."""
    note, L = paper.note, labels(lang)
    view = localize(note, lang)
    name = (note.zh.short_title if lang == "zh" and note.zh else None) or note.short_title
    title = escape(name or note.title)
    sep = "：" if lang == "zh" else ": "
    english = {s for s in view.fallback} if lang == "zh" else set()
    cards: list[Card] = []

    def add(card: Card) -> None:
        cards.append(card)

    n = len(view.contributions)
    for i, c in enumerate(view.contributions, 1):
        add(Card(
            _key("contribution", c.id, c.text), "contribution",
            f"[{title}] {L['contributions']} {i}/{n}{sep}{_html(_cue(c.text))} …?",
            _html(c.text, block=True), L["contributions"],
            "contributions" not in english,
        ))  # fmt: skip
    for qa in view.questions:  # no position anywhere on a card: inserting one moves nothing
        add(Card(
            _key("question", qa.id, qa.question), "question",
            f"[{title}] {_html(qa.question)}", answer_html(qa.answer),
            L["questions"], "questions" not in english,
        ))  # fmt: skip
    dive = view.deep_dive
    add(Card(
        "deep-dive", "deep-dive", f"[{title}] {L['deep_dive']}{sep}{_html(dive.topic)}",
        answer_html(dive.explanation), _html(dive.topic), "deep_dive" not in english,
    ))  # fmt: skip
    o = view.answer_outline
    outline = [
        (L["background"] + " " + L["budget_background"], o.background),
        (L["innovation"] + " " + L["budget_innovation"], o.innovation),
        (L["outline_details"] + " " + L["budget_details"], o.details),
        (L["impact"] + " " + L["budget_impact"], o.impact),
    ]
    back = "<ol>" + "".join(f"<li><b>{escape(k)}</b> {_html(v)}</li>" for k, v in outline)
    back += f"<li><b>{escape(L['follow_ups'])}</b><ul>"
    back += "".join(f"<li>{_html(q)}</li>" for q in o.follow_ups) + "</ul></li></ol>"
    add(Card("outline", "outline", f"[{title}] {L['outline']}", back, L["outline"],
             "answer_outline" not in english))  # fmt: skip
    for f in note.formulas:  # formulas are never translated: a zh card keeps them as written
        add(Card(
            _key("formula", f.id, f.name), "formula",
            f"[{title}] {L['formulas']}{sep}{_html(f.name)}",
            anki_math(f.latex.strip(), True) + _html(f.meaning, block=True), _html(f.name),
            lang == "en" or bool(_CJK.search(f.name + f.meaning)),
        ))  # fmt: skip
    for f in key_formulas(paper):
        extra = _html(f.meaning, block=True)
        if f.code:
            extra += f"<p><code>{escape(f.code)}</code></p>"
        add(Card(
            _key("cloze", f.id, f.name), "cloze",
            f"[{title}] {_html(f.name)}<br>{cloze_text(f.latex)}", extra, _html(f.name),
            lang == "en" or bool(_CJK.search(f.name + f.meaning)),
        ))  # fmt: skip
    if lang == "zh":
        if only_translated:
            return [c for c in cards if c.translated]
        marker = f'<span class="untranslated">{escape(L["untranslated"])}</span> '
        cards = [
            c if c.translated else Card(c.key, c.kind, marker + c.front, c.back, c.source, False)
            for c in cards
        ]
    return cards


def card_guid(slug: str, key: str, lang: Lang = "en") -> str:
    """Anki's GUID for a card: from the slug, the language and the card's stable key."""
    import genanki

    return genanki.guid_for("paperlab", slug, lang, key)


def deck_name(slug: str, lang: Lang = "en") -> str:
    return f"paperlab::{lang}::{slug}"


def _tags(paper: Paper, card: Card, lang: Lang) -> list[str]:
    tags = [paper.slug, paper.note.priority, card.kind, f"lang::{lang}"]
    if paper.note.priority == "must-know":
        tags.append("paperlab::must-know")
    if not card.translated:
        tags.append("untranslated")
    return tags


def _fields(paper: Paper, card: Card) -> list[str]:
    return [card.front, card.back, escape(paper.note.title), card.source]


@dataclass
class DeckReport:
    count: int  # notes written
    guids: dict[str, str]  # GUID → the card's front as plain text


def _manifest_path(path: Path) -> Path:
    """Beside a deck: its cards' GUIDs and fronts, to report what the next export removes."""
    return path.with_name(path.name + ".cards.json")


def _plain(html: str) -> str:
    return " ".join(re.sub(r"<[^>]+>", " ", html).split())


def write_apkg(
    papers: list[Paper], path: Path, lang: Lang = "en", only_translated: bool = False
) -> DeckReport:
    """Write one `.apkg` with a deck per paper and language."""
    import genanki

    model, cloze = _model(), _cloze_model()
    decks, fronts = [], {}
    for paper in papers:
        name = deck_name(paper.slug, lang)
        deck = genanki.Deck(_stable_id(name), name)
        for card in paper_cards(paper, lang, only_translated):
            guid = card_guid(paper.slug, card.key, lang)
            deck.add_note(genanki.Note(
                model=cloze if card.kind == "cloze" else model, fields=_fields(paper, card),
                tags=_tags(paper, card, lang), guid=guid,
            ))  # fmt: skip
            fronts[guid] = _plain(card.front)
        decks.append(deck)
    genanki.Package(decks).write_to_file(str(path))
    return DeckReport(len(fronts), fronts)


def render_tsv(papers: list[Paper], lang: Lang = "en", only_translated: bool = False) -> str:
    """The same cards as tab-separated text (File → Import), GUIDs in the first column."""
    out = io.StringIO()
    writer = csv.writer(out, delimiter="\t", lineterminator="\n")
    out.write("#separator:tab\n#html:true\n#guid column:1\n#deck column:4\n#tags column:5\n")
    for paper in papers:
        for card in paper_cards(paper, lang, only_translated):
            writer.writerow(
                [
                    card_guid(paper.slug, card.key, lang),
                    card.front,
                    card.back,
                    deck_name(paper.slug, lang),
                    " ".join(_tags(paper, card, lang)),
                ]
            )
    return out.getvalue()
