"""Redis-specific behaviour: crashes, secrets in URLs, connection kinds, key layout, retries."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.asyncio
from redis.crc import key_slot

from ctx_memory import ContextManager
from ctx_memory.errors import ConfigurationError, StoreError, StoreUnavailableError
from ctx_memory.schema import dumps
from ctx_memory.stores._redis_keys import LAYOUT_VERSION, layout_key
from ctx_memory.stores.base import EncodedMessage, new_header
from ctx_memory.stores.redis import RedisStore, session_keys

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import RedisServer

pytestmark = pytest.mark.redis

NOW = "2025-01-01T00:00:00+00:00"
SECRET = "s3cr3t-Pa55"


def init(sid: str) -> Any:
    return new_header(sid, now=NOW, encoding="o200k_base")


def msg(i: int, tokens: int = 2) -> EncodedMessage:
    return EncodedMessage(
        dumps({"role": "user", "content": f"m{i}", "id": f"id-{i}"}), tokens, f"id-{i}"
    )


@pytest.fixture
def secured(redis_server_factory: Callable[..., RedisServer]) -> RedisServer:
    """A private server with a password, an ACL user and AOF (data survives a restart)."""
    server = redis_server_factory(
        "--requirepass", SECRET, "--appendonly", "yes", "--appendfsync", "always"
    )
    client = redis.Redis(port=server.port, password=SECRET)
    client.acl_setuser(
        "alice", enabled=True, passwords=[f"+{SECRET}"], keys="*", channels="*", commands=["+@all"]
    )
    client.close()
    return server


def test_server_killed_and_restarted_during_writes(secured: RedisServer) -> None:
    url = f"redis://:{SECRET}@127.0.0.1:{secured.port}/0"
    store = RedisStore(url, key_prefix="crash", max_retries=1, socket_timeout=2)
    acked: list[int] = []
    errors: list[BaseException] = []

    def writer() -> None:
        i = 0
        while True:
            try:
                store.append_messages("s", [msg(i), msg(i + 1)], init=init("s"), now=NOW)
            except StoreError as e:
                errors.append(e)
                return
            acked.append(i)
            i += 2

    thread = threading.Thread(target=writer)
    thread.start()
    time.sleep(0.3)
    secured.kill()
    thread.join(30)
    assert not thread.is_alive()
    assert len(errors) == 1
    error = errors[0]
    assert isinstance(error, StoreUnavailableError)
    assert f"127.0.0.1:{secured.port}" in str(error)
    assert "***" in str(error)
    assert SECRET not in str(error)
    assert SECRET not in repr(store)

    secured.start()  # same port and directory: the AOF brings the data back
    probe = redis.Redis(port=secured.port, password=SECRET)
    deadline = time.monotonic() + 10
    while True:  # the server may answer LOADING for a moment
        try:
            probe.ping()
            break
        except redis.BusyLoadingError:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    probe.close()
    messages = store.get_messages("s")
    header = store.get_header("s")
    assert header is not None
    # every acknowledged write is there, whole; the in-flight one is all or nothing
    assert len(messages) in (2 * len(acked), 2 * len(acked) + 2)
    assert header["metadata"]["message_count"] == len(messages)
    assert header["metadata"]["token_count"] == 2 * len(messages)
    assert [m["content"] for m in messages] == [f"m{i}" for i in range(len(messages))]
    # and the store works again
    store.append_messages("s", [msg(10**6)], init=init("s"), now=NOW)
    assert store.count_messages("s") == len(messages) + 1
    store.close()


def test_unreachable_server_error_names_url_without_password() -> None:
    store = RedisStore(f"redis://bob:{SECRET}@127.0.0.1:1/0", max_retries=1, socket_timeout=0.5)
    with pytest.raises(StoreUnavailableError) as info:
        store.get_document("s")
    message = str(info.value)
    assert "redis://bob:***@127.0.0.1:1/0" in message
    assert SECRET not in message
    assert isinstance(info.value.__cause__, redis.ConnectionError)
    assert SECRET not in repr(store)
    assert store.url == "redis://bob:***@127.0.0.1:1/0"


async def test_unreachable_server_async() -> None:
    store = RedisStore(f"redis://:{SECRET}@127.0.0.1:1/0", max_retries=0, socket_timeout=0.5)
    with pytest.raises(StoreUnavailableError, match=r"\*\*\*") as info:
        await store.aget_document("s")
    assert SECRET not in str(info.value)
    await store.aclose()


async def test_an_unreachable_cluster_is_unavailable_sync_and_async() -> None:
    """redis-py's "Redis Cluster cannot be connected" is no RedisError: it escaped raw."""
    store = RedisStore(
        f"redis://:{SECRET}@127.0.0.1:1/0", cluster=True, max_retries=0, socket_timeout=0.5
    )
    with pytest.raises(StoreUnavailableError, match="cannot be connected") as info:
        store.get_document("s")
    assert SECRET not in str(info.value)
    with pytest.raises(StoreUnavailableError, match="cannot be connected") as info:
        await store.aget_document("s")
    assert SECRET not in str(info.value)
    await store.aclose()


def test_acl_user_and_password_in_url(secured: RedisServer) -> None:
    with RedisStore(f"redis://alice:{SECRET}@127.0.0.1:{secured.port}/0", key_prefix="acl") as s:
        s.append_messages("s", [msg(0)], init=init("s"), now=NOW)
        assert s.count_messages("s") == 1
    wrong = RedisStore(f"redis://alice:nope@127.0.0.1:{secured.port}/0", max_retries=0)
    with pytest.raises(StoreError) as info:
        wrong.exists("s")
    assert "nope" not in str(info.value)


def test_unix_socket_url(redis_server_factory: Callable[..., RedisServer], tmp_path: Any) -> None:
    sock = tmp_path / "r.sock"
    redis_server_factory("--unixsocket", str(sock), "--unixsocketperm", "700")
    with RedisStore(f"unix://{sock}", key_prefix="unix") as store:
        store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
        assert store.get_messages("s", -1, -1) == [{"role": "user", "content": "m0", "id": "id-0"}]


async def test_existing_clients_are_used_and_not_closed(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    aclient = redis.asyncio.Redis.from_url(redis_url)
    store = RedisStore(client=client, async_client=aclient, key_prefix="given")
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    await store.aappend_messages("s", [msg(1)], init=init("s"), now=NOW)
    assert [m["content"] for m in await store.aget_messages("s")] == ["m0", "m1"]
    assert store.list_sessions() == ["s"]
    store.delete("s")
    await store.aclose()
    assert client.ping()  # still usable: the caller owns it
    assert await aclient.ping()
    client.close()
    await aclient.aclose()


def test_retried_write_is_applied_once(
    redis_url: str, key_prefix: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A write whose reply was lost is retried with the same token and not applied twice."""
    store = RedisStore(redis_url, key_prefix=key_prefix)
    monkeypatch.setattr("ctx_memory.stores._redis_ops.os.urandom", lambda n: b"\x01" * n)
    first = store.append_messages("s", [msg(0), msg(1)], init=init("s"), now=NOW)
    again = store.append_messages("s", [msg(0), msg(1)], init=init("s"), now=NOW)
    assert first == again
    assert first.created
    assert store.count_messages("s") == 2
    store.delete("s")
    store.close()


def test_key_layout_one_slot_per_session(redis_url: str, key_prefix: str) -> None:
    store = RedisStore(redis_url, key_prefix=key_prefix)
    ids = ["a", "a}", "{a}", "x" * 256, "ü ✓ *", "a:h", "}:h"]
    for sid in ids:
        store.append_messages(sid, [msg(0)], init=init(sid), now=NOW)
        store.merge_shared(sid, {"k": 1}, init=init(sid), now=NOW)
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    keys = set(client.scan_iter(match=f"{key_prefix}:*"))
    tags = set()
    for sid in ids:
        h, m = session_keys(key_prefix, sid)[:2]
        assert {h, m} <= keys
        assert client.hget(h, "id") == sid
        tag = h[len(key_prefix) + 2 : h.index("}")]
        assert len(tag) == 64
        assert all(c in "0123456789abcdef" for c in tag)
        slots = {key_slot(k.encode()) for k in session_keys(key_prefix, sid).script_keys}
        assert len(slots) == 1
        tags.add(tag)
    assert len(tags) == len(ids)
    session_key_count = len(
        [k for k in keys if "__index__" not in k and k != layout_key(key_prefix)]
    )
    # hash, messages, message ids and the merge's write token (no fetched items yet)
    assert session_key_count == 4 * len(ids)
    assert client.get(layout_key(key_prefix)) == str(LAYOUT_VERSION)  # the layout's version
    client.close()
    store.close()


def test_prefix_with_hash_tag_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="REDIS_KEY_PREFIX"):
        RedisStore("redis://localhost:6379/0", key_prefix="app{1}")


@pytest.mark.cluster
def test_cluster_spreads_sessions(redis_cluster_url: str, key_prefix: str) -> None:
    store = RedisStore(redis_cluster_url, cluster=True, key_prefix=key_prefix, max_sessions=50)
    for i in range(30):
        store.append_messages(f"s{i}", [msg(i)], init=init(f"s{i}"), now=NOW)
    client = redis.cluster.RedisCluster.from_url(redis_cluster_url)
    per_node = {
        node.name: len(list(node.redis_connection.scan_iter(match=f"{key_prefix}:*")))
        for node in client.get_primaries()
    }
    assert len(per_node) == 3
    assert all(count > 0 for count in per_node.values())
    assert store.list_sessions() == sorted(f"s{i}" for i in range(30))
    for i in range(30):
        store.delete(f"s{i}")
    assert store.list_sessions() == []
    client.close()
    store.close()


async def test_a_cluster_node_without_the_script_gets_it_only_there(
    redis_cluster_url: str, key_prefix: str
) -> None:
    """NOSCRIPT is answered by sending the command again with the script's body (EVAL) to
    the node that needs it. ``SCRIPT LOAD`` went to every primary: with one of them down,
    every session's first write after a node lost its scripts failed."""
    store = RedisStore(redis_cluster_url, cluster=True, key_prefix=key_prefix)
    manager = ContextManager(store=store)
    manager.add_user_message("sync", "created")  # loads the create script where it runs
    await manager.aadd_user_message("async", "created")
    client = redis.cluster.RedisCluster.from_url(redis_cluster_url)
    primaries = client.get_primaries()
    for node in primaries:
        node.redis_connection.script_flush()
    manager.add_user_message("sync", "appended")  # the append script: nowhere now
    await manager.aadd_user_message("async", "appended")
    owners = {
        client.get_node_from_key(session_keys(key_prefix, sid).script_keys[0]).name
        for sid in ("sync", "async")
    }
    loaded = {
        node.name: int(node.redis_connection.info("memory").get("number_of_cached_scripts", 0))
        for node in primaries
    }
    assert {name for name, count in loaded.items() if count} == owners, loaded
    assert [m["content"] for m in manager.get_history("async")] == ["created", "appended"]
    assert [m["content"] for m in manager.get_history("sync")] == ["created", "appended"]
    client.close()
    await store.aclose()


def test_a_connection_closed_under_an_asyncio_call_is_recognised() -> None:
    """redis-py leaks an AttributeError for a connection closed during a call (its issue
    4287): the store reports it as unavailable, not as a raw AttributeError."""
    import asyncio

    from ctx_memory.stores.redis import _closed_under_the_call

    connection = redis.asyncio.Connection(host="127.0.0.1", port=1)

    async def send() -> None:
        await connection._send_packed_command([b"PING"])  # never connected: no writer

    with pytest.raises(AttributeError) as info:
        asyncio.run(send())
    assert _closed_under_the_call(info.value)
    with pytest.raises(AttributeError) as ours:
        _ = object().missing  # type: ignore[attr-defined]
    assert not _closed_under_the_call(ours.value)


def test_from_settings(redis_url: str) -> None:
    from ctx_memory.config import load_settings

    settings = load_settings(
        store="redis",
        redis_url=redis_url,
        redis_key_prefix="fs",
        max_sessions=7,
        session_expiration_seconds=30,
        redis_max_retries=2,
    )
    store = RedisStore.from_settings(settings)
    assert (store.prefix, store.max_sessions, store.ttl_seconds) == ("fs", 7, 30)
    assert not store.cluster
    store.close()


def test_an_event_subscription_outlives_a_server_restart(secured: RedisServer) -> None:
    """The listener reconnects and subscribes again, as PostgreSQL's does."""
    url = f"redis://:{SECRET}@127.0.0.1:{secured.port}/0"
    publisher = ContextManager(
        store="redis", redis_url=url, redis_key_prefix="sub", redis_publish_events=True
    )
    listener = RedisStore(url, key_prefix="sub")
    got: list[dict[str, Any]] = []
    subscription = listener.subscribe_events(got.append)
    try:
        time.sleep(0.3)
        publisher.add_user_message("before", "hi")
        deadline = time.monotonic() + 10
        while not got and time.monotonic() < deadline:
            time.sleep(0.02)
        assert got
        secured.kill()
        time.sleep(3)  # longer than redis-py's own reconnection attempts
        secured.start()
        got.clear()
        deadline = time.monotonic() + 20
        while not any(e["session_id"] == "after" for e in got):
            assert time.monotonic() < deadline, "no event after the restart"
            with contextlib.suppress(StoreError):  # the server may still be loading
                publisher.add_user_message("after", "hi")
            time.sleep(0.3)
    finally:
        subscription.close()
        publisher.close()
        listener.close()


async def _attempt(write: Any) -> None:
    result = write()
    if result is not None:
        await result


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_master_refusing_writes_for_now_is_unavailable_and_nothing_is_written(
    redis_url: str, key_prefix: str, mode: str
) -> None:
    """``min-replicas-to-write`` unmet (a master cut off from its replicas after a failover):
    every write raises ``StoreUnavailableError`` (retry it) and writes nothing."""
    store = RedisStore(redis_url, key_prefix=key_prefix)
    cm = ContextManager(store=store, token_counter="approximate")
    cm.add_user_message("s", "one")
    server = redis.Redis.from_url(redis_url)
    server.config_set("min-replicas-to-write", 1)
    try:
        writes = [
            lambda: cm.aadd_user_message("s", "two"),
            lambda: cm.aadd_user_message("new", "x"),
            lambda: cm.aupdate_partial_context("s", {"k": 1}),
        ] if mode == "async" else [
            lambda: cm.add_user_message("s", "two"),
            lambda: cm.add_user_message("new", "x"),
            lambda: cm.update_partial_context("s", {"k": 1}),
        ]  # fmt: skip
        for write in writes:
            with pytest.raises(StoreUnavailableError, match="NOREPLICAS"):
                await _attempt(write)
    finally:
        server.config_set("min-replicas-to-write", 0)
        server.close()
    assert [m["content"] for m in cm.get_history("s")] == ["one"]
    assert not cm.session_exists("new")
    assert cm.get_context("s")["shared"] == {}
    cm.close()


def test_a_cluster_store_reaches_the_cluster_on_a_new_loop_with_its_url_node_down(
    tmp_path_factory: pytest.TempPathFactory,
    key_prefix: str,
    cluster_factory: Callable[..., list[RedisServer]],
) -> None:
    """``REDIS_URL`` names one node. Once it is down and its replica promoted, the store
    still works on a new event loop (``asyncio.run`` per call): that loop's client starts
    from the nodes the store's other clients found, not from the URL's alone."""
    root = tmp_path_factory.mktemp("cluster-down")
    nodes = cluster_factory(root, replicas=1, node_timeout_ms=1000)
    try:
        store = RedisStore(nodes[0].url, cluster=True, key_prefix=key_prefix, socket_timeout=2)
        cm = ContextManager(store=store, token_counter="approximate")
        cm.add_user_message("s", "before")
        asyncio.run(cm.aadd_user_message("s", "before, async"))
        nodes[0].kill()
        others = [redis.Redis(port=n.port) for n in nodes[1:]]
        dead = f"127.0.0.1:{nodes[0].port}"

        def recovered(client: redis.Redis) -> bool:
            listed = client.execute_command("CLUSTER", "NODES").decode()
            flags = [line.split()[2] for line in listed.splitlines() if dead in line.split()[1]]
            return "fail" in flags[0].split(",") and client.cluster("info")["cluster_state"] == "ok"

        deadline = time.monotonic() + 30
        while not all(recovered(c) for c in others):  # its replica promoted, seen by all
            assert time.monotonic() < deadline, "the cluster did not recover"
            time.sleep(0.1)
        for client in others:
            client.close()
        cm.add_user_message("s", "after")
        asyncio.run(cm.aadd_user_message("s", "after, async, on a new loop"))
        assert [m["content"] for m in cm.get_history("s")] == [
            "before", "before, async", "after", "after, async, on a new loop"
        ]  # fmt: skip
        store.close()
    finally:
        for node in nodes:
            node.stop()


def test_a_replica_refusing_a_write_is_unavailable(
    redis_server_factory: Callable[..., RedisServer], key_prefix: str
) -> None:
    """redis-py raises READONLY as its own class with the code left out of its text: still
    ``StoreUnavailableError`` (a demoted master: retry on the new one), nothing written."""
    master = redis_server_factory()
    replica = redis_server_factory("--replicaof", "127.0.0.1", str(master.port))
    store = RedisStore(replica.url, key_prefix=key_prefix)
    cm = ContextManager(store=store, token_counter="approximate")
    with pytest.raises(StoreUnavailableError, match="read only replica"):
        cm.add_user_message("s", "hi")
    cm.close()
    with RedisStore(master.url, key_prefix=key_prefix) as on_master:
        assert not on_master.exists("s")
