"""The inspector's search box on a session page: hits best first, escaped, per tenant."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import TYPE_CHECKING, Any

from server_helpers import ADMIN, KEY_A, auth, keyed_settings

from ctx_memory.recall import search_history
from ctx_memory.server import create_app

if TYPE_CHECKING:
    from ctx_memory import ContextManager

HOSTILE = "<script>alert(1)</script><img src=x onerror=alert(2)>"


class _Rows(HTMLParser):
    """The text of each cell of ``table#hits``'s body rows."""

    def __init__(self) -> None:
        super().__init__()
        self.rows: list[list[str]] = []
        self._in_hits = self._in_body = False
        self._cell: list[str] | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and ("id", "hits") in attrs:
            self._in_hits = True
        elif self._in_hits and tag == "tbody":
            self._in_body = True
        elif self._in_body and tag == "tr":
            self.rows.append([])
        elif self._in_body and tag == "td":
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag == "td" and self._cell is not None:
            self.rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._in_hits = self._in_body = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)


def _rows(page: str) -> list[list[str]]:
    parser = _Rows()
    parser.feed(page)
    return parser.rows


class _Tags(HTMLParser):
    """Every element of a page with its attributes, as a browser would parse them."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def test_the_search_box_lists_hits_best_first(http: Any, manager: ContextManager) -> None:
    manager.add_user_message("trip/1", "I lost my passport in Lyon")
    manager.add_assistant_message("trip/1", "Call the consulate first.")
    manager.add_user_message("trip/1", "Do I need a visa and a passport for Japan?")
    manager.add_assistant_message("trip/1", "Book the train to Lyon")
    plain = http.get("/inspector/sessions/trip%2F1")
    assert plain.status_code == 200
    assert '<input id="q" name="q" value=""' in plain.text
    # The form comes back to this session: its id in the query, the action relative to the
    # inspector (the page's <base>), wherever a proxy mounts the app.
    assert '<form class="search" method="get" action="session">' in plain.text
    assert '<input type="hidden" name="id" value="trip/1">' in plain.text
    assert '<base href="/inspector/">' in plain.text
    same = http.get("/inspector/session", params={"id": "trip/1", "q": "passport visa"})
    assert same.status_code == 200
    assert "<h2>Search results</h2>" in same.text
    assert 'id="search-results"' not in plain.text

    page = http.get("/inspector/sessions/trip%2F1", params={"q": "passport visa"})
    assert page.status_code == 200
    assert "<h2>Search results</h2>" in page.text
    assert '<input id="q" name="q" value="passport visa"' in page.text
    expected = search_history(manager, "trip/1", "passport visa", k=100)
    assert [h.position for h in expected] == [2, 0]
    assert _rows(page.text) == [
        [
            f"#{hit.position + 1}",  # numbered as the conversation numbers its messages
            hit.message["role"],
            f"{hit.score:.3f}",
            ", ".join(hit.terms),
            hit.message["content"],
        ]
        for hit in expected
    ]
    assert _rows(page.text)[0][3] == "passport, visa"
    assert "Call the consulate first." in page.text  # the session is still shown below


def test_no_match_says_so(http: Any, manager: ContextManager) -> None:
    manager.add_user_message("s", "Book the train to Lyon")
    page = http.get("/inspector/sessions/s", params={"q": "zeppelin"})
    assert page.status_code == 200
    assert '<p class="muted" id="no-hits">No message matches.</p>' in page.text
    assert _rows(page.text) == []
    missing = http.get("/inspector/sessions/nobody", params={"q": "train"})
    assert missing.status_code == 404
    assert "No message matches." in missing.text
    assert not manager.session_exists("nobody")


def test_hostile_content_and_queries_are_shown_as_text(http: Any, manager: ContextManager) -> None:
    manager.add_user_message("evil", f"alert {HOSTILE}")
    page = http.get("/inspector/sessions/evil", params={"q": f'alert "><marquee>{HOSTILE}'})
    assert page.status_code == 200
    assert "script-src" not in page.headers["content-security-policy"]
    assert page.headers["content-security-policy"].startswith("default-src 'none'")
    [row] = _rows(page.text)
    assert row[-1] == f"alert {HOSTILE}"  # the text, as it was written
    assert f'<div class="hit">alert {_escaped(HOSTILE)}</div>' in page.text
    assert f'value="alert &quot;&gt;&lt;marquee&gt;{_escaped(HOSTILE)}"' in page.text
    parser = _Tags()
    parser.feed(page.text)
    assert {tag for tag, _ in parser.tags}.isdisjoint({"script", "img", "marquee"})
    assert not [name for _, attrs in parser.tags for name in attrs if name.startswith("on")]


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def test_the_search_stays_in_the_pages_tenant(serve: Any) -> None:
    client = serve(create_app(settings=keyed_settings()))
    sent = {"role": "user", "content": "secret plans of A"}
    assert client.post("/v1/sessions/s/messages", json=sent, headers=auth(KEY_A)).status_code == 201
    own = client.get(
        "/inspector/sessions/s", params={"tenant": "a", "q": "secret"}, headers=auth(ADMIN)
    )
    assert [row[-1] for row in _rows(own.text)] == ["secret plans of A"]
    other = client.get(
        "/inspector/sessions/s", params={"tenant": "b", "q": "secret"}, headers=auth(ADMIN)
    )
    assert other.status_code == 404
    assert "secret plans" not in other.text
    assert "No message matches." in other.text
    tenant_key = client.get("/inspector/sessions/s", params={"q": "secret"}, headers=auth(KEY_A))
    assert tenant_key.status_code == 403
    assert "secret plans" not in tenant_key.text


def test_the_budget_bar_keeps_the_chat_turns_reserve(http: Any, manager: ContextManager) -> None:
    """The session page's budget is the chat turns': SERVER_MAX_TOKENS less their reply reserve."""
    manager.add_user_message("s", "Book the train to Lyon")
    page = http.get("/inspector/sessions/s")
    assert "(1,000 reserved for the reply)" in page.text
