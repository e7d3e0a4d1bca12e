"""ContextMiddleware beside LangChain's SummarizationMiddleware: the summary is a compaction."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest
from adapter_fakes import fake_model, tool_call
from langchain.agents import create_agent
from langchain.agents.middleware import ModelRequest, ModelResponse, SummarizationMiddleware
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.tools import tool
from langgraph.checkpoint.memory import InMemorySaver

from ctx_memory import ContextManager, ContextMiddleware
from ctx_memory._compaction_langchain import (
    PRODUCER_NAME,
    SUMMARY_PREFIX,
    is_langchain_summary,
    summary_span,
)
from ctx_memory.assembly.compacted import COMPACTIONS_KEY
from ctx_memory.compaction import add_compaction, get_compactions, remove_compaction

SUMMARY = "Orders 1000 and 1001 were looked up; both shipped."


@tool
def lookup(order: int) -> str:
    """Look up an order."""
    return f"order {order} status shipped, parcel P{order}-X " + "detail " * 40


class NamedFakeModel(GenericFakeChatModel):
    """LangChain's fake chat model with a model name, as real chat models have."""

    model_name: str = "fake-summariser"


def _summariser() -> NamedFakeModel:
    return NamedFakeModel(messages=iter([AIMessage(SUMMARY), AIMessage(SUMMARY + " Then 1002.")]))


def _agent(manager: ContextManager, model: Any, **summarization: Any) -> Any:
    summarizer = SummarizationMiddleware(
        model=_summariser(), trigger=("messages", 6), keep=("messages", 2), **summarization
    )
    context = ContextMiddleware(
        manager, max_tokens=6000, reserve_tokens=500, summarization=summarizer
    )
    return create_agent(model, tools=[lookup], middleware=[summarizer, context])


def _texts(messages: list[BaseMessage]) -> list[str]:
    return [m.text for m in messages]


def _check_prompt(sent: list[BaseMessage]) -> None:
    texts = _texts(sent)
    assert sum(SUMMARY in t for t in texts) == 1  # the summary once
    assert not any(t.startswith(SUMMARY_PREFIX) for t in texts)  # ours, not LangChain's copy
    assert "Look up orders 1000 to 1003." not in texts  # covered: not sent again
    bodies = [(m.type, m.text, getattr(m, "tool_call_id", None)) for m in sent if m.text]
    assert len(bodies) == len(set(bodies))  # no message twice
    calls: set[str] = set()
    for m in sent:
        if isinstance(m, AIMessage):
            calls |= {c["id"] for c in m.tool_calls}
        if isinstance(m, ToolMessage):
            assert m.tool_call_id in calls  # no orphan


def _seed(manager: ContextManager) -> None:
    manager.add_user_message("s1", "My name is Ada.")
    manager.add_assistant_message("s1", "Hello Ada.")


def _tool_loop() -> Any:
    return fake_model(
        *(tool_call("lookup", f"call-{i}", order=1000 + i) for i in range(4)), "All shipped."
    )


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_summary_is_a_compaction_not_a_user_turn(manager: ContextManager, mode: str) -> None:
    _seed(manager)
    model = _tool_loop()
    agent = _agent(manager, model)
    question = {"messages": [("user", "Look up orders 1000 to 1003.")]}
    config = {"configurable": {"session_id": "s1"}}
    if mode == "sync":
        agent.invoke(question, config)
    else:
        await agent.ainvoke(question, config)

    history = manager.get_history("s1")
    assert not any(r["content"].startswith(SUMMARY_PREFIX) for r in history)
    assert not any(SUMMARY in str(r["content"]) for r in history)
    assert [r["role"] for r in history].count("user") == 2  # Ada and the question only
    assert [r["role"] for r in history].count("tool") == 4  # every tool result kept
    # The summary replaced the question and the first two calls and results.
    (entry,) = get_compactions(manager, "s1")
    assert entry["summary"] == SUMMARY
    assert entry["producer"]["name"] == PRODUCER_NAME
    assert entry["producer"]["model"] == "fake-summariser"
    assert entry["producer"]["prompt_hash"]
    assert (entry["first_index"], entry["last_index"]) == (2, 6)
    assert entry["first_id"] == history[2]["id"]
    assert history[2]["content"] == "Look up orders 1000 to 1003."
    assert history[6]["tool_call_id"] == "call-1"
    assert entry["summary_tokens"] > 0
    assert entry["tokens_covered"] == sum(r["token_count"] for r in history[2:7])

    # Every request from the summary on holds it once, nothing twice, no orphan.
    summarised = [sent for sent in model.seen if any(SUMMARY in t for t in _texts(sent))]
    assert len(summarised) == 2  # calls 4 and 5
    for sent in summarised:
        _check_prompt(sent)
        assert "Hello Ada." in _texts(sent)  # earlier history still comes from the session
    assert any("call-2" in str(getattr(m, "tool_call_id", "")) for m in summarised[0])


async def test_checkpointer_resummary_covers_the_earlier_summary(manager: ContextManager) -> None:
    saver = InMemorySaver()
    model = fake_model(
        tool_call("lookup", "call-0", order=1000),
        tool_call("lookup", "call-1", order=1001),
        "Two shipped.",
        tool_call("lookup", "call-2", order=1002),
        tool_call("lookup", "call-3", order=1003),
        "Two more shipped.",
    )
    summarizer = SummarizationMiddleware(
        model=_summariser(), trigger=("messages", 6), keep=("messages", 2)
    )
    context = ContextMiddleware(manager, max_tokens=6000, reserve_tokens=500)
    agent = create_agent(
        model, tools=[lookup], middleware=[summarizer, context], checkpointer=saver
    )
    config = {"configurable": {"thread_id": "s1"}}
    agent.invoke({"messages": [("user", "Orders 1000 and 1001?")]}, config)
    await agent.ainvoke({"messages": [("user", "Orders 1002 and 1003?")]}, config)

    history = manager.get_history("s1")
    assert not any(SUMMARY in str(r["content"]) for r in history)
    assert len(history) == 12  # 2 questions, 6 AI messages, 4 tool results
    # The re-summary covers the earlier summary's range and took its text in: it replaced
    # it in the same write (a tombstone stays), so stored state does not pile up.
    (second,) = get_compactions(manager, "s1")
    assert second["first_index"] == 0
    assert second["summary"] == SUMMARY + " Then 1002."
    entries = manager.get_header("s1")["shared"][COMPACTIONS_KEY]
    assert sorted(entries.values(), key=lambda e: e is not None) == [None, second]
    assert second["producer"] == {"name": PRODUCER_NAME, "model": "", "prompt_hash": ""}
    last_sent = model.seen[-1]
    _check_prompt_resummary(last_sent)


def _check_prompt_resummary(sent: list[BaseMessage]) -> None:
    texts = _texts(sent)
    assert sum("Then 1002." in t for t in texts) == 1
    assert sum(SUMMARY in t for t in texts) == 1  # the older summary is not sent as well
    assert "Orders 1000 and 1001?" not in texts
    bodies = [(m.type, m.text) for m in sent if m.text]
    assert len(bodies) == len(set(bodies))


def test_removed_compaction_is_not_recorded_again(manager: ContextManager) -> None:
    _seed(manager)
    model = _tool_loop()
    agent = _agent(manager, model)
    agent.invoke(
        {"messages": [("user", "Look up orders 1000 to 1003.")]},
        {"configurable": {"session_id": "s1"}},
    )
    (entry,) = get_compactions(manager, "s1")
    assert remove_compaction(manager, "s1", entry["id"])
    # The same summary seen again (a re-run of the call) stays removed.
    summary = HumanMessage(
        f"{SUMMARY_PREFIX}\n\n{SUMMARY}",
        id=entry["id"].removeprefix("lc-summary-"),
        additional_kwargs={"lc_source": "summarization"},
    )
    middleware = ContextMiddleware(manager, max_tokens=6000, reserve_tokens=500)
    request = ModelRequest(
        model=fake_model("unused"),
        messages=[summary, HumanMessage("next?", id="h-next")],
        system_message=None,
        state={"messages": [summary], "ctx_memory_state_start": history_id(manager, 2)},
        runtime=SimpleNamespace(context={"session_id": "s1"}),
    )
    seen: list[list[BaseMessage]] = []

    def handler(req: ModelRequest[Any]) -> ModelResponse[Any]:
        seen.append(list(req.messages))
        return ModelResponse(result=[AIMessage("ok", id="a-next")])

    middleware.wrap_model_call(request, handler)
    assert get_compactions(manager, "s1") == []
    assert not any(SUMMARY in t for t in _texts(seen[0]))  # the session assembles as before
    assert "Look up orders 1000 to 1003." in _texts(seen[0])


def history_id(manager: ContextManager, position: int) -> str:
    return str(manager.get_history("s1")[position]["id"])


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_unknown_range_sends_the_summary_and_stores_nothing_of_it(
    manager: ContextManager, mode: str
) -> None:
    summary = HumanMessage(
        f"{SUMMARY_PREFIX}\n\nEarlier: user is Ada.",
        id="sum-1",
        additional_kwargs={"lc_source": "summarization"},
    )
    question = HumanMessage("What is my name?", id="h1")
    middleware = ContextMiddleware(manager, max_tokens=6000, reserve_tokens=500)
    request = ModelRequest(
        model=fake_model("unused"),
        messages=[summary, question],
        system_message=None,
        state={"messages": [summary, question]},
        runtime=SimpleNamespace(context={"session_id": "s1"}),
    )
    seen: list[list[BaseMessage]] = []

    def handler(req: ModelRequest[Any]) -> ModelResponse[Any]:
        seen.append(list(req.messages))
        return ModelResponse(result=[AIMessage("Ada.", id="a1")])

    async def ahandler(req: ModelRequest[Any]) -> ModelResponse[Any]:
        return handler(req)

    if mode == "sync":
        middleware.wrap_model_call(request, handler)
    else:
        await middleware.awrap_model_call(request, ahandler)
    assert _texts(seen[0]) == [summary.text, "What is my name?"]
    assert [r["content"] for r in manager.get_history("s1")] == ["What is my name?", "Ada."]
    assert get_compactions(manager, "s1") == []


def test_summary_span_and_recognition() -> None:
    records = [{"id": f"m{i}"} for i in range(6)]
    kept = [AIMessage("", id="m4"), ToolMessage("x", tool_call_id="c", id="m5")]
    assert summary_span(records, kept, "m1", []) == (1, 3)
    assert summary_span(records, [HumanMessage("new", id="n")], "m1", []) == (1, 5)
    earlier = [{"id": "lc-summary-s0", "first_index": 0}]
    assert summary_span(records, kept, "s0", earlier) == (0, 3)
    assert summary_span(records, kept, "unknown", earlier) is None
    assert summary_span(records, kept, None, []) is None
    assert not is_langchain_summary(HumanMessage(f"{SUMMARY_PREFIX}\n\nx"))  # a user may type it
    assert is_langchain_summary(HumanMessage("x", additional_kwargs={"lc_source": "summarization"}))
    assert not is_langchain_summary(HumanMessage("Here is my summary"))
    assert not is_langchain_summary(AIMessage(f"{SUMMARY_PREFIX} x"))


def test_a_user_message_opening_like_a_summary_is_a_user_turn(manager: ContextManager) -> None:
    """Only LangChain's tag makes a summary: the words alone are the user's."""
    model = fake_model("Got it.", "You pasted your notes.")
    agent = create_agent(model, tools=[], middleware=[ContextMiddleware(manager)])
    config = {"configurable": {"session_id": "s1"}}
    pasted = f"{SUMMARY_PREFIX} my notes"
    agent.invoke({"messages": [("user", pasted)]}, config)
    agent.invoke({"messages": [("user", "What did I paste?")]}, config)
    assert [r["content"] for r in manager.get_history("s1")] == [
        pasted,
        "Got it.",
        "What did I paste?",
        "You pasted your notes.",
    ]
    assert pasted in _texts(model.seen[1])
    assert get_compactions(manager, "s1") == []


def test_a_summary_after_a_removed_one_is_not_sent_beside_the_history(
    manager: ContextManager,
) -> None:
    """With a checkpointer, LangChain summarises on from its earlier summary; once that
    compaction is removed, the session assembles whole and the new summary is not sent."""
    model = fake_model(*(f"answer {i}" for i in range(8)))
    summarizer = SummarizationMiddleware(
        model=NamedFakeModel(messages=iter([AIMessage(f"LCSUM-{i}") for i in range(8)])),
        trigger=("messages", 6),
        keep=("messages", 2),
    )
    context = ContextMiddleware(manager, summarization=summarizer)
    agent = create_agent(
        model, tools=[], middleware=[summarizer, context], checkpointer=InMemorySaver()
    )
    config = {"configurable": {"session_id": "s1", "thread_id": "t1"}}
    for i in range(5):
        agent.invoke({"messages": [("user", f"q{i}")]}, config)
    (entry,) = get_compactions(manager, "s1")
    assert remove_compaction(manager, "s1", entry["id"])
    agent.invoke({"messages": [("user", "q9")]}, config)
    sent = _texts(model.seen[-1])
    assert not any("LCSUM" in t or t.startswith(SUMMARY_PREFIX) for t in sent)
    assert sent == [*(t for i in range(5) for t in (f"q{i}", f"answer {i}")), "q9"]
    assert len(sent) == len(set(sent))  # every message once


def test_a_summary_after_a_removed_one_never_takes_another_threads_compaction(
    manager: ContextManager,
) -> None:
    """The run began from a summary whose compaction the user removed; another thread of
    the session has a live LangChain compaction of its own. The new summary follows the
    removed one (not stored, not sent): it does not take the other's range and text."""
    for i in range(15):
        manager.add_user_message("s1", f"question {i} (fact F{i})")
        manager.add_assistant_message("s1", f"answer {i}")
    records = manager.get_history("s1")
    lc = {"name": PRODUCER_NAME, "model": "", "prompt_hash": ""}
    add_compaction(manager, "s1", 0, 9, "Thread one: Ada ordered 1000.",
                   compaction_id="lc-summary-A", producer=lc)  # fmt: skip
    add_compaction(manager, "s1", 20, 25, "Thread two: orders 1001-1003.",
                   compaction_id="lc-summary-S0", producer=lc)  # fmt: skip
    assert remove_compaction(manager, "s1", "lc-summary-S0")
    summary = HumanMessage(
        f"{SUMMARY_PREFIX}\n\nThread two: orders 1001-1005.",
        id="S1",
        additional_kwargs={"lc_source": "summarization"},
    )
    kept = [HumanMessage(records[28]["content"], id=records[28]["id"]),
            AIMessage(records[29]["content"], id=records[29]["id"])]  # fmt: skip
    messages = [summary, *kept, HumanMessage("next?", id="h-next")]
    request = ModelRequest(
        model=GenericFakeChatModel(messages=iter([])),
        messages=messages,
        system_message=None,
        state={"messages": messages, "ctx_memory_state_start": "S0"},
        runtime=SimpleNamespace(context={"session_id": "s1"}),
    )
    seen: list[list[str]] = []

    def handler(sent: ModelRequest) -> ModelResponse:
        seen.append([m.text for m in sent.messages])
        return ModelResponse(result=[AIMessage("ok", id="a-next")])

    ContextMiddleware(manager, max_tokens=6000, reserve_tokens=500).wrap_model_call(
        request, handler
    )
    assert [c["id"] for c in get_compactions(manager, "s1")] == ["lc-summary-A"]
    sent = " | ".join(seen[0])
    assert "Thread one" in sent
    assert all(f"F{i})" in sent for i in range(5, 10))  # between A and S0: still sent
    assert "Thread two: orders 1001-1005" not in sent


def test_a_summary_the_session_cannot_store_is_sent_and_the_turn_goes_on(
    manager: ContextManager,
) -> None:
    """A LangChain summary too large for the session's shared state (or not storable) is
    sent as LangChain made it; the turn is not failed and nothing of it is stored."""
    _seed(manager)
    manager.set_context("s1", "big", "x" * 1_048_200)  # legal, near the limit
    model = _tool_loop()
    agent = _agent(manager, model)
    agent.invoke(
        {"messages": [("user", "Look up orders 1000 to 1003.")]},
        {"configurable": {"session_id": "s1"}},
    )
    assert get_compactions(manager, "s1") == []
    assert manager.get_history("s1")[-1]["content"] == "All shipped."
    summarised = [sent for sent in model.seen if any(SUMMARY in t for t in _texts(sent))]
    assert summarised  # LangChain's own summary message went to the model
    assert all(sum(SUMMARY in t for t in _texts(sent)) == 1 for sent in summarised)


def test_summaries_made_again_within_one_run_are_all_stored_never_sent_raw(
    manager: ContextManager,
) -> None:
    """LangChain summarising twice or more in one run: each re-summary replaces the
    compaction before it (the run's start is then that one's), so none is sent as
    LangChain's user message beside the history it covers, in this run or the next."""
    summaries = [AIMessage(f"Summary number {i}: orders looked up.") for i in range(40)]
    summarizer = SummarizationMiddleware(
        model=NamedFakeModel(messages=iter(summaries)),
        trigger=("messages", 5),
        keep=("messages", 2),
    )
    context = ContextMiddleware(
        manager, max_tokens=6000, reserve_tokens=500, summarization=summarizer
    )
    model = fake_model(
        tool_call("lookup", "call-0", order=1000),
        "One shipped.",
        *(tool_call("lookup", f"call-{i}", order=1000 + i) for i in range(1, 7)),
        "Six more shipped.",
        *(tool_call("lookup", f"call-{i}", order=1000 + i) for i in range(7, 10)),
        "Three more shipped.",
        "Nothing else.",
    )
    agent = create_agent(
        model, tools=[lookup], middleware=[summarizer, context], checkpointer=InMemorySaver()
    )
    config = {"configurable": {"thread_id": "s1"}}
    # The third run begins from a summary in the state and summarises three more times.
    for question in ("Order 1000?", "Orders 1001 to 1006?", "Orders 1007 to 1009?", "More?"):
        agent.invoke({"messages": [("user", question)]}, config)

    history = manager.get_history("s1")
    assert not any("Summary number" in str(r["content"]) for r in history)
    (entry,) = get_compactions(manager, "s1")  # each re-summary replaced the one before
    assert entry["first_index"] == 0
    assert entry["summary"].startswith("Summary number")
    summarised = [sent for sent in model.seen if any("Summary number" in t for t in _texts(sent))]
    assert len(summarised) >= 4
    for sent in model.seen:
        texts = _texts(sent)
        assert not any(t.startswith(SUMMARY_PREFIX) for t in texts)  # never LangChain's copy
        assert sum("Summary number" in t for t in texts) <= 1
        bodies = [(m.type, m.text, getattr(m, "tool_call_id", None)) for m in sent if m.text]
        assert len(bodies) == len(set(bodies))  # nothing twice
