"""ContextIntegration in a real FastAPI app, through FastAPI's TestClient.

Sync (``def``) and async (``async def``) endpoints read the session id and mode from the
query string, headers, JSON body, form and the Starlette session (SessionMiddleware), and
record content in the right session of an in-memory ContextManager. Input errors
(``ValidationError``: a missing or bad id, an unknown mode) become HTTP 400 through the
app's exception handler; nothing is answered 415 or 500.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest
from fastapi import FastAPI, Form, Request, WebSocket
from fastapi.responses import JSONResponse
from fastapi.testclient import TestClient
from pydantic import BaseModel
from starlette.middleware.sessions import SessionMiddleware

from ctx_memory import (
    ContextIntegration,
    ContextManager,
    InMemoryStore,
    RequestBodyNotReadError,
    ValidationError,
)

if TYPE_CHECKING:
    from collections.abc import Iterator


class Page(BaseModel):
    session_id: str | None = None
    mode: str | None = None
    text: str = ""
    url: str | None = None


def make_app(integration: ContextIntegration, *, sessions: bool = True) -> FastAPI:
    app = FastAPI()
    if sessions:
        app.add_middleware(SessionMiddleware, secret_key="test-secret")

    @app.exception_handler(ValidationError)
    async def bad_request(request: Request, exc: ValidationError) -> JSONResponse:
        return JSONResponse({"error": str(exc)}, status_code=400)

    @app.api_route("/sync/context", methods=["GET", "POST"])
    def sync_context(request: Request) -> dict[str, Any]:
        return {
            "session_id": integration.get_session_id(request),
            "mode": integration.get_mode(request).value,
        }

    @app.api_route("/async/context", methods=["GET", "POST"])
    async def async_context(request: Request) -> dict[str, Any]:
        return {
            "session_id": await integration.aget_session_id(request),
            "mode": (await integration.aget_mode(request)).value,
        }

    @app.post("/sync/page")
    def sync_page(page: Page, request: Request) -> dict[str, Any]:
        # FastAPI has read the JSON body for ``page``: the sync helpers can use it.
        sid = integration.prepare_request(request)
        integration.add_web_content(request, page.text, page.url)
        return {"session_id": sid}

    @app.post("/sync/form")
    def sync_form(request: Request, text: str = Form("")) -> dict[str, Any]:
        item = integration.add_web_content(request, text, "https://form.example")
        return {"session_id": integration.get_session_id(request), "content": item["content"]}

    @app.post("/async/page")
    async def async_page(request: Request) -> dict[str, Any]:
        sid = await integration.aprepare_request(request)
        if request.headers.get("content-type", "").startswith("application/json"):
            data: Any = await request.json()
        else:
            data = await request.form()
        await integration.aadd_web_content(request, data.get("text", ""), data.get("url"))
        await integration.aadd_search_results(sid, [{"title": "T", "url": "https://s.example"}])
        return {"session_id": sid}

    @app.websocket("/ws")
    async def ws(websocket: WebSocket) -> None:
        await websocket.accept()
        sid = integration.get_session_id(websocket, default="anonymous")
        await websocket.send_json(
            {"session_id": sid, "mode": integration.get_mode(websocket).value}
        )
        await websocket.close()

    @app.post("/login")
    async def login(request: Request) -> dict[str, Any]:
        request.session["session_id"] = "from-session"
        request.session["mode"] = "thinking"
        return {}

    return app


@pytest.fixture
def manager() -> Iterator[ContextManager]:
    with ContextManager(store=InMemoryStore(max_sessions=100)) as cm:
        yield cm


@pytest.fixture
def integration(manager: ContextManager) -> ContextIntegration:
    return ContextIntegration(manager)


@pytest.fixture
def client(integration: ContextIntegration) -> Iterator[TestClient]:
    with TestClient(make_app(integration)) as test_client:
        yield test_client


ENDPOINTS = ["/sync/context", "/async/context"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_query_string(client: TestClient, path: str) -> None:
    response = client.get(path, params={"session_id": "u2", "mode": "research"})
    assert response.status_code == 200, response.text
    assert response.json() == {"session_id": "u2", "mode": "research"}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_headers_only(client: TestClient, path: str) -> None:
    response = client.get(path, headers={"X-Session-ID": "u3", "X-Context-Mode": "thinking"})
    assert response.status_code == 200, response.text
    assert response.json() == {"session_id": "u3", "mode": "thinking"}
    # Header names are case-insensitive, as HTTP says.
    response = client.get(path, headers={"x-session-id": "u4"})
    assert response.json() == {"session_id": "u4", "mode": "normal"}


def test_query_wins_over_header_and_header_over_body(client: TestClient) -> None:
    response = client.post(
        "/async/context?session_id=from-query",
        headers={"X-Session-ID": "from-header"},
        json={"session_id": "from-body", "mode": "research"},
    )
    assert response.json() == {"session_id": "from-query", "mode": "research"}
    response = client.post(
        "/async/context", headers={"X-Session-ID": "from-header"}, json={"session_id": "b"}
    )
    assert response.json()["session_id"] == "from-header"


def test_async_endpoint_reads_json_body(client: TestClient) -> None:
    response = client.post("/async/context", json={"session_id": "j1", "mode": "thinking"})
    assert response.status_code == 200, response.text
    assert response.json() == {"session_id": "j1", "mode": "thinking"}


def test_async_endpoint_reads_form(client: TestClient) -> None:
    response = client.post("/async/context", data={"session_id": "f1", "research": "true"})
    assert response.status_code == 200, response.text
    assert response.json() == {"session_id": "f1", "mode": "research"}
    response = client.post(
        "/async/context", data={"sessionId": "f2"}, files={"upload": ("a.txt", b"hello")}
    )
    assert response.json() == {"session_id": "f2", "mode": "normal"}


def test_sync_endpoint_says_the_unread_body_needs_the_async_twin(client: TestClient) -> None:
    # A programming error, not the client's: it is not a ValidationError (so not a 400).
    with pytest.raises(RequestBodyNotReadError, match=r"JSON body .*aget_session_id") as raised:
        client.post("/sync/context", json={"session_id": "j1"})
    assert not isinstance(raised.value, ValidationError)
    with pytest.raises(RequestBodyNotReadError, match=r"form .*`async def` endpoint"):
        client.post("/sync/context", data={"session_id": "f1"})
    # What is available synchronously is enough when it holds both values.
    response = client.post("/sync/context?session_id=q&mode=normal", json={"session_id": "ignored"})
    assert response.json() == {"session_id": "q", "mode": "normal"}


def test_other_bodies_are_never_read(client: TestClient) -> None:
    for path in ENDPOINTS:
        response = client.post(
            path,
            headers={"X-Session-ID": "t1", "content-type": "text/plain"},
            content=b"not json, not a form",
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"session_id": "t1", "mode": "normal"}
    # A malformed JSON body holds nothing; the header still answers.
    response = client.post(
        "/async/context",
        headers={"X-Session-ID": "t2", "content-type": "application/json"},
        content=b"{not json",
    )
    assert response.json() == {"session_id": "t2", "mode": "normal"}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_server_session(client: TestClient, path: str) -> None:
    assert client.post("/login").status_code == 200
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.json() == {"session_id": "from-session", "mode": "thinking"}
    # The request's own values come before the session's.
    response = client.get(path, params={"session_id": "explicit"})
    assert response.json() == {"session_id": "explicit", "mode": "thinking"}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_missing_or_bad_id_is_a_clear_400(client: TestClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 400
    assert "no session id" in response.json()["error"]
    assert "X-Session-ID" in response.json()["error"]
    response = client.get(path, params={"session_id": "x" * 300})
    assert response.status_code == 400
    assert "query parameter 'session_id'" in response.json()["error"]
    response = client.get(path, params={"session_id": "ok", "mode": "sleepy"})
    assert response.status_code == 400
    assert "unknown mode 'sleepy'" in response.json()["error"]
    response = client.post("/async/context", json={"session_id": ["a", "list"]})
    assert response.status_code == 400
    assert "must be a string" in response.json()["error"]


def test_without_session_middleware_nothing_raises(integration: ContextIntegration) -> None:
    with TestClient(make_app(integration, sessions=False)) as client:
        for path in ENDPOINTS:
            response = client.get(path)
            assert response.status_code == 400
            assert "no session id" in response.json()["error"]
            assert client.get(path, params={"session_id": "s"}).status_code == 200


def test_async_endpoint_records_content_in_the_right_session(
    client: TestClient, manager: ContextManager
) -> None:
    response = client.post(
        "/async/page",
        json={
            "session_id": "json-user",
            "mode": "research",
            "text": "Paris fares",
            "url": "https://fares.example",
            "timezone": "Europe/Paris",
        },
    )
    assert response.status_code == 200, response.text
    response = client.post(
        "/async/page",
        data={"session_id": "form-user", "text": "Rome fares", "url": "https://rome.example"},
    )
    assert response.status_code == 200, response.text
    fetched = manager.get_fetched_context("json-user")
    assert [i["content"] for i in fetched["js_scraping"]] == ["Paris fares"]
    assert fetched["web_search"][0]["url"] == "https://s.example"
    meta = manager.get_metadata("json-user")
    assert (meta["mode"], meta["current_url"], meta["user_timezone"]) == (
        "research",
        "https://fares.example",
        "Europe/Paris",
    )
    form_items = manager.get_fetched_context("form-user")["js_scraping"]
    assert [i["content"] for i in form_items] == ["Rome fares"]
    assert sorted(manager.list_sessions()) == ["form-user", "json-user"]


def test_sync_endpoints_use_the_body_fastapi_has_read(
    client: TestClient, manager: ContextManager
) -> None:
    response = client.post(
        "/sync/page",
        json={"session_id": "declared", "mode": "thinking", "text": "Body", "url": "https://b"},
    )
    assert response.status_code == 200, response.text
    assert manager.get_metadata("declared")["mode"] == "thinking"
    assert manager.get_fetched_context("declared")["js_scraping"][0]["content"] == "Body"
    response = client.post("/sync/form", data={"session_id": "form-declared", "text": "Hi"})
    assert response.status_code == 200, response.text
    assert response.json() == {"session_id": "form-declared", "content": "Hi"}
    assert manager.get_metadata("form-declared")["current_url"] == "https://form.example"


def test_nothing_is_written_for_a_request_without_id(
    client: TestClient, manager: ContextManager
) -> None:
    response = client.post("/async/page", json={"text": "orphan"})
    assert response.status_code == 400
    assert manager.list_sessions() == []


def test_the_documented_example_serves_as_documented() -> None:
    page = (Path(__file__).resolve().parents[2] / "docs" / "web.md").read_text(encoding="utf-8")
    block = re.findall(r"```python\n(.*?)```", page, flags=re.DOTALL)[0]
    namespace: dict[str, Any] = {"__name__": "docs_web_example"}
    exec(compile(block, "<docs/web.md>", "exec"), namespace)
    with TestClient(namespace["app"]) as client:
        response = client.post(
            "/page",
            json={"text": "Fares", "url": "https://f.example", "mode": "research"},
            headers={"X-Session-ID": "readme"},
        )
        assert response.status_code == 200, response.text
        assert response.json() == {"session_id": "readme", "mode": "research"}
        assert client.post("/page", json={"text": "no id"}).status_code == 400
    manager = namespace["integration"].manager
    assert manager.get_fetched_context("readme")["js_scraping"][0]["content"] == "Fares"
    assert manager.get_metadata("readme")["current_url"] == "https://f.example"


def test_websocket_query_header_and_session(client: TestClient) -> None:
    # A WebSocket is a Starlette HTTPConnection (a Mapping over its scope) without a body.
    with client.websocket_connect("/ws?session_id=w1&mode=thinking") as ws:
        assert ws.receive_json() == {"session_id": "w1", "mode": "thinking"}
    with client.websocket_connect("/ws", headers={"X-Session-ID": "w2"}) as ws:
        assert ws.receive_json() == {"session_id": "w2", "mode": "normal"}
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_json() == {"session_id": "anonymous", "mode": "normal"}
    client.post("/login")
    with client.websocket_connect("/ws") as ws:
        assert ws.receive_json() == {"session_id": "from-session", "mode": "thinking"}
