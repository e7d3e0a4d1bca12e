"""Several processes (or many threads and tasks) writing one session at once, on Redis,
Redis Cluster, SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
from redis_workers import append_worker, build_manager, merge_worker, publish_worker

from ctx_memory import ContextManager
from ctx_memory.stores.redis import RedisStore

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore

pytestmark = pytest.mark.slow


def _spec(store: BaseStore, tmp_path: Any) -> dict[str, Any]:
    if isinstance(store, RedisStore):
        kind = "cluster" if store.cluster else "redis"
        return {"kind": kind, "url": store._url, "prefix": store.prefix}
    return {"kind": "sqlite", "path": str(tmp_path / "ctx.sqlite3")}


def _run(target: Callable[..., None], jobs: list[tuple[Any, ...]]) -> None:
    # fork: the children reuse the parent's imports (spawn would re-import LangChain, ~1 s
    # each); every child builds its own store and connections.
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=target, args=args) for args in jobs]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0


@pytest.mark.stores("redis", "cluster", "sqlite")
def test_four_processes_append_to_one_session(
    make_store: Callable[..., BaseStore], tmp_path: Any
) -> None:
    store = make_store()
    spec = _spec(store, tmp_path)
    _run(append_worker, [(spec, w, 500, "shared {session}") for w in range(4)])
    messages = store.get_messages("shared {session}")
    assert len(messages) == 2000
    header = store.get_header("shared {session}")
    assert header is not None
    assert header["metadata"]["message_count"] == 2000
    assert header["metadata"]["token_count"] == sum(m["token_count"] for m in messages)
    for w in range(4):
        mine = [m["content"] for m in messages if m["content"].startswith(f"{w}:")]
        assert mine == [f"{w}:{i}" for i in range(500)]


@pytest.mark.stores("redis", "cluster", "sqlite")
def test_concurrent_partial_updates_keep_every_key(
    make_store: Callable[..., BaseStore], tmp_path: Any
) -> None:
    store = make_store()
    spec = _spec(store, tmp_path)
    _run(merge_worker, [(spec, w, 60, "merge") for w in range(4)])
    header = store.get_header("merge")
    assert header is not None
    assert header["shared"] == {
        "agents": {f"w{w}": {f"k{i}": i for i in range(60)} for w in range(4)}
    }


@pytest.mark.stores("redis", "cluster")
def test_events_reach_another_process(make_store: Callable[..., BaseStore], tmp_path: Any) -> None:
    store = make_store()
    assert isinstance(store, RedisStore)
    received: list[dict[str, Any]] = []
    with store.subscribe_events(received.append):
        time.sleep(0.2)  # the subscription is live
        _run(publish_worker, [(_spec(store, tmp_path), "evt")])
        deadline = time.monotonic() + 10
        while len(received) < 4 and time.monotonic() < deadline:
            time.sleep(0.02)
    kinds = [e["type"] for e in received]
    assert kinds == ["session_created", "message_added", "context_updated", "session_deleted"]
    assert {e["session_id"] for e in received} == {"evt"}
    assert received[1]["data"]["count"] == 1
    assert received[1]["data"]["roles"] == ["user"]


@pytest.mark.stores("redis", "cluster")
def test_published_events_are_the_in_process_events(
    make_store: Callable[..., BaseStore], tmp_path: Any
) -> None:
    """Other processes receive exactly what this process's listeners got (Event.to_dict)."""
    store = make_store()
    assert isinstance(store, RedisStore)
    spec = {**_spec(store, tmp_path), "publish": True, "max_sessions": 1}
    received: list[dict[str, Any]] = []
    local: list[dict[str, Any]] = []
    with store.subscribe_events(received.append):
        time.sleep(0.2)
        cm = build_manager(spec)
        cm.on(None, lambda event: local.append(event.to_dict()))
        cm.add_user_message("same", "hello")
        cm.add_fetched_context("same", "web", "page", url="https://a.example")
        cm.update_metadata("same", mode="research")
        cm.clear("same", preserve_fetched=True)
        cm.add_user_message("other", "evicts same")  # an eviction: the store reports it
        cm.delete_context("other")
        cm.close()  # publishes what is queued before it returns
        deadline = time.monotonic() + 10
        while len(received) < len(local) and time.monotonic() < deadline:
            time.sleep(0.02)
    assert "session_evicted" in [event["type"] for event in local]
    assert len(local) == 9
    assert received == local  # timestamps included: the eviction's too


@pytest.mark.stores("redis", "cluster", "sqlite", "postgres")
def test_more_calls_at_once_than_the_pool_has_connections(
    make_store: Callable[..., BaseStore],
) -> None:
    """200 asyncio tasks and 150 threads appending at once: every message is stored.

    redis-py's pool gives at most 100 connections (``max_connections``) and raised "Too
    many connections" for the rest; the store's calls now wait for a free connection.
    """
    manager = ContextManager(store=make_store())
    manager.add_user_message("warm {s}", "the store's first call is done")

    async def tasks() -> list[Any]:
        calls = (manager.aadd_user_message("tasks {s}", f"m{i}") for i in range(200))
        return await asyncio.gather(*calls, return_exceptions=True)

    assert [r for r in asyncio.run(tasks()) if isinstance(r, BaseException)] == []
    assert sorted(r["content"] for r in manager.get_history("tasks {s}")) == sorted(
        f"m{i}" for i in range(200)
    )

    errors: list[BaseException] = []
    barrier = threading.Barrier(150)

    def work(i: int) -> None:
        barrier.wait()
        try:
            manager.add_user_message("threads {s}", f"t{i}")
        except BaseException as e:  # collected, asserted below
            errors.append(e)

    workers = [threading.Thread(target=work, args=(i,)) for i in range(150)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(60)
    assert errors == []
    assert len(manager.get_history("threads {s}")) == 150
    store = manager.store
    if isinstance(store, RedisStore):  # after the burst the pool still has connections to lend
        assert store.client.ping()


@pytest.mark.stores("cluster")
def test_a_new_event_loops_first_calls_go_to_the_slots_owner(
    make_store: Callable[..., BaseStore],
) -> None:
    """The first calls on a new loop's cluster client are routed by slot, never at random.

    redis-py's asyncio cluster client sent a command that arrived before its slot map was
    loaded to a random node; each MOVED reply counted towards resetting the map, which
    closed every connection in flight (``'NoneType' object has no attribute
    'writelines'`` in the other calls). The server counts each MOVED as a rejected call.
    """
    store = make_store()
    assert isinstance(store, RedisStore)
    manager = ContextManager(store=store)
    manager.add_user_message("routed {s}", "created")
    nodes = [node.redis_connection for node in store.client.get_nodes()]

    def rejected() -> int:
        stats = [n.info("commandstats").get("cmdstat_evalsha", {}) for n in nodes]
        return sum(int(s.get("rejected_calls", 0)) for s in stats)

    before = rejected()
    for n in range(3):  # a new event loop, a new client, each time

        async def burst(n: int = n) -> list[Any]:
            calls = [manager.aadd_user_message("routed {s}", f"m{n}.{i}") for i in range(30)]
            results = await asyncio.gather(*calls, return_exceptions=True)
            # A node failure resets the client's slot map (redis-py's aclose): the calls
            # after it are routed by slot too, once the map is loaded again.
            await store.async_client.aclose()
            calls = [manager.aadd_user_message("routed {s}", f"m{n}.{i}") for i in range(30, 60)]
            return results + await asyncio.gather(*calls, return_exceptions=True)

        assert [r for r in asyncio.run(burst()) if isinstance(r, BaseException)] == []
    assert rejected() == before
    assert len(manager.get_history("routed {s}")) == 181
