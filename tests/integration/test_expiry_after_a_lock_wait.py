"""A write that waited for another writer judges expiry by the time it got the lock.

SQLite waits for the file's write lock (another process's transaction), PostgreSQL for the
session's row lock. A write that read its clock before the wait would append to a session
that expired while it waited (bringing its history back) and, after a wait longer than the
session had left, set an expiry already past: the acknowledged message gone at the next
read. Memory and Redis run a write in one step, so they never wait holding a stale time.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import pytest

from ctx_memory import ContextManager

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TTL = 1.0


def _sqlite(tmp_path: Path) -> tuple[ContextManager, Any]:
    from ctx_memory.stores.sqlite import SqliteStore

    path = str(tmp_path / "s.db")
    store = SqliteStore(path, ttl_seconds=TTL)

    @contextmanager
    def hold(session_id: str, seconds: float) -> Iterator[None]:
        """Another connection holds the file's write lock for ``seconds``."""
        other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        other.execute("BEGIN IMMEDIATE")
        releaser = threading.Timer(seconds, lambda: other.execute("COMMIT"))
        releaser.start()
        try:
            yield
        finally:
            releaser.join()
            other.close()

    return ContextManager(store=store), hold


def _postgres(
    postgres_url: str, pg_schema: str, *, write: bool = False
) -> tuple[ContextManager, Any]:
    import psycopg

    from ctx_memory.stores.postgres import PostgresStore

    store = PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=TTL)

    @contextmanager
    def hold(session_id: str, seconds: float) -> Iterator[None]:
        """Another transaction holds the session's row for ``seconds``: locked only, or
        written (as another ctx_memory write holds it: the waiting statement is evaluated
        again on the row written)."""
        other = psycopg.connect(postgres_url)
        held = "UPDATE {}.sessions SET last_access = last_access WHERE id = %s"
        if not write:
            held = "SELECT 1 FROM {}.sessions WHERE id = %s FOR UPDATE"
        other.execute(held.format(f'"{pg_schema}"'), (session_id,))
        releaser = threading.Timer(seconds, other.commit)
        releaser.start()
        try:
            yield
        finally:
            releaser.join()
            other.close()

    return ContextManager(store=store), hold


@pytest.fixture(params=["sqlite", "postgres", "postgres-written"])
def waiting(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[ContextManager, Any]]:
    if request.param == "sqlite":
        manager, hold = _sqlite(tmp_path)
    else:
        url, schema = (request.getfixturevalue(name) for name in ("postgres_url", "pg_schema"))
        manager, hold = _postgres(url, schema, write=request.param == "postgres-written")
    yield manager, hold
    manager.close()


def test_a_wait_past_the_expiry_starts_the_session_afresh(
    waiting: tuple[ContextManager, Any],
) -> None:
    """The session expires during the wait: the write finds it expired, not live."""
    manager, hold = waiting
    manager.add_user_message("s", "old")
    with hold("s", TTL * 1.6):
        time.sleep(0.05)
        started = time.monotonic()
        manager.add_user_message("s", "new")
        assert time.monotonic() - started > TTL  # it did wait, past the expiry
    assert [m["content"] for m in manager.get_history("s")] == ["new"]


def test_the_expiry_a_waiting_write_sets_counts_from_the_lock(
    waiting: tuple[ContextManager, Any],
) -> None:
    """The session was live when the write began; the write slides the TTL from when it
    holds the lock, so its message is there after it returns."""
    manager, hold = waiting
    manager.add_user_message("s", "first")
    with hold("s", TTL * 0.6):
        manager.add_user_message("s", "second")
    time.sleep(TTL * 0.6)  # 1.2 TTL after the first write, 0.6 after the second's lock
    assert [m["content"] for m in manager.get_history("s")] == ["first", "second"]


def test_an_async_append_that_waited_is_made_again_after_the_lock(
    postgres_url: str, pg_schema: str
) -> None:
    """The async store takes the same way back from the fast path (``lock_not_available``)."""
    manager, hold = _postgres(postgres_url, pg_schema)
    try:
        manager.add_user_message("s", "old")
        with hold("s", TTL * 1.6):
            asyncio.run(manager.aadd_user_message("s", "new"))
        assert [m["content"] for m in manager.get_history("s")] == ["new"]
        assert manager.get_context("s")["metadata"]["message_count"] == 1
    finally:
        manager.close()


def test_a_fast_append_made_again_keeps_the_pool(postgres_url: str, pg_schema: str) -> None:
    """``lock_not_available`` is one of psycopg's ``OperationalError``s, which replace the
    pool (a lost server): the append made again must not close it under other callers."""
    manager, hold = _postgres(postgres_url, pg_schema)
    store: Any = manager.store
    try:
        manager.add_user_message("s", "first")
        pool = store._pool
        with hold("s", 0.3):
            manager.add_user_message("s", "second")
        assert store._pool is pool
        assert not pool.closed
        assert [m["content"] for m in manager.get_history("s")] == ["first", "second"]
    finally:
        manager.close()


def test_a_delete_that_waited_past_the_expiry_finds_the_session_expired(
    waiting: tuple[ContextManager, Any],
) -> None:
    manager, hold = waiting
    manager.add_user_message("s", "old")
    events: list[str] = []
    manager.on(None, lambda event: events.append(event.type))
    with hold("s", TTL * 1.6):
        time.sleep(0.05)
        assert manager.delete_context("s") is False  # it had expired by then
    assert "session_expired" in events
    assert "session_deleted" not in events


def test_a_session_made_before_a_long_eviction_wait_is_not_collected_by_it(
    postgres_url: str, pg_schema: str
) -> None:
    """With a session limit, a creator waits for the others (an advisory lock) before it
    evicts; a wait longer than the TTL must not make it collect the session it made."""
    import psycopg

    from ctx_memory.stores._postgres_sql import SchemaSql
    from ctx_memory.stores.postgres import PostgresStore

    store = PostgresStore(postgres_url, schema=pg_schema, ttl_seconds=TTL, max_sessions=5)
    manager = ContextManager(store=store)
    try:
        manager.add_user_message("first", "hi")  # the schema made
        with psycopg.connect(postgres_url) as other:
            other.execute("SELECT pg_advisory_xact_lock(%s)", (SchemaSql(pg_schema).lock_key,))
            releaser = threading.Timer(TTL * 1.5, other.commit)
            releaser.start()
            manager.add_user_message("new", "hello")
            manager.update_metadata("meta", mode="research")
            releaser.join()
        assert [m["content"] for m in manager.get_history("new")] == ["hello"]
        assert manager.get_metadata("meta")["mode"] == "research"
        with psycopg.connect(postgres_url) as conn:
            orphans = conn.execute(
                f'SELECT count(*) FROM "{pg_schema}".messages AS m WHERE NOT EXISTS '
                f'(SELECT 1 FROM "{pg_schema}".sessions AS s WHERE s.sk = m.sk)'
            ).fetchone()
        assert orphans == (0,)
    finally:
        manager.close()
