"""The LangChain adapters on every store: chains and agents remember across invocations."""

from __future__ import annotations

import warnings
from typing import Any

import pytest
from langchain.agents import create_agent
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    message_chunk_to_message,
)
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from ctx_memory import (
    BudgetExceededError,
    ContextPromptAssembler,
    ContextualChat,
    FetchedContextRetriever,
    SourceRecordingRetriever,
    TokenCounter,
)
from ctx_memory.classic import ContextMemory
from ctx_memory.middleware import ContextMiddleware

pytestmark = pytest.mark.stores("memory", "sqlite", "redis")
CONFIG = {"configurable": {"session_id": "s1", "thread_id": "t1"}}


class FakeToolModel(GenericFakeChatModel):
    seen: list = []  # noqa: RUF012

    def __init__(self, **data: Any) -> None:
        data.setdefault("disable_streaming", True)
        super().__init__(**data)
        object.__setattr__(self, "seen", [])

    def bind_tools(self, tools: Any, **kwargs: Any) -> FakeToolModel:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def _model(*replies: AIMessage | str) -> FakeToolModel:
    return FakeToolModel(
        messages=iter([AIMessage(r) if isinstance(r, str) else r for r in replies])
    )


def _weather_replies() -> FakeToolModel:
    return _model(
        AIMessage("", tool_calls=[{"name": "get_weather", "args": {"city": "Paris"}, "id": "c1"}]),
        "It is sunny in Paris.",
        "You asked about Paris.",
    )


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


@pytest.fixture
def manager(manager_factory):
    return manager_factory(token_counter="tiktoken")


@pytest.fixture
async def amanager(manager_factory):
    """For async tests: the store's async connections close in the test's own loop."""
    manager = manager_factory(token_counter="tiktoken")
    yield manager
    await manager.aclose()


def test_contextual_chat_remembers(manager):
    model = _model("Nice to meet you, Ada.", "You are Ada.")
    chat = ContextualChat(manager, model, max_tokens=2000)
    chat.invoke("I am Ada.", config=CONFIG)
    assert chat.invoke("Who am I?", config=CONFIG).content == "You are Ada."
    assert [m.content for m in model.seen[-1]] == [
        "I am Ada.",
        "Nice to meet you, Ada.",
        "Who am I?",
    ]
    assert manager.get_history("s1")[-1]["metadata"]["model"] == "FakeToolModel"


async def test_contextual_chat_async_stream(amanager):
    chat = ContextualChat(amanager, GenericFakeChatModel(messages=iter([AIMessage("a b c")])))
    chunks = [c async for c in chat.astream("q", config=CONFIG)]
    assert "".join(c.content for c in chunks) == "a b c"
    assert [r["content"] for r in await amanager.aget_history("s1")] == ["q", "a b c"]


def _with_a_source(manager: Any) -> None:
    manager.add_fetched_context(
        "s1", "web_search", "Book 6-8 weeks ahead.", url="https://t.example",
        extracted_data={"title": "Booking guide"},
    )  # fmt: skip


def _without_annotation(message):
    meta = {k: v for k, v in message.response_metadata.items() if k != "ctx_memory"}
    return message.model_copy(update={"response_metadata": meta})


def test_contextual_chat_reply_metadata_is_stored_with_the_reply(manager):
    _with_a_source(manager)
    chat = ContextualChat(manager, GenericFakeChatModel(messages=iter(["Early [1].", "Yes [1]."])))
    reply = chat.invoke("When?", config=CONFIG)
    chunks = list(chat.stream("Sure?", config=CONFIG))
    ours = reply.response_metadata["ctx_memory"]
    assert ours["sources_used"] == [
        {"n": 1, "url": "https://t.example", "title": "Booking guide", "source_type": "web_search"}
    ]
    assert ours["cited"] == [1]
    streamed = chunks[0]
    for chunk in chunks[1:]:
        streamed = streamed + chunk
    # What the caller got is what the store gives back after a JSON round trip, but for
    # ctx_memory's annotation, which the record keeps as metadata.cited instead.
    stored = manager.get_messages("s1")
    assert stored[1] == _without_annotation(reply)
    assert stored[3] == _without_annotation(message_chunk_to_message(streamed))
    assert "ctx_memory" not in stored[3].response_metadata
    assert manager.get_history("s1")[3]["metadata"]["cited"] == [1]
    assert streamed.response_metadata["ctx_memory"]["report"]["history_messages"] == 2


async def test_contextual_chat_reply_metadata_async(amanager):
    _with_a_source(amanager)
    chat = ContextualChat(amanager, GenericFakeChatModel(messages=iter(["A [1].", "B."])))
    reply = await chat.ainvoke("When?", config=CONFIG)
    chunks = [c async for c in chat.astream("Sure?", config=CONFIG)]
    assert "ctx_memory" in chunks[-1].response_metadata
    stored = await amanager.aget_messages("s1")
    assert stored[1] == _without_annotation(reply)
    assert (await amanager.aget_history("s1"))[3]["metadata"]["cited"] == []


def test_assembler_budget_on_a_long_session(manager):
    manager.add_messages(
        "s1",
        [
            HumanMessage(f"question {i} " * 5) if i % 2 == 0 else AIMessage(f"answer {i} " * 9)
            for i in range(600)
        ],
    )
    counter = TokenCounter()
    for budget in (60, 300, 1000):
        result = ContextPromptAssembler(manager, max_tokens=budget, reserve_tokens=0).assemble(
            "s1", "latest?"
        )
        assert result.report.total_tokens == counter.count_chat(result.messages) <= budget
        if len(result.messages) > 1:
            assert result.messages[-2].content == "answer 599 " * 9


@pytest.mark.parametrize("checkpointer", [False, True], ids=["no-checkpointer", "checkpointer"])
def test_create_agent_remembers_without_duplicates(manager, checkpointer):
    model = _weather_replies()
    agent = create_agent(
        model,
        tools=[get_weather],
        middleware=[ContextMiddleware(manager)],
        checkpointer=InMemorySaver() if checkpointer else None,
    )
    agent.invoke({"messages": [("user", "Weather in Paris?")]}, CONFIG)
    agent.invoke({"messages": [("user", "What did I ask?")]}, CONFIG)
    stored = manager.get_history("s1")
    assert [r["role"] for r in stored] == [
        "user",
        "assistant",
        "tool",
        "assistant",
        "user",
        "assistant",
    ]
    assert [m.content for m in model.seen[-1]][:1] == ["Weather in Paris?"]


async def test_create_agent_async(amanager):
    model = _weather_replies()
    agent = create_agent(model, tools=[get_weather], middleware=[ContextMiddleware(amanager)])
    await agent.ainvoke({"messages": [("user", "Weather in Paris?")]}, CONFIG)
    await agent.ainvoke({"messages": [("user", "What did I ask?")]}, CONFIG)
    assert len(await amanager.aget_history("s1")) == 6
    assert model.seen[-1][0].content == "Weather in Paris?"


def _executor(manager, model):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        from langchain_classic.agents import AgentExecutor, create_tool_calling_agent
        from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

        prompt = ChatPromptTemplate.from_messages(
            [
                ("system", "You are helpful."),
                MessagesPlaceholder("chat_history"),
                ("human", "{input}"),
                MessagesPlaceholder("agent_scratchpad"),
            ]
        )
        memory = ContextMemory(
            manager=manager, session_id="s1", memory_key="chat_history", return_messages=True
        )
        agent = create_tool_calling_agent(model, [get_weather], prompt)
        return AgentExecutor(agent=agent, tools=[get_weather], memory=memory)


def test_agent_executor_remembers(manager):
    model = _weather_replies()
    executor = _executor(manager, model)
    executor.invoke({"input": "Weather in Paris?"})
    assert executor.invoke({"input": "What did I ask?"})["output"] == "You asked about Paris."
    assert model.seen[-1][1].content == "Weather in Paris?"


async def test_agent_executor_async_and_budget(amanager):
    model = _weather_replies()
    executor = _executor(amanager, model)
    await executor.ainvoke({"input": "Weather in Paris?"})
    await executor.ainvoke({"input": "What did I ask?"})
    memory = ContextMemory(
        manager=amanager, session_id="s1", max_token_limit=30, return_messages=True
    )
    loaded = (await memory.aload_memory_variables({}))["history"]
    assert loaded == memory.load_memory_variables({})["history"]
    assert [m.content for m in loaded] == ["What did I ask?", "You asked about Paris."]


def test_retrievers(manager):
    from langchain_core.documents import Document
    from langchain_core.retrievers import BaseRetriever

    class Search(BaseRetriever):
        def _get_relevant_documents(self, query, *, run_manager):
            return [
                Document("Paris fares drop.", metadata={"url": "https://a", "title": "A"}),
                Document("Rome hotels.", metadata={"url": "https://b", "title": "B"}),
            ]

    recording = SourceRecordingRetriever(retriever=Search(), manager=manager)
    recording.invoke("x", config=CONFIG)
    recording.invoke("x", config=CONFIG)
    docs = FetchedContextRetriever(manager=manager, k=1).invoke("rome", config=CONFIG)
    assert docs[0].metadata["url"] == "https://b"
    assert len(manager.get_fetched_context("s1")["web_search"]) == 2


# --------------------------------------------------------------------------- issue 8: nothing
# lost, nothing duplicated (each test below runs on every store, the Cluster included)

EVERY_STORE = pytest.mark.stores("memory", "sqlite", "redis", "cluster")


def _no_duplicates(manager, model=None) -> list[dict]:
    stored = manager.get_history("s1")
    ids = [r.get("id") for r in stored]
    assert None not in ids
    assert len(set(ids)) == len(ids)
    for call in model.seen if model else ():
        sent = [m.id for m in call if m.id]
        assert len(set(sent)) == len(sent)
    return stored


@EVERY_STORE
@pytest.mark.parametrize("checkpointer", [False, True], ids=["no-checkpointer", "checkpointer"])
def test_middleware_stores_each_message_once_whoever_writes(manager, checkpointer):
    model = _weather_replies()
    agent = create_agent(
        model,
        tools=[get_weather],
        middleware=[ContextMiddleware(manager)],
        checkpointer=InMemorySaver() if checkpointer else None,
    )
    agent.invoke({"messages": [("user", "Weather in Paris?")]}, CONFIG)
    manager.add_user_message("s1", "x")
    manager.add_assistant_message("s1", "y")
    agent.invoke({"messages": [("user", "What did I ask?")]}, CONFIG)
    stored = _no_duplicates(manager, model)
    assert [r["role"] for r in stored] == [
        "user", "assistant", "tool", "assistant", "user", "assistant", "user", "assistant"
    ]  # fmt: skip
    assert [m.content for m in model.seen[-1]][:1] == ["Weather in Paris?"]


@EVERY_STORE
def test_middleware_agent_used_as_a_tool(manager):
    expert_model = _model("Take the 8:15 train.")
    expert = create_agent(expert_model, tools=[], middleware=[ContextMiddleware(manager)])

    @tool
    def ask_expert(question: str) -> str:
        """Ask the travel expert."""
        return str(expert.invoke({"messages": [("user", question)]})["messages"][-1].content)

    outer_model = _model(
        AIMessage(
            "", tool_calls=[{"name": "ask_expert", "args": {"question": "Train?"}, "id": "e1"}]
        ),
        "The 8:15.",
        "You asked about Lyon.",
    )
    outer = create_agent(
        outer_model,
        tools=[ask_expert],
        middleware=[ContextMiddleware(manager)],
        checkpointer=InMemorySaver(),
    )
    outer.invoke({"messages": [("user", "To Lyon?")]}, CONFIG)
    outer.invoke({"messages": [("user", "What did I ask?")]}, CONFIG)
    stored = _no_duplicates(manager, outer_model)
    assert len(stored) == 8  # outer: user, call, tool, answer, user, answer; expert: 2


@EVERY_STORE
async def test_contextual_chat_failures_leave_no_orphan_or_duplicate(amanager):
    class Flaky(GenericFakeChatModel):
        failures: int = 0

        def _generate(self, *args: Any, **kwargs: Any) -> Any:
            if self.failures:
                self.failures -= 1
                msg = "model down"
                raise ConnectionError(msg)
            return super()._generate(*args, **kwargs)

    model = Flaky(messages=iter([AIMessage("one"), AIMessage("two three"), AIMessage("4")]))
    chat = ContextualChat(amanager, model, max_tokens=200, reserve_tokens=0)
    model.failures = 1
    with pytest.raises(ConnectionError):
        await chat.ainvoke("lost?", config=CONFIG)
    model.failures = 2
    retrying = chat.with_retry(stop_after_attempt=3, wait_exponential_jitter=False)
    assert (await retrying.ainvoke("retried", config=CONFIG)).content == "one"
    async for _ in chat.astream("cut", config=CONFIG):
        break
    with pytest.raises(BudgetExceededError):
        await chat.ainvoke("word " * 500, config=CONFIG)
    assert "".join([c.content async for c in chat.astream("whole", config=CONFIG)]) == "4"
    history = await amanager.aget_history("s1")
    assert [(r["role"], r["content"]) for r in history] == [
        ("user", "retried"),
        ("assistant", "one"),
        ("user", "whole"),
        ("assistant", "4"),
    ]


@EVERY_STORE
def test_contextual_chat_sync_failures(manager):
    # A model that streams: a consumer can stop before the final chunk.
    model = GenericFakeChatModel(messages=iter([AIMessage("a b c"), AIMessage("d")]))
    chat = ContextualChat(manager, model, max_tokens=200, reserve_tokens=0)
    for _ in chat.stream("cut", config=CONFIG):
        break
    with pytest.raises(BudgetExceededError):
        chat.invoke("word " * 500, config=CONFIG)
    assert not manager.session_exists("s1")
    assert chat.invoke("kept", config=CONFIG).content == "d"
    assert [r["content"] for r in manager.get_history("s1")] == ["kept", "d"]


@EVERY_STORE
def test_context_memory_follows_the_session_id(manager):
    memory = ContextMemory(manager=manager, session_id="s1")
    memory.save_context({"input": "q1"}, {"output": "a1"})
    memory.session_id = "s2"
    memory.save_context({"input": "q2"}, {"output": "a2"})
    assert [r["content"] for r in manager.get_history("s1")] == ["q1", "a1"]
    assert [r["content"] for r in manager.get_history("s2")] == ["q2", "a2"]
    assert memory.load_memory_variables({})["history"] == "Human: q2\nAI: a2"
