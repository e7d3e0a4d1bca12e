"""The sync hot path to one Redis server: commands packed here, sent on a pooled connection.

``client.execute_command`` costs more client time than the round trip it makes on an idle
server (observability hooks, a retry closure, packing through the encoder, the pool's
checks on every checkout and return). For a plain ``redis.Redis`` client (one server, or
the master behind Sentinel) the store sends its commands with a :class:`Wire` instead,
keeping what matters of that path:

* connections are the client's (its pool makes them: its options, TLS, the Sentinel
  master lookup and reconnects apply);
* the connection's ``Retry`` repeats a round trip that lost its connection (every write
  the store sends is safe to repeat: message ids and write tokens);
* an error reply is returned as a value after every reply of the round trip has been
  read, so the connection stays in step; one that failed otherwise is closed.

A client the store made keeps its connections between calls (``keep``): a stack of idle
connections, as many as calls ran at once, taken back from the pool only by ``close``.
At most half the pool's ``max_connections`` (100 by default) are kept: more, after a burst
of calls, go back to the pool, which the client's other uses (publishing events, pub/sub)
need. When the pool has given all it may, a call waits for a connection to come back (up
to ``wait`` seconds) rather than fail.
Checking a connection out of the pool and back costs about a fifth of a round trip (and a
``poll``), which the pool spends on finding one closed by the server or left with unread
replies; the second cannot happen here, and the first is checked as the pool checks it
for a connection idle longer than :data:`IDLE_CHECK` seconds (a connection closed while
in use fails its round trip, which the ``Retry`` repeats). A connection made before a
``fork`` is never used by the child. A client given to the store is used through its pool
on every call, so the store holds none of its connections between calls.

Arguments are packed as RESP bulk strings: ``bytes`` as they are, ``str`` as UTF-8 (what
the store writes is valid Unicode), ``int`` and ``float`` as their decimal text. Replies
are the parser's, without redis-py's response callbacks (the store reads none that has
one but ``ZMSCORE``, whose raw scores it passes back as they are).
"""

from __future__ import annotations

import inspect
import logging
import os
import threading
import time
from typing import TYPE_CHECKING, Any

import redis.asyncio.sentinel
import redis.sentinel
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "IDLE_CHECK",
    "MASTER_CHECK",
    "MasterWatch",
    "Wire",
    "pack",
    "pack_args",
    "pack_prepared",
]

logger = logging.getLogger("ctx_memory.stores.redis")

IDLE_CHECK = 1.0
"""Seconds a kept connection may stay idle before it is checked (closed by the server?)."""

MASTER_CHECK = 0.5
"""Seconds between two questions to the sentinels about where the master is, while calls run."""


def _address(value: Any) -> tuple[str, int] | None:
    """``(host, port)`` of a Sentinel answer, else ``None``."""
    if isinstance(value, (tuple, list)) and len(value) == 2:
        return str(value[0]), int(value[1])
    return None


class MasterWatch:
    """Asks the sentinels behind a pool where the master is, at most every :data:`MASTER_CHECK`.

    A connection stays connected to the server it reached. After a failover that did not
    close it (``SENTINEL FAILOVER``, a network split), the old master still takes writes
    until the sentinels make it a replica, seconds later, and then drops them: every
    write in between is acknowledged and lost. So while calls run, the sentinels are asked
    again; when they name another master, every connection of the pool is closed (a call
    on one fails and its ``Retry`` reconnects it to the new master: the store's writes are
    safe to repeat), and :meth:`moved` tells a kept connection to reconnect. Writes made
    between the promotion and the next question (at most :data:`MASTER_CHECK` plus the
    time the sentinels take to agree) can still be lost: Redis replicates asynchronously;
    a master's ``min-replicas-to-write`` setting closes that gap (see the docs).
    """

    def __init__(self, pool: Any) -> None:
        self.pool = pool
        self.master: tuple[str, int] | None = None  # the sentinels' last answer
        self._checked = time.monotonic()

    @staticmethod
    def of(pool: Any) -> MasterWatch | None:
        """A watch for a Sentinel master pool, else ``None``."""
        sentinel = (
            redis.sentinel.SentinelConnectionPool,
            redis.asyncio.sentinel.SentinelConnectionPool,
        )
        return MasterWatch(pool) if isinstance(pool, sentinel) else None

    def due(self) -> bool:
        """Whether it is time to ask again (and the clock is reset if so)."""
        now = time.monotonic()
        if now - self._checked < MASTER_CHECK:
            return False
        self._checked = now
        return True

    def known(self) -> tuple[str, int] | None:
        """Where connections went so far: the last answer, else the pool's own lookup."""
        return self.master or _address(getattr(self.pool, "master_address", None))

    def found(self, address: Any, before: tuple[str, int] | None) -> bool:
        """Record the master the sentinels named; whether it moved from ``before``."""
        named = _address(address)
        if named is None:
            return False
        self.master = named
        return before is not None and before != named

    def failed(self, error: BaseException) -> None:
        """No sentinel answered: go on with the connections as they are."""
        logger.debug("ctx_memory: no sentinel said where the master is (%s)", error)

    def check(self) -> None:
        """Ask the sentinels (sync pool) if it is time; on a move, close every connection."""
        if not self.due():
            return
        before = self.known()
        try:
            moved = self.found(self.pool.get_master_address(), before)
        except (RedisError, OSError) as error:
            self.failed(error)
            return
        if moved:
            self.pool.disconnect(inuse_connections=True)

    async def acheck(self) -> None:
        """Async :meth:`check` (an asyncio pool)."""
        if not self.due():
            return
        before = self.known()
        try:
            moved = self.found(await self.pool.get_master_address(), before)
        except (RedisError, OSError) as error:
            self.failed(error)
            return
        if moved:
            await self.pool.disconnect(inuse_connections=True)

    def moved(self, connection: Any) -> bool:
        """Whether ``connection`` is connected to a server the sentinels no longer name."""
        master = self.master
        return (
            master is not None
            and getattr(connection, "_sock", None) is not None
            and (str(connection.host), int(connection.port)) != master
        )


def _bulk(arg: Any) -> bytes:
    if isinstance(arg, bytes):
        data = arg
    elif isinstance(arg, str):
        data = arg.encode()
    elif isinstance(arg, (int, float)) and not isinstance(arg, bool):
        data = repr(arg).encode()
    else:
        msg = f"cannot send a {type(arg).__name__} to Redis: {arg!r}"
        raise TypeError(msg)
    return b"$%d\r\n%b\r\n" % (len(data), data)


def pack_args(args: Sequence[Any]) -> bytes:
    """The RESP bulk strings of ``args``, without the array header (a command's part)."""
    return b"".join([_bulk(arg) for arg in args])


def pack(commands: Sequence[Sequence[Any]]) -> bytes:
    """The RESP request of ``commands``, one after the other."""
    return b"".join(b"*%d\r\n%b" % (len(command), pack_args(command)) for command in commands)


def pack_prepared(count: int, packed: bytes, tail: Sequence[Any]) -> bytes:
    """The RESP request of one command of ``count`` arguments whose first are ``packed``."""
    return b"*%d\r\n%b%b" % (count, packed, pack_args(tail))


def _takes_no_command_name(pool_class: type[Any]) -> bool:
    """Whether ``get_connection()`` may be called bare (redis-py >= 5.3; deprecated after)."""
    try:
        parameter = inspect.signature(pool_class.get_connection).parameters.get("command_name")
    except (TypeError, ValueError):
        return True
    return parameter is None or parameter.default is not inspect.Parameter.empty


def _read(connection: Any) -> Any:
    try:
        return connection.read_response()
    except ResponseError as error:  # the reply was read: the connection stays in step
        return error


def _exhausted(error: BaseException) -> bool:
    """Whether ``error`` is the pool's "Too many connections" (``MaxConnectionsError``)."""
    return type(error).__name__ == "MaxConnectionsError" or str(error) == "Too many connections"


def _closed(connection: Any) -> bool:
    """The pool's check of a connection it hands out: closed, or data nobody asked for."""
    try:
        return bool(connection.can_read())
    except (OSError, RedisConnectionError, RedisTimeoutError):
        return True


class Wire:
    """Send packed requests on connections of ``pool`` (see the module docstring).

    Args:
        pool: The client's connection pool.
        keep: Keep connections between calls (a client the store made), else check one
            out of the pool for each call and return it.
    """

    def __init__(self, pool: Any, *, keep: bool, wait: float = 5.0) -> None:
        self.pool = pool
        self.keep = keep
        self.wait = wait
        self._idle: list[tuple[Any, float]] = []  # (connection, idle since): a stack
        self._bare = _takes_no_command_name(type(pool))
        self._returned = threading.Condition()
        self._waiting = 0
        limit = getattr(pool, "max_connections", None)
        self._keep_at_most = max(1, limit // 2) if isinstance(limit, int) else 50
        self._watch = MasterWatch.of(pool)

    def _take(self) -> Any:
        connection = self._take_one()
        watch = self._watch
        if watch is not None:
            watch.check()
            if watch.moved(connection):
                connection.disconnect()  # the next send connects to the master named now
        return connection

    def _take_one(self) -> Any:
        connection = self._idle_one()
        if connection is not None:
            return connection
        try:
            return self._new()
        except RedisConnectionError as error:
            if not _exhausted(error):
                raise
            return self._wait_for_one(error)

    def _idle_one(self) -> Any | None:
        idle = self._idle
        while idle:
            try:
                connection, since = idle.pop()
            except IndexError:  # another thread took the last one
                break
            if connection.pid != os.getpid():
                continue  # made before a fork: the parent's
            if time.monotonic() - since > IDLE_CHECK and _closed(connection):
                connection.disconnect()  # the next send connects again
            return connection
        return None

    def _new(self) -> Any:
        return self.pool.get_connection() if self._bare else self.pool.get_connection("EVALSHA")

    def _wait_for_one(self, error: RedisConnectionError) -> Any:
        """A connection once one comes back (or the pool has room again), within ``wait``."""
        deadline = time.monotonic() + self.wait
        with self._returned:
            self._waiting += 1
            try:
                while True:
                    connection = self._idle_one()
                    if connection is not None:
                        return connection
                    try:  # one may have gone back to the pool, which says nothing: ask it
                        return self._new()
                    except RedisConnectionError as again:
                        if not _exhausted(again):
                            raise
                    left = deadline - time.monotonic()
                    if left <= 0:
                        msg = (
                            f"{error} (all {getattr(self.pool, 'max_connections', '?')} of "
                            f"the pool's connections stayed busy for {self.wait:g} s)"
                        )
                        raise RedisConnectionError(msg) from None
                    self._returned.wait(min(left, 0.01))
            finally:
                self._waiting -= 1

    def _give(self, connection: Any) -> None:
        if self.keep and len(self._idle) < self._keep_at_most:
            self._idle.append((connection, time.monotonic()))
        else:
            self.pool.release(connection)
        if self._waiting:  # (read without the lock: a waiter counts itself before looking)
            with self._returned:
                self._returned.notify()

    def roundtrip(self, request: bytes, count: int) -> list[Any]:
        """Send ``request`` (``count`` packed commands); their replies, errors as values."""
        connection = self._take()
        try:
            chunks = [request]

            def attempt() -> list[Any]:
                connection.send_packed_command(chunks)
                return [_read(connection) for _ in range(count)]

            replies: list[Any] = connection.retry.call_with_retry(
                attempt, lambda _error: connection.disconnect()
            )
        except BaseException:
            connection.disconnect()  # a reply may be left unread: never use it as it is
            raise
        finally:
            self._give(connection)
        return replies

    def close(self) -> None:
        """Give the kept connections back to the pool (which the client's close closes)."""
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            if connection.pid == os.getpid():
                self.pool.release(connection)
