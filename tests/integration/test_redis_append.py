"""The Redis append hot path (APPEND_SCRIPT): TTL of every key, tokens, index, fallbacks."""

from __future__ import annotations

import contextlib
import socket
import threading
from typing import TYPE_CHECKING, Any

import pytest
from redis_raw import raw_client

from ctx_memory.schema import dumps
from ctx_memory.stores.base import EncodedItem, EncodedMessage, new_header
from ctx_memory.stores.redis import RedisStore, index_key, session_keys

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore

pytestmark = [pytest.mark.redis, pytest.mark.stores("redis", "cluster")]

NOW = "2025-01-01T00:00:00+00:00"


def init(sid: str) -> Any:
    return new_header(sid, now=NOW, encoding="o200k_base")


def msg(i: int, tokens: int = 2) -> EncodedMessage:
    return EncodedMessage(
        dumps({"role": "user", "content": f"m{i}", "id": f"id-{i}"}), tokens, f"id-{i}"
    )


def item(i: int) -> EncodedItem:
    return EncodedItem("web", dumps({"content": f"c{i}"}), 1, f"fp{i}")


def test_append_refreshes_the_ttl_of_every_key(make_store: Callable[..., BaseStore]) -> None:
    store = make_store(ttl_seconds=60)
    assert isinstance(store, RedisStore)
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    store.append_fetched("s", [item(0)], init=init("s"), now=NOW)
    keys = session_keys(store.prefix, "s")[:4]
    client = raw_client(store)
    for key in keys:
        assert client.pexpire(key, 5_000)
    store.append_messages("s", [msg(1)], init=init("s"), now=NOW)  # the hot path
    assert all(client.pttl(key) > 50_000 for key in keys)
    header = store.get_header("s")
    assert header is not None
    assert header["metadata"]["message_count"] == 2
    assert header["metadata"]["token_count"] == 4
    client.close()


@pytest.mark.parametrize("use_async", [False, True])
async def test_append_refreshes_fetched_keys_another_store_added(
    make_store: Callable[..., BaseStore], use_async: bool
) -> None:
    one, two = make_store(ttl_seconds=60), make_store(ttl_seconds=60)
    assert isinstance(one, RedisStore)
    one.append_messages("s", [msg(0)], init=init("s"), now=NOW)  # one knows "s": no fetched keys
    two.append_fetched("s", [item(0)], init=init("s"), now=NOW)
    keys = session_keys(one.prefix, "s")[:4]
    client = raw_client(one)
    for key in keys:
        assert client.pexpire(key, 5_000)
    if use_async:
        result = await one.aappend_messages("s", [msg(1)], init=init("s"), now=NOW)
        await one.aclose()
    else:
        result = one.append_messages("s", [msg(1)], init=init("s"), now=NOW)
    assert (result.created, result.added) == (False, 1)
    assert all(client.pttl(key) > 50_000 for key in keys)
    assert two.count_messages("s") == 2
    client.close()


async def test_async_append_refreshes_ttl_and_counts(
    make_store: Callable[..., BaseStore],
) -> None:
    store = make_store(ttl_seconds=60)
    assert isinstance(store, RedisStore)
    await store.aappend_messages("s", [msg(0)], init=init("s"), now=NOW)
    client = raw_client(store)
    h, m = session_keys(store.prefix, "s")[:2]
    client.pexpire(h, 5_000)
    client.pexpire(m, 5_000)
    result = await store.aappend_messages("s", [msg(1), msg(2)], init=init("s"), now=NOW)
    assert (result.created, result.added) == (False, 2)
    assert client.pttl(h) > 50_000
    assert client.pttl(m) > 50_000
    assert await store.acount_messages("s") == 3
    await store.aclose()
    client.close()


async def test_async_retried_append_is_applied_once(
    make_store: Callable[..., BaseStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = make_store()
    await store.aappend_messages("s", [msg(0)], init=init("s"), now=NOW)
    monkeypatch.setattr("ctx_memory.stores._redis_ops.os.urandom", lambda n: b"\x02" * n)
    first = await store.aappend_messages("s", [msg(1)], init=init("s"), now=NOW)
    again = await store.aappend_messages("s", [msg(1)], init=init("s"), now=NOW)  # same token
    assert first == again
    assert (first.created, first.added) == (False, 1)
    monkeypatch.setattr("ctx_memory.stores._redis_ops.os.urandom", lambda n: b"\x03" * n)
    other = await store.aappend_messages("s", [msg(1)], init=init("s"), now=NOW)  # new write
    assert (other.created, other.added) == (False, 0)
    assert await store.acount_messages("s") == 2
    header = await store.aget_header("s")
    assert header is not None
    assert header["metadata"]["token_count"] == 4
    await store.aclose()


def test_write_tokens_are_kept_only_when_retries_can_happen(
    make_store: Callable[..., BaseStore],
) -> None:
    with_retries = make_store()
    assert isinstance(with_retries, RedisStore)
    with_retries.merge_shared("a", {"k": 0}, init=init("a"), now=NOW)
    with_retries.merge_shared("a", {"k": 1}, init=init("a"), now=NOW)
    client = raw_client(with_retries)
    assert client.hlen(session_keys(with_retries.prefix, "a").w) == 2
    if not with_retries.cluster:  # a cluster client may re-send on its own: tokens stay
        without = make_store(max_retries=0)
        assert isinstance(without, RedisStore)
        for i in range(3):
            without.merge_shared("b", {"k": i}, init=init("b"), now=NOW)
        assert client.exists(session_keys(without.prefix, "b").w) == 0
        assert without.get_header("b")["shared"] == {"k": 2}  # type: ignore[index]
    client.close()


def test_append_many_messages_at_once_to_a_known_session(
    make_store: Callable[..., BaseStore],
) -> None:
    store = make_store()
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    result = store.append_messages(
        "s", [msg(i, 1) for i in range(1, 9001)], init=init("s"), now=NOW
    )
    assert result.added == 9000
    assert store.count_messages("s") == 9001
    tail = store.get_messages("s", -2, -1)
    assert [m["content"] for m in tail] == ["m8999", "m9000"]


def test_append_indexes_a_session_missing_from_the_index(
    make_store: Callable[..., BaseStore],
) -> None:
    store = make_store(max_sessions=5)
    assert isinstance(store, RedisStore)
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    client = raw_client(store)
    assert client.zrem(index_key(store.prefix), session_keys(store.prefix, "s")[4]) == 1
    assert store.list_sessions() == []
    store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
    assert store.list_sessions() == ["s"]
    client.close()


def test_append_after_script_flush(make_store: Callable[..., BaseStore]) -> None:
    store = make_store()
    assert isinstance(store, RedisStore)
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    client = raw_client(store)
    client.script_flush()
    store.append_messages("s", [msg(1)], init=init("s"), now=NOW)
    assert store.count_messages("s") == 2
    client.close()


async def test_async_calls_after_script_flush(make_store: Callable[..., BaseStore]) -> None:
    """Every script the asyncio client runs is loaded again where the server lost it."""
    store = make_store(max_sessions=10)
    assert isinstance(store, RedisStore)
    await store.aappend_messages("s", [msg(0)], init=init("s"), now=NOW)
    client = raw_client(store)
    client.script_flush()
    await store.aappend_messages("s", [msg(1)], init=init("s"), now=NOW)  # APPEND_SCRIPT
    client.script_flush()
    await store.aappend_messages("t", [msg(2)], init=init("t"), now=NOW)  # SESSION_SCRIPT
    client.script_flush()
    assert sorted(await store.alist_sessions()) == ["s", "t"]  # INDEX_SCRIPT
    assert await store.acount_messages("s") == 2
    client.close()


class _ReplyDroppingProxy:
    """A TCP proxy to Redis that, when armed, drops the connection instead of a reply."""

    def __init__(self, upstream_port: int) -> None:
        self.upstream_port = upstream_port
        self.armed = threading.Event()
        self.dropped = 0
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(("127.0.0.1", self.upstream_port))
            threading.Thread(target=self._pump, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, replies: bool) -> None:
        try:
            while data := src.recv(65536):
                if replies and self.armed.is_set():
                    self.armed.clear()
                    self.dropped += 1
                    break  # the command ran; its reply is lost
                dst.sendall(data)
        except OSError:
            pass
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def close(self) -> None:
        self.server.close()


@pytest.mark.stores("redis")
def test_append_whose_reply_is_lost_is_applied_once(redis_url: str, key_prefix: str) -> None:
    port = int(redis_url.rsplit(":", 1)[1].split("/", 1)[0])
    proxy = _ReplyDroppingProxy(port)
    store = RedisStore(f"redis://127.0.0.1:{proxy.port}/0", key_prefix=key_prefix, max_retries=3)
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)  # creates: session script
    store.append_fetched("s", [item(0)], init=init("s"), now=NOW)
    proxy.armed.set()
    result = store.append_messages("s", [msg(1), msg(2)], init=init("s"), now=NOW)
    assert proxy.dropped == 1
    assert (result.created, result.added) == (False, 2)
    header = store.get_header("s")
    assert header is not None
    assert header["metadata"]["message_count"] == 3
    assert header["metadata"]["token_count"] == 6
    assert [m["content"] for m in store.get_messages("s")] == ["m0", "m1", "m2"]
    store.delete("s")
    store.close()
    proxy.close()


def test_retried_writes_are_applied_once_however_many_writes_come_between(
    make_store: Callable[..., BaseStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A retry re-sends the same command (same token, same ids): no window can forget it."""
    store = make_store()
    assert isinstance(store, RedisStore)
    token = [b"\x00" * 8]
    monkeypatch.setattr("ctx_memory.stores._redis_ops.os.urandom", lambda n: token[0])

    def write(i: int) -> Any:  # appends and merges alternate, each with its own token
        token[0] = i.to_bytes(8, "big")
        if i % 2:
            return store.merge_shared("s", {"k": i}, init=init("s"), now=NOW)
        return store.append_messages("s", [msg(i)], init=init("s"), now=NOW)

    assert write(1).created
    first, shared = write(2), write(3)
    for i in range(4, 1000):
        write(i)
    count = store.count_messages("s")
    assert count == len(range(2, 1000, 2))
    assert write(2) == first  # the retry answers what the first attempt did
    assert write(3) == shared
    assert store.count_messages("s") == count
    header = store.get_header("s")
    assert header is not None
    assert header["shared"] == {"k": 999}  # the retried merge was not applied again
    client = raw_client(store)
    keys = session_keys(store.prefix, "s")
    assert client.hlen(keys.ids) == count
    client.close()


def test_write_tokens_rotate_by_server_time(
    make_store: Callable[..., BaseStore], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Token generations turn over after TOKEN_WINDOW seconds: the hashes stay bounded."""
    store = make_store()
    assert isinstance(store, RedisStore)
    client = raw_client(store)
    keys = session_keys(store.prefix, "s")
    for i in range(5):
        store.merge_shared("s", {"k": i}, init=init("s"), now=NOW)
    assert client.hlen(keys.w) == 5
    client.hset(keys.h, "wg", 1)  # the generation started long ago
    store.merge_shared("s", {"k": 5}, init=init("s"), now=NOW)
    assert client.hlen(keys.wo) == 5
    assert client.hlen(keys.w) == 1
    client.hset(keys.h, "wg", 1)
    store.merge_shared("s", {"k": 6}, init=init("s"), now=NOW)
    assert client.hlen(keys.wo) == 1  # the oldest generation is gone
    assert client.hlen(keys.w) == 1
    client.close()
