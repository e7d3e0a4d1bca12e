"""The Redis store's write-token hashes ``P:{T}:w`` and ``wo`` never outlive their session.

Appends (APPEND_SCRIPT) slide the session's TTL but leave the token hashes alone, so ``w``
may have expired while the session lives on. Every other write then makes ``w`` again: it
must take the session's expiry (or none, when the session has none), whether the write
refreshes the TTL or changes nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
import redis
import redis.cluster
from redis_raw import raw_client

from ctx_memory.schema import dumps
from ctx_memory.stores.base import EncodedItem, EncodedMessage, new_header
from ctx_memory.stores.redis import RedisStore, session_keys

if TYPE_CHECKING:
    from collections.abc import Callable

    from conftest import RedisServer

    from ctx_memory.stores.base import BaseStore
    from ctx_memory.stores.redis import SessionKeys

pytestmark = [pytest.mark.redis, pytest.mark.stores("redis", "cluster")]

NOW = "2025-01-01T00:00:00+00:00"
TTL_MS = 60_000
RUN_DOWN_MS = 20_000  # what is left of the session's TTL when the write comes


def init(sid: str) -> Any:
    return new_header(sid, now=NOW, encoding="o200k_base")


def message(i: int, content: str = "") -> EncodedMessage:
    record = {"role": "user", "content": content or f"m{i}", "id": f"id-{i}"}
    return EncodedMessage(dumps(record), 2, f"id-{i}")


def item(i: int) -> EncodedItem:
    return EncodedItem("web", dumps({"content": f"c{i}"}), 1, f"fp{i}")


def redis_store(make_store: Callable[..., BaseStore], **kwargs: Any) -> RedisStore:
    store = make_store(**kwargs)
    assert isinstance(store, RedisStore)
    return store


# Every write of SESSION_SCRIPT that keeps a write token, on a session holding id-0..id-2
# and one fetched item. "append_messages" goes through SESSION_SCRIPT too: the store that
# runs the writes has never seen the session, so it sends the init header.
WRITES: dict[str, Callable[[BaseStore, str], object]] = {
    "delete_messages": lambda s, sid: s.delete_messages(sid, ["id-1"], now=NOW),
    "delete_messages_miss": lambda s, sid: s.delete_messages(sid, ["nope"], now=NOW),
    "replace_message": lambda s, sid: s.replace_message(sid, "id-1", message(1, "x"), now=NOW),
    "truncate_messages": lambda s, sid: s.truncate_messages(sid, "id-0", inclusive=False, now=NOW),
    "clear": lambda s, sid: s.clear(sid, now=NOW),
    "clear_preserving_fetched": lambda s, sid: s.clear(sid, now=NOW, preserve_fetched=True),
    "replace_document": lambda s, sid: s.replace_document(sid, init(sid), [message(5)], []),
    "merge_shared": lambda s, sid: s.merge_shared(sid, {"k": {"a": 1}}, init=init(sid), now=NOW),
    "set_shared": lambda s, sid: s.set_shared(sid, "k", 1, init=init(sid), now=NOW),
    "update_header": lambda s, sid: s.update_header(
        sid, init=init(sid), now=NOW, metadata={"title": "t"}
    ),
    "update_header_nothing": lambda s, sid: s.update_header(sid, init=init(sid), now=NOW),
    "create_existing": lambda s, sid: s.create(sid, init(sid)),
    "append_fetched": lambda s, sid: s.append_fetched(sid, [item(1)], init=init(sid), now=NOW),
    "append_fetched_nothing_new": lambda s, sid: s.append_fetched(
        sid, [item(0)], init=init(sid), now=NOW, dedupe=True
    ),
    "append_messages": lambda s, sid: s.append_messages(sid, [message(7)], init=init(sid), now=NOW),
    "save_recall_segments": lambda s, sid: s.save_recall_segments(sid, ["a", "b"]),
    "save_recall_segments_replacing": lambda s, sid: s.save_recall_segments(
        sid, ["c"], replace=True
    ),
}


def populate(store: BaseStore, sid: str) -> None:
    for i in range(3):
        store.append_messages(sid, [message(i)], init=init(sid), now=NOW)
    store.append_fetched(sid, [item(0)], init=init(sid), now=NOW)
    assert store.save_recall_segments(sid, ["s"])


def set_state(client: Any, k: SessionKeys, state: str) -> None:
    """The token hashes as the write finds them."""
    client.delete(k.w, k.wo)  # "expired": gone, as after appends only
    if state == "left_without_ttl":  # made by an earlier release, after the refresh
        client.hset(k.w, "0123456789abcdef", "1:0")
        client.hset(k.wo, "fedcba9876543210", "1:0")
    elif state == "rotating":  # W is TOKEN_WINDOW old: this write makes it WO
        client.hset(k.w, "0123456789abcdef", "1:0")
        client.pexpire(k.w, client.pttl(k.h))
        client.hset(k.h, "wg", 0)


def token_ttls(client: Any, k: SessionKeys) -> tuple[int, int, int]:
    """PTTL of h, w and wo, in this order.

    Read after h's, w's PTTL is no higher than h's whenever w expires no later than h.
    """
    return client.pttl(k.h), client.pttl(k.w), client.pttl(k.wo)


def assert_tokens_within_session(client: Any, k: SessionKeys) -> None:
    h, w, wo = token_ttls(client, k)
    assert h != -2, "the session is gone"
    assert w != -2, "the write kept no token"  # every write here keeps one
    for name, p in (("w", w), ("wo", wo)):
        if h == -1:
            assert p in (-2, -1), f"{name} expires ({p} ms) though the session does not"
        else:
            assert p == -2 or 0 <= p <= h, f"{name}: PTTL {p}, the session's {h}"


@pytest.mark.parametrize("state", ["expired", "left_without_ttl", "rotating"])
@pytest.mark.parametrize("write", list(WRITES))
def test_token_hashes_expire_with_a_session_that_has_a_ttl(
    make_store: Callable[..., BaseStore], write: str, state: str
) -> None:
    seed = redis_store(make_store, ttl_seconds=TTL_MS / 1000)
    populate(seed, "s")
    client = raw_client(seed)
    k = session_keys(seed.prefix, "s")
    client.pexpire(k.h, RUN_DOWN_MS)  # the TTL ran down since the last write
    set_state(client, k, state)
    store = redis_store(make_store, ttl_seconds=TTL_MS / 1000)  # knows nothing of "s"
    WRITES[write](store, "s")
    assert_tokens_within_session(client, k)
    h, w, _ = token_ttls(client, k)
    assert 0 < h <= TTL_MS
    assert w > 0
    if state == "rotating":
        assert client.exists(k.wo)
    client.close()


@pytest.mark.parametrize("write", list(WRITES))
def test_token_hashes_of_a_session_without_ttl_do_not_expire(
    make_store: Callable[..., BaseStore], write: str
) -> None:
    seed = redis_store(make_store)
    populate(seed, "s")
    client = raw_client(seed)
    k = session_keys(seed.prefix, "s")
    client.delete(k.w, k.wo)
    WRITES[write](redis_store(make_store), "s")
    assert_tokens_within_session(client, k)
    assert client.pttl(k.h) == -1
    client.close()


@pytest.mark.parametrize("write", list(WRITES))
def test_a_store_without_ttl_writing_to_a_session_with_one(
    make_store: Callable[..., BaseStore], write: str
) -> None:
    """A write by a store without a TTL makes a session made under one permanent, as on
    the other stores (SESSION_EXPIRATION_SECONDS=0: never expire); a write that does not
    refresh the TTL leaves it. Either way its token hashes never outlive it."""
    seed = redis_store(make_store, ttl_seconds=TTL_MS / 1000)
    populate(seed, "s")
    client = raw_client(seed)
    k = session_keys(seed.prefix, "s")
    client.pexpire(k.h, RUN_DOWN_MS)
    client.delete(k.w, k.wo)
    WRITES[write](redis_store(make_store), "s")
    h, _, _ = token_ttls(client, k)
    if write in {"delete_messages_miss", "save_recall_segments", "save_recall_segments_replacing"}:
        assert 0 < h <= RUN_DOWN_MS
    else:
        assert h == -1
    assert_tokens_within_session(client, k)
    client.close()


@pytest.mark.parametrize("write", ["delete_messages_miss", "save_recall_segments"])
def test_a_write_that_does_not_refresh_gives_the_token_the_sessions_expiry(
    make_store: Callable[..., BaseStore], write: str
) -> None:
    store = redis_store(make_store, ttl_seconds=TTL_MS / 1000)
    populate(store, "s")
    client = raw_client(store)
    k = session_keys(store.prefix, "s")
    client.pexpire(k.h, RUN_DOWN_MS)
    client.delete(k.w, k.wo)
    WRITES[write](store, "s")
    h, w, _ = token_ttls(client, k)
    assert h <= RUN_DOWN_MS  # no refresh
    assert RUN_DOWN_MS - 5_000 < w <= h
    client.close()


def test_a_retried_edit_that_changed_nothing_answers_the_same(
    make_store: Callable[..., BaseStore],
) -> None:
    store = redis_store(make_store, ttl_seconds=TTL_MS / 1000)
    populate(store, "s")
    client = raw_client(store)
    k = session_keys(store.prefix, "s")
    client.delete(k.w, k.wo)
    store._token = lambda: "feedfacefeedface"  # type: ignore[method-assign]
    assert store.delete_messages("s", ["id-9"], now=NOW) == 0
    store.append_messages("s", [message(9)], init=init("s"), now=NOW)
    # The same token: a retry of the first delete, which removed nothing, removes nothing.
    assert store.delete_messages("s", ["id-9"], now=NOW) == 0
    assert store.count_messages("s") == 4
    assert_tokens_within_session(client, k)
    client.close()


@pytest.fixture(scope="module")
def redis6_like_url(redis_server_factory: Callable[..., RedisServer]) -> str:
    """A server without PEXPIRETIME, as before Redis 7: the script falls back to PTTL."""
    return redis_server_factory("--rename-command", "PEXPIRETIME", '""').url


@pytest.mark.parametrize("write", list(WRITES))
@pytest.mark.parametrize("ttl", [TTL_MS / 1000, None])
def test_token_hashes_expire_with_the_session_without_pexpiretime(
    redis6_like_url: str, key_prefix: str, write: str, ttl: float | None
) -> None:
    seed = RedisStore(redis6_like_url, key_prefix=key_prefix, ttl_seconds=ttl)
    store = RedisStore(redis6_like_url, key_prefix=key_prefix, ttl_seconds=ttl)
    client = raw_client(seed)
    try:
        with pytest.raises(redis.ResponseError):
            client.execute_command("PEXPIRETIME", "x")
        populate(seed, "s")
        k = session_keys(seed.prefix, "s")
        if ttl:
            client.pexpire(k.h, RUN_DOWN_MS)
        set_state(client, k, "left_without_ttl")
        WRITES[write](store, "s")
        assert_tokens_within_session(client, k)
        h, w, _ = token_ttls(client, k)
        assert (h > 0 and w > 0) if ttl else h == w == -1
    finally:
        for key in client.scan_iter(match=f"{key_prefix}:*"):
            client.delete(key)
        client.close()
        seed.close()
        store.close()
