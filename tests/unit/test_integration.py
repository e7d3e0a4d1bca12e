from __future__ import annotations

from types import SimpleNamespace

import pytest

from ctx_memory import ContextIntegration, ContextMode, InvalidSessionIdError, ValidationError


@pytest.fixture
def integration(manager):
    return ContextIntegration(manager)


def test_session_id_from_mapping_object_header_and_django_session(integration):
    assert integration.get_session_id({"session_id": "a"}) == "a"
    assert integration.get_session_id(SimpleNamespace(GET={"session_id": "b"}, POST={})) == "b"
    assert integration.get_session_id(SimpleNamespace(data={"sessionId": "c"})) == "c"
    assert integration.get_session_id(SimpleNamespace(headers={"X-Session-ID": "d"})) == "d"
    assert (
        integration.get_session_id(
            SimpleNamespace(GET={}, session=SimpleNamespace(session_key="e"))
        )
        == "e"
    )
    assert integration.get_session_id({}, default="f") == "f"
    with pytest.raises(InvalidSessionIdError, match="no session id"):
        integration.get_session_id(SimpleNamespace(GET={}))


def test_mode_from_request(integration):
    assert integration.get_mode({"mode": "thinking"}) is ContextMode.THINKING
    assert integration.get_mode({"research": "true"}) is ContextMode.RESEARCH
    assert integration.get_mode(SimpleNamespace(GET={"deep_research": "1"})) is ContextMode.RESEARCH
    assert integration.get_mode({}) is ContextMode.NORMAL
    with pytest.raises(ValidationError, match="unknown mode"):
        integration.get_mode({"mode": "sleepy"})


def test_prepare_request_records_metadata(integration, manager):
    sid = integration.prepare_request(
        {
            "session_id": "s",
            "mode": "research",
            "current_url": "https://p",
            "timezone": "Europe/Paris",
        }
    )
    meta = manager.get_metadata(sid)
    assert (meta["mode"], meta["current_url"], meta["user_timezone"]) == (
        "research",
        "https://p",
        "Europe/Paris",
    )


def test_add_search_results(integration, manager):
    added = integration.add_search_results(
        "s",
        [
            {
                "title": "Latest News",
                "snippet": "short",
                "url": "https://news.com",
                "body": "long body",
            },
            {"title": "Only snippet", "snippet": "just this", "url": "https://b.com"},
        ],
    )
    assert added == 2
    items = manager.get_fetched_context("s")["web_search"]
    assert items[0]["content"] == "long body"
    assert items[0]["url"] == "https://news.com"
    assert items[0]["extracted_data"] == {"title": "Latest News", "snippet": "short"}
    assert items[1]["content"] == "just this"
    # The same results again are not stored twice.
    assert (
        integration.add_search_results(
            "s",
            [
                {
                    "title": "Latest News",
                    "snippet": "short",
                    "url": "https://news.com",
                    "body": "long body",
                }
            ],
        )
        == 0
    )


def test_add_web_content(integration, manager):
    request = SimpleNamespace(POST={"session_id": "s"}, GET={})
    item = integration.add_web_content(
        request=request,
        text_content="Main content of the page...",
        current_url="https://example.com",
        source_type="js_scraping",
    )
    assert item["source_type"] == "js_scraping"
    assert (
        manager.get_fetched_context("s")["js_scraping"][0]["content"]
        == "Main content of the page..."
    )
    assert manager.get_metadata("s")["current_url"] == "https://example.com"


def test_bad_search_result(integration, manager):
    with pytest.raises(ValidationError, match=r"results\[1\]"):
        integration.add_search_results("s", [{"title": "ok"}, "not a mapping"])
    assert manager.list_sessions() == []
