"""The app factory: :func:`create_app` builds the FastAPI app of ``ctx-memory serve``.

What a request goes through, outermost first: tracing (:mod:`ctx_memory.server.tracing`,
when OpenTelemetry is there), CORS (``SERVER_CORS_ORIGINS``), the body size limit
(``SERVER_MAX_BODY_BYTES``: 413 before the body is read when ``Content-Length`` says so,
else as soon as the limit is passed), then the routes: :mod:`ctx_memory.server.api`
(seed 001's endpoints and ``/v1``), :mod:`ctx_memory.server.inspector` (the browser
inspector). Errors are JSON ``{"error": code, "detail": ...}`` with the status the table
in ``docs/server.md`` gives; a store outage is a 503 with ``Retry-After``.
"""

from __future__ import annotations

import logging
import re
import secrets
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, unquote_to_bytes

from ctx_memory._extras import missing_extra

try:
    import sse_starlette  # noqa: F401 - checked here so the error names the extra
    from fastapi import FastAPI, Request
    from fastapi.exceptions import RequestValidationError
    from fastapi.middleware.cors import CORSMiddleware
    from fastapi.responses import JSONResponse
    from starlette.exceptions import HTTPException as StarletteHTTPException
except ImportError as e:  # pragma: no cover - exercised only without the extra
    raise missing_extra("server", __name__, e) from e

from ctx_memory import tracing as library_tracing
from ctx_memory.chat import ContextualChat
from ctx_memory.config import load_settings
from ctx_memory.errors import (
    BudgetExceededError,
    ConfigurationError,
    CtxMemoryError,
    DocumentImportError,
    MessageNotFoundError,
    SessionNotFoundError,
    StoreError,
    StoreVersionError,
    ValidationError,
)
from ctx_memory.server.keys import DEFAULT_TENANT, KeyRing, TokenBucket
from ctx_memory.server.models import build_chat_model, build_retriever, build_tools
from ctx_memory.server.security import STORE_VERSION_DETAIL, ServiceError
from ctx_memory.server.tenants import Tenants, settings_factory
from ctx_memory.server.tracing import TracingMiddleware, get_tracer

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from langchain_core.language_models import BaseChatModel
    from langchain_core.retrievers import BaseRetriever
    from opentelemetry.trace import Tracer, TracerProvider
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

    from ctx_memory.config import Settings
    from ctx_memory.manager import ContextManager

__all__ = ["ServerState", "auth_enabled", "create_app", "path_keeping_slashes"]

logger = logging.getLogger("ctx_memory.server")

_KEPT = re.compile(r"(%2[Ff]|%25)")

RETRY_AFTER_SECONDS = 5
"""``Retry-After`` of a 503 (the store is unreachable)."""


def auth_enabled(settings: Settings) -> bool:
    """Whether requests need a key: ``SERVER_AUTH``, or with ``auto`` whether keys exist.

    Raises:
        ConfigurationError: ``SERVER_AUTH = "on"`` with no key configured.
    """
    has_keys = bool(settings.server_api_keys or settings.server_admin_keys)
    if settings.server_auth == "on" and not has_keys:
        msg = "is 'on' but neither SERVER_API_KEYS nor SERVER_ADMIN_KEYS holds a key"
        raise ConfigurationError("SERVER_AUTH", msg)
    if settings.server_auth == "off":
        return False
    return has_keys


@dataclass
class ServerState:
    """Everything the routes share, built once by :func:`create_app`."""

    settings: Settings
    auth: bool
    keys: KeyRing
    tenants: Tenants
    bucket: TokenBucket
    cookie_secret: bytes
    chat_model: BaseChatModel
    model_name: str | None
    retriever: BaseRetriever
    tools: list[Any]
    tracer: Tracer | None
    admin_key_ids: frozenset[str] = frozenset()
    _chats: dict[int, ContextualChat] = field(default_factory=dict)
    _agents: dict[int, Any] = field(default_factory=dict)

    def chat(self, manager: ContextManager) -> ContextualChat:
        """The tenant's :class:`ContextualChat` (one per manager, built on first use)."""
        chat = self._chats.get(id(manager))
        if chat is None:
            chat = self._chats[id(manager)] = ContextualChat(
                manager,
                self.chat_model,
                model_name=self.model_name,
                max_tokens=self.settings.server_max_tokens,
            )
        return chat

    def agent(self, manager: ContextManager) -> Any:
        """The tenant's ``create_agent`` agent with :class:`ContextMiddleware`.

        Raises:
            ServiceError: 501 without LangChain's agents (the ``agents`` extra).
        """
        agent = self._agents.get(id(manager))
        if agent is not None:
            return agent
        try:
            from langchain.agents import create_agent  # noqa: PLC0415 - optional

            from ctx_memory.middleware import ContextMiddleware  # noqa: PLC0415
        except ImportError:
            msg = "the agent endpoint needs the agents extra: pip install 'ctx-memory[agents]'"
            raise ServiceError(501, "not_available", msg) from None
        middleware = ContextMiddleware(
            manager, max_tokens=self.settings.server_max_tokens, model_name=self.model_name
        )
        agent = create_agent(self.chat_model, tools=self.tools, middleware=[middleware])
        self._agents[id(manager)] = agent
        return agent


# --------------------------------------------------------------------------- ASGI layers


def path_keeping_slashes(raw_path: bytes) -> str:
    """A request path percent-decoded except ``%2F`` and ``%25`` (pure).

    ASGI servers decode ``%2F`` into ``/`` before routing, so a session id holding a
    ``/`` would be split into path segments. Keeping ``%2F`` (and ``%25``, so the second
    decoding is exact) lets ``/v1/sessions/{session_id}`` match one segment, which the
    route decodes once more (:func:`session_path_id`).

    Example:
        .. code-block:: python

            from ctx_memory.server.app import path_keeping_slashes

            assert path_keeping_slashes(b"/v1/sessions/a%2Fb%20c") == "/v1/sessions/a%2Fb c"
    """
    pieces = _KEPT.split(raw_path.decode("ascii", "replace"))
    # Even indexes are text to decode; odd ones the kept escapes. UTF-8 never encodes a
    # character with the bytes 0x2F or 0x25 inside a longer sequence, so no split cuts one.
    return "".join(
        piece.upper() if index % 2 else unquote(piece) for index, piece in enumerate(pieces)
    )


def session_path_id(value: str) -> str:
    """A session id from a path segment that :func:`path_keeping_slashes` left encoded."""
    return value.replace("%2F", "/").replace("%25", "%")


def _valid_utf8(escaped: bytes) -> bool:
    """Whether a percent-encoded path or query decodes to valid UTF-8 (no lone surrogate)."""
    try:
        unquote_to_bytes(escaped.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


class _KeepEncodedSlashes:
    """ASGI: routes see ``%2F`` in a path segment as data, not as a separator.

    A path or query string whose escapes are not UTF-8 is answered 400: decoded with
    replacement characters, ``%FF`` and ``%FE`` would name the same session.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        raw = scope.get("raw_path") if scope["type"] == "http" else None
        if scope["type"] == "http" and not (
            _valid_utf8(raw or b"") and _valid_utf8(scope.get("query_string") or b"")
        ):
            await _send_json(send, 400, "invalid_input", "the URL is not UTF-8 once decoded")
            return
        if raw and b"%2" in raw.upper():
            raw = raw.split(b"?", 1)[0]
            scope = dict(scope)
            path = path_keeping_slashes(raw)
            root = scope.get("root_path", "")
            # An ASGI server serving under a root path puts it in raw_path already (uvicorn).
            scope["path"] = path if path.startswith(root) else root + path
        await self.app(scope, receive, send)


class BodyTooLargeError(StarletteHTTPException):
    """The request body passed ``SERVER_MAX_BODY_BYTES`` (answered 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request body is larger than {limit} bytes")


class _BodyLimit:
    """ASGI: refuse request bodies over ``limit`` bytes with a 413."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for key, value in scope.get("headers") or ():
            if key == b"content-length":
                declared = value
                break
        if declared is not None:
            if not declared.isdigit():
                await _send_json(send, 400, "bad_request", "Content-Length is not a number")
                return
            if int(declared) > self.limit:
                detail = f"the request body is larger than {self.limit} bytes"
                await _send_json(send, 413, "too_large", detail)
                return
        seen = 0
        limit = self.limit

        async def counting() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > limit:
                    raise BodyTooLargeError(limit)
            return message

        await self.app(scope, counting, send)


async def _send_json(send: Send, status: int, error: str, detail: str) -> None:
    body = JSONResponse({"error": error, "detail": detail}, status_code=status).body
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


_UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})


class _NoCrossSite:
    """ASGI: refuse what another site's page makes a browser send (CSRF).

    A key-less server on loopback trusts whoever reaches it, and a page from any site can
    make the user's browser reach it: a form POST needs no preflight, an ``<img>`` sends a
    GET. Browsers say where a request comes from: ``Sec-Fetch-Site: cross-site`` (or
    ``same-site``); a browser too old to send it, by an ``Origin`` that is not the
    server's own on a POST, PUT or DELETE. Such a request is refused with 403 unless its
    origin is listed in ``SERVER_CORS_ORIGINS`` (a browser extension). Clients that are
    not browsers send neither header; a typed URL (``Sec-Fetch-Site: none``) and the
    inspector's own pages (``same-origin``) pass.
    """

    def __init__(self, app: ASGIApp, allowed: Sequence[str]) -> None:
        self.app = app
        self.allowed = frozenset(o.rstrip("/") for o in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self._cross_site(scope):
            await _send_json(
                send, 403, "forbidden", "a request from another site's page is refused"
            )
            return
        await self.app(scope, receive, send)

    def _cross_site(self, scope: Scope) -> bool:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        origin = headers.get("origin", "").rstrip("/")
        if origin and (origin in self.allowed or "*" in self.allowed):  # "*": any origin
            return False
        site = headers.get("sec-fetch-site")
        if site is not None:  # set by the browser itself (a page cannot forge it)
            return site in ("cross-site", "same-site")
        if scope["method"] not in _UNSAFE_METHODS or not origin:
            return False
        return bool(origin != f"{scope.get('scheme', 'http')}://{headers.get('host', '')}")


# --------------------------------------------------------------------------- errors

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "rate_limited",
    501: "not_available",
    503: "store_unavailable",
}


def _error(status: int, error: str, detail: Any, headers: dict[str, str] | None = None) -> Any:
    return JSONResponse({"error": error, "detail": detail}, status_code=status, headers=headers)


def _install_error_handlers(app: FastAPI) -> None:
    async def service_error(_: Request, exc: Exception) -> Any:
        assert isinstance(exc, ServiceError)
        return _error(exc.status, exc.error, exc.detail, exc.headers)

    async def http_error(_: Request, exc: Exception) -> Any:
        assert isinstance(exc, StarletteHTTPException)
        code = _STATUS_CODES.get(exc.status_code, "error")
        return _error(exc.status_code, code, exc.detail, dict(exc.headers or {}) or None)

    async def request_invalid(_: Request, exc: Exception) -> Any:
        assert isinstance(exc, RequestValidationError)
        details = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return _error(422, "validation_error", details)

    async def not_found(_: Request, exc: Exception) -> Any:
        return _error(404, "not_found", str(exc))

    async def import_invalid(_: Request, exc: Exception) -> Any:
        assert isinstance(exc, DocumentImportError)
        return JSONResponse(
            {"error": "invalid_document", "detail": str(exc), "field": exc.field},
            status_code=422,
        )

    async def invalid(_: Request, exc: Exception) -> Any:
        return _error(400, "invalid_input", str(exc))

    async def over_budget(_: Request, exc: Exception) -> Any:
        return _error(422, "over_budget", str(exc))

    async def store_down(_: Request, exc: Exception) -> Any:
        logger.warning("ctx_memory.server: store error: %s", exc)
        detail = "the session store is unavailable; retry later"
        return _error(503, "store_unavailable", detail, {"Retry-After": str(RETRY_AFTER_SECONDS)})

    async def store_too_new(_: Request, exc: Exception) -> Any:
        logger.error("ctx_memory.server: store refused: %s", exc)
        return _error(500, "store_version", STORE_VERSION_DETAIL)

    async def internal(_: Request, exc: Exception) -> Any:
        logger.error("ctx_memory.server: %s: %s", type(exc).__name__, exc)
        return _error(500, "internal_error", "the server could not complete the request")

    async def unexpected(_: Request, exc: Exception) -> Any:
        # Anything else still answers JSON; its text may carry what a library echoed back
        # (keys, URLs): the client gets the type, the log the traceback.
        logger.error("ctx_memory.server: %s", type(exc).__name__, exc_info=exc)
        detail = f"the server could not complete the request ({type(exc).__name__})"
        return _error(500, "internal_error", detail)

    app.add_exception_handler(ServiceError, service_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, request_invalid)
    app.add_exception_handler(SessionNotFoundError, not_found)
    app.add_exception_handler(MessageNotFoundError, not_found)
    app.add_exception_handler(DocumentImportError, import_invalid)
    app.add_exception_handler(ValidationError, invalid)
    app.add_exception_handler(BudgetExceededError, over_budget)
    app.add_exception_handler(StoreVersionError, store_too_new)
    app.add_exception_handler(StoreError, store_down)
    app.add_exception_handler(CtxMemoryError, internal)
    app.add_exception_handler(Exception, unexpected)


# --------------------------------------------------------------------------- the factory


def create_app(
    manager: ContextManager | None = None,
    settings: Settings | None = None,
    *,
    tenant_manager: Callable[[str], ContextManager] | None = None,
    chat_model: BaseChatModel | None = None,
    retriever: BaseRetriever | None = None,
    tools: Sequence[Any] | None = None,
    tracer_provider: TracerProvider | None = None,
) -> FastAPI:
    """The HTTP service as a FastAPI app (run it with uvicorn, or ``ctx-memory serve``).

    Without keys in settings (``SERVER_API_KEYS`` / ``SERVER_ADMIN_KEYS``, or with
    ``SERVER_AUTH = "off"``) the app has one tenant, served by ``manager`` (default: a
    manager built from settings) and needs no key. With keys, every request needs one and
    each tenant gets its own manager in its own namespace (:mod:`ctx_memory.server.tenants`),
    built by ``tenant_manager`` (default: from settings); ``manager`` is then not used.

    Args:
        manager: The manager of a server without keys (left open when the app stops).
        settings: Settings (default: ``manager.settings``, else loaded).
        tenant_manager: Builds the manager of a tenant (a server with keys).
        chat_model: The chat model (default: ``SERVER_CHAT_MODEL``).
        retriever: The research mode's search retriever (default: ``SERVER_RETRIEVER``).
        tools: The agent's tools (default: ``SERVER_AGENT_TOOLS``).
        tracer_provider: OpenTelemetry tracer provider (default: the global one).

    Raises:
        ConfigurationError: A SERVER_* setting is wrong (a model, retriever or tool that
            does not load; ``SERVER_AUTH = "on"`` without keys; a store without a tenant
            layout and no ``tenant_manager``).

    Example:
        .. code-block:: python

            from fastapi.testclient import TestClient

            from ctx_memory import ContextManager
            from ctx_memory.server import create_app

            manager = ContextManager()
            with TestClient(create_app(manager)) as client:
                sent = {"session_id": "s1", "text_content": "Paris from $420",
                        "current_url": "https://airline.example"}
                assert client.post("/add_webtext/", json=sent).status_code == 200
                stats = client.get("/get_memory_stats/", params={"session_id": "s1"}).json()
                assert stats["fetched_item_count"] == 1
    """
    if settings is None:
        settings = manager.settings if manager is not None else load_settings()
    auth = auth_enabled(settings)
    keys = KeyRing.from_settings(settings)
    if auth:
        factory = tenant_manager or settings_factory(settings)
        tenants = Tenants(keys.tenants, factory)
    else:
        shared = {DEFAULT_TENANT: manager} if manager is not None else {}
        own = tenant_manager or (lambda _: _new_manager(settings))
        tenants = Tenants([DEFAULT_TENANT], own, shared=shared)
    secret = settings.server_cookie_secret
    state = ServerState(
        settings=settings,
        auth=auth,
        keys=keys,
        tenants=tenants,
        bucket=TokenBucket(
            settings.server_rate_limit_per_minute / 60.0, settings.server_rate_limit_burst
        ),
        cookie_secret=(
            secret.get_secret_value().encode() if secret is not None else secrets.token_bytes(32)
        ),
        chat_model=chat_model if chat_model is not None else build_chat_model(settings),
        model_name=settings.server_chat_model
        if chat_model is None and settings.server_chat_model == "fake"
        else None,
        retriever=retriever if retriever is not None else build_retriever(settings),
        tools=list(tools) if tools is not None else build_tools(settings),
        tracer=get_tracer(tracer_provider) if settings.server_tracing else None,
        admin_key_ids=frozenset(digest[:12] for digest in settings.server_admin_keys),
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        yield
        await tenants.aclose()

    from ctx_memory.server import api, inspector  # noqa: PLC0415 - routes need the state type

    app = FastAPI(
        title="ctx_memory",
        summary="Session context for LLM apps: seed 001's endpoints, a versioned API and a "
        "session inspector.",
        version=_version(),
        lifespan=lifespan,
        openapi_tags=[
            {"name": "seed", "description": "Seed 001's endpoints, paths and parameters."},
            {"name": "sessions", "description": "The versioned JSON API (`/v1`)."},
            {"name": "turns", "description": "Chat, research and agent turns (`/v1`)."},
            {"name": "service", "description": "Health and analytics."},
        ],
    )
    app.state.ctx_memory = state
    _install_error_handlers(app)
    app.include_router(api.router)
    app.include_router(inspector.router)
    inspector.install(app)
    app.add_middleware(_KeepEncodedSlashes)
    app.add_middleware(_BodyLimit, limit=settings.server_max_body_bytes)
    app.add_middleware(_NoCrossSite, allowed=list(settings.server_cors_origins))
    if settings.server_cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.server_cors_origins),
            allow_methods=["GET", "POST", "PUT", "DELETE"],
            allow_headers=[
                "Authorization",
                "X-API-Key",
                "Content-Type",
                "X-Session-ID",
                "X-Context-Mode",
                "traceparent",
            ],
            expose_headers=["Retry-After"],
            max_age=600,
        )
    if state.tracer is not None:
        app.add_middleware(TracingMiddleware, tracer=state.tracer)
        # Store operations and events become child spans / span events of the request's.
        library_tracing.instrument(tracer_provider)
    return app


def _new_manager(settings: Settings) -> ContextManager:
    from ctx_memory.manager import ContextManager  # noqa: PLC0415 - also a type-only import

    return ContextManager(settings)


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        return version("ctx-memory")
    except PackageNotFoundError:  # pragma: no cover - a checkout on sys.path
        return "0"
