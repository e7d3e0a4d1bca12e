"""Malformed tool calls (``invalid_tool_calls``) and legacy function calls in prompts.

``ChatOpenAI`` sends a message's ``invalid_tool_calls`` as tool calls (and a legacy
``additional_kwargs["function_call"]`` as a function call): each needs a result, and each
costs its arguments. A stored one never has a result, so a prompt built from the store
leaves it out (the stored message keeps it); in an agent's current run LangChain answers
each with an error result in the request, so there it is sent, paired and counted.
"""

from __future__ import annotations

import json

import pytest
import tiktoken
from adapter_fakes import ToolCallingFakeModel, get_weather
from langchain.agents import create_agent
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from ctx_memory import ContextManager, ContextPromptAssembler, TokenCounter
from ctx_memory.classic import ContextMemory
from ctx_memory.eval.metrics import recount_tokens, tool_pair_problems
from ctx_memory.middleware import ContextMiddleware

CUT_ARGS = '{"report": "' + "quarterly revenue for the northern region " * 60  # no closing

BAD = AIMessage(
    "Writing it now.",
    invalid_tool_calls=[
        {
            "type": "invalid_tool_call",
            "id": "call_cut",
            "name": "write_report",
            "args": CUT_ARGS,
            "error": "Unterminated string",
        }
    ],
)
ENC = tiktoken.get_encoding("o200k_base")
LEGACY = AIMessage(
    "Looking it up.",
    additional_kwargs={
        "function_call": {"name": "lookup", "arguments": json.dumps({"q": "x " * 400})}
    },
)


def _sent_calls(messages):
    ai = [m for m in messages if isinstance(m, AIMessage)]
    calls = [c for m in ai for c in [*m.invalid_tool_calls, *m.tool_calls]]
    legacy = [m.additional_kwargs.get("function_call") for m in ai]
    return calls + [call for call in legacy if call]


@pytest.mark.parametrize("layout", ["classic", "stable"])
def test_stored_malformed_and_legacy_calls_are_not_sent_but_kept(layout):
    manager = ContextManager()
    manager.add_messages("s", [HumanMessage("Write the report"), BAD])
    manager.add_messages("s", [HumanMessage("Look it up"), LEGACY])
    manager.add_user_message("s", "Hello?")
    manager.add_assistant_message("s", "Sorry.")
    counter = manager.token_counter
    result = ContextPromptAssembler(
        manager, max_tokens=1000, reserve_tokens=0, layout=layout
    ).assemble("s", "Try again")
    assert _sent_calls(result.messages) == []
    texts = [m.text for m in result.messages]
    assert "Writing it now." in texts  # the text stays
    assert "Looking it up." in texts
    assert result.report.total_tokens == counter.count_chat(result.messages)
    assert result.report.total_tokens == recount_tokens(result.messages, ENC)
    assert result.report.total_tokens <= 1000
    # The store keeps both, lossless.
    stored = manager.get_messages("s")
    assert stored[1].invalid_tool_calls[0]["args"] == CUT_ARGS
    assert stored[3].additional_kwargs["function_call"]["name"] == "lookup"


def test_classic_memory_does_not_send_them_either():
    manager = ContextManager()
    manager.add_messages("s", [HumanMessage("Write the report"), BAD])
    memory = ContextMemory(
        manager=manager, session_id="s", max_token_limit=2000, return_messages=True
    )
    messages = memory.load_memory_variables({})["history"]
    assert _sent_calls(messages) == []
    assert [m.text for m in messages] == ["Write the report", "Writing it now."]


def test_a_malformed_call_in_a_tail_is_counted_and_needs_its_result():
    counter = TokenCounter()
    bare = AIMessage("")
    assert counter.count_lc_message(BAD) > counter.count_lc_message(bare) + 100
    answer = ToolMessage("Error: invalid arguments", tool_call_id="call_cut", status="error")
    assert tool_pair_problems([HumanMessage("q"), BAD]).unanswered_calls == 1
    assert tool_pair_problems([HumanMessage("q"), BAD, answer]).total == 0
    messages = [HumanMessage("q"), BAD, answer]
    assert counter.count_chat(messages) == recount_tokens(messages, ENC)


def test_agent_run_with_a_malformed_call_beside_a_valid_one():
    """LangChain runs the valid call and answers the malformed one with an error result."""
    manager = ContextManager()
    mixed = AIMessage(
        "",
        tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}],
        invalid_tool_calls=[
            {"type": "invalid_tool_call", "id": "c2", "name": "get_weather", "args": CUT_ARGS}
        ],
    )
    model = ToolCallingFakeModel(messages=iter([mixed, AIMessage("Sunny."), AIMessage("Yes.")]))
    agent = create_agent(
        model,
        tools=[get_weather],
        middleware=[ContextMiddleware(manager, max_tokens=2000, reserve_tokens=0)],
    )
    config = {"configurable": {"session_id": "s"}}
    agent.invoke({"messages": [("user", "Weather in Paris?")]}, config)
    step = model.seen[1]  # the run's second request: the calls and both results
    assert tool_pair_problems(step).total == 0
    answered = {m.tool_call_id for m in step if isinstance(m, ToolMessage)}
    assert answered == {"c1", "c2"}
    assert recount_tokens(step, ENC) <= 2000
    assert recount_tokens(step, ENC) > 300  # the arguments count
    # The next run's request: the stored call is sent without its malformed part.
    agent.invoke({"messages": [("user", "Still sunny?")]}, config)
    later = model.seen[2]
    assert tool_pair_problems(later).total == 0
    assert all(not m.invalid_tool_calls for m in later if isinstance(m, AIMessage))
    assert any(m.tool_calls for m in later if isinstance(m, AIMessage))
