"""Fake tool-calling chat models and a real tool for the adapter tests."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import tool

from ctx_memory.assembly.messages import CONTEXT_CLOSE, CONTEXT_OPEN


class ToolCallingFakeModel(GenericFakeChatModel):
    """LangChain's GenericFakeChatModel that accepts ``bind_tools`` and records its inputs."""

    seen: list[list[BaseMessage]] = []  # noqa: RUF012 - replaced per instance below

    def __init__(self, **data: Any) -> None:
        # Whole messages even when streamed: the classic agent streams, and the fake
        # model cannot split a tool call into chunks.
        data.setdefault("disable_streaming", True)
        super().__init__(**data)
        object.__setattr__(self, "seen", [])

    def bind_tools(self, tools: Any, **kwargs: Any) -> ToolCallingFakeModel:
        return self

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        self.seen.append(list(messages))
        return super()._generate(messages, *args, **kwargs)


def fake_model(*replies: AIMessage | str) -> ToolCallingFakeModel:
    messages = [AIMessage(r) if isinstance(r, str) else r for r in replies]
    return ToolCallingFakeModel(messages=iter(messages))


def tool_call(name: str, call_id: str, **args: Any) -> AIMessage:
    return AIMessage("", tool_calls=[{"name": name, "args": args, "id": call_id}])


@tool
def get_weather(city: str) -> str:
    """The weather in a city."""
    return f"Sunny in {city}"


class FlakyChatModel(GenericFakeChatModel):
    """GenericFakeChatModel whose first ``failures`` calls raise ``ConnectionError``.

    ``calls`` counts every call (failed or not), sync, async and streaming alike.
    """

    failures: int = 0
    calls: int = 0

    def _maybe_fail(self) -> None:
        self.calls += 1
        if self.calls <= self.failures:
            msg = f"model unavailable (call {self.calls})"
            raise ConnectionError(msg)

    def _generate(self, *args: Any, **kwargs: Any) -> Any:
        self._maybe_fail()
        return super()._generate(*args, **kwargs)  # streaming goes through here too


def flaky_model(*replies: str, failures: int = 0) -> FlakyChatModel:
    return FlakyChatModel(messages=iter([AIMessage(r) for r in replies]), failures=failures)


def _context_only(message: BaseMessage) -> bool:
    text = message.text
    return text.startswith(CONTEXT_OPEN) and text.endswith(CONTEXT_CLOSE)


def stable_parts(
    messages: list[BaseMessage],
) -> tuple[list[BaseMessage], BaseMessage, BaseMessage | None]:
    """A stable-layout request of one question as (prefix, question, volatile part).

    The prefix is the system message and the history window; the question carries its
    ranked sources and recalled turns; the volatile part (current page, local time) is a
    user message of its own, last, when there is one.
    """
    volatile = messages[-1] if len(messages) > 1 and _context_only(messages[-1]) else None
    rest = messages[:-1] if volatile is not None else messages
    return list(rest[:-1]), rest[-1], volatile


def stable_prefix(messages: list[BaseMessage]) -> list[BaseMessage]:
    """The system message and the history window of a stable-layout request."""
    return stable_parts(messages)[0]


def question_of(messages: list[BaseMessage]) -> BaseMessage:
    """The question's message (with its sources and recalled turns) of a stable request."""
    return stable_parts(messages)[1]
