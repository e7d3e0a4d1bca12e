"""Nothing lost, nothing duplicated: retries, stalls, concurrent writers and listings.

Every store is held to the same promises: a message id is stored once whatever retries
or writers do, a stalled Redis server (``DEBUG SLEEP``) behind a client that retries
stores no duplicate, every expiry is reported once however many processes list, and
every manager sharing a store hears its lifecycle events.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import multiprocessing
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.cluster
from langchain_core.messages import AIMessage, HumanMessage
from redis_workers import list_worker

from ctx_memory.errors import StoreError
from ctx_memory.events import EventType
from ctx_memory.manager import ContextManager
from ctx_memory.stores.redis import RedisStore, session_keys

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.events import Event
    from ctx_memory.stores.base import BaseStore


def manager(store: BaseStore) -> ContextManager:
    return ContextManager(store=store, token_counter="approximate")


# ------------------------------------------------------------------ ids, every store


def test_an_id_already_in_the_session_is_a_no_op(make_store: Callable[..., BaseStore]) -> None:
    cm = manager(make_store())
    events: list[Event] = []
    cm.on(EventType.MESSAGE_ADDED, events.append)
    question = HumanMessage("where to?", id="q1")
    cm.add_messages("s", [question])
    tokens = cm.get_metadata("s")["token_count"]
    cm.add_messages("s", [question])  # a retry, an agent re-sending its state, ...
    cm.add_messages("s", [question, AIMessage("Paris", id="a1"), AIMessage("Paris", id="a1")])
    history = cm.get_history("s")
    assert [r["id"] for r in history] == ["q1", "a1"]
    meta = cm.get_metadata("s")
    assert meta["message_count"] == 2
    assert meta["token_count"] == tokens + history[1]["token_count"]
    assert [e.data["count"] for e in events] == [1, 1]  # one event per new message


def test_every_message_gets_an_id(make_store: Callable[..., BaseStore]) -> None:
    cm = manager(make_store())
    cm.add_user_message("s", "hi")
    cm.add_messages("s", [HumanMessage("no id"), {"role": "assistant", "content": "dict"}])
    ids = [r["id"] for r in cm.get_history("s")]
    assert len(set(ids)) == 3
    assert all(isinstance(i, str) and i for i in ids)


def test_clear_forgets_the_ids_with_the_history(make_store: Callable[..., BaseStore]) -> None:
    cm = manager(make_store())
    cm.add_messages("s", [HumanMessage("a", id="x")])
    cm.clear("s")
    cm.add_messages("s", [HumanMessage("a again", id="x")])
    assert [r["content"] for r in cm.get_history("s")] == ["a again"]
    assert cm.get_metadata("s")["message_count"] == 1


def test_import_keeps_each_id_once(make_store: Callable[..., BaseStore]) -> None:
    cm = manager(make_store())
    cm.add_messages("s", [HumanMessage("a", id="x"), AIMessage("b", id="y")])
    document = cm.get_context("s")
    document["conversation_history"].append(dict(document["conversation_history"][0]))
    cm.import_session(document, session_id="copy")
    assert [r["id"] for r in cm.get_history("copy")] == ["x", "y"]
    assert cm.get_metadata("copy")["message_count"] == 2
    cm.add_messages("copy", [HumanMessage("a", id="x")])
    assert cm.get_metadata("copy")["message_count"] == 2


def test_concurrent_writers_repeating_each_others_messages(
    make_store: Callable[..., BaseStore],
) -> None:
    """16 threads each append the same 30 messages (ids shared): each is stored once."""
    cm = manager(make_store())
    messages = [HumanMessage(f"m{i}", id=f"id-{i}") for i in range(30)]

    def writer(offset: int) -> None:
        for i in range(30):
            cm.add_messages("s", [messages[(i + offset) % 30]])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    history = cm.get_history("s")
    assert sorted(r["id"] for r in history) == sorted(m.id for m in messages)  # type: ignore[misc]
    assert cm.get_metadata("s")["message_count"] == 30


# ------------------------------------------------------------------ a stalled Redis


def _stall(store: RedisStore, session_id: str, seconds: int) -> None:
    """Block the server holding ``session_id`` for ``seconds`` (DEBUG SLEEP)."""
    h = session_keys(store.prefix, session_id).h
    if store.cluster:
        client: Any = store.client
        node = client.get_node_from_key(h)
        admin = redis.Redis(host=node.host, port=node.port)
    else:
        kwargs = store.client.connection_pool.connection_kwargs  # type: ignore[union-attr]
        admin = redis.Redis(host=kwargs["host"], port=kwargs["port"])
    try:
        admin.execute_command("DEBUG", "SLEEP", seconds)
    finally:
        admin.close()


@pytest.mark.stores("redis", "cluster")
@pytest.mark.parametrize("writers", [10, 40])
def test_stalled_server_stores_no_duplicates(
    make_store: Callable[..., BaseStore], writers: int
) -> None:
    """The issue's reproduction: writers retrying through a DEBUG SLEEP store each id once."""
    store = make_store(max_retries=3, socket_timeout=0.5)
    assert isinstance(store, RedisStore)
    cm = manager(store)
    cm.create_session("s")
    acknowledged: list[str] = []
    failed: list[BaseException] = []
    lock = threading.Lock()
    go = threading.Event()

    def writer(w: int) -> None:
        go.wait()
        for i in range(6):
            try:
                record = cm.add_user_message("s", f"w{w}-{i}")
            except StoreError as e:  # gave up after its retries: allowed, but never twice
                with lock:
                    failed.append(e)
            else:
                with lock:
                    acknowledged.append(record["id"])

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    for t in threads:
        t.start()
    staller = threading.Thread(target=_stall, args=(store, "s", 2))
    go.set()
    time.sleep(0.01)
    staller.start()
    for t in threads:
        t.join()
    staller.join()
    history = cm.get_history("s")
    ids = [r["id"] for r in history]
    assert len(ids) == len(set(ids)), f"{len(ids) - len(set(ids))} duplicate messages"
    assert set(acknowledged) <= set(ids)  # nothing acknowledged was lost
    assert cm.get_metadata("s")["message_count"] == len(history)
    assert len(acknowledged) + len(failed) == writers * 6


# ------------------------------------------------------------------ events


def test_evictions_are_logged(
    make_store: Callable[..., BaseStore], caplog: pytest.LogCaptureFixture
) -> None:
    cm = manager(make_store(max_sessions=1))
    with caplog.at_level("INFO", logger="ctx_memory"):
        cm.add_user_message("a", "hi")
        cm.add_user_message("b", "hi")
    assert any("'a' evicted" in r.getMessage() for r in caplog.records)


@pytest.mark.stores("redis", "cluster")
def test_four_processes_listing_report_each_expiry_once(
    make_store: Callable[..., BaseStore], key_prefix: str, request: pytest.FixtureRequest
) -> None:
    store = make_store(ttl_seconds=0.3)
    assert isinstance(store, RedisStore)
    cm = manager(store)
    sessions = [f"s{i}" for i in range(60)]
    for sid in sessions:
        cm.add_user_message(sid, "soon gone")
    time.sleep(0.5)
    url = request.getfixturevalue("redis_cluster_url" if store.cluster else "redis_url")
    spec = {"kind": "cluster" if store.cluster else "redis", "url": url, "prefix": key_prefix}
    ctx = multiprocessing.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=list_worker, args=(spec, start, results)) for _ in range(4)]
    for p in procs:
        p.start()
    time.sleep(0.3)
    start.set()
    reported: list[str] = []
    for _ in procs:
        reported += results.get(timeout=30)
    for p in procs:
        p.join(30)
    assert sorted(reported) == sorted(sessions)  # each expiry once, across the processes
    assert cm.list_sessions() == []


@pytest.mark.stores("cluster")
def test_cluster_create_and_delete_racing_with_listing_leave_no_live_session_unindexed(
    make_store: Callable[..., BaseStore],
) -> None:
    store = make_store()
    lister = make_store()
    cm = manager(store)
    stop = threading.Event()

    def list_forever() -> None:
        while not stop.is_set():
            lister.list_sessions()

    listing = threading.Thread(target=list_forever)
    listing.start()
    try:
        for round_ in range(150):
            sid = f"r{round_ % 5}"
            cm.add_user_message(sid, "x")
            cm.delete_context(sid)
            cm.add_user_message(sid, "y")
    finally:
        stop.set()
        listing.join()
    live = [f"r{i}" for i in range(5) if cm.session_exists(f"r{i}")]
    assert live == [f"r{i}" for i in range(5)]
    assert lister.list_sessions() == live


# ------------------------------------------------------------------ asyncio clients


@pytest.mark.stores("redis")
def test_one_async_client_per_event_loop_all_closed(
    make_store: Callable[..., BaseStore], redis_url: str
) -> None:
    store = make_store()
    assert isinstance(store, RedisStore)
    admin = redis.Redis.from_url(redis_url)
    before = len(admin.client_list())
    loops = [asyncio.new_event_loop() for _ in range(2)]
    for round_ in range(4):  # two loops taking turns keep their own client
        for n, loop in enumerate(loops):
            loop.run_until_complete(
                store.aappend_messages(
                    "s", [_msg(f"{round_}-{n}")], init=_init("s"), now="2026-01-01T00:00:00Z"
                )
            )
    assert store.async_client_count == 2
    assert store.count_messages("s") == 8
    loops[0].run_until_complete(store.aclose())  # closes its own client and the other's
    assert store.async_client_count == 0
    for loop in loops:
        loop.close()
    deadline = time.monotonic() + 5
    while len(admin.client_list()) > before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(admin.client_list()) <= before
    admin.close()


@pytest.mark.stores("redis")
def test_clients_of_closed_event_loops_are_released(
    make_store: Callable[..., BaseStore], redis_url: str
) -> None:
    store = make_store()
    assert isinstance(store, RedisStore)
    admin = redis.Redis.from_url(redis_url)
    for _ in range(5):  # asyncio.run: a new loop each time, closed at the end
        asyncio.run(store.aexists("s"))
    assert store.async_client_count == 1  # only the last loop's client is left
    store.close()
    assert store.async_client_count == 0
    admin.close()


@pytest.mark.stores("redis", "cluster")
def test_released_clients_are_not_reported_unclosed(
    make_store: Callable[..., BaseStore], caplog: pytest.LogCaptureFixture
) -> None:
    """A client released with its loop counts as closed: redis-py reports nothing on it."""
    store = make_store()

    async def call() -> None:
        await store.aexists("s")
        gc.collect()  # the previous loop's client goes now, while a loop runs

    with caplog.at_level(logging.WARNING):
        for _ in range(6):
            asyncio.run(call())
    store.close()
    reported = [r.getMessage() for r in caplog.records if "Unclosed" in r.getMessage()]
    assert reported == []


def _msg(tag: str) -> Any:
    from ctx_memory.schema import dumps
    from ctx_memory.stores.base import EncodedMessage

    return EncodedMessage(dumps({"role": "user", "content": tag, "id": tag}), 1, tag)


def _init(sid: str) -> Any:
    from ctx_memory.stores.base import new_header

    return new_header(sid, now="2026-01-01T00:00:00Z", encoding="o200k_base")


def test_appending_only_known_ids_changes_nothing(make_store: Callable[..., BaseStore]) -> None:
    """A no-op append leaves the timestamp (and so TTL and LRU order) as they were."""
    store = make_store(ttl_seconds=3600)
    cm = manager(store)
    cm.add_messages("s", [HumanMessage("a", id="x")])
    before = cm.get_context("s")
    time.sleep(0.01)
    cm.add_messages("s", [HumanMessage("a", id="x")])
    assert cm.get_context("s") == before
