"""The PostgreSQL store's asyncio pools: one per event loop, closed when the loop ends.

:class:`~ctx_memory.stores.postgres.PostgresStore` opens a ``psycopg_pool``
``AsyncConnectionPool`` for each event loop it is called from; these open and close them,
from any loop or thread (a loop that cannot be run where ``close`` is called is run by a
helper thread, or its connections are closed without it once it has closed).
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import threading
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

__all__ = [
    "CLOSE_SECONDS",
    "cancel_guard",
    "close_async_pool",
    "close_at_loop_end",
    "open_loop_pool",
    "runs_here",
]

logger = logging.getLogger(__name__)


def _not_a_cancelled_connect(record: logging.LogRecord) -> bool:
    """Drop psycopg_pool's "error connecting" for one of our pools cancelled with its loop.

    A short ``asyncio.run`` with concurrent calls makes the pool grow, and may end while
    the extra connection is being opened: the attempt is cancelled with the loop's tasks,
    which is no error (the pool is being closed). Other failures are kept.
    """
    args = record.args if isinstance(record.args, tuple) else ()
    return not (
        str(record.msg).startswith("error connecting in")
        and any(isinstance(arg, asyncio.CancelledError) for arg in args)
        and any(isinstance(arg, str) and arg.startswith("ctx_memory-") for arg in args)
    )


logging.getLogger("psycopg.pool").addFilter(_not_a_cancelled_connect)

CLOSE_SECONDS = 1.0
"""Longest a pool closed on an idle event loop from another loop's thread waits for its
workers to stop (its connections are closed after that in any case)."""


async def close_at_loop_end(pool: AsyncConnectionPool[Any]) -> None:
    """Wait until cancelled, then close ``pool``: one task per event loop with a pool.

    ``asyncio.run`` (like other runners) cancels every task still pending when its main
    coroutine returns, this one among them: the pool is then closed, so its connections do
    not stay open on the server after the loop (a script that calls ``asyncio.run`` once per
    job would otherwise run the server out of connections), and its scheduler and workers
    stop. Without it, ``asyncio.run`` was also seen waiting forever at that point, for the
    pool's own tasks (the test suite, Python 3.11.2); closing the pool sends its scheduler
    and workers their stop whatever happened to their cancellation.
    """
    try:
        await asyncio.get_running_loop().create_future()  # set by nothing: until cancelled
    except asyncio.CancelledError:
        idle = list(getattr(pool, "_pool", ()))  # (psycopg_pool's idle connections)
        with contextlib.suppress(asyncio.CancelledError):
            # It stops the scheduler and the workers, then waits for the workers, which
            # were cancelled with this task: that wait raises before it closes the idle
            # connections, so they are closed here.
            await pool.close(timeout=1.0)
        for conn in idle:
            conn.pgconn.finish()
        raise


async def open_loop_pool(conninfo: str, options: dict[str, Any]) -> AsyncConnectionPool[Any]:
    """Open the pool of the running event loop: empty until its first call, which connects.

    ``options`` are the store's pool options, but for ``min_size`` 0: with 1, opening the
    pool starts a connection, and the first call, finding none ready yet, makes the pool
    grow by a second one. A short ``asyncio.run`` then opened two connections for one call,
    and often ended while the second was being opened: the pool, cancelled with the loop's
    tasks, logged ``error connecting in '<name>':`` (a ``CancelledError``, no message).
    """
    from psycopg_pool import AsyncConnectionPool  # noqa: PLC0415 - the postgres extra

    pool: AsyncConnectionPool[Any] = AsyncConnectionPool(
        conninfo, open=False, **{**options, "min_size": 0}
    )
    await pool.open(wait=False)
    return pool


def cancel_guard(loop: asyncio.AbstractEventLoop, guard: asyncio.Task[None] | None) -> None:
    """Cancel ``loop``'s :func:`close_at_loop_end` task, from any thread (it closes the pool)."""
    if guard is None or guard.done():
        return
    if runs_here(loop):
        guard.cancel()
    elif not loop.is_closed():
        loop.call_soon_threadsafe(guard.cancel)


def close_async_pool(loop: asyncio.AbstractEventLoop, pool: AsyncConnectionPool[Any]) -> None:
    """Close an asyncio pool from sync code, on its own event loop unless that has closed.

    A running loop closes it as soon as it can; an idle one is run here to close it, or by
    a helper thread when another loop runs in this thread (a sync close in a coroutine).
    """
    if loop.is_closed():  # its tasks died with the loop
        _finish_idle(pool)
        return
    if loop.is_running():
        if runs_here(loop):  # a sync call blocking this loop: close it when the loop can
            loop.create_task(pool.close())
        else:
            asyncio.run_coroutine_threadsafe(pool.close(), loop)
        return
    if _loop_running():  # another loop runs in this thread: it cannot run ``loop`` here
        _close_on_helper_thread(loop, pool)
        return
    loop.run_until_complete(pool.close())


def _finish_idle(pool: AsyncConnectionPool[Any]) -> None:
    """Close the idle connections of a pool whose loop cannot run, without that loop."""
    for conn in list(getattr(pool, "_pool", ())):  # (psycopg_pool's idle connections)
        conn.pgconn.finish()


def _close_on_helper_thread(
    loop: asyncio.AbstractEventLoop, pool: AsyncConnectionPool[Any]
) -> None:
    """Close ``pool`` on its idle ``loop``, run for that by a short-lived thread.

    A loop runs in one thread at a time, and a thread runs one loop at a time: when close
    is called from a coroutine of another loop, the idle loop is run by a thread of its own
    until the pool is closed (at most :data:`CLOSE_SECONDS` for its workers to stop), as a
    sync call from outside any loop runs it in place. If that fails (the loop was started
    or closed by its own thread in the meantime), the pool is closed as for that state.
    """
    close = pool.close(timeout=CLOSE_SECONDS)
    failed: list[BaseException] = []

    def run() -> None:
        try:
            loop.run_until_complete(close)
        except BaseException as e:  # noqa: BLE001 - reported to the caller's thread below
            failed.append(e)

    helper = threading.Thread(target=run, name="ctx_memory-pool-close", daemon=True)
    helper.start()
    helper.join(CLOSE_SECONDS + 2.0)
    if helper.is_alive():  # the loop ran something else that blocks it: leave it be
        logger.warning("PostgreSQL pool %r: its event loop did not finish closing it", pool.name)
        return
    if not failed:
        return
    if inspect.getcoroutinestate(close) == inspect.CORO_CREATED:  # the loop could not run
        close.close()  # (no "never awaited" warning)
    if loop.is_closed():
        _finish_idle(pool)
    elif loop.is_running():  # started in its thread meanwhile: closed there
        asyncio.run_coroutine_threadsafe(pool.close(), loop)
    else:
        logger.warning("PostgreSQL pool %r: could not close it: %r", pool.name, failed[0])
        _finish_idle(pool)


def _loop_running() -> bool:
    """Whether an event loop runs in this thread."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return False
    return True


def runs_here(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is the event loop running in this thread."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
