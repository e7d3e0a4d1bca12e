"""The PostgreSQL store's asyncio pools: one per event loop, closed when the loop ends.

:class:`~ctx_memory.stores.postgres.PostgresStore` opens a ``psycopg_pool``
``AsyncConnectionPool`` for each event loop it is called from; these close them.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from psycopg_pool import AsyncConnectionPool

__all__ = ["close_async_pool", "close_at_loop_end", "runs_here"]


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


def close_async_pool(loop: asyncio.AbstractEventLoop, pool: AsyncConnectionPool[Any]) -> None:
    """Close an asyncio pool from sync code, on its own event loop if that still runs."""
    if loop.is_closed():
        for conn in list(getattr(pool, "_pool", ())):  # its tasks died with the loop
            conn.pgconn.finish()
        return
    if loop.is_running():
        if runs_here(loop):  # a sync call blocking this loop: close it when the loop can
            loop.create_task(pool.close())
        else:
            asyncio.run_coroutine_threadsafe(pool.close(), loop)
        return
    loop.run_until_complete(pool.close())


def runs_here(loop: asyncio.AbstractEventLoop) -> bool:
    """Whether ``loop`` is the event loop running in this thread."""
    try:
        return asyncio.get_running_loop() is loop
    except RuntimeError:
        return False
