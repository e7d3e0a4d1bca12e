"""The versioned JSON API: sessions (list, get, export, import, delete, messages) and turns."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from server_helpers import sse_events

if TYPE_CHECKING:
    from ctx_memory import ContextManager


def test_list_sessions_pages_with_a_cursor(http: Any, manager: ContextManager) -> None:
    for i in range(7):
        manager.add_user_message(f"user-{i}", "hi")
    manager.add_user_message("other", "hi")
    first = http.get("/v1/sessions", params={"prefix": "user-", "limit": 3}).json()
    assert first == {"sessions": ["user-0", "user-1", "user-2"], "next_cursor": "user-2"}
    second = http.get(
        "/v1/sessions", params={"prefix": "user-", "limit": 3, "cursor": first["next_cursor"]}
    ).json()
    assert second["sessions"] == ["user-3", "user-4", "user-5"]
    last = http.get(
        "/v1/sessions", params={"prefix": "user-", "limit": 3, "cursor": second["next_cursor"]}
    ).json()
    assert last == {"sessions": ["user-6"], "next_cursor": None}
    assert http.get("/v1/sessions", params={"limit": 0}).status_code == 422
    assert http.get("/v1/sessions", params={"limit": 501}).status_code == 422


def test_get_export_import_delete_round_trip(http: Any, manager: ContextManager) -> None:
    manager.set_system_prompt("trip", "Be brief.")
    manager.add_user_message("trip", "Where?")
    manager.add_assistant_message("trip", "Paris.", model="m")
    document = http.get("/v1/sessions/trip").json()
    assert document == manager.get_context("trip")
    exported = http.get("/v1/sessions/trip/export")
    assert exported.headers["content-disposition"].startswith("attachment")
    text = exported.text
    exported_document = json.loads(text)
    exported_document.pop("format_version", None)  # the export's own format marker
    assert exported_document == document
    deleted = http.delete("/v1/sessions/trip")
    assert deleted.json() == {"session_id": "trip", "deleted": True}
    assert http.get("/v1/sessions/trip").status_code == 404
    assert http.delete("/v1/sessions/trip").status_code == 404
    created = http.post("/v1/sessions", content=text, headers={"content-type": "application/json"})
    assert created.status_code == 201
    assert created.json() == {"session_id": "trip"}
    assert manager.get_history("trip")[1]["content"] == "Paris."
    again = http.post("/v1/sessions", content=text, headers={"content-type": "application/json"})
    assert again.status_code == 409
    assert (
        http.post(
            "/v1/sessions",
            params={"overwrite": "true"},
            content=text,
            headers={"content-type": "application/json"},
        ).status_code
        == 201
    )
    put = http.put(
        "/v1/sessions/copy%2F1", content=text, headers={"content-type": "application/json"}
    )
    assert put.json() == {"session_id": "copy/1"}
    assert manager.get_history("copy/1")[0]["content"] == "Where?"


def test_a_malformed_import_names_the_field_and_writes_nothing(
    http: Any, manager: ContextManager
) -> None:
    manager.add_user_message("x", "hi")
    bad = json.loads(manager.export_session("x"))
    manager.delete_context("x")
    bad["conversation_history"][0]["role"] = "wizard"
    response = http.post("/v1/sessions", json=bad)
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "invalid_document"
    assert body["field"].startswith("conversation_history")
    assert manager.list_sessions() == []
    assert (
        http.post(
            "/v1/sessions", content=b"{not json", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert http.post("/v1/sessions", json=[1, 2]).status_code == 422


def test_messages_read_and_append(http: Any, manager: ContextManager) -> None:
    manager.add_user_message("m", "one")
    manager.add_assistant_message("m", "two")
    body = http.get("/v1/sessions/m/messages", params={"last_k": 1}).json()
    assert [r["content"] for r in body["messages"]] == ["two"]
    added = http.post("/v1/sessions/m/messages", json={"role": "user", "content": "three"})
    assert added.status_code == 201
    assert added.json()["content"] == "three"
    assert [r["content"] for r in manager.get_history("m")] == ["one", "two", "three"]
    wrong = http.post("/v1/sessions/m/messages", json={"role": "wizard", "content": "x"})
    assert (wrong.status_code, wrong.json()["error"]) == (400, "invalid_input")
    assert http.get("/v1/sessions/none/messages").status_code == 404


def test_stats_webtext_and_clear(http: Any, manager: ContextManager) -> None:
    sent = {"text": "Page text", "url": "https://p.example", "title": "P"}
    assert http.post("/v1/sessions/w/webtext", json=sent).status_code == 200
    stats = http.get("/v1/sessions/w/stats").json()
    assert stats["fetched_items"] == {"js_scraping": 1}
    assert http.get("/v1/sessions/none/stats").status_code == 404
    manager.add_user_message("w", "q")
    cleared = http.post("/v1/sessions/w/clear", params={"preserve_fetched": "true"}).json()
    assert cleared == {"session_id": "w", "cleared": True}
    assert manager.get_memory_stats("w")["fetched_item_count"] == 1
    assert http.get("/v1/stats").json()["session_count"] == 1


def test_chat_research_and_agent_turns(http: Any, manager: ContextManager) -> None:
    sid = "turn/with slash"
    path = f"/v1/sessions/{quote(sid, safe='')}"
    streamed = http.post(f"{path}/chat", json={"question": "Hello?"})
    assert sse_events(streamed.text)[-1][0] == "done"
    reply = http.post(f"{path}/chat", json={"question": "Again?", "stream": False}).json()
    assert "Again?" in reply["response"]
    research = http.post(f"{path}/research", json={"question": "book ahead", "stream": False})
    assert research.json()["cited"] == [1]
    agent = http.post(f"{path}/agent", json={"question": "Go"}).json()
    assert "Go" in agent["response"]
    roles = [r["role"] for r in manager.get_history(sid)]
    assert roles == ["user", "assistant"] * 4


def test_validation_errors_are_clear_json(http: Any) -> None:
    response = http.post("/v1/sessions/s/chat", json={"question": ""})
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    assert body["detail"][0]["loc"] == ["body", "question"]
    assert (
        http.post(
            "/v1/sessions/s/chat", content=b"{", headers={"content-type": "application/json"}
        ).status_code
        == 422
    )
    assert http.post("/v1/sessions/s/chat", json={"question": 5}).status_code == 422
    assert http.get("/v1/sessions", params={"limit": "many"}).status_code == 422
    assert http.get("/no/such/route").json()["error"] == "not_found"
    assert http.patch("/v1/sessions").status_code == 405


def test_a_question_over_the_budget_is_422_and_writes_nothing(
    serve: Any, manager: ContextManager
) -> None:
    from ctx_memory.config import load_settings
    from ctx_memory.server import create_app

    client = serve(create_app(manager, load_settings(server_max_tokens=1200)))
    response = client.get(
        "/chat_response/", params={"session_id": "big", "question": "word " * 2000}
    )
    assert response.status_code == 422
    assert response.json()["error"] == "over_budget"
    assert manager.get_history("big") == []
    # the session the request created stays, with its mode and page: deleting it could
    # delete another client's write landing meanwhile (test_turn_takeback.py)
    assert manager.get_memory_stats("big")["message_count"] == 0

    manager.update_metadata("kept", mode="research", current_url="https://before.example")
    manager.add_user_message("kept", "an earlier question")
    before = manager.get_metadata("kept")
    refused = client.post(
        "/v1/sessions/kept/chat",
        json={
            "question": "word " * 2000,
            "mode": "normal",
            "current_url": "https://after.example",
            "stream": False,
        },
    )
    assert refused.status_code == 422
    after = manager.get_metadata("kept")
    assert (after["mode"], after["current_url"]) == (before["mode"], before["current_url"])
    assert len(manager.get_history("kept")) == 1


def test_health_needs_no_key(http: Any) -> None:
    assert http.get("/healthz").json() == {"status": "ok"}


def test_analytics_as_json_with_filters(http: Any, manager: ContextManager) -> None:
    http.get(
        "/get_adv_response/", params={"session_id": "r", "question": "fares?", "stream": "false"}
    )
    http.get("/chat_response/", params={"session_id": "c", "question": "hi", "stream": "false"})
    report = http.get("/v1/analytics").json()
    assert report["schema"].startswith("ctx_memory.analytics/")
    assert report["sessions"]["matched"] == 2
    assert report["turns"]["total"] == 2
    research = http.get("/v1/analytics", params={"mode": "research"}).json()
    assert research["sessions"]["matched"] == 1
    assert research["filters"]["mode"] == "research"
    later = http.get("/v1/analytics", params={"since": "2999-01-01T00:00:00+00:00"}).json()
    assert later["sessions"]["matched"] == 0
    assert http.get("/v1/analytics", params={"mode": "dreaming"}).status_code == 422
    assert http.get("/v1/analytics", params={"since": "yesterday"}).status_code == 422


def test_an_import_whose_metadata_is_no_object_is_refused_by_field(
    http: Any, manager: ContextManager
) -> None:
    manager.add_user_message("x", "hi")
    document = json.loads(manager.export_session("x"))
    manager.delete_context("x")
    for metadata in ([1], "text", 5, True):
        response = http.post("/v1/sessions", json={**document, "metadata": metadata})
        assert response.status_code == 422, metadata
        assert response.json()["field"] == "metadata"
    twin = {**document["conversation_history"][0], "content": "another message"}
    document["conversation_history"].append(twin)
    response = http.post("/v1/sessions", json=document)  # one id on two messages
    assert response.status_code == 422
    assert response.json()["field"] == "conversation_history.1.id"
    assert manager.list_sessions() == []


def test_a_message_sent_again_with_its_id_is_stored_once(
    http: Any, manager: ContextManager
) -> None:
    message = {"role": "user", "content": "book the 9:40 flight", "id": "client-7"}
    first = http.post("/v1/sessions/m/messages", json=message).json()
    for content in ("book the 9:40 flight", "something else"):  # retries after a lost response
        response = http.post("/v1/sessions/m/messages", json={**message, "content": content})
        assert response.status_code == 201
        assert response.json() == first  # what the session holds under that id
    assert [(r["id"], r["content"]) for r in manager.get_history("m")] == [
        ("client-7", "book the 9:40 flight")
    ]
    for i in range(300):  # the retry comes long after: hundreds of messages later
        manager.add_user_message("m", f"later {i}")
    late = http.post("/v1/sessions/m/messages", json={**message, "content": "something else"})
    assert late.json() == first
    bad = http.post("/v1/sessions/m/messages", json={**message, "id": "x" * 300})
    assert bad.status_code == 422


def test_parallel_imports_of_one_new_id_create_it_once(http: Any, manager: ContextManager) -> None:
    from concurrent.futures import ThreadPoolExecutor

    manager.add_user_message("race", "seed")
    document = json.loads(manager.export_session("race"))
    manager.delete_context("race")

    def post(i: int) -> int:
        doc = {**document, "system_prompt": f"writer {i}"}
        return int(http.post("/v1/sessions", json=doc).status_code)

    with ThreadPoolExecutor(8) as pool:
        statuses = list(pool.map(post, range(8)))
    assert sorted(statuses) == [201] + [409] * 7
    winner = statuses.index(201)
    assert manager.get_context("race")["system_prompt"] == f"writer {winner}"
