"""The Redis store's recall segments: the list ``P:{T}:r``, its TTL, and what deletes it.

The contract (``ctx_memory/testing/recall_segment_tests.py``) checks what a caller sees;
these tests check the keys themselves.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest
from redis_raw import raw_client

from ctx_memory.schema import dumps
from ctx_memory.stores.base import EncodedMessage, new_header
from ctx_memory.stores.redis import RedisStore, index_key, session_keys

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore

pytestmark = [pytest.mark.redis, pytest.mark.stores("redis", "cluster")]

NOW = "2025-01-01T00:00:00+00:00"


def init(sid: str) -> Any:
    return new_header(sid, now=NOW, encoding="o200k_base")


def write(store: BaseStore, sid: str, i: int = 0) -> None:
    record = {"role": "user", "content": f"m{i}", "id": f"id-{i}"}
    store.append_messages(
        sid, [EncodedMessage(dumps(record), 2, f"id-{i}")], init=init(sid), now=NOW
    )


def redis_store(make_store: Callable[..., BaseStore], **kwargs: Any) -> RedisStore:
    store = make_store(**kwargs)
    assert isinstance(store, RedisStore)
    return store


def test_segments_take_the_sessions_remaining_ttl(make_store: Callable[..., BaseStore]) -> None:
    store = redis_store(make_store, ttl_seconds=60)
    write(store, "s")
    k = session_keys(store.prefix, "s")
    client = raw_client(store)
    client.pexpire(k.h, 20_000)  # the session's TTL has run down since its last write
    client.delete(k.w)  # no token kept yet (only appends so far)
    assert store.save_recall_segments("s", ["a"])
    assert 15_000 < client.pttl(k.r) <= 20_000
    assert client.pttl(k.h) <= 20_000  # saving is no write: the session's TTL did not slide
    assert 0 < client.pttl(k.w) <= 20_000  # the token's hash it made expires with the session
    client.close()


def test_segments_of_a_session_without_ttl_do_not_expire(
    make_store: Callable[..., BaseStore],
) -> None:
    store = redis_store(make_store)
    write(store, "s")
    k = session_keys(store.prefix, "s")
    client = raw_client(store)
    client.pexpire(k.r, 1)  # not there yet: no effect
    assert store.save_recall_segments("s", ["a"])
    client.pexpire(k.r, 50_000)
    assert store.save_recall_segments("s", ["b"])  # the list takes the session's: none
    assert client.pttl(k.r) == -1
    assert store.get_recall_segments("s") == ["a", "b"]
    client.close()


def test_saving_and_reading_segments_is_no_access(make_store: Callable[..., BaseStore]) -> None:
    store = redis_store(make_store, max_sessions=2)
    write(store, "a")
    write(store, "b")
    client = raw_client(store)
    k = session_keys(store.prefix, "a")
    score = client.zscore(index_key(store.prefix), k.member)
    stamp = client.hget(k.h, "ts")
    events: list[tuple[str, str]] = []
    store.add_lifecycle_hook(lambda kind, sid: events.append((kind, sid)))
    assert store.save_recall_segments("a", ["x"])
    assert store.get_recall_segments("a") == ["x"]
    assert client.zscore(index_key(store.prefix), k.member) == score
    assert client.hget(k.h, "ts") == stamp
    write(store, "c")  # a is still the least recently used: evicted, its segments with it
    assert not client.exists(k.h, k.r)
    assert events == [("session_evicted", "a")]
    client.close()


def test_a_missing_session_gets_no_keys(make_store: Callable[..., BaseStore]) -> None:
    store = redis_store(make_store)
    assert not store.save_recall_segments("s", ["a"])
    assert not store.save_recall_segments("s", ["a"], replace=True)
    assert not store.save_recall_segments("s", [])
    client = raw_client(store)
    assert not client.exists(*session_keys(store.prefix, "s").script_keys)
    client.close()


def test_segments_left_without_their_session_are_not_read(
    make_store: Callable[..., BaseStore],
) -> None:
    store = redis_store(make_store)
    write(store, "s")
    assert store.save_recall_segments("s", ["a"])
    client = raw_client(store)
    k = session_keys(store.prefix, "s")
    client.delete(k.h)  # as if the hash expired first
    assert store.get_recall_segments("s") == []
    assert not store.save_recall_segments("s", ["b"])
    write(store, "s")  # made again: the old list goes
    assert not client.exists(k.r)
    assert store.get_recall_segments("s") == []
    client.close()


def test_gc_deletes_the_segments_of_an_expired_session(
    make_store: Callable[..., BaseStore],
) -> None:
    """Segments saved with no TTL outlive a session that got one later, until gc runs."""
    store = redis_store(make_store)
    write(store, "s")
    assert store.save_recall_segments("s", ["a"])
    later = redis_store(make_store, ttl_seconds=0.2)
    later.merge_shared("s", {"k": 1}, init=init("s"), now=NOW)
    time.sleep(0.35)
    client = raw_client(store)
    k = session_keys(store.prefix, "s")
    assert client.exists(k.r)
    assert not client.exists(k.h)
    assert later.gc() == 1
    assert not client.exists(k.r)
    client.close()


def test_history_edits_delete_the_list(make_store: Callable[..., BaseStore]) -> None:
    store = redis_store(make_store)
    client = raw_client(store)
    r = session_keys(store.prefix, "s").r
    edits: list[Callable[[], object]] = [
        lambda: store.delete_messages("s", ["id-1"], now=NOW),
        lambda: store.replace_message(
            "s", "id-0", EncodedMessage(dumps({"role": "user", "id": "id-0"}), 1, "id-0"), now=NOW
        ),
        lambda: store.truncate_messages("s", "id-0", inclusive=True, now=NOW),
        lambda: store.clear("s", now=NOW),
        lambda: store.replace_document("s", init("s"), [], []),
        lambda: store.delete("s"),
    ]
    for edit in edits:
        write(store, "s", 0)
        write(store, "s", 1)
        assert store.save_recall_segments("s", ["a"])
        assert client.exists(r)
        edit()
        assert not client.exists(r)
    client.close()


def test_a_retried_save_is_applied_once(make_store: Callable[..., BaseStore]) -> None:
    store = redis_store(make_store)
    write(store, "s")
    store._token = lambda: "feedfacefeedface"  # type: ignore[method-assign]
    assert store.save_recall_segments("s", ["a"])
    assert store.save_recall_segments("s", ["a"])  # the same token: a retry
    assert store.get_recall_segments("s") == ["a"]
