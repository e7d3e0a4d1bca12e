"""Compactions as data: stored in ``shared``, round-tripped, concurrent, removable."""

from __future__ import annotations

import json
import threading
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.runnables import RunnableLambda

from ctx_memory import ContextManager, ContextPromptAssembler, TokenCounter
from ctx_memory.assembly.compacted import summary_record
from ctx_memory.assembly.window import repair_tool_pairs
from ctx_memory.compaction import (
    COMPACTIONS_KEY,
    CompactionPolicy,
    aadd_compaction,
    acompact,
    add_compaction,
    aget_compactions,
    aremove_compaction,
    compact,
    get_compactions,
    remove_compaction,
)
from ctx_memory.errors import StoreUnavailableError, ValidationError
from ctx_memory.eval.data import agent_trace
from ctx_memory.stores.memory import InMemoryStore
from ctx_memory.stores.ops import MergeShared
from ctx_memory.stores.sqlite import SqliteStore

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path


@pytest.fixture(params=["memory", "sqlite"])
def store_manager(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ContextManager]:
    store = InMemoryStore() if request.param == "memory" else SqliteStore(str(tmp_path / "c.db"))
    with ContextManager(store=store) as manager:
        yield manager


def _chat(manager: ContextManager, sid: str, turns: int) -> None:
    for i in range(turns):
        manager.add_user_message(sid, f"Flight {i} is AF{100 + i}, seat {i}A. Filler words here.")
        manager.add_assistant_message(sid, f"Noted flight {i}.")


def test_round_trip_through_export_import_and_stores(store_manager: ContextManager) -> None:
    _chat(store_manager, "s1", 5)
    entry = add_compaction(
        store_manager, "s1", 0, 3, "Flights 0 and 1.", producer={"name": "me", "model": "x"}
    )
    assert entry["first_id"] == store_manager.get_history("s1")[0]["id"]
    assert entry["tokens_covered"] == sum(
        r["token_count"] for r in store_manager.get_history("s1")[:4]
    )
    assert entry["summary_tokens"] > 0
    assert get_compactions(store_manager, "s1") == [entry]
    exported = store_manager.export_session("s1")
    store_manager.import_session(exported, session_id="s2")
    assert get_compactions(store_manager, "s2") == [entry]


def test_import_with_another_encoding_recounts_the_compactions(tmp_path: Path) -> None:
    """An exported document's counts are the exporter's encoding's: the importer's exact
    counts replace them, for the messages and for the compactions that cover them."""
    with ContextManager(token_encoding="o200k_base") as source:
        for i in range(6):
            source.add_user_message("s1", f"Naïve café №{i}: 東京 → Zürich, 🚆 at 08:{i:02}.")
            source.add_assistant_message("s1", f"Gebucht: Zug {i} über Basel — ✓ {'€' * i}")
        entry = add_compaction(source, "s1", 0, 7, "Trains booked: 東京 → Zürich ✓ €€€.")
        remove_compaction(source, "s1", add_compaction(source, "s1", 8, 9, "x")["id"])
        exported = source.export_session("s1")
    with ContextManager(token_encoding="cl100k_base") as target:
        target.import_session(exported)
        history = target.get_history("s1")
        (imported,) = get_compactions(target, "s1")
        counter = target.token_counter
    assert imported["tokens_covered"] == sum(r["token_count"] for r in history[:8])
    assert imported["tokens_covered"] != entry["tokens_covered"]
    expected = summary_record(imported, counter)["token_count"]
    assert imported["summary_tokens"] == expected != entry["summary_tokens"]
    counts = {"tokens_covered", "summary_tokens"}
    assert {k: v for k, v in imported.items() if k not in counts} == {
        k: v for k, v in entry.items() if k not in counts
    }


def test_bad_entries_are_refused_before_any_write(manager: ContextManager) -> None:
    _chat(manager, "s1", 2)
    cases: list[dict[str, Any]] = [
        {"first_index": -1, "last_index": 1, "summary": "x"},
        {"first_index": 2, "last_index": 1, "summary": "x"},
        {"first_index": 0, "last_index": 1, "summary": ""},
        {"first_index": 0, "last_index": 1, "summary": "x", "kind": "zip"},
        {"first_index": 0, "last_index": 9, "summary": "x"},
        {"first_index": 0, "last_index": 1, "summary": "x", "last_id": "nope"},
        {"first_index": 0, "last_index": 1, "summary": "x", "producer": {"name": 3}},
    ]
    for case in cases:
        with pytest.raises(ValidationError, match="compaction"):
            add_compaction(manager, "s1", **case)
    assert get_compactions(manager, "s1") == []


def test_concurrent_adds_keep_every_entry(store_manager: ContextManager) -> None:
    _chat(store_manager, "s1", 10)

    def add(i: int) -> None:
        add_compaction(store_manager, "s1", i, i + 1, f"summary {i}", compaction_id=f"c{i}")

    threads = [threading.Thread(target=add, args=(i,)) for i in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(e["id"] for e in get_compactions(store_manager, "s1")) == sorted(
        f"c{i}" for i in range(16)
    )


async def test_async_twins(manager: ContextManager) -> None:
    _chat(manager, "s1", 3)
    entry = await aadd_compaction(manager, "s1", 0, 1, "first")
    assert await aget_compactions(manager, "s1") == [entry]
    assert await aremove_compaction(manager, "s1", entry["id"])
    assert not await aremove_compaction(manager, "s1", entry["id"])
    assert await aget_compactions(manager, "s1") == []
    assert manager.get_context("s1")["shared"][COMPACTIONS_KEY] == {entry["id"]: None}


def _assembler(manager: ContextManager, **kwargs: Any) -> ContextPromptAssembler:
    policy = CompactionPolicy(summarize_at=None, clear_tool_outputs_at=None)
    return ContextPromptAssembler(
        manager, max_tokens=900, reserve_tokens=100, compaction=policy, **kwargs
    )


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_summary_replaces_its_range_and_removing_restores(
    manager: ContextManager, layout: str
) -> None:
    _chat(manager, "s1", 40)
    assembler = _assembler(manager, layout=layout, recall_share=0)
    before = assembler.assemble("s1", "Which seat on flight 2?")
    history = manager.get_history("s1")
    entry = add_compaction(manager, "s1", 0, 59, "Flights AF100-AF129 booked, seats nA.")
    after = assembler.assemble("s1", "Which seat on flight 2?")
    texts = [m.text for m in after.messages]
    assert any(t.startswith("[Summary of messages 0-59]") for t in texts)
    assert after.report.compactions[0]["id"] == entry["id"]
    assert after.report.total_tokens == TokenCounter().count_chat(after.messages)
    assert after.report.total_tokens <= assembler.budget
    assert manager.get_history("s1") == history  # nothing stored changed
    remove_compaction(manager, "s1", entry["id"])
    again = assembler.assemble("s1", "Which seat on flight 2?")
    assert [m.model_dump() for m in again.messages] == [m.model_dump() for m in before.messages]
    assert again.report.compactions == []


def test_a_stale_compaction_is_not_used_and_said_so(manager: ContextManager) -> None:
    """An edit made below the manager (a store call, an older release's process) leaves
    the entry in place: the view sees the moved boundary and says why it skips it."""
    _chat(manager, "s1", 40)
    add_compaction(manager, "s1", 0, 59, "old summary")
    deleted = manager.get_history("s1")[10]["id"]
    assert manager.store.delete_messages("s1", [deleted], now="2026-01-01T00:00:00+00:00")
    assembler = ContextPromptAssembler(
        manager, max_tokens=8000, compaction=CompactionPolicy(summarize_at=None)
    )
    result = assembler.assemble("s1", "flight?")
    assert result.report.compactions == []
    assert any("not used" in note for note in result.report.compaction_notes)


@pytest.mark.parametrize("bad", ["raise", "empty"])
def test_a_failing_summarizer_changes_nothing_and_is_reported(
    manager: ContextManager, bad: str, caplog: pytest.LogCaptureFixture
) -> None:
    def summarize(_: Any) -> str:
        if bad == "raise":
            raise RuntimeError("model down")
        return "  "

    _chat(manager, "s1", 40)
    document = manager.get_context("s1")
    policy = CompactionPolicy(
        summarize_at=100, keep_recent=8, block=8, summarizer=RunnableLambda(summarize)
    )
    assembler = ContextPromptAssembler(
        manager, max_tokens=900, reserve_tokens=100, compaction=policy
    )
    result = assembler.assemble("s1", "flight?")
    assert manager.get_context("s1") == document
    assert result.report.compaction_notes
    assert result.report.compaction_notes[0].startswith("summarizer")
    assert "compaction of session 's1' skipped" in caplog.text


async def test_compact_writes_one_summary_at_a_block_boundary(manager: ContextManager) -> None:
    _chat(manager, "s1", 40)
    policy = CompactionPolicy(summarize_at=100, keep_recent=20, block=16)
    outcome = await acompact(manager, "s1", policy)
    assert outcome.entry is not None
    assert outcome.entry["first_index"] == 0
    assert outcome.entry["last_index"] == 47  # ends before the user turn at the block (48)
    assert "AF100" in outcome.entry["summary"]
    assert compact(manager, "s1", policy).reason == "not needed"  # nothing new past the block


def _check_prompt(messages: list[Any]) -> None:
    _, dropped = repair_tool_pairs(messages)
    assert dropped == [], "orphan tool result or unanswered tool call"


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_generated_traces_never_orphan_and_count_exactly(layout: str) -> None:
    counter = TokenCounter()
    for seed in range(12):
        manager = ContextManager()
        policy = CompactionPolicy(
            clear_tool_outputs_at=2000, keep_tool_outputs=6, summarize_at=6000,
            keep_recent=10, block=4, min_messages=4,
        )  # fmt: skip
        assembler = ContextPromptAssembler(
            manager, max_tokens=6000, reserve_tokens=500, compaction=policy, layout=layout
        )
        stored: list[dict[str, Any]] = []
        for task in agent_trace(seed, 12):
            manager.add_messages("s", list(task.messages))
            result = assembler.assemble("s", task.query)
            _check_prompt(result.messages)
            assert result.report.total_tokens == counter.count_chat(result.messages)
            assert result.report.total_tokens <= assembler.budget
        history = manager.get_history("s")
        assert len(history) == sum(len(t.messages) for t in agent_trace(seed, 12))
        assert all(
            r["content"] == m.content
            for r, m in zip(
                history, [m for t in agent_trace(seed, 12) for m in t.messages], strict=True
            )
        )
        assert get_compactions(manager, "s"), "the policy summarised"
        stored.extend(history)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("edit", ["replace", "delete", "truncate"])
async def test_an_edit_inside_a_summarised_range_removes_the_summary(
    store_manager: ContextManager, mode: str, edit: str
) -> None:
    """A summary of text the history no longer holds (a redacted card number) is removed
    by the edit: it is neither sent nor kept; summaries the edit left whole stay."""
    manager = store_manager
    _chat(manager, "s1", 40)
    manager.replace_message("s1", manager.get_history("s1")[6]["id"], {"role": "user",
        "content": "My card is 4111 1111 1111 1111."})  # fmt: skip
    inner = add_compaction(manager, "s1", 0, 19, "Card 4111 1111 1111 1111; flights AF100-AF109.")
    outer = add_compaction(manager, "s1", 30, 49, "Flights AF115-AF124.")
    target = manager.get_history("s1")[6]["id"]
    redacted = {"role": "user", "content": "My card is [REDACTED]."}
    if edit == "replace":
        if mode == "async":
            await manager.areplace_message("s1", target, redacted)
        else:
            manager.replace_message("s1", target, redacted)
        kept = [outer["id"]]  # positions did not move: the later summary still holds
    elif edit == "delete":
        if mode == "async":
            assert await manager.adelete_message("s1", target)
        else:
            assert manager.delete_message("s1", target)
        kept = []  # every later position moved by one
    else:
        cut = manager.get_history("s1")[40]["id"]
        if mode == "async":
            assert await manager.atruncate_after("s1", cut)
        else:
            assert manager.truncate_after("s1", cut)
        kept = [inner["id"]]  # the cut is inside the later range only
    assert [e["id"] for e in get_compactions(manager, "s1")] == kept
    prompt = ContextPromptAssembler(manager, max_tokens=8000).assemble("s1", "my card?")
    sent = "\n".join(m.text for m in prompt.messages)
    assert ("4111" in sent) == (edit == "truncate")
    assert prompt.report.compaction_notes == []


def test_an_edit_outside_every_summarised_range_keeps_the_summaries(
    manager: ContextManager,
) -> None:
    _chat(manager, "s1", 400)
    entry = add_compaction(manager, "s1", 0, 699, "Flights AF100-AF449.")
    later = manager.get_history("s1")[760]["id"]
    read: list[int] = []
    original = manager.get_message_range

    def spy(sid: str, start: int, end: int) -> list[dict[str, Any]]:
        records = original(sid, start, end)
        read.append(len(records))
        return records

    manager.get_message_range = spy  # type: ignore[method-assign]
    manager.replace_message("s1", later, {"role": "user", "content": "edited"})
    assert sum(read) <= 256  # the newest page finds it: the summarised 700 are not read
    assert manager.delete_message("s1", manager.get_history("s1")[770]["id"])
    assert [e["id"] for e in get_compactions(manager, "s1")] == [entry["id"]]


class _FailingMerges(SqliteStore):
    """A SQLite store whose shared-state merges fail while ``fail`` is set."""

    fail = False

    def handle(self, op: Any) -> object:
        if self.fail and isinstance(op, MergeShared):
            raise StoreUnavailableError("the merge failed (injected)")
        return super().handle(op)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("store_kind", ["memory", "sqlite"])
async def test_an_edits_events_come_in_order_in_the_callers_thread(
    tmp_path: Path, mode: str, store_kind: str
) -> None:
    """``history_edited`` then the summary removal's ``context_updated``, both in the
    caller's thread, async on a store run in a worker thread (SQLite) as everywhere."""
    store = InMemoryStore() if store_kind == "memory" else SqliteStore(str(tmp_path / "e.db"))
    manager = ContextManager(store=store)
    _chat(manager, "s1", 6)
    add_compaction(manager, "s1", 0, 5, "Flights AF100-AF102.")
    seen: list[tuple[str, str]] = []

    def on(event: Any) -> None:
        seen.append((event.type.value, threading.current_thread().name))

    manager.add_event_listener(on, "history_edited")
    manager.add_event_listener(on, "context_updated")
    target = manager.get_history("s1")[2]["id"]
    if mode == "async":
        assert await manager.adelete_message("s1", target)
    else:
        assert manager.delete_message("s1", target)
    here = threading.current_thread().name
    assert seen == [("history_edited", here), ("context_updated", here)]
    assert get_compactions(manager, "s1") == []


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_an_edit_whose_summary_removal_fails_is_still_reported(
    tmp_path: Path, mode: str
) -> None:
    """The edit is stored: ``history_edited`` says so before the removal's error is
    raised (async on SQLite, whose worker thread runs the removal, as sync)."""
    store = _FailingMerges(str(tmp_path / "f.db"))
    manager = ContextManager(store=store)
    _chat(manager, "s1", 6)
    add_compaction(manager, "s1", 0, 5, "Flights AF100-AF102.")
    edits: list[str] = []
    manager.add_event_listener(lambda e: edits.append(e.data["action"]), "history_edited")
    target = manager.get_history("s1")[2]["id"]
    store.fail = True
    if mode == "async":
        with pytest.raises(StoreUnavailableError, match="injected"):
            await manager.adelete_message("s1", target)
    else:
        with pytest.raises(StoreUnavailableError, match="injected"):
            manager.delete_message("s1", target)
    assert edits == ["delete"]
    assert target not in [m["id"] for m in manager.get_history("s1")]
    store.fail = False
    assert len(get_compactions(manager, "s1")) == 1  # stale, and not used: said so


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_clearing_the_history_removes_its_compactions(
    store_manager: ContextManager, mode: str
) -> None:
    """A summary of cleared text neither stays in the document nor stands in for the
    messages written after the clear (ids may be reused once cleared)."""
    manager = store_manager
    for i in range(20):
        manager.add_messages(
            "s1", [{"role": "user", "content": f"card 4111-{i:04d}", "id": f"q{i}"}]
        )
        manager.add_messages("s1", [{"role": "assistant", "content": "Noted.", "id": f"a{i}"}])
    policy = CompactionPolicy(summarize_at=100, keep_recent=8, block=4)
    assert compact(manager, "s1", policy).entry is not None
    if mode == "async":
        assert await manager.aclear("s1", preserve_fetched=True)
    else:
        assert manager.clear("s1", preserve_fetched=True)
    assert get_compactions(manager, "s1") == []
    assert "4111" not in json.dumps(manager.export_session("s1"))
    for i in range(20):
        manager.add_messages("s1", [{"role": "user", "content": f"weather {i}", "id": f"q{i}"}])
        manager.add_messages("s1", [{"role": "assistant", "content": "Sunny.", "id": f"a{i}"}])
    prompt = ContextPromptAssembler(manager, max_tokens=4000).assemble("s1", "what did I say?")
    sent = "\n".join(m.text for m in prompt.messages)
    assert "4111" not in sent
    assert "weather 0" in sent
    assert prompt.report.compactions == []
