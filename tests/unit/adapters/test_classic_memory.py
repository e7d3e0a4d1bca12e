from __future__ import annotations

import warnings

import pytest
from adapter_fakes import fake_model, get_weather, tool_call
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder

from ctx_memory import ContextManager, InMemoryStore, InvalidSessionIdError, TokenCounter
from ctx_memory.classic import ContextMemory

with warnings.catch_warnings():
    # langchain_classic.agents imports langchain-community (installed by the bench group),
    # which announces its own sunset on import: theirs, not ours.
    warnings.simplefilter("ignore", DeprecationWarning)
    from langchain_classic.agents import AgentExecutor, create_tool_calling_agent
    from langchain_classic.chains.conversation.base import ConversationChain

AGENT_PROMPT = ChatPromptTemplate.from_messages(
    [
        ("system", "You are a helpful assistant."),
        MessagesPlaceholder("chat_history"),
        ("human", "{input}"),
        MessagesPlaceholder("agent_scratchpad"),
    ]
)


def _executor(manager, model, **memory_kwargs):
    memory = ContextMemory(
        manager=manager,
        session_id="s1",
        memory_key="chat_history",
        return_messages=True,
        **memory_kwargs,
    )
    agent = create_tool_calling_agent(model, [get_weather], AGENT_PROMPT)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # AgentExecutor's own
        return AgentExecutor(agent=agent, tools=[get_weather], memory=memory), memory


def _replies():
    return fake_model(
        tool_call("get_weather", "c1", city="Paris"),
        "It is sunny in Paris.",
        "You asked about Paris.",
    )


def test_agent_executor_remembers_across_invocations(manager):
    model = _replies()
    executor, _ = _executor(manager, model)
    assert executor.invoke({"input": "Weather in Paris?"})["output"] == "It is sunny in Paris."
    assert executor.invoke({"input": "What did I ask?"})["output"] == "You asked about Paris."
    second_call = model.seen[-1]
    contents = [m.content for m in second_call]
    assert contents[1:4] == ["Weather in Paris?", "It is sunny in Paris.", "What did I ask?"]
    stored = manager.get_history("s1")
    assert [r["content"] for r in stored] == [
        "Weather in Paris?",
        "It is sunny in Paris.",
        "What did I ask?",
        "You asked about Paris.",
    ]


async def test_agent_executor_async(manager):
    model = _replies()
    executor, _ = _executor(manager, model)
    await executor.ainvoke({"input": "Weather in Paris?"})
    result = await executor.ainvoke({"input": "What did I ask?"})
    assert result["output"] == "You asked about Paris."
    assert [m.content for m in model.seen[-1]][1] == "Weather in Paris?"
    assert len(await manager.aget_history("s1")) == 4


def test_budget_prunes_what_is_loaded_not_what_is_stored(manager):
    memory = ContextMemory(
        manager=manager, session_id="s1", max_token_limit=60, return_messages=True
    )
    for i in range(50):
        memory.save_context({"input": f"question {i} " * 3}, {"output": f"answer {i} " * 3})
    loaded = memory.load_memory_variables({})["history"]
    assert TokenCounter().count_chat(loaded) - 3 <= 60
    assert loaded[0].type == "human"
    assert loaded[-1].content == "answer 49 " * 3
    assert len(manager.get_history("s1")) == 100


async def test_async_path_prunes_too(manager):
    memory = ContextMemory(
        manager=manager, session_id="s1", max_token_limit=60, return_messages=True
    )
    for i in range(50):
        await memory.asave_context({"input": f"question {i} " * 3}, {"output": f"answer {i} " * 3})
    loaded = (await memory.aload_memory_variables({}))["history"]
    assert loaded == memory.load_memory_variables({})["history"]
    assert 0 < len(loaded) < 10
    await memory.aclear()
    assert (await memory.aload_memory_variables({}))["history"] == []


def test_conversation_chain_sync_and_string_buffer(manager):
    memory = ContextMemory(manager=manager, session_id="s1")
    model = fake_model("Hello Ada.", "Your name is Ada.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # ConversationChain's own
        chain = ConversationChain(llm=model, memory=memory)
    chain.invoke({"input": "I am Ada."})
    assert chain.invoke({"input": "Who am I?"})["response"] == "Your name is Ada."
    prompt = model.seen[-1][0].content
    assert "Human: I am Ada.\nAI: Hello Ada." in prompt


async def test_conversation_chain_async(manager):
    memory = ContextMemory(manager=manager, session_id="s1")
    model = fake_model("Hello Ada.", "Your name is Ada.")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        chain = ConversationChain(llm=model, memory=memory)
    await chain.ainvoke({"input": "I am Ada."})
    await chain.ainvoke({"input": "Who am I?"})
    assert "Human: I am Ada." in model.seen[-1][0].content


def test_no_warning_from_our_memory_and_unknown_session():
    with ContextManager(store=InMemoryStore()) as manager, warnings.catch_warnings():
        warnings.simplefilter("error")
        memory = ContextMemory(manager=manager, session_id="nobody", return_messages=True)
        assert memory.load_memory_variables({}) == {"history": []}
        assert memory.memory_variables == ["history"]
        memory.save_context({"input": "a"}, {"output": "b"})
        first = memory.chat_memory.messages[0]
        assert (first.type, first.content) == ("human", "a")


def test_missing_extra_names_the_install_command(monkeypatch):
    import importlib
    import sys

    monkeypatch.setitem(sys.modules, "langchain_classic.memory.chat_memory", None)
    monkeypatch.delitem(sys.modules, "ctx_memory.classic", raising=False)
    expected = r'(?s)pip install "ctx-memory\[classic\]".*uv sync --extra classic'
    with pytest.raises(ImportError, match=expected):
        importlib.import_module("ctx_memory.classic")
    monkeypatch.delitem(sys.modules, "ctx_memory.classic", raising=False)


def _texts(manager, session):
    return [r["content"] for r in manager.get_history(session)]


def test_reads_and_writes_follow_the_current_session_id(manager):
    memory = ContextMemory(manager=manager, session_id="first", return_messages=True)
    memory.save_context({"input": "q1"}, {"output": "a1"})
    memory.session_id = "second"
    memory.save_context({"input": "q2"}, {"output": "a2"})
    assert _texts(manager, "first") == ["q1", "a1"]
    assert _texts(manager, "second") == ["q2", "a2"]
    loaded = memory.load_memory_variables({})["history"]
    assert [m.content for m in loaded] == ["q2", "a2"]
    assert [m.content for m in memory.chat_memory.messages] == ["q2", "a2"]
    memory.clear()
    assert _texts(manager, "second") == []
    assert _texts(manager, "first") == ["q1", "a1"]


async def test_async_reads_and_writes_follow_the_current_session_id(manager):
    memory = ContextMemory(manager=manager, session_id="first")
    await memory.asave_context({"input": "q1"}, {"output": "a1"})
    memory.session_id = "second"
    await memory.asave_context({"input": "q2"}, {"output": "a2"})
    assert _texts(manager, "first") == ["q1", "a1"]
    assert (await memory.aload_memory_variables({}))["history"] == "Human: q2\nAI: a2"
    await memory.aclear()
    assert _texts(manager, "second") == []
    assert _texts(manager, "first") == ["q1", "a1"]


def test_an_executor_follows_a_session_switch(manager):
    executor, memory = _executor(manager, fake_model("Hi A.", "Hi B."))
    executor.invoke({"input": "I am A."})
    memory.session_id = "s2"
    executor.invoke({"input": "I am B."})
    assert _texts(manager, "s1") == ["I am A.", "Hi A."]
    assert _texts(manager, "s2") == ["I am B.", "Hi B."]


def test_a_bad_session_id_is_refused_on_assignment(manager):
    memory = ContextMemory(manager=manager, session_id="s1")
    with pytest.raises(InvalidSessionIdError):
        memory.session_id = "   "
    assert memory.session_id == "s1"
    memory.save_context({"input": "q"}, {"output": "a"})
    assert _texts(manager, "s1") == ["q", "a"]
