"""Rung (c) of the compaction ladder: recall reaches what a summary stands for."""

from __future__ import annotations

import pytest

from ctx_memory import ContextManager
from ctx_memory.compaction import CompactionPolicy, add_compaction
from ctx_memory.prompt import AssembledPrompt, ContextPromptAssembler
from ctx_memory.stores.memory import InMemoryStore

FACT = "My locker code at the climbing gym is 4417, please remember it."


def summarised_session(last_index: int) -> ContextManager:
    """The fact, 60 turns about the weather, and a summary of messages 0 to ``last_index``."""
    manager = ContextManager(store=InMemoryStore())
    manager.set_system_prompt("s1", "You are a helpful assistant.")
    manager.add_user_message("s1", FACT)
    manager.add_assistant_message("s1", "Noted: locker code 4417.")
    for i in range(60):
        manager.add_user_message("s1", f"Tell me about the weather on day {i} of the trip.")
        manager.add_assistant_message("s1", f"Day {i} looks mild and partly cloudy, about 18 C.")
    messages = manager.get_message_range("s1", 0, last_index)
    add_compaction(
        manager, "s1", 0, last_index, "The user asked about the trip's weather, day by day.",
        first_id=messages[0]["id"], last_id=messages[-1]["id"],
    )  # fmt: skip
    return manager


@pytest.fixture
def manager() -> ContextManager:
    return summarised_session(79)


def ask_locker_code(manager: ContextManager, layout: str) -> tuple[AssembledPrompt, str]:
    """The locker question assembled in 900 tokens with a policy that never summarises."""
    assembler = ContextPromptAssembler(
        manager,
        max_tokens=900,
        reserve_tokens=0,
        layout=layout,
        compaction=CompactionPolicy(summarize_at=None),
    )
    result = assembler.assemble("s1", "What is my locker code at the climbing gym?")
    return result, "\n".join(str(m.content) for m in result.messages)


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_recall_brings_back_a_turn_the_summary_covers(manager: ContextManager, layout: str) -> None:
    result, text = ask_locker_code(manager, layout)
    report = result.report
    assert "[Summary of messages 0-79]" in text  # the summary is sent
    assert "4417" in text  # and recall found the fact it lost
    assert [entry["index"] for entry in report.recalled][:1] == [0]
    assert report.compactions
    assert report.compactions[0]["last_index"] == 79
    assert manager.token_counter.count_chat(result.messages) == report.total_tokens
    assert report.total_tokens <= 900
    stored = manager.get_metadata("s1")["message_count"]
    # Each stored message is sent, stood for by the summary, or left out: once.
    covered = 80
    sent_after_summary = report.history_messages - len(report.recalled) - 1
    assert report.history_left_out_messages >= 0
    assert sent_after_summary + report.history_left_out_messages <= stored - covered + 1


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_recall_reaches_the_summary_s_range_when_the_window_opens_with_it(layout: str) -> None:
    """The whole uncompacted history fits, so the window starts with the summary itself."""
    manager = summarised_session(117)
    result, text = ask_locker_code(manager, layout)
    report = result.report
    assert "[Summary of messages 0-117]" in text
    assert "Day 59 looks mild" in text  # the window holds every message after the summary
    assert "4417" in text
    assert [entry["index"] for entry in report.recalled][:1] == [0]
    assert manager.token_counter.count_chat(result.messages) == report.total_tokens <= 900


def test_without_recall_the_summary_alone_stands_for_the_range(manager: ContextManager) -> None:
    assembler = ContextPromptAssembler(
        manager,
        max_tokens=900,
        reserve_tokens=0,
        layout="stable",
        recall_share=0.0,
        compaction=CompactionPolicy(summarize_at=None),
    )
    result = assembler.assemble("s1", "What is my locker code at the climbing gym?")
    text = "\n".join(str(m.content) for m in result.messages)
    assert "[Summary of messages 0-79]" in text
    assert "4417" not in text
    assert result.report.recalled == []


def test_a_recalled_turn_sends_old_tool_outputs_as_placeholders() -> None:
    from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

    manager = ContextManager(store=InMemoryStore())
    output = "row: the shipment to Lisbon left on Tuesday. " + "filler row of data. " * 120
    manager.add_messages(
        "s1",
        [
            HumanMessage("Where is the Lisbon shipment?"),
            AIMessage("", tool_calls=[{"name": "query_db", "args": {}, "id": "call-9"}]),
            ToolMessage(output, tool_call_id="call-9", name="query_db"),
            AIMessage("It left Lisbon on Tuesday."),
        ],
    )
    for i in range(80):
        manager.add_user_message("s1", f"Tell me about the weather on day {i} of the trip.")
        manager.add_assistant_message("s1", f"Day {i} looks mild and partly cloudy, about 18 C.")
    assembler = ContextPromptAssembler(
        manager,
        max_tokens=1200,
        reserve_tokens=0,
        compaction=CompactionPolicy(clear_tool_outputs_at=100, summarize_at=None),
    )
    result = assembler.assemble("s1", "When did the Lisbon shipment leave?")
    text = "\n".join(str(m.content) for m in result.messages)
    assert "It left Lisbon on Tuesday." in text  # the turn is recalled
    assert "filler row of data" not in text  # but not its old tool output
    assert "call-9" in text  # which is restorable by its id
    assert manager.token_counter.count_chat(result.messages) == result.report.total_tokens
    assert result.report.history_left_out_tokens >= 0
