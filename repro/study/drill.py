"""`paperlab drill`: a timed mock interview, scheduled by spaced repetition (FSRS).

An *item* is something to rehearse, identified by the paper's slug and a stable id from the
note, never a position: a question (`slug:question:<id>`), the 5-minute summary
(`slug:summary:summary`) or a number from a claim (`slug:number:<claim id>`). Editing a note keeps
an item's history; a new id is a new item; an id that disappears retires its item.

A question is answered aloud in the four beats of the interview framework — background 30 s,
core idea 1 min, technical detail 1–2 min, impact 30 s — then the model answer is revealed and
the candidate grades it (1 again, 2 hard, 3 good, 4 easy). The schedule is the `fsrs` package's;
this module only feeds it grades and stores its cards (`repro.study.drill_store`).

The round is driven through a `DrillIO` (a terminal, or a script of events for tests and for
stdin that is not a TTY); the clock comes from the IO too, so whole rounds run deterministically.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal, Protocol

from repro.lab.claims import within
from repro.lab.errors import BadOption
from repro.lab.library import Paper
from repro.lab.note import Claim, ToleranceSpec
from repro.study.drill_store import StudyDb, StudyDbError, default_db_path
from repro.study.mathtext import MathError, split_math, to_unicode
from repro.study.sheetlang import Lang, localize
from repro.study.site import display_name

Mode = Literal["questions", "summary", "numbers"]
GRADES = {1: "again", 2: "hard", 3: "good", 4: "easy"}
# The answer framework's beats and their budgets in seconds (the notes' answer outline).
QUESTION_BEATS = (("background", 30), ("innovation", 60), ("details", 120), ("impact", 30))
SUMMARY_BEATS = (("summary", 300),)
NUMBER_BEATS = (("answer", 30),)
BEAT_LABELS = {
    "en": {"background": "Background", "innovation": "Core idea", "details": "Technical detail",
           "impact": "Impact", "follow_ups": "Follow-ups", "summary": "5-minute summary",
           "answer": "Your number"},
    "zh": {"background": "背景", "innovation": "核心创新", "details": "技术细节", "impact": "影响",
           "follow_ups": "准备追问", "summary": "5分钟总结", "answer": "你的答案"},
}  # fmt: skip
PRIORITY_RANK = {"must-know": 0, "core": 1, "further": 2}
# A cited claim has no tolerance in its note (nothing is checked); an answer is graded at ±5%.
CITED_TOLERANCE = ToleranceSpec(rel=0.05)
MASK = "▢"


def scheduler():
    """The FSRS scheduler of every round. One 10-minute (re)learning step: an answer graded
    "again" comes back later in the same sitting or day, "good" graduates to days. No fuzzing:
    the same grades give the same schedule on every machine."""
    from fsrs import Scheduler

    step = (timedelta(minutes=10),)
    return Scheduler(learning_steps=step, relearning_steps=step, enable_fuzzing=False)


@dataclass(frozen=True)
class Item:
    key: str
    slug: str
    kind: Literal["question", "summary", "number"]
    item_id: str
    paper: str  # the paper's display name
    priority: str
    order: int  # position among the paper's items, only to order new items
    prompt: str
    answer: str = ""
    outline: dict[str, str] = field(default_factory=dict)
    follow_ups: tuple[str, ...] = ()
    contributions: tuple[str, ...] = ()
    claim: Claim | None = None
    verdict: str = ""

    @property
    def beats(self) -> tuple[tuple[str, int], ...]:
        return {"question": QUESTION_BEATS, "summary": SUMMARY_BEATS, "number": NUMBER_BEATS}[
            self.kind
        ]


def paper_items(paper: Paper, mode: Mode, lang: Lang, verdicts: dict[str, str]) -> list[Item]:
    """The items of one paper for a mode, in the language asked (English where untranslated)."""
    note = paper.note
    view = localize(note, lang)
    name = display_name(note, lang)
    base = {"slug": paper.slug, "paper": name, "priority": note.priority}
    if mode == "summary":
        return [
            Item(
                key=f"{paper.slug}:summary:summary", kind="summary", item_id="summary", order=0,
                prompt=name, answer=view.summary,
                contributions=tuple(str(c) for c in view.contributions), **base,
            )
        ]  # fmt: skip
    if mode == "numbers":
        return [
            Item(
                key=f"{paper.slug}:number:{c.id}",
                kind="number",
                item_id=c.id,
                order=n,
                prompt=number_prompt(c),
                claim=c,
                verdict=verdicts.get(c.id, ""),
                **base,
            )  # fmt: skip
            for n, c in enumerate(note.claims)
            if has_number(c)
        ]
    translated = {q.id: q for q in view.questions if q.id}
    outline = view.answer_outline
    items = []
    for n, qa in enumerate(note.interview.questions):
        if not qa.id:  # no stable id, no history to keep: `paperlab validate` asks for one
            continue
        shown = translated.get(qa.id, qa)
        items.append(
            Item(
                key=f"{paper.slug}:question:{qa.id}", kind="question", item_id=qa.id, order=n,
                prompt=shown.question, answer=shown.answer,
                outline={
                    "background": outline.background, "innovation": outline.innovation,
                    "details": outline.details, "impact": outline.impact,
                },
                follow_ups=tuple(outline.follow_ups), **base,
            )
        )  # fmt: skip
    return items


def plain(text: str) -> str:
    """Note text for a terminal: `$…$` math as Unicode (`\\alpha/r` → `α/r`), the rest as is."""
    out = []
    for seg in split_math(text):
        if seg.kind in ("inline", "display"):
            try:
                out.append(to_unicode(seg.body))
            except MathError:
                out.append(seg.raw)
        else:
            out.append(seg.raw)
    return "".join(out)


def has_number(claim: Claim) -> bool:
    value = claim.expected
    return isinstance(value, int | float) and not isinstance(value, bool)


_NUMBER_RE = re.compile(r"(?<![\w.])(\d(?:[\d,]*\d)?(?:\.\d+)?)\s*([KMBT%×x]?)(?![\w])")
_SCALE = {"": 1, "K": 1e3, "M": 1e6, "B": 1e9, "T": 1e12, "%": 0.01, "×": 1, "x": 1}


def number_prompt(claim: Claim) -> str:
    """The claim's statement with its own expected number masked (it would give the answer)."""
    expected = float(claim.expected)

    def mask(m: re.Match) -> str:
        try:
            value = float(m.group(1).replace(",", ""))
        except ValueError:
            return m.group(0)
        for scaled in (value, value * _SCALE[m.group(2)]):
            if expected and abs(scaled - expected) <= 0.02 * abs(expected):
                return MASK + (m.group(2) if m.group(2) in "×x%" else "")
            if not expected and scaled == 0:
                return MASK
        return m.group(0)

    text = _NUMBER_RE.sub(mask, claim.statement)
    unit = f" ({claim.unit})" if claim.unit else ""
    return f"{text}\n→ the number{unit}?"


def grade_number(claim: Claim, typed: str) -> tuple[bool, float | None]:
    """Is the typed number within the claim's own tolerance? (`None` when it is not a number.)"""
    value = parse_number(typed)
    if value is None:
        return False, None
    tolerance = claim.tolerance if claim.tolerance is not None else CITED_TOLERANCE
    expected = claim.expected
    if tolerance == "exact":  # 256 and 256.0 are the same answer
        return float(value) == float(expected), value
    return within(value, expected, tolerance), value


def parse_number(text: str) -> float | None:
    t = text.strip().replace(",", "").replace("_", "")
    scale = 1.0
    if t and t[-1] in "KMBT%×x":
        scale, t = _SCALE[t[-1]], t[:-1]
    try:
        value = float(t) * scale
    except ValueError:
        return None
    return value if value == value and abs(value) != float("inf") else None


def provenance(claim: Claim) -> str:
    return {
        "derived": "derived by code from the paper's configuration",
        "measured": "measured by an experiment here",
        "cited": "cited from the paper (not reproduced)",
    }[claim.kind]


# --- choosing the items of a round -------------------------------------------------------------


def pick(
    items: list[Item], cards: dict[str, Any], now: datetime, count: int, due_only: bool,
    paper_order: dict[str, int],
) -> list[Item]:  # fmt: skip
    """Due items first (earliest due first), then new ones; must-know papers before core ones."""
    due = [i for i in items if cards.get(i.key) is not None and cards[i.key].due <= now]
    due.sort(key=lambda i: (PRIORITY_RANK.get(i.priority, 9), cards[i.key].due, i.key))
    if due_only:
        return due[:count]
    new = [i for i in items if cards.get(i.key) is None]
    new.sort(key=lambda i: (PRIORITY_RANK.get(i.priority, 9), paper_order[i.slug], i.order))
    return (due + new)[:count]


def load_cards(db: StudyDb, slugs: list[str]) -> dict[str, Any]:
    from fsrs import Card

    return {i.key: Card.from_json(i.card) if i.card else None for i in db.items(slugs)}


def sync_items(db: StudyDb, items: list[Item], slugs: list[str], mode: Mode, now: datetime):
    kinds = {"questions": {"question"}, "summary": {"summary"}, "numbers": {"number"}}[mode]
    for slug in slugs:
        present = {i.key: (i.kind, i.item_id) for i in items if i.slug == slug}
        db.sync(slug, kinds, present, now)


# --- the round ---------------------------------------------------------------------------------


class Quit(Exception):
    """The candidate ended the round (`q`): what was graded is kept."""


class Skip(Exception):
    """The candidate skipped the item (`s`): nothing is stored for it."""


class DrillIO(Protocol):
    """What a round needs from its surroundings: a clock, the candidate's input, a screen."""

    def now(self) -> datetime: ...

    def present(self, item: Item, index: int, total: int) -> None: ...

    def beat(self, item: Item, name: str, budget: int) -> float:
        """Run one beat; return the seconds spent. Raises Skip, Quit or KeyboardInterrupt."""

    def number(self, item: Item) -> str: ...

    def reveal(self, item: Item, outcome: dict) -> None: ...

    def grade(self, item: Item, suggested: int | None) -> int: ...


@dataclass
class Reviewed:
    item: Item
    grade: int
    beats: list[tuple[str, int, float]]
    due: datetime
    answer: str | None = None
    correct: bool | None = None


@dataclass
class RoundResult:
    reviewed: list[Reviewed]
    stopped: Literal["done", "quit"]
    next_due: datetime | None
    due_now: int

    def over_budget(self) -> dict[str, float]:
        """Mean seconds over budget per beat (0 when within it)."""
        spent: dict[str, list[float]] = {}
        for r in self.reviewed:
            for name, budget, seconds in r.beats:
                spent.setdefault(name, []).append(max(0.0, seconds - budget))
        return {name: sum(v) / len(v) for name, v in spent.items()}


def run_round(
    db: StudyDb, pool: list[Item], picked: list[Item], io: DrillIO, lang: Lang
) -> RoundResult:
    """Rehearse `picked`, storing each graded item at once (a kill loses only the current one)."""
    from fsrs import Card, Rating

    sched = scheduler()
    cards = load_cards(db, sorted({i.slug for i in pool}))
    reviewed: list[Reviewed] = []
    stopped: Literal["done", "quit"] = "done"
    for index, item in enumerate(picked, 1):
        io.present(item, index, len(picked))
        try:
            beats = []
            answer = correct = suggested = None
            if item.kind == "number":
                start = io.now()
                answer = io.number(item)
                spent = (io.now() - start).total_seconds()
                beats.append(("answer", NUMBER_BEATS[0][1], spent))
                correct, value = grade_number(item.claim, answer)
                suggested = 3 if correct else 1
                io.reveal(item, {"correct": correct, "value": value})
                grade = suggested
            else:
                for name, budget in item.beats:
                    beats.append((name, budget, io.beat(item, name, budget)))
                io.reveal(item, {})
                grade = io.grade(item, suggested)
        except Skip:
            continue
        except Quit:
            stopped = "quit"
            break
        now = io.now()
        card, _ = sched.review_card(cards.get(item.key) or Card(), Rating(grade), now)
        cards[item.key] = card
        db.record(item.key, card.to_json(), now, grade, beats, answer, lang)
        reviewed.append(Reviewed(item, grade, beats, card.due, answer, correct))
    now = io.now()
    upcoming = [c.due for k, c in cards.items() if c is not None and k in {i.key for i in pool}]
    return RoundResult(
        reviewed=reviewed,
        stopped=stopped,
        next_due=min((d for d in upcoming if d > now), default=None),
        due_now=sum(d <= now for d in upcoming),
    )


# --- statistics ----------------------------------------------------------------------------


def study_stats(db: StudyDb, pool: list[Item], now: datetime) -> dict:
    """Per paper: items seen, due today / this week, retention (FSRS retrievability), mean time
    over budget per beat; and the five weakest items."""
    sched = scheduler()
    slugs = sorted({i.slug for i in pool})
    cards = load_cards(db, slugs)
    keys = {i.key: i for i in pool}
    day_end = now.replace(hour=23, minute=59, second=59)
    papers: dict[str, dict] = {}
    weakest = []
    for slug in slugs:
        seen = [(k, c) for k, c in cards.items() if c is not None and k in keys and
                keys[k].slug == slug]  # fmt: skip
        retention = [sched.get_card_retrievability(c, now) for _, c in seen]
        over: dict[str, list[float]] = {}
        for key, _ in seen:
            for review in db.reviews(key):
                for name, budget, spent in review["beats"]:
                    over.setdefault(name, []).append(max(0.0, spent - budget))
        papers[slug] = {
            "items": sum(i.slug == slug for i in pool),
            "seen": len(seen),
            "due_today": sum(c.due <= day_end for _, c in seen),
            "due_week": sum(c.due <= now + timedelta(days=7) for _, c in seen),
            "retention": sum(retention) / len(retention) if retention else None,
            "over_budget_s": {n: round(sum(v) / len(v), 1) for n, v in over.items()},
        }
        weakest += [(r, k) for r, (k, _) in zip(retention, seen, strict=True)]
    weakest.sort()
    return {
        "papers": papers,
        "weakest": [
            {"key": k, "paper": keys[k].paper, "prompt": keys[k].prompt, "retention": r}
            for r, k in weakest[:5]
        ],
    }


def due_summary(
    db_path: Path | None, slugs: list[str], now: datetime | None = None
) -> dict[str, dict]:
    """What the study site shows per paper when a study database exists: due count and mean
    retention of the items seen. Read-only; no database (or an unusable one) shows nothing."""
    db_path = db_path or default_db_path()
    if not db_path.is_file():
        return {}
    from fsrs import Card

    now = now or datetime.now(timezone.utc)
    sched = scheduler()
    out: dict[str, dict] = {}
    try:
        db = StudyDb(db_path, readonly=True)
    except StudyDbError:
        return {}
    with db:
        for item in db.items(slugs):
            if not item.card:
                continue
            card = Card.from_json(item.card)
            row = out.setdefault(item.slug, {"due": 0, "retention": [], "seen": 0})
            row["seen"] += 1
            row["due"] += card.due <= now
            row["retention"].append(sched.get_card_retrievability(card, now))
    for row in out.values():
        row["retention"] = sum(row["retention"]) / len(row["retention"])
    return out


# --- a script of events: tests, and stdin that is not a terminal -----------------------------


@dataclass(frozen=True)
class Event:
    kind: str  # clock, enter, skip, quit, grade, answer, interrupt
    value: Any
    line: int


def parse_script(lines: Iterable[str], where: str) -> Iterator[Event]:
    """Events from a script, read lazily (stdin is consumed as the round goes).

    One event a line (`#` starts a comment):

    clock 2026-12-06T09:00Z   start the round's clock here (first line only)
    enter [SECONDS]           end the current beat after SECONDS (default 0)
    skip | s                  skip the item (nothing stored)
    quit | q                  end the round; graded items are kept
    grade N | N               grade 1 again, 2 hard, 3 good, 4 easy
    answer VALUE              the numbers drill's answer
    interrupt                 Ctrl-C
    """
    first = True
    for n, raw in enumerate(lines, 1):
        words = raw.split("#", 1)[0].split()
        if not words:
            continue
        try:
            event = _event(words[0].lower(), words[1:], n)
        except (ValueError, IndexError):
            event = None
        if event is None:
            shown = " ".join(raw.split())[:60]
            raise BadOption(f"{where}:{n}: cannot read {shown!r} (see `paperlab drill --help`)")
        if event.kind == "clock" and not first:
            raise BadOption(f"{where}:{n}: `clock` goes on the first line")
        first = False
        yield event


def _event(head: str, args: list[str], n: int) -> Event | None:
    if head == "clock" and len(args) == 1:
        when = datetime.fromisoformat(args[0].replace("Z", "+00:00"))
        return Event("clock", when if when.tzinfo else when.replace(tzinfo=timezone.utc), n)
    if head == "enter" and len(args) <= 1:
        seconds = float(args[0]) if args else 0.0
        return Event("enter", seconds, n) if 0 <= seconds < 1e6 else None
    if head in ("skip", "s", "quit", "q", "interrupt") and not args:
        return Event({"s": "skip", "q": "quit"}.get(head, head), None, n)
    if head == "grade" and len(args) == 1:
        head, args = args[0], []
    if head in ("1", "2", "3", "4") and not args:
        return Event("grade", int(head), n)
    if head == "answer" and len(args) == 1:
        return Event("answer", args[0], n)
    return None
