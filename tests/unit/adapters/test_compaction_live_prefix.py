"""Every integration hands a chat summariser the request it sent before (a cache hit).

ContextualChat and a real ``create_agent`` agent with ContextMiddleware, at the default
budget and the default policy with ``chat_summarizer``, compacting before the prompt or in
the background, sync and async: every summarisation request the summariser model gets is
the live request the chat model got before it, followed by one instruction (no covered
message missing from it), so a provider's prompt cache serves at least 90 % of it. The
window trigger summarises while the covered messages are still in the window.
"""

from __future__ import annotations

import random

import pytest
import tiktoken
from adapter_fakes import fake_model
from langchain.agents import create_agent
from langchain_core.messages import BaseMessage, HumanMessage

from ctx_memory import ContextManager, ContextualChat
from ctx_memory.compaction import CompactionPolicy, chat_summarizer, get_compactions
from ctx_memory.eval.compaction import StandInSummaryModel as SummaryModel
from ctx_memory.eval.metrics import common_prefix_length, request_tokens
from ctx_memory.middleware import ContextMiddleware

TURNS = 90
ENCODING = tiktoken.get_encoding("o200k_base")
WORDS = [
    "flight",
    "hotel",
    "Paris",
    "booking",
    "code",
    "seat",
    "window",
    "aisle",
    "refund",
    "fare",
    "train",
    "Lyon",
]


def _text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."


def _check(live_requests: list[list[BaseMessage]], summaries: SummaryModel, asked: list[int]):
    """Each summarisation request repeats the live request before it, then one instruction."""
    assert summaries.requests, "the window trigger never fired"
    for request, before in zip(summaries.requests, asked, strict=True):
        live = live_requests[before - 1]
        assert request[: len(live)] == live
        (ask,) = request[len(live) :]
        assert isinstance(ask, HumanMessage)
        assert ask.text.startswith("Summarise messages ")
        assert "not shown above" not in ask.text  # every covered message was in the request
        shared = common_prefix_length(
            request_tokens(live, ENCODING), request_tokens(request, ENCODING)
        )
        assert shared / len(request_tokens(request, ENCODING)) >= 0.9


@pytest.mark.parametrize("layout", ["classic", "stable"])
@pytest.mark.parametrize("mode", ["before", "background"])
@pytest.mark.parametrize("calls", ["sync", "async"])
async def test_contextual_chat_summarises_what_it_sent(layout: str, mode: str, calls: str) -> None:
    rng = random.Random(7)
    manager = ContextManager()
    summaries = SummaryModel(requests=[])
    model = fake_model(*[_text(rng, rng.randint(20, 90)) for _ in range(TURNS)])
    policy = CompactionPolicy(summarizer=chat_summarizer(summaries))
    chat = ContextualChat(manager, model, layout=layout, compaction=policy, compaction_mode=mode)
    config = {"configurable": {"session_id": "s"}}
    asked: list[int] = []  # live requests sent before each summarisation request
    for _ in range(TURNS):
        seen = len(summaries.requests)
        question = _text(rng, rng.randint(10, 60))
        if calls == "sync":
            chat.invoke(question, config=config)
            chat.flush_compactions(timeout=30)
        else:
            await chat.ainvoke(question, config=config)
            await chat.aflush_compactions(timeout=30)
        # Before the prompt: the model has not been called yet for this turn.
        sent = len(model.seen) - (1 if mode == "before" else 0)
        asked += [sent] * (len(summaries.requests) - seen)
    _check(model.seen, summaries, asked)
    assert len(get_compactions(manager, "s")) >= 1
    assert len(manager.get_history("s")) == 2 * TURNS  # nothing deleted


@pytest.mark.parametrize("calls", ["sync", "async"])
async def test_an_agent_summarises_what_it_sent(calls: str) -> None:
    rng = random.Random(11)
    manager = ContextManager()
    summaries = SummaryModel(requests=[])
    model = fake_model(*[_text(rng, rng.randint(20, 90)) for _ in range(TURNS)])
    policy = CompactionPolicy(summarizer=chat_summarizer(summaries))
    agent = create_agent(model, middleware=[ContextMiddleware(manager, compaction=policy)])
    config = {"configurable": {"thread_id": "s"}}
    asked: list[int] = []
    for _ in range(TURNS):
        seen = len(summaries.requests)
        state = {"messages": [HumanMessage(_text(rng, rng.randint(10, 60)))]}
        if calls == "sync":
            agent.invoke(state, config=config)
        else:
            await agent.ainvoke(state, config=config)
        asked += [len(model.seen) - 1] * (len(summaries.requests) - seen)
    _check(model.seen, summaries, asked)
    assert len(manager.get_history("s")) == 2 * TURNS


def test_the_window_trigger() -> None:
    policy = CompactionPolicy(summarize_at=8000, keep_recent=32, block=16)
    meta = {"message_count": 100, "token_count": 5000}  # 50 tokens a message
    assert policy.summary_range(meta, []) is None  # under summarize_at, no window given
    assert policy.summary_range(meta, [], window=6000) is None  # it all fits the window
    assert policy.summary_range(meta, [], window=4000) == (0, 64)  # 32 x 50 <= 3/4 x 4000
    # What the summary would leave (32 messages, 1,600 tokens) takes over three quarters
    # of a 2,000-token window: summarising now would not make room, so it waits.
    assert policy.summary_range(meta, [], window=2000) is None
    # A compaction in use: the trigger counts what the prompt shows.
    entry = {"kind": "summary", "first_index": 0, "last_index": 63, "tokens_covered": 3200,
             "summary_tokens": 200}  # fmt: skip
    assert policy.summary_range(meta, [entry], window=4000) is None  # shows 2,000 tokens
