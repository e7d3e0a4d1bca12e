"""The SQLite store's connections, transactions and the session row every operation starts from.

:class:`SqliteDatabase` is the part of :class:`~ctx_memory.stores.sqlite.SqliteStore` that
talks to ``sqlite3`` without knowing the operations: the write connection (one, under a
lock) and the pool of read connections, the check that the file is still the one opened,
``BEGIN IMMEDIATE`` write transactions and plain read transactions, and the session row's
life: reading it live (expired rows are deleted and reported), inserting it, the LRU clock
and eviction. The store's operations (:mod:`ctx_memory.stores.sqlite`) are written on top.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ctx_memory.errors import StoreError, StoreUnavailableError
from ctx_memory.schema import dumps
from ctx_memory.stores._sqlite_schema import (
    HEADER,
    INSERT,
    LIVE,
    SCHEMA_VERSION,  # noqa: F401 - re-exported
    SESSION_TABLES,
    TOUCH_READ,
    TOUCH_WRITE,
)
from ctx_memory.stores.base import (
    Header,
    WriteResult,
)
from ctx_memory.stores.handlers import OperationStore

if TYPE_CHECKING:
    import threading
    from collections.abc import Callable, Sequence


__all__ = ["SqliteDatabase", "Tx", "live_row"]


class Tx:
    """What one transaction saw happen to other sessions (reported after commit)."""

    __slots__ = ("evicted", "expired", "now")

    def __init__(self, now: float) -> None:
        self.now = now
        self.expired: list[str] = []
        self.evicted: list[str] = []


def live_row(
    conn: sqlite3.Connection, session_id: str, now: float, query: str = LIVE
) -> Sequence[Any] | None:
    """The session's row by ``query`` (``expires_at`` first), ``None`` if absent or expired."""
    row: Sequence[Any] | None = conn.execute(query, (session_id,)).fetchone()
    if row is None or (row[0] is not None and row[0] <= now):
        return None
    return row


class SqliteDatabase(OperationStore):
    """Connections, transactions and session rows (see the module docstring)."""

    path: str
    ttl_seconds: float | None
    max_sessions: int | None
    _clock: Callable[[], float]
    _busy_timeout: float
    _lock: threading.RLock
    _pool_lock: threading.Lock
    _idle: list[sqlite3.Connection]
    _closed: bool
    _private: bool
    _file: str
    _identity: tuple[int, int] | None
    _conn: sqlite3.Connection | None

    # ------------------------------------------------------------ connections

    def _connect(self, target: str, *, uri: bool = False) -> sqlite3.Connection:
        conn = sqlite3.connect(
            target,
            timeout=self._busy_timeout,
            isolation_level=None,
            check_same_thread=False,
            uri=uri,
        )
        try:
            conn.execute(f"PRAGMA busy_timeout = {int(self._busy_timeout * 1000)}")
        except BaseException:
            conn.close()
            raise
        return conn

    def _stat(self) -> tuple[int, int]:
        st = os.stat(self._file)
        return (st.st_dev, st.st_ino)

    def _check_file(self) -> None:
        """Raise unless the path still names the file this store opened.

        A connection keeps using a deleted (or replaced) file: its writes would succeed
        and be lost. Checked inside every transaction, before it commits.
        """
        if self._identity is None:
            return
        try:
            now = self._stat()
        except FileNotFoundError:
            problem = "was deleted"
        except OSError as e:
            problem = f"cannot be checked ({e})"
        else:
            if now == self._identity:
                return
            problem = "was replaced by another file"
        msg = (
            f"SQLite database {self.path!r} {problem} while the store was open; "
            "nothing more is read from or written to it (open a new store)"
        )
        raise StoreUnavailableError(msg)

    def _closed_error(self) -> StoreError:
        return StoreError(f"SQLite store {self.path!r} is closed")

    def _checkout(self) -> sqlite3.Connection:
        with self._pool_lock:
            if self._closed:
                raise self._closed_error()
            if self._idle:
                return self._idle.pop()
        self._check_file()  # never open (and so create) a file in place of the one we had
        # mode=rw: a read connection never creates the file.
        return self._connect(Path(self._file).as_uri() + "?mode=rw", uri=True)

    def _checkin(self, conn: sqlite3.Connection) -> None:
        with self._pool_lock:
            if not self._closed:
                self._idle.append(conn)
                return
        conn.close()

    def _failed(self, e: sqlite3.Error) -> StoreError:
        msg = f"SQLite database {self.path!r} failed: {e}"
        if isinstance(e, sqlite3.OperationalError):
            return StoreUnavailableError(msg)
        return StoreError(msg)

    # ------------------------------------------------------------ transactions

    def _tx(self, body: Callable[[sqlite3.Connection, Tx], Any]) -> Any:
        """Run ``body`` in one write transaction, then report what it expired or evicted."""
        with self._lock:
            conn = self._conn
            if conn is None:
                raise self._closed_error()
            try:
                try:
                    if conn.in_transaction:  # left by a write a signal interrupted
                        conn.execute("ROLLBACK")
                    conn.execute("BEGIN IMMEDIATE")
                    # The clock once the write lock is held: a write that waited for it
                    # must neither extend a session that expired meanwhile nor set a past
                    # expiry.
                    tx = Tx(self._clock())
                    self._check_file()
                    result = body(conn, tx)
                    self._check_file()
                    conn.execute("COMMIT")
                except BaseException:
                    # Also a KeyboardInterrupt just after BEGIN or a failed COMMIT: the
                    # write lock is never kept (other processes would wait on it).
                    if conn.in_transaction:  # some errors already rolled it back
                        conn.execute("ROLLBACK")
                    raise
            except sqlite3.Error as e:
                raise self._failed(e) from e
        for session_id in tx.expired:
            self._notify("session_expired", session_id)
        for session_id in tx.evicted:
            self._notify("session_evicted", session_id)
        return result

    def _read_tx(self, body: Callable[[sqlite3.Connection, float], Any]) -> Any:
        """Run ``body`` in a read-only (deferred) transaction that takes no write lock."""
        now = self._clock()
        if self._private:
            with self._lock:
                conn = self._conn
                if conn is None:
                    raise self._closed_error()
                return self._read_on(conn, body, now)
        try:
            conn = self._checkout()
        except sqlite3.Error as e:
            raise self._failed(e) from e
        try:
            result = self._read_on(conn, body, now)
        except BaseException:
            conn.close()  # in an unknown state: not back to the pool
            raise
        self._checkin(conn)
        return result

    def _read_on(
        self, conn: sqlite3.Connection, body: Callable[[sqlite3.Connection, float], Any], now: float
    ) -> Any:
        try:
            try:
                if conn.in_transaction:  # left by a call a signal interrupted
                    conn.execute("ROLLBACK")
                conn.execute("BEGIN")
                self._check_file()
                result = body(conn, now)
            finally:
                if conn.in_transaction:  # read-only: commit and rollback are the same
                    conn.execute("COMMIT")
        except sqlite3.Error as e:
            raise self._failed(e) from e
        return result

    @staticmethod
    def _drop(conn: sqlite3.Connection, session_id: str) -> bool:
        gone = False
        for table, column in SESSION_TABLES:
            cur = conn.execute(f"DELETE FROM {table} WHERE {column} = ?", (session_id,))  # noqa: S608
            gone = gone or (table == "sessions" and cur.rowcount > 0)
        return gone

    def _live(self, conn: sqlite3.Connection, tx: Tx, session_id: str) -> int | None:
        """For a write: the session's length, or ``None`` if absent (expired: deleted)."""
        row = conn.execute(LIVE, (session_id,)).fetchone()
        if row is None:
            return None
        if row[0] is not None and row[0] <= tx.now:
            self._drop(conn, session_id)
            tx.expired.append(session_id)
            return None
        n: int = row[1]
        return n

    def _expires(self, tx: Tx) -> float | None:
        return None if self.ttl_seconds is None else tx.now + self.ttl_seconds

    def _insert(self, conn: sqlite3.Connection, session_id: str, header: Header, tx: Tx) -> None:
        meta = header["metadata"]
        ts = meta.get("timestamp")
        conn.execute(
            INSERT,
            (
                session_id,
                int(meta.get("message_count", 0)),
                int(meta.get("token_count", 0)),
                dumps(ts) if "timestamp" in meta else None,
                self._expires(tx),
            ),
        )
        conn.execute(
            "INSERT INTO session_headers (session_id, sp, md) VALUES (?, ?, ?)",
            (session_id, dumps(header["system_prompt"]), dumps(meta)),
        )
        conn.execute(
            "INSERT INTO session_shared (session_id, sh) VALUES (?, ?)",
            (session_id, dumps(header["shared"])),
        )

    def _evict(self, conn: sqlite3.Connection, tx: Tx, keep: str) -> None:
        if self.max_sessions is None:
            return
        self._collect(conn, tx)
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

    def _collect(self, conn: sqlite3.Connection, tx: Tx) -> int:
        """Delete every expired session (reported as expired after commit)."""
        rows = conn.execute(
            "SELECT id FROM sessions WHERE expires_at <= ? ORDER BY id", (tx.now,)
        ).fetchall()
        for (session_id,) in rows:
            self._drop(conn, session_id)
            tx.expired.append(session_id)
        return len(rows)

    def _write(
        self,
        session_id: str,
        init: Header,
        now: str,
        apply: Callable[[sqlite3.Connection, int], int],
        *,
        appends: bool = False,
    ) -> WriteResult:
        """Upsert the session, then ``apply(conn, length_of_history)`` -> items added.

        With ``appends``, a call that added nothing to an existing session is a no-op: it
        does not touch the timestamp, TTL or LRU order either (as on every store).
        """

        def body(conn: sqlite3.Connection, tx: Tx) -> WriteResult:
            n = self._live(conn, tx, session_id)
            created = n is None
            if n is None:
                self._insert(conn, session_id, init, tx)
                self._evict(conn, tx, session_id)
                n = 0
            added = apply(conn, n)
            if added or created or not appends:
                conn.execute(TOUCH_WRITE, (dumps(now), self._expires(tx), session_id))
            return WriteResult(created=created, added=added, evicted=tuple(tx.evicted))

        result: WriteResult = self._tx(body)
        return result

    def _read(
        self,
        session_id: str,
        read: Callable[[sqlite3.Connection, Sequence[Any]], Any],
        default: Any,
        *,
        header: bool = False,
    ) -> Any:
        """``read(conn, row)`` if the session is live, else ``default``.

        ``row`` starts with ``expires_at, n_messages``; with ``header``, the columns
        :func:`header` takes follow. An expired session is absent but not deleted here.
        """
        query = HEADER if header else LIVE

        def lookup(conn: sqlite3.Connection, now: float) -> Sequence[Any] | None:
            return live_row(conn, session_id, now, query)

        if self.max_sessions is None:

            def pure(conn: sqlite3.Connection, now: float) -> Any:
                row = lookup(conn, now)
                return default if row is None else read(conn, row)

            return self._read_tx(pure)

        def touching(conn: sqlite3.Connection, tx: Tx) -> Any:
            row = lookup(conn, tx.now)
            if row is None:
                return default
            conn.execute(TOUCH_READ, (session_id,))
            return read(conn, row)

        return self._tx(touching)
