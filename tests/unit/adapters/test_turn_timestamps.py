"""A question is stored with the time it was asked, its reply with the time it came."""

from __future__ import annotations

import time
from typing import Any

from adapter_fakes import fake_model, get_weather, tool_call
from langchain.agents import create_agent
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage

from ctx_memory import ContextManager, ContextMiddleware, ContextualChat


class SlowModel(GenericFakeChatModel):
    """Takes 20 ms to answer, so the two times cannot coincide."""

    def _generate(self, messages: list[BaseMessage], *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.02)
        return super()._generate(messages, *args, **kwargs)


def test_contextual_chat_stamps_the_question_before_the_reply() -> None:
    manager = ContextManager()
    chat = ContextualChat(manager, SlowModel(messages=iter([AIMessage("Sunny.")])))
    before = time.time()
    chat.invoke("Weather?", config={"configurable": {"session_id": "s"}})
    question, reply = manager.get_history("s")
    assert question["timestamp"] < reply["timestamp"]  # ISO-8601 UTC: text order is time order
    assert reply["metadata"]["response_time_ms"] >= 20
    assert question["timestamp"] >= time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(before - 1))


def test_middleware_stamps_the_run_before_each_reply() -> None:
    manager = ContextManager()
    model = fake_model(tool_call("get_weather", "c1", city="Paris"), "Sunny in Paris.")
    agent = create_agent(model, tools=[get_weather], middleware=[ContextMiddleware(manager)])
    agent.invoke(
        {"messages": [("user", "Weather in Paris?")]}, {"configurable": {"session_id": "s"}}
    )
    history = manager.get_history("s")
    assert [r["role"] for r in history] == ["user", "assistant", "tool", "assistant"]
    stamps = [r["timestamp"] for r in history]
    assert stamps == sorted(stamps)
