"""The background garbage collector on real Redis (one server and a Cluster) and SQLite.

With ``GARBAGE_COLLECTION`` on and a TTL, a store built from settings runs ``gc()`` every
``GC_INTERVAL_SECONDS``: sessions nobody touches again leave the Redis index (and SQLite's
tables) and ``session_expired`` is reported once, whichever process's collector found
them. The thread stops on ``close()``, survives a server that is down or a database that
is locked, and never starts with ``GARBAGE_COLLECTION = false``.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import sqlite3
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.cluster

from ctx_memory import ConfigurationError, ContextManager
from ctx_memory.config import load_settings
from ctx_memory.stores import create_store
from ctx_memory.stores.base import MAX_TTL_SECONDS
from ctx_memory.stores.redis import RedisStore, index_key
from ctx_memory.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator
    from pathlib import Path

    from conftest import RedisServer

    from ctx_memory.stores.base import BaseStore

GC_LOGGER = "ctx_memory.stores._gc"
SECRET = "gc-Pa55-w0rd"


def wait_for(done: Callable[[], bool], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, f"timed out waiting until {what}"
        time.sleep(0.02)


def gc_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if t.name == "ctx-memory-gc"}


def add_sessions(store: BaseStore, ids: list[str]) -> None:
    cm = ContextManager(store=store, token_counter="approximate")
    for sid in ids:
        cm.add_user_message(sid, f"hello from {sid}")


def expiries(store: BaseStore) -> list[str]:
    """The ids of the ``session_expired`` events ``store`` reports from now on."""
    seen: list[str] = []
    store.add_lifecycle_hook(
        lambda kind, sid: seen.append(sid) if kind == "session_expired" else None
    )
    return seen


def indexed(store: BaseStore) -> int:
    """How many sessions the backend itself still holds (read around the store's API)."""
    if isinstance(store, RedisStore):
        client: Any = store.client
        return int(client.zcard(index_key(store.prefix)))
    assert isinstance(store, SqliteStore)
    with sqlite3.connect(store.path) as conn:
        return int(conn.execute("SELECT count(*) FROM sessions").fetchone()[0])


@pytest.mark.stores("sqlite", "redis", "cluster")
def test_expired_sessions_leave_the_index_reported_once(
    make_store: Callable[..., BaseStore],
) -> None:
    store = make_store(ttl_seconds=0.5, gc_interval_seconds=0.05)
    seen = expiries(store)
    ids = [f"user-{i}" for i in range(12)]
    add_sessions(store, ids)
    assert indexed(store) == len(ids)

    # Nobody reads or writes them again: only the collector can find them expired.
    wait_for(lambda: indexed(store) == 0, "the collector empties the index")
    wait_for(lambda: len(seen) == len(ids), "every expiry is reported")
    time.sleep(0.3)  # several more collections: nothing is reported twice
    assert sorted(seen) == sorted(ids)
    assert store.list_sessions() == []
    assert store.gc() == 0


@pytest.mark.stores("sqlite", "redis", "cluster")
def test_each_expiry_is_reported_by_one_process(make_store: Callable[..., BaseStore]) -> None:
    stores = [make_store(ttl_seconds=0.5, gc_interval_seconds=0.03) for _ in range(3)]
    heard = [expiries(store) for store in stores]
    ids = [f"s{i}" for i in range(30)]
    add_sessions(stores[0], ids)
    wait_for(lambda: sum(map(len, heard)) >= len(ids), "every expiry is reported")
    time.sleep(0.3)
    reported = [sid for events in heard for sid in events]
    assert sorted(reported) == sorted(ids)  # once in all, whichever collector found it
    assert indexed(stores[0]) == 0


@pytest.mark.stores("memory", "sqlite", "redis", "cluster")
async def test_the_thread_stops_on_close(make_store: Callable[..., BaseStore]) -> None:
    before = gc_threads()
    store: Any = make_store(ttl_seconds=60, gc_interval_seconds=0.01)
    (thread,) = gc_threads() - before
    assert store.gc_running
    add_sessions(store, ["s"])
    await asyncio.sleep(0.05)  # a few collections run
    store.close()
    assert not thread.is_alive()
    assert not store.gc_running
    store.close()  # idempotent

    other: Any = make_store(ttl_seconds=60, gc_interval_seconds=0.01)
    (thread,) = gc_threads() - before
    await other.aclose()
    assert not thread.is_alive()
    assert gc_threads() <= before  # none started (one of an earlier test may end meanwhile)


@pytest.mark.stores("sqlite", "redis")
def test_no_thread_without_an_interval(make_store: Callable[..., BaseStore]) -> None:
    before = gc_threads()
    store: Any = make_store(ttl_seconds=60)
    assert not store.gc_running
    assert gc_threads() <= before  # none started (one of an earlier test may end meanwhile)


def test_a_store_dropped_without_close_ends_its_thread() -> None:
    before = gc_threads()
    store = SqliteStore(":memory:", ttl_seconds=60, gc_interval_seconds=0.01)
    (thread,) = gc_threads() - before
    del store
    gc.collect()
    thread.join(5)
    assert not thread.is_alive()


# ---------------------------------------------------------------- from settings


@pytest.fixture
def settings_store(
    request: pytest.FixtureRequest, key_prefix: str, tmp_path: Path
) -> Iterator[Callable[..., BaseStore]]:
    """``create_store(load_settings(store=<kind>, **overrides))`` on the test's backend."""
    kind: str = request.param
    made: list[BaseStore] = []
    url = request.getfixturevalue("redis_url") if kind == "redis" else ""

    def build(**overrides: Any) -> BaseStore:
        backend: dict[str, Any] = (
            {"redis_url": url, "redis_key_prefix": key_prefix}
            if kind == "redis"
            else {"sqlite_path": str(tmp_path / "gc.sqlite3")}
        )
        settings = load_settings(root=tmp_path, store=kind, **backend, **overrides)
        store = create_store(settings)
        made.append(store)
        return store

    yield build
    for store in made:
        store.close()
    if kind == "redis":
        client = redis.Redis.from_url(url)
        for key in client.scan_iter(match=f"{key_prefix}:*"):
            client.delete(key)
        client.close()


@pytest.mark.parametrize(
    "settings_store",
    [pytest.param("sqlite"), pytest.param("redis", marks=pytest.mark.redis)],
    indirect=True,
)
def test_settings_run_the_collector(settings_store: Callable[..., BaseStore]) -> None:
    before = gc_threads()
    store: Any = settings_store(session_expiration_seconds=0.5, gc_interval_seconds=0.05)
    assert store.gc_running
    seen = expiries(store)
    add_sessions(store, ["a", "b"])
    wait_for(lambda: sorted(seen) == ["a", "b"], "the collector reports both expiries")
    assert indexed(store) == 0
    store.close()
    assert gc_threads() <= before  # none started (one of an earlier test may end meanwhile)


@pytest.mark.parametrize(
    "settings_store",
    [pytest.param("sqlite"), pytest.param("redis", marks=pytest.mark.redis)],
    indirect=True,
)
def test_garbage_collection_false_never_collects(
    settings_store: Callable[..., BaseStore],
) -> None:
    before = gc_threads()
    store: Any = settings_store(
        garbage_collection=False, session_expiration_seconds=0.3, gc_interval_seconds=0.02
    )
    assert not store.gc_running
    assert gc_threads() <= before  # none started (one of an earlier test may end meanwhile)
    seen = expiries(store)
    add_sessions(store, ["a"])
    time.sleep(0.8)  # expired, and many intervals went by
    assert seen == []
    assert indexed(store) == 1  # nobody cleaned it up
    assert store.gc() == 1  # until someone calls gc()
    assert seen == ["a"]

    without_ttl: Any = settings_store(time_based_expiration=False, gc_interval_seconds=0.02)
    assert not without_ttl.gc_running  # nothing expires: nothing to collect
    assert gc_threads() <= before  # none started (one of an earlier test may end meanwhile)


# ---------------------------------------------------------------- failures


@pytest.mark.redis
def test_redis_down_the_collector_logs_and_keeps_going(
    redis_server_factory: Callable[..., RedisServer],
    key_prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    server = redis_server_factory("--requirepass", SECRET)
    url = f"redis://:{SECRET}@127.0.0.1:{server.port}/0"
    caplog.set_level(logging.WARNING, logger=GC_LOGGER)
    store = RedisStore(
        url,
        key_prefix=key_prefix,
        ttl_seconds=0.5,
        gc_interval_seconds=0.05,
        max_retries=0,
        socket_timeout=0.5,
    )
    try:
        seen = expiries(store)
        add_sessions(store, ["before"])
        server.stop()

        def failures() -> list[logging.LogRecord]:
            return [r for r in caplog.records if r.name == GC_LOGGER]

        wait_for(lambda: len(failures()) >= 3, "three failed collections are logged")
        assert store.gc_running
        for record in failures():
            assert record.levelno == logging.WARNING
            assert "unavailable" in record.getMessage()
            assert SECRET not in record.getMessage()
            assert "***" in record.getMessage()

        server.start()  # empty: the server keeps nothing on disk
        add_sessions(store, ["after"])
        wait_for(lambda: "after" in seen, "the collector reports an expiry again")
        assert seen == ["after"]
        assert indexed(store) == 0
    finally:
        store.close()
    assert not store.gc_running


def test_sqlite_locked_the_collector_logs_and_keeps_going(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = str(tmp_path / "locked.sqlite3")
    caplog.set_level(logging.WARNING, logger=GC_LOGGER)
    store = SqliteStore(path, ttl_seconds=0.3, gc_interval_seconds=0.05, busy_timeout=0.05)
    locker = sqlite3.connect(path, isolation_level=None)
    try:
        seen = expiries(store)
        add_sessions(store, ["a"])
        locker.execute("BEGIN EXCLUSIVE")  # another process holds the write lock
        wait_for(
            lambda: len([r for r in caplog.records if r.name == GC_LOGGER]) >= 3,
            "three failed collections are logged",
        )
        assert "locked" in caplog.records[-1].getMessage()
        assert seen == []
        assert store.gc_running
        locker.execute("COMMIT")
        wait_for(lambda: seen == ["a"], "the collector deletes the expired session")
        assert indexed(store) == 0
    finally:
        locker.close()
        store.close()


def test_a_failing_hook_is_logged_and_collection_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=GC_LOGGER)
    store = SqliteStore(str(tmp_path / "hook.sqlite3"), ttl_seconds=0.2, gc_interval_seconds=0.05)
    calls: list[str] = []

    def hook(kind: str, sid: str) -> None:
        calls.append(sid)
        if len(calls) == 1:
            raise RuntimeError("listener bug")

    try:
        store.add_lifecycle_hook(hook)
        add_sessions(store, ["first"])
        wait_for(lambda: calls == ["first"], "the first expiry reaches the hook")
        add_sessions(store, ["second"])
        wait_for(lambda: calls == ["first", "second"], "the collector still runs")
        (record,) = [r for r in caplog.records if r.name == GC_LOGGER]
        assert record.exc_info is not None
        assert "listener bug" in str(record.exc_info[1])
    finally:
        store.close()


def test_the_longest_interval_runs_and_a_longer_one_is_refused() -> None:
    """Up to ten years (as a TTL) the collector waits; beyond, the store refuses to open."""
    store = SqliteStore(":memory:", ttl_seconds=60, gc_interval_seconds=MAX_TTL_SECONDS)
    try:
        time.sleep(0.05)
        assert store.gc_running  # waiting, not crashed
    finally:
        store.close()
    with pytest.raises(ConfigurationError, match="GC_INTERVAL_SECONDS"):
        SqliteStore(":memory:", ttl_seconds=60, gc_interval_seconds=MAX_TTL_SECONDS + 1)
    with pytest.raises(ConfigurationError, match="GC_INTERVAL_SECONDS"):  # a busy loop
        SqliteStore(":memory:", ttl_seconds=60, gc_interval_seconds=0.001)
