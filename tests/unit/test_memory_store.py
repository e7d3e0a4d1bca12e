from __future__ import annotations

import asyncio

import pytest

from ctx_memory import InMemoryStore, InvalidTTLError
from ctx_memory.schema import dumps
from ctx_memory.stores.base import EncodedItem, EncodedMessage, new_header

NOW = "2026-01-01T00:00:00+00:00"


def msg(i: int) -> EncodedMessage:
    return EncodedMessage(
        dumps({"role": "user", "content": f"m{i}", "token_count": 5, "id": f"id-{i}"}), 5, f"id-{i}"
    )


def init(sid: str):
    return new_header(sid, now=NOW, encoding="o200k_base")


def test_negative_ttl_rejected():
    with pytest.raises(InvalidTTLError):
        InMemoryStore(ttl_seconds=-1)


def test_lrange_semantics():
    store = InMemoryStore()
    store.append_messages("s", [msg(i) for i in range(5)], init=init("s"), now=NOW)
    contents = lambda xs: [x["content"] for x in xs]  # noqa: E731
    assert contents(store.get_messages("s")) == ["m0", "m1", "m2", "m3", "m4"]
    assert contents(store.get_messages("s", -2, -1)) == ["m3", "m4"]
    assert contents(store.get_messages("s", 1, 2)) == ["m1", "m2"]
    assert contents(store.get_messages("s", -100, 1)) == ["m0", "m1"]
    assert store.get_messages("s", 3, 1) == []
    assert store.get_messages("s", 10, 20) == []
    assert store.get_messages("missing") == []
    assert store.count_messages("s") == 5


def test_readers_never_alias_stored_state():
    store = InMemoryStore()
    store.merge_shared("s", {"a": {"b": [1]}}, init=init("s"), now=NOW)
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    doc = store.get_document("s")
    doc["shared"]["a"]["b"].append(2)
    doc["conversation_history"][0]["content"] = "changed"
    doc["metadata"]["message_count"] = 99
    header = store.get_header("s")
    header["shared"]["a"] = None
    fresh = store.get_document("s")
    assert fresh["shared"] == {"a": {"b": [1]}}
    assert fresh["conversation_history"][0]["content"] == "m0"
    assert fresh["metadata"]["message_count"] == 1
    # Nor does a merge keep a reference to the caller's dict.
    partial = {"x": {"y": [1]}}
    store.merge_shared("s", partial, init=init("s"), now=NOW)
    partial["x"]["y"].append(2)
    assert store.get_header("s")["shared"]["x"] == {"y": [1]}


def test_sliding_ttl_with_fake_clock(clock):
    events = []
    store = InMemoryStore(ttl_seconds=10, clock=clock)
    store.lifecycle_hook = lambda kind, sid: events.append((kind, sid))
    store.create("s", init("s"))
    clock.advance(9)
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)  # refreshes
    clock.advance(9)
    assert store.exists("s")
    clock.advance(2)
    assert not store.exists("s")
    assert events == [("session_expired", "s")]
    assert store.get_document("s") is None


def test_gc_removes_untouched_sessions(clock):
    store = InMemoryStore(ttl_seconds=5, clock=clock)
    for sid in ("a", "b"):
        store.create(sid, init(sid))
    clock.advance(3)
    store.append_messages("b", [msg(0)], init=init("b"), now=NOW)
    clock.advance(3)
    assert store.gc() == 1
    assert store.list_sessions() == ["b"]


def test_lru_counts_reads_as_use():
    events = []
    store = InMemoryStore(max_sessions=3)
    store.lifecycle_hook = lambda kind, sid: events.append((kind, sid))
    for sid in ("a", "b", "c"):
        store.create(sid, init(sid))
    store.get_header("a")
    result = store.create("d", init("d"))
    assert result.created
    assert result.evicted == ("b",)
    assert events == [("session_evicted", "b")]
    assert store.list_sessions() == ["a", "c", "d"]


def test_dedupe_by_fingerprint():
    store = InMemoryStore()
    item = EncodedItem("web", dumps({"source_type": "web", "content": "c"}), 1, "fp1")
    assert store.append_fetched("s", [item, item], init=init("s"), now=NOW, dedupe=True).added == 1
    assert store.append_fetched("s", [item], init=init("s"), now=NOW, dedupe=True).added == 0
    assert store.append_fetched("s", [item], init=init("s"), now=NOW).added == 1
    assert len(store.get_fetched("s")["web"]) == 2
    assert store.get_fetched("s", "other") == {}


def test_update_header_never_touches_counters():
    store = InMemoryStore()
    store.append_messages("s", [msg(0)], init=init("s"), now=NOW)
    store.update_header(
        "s", init=init("s"), now=NOW, metadata={"message_count": 50, "token_count": 1, "x": 1}
    )
    meta = store.get_header("s")["metadata"]
    assert (meta["message_count"], meta["token_count"], meta["x"]) == (1, 5, 1)


def test_gc_thread_stops_on_close():
    store = InMemoryStore(ttl_seconds=1, gc_interval_seconds=0.05)
    assert store.gc_running
    store.close()
    assert not store.gc_running
    store.close()  # idempotent


def test_async_twins():
    store = InMemoryStore()

    async def main():
        await store.aappend_messages("s", [msg(1), msg(2)], init=init("s"), now=NOW)
        assert [m["content"] for m in await store.aget_messages("s", -1, -1)] == ["m2"]
        assert await store.alist_sessions() == ["s"]
        async with store:
            assert await store.aexists("s")

    asyncio.run(main())


def test_the_session_limit_counts_live_sessions_only(clock):
    """An expired session read just before it expired (so recently used) must not make a
    live one be evicted: it expires, and nothing is evicted while under the limit."""
    events = []
    store = InMemoryStore(ttl_seconds=1, max_sessions=3, clock=clock)
    store.lifecycle_hook = lambda kind, sid: events.append((kind, sid))
    store.append_messages("x", [msg(0)], init=init("x"), now=NOW)
    clock.advance(0.5)
    for sid in ("y", "z"):
        store.append_messages(sid, [msg(1)], init=init(sid), now=NOW)
    clock.advance(0.4)
    assert store.get_messages("x")  # a read: x is the most recently used
    clock.advance(0.3)  # x expired; y and z are live
    store.append_messages("w", [msg(2)], init=init("w"), now=NOW)
    assert events == [("session_expired", "x")]
    assert sorted(store.list_sessions()) == ["w", "y", "z"]
    clock.advance(0.5)  # y and z expired too: an expired LRU session is not "evicted"
    store.append_messages("v", [msg(3)], init=init("v"), now=NOW)
    assert ("session_evicted", "y") not in events


def test_store_stats_show_the_limits_of_the_store_in_use(tmp_path):
    from ctx_memory import ContextManager
    from ctx_memory.stores.sqlite import SqliteStore

    stats = ContextManager(store=InMemoryStore(ttl_seconds=1, max_sessions=2)).get_memory_stats()
    assert (stats["max_sessions"], stats["ttl_seconds"]) == (2, 1)
    with ContextManager(store=SqliteStore(str(tmp_path / "s.sqlite3"))) as cm:
        stats = cm.get_memory_stats()
    assert (stats["max_sessions"], stats["ttl_seconds"]) == (None, None)


def test_an_edit_that_finds_nothing_is_no_lru_access():
    """As on SQLite, Redis and PostgreSQL: an unknown message id changes nothing, moves nothing."""
    store = InMemoryStore(max_sessions=2)
    store.append_messages("a", [msg(0)], init=init("a"), now=NOW)
    store.append_messages("b", [msg(1)], init=init("b"), now=NOW)
    assert store.delete_messages("a", ["no-such-id"], now=NOW) == 0
    assert store.truncate_messages("a", "no-such-id", inclusive=False, now=NOW) is None
    assert store.append_messages("c", [msg(2)], init=init("c"), now=NOW).evicted == ("a",)
    store.delete_messages("b", ["id-1"], now=NOW)  # an edit that changes something counts
    assert store.append_messages("d", [msg(3)], init=init("d"), now=NOW).evicted == ("c",)
