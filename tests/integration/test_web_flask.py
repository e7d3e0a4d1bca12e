"""ContextIntegration in a real Flask app, through Flask's test client.

GET, form POST, JSON POST, header-only and plain-text requests, and Flask's own ``session``,
in sync and ``async def`` views (Flask runs those with asgiref). Input errors
(``ValidationError``: a missing or bad id, an unknown mode) become HTTP 400 through the
app's error handler; nothing is answered 415 or 500.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pytest
from flask import Flask, jsonify, request, session

from ctx_memory import ContextIntegration, ContextManager, InMemoryStore, ValidationError

if TYPE_CHECKING:
    from collections.abc import Iterator

    from flask.testing import FlaskClient
    from werkzeug.wrappers import Response


def make_app(integration: ContextIntegration) -> Flask:
    app = Flask(__name__)
    app.secret_key = "test-secret"

    @app.errorhandler(ValidationError)
    def bad_request(exc: ValidationError) -> tuple[Response, int]:
        return jsonify(error=str(exc)), 400

    @app.route("/context", methods=["GET", "POST"])
    def context() -> dict[str, Any]:
        return {
            "session_id": integration.get_session_id(request),
            "mode": integration.get_mode(request).value,
        }

    @app.route("/async/context", methods=["GET", "POST"])
    async def async_context() -> dict[str, Any]:
        return {
            "session_id": await integration.aget_session_id(request),
            "mode": (await integration.aget_mode(request)).value,
        }

    @app.post("/page")
    def page() -> dict[str, Any]:
        sid = integration.prepare_request(request)
        data = request.get_json(silent=True) or request.form
        integration.add_web_content(request, data.get("text", ""), data.get("url"))
        return {"session_id": sid}

    @app.post("/async/page")
    async def async_page() -> dict[str, Any]:
        sid = await integration.aprepare_request(request)
        data = request.get_json(silent=True) or request.form
        await integration.aadd_web_content(request, data.get("text", ""), data.get("url"))
        return {"session_id": sid}

    @app.post("/login")
    def login() -> dict[str, Any]:
        session["session_id"] = "from-session"
        session["mode"] = "research"
        return {}

    return app


@pytest.fixture
def manager() -> Iterator[ContextManager]:
    with ContextManager(store=InMemoryStore(max_sessions=100)) as cm:
        yield cm


@pytest.fixture
def client(manager: ContextManager) -> FlaskClient:
    return make_app(ContextIntegration(manager)).test_client()


ENDPOINTS = ["/context", "/async/context"]


@pytest.mark.parametrize("path", ENDPOINTS)
def test_get_with_query_string(client: FlaskClient, path: str) -> None:
    response = client.get(path, query_string={"session_id": "u2", "mode": "thinking"})
    assert response.status_code == 200, response.text
    assert response.json == {"session_id": "u2", "mode": "thinking"}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_header_only(client: FlaskClient, path: str) -> None:
    response = client.get(path, headers={"X-Session-ID": "h1", "X-Context-Mode": "research"})
    assert response.status_code == 200, response.text
    assert response.json == {"session_id": "h1", "mode": "research"}
    # A POST without a body, and one with a body that is neither JSON nor a form.
    assert client.post(path, headers={"X-Session-ID": "h2"}).json["session_id"] == "h2"
    response = client.post(
        path, headers={"X-Session-ID": "h3"}, data=b"plain", content_type="text/plain"
    )
    assert response.status_code == 200, response.text
    assert response.json["session_id"] == "h3"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_form_post(client: FlaskClient, path: str) -> None:
    response = client.post(path, data={"session_id": "f1", "deep_research": "1"})
    assert response.status_code == 200, response.text
    assert response.json == {"session_id": "f1", "mode": "research"}


@pytest.mark.parametrize("path", ENDPOINTS)
def test_json_post(client: FlaskClient, path: str) -> None:
    response = client.post(path, json={"sessionId": "j1", "mode": "THINKING"})
    assert response.status_code == 200, response.text
    assert response.json == {"session_id": "j1", "mode": "thinking"}
    # Malformed JSON holds nothing: the header answers, and no 400/415 from the body.
    response = client.post(
        path, headers={"X-Session-ID": "j2"}, data=b"{oops", content_type="application/json"
    )
    assert response.status_code == 200, response.text
    assert response.json["session_id"] == "j2"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_precedence(client: FlaskClient, path: str) -> None:
    response = client.post(
        f"{path}?session_id=query",
        headers={"X-Session-ID": "header"},
        json={"session_id": "body"},
    )
    assert response.json["session_id"] == "query"
    response = client.post(path, headers={"X-Session-ID": "header"}, json={"session_id": "b"})
    assert response.json["session_id"] == "header"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_flask_session(client: FlaskClient, path: str) -> None:
    assert client.post("/login").status_code == 200
    response = client.get(path)
    assert response.status_code == 200, response.text
    assert response.json == {"session_id": "from-session", "mode": "research"}
    assert client.get(path, query_string={"mode": "normal"}).json["mode"] == "normal"


@pytest.mark.parametrize("path", ENDPOINTS)
def test_missing_or_bad_id_is_a_clear_400(client: FlaskClient, path: str) -> None:
    response = client.get(path)
    assert response.status_code == 400
    assert "no session id" in response.json["error"]
    response = client.post(path, json={"session_id": "bad\x00id"})
    assert response.status_code == 400
    assert "JSON body key 'session_id'" in response.json["error"]
    response = client.post(path, data={"session_id": "s", "mode": "dreaming"})
    assert response.status_code == 400
    assert "form field 'mode'" in response.json["error"]


@pytest.mark.parametrize("path", ["/page", "/async/page"])
def test_content_lands_in_the_right_session(
    client: FlaskClient, manager: ContextManager, path: str
) -> None:
    response = client.post(
        path,
        json={"session_id": "json-user", "text": "JSON page", "url": "https://j.example"},
        headers={"X-Context-Mode": "research"},
    )
    assert response.status_code == 200, response.text
    response = client.post(
        path, data={"session_id": "form-user", "text": "Form page", "tz": "Asia/Tokyo"}
    )
    assert response.status_code == 200, response.text
    assert manager.get_fetched_context("json-user")["js_scraping"][0]["content"] == "JSON page"
    assert manager.get_metadata("json-user")["mode"] == "research"
    assert manager.get_metadata("json-user")["current_url"] == "https://j.example"
    assert manager.get_fetched_context("form-user")["js_scraping"][0]["content"] == "Form page"
    assert manager.get_metadata("form-user")["user_timezone"] == "Asia/Tokyo"
    assert sorted(manager.list_sessions()) == ["form-user", "json-user"]
    assert client.post(path, json={"text": "orphan"}).status_code == 400
    assert sorted(manager.list_sessions()) == ["form-user", "json-user"]
