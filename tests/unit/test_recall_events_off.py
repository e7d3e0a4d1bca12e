"""The recall index hears of every edit, even with event emission off (EVENT_EMISSION=false)."""

from __future__ import annotations

from ctx_memory import ContextManager, EventEmitter, EventType
from ctx_memory.recall import search_history


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
