"""The session inspector: server-rendered HTML pages for admin keys, no JavaScript.

* ``/inspector/login``: a form taking an admin key; it sets a signed, ``HttpOnly``,
  ``SameSite=Strict`` cookie (:mod:`ctx_memory.server.security`) and never the key itself.
  A server without keys needs no login.
* ``/inspector/sessions``: the tenant's sessions, searched by id prefix, 50 a page, with
  each one's mode, messages, sources, tokens and last update.
* ``/inspector/sessions/{session_id}``: the session as the notebooks show it
  (:class:`~ctx_memory.display.SessionView`: metadata, system prompt, sources with links,
  history with roles, shared state, the token-budget bar against ``SERVER_MAX_TOKENS``),
  under a box searching its history (``q``: :func:`ctx_memory.recall.asearch_history`).
* ``/inspector/analytics``: :func:`ctx_memory.analytics.analyze`'s HTML report, filtered
  by time and mode.

An admin key picks the tenant with the ``tenant`` query parameter (a menu on every page).
Every page is sent with a Content-Security-Policy that allows no script, and every value
from a session is escaped (the view escapes its own).
"""

from __future__ import annotations

import html
from datetime import UTC, datetime
from typing import Annotated, Any
from urllib.parse import parse_qs, quote, urlencode

from fastapi import APIRouter, Depends, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.security import HTTPAuthorizationCredentials  # noqa: TC002 - FastAPI reads it

from ctx_memory.display import SessionView
from ctx_memory.recall import MAX_SEARCH_HITS, HistoryHit, asearch_history, record_text
from ctx_memory.schema import ContextMode
from ctx_memory.server.app import session_path_id
from ctx_memory.server.keys import Principal
from ctx_memory.server.security import (
    COOKIE_NAME,
    COOKIE_SECONDS,
    ServiceError,
    admin_principal,
    api_key_scheme,
    bearer_scheme,
    principal,
    resolve_tenant,
    sign_cookie,
    state_of,
)

__all__ = ["router"]

router = APIRouter(prefix="/inspector", include_in_schema=False)

PAGE_SIZE = 50
_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; img-src data:; "
        "form-action 'self'; frame-ancestors 'none'; base-uri 'self'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_CSS = """
body{font-family:-apple-system,BlinkMacSystemFont,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
 margin:0;color:#1f2328;background:#f6f8fa;font-size:14px}
header{background:#24292f;color:#fff;padding:10px 20px;display:flex;gap:18px;align-items:center}
header a{color:#fff;text-decoration:none;font-weight:600}
header .brand{font-size:16px;margin-right:12px}
header form{margin-left:auto;display:flex;gap:6px;align-items:center}
main{padding:16px 20px;max-width:1100px}
h1{font-size:20px;margin:4px 0 12px}
table.list{border-collapse:collapse;width:100%;background:#fff;border:1px solid #d0d7de}
table.list th,table.list td{padding:6px 10px;border-bottom:1px solid #eaeef2;text-align:left}
table.list th{background:#f6f8fa;color:#57606a;font-weight:600}
table.list td.num{text-align:right;font-variant-numeric:tabular-nums}
a{color:#0969da}
form.search{display:flex;gap:8px;margin:0 0 12px}
input,select,button{font:inherit;padding:4px 8px;border:1px solid #d0d7de;border-radius:6px}
button{background:#2da44e;color:#fff;border-color:#2a8f46;cursor:pointer}
.muted{color:#6e7781}.error{color:#cf222e;font-weight:600}
.pager{margin:12px 0;display:flex;gap:12px}
.login{max-width:380px;margin:60px auto;background:#fff;border:1px solid #d0d7de;
 border-radius:8px;padding:20px}
.login input{width:100%;box-sizing:border-box;margin:8px 0 12px}
h2{font-size:16px;margin:4px 0 8px}
table.list td{vertical-align:top}
.hit{white-space:pre-wrap;word-break:break-word;max-height:12em;overflow:auto}
#search-results{margin:0 0 16px}
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _root(request: Request) -> str:
    """Where the app is mounted (``--root-path``, e.g. ``/ctx``; ``""`` at the top)."""
    return str(request.scope.get("root_path") or "").rstrip("/")


def _page(
    request: Request,
    title: str,
    body: str,
    *,
    tenant: str | None = None,
    tenants: tuple[str, ...] = (),
    status: int = 200,
    nav: bool = True,
) -> HTMLResponse:
    menu = ""
    if nav:
        query = f"?{urlencode({'tenant': tenant})}" if tenant else ""
        choose = ""
        if len(tenants) > 1:
            options = "".join(
                f'<option value="{_e(t)}"{" selected" if t == tenant else ""}>{_e(t)}</option>'
                for t in tenants
            )
            choose = (
                '<form method="get" action="sessions">'
                '<label for="tenant">tenant</label>'
                f'<select id="tenant" name="tenant">{options}</select>'
                "<button type=submit>open</button></form>"
            )
        menu = (
            '<header><span class="brand">ctx_memory inspector</span>'
            f'<a href="sessions{query}">Sessions</a>'
            f'<a href="analytics{query}">Analytics</a>{choose}</header>'
        )
    document = (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        # Links are relative to the inspector, wherever a proxy mounts the app.
        f'<base href="{_e(_root(request))}/inspector/">'
        f"<title>{_e(title)} · ctx_memory</title><style>{_CSS}</style></head>"
        f"<body>{menu}<main>{body}</main></body></html>"
    )
    return HTMLResponse(document, status_code=status, headers=_HEADERS)


def _tenant(request: Request, who: Principal, asked: str | None) -> tuple[str, Any]:
    """The tenant a page shows: the one asked for, else the first (in name order)."""
    state = state_of(request)
    if not asked and who.admin and state.tenants.names:
        asked = state.tenants.names[0]
    name = resolve_tenant(state, who, asked or None)
    request.state.ctx_memory_tenant = name
    return name, state.tenants.get(name)


def _needs_login(request: Request, exc: ServiceError) -> Response | None:
    """The login page's redirect for a browser without a valid cookie."""
    if exc.status == 401:
        target = quote(
            str(request.url.path) + ("?" + request.url.query if request.url.query else "")
        )
        return RedirectResponse(f"{_root(request)}/inspector/login?next={target}", status_code=303)
    return None


async def _admin(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)],
    api_key: Annotated[str | None, Depends(api_key_scheme)],
) -> Principal:
    """The admin principal (a key or the login cookie), or a redirect to the login form."""
    try:
        return await admin_principal(await principal(request, bearer, api_key))
    except ServiceError as e:
        redirect = _needs_login(request, e)
        if redirect is not None:
            raise _Redirect(redirect) from None
        raise


class _Redirect(Exception):  # noqa: N818 - control flow, not an error
    def __init__(self, response: Response) -> None:
        self.response = response


Admin = Annotated[Principal, Depends(_admin)]


def install(app: Any) -> None:
    """Register the redirect handler the login flow needs (called by ``create_app``)."""

    async def redirect(_: Request, exc: Exception) -> Response:
        assert isinstance(exc, _Redirect)
        return exc.response

    app.add_exception_handler(_Redirect, redirect)


# --------------------------------------------------------------------------- login


def _safe_next(request: Request, target: str | None) -> str:
    """``target`` if it is a page of this inspector, else the sessions list."""
    home = f"{_root(request)}/inspector"
    if target and target.startswith(home) and "//" not in target and "\\" not in target:
        return target
    return f"{home}/sessions"


def _login_form(next_url: str, error: str | None = None) -> str:
    problem = f'<p class="error">{_e(error)}</p>' if error else ""
    return (
        '<div class="login"><h1>Inspector login</h1>'
        '<p class="muted">An admin key (SERVER_ADMIN_KEYS) opens the inspector.</p>'
        f'{problem}<form method="post" action="login">'
        f'<input type="hidden" name="next" value="{_e(next_url)}">'
        '<label for="key">Admin key</label>'
        '<input id="key" name="key" type="password" autocomplete="current-password" required>'
        '<button type="submit">Log in</button></form></div>'
    )


@router.get("")
@router.get("/")
async def home(request: Request) -> Response:
    """The sessions list."""
    return RedirectResponse(f"{_root(request)}/inspector/sessions", status_code=303)


@router.get("/login")
async def login_page(request: Request, next: str | None = None) -> Response:
    """The login form (straight to the sessions on a server without keys)."""
    if not state_of(request).auth:
        return RedirectResponse(_safe_next(request, next), status_code=303)
    return _page(request, "Log in", _login_form(_safe_next(request, next)), nav=False)


@router.post("/login")
async def login(request: Request) -> Response:
    """Check the admin key; set the signed cookie and go on, or show the form again."""
    state = state_of(request)
    form = parse_qs((await request.body()).decode("utf-8", "replace"), max_num_fields=4)
    key = (form.get("key") or [""])[0]
    next_url = _safe_next(request, (form.get("next") or [""])[0])
    who = state.keys.identify(key) if state.auth else None
    if who is None or not who.admin:
        wait = state.bucket.take(f"login:{request.client.host if request.client else '-'}")
        if wait > 0:
            raise ServiceError(429, "rate_limited", "too many attempts", {"Retry-After": "60"})
        return _page(
            request,
            "Log in",
            _login_form(next_url, "That is not an admin key."),
            status=401,
            nav=False,
        )
    response = RedirectResponse(next_url, status_code=303)
    response.set_cookie(
        COOKIE_NAME,
        sign_cookie(state.cookie_secret, who.key_id),
        max_age=COOKIE_SECONDS,
        path=f"{_root(request)}/inspector",
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
    )
    return response


@router.post("/logout")
async def logout(request: Request) -> Response:
    """Forget the cookie."""
    home = f"{_root(request)}/inspector"
    response = RedirectResponse(f"{home}/login", status_code=303)
    response.delete_cookie(COOKIE_NAME, path=home)
    return response


# --------------------------------------------------------------------------- pages


def _cell_time(value: object) -> str:
    text = str(value or "")
    return _e(text[:19].replace("T", " ")) if text else '<span class="muted">-</span>'


@router.get("/sessions")
async def sessions_page(
    request: Request,
    who: Admin,
    *,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    prefix: Annotated[str, Query(max_length=1024)] = "",
    cursor: Annotated[str | None, Query(max_length=4096)] = None,
) -> Response:
    """A page of sessions with their figures, searched by id prefix."""
    name, manager = _tenant(request, who, tenant)
    page = await manager.alist_sessions(prefix, limit=PAGE_SIZE + 1, cursor=cursor)
    more = len(page) > PAGE_SIZE
    page = page[:PAGE_SIZE]
    rows = []
    for sid in page:
        stats = await manager.aget_memory_stats(sid)
        if not stats.get("exists"):
            continue  # expired between the list and now
        link = _session_link(sid, name)
        rows.append(
            "<tr>"
            f'<td><a href="{_e(link)}">{_e(sid)}</a></td>'
            f"<td>{_e(stats.get('mode') or '-')}</td>"
            f'<td class="num">{int(stats.get("message_count", 0)):,}</td>'
            f'<td class="num">{int(stats.get("fetched_item_count", 0)):,}</td>'
            f'<td class="num">{int(stats.get("total_tokens", 0)):,}</td>'
            f"<td>{_cell_time(stats.get('last_updated'))}</td>"
            "</tr>"
        )
    table = (
        '<table class="list" id="sessions"><thead><tr><th>session</th><th>mode</th>'
        "<th>messages</th><th>sources</th><th>tokens</th><th>last update</th></tr></thead>"
        f"<tbody>{''.join(rows)}</tbody></table>"
        if rows
        else '<p class="muted" id="no-sessions">No sessions here.</p>'
    )
    pager = []
    if cursor:
        first = urlencode({"tenant": name, "prefix": prefix})
        pager.append(f'<a href="sessions?{_e(first)}">« first page</a>')
    if more:
        following = urlencode({"tenant": name, "prefix": prefix, "cursor": page[-1]})
        pager.append(f'<a id="next-page" href="sessions?{_e(following)}">next page »</a>')
    search = (
        '<form class="search" method="get" action="sessions">'
        f'<input type="hidden" name="tenant" value="{_e(name)}">'
        f'<input id="prefix" name="prefix" value="{_e(prefix)}" placeholder="session id prefix">'
        '<button type="submit">Search</button></form>'
    )
    body = (
        f'<h1>Sessions of {_e(name)}</h1>{search}{table}<div class="pager">{"".join(pager)}</div>'
    )
    return _page(request, "Sessions", body, tenant=name, tenants=state_of(request).tenants.names)


def _session_link(session_id: str, tenant: str, page: str = "session") -> str:
    """A link to a session's page (or its export), relative to the inspector.

    The id goes in the query string: in a path, the ids ``.`` and ``..`` are dot segments
    that browsers resolve away, even percent-encoded.
    """
    return f"{page}?{urlencode({'id': session_id, 'tenant': tenant})}"


def _search_form(tenant: str, session_id: str, q: str, messages: int) -> str:
    return (
        '<form class="search" method="get" action="session">'
        f'<input type="hidden" name="id" value="{_e(session_id)}">'
        f'<input type="hidden" name="tenant" value="{_e(tenant)}">'
        f'<input type="hidden" name="messages" value="{messages}">'
        f'<input id="q" name="q" value="{_e(q)}" placeholder="words in this history">'
        '<button type="submit">Search</button></form>'
    )


def _search_results(hits: list[HistoryHit]) -> str:
    """The hits, best first, numbered as the conversation below numbers its messages."""
    if not hits:
        return '<p class="muted" id="no-hits">No message matches.</p>'
    rows = "".join(
        "<tr>"
        f'<td class="num">#{hit.position + 1}</td>'
        f"<td>{_e(hit.message.get('role', '?'))}</td>"
        f'<td class="num">{hit.score:.3f}</td>'
        f"<td>{_e(', '.join(hit.terms))}</td>"
        f'<td><div class="hit">{_e(record_text(hit.message))}</div></td>'
        "</tr>"
        for hit in hits
    )
    return (
        '<table class="list" id="hits"><thead><tr><th>#</th><th>role</th><th>score</th>'
        f"<th>matched terms</th><th>message</th></tr></thead><tbody>{rows}</tbody></table>"
    )


@router.get("/sessions/{session_id}")
async def session_page(
    request: Request,
    who: Admin,
    session_id: str,
    *,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    messages: Annotated[int, Query(ge=1, le=5000)] = 200,
    q: Annotated[str, Query(max_length=100_000)] = "",
) -> Response:
    """One session, rendered by :class:`~ctx_memory.display.SessionView`, and a search box."""
    return await _session(request, who, session_path_id(session_id), tenant, messages, q)


@router.get("/session")
async def session_query_page(
    request: Request,
    who: Admin,
    *,
    id: Annotated[str, Query(max_length=1024)],
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    messages: Annotated[int, Query(ge=1, le=5000)] = 200,
    q: Annotated[str, Query(max_length=100_000)] = "",
) -> Response:
    """One session, its id in the query string (what the inspector's own links use)."""
    return await _session(request, who, id, tenant, messages, q)


@router.get("/session/export")
async def session_export(
    request: Request,
    who: Admin,
    *,
    id: Annotated[str, Query(max_length=1024)],
    tenant: Annotated[str | None, Query(max_length=64)] = None,
) -> Response:
    """The session document as a JSON download, for the admin the page was shown to."""
    _, manager = _tenant(request, who, tenant)
    text = await manager.aexport_session(id)
    headers = {"Content-Disposition": 'attachment; filename="session.json"'}
    return Response(text, media_type="application/json", headers=headers)


async def _session(  # noqa: PLR0917 - the page's query, passed on
    request: Request, who: Principal, sid: str, tenant: str | None, messages: int, q: str
) -> Response:
    name, manager = _tenant(request, who, tenant)
    state = state_of(request)
    view = SessionView(  # the budget bar as the chat turns spend it: their size and reserve
        manager,
        sid,
        budget=state.settings.server_max_tokens,
        reserve_tokens=state.chat(manager).assembler.reserve_tokens,
        max_messages=messages,
    )
    fragment = await run_in_threadpool(view.to_html)
    back = f"sessions?{urlencode({'tenant': name})}"
    export = _session_link(sid, name, "session/export")
    results = ""
    if q.strip():
        hits = _search_results(await asearch_history(manager, sid, q, k=MAX_SEARCH_HITS))
        results = f'<section id="search-results"><h2>Search results</h2>{hits}</section>'
    body = (
        f'<p><a href="{_e(back)}">« sessions</a> · <a href="{_e(export)}">export JSON</a></p>'
        f"{_search_form(name, sid, q, messages)}{results}"
        f'<div id="session">{fragment}</div>'
    )
    found = await manager.asession_exists(sid)
    return _page(
        request,
        f"Session {sid[:60]}",
        body,
        tenant=name,
        status=200 if found else 404,
        tenants=state.tenants.names,
    )


@router.get("/analytics")
async def analytics_page(
    request: Request,
    who: Admin,
    *,
    tenant: Annotated[str | None, Query(max_length=64)] = None,
    since: Annotated[str, Query(max_length=64)] = "",
    until: Annotated[str, Query(max_length=64)] = "",
    mode: Annotated[str, Query(max_length=16)] = "",
) -> Response:
    """The analytics report of the tenant's sessions (empty filters: none)."""
    from ctx_memory.server.api import load_analyze, utc_bound  # noqa: PLC0415

    name, manager = _tenant(request, who, tenant)
    try:
        start, end = utc_bound(_when(since)), utc_bound(_when(until))
        chosen = ContextMode(mode) if mode else None
    except ValueError:
        raise ServiceError(
            400,
            "bad_request",
            "since/until must be ISO 8601 times (years 1 to 9999 in UTC) and mode one of"
            " normal, thinking, research",
        ) from None
    modes = "".join(
        f'<option value="{m.value}"{" selected" if chosen is m else ""}>{m.value}</option>'
        for m in ContextMode
    )
    filters = (
        '<form class="search" method="get" action="analytics">'
        f'<input type="hidden" name="tenant" value="{_e(name)}">'
        '<label>since (UTC) <input type="datetime-local" step="1" name="since"'
        f' value="{_e(_local(start))}"></label><label>until (UTC) <input'
        f' type="datetime-local" step="1" name="until" value="{_e(_local(end))}">'
        f'</label><label>mode <select name="mode"><option value="">any</option>{modes}</select>'
        '</label><button type="submit">Apply</button></form>'
    )
    try:
        analyze = load_analyze()
    except ServiceError as e:
        body = f"<h1>Analytics</h1><p class='muted' id='analytics'>{_e(e.detail)}</p>"
        return _page(
            request,
            "Analytics",
            body,
            tenant=name,
            status=501,
            tenants=state_of(request).tenants.names,
        )
    report = await run_in_threadpool(
        analyze, manager, since=start, until=end, mode=chosen.value if chosen else None
    )
    body = f'<h1>Analytics of {_e(name)}</h1>{filters}<div id="analytics">{report.to_html()}</div>'
    return _page(request, "Analytics", body, tenant=name, tenants=state_of(request).tenants.names)


def _when(text: str) -> datetime | None:
    return datetime.fromisoformat(text.strip()) if text.strip() else None


def _local(value: datetime | None) -> str:
    """A filter time for the form's ``datetime-local`` field, in UTC.

    A time without an offset is read as UTC, so a given offset is applied, not dropped.
    """
    if value is None:
        return ""
    if value.tzinfo is not None:
        value = value.astimezone(UTC).replace(tzinfo=None)
    return value.isoformat(timespec="seconds")  # strftime's %Y drops year 1's zeros
