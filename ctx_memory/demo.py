"""The demo behind ``ctx-memory demo``: seed 001's request flow on the configured store.

It needs no API key: the assistant's replies come from a scripted stand-in for an LLM.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from ctx_memory.integration import ContextIntegration
from ctx_memory.schema import ContextMode

if TYPE_CHECKING:
    from collections.abc import Callable

    from ctx_memory.manager import ContextManager

__all__ = ["run_demo"]

SYSTEM_PROMPT = "You are a concise travel assistant. Cite sources as [n]."
SEARCH_RESULTS = [
    {
        "title": "Booking flights: a practical guide",
        "snippet": "Compare fares across airlines and book 6-8 weeks ahead.",
        "url": "https://travel.example/booking-guide",
        "body": "Compare fares across airlines, book 6-8 weeks ahead for economy, "
        "and use flexible dates to find the lowest price.",
        "site_name": "Travel Example",
        "published_date": "2026-10-02",
    },
    {
        "title": "Economy vs. flexible fares",
        "snippet": "Flexible economy fares allow free date changes.",
        "url": "https://fares.example/flex",
        "body": "Flexible economy fares cost more but allow free date changes and refunds.",
    },
]
PAGE_TEXT = "Paris (CDG) from New York (JFK): daily non-stop flights, from $420 round trip."


def run_demo(
    manager: ContextManager,
    *,
    session_id: str = "demo-session",
    echo: Callable[[str], Any] = print,
) -> dict[str, Any]:
    """Run seed 001's flow on ``manager`` and print the document and stats.

    Returns:
        The final session document.
    """
    integration = ContextIntegration(manager)
    manager.delete_context(session_id)

    # 1. Start of the request: metadata.
    manager.set_system_prompt(session_id, SYSTEM_PROMPT)
    manager.update_metadata(
        session_id,
        mode=ContextMode.RESEARCH,
        current_url="https://airline.example/paris",
        user_timezone="America/New_York",
        user_time="2026-11-21T07:00:00",
    )
    # 2. The page the user is on, scraped by the browser extension.
    integration.add_web_content(
        {"session_id": session_id},
        PAGE_TEXT,
        "https://airline.example/paris",
        title="Flights to Paris",
    )
    # 3. The user's question, then a web search for it.
    question = "How do I book a cheap flight to Paris?"
    manager.add_user_message(session_id, question)
    integration.add_search_results(session_id, SEARCH_RESULTS)
    # 4. The model sees: system prompt, then history.
    messages = manager.get_formatted_messages_for_api(session_id)
    echo(f"Messages for the LLM API ({len(messages)}):")
    for message in messages:
        echo(f"  {message['role']:>9}: {str(message['content'])[:70]}")
    # 5. The (scripted) model answers; the reply is recorded with what produced it.
    manager.add_assistant_message(
        session_id,
        "Book 6-8 weeks ahead and compare fares [1]; non-stops from JFK start at $420 [2].",
        model="scripted-demo-model",
        response_time_ms=850,
        sources_used=[r["url"] for r in SEARCH_RESULTS],
        tools_used=["web_search"],
    )
    manager.add_user_message(session_id, "And if my dates might change?")
    manager.add_assistant_message(
        session_id,
        "Choose a flexible economy fare: free date changes and refunds [2].",
        model="scripted-demo-model",
        response_time_ms=640,
        sources_used=["https://fares.example/flex"],
    )

    document = manager.get_context(session_id)
    echo("\nSession document:")
    echo(json.dumps(document, indent=2, ensure_ascii=False))
    echo("\nMemory stats:")
    echo(json.dumps(manager.get_memory_stats(session_id), indent=2))
    return document
