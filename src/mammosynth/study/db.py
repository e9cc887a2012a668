"""The study's SQLite store (``STUDY/study.sqlite``, WAL mode): items, readers, sequences, answers.

Tables::

    meta(key PK, value)                       JSON values: format, seed, options, created
    items(item_id PK, truth, origin, height, width)
        item_id: 32 random hex chars; the image is STUDY/images/<item_id>.png
        truth: 'real' | 'synthetic'; origin: where the pixels came from (never served)
    readers(reader_id PK, name UNIQUE, token_sha256 UNIQUE)
        only the SHA-256 of each invitation token is kept
    presentations(presentation_id PK, reader_id, position, item_id, is_retest)
        one row per image showing; presentation_id is random, so a retest showing of an
        image has a different id from its first showing and the reader cannot tell
    answers(presentation_id PK, reader_id, position, level, p_real, realism, elapsed_ms, answered_at)
        UNIQUE(reader_id, position): a showing is answered once, enforced by the database

A reader's position is the lowest position without an answer, so it survives restarts.
Each connection uses ``synchronous=FULL``: an answer is on disk when its commit returns.
"""

from __future__ import annotations

import json
import re
import sqlite3
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from mammosynth.errors import DataError

DB_NAME = "study.sqlite"
IMAGES_DIR = "images"
FORMAT = "mammosynth-study"
FORMAT_VERSION = 1
#: Opaque ids: item ids and presentation ids are 128-bit random hex strings.
OPAQUE_ID = re.compile(r"^[0-9a-f]{32}$")

SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE items (
    item_id TEXT PRIMARY KEY CHECK (length(item_id) = 32),
    truth TEXT NOT NULL CHECK (truth IN ('real', 'synthetic')),
    origin TEXT NOT NULL,
    height INTEGER NOT NULL,
    width INTEGER NOT NULL
);
CREATE TABLE readers (
    reader_id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    token_sha256 TEXT NOT NULL UNIQUE
);
CREATE TABLE presentations (
    presentation_id TEXT PRIMARY KEY CHECK (length(presentation_id) = 32),
    reader_id INTEGER NOT NULL REFERENCES readers(reader_id),
    position INTEGER NOT NULL,
    item_id TEXT NOT NULL REFERENCES items(item_id),
    is_retest INTEGER NOT NULL CHECK (is_retest IN (0, 1)),
    UNIQUE (reader_id, position)
);
CREATE TABLE answers (
    presentation_id TEXT PRIMARY KEY REFERENCES presentations(presentation_id),
    reader_id INTEGER NOT NULL REFERENCES readers(reader_id),
    position INTEGER NOT NULL,
    level INTEGER NOT NULL CHECK (level BETWEEN 1 AND 6),
    p_real REAL NOT NULL,
    realism INTEGER CHECK (realism IS NULL OR realism BETWEEN 1 AND 5),
    elapsed_ms INTEGER,
    answered_at TEXT NOT NULL,
    UNIQUE (reader_id, position)
);
"""


def connect(path: str | Path, create: bool = False) -> sqlite3.Connection:
    """Open the study DB (WAL, foreign keys on, synchronous=FULL). ``create`` makes a new file."""
    p = Path(path)
    if not create and not p.is_file():
        raise DataError(f"{p}: no study database here; create one with `mammosynth study create`")
    # isolation_level=None: we issue BEGIN/COMMIT ourselves so a write is one explicit transaction.
    con = sqlite3.connect(str(p), timeout=30.0, isolation_level=None, check_same_thread=False)
    con.row_factory = sqlite3.Row
    con.execute("PRAGMA foreign_keys = ON")
    con.execute("PRAGMA synchronous = FULL")
    mode = con.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        con.close()
        raise DataError(f"{p}: SQLite refused WAL mode (got {mode!r}); put the study on a local disk")
    return con


@contextmanager
def transaction(con: sqlite3.Connection, immediate: bool = True) -> Iterator[sqlite3.Connection]:
    """BEGIN IMMEDIATE ... COMMIT (ROLLBACK on error): writers are serialised by SQLite itself."""
    con.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")
    try:
        yield con
    except BaseException:
        con.execute("ROLLBACK")
        raise
    con.execute("COMMIT")


def init_schema(con: sqlite3.Connection, meta: dict[str, Any]) -> None:
    con.executescript("BEGIN;" + SCHEMA + "COMMIT;")
    with transaction(con):
        con.executemany("INSERT INTO meta(key, value) VALUES (?, ?)", [(k, json.dumps(v)) for k, v in meta.items()])


def read_meta(con: sqlite3.Connection) -> dict[str, Any]:
    return {r["key"]: json.loads(r["value"]) for r in con.execute("SELECT key, value FROM meta")}


def open_study(study_dir: str | Path) -> tuple[sqlite3.Connection, dict[str, Any]]:
    """Open ``STUDY/study.sqlite`` and check it is a study DB of a known version."""
    path = Path(study_dir) / DB_NAME
    con = connect(path)
    try:
        meta = read_meta(con)
    except sqlite3.DatabaseError as err:
        con.close()
        raise DataError(f"{path}: not a mammosynth study database ({err})") from err
    if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
        con.close()
        raise DataError(f"{path}: not a mammosynth study database of version {FORMAT_VERSION} (meta {meta.get('format')!r})")
    return con, meta


def reader_progress(con: sqlite3.Connection, reader_id: int) -> tuple[int, int, sqlite3.Row | None]:
    """(answered, total, next presentation row or None when finished) for one reader."""
    total = con.execute("SELECT COUNT(*) FROM presentations WHERE reader_id = ?", (reader_id,)).fetchone()[0]
    answered = con.execute("SELECT COUNT(*) FROM answers WHERE reader_id = ?", (reader_id,)).fetchone()[0]
    nxt = con.execute(
        "SELECT p.* FROM presentations p LEFT JOIN answers a ON a.presentation_id = p.presentation_id "
        "WHERE p.reader_id = ? AND a.presentation_id IS NULL ORDER BY p.position LIMIT 1",
        (reader_id,),
    ).fetchone()
    return int(answered), int(total), nxt


def all_answers(con: sqlite3.Connection) -> list[dict[str, Any]]:
    """Every answer joined with its showing, item and reader, ordered by reader then position."""
    rows = con.execute(
        "SELECT r.name AS reader, r.reader_id AS reader_id, a.position AS position, "
        "a.presentation_id AS presentation_id, p.item_id AS item_id, i.truth AS truth, i.origin AS origin, "
        "p.is_retest AS is_retest, a.level AS level, a.p_real AS p_real, a.realism AS realism, "
        "a.elapsed_ms AS elapsed_ms, a.answered_at AS answered_at "
        "FROM answers a JOIN presentations p ON p.presentation_id = a.presentation_id "
        "JOIN items i ON i.item_id = p.item_id JOIN readers r ON r.reader_id = a.reader_id "
        "ORDER BY r.reader_id, a.position"
    ).fetchall()
    return [dict(r) for r in rows]
