"""The recall index follows every edit: with event emission off, and edits by another process."""

from __future__ import annotations

from typing import TYPE_CHECKING

import pytest
from langchain_core.messages import HumanMessage

from ctx_memory import ContextManager, ContextPromptAssembler, EventEmitter, EventType
from ctx_memory.recall import SAVE_EVERY, recall_for, search_history

if TYPE_CHECKING:
    from pathlib import Path


def test_an_edit_with_equal_counts_is_seen_with_events_off() -> None:
    manager = ContextManager(event_emission=False)
    manager.add_user_message("s1", "The password is pelican")
    stored = manager.add_assistant_message("s1", "Noted.")
    assert [h.position for h in search_history(manager, "s1", "pelican")] == [0]
    first = manager.get_history("s1")[0]
    # The same token count and message count: only the edit itself can tell the index.
    manager.replace_message(
        "s1", first["id"], {"role": "user", "content": "The password is flamingo"}
    )
    assert manager.get_header("s1")["metadata"]["token_count"] == (
        first["token_count"] + stored["token_count"]
    )
    assert search_history(manager, "s1", "pelican") == []
    assert [h.position for h in search_history(manager, "s1", "flamingo")] == [0]


def test_listeners_registered_always_hear_events_while_emission_is_off() -> None:
    emitter = EventEmitter(enabled=False)
    heard: list[str] = []
    ignored: list[str] = []
    remove = emitter.on(EventType.HISTORY_EDITED, lambda e: heard.append(e.session_id), always=True)
    emitter.on(EventType.HISTORY_EDITED, lambda e: ignored.append(e.session_id))
    assert emitter.emit(EventType.HISTORY_EDITED, "s1") is None  # no event for the public
    assert (heard, ignored) == (["s1"], [])
    remove()
    emitter.emit(EventType.HISTORY_EDITED, "s2")
    assert heard == ["s1"]


def test_an_edit_by_another_process_with_equal_counts_is_caught_where_it_is_read(
    tmp_path: Path,
) -> None:
    """Two managers on one SQLite file: B's edit keeps every count; A notices when it reads."""
    path = str(tmp_path / "s.sqlite3")
    a = ContextManager(store="sqlite", sqlite_path=path)
    b = ContextManager(store="sqlite", sqlite_path=path)
    for i in range(30):
        a.add_user_message("s1", f"Question {i} about trains and timetables?")
        a.add_assistant_message("s1", f"Answer {i}: the usual timetable applies.")
    a.add_user_message("s1", "Which city for the conference?")
    a.add_assistant_message("s1", "Paris.")
    assembler = ContextPromptAssembler(a, max_tokens=600, reserve_tokens=0, layout="stable")
    assembler.assemble("s1", "conference city?")  # A's index holds "Paris."
    assert [h.position for h in search_history(a, "s1", "paris")] == [61]
    last = b.get_history("s1", last_k=1)[0]
    b.replace_message("s1", last["id"], {"role": "assistant", "content": "Rome."})  # 2 tokens
    assert (
        b.get_header("s1")["metadata"]["token_count"]
        == a.get_header("s1")["metadata"]["token_count"]
    )
    # The assembly reads the edited message in its window: the index is rebuilt.
    prompt = assembler.assemble("s1", "Rome or Paris?")
    assert any(m.text == "Rome." for m in prompt.messages)
    assert search_history(a, "s1", "paris") == []
    assert [h.position for h in search_history(a, "s1", "rome")] == [61]
    a.close()
    b.close()


def _pair(tmp_path: Path) -> tuple[ContextManager, ContextManager]:
    """Two managers on one SQLite file: two processes, each with its own recall index."""
    path = str(tmp_path / "s.sqlite3")
    return (
        ContextManager(store="sqlite", sqlite_path=path),
        ContextManager(store="sqlite", sqlite_path=path),
    )


def test_an_import_over_a_session_drops_this_processs_index() -> None:
    """An import of the same counts (one word changed) replaces the whole history."""
    manager = ContextManager()
    manager.add_user_message("s1", "The password is pelican")
    manager.add_assistant_message("s1", "Noted.")
    assert [h.position for h in search_history(manager, "s1", "pelican")] == [0]
    document = manager.export_session("s1").replace("pelican", "flamingo")
    manager.import_session(document)
    # dropped by the import itself (the assembler's recall would use it as it is)
    assert recall_for(manager).plan("s1", manager.get_header("s1")).start == 0
    assert search_history(manager, "s1", "pelican") == []
    assert [h.position for h in search_history(manager, "s1", "flamingo")] == [0]


def test_edits_of_content_blocks_and_tool_arguments_are_caught_where_read(
    tmp_path: Path,
) -> None:
    """The read-back compares what was indexed: content blocks and tool-call arguments
    too, not only plain text."""
    a, b = _pair(tmp_path)
    a.add_messages(
        "s1",
        [
            {"role": "user", "content": [{"type": "text", "text": "The password is pelican"}]},
            {"role": "assistant", "content": "", "tool_calls": [
                {"name": "weather", "args": {"city": "Paris"}, "id": "c1"}]},
            {"role": "tool", "content": "sunny", "tool_call_id": "c1", "name": "weather"},
        ],
    )  # fmt: skip
    assert [h.position for h in search_history(a, "s1", "pelican")] == [0]
    assert [h.position for h in search_history(a, "s1", "paris")] == [1]
    first, call = b.get_history("s1")[:2]
    b.replace_message("s1", first["id"], {"role": "user", "content": [
        {"type": "text", "text": "The password is flamingo"}]})  # fmt: skip
    b.replace_message("s1", call["id"], {"role": "assistant", "content": "", "tool_calls": [
        {"name": "weather", "args": {"city": "Rome"}, "id": "c1"}]})  # fmt: skip
    assert b.get_metadata("s1")["token_count"] == a.get_metadata("s1")["token_count"]
    assert search_history(a, "s1", "pelican") == []  # the hit read back: rebuilt
    assert [h.position for h in search_history(a, "s1", "flamingo")] == [0]
    assert search_history(a, "s1", "paris") == []
    assert [h.position for h in search_history(a, "s1", "rome")] == [1]
    a.close()
    b.close()


def test_an_index_loaded_from_saved_segments_checks_hits_by_their_terms(
    tmp_path: Path,
) -> None:
    """A restarted worker loads the index from the saved segments (no text): an edit by
    another process that kept every count is still caught when a hit is read back."""
    from ctx_memory.recall import SAVE_EVERY

    a, b = _pair(tmp_path)
    b.add_user_message("s1", "The password is pelican")
    for i in range(SAVE_EVERY + 40):
        b.add_assistant_message("s1", f"Filler answer number {i}.")
    assert search_history(b, "s1", "pelican")  # B indexes the session and saves segments
    assert [h.position for h in search_history(a, "s1", "pelican")] == [0]
    assert recall_for(a).loads == 1  # A's index came from the segments
    first = b.get_message_range("s1", 0, 0)[0]
    b.replace_message("s1", first["id"], {"role": "user", "content": "The password is flamingo"})
    assert search_history(a, "s1", "pelican") == []
    assert [h.position for h in search_history(a, "s1", "flamingo")] == [0]
    a.close()
    b.close()


def test_two_updates_planned_at_once_each_index_what_it_read() -> None:
    """Two callers plan from the same cached index; the one that read less applies first:
    the other adds the rest of what it read instead of searching without it."""
    from ctx_memory.recall import Recall

    manager = ContextManager()
    recall = Recall()
    for i in range(10):
        manager.add_user_message("s1", f"word{i}")
    first = recall.plan("s1", manager.get_header("s1"))
    assert recall.apply(first, manager.get_message_range("s1", 0, -1)) is not None
    for i in range(10, 20):
        manager.add_user_message("s1", f"word{i}")
    early = recall.plan("s1", {"metadata": {**manager.get_metadata("s1"), "message_count": 15}})
    late = recall.plan("s1", manager.get_header("s1"))
    early_records = manager.get_message_range("s1", early.start, early.stop)
    early_tokens = sum(r["token_count"] for r in manager.get_message_range("s1", 0, 14))
    early = type(early)(early.session_id, early.index, early.start, early.stop, early_tokens)
    assert recall.apply(early, early_records) is not None  # holds 15 messages now
    index = recall.apply(late, manager.get_message_range("s1", late.first, late.stop))
    assert index is not None
    assert len(index) == 20
    assert [position for position, _, _ in index.search("word17", 1)] == [17]


def test_the_recall_tools_answers_without_matches_fit_max_tokens() -> None:
    """A long query is not quoted back past ``max_tokens``."""
    from ctx_memory import TokenCounter
    from ctx_memory.recall import make_recall_tool

    manager = ContextManager()
    manager.add_user_message("s1", "The door code is 4412")
    manager.add_assistant_message("s1", "Noted. " + "More words here. " * 30)
    counter = TokenCounter()
    for query, max_tokens in (("zebra " * 300, 200), ("quokka wallaby", 16), ("door code", 20)):
        answer = make_recall_tool(manager, "s1", max_tokens=max_tokens).invoke({"query": query})
        assert counter.count(answer) <= max_tokens, (query[:20], answer)


@pytest.mark.parametrize("edits", [1, 2, 3, 5])
def test_a_search_never_answers_a_message_edited_while_it_ran(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, edits: int
) -> None:
    """B deletes A's oldest message each time A reads its hits back, ``edits`` times.

    Every hit that comes back holds the word it was ranked for; after three searches a hit
    still edited is left out rather than answered with another message's text.
    """
    a, b = _pair(tmp_path)
    for i in range(30):
        a.add_user_message("s1", f"kiwi{i} alpha")
    assert [h.position for h in search_history(a, "s1", "kiwi20")] == [20]
    real = a.get_message_spans
    done = []

    def edited_meanwhile(session_id: str, spans: list[tuple[int, int]]) -> object:
        if len(done) < edits:
            done.append(b.delete_message(session_id, b.get_history(session_id)[0]["id"]))
        return real(session_id, spans)

    monkeypatch.setattr(a, "get_message_spans", edited_meanwhile)
    hits = search_history(a, "s1", "kiwi20", k=3)
    assert all("kiwi20" in hit.message["content"] for hit in hits)
    assert [h.message["content"] for h in hits] == (["kiwi20 alpha"] if edits < 3 else [])
    assert done == [True] * min(edits, 3)
    a.close()
    b.close()


def test_an_index_edited_elsewhere_is_never_saved_for_the_next_process(tmp_path: Path) -> None:
    """B's edit keeps every count, so A's index cannot see it; A's next save would have
    outlived A (a restart loads the saved segments). The save reads its messages first."""
    a, b = _pair(tmp_path)
    messages = [
        HumanMessage("kiwi ten alpha" if i == 10 else f"filler message number {i}", id=f"m{i}")
        for i in range(SAVE_EVERY - 1)
    ]
    a.add_messages("s1", messages)
    assert [h.position for h in search_history(a, "s1", "kiwi")] == [10]  # nothing saved yet
    counter = a.token_counter
    assert counter.count("plum ten alpha") == counter.count("kiwi ten alpha")
    b.replace_message("s1", "m10", HumanMessage("plum ten alpha"))
    a.add_messages("s1", [HumanMessage("filler message number last")])
    search_history(a, "s1", "filler", k=1)  # A's index reaches SAVE_EVERY: a save is due
    fresh = ContextManager(store="sqlite", sqlite_path=str(tmp_path / "s.sqlite3"))
    for manager in (fresh, a):
        assert [h.position for h in search_history(manager, "s1", "plum")] == [10]
        assert search_history(manager, "s1", "kiwi") == []
    assert recall_for(fresh).loads == 0  # what was saved, if anything, was not A's stale index
    for manager in (a, b, fresh):
        manager.close()


@pytest.mark.parametrize(
    ("option", "value"),
    [("k", 0), ("k", -1), ("max_tokens", 5), ("max_tokens", -10), ("source_k", -1),
     ("source_token_cap", 0), ("k", True), ("max_tokens", 2000.0)],
)  # fmt: skip
def test_the_recall_tool_refuses_options_it_could_not_keep(option: str, value: object) -> None:
    from ctx_memory.errors import ValidationError
    from ctx_memory.recall import make_recall_tool

    with pytest.raises(ValidationError, match=f"{option} must be an int"):
        make_recall_tool(ContextManager(), "s1", **{option: value})  # type: ignore[arg-type]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_tools_take_the_session_from_the_config_they_are_invoked_with(mode: str) -> None:
    """Invoked by hand, as the error for a missing session id advises."""
    from ctx_memory.compaction import make_restore_tool
    from ctx_memory.errors import ValidationError
    from ctx_memory.recall import make_recall_tool

    manager = ContextManager()
    manager.add_user_message("s1", "hello zebra")
    config = {"configurable": {"session_id": "s1"}}
    recall, restore = make_recall_tool(manager), make_restore_tool(manager)
    if mode == "async":
        assert "hello zebra" in await recall.ainvoke({"query": "zebra"}, config=config)
        assert "No tool output" in await restore.ainvoke({"tool_call_id": "c1"}, config=config)
    else:
        assert "hello zebra" in recall.invoke({"query": "zebra"}, config=config)
        assert "No tool output" in restore.invoke({"tool_call_id": "c1"}, config=config)
    with pytest.raises(ValidationError, match="the restore_tool_result tool needs a session id"):
        restore.invoke({"tool_call_id": "c1"})
