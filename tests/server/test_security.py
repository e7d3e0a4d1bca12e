"""Keys, tenants and limits: two tenants try each other's sessions; hostile ids, keys, bodies."""

from __future__ import annotations

import json
import sqlite3
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import pytest
import redis
from server_helpers import ADMIN, KEY_A, KEY_B, auth, free_port, keyed_settings, sse_events

from ctx_memory import ContextManager
from ctx_memory.config import load_settings
from ctx_memory.errors import ConfigurationError
from ctx_memory.server import create_app
from ctx_memory.server.keys import hash_api_key
from ctx_memory.server.tenants import settings_factory, tenant_settings

if TYPE_CHECKING:
    from pathlib import Path

HOSTILE_IDS = [
    "../b",
    "a/../../b",
    "..",
    "%2e%2e",
    "a%2Fb",
    "x?tenant=b",
    "x#frag",
    "<script>alert(1)</script>",
    "\u202eevil",
    "spaces and ; , = & + $",
    "ключ-сессии-🙂",
    "a:{b}:c",
    "b" * 256,
]


def _webtext(client: Any, key: str, sid: str, text: str) -> Any:
    return client.post(
        "/add_webtext/", json={"session_id": sid, "text_content": text}, headers=auth(key)
    )


@pytest.fixture
def keyed(serve: Any) -> Any:
    return serve(create_app(settings=keyed_settings()))


def test_requests_without_a_valid_key_are_401(keyed: Any) -> None:
    response = keyed.get("/v1/sessions")
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    assert response.json()["error"] == "unauthorized"
    for headers in (
        {"Authorization": "Bearer wrong"},
        {"Authorization": "Bearer"},
        {"Authorization": f"Basic {KEY_A}"},
        {"Authorization": f"Bearer {KEY_A}x"},
        {"Authorization": f"Bearer {KEY_A[:-1]}"},
        {"Authorization": "Bearer " + "k" * 20_000},
        {"X-API-Key": hash_api_key(KEY_A)},  # the stored hash is not a key
        {"Authorization": "Bearer caf\xe9".encode("latin-1")},
    ):
        assert keyed.get("/v1/sessions", headers=headers).status_code == 401, headers
    assert keyed.get("/v1/sessions", params={"api_key": KEY_A}).status_code == 401
    assert keyed.get("/get_memory_stats/", headers={"X-API-Key": KEY_A}).status_code == 200
    assert keyed.get("/healthz").status_code == 200


def test_two_tenants_cannot_read_write_list_or_export_each_other(keyed: Any) -> None:
    assert _webtext(keyed, KEY_A, "shared-name", "secret of A").status_code == 200
    assert _webtext(keyed, KEY_A, "only-a", "more of A").status_code == 200
    # B sees nothing of A, by any route
    assert keyed.get("/v1/sessions", headers=auth(KEY_B)).json()["sessions"] == []
    for path in (
        "/v1/sessions/shared-name",
        "/v1/sessions/shared-name/export",
        "/v1/sessions/shared-name/messages",
        "/v1/sessions/shared-name/stats",
        "/v1/sessions/only-a",
    ):
        assert keyed.get(path, headers=auth(KEY_B)).status_code == 404, path
    stats = keyed.get("/get_memory_stats/", params={"session_id": "only-a"}, headers=auth(KEY_B))
    assert stats.json() == {"session_id": "only-a", "exists": False}
    assert keyed.delete("/v1/sessions/only-a", headers=auth(KEY_B)).status_code == 404
    keyed.delete("/clear/", params={"session_id": "only-a"}, headers=auth(KEY_B))
    # B naming A's tenant is refused, not answered
    for path in ("/v1/sessions", "/v1/sessions/only-a", "/get_memory_stats/"):
        refused = keyed.get(path, params={"tenant": "a"}, headers=auth(KEY_B))
        assert refused.status_code == 403, path
    # B writes the same id: its own session; A's is untouched
    assert _webtext(keyed, KEY_B, "shared-name", "secret of B").status_code == 200
    chat = keyed.get(
        "/chat_response/",
        params={"session_id": "shared-name", "question": "secret?"},
        headers=auth(KEY_B),
    )
    done = json.loads(sse_events(chat.text)[-1][1])
    assert [s["url"] for s in done["sources_used"]] == [None]
    assert "secret of A" not in chat.text
    document_b = keyed.get("/v1/sessions/shared-name", headers=auth(KEY_B)).json()
    document_a = keyed.get("/v1/sessions/shared-name", headers=auth(KEY_A)).json()
    assert document_b["fetched_context"]["js_scraping"][0]["content"] == "secret of B"
    assert document_a["fetched_context"]["js_scraping"][0]["content"] == "secret of A"
    assert document_a["conversation_history"] == []
    assert keyed.get("/v1/sessions/only-a", headers=auth(KEY_A)).status_code == 200
    # B imports a document claiming A's session id: it lands in B's tenant only
    exported = keyed.get("/v1/sessions/only-a/export", headers=auth(KEY_A)).text
    hijack = json.loads(exported)
    hijack["fetched_context"]["js_scraping"][0]["content"] = "overwritten by B"
    put = keyed.post("/v1/sessions", params={"overwrite": "true"}, json=hijack, headers=auth(KEY_B))
    assert put.status_code == 201
    again = keyed.get("/v1/sessions/only-a", headers=auth(KEY_A)).json()
    assert again["fetched_context"]["js_scraping"][0]["content"] == "more of A"
    assert keyed.get("/v1/sessions", headers=auth(KEY_A)).json()["sessions"] == [
        "only-a",
        "shared-name",
    ]
    assert keyed.get("/v1/sessions", headers=auth(KEY_B)).json()["sessions"] == [
        "only-a",
        "shared-name",
    ]


def test_an_admin_key_names_the_tenant(keyed: Any) -> None:
    _webtext(keyed, KEY_A, "s", "A's")
    assert keyed.get("/v1/sessions", headers=auth(ADMIN)).status_code == 400
    listed = keyed.get("/v1/sessions", params={"tenant": "a"}, headers=auth(ADMIN)).json()
    assert listed["sessions"] == ["s"]
    assert (
        keyed.get("/v1/sessions", params={"tenant": "b"}, headers=auth(ADMIN)).json()["sessions"]
        == []
    )
    for tenant in ("c", "../a", "a:b", "", "A"):
        response = keyed.get("/v1/sessions", params={"tenant": tenant}, headers=auth(ADMIN))
        assert response.status_code in (400, 404), tenant
    assert keyed.get("/v1/whoami", headers=auth(KEY_A)).json() == {
        "tenant": "a",
        "admin": False,
        "key_id": hash_api_key(KEY_A)[:12],
    }


@pytest.mark.parametrize("sid", HOSTILE_IDS, ids=range(len(HOSTILE_IDS)))
def test_hostile_session_ids_stay_in_their_tenant(keyed: Any, sid: str) -> None:
    written = _webtext(keyed, KEY_A, sid, f"text of {sid}")
    assert written.status_code == 200, written.text
    # "." and ".." are dot segments a client removes: they go percent-encoded too
    path = f"/v1/sessions/{quote(sid, safe='').replace('.', '%2E')}"
    document = keyed.get(path, headers=auth(KEY_A))
    assert document.status_code == 200
    assert document.json()["metadata"]["session_id"] == sid
    assert keyed.get(path, headers=auth(KEY_B)).status_code == 404
    assert keyed.get(f"{path}/export", headers=auth(KEY_B)).status_code == 404
    assert keyed.get("/v1/sessions", headers=auth(KEY_A)).json()["sessions"] == [sid]
    assert keyed.get("/v1/sessions", headers=auth(KEY_B)).json()["sessions"] == []
    assert keyed.delete(path, headers=auth(KEY_A)).status_code == 200
    assert keyed.get("/v1/sessions", headers=auth(KEY_A)).json()["sessions"] == []


@pytest.mark.parametrize("sid", ["", "a\x00b", "tab\there", "line\nbreak", "x" * 257, "x" * 5000])
def test_invalid_session_ids_are_400(keyed: Any, sid: str) -> None:
    response = _webtext(keyed, KEY_A, sid, "text")
    assert response.status_code in (400, 422), response.text
    assert keyed.get("/v1/sessions", headers=auth(KEY_A)).json()["sessions"] == []


def test_body_and_webtext_size_limits(serve: Any) -> None:
    client = serve(
        create_app(
            settings=keyed_settings(server_max_body_bytes=2000, server_max_webtext_bytes=500)
        )
    )
    big = {"session_id": "s", "text_content": "x" * 3000}
    response = client.post("/add_webtext/", json=big, headers=auth(KEY_A))
    assert (response.status_code, response.json()["error"]) == (413, "too_large")

    def chunks() -> Any:  # no Content-Length: chunked transfer encoding
        for _ in range(10):
            yield b'{"session_id": "s", "text_content": "' + b"y" * 300

    chunked = client.post(
        "/add_webtext/",
        content=chunks(),
        headers={**auth(KEY_A), "content-type": "application/json"},
    )
    assert chunked.status_code == 413
    webtext = client.post(
        "/add_webtext/", json={"session_id": "s", "text_content": "é" * 300}, headers=auth(KEY_A)
    )
    assert (webtext.status_code, webtext.json()["error"]) == (413, "too_large")
    assert "600 bytes" in webtext.json()["detail"]
    assert client.get("/v1/sessions", headers=auth(KEY_A)).json()["sessions"] == []
    fits = client.post(
        "/add_webtext/", json={"session_id": "s", "text_content": "z" * 400}, headers=auth(KEY_A)
    )
    assert fits.status_code == 200


@pytest.mark.parametrize(
    ("content", "content_type"),
    [
        (b"{not json", "application/json"),
        (b"[1, 2, 3]", "application/json"),
        (b'{"session_id": "s"}', "application/json"),
        (b'{"session_id": "s", "text_content": 42}', "application/json"),
        (b'{"session_id": "s", "text_content": null}', "application/json"),
        (b"session_id=s&text_content=x", "application/x-www-form-urlencoded"),
        (b"\xff\xfe\x00garbage", "application/json"),
        (b"[" * 10_000 + b"]" * 10_000, "application/json"),
    ],
)
def test_malformed_bodies_are_clear_4xx(keyed: Any, content: bytes, content_type: str) -> None:
    response = keyed.post(
        "/add_webtext/", content=content, headers={**auth(KEY_A), "content-type": content_type}
    )
    assert 400 <= response.status_code < 500, response.text
    assert "error" in response.json()
    assert keyed.get("/v1/sessions", headers=auth(KEY_A)).json()["sessions"] == []


def test_rate_limits_are_per_key(serve: Any) -> None:
    client = serve(
        create_app(
            settings=keyed_settings(server_rate_limit_per_minute=6, server_rate_limit_burst=3)
        )
    )
    codes = [client.get("/v1/sessions", headers=auth(KEY_A)).status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = client.get("/v1/sessions", headers=auth(KEY_A))
    assert limited.json()["error"] == "rate_limited"
    assert 1 <= int(limited.headers["retry-after"]) <= 10
    assert client.get("/v1/sessions", headers=auth(KEY_B)).status_code == 200


def test_cors_allows_the_configured_extension_origin_only(serve: Any) -> None:
    origin = "chrome-extension://abcdefghijklmnop"
    client = serve(create_app(settings=keyed_settings(server_cors_origins=[origin])))
    preflight = {
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type",
    }
    ok = client.options("/add_webtext/", headers={"Origin": origin, **preflight})
    assert ok.status_code == 200
    assert ok.headers["access-control-allow-origin"] == origin
    evil = client.options("/add_webtext/", headers={"Origin": "https://evil.example", **preflight})
    assert "access-control-allow-origin" not in evil.headers
    simple = client.get("/v1/sessions", headers={"Origin": origin, **auth(KEY_A)})
    assert simple.headers["access-control-allow-origin"] == origin


def test_a_store_outage_is_503_with_retry_after(serve: Any) -> None:
    settings = load_settings(
        store="redis",
        redis_url=f"redis://127.0.0.1:{free_port()}/0",
        redis_max_retries=0,
        redis_socket_timeout=0.5,
    )
    client = serve(create_app(settings=settings))
    for response in (
        client.get("/v1/sessions"),
        client.get("/get_memory_stats/", params={"session_id": "s"}),
        client.get("/chat_response/", params={"session_id": "s", "question": "hi"}),
        client.post("/add_webtext/", json={"session_id": "s", "text_content": "t"}),
    ):
        assert response.status_code == 503
        assert response.headers["retry-after"] == "5"
        body = response.json()
        assert body["error"] == "store_unavailable"
        assert "127.0.0.1" not in body["detail"]  # nothing of the store's address


def test_sqlite_tenants_live_in_their_own_files(serve: Any, tmp_path: Path) -> None:
    path = tmp_path / "ctx.sqlite3"
    client = serve(create_app(settings=keyed_settings(store="sqlite", sqlite_path=str(path))))
    _webtext(client, KEY_A, "s", "text of A")
    _webtext(client, KEY_B, "s", "text of B")
    files = sorted(p.name for p in tmp_path.glob("*.sqlite3"))
    assert files == ["ctx.tenant-a.sqlite3", "ctx.tenant-b.sqlite3"]
    for tenant, text in (("a", "text of A"), ("b", "text of B")):
        with sqlite3.connect(tmp_path / f"ctx.tenant-{tenant}.sqlite3") as db:
            dump = "\n".join(db.iterdump())
        assert text in dump
        assert ("text of B" if tenant == "a" else "text of A") not in dump


@pytest.mark.parametrize("side", ["wal", "shm", "journal"])
def test_a_tenant_named_like_a_side_file_is_not_another_tenants_wal(
    tmp_path: Path, side: str
) -> None:
    """With no extension, tenant ``acme-wal`` got ``x.tenant-acme-wal``: ``acme``'s WAL."""
    settings = keyed_settings(store="sqlite", sqlite_path=str(tmp_path / "x"))
    own = {t: tenant_settings(settings, t).sqlite_path for t in ("acme", f"acme-{side}")}
    assert own["acme"] == str(tmp_path / "x.tenant-acme")
    assert own[f"acme-{side}"] == str(tmp_path / f"x.tenant-acme-{side}.sqlite3")
    managers = [ContextManager(settings=tenant_settings(settings, t)) for t in own]
    try:  # both open at once, as in the service: before, acme-wal opened acme's live WAL
        for tenant, manager in zip(own, managers, strict=True):
            manager.add_user_message("s", f"from {tenant}")
    finally:
        for manager in managers:
            manager.close()
    for tenant in own:
        with ContextManager(settings=tenant_settings(settings, tenant)) as manager:
            assert [m["content"] for m in manager.get_history("s")] == [f"from {tenant}"]


def test_a_side_file_tenants_file_of_the_release_before_is_not_silently_replaced(
    tmp_path: Path,
) -> None:
    """Its sessions stay in ``x.tenant-acme-wal``: the service says to rename the file
    rather than open a new, empty ``x.tenant-acme-wal.sqlite3``."""
    settings = keyed_settings(store="sqlite", sqlite_path=str(tmp_path / "x"))
    with ContextManager(store="sqlite", sqlite_path=str(tmp_path / "x.tenant-acme-wal")) as old:
        old.add_user_message("order-42", "kept")  # as the release before wrote it
    build = settings_factory(settings)
    for tenant in ("acme-wal", "acme"):  # acme would take the file for its WAL and drop it
        with pytest.raises(ConfigurationError, match=r"rename it to 'x\.tenant-acme-wal\.sqlite3'"):
            build(tenant)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.tenant-acme-wal"]
    build("other").close()  # other tenants are not concerned
    (tmp_path / "x.tenant-acme-wal").rename(tmp_path / "x.tenant-acme-wal.sqlite3")
    with build("acme-wal") as manager:
        assert manager.list_sessions() == ["order-42"]
    with build("acme") as manager:
        manager.add_user_message("a1", "acme's own")
    with build("acme-wal") as manager:
        assert manager.list_sessions() == ["order-42"]


@pytest.mark.redis
def test_redis_tenants_live_under_their_own_key_prefix(
    serve: Any, redis_url: str, key_prefix: str
) -> None:
    settings = keyed_settings(store="redis", redis_url=redis_url, redis_key_prefix=key_prefix)
    client = serve(create_app(settings=settings))
    try:
        _webtext(client, KEY_A, "s", "text of A")
        _webtext(client, KEY_B, "s", "text of B")
        assert (
            client.get("/v1/sessions/s", headers=auth(KEY_B)).json()["fetched_context"][
                "js_scraping"
            ][0]["content"]
            == "text of B"
        )
        raw = redis.Redis.from_url(redis_url)
        keys = {k.decode() for k in raw.scan_iter(match=f"{key_prefix}:*")}
        assert keys
        assert all(
            k.startswith((f"{key_prefix}:tenant:a:", f"{key_prefix}:tenant:b:")) for k in keys
        )
    finally:
        raw = redis.Redis.from_url(redis_url)
        for key in raw.scan_iter(match=f"{key_prefix}:*"):
            raw.delete(key)
        raw.close()


@pytest.mark.postgres
def test_postgres_tenants_live_in_their_own_schemas(
    serve: Any, postgres_url: str, pg_schema: str
) -> None:
    import psycopg

    from ctx_memory.server.tenants import postgres_tenant_schema

    settings = keyed_settings(
        store="postgres", postgres_url=postgres_url, postgres_schema=pg_schema
    )
    client = serve(create_app(settings=settings))
    schemas = {t: postgres_tenant_schema(pg_schema, t) for t in ("a", "b")}
    try:
        _webtext(client, KEY_A, "s", "text of A")
        _webtext(client, KEY_B, "s", "text of B")
        assert (
            client.get("/v1/sessions/s", headers=auth(KEY_A)).json()["fetched_context"][
                "js_scraping"
            ][0]["content"]
            == "text of A"
        )
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for tenant, schema in schemas.items():
                rows = conn.execute(f'SELECT count(*) FROM "{schema}".sessions').fetchone()
                assert rows == (1,), tenant
            found = conn.execute(
                "SELECT nspname FROM pg_namespace WHERE nspname LIKE %s",
                (pg_schema[:15] + "\\_t%",),
            ).fetchall()
            assert sorted(r[0] for r in found) == sorted(schemas.values())
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            for schema in schemas.values():
                conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def test_auth_on_without_keys_is_a_configuration_error() -> None:
    from ctx_memory.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="SERVER_AUTH"):
        create_app(settings=load_settings(server_auth="on"))


def test_auth_off_serves_openly_even_with_keys(serve: Any) -> None:
    client = serve(create_app(settings=keyed_settings(server_auth="off")))
    assert client.get("/v1/sessions").status_code == 200


def test_analytics_count_the_keys_own_tenant_only(keyed: Any) -> None:
    for i in range(3):
        _webtext(keyed, KEY_A, f"a-{i}", "A's page")
    _webtext(keyed, KEY_B, "b-0", "B's page")
    assert keyed.get("/v1/analytics", headers=auth(KEY_A)).json()["sessions"]["scanned"] == 3
    assert keyed.get("/v1/analytics", headers=auth(KEY_B)).json()["sessions"]["scanned"] == 1
    assert (
        keyed.get("/v1/analytics", params={"tenant": "a"}, headers=auth(KEY_B)).status_code == 403
    )
    admin = keyed.get("/v1/analytics", params={"tenant": "b"}, headers=auth(ADMIN)).json()
    assert admin["sessions"]["scanned"] == 1
    assert keyed.get("/inspector/sessions", headers=auth(KEY_A)).status_code == 403


def test_the_inspector_cookie_opens_no_api_route() -> None:
    """The login cookie is for the inspector's pages: the API wants a key in a header."""
    from ctx_memory.server.security import _inspector_page

    class Req:
        def __init__(self, path: str, root: str = "") -> None:
            self.scope = {"path": path, "root_path": root}

    assert _inspector_page(Req("/inspector"))  # type: ignore[arg-type]
    assert _inspector_page(Req("/inspector/sessions/a"))  # type: ignore[arg-type]
    assert _inspector_page(Req("/ctx/inspector/x", "/ctx"))  # type: ignore[arg-type]
    assert not _inspector_page(Req("/v1/sessions"))  # type: ignore[arg-type]
    assert not _inspector_page(Req("/inspectorx"))  # type: ignore[arg-type]
    assert not _inspector_page(Req("/ctx/v1/whoami", "/ctx"))  # type: ignore[arg-type]


def test_another_sites_page_cannot_change_a_keyless_server(serve: Any) -> None:
    """CSRF: what another site's page makes a browser send is refused; other clients pass."""
    extension = "chrome-extension://abcdefghijklmnop"
    settings = load_settings(store="memory", server_cors_origins=[extension])
    client = serve(create_app(settings=settings))
    client.post("/v1/sessions/victim/messages", json={"role": "user", "content": "keep"})
    evil = {"Origin": "https://evil.example"}
    form = {"content-type": "application/x-www-form-urlencoded"}
    assert client.post("/v1/sessions/victim/clear", headers={**evil, **form}).status_code == 403
    image = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Dest": "image"}
    chat = client.get("/chat_response/", params={"session_id": "victim", "question": "hi"},
                      headers=image)  # fmt: skip
    assert chat.status_code == 403
    assert chat.json()["error"] == "forbidden"
    assert client.post("/v1/sessions/victim/clear", headers={"Origin": "null"}).status_code == 403
    history = client.get("/v1/sessions/victim/messages").json()["messages"]
    assert [m["content"] for m in history] == ["keep"]  # nothing changed
    # The extension listed in SERVER_CORS_ORIGINS, the server's own pages, a typed URL and
    # clients that are not browsers all pass.
    listed = {"Origin": extension, "Sec-Fetch-Site": "cross-site"}
    own = {"Origin": str(client.base_url).rstrip("/"), "Sec-Fetch-Site": "same-origin"}
    for headers in (listed, own, {"Sec-Fetch-Site": "none"}, {}):
        added = client.post(
            "/v1/sessions/victim/messages", json={"role": "user", "content": "x"}, headers=headers
        )
        assert added.status_code == 201, headers
    # SERVER_CORS_ORIGINS = ["*"] lets any origin in, as CORS then does.
    anyone = serve(create_app(settings=load_settings(store="memory", server_cors_origins=["*"])))
    cross = {"Origin": "https://app.example", "Sec-Fetch-Site": "cross-site"}
    assert anyone.get("/v1/sessions", headers=cross).status_code == 200


def test_the_key_tool_refuses_unknown_options(capsys: pytest.CaptureFixture[str]) -> None:
    from ctx_memory.server.keys import _main

    with pytest.raises(SystemExit) as info:
        _main(["--admn"])  # a typo is no tenant key for "default"
    assert info.value.code == 2
    assert "ctxm_" not in capsys.readouterr().out
    assert _main(["acme", "--admin"]) == 0
    assert "SERVER_ADMIN_KEYS" in capsys.readouterr().out
