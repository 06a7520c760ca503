"""The drill's SQLite store: schema and migration, refusals, transactions, export and import."""

from __future__ import annotations

import json
import sqlite3
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from repro.study import drill_store
from repro.study.drill_store import SCHEMA_VERSION, StudyDb, StudyDbError

START = datetime(2026, 12, 6, 9, 0, tzinfo=timezone.utc)
KEYS = {"p:question:a": ("question", "a"), "p:question:b": ("question", "b")}


def _raw(path: Path, sql: str) -> list[tuple]:
    con = sqlite3.connect(path)
    try:
        return con.execute(sql).fetchall()
    finally:
        con.close()


def _card(last_review: datetime | None, due: str) -> str:
    return json.dumps({"due": due, "last_review": last_review and last_review.isoformat()})


def test_the_path_comes_from_the_environment_else_the_user_data_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from platformdirs import user_data_dir

    monkeypatch.setenv("PAPERLAB_STUDY_DB", str(tmp_path / "mine.sqlite3"))
    assert drill_store.default_db_path() == tmp_path / "mine.sqlite3"
    want = Path(user_data_dir("paperlab")) / "study.sqlite3"
    monkeypatch.setenv("PAPERLAB_STUDY_DB", "")  # empty: not set
    assert drill_store.default_db_path() == want
    monkeypatch.delenv("PAPERLAB_STUDY_DB")
    assert drill_store.default_db_path() == want
    monkeypatch.setenv("PAPERLAB_STUDY_DB", str(tmp_path / "env.sqlite3"))
    with StudyDb() as db:
        assert db.path == tmp_path / "env.sqlite3" and not db.readonly
    assert (tmp_path / "env.sqlite3").is_file()


def test_a_new_file_gets_the_schema_its_version_and_a_write_ahead_log(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "s.sqlite3"  # its folders are made
    with StudyDb(path) as db:
        db.sync("p", {"question"}, KEYS, START)
    assert _raw(path, "PRAGMA user_version") == [(SCHEMA_VERSION,)] and SCHEMA_VERSION == 1
    assert _raw(path, "PRAGMA journal_mode") == [("wal",)]
    tables = {name for (name,) in _raw(path, "SELECT name FROM sqlite_master")}
    assert {"items", "reviews", "reviews_by_key"} <= tables
    # opening again migrates nothing and keeps what is there
    with StudyDb(path) as db:
        assert [i.key for i in db.items()] == sorted(KEYS)


def _empty_at_version(path: Path, version: int) -> Path:
    """A SQLite file with no tables whose user_version (paperlab's schema number) is `version`."""
    con = sqlite3.connect(path)
    con.execute(f"PRAGMA user_version = {version}")
    con.close()
    return path


def test_a_folder_an_unversioned_or_a_newer_file_is_refused_and_left_alone(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(StudyDbError, match="not a regular file"):
        StudyDb(folder)
    with pytest.raises(StudyDbError, match="not a regular file"):
        StudyDb(folder, readonly=True)
    other = tmp_path / "other.sqlite3"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE mine (x)")
    con.close()
    with pytest.raises(StudyDbError) as err:
        StudyDb(other)
    assert f"{other}: not a usable study database (has tables but no paperlab schema version);" in (
        str(err.value)
    )
    assert _raw(other, "PRAGMA user_version") == [(0,)]
    assert {n for (n,) in _raw(other, "SELECT name FROM sqlite_master")} == {"mine"}
    newer = _empty_at_version(tmp_path / "newer.sqlite3", SCHEMA_VERSION + 1)
    with pytest.raises(StudyDbError, match=f"schema {SCHEMA_VERSION + 1}, newer than"):
        StudyDb(newer)
    assert _raw(newer, "PRAGMA user_version") == [(SCHEMA_VERSION + 1,)]
    assert _raw(newer, "SELECT name FROM sqlite_master") == []


@pytest.mark.parametrize("readonly", [False, True])
def test_a_negative_schema_version_is_a_damaged_file_left_alone(
    tmp_path: Path, readonly: bool
) -> None:
    # no paperlab writes a version below 0: one located error (not a KeyError from MIGRATIONS,
    # nor a reader's "`paperlab drill` updates it", which it would not)
    odd = _empty_at_version(tmp_path / "odd.sqlite3", -1)
    with pytest.raises(StudyDbError) as err:
        StudyDb(odd, readonly=readonly)
    why = f"{odd}: not a usable study database (schema version -1 is not one paperlab wrote)"
    assert str(err.value).startswith(why) and "updates it" not in str(err.value)
    assert _raw(odd, "PRAGMA user_version") == [(-1,)]
    assert _raw(odd, "SELECT name FROM sqlite_master") == []


def test_a_reader_of_a_newer_file_asks_for_a_newer_paperlab(tmp_path: Path) -> None:
    newer = _empty_at_version(tmp_path / "newer.sqlite3", SCHEMA_VERSION + 1)
    with pytest.raises(StudyDbError) as err:
        StudyDb(newer, readonly=True)
    assert str(err.value) == (
        f"{newer}: study database of schema {SCHEMA_VERSION + 1}, newer than this paperlab's "
        f"{SCHEMA_VERSION}; update paperlab (the file is left as it is)"
    )


def test_a_reader_never_creates_migrates_or_writes(tmp_path: Path) -> None:
    missing = tmp_path / "missing.sqlite3"
    with pytest.raises(StudyDbError, match="not a usable study database"):
        StudyDb(missing, readonly=True)
    assert not missing.exists()
    empty = tmp_path / "empty.sqlite3"
    sqlite3.connect(empty).close()
    with pytest.raises(StudyDbError, match="schema 0, not 1: `paperlab drill` updates it"):
        StudyDb(empty, readonly=True)
    assert _raw(empty, "PRAGMA user_version") == [(0,)]
    path = tmp_path / "s.sqlite3"
    with StudyDb(path) as db:
        db.sync("p", {"question"}, KEYS, START)
    with StudyDb(path, readonly=True) as db:
        assert db.readonly and [i.key for i in db.items()] == sorted(KEYS)
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            db.sync("p", {"question"}, {}, START)
    with StudyDb(path) as db:
        assert [i.retired for i in db.items(retired=True)] == [None, None]


def test_sync_adds_retires_and_brings_back_items_with_their_stamps(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite3"
    later = START + timedelta(hours=5)
    with StudyDb(path) as db:
        db.sync("p", {"question"}, KEYS, START)
        db.sync("q", {"question"}, {"q:question:c": ("question", "c")}, START)
        db.sync("p", {"question"}, {"p:question:b": ("question", "b")}, later)
        assert [(i.key, i.retired) for i in db.items(retired=True)] == [
            ("p:question:a", later.isoformat()), ("p:question:b", None),
            ("q:question:c", None),
        ]  # fmt: skip
        assert [i.key for i in db.items()] == ["p:question:b", "q:question:c"]
        assert [i.key for i in db.items(["q"])] == ["q:question:c"]
        assert [i.key for i in db.items(["p"], retired=True)] == ["p:question:a", "p:question:b"]
        db.sync("p", {"question"}, KEYS, later + timedelta(days=1))
        db.sync("p", {"summary"}, {"p:summary:summary": ("summary", "summary")}, later)
        db.sync("p", {"summary"}, {}, later)  # retires the summary, not the questions
        assert [i.key for i in db.items(["p"])] == sorted(KEYS)
        (a,) = [i for i in db.items() if i.key == "p:question:a"]
        assert (a.slug, a.kind, a.item_id, a.card, a.retired) == ("p", "question", "a", None, None)
    created = dict(_raw(path, "SELECT key, created FROM items"))
    assert created == {"p:question:a": START.isoformat(), "p:question:b": START.isoformat(),
                       "q:question:c": START.isoformat(),
                       "p:summary:summary": later.isoformat()}  # fmt: skip


def test_a_review_and_its_card_are_stored_together_or_not_at_all(tmp_path: Path) -> None:
    with StudyDb(tmp_path / "s.sqlite3") as db:
        db.sync("p", {"question"}, KEYS, START)
        card = _card(START, "2026-12-07T09:00:00+00:00")
        beats = [["background", 30, 41.5]]
        db.record("p:question:a", card, START, 3, beats, "7B", "zh")
        with pytest.raises(sqlite3.IntegrityError):  # grades are 1..4
            db.record("p:question:b", card, START, 5, [], None, "en")
        with pytest.raises(sqlite3.IntegrityError):  # the same item twice at the same time
            db.record("p:question:a", _card(START, "later"), START, 2, [], None, "en")
        with pytest.raises(sqlite3.IntegrityError):  # foreign keys are enforced
            db.record("p:question:zzz", card, START, 3, [], None, "en")
        assert [(i.key, i.card) for i in db.items()] == [("p:question:a", card),
                                                         ("p:question:b", None)]  # fmt: skip
        assert db.reviews() == [
            {"key": "p:question:a", "at": START.isoformat(), "grade": 3, "beats": beats,
             "answer": "7B", "lang": "zh"}
        ]  # fmt: skip


def test_reviews_come_in_time_order_for_one_key_or_all(tmp_path: Path) -> None:
    with StudyDb(tmp_path / "s.sqlite3") as db:
        db.sync("p", {"question"}, KEYS, START)
        times = {("p:question:b", 3): 2, ("p:question:a", 1): 0, ("p:question:a", 2): 5}
        for (key, grade), hours in times.items():
            db.record(key, "{}", START + timedelta(hours=hours), grade, [], None, "en")
        assert [(r["key"], r["grade"]) for r in db.reviews()] == [
            ("p:question:a", 1), ("p:question:b", 3), ("p:question:a", 2)
        ]  # fmt: skip
        assert [r["grade"] for r in db.reviews("p:question:a")] == [1, 2]
        assert db.reviews("p:question:none") == []


def test_an_export_carries_every_item_and_review_and_imports_once(tmp_path: Path) -> None:
    card = _card(START, "2026-12-09T09:00:00+00:00")
    with StudyDb(tmp_path / "a.sqlite3") as db:
        db.sync("p", {"question"}, KEYS, START)
        db.record("p:question:a", card, START, 4, [["impact", 30, 12.0]], None, "en")
        db.sync("p", {"question"}, {"p:question:a": ("question", "a")}, START)
        data = db.export()
    assert data == {
        "paperlab_study": SCHEMA_VERSION,
        "items": [
            {"key": "p:question:a", "slug": "p", "kind": "question", "id": "a", "retired": None,
             "card": json.loads(card)},
            {"key": "p:question:b", "slug": "p", "kind": "question", "id": "b",
             "retired": START.isoformat(), "card": None},
        ],
        "reviews": [{"key": "p:question:a", "at": START.isoformat(), "grade": 4,
                     "beats": [["impact", 30, 12.0]], "answer": None, "lang": "en"}],
    }  # fmt: skip
    later = START + timedelta(days=3)
    path = tmp_path / "b.sqlite3"
    with StudyDb(path) as db:
        assert db.import_(data, later) == (2, 1)
        assert db.import_(data, later) == (0, 0)  # nothing twice
        assert db.export() == data
    created = dict(_raw(path, "SELECT key, created FROM items"))
    assert created == {"p:question:a": later.isoformat(), "p:question:b": later.isoformat()}


def test_an_import_keeps_the_card_reviewed_last(tmp_path: Path) -> None:
    def export(card: str | None) -> dict:
        item = {"key": "p:question:a", "slug": "p", "kind": "question", "id": "a",
                "retired": None, "card": json.loads(card) if card else None}  # fmt: skip
        return {"paperlab_study": SCHEMA_VERSION, "items": [item], "reviews": []}

    mine = _card(START + timedelta(days=2), "mine")
    with StudyDb(tmp_path / "s.sqlite3") as db:
        db.sync("p", {"question"}, KEYS, START)

        def card() -> str | None:
            return next(i.card for i in db.items() if i.key == "p:question:a")

        assert db.import_(export(_card(START, "first")), START) == (0, 0)
        assert json.loads(card())["due"] == "first"  # an item never graded here takes any card
        db.record("p:question:a", mine, START + timedelta(days=2), 3, [], None, "en")
        db.import_(export(_card(START + timedelta(days=1), "older")), START)
        db.import_(export(_card(START + timedelta(days=2), "same age")), START)
        db.import_(export(_card(None, "never reviewed")), START)
        db.import_(export(None), START)
        assert card() == mine
        db.import_(export(_card(START + timedelta(days=2, seconds=1), "newer")), START)
        assert json.loads(card())["due"] == "newer"


@pytest.mark.parametrize(
    "data",
    [
        None,
        [],
        {"items": [], "reviews": []},
        {"paperlab_study": SCHEMA_VERSION - 1, "items": [], "reviews": []},
        {"paperlab_study": str(SCHEMA_VERSION), "items": [], "reviews": []},
    ],
)
def test_anything_but_an_export_of_this_version_is_refused(tmp_path: Path, data) -> None:
    with StudyDb(tmp_path / "s.sqlite3") as db, pytest.raises(StudyDbError) as err:
        db.import_(data, START)
    assert str(err.value) == "not a paperlab study export of this version"


@pytest.mark.parametrize(
    ("item", "review"),
    [
        ({"key": "p:question:b", "slug": "p", "kind": "question", "id": "b", "card": None}, None),
        (None, {"key": "p:question:a", "at": "x", "grade": "three", "beats": [], "answer": None,
                "lang": "en"}),
        (None, {"key": "p:question:a", "at": "x", "grade": 3, "beats": [], "answer": None}),
        (None, {"key": "p:question:zzz", "at": "x", "grade": 3, "beats": [], "answer": None,
                "lang": "en"}),
        ("not a dict", None),
    ],
)  # fmt: skip
def test_a_malformed_export_imports_nothing(tmp_path: Path, item, review) -> None:
    good = {"key": "p:question:a", "slug": "p", "kind": "question", "id": "a", "retired": None,
            "card": None}  # fmt: skip
    data = {
        "paperlab_study": SCHEMA_VERSION,
        "items": [good, *([item] if item is not None else [])],
        "reviews": [review] if review is not None else [],
    }
    with StudyDb(tmp_path / "s.sqlite3") as db:
        with pytest.raises(StudyDbError, match="not well formed.*nothing imported"):
            db.import_(data, START)
        assert db.items(retired=True) == [] and db.reviews() == []


def test_last_review_of_a_card() -> None:
    assert drill_store._last_review(None) == "" and drill_store._last_review("") == ""
    assert drill_store._last_review('{"due": "x"}') == ""
    assert drill_store._last_review('{"last_review": null}') == ""
    assert drill_store._last_review('{"last_review": "2026-12-06"}') == "2026-12-06"


def test_both_openers_wait_ten_seconds_for_a_lock_and_the_reader_opens_read_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A drill and the study site may open the file at once: each connection waits up to 10 s
    for the other's lock, and the reader asks SQLite for a read-only URI (`mode=ro`, which
    only means that with `uri=True` where SQLite does not read URIs by default)."""
    calls: list[tuple[str, dict]] = []
    connect = sqlite3.connect

    def spy(database, **kwargs):
        calls.append((str(database), kwargs))
        return connect(database, **kwargs)

    monkeypatch.setattr(drill_store.sqlite3, "connect", spy)
    path = tmp_path / "s.sqlite3"
    StudyDb(path).close()
    StudyDb(path, readonly=True).close()
    (writer, w_kwargs), (reader, r_kwargs) = calls
    assert writer == str(path) and w_kwargs == {"isolation_level": None, "timeout": 10}
    assert reader == f"{path.resolve().as_uri()}?mode=ro"
    assert r_kwargs == {"uri": True, "timeout": 10}


def test_an_import_counts_every_review_it_adds_and_none_it_has(tmp_path: Path) -> None:
    def review(hours: int) -> dict:
        at = (START + timedelta(hours=hours)).isoformat()
        return {"key": "p:question:a", "at": at, "grade": 3, "beats": [], "answer": None,
                "lang": "en"}  # fmt: skip

    item = {"key": "p:question:a", "slug": "p", "kind": "question", "id": "a", "retired": None,
            "card": None}  # fmt: skip
    with StudyDb(tmp_path / "s.sqlite3") as db:
        db.sync("p", {"question"}, KEYS, START)
        db.record("p:question:a", "{}", START, 3, [], None, "en")  # the review at hour 0
        data = {"paperlab_study": SCHEMA_VERSION, "items": [item],
                "reviews": [review(1), review(2), review(0)]}  # fmt: skip
        assert db.import_(data, START) == (0, 2)
        assert [r["at"] for r in db.reviews("p:question:a")] == [review(h)["at"] for h in range(3)]


def test_a_folder_that_cannot_be_made_is_one_error_naming_the_file(tmp_path: Path) -> None:
    (tmp_path / "a-file").write_text("x")
    path = tmp_path / "a-file" / "s.sqlite3"
    with pytest.raises(OSError) as why:  # what the operating system says, independently
        path.parent.mkdir(parents=True, exist_ok=True)
    assert why.value.strerror
    with pytest.raises(StudyDbError) as err:
        StudyDb(path)
    assert str(err.value) == f"{path}: {why.value.strerror}"
