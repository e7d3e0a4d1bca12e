"""Fixtures for the LangChain adapter tests (fake models live in adapter_fakes.py)."""

from __future__ import annotations

from typing import Any

import pytest


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
