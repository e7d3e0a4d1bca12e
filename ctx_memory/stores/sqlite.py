"""The SQLite store: sessions in one file, kept across restarts, shared by local processes.

Tables (one row per session, message, fetched item and fingerprint)::

    sessions(id, sp, md, sh, mc, tc, ts, n_messages, expires_at, last_access)
    messages(session_id, seq, body)          -- seq = position 0..n-1
    fetched(session_id, seq, source_type, body)
    fingerprints(session_id, fp)

``md`` is the metadata JSON; the counters (``mc``, ``tc``) and the last-write timestamp
(``ts``) are columns, spliced into it on read, so an append touches no JSON. Every
operation is one ``BEGIN IMMEDIATE`` transaction (WAL mode, ``busy_timeout``), so
concurrent processes serialise their writes and never see half of one. ``expires_at`` is
wall-clock time (sliding TTL, refreshed on writes); ``last_access`` is a logical clock
(the highest value + 1) bumped by writes and, when ``max_sessions`` is set, by reads.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from ctx_memory.errors import StoreError, StoreUnavailableError
from ctx_memory.schema import dumps
from ctx_memory.stores.base import (
    EncodedItem,
    EncodedMessage,
    Header,
    SyncBackedStore,
    WriteResult,
    assemble_document,
    check_limits,
    deep_merge,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping, Sequence

    from ctx_memory.config import Settings

__all__ = ["SqliteStore", "lrange_bounds"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    id TEXT PRIMARY KEY,
    sp TEXT NOT NULL,
    md TEXT NOT NULL,
    sh TEXT NOT NULL,
    mc INTEGER NOT NULL,
    tc INTEGER NOT NULL,
    ts TEXT,
    n_messages INTEGER NOT NULL DEFAULT 0,
    expires_at REAL,
    last_access INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS sessions_lru ON sessions(last_access);
CREATE INDEX IF NOT EXISTS sessions_exp ON sessions(expires_at);
CREATE TABLE IF NOT EXISTS messages (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fetched (
    session_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    source_type TEXT NOT NULL,
    body TEXT NOT NULL,
    PRIMARY KEY (session_id, seq)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS fingerprints (
    session_id TEXT NOT NULL,
    fp TEXT NOT NULL,
    PRIMARY KEY (session_id, fp)
) WITHOUT ROWID;
"""

_ROW = "SELECT sp, md, sh, mc, tc, ts, n_messages, expires_at FROM sessions WHERE id = ?"
# ``last_access`` is a logical clock: the highest value in the table + 1.
_INSERT = (
    "INSERT INTO sessions (id, sp, md, sh, mc, tc, ts, n_messages, expires_at, last_access) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, 0, ?, (SELECT COALESCE(MAX(last_access), 0) + 1 FROM sessions))"
)
_TOUCH_READ = (
    "UPDATE sessions SET last_access = "
    "(SELECT COALESCE(MAX(last_access), 0) + 1 FROM sessions) WHERE id = ?"
)
_TOUCH_WRITE = (
    "UPDATE sessions SET ts = ?, expires_at = ?, last_access = "
    "(SELECT COALESCE(MAX(last_access), 0) + 1 FROM sessions) WHERE id = ?"
)
_CLEAR = (
    "UPDATE sessions SET n_messages = 0, mc = 0, tc = 0, ts = ?, expires_at = ?, last_access = "
    "(SELECT COALESCE(MAX(last_access), 0) + 1 FROM sessions) WHERE id = ?"
)


def lrange_bounds(start: int, end: int, length: int) -> tuple[int, int] | None:
    """Redis ``LRANGE`` index rules: inclusive, negative from the end; ``None`` if empty."""
    lo = max(start + length if start < 0 else start, 0)
    hi = min(end + length if end < 0 else end, length - 1)
    return (lo, hi) if lo <= hi else None


def _header(row: Sequence[Any]) -> Header:
    sp, md, sh, mc, tc, ts = row[:6]
    metadata: dict[str, Any] = json.loads(md)
    metadata["message_count"] = mc
    metadata["token_count"] = tc
    if ts is not None:
        metadata["timestamp"] = json.loads(ts)
    return {"system_prompt": json.loads(sp), "metadata": metadata, "shared": json.loads(sh)}


class _Tx:
    """What one transaction saw happen to other sessions (reported after commit)."""

    __slots__ = ("evicted", "expired", "now")

    def __init__(self, now: float) -> None:
        self.now = now
        self.expired: list[str] = []
        self.evicted: list[str] = []


class SqliteStore(SyncBackedStore):
    """Sessions in an SQLite file (stdlib ``sqlite3``, WAL), safe for several processes.

    Each operation is one ``BEGIN IMMEDIATE`` transaction; in this process one connection
    is shared under a lock, and async methods run in a worker thread. Appending is O(1)
    (an indexed insert), reading the last ``k`` messages an indexed range scan of ``k``
    rows.

    Args:
        path: The database file (created if missing); ``":memory:"`` for a private
            in-memory database (tests).
        ttl_seconds: Sliding time to live; ``None`` for no expiry.
        max_sessions: Most live sessions in the file; ``None`` for no limit.
        busy_timeout: Seconds to wait for another process's transaction.
        clock: Wall clock in seconds (expiry is shared between processes).

    Example:
        .. code-block:: python

            from ctx_memory import ContextManager
            from ctx_memory.stores.sqlite import SqliteStore

            with SqliteStore(":memory:", ttl_seconds=3600) as store:
                manager = ContextManager(store=store)
                manager.add_user_message("s1", "hi")
                assert store.count_messages("s1") == 1
    """

    name = "sqlite"
    _offload = True

    def __init__(
        self,
        path: str = "ctx_memory.sqlite3",
        *,
        ttl_seconds: float | None = None,
        max_sessions: int | None = None,
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        ttl_seconds = check_limits(ttl_seconds, max_sessions)
        self.path = str(path)
        self.ttl_seconds = ttl_seconds
        self.max_sessions = max_sessions
        self._clock = clock
        self._lock = threading.RLock()
        try:
            self._conn: sqlite3.Connection | None = sqlite3.connect(
                self.path,
                timeout=busy_timeout,
                isolation_level=None,
                check_same_thread=False,
            )
            self._conn.execute(f"PRAGMA busy_timeout = {int(busy_timeout * 1000)}")
            if self.path != ":memory:":
                self._conn.execute("PRAGMA journal_mode = WAL")
                self._conn.execute("PRAGMA synchronous = NORMAL")
            self._conn.executescript(_SCHEMA)
        except sqlite3.Error as e:
            msg = f"SQLite database {self.path!r} cannot be opened: {e}"
            raise StoreUnavailableError(msg) from e

    @classmethod
    def from_settings(cls, settings: Settings) -> SqliteStore:
        """A store configured from :class:`~ctx_memory.config.Settings`."""
        return cls(
            settings.sqlite_path,
            ttl_seconds=settings.ttl_seconds,
            max_sessions=settings.max_sessions,
        )

    def __repr__(self) -> str:
        return (
            f"SqliteStore(path={self.path!r}, ttl_seconds={self.ttl_seconds}, "
            f"max_sessions={self.max_sessions})"
        )

    # ------------------------------------------------------------ transactions

    def _tx(self, body: Callable[[sqlite3.Connection, _Tx], Any]) -> Any:
        tx = _Tx(self._clock())
        with self._lock:
            conn = self._conn
            if conn is None:
                msg = f"SQLite store {self.path!r} is closed"
                raise StoreError(msg)
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    result = body(conn, tx)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
            except sqlite3.OperationalError as e:
                msg = f"SQLite database {self.path!r} failed: {e}"
                raise StoreUnavailableError(msg) from e
            except sqlite3.Error as e:
                msg = f"SQLite database {self.path!r} failed: {e}"
                raise StoreError(msg) from e
        for session_id in tx.expired:
            self._notify("session_expired", session_id)
        for session_id in tx.evicted:
            self._notify("session_evicted", session_id)
        return result

    @staticmethod
    def _drop(conn: sqlite3.Connection, session_id: str) -> bool:
        gone = conn.execute("DELETE FROM sessions WHERE id = ?", (session_id,)).rowcount
        for table in ("messages", "fetched", "fingerprints"):
            conn.execute(f"DELETE FROM {table} WHERE session_id = ?", (session_id,))  # noqa: S608
        return bool(gone)

    def _live(
        self, conn: sqlite3.Connection, tx: _Tx, session_id: str, *, touch: bool
    ) -> tuple[Any, ...] | None:
        row = conn.execute(_ROW, (session_id,)).fetchone()
        if row is None:
            return None
        if row[7] is not None and row[7] <= tx.now:
            self._drop(conn, session_id)
            tx.expired.append(session_id)
            return None
        if touch and self.max_sessions is not None:
            conn.execute(_TOUCH_READ, (session_id,))
        return tuple(row)

    def _expires(self, tx: _Tx) -> float | None:
        return None if self.ttl_seconds is None else tx.now + self.ttl_seconds

    def _insert(self, conn: sqlite3.Connection, session_id: str, header: Header, tx: _Tx) -> None:
        meta = header["metadata"]
        ts = meta.get("timestamp")
        conn.execute(
            _INSERT,
            (
                session_id,
                dumps(header["system_prompt"]),
                dumps(meta),
                dumps(header["shared"]),
                int(meta.get("message_count", 0)),
                int(meta.get("token_count", 0)),
                dumps(ts) if "timestamp" in meta else None,
                self._expires(tx),
            ),
        )

    def _evict(self, conn: sqlite3.Connection, tx: _Tx, keep: str) -> None:
        if self.max_sessions is None:
            return
        expired = conn.execute(
            "SELECT id FROM sessions WHERE expires_at <= ? ORDER BY id", (tx.now,)
        ).fetchall()
        for (session_id,) in expired:
            self._drop(conn, session_id)
            tx.expired.append(session_id)
        (count,) = conn.execute("SELECT COUNT(*) FROM sessions").fetchone()
        if count <= self.max_sessions:
            return
        victims = conn.execute(
            "SELECT id FROM sessions WHERE id != ? ORDER BY last_access LIMIT ?",
            (keep, count - self.max_sessions),
        ).fetchall()
        for (session_id,) in victims:
            self._drop(conn, session_id)
            tx.evicted.append(session_id)

    def _write(
        self,
        session_id: str,
        init: Header,
        now: str,
        apply: Callable[[sqlite3.Connection, tuple[Any, ...]], int],
    ) -> WriteResult:
        def body(conn: sqlite3.Connection, tx: _Tx) -> WriteResult:
            row = self._live(conn, tx, session_id, touch=False)
            created = row is None
            if row is None:
                self._insert(conn, session_id, init, tx)
                self._evict(conn, tx, session_id)
                row = tuple(conn.execute(_ROW, (session_id,)).fetchone())
            added = apply(conn, row)
            conn.execute(_TOUCH_WRITE, (dumps(now), self._expires(tx), session_id))
            return WriteResult(created=created, added=added, evicted=tuple(tx.evicted))

        result: WriteResult = self._tx(body)
        return result

    def _read(
        self,
        session_id: str,
        read: Callable[[sqlite3.Connection, tuple[Any, ...]], Any],
        default: Any,
    ) -> Any:
        def body(conn: sqlite3.Connection, tx: _Tx) -> Any:
            row = self._live(conn, tx, session_id, touch=True)
            return default if row is None else read(conn, row)

        return self._tx(body)

    # ------------------------------------------------------------ sync API

    @override
    def create(self, session_id: str, init: Header) -> WriteResult:
        return self._write(session_id, init, init["metadata"]["timestamp"], lambda _c, _r: 0)

    @override
    def exists(self, session_id: str) -> bool:
        return bool(self._read(session_id, lambda _c, _r: True, default=False))

    @override
    def delete(self, session_id: str) -> bool:
        return bool(self._tx(lambda conn, _tx: self._drop(conn, session_id)))

    @override
    def list_sessions(self) -> list[str]:
        self.gc()
        rows = self._tx(lambda conn, _tx: conn.execute("SELECT id FROM sessions").fetchall())
        return sorted(r[0] for r in rows)

    @override
    def get_header(self, session_id: str) -> Header | None:
        header: Header | None = self._read(session_id, lambda _c, row: _header(row), None)
        return header

    @override
    def get_document(self, session_id: str) -> dict[str, Any] | None:
        def read(conn: sqlite3.Connection, row: tuple[Any, ...]) -> dict[str, Any]:
            messages = conn.execute(
                "SELECT body FROM messages WHERE session_id = ? ORDER BY seq", (session_id,)
            ).fetchall()
            return assemble_document(
                _header(row),
                [json.loads(m[0]) for m in messages],
                self._fetched(conn, session_id, None),
            )

        document: dict[str, Any] | None = self._read(session_id, read, None)
        return document

    @override
    def get_messages(self, session_id: str, start: int = 0, end: int = -1) -> list[dict[str, Any]]:
        def read(conn: sqlite3.Connection, row: tuple[Any, ...]) -> list[Any]:
            bounds = lrange_bounds(start, end, row[6])
            if bounds is None:
                return []
            return conn.execute(
                "SELECT body FROM messages WHERE session_id = ? AND seq BETWEEN ? AND ? "
                "ORDER BY seq",
                (session_id, *bounds),
            ).fetchall()

        rows: list[Any] = self._read(session_id, read, [])
        return [json.loads(r[0]) for r in rows]

    @override
    def count_messages(self, session_id: str) -> int:
        count: int = self._read(session_id, lambda _c, row: row[6], 0)
        return count

    @staticmethod
    def _fetched(
        conn: sqlite3.Connection, session_id: str, source_type: str | None
    ) -> dict[str, list[dict[str, Any]]]:
        if source_type is None:
            rows = conn.execute(
                "SELECT source_type, body FROM fetched WHERE session_id = ? ORDER BY seq",
                (session_id,),
            ).fetchall()
        else:
            rows = conn.execute(
                "SELECT source_type, body FROM fetched WHERE session_id = ? AND source_type = ? "
                "ORDER BY seq",
                (session_id, source_type),
            ).fetchall()
        out: dict[str, list[dict[str, Any]]] = {}
        for kind, body in rows:
            out.setdefault(kind, []).append(json.loads(body))
        return out

    @override
    def get_fetched(
        self, session_id: str, source_type: str | None = None
    ) -> dict[str, list[dict[str, Any]]]:
        fetched: dict[str, list[dict[str, Any]]] = self._read(
            session_id, lambda conn, _r: self._fetched(conn, session_id, source_type), {}
        )
        return fetched

    @override
    def append_messages(
        self, session_id: str, messages: Sequence[EncodedMessage], *, init: Header, now: str
    ) -> WriteResult:
        def apply(conn: sqlite3.Connection, row: tuple[Any, ...]) -> int:
            n = row[6]
            conn.executemany(
                "INSERT INTO messages (session_id, seq, body) VALUES (?, ?, ?)",
                [(session_id, n + i, m.json) for i, m in enumerate(messages)],
            )
            conn.execute(
                "UPDATE sessions SET n_messages = n_messages + ?, mc = mc + ?, tc = tc + ? "
                "WHERE id = ?",
                (len(messages), len(messages), sum(m.tokens for m in messages), session_id),
            )
            return len(messages)

        return self._write(session_id, init, now, apply)

    @override
    def append_fetched(
        self,
        session_id: str,
        items: Sequence[EncodedItem],
        *,
        init: Header,
        now: str,
        dedupe: bool = False,
    ) -> WriteResult:
        def apply(conn: sqlite3.Connection, _row: tuple[Any, ...]) -> int:
            (seq,) = conn.execute(
                "SELECT COALESCE(MAX(seq), -1) + 1 FROM fetched WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            added = 0
            for item in items:
                new = conn.execute(
                    "INSERT OR IGNORE INTO fingerprints (session_id, fp) VALUES (?, ?)",
                    (session_id, item.fingerprint),
                ).rowcount
                if dedupe and not new:
                    continue
                conn.execute(
                    "INSERT INTO fetched (session_id, seq, source_type, body) VALUES (?, ?, ?, ?)",
                    (session_id, seq + added, item.source_type, item.json),
                )
                added += 1
            return added

        return self._write(session_id, init, now, apply)

    def _update_shared(
        self, session_id: str, init: Header, now: str, change: Callable[[dict[str, Any]], None]
    ) -> WriteResult:
        def apply(conn: sqlite3.Connection, row: tuple[Any, ...]) -> int:
            shared = json.loads(row[2])
            change(shared)
            conn.execute("UPDATE sessions SET sh = ? WHERE id = ?", (dumps(shared), session_id))
            return 0

        return self._write(session_id, init, now, apply)

    @override
    def merge_shared(
        self, session_id: str, partial: Mapping[str, Any], *, init: Header, now: str
    ) -> WriteResult:
        def change(shared: dict[str, Any]) -> None:
            deep_merge(shared, partial)

        return self._update_shared(session_id, init, now, change)

    @override
    def set_shared(
        self, session_id: str, key: str, value: Any, *, init: Header, now: str
    ) -> WriteResult:
        encoded = dumps(value)
        return self._update_shared(
            session_id, init, now, lambda s: s.__setitem__(key, json.loads(encoded))
        )

    @override
    def update_header(
        self,
        session_id: str,
        *,
        init: Header,
        now: str,
        metadata: Mapping[str, Any] | None = None,
        system_prompt: str | None = None,
        set_system_prompt: bool = False,
    ) -> WriteResult:
        fields = {
            k: v for k, v in (metadata or {}).items() if k not in ("message_count", "token_count")
        }
        encoded = dumps(fields)

        def apply(conn: sqlite3.Connection, row: tuple[Any, ...]) -> int:
            if fields:
                meta = json.loads(row[1])
                meta.update(json.loads(encoded))
                conn.execute("UPDATE sessions SET md = ? WHERE id = ?", (dumps(meta), session_id))
            if set_system_prompt:
                conn.execute(
                    "UPDATE sessions SET sp = ? WHERE id = ?", (dumps(system_prompt), session_id)
                )
            return 0

        return self._write(session_id, init, now, apply)

    @override
    def clear(self, session_id: str, *, now: str, preserve_fetched: bool = False) -> bool:
        def body(conn: sqlite3.Connection, tx: _Tx) -> bool:
            if self._live(conn, tx, session_id, touch=False) is None:
                return False
            conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            if not preserve_fetched:
                conn.execute("DELETE FROM fetched WHERE session_id = ?", (session_id,))
                conn.execute("DELETE FROM fingerprints WHERE session_id = ?", (session_id,))
            conn.execute(_CLEAR, (dumps(now), self._expires(tx), session_id))
            return True

        return bool(self._tx(body))

    @override
    def replace_document(
        self,
        session_id: str,
        header: Header,
        messages: Sequence[EncodedMessage],
        items: Sequence[EncodedItem],
    ) -> WriteResult:
        def body(conn: sqlite3.Connection, tx: _Tx) -> WriteResult:
            created = self._live(conn, tx, session_id, touch=False) is None
            self._drop(conn, session_id)
            self._insert(conn, session_id, header, tx)
            conn.executemany(
                "INSERT INTO messages (session_id, seq, body) VALUES (?, ?, ?)",
                [(session_id, i, m.json) for i, m in enumerate(messages)],
            )
            conn.executemany(
                "INSERT INTO fetched (session_id, seq, source_type, body) VALUES (?, ?, ?, ?)",
                [(session_id, i, it.source_type, it.json) for i, it in enumerate(items)],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO fingerprints (session_id, fp) VALUES (?, ?)",
                [(session_id, it.fingerprint) for it in items],
            )
            conn.execute(
                "UPDATE sessions SET n_messages = ? WHERE id = ?", (len(messages), session_id)
            )
            if created:
                self._evict(conn, tx, session_id)
            return WriteResult(created=created, added=len(messages), evicted=tuple(tx.evicted))

        result: WriteResult = self._tx(body)
        return result

    @override
    def gc(self) -> int:
        def body(conn: sqlite3.Connection, tx: _Tx) -> int:
            rows = conn.execute(
                "SELECT id FROM sessions WHERE expires_at <= ? ORDER BY id", (tx.now,)
            ).fetchall()
            for (session_id,) in rows:
                self._drop(conn, session_id)
                tx.expired.append(session_id)
            return len(rows)

        removed: int = self._tx(body)
        return removed

    @override
    def close(self) -> None:
        with self._lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
