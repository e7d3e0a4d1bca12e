"""The routes: seed 001's six endpoints and the versioned JSON API (``/v1``).

Seed 001's paths and parameters, as its browser extension calls them; the session id is
read as :class:`~ctx_memory.web.ContextIntegration` reads it (``session_id`` /
``sessionId`` / ``session`` in the query string or JSON body, or the ``X-Session-ID``
header):

=====================================  ===============================================
``GET /chat_response/``                chat (thinking mode unless ``mode`` says otherwise),
                                       ``question``, page metadata; SSE (``stream=false``:
                                       JSON)
``GET /get_adv_response/``             research mode: search, record the results, answer
                                       citing them; SSE (``stream=false``: JSON)
``POST /agent_chat_response/``         the agent (JSON body ``question``, ...)
``POST /add_webtext/``                 text the extension scraped (``text_content``,
                                       ``current_url``, ``title``) as ``js_scraping``
``DELETE /clear/``                     clear the history (``preserve_fetched=true`` keeps
                                       the fetched sources)
``GET /get_memory_stats/``             the session's statistics (without a session id:
                                       the tenant's store)
=====================================  ===============================================

``/v1`` holds the same operations with the session in the path, and sessions themselves:
list (paged), get, export, import, delete, messages, search (the stored messages that best
match some words) and the preview of the prompt a chat turn would send. Every route takes
the tenant's manager from :func:`~ctx_memory.server.security.tenant_manager`.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from langchain_core.messages import HumanMessage
from pydantic import AfterValidator, AliasChoices, BaseModel, BeforeValidator, ConfigDict, Field

from ctx_memory.errors import SessionExistsError
from ctx_memory.recall import MAX_SEARCH_HITS, asearch_history
from ctx_memory.schema import ContextMode
from ctx_memory.server.app import session_path_id
from ctx_memory.server.keys import Principal  # noqa: TC001 - FastAPI reads the annotation
from ctx_memory.server.security import Manager, ServiceError, principal, state_of
from ctx_memory.server.turns import run_agent, run_chat
from ctx_memory.web import ContextIntegration

if TYPE_CHECKING:
    from ctx_memory.manager import ContextManager
    from ctx_memory.prompt import ContextPromptAssembler
    from ctx_memory.server.app import ServerState

__all__ = ["router"]

router = APIRouter()

MAX_PAGE = 500
MAX_PROMPT_TOKENS = 10_000_000
"""The largest ``max_tokens`` a prompt preview takes (above any model's context window)."""

# --------------------------------------------------------------------------- parameters

Question = Annotated[str, Query(min_length=1, max_length=100_000, description="The question.")]
Words = Annotated[str, Query(min_length=1, max_length=100_000, description="What to look for.")]
SessionQuery = Annotated[
    str | None,
    Query(
        max_length=1024,
        description="The session (also sessionId/session, or the X-Session-ID header).",
    ),
]
ModeQuery = Annotated[
    ContextMode | None, Query(description="normal, thinking or research (default per route).")
]
UrlQuery = Annotated[str | None, Query(max_length=8192, description="The page the user is on.")]
ZoneQuery = Annotated[str | None, Query(max_length=64, description="The user's time zone.")]
TimeQuery = Annotated[str | None, Query(max_length=64, description="The user's local time.")]
StreamQuery = Annotated[bool, Query(description="Stream Server-Sent Events (false: JSON).")]
SessionPath = Annotated[
    str, Path(max_length=4096, description="The session id (percent-encoded, '/' as %2F).")
]


def _page(
    current_url: str | None, user_timezone: str | None, user_time: str | None
) -> dict[str, str | None]:
    return {"current_url": current_url, "user_timezone": user_timezone, "user_time": user_time}


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, str_max_length=10_000_000)


class TurnBody(_Body):
    """A question for a chat, research or agent turn, with the page it was asked on."""

    question: str = Field(
        min_length=1,
        max_length=100_000,
        validation_alias=AliasChoices("question", "message", "query"),
    )
    session_id: str | None = Field(
        default=None,
        max_length=1024,
        validation_alias=AliasChoices("session_id", "sessionId", "session"),
    )
    mode: ContextMode | None = None
    current_url: str | None = Field(
        default=None, max_length=8192, validation_alias=AliasChoices("current_url", "url")
    )
    user_timezone: str | None = Field(
        default=None, max_length=64, validation_alias=AliasChoices("user_timezone", "timezone")
    )
    user_time: str | None = Field(default=None, max_length=64)
    stream: bool = True


class WebText(_Body):
    """Text a browser extension scraped from the user's page."""

    text_content: str = Field(
        min_length=1, validation_alias=AliasChoices("text_content", "text", "content")
    )
    session_id: str | None = Field(
        default=None,
        max_length=1024,
        validation_alias=AliasChoices("session_id", "sessionId", "session"),
    )
    current_url: str | None = Field(
        default=None, max_length=8192, validation_alias=AliasChoices("current_url", "url")
    )
    title: str | None = Field(default=None, max_length=1000)
    source_type: str = Field(default="js_scraping", min_length=1, max_length=64)


class NewMessage(_Body):
    """A message to append (``role``: user, assistant, system or tool)."""

    role: str = Field(max_length=16)
    content: str | list[Any]
    metadata: dict[str, Any] | None = None
    name: str | None = Field(default=None, max_length=256)
    id: str | None = Field(
        default=None,
        max_length=256,
        description="The message's id: sent again (a retry), the message is stored once.",
    )


# --------------------------------------------------------------------------- shared steps


async def _session_id(manager: Any, request: Request) -> str:
    """The request's session id where ``ContextIntegration`` looks: query, header, body."""
    return str(await ContextIntegration(manager).aget_session_id(request))


async def _add_webtext(
    request: Request, manager: Any, session_id: str, body: WebText
) -> dict[str, Any]:
    limit = state_of(request).settings.server_max_webtext_bytes
    size = len(body.text_content.encode("utf-8", "surrogatepass"))
    if size > limit:
        msg = f"text_content is {size} bytes; the limit is {limit} bytes"
        raise ServiceError(413, "too_large", msg)
    item = await ContextIntegration(manager).aadd_web_content(
        None,
        body.text_content,
        body.current_url,
        body.source_type,
        session_id=session_id,
        title=body.title,
    )
    return {
        "session_id": session_id,
        "source_type": item.get("source_type"),
        "url": item.get("url"),
        "token_count": item.get("token_count"),
        "timestamp": item.get("timestamp"),
    }


async def _require(manager: Any, session_id: str) -> None:
    if not await manager.asession_exists(session_id):
        from ctx_memory.errors import SessionNotFoundError  # noqa: PLC0415

        raise SessionNotFoundError(session_id)


def _turn_assembler(
    state: ServerState, manager: ContextManager, max_tokens: int | None
) -> ContextPromptAssembler:
    """The assembler of the tenant's chat turns, sized to ``max_tokens`` when given.

    Raises:
        RequestValidationError: ``max_tokens`` leaves nothing beyond the reply's reserve.
    """
    assembler = state.chat(manager).assembler
    if max_tokens is None or max_tokens == assembler.max_tokens:
        return assembler
    if max_tokens <= assembler.reserve_tokens:
        reserve = assembler.reserve_tokens
        msg = f"Input should be greater than {reserve} (the tokens kept for the reply)"
        error = {"loc": ("query", "max_tokens"), "msg": msg, "type": "greater_than"}
        raise RequestValidationError([error])
    sized = copy.copy(assembler)  # as ContextualChat copies it: same options, same caches
    sized.max_tokens = max_tokens
    return sized


# --------------------------------------------------------------------------- seed 001


@router.get("/chat_response/", tags=["seed"], summary="Chat (thinking mode), streamed")
async def chat_response(
    request: Request,
    manager: Manager,
    *,
    question: Question,
    session_id: SessionQuery = None,
    mode: ModeQuery = None,
    current_url: UrlQuery = None,
    user_timezone: ZoneQuery = None,
    user_time: TimeQuery = None,
    stream: StreamQuery = True,
) -> Response:
    """Answer ``question`` in the session and record the turn (SSE unless ``stream=false``)."""
    sid = await _session_id(manager, request)
    return await run_chat(
        state_of(request),
        manager,
        sid,
        question,
        mode=mode or ContextMode.THINKING,
        page=_page(current_url, user_timezone, user_time),
        research=False,
        stream=stream,
    )


@router.get("/get_adv_response/", tags=["seed"], summary="Research: search, then answer")
async def get_adv_response(
    request: Request,
    manager: Manager,
    *,
    question: Question,
    session_id: SessionQuery = None,
    current_url: UrlQuery = None,
    user_timezone: ZoneQuery = None,
    user_time: TimeQuery = None,
    stream: StreamQuery = True,
) -> Response:
    """Search, record the results as ``web_search`` sources, answer citing them as ``[n]``."""
    sid = await _session_id(manager, request)
    return await run_chat(
        state_of(request),
        manager,
        sid,
        question,
        mode=ContextMode.RESEARCH,
        page=_page(current_url, user_timezone, user_time),
        research=True,
        stream=stream,
    )


@router.post("/agent_chat_response/", tags=["seed"], summary="The agent")
async def agent_chat_response(request: Request, manager: Manager, body: TurnBody) -> Any:
    """Run the ``create_agent`` agent with ``ContextMiddleware`` on the question."""
    sid = await _session_id(manager, request)  # query, header, then body (docs/web.md)
    return await run_agent(
        state_of(request),
        manager,
        sid,
        body.question,
        mode=body.mode or ContextMode.THINKING,
        page=_page(body.current_url, body.user_timezone, body.user_time),
    )


@router.post("/add_webtext/", tags=["seed"], summary="Text scraped from the user's page")
async def add_webtext(request: Request, manager: Manager, body: WebText) -> Any:
    """Store page text as a ``js_scraping`` source (size limit: ``SERVER_MAX_WEBTEXT_BYTES``)."""
    sid = await _session_id(manager, request)  # query, header, then body (docs/web.md)
    return await _add_webtext(request, manager, sid, body)


@router.delete("/clear/", tags=["seed"], summary="Clear the history")
async def clear(
    request: Request,
    manager: Manager,
    session_id: SessionQuery = None,
    preserve_fetched: Annotated[bool, Query(description="Keep the fetched sources.")] = False,
) -> Any:
    """Clear the session's history (and its sources unless ``preserve_fetched``)."""
    sid = await _session_id(manager, request)
    cleared = await manager.aclear(sid, preserve_fetched=preserve_fetched)
    return {"session_id": sid, "cleared": cleared}


@router.get("/get_memory_stats/", tags=["seed"], summary="Session statistics")
async def get_memory_stats(
    request: Request, manager: Manager, session_id: SessionQuery = None
) -> Any:
    """The session's token and size statistics (no session id: the tenant's store)."""
    sid = await ContextIntegration(manager).aget_session_id(request, default="")
    return JSONResponse(await manager.aget_memory_stats(sid or None))


# --------------------------------------------------------------------------- /v1


@router.get("/healthz", tags=["service"], summary="Liveness")
async def healthz() -> Any:
    """``{"status": "ok"}`` while the process serves (no key needed, no store call)."""
    return {"status": "ok"}


@router.get("/v1/sessions", tags=["sessions"], summary="List sessions (paged)")
async def list_sessions(
    manager: Manager,
    prefix: Annotated[str, Query(max_length=1024, description="Ids starting with this.")] = "",
    limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = 50,
    cursor: Annotated[
        str | None, Query(max_length=4096, description="The previous page's next_cursor.")
    ] = None,
) -> Any:
    """A page of session ids in code-point order, and the cursor of the next page."""
    page = await manager.alist_sessions(prefix, limit=limit + 1, cursor=cursor)
    more = len(page) > limit
    page = page[:limit]
    return {"sessions": page, "next_cursor": page[-1] if more else None}


@router.post("/v1/sessions", tags=["sessions"], status_code=201, summary="Import a session")
async def import_session(
    request: Request,
    manager: Manager,
    document: Annotated[dict[str, Any], Body(description="An exported session document.")],
    overwrite: Annotated[bool, Query(description="Replace a session with this id.")] = False,
) -> Any:
    """Store an exported document whole (all or nothing); 409 if it exists and not ``overwrite``."""
    try:
        sid = await manager.aimport_session(document, overwrite=overwrite)
    except SessionExistsError:
        raise ServiceError(
            409, "conflict", "a session with this id exists (overwrite=true)"
        ) from None
    return {"session_id": sid}


@router.get("/v1/sessions/{session_id}", tags=["sessions"], summary="Get a session")
async def get_session(manager: Manager, session_id: SessionPath) -> Any:
    """The whole session document."""
    document = await manager.aget_context(session_path_id(session_id))
    if not document:
        from ctx_memory.errors import SessionNotFoundError  # noqa: PLC0415

        raise SessionNotFoundError(session_path_id(session_id))
    return JSONResponse(document)


@router.put("/v1/sessions/{session_id}", tags=["sessions"], summary="Import under this id")
async def put_session(
    manager: Manager,
    session_id: SessionPath,
    document: Annotated[dict[str, Any], Body(description="An exported session document.")],
) -> Any:
    """Store a document as this session, replacing it if it exists."""
    sid = await manager.aimport_session(
        document, session_id=session_path_id(session_id), overwrite=True
    )
    return {"session_id": sid}


@router.delete("/v1/sessions/{session_id}", tags=["sessions"], summary="Delete a session")
async def delete_session(manager: Manager, session_id: SessionPath) -> Any:
    """Delete the session; 404 if there was none."""
    sid = session_path_id(session_id)
    if not await manager.adelete_context(sid):
        from ctx_memory.errors import SessionNotFoundError  # noqa: PLC0415

        raise SessionNotFoundError(sid)
    return {"session_id": sid, "deleted": True}


@router.get("/v1/sessions/{session_id}/export", tags=["sessions"], summary="Export a session")
async def export_session(manager: Manager, session_id: SessionPath) -> Response:
    """The session document as a JSON download (what ``POST /v1/sessions`` imports)."""
    text = await manager.aexport_session(session_path_id(session_id))
    headers = {"Content-Disposition": 'attachment; filename="session.json"'}
    return Response(text, media_type="application/json", headers=headers)


@router.get("/v1/sessions/{session_id}/messages", tags=["sessions"], summary="Messages")
async def get_messages(
    manager: Manager,
    session_id: SessionPath,
    last_k: Annotated[int | None, Query(ge=0, le=100_000, description="Only the newest k.")] = None,
) -> Any:
    """The stored message records, oldest first."""
    sid = session_path_id(session_id)
    await _require(manager, sid)
    return {"session_id": sid, "messages": await manager.aget_history(sid, last_k)}


@router.post(
    "/v1/sessions/{session_id}/messages", tags=["sessions"], status_code=201, summary="Append"
)
async def add_message(manager: Manager, session_id: SessionPath, body: NewMessage) -> Any:
    """Append one message; return the stored record (a known ``id`` is not stored again)."""
    if body.id is None:
        return await manager.aadd_message(
            session_path_id(session_id),
            body.role,
            body.content,
            metadata=body.metadata,
            name=body.name,
        )
    sid = session_path_id(session_id)
    (record,), added = await manager._aadd_counted(sid, [body.model_dump(exclude_none=True)])
    if added:
        return record
    # A retry of a stored id wrote nothing: answer what the session holds under it.
    return await manager.aget_message(sid, body.id) or record


@router.get("/v1/sessions/{session_id}/search", tags=["sessions"], summary="Search the history")
async def search_session(
    manager: Manager,
    session_id: SessionPath,
    q: Words,
    limit: Annotated[
        int, Query(ge=1, le=MAX_SEARCH_HITS, description="At most this many hits.")
    ] = 10,
) -> Any:
    """The stored messages that best match ``q``, best first; 404 if the session does not exist.

    Each hit is :meth:`ctx_memory.recall.HistoryHit.as_dict`: ``position`` (0 is the first
    message), ``score``, ``terms`` (the query's terms it holds) and the stored ``message``.
    """
    sid = session_path_id(session_id)
    await _require(manager, sid)
    hits = await asearch_history(manager, sid, q, k=limit)
    return {"session_id": sid, "query": q, "hits": [hit.as_dict() for hit in hits]}


@router.get("/v1/sessions/{session_id}/prompt", tags=["turns"], summary="Preview a chat prompt")
async def preview_prompt(
    request: Request,
    manager: Manager,
    session_id: SessionPath,
    q: Question,
    max_tokens: Annotated[
        int | None,
        Query(
            ge=1, le=MAX_PROMPT_TOKENS, description="The context size (default SERVER_MAX_TOKENS)."
        ),
    ] = None,
) -> Any:
    """The prompt a chat turn would send for question ``q``: no model called, nothing written.

    ``messages``, ``sources``, ``report`` and ``model_kwargs`` are those of
    ``AssembledPrompt.as_dict()`` (the OpenAI chat format, the numbered sources, the budget
    report, the model options). 404 if the session does not exist, 422 ``over_budget`` if
    the question alone does not fit.
    """
    sid = session_path_id(session_id)
    await _require(manager, sid)
    assembler = _turn_assembler(state_of(request), manager, max_tokens)
    preview = (await assembler.abuild(sid, [HumanMessage(q)], query=q)).as_dict()
    return {"session_id": sid, "question": q, **preview}


@router.get("/v1/sessions/{session_id}/stats", tags=["sessions"], summary="Statistics")
async def session_stats(manager: Manager, session_id: SessionPath) -> Any:
    """The session's statistics; 404 if it does not exist."""
    sid = session_path_id(session_id)
    stats = await manager.aget_memory_stats(sid)
    if not stats.get("exists"):
        from ctx_memory.errors import SessionNotFoundError  # noqa: PLC0415

        raise SessionNotFoundError(sid)
    return JSONResponse(stats)


@router.post("/v1/sessions/{session_id}/webtext", tags=["sessions"], summary="Page text")
async def post_webtext(
    request: Request, manager: Manager, session_id: SessionPath, body: WebText
) -> Any:
    """As ``POST /add_webtext/``, for this session."""
    return await _add_webtext(request, manager, session_path_id(session_id), body)


@router.post("/v1/sessions/{session_id}/clear", tags=["sessions"], summary="Clear history")
async def post_clear(
    manager: Manager,
    session_id: SessionPath,
    preserve_fetched: Annotated[bool, Query(description="Keep the fetched sources.")] = False,
) -> Any:
    """As ``DELETE /clear/``, for this session."""
    sid = session_path_id(session_id)
    return {
        "session_id": sid,
        "cleared": await manager.aclear(sid, preserve_fetched=preserve_fetched),
    }


@router.post("/v1/sessions/{session_id}/chat", tags=["turns"], summary="Chat turn")
async def post_chat(
    request: Request, manager: Manager, session_id: SessionPath, body: TurnBody
) -> Response:
    """As ``GET /chat_response/``: SSE unless ``"stream": false``."""
    return await run_chat(
        state_of(request),
        manager,
        session_path_id(session_id),
        body.question,
        mode=body.mode or ContextMode.THINKING,
        page=_page(body.current_url, body.user_timezone, body.user_time),
        research=False,
        stream=body.stream,
    )


@router.post("/v1/sessions/{session_id}/research", tags=["turns"], summary="Research turn")
async def post_research(
    request: Request, manager: Manager, session_id: SessionPath, body: TurnBody
) -> Response:
    """As ``GET /get_adv_response/``: SSE unless ``"stream": false``."""
    return await run_chat(
        state_of(request),
        manager,
        session_path_id(session_id),
        body.question,
        mode=ContextMode.RESEARCH,
        page=_page(body.current_url, body.user_timezone, body.user_time),
        research=True,
        stream=body.stream,
    )


@router.post("/v1/sessions/{session_id}/agent", tags=["turns"], summary="Agent turn")
async def post_agent(
    request: Request, manager: Manager, session_id: SessionPath, body: TurnBody
) -> Any:
    """As ``POST /agent_chat_response/``, for this session."""
    return await run_agent(
        state_of(request),
        manager,
        session_path_id(session_id),
        body.question,
        mode=body.mode or ContextMode.THINKING,
        page=_page(body.current_url, body.user_timezone, body.user_time),
    )


@router.get("/v1/stats", tags=["sessions"], summary="Store statistics")
async def store_stats(manager: Manager) -> Any:
    """The tenant's store: session count, limits, evictions."""
    return JSONResponse(await manager.aget_memory_stats(None))


def utc_bound(value: datetime | None) -> datetime | None:
    """An analytics ``since`` / ``until`` bound, checked to have a UTC equivalent.

    Analytics compares instants in UTC, and an offset can take a valid ISO 8601 time out
    of the years 1 to 9999 a datetime holds (``0001-01-01T00:00:00+05:00``).

    Raises:
        ValueError: The bound has no UTC equivalent (a validation error, like any other
            invalid value).
    """
    if value is not None and value.tzinfo is not None:
        try:
            value.astimezone(UTC)
        except OverflowError:
            msg = f"{value.isoformat()} is outside the range of UTC datetimes (years 1 to 9999)"
            raise ValueError(msg) from None
    return value


def iso_bound(value: object) -> object:
    """A query's ``since`` / ``until`` text read as ISO 8601, as the inspector and CLI read it.

    Without it pydantic would also take ``1700000000`` (a Unix time), which the other two
    refuse.

    Raises:
        ValueError: Not an ISO 8601 date or date-time (a validation error).
    """
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.strip())
        except ValueError:
            msg = f"{value!r} is not an ISO 8601 date or date-time (e.g. 2026-03-01T12:00Z)"
            raise ValueError(msg) from None
    return value


AnalyticsBound = Annotated[datetime | None, BeforeValidator(iso_bound), AfterValidator(utc_bound)]


@router.get("/v1/analytics", tags=["service"], summary="Analytics across sessions")
async def analytics(
    manager: Manager,
    since: Annotated[AnalyticsBound, Query(description="ISO 8601: sessions active since.")] = None,
    until: Annotated[AnalyticsBound, Query(description="ISO 8601: ... and until.")] = None,
    mode: Annotated[ContextMode | None, Query(description="Only sessions in this mode.")] = None,
) -> Any:
    """``ctx_memory.analytics.analyze(...)`` over the tenant's sessions, as JSON."""
    analyze = load_analyze()
    report = await run_in_threadpool(
        analyze, manager, since=since, until=until, mode=mode.value if mode else None
    )
    return JSONResponse(report.as_dict())


@router.get("/v1/whoami", tags=["service"], summary="The key's tenant")
async def whoami(who: Annotated[Principal, Depends(principal)]) -> Any:
    """The tenant the key opens and whether it is an admin key (never the key)."""
    return {"tenant": who.tenant, "admin": who.admin, "key_id": who.key_id}


def load_analyze() -> Any:
    """``ctx_memory.analytics.analyze``, imported now (501 when the module is missing)."""
    try:
        from ctx_memory.analytics import analyze  # type: ignore[import-not-found,unused-ignore]  # noqa: PLC0415
    except ImportError as e:
        msg = f"analytics are not available in this installation ({e})"
        raise ServiceError(501, "not_available", msg) from None
    return analyze
