"""ContextMiddleware stores each message once, whoever else writes the session (issue 8.2).

Real ``create_agent`` agents, LangGraph's ``InMemorySaver`` and LangChain's fake chat
models; the session is written by other agents, by an agent used as a tool and by plain
manager calls between and during runs.
"""

from __future__ import annotations

from collections import Counter
from types import SimpleNamespace

import pytest
from adapter_fakes import fake_model, flaky_model, get_weather, tool_call
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from ctx_memory.middleware import ContextMiddleware
from ctx_memory.tokens import TokenCounter

COUNTER = TokenCounter()

CHECKPOINTERS = pytest.mark.parametrize(
    "checkpointer", [False, True], ids=["no-checkpointer", "checkpointer"]
)


def _config(thread: str = "t1", session: str = "s1") -> dict:
    return {"configurable": {"session_id": session, "thread_id": thread}}


def _agent(manager, model, *, checkpointer: bool, tools=(get_weather,)):
    return create_agent(
        model,
        tools=list(tools),
        system_prompt="Be brief.",
        middleware=[ContextMiddleware(manager)],
        checkpointer=InMemorySaver() if checkpointer else None,
    )


def assert_stored_once(manager, session: str = "s1") -> list[dict]:
    """Every stored message has an id, no id twice, no (role, content) twice."""
    stored = manager.get_history(session)
    pairs = Counter(
        (r["role"], str(r["content"]), r.get("tool_call_id"), str(r.get("tool_calls")))
        for r in stored
    )
    assert [p for p, n in pairs.items() if n > 1] == []
    ids = [r.get("id") for r in stored]
    assert [i for i, n in Counter(ids).items() if n > 1 and i is not None] == []
    assert None not in ids
    return stored


def assert_results_follow_calls(messages) -> None:
    """Each tool message comes right after its AI call (or a sibling result), as chat
    APIs require, even when other writers put messages in between in the session."""
    open_calls: set[str] = set()
    for message in messages:
        if isinstance(message, ToolMessage):
            assert message.tool_call_id in open_calls, messages
        elif isinstance(message, AIMessage) and message.tool_calls:
            open_calls = {c["id"] for c in message.tool_calls}
        else:
            open_calls = set()


def assert_sent_once(model) -> None:
    """No model call got a message twice (by id, and by role + content)."""
    assert model.seen, "the model was never called"
    for call in model.seen:
        assert_results_follow_calls(call)
        ids = [m.id for m in call if m.id]
        assert [i for i, n in Counter(ids).items() if n > 1] == [], call
        keys = Counter(
            (
                m.type,
                str(m.content),
                getattr(m, "tool_call_id", None),
                str(getattr(m, "tool_calls", None)),
            )
            for m in call
        )
        assert [k for k, n in keys.items() if n > 1] == [], call


# --------------------------------------------------------------------------- other writers


@CHECKPOINTERS
@pytest.mark.parametrize("extra_writes", [1, 3])
def test_plain_writes_between_runs_store_nothing_twice(manager, checkpointer, extra_writes):
    model = fake_model(
        tool_call("get_weather", "c1", city="Paris"),
        "It is sunny in Paris.",
        "You asked about Paris.",
    )
    agent = _agent(manager, model, checkpointer=checkpointer)
    agent.invoke({"messages": [("user", "Weather in Paris?")]}, _config())
    notes = [f"note {i}" for i in range(extra_writes)]
    for note in notes:
        manager.add_user_message("s1", note)
    agent.invoke({"messages": [("user", "What did I ask?")]}, _config())

    stored = assert_stored_once(manager)
    assert [str(r["content"]) for r in stored] == [
        "Weather in Paris?",
        "",
        "Sunny in Paris",
        "It is sunny in Paris.",
        *notes,
        "What did I ask?",
        "You asked about Paris.",
    ]
    assert_sent_once(model)
    last = [m.content for m in model.seen[-1][1:]]
    assert last == [
        "Weather in Paris?",
        "",
        "Sunny in Paris",
        "It is sunny in Paris.",
        *notes,
        "What did I ask?",
    ]


@CHECKPOINTERS
def test_writes_during_a_run_store_nothing_twice(manager, checkpointer):
    """A tool that writes the session between two model calls of one run."""

    @tool
    def take_note(text: str) -> str:
        """Note something in the session."""
        manager.add_user_message("s1", f"(note) {text}")
        manager.add_assistant_message("s1", "(noted)")
        return "noted"

    model = fake_model(tool_call("take_note", "n1", text="window seat"), "Noted.", "Sure.")
    agent = _agent(manager, model, checkpointer=checkpointer, tools=[take_note])
    agent.invoke({"messages": [("user", "Remember: window seat")]}, _config())
    agent.invoke({"messages": [("user", "Thanks")]}, _config())
    stored = assert_stored_once(manager)
    assert [r["role"] for r in stored].count("user") == 3
    assert len(stored) == 8
    assert_sent_once(model)


@CHECKPOINTERS
def test_two_agents_share_one_session(manager, checkpointer):
    model_a = fake_model("A1", "A2", "A3")
    model_b = fake_model("B1", "B2", "B3")
    agent_a = _agent(manager, model_a, checkpointer=checkpointer, tools=[])
    agent_b = _agent(manager, model_b, checkpointer=checkpointer, tools=[])
    for turn in range(1, 4):
        agent_a.invoke({"messages": [("user", f"to A {turn}")]}, _config("thread-a"))
        agent_b.invoke({"messages": [("user", f"to B {turn}")]}, _config("thread-b"))
    stored = assert_stored_once(manager)
    expected = []
    for turn in range(1, 4):
        expected += [f"to A {turn}", f"A{turn}", f"to B {turn}", f"B{turn}"]
    assert [r["content"] for r in stored] == expected
    assert_sent_once(model_a)
    assert_sent_once(model_b)
    # Each agent sees the whole shared conversation, once.
    assert [m.content for m in model_b.seen[-1][1:]] == expected[:-1]


@CHECKPOINTERS
def test_agent_used_as_a_tool_inherits_the_session(manager, checkpointer):
    expert_model = fake_model("Take the 8:15 train.", "Platform 3.")
    expert = _agent(manager, expert_model, checkpointer=False, tools=[])

    @tool
    def ask_expert(question: str) -> str:
        """Ask the travel expert."""
        # The inner agent inherits configurable.session_id from the tool's run.
        result = expert.invoke({"messages": [("user", question)]})
        return str(result["messages"][-1].content)

    outer_model = fake_model(
        tool_call("ask_expert", "e1", question="Best train to Lyon?"),
        "The expert says: the 8:15.",
        tool_call("ask_expert", "e2", question="Which platform?"),
        "It leaves from platform 3.",
    )
    outer = _agent(manager, outer_model, checkpointer=checkpointer, tools=[ask_expert])
    outer.invoke({"messages": [("user", "How do I get to Lyon?")]}, _config())
    outer.invoke({"messages": [("user", "And the platform?")]}, _config())

    stored = assert_stored_once(manager)
    contents = [str(r["content"]) for r in stored]
    for text in (
        "How do I get to Lyon?",
        "Best train to Lyon?",
        "Take the 8:15 train.",
        "The expert says: the 8:15.",
        "And the platform?",
        "Which platform?",
        "Platform 3.",
    ):
        assert text in contents
    assert len(stored) == 12  # 2 outer runs x (user, call, tool, answer) + 2 x expert's 2
    assert_sent_once(outer_model)
    assert_sent_once(expert_model)


async def test_agents_sharing_a_session_async(manager):
    model_a = fake_model("A1", "A2")
    model_b = fake_model("B1", "B2")
    agent_a = _agent(manager, model_a, checkpointer=True, tools=[])
    agent_b = _agent(manager, model_b, checkpointer=True, tools=[])
    for turn in (1, 2):
        await agent_a.ainvoke({"messages": [("user", f"to A {turn}")]}, _config("thread-a"))
        await manager.aadd_user_message("s1", f"note {turn}")
        await agent_b.ainvoke({"messages": [("user", f"to B {turn}")]}, _config("thread-b"))
    stored = assert_stored_once(manager)
    assert len(stored) == 10
    assert_sent_once(model_a)
    assert_sent_once(model_b)


# --------------------------------------------------------------------------- ids


def _request(messages, session="s1"):
    return ModelRequest(
        model=fake_model("unused"),
        messages=messages,
        system_message=None,
        state={"messages": messages},
        runtime=SimpleNamespace(context={"session_id": session}),
    )


def test_messages_without_ids_get_deterministic_ones(manager):
    """A re-run of the same model call (same messages, no ids) stores nothing twice."""
    middleware = ContextMiddleware(manager)

    def run():
        human = HumanMessage("weather?")
        call = AIMessage("", tool_calls=[{"name": "get_weather", "args": {}, "id": "c1"}])
        result = ToolMessage("sunny", tool_call_id="c1")
        reply = AIMessage("It is sunny.")
        middleware.wrap_model_call(
            _request([human, call, result]), lambda _: ModelResponse(result=[reply])
        )
        return [human.id, call.id, result.id, reply.id]

    first = run()
    assert None not in first
    assert run() == first
    stored = assert_stored_once(manager)
    assert [r["id"] for r in stored] == first


def test_after_agent_never_writes_back_earlier_runs(manager):
    """After clear(), a checkpointer's older messages are not resurrected."""
    model = fake_model("first answer", "second answer")
    agent = _agent(manager, model, checkpointer=True, tools=[])
    agent.invoke({"messages": [("user", "first")]}, _config())
    manager.clear("s1")
    agent.invoke({"messages": [("user", "second")]}, _config())
    assert [r["content"] for r in manager.get_history("s1")] == ["second", "second answer"]
    assert [m.content for m in model.seen[-1][1:]] == ["second"]


@CHECKPOINTERS
async def test_a_failed_model_call_writes_nothing(manager, checkpointer):
    model = flaky_model("Here you go.", failures=1)
    agent = _agent(manager, model, checkpointer=checkpointer, tools=[])
    with pytest.raises(ConnectionError):
        agent.invoke({"messages": [("user", "lost?")]}, _config())
    assert manager.get_history("s1") == []
    await agent.ainvoke({"messages": [("user", "again")]}, _config())
    assert [r["content"] for r in manager.get_history("s1")] == ["again", "Here you go."]


def test_the_run_and_the_reply_land_in_one_write_tool_results_before_the_call(manager):
    writes = []
    manager.on("message_added", writes.append)
    model = fake_model(tool_call("get_weather", "c1", city="Paris"), "Sunny.")
    _agent(manager, model, checkpointer=False).invoke(
        {"messages": [("user", "Weather?")]}, _config()
    )
    # call 1: question + tool call; before call 2: the tool result (stored before the model
    # is called again, so a failure loses no tool output); call 2: the answer
    assert [w.data["roles"] for w in writes] == [["user", "assistant"], ["tool"], ["assistant"]]
    assert len(manager.get_history("s1")) == 4


def test_the_middleware_ranks_sources_with_a_given_tokenizer(manager):
    from ctx_memory.middleware import ContextMiddleware

    seen: list[str] = []

    def words(text: str) -> list[str]:
        seen.append(text)
        return text.lower().split()

    manager.add_fetched_context("tok", "web_search", "Tokyo travel guide", url="https://t.example")
    middleware = ContextMiddleware(manager, tokenizer=words)
    middleware.assembler.assemble("tok", "tokyo trip")
    assert "tokyo trip" in seen
    assert any("Tokyo travel guide" in text for text in seen)


@CHECKPOINTERS
@pytest.mark.parametrize("calls", ["sync", "async"])
async def test_every_input_message_is_sent_and_stored(manager, checkpointer, calls) -> None:
    """An input of several messages is the run: none is taken for an earlier run."""
    model = fake_model("Hello Ada.", "You live in Oslo.")
    agent = _agent(manager, model, checkpointer=checkpointer)

    async def run(messages) -> None:
        state = {"messages": messages}
        if calls == "sync":
            agent.invoke(state, _config())
        else:
            await agent.ainvoke(state, _config())

    await run([HumanMessage("My name is Ada."), HumanMessage("I live in Oslo.")])
    # With a checkpointer the run is whatever follows the previous one, an AI message
    # included; without one, the human and system messages that end the input.
    await run([AIMessage("Anything else?"), HumanMessage("Where do I live?")])
    assert [m.text for m in model.seen[0][1:]] == ["My name is Ada.", "I live in Oslo."]
    stored = assert_stored_once(manager)
    expected = [
        ("user", "My name is Ada."),
        ("user", "I live in Oslo."),
        ("assistant", "Hello Ada."),
        ("assistant", "Anything else?"),
        ("user", "Where do I live?"),
        ("assistant", "You live in Oslo."),
    ]
    if not checkpointer:
        expected.remove(("assistant", "Anything else?"))
    assert [(r["role"], r["content"]) for r in stored] == expected
    # The second call is sent the stored history once, then its own input.
    assert [m.text for m in model.seen[1][1:]] == [r["content"] for r in stored[:-1]]


@pytest.mark.parametrize("calls", ["sync", "async"])
async def test_a_caller_sending_its_history_back_has_it_trimmed(manager, calls) -> None:
    """No checkpointer, the caller re-sends ``result["messages"]`` plus a question: the
    earlier turns are history (stored once, trimmed to the budget), not this run."""
    replies = [f"answer {i} " + "word " * 60 for i in range(12)]
    model = fake_model(*replies)
    agent = create_agent(
        model, middleware=[ContextMiddleware(manager, max_tokens=1200, reserve_tokens=200)]
    )
    messages: list = []
    for i in range(12):
        state = {"messages": [*messages, HumanMessage(f"question {i} " + "word " * 60)]}
        if calls == "sync":
            result = agent.invoke(state, _config())
        else:
            result = await agent.ainvoke(state, _config())
        messages = result["messages"]
    stored = assert_stored_once(manager)
    assert len(stored) == 24
    assert all(COUNTER.count_chat(seen) <= 1000 for seen in model.seen)  # never over budget
