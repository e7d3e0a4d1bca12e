"""Recall and the window share a tool pair that another writer's message split.

A shared session can hold another writer's user message between an AI tool call and its
result. That message starts a new turn, so the call ends one turn and the result sits in
the next: when the window starts at the second and recall brings back the first, the
pair must be sent once, whole, with the recalled turn (not dropped on both sides).
"""

from __future__ import annotations

import re

import pytest
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage

from ctx_memory import ContextManager, ContextPromptAssembler, TokenCounter
from ctx_memory.assembly.recalled import RECALL_HEADING
from ctx_memory.eval.metrics import tool_pair_problems
from ctx_memory.recall import RecallIndex, format_turns

COUNTER = TokenCounter()  # an independent counter: the budget is recounted with it
QUESTION = "What did the passport tools say?"


def split_pair_session(manager: ContextManager, session: str) -> dict[str, int]:
    """30 turns of chatter, then a tool turn whose second result comes after another
    writer's message, then a short answer and a pending call; positions by name."""
    for i in range(30):
        manager.add_messages(
            session, [HumanMessage(f"q{i} " + "word " * 50), AIMessage(f"a{i} " + "word " * 50)]
        )
    calls = [
        {"name": "passport_office", "args": {}, "id": "c1"},
        {"name": "passport_status", "args": {}, "id": "c2"},
    ]
    manager.add_messages(
        session,
        [
            HumanMessage("check my passport with the tools"),
            AIMessage("", tool_calls=calls),
            ToolMessage("office " * 300, tool_call_id="c1"),
        ],
    )
    manager.add_messages(session, [HumanMessage("another writer's message")])
    manager.add_messages(
        session, [ToolMessage("status " * 300, tool_call_id="c2"), AIMessage("done")]
    )
    manager.add_messages(
        session, [AIMessage("", tool_calls=[{"name": "later", "args": {}, "id": "c3"}])]
    )
    return {"question": 60, "call": 61, "first": 62, "writer": 63, "second": 64}


def test_classic_recall_sends_the_split_pair_whole_once() -> None:
    manager = ContextManager()
    split_pair_session(manager, "s")
    # 1,000 tokens: the window reaches the other writer's message, not the call.
    assembler = ContextPromptAssembler(manager, max_tokens=1000, reserve_tokens=0)
    prompt = assembler.assemble("s", QUESTION)
    messages = prompt.messages
    problems = tool_pair_problems(messages)
    assert (problems.orphan_results, problems.unanswered_calls) == (0, 0)
    assert COUNTER.count_chat(messages) <= 1000
    kinds = [(type(m).__name__, getattr(m, "tool_call_id", None)) for m in messages]
    call_at = next(i for i, m in enumerate(messages) if getattr(m, "tool_calls", None))
    # The call, then both results, then the other writer's message (the window's start).
    assert kinds[call_at + 1 : call_at + 3] == [("ToolMessage", "c1"), ("ToolMessage", "c2")]
    assert messages[call_at + 3].content == "another writer's message"
    assert sum(1 for kind, call in kinds if call == "c2") == 1
    report = prompt.report
    assert report.total_tokens == COUNTER.count_chat(messages)
    # Only the pending call at the end is repaired away; the result went with its call.
    assert report.history_repaired_messages == 1
    assert report.history_messages == len(messages) - 2  # all but the question and marker
    assert {"c1", "c2"} <= {getattr(m, "tool_call_id", None) for m in prompt.history}


def test_stable_recall_shows_the_split_pair_with_true_positions() -> None:
    manager = ContextManager()
    at = split_pair_session(manager, "s")
    assembler = ContextPromptAssembler(manager, max_tokens=1200, reserve_tokens=0, layout="stable")
    prompt = assembler.assemble("s", QUESTION)
    text = next(str(m.content) for m in prompt.messages if RECALL_HEADING in str(m.content))
    labels = re.findall(r"^\[(\d+) ([a-z_ ]+?)[\]:\s]", text, flags=re.MULTILINE)
    shown = {int(position) for position, _ in labels}
    assert {at["question"], at["call"], at["first"], at["second"]} <= shown
    assert at["writer"] not in shown  # the window's first message, sent there
    assert "status status" in text
    assert "office office" in text
    assert COUNTER.count_chat(prompt.messages) <= 1200
    problems = tool_pair_problems(prompt.messages)
    assert (problems.orphan_results, problems.unanswered_calls) == (0, 0)


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_a_pair_too_large_with_its_result_falls_back_to_the_turn_without_it(layout: str) -> None:
    """Taking the result back must never leave the prompt emptier than not taking it."""
    manager = ContextManager()
    split_pair_session(manager, "s")
    for budget in (550, 600, 650, 700, 800, 1000):
        prompt = ContextPromptAssembler(
            manager, max_tokens=budget, reserve_tokens=0, layout=layout
        ).assemble("s", QUESTION)
        messages: list[BaseMessage] = prompt.messages
        assert COUNTER.count_chat(messages) <= budget
        problems = tool_pair_problems(messages)
        assert (problems.orphan_results, problems.unanswered_calls) == (0, 0)
        # Where the pair does not fit, the question's turn ("check my passport ...")
        # is still recalled, repaired down to what fits: recall is never empty here.
        assert prompt.report.recalled, budget


def test_format_turns_labels_records_at_the_positions_given() -> None:
    records = [
        {"role": "user", "content": "check"},
        {"role": "assistant", "content": "calling"},
        {"role": "tool", "content": "result", "name": "f", "tool_call_id": "c2"},
    ]
    text = format_turns([(4, records)], positions=[[4, 5, 9]])
    lines = text.splitlines()
    assert lines[0] == "[… 4 earlier messages not shown …]"
    assert lines[1].startswith("[4 user]")
    assert lines[2].startswith("[5 assistant]")
    assert lines[3].startswith("[9 ")
    assert format_turns([(4, records)]).splitlines()[3].startswith("[6 ")


def test_a_turn_runs_on_through_a_user_message_written_while_a_tool_ran() -> None:
    index = RecallIndex()
    index.extend(
        [
            {"role": "user", "content": "look it up", "token_count": 4},  # 0
            {"role": "assistant", "content": "", "token_count": 3},  # 1: the call
            {"role": "user", "content": "another writer", "token_count": 4},  # 2
            {"role": "tool", "content": "result", "token_count": 3},  # 3
            {"role": "assistant", "content": "found", "token_count": 3},  # 4
            {"role": "user", "content": "next", "token_count": 3},  # 5
            {"role": "assistant", "content": "ok", "token_count": 3},  # 6
        ]
    )
    assert [index.turn(p) for p in range(7)] == [(0, 5)] * 5 + [(5, 7)] * 2


def test_a_fact_in_a_result_delayed_by_another_writer_is_recalled_with_its_call() -> None:
    """The hit is the result; its turn starts at the other writer's message, so the
    result's call (in the turn before) must come back with it, or the repair drops it."""
    manager = ContextManager()
    call = {"name": "lookup", "args": {}, "id": "c1"}
    manager.add_messages("s", [HumanMessage("look up the venue"), AIMessage("", tool_calls=[call])])
    manager.add_messages("s", [HumanMessage("another writer says hi")])
    fact = "The wedding venue is the Orangery at Kew Gardens."
    manager.add_messages(
        "s", [ToolMessage(fact + " filler" * 100, tool_call_id="c1"), AIMessage("Found it.")]
    )
    for i in range(60):
        manager.add_messages(
            "s", [HumanMessage(f"q{i} " + "word " * 50), AIMessage(f"a{i} " + "word " * 50)]
        )
    for layout in ("classic", "stable"):
        for budget in (800, 3000):
            prompt = ContextPromptAssembler(
                manager, max_tokens=budget, reserve_tokens=0, layout=layout
            ).assemble("s", "Where is the wedding venue?")
            assert fact in " ".join(str(m.content) for m in prompt.messages), (layout, budget)
            assert COUNTER.count_chat(prompt.messages) <= budget
            problems = tool_pair_problems(prompt.messages)
            assert (problems.orphan_results, problems.unanswered_calls) == (0, 0)
            assert 3 in {entry["index"] for entry in prompt.report.recalled}


def test_the_report_lists_no_hit_that_the_repair_left_out() -> None:
    """A recalled hit on a call whose result is nowhere (still pending) is not sent."""
    manager = ContextManager()
    for i in range(60):
        manager.add_messages(
            "s", [HumanMessage(f"q{i} " + "word " * 50), AIMessage(f"a{i} " + "word " * 50)]
        )
    pending = {"name": "passport_lookup", "args": {"number": "X1234567"}, "id": "p1"}
    manager.add_messages(
        "s", [HumanMessage("hello"), AIMessage("", tool_calls=[pending]), AIMessage("later")]
    )
    for i in range(60):
        manager.add_messages(
            "s", [HumanMessage(f"r{i} " + "word " * 50), AIMessage(f"b{i} " + "word " * 50)]
        )
    prompt = ContextPromptAssembler(manager, max_tokens=1500, reserve_tokens=0).assemble(
        "s", "passport lookup X1234567"
    )
    sent = {m.id for m in prompt.messages}
    for entry in prompt.report.recalled:
        assert entry["message_id"] in sent, entry
