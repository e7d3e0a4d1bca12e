"""Every tool output a summary covers stays restorable by id: ``tool_call_ids`` and the line."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import pytest
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.runnables import RunnableLambda

from ctx_memory import ContextManager, ContextPromptAssembler, TokenCounter
from ctx_memory._compaction_tool import PAGE
from ctx_memory.assembly.compacted import (
    COMPACTIONS_KEY,
    RESTORABLE_PREFIX,
    summary_record,
    summary_text,
)
from ctx_memory.compaction import (
    CompactionPolicy,
    add_compaction,
    compact,
    get_compactions,
    make_restore_tool,
)
from ctx_memory.errors import ValidationError
from ctx_memory.eval.metrics import fact_availability


def _tools(manager: ContextManager, sid: str, turns: int) -> list[tuple[str, str]]:
    """``turns`` turns of one tool call each; returns ``(code, call id)`` per output."""
    facts = []
    for i in range(turns):
        call_id = f"call_{i}"
        code = f"FX-{i:08x}"
        manager.add_messages(
            sid,
            [
                HumanMessage(f"Task {i}: look it up."),
                AIMessage("", tool_calls=[{"name": "lookup", "args": {"i": i}, "id": call_id}]),
                ToolMessage(
                    f"row {i} " + "filler " * 120 + f"the access code is {code}",
                    tool_call_id=call_id,
                    name="lookup",
                ),
                AIMessage(f"Done with task {i}."),
            ],
        )
        facts.append((code, call_id))
    return facts


def test_a_summary_records_and_names_every_covered_call_id(manager: ContextManager) -> None:
    _tools(manager, "s", 6)
    entry = add_compaction(manager, "s", 0, 11, "Tasks 0-2 looked up; tool lookup [call_1]: ok.")
    assert entry["tool_call_ids"] == ["call_0", "call_1", "call_2"]
    text = summary_text(entry)
    # call_1 is named by the text already; the last line names the others, once.
    assert text.splitlines()[-1] == f"{RESTORABLE_PREFIX} call_0, call_2"
    assert entry["summary_tokens"] == summary_record(entry, manager.token_counter)["token_count"]
    assert entry["summary_tokens"] == TokenCounter().count_message("user", text)


def test_tool_call_ids_are_validated(manager: ContextManager) -> None:
    _tools(manager, "s", 3)
    for bad in ("call_0", [3], [""], ["call_9"]):
        with pytest.raises(ValidationError, match="tool_call_ids"):
            add_compaction(manager, "s", 0, 7, "x", tool_call_ids=bad)  # type: ignore[arg-type]
    entry = add_compaction(manager, "s", 0, 7, "x", tool_call_ids=["call_1"])
    assert entry["tool_call_ids"] == ["call_1"]
    assert len(get_compactions(manager, "s")) == 1


def test_entries_without_tool_call_ids_still_load_and_assemble(manager: ContextManager) -> None:
    _tools(manager, "s", 4)
    history = manager.get_history("s")
    old = {
        "id": "c-old", "kind": "summary", "first_id": history[0]["id"],
        "last_id": history[7]["id"], "first_index": 0, "last_index": 7,
        "summary": "two tasks done", "producer": {"name": "", "model": "", "prompt_hash": ""},
        "tokens_covered": sum(r["token_count"] for r in history[:8]), "created_at": "2025",
    }  # fmt: skip
    old["summary_tokens"] = summary_record(old, manager.token_counter)["token_count"]
    manager.update_partial_context("s", {COMPACTIONS_KEY: {"c-old": old}}, reserved=True)
    assert get_compactions(manager, "s") == [old]
    assembler = ContextPromptAssembler(
        manager, max_tokens=4000, reserve_tokens=0,
        compaction=CompactionPolicy(summarize_at=None, clear_tool_outputs_at=None),
    )  # fmt: skip
    result = assembler.assemble("s", "next?")
    summary = next(m for m in result.messages if m.text.startswith("[Summary"))
    assert summary.text == "[Summary of messages 0-7]\ntwo tasks done"
    assert result.report.total_tokens == TokenCounter().count_chat(result.messages)


def test_exported_with_the_document(manager: ContextManager) -> None:
    _tools(manager, "s", 3)
    entry = add_compaction(manager, "s", 0, 7, "first two")
    manager.import_session(manager.export_session("s"), session_id="t")
    assert get_compactions(manager, "t")[0]["tool_call_ids"] == entry["tool_call_ids"]


@pytest.mark.parametrize("reply", ["Nothing specific.", "tool lookup [call_3]: row 3"])
def test_every_fact_is_in_the_prompt_or_restorable_whatever_the_summary(
    manager: ContextManager, reply: str
) -> None:
    facts = _tools(manager, "s", 30)
    policy = CompactionPolicy(
        summarize_at=2000, keep_recent=8, block=4, min_messages=4,
        summarizer=RunnableLambda(lambda _: reply),
    )  # fmt: skip
    assembler = ContextPromptAssembler(
        manager, max_tokens=3000, reserve_tokens=0, compaction=policy, recall_share=0
    )
    for _ in range(3):
        result = assembler.assemble("s", "What was the code of task 3?")
    assert get_compactions(manager, "s")
    got = fact_availability(result.messages, facts)
    assert got.in_prompt + got.restorable == got.planted == 30
    assert result.report.total_tokens == TokenCounter().count_chat(result.messages)
    assert result.report.total_tokens <= assembler.budget
    restore = make_restore_tool(manager, "s")
    assert "FX-00000003" in restore.invoke({"tool_call_id": "call_3"})


def test_compact_records_the_ids_of_its_range(manager: ContextManager) -> None:
    _tools(manager, "s", 12)
    policy = CompactionPolicy(summarize_at=100, keep_recent=8, block=4, min_messages=4)
    outcome = compact(manager, "s", policy)
    assert outcome.entry is not None
    covered: list[Any] = manager.get_history("s")[: outcome.entry["last_index"] + 1]
    assert outcome.entry["tool_call_ids"] == [
        r["tool_call_id"] for r in covered if r["role"] == "tool"
    ]


def test_the_restore_tool_returns_the_stored_output_unchanged() -> None:
    """The tool's exact output: not the search text (no tool name added, blocks kept)."""
    manager = ContextManager()
    blocks: list[str | dict[str, Any]] = [
        {"type": "text", "text": "line one"},
        {"type": "text", "text": "line two"},
    ]
    manager.add_messages(
        "s",
        [
            HumanMessage("order status?"),
            AIMessage(
                "",
                tool_calls=[
                    {"name": "get_order", "args": {}, "id": "c1"},
                    {"name": "get_notes", "args": {}, "id": "c2"},
                ],
            ),
            ToolMessage('{"status": "refunded"}', tool_call_id="c1", name="get_order"),
            ToolMessage(blocks, tool_call_id="c2", name="get_notes"),
        ],
    )
    tool = make_restore_tool(manager, "s")
    assert tool.invoke({"tool_call_id": "c1"}) == '{"status": "refunded"}'
    assert tool.invoke({"tool_call_id": "c2"}) == blocks
    assert "No tool output" in tool.invoke({"tool_call_id": "c9"})


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_the_restore_tool_pages_back_from_the_newest_messages(mode: str) -> None:
    """An old output is found page by page; a recent one with one read of a page."""
    manager = ContextManager()
    _tools(manager, "s", 3)  # call_0 .. call_2, at the very start
    for i in range(PAGE):  # more than two pages after them
        manager.add_messages("s", [HumanMessage(f"chat {i}"), AIMessage(f"reply {i}")])
    manager.add_messages(
        "s",
        [
            HumanMessage("one more"),
            AIMessage("", tool_calls=[{"name": "lookup", "args": {}, "id": "late"}]),
            ToolMessage("late output", tool_call_id="late", name="lookup"),
        ],
    )
    tool = make_restore_tool(manager, "s")
    reads: list[tuple[int, int]] = []
    original = manager.get_message_range, manager.aget_message_range

    def spy(sid: str, start: int, end: int) -> list[dict[str, Any]]:
        reads.append((start, end))
        return original[0](sid, start, end)

    async def aspy(sid: str, start: int, end: int) -> list[dict[str, Any]]:
        reads.append((start, end))
        return await original[1](sid, start, end)

    manager.get_message_range = spy  # type: ignore[method-assign]
    manager.aget_message_range = aspy  # type: ignore[method-assign]

    def call(call_id: str) -> Any:
        if mode == "sync":
            return tool.invoke({"tool_call_id": call_id})
        return asyncio.run(tool.ainvoke({"tool_call_id": call_id}))

    assert call("late") == "late output"
    assert reads == [(-PAGE, -1)]
    stored = {
        r["tool_call_id"]: r["content"] for r in manager.get_history("s") if r["role"] == "tool"
    }
    reads.clear()
    assert call("call_0") == stored["call_0"]
    assert len(reads) == 3  # (2 * PAGE + 3 + 3 * 3) messages: three pages
    reads.clear()
    assert "No tool output" in call("nowhere")
    assert len(reads) == 3


@pytest.mark.parametrize("mode", ["sync", "async"])
def test_a_repeated_call_id_is_restored_by_the_placeholders_message_number(mode: str) -> None:
    """A model that reuses a call id in later turns: each placeholder names its message, and
    the tool given that number brings back that very output, not the newest with the id."""
    manager = ContextManager()
    for city in ("Oslo", "Rome", "Lima"):
        manager.add_messages(
            "s",
            [
                HumanMessage(f"weather in {city}?"),
                AIMessage("", tool_calls=[{"name": "weather", "args": {}, "id": "call_0"}]),
                ToolMessage(f"{city}: " + "sunny " * 60, tool_call_id="call_0", name="weather"),
                AIMessage(f"{city} is sunny."),
            ],
        )
    manager.add_user_message("s", "and now?")
    policy = CompactionPolicy(
        summarize_at=None, clear_tool_outputs_at=10, tool_output_min_tokens=10
    )
    prompt = ContextPromptAssembler(manager, max_tokens=8000, compaction=policy).assemble(
        "s", "and now?"
    )
    placeholders = [m.text for m in prompt.messages if m.text.startswith("[Tool output cleared")]
    assert len(placeholders) == 3
    tool = make_restore_tool(manager, "s")
    for text, city in zip(placeholders, ("Oslo", "Rome", "Lima"), strict=True):
        args = re.search(r'tool_call_id="([^"]+)", message=(\d+)', text)
        assert args is not None, text
        given = {"tool_call_id": args[1], "message": int(args[2])}
        output = tool.invoke(given) if mode == "sync" else asyncio.run(tool.ainvoke(given))
        assert output.startswith(f"{city}: ")
    # a number that is not that call's output falls back to the newest with the id
    assert tool.invoke({"tool_call_id": "call_0", "message": 0}).startswith("Lima: ")
