"""ContextMiddleware with compaction: every step of a run re-sends the step before it."""

from __future__ import annotations

from typing import Any

import pytest
from adapter_fakes import ToolCallingFakeModel, tool_call
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, BaseMessage, ToolMessage
from langchain_core.tools import tool

from ctx_memory import ContextManager
from ctx_memory.compaction import CompactionPolicy
from ctx_memory.middleware import ContextMiddleware


@tool
def search(query: str) -> str:
    """Search the archive."""
    return f"Results for {query}: " + "lorem ipsum dolor " * 400  # about 1,200 tokens


def _agent(manager: ContextManager, runs: int) -> tuple[Any, ToolCallingFakeModel]:
    replies: list[BaseMessage] = []
    for i in range(runs):
        replies += [tool_call("search", f"c{i}", query=f"topic {i}"), AIMessage(f"Done {i}.")]
    model = ToolCallingFakeModel(messages=iter(replies))
    middleware = ContextMiddleware(
        manager, layout="stable", compaction=CompactionPolicy(clear_tool_outputs_at=500)
    )
    return create_agent(model, tools=[search], middleware=[middleware]), model


def _cleared(messages: list[BaseMessage]) -> list[bool]:
    tools = [m for m in messages if isinstance(m, ToolMessage)]
    return [m.text.startswith("[Tool output cleared") for m in tools]


def _check(model: ToolCallingFakeModel, runs: int) -> None:
    assert len(model.seen) == 2 * runs
    for run in range(1, runs):
        first, second = model.seen[2 * run], model.seen[2 * run + 1]
        # Step 2 is step 1 in full, then the call and its result.
        assert second[: len(first)] == first, run
        assert [m.type for m in second[len(first) :]] == ["ai", "tool"]
        # The earlier runs' outputs are cleared from the first step on; the run's own is whole.
        assert _cleared(first) == [True] * run
        assert _cleared(second) == [True] * run + [False]


def test_step_two_starts_with_step_one_when_the_previous_runs_outputs_are_cleared() -> None:
    manager = ContextManager()
    agent, model = _agent(manager, 3)
    config = {"configurable": {"session_id": "s1"}}
    for i in range(3):
        agent.invoke({"messages": [("user", f"Run {i}: search topic {i}")]}, config)
    _check(model, 3)


@pytest.mark.parametrize("timezone", [None, "Europe/Paris"])
async def test_async_and_with_the_volatile_part(timezone: str | None) -> None:
    manager = ContextManager()
    if timezone:  # the local time goes last: step 2 re-sends step 1 but for it
        manager.update_metadata("s1", user_timezone=timezone)
    agent, model = _agent(manager, 3)
    config = {"configurable": {"session_id": "s1"}}
    for i in range(3):
        await agent.ainvoke({"messages": [("user", f"Run {i}: search topic {i}")]}, config)
    if timezone is None:
        _check(model, 3)
        return
    for run in range(1, 3):
        first, second = model.seen[2 * run], model.seen[2 * run + 1]
        assert second[: len(first) - 1] == first[:-1], run
        assert _cleared(first) == [True] * run
