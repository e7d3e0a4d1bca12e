"""RedisStore through Redis Sentinel: real sentinels, a master and its replica, failovers.

Each test gets its own master, replica and three sentinels (``redis_sentinel`` in
``tests/conftest.py``) and fails them over: by ``SENTINEL FAILOVER`` or by killing the
master. Whatever was written before (and replicated: ``WAIT``) is still there, and the
same store object writes to the new master after.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.sentinel

from ctx_memory import ContextManager
from ctx_memory.config import load_settings
from ctx_memory.errors import ConfigurationError, StoreUnavailableError
from ctx_memory.stores import create_store
from ctx_memory.stores._redis_wire import MASTER_CHECK
from ctx_memory.stores.redis import RedisStore, index_key, parse_sentinel_url

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator

    from conftest import RedisServer, SentinelSetup

pytestmark = pytest.mark.redis


@pytest.fixture
def make(redis_sentinel: SentinelSetup, key_prefix: str) -> Iterator[Callable[..., RedisStore]]:
    made: list[RedisStore] = []

    def build(**kwargs: Any) -> RedisStore:
        store = RedisStore(redis_sentinel.url, key_prefix=key_prefix, **kwargs)
        made.append(store)
        return store

    yield build
    for store in made:
        store.close()


def manager(store: RedisStore) -> ContextManager:
    return ContextManager(store=store, token_counter="approximate")


def contents(cm: ContextManager, sid: str) -> list[str]:
    return [m["content"] for m in cm.get_history(sid)]


async def acontents(cm: ContextManager, sid: str) -> list[str]:
    return [m["content"] for m in await cm.aget_history(sid)]


def replicated(setup: SentinelSetup, server: RedisServer) -> None:
    """Wait until the replica has every write the master acknowledged."""
    with setup.data_client(server) as client:
        assert client.wait(1, 10_000) == 1


def role(setup: SentinelSetup, server: RedisServer) -> str:
    with setup.data_client(server) as client:
        return str(client.execute_command("ROLE")[0], "ascii")


def failed_over(setup: SentinelSetup, old: RedisServer, new: RedisServer) -> None:
    """Wait until every sentinel names ``new`` and both servers took their new roles."""
    setup.wait_until(
        lambda: (
            all(setup.master_port(i) == new.port for i in range(len(setup.sentinels)))
            and role(setup, new) == "master"
        ),
        f"the sentinels promote the replica on port {new.port}",
    )
    if old.proc is not None:  # still running: Sentinel turns it into a replica of new
        setup.wait_until(lambda: role(setup, old) == "slave", "the old master is demoted")


def test_url_reaches_the_master_through_the_sentinels(
    redis_sentinel: SentinelSetup, make: Callable[..., RedisStore], key_prefix: str
) -> None:
    store = make(ttl_seconds=3600)
    cm = manager(store)
    cm.add_user_message("s1", "hello")
    cm.add_assistant_message("s1", "hi there")
    assert contents(cm, "s1") == ["hello", "hi there"]
    assert store.list_sessions() == ["s1"]
    with redis_sentinel.data_client(redis_sentinel.master) as master:
        assert master.exists(index_key(key_prefix)) == 1  # the data is on the master
    replicated(redis_sentinel, redis_sentinel.master)
    with redis_sentinel.data_client(redis_sentinel.replica) as replica:
        assert replica.exists(index_key(key_prefix)) == 1  # and replicated
    for secret in (redis_sentinel.password, redis_sentinel.sentinel_password):
        assert secret in redis_sentinel.url
        assert secret not in repr(store)
        assert secret not in store.url


async def test_async_client_reaches_the_master_through_the_sentinels(
    redis_sentinel: SentinelSetup, make: Callable[..., RedisStore], key_prefix: str
) -> None:
    store = make()
    cm = manager(store)
    await cm.aadd_user_message("a1", "async hello")
    assert await acontents(cm, "a1") == ["async hello"]
    assert contents(cm, "a1") == ["async hello"]  # the sync client sees the same master
    with redis_sentinel.data_client(redis_sentinel.master) as master:
        assert master.exists(index_key(key_prefix)) == 1
    await store.aclose()


async def test_sentinel_failover_keeps_the_store_writing(
    redis_sentinel: SentinelSetup, make: Callable[..., RedisStore], key_prefix: str
) -> None:
    setup = redis_sentinel
    old, new = setup.master, setup.replica
    store = make(ttl_seconds=3600)
    cm = manager(store)
    for i in range(20):
        cm.add_user_message(f"s{i}", f"before {i}")
    await cm.aadd_user_message("a", "before")  # the asyncio client is connected too
    replicated(setup, old)

    with setup.sentinel_client() as sentinel:
        assert sentinel.sentinel_failover("ctxmaster")
    failed_over(setup, old, new)

    # Both clients' connections still point at the old master, now a read-only replica
    # that dropped its clients: each write reconnects to the master the sentinels name
    # now (ctx_memory asks them on every reconnect, retries included).
    cm.add_user_message("s0", "after")
    cm.add_user_message("s-new", "created after")
    await cm.aadd_user_message("a", "after")
    await cm.aadd_user_message("b", "created after")
    assert contents(cm, "s0") == ["before 0", "after"]
    assert contents(cm, "s-new") == ["created after"]
    for i in range(1, 20):
        assert contents(cm, f"s{i}") == [f"before {i}"]
    assert await acontents(cm, "a") == ["before", "after"]
    assert await acontents(cm, "b") == ["created after"]
    expected = sorted([f"s{i}" for i in range(20)] + ["s-new", "a", "b"])
    assert store.list_sessions() == expected
    assert await store.alist_sessions() == expected
    with setup.data_client(new) as master:
        assert master.zcard(index_key(key_prefix)) == len(expected)  # on the new master


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_writes_go_to_the_new_master_before_the_old_one_is_demoted(
    redis_sentinel: SentinelSetup, make: Callable[..., RedisStore], key_prefix: str, mode: str
) -> None:
    """After ``SENTINEL FAILOVER`` the old master takes writes (and later drops them) until
    the sentinels demote it, seconds on: the store asks the sentinels every
    ``MASTER_CHECK`` seconds while calls run, so its writes reach the new master well
    before that."""
    setup = redis_sentinel
    old, new = setup.master, setup.replica
    cm = manager(make(ttl_seconds=3600))
    cm.add_user_message("before", "hi")
    await cm.aadd_user_message("before-async", "hi")
    replicated(setup, old)
    with setup.sentinel_client() as sentinel:
        assert sentinel.sentinel_failover("ctxmaster")
    setup.wait_until(
        lambda: (
            all(setup.master_port(i) == new.port for i in range(len(setup.sentinels)))
            and role(setup, new) == "master"
        ),
        "the sentinels name the new master",
    )
    deadline = time.monotonic() + MASTER_CHECK + 0.5
    i = 0
    while time.monotonic() < deadline:  # calls keep running: the store asks meanwhile
        if mode == "async":
            await cm.aadd_user_message("during", f"m{i}")
        else:
            cm.add_user_message("during", f"m{i}")
        i += 1
        await asyncio.sleep(0.02)
    if mode == "async":
        await cm.aadd_user_message("after", "lands on the new master")
    else:
        cm.add_user_message("after", "lands on the new master")
    still_master = role(setup, old) == "master"
    with setup.data_client(new) as master:
        assert RedisStore(client=master, key_prefix=key_prefix).exists("after")
    with setup.data_client(old) as replica:  # (demoted now or soon: what it took is lost)
        assert not RedisStore(client=replica, key_prefix=key_prefix).exists("after")
    assert still_master  # the window this test is about: the old master still took writes


async def test_master_killed_the_store_writes_to_the_promoted_replica(
    redis_sentinel: SentinelSetup, make: Callable[..., RedisStore]
) -> None:
    setup = redis_sentinel
    old, new = setup.master, setup.replica
    store = make(ttl_seconds=3600, max_retries=2, socket_timeout=1)
    cm = manager(store)
    cm.add_user_message("s", "before")
    await cm.aadd_user_message("a", "before")
    replicated(setup, old)
    old.kill()  # a crash: the sentinels notice after down-after-milliseconds (1 s)

    # Until the sentinels agree and promote the replica, calls fail cleanly (after their
    # retries); the first one after the promotion succeeds. Nothing is half-written.
    failures: list[str] = []
    deadline = time.monotonic() + 60
    while True:
        try:
            cm.add_user_message("s", "after")
            break
        except StoreUnavailableError as e:
            failures.append(str(e))
        assert time.monotonic() < deadline, "the store never reached the new master"
        await asyncio.sleep(0.2)
    assert failures  # the sentinels take a second (down-after-milliseconds) to agree
    assert not any(setup.password in failure for failure in failures)
    failed_over(setup, old, new)
    await cm.aadd_user_message("a", "after")
    assert contents(cm, "s") == ["before", "after"]
    assert await acontents(cm, "a") == ["before", "after"]


def test_close_releases_the_sentinel_connections(
    redis_sentinel: SentinelSetup, key_prefix: str
) -> None:
    name = f"ctx-{key_prefix}"

    def ours() -> list[int]:  # this store's connections to each sentinel
        counts = []
        for index in range(len(redis_sentinel.sentinels)):
            with redis_sentinel.sentinel_client(index) as sentinel:
                counts.append(sum(c["name"] == name for c in sentinel.client_list()))
        return counts

    store = RedisStore(f"{redis_sentinel.url}&client_name={name}", key_prefix=key_prefix)
    cm = manager(store)
    cm.add_user_message("s", "sync")

    async def use() -> None:
        await cm.aadd_user_message("s", "async")

    asyncio.run(use())  # that loop is closed now: close() shuts its sockets down
    assert sum(ours()) >= 2  # the sync and the asyncio clients asked a sentinel
    with redis_sentinel.data_client(redis_sentinel.master) as master:
        assert any(c["name"] == name for c in master.client_list())
    store.close()
    redis_sentinel.wait_until(lambda: sum(ours()) == 0, "the sentinels see no store left")
    with redis_sentinel.data_client(redis_sentinel.master) as master:
        redis_sentinel.wait_until(
            lambda: all(c["name"] != name for c in master.client_list()),
            "the master sees no store left",
        )


def test_given_sentinel_client(redis_sentinel: SentinelSetup, key_prefix: str) -> None:
    setup = redis_sentinel
    sentinel = redis.sentinel.Sentinel(
        [("127.0.0.1", s.port) for s in setup.sentinels],
        sentinel_kwargs={"password": setup.sentinel_password},
        password=setup.password,
    )
    client = sentinel.master_for("ctxmaster")
    store = RedisStore(client=client, key_prefix=key_prefix)
    hosts = ",".join(f"127.0.0.1:{s.port}" for s in setup.sentinels)
    assert store.url == f"redis+sentinel://{hosts}/ctxmaster/0"
    manager(store).add_user_message("s", "given")
    store.close()
    assert client.ping()  # a client it was given is not closed
    client.close()
    sentinel.close()


def test_create_store_from_settings(redis_sentinel: SentinelSetup, key_prefix: str) -> None:
    settings = load_settings(
        store="redis", redis_url=redis_sentinel.url, redis_key_prefix=key_prefix
    )
    assert redis_sentinel.password not in repr(settings)
    with create_store(settings) as store:
        assert isinstance(store, RedisStore)
        cm = manager(store)
        cm.add_user_message("s", "from settings")
        assert contents(cm, "s") == ["from settings"]


def test_cluster_through_sentinel_is_refused(redis_sentinel: SentinelSetup) -> None:
    with pytest.raises(ConfigurationError, match="REDIS_CLUSTER") as info:
        RedisStore(redis_sentinel.url, cluster=True)
    assert redis_sentinel.password not in str(info.value)


async def test_sentinels_refusing_the_credentials_say_so_briefly(
    redis_sentinel: SentinelSetup,
) -> None:
    """redis-py's "No master found" holds kilobytes of client reprs; the store's error
    keeps each sentinel's answer once and names the setting to fix, sync and async."""
    setup = redis_sentinel
    right = f"sentinel_password={setup.sentinel_password}"
    url = setup.url.replace(right, "sentinel_password=wrong-pw-0")
    with RedisStore(url, socket_timeout=2, max_retries=0) as store:
        cm = manager(store)
        with pytest.raises(StoreUnavailableError) as sync_error:
            cm.add_user_message("s", "hi")
        with pytest.raises(StoreUnavailableError) as async_error:
            await cm.aadd_user_message("s", "hi")
    for error in (sync_error.value, async_error.value):
        text = str(error)
        assert "No master found for 'ctxmaster'" in text
        assert "refused the credentials" in text
        assert "?sentinel_password=" in text
        assert "<redis." not in text
        assert len(text) < 600
        assert setup.password not in text
        assert setup.sentinel_password not in text


# ---------------------------------------------------------------- the URL


@pytest.mark.parametrize(
    ("url", "sentinels", "service", "connection", "sentinel"),
    [
        (
            "redis+sentinel://localhost:26379/mymaster/0",
            [("localhost", 26379)],
            "mymaster",
            {"db": 0},
            {},
        ),
        ("redis+sentinel://h", [("h", 26379)], "mymaster", {}, {}),
        (
            "redis+sentinel://u:p%40ss@h1:1,h2,[::1]:3/svc/2",
            [("h1", 1), ("h2", 26379), ("::1", 3)],
            "svc",
            {"username": "u", "password": "p@ss", "db": 2},
            {"username": "u", "password": "p@ss"},
        ),
        (
            "redis+sentinel://:pw@h/svc?sentinel_password=sp&socket_keepalive=true&client_name=a",
            [("h", 26379)],
            "svc",
            {"password": "pw", "socket_keepalive": True, "client_name": "a"},
            {"password": "sp", "client_name": "a"},
        ),
        (
            "redis+sentinel://u:pw@h/svc/1?sentinel_password=",
            [("h", 26379)],
            "svc",
            {"username": "u", "password": "pw", "db": 1},
            {},
        ),
        (
            "rediss+sentinel://:pw@h:5/svc?ssl_cert_reqs=none",
            [("h", 5)],
            "svc",
            {"password": "pw", "ssl": True, "ssl_cert_reqs": "none"},
            {"password": "pw", "ssl": True, "ssl_cert_reqs": "none"},
        ),
    ],
)
def test_parse_sentinel_url(
    url: str,
    sentinels: list[tuple[str, int]],
    service: str,
    connection: dict[str, Any],
    sentinel: dict[str, Any],
) -> None:
    parsed = parse_sentinel_url(url)
    assert parsed.sentinels == sentinels
    assert parsed.service == service
    assert parsed.connection == connection
    assert parsed.sentinel == sentinel
    assert load_settings(redis_url=url).redis_url == url


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("redis+sentinel://h:0/svc", "port"),
        ("redis+sentinel://h:x/svc", "port"),
        ("redis+sentinel://h1,,h2/svc", "needs a host"),
        ("redis+sentinel://::1/svc", "IPv6"),
        ("redis+sentinel://h/svc/db", "database must be a number"),
        ("redis+sentinel://h/svc/0/extra", "/service_name[/db]"),
        ("redis+sentinel://:pa/ss@h/svc", "'@' after the sentinel hosts"),
        ("redis+sentinel://:pa#ss@h/svc", "'#'"),
        ("redis+sentinel://h/svc?db=zero", "'db'"),
    ],
)
def test_malformed_sentinel_urls_are_refused(url: str, problem: str) -> None:
    with pytest.raises(ConfigurationError, match="REDIS_URL") as info:
        RedisStore(url)
    assert problem in str(info.value)
    assert "pa/ss" not in str(info.value)
    assert "pa#ss" not in str(info.value)
    with pytest.raises(ConfigurationError, match="REDIS_URL"):
        load_settings(redis_url=url)
