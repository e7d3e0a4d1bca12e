"""Chat-app session management on every store: paging, deleting, replacing, truncating.

Each edit is atomic and keeps both counters equal to what the stored history holds, and
paging lists every live session once, in id order, a page at a time.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage

from ctx_memory.errors import MessageNotFoundError, ValidationError
from ctx_memory.events import EventType
from ctx_memory.manager import ContextManager

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.events import Event
    from ctx_memory.stores.base import BaseStore


@pytest.fixture
def cm(make_store: Callable[..., BaseStore]) -> ContextManager:
    return ContextManager(store=make_store(), token_counter="approximate")


def chat(cm: ContextManager, sid: str = "s", turns: int = 3) -> None:
    messages: list[Any] = []
    for i in range(turns):
        messages += [
            HumanMessage(f"question {i}", id=f"q{i}"),
            AIMessage(f"answer {i}", id=f"a{i}"),
        ]
    cm.add_messages(sid, messages)


def consistent(cm: ContextManager, sid: str = "s") -> list[str]:
    """The ids in order, after checking the counters against the stored history."""
    history = cm.get_history(sid)
    meta = cm.get_metadata(sid)
    assert meta["message_count"] == len(history) == cm.store.count_messages(sid)
    assert meta["token_count"] == sum(r["token_count"] for r in history)
    return [r["id"] for r in history]


def test_delete_one_message(cm: ContextManager) -> None:
    chat(cm)
    events: list[Event] = []
    cm.on(EventType.HISTORY_EDITED, events.append)
    assert cm.delete_message("s", "a1")
    assert consistent(cm) == ["q0", "a0", "q1", "q2", "a2"]
    assert not cm.delete_message("s", "a1")  # already gone: a no-op
    assert not cm.delete_message("nobody", "a1")
    assert [e.data["action"] for e in events] == ["delete"]
    cm.add_messages("s", [AIMessage("answer 1 again", id="a1")])  # the id is free again
    assert consistent(cm)[-1] == "a1"


def test_replace_a_message_keeps_its_place_and_id(cm: ContextManager) -> None:
    chat(cm)
    record = cm.replace_message("s", "q2", HumanMessage("question 2, edited and much longer"))
    assert record["id"] == "q2"
    ids = consistent(cm)
    assert ids == ["q0", "a0", "q1", "a1", "q2", "a2"]
    assert cm.get_history("s")[4]["content"] == "question 2, edited and much longer"
    cm.replace_message("s", "a0", {"role": "assistant", "content": "short"})
    assert consistent(cm) == ids
    with pytest.raises(MessageNotFoundError):
        cm.replace_message("s", "nope", HumanMessage("x"))
    with pytest.raises(ValidationError):
        cm.replace_message("s", "q0", {"role": "user", "content": "x", "bogus": 1})
    assert consistent(cm) == ids


def test_truncate_after_a_message(cm: ContextManager) -> None:
    chat(cm)
    assert cm.truncate_after("s", "q2") == 1  # regenerate the last answer
    assert consistent(cm) == ["q0", "a0", "q1", "a1", "q2"]
    assert cm.truncate_after("s", "q1", inclusive=True) == 3  # edit an earlier question
    assert consistent(cm) == ["q0", "a0"]
    assert cm.truncate_after("s", "a0") == 0
    with pytest.raises(MessageNotFoundError):
        cm.truncate_after("s", "q2")  # its id went with it
    cm.add_messages("s", [HumanMessage("again", id="q1")])
    assert consistent(cm) == ["q0", "a0", "q1"]
    assert cm.truncate_after("s", "q0", inclusive=True) == 3
    assert consistent(cm) == []
    assert cm.session_exists("s")


def test_edits_deep_in_a_long_history(cm: ContextManager) -> None:
    cm.add_messages("s", [HumanMessage(f"m{i}", id=f"id{i}") for i in range(450)])
    assert cm.delete_message("s", "id3")
    cm.replace_message("s", "id7", HumanMessage("seven"))
    assert cm.truncate_after("s", "id400") == 49
    ids = consistent(cm)
    assert len(ids) == 400
    assert ids[:8] == ["id0", "id1", "id2", "id4", "id5", "id6", "id7", "id8"]
    assert cm.get_history("s")[6]["content"] == "seven"


def test_async_twins(cm: ContextManager) -> None:
    async def main() -> None:
        chat(cm)
        assert await cm.adelete_message("s", "q0")
        await cm.areplace_message("s", "a0", AIMessage("edited"))
        assert await cm.atruncate_after("s", "a1") == 2
        assert await cm.alist_sessions(limit=5) == ["s"]

    asyncio.run(main())
    assert consistent(cm) == ["a0", "q1", "a1"]


def test_paging_through_sessions(cm: ContextManager) -> None:
    ids = sorted([f"user-{i:04d}" for i in range(230)] + ["a", "zé", "z\u4e2d", "b:{x}"])
    for sid in ids:
        cm.create_session(sid)
    seen: list[str] = []
    cursor = None
    while True:
        page = cm.list_sessions(limit=50, cursor=cursor)
        seen += page
        if len(page) < 50:
            break
        cursor = page[-1]
    assert seen == sorted(ids) == cm.list_sessions()
    assert cm.list_sessions("user-01", limit=7) == [f"user-01{i:02d}" for i in range(7)]
    assert cm.list_sessions("user-01", limit=500) == [f"user-01{i:02d}" for i in range(100)]
    assert cm.list_sessions("user-0199", limit=3, cursor="user-0100") == ["user-0199"]
    assert cm.list_sessions("z", limit=5) == ["zé", "z\u4e2d"]
    assert cm.list_sessions("nobody", limit=5) == []
    cm.delete_context("user-0001")
    assert cm.list_sessions(limit=3) == ["a", "b:{x}", "user-0000"]
    assert cm.list_sessions(limit=2, cursor="user-0000") == ["user-0002", "user-0003"]
    with pytest.raises(ValidationError):
        cm.list_sessions(limit=0)


def test_paging_skips_expired_sessions(make_store: Callable[..., BaseStore]) -> None:
    import time

    cm = ContextManager(store=make_store(ttl_seconds=0.3), token_counter="approximate")
    for i in range(6):
        cm.create_session(f"old{i}")
    time.sleep(0.45)
    cm.create_session("new")
    assert cm.list_sessions(limit=3) == ["new"]
