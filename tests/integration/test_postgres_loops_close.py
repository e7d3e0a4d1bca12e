"""Closing a PostgresStore whose asyncio pools belong to event loops it cannot run.

The store opens one asyncio pool per event loop. A loop made with ``new_event_loop()`` and
used through ``run_until_complete`` (a worker thread's loop, a task runner's, a test
helper's) is left open but idle; when the app later shuts down from a coroutine on another
loop (``await cm.aclose()``, or a sync ``cm.close()`` inside a coroutine), that idle loop
cannot be run in this thread. Before, ``close`` raised ``RuntimeError: Cannot run the event
loop while another loop is running`` out of ``aclose``/``close`` and left the pool's
connections open on the server. Now the idle loop's pool is closed on it by a helper
thread, a closed loop's pool has its connections closed without it, and the current loop's
pool is closed the asyncio way.

The tests use a server of their own, so every client connection on it is the store's.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import psycopg
import pytest

from ctx_memory import ContextManager
from ctx_memory.stores.postgres import PostgresStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

pytestmark = pytest.mark.postgres


@pytest.fixture(scope="module")
def own_url(postgres_server_factory: Callable[..., Any]) -> str:
    """A server for this module alone: its client connections are the tests' stores'."""
    return str(postgres_server_factory().url)


@pytest.fixture
def cm(own_url: str) -> Iterator[ContextManager]:
    store = PostgresStore(own_url, schema=f"t_{uuid.uuid4().hex[:12]}", pool_size=4)
    manager = ContextManager(store=store, token_counter="approximate")
    yield manager
    manager.close()  # (again: a no-op after the test's own close)


def connections(url: str) -> int:
    """Client connections on the server, this check's own left out."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE backend_type = 'client backend' AND pid <> pg_backend_pid()"
        ).fetchone()
    assert row is not None
    return int(row[0])


def settles_at(url: str, expected: int, within: float = 5.0) -> int:
    """The connection count once it reaches ``expected`` (a backend exits just after its
    client hangs up), or the last count seen after ``within`` seconds."""
    deadline = time.monotonic() + within
    while (count := connections(url)) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return count


def no_helper_threads() -> bool:
    return not any(t.name == "ctx_memory-pool-close" for t in threading.enumerate())


def use_from_idle_loop(cm: ContextManager) -> tuple[asyncio.AbstractEventLoop, Any]:
    """Use ``cm`` once from a new event loop, left open and idle; that loop and its pool."""
    other = asyncio.new_event_loop()
    other.run_until_complete(cm.aadd_user_message("s1", "from the idle loop"))
    store = cm.store
    assert isinstance(store, PostgresStore)
    return other, store._apools[other]


@pytest.mark.parametrize("how", ["await aclose", "sync close in a coroutine"])
def test_close_from_another_loop_closes_an_idle_loop_s_pool(
    cm: ContextManager, own_url: str, how: str
) -> None:
    before = connections(own_url)
    other, other_pool = use_from_idle_loop(cm)
    assert connections(own_url) > before  # the idle loop's pool holds a connection
    pools: list[Any] = []

    async def shutdown() -> None:
        await cm.aadd_user_message("s1", "from the running loop")
        cm.add_user_message("s1", "sync, from the running loop")
        store = cm.store
        assert isinstance(store, PostgresStore)
        pools.append(store._apools[asyncio.get_running_loop()])
        if how == "await aclose":
            await cm.aclose()
            assert pools[0].closed  # closed the asyncio way, before aclose returned
        else:
            cm.close()

    try:
        started = time.monotonic()
        asyncio.run(shutdown())  # no RuntimeError out of close
        assert time.monotonic() - started < 10
        assert other_pool.closed  # closed on its own loop, by a helper thread
        assert pools[0].closed
        assert settles_at(own_url, before) == before  # every connection released
        assert no_helper_threads()
        other.run_until_complete(asyncio.sleep(0))  # the idle loop still runs afterwards
    finally:
        other.close()


@pytest.mark.parametrize("how", ["await aclose", "sync close in a coroutine"])
# Closing a loop with tasks pending (its pool's workers wait there) makes asyncio complain
# when they are collected: that is the loop's owner's doing, not what is tested here.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_close_from_another_loop_after_the_idle_loop_closed(
    cm: ContextManager, own_url: str, how: str
) -> None:
    before = connections(own_url)
    other = asyncio.new_event_loop()
    other.run_until_complete(cm.aadd_user_message("s1", "from the loop closed next"))
    other.close()  # its tasks, the pool's among them, died with it
    del other

    async def shutdown() -> None:
        await cm.aadd_user_message("s1", "from the running loop")
        if how == "await aclose":
            await cm.aclose()
        else:
            cm.close()

    asyncio.run(shutdown())
    assert settles_at(own_url, before) == before  # the closed loop's connections too
    gc.collect()  # (the dead loop's tasks: their complaints, ignored, go to this test)


def test_sync_close_outside_any_loop_still_runs_the_idle_loop_in_place(
    cm: ContextManager, own_url: str
) -> None:
    before = connections(own_url)
    other, other_pool = use_from_idle_loop(cm)
    try:
        cm.close()  # no loop runs here: the idle loop closes its pool, in this thread
        assert other_pool.closed
        assert settles_at(own_url, before) == before
    finally:
        other.close()


def test_a_short_asyncio_run_opens_one_connection_and_logs_no_error(
    cm: ContextManager, caplog: pytest.LogCaptureFixture
) -> None:
    """Its pool opens no second connection that the loop's end would cut off.

    With ``min_size=1`` the pool started connecting when opened and the first call, finding
    no connection ready, grew it by a second: often still connecting when ``asyncio.run``
    ended, cancelled, logged as ``error connecting in 'ctx_memory-<schema>':`` (no reason).
    """
    cm.add_user_message("s1", "hello")
    store = cm.store
    assert isinstance(store, PostgresStore)
    pools: list[Any] = []

    async def job() -> None:
        await cm.aget_history("s1")
        pools.append(store._apools[asyncio.get_running_loop()])

    with caplog.at_level(logging.WARNING, logger="psycopg.pool"):
        for _ in range(10):
            asyncio.run(job())
    assert [pool.get_stats().get("connections_num") for pool in pools] == [1] * 10
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []
    assert all(pool.closed for pool in pools)


def test_concurrent_calls_in_short_runs_log_no_cancelled_connect(
    cm: ContextManager, own_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Concurrent calls grow the pool; a connection still opening when the run ends is
    cancelled with the loop, which is no error to log. Nothing stays open either."""
    cm.add_user_message("s1", "hello")
    before = connections(own_url)

    async def job() -> None:
        await asyncio.gather(*(cm.aget_history("s1") for _ in range(4)))

    with caplog.at_level(logging.WARNING, logger="psycopg.pool"):
        for _ in range(15):
            asyncio.run(job())
    assert [r.getMessage() for r in caplog.records if r.name.startswith("psycopg")] == []
    assert settles_at(own_url, before) == before
