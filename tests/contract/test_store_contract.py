"""Store-level contract: every backend behaves like the in-memory reference store.

Each test runs on ``memory``, ``sqlite``, ``redis`` (a real server) and ``cluster`` (a real
3-master Redis Cluster).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import pytest

from ctx_memory.schema import dumps
from ctx_memory.stores.base import EncodedItem, EncodedMessage, Header, new_header

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore

NOW = "2025-01-01T00:00:00+00:00"
LATER = "2025-01-01T00:05:00+00:00"

HOSTILE_IDS = [
    "plain",
    "a}b",
    "{a}",
    "}{",
    "{",
    "}",
    "a:b:c",
    "*",
    "a*",
    "with space",
    " ",
    "ünï©ødé ✓ 🚀",
    "x" * 256,
    "a\nb",
    "[]",
    "\\",
    "%s",
    "ctx_memory:{__index__}:lru",
]


def init(session_id: str, now: str = NOW) -> Header:
    return new_header(session_id, now=now, encoding="o200k_base")


def msg(i: int, tokens: int = 3, role: str = "user") -> EncodedMessage:
    return EncodedMessage(
        dumps({"role": role, "content": f"m{i}", "token_count": tokens, "id": f"id-{i}"}),
        tokens,
        f"id-{i}",
    )


def item(source_type: str, i: int, fp: str | None = None) -> EncodedItem:
    body = {"source_type": source_type, "content": f"c{i}", "url": f"https://x/{i}"}
    return EncodedItem(source_type, dumps(body), 5, fp or f"fp-{source_type}-{i}")


def contents(messages: list[dict[str, Any]]) -> list[str]:
    return [m["content"] for m in messages]


def append(store: BaseStore, sid: str, *indices: int, now: str = NOW) -> Any:
    return store.append_messages(sid, [msg(i) for i in indices], init=init(sid), now=now)


# ------------------------------------------------------------------ create / upsert


def test_reads_of_a_missing_session_create_nothing(store: BaseStore) -> None:
    assert store.get_document("nope") is None
    assert store.get_header("nope") is None
    assert store.get_messages("nope") == []
    assert store.count_messages("nope") == 0
    assert store.get_fetched("nope") == {}
    assert not store.exists("nope")
    assert store.list_sessions() == []
    assert not store.delete("nope")
    assert not store.clear("nope", now=NOW)
    assert store.list_sessions() == []


def test_create_then_create_again(store: BaseStore) -> None:
    assert store.create("s", init("s")).created
    again = store.create("s", init("s", now=LATER))
    assert not again.created
    header = store.get_header("s")
    assert header is not None
    assert header["metadata"]["created_at"] == NOW
    assert header == {
        "system_prompt": None,
        "metadata": {**init("s")["metadata"], "timestamp": LATER},
        "shared": {},
    }


def test_first_write_upserts_from_init(store: BaseStore) -> None:
    result = append(store, "s", 0, 1)
    assert result.created
    assert result.added == 2
    assert not append(store, "s", 2).created
    document = store.get_document("s")
    assert document is not None
    assert list(document) == [
        "system_prompt",
        "metadata",
        "fetched_context",
        "conversation_history",
        "shared",
    ]
    assert document["metadata"]["session_id"] == "s"
    assert contents(document["conversation_history"]) == ["m0", "m1", "m2"]
    assert store.list_sessions() == ["s"]
    assert store.exists("s")


def test_counters_and_timestamp(store: BaseStore) -> None:
    store.append_messages("s", [msg(0, 4), msg(1, 6)], init=init("s"), now=NOW)
    store.append_messages("s", [msg(2, 10)], init=init("s"), now=LATER)
    meta = store.get_header("s")["metadata"]  # type: ignore[index]
    assert meta["message_count"] == 3
    assert meta["token_count"] == 20
    assert meta["timestamp"] == LATER
    assert store.count_messages("s") == 3


def test_empty_append_touches_only(store: BaseStore) -> None:
    result = store.append_messages("s", [], init=init("s"), now=NOW)
    assert result.created
    assert result.added == 0
    assert store.count_messages("s") == 0
    assert store.get_header("s")["metadata"]["message_count"] == 0  # type: ignore[index]


# ------------------------------------------------------------------ LRANGE semantics


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (0, -1),
        (0, 0),
        (-1, -1),
        (-3, -1),
        (2, 4),
        (3, 100),
        (-100, 1),
        (-100, -100),
        (5, 2),
        (10, 20),
        (-1, 0),
        (4, -2),
        (0, -6),
        (-5, -5),
    ],
)
def test_get_messages_follows_lrange(store: BaseStore, start: int, end: int) -> None:
    append(store, "s", 0, 1, 2, 3, 4)
    expected = [f"m{i}" for i in range(5)]
    n = 5
    lo = max(start + n if start < 0 else start, 0)
    hi = min(end + n if end < 0 else end, n - 1)
    assert contents(store.get_messages("s", start, end)) == (
        expected[lo : hi + 1] if lo <= hi else []
    )


# ------------------------------------------------------------------ fetched context


def test_fetched_grouped_in_first_seen_order(store: BaseStore) -> None:
    items = [item("web_search", 0), item("js_scraping", 1), item("web_search", 2), item("x y", 3)]
    result = store.append_fetched("s", items, init=init("s"), now=NOW)
    assert result.added == 4
    fetched = store.get_fetched("s")
    assert list(fetched) == ["web_search", "js_scraping", "x y"]
    assert [i["content"] for i in fetched["web_search"]] == ["c0", "c2"]
    assert store.get_fetched("s", "js_scraping") == {"js_scraping": [json_of(items[1])]}
    assert store.get_fetched("s", "unknown") == {}
    document = store.get_document("s")
    assert document is not None
    assert document["fetched_context"] == fetched


def json_of(encoded: EncodedItem) -> dict[str, Any]:
    import json

    return json.loads(encoded.json)  # type: ignore[no-any-return]


def test_fetched_dedupe(store: BaseStore) -> None:
    first = [item("web", 0), item("web", 1)]
    assert store.append_fetched("s", first, init=init("s"), now=NOW, dedupe=True).added == 2
    again = [item("web", 1), item("web", 2), item("web", 2)]
    assert store.append_fetched("s", again, init=init("s"), now=NOW, dedupe=True).added == 1
    assert [i["content"] for i in store.get_fetched("s")["web"]] == ["c0", "c1", "c2"]
    # without dedupe, duplicates are kept
    assert store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW).added == 1
    assert len(store.get_fetched("s")["web"]) == 4


# ------------------------------------------------------------------ shared state


def test_merge_shared_semantics(store: BaseStore) -> None:
    def merge(partial: dict[str, Any]) -> None:
        store.merge_shared("s", partial, init=init("s"), now=NOW)

    merge({"a": {"b": 1, "l": [1, 2]}, "s": 1, "e": [], "d": {}})
    merge({"a": {"c": {"deep": [], "n": None}, "l": []}, "s": {"now": "dict"}})
    merge({"e": {}, "d": {"k": [{}]}, "f": 0.30000000000000004, "big": 2**62 + 1})
    merge({"a": {"c": {"n": {"x": 'é"\\/\u2028'}}}, "d": {}})
    merge({"unicode": "ünï ✓ 🚀", "t": True, "z": False, "neg": -1.5e-300})
    merge({"s": {"now": {}}, "a": {"l": {"replaced": "list"}}})
    shared = store.get_header("s")["shared"]  # type: ignore[index]
    assert shared == {
        "a": {"b": 1, "l": {"replaced": "list"}, "c": {"deep": [], "n": {"x": 'é"\\/\u2028'}}},
        "s": {"now": {}},
        "e": {},
        "d": {"k": [{}]},
        "f": 0.30000000000000004,
        "big": 2**62 + 1,
        "unicode": "ünï ✓ 🚀",
        "t": True,
        "z": False,
        "neg": -1.5e-300,
    }
    assert list(shared) == ["a", "s", "e", "d", "f", "big", "unicode", "t", "z", "neg"]
    assert list(shared["a"]) == ["b", "l", "c"]


def test_merge_into_scalar_and_scalar_over_dict(store: BaseStore) -> None:
    store.merge_shared("s", {"k": 1, "m": {"x": {"y": 1}}}, init=init("s"), now=NOW)
    store.merge_shared("s", {"k": {"now": "dict"}, "m": {"x": 5}}, init=init("s"), now=NOW)
    assert store.get_header("s")["shared"] == {"k": {"now": "dict"}, "m": {"x": 5}}  # type: ignore[index]


def test_set_shared_replaces(store: BaseStore) -> None:
    store.merge_shared("s", {"k": {"a": 1, "b": 2}}, init=init("s"), now=NOW)
    store.set_shared("s", "k", {"c": []}, init=init("s"), now=NOW)
    store.set_shared("s", "weird key: {}*", [1, {"x": []}], init=init("s"), now=NOW)
    assert store.get_header("s")["shared"] == {  # type: ignore[index]
        "k": {"c": []},
        "weird key: {}*": [1, {"x": []}],
    }


# ------------------------------------------------------------------ header


def test_update_header_never_touches_counters(store: BaseStore) -> None:
    append(store, "s", 0, 1)
    store.update_header(
        "s",
        init=init("s"),
        now=LATER,
        metadata={"message_count": 99, "token_count": 99, "mode": "research", "extra": {"a": []}},
        system_prompt="Be brief.",
        set_system_prompt=True,
    )
    header = store.get_header("s")
    assert header is not None
    meta = header["metadata"]
    assert (meta["message_count"], meta["token_count"]) == (2, 6)
    assert meta["mode"] == "research"
    assert meta["extra"] == {"a": []}
    assert meta["timestamp"] == LATER
    assert header["system_prompt"] == "Be brief."
    store.update_header("s", init=init("s"), now=NOW, metadata={"mode": "thinking"})
    assert store.get_header("s")["system_prompt"] == "Be brief."  # type: ignore[index]
    store.update_header("s", init=init("s"), now=NOW, system_prompt=None, set_system_prompt=True)
    assert store.get_header("s")["system_prompt"] is None  # type: ignore[index]


def test_update_header_metadata_is_shallow(store: BaseStore) -> None:
    store.update_header("s", init=init("s"), now=NOW, metadata={"extra": {"a": 1}})
    store.update_header("s", init=init("s"), now=NOW, metadata={"extra": {"b": 2}})
    assert store.get_header("s")["metadata"]["extra"] == {"b": 2}  # type: ignore[index]


# ------------------------------------------------------------------ clear / delete / replace


@pytest.mark.parametrize("preserve", [False, True])
def test_clear(store: BaseStore, preserve: bool) -> None:
    append(store, "s", 0, 1)
    store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW, dedupe=True)
    store.merge_shared("s", {"keep": 1}, init=init("s"), now=NOW)
    store.update_header("s", init=init("s"), now=NOW, system_prompt="P", set_system_prompt=True)
    assert store.clear("s", now=LATER, preserve_fetched=preserve)
    document = store.get_document("s")
    assert document is not None
    assert document["conversation_history"] == []
    assert document["metadata"]["message_count"] == 0
    assert document["metadata"]["token_count"] == 0
    assert document["metadata"]["timestamp"] == LATER
    assert document["shared"] == {"keep": 1}
    assert document["system_prompt"] == "P"
    if preserve:
        assert list(document["fetched_context"]) == ["web"]
        # fingerprints kept too: the same item is still a duplicate
        added = store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW, dedupe=True)
        assert added.added == 0
    else:
        assert document["fetched_context"] == {}
        added = store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW, dedupe=True)
        assert added.added == 1
    append(store, "s", 7)
    assert contents(store.get_messages("s")) == ["m7"]


def test_delete(store: BaseStore) -> None:
    append(store, "s", 0)
    store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW, dedupe=True)
    assert store.delete("s")
    assert not store.delete("s")
    assert store.get_document("s") is None
    assert store.list_sessions() == []
    # recreated from scratch: nothing of the old session survives
    assert append(store, "s", 1).created
    assert store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW, dedupe=True).added
    assert contents(store.get_messages("s")) == ["m1"]


def test_replace_document(store: BaseStore) -> None:
    append(store, "s", 0, 1, 2)
    header = init("s")
    header["system_prompt"] = "imported"
    header["metadata"].update(message_count=2, token_count=42, mode="research", extra=[])
    header["shared"] = {"x": {"y": []}}
    items = [item("web", 0), item("pdf", 1)]
    result = store.replace_document("s", header, [msg(10), msg(11)], items)
    assert not result.created
    assert result.added == 2
    document = store.get_document("s")
    assert document is not None
    assert document["system_prompt"] == "imported"
    assert document["metadata"] == header["metadata"]
    assert document["shared"] == {"x": {"y": []}}
    assert contents(document["conversation_history"]) == ["m10", "m11"]
    assert list(document["fetched_context"]) == ["web", "pdf"]
    assert (
        store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW, dedupe=True).added == 0
    )
    assert store.replace_document("new", init("new"), [], []).created
    assert store.list_sessions() == ["new", "s"]


# ------------------------------------------------------------------ isolation, aliasing


def test_hostile_ids_are_isolated(store: BaseStore) -> None:
    for n, sid in enumerate(HOSTILE_IDS):
        append(store, sid, n)
        store.merge_shared(sid, {"owner": sid}, init=init(sid), now=NOW)
        store.append_fetched(sid, [item("web", n, fp="same")], init=init(sid), now=NOW, dedupe=True)
    assert store.list_sessions() == sorted(HOSTILE_IDS)
    for n, sid in enumerate(HOSTILE_IDS):
        document = store.get_document(sid)
        assert document is not None
        assert document["metadata"]["session_id"] == sid
        assert contents(document["conversation_history"]) == [f"m{n}"]
        assert document["shared"] == {"owner": sid}
        assert [i["content"] for i in document["fetched_context"]["web"]] == [f"c{n}"]
    for sid in HOSTILE_IDS[::2]:
        assert store.delete(sid)
    assert store.list_sessions() == sorted(HOSTILE_IDS[1::2])
    for n, sid in enumerate(HOSTILE_IDS):
        assert store.count_messages(sid) == (n % 2)


def test_returned_objects_are_fresh(store: BaseStore) -> None:
    append(store, "s", 0)
    store.merge_shared("s", {"a": {"b": []}}, init=init("s"), now=NOW)
    store.append_fetched("s", [item("web", 0)], init=init("s"), now=NOW)
    document = store.get_document("s")
    assert document is not None
    document["shared"]["a"]["b"].append(1)
    document["metadata"]["mode"] = "mutated"
    document["conversation_history"][0]["content"] = "mutated"
    document["fetched_context"]["web"][0]["content"] = "mutated"
    header = store.get_header("s")
    assert header is not None
    header["shared"]["a"] = None
    store.get_messages("s")[0]["content"] = "mutated"
    store.get_fetched("s")["web"].clear()
    partial: dict[str, Any] = {"p": {"q": []}}
    store.merge_shared("s", partial, init=init("s"), now=NOW)
    partial["p"]["q"].append("mutated")
    fresh = store.get_document("s")
    assert fresh is not None
    assert fresh["shared"] == {"a": {"b": []}, "p": {"q": []}}
    assert fresh["metadata"]["mode"] == "normal"
    assert contents(fresh["conversation_history"]) == ["m0"]
    assert fresh["fetched_context"]["web"][0]["content"] == "c0"


# ------------------------------------------------------------------ TTL and LRU


def test_ttl_expiry_and_sliding_refresh(make_store: Callable[..., BaseStore]) -> None:
    store = make_store(ttl_seconds=0.6)
    events: list[tuple[str, str]] = []
    store.lifecycle_hook = lambda kind, sid: events.append((kind, sid))
    append(store, "keep", 0)
    append(store, "drop", 0)
    time.sleep(0.35)
    append(store, "keep", 1)  # a write slides the TTL
    store.get_messages("drop")  # a read does not
    time.sleep(0.4)
    assert store.exists("keep")
    assert not store.exists("drop")
    assert store.get_document("drop") is None
    assert store.list_sessions() == ["keep"]
    assert contents(store.get_messages("keep")) == ["m0", "m1"]
    time.sleep(0.7)
    store.gc()
    assert store.list_sessions() == []
    assert ("session_expired", "keep") in events
    # an expired session starts afresh
    assert append(store, "drop", 5).created
    assert contents(store.get_messages("drop")) == ["m5"]


def test_lru_eviction(make_store: Callable[..., BaseStore]) -> None:
    store = make_store(max_sessions=2)
    events: list[tuple[str, str]] = []
    store.lifecycle_hook = lambda kind, sid: events.append((kind, sid))
    append(store, "a", 0)
    append(store, "b", 0)
    assert store.get_messages("a")  # a read makes "a" recently used
    result = append(store, "c", 0)
    assert result.created
    assert result.evicted == ("b",)
    assert events == [("session_evicted", "b")]
    assert store.list_sessions() == ["a", "c"]
    assert store.get_document("b") is None
    append(store, "a", 1)  # a write too
    assert append(store, "d", 0).evicted == ("c",)
    assert store.list_sessions() == ["a", "d"]
    assert contents(store.get_messages("a")) == ["m0", "m1"]
    # the read just above made "a" the most recently used
    assert store.replace_document("e", init("e"), [msg(1)], []).evicted == ("d",)
    assert store.list_sessions() == ["a", "e"]


@pytest.mark.stores("sqlite", "redis", "cluster")  # the in-memory store is private
def test_lru_is_shared_between_store_objects(make_store: Callable[..., BaseStore]) -> None:
    one, two = make_store(max_sessions=2), make_store(max_sessions=2)
    append(one, "a", 0)
    append(two, "b", 0)
    append(one, "c", 0)
    assert two.list_sessions() == ["b", "c"]


# ------------------------------------------------------------------ async twins


async def test_async_twins(store: BaseStore) -> None:
    assert (await store.acreate("s", init("s"))).created
    assert (await store.aappend_messages("s", [msg(0), msg(1)], init=init("s"), now=NOW)).added == 2
    fetched = await store.aappend_fetched(
        "s", [item("web", 0), item("web", 0)], init=init("s"), now=NOW, dedupe=True
    )
    assert fetched.added == 1
    await store.amerge_shared("s", {"a": {"b": []}}, init=init("s"), now=NOW)
    await store.aset_shared("s", "c", 1, init=init("s"), now=NOW)
    await store.aupdate_header(
        "s",
        init=init("s"),
        now=LATER,
        metadata={"mode": "thinking"},
        system_prompt="P",
        set_system_prompt=True,
    )
    assert await store.aexists("s")
    assert await store.acount_messages("s") == 2
    assert contents(await store.aget_messages("s", -1, -1)) == ["m1"]
    assert list(await store.aget_fetched("s")) == ["web"]
    header = await store.aget_header("s")
    assert header is not None
    assert header["shared"] == {"a": {"b": []}, "c": 1}
    assert header["metadata"]["mode"] == "thinking"
    document = await store.aget_document("s")
    assert document == store.get_document("s")
    assert await store.alist_sessions() == ["s"]
    assert await store.aclear("s", now=NOW)
    assert await store.acount_messages("s") == 0
    replaced = await store.areplace_document("t", init("t"), [msg(3)], [])
    assert replaced.created
    assert await store.adelete("s")
    assert await store.alist_sessions() == ["t"]
    await store.aclose()


@pytest.mark.stores("sqlite", "redis", "cluster")  # the in-memory store is private
def test_write_after_another_store_object_deleted_the_session(
    make_store: Callable[..., BaseStore],
) -> None:
    one, two = make_store(), make_store()
    append(one, "s", 0)
    assert two.delete("s")
    result = append(one, "s", 1)
    assert result.created
    document = two.get_document("s")
    assert document is not None
    assert document["metadata"]["session_id"] == "s"
    assert contents(document["conversation_history"]) == ["m1"]
