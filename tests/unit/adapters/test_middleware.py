from __future__ import annotations

import importlib
import sys
import warnings
from types import SimpleNamespace
from typing import Annotated

import pytest
from adapter_fakes import ToolCallingFakeModel, fake_model, get_weather, tool_call
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse
from langchain_core.messages import AIMessage, HumanMessage, SystemMessage, ToolMessage
from langchain_core.tools import InjectedToolCallId, tool
from langgraph.checkpoint.memory import InMemorySaver
from langgraph.types import Command

from ctx_memory import BudgetExceededError, TokenCounter, ValidationError
from ctx_memory.middleware import ContextMiddleware

CONFIG = {"configurable": {"session_id": "s1", "thread_id": "t1"}}


def _request(messages, *, system=None, session="s1", runtime=True):
    return ModelRequest(
        model=fake_model("unused"),
        messages=messages,
        system_message=SystemMessage(system) if system else None,
        state={"messages": messages},
        runtime=SimpleNamespace(context={"session_id": session}) if runtime else None,
    )


class Handler:
    """A fake model-call handler that records the request it got."""

    def __init__(self, *replies):
        self.replies = list(replies)
        self.requests = []

    def __call__(self, request):
        self.requests.append(request)
        return ModelResponse(result=[self.replies.pop(0)])

    async def acall(self, request):
        return self(request)


def _check_no_orphans(messages):
    calls = set()
    for m in messages:
        if isinstance(m, AIMessage):
            calls |= {c["id"] for c in m.tool_calls}
        if isinstance(m, ToolMessage):
            assert m.tool_call_id in calls


# --------------------------------------------------------------------------- unit


def test_wrap_injects_prompt_sources_history_and_persists(seeded):
    middleware = ContextMiddleware(seeded, max_tokens=3000, reserve_tokens=500)
    handler = Handler(AIMessage("Book early [1].", id="a1"))
    question = HumanMessage("When to book cheap Paris flights?", id="h1")
    result = middleware.wrap_model_call(_request([question], system="Be brief."), handler)
    assert result.result[0].content == "Book early [1]."
    sent = handler.requests[0]
    system = sent.system_message.content
    assert system.startswith("Be brief.\n\nYou are a travel assistant.")
    assert "[1] Paris flights" in system
    assert [m.content for m in sent.messages] == [
        "Hello",
        "Hi! Where to?",
        "Paris, probably.",
        "Great choice.",
        "When to book cheap Paris flights?",
    ]
    total = TokenCounter().count_chat([sent.system_message, *sent.messages])
    assert total <= 2500
    history = seeded.get_history("s1")
    assert [r["content"] for r in history[-2:]] == [question.content, "Book early [1]."]
    meta = history[-1]["metadata"]
    assert meta["sources_used"][0] == "https://paris.example/flights"
    assert meta["tools_used"] == []
    assert meta["response_time_ms"] >= 0


def test_a_source_without_url_is_recorded_as_none(manager):
    manager.add_fetched_context("s1", "notes", "The user prefers trains.")
    middleware = ContextMiddleware(manager)
    handler = Handler(AIMessage("Trains [1].", id="a1"))
    middleware.wrap_model_call(_request([HumanMessage("How to travel?", id="h1")]), handler)
    assert manager.get_history("s1")[-1]["metadata"]["sources_used"] == [None]


async def test_awrap_same_as_wrap(seeded):
    middleware = ContextMiddleware(seeded)
    handler = Handler(AIMessage("x", id="a1"))
    await middleware.awrap_model_call(_request([HumanMessage("paris", id="h1")]), handler.acall)
    sent = handler.requests[0]
    assert sent.messages[-1].content == "paris"
    assert "You are a travel assistant." in sent.system_message.content
    assert [r["content"] for r in seeded.get_history("s1")][-2:] == ["paris", "x"]


def test_repeated_calls_in_one_run_store_each_message_once(manager):
    middleware = ContextMiddleware(manager)
    human = HumanMessage("weather?", id="h1")
    call = AIMessage("", id="a1", tool_calls=[{"name": "get_weather", "args": {}, "id": "c1"}])
    result = ToolMessage("sunny", tool_call_id="c1", id="t1")
    middleware.wrap_model_call(_request([human]), Handler(call))
    handler = Handler(AIMessage("It is sunny.", id="a2"))
    middleware.wrap_model_call(_request([human, call, result]), handler)
    # The second call sends the run once, not the stored copy as well.
    assert [m.id for m in handler.requests[0].messages] == ["h1", "a1", "t1"]
    stored = manager.get_history("s1")
    assert [r["id"] for r in stored] == ["h1", "a1", "t1", "a2"]
    assert stored[1]["metadata"]["tools_used"] == ["get_weather"]


def test_reply_without_id_gets_one(manager):
    middleware = ContextMiddleware(manager)
    reply = AIMessage("no id")
    middleware.wrap_model_call(_request([HumanMessage("q", id="h1")]), Handler(reply))
    assert reply.id is not None
    assert manager.get_history("s1")[-1]["id"] == reply.id


def test_budget_trims_stored_history_never_the_run(manager):
    for i in range(40):
        manager.add_user_message("s1", f"old question {i} " * 4)
        manager.add_assistant_message("s1", f"old answer {i} " * 4)
    middleware = ContextMiddleware(manager, max_tokens=300, reserve_tokens=0)
    handler = Handler(AIMessage("ok", id="a9"))
    middleware.wrap_model_call(_request([HumanMessage("now", id="h9")]), handler)
    sent = handler.requests[0].messages
    assert sent[-1].content == "now"
    assert sent[0].type == "human"
    assert sent[-2].content == "old answer 39 " * 4
    assert TokenCounter().count_chat(sent) <= 300


def test_budget_exceeded_by_the_run_itself(manager):
    middleware = ContextMiddleware(manager, max_tokens=30, reserve_tokens=0)
    with pytest.raises(BudgetExceededError):
        middleware.wrap_model_call(
            _request([HumanMessage("word " * 100, id="h")]), Handler(AIMessage("x"))
        )


def test_no_orphan_tool_message_is_sent(manager):
    manager.add_messages(
        "s1",
        [
            ToolMessage("stray", tool_call_id="gone"),
            AIMessage("", tool_calls=[{"name": "t", "args": {}, "id": "c0"}]),
        ],
    )
    middleware = ContextMiddleware(manager)
    handler = Handler(AIMessage("ok", id="a1"))
    state = [ToolMessage("orphan in state", tool_call_id="zz", id="t0"), HumanMessage("q", id="h")]
    middleware.wrap_model_call(_request(state), handler)
    sent = handler.requests[0].messages
    _check_no_orphans(sent)
    assert [m.content for m in sent] == ["q"]


def test_read_only_and_session_resolution(manager):
    middleware = ContextMiddleware(manager, persist=False, session_id="fixed")
    request = _request([HumanMessage("q", id="h")], runtime=False)
    middleware.wrap_model_call(request, Handler(AIMessage("a", id="a")))
    assert manager.get_history("fixed") == []
    with pytest.raises(ValidationError, match="session id"):
        ContextMiddleware(manager).wrap_model_call(request, Handler(AIMessage("a")))
    context_object = SimpleNamespace(context=SimpleNamespace(session_id="obj"))
    assert ContextMiddleware(manager)._session(context_object) == "obj"


def test_after_agent_saves_what_is_left(manager):
    middleware = ContextMiddleware(manager, session_id="s1")
    state = {"messages": [HumanMessage("q", id="h"), AIMessage("a", id="a")]}
    middleware.after_agent(state, SimpleNamespace(context=None))
    middleware.after_agent(state, SimpleNamespace(context=None))
    assert [r["id"] for r in manager.get_history("s1")] == ["h", "a"]


async def test_aafter_agent(manager):
    middleware = ContextMiddleware(manager, session_id="s1")
    state = {"messages": [HumanMessage("q", id="h")]}
    await middleware.aafter_agent(state, SimpleNamespace(context=None))
    assert len(await manager.aget_history("s1")) == 1


def test_missing_extra_names_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "langchain.agents.middleware", None)
    monkeypatch.delitem(sys.modules, "ctx_memory.middleware", raising=False)
    expected = r'(?s)pip install "ctx-memory\[agents\]".*uv sync --extra agents'
    with pytest.raises(ImportError, match=expected):
        importlib.import_module("ctx_memory.middleware")
    monkeypatch.delitem(sys.modules, "ctx_memory.middleware", raising=False)


# --------------------------------------------------------------------------- real agents


def _agent(manager, model, checkpointer=None, **kwargs):
    return create_agent(
        model,
        tools=[get_weather],
        system_prompt="Be brief.",
        middleware=[ContextMiddleware(manager, **kwargs)],
        checkpointer=checkpointer,
    )


def _replies():
    return fake_model(
        tool_call("get_weather", "c1", city="Paris"),
        "It is sunny in Paris.",
        "You asked about the weather in Paris.",
    )


@pytest.mark.parametrize("checkpointer", [None, "memory"], ids=["no-checkpointer", "checkpointer"])
def test_agent_remembers_without_duplicates(manager, checkpointer):
    manager.set_system_prompt("s1", "You are a travel assistant.")
    model = _replies()
    saver = InMemorySaver() if checkpointer else None
    agent = _agent(manager, model, saver)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        first = agent.invoke({"messages": [("user", "Weather in Paris?")]}, CONFIG)
        second = agent.invoke({"messages": [("user", "What did I ask?")]}, CONFIG)
    assert first["messages"][-1].content == "It is sunny in Paris."
    assert second["messages"][-1].content == "You asked about the weather in Paris."
    stored = manager.get_history("s1")
    assert [r["role"] for r in stored] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]
    assert len({r["id"] for r in stored}) == 6
    assert stored[1]["metadata"]["tools_used"] == ["get_weather"]
    assert stored[2]["content"] == "Sunny in Paris"
    last_call = model.seen[-1]
    assert last_call[0].content.startswith("Be brief.\n\nYou are a travel assistant.")
    contents = [m.content for m in last_call[1:]]
    assert contents == [
        "Weather in Paris?",
        "",
        "Sunny in Paris",
        "It is sunny in Paris.",
        "What did I ask?",
    ]
    _check_no_orphans(last_call)


async def test_agent_async(manager):
    model = _replies()
    agent = _agent(manager, model)
    await agent.ainvoke({"messages": [("user", "Weather in Paris?")]}, CONFIG)
    result = await agent.ainvoke({"messages": [("user", "What did I ask?")]}, CONFIG)
    assert result["messages"][-1].content.startswith("You asked")
    assert len(await manager.aget_history("s1")) == 6
    assert model.seen[-1][1].content == "Weather in Paris?"


def test_agent_stream(manager):
    agent = _agent(manager, _replies())
    updates = list(agent.stream({"messages": [("user", "Weather in Paris?")]}, CONFIG))
    assert updates
    assert len(manager.get_history("s1")) == 4


def test_thread_id_is_the_default_session(manager):
    agent = _agent(manager, fake_model("hi"), InMemorySaver())
    agent.invoke({"messages": [("user", "hello")]}, {"configurable": {"thread_id": "th"}})
    assert [r["content"] for r in manager.get_history("th")] == ["hello", "hi"]


def test_return_direct_tool_result_is_saved_after_the_agent(manager):
    @tool(return_direct=True)
    def book(city: str) -> str:
        """Book a flight."""
        return f"Booked {city}"

    agent = create_agent(
        fake_model(tool_call("book", "b1", city="Paris")),
        tools=[book],
        middleware=[ContextMiddleware(manager)],
    )
    agent.invoke({"messages": [("user", "Book Paris")]}, CONFIG)
    stored = manager.get_history("s1")
    assert [r["role"] for r in stored] == ["user", "assistant", "tool"]
    assert stored[-1]["content"] == "Booked Paris"


def test_agent_sees_sources(seeded):
    model = fake_model("ok")
    agent = create_agent(model, tools=[], middleware=[ContextMiddleware(seeded)])
    agent.invoke({"messages": [("user", "cheap Paris flights")]}, CONFIG)
    assert "[1] Paris flights" in model.seen[0][0].content


def test_the_middleware_takes_the_recall_index_cache_to_share(manager) -> None:
    from ctx_memory.recall import Recall, recall_for

    own = Recall()
    assert ContextMiddleware(manager, recall=own).assembler.recall is own
    assert ContextMiddleware(manager).assembler.recall is recall_for(manager)


class _FailsAfterToolCall(ToolCallingFakeModel):
    """Asks for the weather, then fails on the model call that would read the result."""

    def _generate(self, messages, *args, **kwargs):
        if any(isinstance(m, ToolMessage) for m in messages):
            msg = "model unavailable"
            raise ConnectionError(msg)
        return super()._generate(messages, *args, **kwargs)


async def _invoke(agent, mode, state):
    if mode == "async":
        return await agent.ainvoke(state, CONFIG)
    return agent.invoke(state, CONFIG)


@pytest.mark.parametrize("mode", ["sync", "async"])
@pytest.mark.parametrize("checkpointer", [None, "memory"], ids=["no-checkpointer", "checkpointer"])
async def test_a_failed_model_call_keeps_the_tool_results_that_ran(manager, mode, checkpointer):
    """The first model call asked for a tool (stored with the question), the tool ran, the
    next model call failed: the tool's result is stored too, so the session holds no
    unanswered tool call and loses no tool output; the failure still propagates."""
    model = _FailsAfterToolCall(messages=iter([tool_call("get_weather", "c1", city="Paris")]))
    agent = _agent(manager, model, InMemorySaver() if checkpointer else None)
    asked = {"messages": [("user", "Weather in Paris?")]}
    with pytest.raises(ConnectionError):
        await _invoke(agent, mode, asked)
    stored = manager.get_history("s1")
    assert [r["role"] for r in stored] == ["user", "assistant", "tool"]
    assert stored[2]["content"] == "Sunny in Paris"
    assert stored[2]["tool_call_id"] == "c1"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_failed_first_model_call_still_writes_nothing(manager, mode):
    agent = _agent(manager, _FailsAfterToolCall(messages=iter([])))
    with pytest.raises(Exception):  # noqa: B017, PT011 - whatever the exhausted fake raises
        await _invoke(agent, mode, {"messages": [("user", "hi")]})
    assert manager.get_history("s1") == []


def _order(n: int) -> str:
    return f"order {n}: shipped, tracking code TRK-{n} " + "detail " * 30


@tool
def get_order(n: int) -> str:
    """Order details."""
    return _order(n)


def test_an_outer_context_editing_middleware_does_not_change_what_is_stored(manager):
    """``ContextEditingMiddleware`` wrapping the model call from outside clears old tool
    outputs in the request it passes inward: the session stores the state's outputs."""
    from langchain.agents.middleware import ContextEditingMiddleware
    from langchain.agents.middleware.context_editing import ClearToolUsesEdit

    calls = [{"name": "get_order", "args": {"n": i}, "id": f"c{i}"} for i in range(5)]
    model = fake_model(AIMessage("", tool_calls=calls), "All five shipped.")
    editing = ContextEditingMiddleware(
        edits=[ClearToolUsesEdit(trigger=200, keep=3)], token_count_method="approximate"
    )
    agent = create_agent(model, tools=[get_order], middleware=[editing, ContextMiddleware(manager)])
    agent.invoke({"messages": [("user", "status of orders 0-4?")]}, CONFIG)
    assert any("[cleared]" in str(m.content) for m in model.seen[-1])  # the edit happened
    stored = [r["content"] for r in manager.get_history("s1") if r["role"] == "tool"]
    assert stored == [_order(i) for i in range(5)]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_reply_redacted_after_the_model_call_is_stored_redacted(manager, mode):
    """``PIIMiddleware(apply_to_output=True)`` redacts the reply in the state after it was
    stored: the stored copy is replaced (same id and metadata), and the next prompt sends
    the redacted text."""
    from langchain.agents.middleware import PIIMiddleware

    model = fake_model("Write to alice.secret@example.com", "ok")
    pii = PIIMiddleware("email", strategy="redact", apply_to_input=True, apply_to_output=True)
    agent = create_agent(
        model, tools=[], middleware=[ContextMiddleware(manager), pii], checkpointer=InMemorySaver()
    )
    await _invoke(agent, mode, {"messages": [("user", "what is the support email?")]})
    stored = manager.get_history("s1")
    assert stored[1]["content"] == "Write to [REDACTED_EMAIL]"
    assert stored[1]["metadata"]["model"]
    await _invoke(agent, mode, {"messages": [("user", "thanks")]})
    sent = "\n".join(str(m.content) for m in model.seen[-1])
    assert "alice.secret" not in sent
    assert "[REDACTED_EMAIL]" in sent


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_redacted_reply_is_replaced_when_another_agent_resumes_the_run(manager, mode):
    """Paused for approval after the reply was stored and redacted in the state, the run is
    resumed by a new agent (another worker): it reads the stored copy back and replaces it,
    so neither the session nor the next prompt holds what was redacted."""
    from langchain.agents.middleware import HumanInTheLoopMiddleware, PIIMiddleware
    from langgraph.types import Command

    calls = [{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}]
    model = fake_model(
        AIMessage("Asking for alice.secret@example.com", tool_calls=calls), "Sent.", "Done."
    )
    checkpointer = InMemorySaver()

    def agent():  # what each worker builds: its own middleware instances
        return create_agent(
            model,
            tools=[get_weather],
            middleware=[
                ContextMiddleware(manager),
                PIIMiddleware("email", strategy="redact", apply_to_output=True),
                HumanInTheLoopMiddleware(interrupt_on={"get_weather": True}),
            ],
            checkpointer=checkpointer,
        )

    await _invoke(agent(), mode, {"messages": [("user", "weather for her?")]})
    resumed = Command(resume={"decisions": [{"type": "approve"}]})
    await _invoke(agent(), mode, resumed)
    await _invoke(agent(), mode, {"messages": [("user", "and now?")]})
    stored = manager.get_history("s1")
    assert "alice.secret" not in str(stored)
    assert "[REDACTED_EMAIL]" in str(stored[1])
    assert "alice.secret" not in "\n".join(str(m) for m in model.seen[-1])


@tool
def screenshot(page: str, tool_call_id: Annotated[str, InjectedToolCallId]) -> Command:
    """A screenshot: the image goes in a user message (tool messages cannot carry one)."""
    return Command(
        update={
            "messages": [
                ToolMessage("screenshot attached below", tool_call_id=tool_call_id),
                HumanMessage(f"[image of {page}]"),
            ]
        }
    )


def test_a_tool_result_split_from_its_call_in_the_current_run_is_sent_after_it(manager):
    """A tool adds a user message after its result while a parallel call still runs: the
    current run is sent with each result right after its call, as the stored history is."""
    calls = [
        {"name": "screenshot", "args": {"page": "home"}, "id": "c1"},
        {"name": "get_weather", "args": {"city": "Paris"}, "id": "c2"},
    ]
    model = fake_model(AIMessage("", tool_calls=calls), "Here you go.")
    agent = create_agent(
        model, tools=[screenshot, get_weather], middleware=[ContextMiddleware(manager)]
    )
    agent.invoke({"messages": [("user", "screenshot and weather")]}, CONFIG)
    sent = model.seen[1]
    kinds = [(m.type, getattr(m, "tool_call_id", None)) for m in sent if m.type != "system"]
    assert kinds == [
        ("human", None),
        ("ai", None),
        ("tool", "c1"),
        ("tool", "c2"),
        ("human", None),
    ]


def test_a_model_call_limit_after_a_tool_ran_keeps_its_result(manager):
    """A middleware raising before the next model call (a call limit): the tool's result
    was stored before the model was to be called again."""
    from langchain.agents.middleware import ModelCallLimitMiddleware

    limit = ModelCallLimitMiddleware(run_limit=1, exit_behavior="error")
    agent = create_agent(
        fake_model(tool_call("get_weather", "c1", city="Paris"), "never"),
        tools=[get_weather],
        middleware=[ContextMiddleware(manager), limit],
    )
    with pytest.raises(Exception, match="limit"):
        agent.invoke({"messages": [("user", "Weather in Paris?")]}, CONFIG)
    assert [r["role"] for r in manager.get_history("s1")] == ["user", "assistant", "tool"]


@tool
def lookup_customer(who: str) -> str:
    """Customer record."""
    return f"{who}: contact alice.secret@example.com, VIP"


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_tool_results_redacted_by_a_later_middleware_are_stored_redacted(manager, mode):
    """``PIIMiddleware`` after ``ContextMiddleware`` redacts tool results in its
    ``before_model``, after this one stored them: the stored copy is replaced before the
    model is called, and no later prompt carries the address."""
    from langchain.agents.middleware import PIIMiddleware

    model = fake_model(tool_call("lookup_customer", "c1", who="Alice"), "Found.", "ok")
    pii = PIIMiddleware(
        "email", strategy="redact", apply_to_input=False, apply_to_tool_results=True
    )
    agent = create_agent(
        model,
        tools=[lookup_customer],
        middleware=[ContextMiddleware(manager), pii],
        checkpointer=InMemorySaver(),
    )
    await _invoke(agent, mode, {"messages": [("user", "Who is Alice?")]})
    stored = [r["content"] for r in manager.get_history("s1") if r["role"] == "tool"]
    assert stored == ["Alice: contact [REDACTED_EMAIL], VIP"]
    await _invoke(agent, mode, {"messages": [("user", "Thanks")]})
    assert "alice.secret" not in "\n".join(str(m.content) for m in model.seen[-1])


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_tool_results_in_the_input_are_not_stored_by_a_failed_first_call(manager, mode):
    """A client that ran the tool itself sends its result: no model call of this run asked
    for it, so a failed first call still writes nothing."""
    agent = _agent(manager, _FailsAfterToolCall(messages=iter([])))
    given = [
        HumanMessage("Book it", id="h1"),
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {}, "id": "c1"}], id="a1"),
        ToolMessage("booked #42", tool_call_id="c1", id="t1"),
    ]
    with pytest.raises(ConnectionError):
        await _invoke(agent, mode, {"messages": given})
    assert manager.get_history("s1") == []


def test_a_run_resumed_by_another_middleware_instance_keeps_its_tool_results(manager):
    """A human-approval interrupt resumed by a new agent (a restart, another worker on the
    same checkpointer): the tool result is stored before the failing model call, as the
    state (not the first instance's memory) says the tool ran in this run."""
    from langchain.agents.middleware import HumanInTheLoopMiddleware
    from langgraph.types import Command

    saver = InMemorySaver()

    def agent():
        model = _FailsAfterToolCall(messages=iter([tool_call("get_weather", "c1", city="Paris")]))
        approval = HumanInTheLoopMiddleware({"get_weather": True})
        return create_agent(
            model,
            tools=[get_weather],
            checkpointer=saver,
            middleware=[ContextMiddleware(manager), approval],
        )

    assert agent().invoke({"messages": [("user", "Weather in Paris?")]}, CONFIG)["__interrupt__"]
    with pytest.raises(ConnectionError):
        agent().invoke(Command(resume={"decisions": [{"type": "approve"}]}), CONFIG)
    stored = manager.get_history("s1")
    assert [(r["role"], r["content"]) for r in stored][2:] == [("tool", "Sunny in Paris")]
