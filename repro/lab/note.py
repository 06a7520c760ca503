"""The note schema (three-pass reading + note template + interview block + claims) and its loader.

Loading is strict: the YAML safe loader, unknown keys are errors, duplicate keys are errors, and
every problem is reported at once as `path:line:col: field.path: message`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from repro.lab.errors import NoteError, one_line
from repro.lab.strict_yaml import Position, YamlProblem, load_document
from repro.lab.textfile import TextFileError, read_text_file

SLUG_RE = r"^[a-z0-9][a-z0-9-]*$"
YEAR_RANGE = (1950, 2100)
Text = Annotated[str, Field(min_length=1)]
# A stable key for a question, contribution or formula: Anki's GUIDs and the pages' anchors
# come from it, so it never changes when the text is edited or the item moves.
ItemId = Annotated[str, Field(pattern=SLUG_RE, max_length=48)]
# Code a formula or step names: `repro/nn/flash.py::flash_attention_forward`, optionally
# `#L10-L20` (lines of the file) or `#marker` (from `# [marker]` to `# [/marker]`).
CODE_RE = (
    r"^[A-Za-z0-9_][A-Za-z0-9_./-]*\.py(::[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*)?"
    r"(#(L\d+(-L\d+)?|[a-z0-9][a-z0-9-]*))?$"
)
CodeRef = Annotated[str, Field(pattern=CODE_RE)]
# A tolerance of .inf or .nan would verify any value: bounds must be finite numbers.
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
TextList = Annotated[list[Text], Field(min_length=1)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FirstPass(Strict):
    """10 minutes: title, abstract, introduction, conclusion, figures → a verdict."""

    skim: Text = Field(description="What title, abstract, intro, conclusion and figures say")
    verdict: Text = Field(description="Worth a second pass? Why?")


class SecondPass(Strict):
    """1 hour: the argument and the evidence, skipping proofs."""

    key_points: TextList
    open_questions: TextList


class ThirdPass(Strict):
    """3–4 hours: re-derive and reproduce."""

    derivations: TextList
    reproduced: TextList = Field(description="What repro.py re-computes, claim by claim")


class Passes(Strict):
    first: FirstPass
    second: SecondPass
    third: ThirdPass


class Problem(Strict):
    what: Text
    why: Text = Field(description="Why it matters")
    prior_limits: Text = Field(description="What earlier work could not do")


class Step(Strict):
    """An algorithm step that names the code computing it."""

    text: Text
    code: CodeRef | None = Field(None, description="path.py::function[#L10-L20|#marker]")

    def __str__(self) -> str:
        return self.text


def _text_item(value: Any) -> Any:
    """A plain string in a list of items is the item's text (no id, no code)."""
    return {"text": value} if isinstance(value, str) else value


class Method(Strict):
    key_idea: Text
    details: TextList
    steps: Annotated[list[Step], Field(min_length=1)] = Field(
        description="The algorithm, step by step: text, or {text, code}"
    )

    @field_validator("steps", mode="before")
    @classmethod
    def _plain_steps(cls, value: Any) -> Any:
        return [_text_item(v) for v in value] if isinstance(value, list) else value


class Contribution(Strict):
    id: ItemId | None = Field(None, description="Stable key (Anki GUID, page anchor)")
    text: Text

    def __str__(self) -> str:
        return self.text


class Formula(Strict):
    id: ItemId | None = Field(None, description="Stable key (Anki GUID, page anchor)")
    name: Text
    latex: Text
    meaning: Text
    code: CodeRef | None = Field(None, description="path.py::function[#L10-L20|#marker]")
    claims: list[Annotated[str, Field(pattern=SLUG_RE)]] = Field(
        [], description="Ids of the claims whose checks run this formula's code"
    )


class Experiments(Strict):
    datasets: TextList
    baselines: TextList
    results: TextList
    ablations: list[Text] = []


class QA(Strict):
    id: ItemId | None = Field(None, description="Stable key (Anki GUID, page anchor)")
    question: Text
    answer: Text


class DeepDive(Strict):
    topic: Text
    explanation: Text


class AnswerOutline(Strict):
    """Background → core innovation → technical details → impact → follow-up questions."""

    background: Text
    innovation: Text
    details: Text
    impact: Text
    follow_ups: TextList


class Interview(Strict):
    summary: Text = Field(description="A 5-minute spoken summary")
    questions: Annotated[list[QA], Field(min_length=2)]
    deep_dive: DeepDive
    answer_outline: AnswerOutline


class ZhInterview(Strict):
    """The interview block in Chinese; a field left out falls back to the English one."""

    summary: Text | None = Field(None, description="5分钟口述总结")
    questions: Annotated[list[QA], Field(min_length=2)] | None = Field(
        None, description="面试高频问题与回答"
    )
    deep_dive: DeepDive | None = Field(None, description="1个深度技术细节")
    answer_outline: AnswerOutline | None = Field(
        None, description="回答框架：【背景】→【核心创新】→【技术细节】→【影响】→【准备追问】"
    )


class ZhOverlay(Strict):
    """Chinese text for the study sheets (`--lang zh`); anything missing falls back to English.

    `contributions` are matched to the English ones by position (there are always three);
    a question is one card per id, in either language."""

    short_title: Text | None = Field(None, description="中文显示名（索引页、卡组）")
    contributions: Annotated[list[Text], Field(min_length=3, max_length=3)] | None = Field(
        None, description="3个核心贡献"
    )
    interview: ZhInterview | None = None


class ToleranceSpec(Strict):
    """Exactly one of: `rel` (relative), `abs` (absolute), `range` ([lo, hi], null = open)."""

    rel: Annotated[float, Field(gt=0, allow_inf_nan=False)] | None = None
    abs: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    range: tuple[FiniteFloat | None, FiniteFloat | None] | None = None

    @model_validator(mode="after")
    def _one_kind(self) -> ToleranceSpec:
        given = [k for k in ("rel", "abs", "range") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError("give exactly one of rel, abs, range")
        if self.range is not None:
            lo, hi = self.range
            if lo is None and hi is None:
                raise ValueError("a range needs at least one bound")
            if lo is not None and hi is not None and lo > hi:
                raise ValueError(f"range lower bound {lo} exceeds upper bound {hi}")
        return self

    def __str__(self) -> str:
        if self.rel is not None:
            return f"±{self.rel:.0%}" if self.rel >= 0.01 else f"±{self.rel:g} rel"
        if self.abs is not None:
            return f"±{self.abs:g}"
        lo, hi = self.range
        if hi is None:
            return f"≥ {lo:g}"
        if lo is None:
            return f"≤ {hi:g}"
        return f"[{lo:g}, {hi:g}]"


Tolerance = Literal["exact"] | ToleranceSpec
TOLERANCE_HELP = "expected 'exact', {rel: x}, {abs: x} or {range: [lo, hi]}"


class Claim(Strict):
    """A checkable statement of the paper and how it is checked."""

    id: Annotated[str, Field(pattern=SLUG_RE)]
    statement: Text
    source: Text = Field(description="Where in the paper: section, table, figure")
    kind: Literal["derived", "measured", "cited"] = Field(
        description="derived: arithmetic/counting; measured: an experiment here; "
        "cited: from the paper, not reproducible at tiny scale"
    )
    expected: float | int | bool | str | None = None
    unit: str = ""
    tolerance: Tolerance | None = None
    why: str | None = Field(None, description="Required for cited claims: why not reproduced")
    control: str | None = Field(
        None,
        description="Measured claims: the control that must lose (mechanism off, broken "
        "variant, untrained model) and how the check compares against it",
    )
    code: list[CodeRef] = Field(
        [], description="Code this claim's check runs (shown beside the formula that names it)"
    )

    @field_validator("tolerance", mode="wrap")
    @classmethod
    def _one_tolerance_error(cls, value: Any, handler: Any) -> Any:
        # A union reports one error per member; say once what a tolerance may be instead.
        if value is None or value == "exact":
            return handler(value)
        if not isinstance(value, dict):
            raise ValueError(f"{TOLERANCE_HELP}, got {value!r}")
        try:
            return ToleranceSpec.model_validate(value)
        except ValidationError as exc:
            reasons = "; ".join(f"{_dotted(e['loc'])}: {_message(e)}" for e in exc.errors())
            raise ValueError(f"{TOLERANCE_HELP}: {reasons}") from None

    @field_validator("expected")
    @classmethod
    def _finite_expected(cls, value: Any) -> Any:
        if isinstance(value, int | float) and not isinstance(value, bool):
            try:
                finite = math.isfinite(float(value))
            except OverflowError:  # an integer beyond any float
                finite = False
            if not finite:
                raise ValueError("`expected` must be a finite number")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> Claim:
        if self.kind == "cited":
            if not self.why:
                raise ValueError("a cited claim needs `why` (why it is not reproduced here)")
            if self.tolerance is not None:
                raise ValueError("a cited claim has no tolerance: nothing is checked")
            return self
        if self.why is not None:
            raise ValueError("`why` is only for cited claims")
        if self.control is not None and self.kind != "measured":
            raise ValueError("`control` is only for measured claims")
        if self.tolerance is None:
            raise ValueError(f"a {self.kind} claim needs a tolerance")
        numeric = isinstance(self.expected, int | float) and not isinstance(self.expected, bool)
        relative = isinstance(self.tolerance, ToleranceSpec) and self.tolerance.range is None
        if relative and not numeric:
            raise ValueError("a rel/abs tolerance needs a numeric `expected`")
        if self.tolerance == "exact" and self.expected is None:
            raise ValueError("an exact tolerance needs `expected`")
        return self

    @property
    def tolerance_text(self) -> str:
        return "" if self.tolerance is None else str(self.tolerance)


class CompareRow(Strict):
    """One row of a comparison table on the index (`attention-heads`, `positions`, `norms`,
    `scaling`): the row's name, its cells by column key, and optionally the claim behind it."""

    table: Annotated[str, Field(pattern=SLUG_RE)]
    row: Text
    cells: dict[Annotated[str, Field(pattern=SLUG_RE)], Text]
    claim: Annotated[str, Field(pattern=SLUG_RE)] | None = None


class PlotNote(Strict):
    """What a plot of the latest run shows: the claim it supports and what to look for."""

    file: Annotated[str, Field(pattern=r"^[A-Za-z0-9_.-]+\.svg$")]
    claim: Annotated[str, Field(pattern=SLUG_RE)] | None = None
    caption: Text = Field(description="What to look for in the plot")


class Note(Strict):
    """One paper, read with the three-pass method and written up with the note template.

    Plain YAML only: anchors, aliases and tags (`&a`, `*a`, `!!set`) are refused (a note never
    needs them, and alias expansion can blow up), nesting is limited to 64 levels, and the file
    is UTF-8 of at most 1 MiB."""

    model_config = ConfigDict(
        extra="forbid", frozen=True, json_schema_extra={"title": "paperlab note"}
    )

    title: Text
    short_title: Text | None = Field(None, description="Display name: Transformer, GPT-3 …")
    topic: Literal["architecture", "training", "alignment", "efficiency"] | None = Field(
        None, description="Index group: architecture, training (& scaling), alignment, efficiency"
    )
    authors: TextList = Field(description="Full author list, first author first")
    venue: Text
    # None only in a fresh scaffold: `validate --strict` asks for it.
    year: Annotated[int, Field(ge=YEAR_RANGE[0], le=YEAR_RANGE[1])] | None = Field(
        description="Publication year"
    )
    arxiv: Annotated[str, Field(pattern=r"^\d{4}\.\d{4,5}$")]
    url: Annotated[str, Field(pattern=r"^https?://")]
    aliases: list[Annotated[str, Field(pattern=SLUG_RE)]] = []
    tags: TextList
    priority: Literal["must-know", "core", "further"] = "core"
    passes: Passes
    problem: Problem
    contributions: Annotated[list[Contribution], Field(min_length=3, max_length=3)] = Field(
        description="Exactly three: {id, text} (a plain string is the text, with no id)"
    )
    method: Method
    formulas: Annotated[list[Formula], Field(min_length=1)]
    experiments: Experiments
    strengths: TextList
    weaknesses: TextList
    takeaways: TextList
    related: list[Annotated[str, Field(pattern=SLUG_RE)]] = []
    interview: Interview
    zh: ZhOverlay | None = Field(None, description="Chinese overlay for the study sheets")
    plots: list[PlotNote] = Field([], description="Captions of the run's plots, by file name")
    compare: list[CompareRow] = Field(
        [], description="Rows this paper gives the index's comparison tables"
    )
    claims: list[Claim] = []

    @field_validator("contributions", mode="before")
    @classmethod
    def _plain_contributions(cls, value: Any) -> Any:
        return [_text_item(v) for v in value] if isinstance(value, list) else value

    @model_validator(mode="after")
    def _unique_claims(self) -> Note:
        seen: set[str] = set()
        for c in self.claims:
            if c.id in seen:
                raise ValueError(f"duplicate claim id {c.id!r}")
            seen.add(c.id)
        for row in self.compare:
            if row.claim is not None and row.claim not in seen:
                raise ValueError(f"compare row {row.row!r} cites unknown claim {row.claim!r}")
        for plot in self.plots:
            if plot.claim is not None and plot.claim not in seen:
                raise ValueError(f"plot {plot.file!r} names unknown claim {plot.claim!r}")
        for f in self.formulas:
            for cid in f.claims:
                if cid not in seen:
                    raise ValueError(f"formula {f.name!r} lists unknown claim {cid!r}")
        groups = [
            ("contributions", self.contributions),
            ("interview.questions", self.interview.questions),
            ("formulas", self.formulas),
        ]
        zh = self.zh.interview if self.zh and self.zh.interview else None
        if zh and zh.questions:
            groups.append(("zh.interview.questions", zh.questions))
        for where, items in groups:
            ids = [item.id for item in items if item.id is not None]
            dupes = sorted({i for i in ids if ids.count(i) > 1})
            if dupes:
                raise ValueError(f"{where}: duplicate id {', '.join(map(repr, dupes))}")
        return self

    def missing_ids(self) -> list[str]:
        """Field paths of the questions, contributions and formulas that have no `id` yet
        (`python scripts/add_note_ids.py` adds them)."""
        out = [f"contributions[{i}]" for i, c in enumerate(self.contributions) if c.id is None]
        out += [
            f"interview.questions[{i}]"
            for i, q in enumerate(self.interview.questions)
            if q.id is None
        ]
        out += [f"formulas[{i}]" for i, f in enumerate(self.formulas) if f.id is None]
        zh = self.zh.interview if self.zh and self.zh.interview else None
        for i, q in enumerate(zh.questions if zh and zh.questions else []):
            if q.id is None:
                out.append(f"zh.interview.questions[{i}]")
        return out


def note_json_schema() -> dict[str, Any]:
    """The JSON Schema of note.yaml, for editors (`paperlab schema`)."""
    return Note.model_json_schema()


# --- loading with positions ---------------------------------------------------------------


def _dotted(loc: tuple) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(note)"


def _locate(loc: tuple, positions: dict[tuple, Position]) -> Position:
    for n in range(len(loc), -1, -1):
        if loc[:n] in positions:
            return positions[loc[:n]]
    return (1, 1)


# pydantic adds the union member's name to a location (e.g. `tolerance.RelTolerance.rel`)
_UNION_TAGS = re.compile(r"^(literal\[.*\]|ToleranceSpec|float|int|bool|str|none)$")


def _clean_loc(loc: tuple) -> tuple:
    return tuple(p for p in loc if isinstance(p, int) or not _UNION_TAGS.match(str(p)))


def _message(err: dict) -> str:
    if err["type"] == "missing":
        return "field required"
    if err["type"] == "extra_forbidden":
        return "unknown field"
    msg = err["msg"]
    if err["type"] == "string_type" and isinstance(err.get("input"), dict):
        # `- Offline: the cache …` is a mapping to YAML: the author meant one string.
        return f"{msg}; YAML read `key: value` here as a mapping — quote this value"
    return msg.removeprefix("Value error, ")


_POSITION = re.compile(r":(\d+):(\d+): ")


def _line_col(problem: str) -> tuple[int, int]:
    line, col = _POSITION.search(problem).groups()
    return int(line), int(col)


def parse_note(text: str, display_path: str) -> Note:
    """Validate note text; raise NoteError listing every problem with its position."""
    try:
        doc = load_document(text)
    except YamlProblem as exc:
        where = f"{display_path}:{exc.line}:{exc.column}"
        raise NoteError([one_line(f"{where}: {exc.message}")]) from None
    if not isinstance(doc.data, dict):
        raise NoteError([f"{display_path}:1:1: (note): expected a mapping of note fields"])
    positions = doc.positions
    problems = [
        f"{display_path}:{line}:{col}: {_dotted(p)}: duplicate key"
        for p, (line, col) in doc.duplicates
    ]
    try:
        note = Note.model_validate(doc.data)
    except ValidationError as exc:
        seen = set()
        for err in exc.errors():
            loc = _clean_loc(err["loc"])
            line, col = _locate(loc, positions)
            entry = f"{display_path}:{line}:{col}: {_dotted(loc)}: {_message(err)}"
            if entry not in seen:  # a union reports one error per member; keep one
                seen.add(entry)
                problems.append(entry)
        raise NoteError([one_line(p) for p in sorted(problems, key=_line_col)]) from None
    if problems:
        raise NoteError([one_line(p) for p in problems])
    return note


def load_note(path: Path, display_path: str | None = None) -> Note:
    """Read and validate `path`; errors name `display_path` (default: the path as given).

    Only a regular, UTF-8 file of at most 1 MiB is read (see repro.lab.textfile).
    """
    shown = display_path or str(path)
    try:
        text = read_text_file(path, shown)
    except TextFileError as exc:
        raise NoteError([one_line(str(exc))]) from None
    return parse_note(text, shown)


def dump_schema(path: Path) -> None:
    path.write_text(json.dumps(note_json_schema(), indent=2) + "\n", encoding="utf-8")
