"""Helpers for the LangChain adapter tests: fake tool-calling models, seeded sessions."""

from __future__ import annotations

from typing import Any

import pytest
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage
from langchain_core.tools import tool


class ToolCallingFakeModel(GenericFakeChatModel):
    """LangChain's GenericFakeChatModel that accepts ``bind_tools`` and records its inputs."""

    seen: list[list[BaseMessage]] = []  # noqa: RUF012 - replaced per instance below

    def __init__(self, **data: Any) -> None:
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


@pytest.fixture
def seeded(manager: Any) -> Any:
    """A session ``s1`` with a system prompt, metadata, three sources and two turns."""
    manager.set_system_prompt("s1", "You are a travel assistant.")
    manager.update_metadata(
        "s1",
        mode="research",
        current_url="https://airline.example/paris",
        user_timezone="Europe/Paris",
        user_time="2026-11-21T08:00:00",
    )
    manager.add_fetched_items(
        "s1",
        [
            {
                "source_type": "web_search",
                "content": "Rome hotels are cheapest in February.",
                "url": "https://rome.example",
                "extracted_data": {"title": "Rome hotels"},
            },
            {
                "source_type": "web_search",
                "content": "Book flights to Paris 6-8 weeks ahead for the cheapest fares. " * 40,
                "url": "https://paris.example/flights",
                "extracted_data": {"title": "Paris flights", "site_name": "Paris Example"},
            },
            {
                "source_type": "js_scraping",
                "content": "Non-stop flights JFK to CDG from $420.",
                "url": "https://airline.example/paris",
                "extracted_data": {"title": "Flights to Paris"},
            },
        ],
    )
    manager.add_user_message("s1", "Hello")
    manager.add_assistant_message("s1", "Hi! Where to?")
    manager.add_user_message("s1", "Paris, probably.")
    manager.add_assistant_message("s1", "Great choice.")
    return manager
