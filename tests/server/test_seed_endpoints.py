"""Seed 001's six endpoints, with its paths and parameters, in process and over uvicorn."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from server_helpers import sse_events

if TYPE_CHECKING:
    from ctx_memory import ContextManager


def test_add_webtext_stores_the_page_as_js_scraping(http: Any, manager: ContextManager) -> None:
    sent = {
        "session_id": "s1",
        "text_content": "Paris (CDG) from New York: daily non-stops from $420.",
        "current_url": "https://airline.example/paris",
        "title": "Flights to Paris",
    }
    response = http.post("/add_webtext/", json=sent)
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["session_id"], body["source_type"]) == ("s1", "js_scraping")
    assert body["token_count"] > 0
    item = manager.get_fetched_context("s1")["js_scraping"][0]
    assert item["url"] == "https://airline.example/paris"
    assert item["extracted_data"]["title"] == "Flights to Paris"
    assert manager.get_metadata("s1")["current_url"] == "https://airline.example/paris"


def test_add_webtext_takes_the_seeds_aliases_and_the_session_header(
    http: Any, manager: ContextManager
) -> None:
    response = http.post(
        "/add_webtext/",
        json={"text": "Scraped text", "url": "https://a.example"},
        headers={"X-Session-ID": "from-header"},
    )
    assert response.status_code == 200, response.text
    assert manager.get_fetched_context("from-header")["js_scraping"][0]["content"] == "Scraped text"


def test_chat_response_streams_tokens_and_records_the_turn(
    http: Any, manager: ContextManager
) -> None:
    params = {
        "session_id": "s1",
        "question": "How do I book a cheap flight?",
        "current_url": "https://airline.example",
        "user_timezone": "Europe/Paris",
    }
    response = http.get("/chat_response/", params=params)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = sse_events(response.text)
    names = [name for name, _ in events]
    assert names[-1] == "done"
    assert names.count("token") > 3
    text = "".join(json.loads(data)["content"] for name, data in events if name == "token")
    done = json.loads(events[-1][1])
    history = manager.get_history("s1")
    assert [r["role"] for r in history] == ["user", "assistant"]
    assert history[0]["content"] == "How do I book a cheap flight?"
    assert history[1]["content"] == text
    assert history[1]["id"] == done["message_id"]
    assert history[1]["metadata"]["model"] == "fake"
    assert "response_time_ms" in history[1]["metadata"]
    meta = manager.get_metadata("s1")
    assert (meta["mode"], meta["user_timezone"]) == ("thinking", "Europe/Paris")


def test_chat_response_refuses_an_unknown_time_zone_before_writing(
    http: Any, manager: ContextManager
) -> None:
    for zone in ("Europe", "Not/AZone"):  # (a name over 64 characters: 422 from the query)
        params = {"session_id": "tz", "question": "Hi", "stream": "false", "user_timezone": zone}
        response = http.get("/chat_response/", params=params)
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"] == "invalid_input"
        assert body["detail"].startswith("metadata.user_timezone: unknown time zone")
    assert manager.get_history("tz") == []


def test_chat_response_as_json(http: Any, manager: ContextManager) -> None:
    response = http.get(
        "/chat_response/", params={"session": "s2", "question": "Hi", "stream": "false"}
    )
    assert response.status_code == 200
    body = response.json()
    assert body["response"].startswith("(demo model")
    assert manager.get_history("s2")[1]["id"] == body["message_id"]


def test_get_adv_response_searches_records_sources_and_cites_them(
    http: Any, manager: ContextManager
) -> None:
    response = http.get(
        "/get_adv_response/", params={"session_id": "r1", "question": "flexible fares?"}
    )
    assert response.status_code == 200
    events = sse_events(response.text)
    assert events[0][0] == "sources"
    found = json.loads(events[0][1])
    assert found[0]["url"] == "https://fares.example/flex"
    done = json.loads(events[-1][1])
    assert done["cited"] == [1]
    assert done["sources_used"][0]["url"] == "https://fares.example/flex"
    fetched = manager.get_fetched_context("r1")["web_search"]
    assert {item["url"] for item in fetched} >= {"https://fares.example/flex"}
    reply = manager.get_history("r1")[-1]
    assert reply["metadata"]["cited"] == [1]
    assert "https://fares.example/flex" in reply["metadata"]["sources_used"]
    assert manager.get_metadata("r1")["mode"] == "research"
    # the same question again adds no duplicate source
    http.get("/get_adv_response/", params={"session_id": "r1", "question": "flexible fares?"})
    assert len(manager.get_fetched_context("r1")["web_search"]) == len(fetched)


def test_agent_chat_response_runs_the_agent_with_context_middleware(
    http: Any, manager: ContextManager
) -> None:
    response = http.post(
        "/agent_chat_response/", json={"session_id": "ag", "question": "Plan my trip"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert "Plan my trip" in body["response"]
    history = manager.get_history("ag")
    assert [r["role"] for r in history] == ["user", "assistant"]
    assert history[1]["content"] == body["response"]


def test_clear_with_and_without_the_fetched_sources(http: Any, manager: ContextManager) -> None:
    manager.add_user_message("c1", "hello")
    manager.add_fetched_context("c1", "web_search", "text", url="https://x.example")
    response = http.delete("/clear/", params={"session_id": "c1", "preserve_fetched": "true"})
    assert response.json() == {"session_id": "c1", "cleared": True}
    assert manager.get_history("c1") == []
    assert manager.get_fetched_context("c1")["web_search"]
    http.delete("/clear/", params={"session_id": "c1"})
    assert not manager.get_fetched_context("c1")


def test_get_memory_stats_for_a_session_and_the_store(http: Any, manager: ContextManager) -> None:
    manager.add_user_message("st", "hello there")
    stats = http.get("/get_memory_stats/", params={"session_id": "st"}).json()
    assert stats == manager.get_memory_stats("st")
    store = http.get("/get_memory_stats/").json()
    assert store["session_count"] == 1
    missing = http.get("/get_memory_stats/", params={"session_id": "nope"}).json()
    assert missing == {"session_id": "nope", "exists": False}


def test_a_missing_session_id_is_a_clear_400(http: Any) -> None:
    response = http.get("/chat_response/", params={"question": "Hi"})
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_input"
    assert "session id" in response.json()["detail"]


def test_openapi_documents_every_endpoint(http: Any) -> None:
    paths = http.get("/openapi.json").json()["paths"]
    for path in (
        "/chat_response/",
        "/get_adv_response/",
        "/agent_chat_response/",
        "/add_webtext/",
        "/clear/",
        "/get_memory_stats/",
        "/v1/sessions",
        "/v1/sessions/{session_id}",
        "/v1/sessions/{session_id}/export",
        "/v1/sessions/{session_id}/messages",
        "/v1/analytics",
    ):
        assert path in paths, path
    assert http.get("/docs").status_code == 200
