"""The PostgreSQL store: sessions in one schema of a PostgreSQL database, sync and asyncio.

psycopg 3 with connection pools (``psycopg_pool``): a sync pool for sync calls, an asyncio
pool per event loop for the async twins (native async I/O, no worker threads). The schema,
its tables and its functions are in :mod:`ctx_memory.stores._postgres_sql`.

Every operation is written once, as a generator that yields statements and receives their
rows; :meth:`PostgresStore._drive` runs it on a sync connection and
:meth:`PostgresStore._adrive` on an async one, so the two paths differ by ``await`` only.
An append (messages or fetched items), a read, a delete and garbage collection are one
statement each, so one round trip, in autocommit; the other writes (shared state, metadata,
history edits, clear, import) run in one transaction that first locks the session row.

Retries: a statement that meets a dropped connection (the server restarted, a proxy closed
an idle connection) is sent again once, on a fresh connection, when sending it twice is
harmless: reads, appends of messages (skipped by message id), and writes that set a value
(create, delete, set shared, metadata, clear, import, history edits). A deep merge of
``shared``, an append of fetched items and a truncation are not repeated: they raise
:class:`~ctx_memory.errors.StoreUnavailableError` and the caller decides.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import weakref
from typing import TYPE_CHECKING, Any, NamedTuple, TypeVar, assert_never

from typing_extensions import override

from ctx_memory._extras import missing_extra
from ctx_memory.config import redact_url, url_secrets, validate_postgres_url
from ctx_memory.errors import StoreError, StoreUnavailableError
from ctx_memory.schema import dumps
from ctx_memory.stores._gc import GarbageCollector, check_interval, gc_interval
from ctx_memory.stores._postgres_sql import (
    SCHEMA_VERSION,
    SchemaSql,
    check_schema_name,
    events_channel,
    prefix_end,
)
from ctx_memory.stores.base import (
    BaseStore,
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
    ListPage,
    ListSessions,
    MergeShared,
    ReplaceDocument,
    ReplaceMessage,
    SessionExists,
    SetShared,
    StoreOp,
    TruncateMessages,
    UpdateHeader,
)
from ctx_memory.stores.postgres_events import PostgresEventPublisher, PostgresEventSubscription

try:
    import psycopg
    from psycopg_pool import AsyncConnectionPool, ConnectionPool, PoolTimeout
except ImportError as e:  # pragma: no cover - the extra is installed in every test run
    raise missing_extra("postgres", __name__, e) from e

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

    from ctx_memory.config import Settings
    from ctx_memory.events import Event

__all__ = ["SCHEMA_VERSION", "PostgresStore"]

logger = logging.getLogger(__name__)

T = TypeVar("T")

_NONE, _ONE, _ALL = 0, 1, 2


class _Q(NamedTuple):
    """One statement: its text, its parameters, and what to fetch (none, one row, all)."""

    sql: bytes
    params: Any = ()
    fetch: int = _ONE


class _Found:
    """Sessions one call found expired or evicted (reported after its commit)."""

    __slots__ = ("evicted", "expired")

    def __init__(self) -> None:
        self.expired: list[str] = []
        self.evicted: list[str] = []

    def add(self, expired: Sequence[str] | None, evicted: Sequence[str] | None = None) -> None:
        self.expired += expired or ()
        self.evicted += evicted or ()


# Operations that run in one transaction (several statements), and those that may be sent
# again after a dropped connection (see the module docstring).
_TRANSACTION = (
    MergeShared,
    SetShared,
    UpdateHeader,
    ClearSession,
    ReplaceDocument,
    DeleteMessages,
    ReplaceMessage,
    TruncateMessages,
)
_NOT_REPEATED = (MergeShared, AppendFetched, TruncateMessages)
_CREATED_MEANWHILE = (
    psycopg.errors.DuplicateTable,
    psycopg.errors.DuplicateObject,
    psycopg.errors.DuplicateSchema,
    psycopg.errors.UniqueViolation,
)


def _init_args(init: Header) -> tuple[str, str, str, str | None]:
    """``p_sp, p_md, p_sh, p_ts`` of the SQL functions: the init header as JSON text."""
    meta = init["metadata"]
    ts = dumps(meta["timestamp"]) if "timestamp" in meta else None
    return dumps(init["system_prompt"]), dumps(meta), dumps(init["shared"]), ts


def _header(row: Sequence[Any]) -> Header:
    """The header from ``sp, md, sh, mc, tc, ts`` (counters and timestamp are columns)."""
    sp, md, sh, mc, tc, ts = row[:6]
    metadata: dict[str, Any] = json.loads(md)
    metadata["message_count"] = mc
    metadata["token_count"] = tc
    if ts is not None:
        metadata["timestamp"] = json.loads(ts)
    return {"system_prompt": json.loads(sp), "metadata": metadata, "shared": json.loads(sh)}


def _fetched(pairs_json: str | None) -> dict[str, list[dict[str, Any]]]:
    """``{source_type: [item, ...]}`` from a JSON array of ``[source_type, item]`` pairs."""
    out: dict[str, list[dict[str, Any]]] = {}
    for source_type, body in json.loads(pairs_json or "[]"):
        out.setdefault(source_type, []).append(body)
    return out


def _scrub(value: object, secrets: list[str]) -> object:
    """An exception argument with every secret replaced by ``***``."""
    if not isinstance(value, str):
        return value if not any(secret in str(value) for secret in secrets) else "***"
    for secret in secrets:
        value = value.replace(secret, "***")
    return value


class PostgresStore(BaseStore):
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
        self.max_sessions = max_sessions
        self.schema = check_schema_name(schema)
        gc_interval_seconds = check_interval(gc_interval_seconds)
        if pool is None and async_pool is None and url is None:
            url = "postgresql://localhost:5432/postgres"
        if url is not None and pool is None:
            url = validate_postgres_url(url)
        conninfo = url if url is not None else str((pool or async_pool).conninfo)  # type: ignore[union-attr]
        self._conninfo = conninfo
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._pool: ConnectionPool[Any] | None = pool
        self._owns_pool = pool is None
        self._given_apool = async_pool
        self._apools: weakref.WeakKeyDictionary[
            asyncio.AbstractEventLoop, AsyncConnectionPool[Any]
        ] = weakref.WeakKeyDictionary()
        self._lock = threading.Lock()
        self._schema_ready = False
        self._closed = False
        self._sql = SchemaSql(self.schema)
        self._prepare_statements()
        self.channel = events_channel(self.schema)
        self.publish_events = publish_events
        self.publisher = (
            PostgresEventPublisher(lambda: self.pool, self.channel, describe=lambda: self.url)
            if publish_events
            else None
        )
        if self.publisher is not None:  # expiries and evictions: once per store
            self.add_lifecycle_hook(self.publisher.lifecycle, key=self.publisher)
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

    def _prepare_statements(self) -> None:
        q = self._sql.q
        touch = self.max_sessions is not None
        self._reads = {
            kind: self._sql.read(kind, touch=touch)
            for kind in ("exists", "count", "header", "document", "messages", "fetched")
        }
        self._reads["fetched_type"] = self._sql.read("fetched_type", touch=touch)
        init = "%s, %s, %s, %s, %s::float8, %s::integer"
        self._append_sql = self._sql.append()
        self._append_fetched_sql = q(
            "SELECT * FROM {s}.append_fetched(%s, %s::text[], %s::text[], %s::text[], %s, %s, "  # noqa: S608 - constant text
            + init
            + ")"
        )
        self._upsert_sql = q("SELECT * FROM {s}.upsert(%s, " + init + ")")  # noqa: S608 - constant
        self._create_sql = q(
            "SELECT u.o_created, u.o_expired, u.o_evicted, {s}.touch(u.o_sk, %s, %s::float8) "
            "FROM {s}.upsert(%s, " + init + ") AS u"
        )
        self._live_sql = q("SELECT * FROM {s}.live(%s)")
        self._collect_sql = q("SELECT {s}.collect()")
        # UPDATE ... SET <columns>, then the touch: timestamp, TTL, LRU clock.
        self._touch_set = (
            "ts = %(now)s, expires_at = {s}.expiry(%(ttl)s::float8), "
            "last_access = nextval('{s}.access_clock')"
        )

    # ------------------------------------------------------------ pools

    @property
    def pool(self) -> ConnectionPool[Any]:
        """The sync connection pool (opened from the URL on first use)."""
        if self._pool is None:
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
        if self._given_apool is not None:
            return self._given_apool
        loop = asyncio.get_running_loop()
        pool = self._apools.get(loop)
        if pool is None:
            if self._closed:
                raise StoreError(f"PostgreSQL store {self.url} is closed")
            pool = AsyncConnectionPool(self._conninfo, open=False, **self._pool_options())
            await pool.open(wait=False)
            self._apools[loop] = pool
        return pool

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

    def _unavailable(self, error: BaseException) -> StoreError:
        secrets = url_secrets(self._conninfo)
        if secrets:  # the error becomes our error's __cause__: no password may stay in it
            error.args = tuple(_scrub(arg, secrets) for arg in error.args)
        text = str(_scrub(str(error), secrets)) if secrets else str(error)
        where = f"PostgreSQL at {self.url}"
        if isinstance(error, (psycopg.OperationalError, PoolTimeout, OSError)):
            return StoreUnavailableError(f"{where} is unavailable: {text.strip()}")
        return StoreError(f"{where} failed: {type(error).__name__}: {text.strip()}")

    # ------------------------------------------------------------ drivers

    def _drive(self, op: StoreOp) -> Any:
        for attempt in range(3):
            pool = self.pool
            found = _Found()
            try:
                with pool.connection() as conn:
                    result = self._attempt(conn, op, found)
            except (psycopg.OperationalError, OSError) as e:  # PoolTimeout too
                self._discard(pool)
                if attempt > 0 or isinstance(op, _NOT_REPEATED):
                    raise self._unavailable(e) from e
                continue
            except psycopg.errors.UniqueViolation as e:
                if attempt < 2 and isinstance(op, AppendMessages):
                    continue  # the same id, appended meanwhile: the next snapshot sees it
                raise self._unavailable(e) from e
            except psycopg.Error as e:
                raise self._unavailable(e) from e
            self._report(found)
            return result
        raise AssertionError  # pragma: no cover - the loop returns or raises

    async def _adrive(self, op: StoreOp) -> Any:
        for attempt in range(3):
            pool = await self._loop_pool()
            found = _Found()
            try:
                async with pool.connection() as conn:
                    result = await self._aattempt(conn, op, found)
            except (psycopg.OperationalError, OSError) as e:  # PoolTimeout too
                await self._adiscard(pool)
                if attempt > 0 or isinstance(op, _NOT_REPEATED):
                    raise self._unavailable(e) from e
                continue
            except psycopg.errors.UniqueViolation as e:
                if attempt < 2 and isinstance(op, AppendMessages):
                    continue  # the same id, appended meanwhile: the next snapshot sees it
                raise self._unavailable(e) from e
            except psycopg.Error as e:
                raise self._unavailable(e) from e
            self._report(found)
            return result
        raise AssertionError  # pragma: no cover - the loop returns or raises

    # A connection failed: the server restarted, went away, or the pool waited in vain. The
    # pool's own reconnection backs off (up to minutes) while the server is down, so a pool
    # this store opened is replaced: the next call connects at once. A pool the caller gave
    # is only checked (its broken connections dropped).

    def _discard(self, pool: ConnectionPool[Any]) -> None:
        with self._lock:
            replace = self._owns_pool and self._pool is pool
            if replace:
                self._pool = None
        if replace:
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
            await pool.close(timeout=0.2)
        elif not pool.closed:  # (another call may have replaced and closed it)
            await pool.check()

    def _attempt(self, conn: psycopg.Connection[Any], op: StoreOp, found: _Found) -> Any:
        if not self._schema_ready:
            self._ready(conn)
        # A pool the caller gave may hold connections outside autocommit: a transaction then.
        if isinstance(op, _TRANSACTION) or not conn.autocommit:
            with conn.transaction():
                return self._run(conn, self._plan(op, found))
        return self._run(conn, self._plan(op, found))

    async def _aattempt(
        self, conn: psycopg.AsyncConnection[Any], op: StoreOp, found: _Found
    ) -> Any:
        if not self._schema_ready:
            await self._aready(conn)
        # A pool the caller gave may hold connections outside autocommit: a transaction then.
        if isinstance(op, _TRANSACTION) or not conn.autocommit:
            async with conn.transaction():
                return await self._arun(conn, self._plan(op, found))
        return await self._arun(conn, self._plan(op, found))

    def _ready(self, conn: psycopg.Connection[Any]) -> None:
        # A process that waited for another's schema creation may still hold the catalog
        # as it was (a negative cache entry for "meta"): its CREATE then meets the tables
        # and it tries again in a new transaction, which sees them.
        for attempt in range(3):
            try:
                with conn.transaction():
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
                async with conn.transaction():
                    await self._arun(conn, self._ensure_schema())
            except _CREATED_MEANWHILE:
                if attempt == 2:
                    raise
                continue
            self._schema_ready = True
            return

    @staticmethod
    def _run(conn: psycopg.Connection[Any], steps: Generator[_Q, Any, T]) -> T:
        try:
            q = next(steps)
            while True:
                cur = conn.execute(q.sql, q.params)
                if q.fetch == _ONE:
                    reply: Any = cur.fetchone()
                elif q.fetch == _ALL:
                    reply = cur.fetchall()
                else:
                    reply = cur.rowcount
                q = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    @staticmethod
    async def _arun(conn: psycopg.AsyncConnection[Any], steps: Generator[_Q, Any, T]) -> T:
        try:
            q = next(steps)
            while True:
                cur = await conn.execute(q.sql, q.params)
                if q.fetch == _ONE:
                    reply: Any = await cur.fetchone()
                elif q.fetch == _ALL:
                    reply = await cur.fetchall()
                else:
                    reply = cur.rowcount
                q = steps.send(reply)
        except StopIteration as stop:
            return stop.value  # type: ignore[no-any-return]

    def _report(self, found: _Found) -> None:
        for session_id in found.expired:
            self._notify("session_expired", session_id)
        for session_id in found.evicted:
            self._notify("session_evicted", session_id)

    # ------------------------------------------------------------ the schema

    def _ensure_schema(self) -> Generator[_Q, Any, None]:
        """Create the schema, or migrate an older one; refuse a newer one (one transaction)."""
        sql = self._sql
        meta = f"{sql.quoted}.meta"
        version_sql = sql.q("SELECT value FROM {s}.meta WHERE key = 'schema_version'")
        (table,) = yield _Q(b"SELECT to_regclass(%s)::text", (meta,))
        if table is not None:
            row = yield _Q(version_sql)
            if row is not None and int(row[0]) == SCHEMA_VERSION:
                return  # the common case takes no lock
        yield _Q(b"SELECT pg_advisory_xact_lock(%s)", (sql.lock_key,), _NONE)
        (table,) = yield _Q(b"SELECT to_regclass(%s)::text", (meta,))  # another process?
        if table is None:
            yield _Q(sql.create_tables(), None, _NONE)
            version = SCHEMA_VERSION
        else:
            row = yield _Q(version_sql)
            version = int(row[0]) if row is not None else 0
            if version > SCHEMA_VERSION:
                msg = (
                    f"PostgreSQL schema {self.schema!r} at {self.url} has version {version}, "
                    f"newer than this ctx_memory understands ({SCHEMA_VERSION}): upgrade "
                    "ctx_memory, or set POSTGRES_SCHEMA to another schema"
                )
                raise StoreUnavailableError(msg)
            if version < 1:
                msg = (
                    f"PostgreSQL schema {self.schema!r} at {self.url} has a 'meta' table "
                    "without a schema version: it was not made by ctx_memory; set "
                    "POSTGRES_SCHEMA to another schema"
                )
                raise StoreUnavailableError(msg)
            for step in range(version, SCHEMA_VERSION):
                for statement in sql.migration(step):
                    yield _Q(statement, None, _NONE)
        yield _Q(sql.create_functions(), None, _NONE)
        yield _Q(
            sql.q(
                "INSERT INTO {s}.meta (key, value) VALUES ('schema_version', %s) "
                "ON CONFLICT (key) DO UPDATE SET value = EXCLUDED.value"
            ),
            (str(SCHEMA_VERSION),),
            _NONE,
        )
        if version < SCHEMA_VERSION:
            logger.info(
                "ctx_memory: migrated PostgreSQL schema %r from version %d to %d",
                self.schema,
                version,
                SCHEMA_VERSION,
            )

    # ------------------------------------------------------------ operations

    @override
    def handle(self, op: StoreOp) -> object:
        return self._drive(op)

    @override
    async def ahandle(self, op: StoreOp) -> object:
        return await self._adrive(op)

    def _plan(self, op: StoreOp, found: _Found) -> Generator[_Q, Any, Any]:  # noqa: PLR0911, PLR0912 - one case per operation
        match op:
            case AppendMessages():
                return self._append_messages(op, found)
            case GetMessages():
                return self._get_messages(op)
            case GetHeader():
                return self._get_header(op)
            case GetDocument():
                return self._get_document(op)
            case GetFetched():
                return self._get_fetched(op)
            case CountMessages():
                return self._count_messages(op)
            case SessionExists():
                return self._exists(op)
            case ListSessions():
                return self._list_sessions(found)
            case ListPage():
                return self._list_page(op)
            case CreateSession():
                return self._create(op, found)
            case DeleteSession():
                return self._delete(op)
            case DeleteMessages():
                return self._delete_messages(op, found)
            case ReplaceMessage():
                return self._replace_message(op, found)
            case TruncateMessages():
                return self._truncate_messages(op, found)
            case AppendFetched():
                return self._append_fetched(op, found)
            case MergeShared():
                return self._write_shared(
                    op.session_id, op.init, op.now, lambda s: deep_merge(s, op.partial), found
                )
            case SetShared():
                value = json.loads(dumps(op.value))
                return self._write_shared(
                    op.session_id, op.init, op.now, lambda s: s.__setitem__(op.key, value), found
                )
            case UpdateHeader():
                return self._update_header(op, found)
            case ClearSession():
                return self._clear(op, found)
            case ReplaceDocument():
                return self._replace_document(op, found)
            case CollectGarbage():
                return self._gc(found)
            case _:
                assert_never(op)

    # ---- reads (one statement each)

    def _read(self, kind: str, **params: Any) -> Generator[_Q, Any, Any]:
        row = yield _Q(self._reads[kind], params)
        return row

    def _exists(self, op: SessionExists) -> Generator[_Q, Any, bool]:
        return (yield from self._read("exists", id=op.session_id)) is not None

    def _count_messages(self, op: CountMessages) -> Generator[_Q, Any, int]:
        row = yield from self._read("count", id=op.session_id)
        return 0 if row is None else int(row[0])

    def _get_header(self, op: GetHeader) -> Generator[_Q, Any, Header | None]:
        row = yield from self._read("header", id=op.session_id)
        return None if row is None else _header(row)

    def _get_document(self, op: GetDocument) -> Generator[_Q, Any, dict[str, Any] | None]:
        row = yield from self._read("document", id=op.session_id)
        if row is None:
            return None
        return assemble_document(_header(row), json.loads(row[6]), _fetched(row[7]))

    def _get_messages(self, op: GetMessages) -> Generator[_Q, Any, list[dict[str, Any]]]:
        row = yield from self._read("messages", id=op.session_id, lo=op.start, hi=op.end)
        messages: list[dict[str, Any]] = json.loads(row[0])  # one decode of the whole range
        return messages

    def _get_fetched(self, op: GetFetched) -> Generator[_Q, Any, dict[str, list[dict[str, Any]]]]:
        if op.source_type is None:
            row = yield from self._read("fetched", id=op.session_id)
        else:
            row = yield from self._read("fetched_type", id=op.session_id, type=op.source_type)
        return {} if row is None else _fetched(row[0])

    def _list_sessions(self, found: _Found) -> Generator[_Q, Any, list[str]]:
        ids, expired = yield _Q(
            self._sql.q(
                "SELECT ARRAY(SELECT id FROM {s}.sessions AS s WHERE s.expires_at IS NULL OR "
                "s.expires_at > now() ORDER BY id), "
                "EXISTS (SELECT 1 FROM {s}.sessions WHERE expires_at <= now())"
            )
        )
        if expired:  # only then a write: delete them and report them
            yield from self._gc(found)
        return list(ids)

    def _list_page(self, op: ListPage) -> Generator[_Q, Any, list[str]]:
        low = op.prefix if op.cursor is None or op.cursor < op.prefix else op.cursor
        strict = op.cursor is not None and op.cursor >= op.prefix
        upper = prefix_end(op.prefix)
        rows = yield _Q(
            self._sql.q(
                "SELECT id FROM {s}.sessions AS s WHERE (s.expires_at IS NULL OR "
                "s.expires_at > now()) AND (id > %(low)s OR (NOT %(strict)s AND id = %(low)s)) "
                "AND (%(upper)s::text IS NULL OR id < %(upper)s::text) ORDER BY id LIMIT %(n)s"
            ),
            {"low": low, "strict": strict, "upper": upper, "n": op.limit},
            _ALL,
        )
        return [r[0] for r in rows]

    # ---- single-statement writes

    def _limits(self) -> tuple[float | None, int | None]:
        return self.ttl_seconds, self.max_sessions

    def _append_messages(
        self, op: AppendMessages, found: _Found
    ) -> Generator[_Q, Any, WriteResult]:
        ms = op.messages
        sp, md, sh, ts = _init_args(op.init)
        created, added, expired, evicted = yield _Q(
            self._append_sql,
            {
                "id": op.session_id,
                "ids": [m.id for m in ms],
                "tokens": [m.tokens for m in ms],
                "bodies": [m.json for m in ms],
                "now": dumps(op.now),
                "sp": sp,
                "md": md,
                "sh": sh,
                "ts": ts,
                "ttl": self.ttl_seconds,
                "max": self.max_sessions,
            },
        )
        found.add(expired, evicted)
        return WriteResult(created=created, added=added, evicted=tuple(evicted))

    def _append_fetched(self, op: AppendFetched, found: _Found) -> Generator[_Q, Any, WriteResult]:
        items = op.items
        created, added, expired, evicted = yield _Q(
            self._append_fetched_sql,
            (
                op.session_id,
                [i.source_type for i in items],
                [i.json for i in items],
                [i.fingerprint for i in items],
                op.dedupe,
                dumps(op.now),
                *_init_args(op.init),
                *self._limits(),
            ),
        )
        found.add(expired, evicted)
        return WriteResult(created=created, added=added, evicted=tuple(evicted))

    def _create(self, op: CreateSession, found: _Found) -> Generator[_Q, Any, WriteResult]:
        init = op.init
        created, expired, evicted, _ = yield _Q(
            self._create_sql,
            (
                dumps(init["metadata"]["timestamp"]),
                self.ttl_seconds,
                op.session_id,
                *_init_args(init),
                *self._limits(),
            ),
        )
        found.add(expired, evicted)
        return WriteResult(created=created, evicted=tuple(evicted))

    def _delete(self, op: DeleteSession) -> Generator[_Q, Any, bool]:
        (count,) = yield _Q(
            self._sql.q(
                "WITH d AS (DELETE FROM {s}.sessions WHERE id = %(id)s RETURNING sk), "
                "m AS (DELETE FROM {s}.messages WHERE sk IN (SELECT sk FROM d)), "
                "f AS (DELETE FROM {s}.fetched WHERE sk IN (SELECT sk FROM d)), "
                "p AS (DELETE FROM {s}.fingerprints WHERE sk IN (SELECT sk FROM d)) "
                "SELECT count(*) FROM d"
            ),
            {"id": op.session_id},
        )
        return bool(count)

    def _gc(self, found: _Found) -> Generator[_Q, Any, int]:
        (expired,) = yield _Q(self._collect_sql)
        found.add(expired)
        return len(expired)

    # ---- writes in one transaction (the session row locked first)

    def _upsert(
        self, session_id: str, init: Header, found: _Found
    ) -> Generator[_Q, Any, tuple[int, bool, tuple[str, ...]]]:
        """Lock the session, creating it from ``init``: ``(sk, created, evicted)``."""
        sk, created, _, expired, evicted = yield _Q(
            self._upsert_sql, (session_id, *_init_args(init), *self._limits())
        )
        found.add(expired, evicted)
        return sk, created, tuple(evicted)

    def _live(self, session_id: str, found: _Found) -> Generator[_Q, Any, tuple[int, int] | None]:
        """Lock a live session: ``(sk, length)``, or ``None`` if absent (expired: deleted)."""
        sk, n, expired = yield _Q(self._live_sql, (session_id,))
        found.add(expired)
        return None if sk is None else (sk, n)

    def _update(self, columns: str, **params: Any) -> _Q:
        """``UPDATE sessions SET <columns>`` and the touch, for ``sk``."""
        params.setdefault("ttl", self.ttl_seconds)
        return _Q(
            # ``columns`` is constant text of this module; values are parameters
            self._sql.q(f"UPDATE {{s}}.sessions SET {columns}{self._touch_set} WHERE sk = %(sk)s"),  # noqa: S608
            params,
            _NONE,
        )

    def _write_shared(
        self,
        session_id: str,
        init: Header,
        now: str,
        change: Callable[[dict[str, Any]], object],
        found: _Found,
    ) -> Generator[_Q, Any, WriteResult]:
        """Replace ``shared`` by its changed copy; too large: raise (the transaction rolls back)."""
        sk, created, evicted = yield from self._upsert(session_id, init, found)
        if created:
            shared: dict[str, Any] = json.loads(dumps(init["shared"]))
        else:
            (sh,) = yield _Q(self._sql.q("SELECT sh FROM {s}.sessions WHERE sk = %s"), (sk,))
            shared = json.loads(sh)
        change(shared)
        text = dumps(shared)
        check_shared_size(text)  # raises before the update: nothing is written, nor created
        yield self._update("sh = %(sh)s, ", sk=sk, sh=text, now=dumps(now))
        return WriteResult(created=created, evicted=evicted)

    def _update_header(self, op: UpdateHeader, found: _Found) -> Generator[_Q, Any, WriteResult]:
        fields = {
            k: v
            for k, v in (op.metadata or {}).items()
            if k not in ("message_count", "token_count")
        }
        sk, created, evicted = yield from self._upsert(op.session_id, op.init, found)
        md: str | None = None
        if fields:
            (current,) = yield _Q(self._sql.q("SELECT md FROM {s}.sessions WHERE sk = %s"), (sk,))
            meta = json.loads(current)
            meta.update(json.loads(dumps(fields)))
            md = dumps(meta)
        sp = dumps(op.system_prompt) if op.set_system_prompt else None
        yield self._update(
            "md = coalesce(%(md)s, md), sp = coalesce(%(sp)s, sp), ",
            sk=sk,
            md=md,
            sp=sp,
            now=dumps(op.now),
        )
        return WriteResult(created=created, evicted=evicted)

    def _clear(self, op: ClearSession, found: _Found) -> Generator[_Q, Any, bool]:
        live = yield from self._live(op.session_id, found)
        if live is None:
            return False
        sk = live[0]
        yield _Q(self._sql.q("DELETE FROM {s}.messages WHERE sk = %s"), (sk,), _NONE)
        if not op.preserve_fetched:
            yield _Q(
                self._sql.q(
                    "WITH f AS (DELETE FROM {s}.fetched WHERE sk = %(sk)s) "
                    "DELETE FROM {s}.fingerprints WHERE sk = %(sk)s"
                ),
                {"sk": sk},
                _NONE,
            )
        fetched = "n_fetched" if op.preserve_fetched else "0"
        yield self._update(
            f"n_messages = 0, mc = 0, tc = 0, n_fetched = {fetched}, ", sk=sk, now=dumps(op.now)
        )
        return True

    def _counters(self, sk: int, messages: int, tokens: int, now: str) -> _Q:
        return self._update(
            "n_messages = n_messages + %(m)s, mc = mc + %(m)s, tc = tc + %(t)s, ",
            sk=sk,
            m=messages,
            t=tokens,
            now=dumps(now),
        )

    def _delete_messages(self, op: DeleteMessages, found: _Found) -> Generator[_Q, Any, int]:
        live = yield from self._live(op.session_id, found)
        if live is None:
            return 0
        sk = live[0]
        rows = yield _Q(
            self._sql.q(
                "DELETE FROM {s}.messages WHERE sk = %s AND id = ANY(%s::text[]) "
                "RETURNING pos, tokens"
            ),
            (sk, list(dict.fromkeys(op.message_ids))),
            _ALL,
        )
        if not rows:
            return 0
        yield _Q(self._sql.q("SELECT {s}.renumber(%s, %s)"), (sk, min(r[0] for r in rows)), _NONE)
        yield self._counters(sk, -len(rows), -sum(r[1] for r in rows), op.now)
        return len(rows)

    def _replace_message(self, op: ReplaceMessage, found: _Found) -> Generator[_Q, Any, bool]:
        live = yield from self._live(op.session_id, found)
        if live is None:
            return False
        sk = live[0]
        row = yield _Q(
            self._sql.q(
                "UPDATE {s}.messages AS m SET body = %(body)s, tokens = %(tokens)s "
                "FROM (SELECT pos, tokens FROM {s}.messages WHERE sk = %(sk)s AND id = %(id)s) "
                "AS old WHERE m.sk = %(sk)s AND m.pos = old.pos RETURNING old.tokens"
            ),
            {"sk": sk, "id": op.message_id, "body": op.message.json, "tokens": op.message.tokens},
        )
        if row is None:
            return False
        yield self._counters(sk, 0, op.message.tokens - int(row[0]), op.now)
        return True

    def _truncate_messages(
        self, op: TruncateMessages, found: _Found
    ) -> Generator[_Q, Any, int | None]:
        live = yield from self._live(op.session_id, found)
        if live is None:
            return None
        sk = live[0]
        row = yield _Q(
            self._sql.q("SELECT pos FROM {s}.messages WHERE sk = %s AND id = %s"),
            (sk, op.message_id),
        )
        if row is None:
            return None
        cut = row[0] if op.inclusive else row[0] + 1
        rows = yield _Q(
            self._sql.q("DELETE FROM {s}.messages WHERE sk = %s AND pos >= %s RETURNING tokens"),
            (sk, cut),
            _ALL,
        )
        if rows:
            yield self._counters(sk, -len(rows), -sum(r[0] for r in rows), op.now)
        return len(rows)

    def _replace_document(
        self, op: ReplaceDocument, found: _Found
    ) -> Generator[_Q, Any, WriteResult]:
        live = yield from self._live(op.session_id, found)
        created = live is None
        if live is not None:
            yield _Q(self._sql.q("SELECT {s}.drop_session(%s)"), (live[0],), _NONE)
        meta = op.header["metadata"]
        (sk,) = yield _Q(
            self._sql.q(
                "INSERT INTO {s}.sessions (id, sp, md, sh, mc, tc, ts, expires_at, last_access) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, {s}.expiry(%s::float8), "
                "nextval('{s}.access_clock')) RETURNING sk"
            ),
            (
                op.session_id,
                dumps(op.header["system_prompt"]),
                dumps(meta),
                dumps(op.header["shared"]),
                int(meta.get("message_count", 0)),
                int(meta.get("token_count", 0)),
                dumps(meta["timestamp"]) if "timestamp" in meta else None,
                self.ttl_seconds,
            ),
        )
        # A message id is stored once, as appends do: a repeated id is skipped.
        seen: set[str] = set()
        messages = []
        for m in op.messages:
            if m.id not in seen:
                seen.add(m.id)
                messages.append(m)
        yield _Q(
            self._sql.q(
                "INSERT INTO {s}.messages (sk, pos, id, tokens, body) "
                "SELECT %s, t.n - 1, t.id, t.tokens, t.body "
                "FROM unnest(%s::text[], %s::bigint[], %s::text[]) "
                "WITH ORDINALITY AS t(id, tokens, body, n)"
            ),
            (
                sk,
                [m.id for m in messages],
                [m.tokens for m in messages],
                [m.json for m in messages],
            ),
            _NONE,
        )
        items = op.items
        yield _Q(
            self._sql.q(
                "WITH f AS (INSERT INTO {s}.fetched (sk, seq, source_type, body) "
                "SELECT %(sk)s, t.n - 1, t.source_type, t.body "
                "FROM unnest(%(types)s::text[], %(bodies)s::text[]) "
                "WITH ORDINALITY AS t(source_type, body, n)) "
                "INSERT INTO {s}.fingerprints (sk, fp) "
                "SELECT DISTINCT %(sk)s, fp FROM unnest(%(fps)s::text[]) AS fp "
                "ON CONFLICT DO NOTHING"
            ),
            {
                "sk": sk,
                "types": [i.source_type for i in items],
                "bodies": [i.json for i in items],
                "fps": [i.fingerprint for i in items],
            },
            _NONE,
        )
        yield _Q(
            self._sql.q("UPDATE {s}.sessions SET n_messages = %s, n_fetched = %s WHERE sk = %s"),
            (len(messages), len(items), sk),
            _NONE,
        )
        evicted: tuple[str, ...] = ()
        if created and self.max_sessions is not None:
            expired, victims = yield _Q(
                self._sql.q("SELECT * FROM {s}.evict(%s, %s)"), (self.max_sessions, sk)
            )
            found.add(expired, victims)
            evicted = tuple(victims)
        return WriteResult(created=created, added=len(messages), evicted=evicted)

    # ------------------------------------------------------------ events across processes

    @override
    def event_listeners(self) -> tuple[Callable[[Event], None], ...]:
        return () if self.publisher is None else (self.publisher,)

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
            return PostgresEventSubscription(self._conninfo, self.channel, callback)
        except (psycopg.Error, OSError) as e:
            raise self._unavailable(e) from e

    # ------------------------------------------------------------ closing

    @override
    def close(self) -> None:
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
        if pool is not None:
            pool.close()
        for loop, apool in apools:
            _close_async_pool(loop, apool)

    @override
    async def aclose(self) -> None:
        loop = asyncio.get_running_loop()
        with self._lock:
            apool = self._apools.pop(loop, None)
        if apool is not None:
            await apool.close()
        self.close()  # the sync pool, other loops' pools, the garbage collector

    @property
    def gc_running(self) -> bool:
        """Whether the background garbage collector is running."""
        return self._collector is not None and self._collector.running


def _close_async_pool(loop: asyncio.AbstractEventLoop, pool: AsyncConnectionPool[Any]) -> None:
    """Close an asyncio pool from sync code, on its own event loop if that still runs."""
    if loop.is_closed():
        for conn in list(getattr(pool, "_pool", ())):  # its tasks died with the loop
            conn.pgconn.finish()
        return
    if loop.is_running():
        if _runs_here(loop):  # a sync call blocking this loop: close it when the loop can
            loop.create_task(pool.close())
        else:
            asyncio.run_coroutine_threadsafe(pool.close(), loop)
        return
    loop.run_until_complete(pool.close())


def _runs_here(loop: asyncio.AbstractEventLoop) -> bool:
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
