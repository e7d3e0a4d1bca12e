"""The SQLite store: sessions in one file, kept across restarts, shared by local processes.

Tables (schema version 3, ``PRAGMA user_version``)::

    sessions(id, mc, tc, ts, n_messages, expires_at, last_access)   -- small, hot row
    session_headers(session_id, sp, md)
    session_shared(session_id, sh)
    messages(session_id, seq, body, id)      -- seq = position 0..n-1; UNIQUE(session_id, id)
    fetched(session_id, seq, source_type, body)
    fingerprints(session_id, fp)
    recall_segments(session_id, seq, body)   -- the saved recall index (ctx_memory.recall)

``sp`` is the system prompt, ``md`` the metadata JSON and ``sh`` the shared state, each
kept out of the ``sessions`` row: an append updates only that small row (SQLite rewrites
a whole row on update), so its cost does not grow with the size of ``shared``. The
counters (``mc``, ``tc``) and the last-write timestamp (``ts``) are columns, spliced into
the metadata on read, so an append touches no JSON.

Appends are idempotent by message id: ``messages`` has a unique index on
``(session_id, id)`` and a message whose id is already in the history is not inserted
(nor counted), so a retried append never lands twice. ``clear`` and ``delete`` drop the
ids with the messages. Files written by version 1 of the schema (the three JSON columns
in ``sessions``, no message ids) or version 2 (no ``recall_segments``) are migrated when
opened, in one transaction; a file of a newer version is refused. ``recall_segments`` is
derived data: every write that removes or changes messages deletes the session's rows.

Every write is one ``BEGIN IMMEDIATE`` transaction on the store's write connection (WAL
mode, ``busy_timeout``), so concurrent processes serialise their writes and never see half
of one. Reads use other connections (a small pool, one per concurrent reader) and plain
deferred transactions: in WAL mode a reader sees the last committed state and neither
waits for nor blocks a writer, in this process or another. Two exceptions: a
``":memory:"`` database has a single connection, shared under a lock; and with
``max_sessions`` set every read also bumps the session's LRU clock, so reads are then
write transactions and wait for other writers.

``expires_at`` is wall-clock time (sliding TTL, refreshed on writes). A read treats an
expired session as absent but leaves it in place; writes, :meth:`SqliteStore.gc` and
:meth:`SqliteStore.list_sessions` delete it and report ``session_expired``.
``last_access`` is a logical clock (the highest value + 1) bumped by writes and, when
``max_sessions`` is set, by reads.

The store remembers which file it opened (device and inode). If the file is deleted or
replaced while the store is open, every later operation raises
:class:`~ctx_memory.errors.StoreUnavailableError` instead of writing to the orphaned file,
where an acknowledged write would be lost.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

from typing_extensions import override

from ctx_memory.errors import StoreError, StoreUnavailableError
from ctx_memory.schema import dumps
from ctx_memory.stores._gc import GarbageCollector, check_interval, gc_interval
from ctx_memory.stores._sqlite_db import SqliteDatabase, Tx, live_row
from ctx_memory.stores._sqlite_schema import (
    APPEND,
    CLEAR,
    DROP_RECALL,
    SCHEMA_VERSION,  # noqa: F401 - re-exported
    TOUCH_WRITE,
    decode_header_row,
    ensure_schema,
    lrange_bounds,
    prefix_end,
    refuse_newer,
)
from ctx_memory.stores.base import (
    Header,
    WriteResult,
    assemble_document,
    check_limits,
    check_shared_size,
    deep_merge,
)
from ctx_memory.stores.ops import (
    AppendFetched,
    AppendMessages,
    ClearSession,
    CollectGarbage,
    CountMessages,
    CreateSession,
    DeleteMessages,
    DeleteSession,
    GetDocument,
    GetFetched,
    GetHeader,
    GetMessages,
    GetMessageSpans,
    GetRecallSegments,
    ListPage,
    ListSessions,
    MergeShared,
    ReplaceDocument,
    ReplaceMessage,
    SaveRecallSegments,
    SessionExists,
    SetShared,
    TruncateMessages,
    UpdateHeader,
)

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence

    from ctx_memory.config import Settings

__all__ = ["SqliteStore", "lrange_bounds"]

SQLITE_MAX_PATH_BYTES = 512 - len("-journal")
"""The longest database path SQLite's Unix layer opens: 512 bytes (``MAX_PATHNAME``) for the
path of the database's journal. Beyond it SQLite says only "unable to open database file"."""


class SqliteStore(SqliteDatabase):
    """Sessions in an SQLite file (stdlib ``sqlite3``, WAL), safe for several processes.

    Each write is one ``BEGIN IMMEDIATE`` transaction on one connection shared under a
    lock in this process; reads run on separate connections and never wait for a writer
    (unless ``max_sessions`` is set: reads then bump the LRU clock, which is a write).
    Async methods run in a worker thread. Appending is O(1) (indexed inserts, no scan of
    the history, duplicates by message id skipped), reading the last ``k`` messages an
    indexed range scan of ``k`` rows.

    Args:
        path: The database file (created if missing); ``":memory:"`` for a private
            in-memory database (tests).
        ttl_seconds: Sliding time to live; ``None`` for no expiry.
        max_sessions: Most live sessions in the file; ``None`` for no limit.
        busy_timeout: Seconds to wait for another process's transaction.
        clock: Wall clock in seconds (expiry is shared between processes).
        gc_interval_seconds: Run :meth:`gc` in a background thread at this interval
            (deleting expired sessions nobody touches); ``None`` for none. A failing
            collection is logged and retried; the thread stops on :meth:`close`.

    Raises:
        StoreUnavailableError: The file cannot be opened, or was written by a newer
            version of this package. Any later operation raises it too if the file is
            deleted or replaced while the store is open.

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
    keeps_recall_segments = True
    imports_if_absent = True

    def __init__(
        self,
        path: str = "ctx_memory.sqlite3",
        *,
        ttl_seconds: float | None = None,
        max_sessions: int | None = None,
        busy_timeout: float = 30.0,
        clock: Callable[[], float] = time.time,
        gc_interval_seconds: float | None = None,
    ) -> None:
        ttl_seconds = check_limits(ttl_seconds, max_sessions)
        gc_interval_seconds = check_interval(gc_interval_seconds)
        self.path = os.path.expanduser(str(path))  # "~/sessions.db" as a shell reads it
        self.ttl_seconds = ttl_seconds
        self.max_sessions = max_sessions
        self._clock = clock
        self._busy_timeout = busy_timeout
        self._lock = threading.RLock()  # the write connection
        self._pool_lock = threading.Lock()  # the idle read connections
        self._idle: list[sqlite3.Connection] = []
        self._closed = False
        # A private database (":memory:" or "") is one connection: no readers of its own.
        self._private = self.path in ("", ":memory:")
        self._file = os.path.abspath(self.path) if not self._private else self.path
        self._identity: tuple[int, int] | None = None
        conn: sqlite3.Connection | None = None
        try:
            conn = self._connect(self.path)
            refuse_newer(conn, self.path)  # before the journal mode: a newer file stays as is
            if not self._private:
                conn.execute("PRAGMA journal_mode = WAL")
                conn.execute("PRAGMA synchronous = NORMAL")
            ensure_schema(conn, self.path)
            if not self._private:
                self._identity = self._stat()
        except BaseException as e:
            if conn is not None:
                conn.close()
            if isinstance(e, StoreError) or not isinstance(e, (sqlite3.Error, OSError)):
                raise
            msg = f"SQLite database {self.path!r} cannot be opened: {e}"
            if len(os.fsencode(os.path.abspath(self.path))) > SQLITE_MAX_PATH_BYTES:
                msg += f" (SQLite opens paths of up to {SQLITE_MAX_PATH_BYTES} bytes)"
            raise StoreUnavailableError(msg) from e
        self._conn: sqlite3.Connection | None = conn
        self._collector = (
            GarbageCollector(self.gc, gc_interval_seconds, name=repr(self))
            if gc_interval_seconds is not None
            else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> SqliteStore:
        """A store configured from :class:`~ctx_memory.config.Settings`."""
        return cls(
            settings.sqlite_path,
            ttl_seconds=settings.ttl_seconds,
            max_sessions=settings.max_sessions,
            gc_interval_seconds=gc_interval(settings),
        )

    def __repr__(self) -> str:
        return (
            f"SqliteStore(path={self.path!r}, ttl_seconds={self.ttl_seconds}, "
            f"max_sessions={self.max_sessions})"
        )

    # ------------------------------------------------------------ operations

    @override
    def _create(self, op: CreateSession) -> WriteResult:
        session_id, init = op.session_id, op.init
        return self._write(session_id, init, init["metadata"]["timestamp"], lambda _c, _n: 0)

    @override
    def _exists(self, op: SessionExists) -> bool:
        session_id = op.session_id
        return bool(self._read(session_id, lambda _c, _r: True, default=False))

    @override
    def _delete(self, op: DeleteSession) -> bool:
        session_id = op.session_id

        def body(conn: sqlite3.Connection, tx: Tx) -> bool:
            # An expired session did not exist: ``_live`` removes it and reports it expired.
            return self._live(conn, tx, session_id) is not None and self._drop(conn, session_id)

        return bool(self._tx(body))

    @override
    def _list_sessions(self, op: ListSessions) -> list[str]:
        def read(conn: sqlite3.Connection, now: float) -> tuple[list[str], bool]:
            rows = conn.execute(
                "SELECT id FROM sessions WHERE expires_at IS NULL OR expires_at > ?", (now,)
            ).fetchall()
            (expired,) = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM sessions WHERE expires_at <= ?)", (now,)
            ).fetchone()
            return [r[0] for r in rows], bool(expired)

        ids, expired = self._read_tx(read)
        if expired:  # only then a write: delete them and report them
            self._gc(CollectGarbage())
        return sorted(ids)

    @override
    def _get_header(self, op: GetHeader) -> Header | None:
        session_id = op.session_id
        header: Header | None = self._read(
            session_id, lambda _c, row: decode_header_row(row), None, header=True
        )
        return header

    @override
    def _get_document(self, op: GetDocument) -> dict[str, Any] | None:
        session_id = op.session_id

        def read(conn: sqlite3.Connection, row: Sequence[Any]) -> dict[str, Any]:
            messages = conn.execute(
                "SELECT body FROM messages WHERE session_id = ? ORDER BY seq", (session_id,)
            ).fetchall()
            return assemble_document(
                decode_header_row(row),
                [json.loads(m[0]) for m in messages],
                self._fetched(conn, session_id, None),
            )

        document: dict[str, Any] | None = self._read(session_id, read, None, header=True)
        return document

    @override
    def _get_messages(self, op: GetMessages) -> list[dict[str, Any]]:
        session_id, start, end = op.session_id, op.start, op.end

        def read(conn: sqlite3.Connection, row: Sequence[Any]) -> list[Any]:
            bounds = lrange_bounds(start, end, row[1])
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
    def _get_message_spans(self, op: GetMessageSpans) -> list[list[dict[str, Any]]]:
        session_id, spans = op.session_id, op.spans

        def read(conn: sqlite3.Connection, _row: Sequence[Any]) -> list[list[Any]]:
            return [
                conn.execute(
                    "SELECT body FROM messages WHERE session_id = ? AND seq BETWEEN ? AND ? "
                    "ORDER BY seq",
                    (session_id, start, end),
                ).fetchall()
                for start, end in spans
            ]

        parts: list[list[Any]] | None = self._read(session_id, read, None)  # one snapshot
        if parts is None:
            return [[] for _ in spans]
        return [[json.loads(r[0]) for r in rows] for rows in parts]

    @override
    def _count_messages(self, op: CountMessages) -> int:
        session_id = op.session_id
        count: int = self._read(session_id, lambda _c, row: row[1], 0)
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
    def _get_fetched(self, op: GetFetched) -> dict[str, list[dict[str, Any]]]:
        session_id, source_type = op.session_id, op.source_type
        fetched: dict[str, list[dict[str, Any]]] = self._read(
            session_id, lambda conn, _r: self._fetched(conn, session_id, source_type), {}
        )
        return fetched

    @override
    def _append_messages(self, op: AppendMessages) -> WriteResult:
        session_id, messages, init, now = op.session_id, op.messages, op.init, op.now

        def apply(conn: sqlite3.Connection, n: int) -> int:
            # One indexed insert per message; the unique (session_id, id) index skips a
            # message already in the history, or earlier in this batch.
            added = tokens = 0
            for m in messages:
                if conn.execute(APPEND, (session_id, n + added, m.json, m.id)).rowcount:
                    added += 1
                    tokens += m.tokens
            if added:
                conn.execute(
                    "UPDATE sessions SET n_messages = n_messages + ?, mc = mc + ?, tc = tc + ? "
                    "WHERE id = ?",
                    (added, added, tokens, session_id),
                )
            return added

        return self._write(session_id, init, now, apply, appends=True)

    def _edit(
        self, session_id: str, now: str, edit: Callable[[sqlite3.Connection, int], Any]
    ) -> Any:
        """Run ``edit(conn, length)`` on a live session's history in one write transaction.

        ``edit`` answers ``(result, messages_delta, tokens_delta)``; the counters follow
        and the session is touched when anything changed. Absent: ``None``.
        """

        def body(conn: sqlite3.Connection, tx: Tx) -> Any:
            n = self._live(conn, tx, session_id)
            if n is None:
                return None
            result, messages, tokens = edit(conn, n)
            if messages or tokens or result:
                conn.execute(DROP_RECALL, (session_id,))
                conn.execute(
                    "UPDATE sessions SET n_messages = n_messages + ?, mc = mc + ?, tc = tc + ? "
                    "WHERE id = ?",
                    (messages, messages, tokens, session_id),
                )
                conn.execute(TOUCH_WRITE, (dumps(now), self._expires(tx), session_id))
            return result

        return self._tx(body)

    @staticmethod
    def _renumber(conn: sqlite3.Connection, session_id: str, first: int) -> None:
        """Give the messages from position ``first`` on positions ``first, first + 1, ...``."""
        # Through negative positions: the (session_id, seq) key stays unique at every step.
        conn.execute(
            "UPDATE messages SET seq = -1 - seq WHERE session_id = ? AND seq >= ?",
            (session_id, first),
        )
        olds = conn.execute(
            "SELECT seq FROM messages WHERE session_id = ? AND seq < 0 ORDER BY seq DESC",
            (session_id,),
        ).fetchall()
        conn.executemany(
            "UPDATE messages SET seq = ? WHERE session_id = ? AND seq = ?",
            [(first + i, session_id, old) for i, (old,) in enumerate(olds)],
        )

    @override
    def _delete_messages(self, op: DeleteMessages) -> int:
        session_id, message_ids, now = op.session_id, op.message_ids, op.now
        wanted = list(dict.fromkeys(message_ids))

        def edit(conn: sqlite3.Connection, _n: int) -> tuple[int, int, int]:
            found = [
                row
                for mid in wanted
                for row in conn.execute(
                    "SELECT seq, body FROM messages WHERE session_id = ? AND id = ?",
                    (session_id, mid),
                ).fetchall()
            ]
            if not found:
                return 0, 0, 0
            conn.executemany(
                "DELETE FROM messages WHERE session_id = ? AND seq = ?",
                [(session_id, seq) for seq, _ in found],
            )
            self._renumber(conn, session_id, min(seq for seq, _ in found))
            tokens = sum(int(json.loads(body).get("token_count", 0)) for _, body in found)
            return len(found), -len(found), -tokens

        removed: int | None = self._edit(session_id, now, edit)
        return removed or 0

    @override
    def _replace_message(self, op: ReplaceMessage) -> bool:
        session_id, message_id, message, now = op.session_id, op.message_id, op.message, op.now

        def edit(conn: sqlite3.Connection, _n: int) -> tuple[bool, int, int]:
            row = conn.execute(
                "SELECT seq, body FROM messages WHERE session_id = ? AND id = ?",
                (session_id, message_id),
            ).fetchone()
            if row is None:
                return False, 0, 0
            conn.execute(
                "UPDATE messages SET body = ? WHERE session_id = ? AND seq = ?",
                (message.json, session_id, row[0]),
            )
            return True, 0, message.tokens - int(json.loads(row[1]).get("token_count", 0))

        return bool(self._edit(session_id, now, edit))

    @override
    def _truncate_messages(self, op: TruncateMessages) -> int | None:
        session_id, message_id, inclusive, now = op.session_id, op.message_id, op.inclusive, op.now

        def edit(conn: sqlite3.Connection, _n: int) -> tuple[int | None, int, int]:
            row = conn.execute(
                "SELECT seq FROM messages WHERE session_id = ? AND id = ?",
                (session_id, message_id),
            ).fetchone()
            if row is None:
                return None, 0, 0
            cut = row[0] if inclusive else row[0] + 1
            bodies = conn.execute(
                "SELECT body FROM messages WHERE session_id = ? AND seq >= ?", (session_id, cut)
            ).fetchall()
            conn.execute(
                "DELETE FROM messages WHERE session_id = ? AND seq >= ?", (session_id, cut)
            )
            tokens = sum(int(json.loads(body).get("token_count", 0)) for (body,) in bodies)
            return len(bodies), -len(bodies), -tokens

        result: int | None = self._edit(session_id, now, edit)
        return result

    @override
    def _list_page(self, op: ListPage) -> list[str]:
        prefix, cursor, limit = op.prefix, op.cursor, op.limit
        low = prefix if cursor is None or cursor < prefix else cursor
        upper = prefix_end(prefix)
        query = "SELECT id FROM sessions WHERE (expires_at IS NULL OR expires_at > ?) AND id >= ?"
        args: list[Any] = [low]
        if cursor is not None and cursor >= prefix:
            query = query.replace("id >= ?", "id > ?")
        if upper is not None:
            query += " AND id < ?"
            args.append(upper)
        query += " ORDER BY id LIMIT ?"

        def read(conn: sqlite3.Connection, now: float) -> list[str]:
            return [r[0] for r in conn.execute(query, (now, *args, limit)).fetchall()]

        page: list[str] = self._read_tx(read)
        return page

    @override
    def _append_fetched(self, op: AppendFetched) -> WriteResult:
        session_id, items, init, now, dedupe = op.session_id, op.items, op.init, op.now, op.dedupe

        def apply(conn: sqlite3.Connection, _n: int) -> int:
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
        def apply(conn: sqlite3.Connection, _n: int) -> int:
            (sh,) = conn.execute(
                "SELECT sh FROM session_shared WHERE session_id = ?", (session_id,)
            ).fetchone()
            shared = json.loads(sh)
            change(shared)
            text = dumps(shared)
            check_shared_size(text)  # raises before the update; the transaction rolls back
            conn.execute(
                "UPDATE session_shared SET sh = ? WHERE session_id = ?",
                (text, session_id),
            )
            return 0

        return self._write(session_id, init, now, apply)

    @override
    def _merge_shared(self, op: MergeShared) -> WriteResult:
        session_id, partial, init, now = op.session_id, op.partial, op.init, op.now

        def change(shared: dict[str, Any]) -> None:
            deep_merge(shared, partial)

        return self._update_shared(session_id, init, now, change)

    @override
    def _set_shared(self, op: SetShared) -> WriteResult:
        session_id, key, value, init, now = op.session_id, op.key, op.value, op.init, op.now
        encoded = dumps(value)
        return self._update_shared(
            session_id, init, now, lambda s: s.__setitem__(key, json.loads(encoded))
        )

    @override
    def _update_header(self, op: UpdateHeader) -> WriteResult:
        session_id, init, now, metadata, system_prompt, set_system_prompt = (
            op.session_id,
            op.init,
            op.now,
            op.metadata,
            op.system_prompt,
            op.set_system_prompt,
        )
        fields = {
            k: v for k, v in (metadata or {}).items() if k not in ("message_count", "token_count")
        }
        encoded = dumps(fields)

        def apply(conn: sqlite3.Connection, _n: int) -> int:
            if fields:
                (md,) = conn.execute(
                    "SELECT md FROM session_headers WHERE session_id = ?", (session_id,)
                ).fetchone()
                meta = json.loads(md)
                meta.update(json.loads(encoded))
                conn.execute(
                    "UPDATE session_headers SET md = ? WHERE session_id = ?",
                    (dumps(meta), session_id),
                )
            if set_system_prompt:
                conn.execute(
                    "UPDATE session_headers SET sp = ? WHERE session_id = ?",
                    (dumps(system_prompt), session_id),
                )
            return 0

        return self._write(session_id, init, now, apply)

    @override
    def _clear(self, op: ClearSession) -> bool:
        session_id, now, preserve_fetched = op.session_id, op.now, op.preserve_fetched

        def body(conn: sqlite3.Connection, tx: Tx) -> bool:
            if self._live(conn, tx, session_id) is None:
                return False
            # The ids go with the messages: the same id may be appended again.
            conn.execute("DELETE FROM messages WHERE session_id = ?", (session_id,))
            conn.execute(DROP_RECALL, (session_id,))
            if not preserve_fetched:
                conn.execute("DELETE FROM fetched WHERE session_id = ?", (session_id,))
                conn.execute("DELETE FROM fingerprints WHERE session_id = ?", (session_id,))
            conn.execute(CLEAR, (dumps(now), self._expires(tx), session_id))
            return True

        return bool(self._tx(body))

    @override
    def _replace_document(self, op: ReplaceDocument) -> WriteResult:
        session_id, header, messages, items = op.session_id, op.header, op.messages, op.items

        def body(conn: sqlite3.Connection, tx: Tx) -> WriteResult:
            created = self._live(conn, tx, session_id) is None
            if op.if_absent and not created:
                return WriteResult(created=False, added=0)
            self._drop(conn, session_id)
            self._insert(conn, session_id, header, tx)
            # A message id is stored once, as appends do: a repeated id is skipped.
            seen: set[str] = set()
            rows: list[tuple[str, int, str, str]] = []
            for m in messages:
                if m.id not in seen:
                    rows.append((session_id, len(rows), m.json, m.id))
                    seen.add(m.id)
            conn.executemany(
                "INSERT INTO messages (session_id, seq, body, id) VALUES (?, ?, ?, ?)", rows
            )
            conn.executemany(
                "INSERT INTO fetched (session_id, seq, source_type, body) VALUES (?, ?, ?, ?)",
                [(session_id, i, it.source_type, it.json) for i, it in enumerate(items)],
            )
            conn.executemany(
                "INSERT OR IGNORE INTO fingerprints (session_id, fp) VALUES (?, ?)",
                [(session_id, it.fingerprint) for it in items],
            )
            conn.execute("UPDATE sessions SET n_messages = ? WHERE id = ?", (len(rows), session_id))
            if created:
                self._evict(conn, tx, session_id)
            return WriteResult(created=created, added=len(rows), evicted=tuple(tx.evicted))

        result: WriteResult = self._tx(body)
        return result

    @override
    def _get_recall_segments(self, op: GetRecallSegments) -> list[str]:
        def read(conn: sqlite3.Connection, now: float) -> list[str]:
            if live_row(conn, op.session_id, now) is None:
                return []
            rows = conn.execute(
                "SELECT body FROM recall_segments WHERE session_id = ? ORDER BY seq",
                (op.session_id,),
            ).fetchall()
            return [body for (body,) in rows]

        result: list[str] = self._read_tx(read)  # not an access: no LRU touch
        return result

    @override
    def _save_recall_segments(self, op: SaveRecallSegments) -> bool:
        session_id = op.session_id

        def body(conn: sqlite3.Connection, tx: Tx) -> bool:
            if live_row(conn, session_id, tx.now) is None:
                return False  # expired: left for the next write or gc to remove
            if op.replace:
                conn.execute(DROP_RECALL, (session_id,))
            (last,) = conn.execute(
                "SELECT COALESCE(MAX(seq), -1) FROM recall_segments WHERE session_id = ?",
                (session_id,),
            ).fetchone()
            conn.executemany(
                "INSERT INTO recall_segments (session_id, seq, body) VALUES (?, ?, ?)",
                [(session_id, last + 1 + i, text) for i, text in enumerate(op.segments)],
            )
            return True

        saved: bool = self._tx(body)
        return saved

    @override
    def _gc(self, op: CollectGarbage) -> int:
        removed: int = self._tx(self._collect)
        return removed

    @override
    def close(self) -> None:
        collector, self._collector = self._collector, None
        if collector is not None:  # first: a collection under way still has the connection
            collector.stop()
        with self._lock:
            conn, self._conn = self._conn, None
        with self._pool_lock:
            self._closed = True
            idle, self._idle = self._idle, []
        for reader in idle:
            reader.close()
        if conn is not None:
            conn.close()

    @property
    def gc_running(self) -> bool:
        """Whether the background garbage collector is running."""
        return self._collector is not None and self._collector.running
