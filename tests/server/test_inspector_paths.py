"""Where the service is mounted, odd session ids, and which session a request names."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

import httpx
import pytest
from server_helpers import ADMIN, KEY_A, LiveServer, auth, keyed_settings

from ctx_memory.server import create_app

if TYPE_CHECKING:
    from collections.abc import Iterator

    from ctx_memory import ContextManager


@pytest.fixture
def mounted(manager: ContextManager) -> Iterator[httpx.Client]:
    """Real uvicorn with ``root_path="/ctx"``, reached as a prefix-stripping proxy would."""
    manager.add_user_message("a/b", "hello")
    manager.add_user_message("s1", "hello")
    with (
        LiveServer(create_app(manager), root_path="/ctx") as live,
        httpx.Client(base_url=live.url, timeout=30) as client,
    ):
        yield client


def test_under_a_root_path_ids_with_a_slash_are_routed(mounted: httpx.Client) -> None:
    assert mounted.get("/v1/sessions/s1/messages").status_code == 200
    page = mounted.get("/v1/sessions/a%2Fb/messages")
    assert page.status_code == 200
    assert page.json()["session_id"] == "a/b"


def test_under_a_root_path_the_inspector_keeps_the_prefix(mounted: httpx.Client) -> None:
    home = mounted.get("/inspector", follow_redirects=False)
    assert home.headers["location"] == "/ctx/inspector/sessions"
    page = mounted.get("/inspector/sessions")
    assert '<base href="/ctx/inspector/">' in page.text
    # Every link and form is relative to that base: none escapes the prefix.
    targets = re.findall(r'(?:href|action)="([^"]*)"', page.text)
    assert targets
    assert not [t for t in targets if t.startswith("/") and not t.startswith("/ctx/")]
    assert "session?id=a%2Fb&amp;tenant=default" in page.text


def test_the_ids_dot_and_dot_dot_open_from_the_list(http: Any, manager: ContextManager) -> None:
    for sid in (".", ".."):
        manager.add_user_message(sid, f"I am session {sid!r}")
    page = http.get("/inspector/sessions")
    links = re.findall(r'href="(session\?id=[^"]*)"', page.text)
    assert "session?id=.&amp;tenant=default" in links
    assert "session?id=..&amp;tenant=default" in links
    for sid in (".", ".."):
        shown = http.get("/inspector/session", params={"id": sid, "tenant": "default"})
        assert shown.status_code == 200
        assert f"I am session {sid!r}".replace("'", "&#x27;") in shown.text


def test_the_export_link_works_with_the_login_cookie(serve: Any, manager: ContextManager) -> None:
    """The page's export link is the inspector's own route: the cookie is sent to it."""
    client = serve(create_app(manager, settings=keyed_settings()))
    written = client.post(
        "/v1/sessions/trip/messages", json={"role": "user", "content": "hi"}, headers=auth(KEY_A)
    )
    assert written.status_code == 201
    login = client.post(
        "/inspector/login",
        data={"key": ADMIN, "next": "/inspector/sessions"},
        follow_redirects=False,
    )
    assert login.status_code == 303
    assert "Path=/inspector" in login.headers["set-cookie"]
    session = client.get("/inspector/session", params={"id": "trip", "tenant": "a"})
    assert session.status_code == 200
    export = re.search(r'href="(session/export\?[^"]*)"', session.text)
    assert export is not None
    target = "/inspector/" + export.group(1).replace("&amp;", "&")
    answer = client.get(target)
    assert answer.status_code == 200
    assert answer.json()["conversation_history"][0]["content"] == "hi"
    client.cookies.clear()
    assert client.get(target, follow_redirects=False).status_code in (303, 401)


def test_a_url_that_is_not_utf8_is_refused(http: Any, manager: ContextManager) -> None:
    """%FF and %FE would both decode to U+FFFD and name the same session."""
    for path in ("/v1/sessions/%FF/messages", "/v1/sessions/%ED%A0%80/messages"):
        answer = http.post(path, json={"role": "user", "content": "x"})
        assert answer.status_code == 400
        assert answer.json()["error"] == "invalid_input"
    assert http.get("/v1/sessions?prefix=%FE").status_code == 400
    assert manager.list_sessions() == []


def test_seed_endpoints_take_the_session_id_from_the_query_then_the_header(
    http: Any, manager: ContextManager
) -> None:
    """As ContextIntegration reads it (docs/web.md): query, then header, then body."""
    body = {"session_id": "from-body", "text_content": "page text"}
    assert http.post("/add_webtext/?session_id=from-query", json=body).status_code == 200
    answer = http.post("/add_webtext/", json=body, headers={"X-Session-ID": "from-header"})
    assert answer.status_code == 200
    assert http.post("/add_webtext/", json=body).status_code == 200
    assert manager.list_sessions() == ["from-body", "from-header", "from-query"]


def test_the_analytics_filter_keeps_a_given_offset_as_utc(
    http: Any, manager: ContextManager
) -> None:
    """The form's fields have no offset (read as UTC): a given one is applied, not dropped."""
    manager.add_user_message("s", "hi")
    page = http.get("/inspector/analytics", params={"since": "2026-03-01T10:00:00+02:00"})
    assert page.status_code == 200
    assert 'name="since" value="2026-03-01T08:00:00"' in page.text
    assert "since (UTC)" in page.text
