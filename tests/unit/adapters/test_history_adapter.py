from __future__ import annotations

import warnings

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables.history import RunnableWithMessageHistory

from ctx_memory import ContextChatMessageHistory, InvalidSessionIdError


def test_round_trip_last_k_and_clear(manager):
    history = ContextChatMessageHistory(manager, "s1")
    messages = [
        HumanMessage("hi", id="h1"),
        AIMessage("", id="a1", tool_calls=[{"name": "t", "args": {"a": 1}, "id": "c1"}]),
        ToolMessage("r", tool_call_id="c1", id="t1"),
        AIMessage(
            [{"type": "text", "text": "done"}], id="a2", response_metadata={"model_name": "m"}
        ),
    ]
    history.add_messages(messages)
    assert history.messages == messages
    history.add_messages(messages)  # appends are idempotent by message id
    assert history.messages == messages
    # The newest two open with a tool result: widened back to the call it answers.
    assert ContextChatMessageHistory(manager, "s1", last_k=2).messages == messages[1:]
    assert ContextChatMessageHistory(manager, "s1", last_k=1).messages == messages[3:]
    manager.add_fetched_context("s1", "web", "kept")
    history.clear()
    assert history.messages == []
    assert manager.get_fetched_context("s1")  # sources survive a history clear
    assert "s1" in repr(history)


@pytest.mark.parametrize("calls", [1, 3, 40])
async def test_last_k_never_opens_with_a_tool_result(manager, calls):
    """RunnableWithMessageHistory sends these to the model: a tool result without its call
    is refused by providers. However many results the call had, the window reaches it."""
    history = ContextChatMessageHistory(manager, "s1")
    ids = [f"c{i}" for i in range(calls)]
    tool_calls = [{"name": "t", "args": {}, "id": i} for i in ids]
    history.add_messages([
        HumanMessage("weather?", id="h1"),
        AIMessage("", id="a1", tool_calls=tool_calls),
        *(ToolMessage(f"sunny {i}", tool_call_id=i, id=f"t-{i}") for i in ids),
        AIMessage("Sunny.", id="a2"),
        HumanMessage("again?", id="h2"),
    ])  # fmt: skip
    for last_k in range(1, calls + 5):
        windowed = ContextChatMessageHistory(manager, "s1", last_k=last_k)
        got = windowed.messages
        assert got == await windowed.aget_messages()
        assert len(got) >= min(last_k, calls + 4)
        assert got[0].type != "tool"
        answered = {m.tool_call_id for m in got if isinstance(m, ToolMessage)}
        called = {c["id"] for m in got if isinstance(m, AIMessage) for c in m.tool_calls}
        assert answered <= called


async def test_async_is_native(manager):
    calls = []
    original = manager.store.aexecute

    async def spy(op):
        calls.append(type(op).__name__)
        return await original(op)

    manager.store.aexecute = spy
    history = ContextChatMessageHistory(manager, "s1")
    await history.aadd_messages([HumanMessage("a"), AIMessage("b")])
    assert calls == ["AppendMessages"]  # one write, through the store's async path
    assert [m.content for m in await history.aget_messages()] == ["a", "b"]
    await history.aclear()
    assert await history.aget_messages() == []


def test_helpers_and_validation(manager):
    history = ContextChatMessageHistory(manager, "s1")
    history.add_user_message("u")
    history.add_ai_message("a")
    assert [m.type for m in history.messages] == ["human", "ai"]
    with pytest.raises(InvalidSessionIdError):
        ContextChatMessageHistory(manager, "")


def test_no_deprecation_warning_from_our_class(manager):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        history = ContextChatMessageHistory(manager, "s1")
        history.add_messages([HumanMessage("x")])
        _ = history.messages


def _chain(manager, replies):
    prompt = ChatPromptTemplate.from_messages(
        [MessagesPlaceholder("history"), ("human", "{question}")]
    )
    model = GenericFakeChatModel(messages=iter([AIMessage(r) for r in replies]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # langchain's own, not ours
        return RunnableWithMessageHistory(
            prompt | model,
            lambda session_id: ContextChatMessageHistory(manager, session_id),
            input_messages_key="question",
            history_messages_key="history",
        )


def test_runnable_with_message_history(manager):
    chain = _chain(manager, ["one", "two", "three"])
    config = {"configurable": {"session_id": "s1"}}
    assert chain.invoke({"question": "q1"}, config=config).content == "one"
    assert chain.invoke({"question": "q2"}, config=config).content == "two"
    other = {"configurable": {"session_id": "s2"}}
    chain.invoke({"question": "elsewhere"}, config=other)
    assert [m.content for m in manager.get_messages("s1")] == ["q1", "one", "q2", "two"]
    assert [m.content for m in manager.get_messages("s2")] == ["elsewhere", "three"]


async def test_runnable_with_message_history_async(manager):
    chain = _chain(manager, ["one", "two"])
    config = {"configurable": {"session_id": "s1"}}
    await chain.ainvoke({"question": "q1"}, config=config)
    await chain.ainvoke({"question": "q2"}, config=config)
    assert [m.content for m in await manager.aget_messages("s1")] == ["q1", "one", "q2", "two"]


def test_runnable_with_message_history_stream(manager):
    chain = _chain(manager, ["streamed reply"])
    config = {"configurable": {"session_id": "s1"}}
    chunks = list(chain.stream({"question": "q"}, config=config))
    assert "".join(c.content for c in chunks) == "streamed reply"
    assert [m.content for m in manager.get_messages("s1")] == ["q", "streamed reply"]
