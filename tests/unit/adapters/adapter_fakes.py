"""Fake tool-calling chat models and a real tool for the adapter tests."""

from __future__ import annotations

from typing import Any

from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import tool


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
