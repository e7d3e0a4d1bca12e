"""Both seed documents' example code, run as written (imports pointed at ctx_memory)."""

from __future__ import annotations

import textwrap
from types import SimpleNamespace

import pytest

from ctx_memory import get_context_manager, reset_context_manager
from ctx_memory.web import reset_context_integration

SEED_000 = """
from ctx_memory import ContextManager

# Example usage for testing purposes
if __name__ == "__main__":
    cm = ContextManager()

    session = "session_001"
    cm.create_session(session)
    cm.set_context(session, "user_query", "How do I book a flight?")
    cm.set_context(session, "agent", "chat_agent")

    print("Initial Context:", cm.get_context(session))

    # Perform a partial update to add new details without overwriting existing data.
    partial_update = {"intent": "booking", "details": {"class": "economy", "flexible": True}}
    cm.update_partial_context(session, partial_update)

    print("After Partial Update:", cm.get_context(session))

    # Demonstrate asynchronous operation if enabled
    if cm.async_enabled:
        import asyncio
        async def async_demo():
            await cm.async_set_context(session, "async_key", "async_value")
            ctx = await cm.async_get_context(session)
            print("Async Context:", ctx)
        asyncio.run(async_demo())

    # Optionally, delete the session context once processing is complete
    cm.delete_context(session)
    print("Final Context:", cm.get_context(session))
"""

SEED_001_VIEW = """
from ctx_memory import get_context_manager, ContextMode

# Get the manager singleton
context_mgr = get_context_manager()

# 1. Update Metadata (Start of request)
context_mgr.update_metadata(
    session_id=session_id,
    mode=ContextMode.THINKING,
    current_url=current_url
)

# 2. Add User Message
context_mgr.add_user_message(session_id, question)

# 3. Get Formatted Messages for LLM
# This converts the internal JSON structure into a list of messages [System, User, Assistant...]
messages = context_mgr.get_formatted_messages_for_api(session_id)

# 4. Call LLM (using datascraper or other client)
response = llm_client.generate(messages)

# 5. Add Assistant Response
context_mgr.add_assistant_message(
    session_id=session_id,
    content=response,
    model="gpt-4o-mini",
    response_time_ms=850
)
"""

SEED_001_SEARCH = """
from ctx_memory import get_context_integration

integration = get_context_integration()

# Add search results (automatically formatted and added to 'fetched_context.web_search')
integration.add_search_results(session_id, [
    {
        "title": "Latest News",
        "snippet": "...",
        "url": "https://news.com",
        "body": "..."
    }
])
"""

SEED_001_PAGE = """
# Add content from the current page (e.g., via extension)
integration.add_web_content(
    request=request,
    text_content="Main content of the page...",
    current_url="https://example.com",
    source_type="js_scraping"
)
"""


@pytest.fixture
def fresh_singletons():
    reset_context_manager()
    reset_context_integration()
    yield
    reset_context_manager()
    reset_context_integration()


def test_seed_000_example_runs_as_written(capsys):
    exec(compile(textwrap.dedent(SEED_000), "seed_000", "exec"), {"__name__": "__main__"})
    out = capsys.readouterr().out
    assert "'user_query': 'How do I book a flight?'" in out
    assert "'details': {'class': 'economy', 'flexible': True}" in out
    assert "'async_key': 'async_value'" in out
    assert out.rstrip().endswith("Final Context: {}")


class StubLLM:
    def __init__(self):
        self.calls = []

    def generate(self, messages):
        self.calls.append(messages)
        return f"Answer to: {messages[-1]['content']}"


def test_seed_001_examples_run_as_written(fresh_singletons):
    llm = StubLLM()
    namespace = {
        "session_id": "web-123",
        "current_url": "https://example.com/current-page",
        "question": "What's new?",
        "llm_client": llm,
        "request": SimpleNamespace(GET={"session_id": "web-123"}, POST={}, headers={}),
    }
    for block in (SEED_001_VIEW, SEED_001_SEARCH, SEED_001_PAGE):
        exec(compile(textwrap.dedent(block), "seed_001", "exec"), namespace)
    assert llm.calls[0] == [{"role": "user", "content": "What's new?"}]
    doc = get_context_manager().get_context("web-123")
    assert doc["metadata"]["mode"] == "thinking"
    assert doc["metadata"]["current_url"] == "https://example.com"
    assert [m["role"] for m in doc["conversation_history"]] == ["user", "assistant"]
    assert doc["conversation_history"][1]["metadata"] == {
        "model": "gpt-4o-mini",
        "response_time_ms": 850,
    }
    assert doc["fetched_context"]["web_search"][0]["extracted_data"]["title"] == "Latest News"
    assert doc["fetched_context"]["js_scraping"][0]["content"] == "Main content of the page..."
