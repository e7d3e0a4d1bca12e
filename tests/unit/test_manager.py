from __future__ import annotations

import asyncio
import json
import threading
import time

import pytest
import tiktoken
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage

from ctx_memory import (
    ContextManager,
    ContextMode,
    DocumentImportError,
    EventType,
    InMemoryStore,
    InvalidRoleError,
    InvalidSessionIdError,
    NotSerializableError,
    SessionNotFoundError,
    ValidationError,
)
from ctx_memory.tokens import TOKENS_PER_MESSAGE


def independent_history_tokens(document: dict, encoding: str = "o200k_base") -> int:
    """What README documents: per message 3 + role + content (+1 + name when named)."""
    enc = tiktoken.get_encoding(encoding)
    total = 0
    for m in document["conversation_history"]:
        total += TOKENS_PER_MESSAGE + len(enc.encode(m["role"])) + len(enc.encode(m["content"]))
        if m.get("name"):
            total += 1 + len(enc.encode(m["name"]))
    return total


def strip_times(document: dict) -> dict:
    document = json.loads(json.dumps(document))
    document["metadata"].pop("timestamp", None)
    return document


# ------------------------------------------------------------------ seed 000


def test_seed_000_session_api(manager):
    manager.create_session("session_001")
    manager.set_context("session_001", "user_query", "How do I book a flight?")
    manager.set_context("session_001", "agent", "chat_agent")
    manager.update_partial_context(
        "session_001", {"intent": "booking", "details": {"class": "economy", "flexible": True}}
    )
    manager.update_partial_context("session_001", {"details": {"seat": "aisle"}})
    shared = manager.get_context("session_001")["shared"]
    assert shared == {
        "user_query": "How do I book a flight?",
        "agent": "chat_agent",
        "intent": "booking",
        "details": {"class": "economy", "flexible": True, "seat": "aisle"},
    }
    assert manager.delete_context("session_001") is True
    assert manager.get_context("session_001") == {}
    assert manager.delete_context("session_001") is False


def test_partial_update_replaces_lists_and_scalars(manager):
    manager.update_partial_context("s", {"a": [1, 2], "b": {"c": 1}, "d": 5})
    manager.update_partial_context("s", {"a": [], "b": 7, "d": {"e": {}}})
    assert manager.get_context("s")["shared"] == {"a": [], "b": 7, "d": {"e": {}}}


def test_async_twins_and_flag(manager):
    assert manager.async_enabled is True

    async def flow():
        await manager.async_create_session("a1")
        await manager.async_set_context("a1", "async_key", "async_value")
        await manager.async_update_partial_context("a1", {"n": {"m": 1}})
        await manager.aadd_user_message("a1", "hi")
        await manager.aadd_assistant_message("a1", "hello", model="m")
        ctx = await manager.async_get_context("a1")
        assert ctx["shared"] == {"async_key": "async_value", "n": {"m": 1}}
        assert [m.content for m in await manager.aget_messages("a1")] == ["hi", "hello"]
        assert (await manager.aget_memory_stats("a1"))["message_count"] == 2
        assert await manager.async_delete_context("a1") is True
        return await manager.async_get_context("a1")

    assert asyncio.run(flow()) == {}


def test_async_operations_off_still_works_through_threads():
    with ContextManager(async_operations=False) as cm:
        assert cm.async_enabled is False
        asyncio.run(cm.aadd_user_message("s", "hi"))
        assert cm.get_history("s")[0]["content"] == "hi"


# ------------------------------------------------------------------ seed 001


def test_seed_001_flow(manager):
    manager.update_metadata(
        "s1",
        mode=ContextMode.THINKING,
        current_url="https://example.com/page",
        user_timezone="America/New_York",
        user_time="2025-12-09T07:00:00",
        plan="pro",
    )
    manager.set_system_prompt("s1", "System instructions")
    manager.add_user_message("s1", "User's question")
    messages = manager.get_formatted_messages_for_api("s1")
    assert messages == [
        {"role": "system", "content": "System instructions"},
        {"role": "user", "content": "User's question"},
    ]
    manager.add_assistant_message(
        "s1",
        "Assistant's response",
        model="gpt-4o-mini",
        response_time_ms=850,
        sources_used=["https://source.url"],
        tools_used=["web_search"],
    )
    manager.add_fetched_context(
        "s1",
        "web_search",
        "Search result content...",
        url="https://source.url",
        extracted_data={
            "title": "Page Title",
            "site_name": "Source Site",
            "published_date": "2025-11-14",
        },
    )
    doc = manager.get_context("s1")
    assert list(doc) == [
        "system_prompt",
        "metadata",
        "fetched_context",
        "conversation_history",
        "shared",
    ]
    meta = doc["metadata"]
    assert meta["mode"] == "thinking"
    assert meta["current_url"] == "https://example.com/page"
    assert meta["user_timezone"] == "America/New_York"
    assert meta["plan"] == "pro"
    assert meta["message_count"] == 2
    assistant = doc["conversation_history"][1]
    assert assistant["metadata"] == {
        "model": "gpt-4o-mini",
        "response_time_ms": 850,
        "sources_used": ["https://source.url"],
        "tools_used": ["web_search"],
    }
    item = doc["fetched_context"]["web_search"][0]
    assert item["source_type"] == "web_search"
    assert item["extracted_data"]["title"] == "Page Title"
    assert item["token_count"] > 0


def test_clear_preserving_fetched(manager):
    manager.set_system_prompt("s", "sys")
    manager.add_user_message("s", "q")
    manager.add_fetched_context("s", "js_scraping", "page", url="https://p")
    manager.set_context("s", "k", 1)
    assert manager.clear("s", preserve_fetched=True) is True
    doc = manager.get_context("s")
    assert doc["conversation_history"] == []
    assert doc["metadata"]["message_count"] == doc["metadata"]["token_count"] == 0
    assert doc["fetched_context"]["js_scraping"][0]["content"] == "page"
    assert doc["system_prompt"] == "sys"
    assert doc["shared"] == {"k": 1}
    manager.clear("s")
    assert manager.get_context("s")["fetched_context"] == {}
    assert manager.clear("missing") is False


def test_memory_stats_use_cached_counts(manager):
    manager.set_system_prompt("s", "You are terse.")
    manager.add_user_message("s", "one two three")
    manager.add_fetched_context("s", "web_search", "alpha beta")
    stats = manager.get_memory_stats("s")
    counter = manager.token_counter
    assert stats["message_count"] == 1
    assert stats["token_count"] == counter.count_message("user", "one two three")
    assert stats["system_prompt_tokens"] == counter.count("You are terse.")
    assert stats["fetched_items"] == {"web_search": 1}
    assert stats["fetched_tokens"] == {"web_search": counter.count("alpha beta")}
    assert stats["total_tokens"] == stats["token_count"] + stats[
        "system_prompt_tokens"
    ] + counter.count("alpha beta")
    assert manager.get_memory_stats("nope") == {"session_id": "nope", "exists": False}
    overall = manager.get_memory_stats()
    assert overall["session_count"] == 1
    assert overall["store"] == "memory"


def test_last_k_and_ranges(manager):
    for i in range(10):
        manager.add_user_message("s", f"m{i}")
    assert [m["content"] for m in manager.get_history("s", last_k=3)] == ["m7", "m8", "m9"]
    assert [m.content for m in manager.get_messages("s", last_k=2)] == ["m8", "m9"]
    assert manager.get_history("s", last_k=0) == []
    assert len(manager.get_history("s", last_k=50)) == 10
    assert [m["content"] for m in manager.get_message_range("s", 2, 4)] == ["m2", "m3", "m4"]
    with pytest.raises(ValidationError, match="last_k"):
        manager.get_history("s", last_k=-1)


def test_list_sessions_and_exists(manager):
    for sid in ("b", "a", "c"):
        manager.create_session(sid)
    assert manager.list_sessions() == ["a", "b", "c"]
    assert manager.session_exists("a")
    assert not manager.session_exists("zzz")


# ------------------------------------------------------------------ LangChain messages


def test_langchain_messages_round_trip_through_the_manager(manager):
    messages = [
        SystemMessage(content="sys"),
        HumanMessage(content="weather?", id="h1"),
        AIMessage(
            content="",
            tool_calls=[{"name": "weather", "args": {"city": "Paris"}, "id": "c1"}],
            usage_metadata={"input_tokens": 3, "output_tokens": 4, "total_tokens": 7},
        ),
        ToolMessage(content="sunny", tool_call_id="c1", name="weather"),
        AIMessage(content="It is sunny.", response_metadata={"model_name": "fake"}),
    ]
    manager.add_messages("s", messages)
    stored = manager.get_messages("s")
    assert stored[1].id == "h1"  # a LangChain id is kept; the others get generated ones
    assert all(isinstance(m.id, str) and m.id for m in stored)
    assert stored == [
        m.model_copy(update={"id": s.id}) for m, s in zip(messages, stored, strict=True)
    ]
    api = manager.get_formatted_messages_for_api("s")
    assert api[2]["tool_calls"][0]["function"] == {
        "name": "weather",
        "arguments": '{"city": "Paris"}',
    }
    assert api[3]["tool_call_id"] == "c1"


# ------------------------------------------------------------------ token counts


def test_token_count_is_exact_after_appends_clear_and_import(manager):
    manager.add_user_message("s", "How do I book a flight to Paris?")
    manager.add_assistant_message("s", "Pick dates, compare fares, book early.")
    manager.add_message("s", "user", "And hotels?", name="alice")
    doc = manager.get_context("s")
    assert doc["metadata"]["token_count"] == independent_history_tokens(doc)
    assert all(m["token_count"] > 0 for m in doc["conversation_history"])

    manager.clear("s")
    manager.add_user_message("s", "fresh start")
    doc = manager.get_context("s")
    assert doc["metadata"]["token_count"] == independent_history_tokens(doc)

    # An imported document with wrong counts gets exact ones.
    tampered = json.loads(manager.export_session("s"))
    tampered["metadata"]["token_count"] = 999_999
    tampered["conversation_history"][0]["token_count"] = 5
    other = ContextManager()
    other.import_session(tampered)
    imported = other.get_context("s")
    assert imported["metadata"]["token_count"] == independent_history_tokens(imported)
    assert imported["metadata"]["message_count"] == 1


def test_counts_with_another_encoding():
    with ContextManager(token_encoding="cl100k_base") as cm:
        cm.add_user_message("s", "tokens in cl100k")
        doc = cm.get_context("s")
        assert doc["metadata"]["token_encoding"] == "cl100k_base"
        assert doc["metadata"]["token_count"] == independent_history_tokens(doc, "cl100k_base")


def test_approximate_counter_is_used_only_when_configured():
    with ContextManager(token_counter="approximate") as cm:
        cm.add_user_message("s", "x" * 40)
        doc = cm.get_context("s")
        assert doc["metadata"]["token_encoding"] == "approximate"
        # 3 overhead + ceil(4/4) for "user" + 10 for the content
        assert doc["metadata"]["token_count"] == 3 + 1 + 10


# ------------------------------------------------------------------ export / import


def test_export_import_gives_an_equal_document(manager):
    manager.update_metadata(
        "s", mode="research", current_url="https://x", extra_key=[1, {"a": None}]
    )
    manager.set_system_prompt("s", "sys")
    manager.add_messages("s", [HumanMessage(content="q"), AIMessage(content="a", id="r1")])
    manager.add_fetched_context(
        "s", "web_search", "content", url="https://u", extracted_data={"title": "T"}
    )
    manager.update_partial_context("s", {"deep": {"er": [1, 2, {}]}, "empty": {}})
    exported = manager.export_session("s")
    with ContextManager() as other:
        assert other.import_session(exported) == "s"
        assert other.get_context("s") == manager.get_context("s")
        assert other.export_session("s") == exported
        assert other.import_session(exported, session_id="copy") == "copy"
        assert other.get_context("copy")["metadata"]["session_id"] == "copy"


def test_import_rejects_bad_documents_and_writes_nothing(manager):
    manager.add_user_message("s", "keep me")
    before = manager.get_context("s")
    good = json.loads(manager.export_session("s"))
    bad = json.loads(json.dumps(good))
    bad["conversation_history"].append({"role": "critic", "content": "x", "timestamp": "t"})
    with pytest.raises(DocumentImportError, match=r"conversation_history\.1\.role") as info:
        manager.import_session(bad)
    assert info.value.field == "conversation_history.1.role"
    with pytest.raises(DocumentImportError, match="not valid JSON"):
        manager.import_session("{oops")
    with pytest.raises(DocumentImportError, match="already exists"):
        manager.import_session(good, overwrite=False)
    with pytest.raises(DocumentImportError, match=r"metadata\.session_id"):
        manager.import_session(good, session_id="")
    assert strip_times(manager.get_context("s")) == strip_times(before)
    assert manager.list_sessions() == ["s"]


def test_one_id_on_two_messages_is_refused_unless_the_export_predates_format_version(manager):
    """An export of a release before ``format_version`` (which did not deduplicate a
    retried batch) is imported with the later message renamed ``<id>~<position>``, as the
    SQLite migration renames it; a current document holding it is refused."""
    manager.add_user_message("s", "first")
    manager.add_assistant_message("s", "second")
    document = json.loads(manager.export_session("s"))
    twice = document["conversation_history"][0]["id"]
    document["conversation_history"].append(
        {**document["conversation_history"][0], "content": "retried"}
    )
    with pytest.raises(DocumentImportError, match=r"is also the id of conversation_history\.0"):
        manager.import_session(document, session_id="current")
    del document["format_version"]
    assert manager.import_session(document, session_id="legacy") == "legacy"
    history = manager.get_history("legacy")
    assert [m["content"] for m in history] == ["first", "second", "retried"]
    assert [m["id"] for m in history] == [twice, history[1]["id"], f"{twice}~2"]


def test_messages_stored_without_an_id_get_the_same_id_at_every_import(manager):
    """An early release stored messages without ids: importing (or migrating) such a
    document again gives each the same id, so a resumed ``migrate`` finds it there."""
    manager.add_user_message("s", "first")
    manager.add_assistant_message("s", "second")
    document = json.loads(manager.export_session("s"))
    for record in document["conversation_history"]:
        del record["id"]
    manager.import_session(document, session_id="a")
    ids = [m["id"] for m in manager.get_history("a")]
    manager.import_session(document, session_id="a")  # again, over it
    assert [m["id"] for m in manager.get_history("a")] == ids
    assert len(set(ids)) == 2
    other = ContextManager()
    other.import_session(document, session_id="a")  # another store: the same ids
    assert [m["id"] for m in other.get_history("a")] == ids


def _compaction(**fields: object) -> dict[str, object]:
    entry: dict[str, object] = {"id": "c1", "kind": "summary", "first_index": 0,
                                "last_index": 0, "summary": "s"}  # fmt: skip
    entry.update(fields)
    return {"ctx_memory.compactions": {"c1": entry}}


@pytest.mark.parametrize(
    ("corrupt", "field"),
    [
        (lambda d: d["conversation_history"][0].update(id="a\x00b"), "conversation_history.0.id"),
        (lambda d: d["conversation_history"][0].update(id="x" * 513), "conversation_history.0.id"),
        (lambda d: d["conversation_history"][0].update(id=""), "conversation_history.0.id"),
        (lambda d: d.update(shared={"ctx_memory.compactions": [1]}),
         "shared.ctx_memory.compactions"),
        (lambda d: d.update(shared=_compaction(first_index="x")),
         "shared.ctx_memory.compactions.c1"),
        (lambda d: d.update(shared=_compaction(last_index=None)),
         "shared.ctx_memory.compactions.c1"),
        (lambda d: d.update(shared=_compaction(kind="poem")), "shared.ctx_memory.compactions.c1"),
        (lambda d: d.update(shared=_compaction(id="c2")), "shared.ctx_memory.compactions.c1"),
        (lambda d: d.update(shared=_compaction(tokens_covered=-1)),
         "shared.ctx_memory.compactions.c1"),
    ],
)  # fmt: skip
def test_import_names_a_bad_message_id_or_compaction_entry(manager, corrupt, field):
    """Each is a DocumentImportError naming its field (HTTP 422), and nothing is written."""
    manager.add_user_message("s", "keep me")
    document = json.loads(manager.export_session("s"))
    corrupt(document)
    document["metadata"]["session_id"] = "other"
    with pytest.raises(DocumentImportError) as info:
        manager.import_session(document)
    assert info.value.field == field
    assert str(info.value).startswith(f"invalid session document at {field}")
    assert manager.list_sessions() == ["s"]
    document = json.loads(manager.export_session("s"))
    document["shared"] = _compaction()  # a well-formed entry imports
    manager.import_session(document, session_id="other")
    assert manager.get_context("other")["shared"]["ctx_memory.compactions"]["c1"]["id"] == "c1"


def test_export_missing_session(manager):
    with pytest.raises(SessionNotFoundError, match="does not exist"):
        manager.export_session("ghost")


# ------------------------------------------------------------------ bad input


BAD_CALLS = [
    (lambda cm: cm.set_context("s", "k", object()), NotSerializableError),
    (lambda cm: cm.set_context("s", "k", {"when": {1, 2}}), NotSerializableError),
    (lambda cm: cm.update_partial_context("s", {"a": {"b": float("inf")}}), NotSerializableError),
    (lambda cm: cm.update_partial_context("s", ["not", "a", "mapping"]), ValidationError),
    (lambda cm: cm.add_message("s", "critic", "x"), InvalidRoleError),
    (lambda cm: cm.add_user_message("s", {"not": "content"}), ValidationError),
    (
        lambda cm: cm.add_assistant_message("s", "x", metadata={"obj": object()}),
        NotSerializableError,
    ),
    (
        lambda cm: cm.add_messages(
            "s", [HumanMessage(content="ok"), {"role": "nobody", "content": "x"}]
        ),
        InvalidRoleError,
    ),
    (lambda cm: cm.add_fetched_context("s", "", "x"), ValidationError),
    (
        lambda cm: cm.add_fetched_context("s", "web", "x", extracted_data={"d": object()}),
        NotSerializableError,
    ),
    (
        lambda cm: cm.add_fetched_items(
            "s", [{"source_type": "w", "content": "ok"}, {"source_type": "w"}]
        ),
        ValidationError,
    ),
    (lambda cm: cm.update_metadata("s", mode="sleepy"), ValidationError),
    (lambda cm: cm.update_metadata("s", token_count=3), ValidationError),
    (lambda cm: cm.update_metadata("s", extra=object()), NotSerializableError),
    (lambda cm: cm.set_system_prompt("s", 42), ValidationError),
]


@pytest.mark.parametrize(("call", "error"), BAD_CALLS)
def test_bad_input_raises_before_anything_is_written(manager, call, error):
    manager.add_user_message("s", "before")
    manager.set_context("s", "k", "v")
    before = manager.get_context("s")
    with pytest.raises(error):
        call(manager)
    assert manager.get_context("s") == before


@pytest.mark.parametrize("session_id", ["", "   ", "x" * 257, None])
def test_bad_session_id_writes_nothing(manager, session_id):
    with pytest.raises(InvalidSessionIdError):
        manager.add_user_message(session_id, "hi")
    with pytest.raises(InvalidSessionIdError):
        manager.set_context(session_id, "k", "v")
    assert manager.list_sessions() == []


def test_errors_are_one_hierarchy():
    from ctx_memory import CtxMemoryError

    for cls in (
        NotSerializableError,
        InvalidRoleError,
        InvalidSessionIdError,
        DocumentImportError,
        SessionNotFoundError,
        ValidationError,
    ):
        assert issubclass(cls, CtxMemoryError)


# ------------------------------------------------------------------ concurrency


def test_32_threads_append_500_each_nothing_lost_order_kept(manager):
    threads_n, per_thread = 32, 500
    barrier = threading.Barrier(threads_n)

    def worker(t: int) -> None:
        barrier.wait()
        for i in range(per_thread):
            manager.add_user_message("hot", f"{t}:{i}")

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(threads_n)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    history = manager.get_history("hot")
    assert len(history) == threads_n * per_thread
    assert manager.get_metadata("hot")["message_count"] == threads_n * per_thread
    seen: dict[int, list[int]] = {}
    for record in history:
        t, i = map(int, record["content"].split(":"))
        seen.setdefault(t, []).append(i)
    assert all(seen[t] == list(range(per_thread)) for t in range(threads_n))
    assert manager.get_metadata("hot")["token_count"] == sum(r["token_count"] for r in history)


def test_concurrent_partial_updates_keep_every_key(manager):
    def worker(t: int) -> None:
        for i in range(100):
            manager.update_partial_context("s", {"agents": {f"a{t}": {f"k{i}": i}}})

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    agents = manager.get_context("s")["shared"]["agents"]
    assert {k: len(v) for k, v in agents.items()} == {f"a{t}": 100 for t in range(8)}


def test_concurrent_coroutines(manager):
    async def main():
        await asyncio.gather(*(manager.aadd_user_message("s", f"m{i}") for i in range(200)))

    asyncio.run(main())
    assert manager.get_metadata("s")["message_count"] == 200


# ------------------------------------------------------------------ events


def test_events_for_every_kind_of_change(manager):
    seen = []
    manager.on("*", lambda e: seen.append((e.type.value, e.session_id)))
    manager.create_session("s")
    manager.add_user_message("s", "q")
    manager.add_fetched_context("s", "web_search", "c")
    manager.set_context("s", "k", 1)
    manager.update_metadata("s", mode="research")
    manager.clear("s")
    manager.delete_context("s")
    assert [t for t, _ in seen] == [
        "session_created",
        "message_added",
        "fetched_added",
        "context_updated",
        "metadata_updated",
        "session_cleared",
        "session_deleted",
    ]


def test_a_raising_listener_is_logged_and_the_write_stands(manager, caplog):
    def broken(event):
        raise RuntimeError("listener bug")

    got = []
    manager.on(EventType.MESSAGE_ADDED, broken)
    manager.on(EventType.MESSAGE_ADDED, got.append)
    manager.add_user_message("s", "hello")
    assert manager.get_history("s")[0]["content"] == "hello"
    assert len(got) == 1
    assert got[0].data["count"] == 1
    assert "listener bug" in caplog.text


def test_event_emission_can_be_disabled():
    with ContextManager(event_emission=False) as cm:
        seen = []
        cm.on("*", seen.append)
        cm.add_user_message("s", "x")
        assert seen == []


def test_lru_eviction_at_max_sessions_fires_event():
    with ContextManager(max_sessions=100) as cm:
        evicted, created = [], []
        cm.on(EventType.SESSION_EVICTED, lambda e: evicted.append(e.session_id))
        cm.on(EventType.SESSION_CREATED, lambda e: created.append(e.session_id))
        for i in range(100):
            cm.create_session(f"s{i}")
        cm.get_context("s0")  # s0 is now recently used; s1 is the least recently used
        cm.create_session("s100")
        assert evicted == ["s1"]
        assert created[-1] == "s100"
        assert len(cm.list_sessions()) == 100
        assert cm.get_context("s1") == {}
        assert cm.get_context("s0") != {}


def test_ttl_expiry_by_access_and_by_collector():
    with ContextManager(session_expiration_seconds=1, gc_interval_seconds=0.2) as cm:
        assert cm.store.gc_running
        expired = []
        cm.on(EventType.SESSION_EXPIRED, lambda e: expired.append(e.session_id))
        cm.add_user_message("touched", "x")
        cm.add_user_message("untouched", "x")
        time.sleep(0.6)
        cm.add_user_message("touched", "y")  # sliding: refreshed by the write
        time.sleep(0.7)
        assert cm.session_exists("touched")
        deadline = time.monotonic() + 3
        while "untouched" not in expired and time.monotonic() < deadline:
            time.sleep(0.05)
        assert "untouched" in expired  # removed by the collector, nobody touched it
        assert cm.get_context("untouched") == {}
    assert not cm.store.gc_running  # close() stopped the collector


def test_time_based_expiration_off_keeps_sessions():
    with ContextManager(time_based_expiration=False, session_expiration_seconds=0.01) as cm:
        cm.add_user_message("s", "x")
        time.sleep(0.05)
        assert cm.session_exists("s")


def test_get_context_manager_is_process_wide(monkeypatch):
    from ctx_memory import get_context_manager, reset_context_manager

    monkeypatch.setenv("CTX_MEMORY_MAX_SESSIONS", "7")
    reset_context_manager()
    try:
        cm = get_context_manager()
        assert cm is get_context_manager()
        assert cm.settings.max_sessions == 7
        assert isinstance(cm.store, InMemoryStore)
    finally:
        reset_context_manager()


def test_export_import_export_is_stable(manager):
    manager.add_user_message("s", "no system prompt here")
    first = manager.export_session("s")
    with ContextManager() as other:
        other.import_session(first)
        assert other.export_session("s") == first


def test_an_event_nobody_listens_to_is_not_built():
    from ctx_memory.events import EventEmitter, EventType

    emitter = EventEmitter()
    assert emitter.emit(EventType.MESSAGE_ADDED, "s", count=1) is None
    seen = []
    emitter.on(EventType.SESSION_CREATED, seen.append)
    assert emitter.emit("message_added", "s") is None  # another type's listener
    event = emitter.emit("session_created", "s")
    assert event is not None
    assert seen == [event]
    emitter.on("*", seen.append)
    assert emitter.emit(EventType.MESSAGE_ADDED, "s", count=2) is seen[-1]


def test_message_added_describes_only_the_new_messages() -> None:
    from langchain_core.messages import AIMessage, HumanMessage

    from ctx_memory import ContextManager

    manager = ContextManager()
    seen: list[dict[str, object]] = []
    manager.on("message_added", lambda event: seen.append(dict(event.data)))
    manager.add_messages("s", [HumanMessage("hello", id="a")])
    reply = AIMessage("a much longer reply " * 5, id="b")
    manager.add_messages("s", [HumanMessage("hello", id="a"), reply])
    stored = manager.get_history("s")[-1]
    assert seen[-1] == {"count": 1, "roles": ["assistant"], "tokens": stored["token_count"]}
