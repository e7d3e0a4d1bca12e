"""The PostgreSQL store's hot path on the wire: prepared statements sent through libpq.

:func:`send` / :func:`asend` run a :class:`~ctx_memory.stores._postgres_sql.Statement`'s
prepared form on a connection; :func:`cursor` / :func:`acursor` give the connection's kept
cursor for everything else.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import PoolTimeout

if TYPE_CHECKING:
    from psycopg_pool import ConnectionPool

    from ctx_memory.stores._postgres_statements import Prepared

__all__ = [
    "Lease",
    "aconnect_error",
    "connect_error",
    "acursor",
    "arelease_cursor",
    "asend",
    "cursor",
    "release_cursor",
    "send",
    "prepared_session",
    "sizeable",
]


# The hot statements (Statement.prepared: one message appended, a range of messages read)
# skip the cursor: they are prepared once per connection (libpq's PQsendPrepare, named after
# their text, as psycopg prepares a statement it has seen five times) and sent with
# PQsendQueryPrepared, parameters encoded here (text, in the connection's encoding), the one
# row decoded as text. Cursor.execute spends about 16 µs of Python per statement on what
# these do not need (adapting by type, the prepared-statement bookkeeping, result loaders,
# row makers). Errors are psycopg's (error_from_result: the class of the SQLSTATE), a lost
# connection its OperationalError, as through a cursor. A statement the server forgot
# (DEALLOCATE, DISCARD ALL) is prepared again; a connection whose prepare was cut short is
# closed. A connection with psycopg's prepared statements turned off (prepare_threshold None, as
# behind PgBouncer before 1.21) gets none from the store either: the cursor sends the
# statement unprepared. Without psycopg's execute generator (another psycopg than 3.2 to
# 3.3) the cursor path is used.

try:
    from psycopg.errors import error_from_result
    from psycopg.generators import execute as _execute_generator
except ImportError:  # pragma: no cover - psycopg 3.2 and 3.3 have both
    _LIBPQ = False
else:
    _LIBPQ = True

_PREPARED = "_ctx_memory_prepared"
_TUPLES_OK = psycopg.pq.ExecStatus.TUPLES_OK
_COMMAND_OK = psycopg.pq.ExecStatus.COMMAND_OK


class _Session:
    """What one connection has prepared, and its encoding (kept on the connection)."""

    __slots__ = ("encoding", "names")

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self.names: set[bytes] = set()


class Lease(NamedTuple):
    """A connection taken from ``pool``, to go back to it by ``until`` (monotonic time)."""

    pool: ConnectionPool[Any]
    conn: psycopg.Connection[Any]
    until: float


def prepared_session(
    conn: psycopg.Connection[Any] | psycopg.AsyncConnection[Any],
) -> _Session | None:
    """What ``conn`` has prepared; ``None``: send prepared statements through a cursor."""
    session: _Session | None = getattr(conn, _PREPARED, None)
    if session is None:
        if not _LIBPQ or conn.prepare_threshold is None:
            return None
        session = _Session(conn.info.encoding)
        try:
            setattr(conn, _PREPARED, session)
        except AttributeError:  # a connection class with __slots__: nothing to remember by
            return None
    return session


def _encode(value: object, encoding: str) -> bytes | None:
    """A parameter as PostgreSQL's text input: what psycopg's text dumpers send."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode(encoding)
    if isinstance(value, bool):
        return b"t" if value else b"f"
    if isinstance(value, int):
        return b"%d" % value
    if isinstance(value, float):
        return repr(value).encode()
    msg = f"cannot send a {type(value).__name__} as a prepared statement's parameter"
    raise TypeError(msg)


def _check(results: list[Any], encoding: str) -> None:
    """Raise psycopg's error for a statement that failed."""
    result = results[-1]
    if result.status not in (_TUPLES_OK, _COMMAND_OK):
        raise error_from_result(result, encoding=encoding)


def _row(results: list[Any], encoding: str) -> tuple[str | None, ...] | None:
    """The first row of a statement's last result, every column decoded as text."""
    result = results[-1]
    if result.status != _TUPLES_OK:
        raise error_from_result(result, encoding=encoding)
    if result.ntuples == 0:
        return None
    values = [result.get_value(0, i) for i in range(result.nfields)]
    return tuple(None if v is None else bytes(v).decode(encoding) for v in values)


def send(
    conn: psycopg.Connection[Any], session: _Session, prepared: Prepared, params: dict[str, Any]
) -> Any:
    values = [_encode(params[key], session.encoding) for key in prepared.order]
    for attempt in range(2):
        try:
            with conn.lock:
                if prepared.name not in session.names:
                    conn.pgconn.send_prepare(prepared.name, prepared.sql)
                    try:
                        reply = conn.wait(_execute_generator(conn.pgconn))
                    except BaseException:
                        # Cut short (a cancelled task, Ctrl-C, a lost connection): whether
                        # the server prepared it is unknown, and either guess can fail
                        # every later call. The connection goes; the pool makes another.
                        conn.pgconn.finish()  # (not close(): a pool may take it back)
                        raise
                    _check(reply, session.encoding)  # an error reply: not prepared
                    session.names.add(prepared.name)
                conn.pgconn.send_query_prepared(prepared.name, values)
                results = conn.wait(_execute_generator(conn.pgconn))
            return _row(results, session.encoding)
        except psycopg.errors.InvalidSqlStatementName:
            session.names.clear()  # the server forgot them
            if attempt:
                raise
    raise AssertionError  # pragma: no cover - the loop returns or raises


async def asend(
    conn: psycopg.AsyncConnection[Any],
    session: _Session,
    prepared: Prepared,
    params: dict[str, Any],
) -> Any:
    values = [_encode(params[key], session.encoding) for key in prepared.order]
    for attempt in range(2):
        try:
            async with conn.lock:
                if prepared.name not in session.names:
                    conn.pgconn.send_prepare(prepared.name, prepared.sql)
                    try:
                        reply = await conn.wait(_execute_generator(conn.pgconn))
                    except BaseException:
                        # Cut short (a cancelled task, Ctrl-C, a lost connection): whether
                        # the server prepared it is unknown, and either guess can fail
                        # every later call. The connection goes; the pool makes another.
                        conn.pgconn.finish()  # (not close(): a pool may take it back)
                        raise
                    _check(reply, session.encoding)  # an error reply: not prepared
                    session.names.add(prepared.name)
                conn.pgconn.send_query_prepared(prepared.name, values)
                results = await conn.wait(_execute_generator(conn.pgconn))
            return _row(results, session.encoding)
        except psycopg.errors.InvalidSqlStatementName:
            session.names.clear()  # the server forgot them
            if attempt:
                raise
    raise AssertionError  # pragma: no cover - the loop returns or raises


# One cursor per connection, kept on the connection and used for every statement the store
# sends on it: ``conn.execute`` makes a cursor per call, and a new cursor looks up again the
# dumpers of its parameters and the loaders of its columns (about 12 µs of CPU per
# statement). A connection is used by one caller at a time (the pool's checkout), so its
# cursor is too. Rows are always tuples, whatever row factory a given pool's connections
# have. A cursor holds its last result until the next statement: after a large reply it is
# closed and a new one made, so that an idle connection does not keep a history in memory.

_CURSOR = "_ctx_memory_cursor"
_LARGE_REPLY = 1 << 16  # characters


def cursor(conn: psycopg.Connection[Any]) -> psycopg.Cursor[Any]:
    cur: psycopg.Cursor[Any] | None = getattr(conn, _CURSOR, None)
    if cur is None or cur.closed:
        cur = conn.cursor(row_factory=tuple_row)
        with contextlib.suppress(AttributeError):  # a connection class with __slots__
            setattr(conn, _CURSOR, cur)
    return cur


def acursor(conn: psycopg.AsyncConnection[Any]) -> psycopg.AsyncCursor[Any]:
    cur: psycopg.AsyncCursor[Any] | None = getattr(conn, _CURSOR, None)
    if cur is None or cur.closed:
        cur = conn.cursor(row_factory=tuple_row)
        with contextlib.suppress(AttributeError):
            setattr(conn, _CURSOR, cur)
    return cur


def release_cursor(conn: psycopg.Connection[Any], cur: psycopg.Cursor[Any]) -> psycopg.Cursor[Any]:
    cur.close()
    return cursor(conn)


async def arelease_cursor(
    conn: psycopg.AsyncConnection[Any], cur: psycopg.AsyncCursor[Any]
) -> psycopg.AsyncCursor[Any]:
    await cur.close()
    return acursor(conn)


def sizeable(reply: object) -> bool:
    """Whether a reply (a row, or a list of rows) is large enough to free its result.

    Text counts its characters, an array or a list of rows 64 per element, plus the text
    of the rows of a list short enough to count them (a few rows of large text).
    """
    if isinstance(reply, tuple):
        return _size(reply) > _LARGE_REPLY
    if not isinstance(reply, list):
        return False
    size = 64 * len(reply)
    for row in reply:  # (at most _LARGE_REPLY / 64 of them before the answer is known)
        if size > _LARGE_REPLY:
            return True
        size += _size(row)
    return size > _LARGE_REPLY


def _size(row: tuple[Any, ...]) -> int:
    size = 0
    for value in row:
        if isinstance(value, str):
            size += len(value)
        elif isinstance(value, list):
            size += 64 * len(value)
    return size


def connect_error(error: BaseException, conninfo: str, seconds: float) -> str | None:
    """Why a new connection to ``conninfo`` fails now (the server's words), else ``None``.

    Only for ``error`` a pool timeout: psycopg_pool only logs why its connection attempts
    failed (a wrong password, a database that does not exist) and raises ``PoolTimeout``,
    so one direct attempt finds the cause to report.
    """
    if not isinstance(error, PoolTimeout):
        return None
    try:
        conn = psycopg.Connection.connect(conninfo, connect_timeout=max(1, round(seconds)))
        conn.close()
    except psycopg.OperationalError as failed:
        return " ".join(str(failed).split()) or type(failed).__name__
    except Exception:  # noqa: BLE001 - only a hint for the error being raised
        return None
    return None


async def aconnect_error(error: BaseException, conninfo: str, seconds: float) -> str | None:
    """Async :func:`connect_error`."""
    if not isinstance(error, PoolTimeout):
        return None
    try:
        conn = await psycopg.AsyncConnection.connect(
            conninfo, connect_timeout=max(1, round(seconds))
        )
        await conn.close()
    except psycopg.OperationalError as failed:
        return " ".join(str(failed).split()) or type(failed).__name__
    except Exception:  # noqa: BLE001 - only a hint for the error being raised
        return None
    return None
