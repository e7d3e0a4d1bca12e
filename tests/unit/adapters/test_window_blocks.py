"""The stable layout's window trimmed in blocks: its start never moves back.

Block boundaries are counted in tokens of the stored history, so a long answer that
changes the session's average message size does not bring old messages back.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

import pytest
from adapter_fakes import ToolCallingFakeModel
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult
from langchain_core.tools import tool

from ctx_memory import ContextManager, ContextPromptAssembler, TokenCounter
from ctx_memory.assembly.plan import block_size
from ctx_memory.compaction import CompactionPolicy
from ctx_memory.middleware import ContextMiddleware

if TYPE_CHECKING:
    from langchain_core.runnables import RunnableConfig

    from ctx_memory.assembly.report import AssembledPrompt

COUNTER = TokenCounter()


def _answer(rng: random.Random) -> str:
    """Mostly short, one in ten long: the average message size jumps now and then."""
    return "word " * (rng.randint(300, 900) if rng.random() < 0.1 else rng.randint(5, 40))


def _start(manager: ContextManager, prompt: AssembledPrompt) -> int:
    """The window's first message, as a position in the stored history."""
    assert prompt.history
    ids = [r["id"] for r in manager.get_history("s")]
    return ids.index(prompt.history[0].id)


def _sent(prompt: AssembledPrompt) -> list[tuple[str, str]]:
    return [(m.type, m.text) for m in prompt.messages]


@pytest.mark.parametrize("seed", [1, 5, 7])
def test_the_window_start_never_moves_back_in_a_long_chat(seed: int) -> None:
    rng = random.Random(seed)
    manager = ContextManager()
    manager.set_system_prompt("s", "You are terse.")
    assembler = ContextPromptAssembler(
        manager, max_tokens=4000, reserve_tokens=0, layout="stable", recall_share=0.0
    )
    starts: list[int] = []
    previous: list[BaseMessage] = []
    trims = 0
    for i in range(300):
        prompt = assembler.assemble("s", f"Question {i}?")
        assert COUNTER.count_chat(prompt.messages) == prompt.report.total_tokens <= 4000
        start = _start(manager, prompt) if i else 0
        if starts:
            assert start >= starts[-1], (i, starts[-1], start)
            if start == starts[-1]:  # no trim: the prefix is the previous one's, extended
                assert prompt.messages[: len(previous) - 1] == previous[:-1], i
            else:
                trims += 1
        starts.append(start)
        previous = list(prompt.messages)
        manager.add_user_message("s", f"Question {i}?")
        manager.add_assistant_message("s", _answer(rng))
    assert starts[-1] > 0
    assert trims <= 30  # in blocks (about 300 trims a turn at a time)


def test_storing_the_question_first_keeps_the_same_blocks() -> None:
    """``exclude_last``: the boundaries count the history before the question."""
    rng = random.Random(3)
    asked, stored = ContextManager(), ContextManager()
    first, second = (
        ContextPromptAssembler(
            m, max_tokens=3000, reserve_tokens=0, layout="stable", recall_share=0.0
        )
        for m in (asked, stored)
    )
    for i in range(200):
        question = f"Question {i}: " + "why " * rng.randint(1, 60)
        before = first.assemble("s", question)
        stored.add_user_message("s", question)
        after = second.assemble("s", question, exclude_last=1)
        assert _sent(after) == _sent(before), i
        answer = _answer(rng)
        asked.add_user_message("s", question)
        asked.add_assistant_message("s", answer)
        stored.add_assistant_message("s", answer)
    assert before.report.history_left_out_messages > 0


def _task(i: int, rng: random.Random) -> list[BaseMessage]:
    calls = rng.randint(0, 2)
    run: list[BaseMessage] = [HumanMessage(f"Task {i}: look up order {1000 + i}.")]
    for k in range(calls):
        call_id = f"call_{i}_{k}"
        run.append(AIMessage("", tool_calls=[{"name": "lookup", "args": {"k": k}, "id": call_id}]))
        run.append(ToolMessage("row " * rng.randint(100, 1200), tool_call_id=call_id))
    run.append(AIMessage(f"Order {1000 + i}: " + "done " * rng.randint(5, 60)))
    return run


@pytest.mark.parametrize("seed", [2, 4])
def test_with_cleared_tool_outputs_the_start_never_moves_back_between_runs(seed: int) -> None:
    """A run stored as it goes (the tail passes over it), old tool outputs cleared.

    The boundaries count what a placeholder stands for, not the placeholder, so the
    outputs a finished run has cleared do not move them. Within a run its tail grows and
    may force the window forward; from one run's first request to the next, it never
    moves back.
    """
    rng = random.Random(seed)
    manager = ContextManager()
    manager.set_system_prompt("s", "You are an operations agent.")
    policy = CompactionPolicy(clear_tool_outputs_at=2000, summarize_at=None)
    assembler = ContextPromptAssembler(
        manager, max_tokens=6000, reserve_tokens=0, layout="stable", recall_share=0.0,
        compaction=policy,
    )  # fmt: skip
    firsts: list[int] = []
    for i in range(120):
        run: list[BaseMessage] = []
        for message in _task(i, rng):
            record = manager.add_messages("s", [message])[0]
            run.append(message.model_copy(update={"id": record["id"]}))
            if isinstance(message, AIMessage) and not message.tool_calls:
                continue  # the answer: no request follows it
            if isinstance(message, AIMessage):
                continue  # its result follows before the next request
            skip = frozenset(str(m.id) for m in run)
            prompt = assembler.build("s", run, query=f"Task {i}", skip_ids=skip)
            assert COUNTER.count_chat(prompt.messages) == prompt.report.total_tokens <= 6000
            if len(run) == 1 and i:
                firsts.append(_start(manager, prompt))
    assert firsts == sorted(firsts)
    assert firsts[-1] > 0


def test_the_block_is_a_power_of_two_of_tokens() -> None:
    assert block_size(3590, 0.5) == 2048
    assert block_size(10370, 0.5) == 4096
    assert block_size(1000, 0.0) == 0


class _PlannedModel(ToolCallingFakeModel):
    """Scripted agent replies: 0-3 lookups per run, outputs of very different sizes."""

    def plan(self, rng: random.Random) -> None:
        object.__setattr__(self, "left", rng.choice([0, 1, 1, 2, 3]))
        object.__setattr__(self, "rng", rng)

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> ChatResult:
        self.seen.append(list(messages))
        reply = AIMessage("Done: " + "ok " * self.rng.randint(5, 80))
        if self.left:
            object.__setattr__(self, "left", self.left - 1)
            size = self.rng.choice([50, 100, 900, 2500])
            call_id = f"c{len(self.seen)}"
            reply = AIMessage(
                "", tool_calls=[{"name": "lookup", "args": {"size": size}, "id": call_id}]
            )
        return ChatResult(generations=[ChatGeneration(message=reply)])


@tool
def lookup(size: int) -> str:
    """Look rows up."""
    return "row " * size


@pytest.mark.parametrize("seed", [12, 13])
def test_an_agents_window_start_never_moves_back(seed: int) -> None:
    """Through ContextMiddleware: tool outputs stored mid-run change the session's
    average message size; the window start still only moves forward."""
    rng = random.Random(seed)
    manager = ContextManager()
    manager.set_system_prompt("s", "You look rows up.")
    model = _PlannedModel(messages=iter([]))
    middleware = ContextMiddleware(
        manager, max_tokens=16000, reserve_tokens=2000, layout="stable", recall_share=0.0
    )
    agent = create_agent(model, tools=[lookup], middleware=[middleware])
    config: RunnableConfig = {"configurable": {"session_id": "s"}}
    starts: list[int] = []
    for run in range(40):
        model.plan(rng)
        agent.invoke({"messages": [HumanMessage(f"Task {run}: find the rows")]}, config)
        history = manager.get_history("s")
        ids = [r["id"] for r in history]
        question = max(i for i, r in enumerate(history) if r["role"] == "user")
        for request in model.seen:
            start = ids.index(request[1].id)  # after the system message: the window's first
            if start < question:  # else the window is empty: the run comes first
                starts.append(start)
        model.seen.clear()
    assert len(starts) > 40
    assert starts == sorted(starts)
