"""`paperlab drill`: scripted rounds, the FSRS schedule, stable items, numbers, failures."""

from __future__ import annotations

import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner
from fsrs import Card, Rating

from paperlab import cli
from repro.lab.note import Claim
from repro.study import drill
from repro.study.drill_store import SCHEMA_VERSION, StudyDb

FIXTURE = Path(__file__).parents[1] / "fixtures" / "library" / "toy"
START = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)
QUESTION = ["enter 20", "enter 70", "enter 100", "enter 25"]  # one question's four beats


def _note(priority: str, questions: list[tuple[str, str]], zh: bool = False) -> dict:
    note = yaml.safe_load((FIXTURE / "note.yaml").read_text(encoding="utf-8"))
    note["priority"] = priority
    note["interview"]["questions"] = [
        {"id": qid, "question": f"Q {qid}?", "answer": answer} for qid, answer in questions
    ]
    if zh:
        note["zh"] = {
            "interview": {
                "questions": [
                    {"id": qid, "question": f"问题 {qid}？", "answer": f"回答 {qid}"}
                    for qid, _ in questions
                ]
            }
        }
    return note


def _write(root: Path, slug: str, note: dict) -> None:
    folder = root / slug
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE / "repro.py", folder / "repro.py")
    (folder / "note.yaml").write_text(yaml.safe_dump(note, allow_unicode=True), encoding="utf-8")


@pytest.fixture
def study(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Three papers (one must-know) in a temporary library, and a temporary study database."""
    root = tmp_path / "papers"
    _write(root, "alpha", _note("core", [("a1", "x"), ("a2", "y"), ("a3", "z")]))
    _write(root, "beta", _note("must-know", [("b1", "x"), ("b2", "y"), ("b3", "z")], zh=True))
    _write(root, "gamma", _note("core", [("c1", "x"), ("c2", "y"), ("c3", "z"), ("c4", "w")]))
    monkeypatch.setenv("PAPERLAB_PAPERS", str(root))
    monkeypatch.setenv("PAPERLAB_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("PAPERLAB_STUDY_DB", str(tmp_path / "study.sqlite3"))
    return tmp_path


def _drill(study: Path, script: list[str], *args: str):
    path = study / "round.txt"
    path.write_text("\n".join(script) + "\n", encoding="utf-8")
    return CliRunner().invoke(cli, ["drill", "--script", str(path), "--json", *args])


def _reviews(study: Path) -> list[dict]:
    with StudyDb(study / "study.sqlite3") as db:
        return db.reviews()


def _fsrs_due(*grades_and_times: tuple[int, datetime]) -> datetime:
    """The due date the fsrs package itself gives for these reviews."""
    card = Card()
    for grade, when in grades_and_times:
        card, _ = drill.scheduler().review_card(card, Rating(grade), when)
    return card.due


def test_a_scripted_round_of_ten_items_over_three_papers(study: Path) -> None:
    grades = [1, 3, 3, 2, 4, 3, 1, 3, 3, 3]
    script = [f"clock {START.isoformat()}"]
    for g in grades:
        script += QUESTION + [f"grade {g}"]
    result = _drill(study, script, "-n", "10")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    keys = [r["key"] for r in out["reviewed"]]
    assert len(keys) == 10 and len({k.split(":")[0] for k in keys}) == 3
    # must-know first, then the papers in order, each paper's questions in note order
    assert keys[:3] == ["beta:question:b1", "beta:question:b2", "beta:question:b3"]
    assert keys[3:6] == ["alpha:question:a1", "alpha:question:a2", "alpha:question:a3"]
    stored = _reviews(study)
    assert [r["grade"] for r in stored] == grades
    assert stored[0]["beats"] == [
        ["background", 30, 20.0], ["innovation", 60, 70.0], ["details", 120, 100.0],
        ["impact", 30, 25.0],
    ]  # fmt: skip
    # The schedule is FSRS's: compare with the package directly, at each review's own time.
    for r, g in zip(out["reviewed"], grades, strict=True):
        at = datetime.fromisoformat(next(s["at"] for s in stored if s["key"] == r["key"]))
        assert datetime.fromisoformat(r["due"]) == _fsrs_due((g, at))
    again = datetime.fromisoformat(out["reviewed"][0]["due"])
    good = datetime.fromisoformat(out["reviewed"][1]["due"])
    first_at = datetime.fromisoformat(stored[0]["at"])
    assert again.date() == first_at.date()  # "again": the same day
    assert good - first_at >= timedelta(days=1)  # "good": days later


def test_due_items_come_before_new_ones(study: Path) -> None:
    _drill(study, [f"clock {START.isoformat()}", *QUESTION, "grade 1"], "-n", "1")
    later = START + timedelta(days=1)
    result = _drill(study, [f"clock {later.isoformat()}", *QUESTION, "grade 3"], "-n", "1")
    assert json.loads(result.stdout)["reviewed"][0]["key"] == "beta:question:b1"
    only_due = _drill(study, [f"clock {later.isoformat()}"], "--due")
    assert "no item is due" in only_due.stderr


def test_editing_inserting_and_deleting_questions(study: Path) -> None:
    script = [f"clock {START.isoformat()}"] + (QUESTION + ["grade 3"]) * 3
    assert _drill(study, script, "beta").exit_code == 0
    # edit b2's answer, insert b0 at the top, delete b3
    note = _note("must-know", [("b0", "new"), ("b1", "x"), ("b2", "edited")])
    _write(study / "papers", "beta", note)
    later = START + timedelta(days=30)
    result = _drill(study, [f"clock {later.isoformat()}", *QUESTION, "grade 3"], "beta", "-n", "3")
    assert result.exit_code == 0, result.output
    with StudyDb(study / "study.sqlite3") as db:
        active = {i.key for i in db.items()}
        everything = {i.key: i for i in db.items(retired=True)}
        assert len(db.reviews("beta:question:b2")) == 1  # the edited one keeps its history
    assert "beta:question:b0" in active  # the inserted one is a new item
    assert "beta:question:b3" not in active and everything["beta:question:b3"].retired
    assert {"beta:question:b1", "beta:question:b2"} <= active


@pytest.mark.parametrize(
    ("tolerance", "expected", "right", "wrong"),
    [
        ("exact", 4, "4", "5"),
        ({"abs": 0.5}, 4, "4.4", "4.6"),
        ({"rel": 0.1}, 200, "215", "225"),
        ({"range": [0.5, None]}, 1.0, "0.7", "0.4"),
        ({"range": [None, 1.0]}, 0.5, "0.9", "1.1"),
        (None, 28.4, "28.4", "31"),  # cited: ±5%
    ],
)
def test_numbers_are_graded_by_the_claims_own_tolerance(tolerance, expected, right, wrong) -> None:
    kind = "cited" if tolerance is None else "derived"
    extra = {"why": "not reproducible"} if kind == "cited" else {"tolerance": tolerance}
    claim = Claim(id="c", statement="s", source="T1", kind=kind, expected=expected, **extra)
    assert drill.grade_number(claim, right)[0]
    assert not drill.grade_number(claim, wrong)[0]
    assert drill.grade_number(claim, "not a number") == (False, None)


def test_a_numbers_round_grades_and_stores_the_answer(study: Path) -> None:
    script = [f"clock {START.isoformat()}", "answer 4", "answer 3"]
    result = _drill(study, script, "alpha", "--numbers", "-n", "2")
    assert result.exit_code == 0, result.output
    reviewed = json.loads(result.stdout)["reviewed"]
    assert [r["correct"] for r in reviewed] == [True, False]
    assert [r["grade"] for r in reviewed] == [3, 1]
    assert [r["answer"] for r in _reviews(study)] == ["4", "3"]


def test_the_numbers_prompt_hides_the_expected_value() -> None:
    claim = Claim(
        id="r", statement="LoRA trains 256× fewer parameters than 4,096-wide fine-tuning",
        source="§4", kind="derived", expected=256, tolerance="exact",
    )  # fmt: skip
    prompt = drill.number_prompt(claim)
    assert "256" not in prompt and drill.MASK in prompt and "4,096" in prompt


def test_ctrl_c_keeps_the_graded_items_and_not_the_current_one(study: Path) -> None:
    script = [f"clock {START.isoformat()}", *QUESTION, "grade 3", *QUESTION, "grade 4",
              "enter 10", "interrupt"]  # fmt: skip
    result = _drill(study, script)
    assert result.exit_code == 130
    assert [r["grade"] for r in _reviews(study)] == [3, 4]


def test_quit_and_skip(study: Path) -> None:
    script = [f"clock {START.isoformat()}", "enter 5", "skip", *QUESTION, "grade 2", "quit"]
    result = _drill(study, script)
    assert result.exit_code == 0
    assert json.loads(result.stdout)["stopped"] == "quit"
    assert [(r["key"], r["grade"]) for r in _reviews(study)] == [("beta:question:b2", 2)]


def test_a_zh_round_uses_the_overlay_and_the_chinese_beats(study: Path) -> None:
    path = study / "zh.txt"
    path.write_text(f"clock {START.isoformat()}\n" + "\n".join(QUESTION) + "\ngrade 3\n")
    result = CliRunner().invoke(cli, ["drill", "beta", "--lang", "zh", "--script", str(path)])
    assert result.exit_code == 0, result.output
    for text in ("问题 b1？", "回答 b1", "背景", "核心创新", "技术细节", "影响", "准备追问"):
        assert text in result.output
    assert _reviews(study)[0]["lang"] == "zh"


def test_a_damaged_or_newer_database_is_one_error_and_left_alone(study: Path) -> None:
    db = study / "study.sqlite3"
    db.write_bytes(b"this is not sqlite" * 100)
    result = _drill(study, [f"clock {START.isoformat()}"])
    assert result.exit_code == 2
    assert result.stderr.count("Error:") == 1 and "Traceback" not in result.output
    assert db.read_bytes() == b"this is not sqlite" * 100
    db.unlink()
    con = sqlite3.connect(db)
    con.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    con.close()
    result = _drill(study, [f"clock {START.isoformat()}"])
    assert result.exit_code == 2 and "newer" in result.stderr


def test_a_bad_script_line_is_located(study: Path) -> None:
    result = _drill(study, [f"clock {START.isoformat()}", "enter", "jump 3"])
    assert result.exit_code == 2
    assert "round.txt:3: cannot read 'jump 3'" in result.stderr


def test_stats_export_and_import(study: Path, tmp_path: Path, monkeypatch) -> None:
    script = [f"clock {START.isoformat()}", *QUESTION, "grade 1", *QUESTION, "grade 4"]
    _drill(study, script)
    stats = CliRunner().invoke(cli, ["drill", "--stats", "--json"])
    data = json.loads(stats.stdout)
    assert data["papers"]["beta"]["seen"] == 2 and data["papers"]["alpha"]["seen"] == 0
    assert data["papers"]["beta"]["over_budget_s"]["innovation"] == 10.0
    assert data["weakest"][0]["key"] == "beta:question:b1"  # graded "again"
    export = tmp_path / "history.json"
    assert CliRunner().invoke(cli, ["drill", "--export", str(export)]).exit_code == 0
    monkeypatch.setenv("PAPERLAB_STUDY_DB", str(tmp_path / "other.sqlite3"))
    assert CliRunner().invoke(cli, ["drill", "--import", str(export)]).exit_code == 0
    assert CliRunner().invoke(cli, ["drill", "--import", str(export)]).exit_code == 0  # idempotent
    with StudyDb(tmp_path / "other.sqlite3") as db:
        assert [r["grade"] for r in db.reviews()] == [1, 4]


def test_kill_9_during_a_round_loses_at_most_the_current_item(study: Path) -> None:
    env = {**os.environ, "PAPERLAB_DEBUG": ""}
    proc = subprocess.Popen(
        [sys.executable, "-c", "from paperlab import main; main()", "drill", "--script", "-"],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
        text=True,
    )  # fmt: skip
    lines = [f"clock {START.isoformat()}", *QUESTION, "grade 3", *QUESTION, "grade 2", "enter 3"]
    proc.stdin.write("\n".join(lines) + "\n")
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    while len(_reviews(study)) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    con = sqlite3.connect(study / "study.sqlite3")
    assert con.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    con.close()
    assert [r["grade"] for r in _reviews(study)] == [3, 2]


def test_the_site_index_shows_due_items_and_retention(study: Path, tmp_path: Path) -> None:
    script = [f"clock {START.isoformat()}", *QUESTION, "grade 1", *QUESTION, "grade 3"]
    assert _drill(study, script).exit_code == 0
    summary = drill.due_summary(
        study / "study.sqlite3", ["alpha", "beta"], START + timedelta(hours=1)
    )
    assert set(summary) == {"beta"}  # alpha has nothing seen yet
    assert summary["beta"]["seen"] == 2 and summary["beta"]["due"] == 1  # the "again" one
    cards = [
        Card.from_json(i.card) for i in StudyDb(study / "study.sqlite3").items(["beta"]) if i.card
    ]
    expected = [
        drill.scheduler().get_card_retrievability(c, START + timedelta(hours=1)) for c in cards
    ]
    assert summary["beta"]["retention"] == pytest.approx(sum(expected) / 2)
    site = tmp_path / "site"
    result = CliRunner().invoke(cli, ["sheet", "--all", "--format", "html", "-o", f"{site}/"])
    assert result.exit_code == 0, result.output
    index = (site / "index.html").read_text(encoding="utf-8")
    assert "due for review" in index and "retention" in index


def test_no_or_a_damaged_database_leaves_the_site_without_study_rows(tmp_path: Path) -> None:
    assert drill.due_summary(tmp_path / "none.sqlite3", ["a"]) == {}
    (tmp_path / "bad.sqlite3").write_bytes(b"garbage" * 50)
    assert drill.due_summary(tmp_path / "bad.sqlite3", ["a"]) == {}
    assert (tmp_path / "bad.sqlite3").read_bytes() == b"garbage" * 50


def test_the_round_writes_no_control_characters_to_the_terminal(study: Path) -> None:
    """Second layer behind the loader: text reaching the screen has its controls escaped."""
    from repro.cli.drill_round import _shown

    assert _shown("ring \x07 the \x1b]0;bell\x07 $\\alpha$") == (
        "ring \\x07 the \\x1b]0;bell\\x07 α"
    )


def test_a_summary_round_times_five_minutes_and_reveals_the_contributions(study: Path) -> None:
    script = study / "s.txt"
    script.write_text(f"clock {START.isoformat()}\nenter 320\ngrade 2\n", encoding="utf-8")
    result = CliRunner().invoke(cli, ["drill", "beta", "--summary", "--script", str(script)])
    assert result.exit_code == 0, result.output
    note = yaml.safe_load((study / "papers" / "beta" / "note.yaml").read_text(encoding="utf-8"))
    first = note["contributions"][0]
    assert (first["text"] if isinstance(first, dict) else first).split()[0] in result.output
    assert "+20 s over" in result.output
    (review,) = _reviews(study)
    assert review["key"] == "beta:summary:summary" and review["beats"] == [["summary", 300, 320.0]]


# --- the schedule's levels, the order of a round, the numbers drill's units -------------------


def test_again_comes_back_in_ten_minutes_and_good_graduates_to_days() -> None:
    """The documented schedule: one 10-minute (re)learning step, no fuzzing. Checked against
    the fsrs package's own scheduler set up that way, over a chain of reviews long enough for
    fuzzing to move a due date."""
    from fsrs import Scheduler

    sched = drill.scheduler()
    again, _ = sched.review_card(Card(), Rating.Again, START)
    assert again.due == START + timedelta(minutes=10)
    good, _ = sched.review_card(Card(), Rating.Good, START)
    assert timedelta(days=1) <= good.due - START <= timedelta(days=7)
    # a card in review that is forgotten relearns in 10 minutes
    lapsed, _ = sched.review_card(good, Rating.Again, good.due)
    assert lapsed.due == good.due + timedelta(minutes=10)
    step = [timedelta(minutes=10)]
    reference = Scheduler(learning_steps=step, relearning_steps=step, enable_fuzzing=False)
    ours, theirs, when = Card(), Card(), START
    for grade in (Rating.Good, Rating.Easy, Rating.Good, Rating.Easy, Rating.Good):
        ours, _ = sched.review_card(ours, grade, when)
        theirs, _ = reference.review_card(theirs, grade, when)
        assert ours.due == theirs.due
        when = ours.due
    assert ours.due - START > timedelta(days=60)  # long enough that fuzzing would show


def _item(key: str, priority: str, order: int = 0) -> drill.Item:
    slug = key.split(":")[0]
    return drill.Item(key, slug, "question", key, slug, priority, order, "?")


def test_pick_takes_due_items_by_priority_then_due_date_then_new_ones() -> None:
    """Lopsided on purpose: the oldest due item is a `further` one, the newest a must-know,
    and within a priority the earlier due date comes first against the keys' order."""
    from types import SimpleNamespace

    items = [
        _item("p:question:core-a-recent", "core"),
        _item("p:question:must-recent", "must-know"),
        _item("p:question:must-z-old", "must-know"),
        _item("p:question:core-b-old", "core"),
        _item("p:question:further-oldest", "further"),
        _item("p:question:not-due", "must-know"),
        _item("q:question:new-core-late", "core", order=3),
        _item("p:question:new-core", "core", order=7),
        _item("q:question:new-core-early", "core", order=1),
        _item("q:question:new-must", "must-know", order=9),
    ]
    due_in = {"core-a-recent": -1, "must-recent": -0.1, "must-z-old": -5, "core-b-old": -48,
              "further-oldest": -72, "not-due": 5}  # fmt: skip
    cards = {i.key: None for i in items}
    for name, hours in due_in.items():
        cards[f"p:question:{name}"] = SimpleNamespace(due=START + timedelta(hours=hours))
    order = {"p": 0, "q": 1}
    picked = [i.key.split(":")[2] for i in drill.pick(items, cards, START, 20, False, order)]
    assert picked == [
        "must-z-old", "must-recent", "core-b-old", "core-a-recent", "further-oldest",
        "new-must", "new-core", "new-core-early", "new-core-late",
    ]  # fmt: skip
    due = drill.pick(items, cards, START, 20, True, order)
    assert [i.key.split(":")[2] for i in due] == picked[:5]
    assert [i.key.split(":")[2] for i in drill.pick(items, cards, START, 2, False, order)] == [
        "must-z-old", "must-recent"
    ]  # fmt: skip


def test_the_round_reports_the_earliest_next_due_item(study: Path) -> None:
    """Graded "again" then "good": the next item due is the first, ten minutes after its
    review (the round takes 215 s an item, so it is not due yet when the round ends)."""
    script = [f"clock {START.isoformat()}", *QUESTION, "grade 1", *QUESTION, "grade 3"]
    out = json.loads(_drill(study, script, "-n", "2").stdout)
    first_at = START + timedelta(seconds=20 + 70 + 100 + 25)
    assert datetime.fromisoformat(out["next_due"]) == first_at + timedelta(minutes=10)


@pytest.mark.parametrize(
    ("typed", "value"),
    [("1.5M", 1.5e6), ("12K", 12_000), ("7B", 7e9), ("2T", 2e12), ("45%", 0.45), ("256×", 256),
     ("256x", 256), ("1,024", 1024), ("1_000", 1000), (" 3.5 ", 3.5), ("-2", -2)],
)  # fmt: skip
def test_typed_numbers_carry_their_scale(typed: str, value: float) -> None:
    assert drill.parse_number(typed) == pytest.approx(value, rel=1e-12)


@pytest.mark.parametrize("typed", ["nan", "inf", "-inf", "", "M", "12 apples", "1e999"])
def test_typed_text_that_is_no_finite_number_is_none(typed: str) -> None:
    assert drill.parse_number(typed) is None


def test_a_percentage_or_a_scaled_answer_is_graded_against_the_claim() -> None:
    pct = Claim(id="acc", statement="Accuracy reaches 91.2% on MNLI.", source="T2",
                kind="cited", expected=0.912, why="needs the full run")  # fmt: skip
    assert drill.grade_number(pct, "91.2%")[0] and drill.grade_number(pct, "0.912")[0]
    assert not drill.grade_number(pct, "80%")[0]
    # a cited claim is graded at ±5 %
    assert drill.grade_number(pct, "0.95")[0] and not drill.grade_number(pct, "0.97")[0]
    big = Claim(id="n", statement="GPT-3 has 175B parameters.", source="§2", kind="derived",
                expected=175e9, tolerance={"rel": 0.01})  # fmt: skip
    assert drill.grade_number(big, "175B") == (True, 175e9)
    assert not drill.grade_number(big, "175M")[0]


def test_the_prompt_masks_only_numbers_within_two_percent_of_the_answer() -> None:
    pct = Claim(id="acc", statement="Accuracy rises from 88.0% to 91.2% on MNLI.", source="T2",
                kind="cited", expected=0.912, why="x")  # fmt: skip
    assert (
        drill.number_prompt(pct)
        == f"Accuracy rises from 88.0% to {drill.MASK}% on MNLI.\n→ the number?"
    )
    near = Claim(id="r", statement="256× fewer, not 250 nor 260, of 175B in all", source="§4",
                 kind="derived", expected=256, tolerance="exact", unit="×")  # fmt: skip
    assert drill.number_prompt(near) == (
        f"{drill.MASK}× fewer, not 250 nor {drill.MASK}, of 175B in all\n→ the number (×)?"
    )  # 260 is within 2 % of 256, 250 is not
    big = Claim(id="n", statement="GPT-3 has 175B parameters and 96 layers.", source="§2",
                kind="derived", expected=175e9, tolerance="exact")  # fmt: skip
    assert drill.number_prompt(big).startswith(f"GPT-3 has {drill.MASK} parameters and 96 layers")
    zero = Claim(id="z", statement="The gap is 0 after 10 steps, 3x faster.", source="§5",
                 kind="derived", expected=0, tolerance={"abs": 0.1})  # fmt: skip
    assert drill.number_prompt(zero).startswith(f"The gap is {drill.MASK} after 10 steps, 3x")
    fast = Claim(id="f", statement="3x faster at 1,000 tokens", source="§5", kind="derived",
                 expected=3, tolerance="exact")  # fmt: skip
    assert drill.number_prompt(fast).startswith(f"{drill.MASK}x faster at 1,000 tokens")


def test_stats_count_due_today_and_this_week_and_rank_the_weakest(tmp_path: Path) -> None:
    from fsrs import State

    now = START  # 09:00 UTC: "today" ends at 23:59:59
    hours = {"overdue": -2, "today": 3, "tomorrow": 20, "in-5-days": 120, "in-10-days": 240}
    stability = {"overdue": 1.0, "today": 3.0, "tomorrow": 30.0, "in-5-days": 300.0,
                 "in-10-days": 3000.0}  # fmt: skip
    pool = [_item(f"p:question:{name}", "core") for name in hours]
    pool.append(_item("p:question:never-seen", "core"))
    with StudyDb(tmp_path / "s.sqlite3") as db:
        db.sync("p", {"question"}, {i.key: ("question", i.item_id) for i in pool}, now)
        for name, h in hours.items():
            card = Card(state=State.Review, stability=stability[name], difficulty=5.0,
                        due=now + timedelta(hours=h),
                        last_review=now - timedelta(days=2))  # fmt: skip
            beats = [["background", 30, 45.0], ["impact", 30, 10.0]]
            db.record(f"p:question:{name}", card.to_json(), now - timedelta(days=2, hours=h),
                      3, beats, None, "en")  # fmt: skip
        stats = drill.study_stats(db, pool, now)
    paper = stats["papers"]["p"]
    assert (paper["items"], paper["seen"]) == (6, 5)
    assert paper["due_today"] == 2 and paper["due_week"] == 4
    assert paper["over_budget_s"] == {"background": 15.0, "impact": 0.0}
    # lower stability, same elapsed time: less likely to be recalled
    assert [w["key"].split(":")[2] for w in stats["weakest"]] == list(hours)
    retention = [w["retention"] for w in stats["weakest"]]
    assert retention == sorted(retention) and 0 < retention[0] < retention[-1] < 1


def test_a_retired_item_comes_back_with_its_history(tmp_path: Path) -> None:
    with StudyDb(tmp_path / "s.sqlite3") as db:
        keys = {f"p:question:{n}": ("question", n) for n in ("a", "b", "c")}
        db.sync("p", {"question"}, keys, START)
        db.record("p:question:b", Card().to_json(), START, 3, [], None, "en")
        db.sync("p", {"question"}, {k: v for k, v in keys.items() if k != "p:question:b"}, START)
        assert [i.key for i in db.items()] == ["p:question:a", "p:question:c"]
        db.sync("p", {"question"}, keys, START + timedelta(days=1))
        assert [i.key for i in db.items()] == sorted(keys)
        assert len(db.reviews("p:question:b")) == 1 and db.items(["p"])[1].card is not None
        # another kind's items are left alone by a sync of questions
        db.sync("p", {"summary"}, {"p:summary:summary": ("summary", "summary")}, START)
        db.sync("p", {"summary"}, {}, START)
        assert [i.key for i in db.items()] == sorted(keys)


def test_import_keeps_the_newer_of_two_cards(tmp_path: Path) -> None:
    sched = drill.scheduler()
    old, _ = sched.review_card(Card(), Rating.Good, START)
    new, _ = sched.review_card(old, Rating.Good, START + timedelta(days=5))
    key = "p:question:a"

    def db_with(path: Path, card: Card, at: datetime) -> StudyDb:
        db = StudyDb(path)
        db.sync("p", {"question"}, {key: ("question", "a")}, START)
        db.record(key, card.to_json(), at, 3, [], None, "en")
        return db

    with db_with(tmp_path / "new.sqlite3", new, START + timedelta(days=5)) as db:
        newer_export = db.export()
    with db_with(tmp_path / "old.sqlite3", old, START) as db:
        older_export = db.export()
        assert db.import_(newer_export, START) == (0, 1)
        assert json.loads(db.items()[0].card)["due"] == json.loads(new.to_json())["due"]
    with db_with(tmp_path / "new2.sqlite3", new, START + timedelta(days=5)) as db:
        assert db.import_(older_export, START) == (0, 1)
        assert json.loads(db.items()[0].card)["due"] == json.loads(new.to_json())["due"]
        assert len(db.reviews(key)) == 2


def test_the_items_of_each_mode_in_each_language(tmp_path: Path) -> None:
    """numbers: one item per claim with a numeric expected value (not a text bound, not a
    bool), carrying its stored verdict; summary: one item, the overlay's summary and
    contributions in Chinese; questions: the overlay's text under the English ids, skipping a
    question with no id."""
    from repro.lab.library import Library

    note = _note("must-know", [("q1", "x"), ("q2", "y"), ("q3", "z")], zh=True)
    note["short_title"] = "Toy"
    note["zh"]["short_title"] = "玩具"
    note["zh"]["interview"]["summary"] = "中文总结"
    note["zh"]["contributions"] = ["贡献一", "贡献二", "贡献三"]
    note["interview"]["questions"].insert(1, {"question": "No id?", "answer": "none"})
    _write(tmp_path / "papers", "toy", note)
    paper = Library(tmp_path / "papers").get("toy")
    numbers = drill.paper_items(paper, "numbers", "en", {"bleu": "cited", "two-plus-two": "ok"})
    want = [c["id"] for c in note["claims"] if not isinstance(c["expected"], str)]
    assert [i.key for i in numbers] == [f"toy:number:{c}" for c in want] and len(want) == 5
    assert [i.order for i in numbers] == [0, 1, 2, 3, 5]  # the claim's place in the note
    assert numbers[0].verdict == "ok" and numbers[-1].verdict == "cited" and not numbers[1].verdict
    assert all(i.kind == "number" and i.paper == "Toy" for i in numbers)
    assert not drill.has_number(Claim(id="b", statement="s", source="s", kind="derived",
                                      expected=True, tolerance="exact"))  # fmt: skip
    (summary,) = drill.paper_items(paper, "summary", "zh", {})
    assert (summary.key, summary.prompt, summary.answer) == (
        "toy:summary:summary",
        "玩具",
        "中文总结",
    )
    assert summary.contributions == ("贡献一", "贡献二", "贡献三")
    questions = drill.paper_items(paper, "questions", "zh", {})
    assert [(i.key, i.order, i.prompt, i.answer) for i in questions] == [
        ("toy:question:q1", 0, "问题 q1？", "回答 q1"),
        ("toy:question:q2", 2, "问题 q2？", "回答 q2"),
        ("toy:question:q3", 3, "问题 q3？", "回答 q3"),
    ]
    english = drill.paper_items(paper, "questions", "en", {})
    assert [i.prompt for i in english] == ["Q q1?", "Q q2?", "Q q3?"]
    assert english[0].outline["background"] == note["interview"]["answer_outline"]["background"]


def test_a_malformed_export_imports_nothing_and_a_retired_item_travels(tmp_path: Path) -> None:
    from repro.study.drill_store import StudyDbError

    with StudyDb(tmp_path / "a.sqlite3") as db:
        db.sync("p", {"question"}, {"p:question:a": ("question", "a"),
                                    "p:question:b": ("question", "b")}, START)  # fmt: skip
        db.record("p:question:a", Card().to_json(), START, 2, [["answer", 30, 1.0]], "x", "zh")
        db.sync("p", {"question"}, {"p:question:a": ("question", "a")}, START)  # b retired
        data = db.export()
    assert [(i["key"], bool(i["retired"])) for i in data["items"]] == [
        ("p:question:a", False), ("p:question:b", True),
    ]  # fmt: skip
    broken = json.loads(json.dumps(data))
    broken["reviews"].append({"key": "p:question:a", "at": "later"})  # no grade
    with StudyDb(tmp_path / "b.sqlite3") as db:
        with pytest.raises(StudyDbError, match="not well formed"):
            db.import_(broken, START)
        assert db.items(retired=True) == [] and db.reviews() == []  # all or nothing
        with pytest.raises(StudyDbError):
            db.import_({"paperlab_study": SCHEMA_VERSION + 1, "items": [], "reviews": []}, START)
        assert db.import_(data, START) == (2, 1)
        assert [i.key for i in db.items()] == ["p:question:a"]
        assert [i.key for i in db.items(retired=True)] == ["p:question:a", "p:question:b"]
        (review,) = db.reviews("p:question:a")
        assert (review["grade"], review["answer"], review["lang"]) == (2, "x", "zh")
        assert review["beats"] == [["answer", 30, 1.0]]
        assert db.items(["q"]) == []


class _FakeIO:
    """A DrillIO whose beats take the given seconds (`"skip"` skips the item)."""

    def __init__(self, beats: list, grades: list[int]) -> None:
        self.clock, self.beats, self.grades = START, list(beats), list(grades)

    def now(self) -> datetime:
        return self.clock

    def present(self, item, index, total) -> None:
        pass

    def beat(self, item, name, budget) -> float:
        seconds = self.beats.pop(0)
        if seconds == "skip":
            raise drill.Skip
        self.clock += timedelta(seconds=seconds)
        return float(seconds)

    def number(self, item) -> str:
        raise AssertionError("no numbers here")

    def reveal(self, item, outcome) -> None:
        pass

    def grade(self, item, suggested) -> int:
        return self.grades.pop(0)


def test_a_round_reports_what_is_due_now_next_and_the_time_over_budget(tmp_path: Path) -> None:
    """Three graded questions and a skipped one. The first ("again", reviewed at 250 s) is due
    again at 850 s, before the round ends at 1,110 s; the third ("again", at 1,110 s) is next,
    at 1,710 s; the "good" one is days away. Time over budget is averaged over the three."""
    items = [_item(f"p:question:q{n}", "core", n) for n in range(4)]
    with StudyDb(tmp_path / "s.sqlite3") as db:
        db.sync("p", {"question"}, {i.key: ("question", i.item_id) for i in items}, START)
        io = _FakeIO([40, 60, 120, 30, 30, 90, 100, 30, "skip", 20, 60, 500, 30], [1, 3, 1])
        picked = [items[0], items[1], items[3], items[2]]
        result = drill.run_round(db, items, picked, io, "en")
        stored = [r["key"] for r in db.reviews()]
    assert [r.item.key for r in result.reviewed] == ["p:question:q0", "p:question:q1",
                                                     "p:question:q2"]  # fmt: skip
    assert stored == [r.item.key for r in result.reviewed] and result.stopped == "done"
    assert result.due_now == 1
    assert result.next_due == START + timedelta(seconds=1_710)
    assert result.reviewed[1].due - START > timedelta(days=1)
    over = result.over_budget()
    assert over == pytest.approx(
        {"background": 10 / 3, "innovation": 10.0, "details": 380 / 3, "impact": 0.0}
    )


# --- the pieces of a round, one at a time ----------------------------------------------------


def test_plain_writes_math_as_unicode_and_keeps_what_it_cannot_convert(monkeypatch) -> None:
    assert drill.plain(r"scale $\alpha/r$ and $$x^{2}$$ here") == "scale α/r and x^2 here"
    assert drill.plain("no math, 5 $ only") == "no math, 5 $ only"

    def refuse(body: str) -> str:
        raise drill.MathError(body)

    monkeypatch.setattr(drill, "to_unicode", refuse)
    assert drill.plain(r"a $\alpha$ b $$\beta$$ c") == r"a $\alpha$ b $$\beta$$ c"


def test_provenance_names_each_kind_of_claim() -> None:
    def claim(kind: str) -> Claim:
        extra = {"why": "x"} if kind == "cited" else {"tolerance": "exact"}
        return Claim(id="c", statement="s", source="§1", kind=kind, expected=1, **extra)

    assert drill.provenance(claim("derived")) == "derived by code from the paper's configuration"
    assert drill.provenance(claim("measured")) == "measured by an experiment here"
    assert drill.provenance(claim("cited")) == "cited from the paper (not reproduced)"


def test_an_exact_claim_takes_the_same_number_in_any_form() -> None:
    exact = Claim(id="n", statement="It uses 256 heads.", source="§2", kind="derived",
                  expected=256, tolerance="exact")  # fmt: skip
    assert drill.grade_number(exact, "256.0") == (True, 256.0)
    assert drill.grade_number(exact, "256.5") == (False, 256.5)
    assert drill.grade_number(exact, "two hundred") == (False, None)
    rel = Claim(id="r", statement="About 1,000 steps.", source="§3", kind="measured",
                expected=1000, tolerance={"rel": 0.1})  # fmt: skip
    assert drill.grade_number(rel, "1.09K") == (True, 1090.0)
    assert drill.grade_number(rel, "1.11K")[0] is False


def _events(*lines: str) -> list[tuple]:
    return [(e.kind, e.value, e.line) for e in drill.parse_script(lines, "s.txt")]


def test_a_script_reads_one_event_a_line() -> None:
    assert _events(
        "clock 2026-12-06T09:00Z", "", "  # a comment", "enter", "enter 12.5  # spoken",
        "s", "SKIP", "q", "quit", "interrupt", "grade 4", "2", "answer 1.5M",
    ) == [
        ("clock", START, 1), ("enter", 0.0, 4), ("enter", 12.5, 5), ("skip", None, 6),
        ("skip", None, 7), ("quit", None, 8), ("quit", None, 9), ("interrupt", None, 10),
        ("grade", 4, 11), ("grade", 2, 12), ("answer", "1.5M", 13),
    ]  # fmt: skip
    # a clock without a zone is UTC; one with a zone keeps it
    (naive,) = _events("clock 2026-12-06T09:00")
    assert naive[1] == START and naive[1].tzinfo is not None
    (zoned,) = _events("clock 2026-12-06T10:00+01:00")
    assert zoned[1] == START and zoned[1].utcoffset() == timedelta(hours=1)
    assert _events("enter 999999.5")[0][1] == 999999.5


@pytest.mark.parametrize(
    "line",
    ["enter -1", "enter 1000000", "enter 1 2", "grade 5", "grade", "0", "3 3", "answer",
     "answer 1 2", "skip now", "q 1", "interrupt 2", "clock", "clock a b", "jump"],
)  # fmt: skip
def test_a_line_that_is_no_event_is_refused_with_its_place(line: str) -> None:
    with pytest.raises(drill.BadOption) as err:
        _events("enter 1", "# note", line)
    assert str(err.value).startswith(f"s.txt:3: cannot read {line!r}")


def test_the_refused_line_is_shown_collapsed_and_cut_at_sixty_characters() -> None:
    line = "jump   " + "x" * 80
    with pytest.raises(drill.BadOption) as err:
        _events(line)
    shown = ("jump " + "x" * 80)[:60]
    assert str(err.value) == (f"s.txt:1: cannot read {shown!r} (see `paperlab drill --help`)")


def test_the_clock_goes_on_the_first_event_line_only() -> None:
    assert _events("# header", "", "clock 2026-12-06T09:00Z")[0][2] == 3
    with pytest.raises(drill.BadOption, match=r"s.txt:2: `clock` goes on the first line"):
        _events("enter 1", "clock 2026-12-06T09:00Z")


def test_the_day_ends_at_its_last_second_and_the_week_after_seven_days(tmp_path: Path) -> None:
    """Due at 23:59:59 is due today, a second later is not; due exactly seven days on is due
    this week. Time over budget is rounded to 0.1 s; the weakest are the five lowest."""
    from fsrs import State

    now = START
    at = {"last-second": START.replace(hour=23, minute=59, second=59),
          "next-day": START.replace(hour=23, minute=59, second=59) + timedelta(seconds=1),
          "week": now + timedelta(days=7), "week-and-a-second": now + timedelta(days=7, seconds=1),
          "e": now + timedelta(days=30), "f": now + timedelta(days=40)}  # fmt: skip
    pool = [_item(f"p:question:{name}", "core") for name in at]
    stabilities = [1.0, 2.0, 4.0, 8.0, 16.0, 32.0]
    with StudyDb(tmp_path / "s.sqlite3") as db:
        db.sync("p", {"question"}, {i.key: ("question", i.item_id) for i in pool}, now)
        for (name, due), stability in zip(at.items(), stabilities, strict=True):
            card = Card(state=State.Review, stability=stability, difficulty=5.0, due=due,
                        last_review=now - timedelta(days=3))  # fmt: skip
            db.record(f"p:question:{name}", card.to_json(), now - timedelta(days=3), 3,
                      [["details", 120, 120 + stability * 1.03]], None, "en")  # fmt: skip
        stats = drill.study_stats(db, pool, now)
    paper = stats["papers"]["p"]
    assert (paper["due_today"], paper["due_week"]) == (1, 3)
    # (1 + 2 + 4 + 8 + 16 + 32) · 1.03 / 6 = 10.815 s over the 120 s budget
    assert paper["over_budget_s"] == {"details": 10.8}
    assert [w["key"] for w in stats["weakest"]] == [i.key for i in pool[:5]]
    sched = drill.scheduler()
    cards = [Card(state=State.Review, stability=s, difficulty=5.0, due=now,
                  last_review=now - timedelta(days=3)) for s in stabilities]  # fmt: skip
    want = [sched.get_card_retrievability(c, now) for c in cards]
    assert paper["retention"] == pytest.approx(sum(want) / 6, rel=1e-12)
    assert [w["retention"] for w in stats["weakest"]] == pytest.approx(want[:5], rel=1e-12)
    assert stats["weakest"][0]["paper"] == "p" and stats["weakest"][0]["prompt"] == "?"


class _NumberIO(_FakeIO):
    def __init__(self, answers: list[tuple[str, float]]) -> None:
        super().__init__([], [])
        self.answers, self.revealed = list(answers), []

    def number(self, item) -> str:
        typed, seconds = self.answers.pop(0)
        if typed == "quit":
            raise drill.Quit
        self.clock += timedelta(seconds=seconds)
        return typed

    def reveal(self, item, outcome) -> None:
        self.revealed.append(outcome)

    def grade(self, item, suggested) -> int:
        raise AssertionError("a number is graded by its claim")


def test_a_number_is_graded_good_or_again_by_its_claim_and_timed(tmp_path: Path) -> None:
    claim = Claim(id="n", statement="It has 175B parameters.", source="§2", kind="derived",
                  expected=175e9, tolerance={"rel": 0.01})  # fmt: skip
    items = [drill.Item(f"p:number:n{k}", "p", "number", f"n{k}", "p", "core", k,
                        drill.number_prompt(claim), claim=claim) for k in range(3)]  # fmt: skip
    with StudyDb(tmp_path / "s.sqlite3") as db:
        db.sync("p", {"number"}, {i.key: ("number", i.item_id) for i in items}, START)
        io = _NumberIO([("175B", 12.5), ("17B", 40.0), ("quit", 0)])
        result = drill.run_round(db, items, items, io, "zh")
        stored = db.reviews()
    assert result.stopped == "quit"
    assert [(r.grade, r.correct, r.answer) for r in result.reviewed] == [
        (3, True, "175B"), (1, False, "17B")
    ]  # fmt: skip
    assert [r.beats for r in result.reviewed] == [[("answer", 30, 12.5)], [("answer", 30, 40.0)]]
    assert io.revealed == [{"correct": True, "value": 175e9}, {"correct": False, "value": 17e9}]
    assert [(s["grade"], s["answer"], s["lang"], s["beats"]) for s in stored] == [
        (3, "175B", "zh", [["answer", 30, 12.5]]), (1, "17B", "zh", [["answer", 30, 40.0]]),
    ]  # fmt: skip
    assert result.over_budget() == {"answer": 5.0}
    assert result.reviewed[0].due == _fsrs_due((3, START + timedelta(seconds=12.5)))
