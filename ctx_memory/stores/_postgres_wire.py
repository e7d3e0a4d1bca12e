"""The PostgreSQL store's hot path on the wire: prepared statements sent through libpq.

:func:`send` / :func:`asend` run a :class:`~ctx_memory.stores._postgres_sql.Statement`'s
prepared form on a connection; :func:`cursor` / :func:`acursor` give the connection's kept
cursor for everything else; :func:`unkeep` / :func:`to_pool` move a connection between the
store's kept stack, a call, and the pool.
"""

from __future__ import annotations

import contextlib
import time
from typing import TYPE_CHECKING, Any, NamedTuple

import psycopg
from psycopg.rows import tuple_row
from psycopg_pool import PoolTimeout

if TYPE_CHECKING:
    import threading
    from collections.abc import AsyncIterator, Iterator

    from psycopg_pool import ConnectionPool

    from ctx_memory.stores._postgres_statements import Prepared

__all__ = [
    "Lease",
    "aconnect_error",
    "atransaction",
    "connect_error",
    "acursor",
    "arelease_cursor",
    "asend",
    "cursor",
    "release_cursor",
    "send",
    "prepared_session",
    "sizeable",
    "to_pool",
    "transaction",
    "unkeep",
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
_DUPLICATE = psycopg.errors.DuplicatePreparedStatement
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


# A connection the store took from its pool is always in one place: the pool, the stack the
# store keeps between calls (``kept``), or the list ``held`` of the one call using it. It goes
# from ``kept`` to ``held`` with no call in between (``del``, then ``append``, under the store's
# lock), and to the pool only once out of ``held``. A Ctrl-C (its exception is raised at a
# function's start, after a call into C returns, on a loop's jump back) so finds it in one of
# them: a call gives ``held`` back in a ``finally``, again if that was cut short at its start.
# One cut short inside psycopg_pool's getconn or putconn is the pool's.


def unkeep(
    kept: list[Lease],
    lock: threading.Lock,
    held: list[Lease],
    pool: ConnectionPool[Any] | None = None,
    *,
    due: bool = False,
) -> bool:
    """Move a kept connection into ``held``; ``False``: none to move.

    The latest one (of ``pool`` if given); with ``due``, the oldest, only if its time is up
    (:attr:`Lease.until`) and it is not the only one kept.
    """
    with lock:
        i = len(kept) - 1
        if due:
            i = 0 if i > 0 and kept[0].until <= time.monotonic() else -1
        while i >= 0 and pool is not None and kept[i].pool is not pool:
            i -= 1
        if i < 0:
            return False
        lease = kept[i]
        del kept[i]
        held.append(lease)  # (no call since it left the stack: nothing can land in between)
    return True


def to_pool(held: list[Lease]) -> None:
    """Give ``held``'s last connection back to its pool."""
    lease = held[-1]
    del held[-1]  # (first: a putconn cut short must not leave it to be given twice)
    lease.pool.putconn(lease.conn)


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


def _failure(results: list[Any], encoding: str) -> psycopg.Error | None:
    """The error psycopg raises for a statement that failed, else ``None``."""
    result = results[-1]
    if result.status not in (_TUPLES_OK, _COMMAND_OK):
        return error_from_result(result, encoding=encoding)
    return None


def _row(results: list[Any], encoding: str) -> tuple[str | None, ...] | None:
    """The first row of a statement's last result, every column decoded as text."""
    result = results[-1]
    if result.status != _TUPLES_OK:
        raise error_from_result(result, encoding=encoding)
    if result.ntuples == 0:
        return None
    values = [result.get_value(0, i) for i in range(result.nfields)]
    return tuple(None if v is None else bytes(v).decode(encoding) for v in values)


# From the moment a PREPARE goes out until its name is in ``session.names``, the server and
# the connection's record may disagree. Whatever cuts that short (a cancelled task, a Ctrl-C
# landing anywhere in it, even right after the reply arrived, a lost connection) finishes the
# connection: whether the server prepared the statement is then unknown, and either guess
# fails every later call on it (DuplicatePreparedStatement, or a statement that does not
# exist). The pool drops a finished connection and makes another. An error reply is known
# (nothing prepared): it is raised and the connection serves on. A prepared statement stays
# when a transaction rolls back, so a name recorded in one stays true. A name the server
# holds and the record lacks (after someone DEALLOCATEd one statement of several, the record
# forgets them all) is a statement of the same text, named after it: DuplicatePreparedStatement
# records it, and it is run (in a transaction, which the error aborted, from the next call).


def _prepare(conn: psycopg.Connection[Any], session: _Session, prepared: Prepared) -> None:
    """Prepare ``prepared`` on ``conn`` and record it, else close ``conn`` (see above)."""
    error: psycopg.Error | None = None
    agreed = False
    try:
        conn.pgconn.send_prepare(prepared.name, prepared.sql)
        reply = conn.wait(_execute_generator(conn.pgconn))
        error = _failure(reply, session.encoding)  # an error reply: not prepared, but for
        if error is None or isinstance(error, _DUPLICATE):  # one prepared before (see above)
            session.names.add(prepared.name)
            error = None
        agreed = True
    finally:
        if not agreed:
            conn.pgconn.finish()  # (not close(): a pool may take it back)
    if error is not None:
        raise error


async def _aprepare(
    conn: psycopg.AsyncConnection[Any], session: _Session, prepared: Prepared
) -> None:
    """Async :func:`_prepare`."""
    error: psycopg.Error | None = None
    agreed = False
    try:
        conn.pgconn.send_prepare(prepared.name, prepared.sql)
        reply = await conn.wait(_execute_generator(conn.pgconn))
        error = _failure(reply, session.encoding)  # an error reply: not prepared, but for
        if error is None or isinstance(error, _DUPLICATE):  # one prepared before (see above)
            session.names.add(prepared.name)
            error = None
        agreed = True
    finally:
        if not agreed:
            conn.pgconn.finish()  # (not close(): a pool may take it back)
    if error is not None:
        raise error


def send(
    conn: psycopg.Connection[Any], session: _Session, prepared: Prepared, params: dict[str, Any]
) -> Any:
    values = [_encode(params[key], session.encoding) for key in prepared.order]
    for attempt in range(2):
        try:
            with conn.lock:
                if prepared.name not in session.names:
                    _prepare(conn, session, prepared)
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
                    await _aprepare(conn, session, prepared)
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


# psycopg undoes the start of a transaction that a Ctrl-C cuts short, but one landing as that
# start is entered (``Connection.wait`` called, its generator not yet run) is undone though it
# never began: the connection's count of open transactions goes below zero, and every later
# transaction on it fails (OutOfOrderTransactionNesting). A connection that an interrupt or
# a cancellation leaves mid-transaction is therefore finished: its pool drops it and makes
# another. An error (Exception) is rolled back as psycopg does; the connection serves on.


@contextlib.contextmanager
def transaction(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """``conn.transaction()``; finishes ``conn`` when a Ctrl-C cuts it short (see above)."""
    try:
        with conn.transaction():
            yield
    except Exception:
        raise
    except BaseException:
        conn.pgconn.finish()  # (not close(): a pool may take it back)
        raise


@contextlib.asynccontextmanager
async def atransaction(conn: psycopg.AsyncConnection[Any]) -> AsyncIterator[None]:
    """Async :func:`transaction`: a cancellation too finishes ``conn``."""
    try:
        async with conn.transaction():
            yield
    except Exception:
        raise
    except BaseException:
        conn.pgconn.finish()  # (not close(): a pool may take it back)
        raise
