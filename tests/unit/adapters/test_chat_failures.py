"""A failed model call never corrupts history (issue 8.3).

ContextualChat writes a turn (question and reply) in one append once the model has
answered: model errors, retries, cut streams and over-budget questions leave no orphan
question and no duplicate turn. Real LangChain fake models and ``.with_retry()``.
"""

from __future__ import annotations

import asyncio
import gc
from typing import Any

import pytest
from adapter_fakes import flaky_model
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.language_models.fake_chat_models import (
    FakeListChatModel,
    FakeListChatModelError,
)
from langchain_core.messages import AIMessage, HumanMessage
from langchain_core.runnables import RunnableLambda

from ctx_memory import BudgetExceededError, ContextManager, ContextualChat, InMemoryStore

CONFIG = {"configurable": {"session_id": "s1"}}
NO_WAIT = {"wait_exponential_jitter": False}


def turns(manager: ContextManager, session: str = "s1") -> list[tuple[str, str]]:
    return [(r["role"], str(r["content"])) for r in manager.get_history(session)]


async def run(chat: Any, mode: str, question: Any, config: Any = CONFIG) -> Any:
    """Ask through one of the Runnable entry points; the reply's text."""
    if mode == "invoke":
        return chat.invoke(question, config=config).content
    if mode == "ainvoke":
        return (await chat.ainvoke(question, config=config)).content
    if mode == "stream":
        return "".join(c.content for c in chat.stream(question, config=config))
    if mode == "astream":
        return "".join([c.content async for c in chat.astream(question, config=config)])
    if mode == "batch":
        return chat.batch([question], config=config)[0].content
    if mode == "abatch":
        return (await chat.abatch([question], config=config))[0].content
    raise AssertionError(mode)


MODES = pytest.mark.parametrize(
    "mode", ["invoke", "ainvoke", "stream", "astream", "batch", "abatch"]
)


# --------------------------------------------------------------------------- model errors


@MODES
async def test_model_error_writes_nothing(manager, mode):
    manager.add_user_message("s1", "earlier")
    manager.add_assistant_message("s1", "earlier answer")
    model = flaky_model("never reached", failures=1)
    chat = ContextualChat(manager, model)
    with pytest.raises(ConnectionError, match="model unavailable"):
        await run(chat, mode, "Will this be lost?")
    assert turns(manager) == [("user", "earlier"), ("assistant", "earlier answer")]
    # The next question is answered with a clean history: no orphan question in it.
    assert await run(chat, mode, "Second try?") == "never reached"
    assert turns(manager)[2:] == [("user", "Second try?"), ("assistant", "never reached")]


async def test_model_error_in_a_new_session_creates_nothing(manager):
    chat = ContextualChat(manager, flaky_model(failures=1), session_id="fresh")
    with pytest.raises(ConnectionError):
        await chat.ainvoke("q")
    assert not manager.session_exists("fresh")


def test_batch_failures_are_per_turn(manager):
    class FailsOnBad(GenericFakeChatModel):
        def _generate(self, messages, *args, **kwargs):
            if messages[-1].content == "bad":
                msg = "model refused"
                raise ValueError(msg)
            return super()._generate(messages, *args, **kwargs)

    chat = ContextualChat(manager, FailsOnBad(messages=iter([AIMessage("fine")])))
    results = chat.batch(
        [{"question": "good", "session_id": "a"}, {"question": "bad", "session_id": "b"}],
        return_exceptions=True,
    )
    assert results[0].content == "fine"
    assert isinstance(results[1], ValueError)
    assert turns(manager, "a") == [("user", "good"), ("assistant", "fine")]
    assert manager.get_history("b") == []


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "batch", "abatch"])
async def test_with_retry_records_one_turn(manager, mode):
    model = flaky_model("Finally.", failures=2)
    chat = ContextualChat(manager, model).with_retry(stop_after_attempt=3, **NO_WAIT)
    assert await run(chat, mode, "Are you there?") == "Finally."
    assert model.calls == 3
    assert turns(manager) == [("user", "Are you there?"), ("assistant", "Finally.")]


async def test_retrying_the_model_inside_records_one_turn(manager):
    model = flaky_model("One.", "Two.", failures=1)
    chat = ContextualChat(manager, model.with_retry(stop_after_attempt=2, **NO_WAIT))
    assert (await chat.ainvoke("q1", config=CONFIG)).content == "One."
    assert chat.invoke("q2", config=CONFIG).content == "Two."
    assert turns(manager) == [
        ("user", "q1"),
        ("assistant", "One."),
        ("user", "q2"),
        ("assistant", "Two."),
    ]


def test_retries_exhausted_write_nothing(manager):
    model = flaky_model("never", failures=5)
    chat = ContextualChat(manager, model).with_retry(stop_after_attempt=3, **NO_WAIT)
    with pytest.raises(ConnectionError):
        chat.invoke("q", config=CONFIG)
    assert model.calls == 3
    assert manager.get_history("s1") == []


class LostAcknowledgement(ContextManager):
    """A manager whose next ``lose`` appends are applied and then reported as failed,
    as when a store's reply is lost after the write landed."""

    lose = 0

    def _lost(self) -> None:
        if self.lose:
            self.lose -= 1
            msg = "connection reset after the write"
            raise ConnectionError(msg)

    def add_messages(self, *args: Any, **kwargs: Any) -> Any:
        result = super().add_messages(*args, **kwargs)
        self._lost()
        return result

    async def aadd_messages(self, *args: Any, **kwargs: Any) -> Any:
        result = await super().aadd_messages(*args, **kwargs)
        self._lost()
        return result


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "batch", "abatch"])
async def test_a_retry_after_a_landed_write_records_one_turn(mode):
    with LostAcknowledgement(store=InMemoryStore()) as manager:
        manager.lose = 1
        model = GenericFakeChatModel(messages=iter([AIMessage("first"), AIMessage("second")]))
        chat = ContextualChat(manager, model).with_retry(stop_after_attempt=2, **NO_WAIT)
        await run(chat, mode, "Only once, please.")
        # The first attempt's turn landed; the retry reused its ids, so its write was a
        # no-op: one question, one reply.
        assert turns(manager) == [("user", "Only once, please."), ("assistant", "first")]
        assert manager.get_memory_stats("s1")["message_count"] == 2


def test_separate_runs_with_the_same_question_are_separate_turns(manager):
    chat = ContextualChat(manager, FakeListChatModel(responses=["yes", "still yes"]))
    chat.invoke("Sure?", config=CONFIG)
    chat.invoke("Sure?", config=CONFIG)
    # Two calls under one parent run (not a retry) are two turns too.
    twice = RunnableLambda(lambda q, config: [chat.invoke(q, config) for _ in range(2)])
    twice.invoke("Sure?", config=CONFIG)
    one_cycle = [
        ("user", "Sure?"),
        ("assistant", "yes"),
        ("user", "Sure?"),
        ("assistant", "still yes"),
    ]
    assert turns(manager) == one_cycle * 2


# --------------------------------------------------------------------------- cut streams


def test_a_stream_the_consumer_stops_records_nothing(manager):
    chat = ContextualChat(manager, flaky_model("one two three", "four five"))
    for chunk in chat.stream("First?", config=CONFIG):
        assert chunk.content == "one"
        break
    gc.collect()
    assert manager.get_history("s1") == []
    stream = chat.stream("Second?", config=CONFIG)
    next(stream)
    stream.close()
    assert manager.get_history("s1") == []


def test_a_stream_read_to_the_end_records_one_turn_with_the_chunks_id(manager):
    chat = ContextualChat(manager, flaky_model("one two three"))
    chunks = list(chat.stream("q", config=CONFIG))
    stored = manager.get_history("s1")
    assert [(r["role"], r["content"]) for r in stored] == [
        ("user", "q"),
        ("assistant", "one two three"),
    ]
    assert {c.id for c in chunks} == {stored[1]["id"]}
    assert stored[0]["id"] != stored[1]["id"]


async def test_an_async_stream_the_consumer_stops_records_nothing(manager):
    chat = ContextualChat(manager, flaky_model("one two three", "four five", "six"))
    async for chunk in chat.astream("First?", config=CONFIG):
        assert chunk.content == "one"
        break
    gc.collect()
    await asyncio.sleep(0.05)  # let the event loop finalize the abandoned generator
    assert manager.get_history("s1") == []
    stream = chat.astream("Second?", config=CONFIG)
    await anext(stream)
    await stream.aclose()
    assert manager.get_history("s1") == []
    assert "".join([c.content async for c in chat.astream("Third?", config=CONFIG)]) == "six"
    assert turns(manager) == [("user", "Third?"), ("assistant", "six")]


@pytest.mark.parametrize("mode", ["stream", "astream"])
async def test_a_model_that_fails_mid_stream_records_nothing(manager, mode):
    model = FakeListChatModel(responses=["abcdef"], error_on_chunk_number=3)
    chat = ContextualChat(manager, model)
    received: list[str] = []

    async def consume() -> None:
        chunks = chat.stream("q", config=CONFIG) if mode == "stream" else None
        if chunks is not None:
            for chunk in chunks:
                received.append(chunk.content)  # noqa: PERF401 - keep what came before the error
        else:
            async for chunk in chat.astream("q", config=CONFIG):
                received.append(chunk.content)  # noqa: PERF401

    with pytest.raises(FakeListChatModelError):
        await consume()
    assert received == ["a", "b", "c"]
    assert manager.get_history("s1") == []


# --------------------------------------------------------------------------- budget


@MODES
async def test_an_over_budget_question_is_rejected_before_anything_is_written(manager, mode):
    model = flaky_model("never")
    chat = ContextualChat(manager, model, max_tokens=60, reserve_tokens=0)
    with pytest.raises(BudgetExceededError):
        await run(chat, mode, "word " * 200, {"configurable": {"session_id": "new"}})
    assert not manager.session_exists("new")
    manager.add_user_message("s1", "hi")
    before = manager.get_context("s1")
    with pytest.raises(BudgetExceededError):
        await run(chat, mode, "word " * 200)
    assert manager.get_context("s1") == before
    assert model.calls == 0


# --------------------------------------------------------------------------- ids


async def test_the_turn_ids(manager):
    chat = ContextualChat(manager, flaky_model("a", "b", "c"))
    reply = chat.invoke(HumanMessage("with my id", id="q-1"), config=CONFIG)
    areply = await chat.ainvoke("without an id", config=CONFIG)
    stored = manager.get_history("s1")
    assert [r["id"] for r in stored] == ["q-1", reply.id, stored[2]["id"], areply.id]
    assert len({r["id"] for r in stored}) == 4
    # The same question message again is the same turn: nothing new is stored.
    chat.invoke(HumanMessage("with my id", id="q-1"), config=CONFIG)
    assert len(manager.get_history("s1")) == 4


def test_the_reply_is_stored_losslessly_in_the_turn_write(manager):
    reply = AIMessage(
        [{"type": "text", "text": "Booked."}],
        name="planner",
        tool_calls=[{"name": "book", "args": {"city": "Paris"}, "id": "c1"}],
        usage_metadata={"input_tokens": 30, "output_tokens": 2, "total_tokens": 32},
        response_metadata={"model_name": "gpt-x", "finish_reason": "stop"},
        additional_kwargs={"refusal": None},
    )
    chat = ContextualChat(manager, GenericFakeChatModel(messages=iter([reply])))
    returned = chat.invoke("Book Paris", config=CONFIG)
    question, answer = manager.get_messages("s1")
    assert (question.type, question.content) == ("human", "Book Paris")
    # Everything the model produced is stored; the caller's copy adds ctx_memory's own key
    # (test_chat_metadata.py), which the stored record does not carry.
    returned_fields = returned.model_dump(exclude={"id"})
    ours = returned_fields["response_metadata"].pop("ctx_memory")
    assert set(ours) == {"session_id", "sources_used", "cited", "report"}
    assert returned_fields == reply.model_dump(exclude={"id"})
    assert answer.model_dump() == {
        **returned.model_dump(),
        "response_metadata": reply.response_metadata,
    }
    record = manager.get_history("s1")[1]
    assert record["metadata"]["model"] == "gpt-x"
    assert record["metadata"]["tools_used"] == ["book"]
    assert manager.get_history("s1")[0]["metadata"] == {}


class LostReply(ContextManager):
    """Its next ``lose`` appends commit, then report an error (a dropped connection)."""

    lose = 0

    def add_messages(self, session_id: Any, messages: Any, **kwargs: Any) -> Any:
        out = super().add_messages(session_id, messages, **kwargs)
        if self.lose:
            self.lose -= 1
            msg = "reply lost after commit"
            raise ConnectionError(msg)
        return out

    async def aadd_messages(self, session_id: Any, messages: Any, **kwargs: Any) -> Any:
        out = await super().aadd_messages(session_id, messages, **kwargs)
        if self.lose:
            self.lose -= 1
            msg = "reply lost after commit"
            raise ConnectionError(msg)
        return out


class CountingModel(GenericFakeChatModel):
    calls: int = 0

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return super()._generate(*args, **kwargs)


@pytest.mark.parametrize("mode", ["invoke", "ainvoke"])
async def test_a_retried_turn_returns_the_reply_it_stored(mode: str) -> None:
    """A retry after a landed write gives the stored answer; the model is not asked twice."""
    manager = LostReply()
    model = CountingModel(messages=iter([AIMessage("Answer A"), AIMessage("Answer B")]))
    chat = ContextualChat(manager, model).with_retry(
        stop_after_attempt=2,
        wait_exponential_jitter=False,
        retry_if_exception_type=(ConnectionError,),
    )
    config = {"configurable": {"session_id": "s1"}}
    manager.lose = 1
    reply = chat.invoke("q1", config) if mode == "invoke" else await chat.ainvoke("q1", config)
    stored = manager.get_messages("s1")
    assert [m.text for m in stored] == ["q1", "Answer A"]
    assert (reply.id, reply.text) == (stored[-1].id, "Answer A")
    assert model.calls == 1
    assert reply.response_metadata["ctx_memory"]["session_id"] == "s1"


@pytest.mark.parametrize("mode", ["invoke", "ainvoke", "stream", "astream"])
async def test_a_question_sent_again_with_its_id_gets_its_first_answer(mode: str) -> None:
    manager = ContextManager()
    model = CountingModel(messages=iter([AIMessage("Answer C"), AIMessage("Answer D")]))
    chat = ContextualChat(manager, model)
    config = {"configurable": {"session_id": "s2"}}
    question = HumanMessage("q2", id="client-msg-7")
    first = chat.invoke(question, config)
    if mode == "invoke":
        again = chat.invoke(question, config)
    elif mode == "ainvoke":
        again = await chat.ainvoke(question, config)
    elif mode == "stream":
        (again,) = list(chat.stream(question, config))
    else:
        (again,) = [chunk async for chunk in chat.astream(question, config)]
    assert (again.id, again.text) == (first.id, "Answer C")
    assert model.calls == 1
    assert [m.text for m in manager.get_messages("s2")] == ["q2", "Answer C"]


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_a_question_resent_after_the_look_back_gets_the_stored_reply(manager, mode):
    """The same ``HumanMessage(id=...)`` again once its turn is over 64 messages old: the
    model is asked (the look-back does not reach it), its new answer is not stored (the
    ids are held), and the caller gets the stored reply, as the session holds it."""
    from langchain_core.language_models import GenericFakeChatModel
    from langchain_core.messages import AIMessage, HumanMessage

    from ctx_memory import ContextualChat

    model = GenericFakeChatModel(messages=iter([AIMessage("Answer A"), AIMessage("Answer B")]))
    chat = ContextualChat(manager, model, max_tokens=4000)
    config = {"configurable": {"session_id": "s1"}}
    question = HumanMessage("What is the door code?", id="q-1")
    first = chat.invoke(question, config=config)
    for i in range(300):  # more than a page of later turns
        manager.add_user_message("s1", f"later question {i}")
        manager.add_assistant_message("s1", f"later answer {i}")
    again = (
        chat.invoke(question, config) if mode == "sync" else await chat.ainvoke(question, config)
    )
    assert (again.id, again.content) == (first.id, "Answer A")
    stored = [r for r in manager.get_history("s1") if r["id"] == first.id]
    assert [r["content"] for r in stored] == ["Answer A"]
