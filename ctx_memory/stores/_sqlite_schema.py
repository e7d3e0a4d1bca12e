"""The SQLite store's schema and statements: DDL, versions, migrations, row decoding.

Pure text and small functions: :mod:`ctx_memory.stores.sqlite` runs them. The layout is
described in that module's docstring; :data:`SCHEMA_VERSION` is kept in
``PRAGMA user_version`` and :func:`ensure_schema` creates or migrates a file.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ctx_memory.errors import StoreUnavailableError, StoreVersionError

if TYPE_CHECKING:
    import sqlite3
    from collections.abc import Sequence

    from ctx_memory.stores.base import Header

__all__ = [
    "APPEND",
    "CLEAR",
    "CREATE",
    "DROP_RECALL",
    "FETCHED",
    "FINGERPRINTS",
    "HEADER",
    "HEADERS",
    "INSERT",
    "LIVE",
    "MESSAGES",
    "MESSAGE_IDS",
    "MIGRATE_V1",
    "MIGRATE_V2",
    "RECALL_SEGMENTS",
    "SCHEMA_VERSION",
    "SESSIONS",
    "SESSION_INDEXES",
    "SESSION_TABLES",
    "SHARED",
    "TOUCH_READ",
    "TOUCH_WRITE",
    "V1_SESSION_COLUMNS",
    "ensure_schema",
    "refuse_newer",
    "decode_header_row",
    "lrange_bounds",
    "prefix_end",
]

SCHEMA_VERSION = 3
"""The layout this module writes (``PRAGMA user_version``); 0 is the first, unversioned one.

2 moved the JSON columns out of ``sessions`` and gave messages their ids; 3 added
``recall_segments`` (the saved recall index: derived data, rebuilt when missing)."""

SESSIONS = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    mc INTEGER NOT NULL,
    tc INTEGER NOT NULL,
    ts TEXT,
    n_messages INTEGER NOT NULL DEFAULT 0,
    expires_at REAL,
    last_access INTEGER NOT NULL
)"""
SESSION_INDEXES = (
    "CREATE INDEX IF NOT EXISTS sessions_lru ON sessions(last_access)",
    "CREATE INDEX IF NOT EXISTS sessions_exp ON sessions(expires_at)",
)
HEADERS = """
CREATE TABLE IF NOT EXISTS session_headers (
    session_id TEXT PRIMARY KEY,
    sp TEXT NOT NULL,
    md TEXT NOT NULL
)"""
SHARED = """
CREATE TABLE IF NOT EXISTS session_shared (
    session_id TEXT PRIMARY KEY,
    sh TEXT NOT NULL
)"""
# ``id`` last: a version-1 file gains it with ALTER TABLE, so both layouts are identical.
MESSAGES = """
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    id TEXT,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID"""
MESSAGE_IDS = "CREATE UNIQUE INDEX IF NOT EXISTS messages_id ON messages(session_id, id)"
FETCHED = """
CREATE TABLE IF NOT EXISTS fetched (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    source_type TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID"""
FINGERPRINTS = """
CREATE TABLE IF NOT EXISTS fingerprints (
    session_id TEXT NOT NULL,
    fp TEXT NOT NULL,
    PRIMARY KEY (session_id, fp)
) WITHOUT ROWID"""
RECALL_SEGMENTS = """
CREATE TABLE IF NOT EXISTS recall_segments (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID"""
CREATE = (
    SESSIONS,
    *SESSION_INDEXES,
    HEADERS,
    SHARED,
    MESSAGES,
    MESSAGE_IDS,
    FETCHED,
    FINGERPRINTS,
    RECALL_SEGMENTS,
)

V1_SESSION_COLUMNS = frozenset(
    ("id", "sp", "md", "sh", "mc", "tc", "ts", "n_messages", "expires_at", "last_access")
)
# Version 1 -> 2: move the JSON columns out of ``sessions`` (rebuilt without them) and
# give every message the id in its body; of several messages of a session with one id
# (written by version 1, which did not deduplicate: a retried batch) only the first keeps
# it, and each later one is renamed ``<id>~<seq>``, in its body too, so the history, an
# export and a delete by id agree (nothing is dropped); where the session already holds
# that name, ``<id>~<seq>~<random hex>``.
MIGRATE_V1 = (
    HEADERS,
    SHARED,
    "INSERT INTO session_headers (session_id, sp, md) SELECT id, sp, md FROM sessions",
    "INSERT INTO session_shared (session_id, sh) SELECT id, sh FROM sessions",
    SESSIONS.replace("EXISTS sessions", "EXISTS sessions_v2"),
    "INSERT INTO sessions_v2 (id, mc, tc, ts, n_messages, expires_at, last_access) "
    "SELECT id, mc, tc, ts, n_messages, expires_at, last_access FROM sessions",
    "DROP TABLE sessions",
    "ALTER TABLE sessions_v2 RENAME TO sessions",
    *SESSION_INDEXES,
    "ALTER TABLE messages ADD COLUMN id TEXT",
    "UPDATE messages SET id = json_extract(body, '$.id') WHERE json_type(body, '$.id') = 'text'",
    "CREATE INDEX messages_id_migration ON messages(session_id, id)",
    "UPDATE messages SET id = NULL WHERE id IS NOT NULL AND seq > (SELECT MIN(m.seq) "
    "FROM messages AS m WHERE m.session_id = messages.session_id AND m.id = messages.id)",
    "UPDATE messages SET id = json_extract(body, '$.id') || '~' || seq, "
    "body = json_set(body, '$.id', json_extract(body, '$.id') || '~' || seq) "
    "WHERE id IS NULL AND json_type(body, '$.id') = 'text' AND NOT EXISTS (SELECT 1 "
    "FROM messages AS m WHERE m.session_id = messages.session_id "
    "AND m.id = json_extract(messages.body, '$.id') || '~' || messages.seq)",
    # ``<id>~<seq>`` taken by another message of the session: a random suffix as well
    "UPDATE messages SET id = json_extract(body, '$.id') || '~' || seq || '~' || "
    "lower(hex(randomblob(6))) WHERE id IS NULL AND json_type(body, '$.id') = 'text'",
    "UPDATE messages SET body = json_set(body, '$.id', id) "
    "WHERE id IS NOT NULL AND json_extract(body, '$.id') IS NOT id",
    "DROP INDEX messages_id_migration",
    MESSAGE_IDS,
    FETCHED,
    FINGERPRINTS,
)
# Version 2 -> 3: a new table; nothing else changes.
MIGRATE_V2 = (RECALL_SEGMENTS,)

# What each operation reads of the session: always ``expires_at`` and ``n_messages``
# (small columns of the small row), the three JSON parts only when it returns the header.
LIVE = "SELECT expires_at, n_messages FROM sessions WHERE id = ?"
HEADER = (
    "SELECT s.expires_at, s.n_messages, s.mc, s.tc, s.ts, h.sp, h.md, x.sh "
    "FROM sessions AS s JOIN session_headers AS h ON h.session_id = s.id "
    "JOIN session_shared AS x ON x.session_id = s.id WHERE s.id = ?"
)
# ``last_access`` is a logical clock: the highest value in the table + 1.
INSERT = (
    "INSERT INTO sessions (id, mc, tc, ts, n_messages, expires_at, last_access) "
    "VALUES (?, ?, ?, ?, 0, ?, (SELECT COALESCE(MAX(last_access), 0) + 1 FROM sessions))"
)
TOUCH_READ = (
    "UPDATE sessions SET last_access = "
    "(SELECT COALESCE(MAX(last_access), 0) + 1 FROM sessions) WHERE id = ?"
)
TOUCH_WRITE = (
    "UPDATE sessions SET ts = ?, expires_at = ?, last_access = "
    "(SELECT COALESCE(MAX(last_access), 0) + 1 FROM sessions) WHERE id = ?"
)
CLEAR = (
    "UPDATE sessions SET n_messages = 0, mc = 0, tc = 0, ts = ?, expires_at = ?, last_access = "
    "(SELECT COALESCE(MAX(last_access), 0) + 1 FROM sessions) WHERE id = ?"
)
APPEND = (
    "INSERT INTO messages (session_id, seq, body, id) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (session_id, id) DO NOTHING"
)
DROP_RECALL = "DELETE FROM recall_segments WHERE session_id = ?"
SESSION_TABLES = (
    ("sessions", "id"),
    ("session_headers", "session_id"),
    ("session_shared", "session_id"),
    ("messages", "session_id"),
    ("fetched", "session_id"),
    ("fingerprints", "session_id"),
    ("recall_segments", "session_id"),
)


def prefix_end(prefix: str) -> str | None:
    """The least string above every string starting with ``prefix`` (``None``: no bound).

    Strings compare by code point, as SQLite compares UTF-8 text and Redis compares bytes.
    """
    while prefix:
        last = ord(prefix[-1]) + 1
        if last == 0xD800:  # surrogates are not characters: skip them
            last = 0xE000
        if last <= 0x10FFFF:
            return prefix[:-1] + chr(last)
        prefix = prefix[:-1]
    return None


def lrange_bounds(start: int, end: int, length: int) -> tuple[int, int] | None:
    """Redis ``LRANGE`` index rules: inclusive, negative from the end; ``None`` if empty."""
    lo = max(start + length if start < 0 else start, 0)
    hi = min(end + length if end < 0 else end, length - 1)
    return (lo, hi) if lo <= hi else None


def decode_header_row(row: Sequence[Any]) -> Header:
    """The header from a :data:`HEADER` row."""
    mc, tc, ts, sp, md, sh = row[2:8]
    metadata: dict[str, Any] = json.loads(md)
    metadata["message_count"] = mc
    metadata["token_count"] = tc
    if ts is not None:
        metadata["timestamp"] = json.loads(ts)
    return {"system_prompt": json.loads(sp), "metadata": metadata, "shared": json.loads(sh)}


def refuse_newer(conn: sqlite3.Connection, path: str) -> int:
    """The file's schema version; raise if it is newer than this module's.

    Reads only (no lock, no journal mode set): a file this release cannot read is left
    exactly as it was.

    Raises:
        StoreVersionError: The file was written by a newer ctx_memory.
    """
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    if version > SCHEMA_VERSION:
        msg = (
            f"SQLite database {path!r} has schema version {version}, newer than "
            f"this ctx_memory understands ({SCHEMA_VERSION}); upgrade ctx_memory"
        )
        raise StoreVersionError(msg)
    return int(version)


def ensure_schema(conn: sqlite3.Connection, path: str) -> None:
    """Create the tables, or migrate a version-1 or version-2 file, in one transaction."""
    if refuse_newer(conn, path) == SCHEMA_VERSION:
        return  # the common case takes no lock
    conn.execute("BEGIN IMMEDIATE")
    try:
        version = refuse_newer(conn, path)  # another process may have changed it
        if version < SCHEMA_VERSION:
            columns = {r[1] for r in conn.execute("PRAGMA table_info(sessions)")}
            if not columns:
                statements: Sequence[str] = CREATE
            elif version == 2:
                statements = MIGRATE_V2
            elif columns == V1_SESSION_COLUMNS:
                statements = (*MIGRATE_V1, *MIGRATE_V2)
            else:
                msg = (
                    f"SQLite database {path!r} has a 'sessions' table this "
                    f"ctx_memory does not recognise (columns: {sorted(columns)})"
                )
                raise StoreUnavailableError(msg)
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        if conn.in_transaction:  # some errors already rolled it back
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
