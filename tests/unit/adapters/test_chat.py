from __future__ import annotations

import warnings

import pytest
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.language_models import FakeMessagesListChatModel, GenericFakeChatModel
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableLambda, RunnableParallel, RunnablePassthrough

from ctx_memory import ContextPromptAssembler, ContextualChat, TokenCounter, ValidationError

CONFIG = {"configurable": {"session_id": "s1"}}


def fake(*replies):
    return GenericFakeChatModel(
        messages=iter([AIMessage(r) if isinstance(r, str) else r for r in replies])
    )


class Spy(FakeMessagesListChatModel):
    seen: list = []  # noqa: RUF012

    def _generate(self, messages, *args, **kwargs):
        self.seen.append(messages)
        return super()._generate(messages, *args, **kwargs)


def test_invoke_records_both_messages_with_metadata(seeded):
    model = Spy(
        responses=[
            AIMessage("Book 6-8 weeks ahead [1].", response_metadata={"model_name": "gpt-x"})
        ]
    )
    model.seen = []
    chat = ContextualChat(seeded, model, max_tokens=3000)
    reply = chat.invoke("When should I book cheap Paris flights?", config=CONFIG)
    assert reply.content == "Book 6-8 weeks ahead [1]."
    sent = model.seen[0]
    assert sent[0].type == "system"
    assert "[1] Paris flights" in sent[0].content
    assert [m.content for m in sent].count("When should I book cheap Paris flights?") == 1
    assert sent[-1].content == "When should I book cheap Paris flights?"
    assert TokenCounter().count_chat(sent) <= 2000
    user, assistant = seeded.get_history("s1")[-2:]
    assert user["role"] == "user"
    assert assistant["content"] == reply.content
    meta = assistant["metadata"]
    assert meta["model"] == "gpt-x"
    assert meta["response_time_ms"] >= 0
    assert meta["sources_used"][0] == "https://paris.example/flights"
    assert meta["tools_used"] == []


def test_tools_used_and_model_name_fallbacks(manager):
    reply = AIMessage("", tool_calls=[{"name": "search", "args": {"q": "x"}, "id": "c1"}])
    chat = ContextualChat(manager, fake(reply), session_id="s1")
    chat.invoke("find x")
    record = manager.get_history("s1")[-1]
    assert record["metadata"]["tools_used"] == ["search"]
    assert record["metadata"]["model"] == "GenericFakeChatModel"
    assert record["tool_calls"][0]["id"] == "c1"


def test_stream_records_once_at_the_end(manager):
    chat = ContextualChat(manager, fake("one two three"), session_id="s1", model_name="fake")
    stream = chat.stream("q")
    first = next(stream)
    assert first.content == "one"
    assert manager.get_history("s1") == []  # the turn lands whole, at the end
    rest = list(stream)
    assert first.content + "".join(c.content for c in rest) == "one two three"
    history = manager.get_history("s1")
    assert [r["role"] for r in history] == ["user", "assistant"]
    assert history[1]["content"] == "one two three"
    assert history[1]["metadata"]["model"] == "fake"


async def test_async_invoke_and_astream(manager):
    chat = ContextualChat(manager, fake("a1", "a two"), session_id="s1")
    assert (await chat.ainvoke("q1")).content == "a1"
    chunks = [c async for c in chat.astream("q2")]
    assert "".join(c.content for c in chunks) == "a two"
    history = await manager.aget_history("s1")
    assert [r["content"] for r in history] == ["q1", "a1", "q2", "a two"]
    assert "response_time_ms" in history[3]["metadata"]


def test_batch_over_sessions(manager):
    chat = ContextualChat(manager, FakeMessagesListChatModel(responses=[AIMessage("r")]))
    replies = chat.batch(
        [{"question": "x", "session_id": "a"}, {"question": "y", "session_id": "b"}]
    )
    assert [r.content for r in replies] == ["r", "r"]
    assert [r["content"] for r in manager.get_history("a")] == ["x", "r"]
    assert [r["content"] for r in manager.get_history("b")] == ["y", "r"]


async def test_abatch(manager):
    chat = ContextualChat(manager, FakeMessagesListChatModel(responses=[AIMessage("r")]))
    await chat.abatch(["x", "y"], config=CONFIG)
    assert len(await manager.aget_history("s1")) == 4


def test_remembers_across_turns_and_composes(manager):
    model = Spy(responses=[AIMessage("Nice to meet you, Ada."), AIMessage("You are Ada.")])
    model.seen = []
    chain = RunnableLambda(lambda d: d["text"]) | ContextualChat(manager, model) | StrOutputParser()
    assert chain.invoke({"text": "I am Ada."}, config=CONFIG) == "Nice to meet you, Ada."
    assert chain.invoke({"text": "Who am I?"}, config=CONFIG) == "You are Ada."
    assert [m.content for m in model.seen[1]] == [
        "I am Ada.",
        "Nice to meet you, Ada.",
        "Who am I?",
    ]


def test_streaming_through_a_chain(manager):
    chain = ContextualChat(manager, fake("a b c"), session_id="s1") | StrOutputParser()
    assert "".join(chain.stream("q")) == "a b c"
    assert manager.get_history("s1")[-1]["content"] == "a b c"


def test_model_failure_writes_nothing(manager):
    class Broken(GenericFakeChatModel):
        def _generate(self, *args, **kwargs):
            raise RuntimeError("model down")

    chat = ContextualChat(manager, Broken(messages=iter([])), session_id="s1")
    with pytest.raises(RuntimeError, match="model down"):
        chat.invoke("q")
    assert manager.get_history("s1") == []


def test_run_names_in_traces(manager):
    names = []

    class Names(BaseCallbackHandler):
        def on_chain_start(self, serialized, inputs, **kwargs):
            names.append(kwargs.get("name"))

        def on_chat_model_start(self, serialized, messages, **kwargs):
            names.append("model")

    ContextualChat(manager, fake("x"), session_id="s1").invoke("q", config={"callbacks": [Names()]})
    assert names == ["ContextualChat", "ContextPromptAssembler", "model"]


def test_options(manager):
    assembler = ContextPromptAssembler(manager)
    with pytest.raises(ValidationError):
        ContextualChat(manager, fake(), assembler=assembler, max_tokens=10)
    with pytest.raises(ValidationError, match="session id"):
        ContextualChat(manager, fake("x")).invoke("q")
    chat = ContextualChat(manager, fake("x"), assembler=assembler, session_id="s1")
    assert "ContextualChat" in repr(chat)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        chat.invoke(HumanMessage("as a message"))
    assert manager.get_history("s1")[0]["content"] == "as a message"


def test_session_id_is_a_declared_configurable(manager):
    chain = ContextPromptAssembler(manager) | fake("x")
    assert [spec.id for spec in chain.config_specs] == ["session_id"]
    assert [s.id for s in ContextualChat(manager, fake("x")).config_specs] == ["session_id"]


def _answers():
    n = 0
    while True:
        n += 1
        yield AIMessage(f"answer {n}")


def _stored(manager, sid):
    return [(r["role"], r["content"]) for r in manager.get_history(sid)]


@pytest.mark.parametrize("mode", ["invoke", "stream", "astream"])
async def test_a_dict_built_by_the_chain_reaches_the_chat_whole(manager, mode):
    """``RunnableParallel`` and ``RunnablePassthrough.assign`` stream one partial dict per
    key: the turn goes to the input's session, with its question, as with ``invoke``."""
    manager.add_user_message("default", "another user's question")
    manager.add_assistant_message("default", "its reply")
    model = GenericFakeChatModel(messages=_answers())
    chat = ContextualChat(manager, model, max_tokens=2000, session_id="default")
    built = RunnableParallel(question=RunnablePassthrough(), session_id=lambda _: "bob") | chat
    assigned = RunnablePassthrough.assign(question=lambda d: d["text"].strip()) | chat
    for chain, given, sid in (
        (built, "Capital of France?", "bob"),
        (assigned, {"session_id": "alice", "text": " Capital of Italy? "}, "alice"),
    ):
        if mode == "invoke":
            reply = chain.invoke(given).content
        elif mode == "stream":
            reply = "".join(str(chunk.content) for chunk in chain.stream(given))
        else:
            reply = "".join([str(chunk.content) async for chunk in chain.astream(given)])
        question = given if isinstance(given, str) else given["text"].strip()
        assert _stored(manager, sid) == [("user", question), ("assistant", reply)]
    assert _stored(manager, "default") == [
        ("user", "another user's question"),
        ("assistant", "its reply"),
    ]


def test_streamed_string_chunks_still_join():
    from ctx_memory.chat import _join

    assert _join(["What ", "is ", "this?"]) == "What is this?"
    assert _join([{"a": "x"}, {"a": "y", "b": None}, {"b": 1}]) == {"a": "xy", "b": 1}
    assert _join([{"q": 1}, {"q": None}]) == {"q": 1}
