"""A realistic session (seed 001's flow) shared by the CLI and display tests."""

from __future__ import annotations

from ctx_memory import ContextIntegration, ContextManager


def travel_session(cm: ContextManager, session_id: str = "demo-session") -> None:
    """Seed 001's flow: metadata, page text, a question, search results, two turns."""
    integration = ContextIntegration(cm)
    cm.set_system_prompt(session_id, "You are a concise travel assistant. Cite sources as [n].")
    cm.update_metadata(
        session_id,
        mode="research",
        current_url="https://airline.example/paris",
        user_timezone="America/New_York",
        user_time="2026-11-21T07:00:00",
    )
    integration.add_web_content(
        session_id=session_id,
        text_content="Paris (CDG) from New York (JFK): daily non-stop flights, from $420.",
        current_url="https://airline.example/paris",
        title="Flights to Paris",
    )
    cm.add_user_message(session_id, "How do I book a cheap flight to Paris?")
    integration.add_search_results(
        session_id,
        [
            {
                "title": "Booking flights: a practical guide",
                "url": "https://travel.example/booking-guide",
                "body": "Compare fares across airlines and book 6-8 weeks ahead for economy.",
                "site_name": "Travel Example",
                "published_date": "2026-10-02",
            },
            {
                "title": "Economy vs. flexible fares",
                "url": "https://fares.example/flex",
                "body": "Flexible economy fares cost more but allow free date changes.",
            },
        ],
    )
    cm.add_assistant_message(
        session_id,
        "Book 6-8 weeks ahead and compare fares [1]; non-stops from JFK start at $420 [2].",
        model="scripted-demo-model",
        response_time_ms=850,
        sources_used=["https://travel.example/booking-guide", "https://fares.example/flex"],
        tools_used=["web_search"],
    )
    cm.add_user_message(session_id, "And if my dates might change?")
    cm.add_assistant_message(
        session_id,
        "Choose a flexible economy fare: free date changes and refunds [2].",
        model="scripted-demo-model",
        response_time_ms=640,
    )
