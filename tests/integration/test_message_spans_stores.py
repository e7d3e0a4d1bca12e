"""Recalled turns read at once on every store, with the LRU touch of ``max_sessions``.

``GetMessageSpans`` is one round trip on Redis (a pipeline of ``LRANGE`` with the touch)
and PostgreSQL (one statement over ``unnest`` of the spans); with ``max_sessions`` the read
counts as an access, as every read does: the session read is not the one evicted next.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from ctx_memory import ContextManager, ContextPromptAssembler

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.stores.base import BaseStore


def test_spans_read_at_once_touch_the_session(make_store: Callable[..., BaseStore]) -> None:
    store = make_store(max_sessions=2)
    cm = ContextManager(store=store, token_counter="approximate")
    cm.add_messages("s", [{"role": "user", "content": f"m{i}"} for i in range(12)])
    cm.add_user_message("t", "other")  # t is now the most recently used
    parts = cm.get_message_spans("s", [(9, 11), (0, 1), (5, 5), (11, 30)])
    assert [[r["content"] for r in part] for part in parts] == [
        ["m9", "m10", "m11"],
        ["m0", "m1"],
        ["m5"],
        ["m11"],
    ]
    assert asyncio.run(cm.aget_message_spans("s", [(3, 4)])) == [cm.get_message_range("s", 3, 4)]
    cm.add_user_message("u", "new")  # evicts the least recently used: t, since s was read
    assert sorted(cm.list_sessions()) == ["s", "u"]
    assert cm.get_message_spans("t", [(0, 0)]) == [[]]


def test_an_assembly_on_every_store_sends_the_same_recalled_turns(
    make_store: Callable[..., BaseStore],
) -> None:
    store = make_store(max_sessions=10)
    cm = ContextManager(store=store, token_counter="approximate")
    cm.add_messages(
        "s",
        [
            {"role": "user" if i % 2 == 0 else "assistant", "content": f"turn {i} about Lyon"}
            for i in range(400)
        ],
    )
    cm.add_user_message("s", "My passport number is X1234567")
    cm.add_assistant_message("s", "Noted.")
    cm.add_messages("s", [{"role": "user", "content": f"more {i}"} for i in range(200)])
    assembler = ContextPromptAssembler(cm, max_tokens=1200, reserve_tokens=0, layout="stable")
    result = assembler.assemble("s", "What is my passport number? And Lyon?")
    text = "\n".join(str(m.content) for m in result.messages)
    assert "My passport number is X1234567" in text
    assert "Noted." in text
    assert len(result.report.recalled) > 5
    again = asyncio.run(assembler.aassemble("s", "What is my passport number? And Lyon?"))
    assert [m.content for m in again.messages] == [m.content for m in result.messages]
