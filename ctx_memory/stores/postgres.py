"""The PostgreSQL store: sessions in one schema of a PostgreSQL database, sync and asyncio.

psycopg 3 with connection pools (``psycopg_pool``): a sync pool for sync calls, an asyncio
pool per event loop for the async twins (native async I/O, no worker threads). The schema,
its tables, functions and versions are in :mod:`ctx_memory.stores._postgres_sql`.

Every operation is a generator of statements, run by :meth:`PostgresStore._drive` on a sync
connection and :meth:`PostgresStore._adrive` on an async one (``await`` only). An append
(messages or fetched items), a read, garbage collection and a save of recall segments are
one statement each, so one round trip, in autocommit; the other writes (shared state,
metadata, history edits, clear, import, delete) run in one transaction that first locks the
session row. A delete so waits for an append in flight and deletes what it wrote.

Connections: a pool the store made lends its connections for longer than a call. Each call
takes the most recently returned one from a stack (:class:`Lease`) and puts it back; every
:data:`KEEP_SECONDS` a connection goes back through the pool (its lifetime and checks), and
``close`` returns them all (a checkout from ``psycopg_pool`` and back costs 5 to 13 µs of
Python, a tenth of a round trip). A pool given to the store is used through
``getconn``/``putconn`` on every call. The event publisher takes its connection the same
way. After ``fork`` a child never uses (nor closes) the connections its parent kept.

Retries: a statement meeting a dropped connection is sent again once, on a fresh connection,
when that is harmless: reads, appends (skipped by message id), writes setting a value. A deep
merge of ``shared``, fetched items, a truncation and recall segments saved after the session's
are not repeated: they raise ``StoreUnavailableError``. An append of one message looks for its id
only through ``UNIQUE (sk, id)`` (an id the session holds fails the statement whole, and the
append is sent again as the function that skips it). Appends, imports, metadata and ``set``
writes carry a random write token (:func:`_write_token`, the same on a second attempt) kept
with what they insert and the session they create (``ct``): a second attempt after a lost
reply answers what its first did (``added``, ``created``), so no manager event is lost.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import threading
import time
import weakref
from typing import TYPE_CHECKING, Any, TypeVar

from typing_extensions import override

from ctx_memory._extras import missing_extra
from ctx_memory._store_urls import hide_in_logs, redact_url, scrub_error, validate_postgres_url
from ctx_memory.errors import StoreError, StoreUnavailableError
from ctx_memory.stores._gc import GarbageCollector, check_interval, gc_interval
from ctx_memory.stores._postgres_loops import (
    cancel_guard,
    close_async_pool,
    close_at_loop_end,
    open_loop_pool,
)
from ctx_memory.stores._postgres_ops import ALL, ONE, Found, PostgresOperations, Statement
from ctx_memory.stores._postgres_sql import (
    SCHEMA_VERSION,
    SchemaSql,
    check_schema_name,
    events_channel,
)
from ctx_memory.stores._postgres_wire import (
    Lease,
    aconnect_error,
    acursor,
    arelease_cursor,
    asend,
    atransaction,
    connect_error,
    cursor,
    prepared_session,
    release_cursor,
    send,
    sizeable,
    to_pool,
    transaction,
    unkeep,
)
from ctx_memory.stores.base import check_limits
from ctx_memory.stores.memory import InMemoryStore
from ctx_memory.stores.ops import (
    AppendFetched,
    AppendMessages,
    ClearSession,
    DeleteMessages,
    DeleteSession,
    MergeShared,
    ReplaceDocument,
    ReplaceMessage,
    SaveRecallSegments,
    SetShared,
    StoreOp,
    TruncateMessages,
    UpdateHeader,
    may_create,
)
from ctx_memory.stores.postgres_events import PostgresEventPublisher, PostgresEventSubscription

try:
    import psycopg
    from psycopg.pq import TransactionStatus
    from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
except ImportError as e:  # pragma: no cover - the extra is installed in every test run
    raise missing_extra("postgres", __name__, e) from e

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Iterator

    from ctx_memory.config import Settings

__all__ = ["KEEP_SECONDS", "SCHEMA_VERSION", "PostgresStore"]

KEEP_SECONDS = 60.0
"""Longest a connection of the store's own pool is kept between calls before it goes back
through the pool (which applies its ``max_lifetime`` and reconnects)."""

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Operations that run in one transaction (several statements), and those that may be sent
# again after a dropped connection (see the module docstring).
_TRANSACTION = (
    DeleteSession,
    MergeShared,
    SetShared,
    UpdateHeader,
    ClearSession,
    ReplaceDocument,
    DeleteMessages,
    ReplaceMessage,
    TruncateMessages,
)
_INT4 = 2**31 - 1  # the SQL functions' max_sessions: a larger limit is none in practice
_NOT_REPEATED = (MergeShared, AppendFetched, TruncateMessages)
_TOKENED = (AppendMessages, ReplaceDocument, SetShared, UpdateHeader)  # answered as the first
_FAST_PATH_MISSED = (psycopg.errors.UniqueViolation, psycopg.errors.LockNotAvailable)  # rolled back
_CREATED_MEANWHILE = (
    psycopg.errors.DuplicateTable,
    psycopg.errors.DuplicateObject,
    psycopg.errors.DuplicateSchema,
    psycopg.errors.UniqueViolation,
)


def _write_token() -> int:
    """A random token for one append or import, the same on each of its attempts.

    A signed 64-bit integer: the ``bigint`` kept in ``messages.wt`` and ``sessions.ct``.
    """
    return int.from_bytes(os.urandom(8), "little", signed=True)


def _repeatable(op: StoreOp) -> bool:
    """Whether sending ``op`` twice is harmless (an appending save of segments is not)."""
    return op.replace if isinstance(op, SaveRecallSegments) else not isinstance(op, _NOT_REPEATED)


class _Connections:
    """The event publisher's connection source: the store's, as its own calls take them."""

    __slots__ = ("_store",)

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    def connection(self) -> contextlib.AbstractContextManager[psycopg.Connection[Any]]:
        return self._store._borrow()


_IDLE = TransactionStatus.IDLE
_STORES: weakref.WeakSet[PostgresStore] = weakref.WeakSet()


def _forget_parent_connections() -> None:
    """In a forked child: drop the parent's connections and pools (unused, and not closed).

    Their sockets are the parent's sessions; the child opens its own on its next call. A
    pool passed in (``pool=``) is the caller's to replace in the child.
    """
    for store in list(_STORES):
        store._kept, store._waiting, store._lock = [], 0, threading.Lock()
        store._apools.clear()
        store._guards.clear()
        if store._owns_pool:
            store._pool = None


if hasattr(os, "register_at_fork"):  # pragma: no branch - POSIX
    os.register_at_fork(after_in_child=_forget_parent_connections)


_NO_SESSIONS = InMemoryStore()  # answers as a store without the session (never written)


def _names_no_session(op: StoreOp) -> bool:
    """Whether ``op`` reads or edits a session id with a NUL (no PostgreSQL text holds one).

    Answered "absent", as other stores do for an unknown id; a write that may create the
    session goes to the server, which refuses it.
    """
    session_id = getattr(op, "session_id", None)
    return isinstance(session_id, str) and "\x00" in session_id and not may_create(op)


class PostgresStore(PostgresOperations):
    """Sessions in PostgreSQL, shared by every process using the database.

    One schema holds the tables (``POSTGRES_SCHEMA``; several apps or tenants use several
    schemas of one database). Appending messages is one call of a server-side function: one
    round trip, O(1) in the session's length (indexed inserts, message ids deduplicated by a
    unique index); reading the last ``k`` messages is one indexed range scan of ``k`` rows.
    The schema is created on first use, migrated if an older version of ctx_memory made it,
    and refused if a newer one did.

    Args:
        url: ``postgresql://[user[:password]@]host[:port]/dbname[?param=value...]``
            (``postgres://`` too; libpq parameters such as ``sslmode`` in the query). The
            password is never shown: :attr:`url`, ``repr`` and every error mask it.
            Ignored when ``pool`` is given.
        pool: An existing ``psycopg_pool.ConnectionPool`` for sync calls (the store does
            not close it).
        async_pool: An existing ``psycopg_pool.AsyncConnectionPool`` for async calls; by
            default one is opened per event loop from ``url`` (or ``pool``'s conninfo).
        schema: The schema of the tables (created if missing).
        ttl_seconds: Sliding time to live; ``None`` for no expiry.
        max_sessions: Most live sessions in the schema; ``None`` for no limit.
        pool_size: Most connections of each pool this store opens.
        connect_timeout: Seconds to wait for a connection before
            :class:`~ctx_memory.errors.StoreUnavailableError`.
        publish_events: Also publish every event with ``NOTIFY`` on ``<schema>_events``.
        gc_interval_seconds: Run :meth:`gc` in a background thread at this interval;
            ``None`` for none. A failing collection is logged and retried; the thread
            stops on :meth:`close`.

    Raises:
        ConfigurationError: A malformed URL (``POSTGRES_URL``) or schema name
            (``POSTGRES_SCHEMA``).

    Example (needs a PostgreSQL server; ``tests/integration/test_postgres_store.py`` runs it):
        .. code-block:: python

            from ctx_memory import ContextManager
            from ctx_memory.stores.postgres import PostgresStore

            with PostgresStore("postgresql://localhost:5432/postgres", ttl_seconds=3600) as store:
                manager = ContextManager(store=store)
                manager.add_user_message("s1", "hi")
                assert store.count_messages("s1") == 1
                store.delete("s1")
    """

    name = "postgres"
    keeps_recall_segments = True
    imports_if_absent = True

    def __init__(
        self,
        url: str | None = None,
        *,
        pool: ConnectionPool[Any] | None = None,
        async_pool: AsyncConnectionPool[Any] | None = None,
        schema: str = "ctx_memory",
        ttl_seconds: float | None = None,
        max_sessions: int | None = None,
        pool_size: int = 10,
        connect_timeout: float = 5.0,
        publish_events: bool = False,
        gc_interval_seconds: float | None = None,
    ) -> None:
        self.ttl_seconds = check_limits(ttl_seconds, max_sessions)
        self.max_sessions = max_sessions if max_sessions is None else min(max_sessions, _INT4)
        self.schema = check_schema_name(schema)
        gc_interval_seconds = check_interval(gc_interval_seconds)
        if pool is None and async_pool is None and url is None:
            url = "postgresql://localhost:5432/postgres"
        if url is not None and pool is None:
            url = validate_postgres_url(url)
        conninfo = url if url is not None else str((pool or async_pool).conninfo)  # type: ignore[union-attr]
        self._conninfo = hide_in_logs("psycopg.pool", conninfo, tag=f"ctx_memory-{self.schema}")
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._pool: ConnectionPool[Any] | None = pool
        self._owns_pool = pool is None
        self._kept: list[Lease] = []  # idle connections of our own pool, the latest last
        self._waiting = 0  # calls waiting for a connection from the pool
        _STORES.add(self)
        self._given_apool = async_pool
        self._apools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, AsyncConnectionPool[Any]
        ] = weakref.WeakKeyDictionary()
        # Per loop, the task that closes that loop's pool when the loop's tasks are
        # cancelled at its end (see close_at_loop_end).
        self._guards: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Task[None]] = (
            weakref.WeakKeyDictionary()
        )
        self._lock = threading.Lock()
        self._schema_ready = False
        self._closed = False
        self._sql = SchemaSql(self.schema)
        self._prepare_statements()
        self.channel = events_channel(self.schema)
        self.publish_events = publish_events
        self._publish_with(
            PostgresEventPublisher(
                lambda: _Connections(self), self.channel, describe=lambda: self.url
            )
            if publish_events
            else None
        )
        self._collector = (
            GarbageCollector(self.gc, gc_interval_seconds, name=repr(self))
            if gc_interval_seconds is not None
            else None
        )

    @classmethod
    def from_settings(cls, settings: Settings) -> PostgresStore:
        """A store configured from :class:`~ctx_memory.config.Settings`."""
        return cls(
            settings.postgres_url,
            schema=settings.postgres_schema,
            ttl_seconds=settings.ttl_seconds,
            max_sessions=settings.max_sessions,
            pool_size=settings.postgres_pool_size,
            connect_timeout=settings.postgres_connect_timeout,
            publish_events=settings.postgres_publish_events,
            gc_interval_seconds=gc_interval(settings),
        )

    @property
    def url(self) -> str:
        """The server's URL with any password replaced by ``***``."""
        return redact_url(self._conninfo)

    def __repr__(self) -> str:
        return (
            f"PostgresStore(url={self.url!r}, schema={self.schema!r}, "
            f"ttl_seconds={self.ttl_seconds}, max_sessions={self.max_sessions})"
        )

    # ------------------------------------------------------------ pools

    @property
    def pool(self) -> ConnectionPool[Any]:
        """The sync connection pool (opened from the URL on first use)."""
        if self._pool is None or self._closed:  # (a pool the caller gave stays set)
            with self._lock:
                if self._closed:
                    raise StoreError(f"PostgreSQL store {self.url} is closed")
                if self._pool is None:
                    pool: ConnectionPool[Any] = ConnectionPool(
                        self._conninfo, open=False, **self._pool_options()
                    )
                    pool.open(wait=False)
                    self._pool = pool
        return self._pool

    async def _loop_pool(self) -> AsyncConnectionPool[Any]:
        """The asyncio pool of the running event loop (opened on its first use)."""
        if self._closed:  # (a pool the caller gave stays set)
            raise StoreError(f"PostgreSQL store {self.url} is closed")
        if self._given_apool is not None:
            return self._given_apool
        loop = asyncio.get_running_loop()
        pool = self._apools.get(loop)
        if pool is None:
            pool = await open_loop_pool(self._conninfo, self._pool_options())
            self._apools[loop] = pool
            self._guard(loop, pool)
        return pool

    def _guard(
        self, loop: asyncio.AbstractEventLoop, pool: AsyncConnectionPool[Any] | None
    ) -> None:
        """Close ``pool`` when ``loop`` ends (``None``: stop guarding the loop's pool)."""
        cancel_guard(loop, self._guards.pop(loop, None))
        if pool is not None:
            guard = loop.create_task(
                close_at_loop_end(pool), name=f"ctx_memory-{self.schema}-pool-guard"
            )
            guard.add_done_callback(lambda _: self._forget_loop(loop, guard, pool))
            self._guards[loop] = guard

    def _forget_loop(
        self,
        loop: asyncio.AbstractEventLoop,
        guard: asyncio.Task[None],
        pool: AsyncConnectionPool[Any],
    ) -> None:
        """Drop the entries of a loop whose guard finished.

        Its pool and guard refer to the loop, so the weak keys alone would keep every loop
        the store was ever used from.
        """
        with self._lock:
            if self._guards.get(loop) is guard:
                del self._guards[loop]
            if self._apools.get(loop) is pool:
                del self._apools[loop]

    def _pool_options(self) -> dict[str, Any]:
        return {
            "min_size": 1,
            "max_size": max(1, self._pool_size),
            "timeout": self._connect_timeout,
            "name": f"ctx_memory-{self.schema}",
            "kwargs": {
                "autocommit": True,
                "connect_timeout": max(1, round(self._connect_timeout)),
                "application_name": "ctx_memory",
                # Plan each prepared statement once: the append's CTEs cost more to plan
                # than to run, and the plan does not depend on the values.
                "options": "-c plan_cache_mode=force_generic_plan",
            },
        }

    def _unavailable(self, error: BaseException, cause: str | None = None) -> StoreError:
        text = scrub_error(error, self._conninfo, f" (connecting: {cause})" if cause else "")
        where = f"PostgreSQL at {self.url}"
        if isinstance(error, (psycopg.OperationalError, PoolTimeout, OSError)):
            return StoreUnavailableError(f"{where} is unavailable: {text.strip()}")
        return StoreError(f"{where} failed: {type(error).__name__}: {text.strip()}")

    # ------------------------------------------------------------ drivers

    # Sync connections: kept between calls for a pool the store made (module docstring),
    # else getconn/putconn (which rolls back or drops a connection not left idle). A call
    # holds its connection in a list, ``held``: see _postgres_wire.unkeep for why.

    def _take(self, held: list[Lease]) -> None:
        """Put a connection for one call in ``held`` (empty): the last kept, else the pool's.

        Whatever is raised, what it took is in ``held`` or was given back.
        """
        if self._pop_kept(held):
            return
        # From the pool, which may make this call wait for a connection: while it waits,
        # a call ending gives its connection to the pool rather than keeping it (_give).
        try:
            with self._lock:  # (a Ctrl-C lands after the count went up, never before)
                self._waiting += 1
            if self._pop_kept(held):  # (one kept just before the count went up)
                return
            pool = self.pool
            conn = pool.getconn()
            try:
                held.append(Lease(pool, conn, time.monotonic() + KEEP_SECONDS))
            except BaseException:  # (a Ctrl-C after getconn returned)
                if not held:
                    pool.putconn(conn)
                raise
        finally:
            with self._lock:
                self._waiting -= 1

    def _pop_kept(self, held: list[Lease]) -> bool:
        while unkeep(self._kept, self._lock, held):
            lease = held[-1]
            if lease.pool is self._pool and lease.until > time.monotonic():
                return True
            to_pool(held)  # due for the pool, or of a replaced pool
        return False

    def _give(self, held: list[Lease]) -> None:
        """Keep ``held``'s connection for the next call, or give it back to its pool."""
        if not held:
            return
        lease = held[-1]
        if (
            self._owns_pool
            and not self._closed
            and lease.pool is self._pool
            and lease.conn.pgconn.transaction_status == _IDLE
        ):
            with self._lock:
                del held[-1]
                self._kept.append(lease)  # (no call in between, as in unkeep)
            # (_waiting read after the append: see _take) a call waits on the pool: a spare
            # goes to it. Else the least recently used one, left idle since calls ran more
            # at once, goes back to the pool, which closes it when it stays idle.
            if unkeep(self._kept, self._lock, held, due=not self._waiting):
                to_pool(held)
        else:
            to_pool(held)

    def _return_kept(self, pool: ConnectionPool[Any] | None = None) -> None:
        """Give the kept connections (of ``pool``, else all) back to their pool."""
        held: list[Lease] = []
        try:
            while unkeep(self._kept, self._lock, held, pool):
                to_pool(held)
        finally:
            if held:  # (a Ctrl-C before to_pool took it)
                to_pool(held)

    @contextlib.contextmanager
    def _borrow(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for a ``with`` block, taken as the store's calls take theirs."""
        held: list[Lease] = []
        try:
            self._take(held)
            yield held[0].conn
        finally:
            try:
                self._give(held)
            finally:
                if held:  # (a Ctrl-C at the start of _give)
                    self._give(held)

    def _drive(self, op: StoreOp) -> Any:
        token = _write_token() if isinstance(op, _TOKENED) else None
        for attempt in range(3):
            found = Found()
            held: list[Lease] = []
            lease = None
            try:
                try:
                    self._take(held)
                    lease = held[0]
                    result = self._attempt(lease.conn, op, found, again=attempt > 0, token=token)
                finally:
                    try:
                        self._give(held)
                    finally:
                        if held:  # (a Ctrl-C at the start of _give)
                            self._give(held)
            except _FAST_PATH_MISSED as e:  # before OperationalError: LockNotAvailable is one
                if attempt < 2 and isinstance(op, AppendMessages):
                    continue  # the function skips a held id, judges expiry after the lock
                raise self._unavailable(e) from e
            except (psycopg.OperationalError, OSError) as e:  # PoolTimeout too
                self._discard(lease.pool if lease is not None else self._pool)
                cause = connect_error(e, self._conninfo, self._connect_timeout)
                if attempt > 0 or not _repeatable(op) or cause:
                    raise self._unavailable(e, cause) from e
                continue
            except psycopg.Error as e:
                raise self._unavailable(e) from e
            self._report(found)
            return result
        raise AssertionError  # pragma: no cover - the loop returns or raises

    async def _adrive(self, op: StoreOp) -> Any:
        token = _write_token() if isinstance(op, _TOKENED) else None
        for attempt in range(3):
            pool = await self._loop_pool()
            found = Found()
            conn = None
            try:
                try:  # (conn set as getconn returns: an exception after finds it)
                    conn = await pool.getconn()
                    result = await self._aattempt(conn, op, found, again=attempt > 0, token=token)
                finally:
                    if conn is not None:
                        await pool.putconn(conn)
            except _FAST_PATH_MISSED as e:  # before OperationalError: LockNotAvailable is one
                if attempt < 2 and isinstance(op, AppendMessages):
                    continue  # the function skips a held id, judges expiry after the lock
                raise self._unavailable(e) from e
            except (psycopg.OperationalError, OSError) as e:  # PoolTimeout too
                await self._adiscard(pool)
                cause = await aconnect_error(e, self._conninfo, self._connect_timeout)
                if attempt > 0 or not _repeatable(op) or cause:
                    raise self._unavailable(e, cause) from e
                continue
            except psycopg.Error as e:
                raise self._unavailable(e) from e
            self._report(found)
            return result
        raise AssertionError  # pragma: no cover - the loop returns or raises

    # A connection failed: the server restarted, went away, or the pool waited in vain. The
    # pool's own reconnection backs off (up to minutes) while the server is down, so a pool
    # this store opened is replaced: the next call connects at once. A pool the caller gave
    # is only checked (its broken connections dropped).

    def _discard(self, pool: ConnectionPool[Any] | None) -> None:
        if pool is None:  # the pool could not even be opened
            return
        with self._lock:
            replace = self._owns_pool and self._pool is pool
            if replace:
                self._pool = None
        if replace:
            self._return_kept(pool)  # to a pool about to close: they are closed
            pool.close(timeout=0.2)
        elif not pool.closed:  # (another thread may have replaced and closed it)
            pool.check()

    async def _adiscard(self, pool: AsyncConnectionPool[Any]) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            replace = self._given_apool is None and self._apools.get(loop) is pool
            if replace:
                del self._apools[loop]
        if replace:
            self._guard(loop, None)
            await pool.close(timeout=0.2)
        elif not pool.closed:  # (another call may have replaced and closed it)
            await pool.check()

    # A statement failing on the server (an id the session holds, a wait for a row) is
    # rolled back whole (autocommit, or the transaction below): the connection serves on.

    def _attempt(
        self,
        conn: psycopg.Connection[Any],
        op: StoreOp,
        found: Found,
        *,
        again: bool,
        token: int | None = None,
    ) -> Any:
        if not self._schema_ready:
            self._ready(conn)
        steps = self._plan(op, found, again=again, token=token)
        # A pool the caller gave may hold connections outside autocommit: a transaction then.
        if isinstance(op, _TRANSACTION) or not conn.autocommit:
            with transaction(conn):
                return self._run(conn, steps)
        return self._run(conn, steps)

    async def _aattempt(
        self,
        conn: psycopg.AsyncConnection[Any],
        op: StoreOp,
        found: Found,
        *,
        again: bool,
        token: int | None = None,
    ) -> Any:
        if not self._schema_ready:
            await self._aready(conn)
        steps = self._plan(op, found, again=again, token=token)
        # A pool the caller gave may hold connections outside autocommit: a transaction then.
        if isinstance(op, _TRANSACTION) or not conn.autocommit:
            async with atransaction(conn):
                return await self._arun(conn, steps)
        return await self._arun(conn, steps)

    def _ready(self, conn: psycopg.Connection[Any]) -> None:
        # A process that waited for another's schema creation may still hold the catalog
        # as it was (a negative cache entry for "meta"): its CREATE then meets the tables
        # and it tries again in a new transaction, which sees them.
        for attempt in range(3):
            try:
                with transaction(conn):
                    self._run(conn, self._ensure_schema())
            except _CREATED_MEANWHILE:
                if attempt == 2:
                    raise
                continue
            self._schema_ready = True
            return

    async def _aready(self, conn: psycopg.AsyncConnection[Any]) -> None:
        # A process that waited for another's schema creation may still hold the catalog
        # as it was (a negative cache entry for "meta"): its CREATE then meets the tables
        # and it tries again in a new transaction, which sees them.
        for attempt in range(3):
            try:
                async with atransaction(conn):
                    await self._arun(conn, self._ensure_schema())
            except _CREATED_MEANWHILE:
                if attempt == 2:
                    raise
                continue
            self._schema_ready = True
            return

    @staticmethod
    def _run(conn: psycopg.Connection[Any], steps: Generator[Statement, Any, T]) -> T:
        cur = cursor(conn)
        try:
            q = next(steps)
            while True:
                if q.prepared is not None and (session := prepared_session(conn)) is not None:
                    q = steps.send(send(conn, session, q.prepared, q.params))
                    continue
                cur.execute(q.sql, q.params)
                if q.fetch == ONE:
                    reply: Any = cur.fetchone()
                elif q.fetch == ALL:
                    reply = cur.fetchall()
                else:
                    reply = cur.rowcount
                if q.large and sizeable(reply):
                    cur = release_cursor(conn, cur)
                q = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    @staticmethod
    async def _arun(conn: psycopg.AsyncConnection[Any], steps: Generator[Statement, Any, T]) -> T:
        cur = acursor(conn)
        try:
            q = next(steps)
            while True:
                if q.prepared is not None and (session := prepared_session(conn)) is not None:
                    q = steps.send(await asend(conn, session, q.prepared, q.params))
                    continue
                await cur.execute(q.sql, q.params)
                if q.fetch == ONE:
                    reply: Any = await cur.fetchone()
                elif q.fetch == ALL:
                    reply = await cur.fetchall()
                else:
                    reply = cur.rowcount
                if q.large and sizeable(reply):
                    cur = await arelease_cursor(conn, cur)
                q = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _report(self, found: Found) -> None:
        for session_id in found.expired:
            self._notify("session_expired", session_id)
        for session_id in found.evicted:
            self._notify("session_evicted", session_id)

    # ------------------------------------------------------------ operations

    @override
    def handle(self, op: StoreOp) -> object:
        if _names_no_session(op):
            return _NO_SESSIONS.execute(op)
        return self._drive(op)

    @override
    async def ahandle(self, op: StoreOp) -> object:
        if _names_no_session(op):
            return _NO_SESSIONS.execute(op)
        return await self._adrive(op)

    # ------------------------------------------------------------ events across processes

    def subscribe_events(
        self, callback: Callable[[dict[str, Any]], None]
    ) -> PostgresEventSubscription:
        """Call ``callback`` in a background thread for every event published on the channel.

        Events are published (``NOTIFY``) by stores created with ``publish_events=True`` on
        the same schema, in any process, as JSON objects ``{"type", "session_id", "data",
        "timestamp"}``: :meth:`ctx_memory.events.Event.to_dict`.

        Returns:
            The subscription (listening once this returns); :meth:`close
            <PostgresEventSubscription.close>` stops it.

        Raises:
            StoreUnavailableError: The server cannot be reached (URL shown masked).
        """
        try:
            return self._subscribed(
                PostgresEventSubscription(self._conninfo, self.channel, callback)
            )
        except (psycopg.Error, OSError) as e:
            raise self._unavailable(e) from e

    # ------------------------------------------------------------ closing

    @override
    def close(self) -> None:
        self._stop_subscriptions()
        if self.publisher is not None:
            self.publisher.close()
        collector, self._collector = self._collector, None
        if collector is not None:
            collector.stop()
        with self._lock:
            self._closed = True
            pool, self._pool = (self._pool, None) if self._owns_pool else (None, self._pool)
            apools = list(self._apools.items())
            self._apools.clear()
            for loop in list(self._guards):
                self._guard(loop, None)
        self._return_kept()
        if pool is not None:
            pool.close()
        self._return_kept()  # (one a call kept while this closed: closed by its pool now)
        for loop, apool in apools:
            close_async_pool(loop, apool)

    @override
    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            apool = self._apools.pop(loop, None)
            self._guard(loop, None)
        if apool is not None:
            await apool.close()
        self.close()  # the sync pool, other loops' pools, the garbage collector

    @property
    def gc_running(self) -> bool:
        """Whether the background garbage collector is running."""
        return self._collector is not None and self._collector.running
