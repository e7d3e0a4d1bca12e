"""Redis reads without a data script: the LRU touch (TOUCH_SCRIPT) and the sync wire."""

from __future__ import annotations

import multiprocessing
import os
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.cluster
from redis_raw import raw_client

from ctx_memory.errors import StoreError
from ctx_memory.schema import dumps
from ctx_memory.stores import _redis_wire
from ctx_memory.stores.base import EncodedItem, EncodedMessage, new_header
from ctx_memory.stores.redis import RedisStore, index_key, lex_key, session_keys

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore

pytestmark = [pytest.mark.redis, pytest.mark.stores("redis", "cluster")]

NOW = "2025-01-01T00:00:00+00:00"


def init(sid: str) -> Any:
    return new_header(sid, now=NOW, encoding="o200k_base")


def msg(i: int) -> EncodedMessage:
    return EncodedMessage(
        dumps({"role": "user", "content": f"m{i}", "id": f"id-{i}"}), 2, f"id-{i}"
    )


def write(store: BaseStore, sid: str, i: int = 0) -> None:
    store.append_messages(sid, [msg(i)], init=init(sid), now=NOW)


READS: dict[str, Callable[[BaseStore, str], object]] = {
    "messages": lambda store, sid: store.get_messages(sid, -20, -1),
    "count": lambda store, sid: store.count_messages(sid),
    "header": lambda store, sid: store.get_header(sid),
    "fetched": lambda store, sid: store.get_fetched(sid),
    "document": lambda store, sid: store.get_document(sid),
    "exists": lambda store, sid: store.exists(sid),
}


@pytest.mark.parametrize("read", READS)
def test_a_read_touches_its_session(make_store: Callable[..., BaseStore], read: str) -> None:
    store = make_store(max_sessions=2)
    write(store, "a")
    write(store, "b")
    READS[read](store, "a")  # a is now more recent than b
    write(store, "c")
    assert store.list_sessions() == ["a", "c"]


@pytest.mark.parametrize("read", READS)
@pytest.mark.parametrize("gone", ["deleted", "evicted"])
def test_a_read_never_puts_a_session_back(
    make_store: Callable[..., BaseStore], read: str, gone: str
) -> None:
    store = make_store(max_sessions=2)
    assert isinstance(store, RedisStore)
    write(store, "a")
    write(store, "b")
    if gone == "deleted":
        assert store.delete("a")
    else:
        write(store, "c")  # evicts a, the least recently used
    READS[read](store, "a")
    client = raw_client(store)
    member = session_keys(store.prefix, "a").member
    assert client.zscore(index_key(store.prefix), member) is None
    assert client.zscore(lex_key(store.prefix), "a") is None
    assert not any(client.exists(key) for key in session_keys(store.prefix, "a").script_keys)
    assert not store.exists("a")
    client.close()


@pytest.mark.parametrize("read", READS)
def test_a_read_of_an_expired_session_does_not_lift_it(
    make_store: Callable[..., BaseStore], read: str
) -> None:
    """Its index member waits for gc at its old score: live sessions stay more recent."""
    store = make_store(max_sessions=3)
    assert isinstance(store, RedisStore)
    write(store, "a")
    write(store, "b")
    client = raw_client(store)
    for key in session_keys(store.prefix, "a").script_keys:  # a expires (Redis-native)
        client.delete(key)
    idx = index_key(store.prefix)
    before = client.zscore(idx, session_keys(store.prefix, "a").member)
    READS[read](store, "a")
    assert client.zscore(idx, session_keys(store.prefix, "a").member) == before
    write(store, "c")
    write(store, "d")  # one too many: the expired a goes, b (alive) stays
    assert store.list_sessions() == ["b", "c", "d"]
    client.close()


@pytest.mark.parametrize("read", READS)
def test_reads_after_script_flush(make_store: Callable[..., BaseStore], read: str) -> None:
    store = make_store(max_sessions=10)
    assert isinstance(store, RedisStore)
    write(store, "s")
    store.append_fetched(
        "s", [EncodedItem("web", dumps({"c": 1}), 1, "fp")], init=init("s"), now=NOW
    )
    client = raw_client(store)
    client.script_flush()
    assert READS[read](store, "s")
    client.close()


async def test_async_reads_touch_and_survive_script_flush(
    make_store: Callable[..., BaseStore],
) -> None:
    store = make_store(max_sessions=2)
    assert isinstance(store, RedisStore)
    await store.aappend_messages("a", [msg(0)], init=init("a"), now=NOW)
    await store.aappend_messages("b", [msg(1)], init=init("b"), now=NOW)
    client = raw_client(store)
    client.script_flush()
    assert [m["content"] for m in await store.aget_messages("a")] == ["m0"]
    assert await store.acount_messages("a") == 1
    await store.aappend_messages("c", [msg(2)], init=init("c"), now=NOW)
    assert await store.alist_sessions() == ["a", "c"]
    client.close()


@pytest.mark.stores("redis")
def test_the_append_touch_skips_the_most_recent_session(
    make_store: Callable[..., BaseStore],
) -> None:
    """Two appends in a row: the second leaves the index as it is (it is on top already)."""
    store = make_store(max_sessions=5)
    assert isinstance(store, RedisStore)
    write(store, "a", 0)
    write(store, "b", 1)
    write(store, "a", 2)  # a over b
    client = raw_client(store)
    idx = index_key(store.prefix)
    scores = dict(client.zrange(idx, 0, -1, withscores=True))
    write(store, "a", 3)
    assert dict(client.zrange(idx, 0, -1, withscores=True)) == scores
    write(store, "b", 4)  # b over a
    ranked = client.zrange(idx, 0, -1)
    assert [m[64:] for m in ranked] == ["a", "b"]
    client.close()


def test_an_error_reply_leaves_the_connection_in_step(
    make_store: Callable[..., BaseStore],
) -> None:
    store = make_store(max_sessions=10)
    assert isinstance(store, RedisStore)
    write(store, "s")
    client = raw_client(store)
    client.set(session_keys(store.prefix, "t").m, "not a list")
    for _ in range(3):
        with pytest.raises(StoreError, match="WRONGTYPE"):
            store.get_messages("t")
        assert [m["content"] for m in store.get_messages("s")] == ["m0"]
    client.close()


# ---------------------------------------------------------------- the sync wire


@pytest.mark.stores("redis")
def test_a_given_client_keeps_no_connection_between_calls(redis_url: str, key_prefix: str) -> None:
    client = redis.Redis.from_url(redis_url)
    store = RedisStore(client=client, key_prefix=key_prefix, max_sessions=10)
    write(store, "s")
    store.get_messages("s")
    pool: Any = client.connection_pool
    assert not pool._in_use_connections  # all back in the given client's pool
    store.delete("s")
    store.close()
    client.close()


@pytest.mark.stores("redis")
def test_kept_connections_go_back_to_the_pool_on_close(redis_url: str, key_prefix: str) -> None:
    store = RedisStore(redis_url, key_prefix=key_prefix, max_sessions=10)
    write(store, "s")
    pool: Any = store.client.connection_pool
    assert len(pool._in_use_connections) == 1  # kept by the store between calls
    store.delete("s")
    store.close()
    assert not pool._in_use_connections


@pytest.mark.stores("redis")
def test_a_connection_the_server_closed_while_idle_is_replaced(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Even without retries: an idle connection is checked, as the pool checks it."""
    monkeypatch.setattr(_redis_wire, "IDLE_CHECK", 0.0)
    store = RedisStore(redis_url, key_prefix=key_prefix, max_sessions=10, max_retries=0)
    write(store, "s")
    admin = redis.Redis.from_url(redis_url)
    assert admin.client_kill_filter(_type="normal", skipme=True) >= 1
    assert store.count_messages("s") == 1
    store.delete("s")
    store.close()
    admin.close()


def _append_in_child(url: str, prefix: str, store: RedisStore) -> None:
    for i in range(100, 150):
        write(store, "s", i)  # the parent's store object, copied by fork
    store.close()
    os._exit(0)


@pytest.mark.stores("redis")
def test_a_forked_child_does_not_use_the_parents_connections(
    redis_url: str, key_prefix: str
) -> None:
    store = RedisStore(redis_url, key_prefix=key_prefix, max_sessions=10)
    write(store, "s", 0)  # the parent now keeps a connection
    ctx = multiprocessing.get_context("fork")
    child = ctx.Process(target=_append_in_child, args=(redis_url, key_prefix, store))
    child.start()
    for i in range(1, 50):  # meanwhile on the parent's connection
        write(store, "s", i)
    child.join(30)
    assert child.exitcode == 0
    assert store.count_messages("s") == 100
    assert sorted(int(m["content"][1:]) for m in store.get_messages("s")) == [
        *range(50),
        *range(100, 150),
    ]
    store.delete("s")
    store.close()
