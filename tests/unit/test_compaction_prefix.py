"""A chat summariser's request reuses the live request's prefix (``prefix_messages``)."""

from __future__ import annotations

from typing import Any

import pytest
import tiktoken
from langchain_core.language_models import BaseChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, ToolMessage
from langchain_core.outputs import ChatGeneration, ChatResult

from ctx_memory import ContextManager, ContextPromptAssembler
from ctx_memory._compaction_summarize import prefixed_request
from ctx_memory.compaction import (
    DEFAULT_SUMMARY_PROMPT,
    CompactionPolicy,
    acompact,
    chat_summarizer,
    compact,
)
from ctx_memory.eval.metrics import common_prefix_length, request_tokens


class Recording(BaseChatModel):
    """Records every request; answers with a fixed summary."""

    requests: list[list[BaseMessage]] = []  # noqa: RUF012 - a fresh list per instance below

    @property
    def _llm_type(self) -> str:
        return "recording"

    def _generate(
        self, messages: list[BaseMessage], stop: Any = None, run_manager: Any = None, **_: Any
    ) -> ChatResult:
        self.requests.append(list(messages))
        return ChatResult(generations=[ChatGeneration(message=AIMessage("Orders shipped."))])


def _seed(manager: ContextManager, turns: int = 12) -> None:
    manager.set_system_prompt("s", "You are terse.")
    for i in range(turns):
        manager.add_messages(
            "s",
            [
                HumanMessage(f"Order {1000 + i}?"),
                AIMessage("", tool_calls=[{"name": "lookup", "args": {}, "id": f"call-{i}"}]),
                ToolMessage(f"order {1000 + i} shipped " + "x " * 300, tool_call_id=f"call-{i}"),
                AIMessage(f"Order {1000 + i} shipped."),
            ],
        )


def _policy(model: Recording) -> CompactionPolicy:
    return CompactionPolicy(
        clear_tool_outputs_at=100, summarize_at=2000, keep_recent=8, block=4, min_messages=4,
        summarizer=chat_summarizer(model),
    )  # fmt: skip


def _live(manager: ContextManager, policy: CompactionPolicy) -> list[BaseMessage]:
    """The request the app sent last (the policy's trigger off, as it was then)."""
    quiet = CompactionPolicy(clear_tool_outputs_at=policy.clear_tool_outputs_at, summarize_at=None)
    assembler = ContextPromptAssembler(manager, max_tokens=20000, compaction=quiet)
    return list(assembler.assemble("s", "Order 1012?").messages)


@pytest.mark.parametrize("mode", ["sync", "async"])
async def test_the_request_is_the_live_one_then_one_instruction(
    manager: ContextManager, mode: str
) -> None:
    _seed(manager)
    model = Recording(requests=[])
    policy = _policy(model)
    live = _live(manager, policy)
    if mode == "sync":
        outcome = compact(manager, "s", policy, prefix_messages=live)
    else:
        outcome = await acompact(manager, "s", policy, prefix_messages=live)
    assert outcome.entry is not None
    assert outcome.entry["summary"] == "Orders shipped."
    (request,) = model.requests
    assert request[: len(live)] == live
    assert len(request) == len(live) + 1
    ask = request[-1]
    assert isinstance(ask, HumanMessage)
    covered = outcome.entry["last_index"] + 1  # from 0; the system message is number 1
    assert ask.text.startswith(f"Summarise messages 2 to {covered + 1} of this conversation")
    assert "not shown above" not in ask.text
    encoding = tiktoken.get_encoding("o200k_base")
    shared = common_prefix_length(request_tokens(live, encoding), request_tokens(request, encoding))
    assert shared / len(request_tokens(request, encoding)) >= 0.9


def test_covered_messages_the_live_request_dropped_follow_as_a_transcript() -> None:
    live = [HumanMessage("Order 1003?", id="m3"), AIMessage("Shipped.", id="m4")]
    covered = [HumanMessage("Order 1002?", id="m2"), *live]
    request = prefixed_request(live, covered)
    assert request[:2] == live
    assert request[2].text.startswith("Summarise messages 1 to 2 ")
    assert request[2].text.endswith("Messages of that part not shown above:\nuser: Order 1002?")


def test_without_a_prefix_the_transcript_prompt_is_used(manager: ContextManager) -> None:
    _seed(manager)
    model = Recording(requests=[])
    assert compact(manager, "s", _policy(model)).entry is not None
    (request,) = model.requests
    assert [m.type for m in request] == ["system", "human"]
    assert request[0].text == DEFAULT_SUMMARY_PROMPT
    assert "Order 1000?" in request[1].text


def test_other_summarisers_ignore_the_prefix(manager: ContextManager) -> None:
    _seed(manager)
    policy = CompactionPolicy(summarize_at=2000, keep_recent=8, block=4, min_messages=4)
    outcome = compact(manager, "s", policy, prefix_messages=[HumanMessage("x", id="x")])
    assert outcome.entry is not None
    assert "1000" in outcome.entry["summary"]
