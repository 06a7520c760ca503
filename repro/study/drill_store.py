"""The drill's memory: items, review logs and FSRS cards in one SQLite file.

The file lives in the user's data folder (`platformdirs`), or where `PAPERLAB_STUDY_DB` says.
Every review is one transaction, so a kill at any moment loses at most the item in progress.
The schema carries its version in `PRAGMA user_version`; an older file is migrated in place, a
newer or damaged one is refused with one error and never reset (the history is the user's).
"""

from __future__ import annotations

import json
import os
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from repro.lab.errors import PaperlabError

DB_ENV = "PAPERLAB_STUDY_DB"
SCHEMA_VERSION = 1


class StudyDbError(PaperlabError):
    """The study database cannot be used as it is (damaged, newer, unwritable)."""


def default_db_path() -> Path:
    if os.environ.get(DB_ENV):
        return Path(os.environ[DB_ENV])
    from platformdirs import user_data_dir

    return Path(user_data_dir("paperlab")) / "study.sqlite3"


def _create_v1(db: sqlite3.Connection) -> None:
    # One statement at a time: `executescript` would commit the migration's transaction early.
    db.execute(
        """CREATE TABLE items (
            key TEXT PRIMARY KEY,          -- slug:kind:id, stable across note edits
            slug TEXT NOT NULL,
            kind TEXT NOT NULL,            -- question, summary or number
            item_id TEXT NOT NULL,
            card TEXT,                     -- the FSRS card as JSON, NULL until first graded
            created TEXT NOT NULL,
            retired TEXT                   -- set when the note no longer has the item
        )"""
    )
    db.execute(
        """CREATE TABLE reviews (
            id INTEGER PRIMARY KEY,
            key TEXT NOT NULL REFERENCES items(key),
            at TEXT NOT NULL,
            grade INTEGER NOT NULL CHECK (grade BETWEEN 1 AND 4),
            beats TEXT NOT NULL,           -- JSON [[name, budget_s, spent_s], ...]
            answer TEXT,                   -- what was typed (numbers drill)
            lang TEXT NOT NULL,
            UNIQUE (key, at)
        )"""
    )
    db.execute("CREATE INDEX reviews_by_key ON reviews(key)")


# MIGRATIONS[v] brings a database at version v to v + 1.
MIGRATIONS: dict[int, Callable[[sqlite3.Connection], None]] = {0: _create_v1}


def _check_known(version: int) -> None:
    """Below 0 no paperlab ever wrote: a damaged file, not one to migrate (or update for)."""
    if version < 0:
        raise sqlite3.DatabaseError(f"schema version {version} is not one paperlab wrote")


@dataclass(frozen=True)
class StoredItem:
    key: str
    slug: str
    kind: str
    item_id: str
    card: str | None
    retired: str | None


class StudyDb:
    """An open study database; use as a context manager."""

    def __init__(self, path: Path | None = None, *, readonly: bool = False) -> None:
        self.path = path or default_db_path()
        self.readonly = readonly
        self._db = self._open()

    def _open(self) -> sqlite3.Connection:
        if self.path.exists() and not self.path.is_file():
            raise StudyDbError(f"{self.path}: not a regular file ({DB_ENV} chooses another)")
        if self.readonly:  # a reader (the study site) never creates, migrates or writes
            return self._open_readonly()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            db.execute("PRAGMA foreign_keys = ON")
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                db.close()
                raise self._newer(version)
            if version < SCHEMA_VERSION:
                self._migrate(db, version)
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("SELECT count(*) FROM items").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StudyDbError(
                f"{self.path}: not a usable study database ({exc}); it is left as it is — "
                f"move it away to start afresh, or point {DB_ENV} at another file"
            ) from None
        except OSError as exc:
            raise StudyDbError(f"{self.path}: {exc.strerror or exc}") from None
        return db

    def _open_readonly(self) -> sqlite3.Connection:
        try:
            db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=10)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version != SCHEMA_VERSION:
                db.close()
                _check_known(version)
                if version > SCHEMA_VERSION:
                    raise self._newer(version)
                why = f"schema {version}, not {SCHEMA_VERSION}: `paperlab drill` updates it"
                raise StudyDbError(f"{self.path}: study database of {why}")
            db.execute("SELECT count(*) FROM items").fetchone()
        except sqlite3.DatabaseError as exc:
            raise StudyDbError(f"{self.path}: not a usable study database ({exc})") from None
        return db

    def _newer(self, version: int) -> StudyDbError:
        return StudyDbError(
            f"{self.path}: study database of schema {version}, newer than this "
            f"paperlab's {SCHEMA_VERSION}; update paperlab (the file is left as it is)"
        )

    @staticmethod
    def _migrate(db: sqlite3.Connection, version: int) -> None:
        _check_known(version)
        if version == 0 and db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]:
            raise sqlite3.DatabaseError("has tables but no paperlab schema version")
        while version < SCHEMA_VERSION:
            with _transaction(db):
                MIGRATIONS[version](db)
                version += 1
                db.execute(f"PRAGMA user_version = {version}")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> StudyDb:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- items -------------------------------------------------------------------------------

    def items(self, slugs: list[str] | None = None, *, retired: bool = False) -> list[StoredItem]:
        rows = self._db.execute(
            "SELECT key, slug, kind, item_id, card, retired FROM items ORDER BY key"
        ).fetchall()
        out = [StoredItem(*row) for row in rows]
        if slugs is not None:
            out = [i for i in out if i.slug in slugs]
        return out if retired else [i for i in out if i.retired is None]

    def sync(self, slug: str, kinds: set[str], present: dict[str, tuple[str, str]], now: datetime):
        """Make the items of `slug` (of these kinds) match `present` (key → (kind, id)).

        New keys are added; keys no longer in the note are retired (their history is kept, and
        they come back with it if the id returns)."""
        stamp = now.isoformat()
        with _transaction(self._db):
            known = {
                key: retired
                for key, kind, retired in self._db.execute(
                    "SELECT key, kind, retired FROM items WHERE slug = ?", (slug,)
                )
                if kind in kinds
            }
            for key, (kind, item_id) in present.items():
                if key not in known:
                    self._db.execute(
                        "INSERT INTO items (key, slug, kind, item_id, created) "
                        "VALUES (?, ?, ?, ?, ?)",
                        (key, slug, kind, item_id, stamp),
                    )
                elif known[key] is not None:
                    self._db.execute("UPDATE items SET retired = NULL WHERE key = ?", (key,))
            for key, retired in known.items():
                if key not in present and retired is None:
                    self._db.execute("UPDATE items SET retired = ? WHERE key = ?", (stamp, key))

    def record(
        self, key: str, card_json: str, at: datetime, grade: int, beats: list, answer: str | None,
        lang: str,
    ) -> None:  # fmt: skip
        """One graded item: its review and its new card, together or not at all."""
        with _transaction(self._db):
            self._db.execute("UPDATE items SET card = ? WHERE key = ?", (card_json, key))
            self._db.execute(
                "INSERT INTO reviews (key, at, grade, beats, answer, lang) VALUES (?,?,?,?,?,?)",
                (key, at.isoformat(), grade, json.dumps(beats), answer, lang),
            )

    def reviews(self, key: str | None = None) -> list[dict]:
        query = "SELECT key, at, grade, beats, answer, lang FROM reviews"
        rows = self._db.execute(
            query + (" WHERE key = ? ORDER BY at" if key else " ORDER BY at"),
            (key,) if key else (),
        ).fetchall()
        return [
            {"key": k, "at": at, "grade": g, "beats": json.loads(b), "answer": a, "lang": lang}
            for k, at, g, b, a, lang in rows
        ]

    # --- moving history between machines ----------------------------------------------------

    def export(self) -> dict:
        items = [
            {"key": i.key, "slug": i.slug, "kind": i.kind, "id": i.item_id, "retired": i.retired,
             "card": json.loads(i.card) if i.card else None}
            for i in self.items(retired=True)
        ]  # fmt: skip
        return {"paperlab_study": SCHEMA_VERSION, "items": items, "reviews": self.reviews()}

    def import_(self, data: dict, now: datetime) -> tuple[int, int]:
        """Merge an export: reviews are added once; an item keeps the newer of two cards."""
        if not isinstance(data, dict) or data.get("paperlab_study") != SCHEMA_VERSION:
            raise StudyDbError("not a paperlab study export of this version")
        added_items = added_reviews = 0
        try:
            with _transaction(self._db):
                for item in data["items"]:
                    card = json.dumps(item["card"]) if item["card"] else None
                    row = self._db.execute(
                        "SELECT card FROM items WHERE key = ?", (item["key"],)
                    ).fetchone()
                    if row is None:
                        added_items += 1
                        self._db.execute(
                            "INSERT INTO items (key, slug, kind, item_id, card, created, retired)"
                            " VALUES (?, ?, ?, ?, ?, ?, ?)",
                            (item["key"], item["slug"], item["kind"], item["id"], card,
                             now.isoformat(), item["retired"]),
                        )  # fmt: skip
                    elif card and _last_review(card) > _last_review(row[0]):
                        self._db.execute(
                            "UPDATE items SET card = ? WHERE key = ?", (card, item["key"])
                        )
                for r in data["reviews"]:
                    cursor = self._db.execute(
                        "INSERT OR IGNORE INTO reviews (key, at, grade, beats, answer, lang) "
                        "VALUES (?, ?, ?, ?, ?, ?)",
                        (r["key"], r["at"], int(r["grade"]), json.dumps(r["beats"]), r["answer"],
                         r["lang"]),
                    )  # fmt: skip
                    added_reviews += cursor.rowcount
        except (KeyError, TypeError, ValueError, sqlite3.IntegrityError) as exc:
            raise StudyDbError(f"the export is not well formed ({exc}); nothing imported") from None
        return added_items, added_reviews


def _last_review(card_json: str | None) -> str:
    if not card_json:
        return ""
    return json.loads(card_json).get("last_review") or ""


@contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
