"""The recall index follows every edit: with event emission off, and edits by another process."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ctx_memory import ContextManager, ContextPromptAssembler, EventEmitter, EventType
from ctx_memory.recall import search_history

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
